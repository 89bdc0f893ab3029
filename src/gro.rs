//! Software receive coalescing of TCP segments (GRO done by hand): consecutive segments of one
//! TCP flow, on their way to the same local port, joined into one super-frame that a port
//! taking offloads (AF_PACKET with `PACKET_VNET_HDR`) hands to the kernel whole.
//!
//! The inverse of [`crate::gso`]. A TCP flow that crosses the overlay leaves its sender as
//! 64 KB super-frames, which the underlay carries as MTU-sized VXLAN packets; without
//! coalescing, the receiving host's stack takes each segment on its own and acknowledges every
//! second one, and every acknowledgement crosses both switches again. The kernel's own GRO
//! (`tcp_gro_receive`, `inet_gro_receive`, `ipv6_gro_receive`) joins them before its stack
//! sees them; [`TcpCoalescer`] applies the same rules to the frames a switch sends:
//!
//! - Ethernet (up to two VLAN tags), IPv4 without fragmentation or IPv6 without extension
//!   headers, TCP with payload and only ACK, PSH and ECE set;
//! - every header byte equal to the first segment's except the IP lengths, the IPv4
//!   identification (consecutive, or fixed with DF set) and header checksum, the TCP sequence
//!   number (the previous one's end), the PSH flag and the TCP checksum: the TOS byte (ECN
//!   marks), TTL, addresses, ports, acknowledgement, window and options (timestamps) included;
//! - every segment the size of the first except the last, which may be shorter; a PSH or a
//!   shorter segment ends the super-frame; at most 64 KiB of IP packet;
//! - every segment's checksums verified before it is joined (the super-frame leaves with a
//!   partial checksum, which the receiving stack does not verify again): a segment with a
//!   bad checksum is never joined, and goes on as it came, for its receiver to drop.
//!
//! The super-frame carries the first segment's headers with the lengths of the whole, a new
//! IPv4 header checksum, the PSH flag if its last segment had it, and in the TCP checksum
//! field the pseudo-header sum (a partial checksum, as a sending Linux host leaves it), with
//! [`Coalesced::gso`] describing it to the kernel.

use alloc::vec::Vec;

use crate::gso;
use crate::wire::checksum;

const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_ECE: u8 = 0x40;
/// Header bytes read to recognise a segment: Ethernet with two VLAN tags, IPv4 with options
/// and TCP with options fit.
const HEAD: usize = 160;
/// The most bytes of an IP packet (after the IPv4 header's total-length field, or of an
/// IPv6 payload).
const MAX_IP_LEN: usize = 65_535;

/// Where a segment's headers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    ip: usize,
    tcp: usize,
    payload: usize,
    /// End of the IP packet (the frame may carry Ethernet padding after it).
    end: usize,
    ipv6: bool,
}

impl Layout {
    fn payload_len(&self) -> usize {
        self.end - self.payload
    }
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// The layout of a segment that may be coalesced, from its first bytes `head` and its
/// length `len`; `None` for anything else.
fn layout(head: &[u8], len: usize) -> Option<Layout> {
    let gso::IpLayout {
        ip,
        transport: tcp,
        end,
        jumbo,
        ipv6,
    } = gso::locate(head, len, 6).ok()?;
    if jumbo || (!ipv6 && !checksum::ipv4_header_valid(head.get(ip..)?, tcp - ip)) {
        return None;
    }
    let data_offset = usize::from(*head.get(tcp + 12)? >> 4) * 4;
    let payload = tcp + data_offset;
    let flags = *head.get(tcp + 13)?;
    let only_ack_psh_ece = flags & !(TCP_ACK | TCP_PSH | TCP_ECE) == 0 && flags & TCP_ACK != 0;
    if data_offset < 20 || payload > head.len() || payload >= end || end > len {
        return None;
    }
    only_ack_psh_ece.then_some(Layout {
        ip,
        tcp,
        payload,
        end,
        ipv6,
    })
}

/// The first `HEAD` bytes of a frame given in two parts (as a switch's output gives a new
/// header and a range of a received frame), contiguous: borrowed when one part holds them,
/// else copied into `scratch`.
fn head<'a>(parts: [&'a [u8]; 2], scratch: &'a mut [u8; HEAD]) -> &'a [u8] {
    let [first, second] = parts;
    if first.len() >= HEAD || second.is_empty() {
        return &first[..first.len().min(HEAD)];
    }
    if first.is_empty() {
        return &second[..second.len().min(HEAD)];
    }
    let len = (first.len() + second.len()).min(HEAD);
    scratch[..first.len()].copy_from_slice(first);
    scratch[first.len()..len].copy_from_slice(&second[..len - first.len()]);
    &scratch[..len]
}

/// Appends bytes `start..end` of the frame in `parts` to `out`.
fn extend_range(out: &mut Vec<u8>, parts: [&[u8]; 2], start: usize, end: usize) {
    let [first, second] = parts;
    if start < first.len() {
        out.extend_from_slice(&first[start..end.min(first.len())]);
    }
    if end > first.len() {
        out.extend_from_slice(&second[start.saturating_sub(first.len())..end - first.len()]);
    }
}

