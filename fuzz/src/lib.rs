//! Checks shared by the fuzz targets: which refusals a configuration explains, what a
//! decapsulation may change, and an independent reading (etherparse's) of the outer headers
//! that encapsulation writes; and for the coalescers, the mutations of a frame sequence and
//! the loop that feeds them one (`mutate`, `drive`).
//!
//! Every check panics on a violation: a panic is what libFuzzer reports as a crash.

use switchyard::tunnel::{
    ecn, ConfigError, Decapsulated, DfPolicy, Ecn, EncapConfig, OuterAddrs, TosPolicy, TtlPolicy,
    Underlay, OVERHEAD_IPV4, OVERHEAD_IPV6,
};
use switchyard::{DropReason, Vni};

const ETHERNET_HEADER_LEN: usize = 14;
const VLAN: u16 = 0x8100;
const QINQ: u16 = 0x88A8;
const IPV4: u16 = 0x0800;
const IPV6: u16 = 0x86DD;

/// The EtherType at `offset`, if the frame holds it.
fn read_u16(frame: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_be_bytes([
        *frame.get(offset)?,
        *frame.get(offset + 1)?,
    ]))
}

/// Where an Ethernet frame's network header is and what it is, looking through one tag, as
/// RFC 7348 section 6.1 receivers see it: `(l3 offset, ethertype, tagged)`.
pub fn inner_layout(frame: &[u8]) -> Option<(usize, u16, bool)> {
    match read_u16(frame, 12)? {
        VLAN | QINQ => Some((ETHERNET_HEADER_LEN + 4, read_u16(frame, 16)?, true)),
        ethertype => Some((ETHERNET_HEADER_LEN, ethertype, false)),
    }
}

/// The refusals of [`switchyard::tunnel::EncapTemplate::new`] that `config` and `underlay`
/// explain, from the documentation of [`ConfigError`]. Empty: the template must be built.
pub fn explained_config_errors(config: &EncapConfig, underlay: &Underlay) -> Vec<ConfigError> {
    let mut explained = Vec::new();
    match config.udp_port {
        0 => explained.push(ConfigError::ZeroUdpPort),
        4790 => explained.push(ConfigError::GpePort),
        6081 => explained.push(ConfigError::GenevePort),
        _ => {}
    }
    if config.ttl == TtlPolicy::Fixed(0) {
        explained.push(ConfigError::ZeroTtl);
    }
    if let TosPolicy::Fixed(tos) = config.tos {
        if tos & 0b11 != 0 {
            explained.push(ConfigError::TosEcnBits(tos));
        }
    }
    let (addresses_valid, overhead) = match underlay.addrs {
        OuterAddrs::V4 { src, dst } => (
            [src, dst]
                .iter()
                .all(|a| !(a.is_unspecified() || a.is_multicast() || a.is_broadcast())),
            OVERHEAD_IPV4,
        ),
        OuterAddrs::V6 { src, dst } => (
            [src, dst]
                .iter()
                .all(|a| !(a.is_unspecified() || a.is_multicast())),
            OVERHEAD_IPV6,
        ),
    };
    if !addresses_valid {
        explained.push(ConfigError::InvalidVtepAddress);
    }
    // The template wants a minimum-size (64-byte) inner frame to fit, not just an Ethernet
    // header as ConfigError::MtuTooSmall's doc says; the unit test `config_errors_name_the_value`
    // pins the minimum at 100 over IPv4.
    let minimum = overhead + 64 - ETHERNET_HEADER_LEN as u16;
    if config.mtu < minimum {
        explained.push(ConfigError::MtuTooSmall {
            mtu: config.mtu,
            minimum,
        });
    }
    explained
}

