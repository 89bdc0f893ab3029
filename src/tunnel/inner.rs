//! What encapsulation and decapsulation need to know of the inner frame: where its IP header
//! is (through one 802.1Q tag), its TOS/ECN, TTL and DF, and a hash of its flow.

use crate::mix::folded_multiply;
use crate::wire::{ethertype, read_u16, ETHERNET_HEADER_LEN};
use crate::DropReason;

/// The layout of an inner Ethernet frame, looking through one VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Offset of the network header.
    pub l3: usize,
    /// EtherType of the network header.
    pub ethertype: u16,
    /// True if the frame carries an 802.1Q or 802.1ad tag.
    pub tagged: bool,
}

/// Finds the network header of an Ethernet frame.
#[inline]
pub(crate) fn layout(frame: &[u8]) -> Result<Layout, DropReason> {
    let outer_type = read_u16(frame, 12).ok_or(DropReason::InnerTruncated)?;
    if outer_type == ethertype::VLAN || outer_type == ethertype::QINQ {
        let inner_type = read_u16(frame, 16).ok_or(DropReason::InnerTruncated)?;
        Ok(Layout {
            l3: ETHERNET_HEADER_LEN + 4,
            ethertype: inner_type,
            tagged: true,
        })
    } else {
        Ok(Layout {
            l3: ETHERNET_HEADER_LEN,
            ethertype: outer_type,
            tagged: false,
        })
    }
}

/// The fields of an inner IP header that tunnel policies inherit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpFields {
    /// The whole TOS / traffic class byte: DSCP and ECN.
    pub tos: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// DF for IPv4; always true for IPv6, which routers never fragment.
    pub dont_fragment: bool,
}

/// Reads the inheritable fields of an inner IPv4 or IPv6 header; `None` for other payloads
/// or a header too short to hold them.
#[inline]
pub(crate) fn ip_fields(frame: &[u8], layout: Layout) -> Option<IpFields> {
    let ip = frame.get(layout.l3..)?;
    match layout.ethertype {
        ethertype::IPV4 => match ip {
            [version_ihl, tos, _, _, _, _, flags, _, ttl, ..] if version_ihl >> 4 == 4 => {
                Some(IpFields {
                    tos: *tos,
                    ttl: *ttl,
                    dont_fragment: flags & 0x40 != 0,
                })
            }
            _ => None,
        },
        ethertype::IPV6 => match ip {
            [b0, b1, _, _, _, _, _, hop_limit, ..] if b0 >> 4 == 6 => Some(IpFields {
                tos: (b0 << 4) | (b1 >> 4),
                ttl: *hop_limit,
                dont_fragment: true,
            }),
            _ => None,
        },
        _ => None,
    }
}

// Fixed keys (the digits of pi's fraction, as foldhash's): no structure to meet the data's.
const KEYS: [u64; 7] = [
    0x243F_6A88_85A3_08D3,
    0x1319_8A2E_0370_7344,
    0xA409_3822_299F_31D0,
    0x082E_FA98_EC4E_6C89,
    0x4528_21E6_38D0_1377,
    0xBE54_66CF_34E9_0C6C,
    0xC0AC_29B7_C97C_50DD,
];

#[inline(always)]
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(word)
}

#[inline(always)]
fn u32_at(data: &[u8], offset: usize) -> u64 {
    match data.get(offset..offset + 4) {
        Some(&[a, b, c, d]) => u64::from(u32::from_ne_bytes([a, b, c, d])),
        _ => 0,
    }
}

/// IP protocols whose header starts with 16-bit source and destination ports.
#[inline(always)]
fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 33 | 132 | 136) // TCP, UDP, DCCP, SCTP, UDP-Lite
}

