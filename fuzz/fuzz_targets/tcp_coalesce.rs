//! TCP segments into `gro::TcpCoalescer` as a worker loop feeds it: a sender's super-frame
//! (any size, segment size, IPv4 or IPv6) cut by `gso::TcpSegmenter`, then arbitrary byte
//! edits to the segments, arbitrary extra frames, the order shuffled, each frame given in two
//! parts split anywhere. It must never panic, and what comes out is checked with etherparse
//! (an independent parser):
//!
//! - a super-frame, its partial checksum completed, has valid IPv4 header and TCP checksums,
//!   at most 64 KiB of IP packet, and its payload is exactly the payloads of the frames that
//!   went into it, in order, each a valid TCP segment itself (a corrupted one never joins);
//! - a single frame comes out byte for byte as it went in.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use switchyard::gro::{CoalescedGso, TcpCoalescer};
use switchyard::gso::TcpSegmenter;

#[derive(Arbitrary, Debug)]
struct Input {
    ipv6: bool,
    /// Payload bytes of the sender's super-frame (reduced to 0..=60000).
    payload_len: u16,
    /// Segment size (reduced to 1..=9000).
    mss: u16,
    edits: Vec<(u8, u16, u8)>,
    /// Swaps of two frames' places.
    swaps: Vec<(u8, u8)>,
    extra: Vec<Vec<u8>>,
    /// Where each frame is split into its two parts (cycled).
    splits: Vec<u16>,
}

fn super_frame(ipv6: bool, payload: &[u8]) -> Vec<u8> {
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
    ip.tcp(40000, 5201, 0xffff_0000, 501)
        .ack(9)
        .write(&mut frame, payload)
        .expect("a super-frame within 64 KiB");
    frame
}

/// The TCP payload of a frame, if etherparse reads it as a TCP segment with valid checksums.
fn valid_payload(frame: &[u8]) -> Option<Vec<u8>> {
    let parsed = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::TransportSlice::Tcp(tcp)) = &parsed.transport else {
        return None;
    };
    let expected = match &parsed.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => {
            let header = ip.header().to_header();
            if header.header_checksum != header.calc_header_checksum() {
                return None;
            }
            tcp.to_header()
                .calc_checksum_ipv4(&header, tcp.payload())
                .ok()?
        }
        Some(etherparse::NetSlice::Ipv6(ip)) => tcp
            .to_header()
            .calc_checksum_ipv6(&ip.header().to_header(), tcp.payload())
            .ok()?,
        _ => return None,
    };
    (tcp.checksum() == expected).then(|| tcp.payload().to_vec())
}

/// Completes a super-frame's partial checksum as the kernel would.
fn complete(frame: &[u8], gso: &CoalescedGso) -> Vec<u8> {
    let mut frame = frame.to_vec();
    let start = usize::from(gso.checksum_start);
    let at = start + usize::from(gso.checksum_offset);
    let mut sum: u32 = 0;
    for pair in frame[start..].chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[at..at + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    frame
}

/// Checks one output against the frames that went into it.
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
    assert_eq!(usize::from(gso.segments), taken.len());
    assert!(taken.len() >= 2);
    let completed = complete(&bytes, &gso);
    let payload = valid_payload(&completed).expect("a super-frame with valid checksums");
    let mut expected = Vec::new();
    for frame in taken {
        let part = valid_payload(frame).expect("only valid segments join");
        assert!(part.len() <= usize::from(gso.segment_size));
        expected.extend_from_slice(&part);
    }
    assert_eq!(payload, expected);
    let ip = usize::from(gso.checksum_start) - if gso.ipv6 { 40 } else { 20 };
    assert!(bytes.len() - ip <= 65_535 + if gso.ipv6 { 40 } else { 0 });
}

fuzz_target!(|input: Input| {
    let len = usize::from(input.payload_len) % 60_001;
    let mss = input.mss % 9000 + 1;
    let payload: Vec<u8> = (0..len).map(|i| (i * 13 + i / 256) as u8).collect();
    let frame = super_frame(input.ipv6, &payload);
    let mut segmenter = TcpSegmenter::new(&frame, mss).expect("etherparse's frame is TCP");
    let mut buffer = vec![0u8; segmenter.max_segment_len()];
    let mut frames = Vec::new();
    while let Some(n) = segmenter.next_into(&mut buffer) {
        frames.push(buffer[..n].to_vec());
        if frames.len() > 2000 {
            break;
        }
    }
    switchyard_fuzz::mutate(&mut frames, &input.edits, input.extra, &input.swaps);
    switchyard_fuzz::drive(&mut TcpCoalescer::new(), &frames, &input.splits, check);
});