/// Asserts that a template result agrees with [`explained_config_errors`]: built when
/// nothing explains a refusal, refused only for a reason the configuration explains.
pub fn check_template_result<T>(
    result: &Result<T, ConfigError>,
    config: &EncapConfig,
    underlay: &Underlay,
) {
    let explained = explained_config_errors(config, underlay);
    match result {
        Ok(_) => assert!(
            explained.is_empty(),
            "template built despite {explained:?}: {config:?} {underlay:?}"
        ),
        Err(error) => assert!(
            explained.contains(error),
            "template refused with {error:?}, explained only {explained:?}: {config:?} {underlay:?}"
        ),
    }
}

/// The refusals of [`switchyard::tunnel::EncapTemplate::encap`] that the inner frame and
/// the configuration explain (with enough headroom and a range inside the buffer).
pub fn explained_encap_errors(
    inner: &[u8],
    header_len: usize,
    mtu: u16,
    carry_inner_vlan: bool,
) -> Vec<DropReason> {
    let mut explained = Vec::new();
    match inner_layout(inner) {
        // Shorter than an Ethernet header, or a tag cut short (the doc of `encap` names only
        // the first; a tag without its EtherType is the same kind of truncation).
        None => explained.push(DropReason::InnerTruncated),
        Some((_, _, true)) if !carry_inner_vlan => explained.push(DropReason::InnerVlanTagged),
        Some(_) => {}
    }
    if header_len - ETHERNET_HEADER_LEN + inner.len() > usize::from(mtu) {
        explained.push(DropReason::MtuExceeded);
    }
    explained
}

/// What [`switchyard::tunnel::decap`] may do to a frame: when it succeeds, change only the
/// ECN field of the inner IP header as RFC 6040's table says (and the IPv4 header checksum
/// with it, incrementally); when it fails, nothing.
pub fn check_decap_changes(before: &[u8], after: &[u8], result: &Result<Decapsulated, DropReason>) {
    assert_eq!(before.len(), after.len());
    let d = match result {
        Ok(d) => d,
        Err(reason) => {
            assert_eq!(before, after, "decap changed a frame it refused ({reason})");
            return;
        }
    };
    assert!(
        d.inner.start <= d.inner.end && d.inner.end <= after.len(),
        "{d:?}"
    );
    assert!(d.inner.len() >= ETHERNET_HEADER_LEN, "{d:?}");
    assert_eq!(before[..d.inner.start], after[..d.inner.start]);
    assert_eq!(before[d.inner.end..], after[d.inner.end..]);
    // The fields it reports are the bytes in front of the inner frame.
    assert_eq!(d.outer_dst_mac.0, before[0..6]);
    assert_eq!(d.outer_src_mac.0, before[6..12]);
    let vxlan = &before[d.inner.start - 8..d.inner.start];
    assert_ne!(vxlan[0] & 0x08, 0, "VXLAN I flag clear: {vxlan:02x?}");
    assert_eq!(
        d.vni,
        Vni::new(u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]])).unwrap()
    );
    let udp = d.inner.start - 16;
    assert_eq!(
        d.udp_src_port,
        u16::from_be_bytes([before[udp], before[udp + 1]])
    );

    let old = &before[d.inner.clone()];
    let new = &after[d.inner.clone()];
    let outer_ecn = Ecn::from_tos(d.outer_tos);
    let Some((l3, ethertype, _)) = inner_layout(old) else {
        panic!("decap accepted an inner frame without a layout: {d:?}");
    };
    // (offset of the byte holding the ECN bits, shift of the ECN bits in it)
    let ecn_byte = match ethertype {
        IPV4 if old.len() >= l3 + 20 && old[l3] >> 4 == 4 => Some((l3 + 1, 0)),
        IPV6 if old.len() >= l3 + 2 && old[l3] >> 4 == 6 => Some((l3 + 1, 4)),
        _ => None,
    };
    let Some((at, shift)) = ecn_byte else {
        assert_eq!(old, new, "decap changed a non-IP inner frame");
        return;
    };
    let old_ecn = Ecn::from_tos(old[at] >> shift);
    let new_ecn = Ecn::from_tos(new[at] >> shift);
    let expected = ecn::decap(old_ecn, outer_ecn);
    assert_eq!(
        Some(new_ecn),
        expected,
        "inner ECN {old_ecn:?} under outer {outer_ecn:?}"
    );
    // Only the ECN bits of that byte, and for IPv4 the header checksum, may differ.
    for (i, (a, b)) in old.iter().zip(new).enumerate() {
        if i == at {
            assert_eq!(a & !(0b11 << shift), b & !(0b11 << shift), "byte {i}");
        } else if ethertype == IPV4 && (i == l3 + 10 || i == l3 + 11) {
            // Checked below.
        } else {
            assert_eq!(a, b, "decap changed inner byte {i}");
        }
    }
    if ethertype == IPV4 && old_ecn != new_ecn {
        // An incremental update keeps a valid header valid (RFC 1624).
        let header_len = usize::from(old[l3] & 0x0F) * 4;
        if header_len >= 20 && old.len() >= l3 + header_len {
            let valid = |h: &[u8]| ones_complement_sum(h) == 0xFFFF;
            if valid(&old[l3..l3 + header_len]) {
                assert!(
                    valid(&new[l3..l3 + header_len]),
                    "IPv4 checksum broken by the ECN update"
                );
            }
        }
    } else if ethertype == IPV4 {
        assert_eq!(old[l3 + 10..l3 + 12], new[l3 + 10..l3 + 12]);
    }
}

