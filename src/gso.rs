//! Software segmentation of TCP super-frames (GSO/TSO done by hand), for frames a Linux peer
//! handed over as one GSO frame of up to 64 KB (a veth with TSO on, read with
//! `PACKET_VNET_HDR`) that must leave as frames that fit the MTU.
//!
//! What the kernel's `tcp_gso_segment` / `inet_gso_segment` / `ipv6_gso_segment` do, for the
//! frames a switch sees: Ethernet, up to two VLAN tags, IPv4 (options allowed) or IPv6 (no
//! extension headers), TCP. Each segment gets the headers of the super-frame with: the IPv4
//! total length, a consecutive identification and a new header checksum; the IPv6 payload
//! length; the TCP sequence number advanced by the payload before it; FIN and PSH only on the
//! last segment and CWR only on the first (RFC 3168 section 6.1.2: CWR on one segment); and a
//! complete TCP checksum (RFC 9293 section 3.1), whatever the super-frame's checksum held
//! (partial, as offload leaves it).
//!
//! UDP GSO super-frames (a `UDP_SEGMENT` send, or VXLAN datagrams a switch joined for one
//! system call) are cut by [`UdpSegmenter`] as the kernel's `__udp_gso_segment` does.
//!
//! No allocation: [`TcpSegmenter::next_into`] writes one segment into the caller's buffer.

use crate::wire::checksum;

/// Why a frame cannot be segmented here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GsoError {
    /// Headers cut short, or lengths that do not fit the frame.
    Truncated,
    /// Not Ethernet + IPv4/IPv6 + TCP (an IPv6 extension header, another protocol).
    NotTcp,
    /// Not Ethernet + IPv4/IPv6 + UDP, for [`UdpSegmenter`].
    NotUdp,
    /// An IPv4 fragment: never a GSO frame.
    Fragment,
    /// A segment size of 0.
    BadSegmentSize,
}

impl core::fmt::Display for GsoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            GsoError::Truncated => "GSO frame truncated",
            GsoError::NotTcp => "GSO frame is not Ethernet/IP/TCP",
            GsoError::NotUdp => "GSO frame is not Ethernet/IP/UDP",
            GsoError::Fragment => "GSO frame is an IP fragment",
            GsoError::BadSegmentSize => "GSO segment size 0",
        })
    }
}

impl core::error::Error for GsoError {}

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Cuts one TCP super-frame into segments of at most `mss` payload bytes.
#[derive(Debug, Clone)]
pub struct TcpSegmenter<'f> {
    frame: &'f [u8],
    /// Start of the IP header, of the TCP header, of the payload; end of the IP packet.
    ip: usize,
    tcp: usize,
    payload: usize,
    end: usize,
    ipv6: bool,
    mss: usize,
    /// Payload bytes already cut.
    done: usize,
    index: u16,
}

fn read_u16(data: &[u8], at: usize) -> Result<u16, GsoError> {
    match data.get(at..at + 2) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => Err(GsoError::Truncated),
    }
}

/// Where a frame's IP and transport headers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpLayout {
    /// Start of the IP header, and of the transport header.
    pub ip: usize,
    pub transport: usize,
    /// End of the IP packet: from its length field, or the frame's end where that is 0
    /// (Linux's BIG TCP writes 0 for packets above 64 KB: then `jumbo`).
    pub end: usize,
    pub jumbo: bool,
    pub ipv6: bool,
}

