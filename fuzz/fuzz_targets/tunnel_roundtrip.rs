//! A described inner frame and tunnel configuration, encapsulated then decapsulated with the
//! matching receive configuration: the same VNI and the same inner bytes must come out, with
//! the source port the template names, or encapsulation must refuse for a reason the
//! configuration explains. Never panics.
//!
//! Inner ECN: encapsulation copies the inner ECN field to the outer header (RFC 6040 normal
//! mode), and decapsulating outer == inner leaves the inner field as it is (every diagonal
//! entry of RFC 6040's table is the identity), so the inner bytes must be exactly equal.
#![no_main]

use core::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use switchyard::tunnel::{
    decap, decap_udp_payload, DecapConfig, DfPolicy, Ecn, EncapConfig, EncapTemplate, IpIdent,
    OuterAddrs, PortRange, TosPolicy, TtlPolicy, Underlay, TOO_BIG_REPLY_MAX_LEN,
};
use switchyard::wire::EthernetAddress;
use switchyard::{DropReason, Vni};
use switchyard_fuzz::{
    check_decap_changes, check_outer_headers, check_template_result, expected_ttl_tos,
    explained_encap_errors, inner_layout, ones_complement_sum, ExpectedOuter,
};

#[derive(Arbitrary, Debug)]
struct Input {
    inner: InnerFrame,
    vni: u32,
    underlay: UnderlayInput,
    encap: EncapInput,
    /// The receiver reads VXLAN-GBP fields (there are none: it must still accept the frame).
    receiver_gbp: bool,
    /// Headroom beyond what the template needs, and bytes after the frame in the buffer: encap
    /// must write only in front of the frame, decap must ignore Ethernet padding.
    extra_headroom: u8,
    padding: u8,
    first_ident: u16,
    /// The size of the buffer offered to `too_big_reply`, when encap says the frame is too big.
    reply_room: u16,
}

