//! Byte vectors for whole outer frames, and the receive rules exercised on them.
//!
//! Every expected frame here was built by scapy (python3-scapy 2.5, Debian), not by this
//! crate, with these layers (inner frames first):
//!
//! ```text
//! inner_arp = Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:0a")/ARP(op=1,
//!     hwsrc="02:00:00:00:00:0a", psrc="198.19.0.1", pdst="198.19.0.2")
//! inner_tcp = Ether(dst="02:00:00:00:00:0b", src="02:00:00:00:00:0a")/IP(src="198.19.0.1",
//!     dst="198.19.0.2", tos=0xba, ttl=17, flags="DF", id=7)/TCP(sport=40000, dport=80,
//!     flags="S", seq=1)
//! outer v4 = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01")/IP(src="198.18.0.1",
//!     dst="198.18.0.2", ttl=64, flags="DF", id=0, tos=0)/UDP(sport=49152, dport=4789,
//!     chksum=0)/VXLAN(flags=0x08, vni=42)/inner
//! outer v6 = Ether(...)/IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=64, fl=0)/
//!     UDP(sport=49152, dport=4789)/VXLAN(flags=0x08, vni=42)/inner
//! ```
//!
//! with, per vector, the variations named beside it. The source port range is pinned to the
//! single port 49152 so that the flow hash does not enter the comparison.

use core::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::wire::checksum::ipv4_header_valid;
use crate::wire::EthernetAddress;
use crate::{DropReason, Vni};

const INNER_ARP: &str =
    "ffffffffffff02000000000a0806000108000604000102000000000ac6130001000000000000c6130002";
const INNER_TCP: &str = "02000000000b02000000000a080045ba0028000740001106dce5c6130001c61300029c40005000000001000000005002200067270000";
/// Default configuration over IPv4: DF, TTL 64, TOS 0, zero UDP checksum.
const ARP_V4_DEFAULT: &str = "02000000000202000000000108004500004e000040004011ae77c6120001c6120002c00012b5003a00000800000000002a00ffffffffffff02000000000a0806000108000604000102000000000ac6130001000000000000c6130002";
/// As above with `UDP(chksum=None)`: scapy computes the checksum.
const ARP_V4_UDP_CHECKSUM: &str = "02000000000202000000000108004500004e000040004011ae77c6120001c6120002c00012b5003ac8510800000000002a00ffffffffffff02000000000a0806000108000604000102000000000ac6130001000000000000c6130002";
/// TTL and TOS inherited from the inner IPv4 header (`IP(ttl=17, tos=0xba, flags="DF")`):
/// DSCP 46 and ECT(0) copied.
const TCP_V4_INHERIT: &str = "020000000002020000000001080045ba005a000040001111dcb1c6120001c6120002c00012b5004600000800000000002a0002000000000b02000000000a080045ba0028000740001106dce5c6130001c61300029c40005000000001000000005002200067270000";
/// Default configuration over IPv6: the UDP checksum is computed; flow label 0 (option off).
const ARP_V6_DEFAULT: &str = "02000000000202000000000186dd60000000003a114020010db800000000000000000000000120010db8000000000000000000000002c00012b5003af9040800000000002a00ffffffffffff02000000000a0806000108000604000102000000000ac6130001000000000000c6130002";

fn hex(text: &str) -> ([u8; 256], usize) {
    let mut out = [0u8; 256];
    let bytes = text.as_bytes();
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).unwrap() as u8;
        out[i] = digit(pair[0]) << 4 | digit(pair[1]);
    }
    (out, bytes.len() / 2)
}

const LOCAL_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
const NEXT_HOP_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x02]);

fn underlay_v4() -> Underlay {
    Underlay::ipv4(
        LOCAL_MAC,
        NEXT_HOP_MAC,
        Ipv4Addr::new(198, 18, 0, 1),
        Ipv4Addr::new(198, 18, 0, 2),
    )
}

fn underlay_v6() -> Underlay {
    Underlay::ipv6(
        LOCAL_MAC,
        NEXT_HOP_MAC,
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
    )
}

