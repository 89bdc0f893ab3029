//! Linux backends: where frames come from and go to on a real host (features `af-packet` and
//! `io-uring`; Linux only). The core does no I/O; this module is the thin layer around it,
//! and the only place in the crate with `unsafe` code besides the load balancer's mailboxes.
//!
//! One abstraction for every backend: a port is a receive queue ([`RxQueue`]) and a transmit
//! queue ([`TxQueue`]), split so that a worker can send on a port (an ARP reply back to its
//! sender) while frames it received there are still borrowed. The worker loop
//! ([`run_worker`], [`WorkerLoop`]) drives any mix of them: the in-memory port ([`memory`]) of the
//! tests, AF_PACKET rings, and the io_uring underlay.
//!
//! **Offloads.** A Linux peer behind a veth sends with checksum offload and TSO on: small
//! segments with partial checksums, TCP as GSO super-frames of up to 64 KB. A queue that
//! knows (AF_PACKET with `PACKET_VNET_HDR`) says so per frame through
//! [`RxQueue::recv_with_meta`] ([`FrameMeta`]). The worker loop completes partial checksums in
//! place. A super-frame whose one destination is a local port whose queue takes offloads
//! ([`TxQueue::accepts_offloads`], [`TxQueue::send_offloaded`]: AF_PACKET with a virtio-net
//! header) goes there whole and the kernel segments it; any other (flooded, for the underlay,
//! for a queue without offloads) is cut into segments with [`crate::gso`] before the switch
//! sees it, so that every frame it forwards fits the MTU and carries whole checksums. UDP GSO
//! frames that cannot go whole are dropped and counted. Handing a super-frame to the kernel
//! encapsulated is not possible on AF_PACKET: on Linux 6.18 a TX socket refuses the UDP-tunnel
//! GSO types (`VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4` with a 10- or 12-byte header: `EINVAL`;
//! `PACKET_VNET_HDR_SZ` refuses the 20-byte tunnel header), and `TCPV4` on the outer frame is
//! refused as well.
//!
//! # Example
//!
//! The worker loop over two in-memory ports (an AF_PACKET or io_uring port plugs in the same
//! way): a frame pushed into port 1 comes out of port 2.
//!
//! ```
//! use core::net::{IpAddr, Ipv4Addr};
//! use switchyard::backend::memory::{Frames, MemoryRx, MemoryTx};
//! use switchyard::backend::{LoopConfig, Port, WorkerLoop};
//! use switchyard::fdb::FdbConfig;
//! use switchyard::switch::{
//!     Ingress, LbSettings, NextHop, PortConfig, Switch, SwitchConfig, UnderlayConfig,
//!     VniSettings,
//! };
//! use switchyard::time::Instant;
//! use switchyard::tunnel::{DecapConfig, EncapConfig};
//! use switchyard::wire::EthernetAddress;
//! use switchyard::{PortId, Vni};
//!
//! let vni = Vni::new(100)?;
//! let switch = Switch::new(SwitchConfig {
//!     underlay: UnderlayConfig {
//!         local_ip: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
//!         local_mac: EthernetAddress([0x02, 0xee, 0, 0, 0, 1]),
//!         next_hop: NextHop::Static {
//!             default: EthernetAddress([0x02, 0xee, 0, 0, 0, 2]),
//!             per_vtep: Vec::new(),
//!         },
//!         encap: EncapConfig::default(),
//!         decap: DecapConfig::default(),
//!     },
//!     ports: vec![PortConfig::access(PortId(1), vni), PortConfig::access(PortId(2), vni)],
//!     vnis: vec![VniSettings::new(vni, Vec::new())],
//!     static_entries: Vec::new(),
//!     neighbors: Vec::new(),
//!     fdb: FdbConfig::default(),
//!     services: Vec::new(),
//!     lb: LbSettings::default(),
//! })?;
//! let (in1, out1, in2, out2) = (Frames::new(), Frames::new(), Frames::new(), Frames::new());
//! let port = |id, rx: &Frames, tx: &Frames| {
//!     Port::new(
//!         Ingress::Port(PortId(id)),
//!         Box::new(MemoryRx::new(rx.clone())),
//!         Box::new(MemoryTx::new(tx.clone(), 1024)),
//!     )
//! };
//! let ports = vec![port(1, &in1, &out1), port(2, &in2, &out2)];
//! let mut lp = WorkerLoop::new(&switch, switch.worker(), ports, LoopConfig::default());
//!
//! let mut frame = vec![0u8; 60];
//! frame[..6].copy_from_slice(&[0xff; 6]); // broadcast
//! frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x0a]);
//! in1.push(frame.clone());
//! assert_eq!(lp.step(Instant::from_secs(1)), 1);
//! assert_eq!(out2.drain(), [frame]);
//! assert!(out1.is_empty()); // never back to where it came from
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io;
use std::os::fd::RawFd;
use std::vec::Vec;

