//! How the control plane hands a new [`Services`] snapshot to the workers without ever making
//! one wait: a mailbox per worker, an atomic pointer that owns one `Arc` reference.
//!
//! Each worker slot (a fixed array, allocated with the load balancer) holds the newest
//! snapshot the worker has not picked up yet, as a raw `Arc` pointer. Publishing stores a new
//! reference into every slot with `swap` (`AcqRel`) and releases the reference it displaced.
//! A worker, once per call or batch, loads its own slot (`Relaxed`, its own cache line, which
//! the control plane writes only when it publishes); if it is not null it takes the pointer
//! with `swap(null)` (`Acquire`) and replaces the `Arc` it was using. Every pointer in a slot
//! is one `Arc` reference, owned by whoever swaps it out: there is never a moment at which two
//! parties could both free it, so no epoch or hazard pointer is needed. Reclamation is the
//! `Arc` count: an old snapshot is freed when the last worker that used it has moved on.
//!
//! A slot that no worker holds always contains a snapshot (the latest): a worker that leaves
//! puts its own back if the slot is empty, so the next worker to claim the slot starts with
//! one. Claiming and leaving a slot are a compare-and-swap on its `in_use` flag.
//!
//! Readers never block and never perform a read-modify-write on a shared line unless a new
//! snapshot is waiting for them; the writer's cost is one `Arc` clone and one swap per slot.
//! (An earlier version used crossbeam-epoch; its intrusive lists fail Miri's Stacked Borrows
//! check, crossbeam-rs/crossbeam#545, and this scheme needs no reclamation scheme at all.)
#![allow(unsafe_code)]

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr;

use crossbeam_utils::CachePadded;

use super::Services;
use crate::sync::{Arc, AtomicBool, AtomicPtr, Ordering};

/// Worker slots when the caller does not say: more than the cores of most machines.
pub(crate) const DEFAULT_MAX_WORKERS: usize = 64;

struct Slot {
    in_use: AtomicBool,
    /// Null, or a pointer from `Arc::into_raw` that owns one reference.
    pending: AtomicPtr<Services>,
}

/// The worker slots.
pub(crate) struct Published {
    slots: Box<[CachePadded<Slot>]>,
}

/// Gives up one reference, as a pointer that owns it.
fn into_raw(services: Arc<Services>) -> *mut Services {
    Arc::into_raw(services).cast_mut()
}

/// Takes back the reference a pointer from [`into_raw`] owns.
///
/// # Safety
///
/// `raw` is not null, came from [`into_raw`], and the caller owns its reference (it swapped
/// it out of a slot, or never put it in one), so it is taken back exactly once.
unsafe fn from_raw(raw: *mut Services) -> Arc<Services> {
    // SAFETY: as the function's contract states.
    unsafe { Arc::from_raw(raw.cast_const()) }
}

impl Published {
    /// `max_workers` slots (at least 1), each holding `initial`.
    pub(crate) fn new(initial: Services, max_workers: usize) -> Published {
        let initial = Arc::new(initial);
        let slots: Vec<CachePadded<Slot>> = (0..max_workers.max(1))
            .map(|_| {
                CachePadded::new(Slot {
                    in_use: AtomicBool::new(false),
                    pending: AtomicPtr::new(into_raw(initial.clone())),
                })
            })
            .collect();
        Published {
            slots: slots.into_boxed_slice(),
        }
    }

    /// Puts `next` in every slot; the snapshots it displaces are released.
    pub(crate) fn publish(&self, next: Services) {
        let next = Arc::new(next);
        for slot in self.slots.iter() {
            let old = slot.pending.swap(into_raw(next.clone()), Ordering::AcqRel);
            if !old.is_null() {
                // SAFETY: `old` was in the slot, so it came from `into_raw` and owned a
                // reference; the swap took it out, so nobody else can take it.
                drop(unsafe { from_raw(old) });
            }
        }
    }

    /// Claims a free slot: its index and the snapshot to start with. `None` if every slot is
    /// taken.
    pub(crate) fn register(&self) -> Option<(usize, Arc<Services>)> {
        for (index, slot) in self.slots.iter().enumerate() {
            if slot
                .in_use
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let raw = slot.pending.swap(ptr::null_mut(), Ordering::Acquire);
            let services = if raw.is_null() {
                // A free slot always holds a snapshot (see the module documentation); an
                // empty one is not a state this code creates. Start empty rather than fail.
                Arc::new(Services::default())
            } else {
                // SAFETY: non-null pointers in a slot come from `into_raw` and own a
                // reference, which the swap took out of the slot.
                unsafe { from_raw(raw) }
            };
            return Some((index, services));
        }
        None
    }

    /// Replaces `current` by the snapshot waiting in slot `index`, if there is one.
    #[inline]
    pub(crate) fn refresh(&self, index: usize, current: &mut Arc<Services>) {
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        if slot.pending.load(Ordering::Relaxed).is_null() {
            return;
        }
        let raw = slot.pending.swap(ptr::null_mut(), Ordering::Acquire);
        if !raw.is_null() {
            // SAFETY: as in `register`: a reference from `into_raw`, now ours alone.
            *current = unsafe { from_raw(raw) };
        }
    }

    /// Frees slot `index`, leaving `current` in it if it is empty.
    pub(crate) fn unregister(&self, index: usize, current: Arc<Services>) {
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        let raw = into_raw(current);
        if slot
            .pending
            .compare_exchange(ptr::null_mut(), raw, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            // A newer snapshot is waiting there: `raw` was not stored, we still own it.
            // SAFETY: `raw` came from `into_raw` just above and was not published.
            drop(unsafe { from_raw(raw) });
        }
        slot.in_use.store(false, Ordering::Release);
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        for slot in self.slots.iter() {
            let raw = slot.pending.swap(ptr::null_mut(), Ordering::Acquire);
            if !raw.is_null() {
                // SAFETY: a reference from `into_raw` that the swap took out of the slot.
                drop(unsafe { from_raw(raw) });
            }
        }
    }
}