fn pinned() -> EncapConfig {
    EncapConfig {
        source_ports: PortRange::new(49152, 49152).unwrap(),
        ipv6_flow_label: false,
        ..EncapConfig::default()
    }
}

/// Encapsulates `inner_hex` with `config` and returns the outer frame.
fn encap_hex(config: &EncapConfig, underlay: &Underlay, inner_hex: &str) -> ([u8; 256], usize) {
    let template = EncapTemplate::new(config, underlay, Vni::new(42).unwrap()).unwrap();
    let (inner, len) = hex(inner_hex);
    let mut buf = [0u8; 256];
    buf[70..70 + len].copy_from_slice(&inner[..len]);
    let outer = template
        .encap(&mut buf, 70..70 + len, &mut IpIdent::new(0))
        .unwrap();
    let mut out = [0u8; 256];
    out[..outer.len()].copy_from_slice(&buf[outer.clone()]);
    (out, outer.len())
}

fn assert_encap(config: &EncapConfig, underlay: &Underlay, inner: &str, expected: &str) {
    let (got, len) = encap_hex(config, underlay, inner);
    let (want, want_len) = hex(expected);
    assert_eq!(&got[..len], &want[..want_len]);
}

#[test]
fn encap_ipv4_default() {
    assert_encap(&pinned(), &underlay_v4(), INNER_ARP, ARP_V4_DEFAULT);
}

#[test]
fn encap_ipv4_udp_checksum() {
    let config = EncapConfig {
        udp_checksum_ipv4: true,
        ..pinned()
    };
    assert_encap(&config, &underlay_v4(), INNER_ARP, ARP_V4_UDP_CHECKSUM);
}

#[test]
fn encap_ipv4_inherit_ttl_tos_df() {
    let config = EncapConfig {
        ttl: TtlPolicy::Inherit,
        tos: TosPolicy::Inherit,
        df: DfPolicy::Inherit,
        ..pinned()
    };
    assert_encap(&config, &underlay_v4(), INNER_TCP, TCP_V4_INHERIT);
}

#[test]
fn encap_ipv6_default() {
    assert_encap(&pinned(), &underlay_v6(), INNER_ARP, ARP_V6_DEFAULT);
}

#[test]
fn encap_ipv6_zero_checksum_option() {
    let config = EncapConfig {
        zero_checksum_ipv6: true,
        ..pinned()
    };
    let (got, _) = encap_hex(&config, &underlay_v6(), INNER_ARP);
    assert_eq!(&got[14 + 40 + 6..14 + 40 + 8], &[0, 0]);
}

#[test]
fn encap_ipv6_flow_label_from_flow_hash() {
    let config = EncapConfig {
        ipv6_flow_label: true,
        ..pinned()
    };
    let (arp, _) = encap_hex(&config, &underlay_v6(), INNER_ARP);
    let (tcp, _) = encap_hex(&config, &underlay_v6(), INNER_TCP);
    let label = |frame: &[u8]| u32::from_be_bytes([0, frame[15] & 0x0F, frame[16], frame[17]]);
    assert_ne!(label(&arp), label(&tcp));
    assert_eq!(
        label(&arp),
        label(&encap_hex(&config, &underlay_v6(), INNER_ARP).0)
    );
}