/// The one's complement sum of the pseudo-header for `protocol` and `len` bytes of transport
/// header and payload, the IP header starting at `ip` in `head` (addresses adjacent in IPv4
/// and IPv6 headers).
fn pseudo_header_sum(head: &[u8], ip: usize, ipv6: bool, protocol: u8, len: usize) -> u32 {
    let addresses = if ipv6 {
        &head[ip + 8..ip + 40]
    } else {
        &head[ip + 12..ip + 20]
    };
    u32::from(checksum::sum_bytes(addresses))
        + u32::from(protocol)
        + (len as u32 >> 16)
        + (len as u32 & 0xffff)
}

/// Makes the headers of a joined frame (the whole of `frame`) say its length: the IPv4 total
/// length and header checksum or the IPv6 payload length, the UDP length (`protocol` 17), and
/// the transport checksum field the pseudo-header sum of the whole (a partial checksum).
fn finish_headers(frame: &mut [u8], ip: usize, transport: usize, ipv6: bool, protocol: u8) {
    let end = frame.len();
    if ipv6 {
        frame[ip + 4..ip + 6].copy_from_slice(&((end - ip - 40) as u16).to_be_bytes());
    } else {
        frame[ip + 2..ip + 4].copy_from_slice(&((end - ip) as u16).to_be_bytes());
        let sum = checksum::ipv4_header(&frame[ip..], transport - ip).unwrap_or(0);
        frame[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
    }
    let len = end - transport;
    let field = if protocol == 17 {
        frame[transport + 4..transport + 6].copy_from_slice(&(len as u16).to_be_bytes());
        transport + 6
    } else {
        transport + 16
    };
    let pseudo = checksum::fold(pseudo_header_sum(frame, ip, ipv6, protocol, len));
    frame[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
}

/// True if the TCP checksum of a segment is right: its headers in `head`, its payload in
/// `payload`.
fn tcp_checksum_valid(head: &[u8], layout: &Layout, payload: &[u8]) -> bool {
    let sum = pseudo_header_sum(head, layout.ip, layout.ipv6, 6, layout.end - layout.tcp)
        + u32::from(checksum::sum_bytes(&head[layout.tcp..layout.payload]))
        + u32::from(checksum::sum_bytes(payload));
    checksum::fold(sum) == 0xffff
}

/// The super-frame being built.
#[derive(Debug, Clone, Copy)]
struct Pending {
    layout: Layout,
    /// Payload bytes of the first segment: the size of all but the last.
    mss: usize,
    segments: u16,
    next_seq: u32,
    first_id: u16,
    /// The IPv4 identification stays the same (DF set) rather than counting up; known from
    /// the second segment on.
    fixed_id: Option<bool>,
    /// A PSH or a short segment ended it.
    closed: bool,
}

/// How the kernel should treat a coalesced super-frame: the GSO and partial checksum fields
/// of a virtio-net header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalescedGso {
    /// IPv6 rather than IPv4.
    pub ipv6: bool,
    /// UDP datagrams (UDP GSO, from [`UdpCoalescer`]) rather than TCP segments.
    pub udp: bool,
    /// Payload bytes per segment.
    pub segment_size: u16,
    /// Bytes of headers (Ethernet to the end of TCP's or UDP's).
    pub header_len: u16,
    /// Where the TCP or UDP header starts: the partial checksum covers from here to the end.
    pub checksum_start: u16,
    /// Offset of the checksum field from `checksum_start` (16 for TCP, 6 for UDP).
    pub checksum_offset: u16,
    /// Segments joined.
    pub segments: u16,
}

/// A frame out of the coalescer: one segment as it came (`gso` is `None`: its bytes are
/// untouched), or a super-frame of several.
#[derive(Debug)]
pub struct Coalesced<'a> {
    /// The frame's bytes.
    pub frame: &'a [u8],
    /// For a super-frame, what the kernel must know about it.
    pub gso: Option<CoalescedGso>,
}

/// Joins consecutive TCP segments of one flow into super-frames, one at a time, in a buffer
/// kept from one to the next (no allocation once it has grown to 64 KiB).
///
/// ```
/// use switchyard::gro::TcpCoalescer;
///
/// let mut gro = TcpCoalescer::new();
/// // Not TCP: refused, and the caller sends the frame on as it is.
/// assert!(!gro.start([&[0u8; 60][..], &[]]));
/// assert!(gro.finish().is_none());
/// ```
#[derive(Debug, Default)]
pub struct TcpCoalescer {
    buffer: Vec<u8>,
    pending: Option<Pending>,
}

impl TcpCoalescer {
    /// An empty coalescer.
    pub fn new() -> TcpCoalescer {
        TcpCoalescer::default()
    }

