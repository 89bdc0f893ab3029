//! Decapsulation of real captures from other projects' test suites (tcpdump, Zeek,
//! suricata-verify), read in place from `../shared/testdata/vxlan`; `SOURCES.md` there says
//! where each file comes from and what it holds.
//!
//! Every expected value below comes from `SOURCES.md` or was read with tshark (Wireshark's
//! dissector, not our code); the tshark command is given next to the numbers. The outer
//! header of every capture here has IHL 5 and ECN Not-ECT (`tshark -r FILE -T fields -e
//! ip.hdr_len -e ip.dsfield -e ipv6.tclass`: 20 and 0x00 everywhere), so RFC 6040 never
//! touches the inner header: a decapsulated frame must be the captured frame's tail, byte for
//! byte, 50 bytes in over IPv4 and 70 over IPv6 (`tshark -T fields -e frame.len -e ip.len -e
//! ipv6.plen`: every VXLAN frame ends where its outer IP packet ends, no Ethernet padding).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use common::{parse_capture, read_capture, vxlan_testdata, CapturedFrame};
use switchyard::tunnel::{
    decap, decap_udp_payload, ConfigError, DecapConfig, Decapsulated, Ecn, OuterAddrs,
};
use switchyard::wire::vxlan::Gbp;
use switchyard::wire::{
    ArpOperation, ArpPacket, EthernetAddress, EthernetFrame, Icmpv4Message, Icmpv4Packet,
    IpProtocol, Ipv4Packet, TcpPacket, UdpPacket,
};
use switchyard::{DropCounters, DropReason, Vni};

/// Outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
const OUTER_IPV4: usize = 50;
/// Outer Ethernet 14 + IPv6 40 + UDP 8 + VXLAN 8.
const OUTER_IPV6: usize = 70;

/// Every capture in the directory: name, size in bytes and frame count, from the `Bytes` and
/// `Pkts` columns of SOURCES.md.
const CAPTURES: &[(&str, u64, usize)] = &[
    ("suricata-verify__geneve-decoder.pcap", 1552, 10),
    ("suricata-verify__vxlan-decoder-01.pcap", 293, 3),
    (
        "suricata-verify__vxlan-decoder-03-aws-mirror.pcap",
        27672,
        100,
    ),
    (
        "suricata-verify__vxlan-non-zero-reserved-fields.pcap",
        2001,
        10,
    ),
    ("tcpdump__bigtcp-ipv4-vxlan-ipv4.pcap", 80156, 1),
    ("tcpdump__bigtcp-ipv6-vxlan-ipv6.pcap", 80196, 1),
    ("tcpdump__geneve-gcp.pcap", 170, 1),
    ("tcpdump__geneve.pcap", 9928, 39),
    ("tcpdump__gso-ipv4-vxlan-ipv4.pcap", 7146, 1),
    ("tcpdump__gso-ipv4-vxlan-ipv6.pcap", 4310, 1),
    ("tcpdump__gso-ipv6-vxlan-ipv4.pcap", 7066, 1),
    ("tcpdump__gso-ipv6-vxlan-ipv6.pcap", 4270, 1),
    ("tcpdump__nsh-over-vxlan-gpe.pcap", 146, 1),
    ("tcpdump__vxlan.pcap", 1552, 10),
    ("tcpdump__vxlan_port_8472.pcap", 1552, 10),
    ("zeek__geneve-ipv6.pcap", 262, 2),
    ("zeek__geneve-vxlan-dns-truncated.pcap", 408, 2),
    ("zeek__geneve.pcap", 1032, 6),
    ("zeek__vxlan-encapsulated-http.pcap", 10923, 12),
    ("zeek__vxlan-encapsulated-igmp-v2.pcap", 360, 3),
    ("zeek__vxlan-inner-tcp-bad-checksum.pcap", 144, 1),
    ("zeek__vxlan-overlapping-http-get.pcap", 20357, 42),
    ("zeek__vxlan-triple-v2.pcap", 261, 1),
    ("zeek__vxlan.pcap", 1552, 10),
];

const GENEVE_CAPTURES: [&str; 5] = [
    "suricata-verify__geneve-decoder.pcap",
    "tcpdump__geneve-gcp.pcap",
    "tcpdump__geneve.pcap",
    "zeek__geneve-ipv6.pcap",
    "zeek__geneve.pcap",
];

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Skips the test (returns) when the captures are absent outside CI.
macro_rules! testdata_or_skip {
    () => {
        match vxlan_testdata() {
            Some(dir) => dir,
            None => return,
        }
    };
}

fn default_config() -> DecapConfig {
    DecapConfig::default()
}

fn port(udp_port: u16) -> DecapConfig {
    DecapConfig {
        udp_port,
        ..DecapConfig::default()
    }
}

fn strict() -> DecapConfig {
    DecapConfig {
        strict_reserved_bits: true,
        ..DecapConfig::default()
    }
}

fn no_checksum_verification() -> DecapConfig {
    DecapConfig {
        verify_udp_checksum: false,
        ..DecapConfig::default()
    }
}

/// Every combination of `DecapConfig`'s boolean options, on `udp_port`.
fn boolean_combinations(udp_port: u16) -> Vec<DecapConfig> {
    (0u8..32)
        .map(|bits| DecapConfig {
            udp_port,
            strict_reserved_bits: bits & 1 != 0,
            gbp: bits & 2 != 0,
            verify_udp_checksum: bits & 4 != 0,
            reject_zero_checksum_ipv6: bits & 8 != 0,
            carry_inner_vlan: bits & 16 != 0,
        })
        .collect()
}

fn mac(text: &str) -> EthernetAddress {
    let mut bytes = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut bytes {
        let part = parts.next().unwrap_or_else(|| panic!("bad MAC {text}"));
        *byte = u8::from_str_radix(part, 16).unwrap_or_else(|_| panic!("bad MAC {text}"));
    }
    assert!(parts.next().is_none(), "bad MAC {text}");
    EthernetAddress(bytes)
}

fn vni(value: u32) -> Vni {
    Vni::new(value).unwrap()
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn outer_v4(src: Ipv4Addr, dst: Ipv4Addr) -> OuterAddrs {
    OuterAddrs::V4 { src, dst }
}

fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Calls `decap`, turning a panic into a failure that names the packet.
fn decap_reporting(
    config: &DecapConfig,
    frame: &mut [u8],
    what: impl Fn() -> String,
) -> Result<Decapsulated, DropReason> {
    match catch_unwind(AssertUnwindSafe(|| decap(config, frame))) {
        Ok(result) => result,
        Err(_) => panic!("decap panicked on {} with {config:?}", what()),
    }
}

/// A capture decapsulated frame by frame with one configuration.
struct Decoded {
    name: String,
    frames: Vec<CapturedFrame>,
    /// Each frame's buffer after `decap` (which may only rewrite an inner ECN field).
    after: Vec<Vec<u8>>,
    results: Vec<Result<Decapsulated, DropReason>>,
}

impl Decoded {
    fn new(dir: &Path, name: &str, config: &DecapConfig) -> Decoded {
        let frames = read_capture(&path(dir, name));
        let mut after = Vec::with_capacity(frames.len());
        let mut results = Vec::with_capacity(frames.len());
        for (index, frame) in frames.iter().enumerate() {
            let mut buffer = frame.data.clone();
            results.push(decap_reporting(config, &mut buffer, || {
                format!("{name} frame {}", index + 1)
            }));
            after.push(buffer);
        }
        Decoded {
            name: name.to_owned(),
            frames,
            after,
            results,
        }
    }

    /// The decapsulated frames: index (0-based), result, inner frame.
    fn decapsulated(&self) -> impl Iterator<Item = (usize, &Decapsulated, &[u8])> + '_ {
        self.results
            .iter()
            .enumerate()
            .filter_map(|(index, result)| {
                let d = result.as_ref().ok()?;
                Some((index, d, d.inner_frame(&self.after[index])))
            })
    }

    fn ok(&self, index: usize) -> &Decapsulated {
        match &self.results[index] {
            Ok(d) => d,
            Err(reason) => panic!("{} frame {}: dropped, {reason}", self.name, index + 1),
        }
    }

    fn inner(&self, index: usize) -> &[u8] {
        self.ok(index).inner_frame(&self.after[index])
    }

    fn counters(&self) -> DropCounters {
        let mut counters = DropCounters::new();
        for reason in self.results.iter().filter_map(|r| r.as_ref().err()) {
            counters.record(*reason);
        }
        counters
    }

    fn vni_counts(&self) -> BTreeMap<u32, usize> {
        let mut counts = BTreeMap::new();
        for (_, d, _) in self.decapsulated() {
            *counts.entry(d.vni.get()).or_default() += 1;
        }
        counts
    }

    /// Asserts how many frames were decapsulated, in which VNIs, and how many were dropped
    /// for which reason.
    fn assert_tally(&self, vnis: &[(u32, usize)], drops: &[(DropReason, u64)]) {
        let expected_vnis: BTreeMap<u32, usize> = vnis.iter().copied().collect();
        assert_eq!(self.vni_counts(), expected_vnis, "{}: VNIs", self.name);
        let mut expected_drops = drops.to_vec();
        expected_drops.sort();
        let counters = self.counters();
        let got: Vec<(DropReason, u64)> = counters.nonzero().collect();
        assert_eq!(got, expected_drops, "{}: drops", self.name);
        let decapsulated: usize = vnis.iter().map(|&(_, n)| n).sum();
        assert_eq!(
            decapsulated as u64 + counters.total(),
            self.frames.len() as u64,
            "{}: every frame is decapsulated or dropped",
            self.name
        );
    }

    /// Asserts that each decapsulated inner frame is the captured frame's tail after the
    /// outer headers, and that decap changed no byte (the outer ECN is Not-ECT throughout).
    fn assert_inner_frames_are_tails(&self) {
        for (index, d, inner) in self.decapsulated() {
            let captured = &self.frames[index].data;
            let outer_len = match d.outer {
                OuterAddrs::V4 { .. } => OUTER_IPV4,
                OuterAddrs::V6 { .. } => OUTER_IPV6,
            };
            assert_eq!(
                d.inner,
                outer_len..captured.len(),
                "{} frame {}: inner range",
                self.name,
                index + 1
            );
            assert_eq!(
                inner,
                &captured[outer_len..],
                "{} frame {}",
                self.name,
                index + 1
            );
            assert_eq!(
                &self.after[index],
                captured,
                "{} frame {}: decap changed the frame",
                self.name,
                index + 1
            );
            assert_eq!(
                d.outer_tos,
                0,
                "{} frame {}: outer TOS",
                self.name,
                index + 1
            );
        }
    }
}

