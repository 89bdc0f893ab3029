//! VXLAN encapsulation and decapsulation throughput, and etherparse doing the same
//! encapsulation the way a Rust program without switchyard would.
//!
//! `cargo bench --bench tunnel`. Every function processes a batch of 256 frames per iteration
//! (`Throughput::Elements(256)`): the time per iteration divided by 256 is the time per frame.
//!
//! The frames are what a VTEP forwards: inner Ethernet + IPv4 + TCP or UDP, with valid
//! checksums, between 16 hosts with varying addresses and ports, so that the flow hash behind
//! the outer source port does its real work. They sit in one buffer pool, each slot with 128
//! bytes of headroom (DPDK's default `RTE_PKTMBUF_HEADROOM`), as a backend would receive them.
//! The configuration is the default one (DF set, TTL 64, zero UDP checksum over IPv4, computed
//! over IPv6 as the rule is) with an underlay MTU of 9000, the jumbo underlay data centres run
//! VXLAN on, so that a 1500-byte inner frame fits (it needs 1536 over IPv4, RFC 7348 section
//! 4.3).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use etherparse::{
    EtherType, Ethernet2Header, IpHeaders, IpNumber, Ipv4Header, PacketBuilder, UdpHeader,
};
use switchyard::tunnel::{
    decap, DecapConfig, EncapConfig, EncapTemplate, IpIdent, OuterAddrs, Underlay,
};
use switchyard::wire::EthernetAddress;
use switchyard::Vni;

/// Frames per iteration: a typical receive batch (DPDK and io_uring backends use 32..256).
const BATCH: usize = 256;
/// Headroom in front of every inner frame in its slot: room for either outer header.
const HEADROOM: usize = 128;

const LOCAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const REMOTE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const REMOTE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const VNI: u32 = 42;
/// The VXLAN header for VNI 42 (RFC 7348 section 5), for the etherparse encapsulations.
const VXLAN_HEADER: [u8; 8] = [0x08, 0, 0, 0, 0, 0, VNI as u8, 0];
/// A fixed outer source port for the etherparse encapsulations: they skip the flow hash.
const ETHERPARSE_SOURCE_PORT: u16 = 49152;

/// A buffer pool of `BATCH` slots, each holding one inner frame behind `HEADROOM` bytes.
struct Pool {
    memory: Vec<u8>,
    stride: usize,
    frame_len: usize,
}

impl Pool {
    /// `BATCH` realistic inner frames of `frame_len` bytes.
    fn new(frame_len: usize) -> Pool {
        let stride = (HEADROOM + frame_len).next_multiple_of(64);
        let mut memory = vec![0u8; stride * BATCH];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for (i, slot) in memory.chunks_exact_mut(stride).enumerate() {
            let frame = inner_frame(i, frame_len, &mut rng);
            slot[HEADROOM..HEADROOM + frame_len].copy_from_slice(&frame);
        }
        Pool {
            memory,
            stride,
            frame_len,
        }
    }

    fn slots_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        self.memory.chunks_exact_mut(self.stride)
    }

    fn inner_frames(&self) -> impl Iterator<Item = &[u8]> {
        self.memory
            .chunks_exact(self.stride)
            .map(|slot| &slot[HEADROOM..HEADROOM + self.frame_len])
    }

    fn inner_range(&self) -> std::ops::Range<usize> {
        HEADROOM..HEADROOM + self.frame_len
    }
}

