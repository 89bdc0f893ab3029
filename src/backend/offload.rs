//! Offloads as the kernel hands them over: the virtio-net header that `PACKET_VNET_HDR` puts
//! in front of each frame (`include/uapi/linux/virtio_net.h`), read into a [`FrameMeta`], and
//! the software completion of a partial checksum.
//!
//! A Linux peer behind a veth sends with checksum offload and TSO on: small TCP and UDP
//! segments arrive with only the pseudo-header sum in their checksum field, and TCP arrives
//! as GSO super-frames of up to 64 KB. Forwarding either as plain bytes would put a bad
//! checksum, or a frame far above the MTU, on the next link; the worker loop completes the
//! former and refuses (counted) the latter ([`LoopStats`](super::LoopStats)).

use crate::wire::checksum;

/// Length of `struct virtio_net_hdr` (without the `num_buffers` of the mergeable variant).
pub const VNET_HEADER_LEN: usize = 10;

// virtio_net_hdr.flags
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
// virtio_net_hdr.gso_type
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// What the kernel says about a received frame beyond its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// The frame's transport checksum is partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`,
    /// `TP_STATUS_CSUMNOTREADY`): it holds the pseudo-header sum only.
    pub partial_checksum: Option<PartialChecksum>,
    /// The frame is a GSO super-frame, to be cut into segments before it goes on a wire.
    pub gso: Option<Gso>,
    /// The kernel verified the frame's checksums (`VIRTIO_NET_HDR_F_DATA_VALID`).
    pub checksum_valid: bool,
}

impl FrameMeta {
    /// Reads a virtio-net header (little-endian, as `PACKET_VNET_HDR` writes it on a
    /// little-endian host; the legacy layout). `None` if `header` is shorter than
    /// [`VNET_HEADER_LEN`].
    pub fn from_vnet_header(header: &[u8]) -> Option<FrameMeta> {
        let header: &[u8; VNET_HEADER_LEN] = header.get(..VNET_HEADER_LEN)?.try_into().ok()?;
        let [flags, gso_type, h0, h1, s0, s1, c0, c1, o0, o1] = *header;
        let partial_checksum =
            (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0).then_some(PartialChecksum {
                start: u16::from_le_bytes([c0, c1]),
                offset: u16::from_le_bytes([o0, o1]),
            });
        let kind = match gso_type & !VIRTIO_NET_HDR_GSO_ECN {
            VIRTIO_NET_HDR_GSO_NONE => None,
            VIRTIO_NET_HDR_GSO_TCPV4 => Some(GsoKind::TcpV4),
            VIRTIO_NET_HDR_GSO_TCPV6 => Some(GsoKind::TcpV6),
            VIRTIO_NET_HDR_GSO_UDP => Some(GsoKind::Udp),
            VIRTIO_NET_HDR_GSO_UDP_L4 => Some(GsoKind::UdpL4),
            other => Some(GsoKind::Other(other)),
        };
        let gso = kind.map(|kind| Gso {
            kind,
            ecn: gso_type & VIRTIO_NET_HDR_GSO_ECN != 0,
            segment_size: u16::from_le_bytes([s0, s1]),
            header_len: u16::from_le_bytes([h0, h1]),
        });
        Some(FrameMeta {
            partial_checksum,
            gso,
            checksum_valid: flags & VIRTIO_NET_HDR_F_DATA_VALID != 0,
        })
    }

    /// True if the frame can go on a wire as it is (no checksum to complete, no GSO).
    pub fn is_plain(&self) -> bool {
        self.partial_checksum.is_none() && self.gso.is_none()
    }

    /// The metadata of the same bytes at `to` instead of `from` (offsets move by `to - from`):
    /// for a frame the switch sends as a new header then a range of the received frame.
    /// `None` if an offset would fall before the start of the frame or overflow.
    pub fn moved(&self, from: usize, to: usize) -> Option<FrameMeta> {
        let shift = |offset: u16| -> Option<u16> {
            let offset = usize::from(offset).checked_sub(from)?.checked_add(to)?;
            u16::try_from(offset).ok()
        };
        let mut meta = *self;
        if let Some(partial) = meta.partial_checksum.as_mut() {
            partial.start = shift(partial.start)?;
        }
        if let Some(gso) = meta.gso.as_mut() {
            gso.header_len = shift(gso.header_len)?;
        }
        Some(meta)
    }