/// The parts of an inner frame these tests look at, parsed with smoltcp's wire types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InnerPayload {
    Arp {
        operation: ArpOperation,
        sender: Ipv4Addr,
        target: Ipv4Addr,
    },
    Icmp {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        message: Icmpv4Message,
    },
}

fn inner_payload(frame: &[u8]) -> InnerPayload {
    let ethernet = EthernetFrame::new_checked(frame).expect("inner Ethernet header");
    match u16::from(ethernet.ethertype()) {
        0x0806 => {
            let arp = ArpPacket::new_checked(ethernet.payload()).expect("inner ARP");
            let addr = |bytes: &[u8]| v4(bytes[0], bytes[1], bytes[2], bytes[3]);
            InnerPayload::Arp {
                operation: arp.operation(),
                sender: addr(arp.source_protocol_addr()),
                target: addr(arp.target_protocol_addr()),
            }
        }
        0x0800 => {
            let ip = Ipv4Packet::new_checked(ethernet.payload()).expect("inner IPv4");
            assert_eq!(ip.next_header(), IpProtocol::Icmp);
            let icmp = Icmpv4Packet::new_checked(ip.payload()).expect("inner ICMP");
            InnerPayload::Icmp {
                src: ip.src_addr(),
                dst: ip.dst_addr(),
                message: icmp.msg_type(),
            }
        }
        other => panic!("unexpected inner EtherType {other:#06x}"),
    }
}

/// One frame of a capture, as tshark dissects it.
#[derive(Clone, Copy)]
struct Expected {
    udp_src_port: u16,
    outer_ttl: u8,
    outer: OuterAddrs,
    inner_src: &'static str,
    inner_dst: &'static str,
    payload: InnerPayload,
}

fn assert_frames(decoded: &Decoded, expected_vni: Vni, expected: &[Expected]) {
    assert_eq!(decoded.frames.len(), expected.len(), "{}", decoded.name);
    for (index, want) in expected.iter().enumerate() {
        let context = format!("{} frame {}", decoded.name, index + 1);
        let d = decoded.ok(index);
        assert_eq!(d.vni, expected_vni, "{context}");
        assert_eq!(
            d.udp_src_port, want.udp_src_port,
            "{context}: outer source port"
        );
        assert_eq!(d.outer_ttl, want.outer_ttl, "{context}: outer TTL");
        assert_eq!(d.outer, want.outer, "{context}: outer addresses");
        let inner = decoded.inner(index);
        let ethernet = EthernetFrame::new_checked(inner).unwrap();
        assert_eq!(
            ethernet.src_addr(),
            mac(want.inner_src),
            "{context}: inner source"
        );
        assert_eq!(
            ethernet.dst_addr(),
            mac(want.inner_dst),
            "{context}: inner destination"
        );
        assert_eq!(
            inner_payload(inner),
            want.payload,
            "{context}: inner payload"
        );
    }
}

/// Flips one byte of `frame` at `offset`.
fn corrupted(frame: &[u8], offset: usize) -> Vec<u8> {
    let mut copy = frame.to_vec();
    copy[offset] ^= 0x01;
    copy
}

// ---------------------------------------------------------------------------------------
// Inventory and counts for every capture
// ---------------------------------------------------------------------------------------

#[test]
fn every_capture_is_listed_and_intact() {
    let dir = testdata_or_skip!();
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.ends_with(".pcap") || name.ends_with(".pcapng") || name.ends_with(".cap")
        })
        .collect();
    let listed: BTreeSet<String> = CAPTURES
        .iter()
        .map(|&(name, _, _)| name.to_owned())
        .collect();
    assert_eq!(
        on_disk, listed,
        "a capture was added or removed: give it a test"
    );
    for &(name, bytes, frames) in CAPTURES {
        let file = path(&dir, name);
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            bytes,
            "{name}: size"
        );
        assert_eq!(read_capture(&file).len(), frames, "{name}: frames");
    }
}

/// One line per capture and configuration: what decap makes of the whole file.
struct Tally {
    file: &'static str,
    config: DecapConfig,
    vnis: &'static [(u32, usize)],
    drops: &'static [(DropReason, u64)],
}