/// A small deterministic generator: the same frames in every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The one's complement sum of `data` as big-endian words (RFC 1071), folded, not
/// complemented.
fn ones_complement_sum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word = match *chunk {
            [a, b] => u16::from_be_bytes([a, b]),
            [a] => u16::from_be_bytes([a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

/// Inner frame `i` of `len` bytes: Ethernet between two of 16 hosts, IPv4 (DF, TTL 64), then
/// TCP (an ACK carrying data, ECT(0) as ECN-capable TCP sends it) or UDP (Not-ECT), ports
/// and addresses varying, checksums valid, payload filler.
fn inner_frame(i: usize, len: usize, rng: &mut XorShift) -> Vec<u8> {
    let r = rng.next();
    let (src_host, dst_host) = ((r & 15) as u8, ((r >> 4) & 15) as u8);
    let tcp = (r >> 8) & 1 == 0;
    let src_ip = [198, 19, (r >> 16) as u8, src_host + 1];
    let dst_ip = [198, 19, (r >> 24) as u8 | 0x80, dst_host + 1];
    let src_port = 32768 + ((r >> 32) as u16 & 0x7FFF);
    let dst_port = [443u16, 80, 53, 8080][((r >> 48) & 3) as usize];

    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0x10, dst_host]);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0x10, src_host]);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = len - 14;
    let (tos, protocol) = if tcp { (0x02, 6) } else { (0x00, 17) };
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[1] = tos;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&(i as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = protocol;
    ip[12..16].copy_from_slice(&src_ip);
    ip[16..20].copy_from_slice(&dst_ip);
    let checksum = !ones_complement_sum(&ip, 0);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&ip);

    let l4_len = ip_len - 20;
    let mut l4 = vec![0u8; l4_len];
    l4[0..2].copy_from_slice(&src_port.to_be_bytes());
    l4[2..4].copy_from_slice(&dst_port.to_be_bytes());
    let checksum_at = if tcp {
        l4[4..8].copy_from_slice(&(r as u32).to_be_bytes()); // sequence
        l4[8..12].copy_from_slice(&((r >> 32) as u32).to_be_bytes()); // acknowledgment
        l4[12] = 5 << 4;
        l4[13] = 0x18; // PSH, ACK
        l4[14..16].copy_from_slice(&502u16.to_be_bytes());
        16
    } else {
        l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        6
    };
    let header_len = if tcp { 20 } else { 8 };
    for (n, byte) in l4[header_len..].iter_mut().enumerate() {
        *byte = (n as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    let pseudo = u32::from(ones_complement_sum(&src_ip, 0))
        + u32::from(ones_complement_sum(&dst_ip, 0))
        + u32::from(protocol)
        + l4_len as u32;
    let checksum = !ones_complement_sum(&l4, pseudo);
    l4[checksum_at..checksum_at + 2].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&l4);
    assert_eq!(frame.len(), len);
    frame
}

fn encap_config() -> EncapConfig {
    EncapConfig {
        mtu: 9000,
        ..EncapConfig::default()
    }
}

fn template(ipv6: bool) -> EncapTemplate {
    let (local_mac, next_hop_mac) = (EthernetAddress(LOCAL_MAC), EthernetAddress(NEXT_HOP_MAC));
    let underlay = if ipv6 {
        Underlay::ipv6(local_mac, next_hop_mac, LOCAL_V6, REMOTE_V6)
    } else {
        Underlay::ipv4(local_mac, next_hop_mac, LOCAL_V4, REMOTE_V4)
    };
    EncapTemplate::new(&encap_config(), &underlay, Vni::new(VNI).unwrap()).unwrap()
}

/// Encapsulates the pool in place once: returns where each outer frame is in its slot.
///
/// Decapsulating these frames again and again is valid: decap's only write is the inner ECN
/// field, and only when the outer ECN is ECT(1) or CE and the RFC 6040 table gives a
/// different value. Encapsulation copied each inner ECN field to the outer header, and
/// decapsulating outer == inner changes nothing; most frames here are Not-ECT outside and in.
/// The loop below checks that one decap leaves every frame as it was.
fn prepare_decap(pool: &mut Pool, template: &EncapTemplate) -> std::ops::Range<usize> {
    let range = pool.inner_range();
    let mut outer = 0..0;
    for slot in pool.slots_mut() {
        outer = template
            .encap(slot, range.clone(), &mut IpIdent::new(0))
            .unwrap();
    }
    let config = DecapConfig::default();
    for slot in pool.slots_mut() {
        let before = slot.to_vec();
        let decapsulated = decap(&config, &mut slot[outer.clone()]).unwrap();
        assert_eq!(decapsulated.vni.get(), VNI);
        assert_eq!(
            outer.start + decapsulated.inner.start..outer.start + decapsulated.inner.end,
            range
        );
        assert_eq!(slot, &before[..], "decap changed a prepared frame");
    }
    outer
}

// The batch loops below put one optimisation barrier (`black_box`) on the whole pool before
// the batch and one on a digest of the results after it, not one per frame: `black_box` is a
// full compiler barrier that spills and reloads every live register. An empty loop over the
// slots with black_box on each took 7.8 ns a frame on this machine, as much as the work
// measured, and a backend's receive loop has no such barrier either. The digest folds in
// what the consumer of each result reads: the outer range for encap, and for decap what the
// switch reads (`decap_batch`) or every field (`decap_batch_all_fields`).