    /// The virtio-net header that asks the kernel for these offloads (the inverse of
    /// [`FrameMeta::from_vnet_header`]); `hdr_len` is `frame_len` without GSO (the kernel
    /// then copies the frame rather than reference the buffer's page).
    pub fn to_vnet_header(&self, frame_len: usize) -> [u8; VNET_HEADER_LEN] {
        let mut header = [0u8; VNET_HEADER_LEN];
        let header_len = match self.gso {
            Some(gso) => {
                header[1] = match gso.kind {
                    GsoKind::TcpV4 => VIRTIO_NET_HDR_GSO_TCPV4,
                    GsoKind::TcpV6 => VIRTIO_NET_HDR_GSO_TCPV6,
                    GsoKind::Udp => VIRTIO_NET_HDR_GSO_UDP,
                    GsoKind::UdpL4 => VIRTIO_NET_HDR_GSO_UDP_L4,
                    GsoKind::Other(other) => other,
                } | if gso.ecn { VIRTIO_NET_HDR_GSO_ECN } else { 0 };
                header[4..6].copy_from_slice(&gso.segment_size.to_le_bytes());
                gso.header_len
            }
            None => u16::try_from(frame_len).unwrap_or(u16::MAX),
        };
        header[2..4].copy_from_slice(&header_len.to_le_bytes());
        if let Some(partial) = self.partial_checksum {
            header[0] |= VIRTIO_NET_HDR_F_NEEDS_CSUM;
            header[6..8].copy_from_slice(&partial.start.to_le_bytes());
            header[8..10].copy_from_slice(&partial.offset.to_le_bytes());
        }
        header
    }
}

impl From<crate::gro::CoalescedGso> for FrameMeta {
    /// What to tell the kernel about a frame joined by [`crate::gro`]: a TCP or UDP L4 GSO
    /// super-frame with a partial checksum.
    fn from(joined: crate::gro::CoalescedGso) -> FrameMeta {
        FrameMeta {
            partial_checksum: Some(PartialChecksum {
                start: joined.checksum_start,
                offset: joined.checksum_offset,
            }),
            gso: Some(Gso {
                kind: match (joined.udp, joined.ipv6) {
                    (true, _) => GsoKind::UdpL4,
                    (false, false) => GsoKind::TcpV4,
                    (false, true) => GsoKind::TcpV6,
                },
                ecn: false,
                segment_size: joined.segment_size,
                header_len: joined.header_len,
            }),
            checksum_valid: false,
        }
    }
}

/// A checksum left for the sender to finish (`CHECKSUM_PARTIAL`): the field at
/// `start + offset` holds the pseudo-header sum, and the checksum covers the bytes from
/// `start` to the frame's end. Offsets are from the start of the Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialChecksum {
    /// Where the checksummed bytes start (the transport header).
    pub start: u16,
    /// Where the checksum field is, from `start` (16 for TCP, 6 for UDP).
    pub offset: u16,
}

impl PartialChecksum {
    /// Finishes the checksum in `frame` as the kernel's `skb_checksum_help` would (a zero
    /// result is written as 0xffff, which UDP needs and TCP accepts). False, and `frame`
    /// unchanged, if the offsets do not fit in it.
    pub fn complete(self, frame: &mut [u8]) -> bool {
        let start = usize::from(self.start);
        let field = start + usize::from(self.offset);
        if field + 2 > frame.len() {
            return false;
        }
        let Some(covered) = frame.get(start..) else {
            return false;
        };
        let sum = !checksum::sum_bytes(covered);
        let sum = if sum == 0 { 0xffff } else { sum };
        match frame.get_mut(field..field + 2) {
            Some(bytes) => {
                bytes.copy_from_slice(&sum.to_be_bytes());
                true
            }
            None => false,
        }
    }
}

/// A GSO super-frame: one transport header and up to 64 KB of payload, to be sent as
/// segments of `segment_size` payload bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    /// The protocol whose segmentation the frame needs.
    pub kind: GsoKind,
    /// ECN: the sender set CWR and the segments must carry it as the kernel's TSO does.
    pub ecn: bool,
    /// Payload bytes per segment (the MSS for TCP).
    pub segment_size: u16,
    /// Length of the headers in front of the payload, as the kernel gives it (a hint:
    /// a segmenter must parse the headers itself).
    pub header_len: u16,
}

