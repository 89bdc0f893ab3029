//! The configured neighbour table (IP -> MAC per VNI) as the data path reads it.
//!
//! Every frame towards a service VIP needs its chosen backend's MAC, and every ARP request or
//! neighbour solicitation a suppressing VNI answers needs the target's: one lookup per frame.
//! The table comes from the configuration, changes only with it, and is rebuilt whole on a
//! change, so it is a [`AddrMap`](crate::addr_map::AddrMap): a lookup is one hash and,
//! almost always, one slot.

use core::net::IpAddr;

use crate::addr_map::AddrMap;
use crate::lb::addr_bits;
use crate::wire::EthernetAddress;
use crate::Vni;

/// The tag bit of an IPv6 address (a VNI has 24 bits).
const IPV6: u32 = 1 << 24;

/// (VNI, IP) -> MAC, immutable once built.
#[derive(Debug, Clone)]
pub(crate) struct NeighborMap(AddrMap<EthernetAddress>);

#[inline(always)]
fn key(vni: Vni, ip: IpAddr) -> (u128, u32) {
    let family = if ip.is_ipv6() { IPV6 } else { 0 };
    (addr_bits(ip), family | vni.get())
}

impl NeighborMap {
    /// The map of `entries`; of two entries for one (VNI, IP) the later one wins, as in the
    /// configuration's list.
    pub(crate) fn new(
        entries: impl ExactSizeIterator<Item = (Vni, IpAddr, EthernetAddress)>,
    ) -> NeighborMap {
        NeighborMap(AddrMap::new(
            entries.map(|(vni, ip, mac)| (key(vni, ip), mac)),
        ))
    }

    /// The MAC of `ip` in `vni`, if configured.
    #[inline]
    pub(crate) fn get(&self, vni: Vni, ip: IpAddr) -> Option<EthernetAddress> {
        let (addr, tag) = key(vni, ip);
        self.0.get(addr, tag)
    }

    /// The number of distinct (VNI, IP) entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod test {
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;
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
