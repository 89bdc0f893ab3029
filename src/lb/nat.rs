//! Packet parsing and address translation for the load balancer, in place.
//!
//! DNAT rewrites the destination (VIP:port -> backend:port) of a packet towards a service; the
//! reverse rewrites the source (backend:port -> VIP:port) of its replies. Checksums are updated
//! incrementally, one 16-bit word at a time, with RFC 1624's equation 3
//! ([`update16`]): the IPv4 header checksum for the address, and the TCP or UDP checksum for the
//! address (the pseudo-header covers it, RFC 9293 section 3.1, RFC 768, RFC 8200 section 8.1)
//! and the port. A zero UDP checksum means "none" and stays zero; a computed zero is sent as
//! 0xFFFF (RFC 768).
//!
//! An ICMP or ICMPv6 error (destination unreachable, time exceeded, parameter problem, packet
//! too big) quotes the packet that caused it. When that packet belongs to a translated flow the
//! quote is translated too, like Linux' `nf_nat_icmp_reply_translation`: its addresses, ports,
//! IPv4 header checksum and (when quoted in full) L4 checksum, then the outer address that
//! names the backend, and finally the ICMP checksum is recomputed over the whole message (ICMP
//! errors are rare, and a full sum cannot get the truncated quote wrong).
//!
//! Nothing here allocates or panics: every access is bounds-checked against the lengths the
//! headers announce.

use super::flow::{FlowKey, Protocol};
use crate::wire::checksum::{fold, sum_bytes};

/// IP protocol numbers.
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
/// IPv6 next-header values that are extension headers we do not walk (RFC 8200 section 4).
const IPV6_FRAGMENT: u8 = 44;
const IPV6_EXTENSIONS: [u8; 8] = [0, 43, 44, 50, 51, 60, 135, 139];

/// Where the transport header of a packet is and what it says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transport {
    /// The flow as the packet states it (source -> destination).
    pub(crate) flow: FlowKey,
    /// The offset of the TCP or UDP header.
    pub(crate) l4: usize,
    /// The TCP flags byte, 0 for UDP.
    pub(crate) tcp_flags: u8,
}

/// An ICMP error quoting a TCP or UDP packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IcmpError {
    /// The outer packet's source and destination (as 128-bit numbers, see `FlowKey`).
    pub(crate) outer_src: u128,
    pub(crate) outer_dst: u128,
    /// The offset of the ICMP header.
    pub(crate) icmp: usize,
    /// The quoted packet's flow, as it was sent.
    pub(crate) quoted: FlowKey,
    /// The offset of the quoted IP header and of its transport header.
    pub(crate) quoted_ip: usize,
    pub(crate) quoted_l4: usize,
}

/// What a packet is, as far as the load balancer cares.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Parsed {
    /// A TCP or UDP packet (not a fragment).
    Transport(Transport),
    /// An ICMP or ICMPv6 error quoting a TCP or UDP packet.
    IcmpError(IcmpError),
    /// Anything else: another protocol, an ICMP message of another kind, a fragment, or a
    /// header we do not walk. `dst` lets the caller ask whether it was aimed at a VIP.
    Other {
        dst: u128,
        ipv6: bool,
        fragment: bool,
        extension_header: bool,
    },
}

/// The packet is not a well-formed IPv4 or IPv6 packet, or is cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

