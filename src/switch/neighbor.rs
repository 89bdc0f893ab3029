//! ARP and IPv6 neighbour discovery for the switch's own answers: the requests it may answer
//! on a host's behalf (ARP / ND suppression, as Linux's bridge `neigh_suppress` and EVPN
//! VTEPs do) and the replies it writes.
//!
//! Suppression keeps address resolution off the overlay: a VNI with hundreds of hosts would
//! otherwise flood every ARP request to every VTEP. The switch answers from its neighbour table
//! (IP -> MAC per VNI), with the owner's MAC, so the reply is exactly what the owner would have
//! sent. What it never answers, and why:
//! - ARP probes (sender IP 0.0.0.0, RFC 5227) and gratuitous ARP (sender IP = target IP): a
//!   reply to a probe tells the prober that its address is taken; an announcement asks nothing.
//!   Linux's bridge leaves both unanswered too.
//! - Duplicate address detection (an NS from the unspecified address, RFC 4862 section 5.4):
//!   an answer would make a host that legitimately took an address over give it up.
//! - Anything that fails RFC 4861 section 7.1.1's validity checks (hop limit 255, code 0,
//!   checksum, target not multicast, a source link-layer option only with a specified source).
//!
//! Frames here are untagged Ethernet: the switch strips an access port's VLAN tag before it
//! looks at the payload and adds it back on egress. Replies are not padded to Ethernet's
//! 60-byte minimum; the transmitting device pads, as it does for the kernel's own ARP replies.

use core::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::wire::{NdiscNeighborFlags, NdiscRepr, RawHardwareAddress};

use crate::wire::{
    ethertype, ArpOperation, ArpPacket, ArpRepr, ChecksumCapabilities, EthernetAddress,
    EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol,
    Ipv6Packet, Ipv6Repr, ETHERNET_HEADER_LEN, IPV6_HEADER_LEN,
};

/// The length of an Ethernet + ARP reply for IPv4: 14 + 28 bytes.
pub const ARP_REPLY_LEN: usize = ETHERNET_HEADER_LEN + 28;
/// The length of a neighbour advertisement with a target link-layer address option:
/// Ethernet 14 + IPv6 40 + ICMPv6 NA 24 + option 8.
pub const NEIGHBOR_ADVERTISEMENT_LEN: usize = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + 32;
/// The length of a neighbour solicitation with a source link-layer address option, the
/// same as an advertisement.
pub const NEIGHBOR_SOLICITATION_LEN: usize = NEIGHBOR_ADVERTISEMENT_LEN;
/// The length of an ARP request frame, the same as a reply.
pub const ARP_REQUEST_LEN: usize = ARP_REPLY_LEN;

/// Neighbour discovery messages travel with hop limit 255 and are refused otherwise: proof
/// that they were not forwarded by a router (RFC 4861 section 7.1.1).
const ND_HOP_LIMIT: u8 = 255;

/// An ARP request that may be answered on the target's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRequest {
    /// Who asks: the sender hardware address of the ARP packet.
    pub sender_mac: EthernetAddress,
    /// The asker's IPv4 address.
    pub sender_ip: Ipv4Addr,
    /// The address whose MAC is wanted: the key into the neighbour table.
    pub target_ip: Ipv4Addr,
}

/// Reads an untagged Ethernet frame as an ARP request that may be answered; `None` for
/// anything else, including ARP probes and gratuitous ARP (see the module documentation).
pub fn parse_arp_request(frame: &[u8]) -> Option<ArpRequest> {
    let arp = arp_packet(frame)?;
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = ArpRepr::parse(&arp).ok()?
    else {
        return None;
    };
    if operation != ArpOperation::Request
        || source_protocol_addr.is_unspecified()
        || source_protocol_addr == target_protocol_addr
        || !source_hardware_addr.is_unicast()
    {
        return None;
    }
    Some(ArpRequest {
        sender_mac: source_hardware_addr,
        sender_ip: source_protocol_addr,
        target_ip: target_protocol_addr,
    })
}

