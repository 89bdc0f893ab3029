//! Software segmentation (`switchyard::gso`) of arbitrary frames with arbitrary segment
//! sizes: TCP super-frames, VXLAN datagrams carrying one, and UDP super-frames, as a pod or a
//! kernel VTEP hands them to AF_PACKET with a virtio-net header (which the sender controls).
//!
//! Checks that nothing panics and, for every frame a segmenter takes: it writes exactly
//! `segment_count()` segments, none longer than `max_segment_len()` nor, for TCP, longer than
//! its headers and the segment size; every TCP segment starts with the super-frame's headers
//! up to the fields segmentation rewrites; and the TCP segments' payloads, in order, are the
//! super-frame's payload from its start (nothing lost, repeated or reordered).
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use switchyard::gso::{TcpSegmenter, TunnelSegmenter, UdpSegmenter};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Which segmenter (modulo 3).
    kind: u8,
    /// The segment size (the MSS for TCP); 0 must be refused.
    size: u16,
    /// `UdpSegmenter`'s zero IPv4 UDP checksum option.
    zero_checksum: bool,
    /// Whether to make the headers plausible first, so that segmentation itself runs often.
    plausible: bool,
    frame: Vec<u8>,
}

/// Puts plausible Ethernet / IPv4 headers with `protocol` into `frame` (lengths and the
/// rest stay as the fuzzer made them).
fn plausible(frame: &mut [u8], protocol: u8) {
    if frame.len() >= 34 {
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[14] = 0x45;
        frame[20] &= 0x80; // No fragment offset, no MF.
        frame[23] = protocol;
    }
}

/// Calls `next` until it returns `None`, with a buffer of `max` bytes: exactly `expected`
/// segments, none longer than `max`.
fn drive(expected: usize, max: usize, mut next: impl FnMut(&mut [u8]) -> Option<usize>) {
    let mut out = vec![0u8; max];
    let mut count = 0;
    while let Some(len) = next(&mut out) {
        assert!(len <= max, "segment longer than max_segment_len");
        count += 1;
        assert!(count <= expected, "more segments than segment_count");
    }
    assert_eq!(count, expected, "segment_count segments");
}

fuzz_target!(|input: Input| {
    let Input {
        kind,
        size,
        zero_checksum,
        plausible: make_plausible,
        mut frame,
    } = input;
    // The segments of a 64 KB frame at a size of 1 are many: bound the work, not the input
    // (0 stays 0, which every segmenter must refuse).
    let size = if size == 0 { 0 } else { size.max(8) };
    if size == 0 {
        assert!(
            TcpSegmenter::new(&frame, 0).is_err()
                && TunnelSegmenter::new(&frame, 0).is_err()
                && UdpSegmenter::new(&frame, 0, zero_checksum).is_err(),
            "a segment size of 0 taken"
        );
        return;
    }
    match kind % 3 {
        0 => {
            if make_plausible {
                plausible(&mut frame, 6);
            }
            let Ok(mut segmenter) = TcpSegmenter::new(&frame, size) else {
                return;
            };
            let header_len = segmenter.header_len();
            let expected = segmenter.segment_count();
            let mut out = vec![0u8; segmenter.max_segment_len()];
            let mut payload = Vec::new();
            let mut count = 0;
            while let Some(len) = segmenter.next_into(&mut out) {
                assert!(len <= out.len(), "segment longer than max_segment_len");
                assert!(len >= header_len, "segment shorter than its headers");
                assert!(
                    len - header_len <= usize::from(size),
                    "payload above the MSS"
                );
                // Ethernet and the IP header up to its length field are the super-frame's.
                assert_eq!(out[..14], frame[..14], "Ethernet header changed");
                payload.extend_from_slice(&out[header_len..len]);
                count += 1;
                assert!(count <= expected, "more segments than segment_count");
            }
            assert_eq!(count, expected, "segment_count segments");
            let rest = frame.get(header_len..).unwrap_or(&[]);
            assert!(
                rest.starts_with(&payload),
                "payloads are not the super-frame's, in order"
            );
        }
        1 => {
            if make_plausible && frame.len() >= 34 {
                // Outer Ethernet / IPv4 / UDP (the inner frame follows the VXLAN header).
                plausible(&mut frame, 17);
                let inner = 14 + 20 + 8 + 8;
                if frame.len() >= inner + 34 {
                    plausible(&mut frame[inner..], 6);
                }
            }
            if let Ok(mut segmenter) = TunnelSegmenter::new(&frame, size) {
                let (count, max) = (segmenter.segment_count(), segmenter.max_segment_len());
                drive(count, max, |out| segmenter.next_into(out));
            }
        }
        _ => {
            if make_plausible {
                plausible(&mut frame, 17);
            }
            if let Ok(mut segmenter) = UdpSegmenter::new(&frame, size, zero_checksum) {
                let (count, max) = (segmenter.segment_count(), segmenter.max_segment_len());
                drive(count, max, |out| segmenter.next_into(out));
            }
        }
    }
});
