//! Decapsulation in place: validate the outer headers, hand back the inner frame.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::ops::Range;

use super::ecn::{self, Ecn};
use super::inner;
use super::DecapConfig;
use crate::wire::checksum::{fold, ipv4_header_valid, sum_bytes, update16};
use crate::wire::vxlan::{self, Gbp};
use crate::wire::{
    ethertype, read_u16, EthernetAddress, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN,
    UDP_HEADER_LEN,
};
use crate::{DropReason, Vni};

/// The outer source and destination addresses of a tunnel packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OuterAddrs {
    /// An IPv4 underlay.
    V4 {
        /// Source: the sending VTEP.
        src: Ipv4Addr,
        /// Destination: the receiving VTEP.
        dst: Ipv4Addr,
    },
    /// An IPv6 underlay.
    V6 {
        /// Source: the sending VTEP.
        src: Ipv6Addr,
        /// Destination: the receiving VTEP.
        dst: Ipv6Addr,
    },
}

impl OuterAddrs {
    /// The source address: the VTEP that sent the frame, which learning binds inner MACs to.
    pub fn src(&self) -> IpAddr {
        match *self {
            OuterAddrs::V4 { src, .. } => IpAddr::V4(src),
            OuterAddrs::V6 { src, .. } => IpAddr::V6(src),
        }
    }

    /// The destination address.
    pub fn dst(&self) -> IpAddr {
        match *self {
            OuterAddrs::V4 { dst, .. } => IpAddr::V4(dst),
            OuterAddrs::V6 { dst, .. } => IpAddr::V6(dst),
        }
    }
}

/// What decapsulation found: the VXLAN header's values, the outer fields a switch learns
/// from, and where the inner frame is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decapsulated {
    /// The VXLAN network identifier.
    pub vni: Vni,
    /// The VXLAN-GBP fields, when configured and present.
    pub gbp: Option<Gbp>,
    /// Outer source MAC (the previous hop on the underlay).
    pub outer_src_mac: EthernetAddress,
    /// Outer destination MAC.
    pub outer_dst_mac: EthernetAddress,
    /// Outer IP addresses.
    pub outer: OuterAddrs,
    /// Outer UDP source port (a flow hash of the sender's; any value is accepted).
    pub udp_src_port: u16,
    /// Outer TTL or hop limit.
    pub outer_ttl: u8,
    /// Outer TOS or traffic class, ECN bits included.
    pub outer_tos: u8,
    /// Where the inner Ethernet frame is in the buffer given to [`decap`].
    pub inner: Range<usize>,
}

impl Decapsulated {
    /// The inner frame, borrowed from the buffer given to [`decap`].
    pub fn inner_frame<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame.get(self.inner.clone()).unwrap_or(&[])
    }
}

