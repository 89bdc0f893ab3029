//! Decapsulation in place: validate the outer headers, hand back the inner frame.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::ops::Range;

use super::ecn::{self, Ecn};
use super::inner;
use super::DecapConfig;
use crate::wire::checksum::{fold, ipv4_header_valid, ipv4_header_valid_20, sum_bytes, update16};
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
// Always inlined: the fast path is a few dozen instructions, and inlined, the fields the
// caller reads stay in registers and the others are never computed. As a call, the result
// came back through memory and the caller reloaded the narrow field stores with wide loads
// (seen in the assembly: store-to-load forwarding stalls).
#[inline(always)]
pub fn decap(config: &DecapConfig, frame: &mut [u8]) -> Result<Decapsulated, DropReason> {
    let located = match frame.first_chunk::<64>() {
        Some(h) if ipv4_fast_path_applies(config, h, frame.len()) => {
            // An IPv4 total length + 14: below 2^17.
            Located::new(ETHERNET_HEADER_LEN + IPV4_HEADER_LEN, frame.len(), None)
        }
        _ => decap_rules(config, frame)?,
    };
    Ok(describe(frame, located))
}

/// Where a validated frame's parts are, packed into one `u64` so that it comes back from
/// [`decap_rules`] in a register: bits 0..8 the UDP header's offset (at most 14 + 60), bits
/// 8..32 the inner frame's end (an IP packet's end, below 2^17), bit 32 a GBP header
/// present, bits 33 and 34 its D and A flags, bits 40..56 its group policy id.
///
/// The fast and the rule-by-rule paths meet here, and [`describe`] reads every other field
/// from the frame afterwards. Merging two whole [`Decapsulated`] values instead went through
/// the stack, with wide reloads of narrow stores (seen in the assembly).
#[derive(Debug, Clone, Copy)]
struct Located(u64);

impl Located {
    #[inline(always)]
    fn new(udp: usize, inner_end: usize, gbp: Option<Gbp>) -> Located {
        let gbp_bits = match gbp {
            None => 0,
            Some(g) => {
                1 << 32
                    | u64::from(g.dont_learn) << 33
                    | u64::from(g.policy_applied) << 34
                    | u64::from(g.group_policy_id) << 40
            }
        };
        Located((udp as u64 & 0xFF) | (inner_end as u64 & 0xFF_FFFF) << 8 | gbp_bits)
    }

    #[inline(always)]
    fn udp(self) -> usize {
        (self.0 & 0xFF) as usize
    }

    #[inline(always)]
    fn inner_end(self) -> usize {
        ((self.0 >> 8) & 0xFF_FFFF) as usize
    }

    #[inline(always)]
    fn gbp(self) -> Option<Gbp> {
        (self.0 & 1 << 32 != 0).then_some(Gbp {
            dont_learn: self.0 & 1 << 33 != 0,
            policy_applied: self.0 & 1 << 34 != 0,
            group_policy_id: (self.0 >> 40) as u16,
        })
    }
}

#[inline(always)]
fn word(h: &[u8; 64], at: usize) -> [u8; 4] {
    let mut word = [0u8; 4];
    word.copy_from_slice(&h[at..at + 4]);
    word
}

/// The result for a frame validated by either path.
#[inline(always)]
fn describe(frame: &[u8], located: Located) -> Decapsulated {
    // A validated frame holds at least 64 bytes (outer headers and an inner Ethernet header),
    // and its UDP and VXLAN headers at `located.udp`; the zeros are never read, and keep this
    // free of panics all the same.
    const ZEROS: [u8; 64] = [0; 64];
    let h: &[u8; 64] = frame.first_chunk().unwrap_or(&ZEROS);
    let udp = located.udp();
    let u: &[u8; 16] = frame
        .get(udp..)
        .and_then(<[u8]>::first_chunk)
        .unwrap_or(&[0; 16]);
    let ip = ETHERNET_HEADER_LEN;
    let (outer, outer_ttl, outer_tos) = if h[12] == 0x86 {
        let mut src = [0u8; 16];
        src.copy_from_slice(&h[ip + 8..ip + 24]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&h[ip + 24..ip + 40]);
        let addrs = OuterAddrs::V6 {
            src: Ipv6Addr::from(src),
            dst: Ipv6Addr::from(dst),
        };
        (addrs, h[ip + 7], (h[ip] << 4) | (h[ip + 1] >> 4))
    } else {
        let addrs = OuterAddrs::V4 {
            src: Ipv4Addr::from(word(h, ip + 12)),
            dst: Ipv4Addr::from(word(h, ip + 16)),
        };
        (addrs, h[ip + 8], h[ip + 1])
    };
    let mac = |at: usize| {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&h[at..at + 6]);
        EthernetAddress(mac)
    };
    Decapsulated {
        vni: Vni::from_u24_truncating(u32::from_be_bytes([0, u[12], u[13], u[14]])),
        gbp: located.gbp(),
        outer_src_mac: mac(6),
        outer_dst_mac: mac(0),
        outer,
        udp_src_port: u16::from_be_bytes([u[0], u[1]]),
        outer_ttl,
        outer_tos,
        inner: udp + UDP_HEADER_LEN + vxlan::HEADER_LEN..located.inner_end(),
    }
}

