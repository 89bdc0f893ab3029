//! Packet formats.
//!
//! Ethernet, ARP, IPv4, IPv6, UDP, TCP and ICMP are smoltcp's zero-copy types, re-exported
//! here so that the whole crate (and its users) speak one set of types. smoltcp has no 802.1Q
//! tag and no VXLAN header; those are ours, in smoltcp's pattern: a `Packet<T>` view over a
//! buffer with `new_checked`/`check_len`, and a validated `Repr` with `parse`/`emit`.

pub mod checksum;
pub mod vlan;
pub mod vxlan;

pub use smoltcp::phy::ChecksumCapabilities;
pub use smoltcp::wire::{
    ArpHardware, ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame,
    EthernetProtocol, EthernetRepr, Icmpv4DstUnreachable, Icmpv4Message, Icmpv4Packet, Icmpv4Repr,
    Icmpv6Message, Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, Ipv4Address, Ipv4Packet,
    Ipv4Repr, Ipv6Address, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    UdpPacket, UdpRepr,
};

/// The length of an Ethernet header without tags (destination, source, EtherType).
pub const ETHERNET_HEADER_LEN: usize = 14;
/// The length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// The length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// The length of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;

/// EtherType values used by the core, as numbers (smoltcp's `EthernetProtocol` knows only
/// IPv4, IPv6 and ARP).
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// An IEEE 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// An IEEE 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88A8;
    /// IPv6.
    pub const IPV6: u16 = 0x86DD;
    /// Transparent Ethernet bridging, the protocol of an Ethernet frame inside a tunnel.
    pub const TRANSPARENT_ETHERNET: u16 = 0x6558;
}

/// Reads a big-endian `u16` at `offset`, or `None` past the end of `data`.
#[inline]
pub(crate) fn read_u16(data: &[u8], offset: usize) -> Option<u16> {
    match data.get(offset..offset.checked_add(2)?) {
        Some(&[a, b]) => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}
