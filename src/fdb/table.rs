//! The entry table: a preallocated array of buckets, each one cache line holding four
//! entries, read under a per-bucket sequence lock.
//!
//! Bucket layout (sixteen 32-bit words, 64 bytes, aligned to 64):
//!
//! | word | content |
//! |---|---|
//! | 0 | sequence: odd while a writer changes the bucket |
//! | 1, 2 | metadata: 16 bits per slot, slots 0..4 in order |
//! | 3 | overflow: how many entries whose probe started at or before this bucket live after it |
//! | 4..8 | per slot: MAC bytes 2..6 (`Key::low`) |
//! | 8..12 | per slot: MAC bytes 0..2 and VNI bits 0..16 (`Key::high`) |
//! | 12..16 | per slot: destination word |
//!
//! Each key word of the four slots sits in its own 16-byte group (`crate::lanes::Lanes`), so
//! that a lookup compares its key with all four slots by one vector load and compare per word.
//!
//! Slot metadata: VNI bits 16..24 (8 bits), occupied, static, destination kind (2 bits).
//!
//! Probing is linear over buckets. The overflow count (the scheme of folly's F14 tables)
//! lets a lookup stop at the first bucket whose count is zero, so a miss costs one line in the
//! common case and no tombstones are needed: an insert that passes a full bucket adds one to
//! the count of every bucket it passed, the removal of that entry subtracts it again. Entries
//! never move once placed (a MAC move rewrites the destination word in place), so a reader
//! that follows the counts always reaches an entry that is present for its whole read.
//!
//! The table is sized once from the capacity bound and never grows, so no slot memory is ever
//! freed while the table is shared: there is nothing to reclaim.

use alloc::boxed::Box;
#[cfg(test)]
use alloc::vec::Vec;

use crate::lanes::{self, Lanes};
use crate::prefetch::prefetch;
use crate::sync::{fence, spin_loop, AtomicU16, AtomicU32, Ordering};
use crate::wire::EthernetAddress;
use crate::Vni;

/// Entries per bucket: four entries and the bucket's header fill one 64-byte line.
pub(super) const SLOTS_PER_BUCKET: usize = 4;

const META_VNI_HIGH: u32 = 0xFF;
const META_OCCUPIED: u32 = 1 << 8;
/// The entry is static: configured, never moved, never aged.
pub(super) const META_STATIC: u32 = 1 << 9;
const META_KIND_SHIFT: u32 = 10;
const META_KIND_MASK: u32 = 0b11;
/// The bits of the metadata that a [`Value`] carries.
const META_VALUE_BITS: u32 = META_STATIC | (META_KIND_MASK << META_KIND_SHIFT);

/// A (VNI, MAC) key split into the words a slot stores.
///
/// The words are little-endian loads of the MAC's bytes (one load each where the target
/// allows unaligned ones, no byte swap): only equality and the hash depend on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Key {
    /// MAC bytes 2..6, little endian: the bytes that differ most between MACs (0..2 are mostly
    /// the vendor's), so the word a lookup compares first.
    low: u32,
    /// MAC bytes 0..2 in the lower half (little endian), VNI bits 0..16 in the upper half.
    high: u32,
    /// VNI bits 16..24.
    vni_high: u32,
}

impl Key {
    #[inline]
    pub(super) fn new(vni: Vni, mac: EthernetAddress) -> Key {
        let m = mac.0;
        let vni = vni.get();
        Key {
            low: u32::from_le_bytes([m[2], m[3], m[4], m[5]]),
            high: u32::from(u16::from_le_bytes([m[0], m[1]])) | (vni << 16),
            vni_high: (vni >> 16) & META_VNI_HIGH,
        }
    }

    /// A multicast (group bit set) or all-zero MAC: never a frame's source.
    #[inline]
    pub(super) fn is_invalid_source(self) -> bool {
        // MAC byte 0 is the low byte of `high`; its lowest bit is the group bit.
        self.high & 1 != 0 || (self.low == 0 && self.high & 0xFFFF == 0)
    }