/// Reads the headers of a frame of `len` bytes whose first bytes are `head`: Ethernet, up to
/// two VLAN tags, IPv4 (options allowed, not a fragment) or IPv6 (no extension header)
/// carrying `protocol` (6 TCP, 17 UDP).
pub(crate) fn locate(head: &[u8], len: usize, protocol: u8) -> Result<IpLayout, GsoError> {
    let other = if protocol == 6 {
        GsoError::NotTcp
    } else {
        GsoError::NotUdp
    };
    let mut ip = 14;
    let mut ethertype = read_u16(head, 12)?;
    for _ in 0..2 {
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            ethertype = read_u16(head, ip + 2)?;
            ip += 4;
        }
    }
    let (transport, length, ipv6) = match ethertype {
        0x0800 => {
            let version_ihl = *head.get(ip).ok_or(GsoError::Truncated)?;
            let header_len = usize::from(version_ihl & 0x0f) * 4;
            if version_ihl >> 4 != 4 || header_len < 20 || head.get(ip + 9) != Some(&protocol) {
                return Err(other);
            }
            if read_u16(head, ip + 6)? & 0x3fff != 0 {
                return Err(GsoError::Fragment);
            }
            let total = usize::from(read_u16(head, ip + 2)?);
            (ip + header_len, (total != 0).then_some(ip + total), false)
        }
        0x86dd => {
            if head.get(ip).map(|v| v >> 4) != Some(6) || head.get(ip + 6) != Some(&protocol) {
                return Err(other);
            }
            let payload = usize::from(read_u16(head, ip + 4)?);
            (ip + 40, (payload != 0).then_some(ip + 40 + payload), true)
        }
        _ => return Err(other),
    };
    let end = length.unwrap_or(len);
    if transport > end || end > len {
        return Err(GsoError::Truncated);
    }
    Ok(IpLayout {
        ip,
        transport,
        end,
        jumbo: length.is_none(),
        ipv6,
    })
}

impl<'f> TcpSegmenter<'f> {
    /// Reads the headers of `frame` (an Ethernet frame) for segments of `mss` payload bytes.
    pub fn new(frame: &'f [u8], mss: u16) -> Result<TcpSegmenter<'f>, GsoError> {
        if mss == 0 {
            return Err(GsoError::BadSegmentSize);
        }
        let IpLayout {
            ip,
            transport: tcp,
            end,
            ipv6,
            ..
        } = locate(frame, frame.len(), 6)?;
        let data_offset = usize::from(*frame.get(tcp + 12).ok_or(GsoError::Truncated)? >> 4) * 4;
        let payload = tcp + data_offset;
        if data_offset < 20 || payload > end || end > frame.len() {
            return Err(GsoError::Truncated);
        }
        Ok(TcpSegmenter {
            frame,
            ip,
            tcp,
            payload,
            end,
            ipv6,
            mss: usize::from(mss),
            done: 0,
            index: 0,
        })
    }

    /// How many segments the frame makes (at least one, even without payload).
    pub fn segment_count(&self) -> usize {
        (self.end - self.payload).div_ceil(self.mss).max(1)
    }

    /// The length of the headers every segment carries.
    pub fn header_len(&self) -> usize {
        self.payload
    }

    /// The longest segment: headers and `mss` bytes of payload.
    pub fn max_segment_len(&self) -> usize {
        self.payload + self.mss.min(self.end - self.payload)
    }

    /// Writes the next segment into `out` and returns its length; `None` when every segment
    /// has been written, or if `out` is shorter than the segment (nothing is written then).
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let total_payload = self.end - self.payload;
        if usize::from(self.index) >= self.segment_count() {
            return None;
        }
        let chunk = self.mss.min(total_payload - self.done);
        let len = self.payload + chunk;
        let out = out.get_mut(..len)?;
        let (headers, body) = out.split_at_mut(self.payload);
        headers.copy_from_slice(self.frame.get(..self.payload)?);
        body.copy_from_slice(
            self.frame
                .get(self.payload + self.done..self.payload + self.done + chunk)?,
        );
        let first = self.index == 0;
        let last = self.done + chunk == total_payload;

        // IP lengths (and for IPv4 the identification and header checksum).
        let ip_header_len = self.tcp - self.ip;
        if self.ipv6 {
            let payload_len = (len - self.tcp) as u16;
            headers
                .get_mut(self.ip + 4..self.ip + 6)?
                .copy_from_slice(&payload_len.to_be_bytes());
        } else {
            let total = (len - self.ip) as u16;
            let ip = headers.get_mut(self.ip..self.tcp)?;
            ip.get_mut(2..4)?.copy_from_slice(&total.to_be_bytes());
            let id = u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]).wrapping_add(self.index);
            ip.get_mut(4..6)?.copy_from_slice(&id.to_be_bytes());
            let sum = checksum::ipv4_header(ip, ip_header_len)?;
            ip.get_mut(10..12)?.copy_from_slice(&sum.to_be_bytes());
        }

        // TCP: sequence number, flags, checksum.
        let tcp_at = self.tcp;
        let seq_field = headers.get_mut(tcp_at + 4..tcp_at + 8)?;
        let seq = u32::from_be_bytes([seq_field[0], seq_field[1], seq_field[2], seq_field[3]])
            .wrapping_add(self.done as u32);
        seq_field.copy_from_slice(&seq.to_be_bytes());
        let flags = headers.get_mut(tcp_at + 13)?;
        if !last {
            *flags &= !(TCP_FIN | TCP_PSH);
        }
        if !first {
            *flags &= !TCP_CWR;
        }
        headers.get_mut(tcp_at + 16..tcp_at + 18)?.fill(0);
        // The pseudo-header: source and destination addresses (adjacent in both IPv4 and
        // IPv6 headers), the protocol and the TCP length (RFC 9293 section 3.1, RFC 8200
        // section 8.1).
        let addresses = if self.ipv6 {
            out.get(self.ip + 8..self.ip + 40)?
        } else {
            out.get(self.ip + 12..self.ip + 20)?
        };
        let tcp_len = len - tcp_at;
        let sum = u32::from(checksum::sum_bytes(addresses))
            + 6
            + (tcp_len as u32 >> 16)
            + (tcp_len as u32 & 0xffff)
            + u32::from(checksum::sum_bytes(out.get(tcp_at..len)?));
        let sum = !checksum::fold(sum);
        out.get_mut(tcp_at + 16..tcp_at + 18)?
            .copy_from_slice(&sum.to_be_bytes());

        self.done += chunk;
        self.index += 1;
        Some(len)
    }
}

