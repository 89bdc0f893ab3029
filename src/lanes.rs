//! Four 32-bit atomic words compared with a key at once: the forwarding table's bucket scan.
//!
//! A bucket keeps the same key word of its four slots side by side in one [`Lanes`], so that
//! a lookup finds the slots whose key words equal its own with one vector load and compare per
//! word instead of four scalar loads and compares each (callgrind: 114 -> 104 instructions a
//! lookup in `fdb_lookup/switchyard`, 170 -> 158 a learn in `fdb_learn/refresh_existing`).
//!
//! The words are written by a writer while readers load them (a sequence lock, see
//! `fdb::table`), so a reader's loads must not be plain Rust reads: a plain read racing a
//! store is undefined behaviour in Rust's memory model however the read section is validated
//! afterwards. On x86-64 the loads are `movdqa` instructions in an `asm!` block, which the
//! compiler does not model as Rust accesses; what they read is then the hardware's business.
//! There, `movdqa` of an aligned operand is one atomic 16-byte access on every processor with
//! AVX (Intel SDM vol. 3A, 9.1.1, "Guaranteed Atomic Operations"); older ones may split it.
//! The sequence lock needs neither: the compiler keeps an `asm!` block that reads memory
//! after the acquire load of the sequence and before the acquire fence that precedes the
//! second load, as it keeps any memory access; x86 does not reorder loads with other loads;
//! so the vector loads happen between the reader's two loads of the sequence, and a read that
//! overlapped any store sees the sequence change and is thrown away, torn or not. Elsewhere
//! (and under miri and loom, which check the memory model and cannot run `asm!`) it is four
//! relaxed loads.
#![allow(unsafe_code)]

use crate::sync::{AtomicU32, Ordering};

/// Four atomic words, aligned to 16 bytes so that one aligned vector load reads them.
#[repr(C, align(16))]
pub(crate) struct Lanes([AtomicU32; 4]);

impl Lanes {
    pub(crate) fn new() -> Lanes {
        Lanes(core::array::from_fn(|_| AtomicU32::new(0)))
    }

    /// Lane `lane`'s word (relaxed); zero past the end.
    #[inline]
    pub(crate) fn load(&self, lane: usize) -> u32 {
        self.0
            .get(lane)
            .map_or(0, |word| word.load(Ordering::Relaxed))
    }

    /// Stores `value` into lane `lane` (relaxed); nothing past the end.
    #[inline]
    pub(crate) fn store(&self, lane: usize, value: u32) {
        if let Some(word) = self.0.get(lane) {
            word.store(value, Ordering::Relaxed);
        }
    }
}

/// Whether [`matching`] compares both words (`true`), or only `a`'s, leaving `b` to the caller.
pub(crate) const BOTH_COMPARED: bool =
    cfg!(all(target_arch = "x86_64", not(miri), not(switchyard_loom)));

/// The lanes `i` (bit `i` of the result) where `a[i] == x` and, if [`BOTH_COMPARED`],
/// `b[i] == y`: a superset of the lanes where both hold, exactly them if [`BOTH_COMPARED`].
/// Safe to call while a writer stores to the words; a result read during such a store is
/// meaningless, and the caller's sequence lock must discard it (see the module's
/// documentation).
#[inline(always)]
pub(crate) fn matching(a: &Lanes, x: u32, b: &Lanes, y: u32) -> u32 {
    #[cfg(all(target_arch = "x86_64", not(miri), not(switchyard_loom)))]
    {
        let mask: u32;
        // SAFETY: `a` and `b` are references to 16 bytes aligned to 16 (`Lanes`), valid for
        // reads for the whole block; each `movdqa` reads exactly those bytes (it requires the
        // alignment). The block writes only its output and scratch registers (no memory, no
        // stack; none of these instructions changes the flags). A writer's racing stores are
        // not a Rust-level data race with loads in an `asm!` block, and what the loads see of
        // them is never used: the caller's sequence lock discards any read that overlapped a
        // store (see the module's documentation).
        //
        // All of it in the block, the broadcasts of `x` and `y` included: with intrinsics the
        // compiler broadcast a key it had just stored to the stack in pieces by one 16-byte
        // load from there, which the store buffer cannot forward (a stall of a dozen cycles
        // each: `fdb_learn/refresh_existing` took 26 ns instead of 15).
        unsafe {
            core::arch::asm!(
                "movdqa {la}, xmmword ptr [{pa}]",
                "movdqa {lb}, xmmword ptr [{pb}]",
                "movd {ta}, {x:e}",
                "pshufd {ta}, {ta}, 0",
                "movd {tb}, {y:e}",
                "pshufd {tb}, {tb}, 0",
                "pcmpeqd {ta}, {la}",
                "pcmpeqd {tb}, {lb}",
                "pand {ta}, {tb}",
                "movmskps {mask:e}, {ta}",
                x = in(reg) x,
                y = in(reg) y,
                pa = in(reg) a,
                pb = in(reg) b,
                la = out(xmm_reg) _,
                lb = out(xmm_reg) _,
                ta = out(xmm_reg) _,
                tb = out(xmm_reg) _,
                mask = out(reg) mask,
                options(nostack, readonly, preserves_flags),
            );
        }
        mask
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri), not(switchyard_loom))))]
    {
        let _ = (b, y);
        let mut mask = 0u32;
        for (lane, word) in a.0.iter().enumerate() {
            mask |= u32::from(word.load(Ordering::Relaxed) == x) << lane;
        }
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the scalar definition, over words that share bits with the keys (so that
    /// near misses in one half of a word are covered) and every pattern of equal lanes.
    #[test]
    fn matching_is_the_lanes_where_both_words_equal() {
        let a = Lanes::new();
        let b = Lanes::new();
        let (x, y) = (0x8000_00FFu32, 0x0001_0000u32);
        let rounds = if cfg!(miri) { 16 } else { 256 };
        for pattern in 0..rounds {
            for lane in 0..4 {
                // Bits 0-3: lane equals x in `a`; bits 4-7: lane equals y in `b`.
                let near = (pattern as u32).rotate_left(lane as u32 * 3) | 1;
                a.store(
                    lane,
                    if pattern & (1 << lane) != 0 {
                        x
                    } else {
                        x ^ near
                    },
                );
                b.store(
                    lane,
                    if pattern & (16 << lane) != 0 {
                        y
                    } else {
                        y ^ near
                    },
                );
            }
            let both = (0..4)
                .filter(|&lane| a.load(lane) == x && b.load(lane) == y)
                .fold(0, |mask, lane| mask | 1 << lane);
            let got = matching(&a, x, &b, y);
            if BOTH_COMPARED {
                assert_eq!(got, both, "pattern {pattern:#x}");
            } else {
                let first = (0..4)
                    .filter(|&lane| a.load(lane) == x)
                    .fold(0, |mask, lane| mask | 1 << lane);
                assert_eq!(got, first, "pattern {pattern:#x}");
            }
        }
    }
}