    /// True while a super-frame is being built (since [`start`](Self::start) took a segment
    /// and until [`finish`](Self::finish)).
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Starts a super-frame with the frame given in two `parts` (its bytes are the first then
    /// the second), if it is a TCP segment that may be coalesced (rules in the [module
    /// docs](self)); false and nothing kept otherwise. A super-frame still pending is
    /// discarded: [`finish`](Self::finish) it first.
    pub fn start(&mut self, parts: [&[u8]; 2]) -> bool {
        self.pending = None;
        self.buffer.clear();
        let mut scratch = [0u8; HEAD];
        let len = parts[0].len() + parts[1].len();
        let head = head(parts, &mut scratch);
        let Some(layout) = layout(head, len) else {
            return false;
        };
        // The whole frame, Ethernet padding included, so that a lone segment leaves as it came.
        extend_range(&mut self.buffer, parts, 0, len);
        if !tcp_checksum_valid(head, &layout, &self.buffer[layout.payload..layout.end]) {
            self.buffer.clear();
            return false;
        }
        let (Some(seq), Some(id)) = (be32(head, layout.tcp + 4), be16(head, layout.ip + 4)) else {
            return false;
        };
        let mss = layout.payload_len();
        self.pending = Some(Pending {
            layout,
            mss,
            segments: 1,
            next_seq: seq.wrapping_add(mss as u32),
            first_id: id,
            fixed_id: None,
            // Padding after the IP packet leaves no room to append: a frame that small is
            // not worth joining anyway.
            closed: head[layout.tcp + 13] & TCP_PSH != 0 || len > layout.end,
        });
        true
    }

    /// Joins the frame in `parts` to the pending super-frame if it is the flow's next
    /// segment under the rules of the [module docs](self); false, and the super-frame
    /// unchanged, otherwise (then [`finish`](Self::finish) it and send or
    /// [`start`](Self::start) with this frame).
    pub fn merge(&mut self, parts: [&[u8]; 2]) -> bool {
        let Some(pending) = self.pending.as_mut() else {
            return false;
        };
        if pending.closed {
            return false;
        }
        let mut scratch = [0u8; HEAD];
        let len = parts[0].len() + parts[1].len();
        let head = head(parts, &mut scratch);
        let Some(layout) = layout(head, len) else {
            return false;
        };
        let first = pending.layout;
        if layout.ip != first.ip || layout.payload != first.payload || layout.ipv6 != first.ipv6 {
            return false;
        }
        let size = layout.payload_len();
        let ip_len_after =
            self.buffer.len() + size - if first.ipv6 { first.ip + 40 } else { first.ip };
        if size > pending.mss || ip_len_after > MAX_IP_LEN {
            return false;
        }
        let (ip, tcp) = (first.ip, first.tcp);
        let theirs = &head[..first.payload];
        let ours = &self.buffer[..first.payload];
        // Everything equal but the fields a segment changes (see the module docs).
        let equal = |range: core::ops::Range<usize>| theirs[range.clone()] == ours[range];
        let ip_equal = if first.ipv6 {
            equal(0..ip + 4) && equal(ip + 6..tcp + 4)
        } else {
            equal(0..ip + 2) && equal(ip + 6..ip + 10) && equal(ip + 12..tcp + 4)
        };
        let flags = theirs[tcp + 13];
        if !ip_equal
            || !equal(tcp + 8..tcp + 13)
            || flags & !TCP_PSH != ours[tcp + 13] & !TCP_PSH
            || !equal(tcp + 14..tcp + 16)
            || !equal(tcp + 18..first.payload)
            || be32(theirs, tcp + 4) != Some(pending.next_seq)
        {
            return false;
        }
        if !first.ipv6 {
            let Some(id) = be16(theirs, ip + 4) else {
                return false;
            };
            let counted = id == pending.first_id.wrapping_add(pending.segments);
            let dont_fragment = theirs[ip + 6] & 0x40 != 0;
            let fixed = id == pending.first_id && dont_fragment;
            let ok = match pending.fixed_id {
                None => counted || fixed,
                Some(true) => fixed,
                Some(false) => counted,
            };
            if !ok {
                return false;
            }
            if pending.fixed_id.is_none() {
                pending.fixed_id = Some(!counted);
            }
        }
        let before = self.buffer.len();
        extend_range(&mut self.buffer, parts, layout.payload, layout.end);
        if !tcp_checksum_valid(head, &layout, &self.buffer[before..]) {
            self.buffer.truncate(before);
            return false;
        }
        pending.segments += 1;
        pending.next_seq = pending.next_seq.wrapping_add(size as u32);
        if flags & TCP_PSH != 0 {
            self.buffer[tcp + 13] |= TCP_PSH;
            pending.closed = true;
        }
        if size < pending.mss {
            pending.closed = true;
        }
        true
    }

    /// Ends the pending super-frame and lends it out (valid until the next call on `self`);
    /// `None` if nothing is pending. A single segment comes out as it went in.
    pub fn finish(&mut self) -> Option<Coalesced<'_>> {
        let pending = self.pending.take()?;
        if pending.segments == 1 {
            return Some(Coalesced {
                frame: &self.buffer,
                gso: None,
            });
        }
        let Layout { ip, tcp, ipv6, .. } = pending.layout;
        finish_headers(&mut self.buffer, ip, tcp, ipv6, 6);
        Some(Coalesced {
            frame: &self.buffer,
            gso: Some(CoalescedGso {
                ipv6,
                udp: false,
                segment_size: pending.mss as u16,
                header_len: pending.layout.payload as u16,
                checksum_start: tcp as u16,
                checksum_offset: 16,
                segments: pending.segments,
            }),
        })
    }
}

/// The most datagrams in one UDP GSO super-frame (Linux's `UDP_MAX_SEGMENTS`).
const UDP_MAX_SEGMENTS: u16 = 64;

/// Where a UDP datagram's headers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UdpLayout {
    ip: usize,
    udp: usize,
    ipv6: bool,
}