/// A hash of the inner flow, for the outer UDP source port (RFC 7348 section 5): the inner
/// MAC addresses and EtherType, and for IP the addresses, the protocol and, where the
/// protocol has them and the packet is not a fragment, the ports. An IP header too short to
/// hold its addresses adds nothing. Constant for a flow, deterministic across processes and
/// machines (no random seed), so that every sender of a flow picks the same underlay path.
///
/// Two independent folded multiplies, link layer and network layer, each already mixing all
/// of its input into every output bit; their exclusive or is the hash. A third multiply to
/// combine them would only add latency: the spread is even without it
/// (`source_ports_spread_evenly`).
#[inline(always)]
pub(crate) fn flow_hash(frame: &[u8], layout: Layout) -> u32 {
    let Some(ethernet) = frame.first_chunk::<12>() else {
        return 0; // `layout` succeeded, so this is never reached.
    };
    let l3 = layout.l3;
    let network = match layout.ethertype {
        ethertype::IPV4 => match frame.get(l3..).and_then(<[u8]>::first_chunk::<20>) {
            Some(ip) => {
                let ports = if ipv4_has_ports(ip) {
                    u32_at(frame, l3 + usize::from(ip[0] & 0x0F) * 4)
                } else {
                    0
                };
                ipv4_words(ip, ports)
            }
            None => (0, 0),
        },
        ethertype::IPV6 => match frame.get(l3..).and_then(<[u8]>::first_chunk::<40>) {
            Some(ip) => {
                let next_header = ip[6];
                let ports = if has_ports(next_header) {
                    u32_at(frame, l3 + 40)
                } else {
                    0
                };
                let addrs = folded_multiply(u64_at(ip, 8) ^ KEYS[4], u64_at(ip, 16) ^ KEYS[5])
                    ^ folded_multiply(u64_at(ip, 24) ^ KEYS[6], u64_at(ip, 32) ^ KEYS[0]);
                (addrs, ports | u64::from(next_header) << 32)
            }
            None => (0, 0),
        },
        _ => (0, 0),
    };
    finish(ethernet, layout.ethertype, network)
}

/// True if an IPv4 header's protocol has ports and the packet is not a fragment (all the
/// fragments of a datagram hash alike, without the ports only the first one carries).
#[inline(always)]
fn ipv4_has_ports(ip: &[u8; 20]) -> bool {
    has_ports(ip[9]) && u16::from_be_bytes([ip[6], ip[7]]) & 0x3FFF == 0
}

/// The network-layer words of an IPv4 flow: the addresses; the ports and the protocol.
#[inline(always)]
fn ipv4_words(ip: &[u8; 20], ports: u64) -> (u64, u64) {
    (u64_at(ip, 12), ports | u64::from(ip[9]) << 32)
}

/// Mixes the link layer (MACs, EtherType) and the network-layer words into the hash.
#[inline(always)]
fn finish(ethernet: &[u8; 12], ethertype: u16, (first, second): (u64, u64)) -> u32 {
    let link = folded_multiply(
        u64_at(ethernet, 0) ^ KEYS[0],
        (u32_at(ethernet, 8) | u64::from(ethertype) << 32) ^ KEYS[1],
    );
    let network = folded_multiply(first ^ KEYS[2], second ^ KEYS[3]);
    ((link ^ network) >> 32) as u32
}

/// [`flow_hash`] of an untagged frame whose IPv4 header has no options (`h[12..15]` is
/// `08 00 45`), from its first 38 bytes.
#[inline(always)]
pub(crate) fn flow_hash_ipv4(h: &[u8; 38]) -> u32 {
    let (ethernet, rest) = h.split_first_chunk::<12>().unwrap_or((&[0; 12], &[]));
    let Some(ip) = rest.get(2..).and_then(<[u8]>::first_chunk::<20>) else {
        return 0; // 38 bytes hold both: never reached.
    };
    let ports = if ipv4_has_ports(ip) {
        u64::from(u32::from_ne_bytes([h[34], h[35], h[36], h[37]]))
    } else {
        0
    };
    finish(ethernet, ethertype::IPV4, ipv4_words(ip, ports))
}

/// What encapsulation reads of an inner frame, in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inspection {
    pub layout: Layout,
    pub ip: Option<IpFields>,
    pub hash: u32,
}

/// [`layout`], [`ip_fields`] and [`flow_hash`] at once. The common case, an untagged frame
/// with an IPv4 header without options, is read at fixed offsets from one bounds check;
/// everything else takes the general functions, with the same results (tested).
#[inline(always)]
pub(crate) fn inspect(frame: &[u8]) -> Result<Inspection, DropReason> {
    if let Some(h) = frame.first_chunk::<38>() {
        if h[12..15] == [0x08, 0x00, 0x45] {
            let layout = Layout {
                l3: ETHERNET_HEADER_LEN,
                ethertype: ethertype::IPV4,
                tagged: false,
            };
            let ip = IpFields {
                tos: h[15],
                ttl: h[22],
                dont_fragment: h[20] & 0x40 != 0,
            };
            return Ok(Inspection {
                layout,
                ip: Some(ip),
                hash: flow_hash_ipv4(h),
            });
        }
    }
    let layout = layout(frame)?;
    Ok(Inspection {
        layout,
        ip: ip_fields(frame, layout),
        hash: flow_hash(frame, layout),
    })
}

