//! A plain AF_PACKET port without rings (feature `af-packet`): `recvmmsg(2)` into a pool of
//! buffers, `sendmmsg(2)` from another, as Open vSwitch's userspace datapath reads its
//! AF_PACKET ports. The baseline the ring port ([`super::af_packet`]) is measured against,
//! with the same sockets otherwise (a receive socket bound to `ETH_P_ALL` with
//! `PACKET_IGNORE_OUTGOING` and promiscuous membership, a transmit socket bound to protocol 0
//! with `PACKET_QDISC_BYPASS`), and a simple, independent peer for tests.

#![allow(unsafe_code)]

use std::format;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::string::String;
use std::vec;
use std::vec::Vec;

use super::af_packet::{self as ring, AfPacketConfig};
use super::{QueueStats, RxQueue, TxQueue};

/// Bytes per buffer: a 1500-byte MTU frame with VXLAN and a VLAN tag fits.
const BUFFER_SIZE: usize = 2048;

/// Opens both halves on `config.interface` (only `interface`, `fanout`, `promiscuous` and
/// `qdisc_bypass` of `config` apply), with `batch` buffers each.
pub fn open(config: &AfPacketConfig, batch: usize) -> io::Result<(MmsgRx, MmsgTx)> {
    Ok((MmsgRx::open(config, batch)?, MmsgTx::open(config, batch)?))
}

/// The receiving half: `recvmmsg(2)` of up to `batch` frames per call.
#[derive(Debug)]
pub struct MmsgRx {
    fd: OwnedFd,
    buffers: Vec<u8>,
    lengths: Vec<usize>,
    batch: usize,
    stats: QueueStats,
}

/// The transmitting half: frames copied into buffers, `sendmmsg(2)` of all of them on flush.
#[derive(Debug)]
pub struct MmsgTx {
    fd: OwnedFd,
    buffers: Vec<u8>,
    lengths: Vec<usize>,
    /// Frames queued, from `sent` on (the first `sent` went out on a partial flush).
    queued: usize,
    sent: usize,
    interface: String,
    stats: QueueStats,
}

fn message_headers(
    buffers: &mut [u8],
    lengths: &[usize],
    iovecs: &mut Vec<libc::iovec>,
) -> Vec<libc::mmsghdr> {
    iovecs.clear();
    for (chunk, &len) in buffers.chunks_mut(BUFFER_SIZE).zip(lengths) {
        iovecs.push(libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: len,
        });
    }
    iovecs
        .iter_mut()
        .map(|iov| {
            // SAFETY: msghdr is plain old data; all zeroes is a valid value.
            let mut header: libc::mmsghdr = unsafe { core::mem::zeroed() };
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
            header
        })
        .collect()
}

impl MmsgRx {
    /// Opens the receiving half.
    pub fn open(config: &AfPacketConfig, batch: usize) -> io::Result<MmsgRx> {
        let batch = batch.max(1);
        let fd = ring::receive_socket(config)?;
        // A receive buffer as large as the ring port's default ring (16 MiB), so that the
        // two hold as much (the default, ~200 KB, would drop most of a burst).
        let rcvbuf: libc::c_int = 16 << 20;
        const SO_RCVBUFFORCE: libc::c_int = 33; // asm-generic/socket.h; not in libc for gnu
                                                // SAFETY: `rcvbuf` is a live c_int and its size is passed with it.
        let forced = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_RCVBUFFORCE,
                (&rcvbuf as *const libc::c_int).cast(),
                core::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if forced != 0 {
            // Without CAP_NET_ADMIN: as much as net.core.rmem_max allows.
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&rcvbuf as *const libc::c_int).cast(),
                    core::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        Ok(MmsgRx {
            fd,
            buffers: vec![0; batch * BUFFER_SIZE],
            lengths: vec![0; batch],
            batch,
            stats: QueueStats::default(),
        })
    }
}