/// Writes, into `out`, the reply that the owner of `request.target_ip`, at `target_mac`,
/// would send: addressed to the asker, from `target_mac`. Returns its length
/// ([`ARP_REPLY_LEN`]), or `None` when `out` is shorter.
pub fn write_arp_reply(
    request: &ArpRequest,
    target_mac: EthernetAddress,
    out: &mut [u8],
) -> Option<usize> {
    write_arp(
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: target_mac,
            source_protocol_addr: request.target_ip,
            target_hardware_addr: request.sender_mac,
            target_protocol_addr: request.sender_ip,
        },
        request.sender_mac,
        out,
    )
}

/// Writes, into `out`, a broadcast ARP request from `(local_mac, local_ip)` for `target_ip`:
/// how the switch resolves an underlay next hop. Returns its length ([`ARP_REQUEST_LEN`]),
/// or `None` when `out` is shorter.
pub fn write_arp_request(
    local_mac: EthernetAddress,
    local_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
    out: &mut [u8],
) -> Option<usize> {
    write_arp(
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: local_mac,
            source_protocol_addr: local_ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target_ip,
        },
        EthernetAddress::BROADCAST,
        out,
    )
}

fn write_arp(repr: ArpRepr, dst: EthernetAddress, out: &mut [u8]) -> Option<usize> {
    let ArpRepr::EthernetIpv4 {
        source_hardware_addr,
        ..
    } = repr
    else {
        return None;
    };
    let out = out.get_mut(..ARP_REPLY_LEN)?;
    let mut frame = EthernetFrame::new_unchecked(&mut *out);
    EthernetRepr {
        src_addr: source_hardware_addr,
        dst_addr: dst,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut frame);
    repr.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    Some(ARP_REPLY_LEN)
}

/// The ARP packet of an untagged Ethernet frame, if it carries one.
fn arp_packet(frame: &[u8]) -> Option<ArpPacket<&[u8]>> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    if u16::from(ethernet.ethertype()) != ethertype::ARP {
        return None;
    }
    ArpPacket::new_checked(ethernet.payload()).ok()
}

/// An ARP reply, as the resolver of underlay next hops reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpReply {
    /// The address that was resolved.
    pub sender_ip: Ipv4Addr,
    /// Its MAC.
    pub sender_mac: EthernetAddress,
    /// Whom the reply is for.
    pub target_ip: Ipv4Addr,
}

/// Reads an untagged Ethernet frame as an ARP reply with a unicast sender; `None` otherwise.
pub fn parse_arp_reply(frame: &[u8]) -> Option<ArpReply> {
    let arp = arp_packet(frame)?;
    let ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = ArpRepr::parse(&arp).ok()?
    else {
        return None;
    };
    if !source_hardware_addr.is_unicast() || source_protocol_addr.is_unspecified() {
        return None;
    }
    Some(ArpReply {
        sender_ip: source_protocol_addr,
        sender_mac: source_hardware_addr,
        target_ip: target_protocol_addr,
    })
}

/// An IPv6 neighbour solicitation that may be answered on the target's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborSolicitation {
    /// Who asks: the source link-layer address option, or the Ethernet source without one.
    pub sender_mac: EthernetAddress,
    /// The asker's IPv6 address (never the unspecified address: DAD is not answered).
    pub sender_ip: Ipv6Addr,
    /// The address whose MAC is wanted.
    pub target_ip: Ipv6Addr,
}

/// Reads an untagged Ethernet frame as a valid neighbour solicitation (RFC 4861 section 7.1.1)
/// that may be answered; `None` for anything else, including DAD solicitations. The ICMPv6
/// header must follow the IPv6 header directly (an NS carries no extension headers in
/// practice; one that does is left to flood).
pub fn parse_neighbor_solicitation(frame: &[u8]) -> Option<NeighborSolicitation> {
    let message = parse_ndisc(frame)?;
    if !message.solicitation
        || !message.ethernet_src.is_unicast()
        || message.ip.src_addr.is_unspecified()
        || message.ip.src_addr.is_multicast()
    {
        return None;
    }
    Some(NeighborSolicitation {
        sender_mac: message.link_layer()?,
        sender_ip: message.ip.src_addr,
        target_ip: message.target,
    })
}