/// The GSO types of `virtio_net_hdr.gso_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GsoKind {
    /// TCP over IPv4 (`VIRTIO_NET_HDR_GSO_TCPV4`).
    TcpV4,
    /// TCP over IPv6 (`VIRTIO_NET_HDR_GSO_TCPV6`).
    TcpV6,
    /// UDP fragmentation offload (`VIRTIO_NET_HDR_GSO_UDP`, obsolete).
    Udp,
    /// UDP segmentation (`VIRTIO_NET_HDR_GSO_UDP_L4`).
    UdpL4,
    /// A type this code does not know.
    Other(u8),
}

#[cfg(test)]
mod test {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn reads_a_tcpv4_gso_header() {
        // What the kernel writes for a 3-segment IPv4 TCP super-frame from a veth peer:
        // NEEDS_CSUM, TCPV4, hdr_len 66, gso_size 1448, csum_start 34, csum_offset 16.
        let header = [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0];
        let meta = FrameMeta::from_vnet_header(&header).unwrap();
        assert_eq!(
            meta.partial_checksum,
            Some(PartialChecksum {
                start: 34,
                offset: 16
            })
        );
        assert_eq!(
            meta.gso,
            Some(Gso {
                kind: GsoKind::TcpV4,
                ecn: false,
                segment_size: 1448,
                header_len: 66
            })
        );
        assert!(!meta.checksum_valid);
        assert!(!meta.is_plain());
    }

    #[test]
    fn vnet_headers_round_trip_and_move() {
        let header = [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0];
        let meta = FrameMeta::from_vnet_header(&header).unwrap();
        assert_eq!(meta.to_vnet_header(9000), header);
        // The same bytes behind a 50-byte header instead of 0..: offsets 50 further.
        let moved = meta.moved(0, 50).unwrap();
        assert_eq!(
            moved.to_vnet_header(0),
            [1, 1, 116, 0, 0xa8, 0x05, 84, 0, 16, 0]
        );
        // A trunk tag taken out (payload from byte 4 of the received frame, after a
        // 16-byte header of MACs and tag): +12.
        assert_eq!(
            meta.moved(4, 16).unwrap().partial_checksum.unwrap().start,
            46
        );
        assert_eq!(meta.moved(40, 0), None, "checksum start before the payload");
        // Plain: hdr_len is the frame.
        assert_eq!(
            FrameMeta::default().to_vnet_header(64),
            [0, 0, 64, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn plain_and_short_headers() {
        let meta = FrameMeta::from_vnet_header(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert!(meta.is_plain());
        assert!(meta.checksum_valid);
        assert_eq!(FrameMeta::from_vnet_header(&[0; 9]), None);
        let ecn = FrameMeta::from_vnet_header(&[0, 0x84, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(
            ecn.gso.map(|g| (g.kind, g.ecn)),
            Some((GsoKind::TcpV6, true))
        );
    }

    /// An IPv4 UDP frame checked against etherparse (not our code): the partial checksum
    /// (pseudo-header sum only), completed, equals the full checksum etherparse computes.
    #[test]
    fn completes_a_partial_udp_checksum() {
        let payload = b"switchyard partial checksum";
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .udp(4000, 4789);
        let mut full = Vec::new();
        builder.write(&mut full, payload).unwrap();
        let expected = u16::from_be_bytes([full[40], full[41]]);

        // The sender's view with offload on: the field holds the folded pseudo-header sum.
        let mut partial = full.clone();
        let pseudo = checksum::combine(&[checksum::pseudo_header_v4(
            &smoltcp::wire::Ipv4Address::new(198, 18, 0, 1),
            &smoltcp::wire::Ipv4Address::new(198, 18, 0, 2),
            smoltcp::wire::IpProtocol::Udp,
            (8 + payload.len()) as u32,
        )]);
        partial[40..42].copy_from_slice(&pseudo.to_be_bytes());
        assert!(PartialChecksum {
            start: 34,
            offset: 6
        }
        .complete(&mut partial));
        assert_eq!(u16::from_be_bytes([partial[40], partial[41]]), expected);
        assert_eq!(partial, full);

        // Offsets beyond the frame: refused, frame untouched.
        let before = partial.clone();
        assert!(!PartialChecksum {
            start: 60,
            offset: 16
        }
        .complete(&mut partial));
        assert_eq!(partial, before);
    }
}
