//! UDP datagrams into `gro::UdpCoalescer` as an AF_PACKET underlay queue feeds it, each
//! super-frame cut again by `gso::UdpSegmenter` as the receiving switch does: equal
//! datagrams of one flow (IPv4 or IPv6, any size), then arbitrary byte edits, arbitrary
//! extra frames, the order shuffled, each frame given in two parts split anywhere. It must
//! never panic, and (etherparse, an independent parser, as the oracle):
//!
//! - a super-frame holds at most 64 datagrams and 64 KiB of IP packet, and cuts into as many
//!   datagrams as went in, each with valid IPv4 header and UDP checksums, the same addresses,
//!   ports and payload as the datagram it stands for;
//! - a single frame comes out byte for byte as it went in.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use switchyard::gro::UdpCoalescer;
use switchyard::gso::UdpSegmenter;

#[derive(Arbitrary, Debug)]
struct Input {
    ipv6: bool,
    /// Datagrams (reduced to 0..=200) and their payload size (reduced to 1..=1472).
    count: u8,
    size: u16,
    edits: Vec<(u8, u16, u8)>,
    swaps: Vec<(u8, u8)>,
    extra: Vec<Vec<u8>>,
    splits: Vec<u16>,
}

fn datagram(ipv6: bool, index: usize, size: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..size).map(|i| (index * 31 + i) as u8).collect();
    let eth = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let ip = if ipv6 {
        eth.ipv6(
            [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
    } else {
        eth.ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
    };
    let mut frame = Vec::new();
    ip.udp(49152, 4789).write(&mut frame, &payload).unwrap();
    frame
}

/// Addresses, ports and payload of a UDP datagram, with its checksums checked; `None` if
/// etherparse does not read it as one or a checksum is wrong.
fn parts(frame: &[u8]) -> Option<(Vec<u8>, u16, u16, Vec<u8>)> {
    let parsed = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::TransportSlice::Udp(udp)) = &parsed.transport else {
        return None;
    };
    let (addresses, expected) = match &parsed.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => {
            let header = ip.header().to_header();
            if header.header_checksum != header.calc_header_checksum() {
                return None;
            }
            let expected = if udp.checksum() == 0 {
                0
            } else {
                udp.to_header()
                    .calc_checksum_ipv4(&header, udp.payload())
                    .ok()?
            };
            ([header.source, header.destination].concat(), expected)
        }
        Some(etherparse::NetSlice::Ipv6(ip)) => {
            let header = ip.header().to_header();
            let expected = udp
                .to_header()
                .calc_checksum_ipv6(&header, udp.payload())
                .ok()?;
            ([header.source, header.destination].concat(), expected)
        }
        _ => return None,
    };
    (udp.checksum() == expected).then(|| {
        (
            addresses,
            udp.source_port(),
            udp.destination_port(),
            udp.payload().to_vec(),
        )
    })
}

fn check(out: switchyard_fuzz::Joined, taken: &[Vec<u8>]) {
    let Some((bytes, gso)) = out else {
        assert!(taken.is_empty());
        return;
    };
    let Some(gso) = gso else {
        assert_eq!(taken.len(), 1);
        assert_eq!(bytes, taken[0], "a single frame leaves as it came");
        return;
    };
    assert!(gso.udp);
    assert_eq!(usize::from(gso.segments), taken.len());
    assert!((2..=64).contains(&taken.len()));
    let ip = usize::from(gso.checksum_start) - if gso.ipv6 { 40 } else { 20 };
    assert!(bytes.len() - ip <= 65_535 + if gso.ipv6 { 40 } else { 0 });
    let mut cutter = UdpSegmenter::new(&bytes, gso.segment_size, false).expect("a UDP frame");
    assert_eq!(cutter.segment_count(), taken.len());
    let mut buffer = vec![0u8; cutter.max_segment_len()];
    for frame in taken {
        let n = cutter
            .next_into(&mut buffer)
            .expect("one datagram per one that went in");
        let cut = parts(&buffer[..n]).expect("a valid datagram");
        let (addresses, sport, dport, payload) = parts_unchecked(frame);
        assert_eq!(
            (cut.0, cut.1, cut.2, cut.3),
            (addresses, sport, dport, payload)
        );
    }
    assert!(cutter.next_into(&mut buffer).is_none());
}

/// Addresses, ports and payload of a frame that went in, read without checking checksums
/// (the coalescer does not verify them: its frames are the host's own).
fn parts_unchecked(frame: &[u8]) -> (Vec<u8>, u16, u16, Vec<u8>) {
    let parsed = etherparse::SlicedPacket::from_ethernet(frame).expect("a joined frame parses");
    let Some(etherparse::TransportSlice::Udp(udp)) = &parsed.transport else {
        panic!("a joined frame is UDP")
    };
    let addresses = match &parsed.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => {
            [ip.header().source(), ip.header().destination()].concat()
        }
        Some(etherparse::NetSlice::Ipv6(ip)) => {
            [ip.header().source(), ip.header().destination()].concat()
        }
        _ => panic!("a joined frame is IP"),
    };
    (
        addresses,
        udp.source_port(),
        udp.destination_port(),
        udp.payload().to_vec(),
    )
}

fuzz_target!(|input: Input| {
    let count = usize::from(input.count) % 201;
    let size = usize::from(input.size) % 1472 + 1;
    let mut frames: Vec<Vec<u8>> = (0..count).map(|i| datagram(input.ipv6, i, size)).collect();
    switchyard_fuzz::mutate(&mut frames, &input.edits, input.extra, &input.swaps);
    switchyard_fuzz::drive(&mut UdpCoalescer::new(), &frames, &input.splits, check);
});
