//! The configured neighbour table (IP -> MAC per VNI) as the data path reads it.
//!
//! Every frame towards a service VIP needs its chosen backend's MAC, and every ARP request or
//! neighbour solicitation a suppressing VNI answers needs the target's: one lookup per frame.
//! The table comes from the configuration, changes only with it, and is rebuilt whole on a
//! change, so it is a plain open-addressing array (linear probing, at most half full) with
//! no locking and no deletion: a lookup is one hash and, almost always, one slot.

use alloc::vec;
use alloc::vec::Vec;
use core::net::IpAddr;

use crate::lb::addr_bits;
use crate::mix::folded_multiply;
use crate::wire::EthernetAddress;
use crate::Vni;

/// Marks an occupied slot in `Slot::tag` (a VNI has 24 bits, the family one more).
const OCCUPIED: u32 = 1 << 31;
const IPV6: u32 = 1 << 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    /// The address as 128 bits (IPv4 in the low 32).
    addr: u128,
    /// `OCCUPIED | IPV6 (for IPv6) | vni`; 0 for an empty slot.
    tag: u32,
    mac: EthernetAddress,
}

const EMPTY: Slot = Slot {
    addr: 0,
    tag: 0,
    mac: EthernetAddress([0; 6]),
};

/// (VNI, IP) -> MAC, immutable once built.
#[derive(Debug, Clone)]
pub(crate) struct NeighborMap {
    slots: Vec<Slot>,
    mask: usize,
}

#[inline(always)]
fn key(vni: Vni, ip: IpAddr) -> (u128, u32) {
    let family = if ip.is_ipv6() { IPV6 } else { 0 };
    (addr_bits(ip), OCCUPIED | family | vni.get())
}

#[inline(always)]
fn hash((addr, tag): (u128, u32)) -> usize {
    // The configuration is the operator's, not a sender's: a fixed key is enough.
    let a = folded_multiply(
        (addr as u64) ^ 0x243F_6A88_85A3_08D3,
        ((addr >> 64) as u64) ^ u64::from(tag) ^ 0x1319_8A2E_0370_7344,
    );
    // The high bits are the best mixed.
    (a >> 32) as usize
}

impl NeighborMap {
    /// The map of `entries`; of two entries for one (VNI, IP) the later one wins, as in the
    /// configuration's list.
    pub(crate) fn new(
        entries: impl ExactSizeIterator<Item = (Vni, IpAddr, EthernetAddress)>,
    ) -> NeighborMap {
        // At least one empty slot, so that every probe ends at one.
        let len = entries.len().saturating_mul(2).max(2).next_power_of_two();
        let mut map = NeighborMap {
            slots: vec![EMPTY; len],
            mask: len - 1,
        };
        for (vni, ip, mac) in entries {
            let key = key(vni, ip);
            let mut i = hash(key) & map.mask;
            while let Some(slot) = map.slots.get_mut(i) {
                if slot.tag == 0 {
                    *slot = Slot {
                        addr: key.0,
                        tag: key.1,
                        mac,
                    };
                    break;
                }
                if (slot.addr, slot.tag) == key {
                    slot.mac = mac;
                    break;
                }
                i = (i + 1) & map.mask;
            }
        }
        map
    }

    /// The MAC of `ip` in `vni`, if configured.
    #[inline]
    pub(crate) fn get(&self, vni: Vni, ip: IpAddr) -> Option<EthernetAddress> {
        let key = key(vni, ip);
        let mut i = hash(key) & self.mask;
        // Bounded by the table's length; an empty slot ends the probe long before.
        for _ in 0..self.slots.len() {
            let slot = self.slots.get(i)?;
            if slot.addr == key.0 && slot.tag == key.1 {
                return Some(slot.mac);
            }
            if slot.tag == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// The number of distinct (VNI, IP) entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|slot| slot.tag != 0).count()
    }
}

#[cfg(test)]
mod test {
    use alloc::collections::BTreeMap;
    use core::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn mac(i: u8) -> EthernetAddress {
        EthernetAddress([2, 0, 0, 0, 0, i])
    }

    #[test]
    fn empty_finds_nothing() {
        let map = NeighborMap::new(core::iter::empty());
        assert_eq!(map.len(), 0);
        assert_eq!(
            map.get(
                Vni::new(1).unwrap(),
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))
            ),
            None
        );
    }

    #[test]
    fn keys_are_vni_and_family_exact() {
        let (a, b) = (Vni::new(1).unwrap(), Vni::new(2).unwrap());
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        // The IPv6 address whose 128 bits equal the IPv4 address' number.
        let v6 = IpAddr::V6(Ipv6Addr::from_bits(u128::from(0xC612_0001u32)));
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 18, 0, 1).to_ipv6_mapped());
        let map = NeighborMap::new([(a, v4, mac(1)), (b, v6, mac(2)), (a, v4, mac(3))].into_iter());
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(a, v4), Some(mac(3)), "the later entry wins");
        assert_eq!(map.get(b, v4), None);
        assert_eq!(map.get(a, v6), None);
        assert_eq!(map.get(b, v6), Some(mac(2)));
        assert_eq!(map.get(a, mapped), None);
    }

    proptest! {
        // No failure file (miri's isolation refuses the working directory it needs), and few
        // cases under miri, which interprets every instruction.
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            cases: if cfg!(miri) { 4 } else { 256 },
            ..ProptestConfig::default()
        })]

        /// Whatever the entries (few VNIs and addresses, so that keys repeat and probes
        /// collide), the map answers as a `BTreeMap` built from the same list.
        #[test]
        fn agrees_with_a_btree_map(
            entries in proptest::collection::vec((1u32..4, any::<bool>(), 0u32..64, any::<u8>()), 0..200),
            probes in proptest::collection::vec((1u32..4, any::<bool>(), 0u32..64), 0..100),
        ) {
            let ip = |v6: bool, n: u32| if v6 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n as u16))
            } else {
                IpAddr::V4(Ipv4Addr::from_bits(0xC612_0000 | n))
            };
            let list: Vec<(Vni, IpAddr, EthernetAddress)> = entries
                .iter()
                .map(|&(vni, v6, n, m)| (Vni::new(vni).unwrap(), ip(v6, n), mac(m)))
                .collect();
            let reference: BTreeMap<(Vni, IpAddr), EthernetAddress> =
                list.iter().map(|&(vni, ip, mac)| ((vni, ip), mac)).collect();
            let map = NeighborMap::new(list.iter().copied());
            prop_assert_eq!(map.len(), reference.len());
            for (&(vni, ip), &mac) in &reference {
                prop_assert_eq!(map.get(vni, ip), Some(mac));
            }
            for &(vni, v6, n) in &probes {
                let (vni, ip) = (Vni::new(vni).unwrap(), ip(v6, n));
                prop_assert_eq!(map.get(vni, ip), reference.get(&(vni, ip)).copied());
            }
        }
    }
}