/// The 16-bit one's complement sum of `data` (RFC 1071), not complemented.
pub fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for chunk in data.chunks(2) {
        let word = match *chunk {
            [a, b] => u16::from_be_bytes([a, b]),
            [a] => u16::from_be_bytes([a, 0]),
            _ => 0,
        };
        sum += u64::from(word);
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

/// What the outer headers of an encapsulated frame must say.
#[derive(Debug, Clone)]
pub struct ExpectedOuter<'a> {
    /// The configuration the template was built with.
    pub config: &'a EncapConfig,
    /// The underlay it was built for.
    pub underlay: &'a Underlay,
    /// The VNI.
    pub vni: Vni,
    /// The inner frame that was encapsulated.
    pub inner: &'a [u8],
    /// The source port the template reports for it.
    pub source_port: u16,
}

/// The inner fields the policies inherit, read independently of switchyard: TOS (whole
/// byte), TTL, DF. `None` for frames whose IP header is missing or too short to hold them.
fn inner_ip_fields(inner: &[u8]) -> Option<(u8, u8, bool)> {
    let (l3, ethertype, _) = inner_layout(inner)?;
    let ip = inner.get(l3..)?;
    match ethertype {
        IPV4 if ip.len() >= 9 && ip[0] >> 4 == 4 => Some((ip[1], ip[8], ip[6] & 0x40 != 0)),
        IPV6 if ip.len() >= 8 && ip[0] >> 4 == 6 => {
            Some(((ip[0] << 4) | (ip[1] >> 4), ip[7], true))
        }
        _ => None,
    }
}

/// The outer TTL and TOS (DSCP and ECN) the policies give for an inner frame.
pub fn expected_ttl_tos(config: &EncapConfig, inner: &[u8]) -> (u8, u8) {
    let fields = inner_ip_fields(inner);
    let inner_tos = fields.map_or(0, |f| f.0);
    let ttl = match config.ttl {
        TtlPolicy::Fixed(ttl) => ttl,
        // An inherited 0 would be dropped by the first router: 64 instead, as for non-IP.
        TtlPolicy::Inherit => match fields {
            Some((_, ttl, _)) if ttl != 0 => ttl,
            _ => 64,
        },
    };
    let dscp = match config.tos {
        TosPolicy::Fixed(tos) => tos,
        TosPolicy::Inherit => inner_tos & !0b11,
    };
    // RFC 6040 section 4.1, normal mode: the ECN field is copied, CE included.
    (ttl, dscp | (inner_tos & 0b11))
}

