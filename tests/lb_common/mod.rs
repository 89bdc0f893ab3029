//! Packets for the load balancer's tests, built and checked by smoltcp (not by our code), so
//! that a checksum we get wrong cannot be verified by the same mistake.

// Each integration test is its own crate and may use only part of this module.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4Packet, Icmpv6Packet, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};

/// TCP flag bytes, as `Services::select` takes them.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;

fn ip(addr: IpAddr) -> IpAddress {
    match addr {
        IpAddr::V4(a) => IpAddress::Ipv4(a),
        IpAddr::V6(a) => IpAddress::Ipv6(a),
    }
}

/// An IP header for `payload_len` bytes of `protocol` from `src` to `dst`, then `emit_l4` on
/// the payload.
fn ip_packet(
    src: IpAddr,
    dst: IpAddr,
    protocol: IpProtocol,
    payload_len: usize,
    emit_l4: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let caps = ChecksumCapabilities::default();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let repr = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: protocol,
                payload_len,
                hop_limit: 64,
            };
            let mut buf = vec![0u8; 20 + payload_len];
            let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
            repr.emit(&mut p, &caps);
            emit_l4(p.payload_mut());
            buf
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let repr = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: protocol,
                payload_len,
                hop_limit: 64,
            };
            let mut buf = vec![0u8; 40 + payload_len];
            let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
            repr.emit(&mut p);
            emit_l4(p.payload_mut());
            buf
        }
        _ => panic!("mixed families"),
    }
}

/// A TCP segment with the given flags (SYN, FIN, RST as `control`, ACK if `ack`).
pub fn tcp(
    src: SocketAddr,
    dst: SocketAddr,
    control: TcpControl,
    ack: bool,
    payload: &[u8],
) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        control,
        seq_number: TcpSeqNumber(0x0102_0304),
        ack_number: ack.then_some(TcpSeqNumber(0x0506_0708)),
        window_len: 64240,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    ip_packet(
        src.ip(),
        dst.ip(),
        IpProtocol::Tcp,
        repr.buffer_len(),
        |l4| {
            repr.emit(
                &mut TcpPacket::new_unchecked(l4),
                &ip(src.ip()),
                &ip(dst.ip()),
                &ChecksumCapabilities::default(),
            )
        },
    )
}

/// A UDP datagram; with `zero_checksum` its checksum field is 0 ("none", IPv4 only).
pub fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8], zero_checksum: bool) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    ip_packet(
        src.ip(),
        dst.ip(),
        IpProtocol::Udp,
        8 + payload.len(),
        |l4| {
            let mut u = UdpPacket::new_unchecked(l4);
            repr.emit(
                &mut u,
                &ip(src.ip()),
                &ip(dst.ip()),
                payload.len(),
                |b| b.copy_from_slice(payload),
                &ChecksumCapabilities::default(),
            );
            if zero_checksum {
                u.set_checksum(0);
            }
        },
    )
}

/// An ICMP (IPv4: destination unreachable, port unreachable) or ICMPv6 (destination
/// unreachable, port unreachable) error from `src` to `dst` quoting `quote`.
pub fn icmp_error(src: IpAddr, dst: IpAddr, quote: &[u8]) -> Vec<u8> {
    let ipv6 = src.is_ipv6();
    let protocol = if ipv6 {
        IpProtocol::Icmpv6
    } else {
        IpProtocol::Icmp
    };
    ip_packet(src, dst, protocol, 8 + quote.len(), |l4| {
        l4[0] = if ipv6 { 1 } else { 3 };
        l4[1] = if ipv6 { 4 } else { 3 };
        l4[8..].copy_from_slice(quote);
        match (src, dst) {
            (IpAddr::V4(_), _) => Icmpv4Packet::new_unchecked(l4).fill_checksum(),
            (IpAddr::V6(s), IpAddr::V6(d)) => Icmpv6Packet::new_unchecked(l4).fill_checksum(&s, &d),
            _ => unreachable!(),
        }
    })
}

/// The flow of a TCP or UDP packet, after checking every checksum with smoltcp: the IPv4
/// header's, and the TCP or UDP one against the pseudo-header. Panics on a bad checksum.
pub fn verified_flow(packet: &[u8]) -> (SocketAddr, SocketAddr) {
    let (src, dst, protocol, l4) = ip_header(packet);
    assert!(verify_l4(protocol, l4, src, dst), "bad {protocol} checksum");
    let (sport, dport) = (
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    );
    (SocketAddr::new(src, sport), SocketAddr::new(dst, dport))
}