#[cfg(test)]
mod test {
    use super::*;

    fn frame(ethertype: u16, l3: &[u8]) -> [u8; 80] {
        let mut frame = [0u8; 80];
        frame[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
        frame[14..14 + l3.len()].copy_from_slice(l3);
        frame
    }

    #[test]
    fn layout_through_one_tag() {
        let plain = frame(0x0800, &[]);
        assert_eq!(
            layout(&plain),
            Ok(Layout {
                l3: 14,
                ethertype: 0x0800,
                tagged: false
            })
        );
        let tagged = frame(0x8100, &[0x00, 0x05, 0x86, 0xdd]);
        assert_eq!(
            layout(&tagged),
            Ok(Layout {
                l3: 18,
                ethertype: 0x86dd,
                tagged: true
            })
        );
        assert_eq!(layout(&tagged[..17]), Err(DropReason::InnerTruncated));
        assert_eq!(layout(&plain[..13]), Err(DropReason::InnerTruncated));
    }

    #[test]
    fn ip_fields_v4_v6() {
        // IPv4: TOS 0xb9 (DSCP 46, ECT(1)), DF, TTL 17.
        let v4 = frame(0x0800, &[0x45, 0xb9, 0, 40, 0, 0, 0x40, 0, 17, 6]);
        let fields = ip_fields(&v4, layout(&v4).unwrap()).unwrap();
        assert_eq!(
            fields,
            IpFields {
                tos: 0xb9,
                ttl: 17,
                dont_fragment: true
            }
        );
        // IPv6: traffic class 0xb9 spans bytes 0 and 1: 6b 90 00 00; hop limit 3.
        let v6 = frame(0x86dd, &[0x6b, 0x90, 0, 0, 0, 8, 17, 3]);
        let fields = ip_fields(&v6, layout(&v6).unwrap()).unwrap();
        assert_eq!(
            (fields.tos, fields.ttl, fields.dont_fragment),
            (0xb9, 3, true)
        );
        let arp = frame(0x0806, &[0x45]);
        assert_eq!(ip_fields(&arp, layout(&arp).unwrap()), None);
        // A wrong version is not IP.
        let bogus = frame(0x0800, &[0x65, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ip_fields(&bogus, layout(&bogus).unwrap()), None);
    }

    #[test]
    fn inspect_fast_path_agrees_with_the_general_functions() {
        let mut tcp = frame(0x0800, &[0x45, 0xb9, 0, 40, 0, 0, 0x40, 0, 17, 6]);
        tcp[26..34].copy_from_slice(&[198, 19, 0, 1, 198, 19, 0, 2]);
        tcp[34..38].copy_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        let mut cases = [tcp; 5];
        cases[1][20] = 0x20; // a fragment: no ports
        cases[2][23] = 1; // ICMP: no ports
        cases[3][14] = 0x46; // options: the general path
        cases[4][12] = 0x86; // IPv6 EtherType
        for (i, frame) in cases.iter().enumerate() {
            for len in [14, 20, 37, 38, 54, 80] {
                let frame = &frame[..len];
                let general = layout(frame).map(|layout| Inspection {
                    layout,
                    ip: ip_fields(frame, layout),
                    hash: flow_hash(frame, layout),
                });
                assert_eq!(inspect(frame), general, "case {i}, {len} bytes");
            }
        }
    }

    #[test]
    fn flow_hash_uses_ports_except_for_fragments() {
        let mut tcp = frame(0x0800, &[0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6]);
        tcp[26..34].copy_from_slice(&[198, 19, 0, 1, 198, 19, 0, 2]);
        tcp[34..38].copy_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        let base = flow_hash(&tcp, layout(&tcp).unwrap());
        let mut other_port = tcp;
        other_port[35] ^= 1;
        assert_ne!(base, flow_hash(&other_port, layout(&other_port).unwrap()));
        // A fragment hashes without ports, so all its fragments share one path.
        let mut frag_a = tcp;
        frag_a[20] = 0x20; // MF
        let mut frag_b = other_port;
        frag_b[20] = 0x20;
        assert_eq!(
            flow_hash(&frag_a, layout(&frag_a).unwrap()),
            flow_hash(&frag_b, layout(&frag_b).unwrap())
        );
        // Deterministic.
        assert_eq!(base, flow_hash(&tcp, layout(&tcp).unwrap()));
    }
}
