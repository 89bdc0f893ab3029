//! ICMP errors for inner packets too big for the tunnel: VXLAN never fragments (RFC 7348
//! section 4.3), so a sender must learn the path MTU.

use core::net::{Ipv4Addr, Ipv6Addr};

use super::inner::Layout;
use crate::wire::checksum::{fold, pseudo_header_v6, sum_bytes};
use crate::wire::{ethertype, IPV4_HEADER_LEN, IPV6_HEADER_LEN};

/// The most an ICMP "too big" reply frame takes: Ethernet with one tag (18) and an IPv6
/// packet of the IPv6 minimum MTU (1280), which RFC 4443 section 2.4 (c) says an error must
/// not exceed. An IPv4 reply is at most 576 bytes of IP (RFC 1812 section 4.3.2.3).
pub const TOO_BIG_REPLY_MAX_LEN: usize = 18 + 1280;

const IPV4_REPLY_MAX: usize = 576;
const IPV6_REPLY_MAX: usize = 1280;
const ICMP_HEADER_LEN: usize = 8;
const REPLY_TTL: u8 = 64;
/// The smallest MTU an IPv6 link may have (RFC 8200 section 5); a Packet Too Big reports no
/// less, as Linux's tunnels do.
const IPV6_MIN_MTU: u16 = 1280;

/// Builds the reply into `out`; see [`super::EncapTemplate::too_big_reply`].
pub(crate) fn too_big_reply(
    frame: &[u8],
    layout: Layout,
    mtu: u16,
    out: &mut [u8],
) -> Option<usize> {
    // A group or broadcast sender MAC is not a host to answer.
    if frame.get(6)? & 1 != 0 {
        return None;
    }
    let l3 = layout.l3;
    // Ethernet header back to the sender, with the same tag if there is one.
    let l2 = out.get_mut(..l3)?;
    l2.copy_from_slice(frame.get(..l3)?);
    l2[..6].copy_from_slice(&frame[6..12]);
    l2[6..12].copy_from_slice(&frame[..6]);
    let packet = frame.get(l3..)?;
    let reply = out.get_mut(l3..)?;
    let len = match layout.ethertype {
        ethertype::IPV4 => ipv4_reply(packet, mtu, reply)?,
        ethertype::IPV6 => ipv6_reply(packet, mtu, reply)?,
        _ => return None,
    };
    Some(l3 + len)
}

fn ipv4_reply(packet: &[u8], mtu: u16, out: &mut [u8]) -> Option<usize> {
    let header = packet.get(..IPV4_HEADER_LEN)?;
    let header_len = usize::from(header[0] & 0x0F) * 4;
    if header[0] >> 4 != 4 || header_len < IPV4_HEADER_LEN || packet.len() < header_len {
        return None;
    }
    let frag = u16::from_be_bytes([header[6], header[7]]);
    if frag & 0x4000 == 0 || frag & 0x1FFF != 0 {
        return None; // DF clear: the tunnel drops it silently; or a non-initial fragment.
    }
    let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    if src.is_unspecified()
        || src.is_multicast()
        || src.is_broadcast()
        || src.is_loopback()
        || dst.is_multicast()
        || dst.is_broadcast()
    {
        return None; // RFC 1812 section 4.3.2.7.
    }
    if header[9] == 1 {
        // Never an error about an ICMP error (RFC 1122 section 3.2.2).
        let icmp_type = *packet.get(header_len)?;
        if matches!(icmp_type, 3 | 4 | 5 | 11 | 12) {
            return None;
        }
    }
    let quoted_len = packet
        .len()
        .min(IPV4_REPLY_MAX - IPV4_HEADER_LEN - ICMP_HEADER_LEN)
        .min(out.len().checked_sub(IPV4_HEADER_LEN + ICMP_HEADER_LEN)?);
    let total = IPV4_HEADER_LEN + ICMP_HEADER_LEN + quoted_len;
    let out = &mut out[..total];
    // IPv4 header from the inner destination back to the sender.
    out[0] = 0x45;
    out[1] = 0xC0; // DSCP CS6, network control, as Linux sends ICMP errors.
    out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    out[4..8].copy_from_slice(&[0, 0, 0, 0]);
    out[8] = REPLY_TTL;
    out[9] = 1; // ICMP
    out[10..12].copy_from_slice(&[0, 0]);
    out[12..16].copy_from_slice(&dst.octets());
    out[16..20].copy_from_slice(&src.octets());
    let ip_checksum = !fold(u32::from(sum_bytes(&out[..IPV4_HEADER_LEN])));
    out[10..12].copy_from_slice(&ip_checksum.to_be_bytes());
    // ICMP destination unreachable, fragmentation needed, next-hop MTU (RFC 1191 section 4).
    let icmp = &mut out[IPV4_HEADER_LEN..];
    icmp[0] = 3;
    icmp[1] = 4;
    icmp[2..6].copy_from_slice(&[0, 0, 0, 0]);
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&packet[..quoted_len]);
    let icmp_checksum = !fold(u32::from(sum_bytes(icmp)));
    icmp[2..4].copy_from_slice(&icmp_checksum.to_be_bytes());
    Some(total)
}

fn ipv6_reply(packet: &[u8], mtu: u16, out: &mut [u8]) -> Option<usize> {
    let header = packet.get(..IPV6_HEADER_LEN)?;
    if header[0] >> 4 != 6 {
        return None;
    }
    let mut src_octets = [0u8; 16];
    src_octets.copy_from_slice(&header[8..24]);
    let mut dst_octets = [0u8; 16];
    dst_octets.copy_from_slice(&header[24..40]);
    let src = Ipv6Addr::from(src_octets);
    let dst = Ipv6Addr::from(dst_octets);
    // RFC 4443 section 2.4 (e): Packet Too Big is sent even for multicast destinations, but
    // never to a source that is not a unicast host.
    if src.is_unspecified() || src.is_multicast() || src.is_loopback() || dst.is_loopback() {
        return None;
    }
    if header[6] == 58 {
        let icmp_type = *packet.get(IPV6_HEADER_LEN)?;
        if icmp_type < 128 {
            return None; // An error message: never answered with an error.
        }
    }
    // The reply comes from the inner destination; a multicast one cannot be a source, so
    // such a reply has nothing to come from.
    if dst.is_multicast() {
        return None;
    }
    let quoted_len = packet
        .len()
        .min(IPV6_REPLY_MAX - IPV6_HEADER_LEN - ICMP_HEADER_LEN)
        .min(out.len().checked_sub(IPV6_HEADER_LEN + ICMP_HEADER_LEN)?);
    let payload_len = ICMP_HEADER_LEN + quoted_len;
    let total = IPV6_HEADER_LEN + payload_len;
    let out = &mut out[..total];
    out[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    out[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    out[6] = 58; // ICMPv6
    out[7] = REPLY_TTL;
    out[8..24].copy_from_slice(&dst_octets);
    out[24..40].copy_from_slice(&src_octets);
    let icmp = &mut out[IPV6_HEADER_LEN..];
    icmp[0] = 2; // Packet Too Big
    icmp[1] = 0;
    icmp[2..4].copy_from_slice(&[0, 0]);
    icmp[4..8].copy_from_slice(&u32::from(mtu.max(IPV6_MIN_MTU)).to_be_bytes());
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&packet[..quoted_len]);
    let sum = u32::from(pseudo_header_v6(
        &dst,
        &src,
        smoltcp::wire::IpProtocol::Icmpv6,
        payload_len as u32,
    )) + u32::from(sum_bytes(icmp));
    icmp[2..4].copy_from_slice(&(!fold(sum)).to_be_bytes());
    Some(total)
}
