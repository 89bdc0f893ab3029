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
    use core::net::{Ipv4Addr, Ipv6Addr};

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
}