/// Cuts a UDP-tunnel super-frame: Ethernet (up to two VLAN tags), IPv4 (options allowed, not
/// a fragment) or IPv6, UDP, an 8-byte VXLAN header, then an inner TCP super-frame, as a
/// kernel VTEP hands VXLAN-encapsulated TCP to a veth underlay (AF_PACKET flags it as TCP
/// GSO: the inner TCP's). As the kernel's `skb_udp_tunnel_segment` does, each segment is the
/// outer headers followed by one segment of the inner frame ([`TcpSegmenter`]), with the
/// outer lengths, the IPv4 identification and header checksum, and the UDP checksum
/// (computed unless it was 0 over IPv4) made right.
#[derive(Debug, Clone)]
pub struct TunnelSegmenter<'f> {
    frame: &'f [u8],
    ipv6: bool,
    /// Start of the outer IP header, of the UDP header, of the inner frame.
    ip: usize,
    udp: usize,
    inner_at: usize,
    zero_checksum: bool,
    inner: TcpSegmenter<'f>,
    index: u16,
}

impl<'f> TunnelSegmenter<'f> {
    /// Reads the outer headers of `frame` and the inner TCP super-frame's, for inner
    /// segments of `mss` payload bytes.
    pub fn new(frame: &'f [u8], mss: u16) -> Result<TunnelSegmenter<'f>, GsoError> {
        // The outer headers read as every segmenter reads its own (VLAN tags, IPv4 options;
        // a wrong version or header length, a fragment or lengths past the frame refused
        // here, not part-way through the segments). A frame not UDP is not a tunnel's.
        let IpLayout {
            ip,
            transport: udp,
            end,
            ipv6,
            ..
        } = locate(frame, frame.len(), 17).map_err(|error| match error {
            GsoError::NotUdp => GsoError::NotTcp,
            error => error,
        })?;
        let inner_at = udp + 8 + 8;
        let zero_checksum = !ipv6 && read_u16(frame, udp + 6)? == 0;
        let inner = TcpSegmenter::new(frame.get(inner_at..end).ok_or(GsoError::Truncated)?, mss)?;
        Ok(TunnelSegmenter {
            frame,
            ipv6,
            ip,
            udp,
            inner_at,
            zero_checksum,
            inner,
            index: 0,
        })
    }

    /// How many segments the frame makes.
    pub fn segment_count(&self) -> usize {
        self.inner.segment_count()
    }

    /// The longest segment: outer headers and the longest inner segment.
    pub fn max_segment_len(&self) -> usize {
        self.inner_at + self.inner.max_segment_len()
    }

    /// Writes the next segment into `out` and returns its length; `None` when every segment
    /// has been written, or if `out` is too short.
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let (ip, udp, inner_at) = (self.ip, self.udp, self.inner_at);
        if out.len() < inner_at {
            return None;
        }
        let inner_len = self.inner.next_into(out.get_mut(inner_at..)?)?;
        out.get_mut(..inner_at)?
            .copy_from_slice(self.frame.get(..inner_at)?);
        let len = inner_at + inner_len;
        let out = out.get_mut(..len)?;
        outer_headers(out, ip, udp, self.ipv6, self.index, !self.zero_checksum)?;
        self.index = self.index.wrapping_add(1);
        Some(len)
    }
}