#[test]
fn every_capture_decodes_to_its_tally() {
    use DropReason::*;
    let dir = testdata_or_skip!();
    let tallies = [
        // Geneve on 6081: not the VXLAN port.
        Tally {
            file: "suricata-verify__geneve-decoder.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(NotVxlanPort, 10)],
        },
        // SOURCES.md: 3 frames, one VXLAN (VNI 37) and 2 non-tunnelled UDP; tshark -T fields
        // -e udp.dstport: 4789, 12345, 32021.
        Tally {
            file: "suricata-verify__vxlan-decoder-01.pcap",
            config: default_config(),
            vnis: &[(37, 1)],
            drops: &[(NotVxlanPort, 2)],
        },
        Tally {
            file: "suricata-verify__vxlan-decoder-03-aws-mirror.pcap",
            config: default_config(),
            vnis: &[(5_569_041, 100)],
            drops: &[],
        },
        Tally {
            file: "suricata-verify__vxlan-non-zero-reserved-fields.pcap",
            config: default_config(),
            vnis: &[(11, 10)],
            drops: &[],
        },
        Tally {
            file: "suricata-verify__vxlan-non-zero-reserved-fields.pcap",
            config: strict(),
            vnis: &[],
            drops: &[(VxlanReservedBits, 10)],
        },
        Tally {
            file: "tcpdump__bigtcp-ipv4-vxlan-ipv4.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(Ipv4LengthInvalid, 1)],
        },
        Tally {
            file: "tcpdump__bigtcp-ipv6-vxlan-ipv6.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(Ipv6LengthInvalid, 1)],
        },
        Tally {
            file: "tcpdump__geneve-gcp.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(NotVxlanPort, 1)],
        },
        Tally {
            file: "tcpdump__geneve.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(NotVxlanPort, 39)],
        },
        Tally {
            file: "tcpdump__gso-ipv4-vxlan-ipv4.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(UdpChecksum, 1)],
        },
        Tally {
            file: "tcpdump__gso-ipv4-vxlan-ipv4.pcap",
            config: no_checksum_verification(),
            vnis: &[(5001, 1)],
            drops: &[],
        },
        Tally {
            file: "tcpdump__gso-ipv4-vxlan-ipv6.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(UdpChecksum, 1)],
        },
        Tally {
            file: "tcpdump__gso-ipv4-vxlan-ipv6.pcap",
            config: no_checksum_verification(),
            vnis: &[(5001, 1)],
            drops: &[],
        },
        Tally {
            file: "tcpdump__gso-ipv6-vxlan-ipv4.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(UdpChecksum, 1)],
        },
        Tally {
            file: "tcpdump__gso-ipv6-vxlan-ipv4.pcap",
            config: no_checksum_verification(),
            vnis: &[(5001, 1)],
            drops: &[],
        },
        Tally {
            file: "tcpdump__gso-ipv6-vxlan-ipv6.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(UdpChecksum, 1)],
        },
        Tally {
            file: "tcpdump__gso-ipv6-vxlan-ipv6.pcap",
            config: no_checksum_verification(),
            vnis: &[(5001, 1)],
            drops: &[],
        },
        Tally {
            file: "tcpdump__nsh-over-vxlan-gpe.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(VxlanGpe, 1)],
        },
        Tally {
            file: "tcpdump__vxlan.pcap",
            config: default_config(),
            vnis: &[(100, 10)],
            drops: &[],
        },
        Tally {
            file: "tcpdump__vxlan.pcap",
            config: port(8472),
            vnis: &[],
            drops: &[(NotVxlanPort, 10)],
        },
        Tally {
            file: "tcpdump__vxlan_port_8472.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(NotVxlanPort, 10)],
        },
        Tally {
            file: "tcpdump__vxlan_port_8472.pcap",
            config: port(8472),
            vnis: &[(100, 10)],
            drops: &[],
        },
        Tally {
            file: "zeek__geneve-ipv6.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(NotVxlanPort, 2)],
        },
        // Cut short by the snap length: the outer IPv4 length runs past the captured bytes,
        // which decap sees before it looks at the port (see the test of this file).
        Tally {
            file: "zeek__geneve-vxlan-dns-truncated.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(OuterTruncated, 2)],
        },
        Tally {
            file: "zeek__geneve.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(NotVxlanPort, 6)],
        },
        Tally {
            file: "zeek__vxlan-encapsulated-http.pcap",
            config: default_config(),
            vnis: &[(1, 12)],
            drops: &[],
        },
        Tally {
            file: "zeek__vxlan-encapsulated-igmp-v2.pcap",
            config: default_config(),
            vnis: &[],
            drops: &[(UdpChecksum, 3)],
        },
        Tally {
            file: "zeek__vxlan-encapsulated-igmp-v2.pcap",
            config: no_checksum_verification(),
            vnis: &[(4242, 3)],
            drops: &[],
        },
        Tally {
            file: "zeek__vxlan-inner-tcp-bad-checksum.pcap",
            config: default_config(),
            vnis: &[(42, 1)],
            drops: &[],
        },
        // 14 bare TCP frames, 14 in VNI 4242, 14 in VNI 4711 (tshark -T fields -e
        // vxlan.vni -e ip.proto).
        Tally {
            file: "zeek__vxlan-overlapping-http-get.pcap",
            config: default_config(),
            vnis: &[(4242, 14), (4711, 14)],
            drops: &[(OuterNotUdp, 14)],
        },
        Tally {
            file: "zeek__vxlan-triple-v2.pcap",
            config: default_config(),
            vnis: &[(1, 1)],
            drops: &[],
        },
        Tally {
            file: "zeek__vxlan-triple-v2.pcap",
            config: strict(),
            vnis: &[],
            drops: &[(VxlanReservedBits, 1)],
        },
        Tally {
            file: "zeek__vxlan.pcap",
            config: default_config(),
            vnis: &[(123, 10)],
            drops: &[],
        },
    ];

    let covered: BTreeSet<&str> = tallies.iter().map(|t| t.file).collect();
    let listed: BTreeSet<&str> = CAPTURES.iter().map(|&(name, _, _)| name).collect();
    assert_eq!(covered, listed, "every capture has a tally");

    for tally in &tallies {
        let decoded = Decoded::new(&dir, tally.file, &tally.config);
        decoded.assert_tally(tally.vnis, tally.drops);
        decoded.assert_inner_frames_are_tails();
    }
}

// ---------------------------------------------------------------------------------------
// What each capture holds
// ---------------------------------------------------------------------------------------

/// tcpdump's tests/vxlan.pcap: VNI 100 between VTEPs 192.168.203.1 and 192.168.202.1; ARP
/// and ICMP echo between 192.168.203.3 and .5; one outer source port per inner flow.
#[test]
fn tcpdump_vxlan() {
    let dir = testdata_or_skip!();
    let decoded = Decoded::new(&dir, "tcpdump__vxlan.pcap", &default_config());
    decoded.assert_inner_frames_are_tails();

    // Read with tshark, not our code:
    //   tshark -r tcpdump__vxlan.pcap -T fields -e udp.srcport -e ip.ttl -e ip.src -e ip.dst
    //     -e eth.src -e eth.dst -e arp.opcode -e arp.src.proto_ipv4 -e arp.dst.proto_ipv4
    //     -e icmp.type
    // (the first value of a repeated field is the outer header's). The capture opens with
    // an echo request; the ARP exchange (the request from .5) comes second and third.
    let (east, west) = (v4(192, 168, 203, 1), v4(192, 168, 202, 1));
    let (host3, host5) = (v4(192, 168, 203, 3), v4(192, 168, 203, 5));
    let (mac3, mac5) = ("00:16:3e:37:f6:04", "00:30:88:01:00:02");
    let request = Expected {
        udp_src_port: 45149,
        outer_ttl: 64,
        outer: outer_v4(east, west),
        inner_src: mac3,
        inner_dst: mac5,
        payload: InnerPayload::Icmp {
            src: host3,
            dst: host5,
            message: Icmpv4Message::EchoRequest,
        },
    };
    let reply = Expected {
        udp_src_port: 32894,
        outer_ttl: 62,
        outer: outer_v4(west, east),
        inner_src: mac5,
        inner_dst: mac3,
        payload: InnerPayload::Icmp {
            src: host5,
            dst: host3,
            message: Icmpv4Message::EchoReply,
        },
    };
    let arp_request = Expected {
        udp_src_port: 42710,
        outer_ttl: 62,
        outer: outer_v4(west, east),
        inner_src: mac5,
        inner_dst: "ff:ff:ff:ff:ff:ff",
        payload: InnerPayload::Arp {
            operation: ArpOperation::Request,
            sender: host5,
            target: host3,
        },
    };
    let arp_reply = Expected {
        udp_src_port: 52102,
        outer_ttl: 64,
        outer: outer_v4(east, west),
        inner_src: mac3,
        inner_dst: mac5,
        payload: InnerPayload::Arp {
            operation: ArpOperation::Reply,
            sender: host3,
            target: host5,
        },
    };
    let expected = [
        request,
        arp_request,
        arp_reply,
        reply,
        request,
        reply,
        request,
        reply,
        request,
        reply,
    ];
    assert_frames(&decoded, vni(100), &expected);

    // The flow-hash property SOURCES.md points out: one source port per inner flow, and
    // different ones for the two flows and the ARPs.
    let ports_of = |wanted: fn(&InnerPayload) -> bool| -> BTreeSet<u16> {
        decoded
            .decapsulated()
            .filter(|(_, _, inner)| wanted(&inner_payload(inner)))
            .map(|(_, d, _)| d.udp_src_port)
            .collect()
    };
    let requests = ports_of(|p| {
        matches!(
            p,
            InnerPayload::Icmp {
                message: Icmpv4Message::EchoRequest,
                ..
            }
        )
    });
    let replies = ports_of(|p| {
        matches!(
            p,
            InnerPayload::Icmp {
                message: Icmpv4Message::EchoReply,
                ..
            }
        )
    });
    let arps = ports_of(|p| matches!(p, InnerPayload::Arp { .. }));
    assert_eq!(requests, BTreeSet::from([45149]));
    assert_eq!(replies, BTreeSet::from([32894]));
    assert_eq!(arps.len(), 2);
    assert!(arps.is_disjoint(&requests) && arps.is_disjoint(&replies));
}