/// DF policies and the IPv4 identification: an atomic datagram (DF) has ID 0 (RFC 6864);
/// a fragmentable one takes the next identification.
#[test]
fn encap_df_policies() {
    let df_and_id = |df: DfPolicy, inner: &str, ident: &mut IpIdent| {
        let template = EncapTemplate::new(
            &EncapConfig { df, ..pinned() },
            &underlay_v4(),
            Vni::new(42).unwrap(),
        )
        .unwrap();
        let (frame, len) = hex(inner);
        let mut buf = [0u8; 256];
        buf[50..50 + len].copy_from_slice(&frame[..len]);
        let outer = template.encap(&mut buf, 50..50 + len, ident).unwrap();
        let ip = &buf[outer.start + 14..];
        assert!(ipv4_header_valid(ip, 20));
        (ip[6] & 0x40 != 0, u16::from_be_bytes([ip[4], ip[5]]))
    };
    let mut ident = IpIdent::new(0x1234);
    assert_eq!(df_and_id(DfPolicy::Set, INNER_ARP, &mut ident), (true, 0));
    assert_eq!(
        df_and_id(DfPolicy::Unset, INNER_ARP, &mut ident),
        (false, 0x1234)
    );
    assert_eq!(
        df_and_id(DfPolicy::Unset, INNER_TCP, &mut ident),
        (false, 0x1235)
    );
    // Inherit: ARP is not IP (clear), the TCP packet has DF (set).
    assert_eq!(
        df_and_id(DfPolicy::Inherit, INNER_ARP, &mut ident),
        (false, 0x1236)
    );
    assert_eq!(
        df_and_id(DfPolicy::Inherit, INNER_TCP, &mut ident),
        (true, 0)
    );
}

/// TTL/TOS inheritance defaults for non-IP payloads, and through one 802.1Q tag.
#[test]
fn encap_inherit_non_ip_and_tagged() {
    let config = EncapConfig {
        ttl: TtlPolicy::Inherit,
        tos: TosPolicy::Inherit,
        carry_inner_vlan: true,
        ..pinned()
    };
    let (arp, _) = encap_hex(&config, &underlay_v4(), INNER_ARP);
    assert_eq!((arp[14 + 8], arp[14 + 1]), (64, 0));

    // The TCP frame with a tag (VID 5) inserted after the MACs.
    let (tcp, len) = hex(INNER_TCP);
    let mut tagged = [0u8; 256];
    tagged[..12].copy_from_slice(&tcp[..12]);
    tagged[12..16].copy_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    tagged[16..len + 4].copy_from_slice(&tcp[12..len]);
    let template = EncapTemplate::new(&config, &underlay_v4(), Vni::new(42).unwrap()).unwrap();
    let mut buf = [0u8; 256];
    buf[50..50 + len + 4].copy_from_slice(&tagged[..len + 4]);
    let outer = template
        .encap(&mut buf, 50..54 + len, &mut IpIdent::new(0))
        .unwrap();
    assert_eq!(
        (buf[outer.start + 14 + 8], buf[outer.start + 14 + 1]),
        (17, 0xba)
    );

    // Without carrying tags the tagged frame is refused.
    let strict = EncapTemplate::new(&pinned(), &underlay_v4(), Vni::new(42).unwrap()).unwrap();
    assert_eq!(
        strict.encap(&mut buf, 50..54 + len, &mut IpIdent::new(0)),
        Err(DropReason::InnerVlanTagged)
    );
}

/// Fixed TOS keeps its DSCP and takes the inner ECN; CE is copied, not turned into ECT(0).
#[test]
fn encap_ecn_copied_under_fixed_dscp() {
    let config = EncapConfig {
        tos: TosPolicy::Fixed(0x20),
        ..pinned()
    };
    for ecn in [0b00u8, 0b01, 0b10, 0b11] {
        let (mut tcp, len) = hex(INNER_TCP);
        tcp[15] = 0xb8 | ecn; // inner TOS: DSCP 46 with this ECN
        let template = EncapTemplate::new(&config, &underlay_v4(), Vni::new(42).unwrap()).unwrap();
        let mut buf = [0u8; 256];
        buf[50..50 + len].copy_from_slice(&tcp[..len]);
        let outer = template
            .encap(&mut buf, 50..50 + len, &mut IpIdent::new(0))
            .unwrap();
        assert_eq!(buf[outer.start + 15], 0x20 | ecn);
        assert!(ipv4_header_valid(&buf[outer.start + 14..], 20));
    }
}

