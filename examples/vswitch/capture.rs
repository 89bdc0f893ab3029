//! Per-port capture: every frame a port receives or sends, in a pcap file that tshark and
//! Wireshark read (link type Ethernet, microsecond timestamps).

use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;
use switchyard::backend::{FrameMeta, QueueStats, RxQueue, TxQueue};

/// A pcap file shared by a port's two halves.
#[derive(Clone)]
pub struct Pcap(Arc<Mutex<PcapWriter<File>>>);

impl Pcap {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> io::Result<Pcap> {
        // Unbuffered: each frame is on disk when the switch sends it, a capture read while
        // the switch runs is whole, and nothing is lost at a signal (capture is for
        // debugging, not for line rate).
        let file = File::create(path)?;
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            snaplen: 65535,
            ..PcapHeader::default()
        };
        let writer = PcapWriter::with_header(file, header).map_err(io::Error::other)?;
        Ok(Pcap(Arc::new(Mutex::new(writer))))
    }

    fn write(&self, parts: &[&[u8]]) {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let frame: Vec<u8> = parts.concat();
        let mut writer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // A full disk must not stop the switch: the capture loses the frame, traffic goes on.
        let _ = writer.write_packet(&PcapPacket::new(timestamp, frame.len() as u32, &frame));
    }
}

/// A receive queue that also writes what it receives to a pcap file.
pub struct CaptureRx<Q> {
    inner: Q,
    pcap: Pcap,
}

impl<Q> CaptureRx<Q> {
    /// Wraps `inner`.
    pub fn new(inner: Q, pcap: Pcap) -> Self {
        CaptureRx { inner, pcap }
    }
}

impl<Q: RxQueue> RxQueue for CaptureRx<Q> {
    fn recv<'a>(&'a mut self, frames: &mut Vec<&'a mut [u8]>, max: usize) -> io::Result<usize> {
        let before = frames.len();
        let count = self.inner.recv(frames, max)?;
        for frame in frames.iter().skip(before) {
            self.pcap.write(&[frame]);
        }
        Ok(count)
    }

    fn recv_with_meta<'a>(
        &'a mut self,
        frames: &mut Vec<&'a mut [u8]>,
        metas: &mut Vec<FrameMeta>,
        max: usize,
    ) -> io::Result<usize> {
        let before = frames.len();
        let count = self.inner.recv_with_meta(frames, metas, max)?;
        for frame in frames.iter().skip(before) {
            self.pcap.write(&[frame]);
        }
        Ok(count)
    }

    fn release(&mut self) {
        self.inner.release();
    }

    fn poll_fd(&self) -> Option<RawFd> {
        self.inner.poll_fd()
    }

    fn stats(&mut self) -> QueueStats {
        self.inner.stats()
    }
}

/// A transmit queue that also writes what it sends to a pcap file.
pub struct CaptureTx<Q> {
    inner: Q,
    pcap: Pcap,
}

impl<Q> CaptureTx<Q> {
    /// Wraps `inner`.
    pub fn new(inner: Q, pcap: Pcap) -> Self {
        CaptureTx { inner, pcap }
    }
}

impl<Q: TxQueue> TxQueue for CaptureTx<Q> {
    fn send(&mut self, header: &[u8], payload: &[u8]) -> io::Result<bool> {
        let sent = self.inner.send(header, payload)?;
        if sent {
            self.pcap.write(&[header, payload]);
        }
        Ok(sent)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    fn stats(&mut self) -> QueueStats {
        self.inner.stats()
    }
}