/// A neighbour solicitation or advertisement that passed RFC 4861 section 7.1's common
/// checks: IPv6 carrying ICMPv6 directly, hop limit 255, code 0, checksum, target not
/// multicast.
struct NdiscMessage {
    ethernet_src: EthernetAddress,
    ip: Ipv6Repr,
    solicitation: bool,
    target: Ipv6Addr,
    link_layer_option: Option<RawHardwareAddress>,
}

impl NdiscMessage {
    /// The MAC the message speaks for: its link-layer address option, or the Ethernet
    /// source without one; `None` unless unicast.
    fn link_layer(&self) -> Option<EthernetAddress> {
        let mac = match self.link_layer_option {
            Some(raw) => ethernet_from_raw(raw)?,
            None => self.ethernet_src,
        };
        mac.is_unicast().then_some(mac)
    }
}

fn parse_ndisc(frame: &[u8]) -> Option<NdiscMessage> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    if u16::from(ethernet.ethertype()) != ethertype::IPV6 {
        return None;
    }
    let ip = Ipv6Packet::new_checked(ethernet.payload()).ok()?;
    let ip_repr = Ipv6Repr::parse(&ip).ok()?;
    if ip_repr.next_header != IpProtocol::Icmpv6 || ip_repr.hop_limit != ND_HOP_LIMIT {
        return None;
    }
    let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
    if icmp.msg_code() != 0 {
        return None;
    }
    // Verifies the checksum over the pseudo-header.
    let repr = Icmpv6Repr::parse(
        &ip_repr.src_addr,
        &ip_repr.dst_addr,
        &icmp,
        &ChecksumCapabilities::default(),
    )
    .ok()?;
    let (solicitation, target, link_layer_option) = match repr {
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
            target_addr,
            lladdr,
        }) => (true, target_addr, lladdr),
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            target_addr,
            lladdr,
            ..
        }) => (false, target_addr, lladdr),
        _ => return None,
    };
    if target.is_multicast() {
        return None;
    }
    Some(NdiscMessage {
        ethernet_src: ethernet.src_addr(),
        ip: ip_repr,
        solicitation,
        target,
        link_layer_option,
    })
}

fn ethernet_from_raw(raw: RawHardwareAddress) -> Option<EthernetAddress> {
    let bytes: [u8; 6] = raw.as_bytes().try_into().ok()?;
    Some(EthernetAddress(bytes))
}

/// Writes, into `out`, the solicited neighbour advertisement that the owner of
/// `solicitation.target_ip`, at `target_mac`, would send: to the asker, with the Solicited and
/// Override flags and the target link-layer address option (RFC 4861 section 7.2.4), and the
/// Router flag when `router`. Returns its length ([`NEIGHBOR_ADVERTISEMENT_LEN`]), or `None`
/// when `out` is shorter.
///
/// Override is set although RFC 4861 section 7.2.8 asks proxies to clear it: the switch does
/// not advertise its own MAC for someone else's address, it relays the owner's binding, and a
/// host whose cache holds an old MAC (the owner moved) must take the new one.
pub fn write_neighbor_advertisement(
    solicitation: &NeighborSolicitation,
    target_mac: EthernetAddress,
    router: bool,
    out: &mut [u8],
) -> Option<usize> {
    let mut flags = NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE;
    if router {
        flags |= NdiscNeighborFlags::ROUTER;
    }
    write_ndisc(
        target_mac,
        solicitation.sender_mac,
        solicitation.target_ip,
        solicitation.sender_ip,
        NdiscRepr::NeighborAdvert {
            flags,
            target_addr: solicitation.target_ip,
            lladdr: Some(RawHardwareAddress::from(target_mac)),
        },
        out,
    )
}

