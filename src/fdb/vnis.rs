//! Per-VNI state: configuration, entry count and flood list, in a preallocated table of
//! records that are created on first use and never removed (a VNI's configuration outlives a
//! flush), so a reader holding a record never sees it freed.
//!
//! Records are found without locking: the key word is stored last, with release, after the
//! rest of the record is initialised. Configuration and counts are changed under the
//! forwarding table's writer lock; a lock-free reader of them (the capacity pre-check of
//! learning) only takes a hint that the writer checks again.
//!
//! Flood lists live inline, in `max_flood_members` pairs of words per record, under a
//! sequence lock of their own: a reader copies a whole list, old or new, never a mix.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::sync::{fence, spin_loop, AtomicBool, AtomicU32, Ordering};
use crate::Vni;

pub(super) struct Record {
    /// VNI + 1; 0 while the record is free.
    key: AtomicU32,
    /// Position in creation order: which part of the flood storage belongs to this record.
    ordinal: AtomicU32,
    pub(super) max_entries: AtomicU32,
    /// Ageing time in ticks of the refresh granularity.
    pub(super) ageing_ticks: AtomicU32,
    pub(super) learning: AtomicBool,
    /// Entries (static and learned) in this VNI.
    pub(super) count: AtomicU32,
    flood_sequence: AtomicU32,
    flood_len: AtomicU32,
}

/// The defaults of a record created by learning or a static insert.
#[derive(Clone, Copy)]
pub(super) struct Defaults {
    pub(super) max_entries: u32,
    pub(super) ageing_ticks: u32,
    pub(super) learning: bool,
}

pub(super) struct VniTable {
    records: Box<[Record]>,
    mask: usize,
    created: AtomicU32,
    max_records: u32,
    /// `max_records * members_per_list` pairs (kind, word).
    flood: Box<[[AtomicU32; 2]]>,
    members_per_list: usize,
}

fn hash(vni: Vni) -> usize {
    (u64::from(vni.get()).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
}

impl VniTable {
    pub(super) fn new(max_records: u32, members_per_list: usize) -> VniTable {
        let len = (max_records as usize)
            .saturating_mul(2)
            .max(2)
            .next_power_of_two();
        let records: Box<[Record]> = (0..len)
            .map(|_| Record {
                key: AtomicU32::new(0),
                ordinal: AtomicU32::new(0),
                max_entries: AtomicU32::new(0),
                ageing_ticks: AtomicU32::new(0),
                learning: AtomicBool::new(false),
                count: AtomicU32::new(0),
                flood_sequence: AtomicU32::new(0),
                flood_len: AtomicU32::new(0),
            })
            .collect();
        let flood: Box<[[AtomicU32; 2]]> = (0..(max_records as usize) * members_per_list)
            .map(|_| [AtomicU32::new(0), AtomicU32::new(0)])
            .collect();
        VniTable {
            mask: len - 1,
            records,
            created: AtomicU32::new(0),
            max_records,
            flood,
            members_per_list,
        }
    }

    /// The record of `vni`, without locking.
    #[inline]
    pub(super) fn find(&self, vni: Vni) -> Option<&Record> {
        let wanted = vni.get() + 1;
        let mut index = hash(vni) & self.mask;
        for _ in 0..self.records.len() {
            let record = self.records.get(index)?;
            match record.key.load(Ordering::Acquire) {
                0 => return None,
                key if key == wanted => return Some(record),
                _ => index = (index + 1) & self.mask,
            }
        }
        None
    }

    /// The record of `vni`, created with `defaults` if there is none (writer lock held).
    /// `None` when `max_records` records exist already.
    pub(super) fn find_or_create_locked(&self, vni: Vni, defaults: Defaults) -> Option<&Record> {
        let wanted = vni.get() + 1;
        let mut index = hash(vni) & self.mask;
        for _ in 0..self.records.len() {
            let record = self.records.get(index)?;
            match record.key.load(Ordering::Relaxed) {
                0 => {
                    let ordinal = self.created.load(Ordering::Relaxed);
                    if ordinal >= self.max_records {
                        return None;
                    }
                    self.created.store(ordinal + 1, Ordering::Relaxed);
                    record.ordinal.store(ordinal, Ordering::Relaxed);
                    record
                        .max_entries
                        .store(defaults.max_entries, Ordering::Relaxed);
                    record
                        .ageing_ticks
                        .store(defaults.ageing_ticks, Ordering::Relaxed);
                    record.learning.store(defaults.learning, Ordering::Relaxed);
                    record.count.store(0, Ordering::Relaxed);
                    record.flood_len.store(0, Ordering::Relaxed);
                    // Publishes the fields above to lock-free readers of the record.
                    record.key.store(wanted, Ordering::Release);
                    return Some(record);
                }
                key if key == wanted => return Some(record),
                _ => index = (index + 1) & self.mask,
            }
        }
        None
    }

    fn flood_members(&self, record: &Record) -> &[[AtomicU32; 2]] {
        let start = record.ordinal.load(Ordering::Relaxed) as usize * self.members_per_list;
        self.flood
            .get(start..start + self.members_per_list)
            .unwrap_or(&[])
    }

    /// Copies the flood list of `record` into `out` (emptied first), each member made from
    /// its pair (kind, word) by `decode`, retrying until it copied one version whole. `decode`
    /// runs inside the read section (it may resolve an IPv6 VTEP index) and may run more than
    /// once per member.
    pub(super) fn read_flood<T>(
        &self,
        record: &Record,
        out: &mut Vec<T>,
        decode: impl Fn(u32, u32) -> T,
    ) {
        let members = self.flood_members(record);
        loop {
            let before = record.flood_sequence.load(Ordering::Acquire);
            if before & 1 == 0 {
                out.clear();
                let len = record.flood_len.load(Ordering::Relaxed) as usize;
                for member in members.iter().take(len) {
                    out.push(decode(
                        member[0].load(Ordering::Relaxed),
                        member[1].load(Ordering::Relaxed),
                    ));
                }
                fence(Ordering::Acquire);
                if record.flood_sequence.load(Ordering::Relaxed) == before {
                    return;
                }
            }
            spin_loop();
        }
    }

    /// The current flood list of `record` (writer lock held), through `each`.
    pub(super) fn flood_locked(&self, record: &Record, mut each: impl FnMut(u32, u32)) {
        let len = record.flood_len.load(Ordering::Relaxed) as usize;
        for member in self.flood_members(record).iter().take(len) {
            each(
                member[0].load(Ordering::Relaxed),
                member[1].load(Ordering::Relaxed),
            );
        }
    }

    /// Replaces the flood list of `record` (writer lock held); `members` is at most
    /// `members_per_list` long (longer lists are cut, the caller checks).
    pub(super) fn write_flood_locked(&self, record: &Record, members: &[(u32, u32)]) {
        let storage = self.flood_members(record);
        let before = record.flood_sequence.load(Ordering::Relaxed);
        record
            .flood_sequence
            .store(before.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        let mut len = 0u32;
        for (slot, &(kind, word)) in storage.iter().zip(members) {
            slot[0].store(kind, Ordering::Relaxed);
            slot[1].store(word, Ordering::Relaxed);
            len += 1;
        }
        record.flood_len.store(len, Ordering::Relaxed);
        record
            .flood_sequence
            .store(before.wrapping_add(2), Ordering::Release);
    }
}