/// Decapsulating each vector gives back the inner frame as a sub-slice, and the fields.
#[test]
fn decap_vectors() {
    for (vector, inner, ipv6) in [
        (ARP_V4_DEFAULT, INNER_ARP, false),
        (ARP_V4_UDP_CHECKSUM, INNER_ARP, false),
        (TCP_V4_INHERIT, INNER_TCP, false),
        (ARP_V6_DEFAULT, INNER_ARP, true),
    ] {
        let (mut frame, len) = hex(vector);
        let (inner, inner_len) = hex(inner);
        let d = decap(&DecapConfig::default(), &mut frame[..len]).unwrap();
        assert_eq!(d.vni, Vni::new(42).unwrap());
        assert_eq!(d.inner, len - inner_len..len);
        assert_eq!(d.inner_frame(&frame[..len]), &inner[..inner_len]);
        assert_eq!(d.udp_src_port, 49152);
        assert_eq!(d.outer_src_mac, LOCAL_MAC);
        assert_eq!(d.outer_dst_mac, NEXT_HOP_MAC);
        let expected = if ipv6 {
            underlay_v6().addrs
        } else {
            underlay_v4().addrs
        };
        assert_eq!(d.outer, expected);
        assert_eq!(d.gbp, None);
    }
}

fn decap_err(config: &DecapConfig, frame: &mut [u8]) -> DropReason {
    decap(config, frame).unwrap_err()
}

#[test]
fn decap_outer_ip_rules() {
    let config = DecapConfig::default();
    let (base, len) = hex(ARP_V4_DEFAULT);

    let mut frame = base;
    frame[13] = 0x06; // ARP
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::OuterNotIp
    );

    let mut frame = base;
    frame[14 + 10] ^= 0xFF; // IPv4 header checksum
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::Ipv4Checksum
    );

    let mut frame = base;
    frame[14] = 0x44; // IHL 4
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::Ipv4HeaderInvalid
    );

    // A fragment, with a correct header checksum: MF set.
    let mut frame = base;
    frame[14 + 6] |= 0x20;
    refresh_ipv4_checksum(&mut frame);
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::OuterFragment
    );
    // A non-initial fragment: offset 1.
    let mut frame = base;
    frame[14 + 7] = 1;
    refresh_ipv4_checksum(&mut frame);
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::OuterFragment
    );

    // Total length 0, as in a BIG TCP super-packet.
    let mut frame = base;
    frame[16..18].copy_from_slice(&[0, 0]);
    refresh_ipv4_checksum(&mut frame);
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::Ipv4LengthInvalid
    );

    // Not UDP.
    let mut frame = base;
    frame[14 + 9] = 6;
    refresh_ipv4_checksum(&mut frame);
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::OuterNotUdp
    );

    // Cut short, as by a capture's snap length: in the payload, then in the header.
    let mut frame = base;
    assert_eq!(
        decap_err(&config, &mut frame[..len - 1]),
        DropReason::OuterTruncated
    );
    assert_eq!(
        decap_err(&config, &mut frame[..14 + 19]),
        DropReason::OuterTruncated
    );
    assert_eq!(
        decap_err(&config, &mut frame[..13]),
        DropReason::EthernetTruncated
    );

    // Ethernet padding after the IP packet is not part of the inner frame.
    let mut frame = base;
    frame[len..len + 6].copy_from_slice(&[0xEE; 6]);
    let d = decap(&config, &mut frame[..len + 6]).unwrap();
    assert_eq!(d.inner.end, len);
}

fn refresh_ipv4_checksum(frame: &mut [u8]) {
    frame[24..26].copy_from_slice(&[0, 0]);
    let checksum = crate::wire::checksum::ipv4_header(&frame[14..], 20).unwrap();
    frame[24..26].copy_from_slice(&checksum.to_be_bytes());
}