/// Writes, into `out`, a neighbour solicitation from `(local_mac, local_ip)` for `target_ip`,
/// to the target's solicited-node multicast group (RFC 4861 section 7.2.2), with the source
/// link-layer address option: how the switch resolves an IPv6 underlay next hop. Returns its
/// length ([`NEIGHBOR_SOLICITATION_LEN`]), or `None` when `out` is shorter.
pub fn write_neighbor_solicitation(
    local_mac: EthernetAddress,
    local_ip: Ipv6Addr,
    target_ip: Ipv6Addr,
    out: &mut [u8],
) -> Option<usize> {
    let t = target_ip.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    // RFC 2464 section 7: 33:33 and the group's last 32 bits.
    let g = group.octets();
    let group_mac = EthernetAddress([0x33, 0x33, g[12], g[13], g[14], g[15]]);
    write_ndisc(
        local_mac,
        group_mac,
        local_ip,
        group,
        NdiscRepr::NeighborSolicit {
            target_addr: target_ip,
            lladdr: Some(RawHardwareAddress::from(local_mac)),
        },
        out,
    )
}

/// A neighbour advertisement, as the resolver of underlay next hops reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborAdvertisement {
    /// The address that was resolved.
    pub target_ip: Ipv6Addr,
    /// Its MAC: the target link-layer address option, or the Ethernet source without one.
    pub target_mac: EthernetAddress,
    /// Whom the advertisement is for.
    pub dst_ip: Ipv6Addr,
}

/// Reads an untagged Ethernet frame as a valid neighbour advertisement (RFC 4861 section
/// 7.1.2); `None` otherwise.
pub fn parse_neighbor_advertisement(frame: &[u8]) -> Option<NeighborAdvertisement> {
    let message = parse_ndisc(frame)?;
    if message.solicitation {
        return None;
    }
    Some(NeighborAdvertisement {
        target_ip: message.target,
        target_mac: message.link_layer()?,
        dst_ip: message.ip.dst_addr,
    })
}

