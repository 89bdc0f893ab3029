//! Linux backends: where frames come from and go to on a real host (features `af-packet` and
//! `io-uring`; Linux only). The core does no I/O; this module is the thin layer around it,
//! and the only place in the crate with `unsafe` code besides the load balancer's mailboxes.
//!
//! One abstraction for every backend: a port is a receive queue ([`RxQueue`]) and a transmit
//! queue ([`TxQueue`]), split so that a worker can send on a port (an ARP reply back to its
//! sender) while frames it received there are still borrowed. The worker loop
//! ([`run_worker`](self)) drives any mix of them: the in-memory port ([`memory`]) of the
//! tests, AF_PACKET rings, and the io_uring underlay.

use std::io;
use std::os::fd::RawFd;
use std::vec::Vec;

#[cfg(feature = "io-uring")]
pub mod io_uring;
pub mod memory;

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
