//! An in-memory port: frames pushed in by a test come out of [`MemoryRx`], frames sent to
//! [`MemoryTx`] are collected for the test to read. It drives the same worker loop as the
//! Linux backends, without privileges.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::vec::Vec;

use super::{QueueStats, RxQueue, TxQueue};

/// The frames waiting in one direction of an in-memory port, shared with the test.
#[derive(Debug, Clone, Default)]
pub struct Frames(Arc<Mutex<VecDeque<Vec<u8>>>>);

impl Frames {
    /// An empty queue.
    pub fn new() -> Frames {
        Frames::default()
    }

    /// Appends a frame.
    pub fn push(&self, frame: Vec<u8>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(frame);
    }

    /// Takes every frame queued so far.
    pub fn drain(&self) -> Vec<Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect()
    }

    /// How many frames wait.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// True if no frame waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn pop(&self) -> Option<Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }
}

/// The receiving half: frames come from a [`Frames`] that the test fills.
#[derive(Debug)]
pub struct MemoryRx {
    source: Frames,
    held: Vec<Vec<u8>>,
    stats: QueueStats,
}

impl MemoryRx {
    /// A queue that receives what is pushed into `source`.
    pub fn new(source: Frames) -> MemoryRx {
        MemoryRx {
            source,
            held: Vec::new(),
            stats: QueueStats::default(),
        }
    }
}

impl RxQueue for MemoryRx {
    fn recv<'a>(&'a mut self, frames: &mut Vec<&'a mut [u8]>, max: usize) -> io::Result<usize> {
        self.held.clear();
        while self.held.len() < max {
            let Some(frame) = self.source.pop() else {
                break;
            };
            self.stats.frames += 1;
            self.stats.bytes += frame.len() as u64;
            self.held.push(frame);
        }
        let count = self.held.len();
        frames.extend(self.held.iter_mut().map(|f| f.as_mut_slice()));
        Ok(count)
    }

    fn release(&mut self) {
        self.held.clear();
    }

    fn poll_fd(&self) -> Option<RawFd> {
        None
    }

    fn stats(&mut self) -> QueueStats {
        self.stats
    }
}

/// The transmitting half: frames go to a [`Frames`] that the test reads, up to a capacity
/// (beyond it they are dropped and counted, as a full ring would).
#[derive(Debug)]
pub struct MemoryTx {
    sink: Frames,
    capacity: usize,
    stats: QueueStats,
}

impl MemoryTx {
    /// A queue that sends into `sink`, holding at most `capacity` unread frames.
    pub fn new(sink: Frames, capacity: usize) -> MemoryTx {
        MemoryTx {
            sink,
            capacity,
            stats: QueueStats::default(),
        }
    }
}

impl TxQueue for MemoryTx {
    fn send(&mut self, header: &[u8], payload: &[u8]) -> io::Result<bool> {
        if self.sink.len() >= self.capacity {
            self.stats.dropped += 1;
            return Ok(false);
        }
        let mut frame = Vec::with_capacity(header.len() + payload.len());
        frame.extend_from_slice(header);
        frame.extend_from_slice(payload);
        self.stats.frames += 1;
        self.stats.bytes += frame.len() as u64;
        self.sink.push(frame);
        Ok(true)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn stats(&mut self) -> QueueStats {
        self.stats
    }
}
