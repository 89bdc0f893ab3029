//! Software prefetch: the one hint the batch operations of the forwarding table and the load
//! balancer need to overlap their cache misses.
//!
//! A random lookup in a table larger than the cache waits for memory (150-250 ns on the
//! virtual machines the benchmarks run on). One lookup after another waits for each miss in
//! turn, or, at best, for as many at once as the core's reorder buffer can hold lookups. A
//! prefetch instruction starts the miss and retires at once, so a batch can have a dozen or
//! more misses in flight while it does other work; an ordinary load standing in for it would
//! occupy the reorder buffer until its line arrives, which caps the overlap at a few lookups
//! (`fdb_lookup/switchyard` in `benches/fdb.rs`, a 4 MiB table: 55-67 ns per lookup with
//! touching loads, 21-34 ns with prefetch instructions).
//!
//! On x86-64 this is `prefetcht0`, on AArch64 `prfm pldl1keep`; elsewhere (and under miri and
//! loom, which model no caches) it does nothing. It never changes what a program computes.
#![allow(unsafe_code)]

/// Asks the CPU to start loading the cache line that holds the start of `value`, without
/// waiting for it.
#[inline(always)]
pub(crate) fn prefetch<T>(value: &T) {
    let address: *const T = value;
    #[cfg(all(target_arch = "x86_64", not(miri), not(switchyard_loom)))]
    // SAFETY: a prefetch is a hint: it never faults, never writes, and has no effect a program
    // can observe other than timing (Intel SDM, PREFETCHh: "does not affect program
    // behavior"). SSE, which provides it, is part of the x86-64 baseline. `address` comes from
    // a reference in any case.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(all(target_arch = "aarch64", not(miri), not(switchyard_loom)))]
    // SAFETY: PRFM is a hint that never faults and changes no architectural state (Arm ARM,
    // "Prefetch memory"); it reads no register other than the address and writes none.
    unsafe {
        core::arch::asm!(
            "prfm pldl1keep, [{address}]",
            address = in(reg) address,
            options(nostack, readonly, preserves_flags)
        );
    }
    #[cfg(not(all(
        any(target_arch = "x86_64", target_arch = "aarch64"),
        not(miri),
        not(switchyard_loom)
    )))]
    let _ = address;
}