/// Makes the IP and UDP headers of datagram `index` of a cut (the whole of `out`) right: the
/// UDP length, the IPv6 payload length or the IPv4 total length, the identification counted
/// from the super-frame's and the header checksum, and the UDP checksum computed if
/// `udp_checksum` (else zero). `None` if the offsets do not fit `out`.
fn outer_headers(
    out: &mut [u8],
    ip: usize,
    udp: usize,
    ipv6: bool,
    index: u16,
    udp_checksum: bool,
) -> Option<()> {
    let len = out.len();
    let udp_len = (len - udp) as u16;
    out.get_mut(udp + 4..udp + 6)?
        .copy_from_slice(&udp_len.to_be_bytes());
    out.get_mut(udp + 6..udp + 8)?.fill(0);
    let addresses = if ipv6 {
        let payload_len = (len - ip - 40) as u16;
        out.get_mut(ip + 4..ip + 6)?
            .copy_from_slice(&payload_len.to_be_bytes());
        ip + 8..ip + 40
    } else {
        let total = (len - ip) as u16;
        out.get_mut(ip + 2..ip + 4)?
            .copy_from_slice(&total.to_be_bytes());
        let id = u16::from_be_bytes([*out.get(ip + 4)?, *out.get(ip + 5)?]).wrapping_add(index);
        out.get_mut(ip + 4..ip + 6)?
            .copy_from_slice(&id.to_be_bytes());
        let sum = checksum::ipv4_header(out.get(ip..udp)?, udp - ip)?;
        out.get_mut(ip + 10..ip + 12)?
            .copy_from_slice(&sum.to_be_bytes());
        ip + 12..ip + 20
    };
    if udp_checksum {
        let sum = u32::from(checksum::sum_bytes(out.get(addresses)?))
            + 17
            + u32::from(udp_len)
            + u32::from(checksum::sum_bytes(out.get(udp..len)?));
        let sum = match !checksum::fold(sum) {
            0 => 0xffff,
            sum => sum,
        };
        out.get_mut(udp + 6..udp + 8)?
            .copy_from_slice(&sum.to_be_bytes());
    }
    Some(())
}

/// Cuts a UDP GSO super-frame (`VIRTIO_NET_HDR_GSO_UDP_L4`: a `UDP_SEGMENT` send, or what
/// [`crate::gro::UdpCoalescer`] joins) into its datagrams, as the kernel's
/// `__udp_gso_segment` does: Ethernet (up to two VLAN tags), IPv4 (options allowed) or IPv6
/// (no extension headers), UDP, then payloads of `size` bytes each, the last possibly
/// shorter. Each datagram gets the super-frame's headers with the IP lengths, a consecutive
/// IPv4 identification and a new header checksum, the UDP length, and a complete UDP
/// checksum; over IPv4 it may be left at zero instead ("none", RFC 768), for a receiver that
/// would only verify it again.
#[derive(Debug, Clone)]
pub struct UdpSegmenter<'f> {
    frame: &'f [u8],
    ip: usize,
    udp: usize,
    end: usize,
    ipv6: bool,
    size: usize,
    zero_ipv4_checksum: bool,
    done: usize,
    index: u16,
}