/// Reads an encapsulated frame with etherparse and checks every outer field against the
/// configuration: addresses, lengths, both checksums, DF and identification, TTL, TOS, flow
/// label, ports, the VXLAN header, and the inner frame behind it.
pub fn check_outer_headers(frame: &[u8], expected: &ExpectedOuter<'_>) {
    use etherparse::{Ethernet2Header, Ipv4Header, Ipv6Header, UdpHeader};

    let config = expected.config;
    let (ethernet, rest) = Ethernet2Header::from_slice(frame).expect("outer Ethernet");
    assert_eq!(ethernet.destination, expected.underlay.next_hop_mac.0);
    assert_eq!(ethernet.source, expected.underlay.local_mac.0);
    let (ttl, tos) = expected_ttl_tos(config, expected.inner);
    let compute_udp_checksum;
    let (udp, payload, pseudo_header): (UdpHeader, &[u8], PseudoHeader) =
        match expected.underlay.addrs {
            OuterAddrs::V4 { src, dst } => {
                assert_eq!(ethernet.ether_type.0, IPV4);
                let (ip, rest) = Ipv4Header::from_slice(rest).expect("outer IPv4");
                assert_eq!(ip.header_len(), 20);
                assert_eq!(ip.header_checksum, ip.calc_header_checksum());
                assert_eq!(usize::from(ip.total_len), 20 + rest.len());
                assert_eq!(ip.protocol.0, 17);
                assert_eq!((ip.source, ip.destination), (src.octets(), dst.octets()));
                assert_eq!(ip.time_to_live, ttl);
                assert_eq!((ip.dscp.value() << 2) | ip.ecn.value(), tos);
                assert!(!ip.more_fragments && ip.fragment_offset.value() == 0);
                let dont_fragment = match config.df {
                    DfPolicy::Set => true,
                    DfPolicy::Unset => false,
                    DfPolicy::Inherit => inner_ip_fields(expected.inner).is_some_and(|f| f.2),
                };
                assert_eq!(ip.dont_fragment, dont_fragment);
                if dont_fragment {
                    // RFC 6864 section 4.1: an atomic datagram's ID is zero.
                    assert_eq!(ip.identification, 0);
                }
                compute_udp_checksum = config.udp_checksum_ipv4;
                let (udp, payload) = UdpHeader::from_slice(rest).expect("outer UDP");
                (udp, payload, PseudoHeader::V4(ip))
            }
            OuterAddrs::V6 { src, dst } => {
                assert_eq!(ethernet.ether_type.0, IPV6);
                let (ip, rest) = Ipv6Header::from_slice(rest).expect("outer IPv6");
                assert_eq!(usize::from(ip.payload_length), rest.len());
                assert_eq!(ip.next_header.0, 17);
                assert_eq!((ip.source, ip.destination), (src.octets(), dst.octets()));
                assert_eq!(ip.hop_limit, ttl);
                assert_eq!(ip.traffic_class, tos);
                if !config.ipv6_flow_label {
                    assert_eq!(ip.flow_label.value(), 0);
                }
                compute_udp_checksum = !config.zero_checksum_ipv6;
                let (udp, payload) = UdpHeader::from_slice(rest).expect("outer UDP");
                (udp, payload, PseudoHeader::V6(ip))
            }
        };
    assert_eq!(udp.source_port, expected.source_port);
    let range = config.source_ports;
    assert!((range.first()..=range.last()).contains(&udp.source_port));
    assert_eq!(udp.destination_port, config.udp_port);
    assert_eq!(usize::from(udp.length), 8 + payload.len());
    if compute_udp_checksum {
        let correct = match &pseudo_header {
            PseudoHeader::V4(ip) => udp.calc_checksum_ipv4(ip, payload),
            PseudoHeader::V6(ip) => udp.calc_checksum_ipv6(ip, payload),
        }
        .expect("UDP length fits");
        assert_eq!(udp.checksum, correct, "outer UDP checksum");
        assert_ne!(udp.checksum, 0, "a computed checksum is never sent as zero");
    } else {
        assert_eq!(udp.checksum, 0);
    }
    let [_, b, c, d] = expected.vni.get().to_be_bytes();
    assert_eq!(payload[..8], [0x08, 0, 0, 0, b, c, d, 0], "VXLAN header");
    assert_eq!(
        &payload[8..],
        expected.inner,
        "inner frame moved or changed"
    );
}