fn write_ndisc(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    ndisc: NdiscRepr<'_>,
    out: &mut [u8],
) -> Option<usize> {
    let icmp = Icmpv6Repr::Ndisc(ndisc);
    let ip = Ipv6Repr {
        src_addr: src_ip,
        dst_addr: dst_ip,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: ND_HOP_LIMIT,
    };
    let len = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + icmp.buffer_len();
    let out = out.get_mut(..len)?;
    let mut frame = EthernetFrame::new_unchecked(&mut *out);
    EthernetRepr {
        src_addr: src_mac,
        dst_addr: dst_mac,
        ethertype: EthernetProtocol::Ipv6,
    }
    .emit(&mut frame);
    let mut packet = Ipv6Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet);
    icmp.emit(
        &src_ip,
        &dst_ip,
        &mut Icmpv6Packet::new_unchecked(packet.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    Some(len)
}

#[cfg(test)]
mod test {
    use super::*;

    const HOST_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x0a]);
    const HOST_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x0b]);
    const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
    const B4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
    const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xa);
    const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0x5ee, 0xb);

    /// An ARP request from 02:00:00:00:00:0a (198.18.1.10) for 198.18.1.11, as scapy builds
    /// it: `Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:0a") / ARP(op=1,
    /// hwsrc="02:00:00:00:00:0a", psrc="198.18.1.10", pdst="198.18.1.11")`.
    const ARP_WHO_HAS: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x0a, 0x08, 0x06, // Ethernet
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet/IPv4, request
        0x02, 0, 0, 0, 0, 0x0a, 198, 18, 1, 10, // sender
        0, 0, 0, 0, 0, 0, 198, 18, 1, 11, // target
    ];

    #[test]
    fn arp_request_parsed_and_answered_as_the_owner_would() {
        let request = parse_arp_request(&ARP_WHO_HAS).unwrap();
        assert_eq!(
            request,
            ArpRequest {
                sender_mac: HOST_A,
                sender_ip: A4,
                target_ip: B4
            }
        );
        let mut out = [0u8; 64];
        let len = write_arp_reply(&request, HOST_B, &mut out).unwrap();
        assert_eq!(len, ARP_REPLY_LEN);
        // The expected reply, byte by byte: to A, from B, "198.18.1.11 is at ...:0b".
        let expected: [u8; 42] = [
            0x02, 0, 0, 0, 0, 0x0a, 0x02, 0, 0, 0, 0, 0x0b, 0x08, 0x06, //
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, //
            0x02, 0, 0, 0, 0, 0x0b, 198, 18, 1, 11, //
            0x02, 0, 0, 0, 0, 0x0a, 198, 18, 1, 10,
        ];
        assert_eq!(out[..len], expected);
        let reply = parse_arp_reply(&out[..len]).unwrap();
        assert_eq!(
            reply,
            ArpReply {
                sender_ip: B4,
                sender_mac: HOST_B,
                target_ip: A4
            }
        );
        assert_eq!(write_arp_reply(&request, HOST_B, &mut [0u8; 41]), None);
    }

    #[test]
    fn arp_probes_announcements_and_replies_are_not_answered() {
        let mut probe = ARP_WHO_HAS;
        probe[28..32].fill(0); // RFC 5227 probe: sender IP 0.0.0.0
        assert_eq!(parse_arp_request(&probe), None);
        let mut gratuitous = ARP_WHO_HAS;
        gratuitous[38..42].copy_from_slice(&[198, 18, 1, 10]);
        assert_eq!(parse_arp_request(&gratuitous), None);
        let mut reply = ARP_WHO_HAS;
        reply[21] = 2;
        assert_eq!(parse_arp_request(&reply), None);
        let mut multicast_sender = ARP_WHO_HAS;
        multicast_sender[22] = 0x01;
        assert_eq!(parse_arp_request(&multicast_sender), None);
        let mut not_arp = ARP_WHO_HAS;
        not_arp[13] = 0x00;
        assert_eq!(parse_arp_request(&not_arp), None);
        for len in 0..ARP_WHO_HAS.len() {
            assert_eq!(parse_arp_request(&ARP_WHO_HAS[..len]), None, "length {len}");
        }
    }

    #[test]
    fn arp_request_for_resolution() {
        let mut out = [0u8; ARP_REQUEST_LEN];
        let len = write_arp_request(HOST_A, A4, B4, &mut out).unwrap();
        assert_eq!(out[..len], ARP_WHO_HAS);
    }

    /// The same solicitation built by scapy, with the group and its MAC from scapy's own
    /// `in6_getnsma` and `in6_getnsmac`: `Ether(dst="33:33:ff:ee:00:0b",
    /// src="02:00:00:00:00:0a") / IPv6(src="2001:db8:1::a", dst="ff02::1:ffee:b", hlim=255) /
    /// ICMPv6ND_NS(tgt="2001:db8:1::5ee:b") / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:0a")`.
    const SCAPY_NS: &str = "3333ffee000b02000000000a86dd6000000000203aff20010db800010000000000000000000aff0200000000000000000001ffee000b870015250000000020010db8000100000000000005ee000b010102000000000a";

    fn from_hex(hex: &str) -> std::vec::Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn neighbor_solicitation_matches_scapy() {
        assert_eq!(solicitation(A6)[..], from_hex(SCAPY_NS)[..]);
    }

    /// A neighbour solicitation from A for B, built by our writer, then checked field by
    /// field by smoltcp's parsers (which verify the ICMPv6 checksum).
    fn solicitation(src: Ipv6Addr) -> [u8; NEIGHBOR_SOLICITATION_LEN] {
        let mut out = [0u8; NEIGHBOR_SOLICITATION_LEN];
        write_neighbor_solicitation(HOST_A, src, B6, &mut out).unwrap();
        out
    }

    #[test]
    fn neighbor_solicitation_goes_to_the_solicited_node_group() {
        let frame = solicitation(A6);
        // The low 24 bits of 2001:db8:1::5ee:b are ee:00:0b: the group is ff02::1:ffee:b and
        // its MAC 33:33:ff:ee:00:0b (RFC 4291 section 2.7.1, RFC 2464 section 7).
        assert_eq!(frame[..6], [0x33, 0x33, 0xff, 0xee, 0x00, 0x0b]);
        let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(
            ip.dst_addr(),
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xffee, 0x000b)
        );
        assert_eq!(ip.hop_limit(), 255);
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        assert_eq!(
            parse_neighbor_solicitation(&frame),
            Some(NeighborSolicitation {
                sender_mac: HOST_A,
                sender_ip: A6,
                target_ip: B6
            })
        );
    }

    #[test]
    fn neighbor_advertisement_as_the_owner_would_send_it() {
        let ns = parse_neighbor_solicitation(&solicitation(A6)).unwrap();
        let mut out = [0u8; 128];
        let len = write_neighbor_advertisement(&ns, HOST_B, false, &mut out).unwrap();
        assert_eq!(len, NEIGHBOR_ADVERTISEMENT_LEN);
        let frame = EthernetFrame::new_checked(&out[..len]).unwrap();
        assert_eq!((frame.dst_addr(), frame.src_addr()), (HOST_A, HOST_B));
        let ip = Ipv6Packet::new_checked(frame.payload()).unwrap();
        assert_eq!(
            (ip.src_addr(), ip.dst_addr(), ip.hop_limit()),
            (B6, A6, 255)
        );
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        let repr = Icmpv6Repr::parse(&B6, &A6, &icmp, &ChecksumCapabilities::default()).unwrap();
        assert_eq!(
            repr,
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                flags: NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
                target_addr: B6,
                lladdr: Some(RawHardwareAddress::from(HOST_B)),
            })
        );
        assert_eq!(
            parse_neighbor_advertisement(&out[..len]),
            Some(NeighborAdvertisement {
                target_ip: B6,
                target_mac: HOST_B,
                dst_ip: A6
            })
        );
        let len = write_neighbor_advertisement(&ns, HOST_B, true, &mut out).unwrap();
        let icmp = Icmpv6Packet::new_checked(&out[54..len]).unwrap();
        assert!(icmp.neighbor_flags().contains(NdiscNeighborFlags::ROUTER));
        assert_eq!(
            write_neighbor_advertisement(&ns, HOST_B, false, &mut [0u8; 85]),
            None
        );
    }

    #[test]
    fn invalid_solicitations_are_not_answered() {
        // Duplicate address detection: from the unspecified address.
        assert_eq!(
            parse_neighbor_solicitation(&solicitation(Ipv6Addr::UNSPECIFIED)),
            None
        );
        // Hop limit below 255: forwarded by a router (and the checksum does not cover it).
        let mut forwarded = solicitation(A6);
        forwarded[14 + 7] = 254;
        assert_eq!(parse_neighbor_solicitation(&forwarded), None);
        // A broken checksum.
        let mut corrupt = solicitation(A6);
        corrupt[14 + 40 + 2] ^= 1;
        assert_eq!(parse_neighbor_solicitation(&corrupt), None);
        // An advertisement is not a solicitation, and the other way round.
        let ns = parse_neighbor_solicitation(&solicitation(A6)).unwrap();
        let mut na = [0u8; NEIGHBOR_ADVERTISEMENT_LEN];
        write_neighbor_advertisement(&ns, HOST_B, false, &mut na).unwrap();
        assert_eq!(parse_neighbor_solicitation(&na), None);
        assert_eq!(parse_neighbor_advertisement(&solicitation(A6)), None);
        let full = solicitation(A6);
        for len in 0..full.len() {
            assert_eq!(
                parse_neighbor_solicitation(&full[..len]),
                None,
                "length {len}"
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut frame = solicitation(A6);
        for _ in 0..if cfg!(miri) { 200 } else { 20_000 } {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state % frame.len() as u64) as usize;
            frame[at] ^= (state >> 32) as u8;
            let len = ((state >> 40) % (frame.len() as u64 + 1)) as usize;
            let _ = parse_neighbor_solicitation(&frame[..len]);
            let _ = parse_neighbor_advertisement(&frame[..len]);
            let _ = parse_arp_request(&frame[..len]);
            let _ = parse_arp_reply(&frame[..len]);
        }
    }
}
