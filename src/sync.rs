//! The atomics facade: `core`'s atomics normally, loom's under `--cfg switchyard_loom`.
//!
//! Every lock-free structure in the core takes its atomics, fences and `Arc` from here, never
//! from `core` directly, so that a loom model (`RUSTFLAGS="--cfg switchyard_loom" cargo test
//! --release --test loom`) explores its interleavings (crossbeam's `crossbeam_loom` facade works
//! the same way).
//!
//! `AtomicU64` exists only where the target has 64-bit atomics (not on `thumbv7em`); code that
//! must build everywhere uses 32-bit words.
// Not every structure uses every item, and the first users arrive with the forwarding table.
#![allow(unused_imports, dead_code)]

#[cfg(all(not(switchyard_loom), feature = "alloc"))]
pub(crate) use alloc::sync::Arc;
#[cfg(all(not(switchyard_loom), target_has_atomic = "64"))]
pub(crate) use core::sync::atomic::AtomicU64;
#[cfg(not(switchyard_loom))]
pub(crate) use core::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU16, AtomicU32, AtomicU8, AtomicUsize, Ordering,
};

#[cfg(switchyard_loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
#[cfg(switchyard_loom)]
pub(crate) use loom::sync::Arc;

/// A busy-wait hint: `core::hint::spin_loop`, or a loom yield so the model makes progress.
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(not(switchyard_loom))]
    core::hint::spin_loop();
    #[cfg(switchyard_loom)]
    loom::thread::yield_now();
}