#[cfg(feature = "af-packet")]
pub mod af_packet;
#[cfg(feature = "af-packet")]
pub mod host;
#[cfg(feature = "io-uring")]
pub mod io_uring;
pub mod memory;
pub mod netns;
mod offload;
#[cfg(feature = "af-packet")]
pub mod packet_mmsg;
mod worker;

pub use offload::{FrameMeta, Gso, GsoKind, PartialChecksum, VNET_HEADER_LEN};
pub use worker::{run_worker, LoopConfig, LoopStats, Port, WorkerLoop};

/// Counters of one queue, as the backend and the kernel report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Frames handed to the switch (RX) or to the kernel (TX).
    pub frames: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Frames lost: dropped by the kernel because the ring was full (RX, from
    /// `PACKET_STATISTICS`), or refused because the TX queue was full.
    pub dropped: u64,
    /// Frames the backend could not take as they came (truncated by the ring's frame size,
    /// a GSO type it cannot segment, ...), counted apart from `dropped`.
    pub malformed: u64,
}

/// The receiving half of a port.
pub trait RxQueue: Send {
    /// Appends up to `max` received frames to `frames`, each a whole Ethernet frame (for an
    /// underlay queue: the outer headers first, as [`Ingress::Underlay`] expects), without
    /// waiting. The frames borrow the queue's buffers until [`RxQueue::release`]; the switch
    /// may rewrite them in place. Returns how many were appended (0: nothing waiting).
    ///
    /// [`Ingress::Underlay`]: crate::switch::Ingress::Underlay
    fn recv<'a>(&'a mut self, frames: &mut Vec<&'a mut [u8]>, max: usize) -> io::Result<usize>;

    /// [`RxQueue::recv`], and for each frame appended, what the kernel said about it
    /// (offloads: a partial checksum to complete, a GSO super-frame) appended to `metas`.
    /// Backends that learn nothing of the kind keep this default: plain frames.
    fn recv_with_meta<'a>(
        &'a mut self,
        frames: &mut Vec<&'a mut [u8]>,
        metas: &mut Vec<FrameMeta>,
        max: usize,
    ) -> io::Result<usize> {
        let count = self.recv(frames, max)?;
        metas.extend(core::iter::repeat_n(FrameMeta::default(), count));
        Ok(count)
    }

    /// Gives the buffers of the frames of the last [`RxQueue::recv`] back (to the kernel's
    /// ring, or to the queue's pool).
    fn release(&mut self);

    /// A descriptor that polls readable when frames wait, for a worker that sleeps when idle.
    fn poll_fd(&self) -> Option<RawFd>;

    /// Counters so far (reading the kernel's, where it keeps them).
    fn stats(&mut self) -> QueueStats;
}

/// The transmitting half of a port.
pub trait TxQueue: Send {
    /// Queues one frame, `header` then `payload` (an [`Action`]'s two parts), copying it into
    /// the queue's buffer. `Ok(false)` if the queue is full: the frame is dropped and counted
    /// in [`QueueStats::dropped`].
    ///
    /// [`Action`]: crate::switch::Action
    fn send(&mut self, header: &[u8], payload: &[u8]) -> io::Result<bool>;

    /// Hands the queued frames to the kernel (one system call for the batch, or none).
    fn flush(&mut self) -> io::Result<()>;

    /// True if [`TxQueue::send_offloaded`] hands offloads on to the kernel (AF_PACKET with a
    /// virtio-net header): a GSO super-frame may then be sent whole. Default: no.
    fn accepts_offloads(&self) -> bool {
        false
    }

    /// Queues one frame, `header` then `payload`, whose checksum or segmentation the kernel
    /// is to finish as `meta` says (offsets from the start of `header`). Queues that do not
    /// accept offloads send plain frames as [`TxQueue::send`] and refuse the others
    /// (`Ok(false)`, counted in [`QueueStats::malformed`] by the queues that count).
    fn send_offloaded(
        &mut self,
        header: &[u8],
        payload: &[u8],
        meta: &FrameMeta,
    ) -> io::Result<bool> {
        if meta.is_plain() {
            self.send(header, payload)
        } else {
            Ok(false)
        }
    }

    /// Counters so far.
    fn stats(&mut self) -> QueueStats;
}

/// Empties `frames` and gives it back with any lifetime, keeping its allocation, so that one
/// vector serves batch after batch (`collect` of an empty `into_iter` of the same layout
/// reuses the buffer).
pub fn recycle<'b>(mut frames: Vec<&mut [u8]>) -> Vec<&'b mut [u8]> {
    frames.clear();
    frames.into_iter().map(|_| unreachable_frame()).collect()
}

// The vector is empty: this is never called. A function rather than `unreachable!()` so that
// the crate's no-panic rule reads plainly.
fn unreachable_frame<'b>() -> &'b mut [u8] {
    &mut []
}