#[test]
fn decap_udp_rules() {
    let config = DecapConfig::default();
    let (base, len) = hex(ARP_V4_DEFAULT);
    let udp = 34;

    // Any source port is accepted.
    for port in [1u16, 32768, 61000, 65535] {
        let mut frame = base;
        frame[udp..udp + 2].copy_from_slice(&port.to_be_bytes());
        assert_eq!(
            decap(&config, &mut frame[..len]).unwrap().udp_src_port,
            port
        );
    }

    let mut frame = base;
    frame[udp + 2..udp + 4].copy_from_slice(&8472u16.to_be_bytes());
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::NotVxlanPort
    );
    let linux = DecapConfig {
        udp_port: 8472,
        ..config
    };
    assert!(decap(&linux, &mut frame[..len]).is_ok());

    let mut frame = base;
    frame[udp + 2..udp + 4].copy_from_slice(&4790u16.to_be_bytes());
    assert_eq!(decap_err(&config, &mut frame[..len]), DropReason::VxlanGpe);

    for bad_len in [0u16, 7, 59] {
        let mut frame = base;
        frame[udp + 4..udp + 6].copy_from_slice(&bad_len.to_be_bytes());
        assert_eq!(
            decap_err(&config, &mut frame[..len]),
            DropReason::UdpLengthInvalid
        );
    }

    // A checksummed frame verifies; one flipped inner bit fails; verification off accepts.
    let (checked, checked_len) = hex(ARP_V4_UDP_CHECKSUM);
    let mut frame = checked;
    assert!(decap(&config, &mut frame[..checked_len]).is_ok());
    let mut frame = checked;
    frame[checked_len - 1] ^= 1;
    assert_eq!(
        decap_err(&config, &mut frame[..checked_len]),
        DropReason::UdpChecksum
    );
    let lenient = DecapConfig {
        verify_udp_checksum: false,
        ..config
    };
    assert!(decap(&lenient, &mut frame[..checked_len]).is_ok());
}

#[test]
fn decap_ipv6_rules() {
    let config = DecapConfig::default();
    let (base, len) = hex(ARP_V6_DEFAULT);
    let mut frame = base;
    assert!(decap(&config, &mut frame[..len]).is_ok());

    // Zero checksum: accepted by default, refused on request.
    let mut frame = base;
    frame[14 + 40 + 6..14 + 40 + 8].copy_from_slice(&[0, 0]);
    assert!(decap(&config, &mut frame[..len]).is_ok());
    let linux = DecapConfig {
        reject_zero_checksum_ipv6: true,
        ..config
    };
    assert_eq!(
        decap_err(&linux, &mut frame[..len]),
        DropReason::UdpZeroChecksumIpv6
    );

    let mut frame = base;
    frame[len - 1] ^= 1;
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::UdpChecksum
    );

    let mut frame = base;
    assert_eq!(
        decap_err(&config, &mut frame[..len - 1]),
        DropReason::OuterTruncated
    );
    assert_eq!(
        decap_err(&config, &mut frame[..14 + 39]),
        DropReason::OuterTruncated
    );
    frame[14] = 0x40; // version 4 under an IPv6 EtherType
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::Ipv6HeaderInvalid
    );

    let mut frame = base;
    frame[14 + 4..14 + 6].copy_from_slice(&[0, 0]); // payload length 0: jumbogram
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::Ipv6LengthInvalid
    );

    let mut frame = base;
    frame[14 + 6] = 44; // fragment header
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::OuterFragment
    );
    frame[14 + 6] = 0; // hop-by-hop options
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::Ipv6ExtensionHeader
    );
    frame[14 + 6] = 6;
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::OuterNotUdp
    );
}

#[test]
fn decap_vxlan_and_inner_rules() {
    let config = DecapConfig::default();
    let (base, len) = hex(ARP_V4_DEFAULT);
    let vxlan = 42;

    let mut frame = base;
    frame[vxlan] = 0x00;
    assert_eq!(
        decap_err(&config, &mut frame[..len]),
        DropReason::VxlanNoVniFlag
    );

    // Reserved bits: ignored (RFC 7348), refused in strict mode (Linux).
    let mut frame = base;
    frame[vxlan + 7] = 1;
    assert!(decap(&config, &mut frame[..len]).is_ok());
    let strict = DecapConfig {
        strict_reserved_bits: true,
        ..config
    };
    assert_eq!(
        decap_err(&strict, &mut frame[..len]),
        DropReason::VxlanReservedBits
    );

    // VNI 0 and 0xFFFFFF are valid.
    for vni in [0u32, 0xFF_FFFF] {
        let mut frame = base;
        frame[vxlan + 4..vxlan + 7].copy_from_slice(&vni.to_be_bytes()[1..]);
        assert_eq!(decap(&strict, &mut frame[..len]).unwrap().vni.get(), vni);
    }

    // Inner frame shorter than an Ethernet header; then no inner frame at all.
    for cut in [13usize, 0] {
        let mut frame = base;
        let total = vxlan + 8 + cut;
        set_lengths_v4(&mut frame, total);
        let reason = decap_err(&config, &mut frame[..total]);
        assert_eq!(reason, DropReason::InnerTruncated, "cut {cut}");
    }
    let mut frame = base;
    set_lengths_v4(&mut frame, vxlan + 7);
    assert_eq!(
        decap_err(&config, &mut frame[..vxlan + 7]),
        DropReason::VxlanTruncated
    );
}