/// Decapsulates a VXLAN frame received from the underlay: outer Ethernet, IPv4 or IPv6,
/// UDP, VXLAN, inner Ethernet frame. Validates every receive rule; on success the inner
/// frame is `frame[result.inner]`, its IP header's ECN field updated per RFC 6040 (the only
/// change made to `frame`).
///
/// The outer destination MAC and address are not checked against ours: that is the
/// switch's business (a capture tool decapsulates anything).
#[inline]
pub fn decap(config: &DecapConfig, frame: &mut [u8]) -> Result<Decapsulated, DropReason> {
    let outer_type = read_u16(frame, 12).ok_or(DropReason::EthernetTruncated)?;
    let ip = &frame[ETHERNET_HEADER_LEN..];
    let (outer, udp_range, outer_ttl, outer_tos, ipv6) = match outer_type {
        ethertype::IPV4 => {
            let Some(&[version_ihl, tos, len_hi, len_lo, _, _, frag_hi, frag_lo, ttl, protocol]) =
                ip.get(..10)
            else {
                return Err(DropReason::OuterTruncated);
            };
            let header_len = usize::from(version_ihl & 0x0F) * 4;
            if version_ihl >> 4 != 4 || header_len < IPV4_HEADER_LEN {
                return Err(DropReason::Ipv4HeaderInvalid);
            }
            if header_len > ip.len() {
                return Err(DropReason::OuterTruncated);
            }
            if !ipv4_header_valid(ip, header_len) {
                return Err(DropReason::Ipv4Checksum);
            }
            let total_len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
            if total_len < header_len {
                return Err(DropReason::Ipv4LengthInvalid);
            }
            if total_len > ip.len() {
                return Err(DropReason::OuterTruncated);
            }
            if u16::from_be_bytes([frag_hi, frag_lo]) & 0x3FFF != 0 {
                return Err(DropReason::OuterFragment);
            }
            if protocol != 17 {
                return Err(DropReason::OuterNotUdp);
            }
            let addrs = OuterAddrs::V4 {
                src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
                dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            };
            let l4 = ETHERNET_HEADER_LEN + header_len;
            (addrs, l4..ETHERNET_HEADER_LEN + total_len, ttl, tos, false)
        }
        ethertype::IPV6 => {
            let Some(header) = ip.get(..IPV6_HEADER_LEN) else {
                return Err(DropReason::OuterTruncated);
            };
            if header[0] >> 4 != 6 {
                return Err(DropReason::Ipv6HeaderInvalid);
            }
            let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
            if payload_len == 0 {
                return Err(DropReason::Ipv6LengthInvalid);
            }
            if IPV6_HEADER_LEN + payload_len > ip.len() {
                return Err(DropReason::OuterTruncated);
            }
            match header[6] {
                17 => {}
                44 => return Err(DropReason::OuterFragment),
                0 | 43 | 51 | 60 | 135 | 139 | 140 | 253 | 254 => {
                    return Err(DropReason::Ipv6ExtensionHeader)
                }
                _ => return Err(DropReason::OuterNotUdp),
            }
            let tos = (header[0] << 4) | (header[1] >> 4);
            let mut src = [0u8; 16];
            src.copy_from_slice(&header[8..24]);
            let mut dst = [0u8; 16];
            dst.copy_from_slice(&header[24..40]);
            let addrs = OuterAddrs::V6 {
                src: Ipv6Addr::from(src),
                dst: Ipv6Addr::from(dst),
            };
            let l4 = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN;
            (addrs, l4..l4 + payload_len, header[7], tos, true)
        }
        _ => return Err(DropReason::OuterNotIp),
    };

    // UDP: the datagram may be shorter than the IP payload (never longer).
    let ip_payload = &frame[udp_range.clone()];
    let Some(&[sport_hi, sport_lo, dport_hi, dport_lo, len_hi, len_lo, sum_hi, sum_lo]) =
        ip_payload.get(..UDP_HEADER_LEN)
    else {
        return Err(DropReason::UdpLengthInvalid);
    };
    let udp_len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if udp_len < UDP_HEADER_LEN || udp_len > ip_payload.len() {
        return Err(DropReason::UdpLengthInvalid);
    }
    let dport = u16::from_be_bytes([dport_hi, dport_lo]);
    if dport != config.udp_port {
        return Err(if dport == vxlan::GPE_PORT {
            DropReason::VxlanGpe
        } else {
            DropReason::NotVxlanPort
        });
    }
    let udp = udp_range.start..udp_range.start + udp_len;
    if sum_hi | sum_lo == 0 {
        if ipv6 && config.reject_zero_checksum_ipv6 {
            return Err(DropReason::UdpZeroChecksumIpv6);
        }
    } else if config.verify_udp_checksum && !udp_checksum_valid(&outer, &frame[udp.clone()]) {
        return Err(DropReason::UdpChecksum);
    }

    let payload_start = udp.start + UDP_HEADER_LEN;
    let (repr, inner) = decap_udp_payload(
        config,
        &mut frame[payload_start..udp.end],
        Ecn::from_tos(outer_tos),
    )?;
    let mut dst_mac = [0u8; 6];
    dst_mac.copy_from_slice(&frame[0..6]);
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&frame[6..12]);
    Ok(Decapsulated {
        vni: repr.vni,
        gbp: repr.gbp,
        outer_src_mac: EthernetAddress(src_mac),
        outer_dst_mac: EthernetAddress(dst_mac),
        outer,
        udp_src_port: u16::from_be_bytes([sport_hi, sport_lo]),
        outer_ttl,
        outer_tos,
        inner: payload_start + inner.start..payload_start + inner.end,
    })
}