/// The layout of a UDP datagram that may be joined: Ethernet (up to two VLAN tags), IPv4
/// (not a fragment) or IPv6 (no extension header), UDP, the IP packet and the UDP length
/// filling the frame exactly, some payload.
fn udp_layout(head: &[u8], len: usize) -> Option<UdpLayout> {
    let gso::IpLayout {
        ip,
        transport: udp,
        end,
        jumbo,
        ipv6,
    } = gso::locate(head, len, 17).ok()?;
    if jumbo || end != len {
        return None;
    }
    let udp_len = usize::from(be16(head, udp + 4)?);
    (udp + 8 <= head.len() && udp_len == len.checked_sub(udp)? && udp_len > 8)
        .then_some(UdpLayout { ip, udp, ipv6 })
}

/// The UDP super-frame being built.
#[derive(Debug, Clone, Copy)]
struct UdpPending {
    layout: UdpLayout,
    /// UDP payload bytes of the first datagram: the size of all but the last.
    size: usize,
    segments: u16,
    closed: bool,
}

/// Joins consecutive UDP datagrams of one flow (equal headers, equal sizes) into one UDP
/// GSO super-frame (`VIRTIO_NET_HDR_GSO_UDP_L4`), which the kernel cuts back into the same
/// datagrams, or carries whole as far as the next hop that needs them cut: the datagrams a
/// switch encapsulates from one TCP super-frame towards one VTEP, or a stream of equal
/// frames, leave in one system call and cross a veth as one packet.
///
/// The rules are those of a UDP GSO send (`UDP_SEGMENT`): every header byte equal to the
/// first datagram's except the IP lengths, the IPv4 identification and header checksum (the
/// kernel numbers the datagrams from the first's), the UDP length and checksum; every
/// datagram the size of the first but the last, which may be shorter and ends the
/// super-frame; at most 64 datagrams and 64 KiB of IP packet.
///
/// For datagrams this host builds: checksums are not verified. The super-frame carries a
/// partial UDP checksum (the kernel completes one per datagram), so the datagrams leave with
/// UDP checksums even over IPv4, where they may have had none (RFC 768 allows either; a
/// VXLAN receiver accepts both, RFC 7348 section 5).
///
/// ```
/// use switchyard::gro::UdpCoalescer;
///
/// let mut gso = UdpCoalescer::new();
/// assert!(!gso.start([&[0u8; 60][..], &[]])); // not UDP: sent on as it is
/// assert!(gso.finish().is_none());
/// ```
#[derive(Debug, Default)]
pub struct UdpCoalescer {
    buffer: Vec<u8>,
    pending: Option<UdpPending>,
}

impl UdpCoalescer {
    /// An empty coalescer.
    pub fn new() -> UdpCoalescer {
        UdpCoalescer::default()
    }

    /// True while a super-frame is being built.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Datagrams in the super-frame being built (0 if none).
    pub fn segments(&self) -> u16 {
        self.pending.map_or(0, |p| p.segments)
    }

    /// Starts a super-frame with the datagram in `parts`, if it is one that may be joined;
    /// false and nothing kept otherwise. A pending super-frame is discarded:
    /// [`finish`](Self::finish) it first.
    pub fn start(&mut self, parts: [&[u8]; 2]) -> bool {
        self.pending = None;
        self.buffer.clear();
        let mut scratch = [0u8; HEAD];
        let len = parts[0].len() + parts[1].len();
        let Some(layout) = udp_layout(head(parts, &mut scratch), len) else {
            return false;
        };
        extend_range(&mut self.buffer, parts, 0, len);
        self.pending = Some(UdpPending {
            layout,
            size: len - layout.udp - 8,
            segments: 1,
            closed: false,
        });
        true
    }

    /// Joins the datagram in `parts` to the pending super-frame if the rules allow; false,
    /// and the super-frame unchanged, otherwise.
    pub fn merge(&mut self, parts: [&[u8]; 2]) -> bool {
        let Some(pending) = self.pending.as_mut() else {
            return false;
        };
        if pending.closed || pending.segments >= UDP_MAX_SEGMENTS {
            return false;
        }
        let mut scratch = [0u8; HEAD];
        let len = parts[0].len() + parts[1].len();
        let head = head(parts, &mut scratch);
        let first = pending.layout;
        if udp_layout(head, len) != Some(first) {
            return false;
        }
        let size = len - first.udp - 8;
        let ip_start = if first.ipv6 { first.ip + 40 } else { first.ip };
        if size > pending.size || self.buffer.len() + size - ip_start > MAX_IP_LEN {
            return false;
        }
        let (ip, udp) = (first.ip, first.udp);
        let ours = &self.buffer[..udp + 8];
        let equal = |range: core::ops::Range<usize>| head[range.clone()] == ours[range];
        let ip_equal = if first.ipv6 {
            equal(0..ip + 4) && equal(ip + 6..udp)
        } else {
            equal(0..ip + 2) && equal(ip + 6..ip + 10) && equal(ip + 12..udp)
        };
        if !ip_equal || !equal(udp..udp + 4) {
            return false;
        }
        extend_range(&mut self.buffer, parts, udp + 8, len);
        pending.segments += 1;
        if size < pending.size {
            pending.closed = true;
        }
        true
    }