/// The same traffic on Linux's legacy port: refused on 4789, and on 8472 decapsulated
/// exactly as tcpdump__vxlan.pcap on 4789.
#[test]
fn tcpdump_vxlan_port_8472() {
    let dir = testdata_or_skip!();
    assert_eq!(port(8472).validate(), Ok(()));
    let legacy = Decoded::new(&dir, "tcpdump__vxlan_port_8472.pcap", &port(8472));
    let iana = Decoded::new(&dir, "tcpdump__vxlan.pcap", &default_config());
    legacy.assert_tally(&[(100, 10)], &[]);
    legacy.assert_inner_frames_are_tails();
    // The two files differ only in the UDP destination port, bytes 36..38 (`diff` of the
    // two `tshark -r FILE -x` dumps), and their UDP checksums are zero: every decap result, outer
    // fields and inner frame alike, must be the same.
    for index in 0..10 {
        let (a, b) = (&legacy.frames[index].data, &iana.frames[index].data);
        assert_eq!(&a[36..38], &8472u16.to_be_bytes());
        assert_eq!(&b[36..38], &4789u16.to_be_bytes());
        assert_eq!(
            legacy.results[index],
            iana.results[index],
            "frame {}",
            index + 1
        );
        assert_eq!(
            legacy.inner(index),
            iana.inner(index),
            "frame {}",
            index + 1
        );
    }
    let refused = Decoded::new(&dir, "tcpdump__vxlan_port_8472.pcap", &default_config());
    refused.assert_tally(&[], &[(DropReason::NotVxlanPort, 10)]);
}

/// Zeek's vxlan.pcap: VNI 123 between two VirtualBox VMs; ARP who-has 10.0.0.2, then four
/// echo pairs between 10.0.0.1 and 10.0.0.2.
#[test]
fn zeek_vxlan() {
    let dir = testdata_or_skip!();
    let decoded = Decoded::new(&dir, "zeek__vxlan.pcap", &default_config());
    decoded.assert_inner_frames_are_tails();

    // tshark -r zeek__vxlan.pcap -T fields -e udp.srcport -e ip.ttl -e ip.src -e ip.dst
    //   -e eth.src -e eth.dst -e arp.opcode -e arp.src.proto_ipv4 -e arp.dst.proto_ipv4
    //   -e icmp.type
    let (vm1, vm2) = (v4(192, 168, 56, 11), v4(192, 168, 56, 12));
    let (host1, host2) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
    let (mac1, mac2) = ("ba:09:2b:6e:f8:be", "4a:7f:01:3b:a2:71");
    let request = Expected {
        udp_src_port: 48134,
        outer_ttl: 64,
        outer: outer_v4(vm1, vm2),
        inner_src: mac1,
        inner_dst: mac2,
        payload: InnerPayload::Icmp {
            src: host1,
            dst: host2,
            message: Icmpv4Message::EchoRequest,
        },
    };
    let reply = Expected {
        udp_src_port: 38071,
        outer_ttl: 64,
        outer: outer_v4(vm2, vm1),
        inner_src: mac2,
        inner_dst: mac1,
        payload: InnerPayload::Icmp {
            src: host2,
            dst: host1,
            message: Icmpv4Message::EchoReply,
        },
    };
    let arp_request = Expected {
        udp_src_port: 39924,
        outer_ttl: 64,
        outer: outer_v4(vm1, vm2),
        inner_src: mac1,
        inner_dst: "ff:ff:ff:ff:ff:ff",
        payload: InnerPayload::Arp {
            operation: ArpOperation::Request,
            sender: host1,
            target: host2,
        },
    };
    let arp_reply = Expected {
        udp_src_port: 40908,
        outer_ttl: 64,
        outer: outer_v4(vm2, vm1),
        inner_src: mac2,
        inner_dst: mac1,
        payload: InnerPayload::Arp {
            operation: ArpOperation::Reply,
            sender: host2,
            target: host1,
        },
    };
    let expected = [
        arp_request,
        arp_reply,
        request,
        reply,
        request,
        reply,
        request,
        reply,
        request,
        reply,
    ];
    assert_frames(&decoded, vni(123), &expected);

    let inner_macs: BTreeSet<[u8; 6]> = decoded
        .decapsulated()
        .map(|(_, _, inner)| EthernetFrame::new_checked(inner).unwrap().src_addr().0)
        .collect();
    assert_eq!(
        inner_macs,
        BTreeSet::from([mac(mac1).0, mac(mac2).0]),
        "the two inner MACs of SOURCES.md"
    );
}

/// An HTTP session in VNI 1 with valid non-zero UDP checksums, one 9100-byte jumbo frame
/// among them; the outer Ethernet source and destination are the same MAC.
#[test]
fn zeek_vxlan_encapsulated_http() {
    let dir = testdata_or_skip!();
    let name = "zeek__vxlan-encapsulated-http.pcap";
    let decoded = Decoded::new(&dir, name, &default_config());
    decoded.assert_tally(&[(1, 12)], &[]);
    decoded.assert_inner_frames_are_tails();

    // tshark -r zeek__vxlan-encapsulated-http.pcap -o udp.check_checksum:TRUE -T fields
    //   -e frame.len -e eth.src -e eth.dst -e ip.src -e ip.dst -e udp.srcport
    //   -e udp.checksum -e udp.checksum.status -e ip.proto
    let outer_mac = mac("12:42:cd:c5:e8:22");
    let client = (mac("48:f1:7f:a3:b6:ff"), v4(172, 16, 11, 201));
    let server = (mac("74:ac:b9:3f:d2:7d"), v4(54, 86, 237, 188));
    // Which end sent each frame (true: the client).
    let from_client = [
        true, false, true, true, false, false, true, false, true, true, false, true,
    ];
    for (index, d, inner) in decoded.decapsulated() {
        assert_eq!(d.udp_src_port, 50000);
        assert_eq!(d.outer_src_mac, outer_mac);
        assert_eq!(d.outer_dst_mac, outer_mac);
        assert_eq!(d.outer, outer_v4(v4(10, 1, 200, 131), v4(10, 1, 1, 172)));
        let frame = EthernetFrame::new_checked(inner).unwrap();
        let ip = Ipv4Packet::new_checked(frame.payload()).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::Tcp);
        let (src, dst) = if from_client[index] {
            (client, server)
        } else {
            (server, client)
        };
        assert_eq!(
            (frame.src_addr(), ip.src_addr()),
            src,
            "frame {}",
            index + 1
        );
        assert_eq!(
            (frame.dst_addr(), ip.dst_addr()),
            dst,
            "frame {}",
            index + 1
        );
    }
    // Frame 8 is 9100 bytes (tshark frame.len): decap does not assume a 1500-byte MTU.
    assert_eq!(decoded.inner(7).len(), 9100 - OUTER_IPV4);

    // The checksums are really verified: one flipped bit in the inner frame and the frame
    // is dropped, unless verification is off.
    for index in [0, 7] {
        let frame = &decoded.frames[index].data;
        assert_ne!(
            &frame[40..42],
            &[0, 0],
            "frame {}: checksum present",
            index + 1
        );
        let mut bad = corrupted(frame, frame.len() - 1);
        assert_eq!(
            decap(&default_config(), &mut bad),
            Err(DropReason::UdpChecksum)
        );
        let mut bad = corrupted(frame, frame.len() - 1);
        assert_eq!(
            decap(&no_checksum_verification(), &mut bad).map(|d| d.vni),
            Ok(vni(1))
        );
    }
}

/// IGMPv2 in VNI 4242 with an offload's partial UDP checksum (0x588f) in every frame.
#[test]
fn zeek_vxlan_encapsulated_igmp_partial_checksum() {
    let dir = testdata_or_skip!();
    let name = "zeek__vxlan-encapsulated-igmp-v2.pcap";
    let verified = Decoded::new(&dir, name, &default_config());
    verified.assert_tally(&[], &[(DropReason::UdpChecksum, 3)]);
    for frame in &verified.frames {
        assert_eq!(
            &frame.data[40..42],
            &[0x58, 0x8f],
            "the checksum SOURCES.md names"
        );
    }

    let decoded = Decoded::new(&dir, name, &no_checksum_verification());
    decoded.assert_tally(&[(4242, 3)], &[]);
    decoded.assert_inner_frames_are_tails();
    // tshark -r zeek__vxlan-encapsulated-igmp-v2.pcap -T fields -e udp.srcport -e eth.src
    //   -e eth.dst -e ip.src -e ip.dst -e ip.proto -e ip.ttl
    let senders = [
        (48036, "d2:ae:98:40:c2:b5", v4(192, 168, 9, 80)),
        (45303, "4a:c2:5f:d3:83:3d", v4(192, 168, 9, 123)),
        (36030, "d2:ae:98:40:c2:b5", v4(192, 168, 9, 80)),
    ];
    for (index, &(sport, inner_mac, inner_ip)) in senders.iter().enumerate() {
        let d = decoded.ok(index);
        assert_eq!(d.udp_src_port, sport);
        assert_eq!(d.outer, outer_v4(v4(172, 30, 0, 1), v4(172, 30, 0, 2)));
        assert_eq!(d.outer_ttl, 64);
        let frame = EthernetFrame::new_checked(decoded.inner(index)).unwrap();
        assert_eq!(frame.dst_addr(), mac("01:00:5e:00:00:fb"));
        assert_eq!(frame.src_addr(), mac(inner_mac));
        let ip = Ipv4Packet::new_checked(frame.payload()).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::Igmp);
        assert_eq!(ip.src_addr(), inner_ip);
        assert_eq!(ip.dst_addr(), v4(224, 0, 0, 251));
        assert_eq!(ip.hop_limit(), 1);
    }

    // A zero checksum means "none" over IPv4 and is accepted even with verification on.
    let mut zeroed = verified.frames[0].data.clone();
    zeroed[40..42].copy_from_slice(&[0, 0]);
    assert_eq!(
        decap(&default_config(), &mut zeroed).map(|d| d.vni),
        Ok(vni(4242))
    );
}