impl<'f> UdpSegmenter<'f> {
    /// Reads the headers of `frame` for datagrams of `size` payload bytes; over IPv4, the
    /// datagrams' UDP checksums are left at zero if `zero_ipv4_checksum`.
    pub fn new(
        frame: &'f [u8],
        size: u16,
        zero_ipv4_checksum: bool,
    ) -> Result<UdpSegmenter<'f>, GsoError> {
        if size == 0 {
            return Err(GsoError::BadSegmentSize);
        }
        let IpLayout {
            ip,
            transport: udp,
            end,
            ipv6,
            ..
        } = locate(frame, frame.len(), 17)?;
        if udp + 8 > end {
            return Err(GsoError::Truncated);
        }
        Ok(UdpSegmenter {
            frame,
            ip,
            udp,
            end,
            ipv6,
            size: usize::from(size),
            zero_ipv4_checksum,
            done: 0,
            index: 0,
        })
    }

    /// How many datagrams the frame makes (at least one, even without payload).
    pub fn segment_count(&self) -> usize {
        (self.end - self.udp - 8).div_ceil(self.size).max(1)
    }

    /// The longest datagram: headers and `size` bytes of payload.
    pub fn max_segment_len(&self) -> usize {
        self.udp + 8 + self.size.min(self.end - self.udp - 8)
    }

    /// Writes the next datagram into `out` and returns its length; `None` when every one has
    /// been written, or if `out` is shorter than the datagram (nothing is written then).
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let (ip, udp) = (self.ip, self.udp);
        let payload = udp + 8;
        if usize::from(self.index) >= self.segment_count() {
            return None;
        }
        let chunk = self.size.min(self.end - payload - self.done);
        let len = payload + chunk;
        let out = out.get_mut(..len)?;
        out.get_mut(..payload)?
            .copy_from_slice(self.frame.get(..payload)?);
        out.get_mut(payload..)?.copy_from_slice(
            self.frame
                .get(payload + self.done..payload + self.done + chunk)?,
        );
        let udp_checksum = self.ipv6 || !self.zero_ipv4_checksum;
        outer_headers(out, ip, udp, self.ipv6, self.index, udp_checksum)?;
        self.done += chunk;
        self.index = self.index.wrapping_add(1);
        Some(len)
    }
}

#[cfg(test)]
mod test {
    extern crate std;

    use std::vec;
    use std::vec::Vec;

    use super::*;

