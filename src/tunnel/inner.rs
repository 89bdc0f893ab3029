//! What encapsulation and decapsulation need to know of the inner frame: where its IP header
//! is (through one 802.1Q tag), its TOS/ECN, TTL and DF, and a hash of its flow.

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

/// A 64-bit multiply folded into 64 bits (the mixing step of foldhash and wyhash): cheap,
/// and every input bit reaches every output bit.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

const SEED: u64 = 0x243F_6A88_85A3_08D3; // pi's fraction: no structure to meet the data's.
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15; // 2^64 / golden ratio.

#[inline]
fn mix(hash: u64, word: u64) -> u64 {
    folded_multiply(hash ^ word, MULTIPLIER)
}

#[inline]
fn word_at(data: &[u8], offset: usize) -> u64 {
    match data.get(offset..offset + 8) {
        Some(bytes) => {
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            u64::from_ne_bytes(word)
        }
        None => 0,
    }
}

#[inline]
fn half_word_at(data: &[u8], offset: usize) -> u64 {
    match data.get(offset..offset + 4) {
        Some(&[a, b, c, d]) => u64::from(u32::from_ne_bytes([a, b, c, d])),
        _ => 0,
    }
}

/// IP protocols whose header starts with 16-bit source and destination ports.
#[inline]
fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 33 | 132 | 136) // TCP, UDP, DCCP, SCTP, UDP-Lite
}

/// A hash of the inner flow, for the outer UDP source port (RFC 7348 section 5): the inner
/// MAC addresses, and for IP the addresses, the protocol and, where the protocol has them
/// and the packet is not a fragment, the ports. Constant for a flow, deterministic across
/// processes and machines (no random seed), so that every sender of a flow picks the same
/// underlay path.
#[inline]
pub(crate) fn flow_hash(frame: &[u8], layout: Layout) -> u32 {
    // Destination and source MAC: bytes 0..12.
    let mut hash = mix(SEED, word_at(frame, 0));
    hash = mix(hash, half_word_at(frame, 8));
    let l3 = layout.l3;
    match layout.ethertype {
        ethertype::IPV4 => {
            if let Some(&[version_ihl, _, _, _, _, _, frag_hi, frag_lo, _, protocol]) =
                frame.get(l3..l3 + 10)
            {
                // Addresses, 12..20 of the IP header.
                hash = mix(hash, word_at(frame, l3 + 12) ^ u64::from(protocol));
                let fragment = u16::from_be_bytes([frag_hi, frag_lo]) & 0x3FFF != 0;
                if has_ports(protocol) && !fragment {
                    let ports = l3 + usize::from(version_ihl & 0x0F) * 4;
                    hash = mix(hash, half_word_at(frame, ports));
                }
            }
        }
        ethertype::IPV6 => {
            if let Some(&next_header) = frame.get(l3 + 6) {
                hash = mix(hash, word_at(frame, l3 + 8) ^ u64::from(next_header));
                hash = mix(hash, word_at(frame, l3 + 16));
                hash = mix(hash, word_at(frame, l3 + 24));
                hash = mix(hash, word_at(frame, l3 + 32));
                if has_ports(next_header) {
                    hash = mix(hash, half_word_at(frame, l3 + 40));
                }
            }
        }
        other => hash = mix(hash, u64::from(other)),
    }
    (folded_multiply(hash, SEED) >> 32) as u32
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