impl RxQueue for MmsgRx {
    fn recv<'a>(&'a mut self, frames: &mut Vec<&'a mut [u8]>, max: usize) -> io::Result<usize> {
        let want = max.min(self.batch);
        if want == 0 {
            return Ok(0);
        }
        let full = vec![BUFFER_SIZE; want];
        let mut iovecs = Vec::with_capacity(want);
        let mut headers = message_headers(&mut self.buffers, &full, &mut iovecs);
        // SAFETY: `headers` holds `want` mmsghdrs whose iovecs point into `self.buffers`,
        // each BUFFER_SIZE bytes, all live and exclusively borrowed for the call.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                headers.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT,
                core::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        let received = r as usize;
        let mut count = 0;
        for (header, length) in headers.iter().take(received).zip(self.lengths.iter_mut()) {
            *length = header.msg_len as usize;
            if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                *length = usize::MAX; // not handed out
            }
        }
        for (chunk, &len) in self
            .buffers
            .chunks_mut(BUFFER_SIZE)
            .zip(self.lengths.iter())
            .take(received)
        {
            match chunk.get_mut(..len) {
                Some(frame) => {
                    self.stats.frames += 1;
                    self.stats.bytes += len as u64;
                    frames.push(frame);
                    count += 1;
                }
                None => self.stats.malformed += 1,
            }
        }
        Ok(count)
    }

    fn release(&mut self) {}

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn stats(&mut self) -> QueueStats {
        let mut counters = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = core::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `counters` and `len` are live and exclusively borrowed; the kernel writes
        // at most `len` bytes into `counters`.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut counters as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.stats.dropped += u64::from(counters.tp_drops);
        }
        self.stats
    }
}

impl MmsgTx {
    /// Opens the transmitting half.
    pub fn open(config: &AfPacketConfig, batch: usize) -> io::Result<MmsgTx> {
        let batch = batch.max(1);
        let fd = ring::transmit_socket(config)?;
        Ok(MmsgTx {
            fd,
            buffers: vec![0; batch * BUFFER_SIZE],
            lengths: vec![0; batch],
            queued: 0,
            sent: 0,
            interface: config.interface.clone(),
            stats: QueueStats::default(),
        })
    }
}

impl TxQueue for MmsgTx {
    fn send(&mut self, header: &[u8], payload: &[u8]) -> io::Result<bool> {
        let len = header.len() + payload.len();
        if len > BUFFER_SIZE {
            self.stats.malformed += 1;
            return Ok(false);
        }
        if self.queued == self.lengths.len() {
            // Full: make room if the kernel takes what waits.
            let _ = self.flush();
            if self.queued == self.lengths.len() {
                self.stats.dropped += 1;
                return Ok(false);
            }
        }
        let start = self.queued * BUFFER_SIZE;
        let Some(buffer) = self.buffers.get_mut(start..start + len) else {
            self.stats.malformed += 1;
            return Ok(false);
        };
        let (h, p) = buffer.split_at_mut(header.len());
        h.copy_from_slice(header);
        p.copy_from_slice(payload);
        if let Some(slot) = self.lengths.get_mut(self.queued) {
            *slot = len;
        }
        self.queued += 1;
        self.stats.frames += 1;
        self.stats.bytes += len as u64;
        Ok(true)
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.queued {
            let mut iovecs = Vec::with_capacity(self.queued);
            let mut headers = message_headers(
                &mut self.buffers,
                self.lengths.get(..self.queued).unwrap_or(&[]),
                &mut iovecs,
            );
            let pending = headers.get_mut(self.sent..).unwrap_or(&mut []);
            // SAFETY: `pending` holds mmsghdrs whose iovecs point into `self.buffers` with
            // the queued lengths (each within its BUFFER_SIZE chunk); all live for the call.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    pending.as_mut_ptr(),
                    pending.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    _ => {
                        // A frame the kernel refuses would block the queue for good: drop all.
                        self.stats.dropped += (self.queued - self.sent) as u64;
                        self.queued = 0;
                        self.sent = 0;
                        Err(io::Error::new(
                            e.kind(),
                            format!("sendmmsg on {}: {e}", self.interface),
                        ))
                    }
                };
            }
            self.sent += r as usize;
        }
        self.queued = 0;
        self.sent = 0;
        Ok(())
    }

    fn stats(&mut self) -> QueueStats {
        self.stats
    }
}