#[derive(Arbitrary, Debug)]
struct InnerFrame {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    tag: Option<Tag>,
    network: Network,
    /// Reduced to the frame length 14..=1600; the headers are cut short when it is small.
    len: u16,
    /// Repeated to fill the frame after the headers.
    body: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Tag {
    service: bool,
    tci: u16,
}

#[derive(Arbitrary, Debug)]
enum Network {
    /// Random bytes behind a chosen EtherType, IPv4's and IPv6's included: headers that only
    /// look like IP, or do not.
    Raw(u16),
    Ipv4(Ipv4Input),
    Ipv6(Ipv6Input),
}

#[derive(Arbitrary, Debug)]
struct Ipv4Input {
    tos: u8,
    ident: u16,
    dont_fragment: bool,
    more_fragments: bool,
    fragment_offset: u16,
    ttl: u8,
    protocol: Protocol,
    src: [u8; 4],
    dst: [u8; 4],
    /// 32-bit words of options, 0..=10.
    option_words: u8,
    src_port: u16,
    dst_port: u16,
}

#[derive(Arbitrary, Debug)]
struct Ipv6Input {
    traffic_class: u8,
    flow_label: u32,
    next_header: Protocol,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
    src_port: u16,
    dst_port: u16,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Sctp,
    Other(u8),
}

impl Protocol {
    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::Sctp => 132,
            Protocol::Other(n) => n,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct UnderlayInput {
    ipv6: bool,
    local_mac: [u8; 6],
    next_hop_mac: [u8; 6],
    local_host: [u8; 12],
    remote_host: [u8; 12],
}

#[derive(Arbitrary, Debug)]
struct EncapInput {
    udp_port: UdpPort,
    source_ports: SourcePorts,
    udp_checksum_ipv4: bool,
    zero_checksum_ipv6: bool,
    df: Df,
    /// `None`: inherit.
    ttl: Option<u8>,
    /// `None`: inherit. A TOS with ECN bits is refused (`ConfigError::TosEcnBits`).
    tos: Option<u8>,
    mtu: Mtu,
    carry_inner_vlan: bool,
    ipv6_flow_label: bool,
}

#[derive(Arbitrary, Debug)]
enum UdpPort {
    Iana,
    LinuxLegacy,
    Other(u16),
}

#[derive(Arbitrary, Debug)]
enum SourcePorts {
    Rfc7348,
    Linux,
    Custom(u16, u16),
}

#[derive(Arbitrary, Debug)]
enum Df {
    Set,
    Unset,
    Inherit,
}

#[derive(Arbitrary, Debug)]
enum Mtu {
    Ethernet,
    Jumbo,
    Largest,
    Exactly(u16),
}

impl InnerFrame {
    fn build(&self) -> Vec<u8> {
        let len = 14 + usize::from(self.len) % (1600 - 14 + 1);
        let mut frame = Vec::with_capacity(len + 80);
        frame.extend_from_slice(&self.dst_mac);
        frame.extend_from_slice(&self.src_mac);
        if let Some(tag) = &self.tag {
            let tpid: u16 = if tag.service { 0x88A8 } else { 0x8100 };
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&tag.tci.to_be_bytes());
        }
        let l3 = frame.len() + 2;
        let payload_len = |header_len: usize| len.saturating_sub(l3 + header_len);
        match &self.network {
            Network::Raw(ethertype) => frame.extend_from_slice(&ethertype.to_be_bytes()),
            Network::Ipv4(ip) => {
                frame.extend_from_slice(&0x0800u16.to_be_bytes());
                let header_len = 20 + 4 * usize::from(ip.option_words % 11);
                let total_len = (header_len + payload_len(header_len)) as u16;
                let flags = u16::from(ip.dont_fragment) << 14
                    | u16::from(ip.more_fragments) << 13
                    | (ip.fragment_offset & 0x1FFF);
                let mut header = vec![0u8; header_len];
                header[0] = 0x40 | (header_len / 4) as u8;
                header[1] = ip.tos;
                header[2..4].copy_from_slice(&total_len.to_be_bytes());
                header[4..6].copy_from_slice(&ip.ident.to_be_bytes());
                header[6..8].copy_from_slice(&flags.to_be_bytes());
                header[8] = ip.ttl;
                header[9] = ip.protocol.number();
                header[12..16].copy_from_slice(&ip.src);
                header[16..20].copy_from_slice(&ip.dst);
                // Options: end-of-list padding (all zero) is valid.
                let checksum = !ones_complement_sum(&header);
                header[10..12].copy_from_slice(&checksum.to_be_bytes());
                frame.extend_from_slice(&header);
                frame.extend_from_slice(&ip.src_port.to_be_bytes());
                frame.extend_from_slice(&ip.dst_port.to_be_bytes());
            }
            Network::Ipv6(ip) => {
                frame.extend_from_slice(&0x86DDu16.to_be_bytes());
                let first_word =
                    6u32 << 28 | u32::from(ip.traffic_class) << 20 | (ip.flow_label & 0x000F_FFFF);
                frame.extend_from_slice(&first_word.to_be_bytes());
                frame.extend_from_slice(&(payload_len(40) as u16).to_be_bytes());
                frame.push(ip.next_header.number());
                frame.push(ip.hop_limit);
                frame.extend_from_slice(&ip.src);
                frame.extend_from_slice(&ip.dst);
                frame.extend_from_slice(&ip.src_port.to_be_bytes());
                frame.extend_from_slice(&ip.dst_port.to_be_bytes());
            }
        }
        if self.body.is_empty() {
            frame.resize(len, 0);
        } else {
            while frame.len() < len {
                let take = (len - frame.len()).min(self.body.len());
                frame.extend_from_slice(&self.body[..take]);
            }
        }
        frame.truncate(len);
        frame
    }
}

impl UnderlayInput {
    fn build(&self) -> Underlay {
        let local_mac = EthernetAddress(self.local_mac);
        let next_hop_mac = EthernetAddress(self.next_hop_mac);
        if self.ipv6 {
            // 2001:db8::/32 (RFC 3849), the host part from the input: always unicast.
            let v6 = |host: &[u8; 12]| {
                let mut octets = [0u8; 16];
                octets[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                octets[4..].copy_from_slice(host);
                Ipv6Addr::from(octets)
            };
            Underlay::ipv6(
                local_mac,
                next_hop_mac,
                v6(&self.local_host),
                v6(&self.remote_host),
            )
        } else {
            // 198.18.0.0/15 (RFC 2544): unicast, and never the broadcast address.
            let v4 = |host: &[u8; 12]| {
                let bits = u32::from_be_bytes([host[0], host[1], host[2], host[3]]);
                Ipv4Addr::from(0xC612_0000 | (bits & 0x0001_FFFF))
            };
            Underlay::ipv4(
                local_mac,
                next_hop_mac,
                v4(&self.local_host),
                v4(&self.remote_host),
            )
        }
    }
}

fuzz_target!(|input: Input| {
    let inner = input.inner.build();
    let vni = Vni::from_u24_truncating(input.vni);
    let underlay = input.underlay.build();
    let e = &input.encap;
    let source_ports = match e.source_ports {
        SourcePorts::Rfc7348 => PortRange::RFC7348,
        SourcePorts::Linux => PortRange::LINUX,
        SourcePorts::Custom(first, last) => match PortRange::new(first, last) {
            Ok(range) => range,
            Err(error) => {
                assert!(first == 0 || first > last, "{error}");
                return;
            }
        },
    };
    let config = EncapConfig {
        udp_port: match e.udp_port {
            UdpPort::Iana => 4789,
            UdpPort::LinuxLegacy => 8472,
            UdpPort::Other(port) => port,
        },
        source_ports,
        udp_checksum_ipv4: e.udp_checksum_ipv4,
        zero_checksum_ipv6: e.zero_checksum_ipv6,
        df: match e.df {
            Df::Set => DfPolicy::Set,
            Df::Unset => DfPolicy::Unset,
            Df::Inherit => DfPolicy::Inherit,
        },
        ttl: e.ttl.map_or(TtlPolicy::Inherit, TtlPolicy::Fixed),
        tos: e.tos.map_or(TosPolicy::Inherit, TosPolicy::Fixed),
        mtu: match e.mtu {
            Mtu::Ethernet => 1500,
            Mtu::Jumbo => 9000,
            Mtu::Largest => u16::MAX,
            Mtu::Exactly(mtu) => mtu,
        },
        carry_inner_vlan: e.carry_inner_vlan,
        ipv6_flow_label: e.ipv6_flow_label,
    };
    let template = EncapTemplate::new(&config, &underlay, vni);
    check_template_result(&template, &config, &underlay);
    let Ok(template) = template else {
        return;
    };
    let ipv6 = matches!(underlay.addrs, OuterAddrs::V6 { .. });
    assert_eq!(template.is_ipv6(), ipv6);
    let header_len = template.header_len();
    assert_eq!(header_len, if ipv6 { 70 } else { 50 });

    let headroom = header_len + usize::from(input.extra_headroom % 32);
    let padding = usize::from(input.padding % 64);
    let end = headroom + inner.len();
    let mut buf = vec![0xA5u8; end + padding];
    buf[headroom..end].copy_from_slice(&inner);
    let untouched = buf.clone();
    let mut ident = IpIdent::new(input.first_ident);
    let explained = explained_encap_errors(&inner, header_len, config.mtu, config.carry_inner_vlan);
    let outer = match template.encap(&mut buf, headroom..end, &mut ident) {
        Ok(outer) => {
            assert!(explained.is_empty(), "encapsulated despite {explained:?}");
            outer
        }
        Err(reason) => {
            assert!(
                explained.contains(&reason),
                "encap refused with {reason}, explained only {explained:?}"
            );
            assert_eq!(buf, untouched, "a refused encap wrote into the buffer");
            if reason == DropReason::MtuExceeded {
                check_too_big_reply(&template, &inner, usize::from(input.reply_room));
            }
            return;
        }
    };
    assert_eq!(outer, headroom - header_len..end);
    assert_eq!(buf[..outer.start], untouched[..outer.start]);
    assert_eq!(buf[outer.end..], untouched[outer.end..]);
    let source_port = template
        .source_port(&inner)
        .expect("source port of an accepted frame");
    check_outer_headers(
        &buf[outer.clone()],
        &ExpectedOuter {
            config: &config,
            underlay: &underlay,
            vni,
            inner: &inner,
            source_port,
        },
    );

    let receive = DecapConfig {
        udp_port: config.udp_port,
        // Encapsulation writes every reserved bit as zero.
        strict_reserved_bits: true,
        gbp: input.receiver_gbp,
        verify_udp_checksum: true,
        reject_zero_checksum_ipv6: ipv6 && !config.zero_checksum_ipv6,
        carry_inner_vlan: config.carry_inner_vlan,
    };
    assert_eq!(receive.validate(), Ok(()), "a port the template took");
    // The frame as received: the outer frame and whatever padding the link added behind it.
    let received = &mut buf[outer.start..];
    let sent = received.to_vec();
    let result = decap(&receive, received);
    check_decap_changes(&sent, received, &result);
    let d = match result {
        Ok(d) => d,
        Err(reason) => panic!(
            "decap refused what encap built: {reason}; inner {inner:02x?}, outer {:02x?}",
            &sent[..header_len]
        ),
    };
    assert_eq!(d.vni, vni);
    assert_eq!(d.gbp, None);
    assert_eq!(d.inner, header_len..header_len + inner.len());
    assert_eq!(
        &received[d.inner.clone()],
        &inner[..],
        "inner frame changed"
    );
    assert_eq!(d.udp_src_port, source_port);
    assert_eq!(d.outer, underlay.addrs);
    assert_eq!(d.outer_src_mac, underlay.local_mac);
    assert_eq!(d.outer_dst_mac, underlay.next_hop_mac);
    let (ttl, tos) = expected_ttl_tos(&config, &inner);
    assert_eq!((d.outer_ttl, d.outer_tos), (ttl, tos));

    // A backend whose socket took the outer IP and UDP headers off gets the same answer.
    let payload_start = header_len - 8;
    let mut payload = sent[payload_start..header_len + inner.len()].to_vec();
    let (repr, range) = decap_udp_payload(&receive, &mut payload, Ecn::from_tos(tos))
        .expect("decap_udp_payload refused what decap accepted");
    assert_eq!(repr.vni, vni);
    assert_eq!(&payload[range], &inner[..]);
});

/// The ICMP error for a frame too big for the tunnel: it fits where it says, and when there
/// is one it is a well-formed reply to the sender naming the MTU that fits.
fn check_too_big_reply(template: &EncapTemplate, inner: &[u8], room: usize) {
    let mut out = vec![0u8; TOO_BIG_REPLY_MAX_LEN];
    let Some(len) = template.too_big_reply(inner, &mut out) else {
        return;
    };
    assert!(len <= TOO_BIG_REPLY_MAX_LEN);
    let reply = &out[..len];
    let (l3, ethertype, _) = inner_layout(inner).expect("layout of a refused frame");
    assert_eq!(reply[..6], inner[6..12], "reply goes back to the sender");
    assert_eq!(reply[6..12], inner[..6]);
    assert_eq!(reply[12..l3], inner[12..l3]);
    let mtu = template.inner_ip_mtu(l3);
    let ip = &reply[l3..];
    match ethertype {
        0x0800 => {
            assert!(ip.len() <= 576, "RFC 1812 section 4.3.2.3");
            assert_eq!(ones_complement_sum(&ip[..20]), 0xFFFF, "IPv4 checksum");
            assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
            let icmp = &ip[20..];
            assert_eq!(ones_complement_sum(icmp), 0xFFFF, "ICMP checksum");
            assert_eq!(icmp[..2], [3, 4], "fragmentation needed");
            assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), mtu);
            assert_eq!(icmp[8..], inner[l3..l3 + icmp.len() - 8], "quoted packet");
        }
        0x86DD => {
            assert!(ip.len() <= 1280, "RFC 4443 section 2.4 (c)");
            let icmp = &ip[40..];
            assert_eq!(usize::from(u16::from_be_bytes([ip[4], ip[5]])), icmp.len());
            assert_eq!(ip[6], 58);
            let mut pseudo = Vec::with_capacity(40 + icmp.len());
            pseudo.extend_from_slice(&ip[8..40]);
            pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 58]);
            pseudo.extend_from_slice(icmp);
            assert_eq!(ones_complement_sum(&pseudo), 0xFFFF, "ICMPv6 checksum");
            assert_eq!(icmp[..2], [2, 0], "packet too big");
            let reported = u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]);
            assert_eq!(reported, u32::from(mtu.max(1280)));
            assert_eq!(icmp[8..], inner[l3..l3 + icmp.len() - 8], "quoted packet");
        }
        other => panic!("a too-big reply for EtherType {other:#06x}"),
    }
    // With less room, a shorter reply or none; never a panic or a write past `room`.
    let mut small = vec![0u8; room.min(TOO_BIG_REPLY_MAX_LEN)];
    if let Some(len) = template.too_big_reply(inner, &mut small) {
        assert!(len <= small.len());
    }
}