/// The UDP checksum field of a packet.
pub fn udp_checksum(packet: &[u8]) -> u16 {
    let (_, _, _, l4) = ip_header(packet);
    UdpPacket::new_checked(l4).unwrap().checksum()
}

fn verify_l4(protocol: IpProtocol, l4: &[u8], src: IpAddr, dst: IpAddr) -> bool {
    match protocol {
        IpProtocol::Tcp => TcpPacket::new_checked(l4)
            .unwrap()
            .verify_checksum(&ip(src), &ip(dst)),
        IpProtocol::Udp => UdpPacket::new_checked(l4)
            .unwrap()
            .verify_checksum(&ip(src), &ip(dst)),
        other => panic!("not TCP or UDP: {other}"),
    }
}

/// Source, destination, protocol and payload of an IP packet whose IPv4 header checksum is
/// verified.
fn ip_header(packet: &[u8]) -> (IpAddr, IpAddr, IpProtocol, &[u8]) {
    match packet[0] >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(packet).unwrap();
            assert!(p.verify_checksum(), "bad IPv4 header checksum");
            let payload = &packet[p.header_len() as usize..p.total_len() as usize];
            (
                IpAddr::V4(p.src_addr()),
                IpAddr::V4(p.dst_addr()),
                p.next_header(),
                payload,
            )
        }
        6 => {
            let p = Ipv6Packet::new_checked(packet).unwrap();
            let payload = &packet[40..40 + p.payload_len() as usize];
            (
                IpAddr::V6(p.src_addr()),
                IpAddr::V6(p.dst_addr()),
                p.next_header(),
                payload,
            )
        }
        v => panic!("IP version {v}"),
    }
}

/// What an ICMP error says, after checking its checksums with smoltcp: the outer source and
/// destination, and the quoted packet's source and destination. The ICMP checksum (with the
/// pseudo-header for ICMPv6) and the quoted IPv4 header checksum must verify; so must the
/// quoted TCP or UDP checksum when the quote holds the whole quoted packet.
pub struct VerifiedIcmp {
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
    pub quoted_src: SocketAddr,
    pub quoted_dst: SocketAddr,
    /// True if the quoted packet was whole, so its L4 checksum was verified too.
    pub quote_whole: bool,
}

pub fn verified_icmp(packet: &[u8]) -> VerifiedIcmp {
    let (outer_src, outer_dst, protocol, icmp) = ip_header(packet);
    match (outer_src, outer_dst) {
        (IpAddr::V4(_), _) => {
            assert_eq!(protocol, IpProtocol::Icmp);
            assert!(
                Icmpv4Packet::new_checked(icmp).unwrap().verify_checksum(),
                "bad ICMP checksum"
            );
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            assert_eq!(protocol, IpProtocol::Icmpv6);
            assert!(
                Icmpv6Packet::new_checked(icmp)
                    .unwrap()
                    .verify_checksum(&s, &d),
                "bad ICMPv6 checksum"
            );
        }
        _ => unreachable!(),
    }
    let quote = &icmp[8..];
    let (qsrc, qdst, qproto, ql4, whole) = match quote[0] >> 4 {
        4 => {
            let p = Ipv4Packet::new_unchecked(quote);
            let hl = p.header_len() as usize;
            assert!(
                smoltcp::wire::checksum::data(&quote[..hl]) == !0,
                "bad quoted IPv4 header checksum"
            );
            let whole = quote.len() >= p.total_len() as usize;
            (
                IpAddr::V4(p.src_addr()),
                IpAddr::V4(p.dst_addr()),
                p.next_header(),
                &quote[hl..],
                whole,
            )
        }
        _ => {
            let p = Ipv6Packet::new_unchecked(quote);
            let whole = quote.len() >= 40 + p.payload_len() as usize;
            (
                IpAddr::V6(p.src_addr()),
                IpAddr::V6(p.dst_addr()),
                p.next_header(),
                &quote[40..],
                whole,
            )
        }
    };
    if whole {
        assert!(
            verify_l4(qproto, ql4, qsrc, qdst),
            "bad quoted {qproto} checksum"
        );
    }
    VerifiedIcmp {
        outer_src,
        outer_dst,
        quoted_src: SocketAddr::new(qsrc, u16::from_be_bytes([ql4[0], ql4[1]])),
        quoted_dst: SocketAddr::new(qdst, u16::from_be_bytes([ql4[2], ql4[3]])),
        quote_whole: whole,
    }
}