    pub(super) fn vni(self) -> Vni {
        Vni::from_u24_truncating((self.vni_high << 16) | (self.high >> 16))
    }

    pub(super) fn mac(self) -> EthernetAddress {
        let low = self.low.to_le_bytes();
        let high = self.high.to_le_bytes();
        EthernetAddress([high[0], high[1], low[0], low[1], low[2], low[3]])
    }

    /// A keyed hash of the key: one 64x64->128 multiply of two keyed halves, folded
    /// (wyhash's "mum"). Every key bit reaches the high product bits that pick the bucket, it
    /// costs a handful of cycles, and the seed keeps an attacker who does not know it from
    /// aiming MACs at one bucket. Not a cryptographic PRF: the capacity bounds, not the hash,
    /// are what keep a MAC flood from hurting.
    #[inline]
    pub(super) fn hash(self, seed: Seed) -> u64 {
        let mac_and_vni = (u64::from(self.high) << 32) | u64::from(self.low);
        let a = mac_and_vni ^ seed.a;
        let b = mac_and_vni.rotate_left(29) ^ u64::from(self.vni_high) ^ seed.b;
        let product = u128::from(a).wrapping_mul(u128::from(b));
        (product as u64) ^ ((product >> 64) as u64)
    }
}

/// The two keyed halves' constants of [`Key::hash`], derived once from the configured seed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seed {
    a: u64,
    b: u64,
}

impl Seed {
    fn new(seed: u64) -> Seed {
        Seed {
            a: seed,
            b: seed.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15,
        }
    }
}

/// What a slot holds besides its key: the static flag, the destination kind and word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Value {
    pub(super) is_static: bool,
    /// One of the `KIND_*` constants of the parent module.
    pub(super) kind: u32,
    pub(super) dest: u32,
}

impl Value {
    fn meta_bits(self) -> u32 {
        let static_bit = if self.is_static { META_STATIC } else { 0 };
        static_bit | ((self.kind & META_KIND_MASK) << META_KIND_SHIFT)
    }

    fn from_meta(meta: u32, dest: u32) -> Value {
        Value {
            is_static: meta & META_STATIC != 0,
            kind: (meta >> META_KIND_SHIFT) & META_KIND_MASK,
            dest,
        }
    }
}

/// A key's home bucket, found by [`Table::locate`] or [`Table::home_at`] (and prefetched by
/// [`Table::prefetch_home`]).
#[derive(Clone, Copy)]
pub(super) struct Home<'a> {
    bucket: &'a Bucket,
    index: usize,
}

/// Where an entry lives: bucket and slot. Valid until the entry is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotRef {
    bucket: usize,
    slot: usize,
}

impl SlotRef {
    /// The slot's position in the whole table, for the last-seen array.
    fn index(self) -> usize {
        self.bucket * SLOTS_PER_BUCKET + self.slot
    }
}

#[repr(C, align(64))]
struct Bucket {
    sequence: AtomicU32,
    /// Per slot: the 16-bit metadata, each its own atomic, so that a reader loads one slot's
    /// with one instruction.
    meta: [AtomicU16; SLOTS_PER_BUCKET],
    overflow: AtomicU32,
    /// Per slot: the key's low word (`Key::low`).
    low: Lanes,
    /// Per slot: the key's high word (`Key::high`).
    high: Lanes,
    /// Per slot: the destination word.
    dest: Lanes,
}