fn udp_checksum_valid(outer: &OuterAddrs, datagram: &[u8]) -> bool {
    // The pseudo-header's length is the UDP length (< 2^16 here).
    let pseudo = match outer {
        OuterAddrs::V4 { src, dst } => {
            u32::from(sum_bytes(&src.octets())) + u32::from(sum_bytes(&dst.octets()))
        }
        OuterAddrs::V6 { src, dst } => {
            u32::from(sum_bytes(&src.octets())) + u32::from(sum_bytes(&dst.octets()))
        }
    };
    let sum = pseudo + 17 + datagram.len() as u32 + u32::from(sum_bytes(datagram));
    fold(sum) == 0xFFFF
}

/// Decapsulates a UDP payload (VXLAN header and inner frame), for backends whose socket has
/// already taken off the outer IP and UDP headers. `outer_ecn` is the outer packet's ECN
/// field (from `IP_RECVTOS` / `IPV6_RECVTCLASS`; `Ecn::NotEct` if unknown). Returns the
/// header and where the inner frame is in `payload`.
#[inline]
pub fn decap_udp_payload(
    config: &DecapConfig,
    payload: &mut [u8],
    outer_ecn: Ecn,
) -> Result<(vxlan::Repr, Range<usize>), DropReason> {
    let repr = vxlan::Repr::parse(
        &vxlan::Packet::new_unchecked(&*payload),
        config.parse_options(),
    )?;
    let inner = &mut payload[vxlan::HEADER_LEN..];
    let layout = inner::layout(inner)?;
    if layout.tagged && !config.carry_inner_vlan {
        return Err(DropReason::InnerVlanTagged);
    }
    // RFC 6040: only outer ECT(1) and CE can change the inner field.
    if matches!(outer_ecn, Ecn::Ect1 | Ecn::Ce) {
        propagate_ecn(inner, layout, outer_ecn)?;
    }
    Ok((repr, vxlan::HEADER_LEN..payload.len()))
}

/// Applies the RFC 6040 decapsulation table to the inner IP header in place.
fn propagate_ecn(frame: &mut [u8], layout: inner::Layout, outer: Ecn) -> Result<(), DropReason> {
    let l3 = layout.l3;
    match layout.ethertype {
        ethertype::IPV4 => {
            let Some(&[version_ihl, tos]) = frame.get(l3..l3 + 2) else {
                return Err(DropReason::InnerTruncated);
            };
            if version_ihl >> 4 != 4 {
                return Ok(()); // Not IPv4 after all: nothing that carries ECN.
            }
            let inner = Ecn::from_tos(tos);
            let new = ecn::decap(inner, outer).ok_or(DropReason::EcnCeOnNotEct)?;
            if new != inner {
                // The checksum must follow the change (RFC 1624), so it must be there.
                let Some(header) = frame.get_mut(l3..l3 + IPV4_HEADER_LEN) else {
                    return Err(DropReason::InnerTruncated);
                };
                let new_tos = (tos & !0b11) | new.bits();
                let old_word = u16::from_be_bytes([version_ihl, tos]);
                let new_word = u16::from_be_bytes([version_ihl, new_tos]);
                let checksum = u16::from_be_bytes([header[10], header[11]]);
                header[1] = new_tos;
                header[10..12]
                    .copy_from_slice(&update16(checksum, old_word, new_word).to_be_bytes());
            }
        }
        ethertype::IPV6 => {
            let Some(header) = frame.get_mut(l3..l3 + 2) else {
                return Err(DropReason::InnerTruncated);
            };
            if header[0] >> 4 != 6 {
                return Ok(());
            }
            let inner = Ecn::from_tos(header[1] >> 4);
            let new = ecn::decap(inner, outer).ok_or(DropReason::EcnCeOnNotEct)?;
            header[1] = (header[1] & 0xCF) | (new.bits() << 4);
        }
        // Nothing to mark in ARP and other non-IP payloads; the frame goes on unchanged.
        _ => {}
    }
    Ok(())
}