/// Rewrites the outer IPv4 and UDP lengths for a frame cut to `total` bytes.
fn set_lengths_v4(frame: &mut [u8], total: usize) {
    let ip_len = (total - 14) as u16;
    frame[16..18].copy_from_slice(&ip_len.to_be_bytes());
    frame[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    refresh_ipv4_checksum(frame);
}

#[test]
fn decap_inner_vlan_policy() {
    // Re-encapsulate a tagged TCP frame with tags carried, then decap with and without.
    let config = EncapConfig {
        carry_inner_vlan: true,
        ..pinned()
    };
    let template = EncapTemplate::new(&config, &underlay_v4(), Vni::new(42).unwrap()).unwrap();
    let (tcp, len) = hex(INNER_TCP);
    let mut buf = [0u8; 256];
    buf[50..62].copy_from_slice(&tcp[..12]);
    buf[62..66].copy_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    buf[66..54 + len].copy_from_slice(&tcp[12..len]);
    let outer = template
        .encap(&mut buf, 50..54 + len, &mut IpIdent::new(0))
        .unwrap();
    let mut frame = buf;
    assert_eq!(
        decap_err(&DecapConfig::default(), &mut frame[outer.clone()]),
        DropReason::InnerVlanTagged
    );
    let carry = DecapConfig {
        carry_inner_vlan: true,
        ..DecapConfig::default()
    };
    let d = decap(&carry, &mut frame[outer.clone()]).unwrap();
    assert_eq!(d.inner.len(), len + 4);
}

/// The ECN decapsulation table applied through `decap`, with the inner IPv4 checksum kept
/// valid, for every combination; and for IPv6 inner packets.
#[test]
fn decap_ecn_table_through_frames() {
    use super::ecn::{decap as table, Ecn};
    let all = [Ecn::NotEct, Ecn::Ect0, Ecn::Ect1, Ecn::Ce];
    for inner_ecn in all {
        for outer_ecn in all {
            let (mut frame, len) = hex(TCP_V4_INHERIT);
            // Inner TOS at 50 + 15, outer TOS at 15; refresh both checksums.
            frame[65] = 0xb8 | inner_ecn.bits();
            frame[74..76].copy_from_slice(&[0, 0]);
            let inner_checksum = crate::wire::checksum::ipv4_header(&frame[64..], 20).unwrap();
            frame[74..76].copy_from_slice(&inner_checksum.to_be_bytes());
            frame[15] = 0xb8 | outer_ecn.bits();
            refresh_ipv4_checksum(&mut frame);
            let result = decap(&DecapConfig::default(), &mut frame[..len]);
            match table(inner_ecn, outer_ecn) {
                None => assert_eq!(result, Err(DropReason::EcnCeOnNotEct)),
                Some(expected) => {
                    let d = result.unwrap();
                    let inner = d.inner_frame(&frame[..len]);
                    assert_eq!(Ecn::from_tos(inner[15]), expected);
                    assert_eq!(inner[15] & !0b11, 0xb8, "DSCP unchanged");
                    assert_eq!(inner[22], 17, "TTL unchanged");
                    assert!(ipv4_header_valid(&inner[14..], 20));
                }
            }
        }
    }
    // IPv6 inner: traffic class 0xb8 | ECN in bytes 0..2 of the header.
    for inner_ecn in all {
        for outer_ecn in all {
            let mut buf = [0u8; 256];
            let inner = &mut buf[50..50 + 62];
            inner[..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x0b, 2, 0, 0, 0, 0, 0x0a]);
            inner[12..14].copy_from_slice(&[0x86, 0xdd]);
            let tc = 0xb8 | inner_ecn.bits();
            inner[14] = 0x60 | (tc >> 4);
            inner[15] = tc << 4;
            inner[19] = 8; // payload length
            inner[20] = 17;
            inner[21] = 9; // hop limit
            let template = EncapTemplate::new(
                &EncapConfig {
                    tos: TosPolicy::Inherit,
                    ..pinned()
                },
                &underlay_v4(),
                Vni::new(7).unwrap(),
            )
            .unwrap();
            let outer = template
                .encap(&mut buf, 50..112, &mut IpIdent::new(0))
                .unwrap();
            buf[15] = (buf[15] & !0b11) | outer_ecn.bits();
            refresh_ipv4_checksum(&mut buf);
            let result = decap(&DecapConfig::default(), &mut buf[outer.clone()]);
            match table(inner_ecn, outer_ecn) {
                None => assert_eq!(result, Err(DropReason::EcnCeOnNotEct)),
                Some(expected) => {
                    let d = result.unwrap();
                    let inner = d.inner_frame(&buf[outer.clone()]);
                    let tc = (inner[14] << 4) | (inner[15] >> 4);
                    assert_eq!(Ecn::from_tos(tc), expected);
                    assert_eq!(tc & !0b11, 0xb8);
                    assert_eq!(inner[21], 9);
                }
            }
        }
    }
}

