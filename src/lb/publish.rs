//! The one pointer through which the control plane publishes a new [`Services`] snapshot and
//! the workers read it: an atomic swap, with crossbeam-epoch's reclamation.
//!
//! Readers never block and never write a shared line: a worker pins its own epoch handle
//! (crossbeam-epoch's `LocalHandle`, a store to its own slot and a fence), loads the pointer
//! with `Acquire`, and uses the snapshot until it unpins. The control plane builds the next
//! snapshot off the data path, swaps it in with `AcqRel`, and hands the old one to
//! `defer_destroy`: it is freed only once every worker that could have loaded it has unpinned
//! (it has passed two epoch advances), which happens in the normal course of pinning; nothing
//! waits for it. This is the only unsafe code of the load balancer.
#![allow(unsafe_code)]

use crossbeam_epoch::{Atomic, Collector, LocalHandle, Owned};

use super::Services;
use crate::sync::Ordering;

/// The published snapshot and the epoch collector that guards it.
pub(crate) struct Published {
    current: Atomic<Services>,
    collector: Collector,
}

impl Published {
    pub(crate) fn new(initial: Services) -> Published {
        Published {
            current: Atomic::new(initial),
            collector: Collector::new(),
        }
    }

    /// An epoch handle for one reader thread.
    pub(crate) fn register(&self) -> LocalHandle {
        self.collector.register()
    }

    /// Replaces the snapshot; the old one is freed when no reader can see it any more.
    pub(crate) fn publish(&self, next: Services) {
        let handle = self.collector.register();
        let guard = handle.pin();
        let old = self
            .current
            .swap(Owned::new(next), Ordering::AcqRel, &guard);
        // SAFETY: `old` came out of `current` by this swap, so it is unlinked: a reader that
        // pins from now on loads the new pointer and cannot reach it. Readers pinned earlier
        // may still use it; `defer_destroy` runs its destructor only after all of them have
        // unpinned. `old` is not null: `current` is never set to null while `self` lives.
        unsafe { guard.defer_destroy(old) };
        // Push the garbage to the global queue so that other threads' pins can free it.
        guard.flush();
    }

    /// Runs `f` on the current snapshot, pinned through `handle` (which must come from
    /// [`Published::register`] on this same value).
    #[inline]
    pub(crate) fn read<R>(&self, handle: &LocalHandle, f: impl FnOnce(&Services) -> R) -> R {
        let guard = handle.pin();
        let snapshot = self.current.load(Ordering::Acquire, &guard);
        // SAFETY: `current` always holds a valid pointer from `Owned::new` (it is only ever
        // replaced by `publish`, never nulled before drop), and the pointee is destroyed only
        // through `defer_destroy`, after every guard pinned before its unlinking, this one
        // included, is dropped. `guard` outlives the reference: it lives until `f` returns.
        let services = unsafe { snapshot.deref() };
        f(services)
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        // SAFETY: `&mut self` means no reader holds a reference to `self`, so nobody is
        // reading `current`; the unprotected guard is sound without concurrent access, and the
        // pointer is the one `new` or `publish` stored (never null, owned by us).
        unsafe {
            let guard = crossbeam_epoch::unprotected();
            let last = self.current.load(Ordering::Relaxed, guard);
            if !last.is_null() {
                drop(last.into_owned());
            }
        }
    }
}
