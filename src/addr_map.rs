//! An immutable map keyed by an address and a 31-bit tag, for tables the data path reads once
//! per packet and the control plane rebuilds whole: the configured neighbours (IP -> MAC per
//! VNI) and the published services ((VIP, port, protocol) -> table).
//!
//! Open addressing with linear probing, at most half full, no deletion and no locking: a
//! lookup is one hash and, almost always, one slot. The key is `(addr, tag)`: the address as
//! 128 bits (IPv4 in the low 32) and whatever else names the entry (VNI, port, protocol,
//! family) in the tag's low 31 bits; the top bit marks an occupied slot.

use alloc::vec;
use alloc::vec::Vec;

use crate::mix::folded_multiply;

/// Marks an occupied slot in `Slot::tag`.
const OCCUPIED: u32 = 1 << 31;

#[derive(Debug, Clone, Copy)]
struct Slot<V> {
    addr: u128,
    /// `OCCUPIED | tag`; 0 for an empty slot.
    tag: u32,
    value: V,
}

/// `(addr, tag) -> V`, immutable once built. The empty map (`Default`) has no slot at all.
#[derive(Debug, Clone)]
pub(crate) struct AddrMap<V> {
    slots: Vec<Slot<V>>,
    mask: usize,
}

impl<V> Default for AddrMap<V> {
    fn default() -> Self {
        AddrMap {
            slots: Vec::new(),
            mask: 0,
        }
    }
}

#[inline(always)]
fn hash(addr: u128, tag: u32) -> usize {
    // The keys are the operator's configuration, not a sender's: a fixed key is enough.
    let a = folded_multiply(
        (addr as u64) ^ 0x243F_6A88_85A3_08D3,
        ((addr >> 64) as u64) ^ u64::from(tag) ^ 0x1319_8A2E_0370_7344,
    );
    // The high bits are the best mixed.
    (a >> 32) as usize
}

impl<V: Copy + Default> AddrMap<V> {
    /// The map of `entries`; of two entries with one key the later one wins, as in a
    /// configuration's list. The tags' top bit is ignored.
    pub(crate) fn new(entries: impl ExactSizeIterator<Item = ((u128, u32), V)>) -> AddrMap<V> {
        // At least one empty slot, so that every probe ends at one.
        let len = entries.len().saturating_mul(2).max(2).next_power_of_two();
        let empty = Slot {
            addr: 0,
            tag: 0,
            value: V::default(),
        };
        let mut map = AddrMap {
            slots: vec![empty; len],
            mask: len - 1,
        };
        for ((addr, tag), value) in entries {
            let tag = tag | OCCUPIED;
            let mut i = hash(addr, tag) & map.mask;
            while let Some(slot) = map.slots.get_mut(i) {
                if slot.tag == 0 {
                    *slot = Slot { addr, tag, value };
                    break;
                }
                if slot.addr == addr && slot.tag == tag {
                    slot.value = value;
                    break;
                }
                i = (i + 1) & map.mask;
            }
        }
        map
    }

    /// The value of `(addr, tag)`, if present.
    #[inline(always)]
    pub(crate) fn get(&self, addr: u128, tag: u32) -> Option<V> {
        let tag = tag | OCCUPIED;
        let mut i = hash(addr, tag) & self.mask;
        // Bounded by the table's length; an empty slot ends the probe long before.
        for _ in 0..self.slots.len() {
            let slot = self.slots.get(i)?;
            if ((slot.addr ^ addr) | u128::from(slot.tag ^ tag)) == 0 {
                return Some(slot.value);
            }
            if slot.tag == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// The number of distinct keys.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|slot| slot.tag != 0).count()
    }
}

#[cfg(test)]
mod test {
    use alloc::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_empty_map_finds_nothing() {
        for map in [AddrMap::<u8>::default(), AddrMap::new(core::iter::empty())] {
            assert_eq!(map.len(), 0);
            assert_eq!(map.get(0, 0), None);
            assert_eq!(map.get(1, 2), None);
        }
    }

    #[test]
    fn the_tags_top_bit_is_the_maps() {
        let map = AddrMap::new([((7, 1), 1u8), ((7, 1 | OCCUPIED), 2)].into_iter());
        assert_eq!(map.len(), 1);
        assert_eq!(map.get(7, 1), Some(2));
        assert_eq!(map.get(7, 0), None);
    }

    proptest! {
        // No failure file (miri's isolation refuses the working directory it needs), and few
        // cases under miri, which interprets every instruction.
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            cases: if cfg!(miri) { 4 } else { 256 },
            ..ProptestConfig::default()
        })]

        /// Whatever the entries (few distinct keys, so that keys repeat and probes collide),
        /// the map answers as a `BTreeMap` built from the same list.
        #[test]
        fn agrees_with_a_btree_map(
            entries in proptest::collection::vec((0u8..64, any::<bool>(), 0u32..4, any::<u8>()), 0..200),
            probes in proptest::collection::vec((0u8..64, any::<bool>(), 0u32..4), 0..100),
        ) {
            // Addresses that differ in either half of the 128 bits.
            let addr = |n: u8, high: bool| u128::from(n) << if high { 64 } else { 0 };
            let list: Vec<((u128, u32), u8)> = entries
                .iter()
                .map(|&(n, high, tag, v)| ((addr(n, high), tag), v))
                .collect();
            let reference: BTreeMap<(u128, u32), u8> = list.iter().copied().collect();
            let map = AddrMap::new(list.iter().copied());
            prop_assert_eq!(map.len(), reference.len());
            for (&(a, tag), &v) in &reference {
                prop_assert_eq!(map.get(a, tag), Some(v));
            }
            for &(n, high, tag) in &probes {
                let a = addr(n, high);
                prop_assert_eq!(map.get(a, tag), reference.get(&(a, tag)).copied());
            }
        }
    }
}