fn encap_batch(pool: &mut Pool, template: &EncapTemplate, ident: &mut IpIdent) -> usize {
    let range = pool.inner_range();
    let mut digest = 0;
    for slot in black_box(pool).slots_mut() {
        // Writes the outer headers into the headroom; the inner frame is never touched, so
        // the next iteration encapsulates the same frames again.
        let outer = template.encap(slot, range.clone(), ident).unwrap();
        digest += outer.start ^ outer.end;
    }
    black_box(digest)
}

/// Decapsulates the batch, reading what the switch reads of each result: the VNI and GBP
/// header (which network, which policy group), the outer source address (learning binds the
/// inner source MAC to it) and the inner frame's place (what to forward).
fn decap_batch(pool: &mut Pool, outer: &std::ops::Range<usize>, config: &DecapConfig) -> u64 {
    let mut digest = 0u64;
    for slot in black_box(pool).slots_mut() {
        let d = decap(config, &mut slot[outer.clone()]).unwrap();
        let source = match d.outer.src() {
            IpAddr::V4(src) => u64::from(src.to_bits()),
            IpAddr::V6(src) => src.to_bits() as u64,
        };
        let gbp = d.gbp.map_or(0, |g| u64::from(g.group_policy_id));
        digest = digest.wrapping_add(
            source
                ^ u64::from(d.vni.get()) << 32
                ^ gbp << 16
                ^ (d.inner.start ^ d.inner.end) as u64,
        );
    }
    black_box(digest)
}

/// The same, folding every field of every result into the digest: what reading all of
/// them (outer MACs, both addresses, port, TTL, TOS) adds.
fn decap_batch_all_fields(
    pool: &mut Pool,
    outer: &std::ops::Range<usize>,
    config: &DecapConfig,
) -> u64 {
    let mut digest = 0u64;
    for slot in black_box(pool).slots_mut() {
        let d = decap(config, &mut slot[outer.clone()]).unwrap();
        digest = digest.wrapping_add(decapsulated_digest(&d));
    }
    black_box(digest)
}

/// Every field of a decapsulation result, folded into one number with a few cheap
/// operations (the digest is part of what is timed).
fn decapsulated_digest(d: &switchyard::tunnel::Decapsulated) -> u64 {
    let addrs = match d.outer {
        OuterAddrs::V4 { src, dst } => u64::from(src.to_bits()) << 32 | u64::from(dst.to_bits()),
        OuterAddrs::V6 { src, dst } => (src.to_bits() ^ dst.to_bits()) as u64,
    };
    let macs = d
        .outer_src_mac
        .0
        .iter()
        .zip(&d.outer_dst_mac.0)
        .fold(0u64, |acc, (s, d)| acc << 8 ^ u64::from(s ^ d));
    let gbp = d.gbp.map_or(0, |g| u64::from(g.group_policy_id));
    let small =
        u64::from(d.udp_src_port) | u64::from(d.outer_ttl) << 16 | u64::from(d.outer_tos) << 24;
    addrs
        ^ macs
        ^ gbp
        ^ small << 32
        ^ u64::from(d.vni.get())
        ^ (d.inner.start as u64) << 40
        ^ d.inner.end as u64
}

