//! IPv6 remote VTEP addresses interned into a small index, so that a destination fits in one
//! 32-bit word (IPv4 addresses and port numbers fit as they are).
//!
//! Slots are reference counted by the entries and flood lists that name them; all changes
//! happen under the forwarding table's writer lock. A slot whose count fell to zero keeps its
//! address (a later intern of the same address revives it) until a new address needs room.
//!
//! Readers load an address without a lock of its own: they always do it inside the read
//! section of the bucket (or flood list) that named the index, and a slot is rewritten only
//! after every reference to it is gone, that is after that bucket's sequence changed. The
//! release fence before the rewrite makes a reader that loads a rewritten word also load the
//! changed sequence, so it retries (the argument of the sequence lock itself).

use alloc::boxed::Box;
use core::net::Ipv6Addr;

use crate::mix::folded_multiply;
use crate::sync::{fence, AtomicBool, AtomicU32, Ordering};

struct Slot {
    words: [AtomicU32; 4],
    /// Has ever held an address: probing stops only at slots that never did.
    used: AtomicBool,
    references: AtomicU32,
}

pub(super) struct VtepTable {
    slots: Box<[Slot]>,
    mask: usize,
    /// Addresses with at least one reference.
    live: AtomicU32,
    max_live: u32,
}

fn words(address: Ipv6Addr) -> [u32; 4] {
    let octets = address.octets();
    core::array::from_fn(|i| {
        u32::from_be_bytes([
            octets[4 * i],
            octets[4 * i + 1],
            octets[4 * i + 2],
            octets[4 * i + 3],
        ])
    })
}

fn hash(words: [u32; 4]) -> usize {
    let a = (u64::from(words[0]) << 32) | u64::from(words[1]);
    let b = (u64::from(words[2]) << 32) | u64::from(words[3]);
    folded_multiply(a ^ 0x243F_6A88_85A3_08D3, b ^ 0x9E37_79B9_7F4A_7C15) as usize
}

impl VtepTable {
    /// Room for `max_live` addresses with references at once (twice as many slots).
    pub(super) fn new(max_live: u32) -> VtepTable {
        let len = (max_live as usize)
            .saturating_mul(2)
            .max(2)
            .next_power_of_two();
        let slots: Box<[Slot]> = (0..len)
            .map(|_| Slot {
                words: core::array::from_fn(|_| AtomicU32::new(0)),
                used: AtomicBool::new(false),
                references: AtomicU32::new(0),
            })
            .collect();
        VtepTable {
            mask: len - 1,
            slots,
            live: AtomicU32::new(0),
            max_live,
        }
    }

    /// The address in slot `index`. Relaxed loads: only meaningful inside the read section of
    /// the structure that named `index` (see the module documentation).
    #[inline]
    pub(super) fn address(&self, index: u32) -> Option<Ipv6Addr> {
        let slot = self.slots.get(index as usize)?;
        let mut octets = [0u8; 16];
        for (chunk, word) in octets.chunks_exact_mut(4).zip(slot.words.iter()) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_be_bytes());
        }
        Some(Ipv6Addr::from(octets))
    }

    fn holds(slot: &Slot, words: [u32; 4]) -> bool {
        slot.words
            .iter()
            .zip(words)
            .all(|(word, expected)| word.load(Ordering::Relaxed) == expected)
    }

    /// The index of `address` if it has references (writer lock held).
    pub(super) fn find_locked(&self, address: Ipv6Addr) -> Option<u32> {
        let words = words(address);
        let mut index = hash(words) & self.mask;
        for _ in 0..self.slots.len() {
            let slot = self.slots.get(index)?;
            if !slot.used.load(Ordering::Relaxed) {
                return None;
            }
            if slot.references.load(Ordering::Relaxed) > 0 && Self::holds(slot, words) {
                return u32::try_from(index).ok();
            }
            index = (index + 1) & self.mask;
        }
        None
    }

    /// Takes a reference to `address`, interning it if needed (writer lock held). `None` when
    /// `max_live` addresses already have references.
    pub(super) fn acquire_locked(&self, address: Ipv6Addr) -> Option<u32> {
        let words = words(address);
        let mut index = hash(words) & self.mask;
        let mut reusable = None;
        for _ in 0..self.slots.len() {
            let slot = self.slots.get(index)?;
            let used = slot.used.load(Ordering::Relaxed);
            if used && Self::holds(slot, words) {
                let references = slot.references.load(Ordering::Relaxed);
                if references == 0 {
                    if self.live.load(Ordering::Relaxed) >= self.max_live {
                        return None;
                    }
                    self.live.fetch_add(1, Ordering::Relaxed);
                }
                slot.references
                    .store(references.saturating_add(1), Ordering::Relaxed);
                return u32::try_from(index).ok();
            }
            if !used || slot.references.load(Ordering::Relaxed) == 0 {
                reusable.get_or_insert(index);
            }
            if !used {
                break;
            }
            index = (index + 1) & self.mask;
        }
        if self.live.load(Ordering::Relaxed) >= self.max_live {
            return None;
        }
        let index = reusable?;
        let slot = self.slots.get(index)?;
        // Every reference to this slot's old address is gone, so every structure that named
        // it has changed its sequence already: this fence makes a reader that loads one of the
        // new words see that change (module documentation).
        fence(Ordering::Release);
        for (word, value) in slot.words.iter().zip(words) {
            word.store(value, Ordering::Relaxed);
        }
        slot.used.store(true, Ordering::Relaxed);
        slot.references.store(1, Ordering::Relaxed);
        self.live.fetch_add(1, Ordering::Relaxed);
        u32::try_from(index).ok()
    }

    /// Drops a reference taken by [`VtepTable::acquire_locked`] (writer lock held).
    pub(super) fn release_locked(&self, index: u32) {
        let Some(slot) = self.slots.get(index as usize) else {
            return;
        };
        let references = slot.references.load(Ordering::Relaxed);
        if references == 0 {
            return;
        }
        slot.references.store(references - 1, Ordering::Relaxed);
        if references == 1 {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Addresses with references.
    pub(super) fn live(&self) -> u32 {
        self.live.load(Ordering::Relaxed)
    }
}