/// VXLAN in VXLAN in VXLAN (VNIs 1, 2, 3), each header with flags 0x0c and next protocol 3
/// (the VXLAN-GPE P bit with an Ethernet payload). One decap takes off exactly one level;
/// decapsulating the inner frame in place takes off the next.
#[test]
fn zeek_vxlan_triple() {
    let dir = testdata_or_skip!();
    let frames = read_capture(&path(&dir, "zeek__vxlan-triple-v2.pcap"));
    assert_eq!(frames.len(), 1);
    let captured = &frames[0].data;
    let mut buffer = captured.clone();

    // tshark -r zeek__vxlan-triple-v2.pcap -o udp.check_checksum:TRUE -T fields -e ip.src
    //   -e ip.dst -e ip.len -e udp.srcport -e udp.dstport -e udp.checksum.status
    //   -e vxlan.vni
    // gives, level by level: 1.1.1.1->1.1.1.9 (207 bytes), 2.2.2.2->2.2.2.9 (157),
    // 3.3.3.3->3.3.3.9 (107), then 4.4.4.4->4.4.4.9 UDP 53->53 (57, a DNS query); every
    // UDP checksum non-zero and good; VNIs 1, 2, 3. So the frames are 221, 171, 121 and 71
    // bytes, each 50 bytes inside the last.
    let levels = [
        (1u8, v4(1, 1, 1, 1), v4(1, 1, 1, 9), 221),
        (2, v4(2, 2, 2, 2), v4(2, 2, 2, 9), 171),
        (3, v4(3, 3, 3, 3), v4(3, 3, 3, 9), 121),
    ];
    let mut frame = &mut buffer[..];
    for (level_vni, src, dst, len) in levels {
        assert_eq!(frame.len(), len, "VNI {level_vni}: frame length");
        // tshark -x: flags 0x0c, next protocol 3 (Ethernet), the VNI.
        assert_eq!(&frame[42..50], &[0x0c, 0, 0, 3, 0, 0, level_vni, 0]);
        let d = decap(&default_config(), frame).expect("each level decapsulates");
        assert_eq!(d.vni, vni(u32::from(level_vni)));
        assert_eq!(d.outer, outer_v4(src, dst));
        assert_eq!(d.udp_src_port, 4789);
        assert_eq!(d.inner, OUTER_IPV4..len, "exactly one level taken off");
        assert_eq!(
            decap(&strict(), frame),
            Err(DropReason::VxlanReservedBits),
            "VNI {level_vni}: flags 0x0c and next protocol 3 are reserved bits to Linux"
        );
        let whole = frame;
        frame = &mut whole[d.inner];
    }
    // The innermost frame: DNS over UDP 53, not VXLAN.
    assert_eq!(frame.len(), 71);
    let ethernet = EthernetFrame::new_checked(&*frame).unwrap();
    let ip = Ipv4Packet::new_checked(ethernet.payload()).unwrap();
    assert_eq!(
        (ip.src_addr(), ip.dst_addr()),
        (v4(4, 4, 4, 4), v4(4, 4, 4, 9))
    );
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!((udp.src_port(), udp.dst_port()), (53, 53));
    assert_eq!(
        decap(&default_config(), frame),
        Err(DropReason::NotVxlanPort)
    );
    // Decap rewrote nothing at any level.
    assert_eq!(&buffer, captured);
}

/// A scapy-built VNI 42 frame whose inner TCP SYN has the checksum 0xDEAD: a switch
/// forwards it untouched.
#[test]
fn zeek_vxlan_inner_tcp_bad_checksum() {
    let dir = testdata_or_skip!();
    let decoded = Decoded::new(
        &dir,
        "zeek__vxlan-inner-tcp-bad-checksum.pcap",
        &default_config(),
    );
    decoded.assert_tally(&[(42, 1)], &[]);
    decoded.assert_inner_frames_are_tails(); // Unchanged, byte for byte.

    // tshark -r zeek__vxlan-inner-tcp-bad-checksum.pcap -o tcp.check_checksum:TRUE
    //   -o udp.check_checksum:TRUE -T fields -e udp.srcport -e udp.checksum.status
    //   -e eth.src -e eth.dst -e ip.src -e ip.dst -e tcp.srcport -e tcp.dstport -e tcp.flags
    //   -e tcp.checksum -e tcp.checksum.status
    // gives sport 23456 with a good outer checksum, then aa:bb:cc:dd:ee:01 -> :02,
    // 10.0.0.1:12345 -> 10.0.0.2:80, SYN, checksum 0xdead, bad.
    let d = decoded.ok(0);
    assert_eq!(d.udp_src_port, 23456);
    assert_eq!(d.outer, outer_v4(v4(192, 168, 1, 1), v4(192, 168, 1, 2)));
    assert_eq!(d.inner, OUTER_IPV4..104);
    let frame = EthernetFrame::new_checked(decoded.inner(0)).unwrap();
    assert_eq!(frame.src_addr(), mac("aa:bb:cc:dd:ee:01"));
    assert_eq!(frame.dst_addr(), mac("aa:bb:cc:dd:ee:02"));
    let ip = Ipv4Packet::new_checked(frame.payload()).unwrap();
    assert_eq!(
        (ip.src_addr(), ip.dst_addr()),
        (v4(10, 0, 0, 1), v4(10, 0, 0, 2))
    );
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!((tcp.src_port(), tcp.dst_port()), (12345, 80));
    assert!(tcp.syn() && !tcp.ack());
    assert_eq!(tcp.checksum(), 0xDEAD);
    // The outer checksum is non-zero, so it was verified (and good).
    assert_ne!(&decoded.frames[0].data[40..42], &[0, 0]);
}

/// One HTTP GET flow three times over: in VNI 4711, in VNI 4242, and bare. The bare frames
/// are TCP, not UDP; the two tunnelled copies carry the bare frame byte for byte.
#[test]
fn zeek_vxlan_overlapping_http_get() {
    let dir = testdata_or_skip!();
    let decoded = Decoded::new(
        &dir,
        "zeek__vxlan-overlapping-http-get.pcap",
        &default_config(),
    );
    decoded.assert_tally(&[(4242, 14), (4711, 14)], &[(DropReason::OuterNotUdp, 14)]);
    decoded.assert_inner_frames_are_tails();

    // tshark -r zeek__vxlan-overlapping-http-get.pcap -o udp.check_checksum:TRUE -T fields
    //   -e vxlan.vni -e ip.proto -e ip.src -e ip.ttl -e udp.srcport -e udp.checksum.status
    // gives the frames in threes: VNI 4711, VNI 4242, then the bare TCP frame (ip.proto 6);
    // outer 127.0.0.1 -> 127.0.0.1, TTL 32, sport 19900, checksums good. The inner frames of
    // each three were compared with the bare one byte by byte (a short Python script over
    // the pcap records, not our code): identical.
    let loopback = v4(127, 0, 0, 1);
    let mut inner_macs: BTreeMap<u32, BTreeSet<[u8; 6]>> = BTreeMap::new();
    for triple in 0..14 {
        let (first, second, bare) = (3 * triple, 3 * triple + 1, 3 * triple + 2);
        assert_eq!(decoded.ok(first).vni, vni(4711), "frame {}", first + 1);
        assert_eq!(decoded.ok(second).vni, vni(4242), "frame {}", second + 1);
        assert_eq!(
            decoded.results[bare],
            Err(DropReason::OuterNotUdp),
            "frame {}",
            bare + 1
        );
        for index in [first, second] {
            let d = decoded.ok(index);
            assert_eq!(d.outer, outer_v4(loopback, loopback));
            assert_eq!(d.outer_ttl, 32);
            assert_eq!(d.udp_src_port, 19900);
            assert_eq!(
                decoded.inner(index),
                &decoded.frames[bare].data[..],
                "frame {}: the bare frame, tunnelled",
                index + 1
            );
            let frame = EthernetFrame::new_checked(decoded.inner(index)).unwrap();
            inner_macs
                .entry(d.vni.get())
                .or_default()
                .extend([frame.src_addr().0, frame.dst_addr().0]);
        }
    }
    // The same two hosts in both VNIs: what per-VNI FDB isolation must keep apart.
    let hosts = BTreeSet::from([mac("c8:bc:c8:96:d2:a0").0, mac("00:10:db:88:d2:ef").0]);
    assert_eq!(inner_macs.get(&4242), Some(&hosts));
    assert_eq!(inner_macs.get(&4711), Some(&hosts));
}