/// The common case, decided from the first 64 bytes at fixed offsets, as FD.io VPP's VXLAN
/// input node does: outer IPv4 without options, exactly filling the frame, not a fragment,
/// UDP to our port without a checksum, a VXLAN header with only the I flag, an untagged
/// inner frame, and an outer ECN field that leaves the inner one alone. Anything else,
/// `None`, goes through [`decap_rules`], which takes every rule in turn and names the reason
/// for a refusal. Both give the same answer for every frame the fast path accepts (tested).
#[inline(always)]
fn ipv4_fast_path_applies(config: &DecapConfig, h: &[u8; 64], frame_len: usize) -> bool {
    let be16 = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
    let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let be64 = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&h[at..at + 8]);
        u64::from_be_bytes(word)
    };
    // Bytes 12..16: EtherType IPv4, version 4 with IHL 5, and a TOS whose ECN field is
    // Not-ECT or ECT(0) (bit 0 clear): outer ECT(1) and CE may change the inner header.
    be32(12) & 0xFFFF_FF01 == 0x0800_4500
        && usize::from(be16(16)) + ETHERNET_HEADER_LEN == frame_len
        // Bytes 20..24: neither MF nor a fragment offset; protocol UDP.
        && be32(20) & 0x3FFF_00FF == 17
        && be16(36) == config.udp_port
        && usize::from(be16(38)) + ETHERNET_HEADER_LEN + IPV4_HEADER_LEN == frame_len
        // Bytes 40..48: no UDP checksum, VXLAN flags exactly I, reserved zero.
        && be64(40) & 0xFFFF_FFFF_FFFF_0000 == u64::from(vxlan::flags::VNI) << 40
        && h[49] == 0
        && !matches!(be16(62), ethertype::VLAN | ethertype::QINQ)
        && h[14..34].first_chunk().is_some_and(ipv4_header_valid_20)
}

/// Decapsulation rule by rule, in the order of the headers, naming the reason of a refusal.
#[inline(never)]
fn decap_rules(config: &DecapConfig, frame: &mut [u8]) -> Result<Located, DropReason> {
    let outer_type = read_u16(frame, 12).ok_or(DropReason::EthernetTruncated)?;
    let ip = &frame[ETHERNET_HEADER_LEN..];
    let (outer, udp_range, outer_tos, ipv6) = match outer_type {
        ethertype::IPV4 => {
            let Some(&[version_ihl, tos, len_hi, len_lo, _, _, frag_hi, frag_lo, _, protocol]) =
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
            (addrs, l4..ETHERNET_HEADER_LEN + total_len, tos, false)
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
            (addrs, l4..l4 + payload_len, tos, true)
        }
        _ => return Err(DropReason::OuterNotIp),
    };

    // UDP: the datagram may be shorter than the IP payload (never longer).
    let ip_payload = &frame[udp_range.clone()];
    let Some(&[_, _, dport_hi, dport_lo, len_hi, len_lo, sum_hi, sum_lo]) =
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
    // The UDP header starts within 14 + 60 bytes; the IP packet ends below 2^17.
    Ok(Located::new(udp.start, payload_start + inner.end, repr.gbp))
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

#[cfg(test)]
mod test {
    use super::*;
    use crate::tunnel::{EncapConfig, EncapTemplate, IpIdent, Underlay};

    /// The fast path accepts only what the rules accept, and describes it identically.
    #[test]
    fn fast_path_matches_the_rules() {
        let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let underlay = Underlay::ipv4(
            mac,
            mac,
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 2),
        );
        let template =
            EncapTemplate::new(&EncapConfig::default(), &underlay, Vni::new(77).unwrap()).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut fast_taken = 0;
        // Fewer cases under miri, which interprets every instruction.
        let cases = if cfg!(miri) { 60 } else { 3000 };
        for case in 0..cases {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = 14 + (state % 200) as usize;
            let mut buf = [0u8; 320];
            for (i, byte) in buf[50..50 + len].iter_mut().enumerate() {
                *byte = (state >> (i % 59)) as u8 ^ (i as u8).wrapping_mul(31);
            }
            let Ok(outer) = template.encap(&mut buf, 50..50 + len, &mut IpIdent::new(0)) else {
                continue;
            };
            // Disturb one byte of the outer headers (or none), then compare both paths.
            let position = (state >> 40) as usize % 70;
            if case % 3 != 0 && position < 64 {
                buf[position] ^= 1 << ((state >> 50) % 8);
            }
            let config = DecapConfig {
                strict_reserved_bits: case % 2 == 0,
                gbp: case % 5 == 0,
                ..DecapConfig::default()
            };
            let frame = &mut buf[outer.clone()];
            let frame_len = frame.len();
            let fast = frame
                .first_chunk::<64>()
                .is_some_and(|h| ipv4_fast_path_applies(&config, h, frame_len));
            let mut copy = [0u8; 320];
            copy[..frame_len].copy_from_slice(frame);
            let rules = decap_rules(&config, &mut copy[..frame_len]).map(|l| describe(frame, l));
            let result = decap(&config, frame);
            assert_eq!(result, rules, "case {case}");
            if fast {
                fast_taken += 1;
                assert!(
                    result.is_ok(),
                    "case {case}: the fast path accepted a refusal"
                );
            }
        }
        assert!(
            fast_taken > cases / 6,
            "the fast path was taken {fast_taken} times"
        );
    }
}