enum PseudoHeader {
    V4(etherparse::Ipv4Header),
    V6(etherparse::Ipv6Header),
}

/// What comes out of a coalescer: the frame's bytes, and for a super-frame what it joined.
pub type Joined = Option<(Vec<u8>, Option<switchyard::gro::CoalescedGso>)>;

/// The three steps of `switchyard::gro`'s coalescers, for [`drive`].
pub trait Join {
    fn start(&mut self, parts: [&[u8]; 2]) -> bool;
    fn merge(&mut self, parts: [&[u8]; 2]) -> bool;
    fn finish_owned(&mut self) -> Joined;
}

impl Join for switchyard::gro::TcpCoalescer {
    fn start(&mut self, parts: [&[u8]; 2]) -> bool {
        self.start(parts)
    }
    fn merge(&mut self, parts: [&[u8]; 2]) -> bool {
        self.merge(parts)
    }
    fn finish_owned(&mut self) -> Joined {
        self.finish().map(|c| (c.frame.to_vec(), c.gso))
    }
}

impl Join for switchyard::gro::UdpCoalescer {
    fn start(&mut self, parts: [&[u8]; 2]) -> bool {
        self.start(parts)
    }
    fn merge(&mut self, parts: [&[u8]; 2]) -> bool {
        self.merge(parts)
    }
    fn finish_owned(&mut self) -> Joined {
        self.finish().map(|c| (c.frame.to_vec(), c.gso))
    }
}

/// Applies up to 16 byte `edits` (frame, offset, value) to `frames`, appends up to 8 `extra`
/// frames, then makes up to 8 `swaps` of two frames' places.
pub fn mutate(
    frames: &mut Vec<Vec<u8>>,
    edits: &[(u8, u16, u8)],
    extra: Vec<Vec<u8>>,
    swaps: &[(u8, u8)],
) {
    for (which, at, value) in edits.iter().take(16) {
        if let Some(byte) = frames
            .get_mut(usize::from(*which))
            .and_then(|frame| frame.get_mut(usize::from(*at)))
        {
            *byte = *value;
        }
    }
    frames.extend(extra.into_iter().take(8));
    for (a, b) in swaps.iter().take(8) {
        let (a, b) = (usize::from(*a), usize::from(*b));
        if a < frames.len() && b < frames.len() {
            frames.swap(a, b);
        }
    }
}

/// Feeds `frames` to `join` as a worker loop does (merge, else finish and start anew), each
/// frame in two parts split where `splits` says (cycled), and calls `check` with everything
/// that comes out and the frames that went into it.
pub fn drive(
    join: &mut impl Join,
    frames: &[Vec<u8>],
    splits: &[u16],
    mut check: impl FnMut(Joined, &[Vec<u8>]),
) {
    let mut taken: Vec<Vec<u8>> = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let at = splits.get(i % splits.len().max(1)).copied().unwrap_or(0);
        let (a, b) = frame.split_at(usize::from(at).min(frame.len()));
        if join.merge([a, b]) {
            taken.push(frame.clone());
            continue;
        }
        check(join.finish_owned(), &taken);
        taken.clear();
        if join.start([a, b]) {
            taken.push(frame.clone());
        }
    }
    check(join.finish_owned(), &taken);
}