/// suricata-verify vxlan-decoder-01: one VXLAN frame (VNI 37, UDP 4789 -> 4789, valid
/// non-zero checksum, inner DNS response 53 -> 12345) and two plain UDP frames.
#[test]
fn suricata_vxlan_decoder_01() {
    let dir = testdata_or_skip!();
    let decoded = Decoded::new(
        &dir,
        "suricata-verify__vxlan-decoder-01.pcap",
        &default_config(),
    );
    decoded.assert_tally(&[(37, 1)], &[(DropReason::NotVxlanPort, 2)]);
    decoded.assert_inner_frames_are_tails();

    // tshark -r suricata-verify__vxlan-decoder-01.pcap -o udp.check_checksum:TRUE -T fields
    //   -e frame.len -e ip.src -e ip.dst -e udp.srcport -e udp.dstport -e udp.checksum
    //   -e udp.checksum.status -e eth.src -e eth.dst
    let d = decoded.ok(0);
    assert_eq!(d.udp_src_port, 4789);
    assert_eq!(
        d.outer,
        outer_v4(v4(109, 105, 96, 78), v4(109, 105, 96, 77))
    );
    let frame = EthernetFrame::new_checked(decoded.inner(0)).unwrap();
    assert_eq!(frame.src_addr(), mac("00:51:52:b3:54:e5"));
    assert_eq!(frame.dst_addr(), mac("10:00:00:0c:01:00"));
    let ip = Ipv4Packet::new_checked(frame.payload()).unwrap();
    assert_eq!(
        (ip.src_addr(), ip.dst_addr()),
        (v4(10, 96, 0, 10), v4(185, 27, 115, 6))
    );
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!((udp.src_port(), udp.dst_port()), (53, 12345));

    // The outer checksum (0x8751) is verified: flip a bit of the inner frame and it fails.
    let captured = &decoded.frames[0].data;
    assert_eq!(&captured[40..42], &[0x87, 0x51]);
    assert_eq!(
        decap(&default_config(), &mut corrupted(captured, 60)),
        Err(DropReason::UdpChecksum)
    );

    // The plain UDP frames go to ports 12345 and 32021; the first is a 60-byte frame with
    // 18 bytes of Ethernet padding after its 28-byte IP packet. Neither is VXLAN on any
    // of the usual ports.
    for config in [default_config(), port(8472)] {
        for index in [1, 2] {
            assert_eq!(
                decap(&config, &mut decoded.frames[index].data.clone()),
                Err(DropReason::NotVxlanPort)
            );
        }
    }
}

/// A real AWS VPC Traffic Mirroring capture: 100 frames in VNI 5569041, a large 24-bit
/// value.
#[test]
fn suricata_vxlan_aws_mirror() {
    let dir = testdata_or_skip!();
    let decoded = Decoded::new(
        &dir,
        "suricata-verify__vxlan-decoder-03-aws-mirror.pcap",
        &default_config(),
    );
    decoded.assert_tally(&[(5_569_041, 100)], &[]);
    decoded.assert_inner_frames_are_tails();

    // tshark -r suricata-verify__vxlan-decoder-03-aws-mirror.pcap -T fields -e eth.src
    //   -e eth.dst -e ip.src -e ip.dst -e ip.ttl -e ip.proto -e udp.srcport -e vxlan.vni
    // gives, for all 100: outer 06:1d:3c:34:d0:77 -> 06:e2:43:9c:ff:5e, 172.31.0.238 ->
    // 172.31.17.188, TTL 255, source ports from 65408 to 65525; inner MACs 02:29:23:74:c7:7d
    // and 02:85:69:c2:ab:02; 82 inner TCP and 18 inner UDP.
    let mut ports = BTreeSet::new();
    let mut inner_macs = BTreeSet::new();
    let mut protocols: BTreeMap<u8, usize> = BTreeMap::new();
    for (_, d, inner) in decoded.decapsulated() {
        assert_eq!(d.vni, vni(5_569_041));
        assert_eq!(d.outer_ttl, 255);
        assert_eq!(d.outer_src_mac, mac("06:1d:3c:34:d0:77"));
        assert_eq!(d.outer_dst_mac, mac("06:e2:43:9c:ff:5e"));
        assert_eq!(d.outer, outer_v4(v4(172, 31, 0, 238), v4(172, 31, 17, 188)));
        ports.insert(d.udp_src_port);
        let frame = EthernetFrame::new_checked(inner).unwrap();
        inner_macs.insert(frame.src_addr().0);
        inner_macs.insert(frame.dst_addr().0);
        let ip = Ipv4Packet::new_checked(frame.payload()).unwrap();
        *protocols.entry(u8::from(ip.next_header())).or_default() += 1;
    }
    assert_eq!(ports.first(), Some(&65408));
    assert_eq!(ports.last(), Some(&65525));
    assert_eq!(
        inner_macs,
        BTreeSet::from([mac("02:29:23:74:c7:7d").0, mac("02:85:69:c2:ab:02").0])
    );
    assert_eq!(protocols, BTreeMap::from([(6, 82), (17, 18)]));
}

/// Hand-crafted headers with every flag set and non-zero reserved fields, VNI 11: an RFC
/// 7348 receiver decapsulates all 10; Linux (our strict mode) drops all 10.
#[test]
fn suricata_vxlan_non_zero_reserved_fields() {
    let dir = testdata_or_skip!();
    let name = "suricata-verify__vxlan-non-zero-reserved-fields.pcap";
    let decoded = Decoded::new(&dir, name, &default_config());
    decoded.assert_tally(&[(11, 10)], &[]);
    decoded.assert_inner_frames_are_tails();

    // tshark -r suricata-verify__vxlan-non-zero-reserved-fields.pcap -T fields
    //   -e udp.payload -e udp.srcport -e eth.src
    // VXLAN headers ff 01 XX XX 00 00 0b RR: flags 0xff, reserved 0x01 then a varying
    // 16-bit value, VNI 11, last byte 0 or 1; sport 49152; inner source fa:16:3e:fe:55:1c in
    // frames 1, 3, 4, 8 and 9, fa:16:3e:fe:57:dc in the other five.
    let middle = [
        0xd1f2u16, 0xd1f3, 0xd1f9, 0xd208, 0xd209, 0xd20a, 0xd20b, 0xd211, 0xd214, 0xd215,
    ];
    let last = [0u8, 1, 0, 0, 1, 1, 1, 0, 0, 1];
    let client = [
        true, false, true, true, false, false, false, true, true, false,
    ];
    for index in 0..10 {
        let header = &decoded.frames[index].data[42..50];
        let [m0, m1] = middle[index].to_be_bytes();
        assert_eq!(header, &[0xff, 0x01, m0, m1, 0, 0, 11, last[index]]);
        let d = decoded.ok(index);
        assert_eq!(d.udp_src_port, 49152);
        assert_eq!(d.gbp, None, "GBP not configured: the G bit is reserved");
        let source = EthernetFrame::new_checked(decoded.inner(index))
            .unwrap()
            .src_addr();
        let want = if client[index] {
            "fa:16:3e:fe:55:1c"
        } else {
            "fa:16:3e:fe:57:dc"
        };
        assert_eq!(source, mac(want), "frame {}", index + 1);
    }

    let linux = Decoded::new(&dir, name, &strict());
    linux.assert_tally(&[], &[(DropReason::VxlanReservedBits, 10)]);

    // With GBP on, the G bit (0x80) is set, so bytes 1..4 read as GBP: flags 0x01 (neither
    // D 0x40 nor A 0x08) and the group policy id; the frames are still decapsulated.
    let gbp = DecapConfig {
        gbp: true,
        ..default_config()
    };
    let with_gbp = Decoded::new(&dir, name, &gbp);
    with_gbp.assert_tally(&[(11, 10)], &[]);
    for (index, &group_policy_id) in middle.iter().enumerate() {
        assert_eq!(
            with_gbp.ok(index).gbp,
            Some(Gbp {
                dont_learn: false,
                policy_applied: false,
                group_policy_id,
            })
        );
    }
    // Strict GBP still refuses the other flag bits and the last byte.
    let strict_gbp = DecapConfig {
        strict_reserved_bits: true,
        ..gbp
    };
    Decoded::new(&dir, name, &strict_gbp).assert_tally(&[], &[(DropReason::VxlanReservedBits, 10)]);
}