    /// etherparse's builder (not our code) up to the IP header: Ethernet from host 1 to host 2
    /// of network `net`, IPv4 (198.18.net.0/24) or IPv6 (2001:db8:0:net::/64), TTL 64.
    fn ip(ipv6: bool, net: u8) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        let eth = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, net, 1], [2, 0, 0, 0, net, 2]);
        if ipv6 {
            let host = |h| [0x20, 1, 0x0d, 0xb8, 0, 0, 0, net, 0, 0, 0, 0, 0, 0, 0, h];
            eth.ipv6(host(1), host(2), 64)
        } else {
            eth.ipv4([198, 18, net, 1], [198, 18, net, 2], 64)
        }
    }

    /// A TCP super-frame built with etherparse, with `payload`.
    fn super_frame(ipv6: bool, flags: &str, payload: &[u8]) -> Vec<u8> {
        let mut tcp = ip(ipv6, 0).tcp(40000, 5201, 0xffff_fff0, 501).ack(77);
        for flag in flags.chars() {
            tcp = match flag {
                'P' => tcp.psh(),
                'F' => tcp.fin(),
                'C' => tcp.cwr(),
                _ => tcp,
            };
        }
        let mut frame = Vec::new();
        tcp.write(&mut frame, payload).unwrap();
        frame
    }

    /// Every segment parsed and checked by etherparse: lengths, checksums (IPv4 header and
    /// TCP), sequence numbers, flags; the payloads put together give the original.
    fn check(ipv6: bool) {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let frame = super_frame(ipv6, "PFC", &payload);
        let mut segmenter = TcpSegmenter::new(&frame, 1448).unwrap();
        assert_eq!(segmenter.segment_count(), 4);
        let mut out = vec![0u8; segmenter.max_segment_len()];
        let mut joined = Vec::new();
        let mut seqs = Vec::new();
        let mut index = 0;
        while let Some(len) = segmenter.next_into(&mut out) {
            let segment = &out[..len];
            let parsed = etherparse::SlicedPacket::from_ethernet(segment).unwrap();
            let Some(etherparse::TransportSlice::Tcp(tcp)) = parsed.transport else {
                panic!("TCP")
            };
            let expected = match &parsed.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => {
                    let header = ip.header().to_header();
                    assert_eq!(
                        header.header_checksum,
                        header.calc_header_checksum(),
                        "IPv4 header checksum"
                    );
                    assert_eq!(header.identification, index as u16);
                    tcp.to_header()
                        .calc_checksum_ipv4(&header, tcp.payload())
                        .unwrap()
                }
                Some(etherparse::NetSlice::Ipv6(ip)) => tcp
                    .to_header()
                    .calc_checksum_ipv6(&ip.header().to_header(), tcp.payload())
                    .unwrap(),
                _ => panic!("IP"),
            };
            assert_eq!(tcp.checksum(), expected, "TCP checksum of segment {index}");
            let last = index == 3;
            assert_eq!(tcp.fin(), last);
            assert_eq!(tcp.psh(), last);
            assert_eq!(tcp.cwr(), index == 0);
            assert!(tcp.ack());
            assert_eq!(tcp.acknowledgment_number(), 77);
            seqs.push(tcp.sequence_number());
            joined.extend_from_slice(tcp.payload());
            index += 1;
        }
        assert_eq!(index, 4);
        assert_eq!(joined, payload);
        // Sequence numbers advance by the payload, wrapping around 2^32.
        assert_eq!(
            seqs,
            [
                0xffff_fff0,
                0xffff_fff0u32.wrapping_add(1448),
                0xffff_fff0u32.wrapping_add(2896),
                0xffff_fff0u32.wrapping_add(4344)
            ]
        );
    }

    /// `inner` in VXLAN (VNI 5) over UDP from port 49152 to 4789, over IPv4 or IPv6, built
    /// with etherparse; the IPv4 UDP checksum left 0 when `zero_checksum`.
    fn vxlan(ipv6: bool, inner: &[u8], zero_checksum: bool) -> Vec<u8> {
        let mut payload = vec![0x08, 0, 0, 0, 0, 0, 5, 0];
        payload.extend_from_slice(inner);
        let mut frame = Vec::new();
        ip(ipv6, 1)
            .udp(49152, 4789)
            .write(&mut frame, &payload)
            .unwrap();
        if zero_checksum && !ipv6 {
            frame[40..42].fill(0);
        }
        frame
    }

    /// Every datagram parsed by etherparse: the outer lengths and checksums (IPv4 header, UDP
    /// unless it was 0), the IPv4 identification counting up, the inner TCP segment whole,
    /// with its checksum; the inner payloads put together give the original.
    fn check_tunnel(ipv6: bool, zero_checksum: bool) {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 13) as u8).collect();
        let inner = super_frame(false, "P", &payload);
        let frame = vxlan(ipv6, &inner, zero_checksum);
        let mut segmenter = TunnelSegmenter::new(&frame, 1448).unwrap();
        assert_eq!(segmenter.segment_count(), 4);
        let mut out = vec![0u8; segmenter.max_segment_len()];
        let mut joined = Vec::new();
        let mut index = 0u16;
        while let Some(len) = segmenter.next_into(&mut out) {
            let datagram = &out[..len];
            let outer = etherparse::SlicedPacket::from_ethernet(datagram).unwrap();
            let Some(etherparse::TransportSlice::Udp(udp)) = outer.transport else {
                panic!("UDP")
            };
            assert_eq!(usize::from(udp.length()), udp.slice().len());
            let expected_udp = match &outer.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => {
                    let header = ip.header().to_header();
                    assert_eq!(header.header_checksum, header.calc_header_checksum());
                    assert_eq!(header.identification, index);
                    assert_eq!(usize::from(header.total_len), len - 14);
                    if zero_checksum {
                        0
                    } else {
                        udp.to_header()
                            .calc_checksum_ipv4(&header, udp.payload())
                            .unwrap()
                    }
                }
                Some(etherparse::NetSlice::Ipv6(ip)) => udp
                    .to_header()
                    .calc_checksum_ipv6(&ip.header().to_header(), udp.payload())
                    .unwrap(),
                _ => panic!("IP"),
            };
            assert_eq!(
                udp.checksum(),
                expected_udp,
                "UDP checksum of datagram {index}"
            );
            let vxlan_payload = udp.payload();
            assert_eq!(vxlan_payload[..8], [0x08, 0, 0, 0, 0, 0, 5, 0]);
            let inner = etherparse::SlicedPacket::from_ethernet(&vxlan_payload[8..]).unwrap();
            let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Tcp(tcp))) =
                (&inner.net, &inner.transport)
            else {
                panic!("inner IPv4 TCP")
            };
            let header = ip.header().to_header();
            let expected_tcp = tcp
                .to_header()
                .calc_checksum_ipv4(&header, tcp.payload())
                .unwrap();
            assert_eq!(
                tcp.checksum(),
                expected_tcp,
                "inner TCP checksum of {index}"
            );
            joined.extend_from_slice(tcp.payload());
            index += 1;
        }
        assert_eq!(index, 4);
        assert_eq!(joined, payload);
    }

    #[test]
    fn segments_vxlan_over_ipv4() {
        check_tunnel(false, false);
        check_tunnel(false, true);
    }

    #[test]
    fn segments_vxlan_over_ipv6() {
        check_tunnel(true, false);
    }

    #[test]
    fn tunnel_frames_with_a_malformed_outer_ipv4_header_are_refused() {
        let inner = super_frame(false, "", &[7u8; 3000]);
        let frame = vxlan(false, &inner, false);
        // A header length under 20 bytes, another IP version, a fragment: refused up front,
        // not part-way through the segments.
        for (at, value) in [(14, 0x44u8), (14, 0x43), (14, 0x55), (20, 0x20), (21, 0x01)] {
            let mut bad = frame.clone();
            bad[at] = value;
            assert!(
                TunnelSegmenter::new(&bad, 1448).is_err(),
                "byte {at} = {value:#04x} accepted"
            );
        }
    }

    #[test]
    fn tunnel_frames_keep_an_outer_vlan_tag() {
        let inner = super_frame(false, "", &[3u8; 3000]);
        let mut frame = vxlan(false, &inner, false);
        frame.splice(12..12, [0x81, 0x00, 0x00, 0x0b]);
        let mut segmenter = TunnelSegmenter::new(&frame, 1448).unwrap();
        assert_eq!(segmenter.segment_count(), 3);
        let mut out = vec![0u8; segmenter.max_segment_len()];
        let mut count = 0;
        while let Some(len) = segmenter.next_into(&mut out) {
            assert_eq!(out[12..16], [0x81, 0x00, 0x00, 0x0b]);
            // Without the tag, an IPv4 VXLAN datagram etherparse reads as valid.
            let mut untagged = out[..len].to_vec();
            untagged.drain(12..16);
            let parsed = etherparse::SlicedPacket::from_ethernet(&untagged).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = parsed.net else {
                panic!("IPv4")
            };
            let header = ip.header().to_header();
            assert_eq!(header.header_checksum, header.calc_header_checksum());
            assert_eq!(usize::from(header.total_len), untagged.len() - 14);
            count += 1;
        }
        assert_eq!(count, 3);
    }

    #[test]
    fn segments_ipv4_tcp() {
        check(false);
    }

    #[test]
    fn segments_ipv6_tcp() {
        check(true);
    }

    #[test]
    fn a_frame_within_one_segment_comes_out_whole_with_its_checksum_completed() {
        let frame = super_frame(false, "P", b"small");
        let mut partial = frame.clone();
        partial[50..52].copy_from_slice(&[0x12, 0x34]); // a partial checksum, say
        let mut segmenter = TcpSegmenter::new(&partial, 1448).unwrap();
        assert_eq!(segmenter.segment_count(), 1);
        let mut out = vec![0u8; 1514];
        let len = segmenter.next_into(&mut out).unwrap();
        assert_eq!(&out[..len], &frame[..]);
        assert_eq!(segmenter.next_into(&mut out), None);
    }

    #[test]
    fn vlan_tagged_frames_keep_their_tag() {
        let payload = vec![9u8; 3000];
        let mut frame = super_frame(false, "", &payload);
        frame.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
        let mut segmenter = TcpSegmenter::new(&frame, 1000).unwrap();
        assert_eq!(segmenter.segment_count(), 3);
        let mut out = vec![0u8; 2000];
        while let Some(len) = segmenter.next_into(&mut out) {
            assert_eq!(&out[12..16], &[0x81, 0x00, 0x00, 0x0a]);
            let parsed = etherparse::SlicedPacket::from_ethernet(&out[..len]).unwrap();
            assert!(matches!(
                parsed.transport,
                Some(etherparse::TransportSlice::Tcp(_))
            ));
        }
    }

    #[test]
    fn refuses_what_it_cannot_segment_without_panicking() {
        let frame = super_frame(false, "", &[1; 100]);
        assert_eq!(
            TcpSegmenter::new(&frame, 0).err(),
            Some(GsoError::BadSegmentSize)
        );
        for cut in 0..54 {
            assert!(
                TcpSegmenter::new(&frame[..cut], 1448).is_err(),
                "cut at {cut}"
            );
        }
        let mut udp = frame.clone();
        udp[23] = 17;
        assert_eq!(TcpSegmenter::new(&udp, 1448).err(), Some(GsoError::NotTcp));
        let mut fragment = frame.clone();
        fragment[20] = 0x20; // more fragments
        assert_eq!(
            TcpSegmenter::new(&fragment, 1448).err(),
            Some(GsoError::Fragment)
        );
        // A total length beyond the frame.
        let mut long = frame.clone();
        long[16..18].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(
            TcpSegmenter::new(&long, 1448).err(),
            Some(GsoError::Truncated)
        );
        // An output buffer too short: nothing written, the segment still to come.
        let mut segmenter = TcpSegmenter::new(&frame, 1448).unwrap();
        assert_eq!(segmenter.next_into(&mut [0u8; 20]), None);
        assert!(segmenter.next_into(&mut [0u8; 200]).is_some());
    }

    proptest::proptest! {
        // Under miri: a few cases, and no failure file (miri isolates the file system).
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: if cfg!(miri) { 4 } else { 256 },
            failure_persistence: if cfg!(miri) {
                None
            } else {
                proptest::prelude::ProptestConfig::default().failure_persistence
            },
            ..proptest::prelude::ProptestConfig::default()
        })]
        /// Arbitrary bytes and segment sizes: refused or segmented, never a panic, and every
        /// segment within headers + mss.
        #[test]
        fn arbitrary_frames_never_panic(
            frame in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            mss in 0u16..700,
            ethertype in proptest::prop_oneof![
                proptest::strategy::Just(0x0800u16),
                proptest::strategy::Just(0x86dd),
                proptest::strategy::Just(0x8100),
            ],
        ) {
            let mut frame = frame;
            if frame.len() >= 14 {
                frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
            }
            // Mostly plausible IP headers, so that segmentation itself runs often.
            if frame.len() >= 60 && mss % 4 != 0 {
                if ethertype == 0x0800 {
                    frame[14] = 0x45;
                    frame[20] &= 0x80;
                    frame[23] = 6;
                } else {
                    frame[20] = 6;
                }
            }
            if let Ok(mut segmenter) = TcpSegmenter::new(&frame, mss) {
                let mut out = vec![0u8; segmenter.max_segment_len()];
                let mut count = 0;
                while let Some(len) = segmenter.next_into(&mut out) {
                    proptest::prop_assert!(len <= segmenter.header_len() + usize::from(mss));
                    count += 1;
                }
                proptest::prop_assert_eq!(count, segmenter.segment_count());
            }
        }
    }
}
