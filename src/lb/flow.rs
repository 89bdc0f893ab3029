//! Flows: the 5-tuple that names a connection, and its hash.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::mix::folded_multiply;

/// The transport protocols a service can be offered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp = 6,
    /// UDP (IP protocol 17).
    Udp = 17,
}

impl Protocol {
    /// The protocol for an IP protocol number, if it is TCP or UDP.
    pub const fn from_ip_protocol(number: u8) -> Option<Protocol> {
        match number {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// An IP address as 128 bits plus its family: IPv4 `a.b.c.d` is the number `0xaabbccdd` with
/// `ipv6 == false`, so an IPv4 flow never equals the IPv4-mapped IPv6 one.
#[inline]
pub(crate) const fn addr_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => a.to_bits() as u128,
        IpAddr::V6(a) => a.to_bits(),
    }
}

#[inline]
pub(crate) const fn bits_addr(bits: u128, ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::from_bits(bits))
    } else {
        IpAddr::V4(Ipv4Addr::from_bits(bits as u32))
    }
}

/// A transport flow in one direction: protocol, source and destination address and port.
///
/// Both addresses are of one family (a packet has one IP version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub(crate) src: u128,
    pub(crate) dst: u128,
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    pub(crate) protocol: Protocol,
    pub(crate) ipv6: bool,
}

/// Digits of pi: constants with no structure for the multiply-mix below.
const K: [u64; 6] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
    0x4528_21e6_38d0_1377,
    0xbe54_66cf_34e9_0c6c,
];

impl FlowKey {
    /// The flow from `src` to `dst`. `None` if the two addresses are of different families.
    pub fn new(protocol: Protocol, src: SocketAddr, dst: SocketAddr) -> Option<FlowKey> {
        if src.is_ipv6() != dst.is_ipv6() {
            return None;
        }
        Some(FlowKey {
            src: addr_bits(src.ip()),
            dst: addr_bits(dst.ip()),
            src_port: src.port(),
            dst_port: dst.port(),
            protocol,
            ipv6: src.is_ipv6(),
        })
    }

    /// The source address and port.
    pub fn src(&self) -> SocketAddr {
        SocketAddr::new(bits_addr(self.src, self.ipv6), self.src_port)
    }

    /// The destination address and port.
    pub fn dst(&self) -> SocketAddr {
        SocketAddr::new(bits_addr(self.dst, self.ipv6), self.dst_port)
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The same flow seen from the other end.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            ..*self
        }
    }

    /// The ports, protocol and family in one word, for comparisons.
    #[inline(always)]
    fn tail(&self) -> u64 {
        (u64::from(self.src_port) << 48)
            | (u64::from(self.dst_port) << 32)
            | (u64::from(self.protocol as u8) << 8)
            | u64::from(self.ipv6)
    }

    /// `self == other`, as three comparisons folded into one branch (the derived `==` takes a
    /// branch per field).
    #[inline(always)]
    pub(crate) fn same(&self, other: &FlowKey) -> bool {
        ((self.src ^ other.src) | (self.dst ^ other.dst)) == 0 && self.tail() == other.tail()
    }

    /// A 64-bit hash of the flow. With `seed == 0` this is the flow hash that picks a Maglev
    /// slot ([`crate::lb::Maglev::slot_of`]); it has no per-process key, so every node of a
    /// cluster running this version puts a flow in the same slot. Connection tracking passes
    /// a secret seed instead, so that nobody outside can aim flows at one hash chain.
    ///
    /// Three folded 64 x 64-bit multiplies over the addresses, ports and protocol: a few
    /// nanoseconds, far below SipHash, and good enough for table indexing (it is not a MAC).
    #[inline]
    pub fn hash(&self, seed: u64) -> u64 {
        let tail = self.tail();
        let a = folded_multiply(
            (self.src as u64) ^ seed ^ K[0],
            ((self.src >> 64) as u64) ^ K[1],
        );
        let b = folded_multiply(
            (self.dst as u64) ^ K[2],
            ((self.dst >> 64) as u64) ^ tail ^ K[3],
        );
        folded_multiply(a ^ K[4], b ^ K[5])
    }

    /// A hash of the source address alone, for session affinity (`ClientIP`): the same client
    /// gets the same Maglev slot whatever its ports. Unseeded, like [`FlowKey::hash`] with 0.
    #[inline]
    pub fn source_hash(&self) -> u64 {
        let a = folded_multiply(
            (self.src as u64) ^ K[0],
            ((self.src >> 64) as u64) ^ K[1] ^ u64::from(self.ipv6),
        );
        folded_multiply(a ^ K[4], K[5])
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn v4(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
    }

    #[test]
    fn round_trip_and_reverse() {
        let f = FlowKey::new(
            Protocol::Tcp,
            v4([10, 0, 0, 1], 1234),
            v4([10, 0, 0, 2], 80),
        )
        .unwrap();
        assert_eq!(f.src(), v4([10, 0, 0, 1], 1234));
        assert_eq!(f.dst(), v4([10, 0, 0, 2], 80));
        assert_eq!(f.reversed().src(), f.dst());
        assert_eq!(f.reversed().reversed(), f);
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(FlowKey::new(Protocol::Udp, v6, v4([1, 2, 3, 4], 5)), None);
        let g = FlowKey::new(Protocol::Udp, v6, v6).unwrap();
        assert_eq!(g.src(), v6);
    }

    #[test]
    fn hash_depends_on_every_field() {
        let f = FlowKey::new(
            Protocol::Tcp,
            v4([10, 0, 0, 1], 1234),
            v4([10, 0, 0, 2], 80),
        )
        .unwrap();
        let variants = [
            FlowKey {
                src_port: 1235,
                ..f
            },
            FlowKey { dst_port: 81, ..f },
            FlowKey {
                src: f.src ^ 1,
                ..f
            },
            FlowKey {
                dst: f.dst ^ 1,
                ..f
            },
            FlowKey {
                protocol: Protocol::Udp,
                ..f
            },
            FlowKey { ipv6: true, ..f },
            f.reversed(),
        ];
        for v in variants {
            assert_ne!(v.hash(0), f.hash(0), "{v:?}");
            assert!(!v.same(&f) && !f.same(&v), "{v:?}");
        }
        assert!(f.same(&{ f }));
        assert_ne!(f.hash(1), f.hash(0));
        assert_eq!(f.source_hash(), FlowKey { src_port: 9, ..f }.source_hash());
        assert_ne!(f.source_hash(), FlowKey { src: 7, ..f }.source_hash());
    }
}