/// GSO super-packets captured before segmentation, with partial (offload) UDP checksums.
#[test]
fn tcpdump_gso_super_packets() {
    let dir = testdata_or_skip!();
    let (a, b) = (v4(10, 25, 132, 11), v4(10, 25, 132, 13));
    let six = |last: u16| Ipv6Addr::new(0x2604, 0x1380, 0x4091, 0xce00, 0, 0, 0, last);
    let outer_ipv6 = OuterAddrs::V6 {
        src: six(0xb),
        dst: six(0xd),
    };
    // tshark -r FILE -T fields -e frame.len -e ip.src -e ip.dst -e ipv6.src -e ipv6.dst
    //   -e ip.ttl -e ipv6.hlim -e udp.srcport -e udp.checksum -e vxlan.vni -e eth.type
    // (udp.checksum.status: bad in all four.)
    let cases = [
        (
            "tcpdump__gso-ipv4-vxlan-ipv4.pcap",
            outer_v4(a, b),
            60345,
            7106,
            0x0800,
        ),
        (
            "tcpdump__gso-ipv4-vxlan-ipv6.pcap",
            outer_v4(a, b),
            55123,
            4270,
            0x86dd,
        ),
        (
            "tcpdump__gso-ipv6-vxlan-ipv4.pcap",
            outer_ipv6,
            35971,
            7026,
            0x0800,
        ),
        (
            "tcpdump__gso-ipv6-vxlan-ipv6.pcap",
            outer_ipv6,
            39902,
            4230,
            0x86dd,
        ),
    ];
    for (name, outer, sport, frame_len, inner_type) in cases {
        let verified = Decoded::new(&dir, name, &default_config());
        verified.assert_tally(&[], &[(DropReason::UdpChecksum, 1)]);
        assert_eq!(verified.frames[0].data.len(), frame_len, "{name}");

        let decoded = Decoded::new(&dir, name, &no_checksum_verification());
        decoded.assert_tally(&[(5001, 1)], &[]);
        decoded.assert_inner_frames_are_tails();
        let d = decoded.ok(0);
        assert_eq!(d.outer, outer, "{name}");
        assert_eq!(d.udp_src_port, sport, "{name}");
        assert_eq!(d.outer_ttl, 61, "{name}");
        let inner = decoded.inner(0);
        assert!(
            inner.len() > 1514,
            "{name}: larger than any MTU-sized frame"
        );
        let frame = EthernetFrame::new_checked(inner).unwrap();
        assert_eq!(u16::from(frame.ethertype()), inner_type, "{name}");
    }
}

/// BIG TCP: outer IPv4 total length 0 or IPv6 payload length 0, and UDP length 0. Dropped
/// under every configuration.
#[test]
fn tcpdump_big_tcp_zero_lengths() {
    let dir = testdata_or_skip!();
    let cases = [
        // IPv4 total length at 16..18, UDP length at 38..40.
        (
            "tcpdump__bigtcp-ipv4-vxlan-ipv4.pcap",
            16..18,
            38..40,
            DropReason::Ipv4LengthInvalid,
        ),
        // IPv6 payload length at 18..20, UDP length at 58..60.
        (
            "tcpdump__bigtcp-ipv6-vxlan-ipv6.pcap",
            18..20,
            58..60,
            DropReason::Ipv6LengthInvalid,
        ),
    ];
    for (name, ip_length, udp_length, reason) in cases {
        let frames = read_capture(&path(&dir, name));
        assert_eq!(frames.len(), 1);
        let frame = &frames[0].data;
        // tshark -r FILE -x: the length fields are zero, the frame 80 KB.
        assert_eq!(&frame[ip_length], &[0, 0], "{name}");
        assert_eq!(&frame[udp_length], &[0, 0], "{name}");
        assert!(frame.len() > 80_000, "{name}");
        for udp_port in [4789, 8472] {
            for config in boolean_combinations(udp_port) {
                assert_eq!(
                    decap(&config, &mut frame.clone()).map(|d| d.vni),
                    Err(reason),
                    "{name} {config:?}"
                );
            }
        }
    }
}

/// VXLAN-GPE on UDP 4790 carrying NSH: never RFC 7348 VXLAN, not even when the port is
/// (wrongly) configured as the VXLAN port, because the header itself says GPE.
#[test]
fn tcpdump_nsh_over_vxlan_gpe() {
    let dir = testdata_or_skip!();
    let frames = read_capture(&path(&dir, "tcpdump__nsh-over-vxlan-gpe.pcap"));
    assert_eq!(frames.len(), 1);
    let frame = &frames[0].data;
    // tshark -r tcpdump__nsh-over-vxlan-gpe.pcap -x: UDP 4790 -> 4790, then flags 0x0c,
    // next protocol 4 (NSH), VNI 0xffffff.
    assert_eq!(&frame[36..38], &4790u16.to_be_bytes());
    assert_eq!(&frame[42..50], &[0x0c, 0, 0, 0x04, 0xff, 0xff, 0xff, 0]);

    for udp_port in [4789, 8472] {
        for config in boolean_combinations(udp_port) {
            assert_eq!(
                decap(&config, &mut frame.clone()),
                Err(DropReason::VxlanGpe),
                "{config:?}"
            );
        }
    }
    assert_eq!(port(4790).validate(), Err(ConfigError::GpePort));
    for config in boolean_combinations(4790) {
        assert_eq!(
            decap(&config, &mut frame.clone()),
            Err(DropReason::VxlanGpe),
            "{config:?}"
        );
    }
}

/// Geneve (UDP 6081) is not VXLAN: on the VXLAN port every Geneve frame is refused for its
/// port. Were 6081 configured as the VXLAN port, the first byte (Geneve's version and
/// option length) is read as VXLAN flags: most frames lack the I bit, but a 40-byte option
/// length (10 words, 0x0a) sets it.
#[test]
fn geneve_is_not_vxlan() {
    let dir = testdata_or_skip!();
    // tshark -r FILE -T fields -e udp.dstport -e udp.payload: 6081 everywhere; the first
    // bytes of the Geneve headers are 00 (no options) or 02 (one 8-byte option) except in
    // geneve-gcp (0a: 40 bytes of options, protocol 0x0800, VNI 0).
    let counts = [
        ("suricata-verify__geneve-decoder.pcap", 10),
        ("tcpdump__geneve-gcp.pcap", 1),
        ("tcpdump__geneve.pcap", 39),
        ("zeek__geneve-ipv6.pcap", 2),
        ("zeek__geneve.pcap", 6),
    ];
    assert_eq!(counts.map(|(name, _)| name), GENEVE_CAPTURES);
    for (name, frames) in counts {
        for config in [default_config(), port(8472), strict()] {
            Decoded::new(&dir, name, &config)
                .assert_tally(&[], &[(DropReason::NotVxlanPort, frames)]);
        }
        if name == "tcpdump__geneve-gcp.pcap" {
            continue;
        }
        Decoded::new(&dir, name, &port(6081))
            .assert_tally(&[], &[(DropReason::VxlanNoVniFlag, frames)]);
    }

    // That is why the configuration refuses 6081 (decap itself trusts its caller to validate).
    assert_eq!(port(6081).validate(), Err(ConfigError::GenevePort));

    // The Google Cloud frame on a port misconfigured as VXLAN: 0x0a has the I bit, and
    // RFC 7348 ignores the rest, so 80 bytes of Geneve options and IP packet come out as an
    // "Ethernet frame" in VNI 0 (its EtherType bytes happen to read 0x0800). Only strict
    // mode notices (bytes 2..4 hold Geneve's protocol 0x0800).
    let gcp = Decoded::new(&dir, "tcpdump__geneve-gcp.pcap", &port(6081));
    gcp.assert_tally(&[(0, 1)], &[]);
    assert_eq!(gcp.ok(0).inner, OUTER_IPV4..130);
    let strict_gcp = DecapConfig {
        udp_port: 6081,
        ..strict()
    };
    Decoded::new(&dir, "tcpdump__geneve-gcp.pcap", &strict_gcp)
        .assert_tally(&[], &[(DropReason::VxlanReservedBits, 1)]);
}