// One cache line, as the layout above says (loom's atomics are larger).
#[cfg(not(switchyard_loom))]
const _: () = assert!(core::mem::size_of::<Bucket>() == 64);

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            sequence: AtomicU32::new(0),
            meta: core::array::from_fn(|_| AtomicU16::new(0)),
            overflow: AtomicU32::new(0),
            low: Lanes::new(),
            high: Lanes::new(),
            dest: Lanes::new(),
        }
    }

    /// The metadata of `slot` (relaxed, see `scan`); zero, as an empty slot's, past the end.
    #[inline]
    fn meta(&self, slot: usize) -> u32 {
        self.meta
            .get(slot)
            .map_or(0, |meta| u32::from(meta.load(Ordering::Relaxed)))
    }

    /// The slot of `key` in this bucket, if present. Relaxed loads: the caller validates them
    /// with the sequence, or holds the writer lock.
    ///
    /// Two steps: the key words of all four slots are compared at once into a mask of
    /// candidates ([`lanes::matching`]: both words where it can, else the low one, MAC bytes
    /// 2..6), then only a candidate's metadata (and high word, if not compared) is checked.
    /// Nearly always there is one candidate (a hit) or none (a miss), so both branches are
    /// predictable. An empty slot's words are zero, so a key whose words are zero may match
    /// one: the occupied bit in the metadata rules it out.
    #[inline]
    fn scan(&self, key: Key) -> Option<(usize, Value)> {
        let mut candidates = lanes::matching(&self.low, key.low, &self.high, key.high);
        if candidates == 0 {
            return None;
        }
        let wanted = META_OCCUPIED | key.vni_high;
        while candidates != 0 {
            // `candidates` has four bits: the mask only spares the bounds check.
            let slot = candidates.trailing_zeros() as usize & (SLOTS_PER_BUCKET - 1);
            let m = self.meta(slot);
            if m & (META_OCCUPIED | META_VNI_HIGH) == wanted
                && (lanes::BOTH_COMPARED || self.high.load(slot) == key.high)
            {
                return Some((slot, Value::from_meta(m, self.dest.load(slot))));
            }
            candidates &= candidates - 1;
        }
        None
    }

    /// One probe step of a lock-free find: `scan` in a read section, giving the slot and
    /// `read` of its value, or, when `key` is not here, the overflow count (zero: it is
    /// nowhere further either).
    #[inline]
    fn find<R>(&self, key: Key, read: &mut impl FnMut(Value) -> R) -> Result<(usize, R), u32> {
        self.read(|b| match b.scan(key) {
            Some((slot, value)) => Ok((slot, read(value))),
            None => Err(b.overflow.load(Ordering::Relaxed)),
        })
    }

    /// Key and value of `slot` if it is occupied (relaxed loads, see `scan`).
    fn load_slot(&self, slot: usize) -> Option<(Key, Value)> {
        let m = self.meta(slot);
        if m & META_OCCUPIED == 0 {
            return None;
        }
        let key = Key {
            low: self.low.load(slot),
            high: self.high.load(slot),
            vni_high: m & META_VNI_HIGH,
        };
        Some((key, Value::from_meta(m, self.dest.load(slot))))
    }

    /// Runs `read` between two loads of the sequence until they agree on an even number: the
    /// reader side of the sequence lock (Boehm, "Can seqlocks get along with programming
    /// language memory models?", 2012: data loads relaxed, then an acquire fence, then the
    /// second sequence load). `read` may run more than once and must only load.
    #[inline]
    fn read<R>(&self, mut read: impl FnMut(&Bucket) -> R) -> R {
        loop {
            let before = self.sequence.load(Ordering::Acquire);
            if before & 1 == 0 {
                let result = read(self);
                fence(Ordering::Acquire);
                if self.sequence.load(Ordering::Relaxed) == before {
                    return result;
                }
            }
            spin_loop();
        }
    }

    /// The writer side: makes the sequence odd, lets `write` store, makes it even again. Only
    /// the holder of the table's writer lock calls this, so a plain store suffices.
    fn write(&self, write: impl FnOnce(&Bucket)) {
        let before = self.sequence.load(Ordering::Relaxed);
        self.sequence
            .store(before.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd sequence before the data stores (pairs with the reader's acquire
        // fence: a reader that sees any of the stores below also sees the odd sequence).
        fence(Ordering::Release);
        write(self);
        self.sequence
            .store(before.wrapping_add(2), Ordering::Release);
    }

    fn set_slot_meta(&self, slot: usize, meta: u32) {
        if let Some(word) = self.meta.get(slot) {
            // The metadata bits all fit in 16 (`META_*`).
            word.store(meta as u16, Ordering::Relaxed);
        }
    }
}

/// The entry table. Readers call [`Table::find`] and [`Table::read_bucket`]; everything named
/// `*_locked` requires the caller to hold the forwarding table's writer lock.
pub(super) struct Table {
    buckets: Box<[Bucket]>,
    mask: usize,
    /// Last-seen tick per slot, apart from the buckets so that refreshes (the most frequent
    /// write) never invalidate the lines readers use.
    last_seen: Box<[AtomicU32]>,
    seed: Seed,
}

impl Table {
    /// A table for at most `capacity` entries: buckets for at least 4/3 of them, a power of
    /// two, so the load stays at or below 75 % (F14's maximum for four-slot chunks is 86 %).
    pub(super) fn new(capacity: usize, seed: u64) -> Table {
        let buckets = capacity.div_ceil(3).max(1).next_power_of_two();
        let buckets: Box<[Bucket]> = (0..buckets).map(|_| Bucket::new()).collect();
        let last_seen: Box<[AtomicU32]> = (0..buckets.len() * SLOTS_PER_BUCKET)
            .map(|_| AtomicU32::new(0))
            .collect();
        Table {
            mask: buckets.len() - 1,
            buckets,
            last_seen,
            seed: Seed::new(seed),
        }
    }

    /// Total number of slots (more than the capacity bound, so an insert within the bound
    /// always finds one).
    pub(super) fn slots(&self) -> usize {
        self.buckets.len() * SLOTS_PER_BUCKET
    }

    pub(super) fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// The bucket where the probe for `key` starts.
    #[inline]
    pub(super) fn home(&self, key: Key) -> usize {
        // The high bits of the folded product are the best mixed.
        (key.hash(self.seed) >> 32) as usize & self.mask
    }

    /// Starts bringing bucket `index` (a [`Table::home`]) into the cache without waiting for
    /// it (a prefetch instruction: see `crate::prefetch`).
    #[inline]
    pub(super) fn touch(&self, index: usize) {
        if let Some(bucket) = self.buckets.get(index) {
            prefetch(bucket);
        }
    }

    /// The home bucket of `key`, prefetched ([`Table::touch`]), as a [`Home`] for
    /// [`Table::find_at`]: a batch keeps it between the two.
    #[inline]
    pub(super) fn prefetch_home(&self, key: Key) -> Option<Home<'_>> {
        let home = self.locate(key)?;
        prefetch(home.bucket);
        Some(home)
    }

    /// Bucket `index` (a [`Table::home`]) as a [`Home`] for [`Table::find_at`].
    #[inline]
    pub(super) fn home_at(&self, index: usize) -> Option<Home<'_>> {
        let bucket = self.buckets.get(index)?;
        Some(Home { bucket, index })
    }

    /// The home bucket of `key` as a [`Home`] for [`Table::find_at`], not prefetched.
    #[inline]
    pub(super) fn locate(&self, key: Key) -> Option<Home<'_>> {
        let index = self.home(key);
        let bucket = self.buckets.get(index)?;
        Some(Home { bucket, index })
    }

    /// [`Table::find`] from a [`Home`] that [`Table::prefetch_home`] returned for `key`: the
    /// home bucket is read through the reference kept (no index arithmetic, no bounds check);
    /// a probe past it continues as [`Table::find_from`].
    #[inline]
    pub(super) fn find_at<R>(
        &self,
        key: Key,
        home: Home<'_>,
        mut read: impl FnMut(Value) -> R,
    ) -> Option<(SlotRef, R)> {
        match home.bucket.find(key, &mut read) {
            Ok((slot, result)) => Some((
                SlotRef {
                    bucket: home.index,
                    slot,
                },
                result,
            )),
            Err(0) => None,
            Err(_) => self.find_from(key, (home.index + 1) & self.mask, read),
        }
    }

    /// Finds `key` without locking. `read` turns the slot's value into the result inside the
    /// read section (it may read other memory that writers change only after changing this
    /// bucket, such as the IPv6 VTEP table); it may run more than once.
    #[inline]
    pub(super) fn find<R>(&self, key: Key, read: impl FnMut(Value) -> R) -> Option<(SlotRef, R)> {
        self.find_from(key, self.home(key), read)
    }

    /// [`Table::find`] with the key's home bucket already computed ([`Table::home`]).
    #[inline]
    pub(super) fn find_from<R>(
        &self,
        key: Key,
        home: usize,
        mut read: impl FnMut(Value) -> R,
    ) -> Option<(SlotRef, R)> {
        let mut index = home & self.mask;
        for _ in 0..self.buckets.len() {
            match self.buckets.get(index)?.find(key, &mut read) {
                Ok((slot, result)) => {
                    return Some((
                        SlotRef {
                            bucket: index,
                            slot,
                        },
                        result,
                    ))
                }
                Err(0) => return None,
                Err(_) => index = (index + 1) & self.mask,
            }
        }
        None
    }

    /// The occupied slots of bucket `index`, read consistently without locking, each turned
    /// into a result by `read` inside the read section.
    pub(super) fn read_bucket<R: Copy>(
        &self,
        index: usize,
        mut read: impl FnMut(SlotRef, Key, Value) -> R,
    ) -> [Option<R>; SLOTS_PER_BUCKET] {
        let Some(bucket) = self.buckets.get(index) else {
            return [None; SLOTS_PER_BUCKET];
        };
        bucket.read(|b| {
            core::array::from_fn(|slot| {
                b.load_slot(slot).map(|(key, value)| {
                    read(
                        SlotRef {
                            bucket: index,
                            slot,
                        },
                        key,
                        value,
                    )
                })
            })
        })
    }

    /// [`Table::touch`] for the last-seen ticks of bucket `index`' slots (one cache line holds
    /// the ticks of four buckets), which a refresh stores to.
    #[inline]
    pub(super) fn touch_last_seen(&self, index: usize) {
        if let Some(tick) = self.last_seen.get(index.wrapping_mul(SLOTS_PER_BUCKET)) {
            prefetch(tick);
        }
    }

    /// The last-seen tick of a slot.
    #[inline]
    pub(super) fn last_seen(&self, at: SlotRef) -> Option<&AtomicU32> {
        self.last_seen.get(at.index())
    }

    /// Finds `key`; the caller holds the writer lock, so no sequence is needed.
    pub(super) fn find_locked(&self, key: Key) -> Option<(SlotRef, Value)> {
        let mut index = self.home(key);
        for _ in 0..self.buckets.len() {
            let bucket = self.buckets.get(index)?;
            if let Some((slot, value)) = bucket.scan(key) {
                return Some((
                    SlotRef {
                        bucket: index,
                        slot,
                    },
                    value,
                ));
            }
            if bucket.overflow.load(Ordering::Relaxed) == 0 {
                return None;
            }
            index = (index + 1) & self.mask;
        }
        None
    }

    /// Every entry (writer lock held), with where it lives.
    pub(super) fn entries_locked(&self) -> impl Iterator<Item = (SlotRef, Key, Value)> + '_ {
        self.buckets.iter().enumerate().flat_map(|(index, bucket)| {
            (0..SLOTS_PER_BUCKET).filter_map(move |slot| {
                bucket.load_slot(slot).map(|(key, value)| {
                    (
                        SlotRef {
                            bucket: index,
                            slot,
                        },
                        key,
                        value,
                    )
                })
            })
        })
    }

    /// Inserts `key`, known to be absent (writer lock held), with last-seen `tick`. `None`
    /// only when every slot is taken, which the capacity bound rules out.
    pub(super) fn insert_locked(&self, key: Key, value: Value, tick: u32) -> Option<SlotRef> {
        let home = self.home(key);
        let mut index = home;
        for distance in 0..self.buckets.len() {
            let bucket = self.buckets.get(index)?;
            let free = (0..SLOTS_PER_BUCKET).find(|&slot| bucket.meta(slot) & META_OCCUPIED == 0);
            if let Some(slot) = free {
                let at = SlotRef {
                    bucket: index,
                    slot,
                };
                // Before the entry becomes visible: the bucket's release store publishes it.
                if let Some(last_seen) = self.last_seen.get(at.index()) {
                    last_seen.store(tick, Ordering::Relaxed);
                }
                bucket.write(|b| {
                    b.low.store(slot, key.low);
                    b.high.store(slot, key.high);
                    b.dest.store(slot, value.dest);
                    b.set_slot_meta(slot, META_OCCUPIED | key.vni_high | value.meta_bits());
                });
                self.adjust_overflow(home, distance, true);
                return Some(at);
            }
            index = (index + 1) & self.mask;
        }
        None
    }

    /// Replaces the value of the entry in `at` in place (writer lock held): a MAC move, or a
    /// static entry replacing a learned one. The key stays, so readers never miss it.
    pub(super) fn update_locked(&self, at: SlotRef, value: Value) {
        let Some(bucket) = self.buckets.get(at.bucket) else {
            return;
        };
        let meta = bucket.meta(at.slot);
        bucket.write(|b| {
            b.dest.store(at.slot, value.dest);
            b.set_slot_meta(at.slot, (meta & !META_VALUE_BITS) | value.meta_bits());
        });
    }

    /// Removes the entry in `at` (writer lock held) and returns it.
    pub(super) fn remove_locked(&self, at: SlotRef) -> Option<(Key, Value)> {
        let bucket = self.buckets.get(at.bucket)?;
        let (key, value) = bucket.load_slot(at.slot)?;
        bucket.write(|b| {
            b.set_slot_meta(at.slot, 0);
            b.low.store(at.slot, 0);
            b.high.store(at.slot, 0);
            b.dest.store(at.slot, 0);
        });
        let home = self.home(key);
        let distance = at.bucket.wrapping_sub(home) & self.mask;
        self.adjust_overflow(home, distance, false);
        Some((key, value))
    }

    /// Adds one to (or subtracts one from) the overflow count of the `distance` buckets from
    /// `home` on.
    fn adjust_overflow(&self, home: usize, distance: usize, add: bool) {
        let mut index = home;
        for _ in 0..distance {
            if let Some(bucket) = self.buckets.get(index) {
                let count = bucket.overflow.load(Ordering::Relaxed);
                let count = if add {
                    count.saturating_add(1)
                } else {
                    count.saturating_sub(1)
                };
                bucket.write(|b| b.overflow.store(count, Ordering::Relaxed));
            }
            index = (index + 1) & self.mask;
        }
    }

    /// How many buckets past its home each entry lives, summed per distance: for tests of
    /// the probe behaviour (index 0 = entries in their home bucket).
    #[cfg(test)]
    pub(super) fn probe_histogram_locked(&self) -> Vec<usize> {
        let mut histogram = Vec::new();
        for (at, key, _) in self.entries_locked() {
            let distance = at.bucket.wrapping_sub(self.home(key)) & self.mask;
            if histogram.len() <= distance {
                histogram.resize(distance + 1, 0);
            }
            if let Some(count) = histogram.get_mut(distance) {
                *count += 1;
            }
        }
        histogram
    }
}