    /// Ends the pending super-frame and lends it out (valid until the next call on `self`);
    /// `None` if nothing is pending. A single datagram comes out as it went in.
    pub fn finish(&mut self) -> Option<Coalesced<'_>> {
        let pending = self.pending.take()?;
        if pending.segments == 1 {
            return Some(Coalesced {
                frame: &self.buffer,
                gso: None,
            });
        }
        let UdpLayout { ip, udp, ipv6 } = pending.layout;
        finish_headers(&mut self.buffer, ip, udp, ipv6, 17);
        Some(Coalesced {
            frame: &self.buffer,
            gso: Some(CoalescedGso {
                ipv6,
                udp: true,
                segment_size: pending.size as u16,
                header_len: (udp + 8) as u16,
                checksum_start: udp as u16,
                checksum_offset: 6,
                segments: pending.segments,
            }),
        })
    }
}

#[cfg(test)]
mod test {
    extern crate std;

    use std::vec;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::gso::TcpSegmenter;

    const SEQ: u32 = 0xffff_f000;

    /// A TCP super-frame built with etherparse (not our code): sequence number `seq`,
    /// `payload`, PSH if `push`, a timestamp option as Linux sends.
    fn super_frame(ipv6: bool, seq: u32, push: bool, payload: &[u8]) -> Vec<u8> {
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
        let mut tcp = ip
            .tcp(40000, 5201, seq, 501)
            .ack(77)
            .options(&[
                etherparse::TcpOptionElement::Noop,
                etherparse::TcpOptionElement::Noop,
                etherparse::TcpOptionElement::Timestamp(1234, 5678),
            ])
            .unwrap();
        if push {
            tcp = tcp.psh();
        }
        let mut frame = Vec::new();
        tcp.write(&mut frame, payload).unwrap();
        frame
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// The segments that `crate::gso` cuts `frame` into.
    fn segments(frame: &[u8], mss: u16) -> Vec<Vec<u8>> {
        let mut segmenter = TcpSegmenter::new(frame, mss).unwrap();
        let mut out = vec![0u8; segmenter.max_segment_len()];
        let mut all = Vec::new();
        while let Some(len) = segmenter.next_into(&mut out) {
            all.push(out[..len].to_vec());
        }
        all
    }

    /// Finishes the partial checksum of a coalesced super-frame as the kernel would.
    fn complete(frame: &[u8], gso: &CoalescedGso) -> Vec<u8> {
        let mut frame = frame.to_vec();
        let start = usize::from(gso.checksum_start);
        let at = start + usize::from(gso.checksum_offset);
        let sum = !checksum::fold(u32::from(checksum::sum_bytes(&frame[start..])));
        frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        frame
    }

    /// Splits `frame` into two parts at `at`.
    fn split(frame: &[u8], at: usize) -> [&[u8]; 2] {
        let (a, b) = frame.split_at(at.min(frame.len()));
        [a, b]
    }

    /// Coalesces `frames` (each split at `at`) and returns what came out, in order: the
    /// completed bytes and the GSO description of each.
    fn coalesce(frames: &[Vec<u8>], at: usize) -> Vec<(Vec<u8>, Option<CoalescedGso>)> {
        let mut gro = TcpCoalescer::new();
        let mut out = Vec::new();
        let take = |gro: &mut TcpCoalescer, out: &mut Vec<_>| {
            if let Some(c) = gro.finish() {
                let bytes = match &c.gso {
                    Some(gso) => complete(c.frame, gso),
                    None => c.frame.to_vec(),
                };
                out.push((bytes, c.gso));
            }
        };
        for frame in frames {
            if gro.merge(split(frame, at)) {
                continue;
            }
            take(&mut gro, &mut out);
            if !gro.start(split(frame, at)) {
                out.push((frame.clone(), None));
            }
        }
        take(&mut gro, &mut out);
        out
    }

    /// Cut by `crate::gso`, joined here: the original super-frame again, byte for byte, once
    /// the kernel completes the checksum; also with the frames given in two parts split
    /// anywhere in the headers or the payload.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "tens of KB a case through byte-level code: minutes under miri, and gro has no unsafe code"
    )]
    fn segments_join_into_the_super_frame_they_were_cut_from() {
        for ipv6 in [false, true] {
            let frame = super_frame(ipv6, SEQ, true, &payload(5000));
            let cut = segments(&frame, 1448);
            assert_eq!(cut.len(), 4);
            let header_len = if ipv6 { 14 + 40 + 32 } else { 14 + 20 + 32 };
            for at in [0, 1, 13, 14, 40, header_len - 1, header_len, 200, 10_000] {
                let out = coalesce(&cut, at);
                assert_eq!(out.len(), 1, "ipv6 {ipv6}, split at {at}");
                let (bytes, gso) = &out[0];
                assert_eq!(bytes, &frame, "ipv6 {ipv6}, split at {at}");
                assert_eq!(
                    *gso,
                    Some(CoalescedGso {
                        ipv6,
                        udp: false,
                        segment_size: 1448,
                        header_len: header_len as u16,
                        checksum_start: header_len as u16 - 32,
                        checksum_offset: 16,
                        segments: 4,
                    })
                );
            }
        }
    }

    /// A lone segment comes out untouched and without GSO.
    #[test]
    fn a_single_segment_comes_out_as_it_went_in() {
        let frame = super_frame(false, SEQ, false, &payload(100));
        let mut gro = TcpCoalescer::new();
        assert!(gro.start([&frame, &[]]));
        assert!(gro.is_pending());
        let out = gro.finish().unwrap();
        assert_eq!(out.frame, &frame[..]);
        assert_eq!(out.gso, None);
        assert!(!gro.is_pending());
        assert!(gro.finish().is_none());

        // A small segment with padding after its IP packet keeps it, and takes no
        // other segment after it.
        let mut padded = super_frame(false, SEQ, false, &payload(2));
        let next = super_frame(false, SEQ + 2, false, &payload(2));
        padded.resize(80, 0);
        assert!(gro.start([&padded, &[]]));
        assert!(!gro.merge([&next, &[]]));
        assert_eq!(gro.finish().unwrap().frame, &padded[..]);
    }

    /// Rewrites the IPv4 header checksum and the TCP checksum of a segment after a test
    /// changed it (etherparse computes them).
    fn fix_checksums(frame: &mut [u8]) {
        let copy = frame.to_vec();
        let parsed = etherparse::SlicedPacket::from_ethernet(&copy).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &parsed.net else {
            panic!("IPv4")
        };
        let mut header = ip.header().to_header();
        header.header_checksum = header.calc_header_checksum();
        frame[24..26].copy_from_slice(&header.header_checksum.to_be_bytes());
        // A fragment has no transport header to etherparse: its IPv4 header only.
        if let Some(etherparse::TransportSlice::Tcp(tcp)) = &parsed.transport {
            let sum = tcp
                .to_header()
                .calc_checksum_ipv4(&header, tcp.payload())
                .unwrap();
            frame[34 + 16..34 + 18].copy_from_slice(&sum.to_be_bytes());
        }
    }

    /// Each rule of the module docs refuses to join, where the unchanged segment joins.
    #[test]
    fn segments_that_break_a_rule_are_not_joined() {
        let frame = super_frame(false, SEQ, false, &payload(3 * 1448));
        let cut = segments(&frame, 1448);
        let joins = |second: &[u8]| {
            let mut gro = TcpCoalescer::new();
            assert!(gro.start([&cut[0], &[]]));
            gro.merge([second, &[]])
        };
        assert!(joins(&cut[1]), "the unchanged second segment joins");
        assert!(!joins(&cut[2]), "a gap in the sequence");
        assert!(!joins(&cut[0]), "the same segment again");

        let changed = |at: usize, value: u8| {
            let mut segment = cut[1].clone();
            segment[at] = value;
            fix_checksums(&mut segment);
            segment
        };
        assert!(!joins(&changed(15, 0x03)), "CE-marked (another TOS byte)");
        assert!(!joins(&changed(22, 63)), "another TTL");
        assert!(
            !joins(&changed(19, 9)),
            "an IPv4 identification out of order"
        );
        assert!(!joins(&changed(34 + 1, 0x42)), "another source port");
        assert!(!joins(&changed(34 + 11, 78)), "another acknowledgement");
        assert!(!joins(&changed(34 + 15, 0)), "another window");
        assert!(!joins(&changed(34 + 25, 9)), "another timestamp");
        assert!(!joins(&changed(34 + 13, 0x11)), "FIN");
        assert!(!joins(&changed(5, 9)), "another destination MAC");

        let mut corrupt = cut[1].clone();
        corrupt[100] ^= 1;
        assert!(!joins(&corrupt), "a bad TCP checksum");
        let mut gro = TcpCoalescer::new();
        assert!(
            !gro.start([&corrupt, &[]]),
            "a bad TCP checksum cannot start one"
        );
        let mut bad_header = cut[1].clone();
        bad_header[24] ^= 1;
        assert!(!joins(&bad_header), "a bad IPv4 header checksum");
    }

    /// A PSH, or a segment shorter than the first, ends the super-frame: the flow's next
    /// segment starts another one.
    #[test]
    fn push_and_short_segments_end_a_super_frame() {
        for (push, len) in [(true, 2 * 1448), (false, 1448 + 100)] {
            let first = segments(&super_frame(false, SEQ, push, &payload(len)), 1448);
            let next = super_frame(false, SEQ.wrapping_add(len as u32), false, &payload(1448));
            let mut gro = TcpCoalescer::new();
            assert!(gro.start([&first[0], &[]]));
            assert!(gro.merge([&first[1], &[]]));
            assert!(!gro.merge([&next, &[]]), "push {push}, {len} bytes");
        }
        // The control: without either, the next segment joins.
        let first = segments(&super_frame(false, SEQ, false, &payload(2 * 1448)), 1448);
        let next = super_frame(false, SEQ.wrapping_add(2 * 1448), false, &payload(1448));
        let mut gro = TcpCoalescer::new();
        assert!(gro.start([&first[0], &[]]));
        assert!(gro.merge([&first[1], &[]]));
        let next = segments(&next, 1448);
        // etherparse numbers every frame's identification from 0: give it the third's.
        let mut next = next[0].clone();
        next[18..20].copy_from_slice(&2u16.to_be_bytes());
        fix_checksums(&mut next);
        assert!(gro.merge([&next, &[]]));
    }

    /// What is not a TCP data segment with ACK (and PSH, ECE) only never starts one.
    #[test]
    fn only_tcp_data_segments_are_taken() {
        let mut gro = TcpCoalescer::new();
        let ack_only = super_frame(false, SEQ, false, &[]);
        assert!(!gro.start([&ack_only, &[]]), "no payload");
        let mut syn = super_frame(false, SEQ, false, &payload(10));
        syn[34 + 13] = 0x12;
        fix_checksums(&mut syn);
        assert!(!gro.start([&syn, &[]]), "SYN");
        let mut fragment = super_frame(false, SEQ, false, &payload(10));
        fragment[20] = 0x20; // more fragments
        fix_checksums(&mut fragment);
        assert!(!gro.start([&fragment, &[]]), "a fragment");
        let mut udp = super_frame(false, SEQ, false, &payload(10));
        udp[23] = 17;
        assert!(!gro.start([&udp, &[]]), "UDP");
        assert!(!gro.start([&udp[..30], &[]]), "truncated");
        assert!(!gro.start([&[], &[]]), "empty");
        assert!(!gro.is_pending());
    }

    /// A super-frame stays within 64 KiB of IP packet: the segment that would pass it
    /// starts the next.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "tens of KB a case through byte-level code: minutes under miri, and gro has no unsafe code"
    )]
    fn super_frames_stay_within_64_kib() {
        // 120 segments of one flow, from three sender super-frames of 40 segments.
        let chunk = 40 * 1448;
        let frames: Vec<Vec<u8>> = (0..3)
            .flat_map(|i| {
                let seq = SEQ.wrapping_add((i * chunk) as u32);
                segments(&super_frame(false, seq, false, &payload(chunk)), 1448)
            })
            .enumerate()
            .map(|(i, mut s)| {
                // Identifications as a sender numbers them.
                s[18..20].copy_from_slice(&(i as u16).to_be_bytes());
                fix_checksums(&mut s);
                s
            })
            .collect();
        let out = coalesce(&frames, 0);
        let sizes: Vec<u16> = out.iter().map(|(_, g)| g.unwrap().segments).collect();
        assert_eq!(sizes, [45, 45, 30]);
        for (bytes, _) in &out {
            assert!(bytes.len() - 14 <= MAX_IP_LEN);
        }
        let joined: Vec<u8> = out.iter().flat_map(|(b, _)| b[66..].to_vec()).collect();
        let sent: Vec<u8> = (0..3).flat_map(|_| payload(chunk)).collect();
        assert_eq!(joined, sent);
    }

    /// A VXLAN-like datagram built with etherparse: UDP 49152 -> 4789, IPv4 identification
    /// `id`, `payload`; its UDP checksum zeroed over IPv4 if `zero_checksum`.
    fn datagram(ipv6: bool, id: u16, payload: &[u8], zero_checksum: bool) -> Vec<u8> {
        let eth = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut frame = Vec::new();
        if ipv6 {
            eth.ipv6(
                [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                64,
            )
            .udp(49152, 4789)
            .write(&mut frame, payload)
            .unwrap();
        } else {
            let mut header = etherparse::Ipv4Header::new(
                payload.len() as u16 + 8,
                64,
                etherparse::IpNumber::UDP,
                [198, 18, 0, 1],
                [198, 18, 0, 2],
            )
            .unwrap();
            header.identification = id;
            header.dont_fragment = true;
            eth.ip(etherparse::IpHeaders::Ipv4(header, Default::default()))
                .udp(49152, 4789)
                .write(&mut frame, payload)
                .unwrap();
            if zero_checksum {
                frame[40..42].fill(0);
            }
        }
        frame
    }

    /// Joins `frames` with a `UdpCoalescer` (each split at `at`), then cuts every
    /// super-frame with `gso::UdpSegmenter`: what a switch sends and its peer receives.
    fn join_and_cut(frames: &[Vec<u8>], at: usize, zero_ipv4: bool) -> (Vec<Vec<u8>>, Vec<u16>) {
        let mut join = UdpCoalescer::new();
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        let take = |join: &mut UdpCoalescer, out: &mut Vec<Vec<u8>>, sizes: &mut Vec<u16>| {
            let Some(c) = join.finish() else { return };
            match c.gso {
                None => {
                    sizes.push(1);
                    out.push(c.frame.to_vec());
                }
                Some(gso) => {
                    assert!(gso.udp);
                    assert_eq!(gso.checksum_offset, 6);
                    sizes.push(gso.segments);
                    let mut cut =
                        crate::gso::UdpSegmenter::new(c.frame, gso.segment_size, zero_ipv4)
                            .unwrap();
                    assert_eq!(cut.segment_count(), usize::from(gso.segments));
                    let mut buffer = vec![0u8; cut.max_segment_len()];
                    while let Some(len) = cut.next_into(&mut buffer) {
                        out.push(buffer[..len].to_vec());
                    }
                }
            }
        };
        for frame in frames {
            if join.merge(split(frame, at)) {
                continue;
            }
            take(&mut join, &mut out, &mut sizes);
            if !join.start(split(frame, at)) {
                sizes.push(0);
                out.push(frame.clone());
            }
        }
        take(&mut join, &mut out, &mut sizes);
        (out, sizes)
    }

    /// Datagrams joined, then cut by `gso::UdpSegmenter`, are the datagrams again byte for
    /// byte: consecutive identifications, lengths, checksums computed (IPv6, IPv4 on
    /// request) or left at zero (IPv4); a shorter last one ends a super-frame.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "tens of KB a case through byte-level code: minutes under miri, and gro has no unsafe code"
    )]
    fn datagrams_joined_and_cut_are_the_datagrams_again() {
        for (ipv6, zero) in [(false, true), (false, false), (true, false)] {
            let sizes = [700, 700, 700, 300, 700, 700];
            let frames: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let mut body = payload(n);
                    body[0] = i as u8;
                    datagram(ipv6, 100 + i as u16, &body, zero)
                })
                .collect();
            for at in [0, 14, 20, 43, 100, 5000] {
                let (out, joined) = join_and_cut(&frames, at, zero);
                assert_eq!(out, frames, "ipv6 {ipv6}, zero {zero}, split at {at}");
                // 700 x 3 and the 300 that ends it; then 700 x 2 (their identifications
                // continue from the first's count only within a super-frame).
                assert_eq!(joined, [4, 2], "ipv6 {ipv6}");
            }
        }
    }

    /// What a UDP GSO send may not join is not joined; at most 64 datagrams.
    #[test]
    fn udp_datagrams_that_differ_are_not_joined() {
        let first = datagram(false, 1, &payload(500), true);
        let joins = |second: &[u8]| {
            let mut join = UdpCoalescer::new();
            assert!(join.start([&first, &[]]));
            join.merge([second, &[]])
        };
        assert!(joins(&datagram(false, 2, &payload(500), true)));
        assert!(
            joins(&datagram(false, 2, &payload(499), true)),
            "a shorter last one"
        );
        assert!(
            !joins(&datagram(false, 2, &payload(501), true)),
            "a longer one"
        );
        let mut other = datagram(false, 2, &payload(500), true);
        other[37] ^= 1; // destination port
        assert!(!joins(&other), "another destination port");
        let mut other = datagram(false, 2, &payload(500), true);
        other[15] = 0x03; // TOS: CE
        assert!(!joins(&other), "another TOS");
        let mut other = datagram(false, 2, &payload(500), true);
        other[33] ^= 1; // destination address
        assert!(!joins(&other), "another destination");
        assert!(
            !joins(&datagram(true, 2, &payload(500), true)),
            "IPv6 after IPv4"
        );
        let mut short = datagram(false, 2, &payload(500), true);
        short.push(0);
        assert!(!joins(&short), "a frame longer than its IP packet");

        let mut join = UdpCoalescer::new();
        assert!(join.start([&first, &[]]));
        for _ in 1..64 {
            assert!(join.merge([&first, &[]]));
        }
        assert!(!join.merge([&first, &[]]), "a 65th");
        assert_eq!(join.segments(), 64);
        let out = join.finish().unwrap();
        let gso = out.gso.unwrap();
        assert_eq!(
            (
                gso.segments,
                gso.segment_size,
                gso.header_len,
                gso.checksum_start
            ),
            (64, 500, 42, 34)
        );
        assert_eq!(out.frame.len(), 42 + 64 * 500);
    }

    proptest! {
        /// Any super-frame cut by `crate::gso` at any segment size, given in two parts split
        /// anywhere, joins back into frames whose payloads put together are the original's,
        /// each with a valid checksum once completed, none above 64 KiB.
        #[test]
        #[cfg_attr(miri, ignore = "tens of KB a case through byte-level code: minutes under miri, and gro has no unsafe code")]
        fn cut_and_joined_is_the_original(
            ipv6 in any::<bool>(),
            len in 1usize..20_000,
            mss in 1u16..3000,
            at in 0usize..3000,
        ) {
            let frame = super_frame(ipv6, SEQ, true, &payload(len));
            let cut = segments(&frame, mss);
            let out = coalesce(&cut, at);
            let header_len = if ipv6 { 86 } else { 66 };
            let mut joined = Vec::new();
            for (bytes, gso) in &out {
                prop_assert!(bytes.len() - 14 <= MAX_IP_LEN);
                let parsed = etherparse::SlicedPacket::from_ethernet(bytes).unwrap();
                let Some(etherparse::TransportSlice::Tcp(tcp)) = &parsed.transport else {
                    panic!("TCP")
                };
                let expected = match &parsed.net {
                    Some(etherparse::NetSlice::Ipv4(ip)) => {
                        let header = ip.header().to_header();
                        prop_assert_eq!(header.header_checksum, header.calc_header_checksum());
                        tcp.to_header().calc_checksum_ipv4(&header, tcp.payload()).unwrap()
                    }
                    Some(etherparse::NetSlice::Ipv6(ip)) => tcp
                        .to_header()
                        .calc_checksum_ipv6(&ip.header().to_header(), tcp.payload())
                        .unwrap(),
                    _ => panic!("IP"),
                };
                prop_assert_eq!(tcp.checksum(), expected);
                if let Some(gso) = gso {
                    prop_assert_eq!(gso.segment_size, mss);
                    prop_assert!(usize::from(gso.segments) * usize::from(mss) >= tcp.payload().len());
                }
                joined.extend_from_slice(&bytes[header_len..]);
            }
            prop_assert_eq!(joined, payload(len));
            // A sender's super-frame below 64 KiB joins back whole.
            prop_assert_eq!(out.len(), 1);
        }
    }
}