/// Geneve carrying IPv4 carrying VXLAN (VNI 4242) carrying DNS, cut short by a 176-byte
/// snap length: the outer IPv4 length promises more than was captured.
#[test]
fn zeek_geneve_vxlan_dns_truncated() {
    let dir = testdata_or_skip!();
    let name = "zeek__geneve-vxlan-dns-truncated.pcap";
    let frames = read_capture(&path(&dir, name));
    // tshark -r zeek__geneve-vxlan-dns-truncated.pcap -T fields -e frame.len
    //   -e frame.cap_len -e ip.len: 182/176 and 202/176; outer IPv4 lengths 168 and 188.
    let lengths: Vec<(usize, u32)> = frames.iter().map(|f| (f.data.len(), f.orig_len)).collect();
    assert_eq!(lengths, [(176, 182), (176, 202)]);
    for frame in &frames {
        assert!(14 + usize::from(u16::from_be_bytes([frame.data[16], frame.data[17]])) > 176);
    }
    // Whatever the configuration, even with Geneve's port as "the VXLAN port", the IPv4
    // length check comes first: the frame is truncated.
    for udp_port in [4789, 6081] {
        for config in boolean_combinations(udp_port) {
            Decoded::new(&dir, name, &config).assert_tally(&[], &[(DropReason::OuterTruncated, 2)]);
        }
    }

    // The VXLAN header inside starts 78 bytes in: outer Ethernet 14, IPv4 20, UDP 8, Geneve
    // 8 (option length 0, protocol 0x0800: IP, no Ethernet), IPv4 20, UDP 8 (tshark -x).
    // Handed straight to decap_udp_payload (as a socket backend would), it yields VNI 4242
    // and the inner frame that was captured, however short.
    // tshark -r zeek__geneve-vxlan-dns-truncated.pcap -T fields -e vxlan.vni -e eth.src
    //   -e eth.dst: 4242 in both; inner frames 48:f1:7f:a3:b6:ff -> 74:ac:b9:3f:d2:7d (the
    // query) and 18:e8:29:9c:45:72 -> 48:f1:7f:a3:b6:ff (the response).
    let inner_macs = [
        ("48:f1:7f:a3:b6:ff", "74:ac:b9:3f:d2:7d"),
        ("18:e8:29:9c:45:72", "48:f1:7f:a3:b6:ff"),
    ];
    for (frame, (src, dst)) in frames.iter().zip(inner_macs) {
        let mut payload = frame.data[78..].to_vec();
        let (repr, inner) = decap_udp_payload(&default_config(), &mut payload, Ecn::NotEct)
            .expect("the inner VXLAN header");
        assert_eq!(repr.vni, vni(4242));
        assert_eq!(inner, 8..176 - 78);
        let ethernet = EthernetFrame::new_checked(&payload[inner]).unwrap();
        assert_eq!(ethernet.src_addr(), mac(src));
        assert_eq!(ethernet.dst_addr(), mac(dst));
        assert_eq!(payload, frame.data[78..], "unchanged");
    }
}

// ---------------------------------------------------------------------------------------
// Robustness: every packet, every configuration, every truncation
// ---------------------------------------------------------------------------------------

fn assert_counted(reason: DropReason, counters: &mut DropCounters) {
    assert!(DropReason::ALL.contains(&reason), "{reason:?} not in ALL");
    assert_eq!(DropReason::ALL[reason.index()], reason);
    counters.record(reason);
}

#[test]
fn every_packet_with_every_configuration() {
    let dir = testdata_or_skip!();
    let configs: Vec<DecapConfig> = [4789, 8472, 6081, 4790]
        .into_iter()
        .flat_map(boolean_combinations)
        .collect();
    assert_eq!(configs.len(), 128);
    let mut counters = DropCounters::new();
    let (mut decapsulated, mut calls) = (0u64, 0u64);
    for &(name, _, frames) in CAPTURES {
        let captured = read_capture(&path(&dir, name));
        assert_eq!(captured.len(), frames);
        for (index, frame) in captured.iter().enumerate() {
            for config in &configs {
                let mut buffer = frame.data.clone();
                calls += 1;
                match decap_reporting(config, &mut buffer, || {
                    format!("{name} frame {}", index + 1)
                }) {
                    Ok(d) => {
                        decapsulated += 1;
                        assert!(d.inner.start <= d.inner.end && d.inner.end <= buffer.len());
                        assert!(d.inner.start >= OUTER_IPV4, "{name} frame {}", index + 1);
                    }
                    Err(reason) => assert_counted(reason, &mut counters),
                }
            }
        }
    }
    assert_eq!(decapsulated + counters.total(), calls);
    assert!(decapsulated > 0);
    // At least the reasons the per-capture tests expect occur.
    let seen: BTreeSet<DropReason> = counters.nonzero().map(|(reason, _)| reason).collect();
    for reason in [
        DropReason::OuterTruncated,
        DropReason::Ipv4LengthInvalid,
        DropReason::Ipv6LengthInvalid,
        DropReason::OuterNotUdp,
        DropReason::NotVxlanPort,
        DropReason::UdpChecksum,
        DropReason::VxlanGpe,
        DropReason::VxlanNoVniFlag,
        DropReason::VxlanReservedBits,
    ] {
        assert!(seen.contains(&reason), "{reason:?} never seen");
    }
}

#[test]
fn every_truncation_of_every_packet() {
    let dir = testdata_or_skip!();
    let mut configs = boolean_combinations(4789);
    configs.push(port(8472));
    configs.push(port(6081));
    let mut counters = DropCounters::new();
    let (mut truncations, mut survivors) = (0u64, 0u64);
    for &(name, _, _) in CAPTURES {
        for (index, frame) in read_capture(&path(&dir, name)).iter().enumerate() {
            let original = &frame.data;
            let mut buffer = original.clone();
            for config in &configs {
                let full = decap(config, &mut original.clone());
                let mut a_prefix_survived = false;
                for len in 0..original.len() {
                    truncations += 1;
                    let what = || format!("{name} frame {} cut to {len} bytes", index + 1);
                    match decap_reporting(config, &mut buffer[..len], what) {
                        Err(reason) => assert_counted(reason, &mut counters),
                        Ok(d) => {
                            // Only bytes past the outer IP packet (Ethernet padding) may be
                            // cut, and then the outcome is the same.
                            survivors += 1;
                            a_prefix_survived = true;
                            assert!(d.inner.end <= len, "{}", what());
                            assert_eq!(full.as_ref(), Ok(&d), "{}", what());
                            buffer.copy_from_slice(original);
                        }
                    }
                }
                // A frame that ends where its inner frame ends has no byte to spare.
                if let Ok(d) = &full {
                    if d.inner.end == original.len() {
                        assert!(!a_prefix_survived, "{name} frame {}", index + 1);
                    }
                }
            }
        }
    }
    assert_eq!(counters.total() + survivors, truncations);
    // No capture has Ethernet padding after a VXLAN packet (see the top of this file).
    assert_eq!(survivors, 0, "every truncation is a counted drop");
}

// ---------------------------------------------------------------------------------------
// The reader itself
// ---------------------------------------------------------------------------------------

/// The helper reads pcapng as well as pcap (none of the captures is pcapng today): a
/// capture rewritten as pcapng reads back frame for frame.
#[test]
fn pcapng_reads_like_pcap() {
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::DataLink;
    use std::borrow::Cow;
    use std::time::Duration;

    let dir = testdata_or_skip!();
    let name = "zeek__geneve-vxlan-dns-truncated.pcap"; // Has caplen < origlen.
    let frames = read_capture(&path(&dir, name));
    let mut writer = PcapNgWriter::new(Vec::new()).unwrap();
    writer
        .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 176))
        .unwrap();
    for frame in &frames {
        writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::ZERO,
                original_len: frame.orig_len,
                data: Cow::Borrowed(&frame.data),
                options: vec![],
            })
            .unwrap();
    }
    let bytes = writer.into_inner();
    assert_eq!(&bytes[..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
    assert_eq!(parse_capture(&bytes, "in-memory pcapng"), frames);
}