/// Non-IP inner frames cross any outer ECN unchanged, even CE.
#[test]
fn decap_ce_on_arp_passes_unchanged() {
    let (mut frame, len) = hex(ARP_V4_DEFAULT);
    frame[15] = 0b11;
    refresh_ipv4_checksum(&mut frame);
    let (inner, inner_len) = hex(INNER_ARP);
    let d = decap(&DecapConfig::default(), &mut frame[..len]).unwrap();
    assert_eq!(d.inner_frame(&frame[..len]), &inner[..inner_len]);
}

/// A frame too big for the MTU: the ICMP error goes back to the sender, checked with
/// smoltcp's parsers (not ours).
#[test]
fn too_big_reply_ipv4() {
    use crate::wire::{Icmpv4Packet, Ipv4Packet};
    let config = EncapConfig {
        mtu: 1400,
        ..pinned()
    };
    let template = EncapTemplate::new(&config, &underlay_v4(), Vni::new(42).unwrap()).unwrap();
    let (tcp, tcp_len) = hex(INNER_TCP);
    // The TCP frame grown to 1400 bytes of IP: total length 1400, header checksum redone.
    let mut frame = [0u8; 1414];
    frame[..tcp_len].copy_from_slice(&tcp[..tcp_len]);
    frame[16..18].copy_from_slice(&1400u16.to_be_bytes());
    frame[24..26].copy_from_slice(&[0, 0]);
    let checksum = crate::wire::checksum::ipv4_header(&frame[14..], 20).unwrap();
    frame[24..26].copy_from_slice(&checksum.to_be_bytes());

    let mut buf = [0u8; 1500];
    buf[50..50 + 1414].copy_from_slice(&frame);
    assert_eq!(
        template.encap(&mut buf, 50..1464, &mut IpIdent::new(0)),
        Err(DropReason::MtuExceeded)
    );
    let mut out = [0u8; TOO_BIG_REPLY_MAX_LEN];
    let len = template.too_big_reply(&frame, &mut out).unwrap();
    let reply = &out[..len];
    assert_eq!(&reply[0..6], &frame[6..12], "back to the sender's MAC");
    assert_eq!(&reply[6..12], &frame[0..6]);
    let ip = Ipv4Packet::new_checked(&reply[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(usize::from(ip.total_len()), len - 14);
    assert!(len - 14 <= 576, "RFC 1812: at most 576 bytes");
    assert_eq!(ip.src_addr(), Ipv4Addr::new(198, 19, 0, 2));
    assert_eq!(ip.dst_addr(), Ipv4Addr::new(198, 19, 0, 1));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!((u8::from(icmp.msg_type()), icmp.msg_code()), (3, 4));
    // Next-hop MTU (RFC 1191): 1400 - 50.
    assert_eq!(&ip.payload()[6..8], &1350u16.to_be_bytes());
    assert_eq!(
        &icmp.data()[..40],
        &frame[14..54],
        "quotes the original datagram"
    );

    // No DF: dropped silently. An ICMP error: never answered.
    let mut no_df = frame;
    no_df[20] = 0;
    assert_eq!(template.too_big_reply(&no_df, &mut out), None);
    let mut icmp_error = frame;
    icmp_error[23] = 1; // protocol ICMP
    icmp_error[34] = 3; // destination unreachable
    assert_eq!(template.too_big_reply(&icmp_error, &mut out), None);
    // A multicast sender MAC is no host.
    let mut group = frame;
    group[6] = 0x01;
    assert_eq!(template.too_big_reply(&group, &mut out), None);
    // Output too small for the headers.
    assert_eq!(template.too_big_reply(&frame, &mut out[..40]), None);
}

#[test]
fn too_big_reply_ipv6() {
    use crate::wire::{Icmpv6Packet, Ipv6Packet};
    let config = EncapConfig {
        mtu: 1500,
        ..pinned()
    };
    let template = EncapTemplate::new(&config, &underlay_v6(), Vni::new(42).unwrap()).unwrap();
    let mut frame = [0u8; 1514];
    frame[..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x0b, 2, 0, 0, 0, 0, 0x0a]);
    frame[12..14].copy_from_slice(&[0x86, 0xdd]);
    frame[14] = 0x60;
    frame[18..20].copy_from_slice(&1460u16.to_be_bytes());
    frame[20] = 17;
    frame[21] = 64;
    let src = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
    let dst = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
    frame[22..38].copy_from_slice(&src.octets());
    frame[38..54].copy_from_slice(&dst.octets());

    let mut buf = [0u8; 1600];
    buf[70..70 + 1514].copy_from_slice(&frame);
    assert_eq!(
        template.encap(&mut buf, 70..1584, &mut IpIdent::new(0)),
        Err(DropReason::MtuExceeded)
    );
    let mut out = [0u8; TOO_BIG_REPLY_MAX_LEN];
    let len = template.too_big_reply(&frame, &mut out).unwrap();
    assert_eq!(len, 14 + 1280, "as much as fits in the minimum MTU");
    let ip = Ipv6Packet::new_checked(&out[14..len]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (dst, src));
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(&dst, &src));
    assert_eq!(u8::from(icmp.msg_type()), 2);
    // MTU 1500 - 70.
    assert_eq!(&ip.payload()[4..8], &1430u32.to_be_bytes());
}

#[test]
fn too_big_reply_keeps_the_vlan_tag() {
    let config = EncapConfig {
        mtu: 1400,
        carry_inner_vlan: true,
        ..pinned()
    };
    let template = EncapTemplate::new(&config, &underlay_v4(), Vni::new(42).unwrap()).unwrap();
    let (tcp, tcp_len) = hex(INNER_TCP);
    let mut frame = [0u8; 1418];
    frame[..12].copy_from_slice(&tcp[..12]);
    frame[12..16].copy_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    frame[16..tcp_len + 4].copy_from_slice(&tcp[12..tcp_len]);
    let mut out = [0u8; TOO_BIG_REPLY_MAX_LEN];
    let len = template.too_big_reply(&frame, &mut out).unwrap();
    assert_eq!(&out[12..16], &[0x81, 0x00, 0x00, 0x05]);
    // 1400 - 50 - 4 for the tag.
    assert_eq!(&out[18 + 20 + 6..18 + 20 + 8], &1346u16.to_be_bytes());
    assert!(len > 18 + 28);
}