#[inline(always)]
fn u16_at(data: &[u8], offset: usize) -> Option<u16> {
    match data.get(offset..offset.checked_add(2)?)? {
        &[a, b] => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

#[inline(always)]
fn put_u16(data: &mut [u8], offset: usize, value: u16) {
    if let Some(bytes) = data.get_mut(offset..offset + 2) {
        bytes.copy_from_slice(&value.to_be_bytes());
    }
}

#[inline(always)]
fn addr_at(data: &[u8], offset: usize, ipv6: bool) -> Option<u128> {
    if ipv6 {
        let bytes: [u8; 16] = data.get(offset..offset + 16)?.try_into().ok()?;
        Some(u128::from_be_bytes(bytes))
    } else {
        let bytes: [u8; 4] = data.get(offset..offset + 4)?.try_into().ok()?;
        Some(u128::from(u32::from_be_bytes(bytes)))
    }
}

/// An IP header: family, header length, protocol, addresses, where the packet ends.
struct Ip {
    ipv6: bool,
    header_len: usize,
    protocol: u8,
    src: u128,
    dst: u128,
    fragment: bool,
    end: usize,
}

/// Parses an IP header at the start of `data`. With `quoted`, the packet may be cut short (an
/// ICMP quote), so its length field is not checked against `data`.
#[inline(always)]
fn parse_ip(data: &[u8], quoted: bool) -> Result<Ip, Malformed> {
    let first = *data.first().ok_or(Malformed)?;
    match first >> 4 {
        4 => {
            let header_len = usize::from(first & 0x0F) * 4;
            if header_len < 20 || data.len() < header_len {
                return Err(Malformed);
            }
            let total = usize::from(u16_at(data, 2).ok_or(Malformed)?);
            let end = if quoted {
                data.len()
            } else if total < header_len || total > data.len() {
                return Err(Malformed);
            } else {
                total
            };
            let fragment_word = u16_at(data, 6).ok_or(Malformed)?;
            Ok(Ip {
                ipv6: false,
                header_len,
                protocol: *data.get(9).ok_or(Malformed)?,
                src: addr_at(data, 12, false).ok_or(Malformed)?,
                dst: addr_at(data, 16, false).ok_or(Malformed)?,
                // More fragments, or an offset: a fragment (RFC 791).
                fragment: fragment_word & 0x3FFF != 0,
                end,
            })
        }
        6 => {
            if data.len() < 40 {
                return Err(Malformed);
            }
            let payload = usize::from(u16_at(data, 4).ok_or(Malformed)?);
            let end = if quoted {
                data.len()
            } else if 40 + payload > data.len() {
                return Err(Malformed);
            } else {
                40 + payload
            };
            let protocol = *data.get(6).ok_or(Malformed)?;
            Ok(Ip {
                ipv6: true,
                header_len: 40,
                protocol,
                src: addr_at(data, 8, true).ok_or(Malformed)?,
                dst: addr_at(data, 24, true).ok_or(Malformed)?,
                fragment: protocol == IPV6_FRAGMENT,
                end,
            })
        }
        _ => Err(Malformed),
    }
}

/// The transport part of a packet whose IP header is `ip`, if it is TCP or UDP with its
/// header present.
#[inline(always)]
fn parse_ports(data: &[u8], ip: &Ip, l4: usize, end: usize) -> Option<(FlowKey, u8)> {
    let protocol = Protocol::from_ip_protocol(ip.protocol)?;
    let need = match protocol {
        Protocol::Tcp => 20,
        Protocol::Udp => 8,
    };
    if end < l4 + need {
        return None;
    }
    // The first eight bytes (ports, and UDP's length and checksum) as one array: one bounds
    // check for the fields read.
    let head: &[u8; 8] = data.get(l4..l4 + 8)?.try_into().ok()?;
    let tcp_flags = match protocol {
        Protocol::Tcp => *data.get(l4 + 13)?,
        Protocol::Udp => 0,
    };
    Some((
        FlowKey {
            src: ip.src,
            dst: ip.dst,
            src_port: u16::from_be_bytes([head[0], head[1]]),
            dst_port: u16::from_be_bytes([head[2], head[3]]),
            protocol,
            ipv6: ip.ipv6,
        },
        tcp_flags,
    ))
}

/// Parses an IP packet that starts at `packet[0]`. Bytes after the length its header states
/// (link padding) are ignored.
pub(crate) fn parse(packet: &[u8]) -> Result<Parsed, Malformed> {
    let ip = parse_ip(packet, false)?;
    let data = packet.get(..ip.end).ok_or(Malformed)?;
    let other = |ip: &Ip| Parsed::Other {
        dst: ip.dst,
        ipv6: ip.ipv6,
        fragment: ip.fragment,
        extension_header: ip.ipv6 && IPV6_EXTENSIONS.contains(&ip.protocol),
    };
    if ip.fragment {
        return Ok(other(&ip));
    }
    let l4 = ip.header_len;
    match ip.protocol {
        PROTO_TCP | PROTO_UDP => match parse_ports(data, &ip, l4, ip.end) {
            Some((flow, tcp_flags)) => Ok(Parsed::Transport(Transport {
                flow,
                l4,
                tcp_flags,
            })),
            None => Err(Malformed),
        },
        PROTO_ICMP if !ip.ipv6 => Ok(parse_icmp_error(data, &ip, l4).unwrap_or(other(&ip))),
        PROTO_ICMPV6 if ip.ipv6 => Ok(parse_icmp_error(data, &ip, l4).unwrap_or(other(&ip))),
        _ => Ok(other(&ip)),
    }
}

/// The fast path of [`parse`]: `Some(t)` exactly when `parse` gives `Ok(Parsed::Transport(t))`,
/// `None` for everything else (which the caller then hands to `parse`). Small enough to be
/// inlined into the data path, so that the transport part is not built in a large enum and
/// copied out of it.
#[inline(always)]
pub(crate) fn parse_transport(packet: &[u8]) -> Option<Transport> {
    let ip = parse_ip(packet, false).ok()?;
    if ip.fragment || !matches!(ip.protocol, PROTO_TCP | PROTO_UDP) {
        return None;
    }
    let data = packet.get(..ip.end)?;
    let l4 = ip.header_len;
    let (flow, tcp_flags) = parse_ports(data, &ip, l4, ip.end)?;
    Some(Transport {
        flow,
        l4,
        tcp_flags,
    })
}

#[cold]
#[inline(never)]
fn parse_icmp_error(data: &[u8], ip: &Ip, icmp: usize) -> Option<Parsed> {
    let kind = *data.get(icmp)?;
    let is_error = if ip.ipv6 {
        // Destination unreachable, packet too big, time exceeded, parameter problem
        // (RFC 4443 section 2.1).
        matches!(kind, 1..=4)
    } else {
        // Destination unreachable, time exceeded, parameter problem (RFC 792).
        matches!(kind, 3 | 11 | 12)
    };
    if !is_error {
        return None;
    }
    let quoted_ip = icmp + 8;
    let quote = data.get(quoted_ip..)?;
    let inner = parse_ip(quote, true).ok()?;
    if inner.ipv6 != ip.ipv6 || inner.fragment {
        return None;
    }
    // The quote holds at least the first 8 bytes of the transport header: the ports (RFC 792,
    // RFC 4443 quote as much as fits).
    let quoted_l4 = inner.header_len;
    let protocol = Protocol::from_ip_protocol(inner.protocol)?;
    let quoted = FlowKey {
        src: inner.src,
        dst: inner.dst,
        src_port: u16_at(quote, quoted_l4)?,
        dst_port: u16_at(quote, quoted_l4 + 2)?,
        protocol,
        ipv6: inner.ipv6,
    };
    u16_at(quote, quoted_l4 + 6)?;
    Some(Parsed::IcmpError(IcmpError {
        outer_src: ip.src,
        outer_dst: ip.dst,
        icmp,
        quoted,
        quoted_ip,
        quoted_l4: quoted_ip + quoted_l4,
    }))
}

/// Which end of a packet to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Source,
    Destination,
}

/// Applies `update16` for an address changing from `old` to `new` (2 words for IPv4, 8 for
/// IPv6) to `checksum`.
#[inline(always)]
fn update_addr(checksum: u16, old: u128, new: u128, ipv6: bool) -> u16 {
    apply_delta(checksum, addr_delta(old, new, ipv6))
}

/// RFC 1624's `~m + m'` summed over the words of an address changing from `old` to `new`,
/// unfolded (at most 16 x 0xFFFF). Without a loop: `~m` is `0xFFFF - m`, so the sum is
/// `words * 0xFFFF - sum(old) + sum(new)` (the first term bounds `sum(old)`: no underflow).
#[inline(always)]
fn addr_delta(old: u128, new: u128, ipv6: bool) -> u32 {
    if ipv6 {
        8 * 0xFFFF - word_sum_128(old) + word_sum_128(new)
    } else {
        let (old, new) = (old as u32, new as u32);
        2 * 0xFFFF - ((old >> 16) + (old & 0xFFFF)) + (new >> 16) + (new & 0xFFFF)
    }
}

/// The sum of the eight 16-bit words of `x` (at most 8 x 0xFFFF): the words of each 64-bit
/// half added pairwise into 32-bit lanes, then the lanes.
#[inline(always)]
fn word_sum_128(x: u128) -> u32 {
    const LOW_WORDS: u64 = 0x0000_FFFF_0000_FFFF;
    let (a, b) = (x as u64, (x >> 64) as u64);
    let lanes =
        (a & LOW_WORDS) + ((a >> 16) & LOW_WORDS) + (b & LOW_WORDS) + ((b >> 16) & LOW_WORDS);
    (lanes as u32) + ((lanes >> 32) as u32)
}

/// RFC 1624 equation 3 for several words at once: `~(~HC + sum of (~m + m'))`. The same
/// value as one `update16` per word (one's complement addition is associative, and every
/// partial sum folds to the same representative), with one fold instead of one per word.
#[inline(always)]
fn apply_delta(checksum: u16, delta: u32) -> u16 {
    // `delta` is at most 18 x 0xFFFF (an IPv6 address and a port): no carry out of 32 bits.
    !fold(u32::from(!checksum) + delta)
}

#[inline(always)]
fn write_addr(data: &mut [u8], offset: usize, addr: u128, ipv6: bool) {
    if ipv6 {
        if let Some(bytes) = data.get_mut(offset..offset + 16) {
            bytes.copy_from_slice(&addr.to_be_bytes());
        }
    } else if let Some(bytes) = data.get_mut(offset..offset + 4) {
        bytes.copy_from_slice(&(addr as u32).to_be_bytes());
    }
}

/// The offset of the address of `end` in an IP header.
#[inline(always)]
fn addr_offset(end: End, ipv6: bool) -> usize {
    match (end, ipv6) {
        (End::Source, false) => 12,
        (End::Destination, false) => 16,
        (End::Source, true) => 8,
        (End::Destination, true) => 24,
    }
}

/// Rewrites the address and port at `end` of the IP packet at `data[ip..]` whose transport
/// header is at `data[l4..]`, updating the IPv4 header checksum and the L4 checksum if it lies
/// inside `data` (a quote may end before it). `flow` is the packet's flow before the change.
#[inline(always)]
fn rewrite(data: &mut [u8], ip: usize, l4: usize, flow: &FlowKey, end: End, addr: u128, port: u16) {
    let ipv6 = flow.ipv6;
    let (old_addr, old_port, port_offset) = match end {
        End::Source => (flow.src, flow.src_port, l4),
        End::Destination => (flow.dst, flow.dst_port, l4 + 2),
    };
    // The address's share of both checksums (the IPv4 header's, and the pseudo-header's
    // in the L4 one), computed once.
    let addr_change = addr_delta(old_addr, addr, ipv6);
    write_addr(data, ip + addr_offset(end, ipv6), addr, ipv6);
    if !ipv6 {
        if let Some(checksum) = u16_at(data, ip + 10) {
            put_u16(data, ip + 10, apply_delta(checksum, addr_change));
        }
    }
    put_u16(data, port_offset, port);
    let delta = addr_change + u32::from(!old_port) + u32::from(port);
    match flow.protocol {
        Protocol::Tcp => {
            if let Some(checksum) = u16_at(data, l4 + 16) {
                put_u16(data, l4 + 16, apply_delta(checksum, delta));
            }
        }
        Protocol::Udp => {
            // A zero UDP checksum is "no checksum" (RFC 768): it stays zero; a computed zero
            // is sent as 0xFFFF.
            if let Some(checksum) = u16_at(data, l4 + 6).filter(|&c| c != 0) {
                let updated = apply_delta(checksum, delta);
                put_u16(data, l4 + 6, if updated == 0 { 0xFFFF } else { updated });
            }
        }
    }
}

/// DNAT or its reverse on a TCP or UDP packet: sets the address and port at `end`.
#[inline]
pub(crate) fn translate(packet: &mut [u8], t: &Transport, end: End, addr: u128, port: u16) {
    rewrite(packet, 0, t.l4, &t.flow, end, addr, port);
}

/// Translates an ICMP error: the quoted packet's address and port at `quoted_end` become
/// `addr`/`port`; the outer address at `outer_end` becomes `addr` if it was the quoted one
/// (the error came from the host being translated); then the ICMP checksum is recomputed.
pub(crate) fn translate_icmp(
    packet: &mut [u8],
    e: &IcmpError,
    quoted_end: End,
    addr: u128,
    port: u16,
) {
    let ipv6 = e.quoted.ipv6;
    let old = match quoted_end {
        End::Source => e.quoted.src,
        End::Destination => e.quoted.dst,
    };
    // The quoted packet's source answers for the outer destination and vice versa.
    let (outer_end, outer_old) = match quoted_end {
        End::Source => (End::Destination, e.outer_dst),
        End::Destination => (End::Source, e.outer_src),
    };
    let packet_end = match parse_ip(packet, false) {
        Ok(ip) => ip.end,
        Err(_) => return,
    };
    let Some(data) = packet.get_mut(..packet_end) else {
        return;
    };
    rewrite(
        data,
        e.quoted_ip,
        e.quoted_l4,
        &e.quoted,
        quoted_end,
        addr,
        port,
    );
    if outer_old == old {
        write_addr(data, addr_offset(outer_end, ipv6), addr, ipv6);
        if !ipv6 {
            if let Some(checksum) = u16_at(data, 10) {
                put_u16(data, 10, update_addr(checksum, old, addr, false));
            }
        }
    }
    // The ICMP checksum, over the message (and for ICMPv6 the pseudo-header, RFC 4443
    // section 2.3).
    let checksum_offset = e.icmp + 2;
    put_u16(data, checksum_offset, 0);
    let Some(message) = data.get(e.icmp..) else {
        return;
    };
    let mut sum = u32::from(sum_bytes(message));
    if ipv6 {
        if let (Some(src), Some(dst)) = (data.get(8..24), data.get(24..40)) {
            sum += u32::from(sum_bytes(src)) + u32::from(sum_bytes(dst));
        }
        let len = message.len() as u32;
        sum += (len >> 16) + (len & 0xFFFF) + u32::from(PROTO_ICMPV6);
    }
    put_u16(data, checksum_offset, !fold(sum));
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::{
        ChecksumCapabilities, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr,
        UdpPacket, UdpRepr,
    };
    use core::net::Ipv4Addr;

    fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let udp = UdpRepr {
            src_port: sport,
            dst_port: dport,
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Udp,
            payload_len: 8 + payload.len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; 20 + 8 + payload.len()];
        let caps = ChecksumCapabilities::default();
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.emit(&mut p, &caps);
        let mut u = UdpPacket::new_unchecked(p.payload_mut());
        udp.emit(
            &mut u,
            &IpAddress::Ipv4(src),
            &IpAddress::Ipv4(dst),
            payload.len(),
            |b| b.copy_from_slice(payload),
            &caps,
        );
        buf
    }

    use alloc::vec;
    use alloc::vec::Vec;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);

    /// A UDP datagram CLIENT:5353 -> VIP:53 with a valid checksum, and its parse.
    fn udp_to_vip() -> (Vec<u8>, Transport) {
        let buf = ipv4_udp(CLIENT, VIP, 5353, 53, b"hello, world");
        let Ok(Parsed::Transport(t)) = parse(&buf) else {
            panic!("not parsed")
        };
        (buf, t)
    }

    #[test]
    fn dnat_ipv4_udp_keeps_checksums_valid() {
        let (mut buf, t) = udp_to_vip();
        let (client, backend) = (CLIENT, BACKEND);
        assert_eq!(t.flow.dst_port, 53);
        translate(
            &mut buf,
            &t,
            End::Destination,
            u128::from(backend.to_bits()),
            8053,
        );
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.dst_addr(), backend);
        let u = UdpPacket::new_checked(p.payload()).unwrap();
        assert_eq!(u.dst_port(), 8053);
        assert!(u.verify_checksum(&IpAddress::Ipv4(client), &IpAddress::Ipv4(backend)));
    }

    #[test]
    fn zero_udp_checksum_stays_zero() {
        let mut buf = ipv4_udp(
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(198, 51, 100, 10),
            1,
            2,
            b"x",
        );
        buf[26..28].copy_from_slice(&[0, 0]);
        let Ok(Parsed::Transport(t)) = parse(&buf) else {
            panic!()
        };
        translate(&mut buf, &t, End::Destination, 0x0a00_0001, 99);
        assert_eq!(&buf[26..28], &[0, 0]);
        assert!(Ipv4Packet::new_checked(&buf[..]).unwrap().verify_checksum());
    }

    #[test]
    fn computed_zero_udp_checksum_is_sent_as_all_ones() {
        let (original, t) = udp_to_vip();
        let (client, backend) = (CLIENT, BACKEND);
        let to = |port: u16| {
            let mut buf = original.clone();
            translate(
                &mut buf,
                &t,
                End::Destination,
                backend.to_bits().into(),
                port,
            );
            buf
        };
        // Translated to port 1000 the checksum is `c`; to port 1000 + c (one's complement
        // sum) the sum it covers grows by `c`, to 0xFFFF, so the computed checksum is zero.
        let c = u16::from_be_bytes([to(1000)[26], to(1000)[27]]);
        let (port, carry) = 1000u16.overflowing_add(c);
        let buf = to(port + u16::from(carry));
        assert_eq!(
            &buf[26..28],
            &[0xFF, 0xFF],
            "zero means no checksum (RFC 768)"
        );
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        let u = UdpPacket::new_checked(p.payload()).unwrap();
        assert!(u.verify_checksum(&IpAddress::Ipv4(client), &IpAddress::Ipv4(backend)));
    }

    #[test]
    fn tcp_reverse_translation() {
        let (backend, client, vip) = (
            Ipv4Addr::new(10, 1, 2, 3),
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(198, 51, 100, 10),
        );
        let tcp = TcpRepr {
            src_port: 8080,
            dst_port: 40000,
            control: crate::wire::TcpControl::Syn,
            seq_number: crate::wire::TcpSeqNumber(7),
            ack_number: Some(crate::wire::TcpSeqNumber(9)),
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: b"abc",
        };
        let ip = Ipv4Repr {
            src_addr: backend,
            dst_addr: client,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let caps = ChecksumCapabilities::default();
        let mut buf = vec![0u8; 20 + tcp.buffer_len()];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.emit(&mut p, &caps);
        tcp.emit(
            &mut TcpPacket::new_unchecked(p.payload_mut()),
            &IpAddress::Ipv4(backend),
            &IpAddress::Ipv4(client),
            &caps,
        );
        let Ok(Parsed::Transport(t)) = parse(&buf) else {
            panic!()
        };
        assert_eq!(t.tcp_flags & 0x12, 0x12);
        translate(&mut buf, &t, End::Source, u128::from(vip.to_bits()), 80);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        let t = TcpPacket::new_checked(p.payload()).unwrap();
        assert_eq!(t.src_port(), 80);
        assert!(t.verify_checksum(&IpAddress::Ipv4(vip), &IpAddress::Ipv4(client)));
    }

    /// The fast parse agrees with the full one on valid, cut, fragmented, padded and randomly
    /// corrupted packets: `Some` exactly for `Parsed::Transport`, with the same contents.
    #[test]
    fn fast_parse_agrees_with_parse() {
        let base = ipv4_udp(
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(198, 51, 100, 10),
            5353,
            53,
            b"hello",
        );
        let mut tcp = base.clone();
        tcp[9] = PROTO_TCP;
        tcp.resize(60, 0);
        tcp[2..4].copy_from_slice(&60u16.to_be_bytes());
        let mut v6 = vec![0u8; 48];
        v6[0] = 0x60;
        v6[4..6].copy_from_slice(&8u16.to_be_bytes());
        v6[6] = PROTO_UDP;
        v6[40..42].copy_from_slice(&[0x13, 0x88]);
        v6[42..44].copy_from_slice(&[0, 53]);
        let mut rng = crate::mix::xorshift(0xdead_beef_cafe_f00du64);
        let rounds = if cfg!(miri) { 100 } else { 20_000 };
        for i in 0..rounds {
            let mut p = match i % 3 {
                0 => base.clone(),
                1 => tcp.clone(),
                _ => v6.clone(),
            };
            // Corrupt a few bytes (the first 28 most often), cut or pad.
            for _ in 0..(rng() % 3) {
                let span = if rng().is_multiple_of(4) { p.len() } else { 28 };
                let at = (rng() % span as u64) as usize;
                p[at] = rng() as u8;
            }
            match rng() % 4 {
                0 => p.truncate((rng() % (p.len() as u64 + 1)) as usize),
                1 => p.extend_from_slice(&[0; 7]),
                _ => {}
            }
            let fast = parse_transport(&p);
            match parse(&p) {
                Ok(Parsed::Transport(t)) => {
                    let f = fast.expect("fast parse missed a transport packet");
                    assert_eq!((f.flow, f.l4, f.tcp_flags), (t.flow, t.l4, t.tcp_flags));
                }
                _ => assert!(fast.is_none(), "{p:?}"),
            }
        }
    }

    /// One fold over the summed words equals one `update16` per word, bit for bit, zero
    /// representations included.
    #[test]
    fn summed_update_equals_word_by_word() {
        use crate::wire::checksum::update16;
        let mut rng = crate::mix::xorshift(0x1234_5678_9abc_def0u64);
        let n = if cfg!(miri) { 200 } else { 100_000 };
        for i in 0..n {
            let ipv6 = i % 2 == 1;
            let wide = |r: u64, s: u64| (u128::from(r) << 64) | u128::from(s);
            let (mut old, mut new) = (wide(rng(), rng()), wide(rng(), rng()));
            if !ipv6 {
                (old, new) = (old & 0xFFFF_FFFF, new & 0xFFFF_FFFF);
            }
            let mut checksum = rng() as u16;
            let (old_port, port) = (rng() as u16, rng() as u16);
            match i % 7 {
                0 => checksum = 0,
                1 => checksum = 0xFFFF,
                2 => new = old,
                _ => {}
            }
            let words = if ipv6 { 8 } else { 2 };
            let mut expected = checksum;
            for w in 0..words {
                let shift = 16 * (words - 1 - w);
                expected = update16(expected, (old >> shift) as u16, (new >> shift) as u16);
            }
            assert_eq!(update_addr(checksum, old, new, ipv6), expected);
            expected = update16(expected, old_port, port);
            let delta = addr_delta(old, new, ipv6) + u32::from(!old_port) + u32::from(port);
            assert_eq!(apply_delta(checksum, delta), expected, "{i}");
        }
    }

    #[test]
    fn malformed_inputs() {
        assert_eq!(parse(&[]).unwrap_err(), Malformed);
        assert_eq!(parse(&[0x45; 19]).unwrap_err(), Malformed);
        assert_eq!(parse(&[0x60; 39]).unwrap_err(), Malformed);
        assert_eq!(parse(&[0x50; 60]).unwrap_err(), Malformed);
        // A UDP packet cut inside its header.
        let buf = ipv4_udp(
            Ipv4Addr::new(1, 1, 1, 1),
            Ipv4Addr::new(2, 2, 2, 2),
            1,
            2,
            b"",
        );
        assert!(parse(&buf[..27]).is_err());
        let mut short = buf.clone();
        short[3] = 24; // total length inside the UDP header
        assert!(parse(&short).is_err());
        // A fragment is "other".
        let mut frag = buf.clone();
        frag[6] = 0x20; // MF
        assert!(matches!(
            parse(&frag),
            Ok(Parsed::Other { fragment: true, .. })
        ));
    }
}