fn tunnel(c: &mut Criterion) {
    let mut group = c.benchmark_group("tunnel");
    group.throughput(Throughput::Elements(BATCH as u64));
    let decap_config = DecapConfig::default();

    for (ipv6, name, sizes) in [
        (false, "ipv4", &[64usize, 1500][..]),
        (true, "ipv6", &[64usize][..]),
    ] {
        let template = template(ipv6);
        for &size in sizes {
            let mut pool = Pool::new(size);
            let mut ident = IpIdent::new(0);
            group.bench_function(BenchmarkId::new(format!("encap_{name}"), size), |b| {
                b.iter(|| encap_batch(&mut pool, &template, &mut ident))
            });
            let mut pool = Pool::new(size);
            let outer = prepare_decap(&mut pool, &template);
            group.bench_function(BenchmarkId::new(format!("decap_{name}"), size), |b| {
                b.iter(|| decap_batch(&mut pool, &outer, &decap_config))
            });
            if size == 64 {
                let id = BenchmarkId::new(format!("decap_{name}_all_fields"), size);
                group.bench_function(id, |b| {
                    b.iter(|| decap_batch_all_fields(&mut pool, &outer, &decap_config))
                });
            }
        }
    }

    // The same encapsulation with etherparse's PacketBuilder, as a Rust program would write
    // it: the VXLAN header and the inner frame gathered into a reused payload buffer (the
    // builder takes the payload as one slice), the packet written into a reused Vec. The
    // builder always computes the IPv4 UDP checksum; `etherparse_headers_encap_ipv4` below
    // writes etherparse's headers one by one with the zero checksum our default sends, so
    // that the two sides do the same work.
    let pool = Pool::new(64);
    let mut payload = Vec::with_capacity(2048);
    let mut packet = Vec::with_capacity(2048);
    group.bench_function(BenchmarkId::new("etherparse_encap_ipv4", 64), |b| {
        b.iter(|| {
            for frame in pool.inner_frames() {
                payload.clear();
                payload.extend_from_slice(&VXLAN_HEADER);
                payload.extend_from_slice(black_box(frame));
                packet.clear();
                // Ipv4Header::new sets DF; the builder fills in lengths and both checksums.
                let ip =
                    Ipv4Header::new(0, 64, IpNumber::UDP, LOCAL_V4.octets(), REMOTE_V4.octets())
                        .unwrap();
                PacketBuilder::ethernet2(LOCAL_MAC, NEXT_HOP_MAC)
                    .ip(IpHeaders::Ipv4(ip, Default::default()))
                    .udp(ETHERPARSE_SOURCE_PORT, 4789)
                    .write(&mut packet, &payload)
                    .unwrap();
                black_box(&packet);
            }
        })
    });
    group.bench_function(BenchmarkId::new("etherparse_headers_encap_ipv4", 64), |b| {
        b.iter(|| {
            for frame in pool.inner_frames() {
                let frame = black_box(frame);
                packet.clear();
                let udp_len = (8 + VXLAN_HEADER.len() + frame.len()) as u16;
                Ethernet2Header {
                    source: LOCAL_MAC,
                    destination: NEXT_HOP_MAC,
                    ether_type: EtherType::IPV4,
                }
                .write(&mut packet)
                .unwrap();
                // `write` computes the header checksum.
                Ipv4Header::new(
                    udp_len,
                    64,
                    IpNumber::UDP,
                    LOCAL_V4.octets(),
                    REMOTE_V4.octets(),
                )
                .unwrap()
                .write(&mut packet)
                .unwrap();
                UdpHeader {
                    source_port: ETHERPARSE_SOURCE_PORT,
                    destination_port: 4789,
                    length: udp_len,
                    checksum: 0,
                }
                .write(&mut packet)
                .unwrap();
                packet.extend_from_slice(&VXLAN_HEADER);
                packet.extend_from_slice(frame);
                black_box(&packet);
            }
        })
    });
    group.finish();
}

/// The etherparse encapsulations build the same outer headers as switchyard's (but for the
/// source port and, for the builder, the UDP checksum): checked once before timing.
fn check_etherparse_matches() {
    let mut pool = Pool::new(64);
    let range = pool.inner_range();
    let template = template(false);
    let slot = pool.slots_mut().next().unwrap();
    let outer = template
        .encap(slot, range.clone(), &mut IpIdent::new(0))
        .unwrap();
    let ours = slot[outer].to_vec();
    let frame = &slot[range];
    let mut payload = VXLAN_HEADER.to_vec();
    payload.extend_from_slice(frame);
    let mut theirs = Vec::new();
    let ip = Ipv4Header::new(0, 64, IpNumber::UDP, LOCAL_V4.octets(), REMOTE_V4.octets()).unwrap();
    PacketBuilder::ethernet2(LOCAL_MAC, NEXT_HOP_MAC)
        .ip(IpHeaders::Ipv4(ip, Default::default()))
        .udp(ETHERPARSE_SOURCE_PORT, 4789)
        .write(&mut theirs, &payload)
        .unwrap();
    assert_eq!(ours.len(), theirs.len());
    // Ethernet and IPv4 headers identical; UDP source port and checksum differ by design.
    assert_eq!(ours[..34], theirs[..34]);
    assert_eq!(ours[36..40], theirs[36..40]);
    assert_eq!(ours[42..], theirs[42..]);
}

fn benches(c: &mut Criterion) {
    check_etherparse_matches();
    tunnel(c);
}

criterion_group!(tunnel_benches, benches);
criterion_main!(tunnel_benches);
