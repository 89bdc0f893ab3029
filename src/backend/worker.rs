//! The worker loop: receive a batch from every port, run it through the switch, transmit the
//! actions, give the buffers back; the switch's timers about once a second; sleep in
//! `poll(2)` when every port is idle. The same loop drives any mix of ports (in-memory,
//! AF_PACKET, io_uring). One loop per thread, each with its own [`Worker`] and its own queues.
//!
//! [`WorkerLoop::step`] is one turn of the loop with the time given, for tests that drive it
//! deterministically; [`WorkerLoop::run`] (and [`run_worker`]) loops until a stop flag is set.

// Only for poll(2), in `wait_readable`.
#![allow(unsafe_code)]

use std::boxed::Box;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::vec::Vec;

use super::{recycle, FrameMeta, RxQueue, TxQueue};
use crate::gro::TcpCoalescer;
use crate::switch::{Egress, Ingress, Output, Payload, Received, Switch, Worker};
use crate::time::{Duration, Instant};

/// How a [`WorkerLoop`] batches, sleeps and runs timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopConfig {
    /// Most frames per batch, over all ports together (256: enough to amortise a system
    /// call and the pipeline's per-batch work, small enough to stay in L1/L2 cache).
    pub batch_size: usize,
    /// How often [`Switch::poll`] runs (ageing, ARP/ND probes): 1 s.
    pub timer_interval: Duration,
    /// Longest sleep in `poll(2)` when idle; the stop flag is seen at least this often.
    pub idle_timeout: Duration,
    /// Empty turns before sleeping: spinning a little keeps latency low under bursts
    /// without burning a core when idle.
    pub idle_spins: u32,
    /// Most bytes of segments cut from GSO super-frames per batch (8 MiB: some 120 full
    /// 64 KB super-frames); super-frames beyond it are dropped and counted.
    pub gso_scratch_limit: usize,
    /// Join consecutive TCP segments of one flow bound for the same local port into one
    /// super-frame ([`crate::gro`]) when that port's queue accepts offloads: the receiving
    /// host's stack then takes them at once, as the kernel's GRO would give them, and sends
    /// fewer acknowledgements back through the switch. Default on.
    pub coalesce: bool,
}

impl Default for LoopConfig {
    fn default() -> LoopConfig {
        LoopConfig {
            batch_size: 256,
            timer_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_millis(10),
            idle_spins: 32,
            gso_scratch_limit: 8 << 20,
            coalesce: true,
        }
    }
}

/// Counters of one loop, beside the switch's own ([`Worker::counters`]) and the queues'.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Turns of the loop ([`WorkerLoop::step`] calls).
    pub steps: u64,
    /// Frames received from all queues.
    pub received: u64,
    /// Frames given to a transmit queue and accepted by it.
    pub sent: u64,
    /// Actions whose egress has no queue in this loop (dropped).
    pub no_egress: u64,
    /// Actions refused by a full transmit queue (also in that queue's `dropped`).
    pub tx_full: u64,
    /// Transmit errors (`send` or `flush` failed).
    pub tx_errors: u64,
    /// Flushes the kernel could not take at once (`WouldBlock`): the frames stay queued
    /// and the flush is tried again on the next turn.
    pub tx_retries: u64,
    /// Receive errors (`recv` failed; the queue is tried again on the next turn).
    pub rx_errors: u64,
    /// Partial checksums completed in software before switching.
    pub checksums_completed: u64,
    /// GSO super-frames received.
    pub gso_frames: u64,
    /// Segments cut from them (TCP over IPv4 and IPv6, also inside VXLAN over UDP as a
    /// kernel VTEP hands it over, and UDP GSO datagrams, in software: [`crate::gso`]).
    pub gso_segments: u64,
    /// Super-frames sent whole, for the kernel to segment: their one destination was a
    /// local port whose queue accepts offloads ([`TxQueue::accepts_offloads`]).
    pub gso_whole: u64,
    /// GSO super-frames dropped: not TCP or UDP L4 (UFO, unknown types), headers the segmenter
    /// refuses, or beyond [`LoopConfig::gso_scratch_limit`]. Sending one as it is would put a
    /// frame far above the MTU, with a partial checksum, on the next link. Also super-frames
    /// (received or coalesced) that the transmit queue refused.
    pub gso_dropped: u64,
    /// Frames whose partial checksum could not be completed (offsets outside the frame).
    pub offload_malformed: u64,
    /// Super-frames joined from TCP segments for a local port ([`LoopConfig::coalesce`]),
    /// each counted once in `sent`.
    pub gro_frames: u64,
    /// Segments joined into them.
    pub gro_segments: u64,
    /// Runs of the switch's timers.
    pub timer_runs: u64,
}

/// One port of a loop: where its frames come from, and its two queues.
pub struct Port {
    /// `Ingress::Port(id)` for a local port, `Ingress::Underlay` for the underlay; the
    /// port receives the actions of the matching [`Egress`].
    pub ingress: Ingress,
    /// Its receiving half.
    pub rx: Box<dyn RxQueue>,
    /// Its transmitting half.
    pub tx: Box<dyn TxQueue>,
}

impl Port {
    /// A port from its two halves.
    pub fn new(ingress: Ingress, rx: Box<dyn RxQueue>, tx: Box<dyn TxQueue>) -> Port {
        Port { ingress, rx, tx }
    }
}

impl core::fmt::Debug for Port {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Port")
            .field("ingress", &self.ingress)
            .finish_non_exhaustive()
    }
}

struct TxSlot {
    egress: Egress,
    queue: Box<dyn TxQueue>,
    /// A local port whose queue accepts offloads: TCP segments to it are coalesced.
    coalesce: bool,
    dirty: bool,
}

struct RxSlot {
    ingress: Ingress,
    queue: Box<dyn RxQueue>,
    touched: bool,
}

/// The loop of one worker thread: its ports, its [`Worker`], and buffers reused from one
/// batch to the next (no allocation per batch once warm).
pub struct WorkerLoop<'s> {
    switch: &'s Switch,
    worker: Worker,
    config: LoopConfig,
    rx: Vec<RxSlot>,
    tx: Vec<TxSlot>,
    output: Output,
    frames: Vec<&'static mut [u8]>,
    metas: Vec<FrameMeta>,
    batch: Vec<Received<'static>>,
    /// The batch rebuilt with GSO frames replaced by their segments (kept for its
    /// allocation).
    spare: Vec<Received<'static>>,
    /// Segments of this batch's GSO frames.
    gso_scratch: Vec<u8>,
    /// Offload metadata of the batch's frames, by index, when some frame goes whole.
    offload_metas: Vec<FrameMeta>,
    /// The super-frame being joined, and the port it goes to.
    gro: TcpCoalescer,
    gro_egress: Option<Egress>,
    pollfds: Vec<libc::pollfd>,
    first_rx: usize,
    next_timer: Option<Instant>,
    stats: LoopStats,
}

impl core::fmt::Debug for WorkerLoop<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WorkerLoop")
            .field("ports", &self.rx.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn egress_of(ingress: Ingress) -> Egress {
    match ingress {
        Ingress::Port(id) => Egress::Port(id),
        Ingress::Underlay => Egress::Underlay,
    }
}

/// Empties a batch and gives it back with any lifetime, keeping its allocation (as
/// [`recycle`] does for frames).
fn recycle_batch<'b>(mut batch: Vec<Received<'_>>) -> Vec<Received<'b>> {
    batch.clear();
    batch
        .into_iter()
        .map(|r| Received {
            ingress: r.ingress,
            frame: &mut [],
        })
        .collect()
}

impl<'s> WorkerLoop<'s> {
    /// A loop over `ports` for `worker` of `switch`.
    pub fn new(
        switch: &'s Switch,
        worker: Worker,
        ports: Vec<Port>,
        config: LoopConfig,
    ) -> WorkerLoop<'s> {
        let mut rx = Vec::with_capacity(ports.len());
        let mut tx = Vec::with_capacity(ports.len());
        for port in ports {
            let egress = egress_of(port.ingress);
            tx.push(TxSlot {
                egress,
                coalesce: config.coalesce
                    && matches!(egress, Egress::Port(_))
                    && port.tx.accepts_offloads(),
                queue: port.tx,
                dirty: false,
            });
            rx.push(RxSlot {
                ingress: port.ingress,
                queue: port.rx,
                touched: false,
            });
        }
        let batch_size = config.batch_size.max(1);
        WorkerLoop {
            switch,
            worker,
            config: LoopConfig {
                batch_size,
                ..config
            },
            rx,
            tx,
            output: Output::default(),
            frames: Vec::with_capacity(batch_size),
            metas: Vec::with_capacity(batch_size),
            batch: Vec::with_capacity(batch_size),
            spare: Vec::new(),
            gso_scratch: Vec::new(),
            offload_metas: Vec::new(),
            gro: TcpCoalescer::new(),
            gro_egress: None,
            pollfds: Vec::new(),
            first_rx: 0,
            next_timer: None,
            stats: LoopStats::default(),
        }
    }

    /// This loop's counters.
    pub fn stats(&self) -> LoopStats {
        self.stats
    }

    /// The switch worker (its counters).
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// The transmit queue of `egress`, for its counters.
    pub fn tx_queue(&mut self, egress: Egress) -> Option<&mut dyn TxQueue> {
        self.tx
            .iter_mut()
            .find(|t| t.egress == egress)
            .map(|t| &mut *t.queue as &mut dyn TxQueue)
    }

    /// The receive queue of `ingress`, for its counters.
    pub fn rx_queue(&mut self, ingress: Ingress) -> Option<&mut dyn RxQueue> {
        self.rx
            .iter_mut()
            .find(|r| r.ingress == ingress)
            .map(|r| &mut *r.queue as &mut dyn RxQueue)
    }

    /// Gives the switch worker and the ports back: to restart the loop with other ports
    /// while keeping the worker's state (connection tracking, counters).
    pub fn into_parts(self) -> (Worker, Vec<Port>) {
        let worker = self.worker;
        let ports = self
            .rx
            .into_iter()
            .zip(self.tx)
            .map(|(rx, tx)| Port {
                ingress: rx.ingress,
                rx: rx.queue,
                tx: tx.queue,
            })
            .collect();
        (worker, ports)
    }

    /// Gives the ports back (after [`WorkerLoop::run`], to read their counters).
    pub fn into_ports(self) -> Vec<Port> {
        self.rx
            .into_iter()
            .zip(self.tx)
            .map(|(rx, tx)| Port {
                ingress: rx.ingress,
                rx: rx.queue,
                tx: tx.queue,
            })
            .collect()
    }

    /// One turn: the timers if due, then one batch (at most [`LoopConfig::batch_size`]
    /// frames from all ports, starting with a different port each turn so that a busy port
    /// cannot starve the others) through the switch and out. Returns how many frames were
    /// received.
    pub fn step(&mut self, now: Instant) -> usize {
        self.stats.steps += 1;
        if self.next_timer.is_none_or(|due| now >= due) {
            self.run_timers(now);
        }
        let WorkerLoop {
            switch,
            worker,
            config,
            rx,
            tx,
            output,
            frames,
            metas,
            batch,
            first_rx,
            stats,
            gso_scratch,
            spare,
            offload_metas,
            gro,
            gro_egress,
            ..
        } = self;
        let mut frames = recycle(core::mem::take(frames));
        let mut batch = recycle_batch(core::mem::take(batch));
        metas.clear();

        let ports = rx.len();
        let start = if ports == 0 { 0 } else { *first_rx % ports };
        *first_rx = start + 1;
        let (before, after) = rx.split_at_mut(start);
        for slot in after.iter_mut().chain(before.iter_mut()) {
            let room = config.batch_size.saturating_sub(batch.len());
            if room == 0 {
                break;
            }
            slot.touched = true;
            let metas_before = metas.len();
            if slot.queue.recv_with_meta(&mut frames, metas, room).is_err() {
                stats.rx_errors += 1;
            }
            // A queue that appended frames without metadata gets plain metadata for them.
            metas.resize(metas_before + frames.len(), FrameMeta::default());
            let ingress = slot.ingress;
            batch.extend(frames.drain(..).map(|frame| Received { ingress, frame }));
        }
        metas.truncate(batch.len());
        let count = batch.len();
        stats.received += count as u64;

        // Offloads: partial checksums finished in place; a TCP super-frame goes whole to a
        // local port that takes offloads, or is cut into segments.
        offload_metas.clear();
        if metas.iter().any(|m| !m.is_plain()) {
            let mut prepared = recycle_batch(core::mem::take(spare));
            let whole = |received: &Received<'_>| {
                switch
                    .local_destination(worker, received.ingress, received.frame)
                    .is_some_and(|to| {
                        tx.iter()
                            .any(|t| t.egress == Egress::Port(to) && t.queue.accepts_offloads())
                    })
            };
            prepare_offloads(
                &mut batch,
                metas,
                &mut prepared,
                offload_metas,
                gso_scratch,
                config.gso_scratch_limit,
                stats,
                whole,
            );
            *spare = recycle_batch(core::mem::replace(&mut batch, prepared));
            if offload_metas.iter().all(FrameMeta::is_plain) {
                offload_metas.clear();
            }
        }

        if !batch.is_empty() {
            switch.process(worker, &mut batch, now, output);
            for action in &output.actions {
                let (header, payload) = output.parts(action, &batch);
                let offload = match &action.payload {
                    Payload::Received { index, range } => offload_metas
                        .get(*index)
                        .filter(|m| !m.is_plain())
                        .map(|m| m.moved(range.start, header.len())),
                    Payload::Generated(_) => None,
                };
                let to = action.egress;
                if offload.is_none() && tx.iter().any(|t| t.egress == to && t.coalesce) {
                    if *gro_egress == Some(to) && gro.merge([header, payload]) {
                        continue;
                    }
                    send_coalesced(tx, stats, gro, gro_egress);
                    if gro.start([header, payload]) {
                        *gro_egress = Some(to);
                        continue;
                    }
                } else if *gro_egress == Some(to) {
                    // The flow's earlier segments go first.
                    send_coalesced(tx, stats, gro, gro_egress);
                }
                match offload {
                    None => transmit(tx, stats, to, header, payload),
                    Some(meta) => {
                        let whole = meta.is_some_and(|m| m.gso.is_some());
                        if transmit_offloaded(tx, stats, to, header, payload, meta) && whole {
                            stats.gso_whole += 1;
                        }
                    }
                }
            }
            send_coalesced(tx, stats, gro, gro_egress);
        }
        flush(tx, stats);

        self.frames = recycle(frames);
        self.batch = recycle_batch(batch);
        for slot in &mut self.rx {
            if core::mem::take(&mut slot.touched) {
                slot.queue.release();
            }
        }
        count
    }

    /// Runs the switch's timers now ([`Switch::poll`]) and sends what they produce (ARP/ND
    /// probes) to the underlay. [`WorkerLoop::step`] calls it every
    /// [`LoopConfig::timer_interval`].
    pub fn run_timers(&mut self, now: Instant) {
        self.stats.timer_runs += 1;
        self.next_timer = Some(now.saturating_add(self.config.timer_interval));
        self.switch.poll(now, &mut self.output);
        for action in &self.output.actions {
            let (header, payload) = self.output.parts(action, &[]);
            transmit(
                &mut self.tx,
                &mut self.stats,
                action.egress,
                header,
                payload,
            );
        }
        flush(&mut self.tx, &mut self.stats);
    }

    /// Loops until `stop` is set: [`WorkerLoop::step`] with `clock()` as the time, and a
    /// sleep in `poll(2)` on the receive queues' descriptors after
    /// [`LoopConfig::idle_spins`] empty turns (at most [`LoopConfig::idle_timeout`]; 1 ms if
    /// a queue has no descriptor to wait on or a flush is still due).
    pub fn run(&mut self, mut clock: impl FnMut() -> Instant, stop: &AtomicBool) {
        let mut idle: u32 = 0;
        while !stop.load(Ordering::Relaxed) {
            if self.step(clock()) > 0 {
                idle = 0;
                continue;
            }
            idle = idle.saturating_add(1);
            if idle >= self.config.idle_spins {
                self.wait_readable();
            }
        }
    }

    /// Sleeps until a receive queue's descriptor polls readable, or the idle timeout.
    fn wait_readable(&mut self) {
        self.pollfds.clear();
        let mut all_pollable = true;
        for slot in &self.rx {
            match slot.queue.poll_fd() {
                Some(fd) => self.pollfds.push(libc::pollfd {
                    fd: fd as RawFd,
                    events: libc::POLLIN,
                    revents: 0,
                }),
                None => all_pollable = false,
            }
        }
        let unflushed = self.tx.iter().any(|t| t.dirty);
        let timeout = if all_pollable && !unflushed {
            self.config.idle_timeout
        } else {
            self.config.idle_timeout.min(Duration::from_millis(1))
        };
        let timeout_ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pollfds` is a live, exclusively borrowed array of `pollfds.len()`
        // initialised `pollfd`s; poll(2) writes only their `revents` fields. An error (EINTR)
        // is harmless: the loop simply turns again.
        let _ = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
    }
}

fn transmit(
    tx: &mut [TxSlot],
    stats: &mut LoopStats,
    egress: Egress,
    header: &[u8],
    payload: &[u8],
) {
    let Some(slot) = tx.iter_mut().find(|t| t.egress == egress) else {
        stats.no_egress += 1;
        return;
    };
    slot.dirty = true;
    match slot.queue.send(header, payload) {
        Ok(true) => stats.sent += 1,
        Ok(false) => stats.tx_full += 1,
        Err(_) => stats.tx_errors += 1,
    }
}

/// What to do with one received frame before the switch sees it.
#[derive(Debug, Clone, Copy)]
enum Plan {
    Keep,
    /// A super-frame that goes on whole, with its metadata.
    Whole,
    Drop,
    /// Replaced by this many segments, next in `gso_scratch`.
    Segments(usize),
}

/// Completes partial checksums in place and cuts TCP super-frames into segments (written
/// one after the other into `scratch`), rebuilding the batch into `prepared` in the original
/// order (a flow's segments stay where its super-frame was).
#[allow(clippy::too_many_arguments)]
fn prepare_offloads<'a>(
    batch: &mut Vec<Received<'a>>,
    metas: &[FrameMeta],
    prepared: &mut Vec<Received<'a>>,
    prepared_metas: &mut Vec<FrameMeta>,
    scratch: &'a mut Vec<u8>,
    scratch_limit: usize,
    stats: &mut LoopStats,
    whole: impl Fn(&Received<'_>) -> bool,
) {
    scratch.clear();
    let mut lengths: Vec<usize> = Vec::new();
    let mut plans: Vec<Plan> = Vec::with_capacity(batch.len());
    for (received, meta) in batch.iter_mut().zip(
        metas
            .iter()
            .chain(core::iter::repeat(&FrameMeta::default())),
    ) {
        let plan = if let Some(gso) = meta.gso {
            stats.gso_frames += 1;
            let kernel_segments = matches!(
                gso.kind,
                super::GsoKind::TcpV4 | super::GsoKind::TcpV6 | super::GsoKind::UdpL4
            );
            if kernel_segments && whole(received) {
                plans.push(Plan::Whole);
                continue;
            }
            let from_underlay = received.ingress == Ingress::Underlay;
            segment(
                received.frame,
                gso,
                from_underlay,
                scratch,
                scratch_limit,
                &mut lengths,
            )
            .map(|count| {
                stats.gso_segments += count as u64;
                Plan::Segments(count)
            })
            .unwrap_or_else(|| {
                stats.gso_dropped += 1;
                Plan::Drop
            })
        } else if let Some(partial) = meta.partial_checksum {
            if partial.complete(received.frame) {
                stats.checksums_completed += 1;
                Plan::Keep
            } else {
                stats.offload_malformed += 1;
                Plan::Drop
            }
        } else {
            Plan::Keep
        };
        plans.push(plan);
    }
    let mut rest: &'a mut [u8] = scratch.as_mut_slice();
    let mut lengths = lengths.into_iter();
    let mut metas = metas.iter().copied();
    for (received, plan) in batch.drain(..).zip(plans) {
        let meta = metas.next().unwrap_or_default();
        match plan {
            Plan::Keep => {
                prepared.push(received);
                prepared_metas.push(FrameMeta::default());
            }
            Plan::Whole => {
                prepared.push(received);
                prepared_metas.push(meta);
            }
            Plan::Drop => {}
            Plan::Segments(count) => {
                for len in lengths.by_ref().take(count) {
                    let available = rest.len();
                    let (segment, tail) =
                        core::mem::take(&mut rest).split_at_mut(len.min(available));
                    rest = tail;
                    prepared.push(Received {
                        ingress: received.ingress,
                        frame: segment,
                    });
                    prepared_metas.push(FrameMeta::default());
                }
            }
        }
    }
}

/// Cuts one super-frame into segments appended to `scratch` (their lengths to `lengths`);
/// the number of segments, or `None` if it cannot (nothing appended then). Plain TCP with
/// [`crate::gso::TcpSegmenter`]; VXLAN-encapsulated TCP from a kernel VTEP behind a veth
/// underlay (one UDP-tunnel GSO frame, which AF_PACKET flags as TCP GSO: the inner TCP's)
/// with [`crate::gso::TunnelSegmenter`].
fn segment(
    frame: &[u8],
    gso: super::Gso,
    from_underlay: bool,
    scratch: &mut Vec<u8>,
    scratch_limit: usize,
    lengths: &mut Vec<usize>,
) -> Option<usize> {
    use crate::gso::{GsoError, TcpSegmenter, TunnelSegmenter, UdpSegmenter};
    if gso.kind == super::GsoKind::UdpL4 {
        // From the underlay, VXLAN datagrams a peer switch joined: over IPv4 their UDP
        // checksums stay zero ("none"), which decapsulation would only verify again.
        let mut s = UdpSegmenter::new(frame, gso.segment_size, from_underlay).ok()?;
        return cut(
            s.segment_count(),
            s.max_segment_len(),
            |out| s.next_into(out),
            scratch,
            scratch_limit,
            lengths,
        );
    }
    if !matches!(gso.kind, super::GsoKind::TcpV4 | super::GsoKind::TcpV6) {
        return None;
    }
    match TcpSegmenter::new(frame, gso.segment_size) {
        Ok(mut s) => cut(
            s.segment_count(),
            s.max_segment_len(),
            |out| s.next_into(out),
            scratch,
            scratch_limit,
            lengths,
        ),
        Err(GsoError::NotTcp) => {
            let mut s = TunnelSegmenter::new(frame, gso.segment_size).ok()?;
            cut(
                s.segment_count(),
                s.max_segment_len(),
                |out| s.next_into(out),
                scratch,
                scratch_limit,
                lengths,
            )
        }
        Err(_) => None,
    }
}

/// Writes `count` segments of at most `max_len` bytes with `next` into `scratch`, within
/// `scratch_limit`; their lengths to `lengths`. Nothing appended if one fails.
fn cut(
    count: usize,
    max_len: usize,
    mut next: impl FnMut(&mut [u8]) -> Option<usize>,
    scratch: &mut Vec<u8>,
    scratch_limit: usize,
    lengths: &mut Vec<usize>,
) -> Option<usize> {
    let start = scratch.len();
    if start + count * max_len > scratch_limit {
        return None;
    }
    scratch.resize(start + count * max_len, 0);
    let lengths_before = lengths.len();
    let mut at = start;
    for _ in 0..count {
        let Some(len) = scratch.get_mut(at..).and_then(&mut next) else {
            // The batch takes its segments from `scratch` in order: undo this frame's.
            scratch.truncate(start);
            lengths.truncate(lengths_before);
            return None;
        };
        lengths.push(len);
        at += len;
    }
    scratch.truncate(at);
    Some(count)
}

/// Sends the super-frame being joined, if any, to its port: as a plain frame if it holds
/// one segment, else with the GSO and partial checksum that describe it.
fn send_coalesced(
    tx: &mut [TxSlot],
    stats: &mut LoopStats,
    gro: &mut TcpCoalescer,
    egress: &mut Option<Egress>,
) {
    let (Some(to), Some(out)) = (egress.take(), gro.finish()) else {
        return;
    };
    let Some(gso) = out.gso else {
        transmit(tx, stats, to, out.frame, &[]);
        return;
    };
    stats.gro_frames += 1;
    stats.gro_segments += u64::from(gso.segments);
    let meta = FrameMeta::from(gso);
    let _ = transmit_offloaded(tx, stats, to, out.frame, &[], Some(meta));
}

/// Sends a frame with offloads for the kernel (a super-frame going whole); `meta` is `None`
/// if its offsets did not survive the switch's rewrite. Refused: counted as a GSO drop.
/// True if the queue took it.
#[must_use]
fn transmit_offloaded(
    tx: &mut [TxSlot],
    stats: &mut LoopStats,
    egress: Egress,
    header: &[u8],
    payload: &[u8],
    meta: Option<FrameMeta>,
) -> bool {
    let (Some(slot), Some(meta)) = (tx.iter_mut().find(|t| t.egress == egress), meta) else {
        stats.gso_dropped += 1;
        return false;
    };
    slot.dirty = true;
    match slot.queue.send_offloaded(header, payload, &meta) {
        Ok(true) => {
            stats.sent += 1;
            return true;
        }
        Ok(false) => stats.gso_dropped += 1,
        Err(_) => stats.tx_errors += 1,
    }
    false
}

/// Flushes the queues that were sent to. A queue whose kernel cannot take the frames now
/// (`WouldBlock`: socket buffer full) keeps them and stays due for the next turn's flush.
fn flush(tx: &mut [TxSlot], stats: &mut LoopStats) {
    for slot in tx {
        if !core::mem::take(&mut slot.dirty) {
            continue;
        }
        match slot.queue.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                slot.dirty = true;
                stats.tx_retries += 1;
            }
            Err(_) => stats.tx_errors += 1,
        }
    }
}

/// Runs a worker loop over `ports` until `stop` is set, with the default [`LoopConfig`],
/// and gives its counters back.
pub fn run_worker(
    switch: &Switch,
    worker: Worker,
    ports: Vec<Port>,
    clock: impl FnMut() -> Instant,
    stop: &AtomicBool,
) -> (LoopStats, Worker) {
    let mut lp = WorkerLoop::new(switch, worker, ports, LoopConfig::default());
    lp.run(clock, stop);
    (lp.stats, lp.worker)
}

#[cfg(test)]
mod test {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::vec;

    use super::*;
    use crate::backend::memory::{Frames, MemoryRx, MemoryTx};
    use crate::backend::{Gso, GsoKind};
    use crate::backend::{PartialChecksum, QueueStats};
    use crate::fdb::FdbConfig;
    use crate::switch::{NextHop, PortConfig, SwitchConfig, UnderlayConfig, VniSettings};
    use crate::tunnel::{DecapConfig, EncapConfig};
    use crate::wire::EthernetAddress;
    use crate::{PortId, Vni};

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));

    fn vni() -> Vni {
        Vni::new(100).unwrap()
    }

    /// Ports 1 and 2 on VNI 100, which floods to one remote VTEP.
    fn switch() -> Switch {
        Switch::new(SwitchConfig {
            underlay: UnderlayConfig {
                local_ip: LOCAL,
                local_mac: EthernetAddress([2, 0xee, 0, 0, 0, 1]),
                next_hop: NextHop::Static {
                    default: EthernetAddress([2, 0xee, 0, 0, 0, 0xff]),
                    per_vtep: Vec::new(),
                },
                encap: EncapConfig::default(),
                decap: DecapConfig::default(),
            },
            ports: vec![
                PortConfig::access(PortId(1), vni()),
                PortConfig::access(PortId(2), vni()),
            ],
            vnis: vec![VniSettings::new(vni(), vec![REMOTE])],
            static_entries: Vec::new(),
            neighbors: Vec::new(),
            fdb: FdbConfig {
                capacity: 1024,
                ..FdbConfig::default()
            },
            services: Vec::new(),
            lb: crate::switch::LbSettings::default(),
        })
        .unwrap()
    }

    fn mac(n: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, n]
    }

    /// Ethernet + IPv4 + UDP, 64 bytes, UDP checksum field 0 ("none").
    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&50u16.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[198, 19, 0, src[5]]);
        f[30..34].copy_from_slice(&[198, 19, 0, dst[5]]);
        f[38..40].copy_from_slice(&30u16.to_be_bytes());
        f
    }

    struct MemoryPort {
        to_switch: Frames,
        from_switch: Frames,
    }

    fn memory_port(ingress: Ingress) -> (Port, MemoryPort) {
        let (to_switch, from_switch) = (Frames::new(), Frames::new());
        let port = Port::new(
            ingress,
            Box::new(MemoryRx::new(to_switch.clone())),
            Box::new(MemoryTx::new(from_switch.clone(), 1024)),
        );
        (
            port,
            MemoryPort {
                to_switch,
                from_switch,
            },
        )
    }

    #[test]
    fn a_frame_in_on_one_port_comes_out_of_the_right_one() {
        let switch = switch();
        let (p1, one) = memory_port(Ingress::Port(PortId(1)));
        let (p2, two) = memory_port(Ingress::Port(PortId(2)));
        let (pu, underlay) = memory_port(Ingress::Underlay);
        let mut lp = WorkerLoop::new(
            &switch,
            switch.worker(),
            vec![p1, p2, pu],
            LoopConfig::default(),
        );

        // Unknown destination: flooded to port 2 and, encapsulated, to the remote VTEP.
        one.to_switch.push(frame(mac(2), mac(1)));
        assert_eq!(lp.step(Instant::from_secs(1)), 1);
        assert_eq!(two.from_switch.drain(), vec![frame(mac(2), mac(1))]);
        assert!(one.from_switch.is_empty(), "never back out of the ingress");
        let outer = underlay.from_switch.drain();
        assert_eq!(outer.len(), 1);
        assert_eq!(
            outer[0].len(),
            50 + 64,
            "VXLAN over IPv4 in front of the frame"
        );
        assert_eq!(&outer[0][30..34], &[198, 18, 0, 2], "to the remote VTEP");
        assert_eq!(&outer[0][50..], &frame(mac(2), mac(1))[..]);

        // The answer: mac(1) was learned on port 1, so it goes there only.
        two.to_switch.push(frame(mac(1), mac(2)));
        assert_eq!(lp.step(Instant::from_secs(1)), 1);
        assert_eq!(one.from_switch.drain(), vec![frame(mac(1), mac(2))]);
        assert!(two.from_switch.is_empty());
        assert!(underlay.from_switch.is_empty());

        // And back from the underlay: decapsulated to port 2 (mac(2) learned there).
        // (inner: a new host mac(9) behind the VTEP, to mac(2)).
        let mut inner = frame(mac(1), mac(2));
        inner[..6].copy_from_slice(&mac(2));
        inner[6..12].copy_from_slice(&mac(9));
        let template = crate::tunnel::EncapTemplate::new(
            &EncapConfig::default(),
            &crate::tunnel::Underlay::ipv4(
                EthernetAddress([2, 0xee, 0, 0, 0, 0xff]),
                EthernetAddress([2, 0xee, 0, 0, 0, 1]),
                Ipv4Addr::new(198, 18, 0, 2),
                Ipv4Addr::new(198, 18, 0, 1),
            ),
            vni(),
        )
        .unwrap();
        let mut encapsulated = vec![0u8; 50];
        encapsulated.extend_from_slice(&inner);
        let range = template
            .encap(
                &mut encapsulated,
                50..50 + 64,
                &mut crate::tunnel::IpIdent::new(0),
            )
            .unwrap();
        let encapsulated = encapsulated[range].to_vec();
        underlay.to_switch.push(encapsulated);
        assert_eq!(lp.step(Instant::from_secs(1)), 1);
        assert_eq!(two.from_switch.drain(), vec![inner]);
        assert!(one.from_switch.is_empty());

        let stats = lp.stats();
        assert_eq!(stats.received, 3);
        assert_eq!(stats.sent, 4);
        assert_eq!(stats.no_egress, 0);
        assert_eq!(lp.worker().counters.forwarded, 3);
    }

    #[test]
    fn actions_without_a_queue_are_counted() {
        let switch = switch();
        let (p1, one) = memory_port(Ingress::Port(PortId(1)));
        let (p2, two) = memory_port(Ingress::Port(PortId(2)));
        // No underlay port: the flood copy to the remote VTEP has nowhere to go.
        let mut lp = WorkerLoop::new(
            &switch,
            switch.worker(),
            vec![p1, p2],
            LoopConfig::default(),
        );
        for n in 0..3 {
            one.to_switch.push(frame([0xff; 6], mac(10 + n)));
        }
        assert_eq!(lp.step(Instant::from_secs(1)), 3);
        assert_eq!(two.from_switch.len(), 3);
        assert_eq!(lp.stats().no_egress, 3);
        assert_eq!(lp.stats().sent, 3);
    }

    #[test]
    fn batches_are_bounded_and_shared_between_ports() {
        let switch = switch();
        let (p1, one) = memory_port(Ingress::Port(PortId(1)));
        let (p2, two) = memory_port(Ingress::Port(PortId(2)));
        let config = LoopConfig {
            batch_size: 4,
            ..LoopConfig::default()
        };
        let mut lp = WorkerLoop::new(&switch, switch.worker(), vec![p1, p2], config);
        for n in 0..10 {
            one.to_switch.push(frame(mac(2), mac(1)));
            two.to_switch.push(frame(mac(1), [2, 0, 0, 0, 1, n]));
        }
        let mut turns = 0;
        while lp.step(Instant::from_secs(1)) > 0 {
            turns += 1;
            assert!(turns <= 5, "20 frames in batches of 4");
        }
        assert_eq!(turns, 5);
        assert_eq!(lp.stats().received, 20);
        assert!(one.to_switch.is_empty() && two.to_switch.is_empty());
        assert_eq!(lp.worker().counters.received, 20);
    }

    #[test]
    fn tx_full_is_counted_not_fatal() {
        let switch = switch();
        let (p1, one) = memory_port(Ingress::Port(PortId(1)));
        let sink = Frames::new();
        let p2 = Port::new(
            Ingress::Port(PortId(2)),
            Box::new(MemoryRx::new(Frames::new())),
            Box::new(MemoryTx::new(sink.clone(), 2)),
        );
        let mut lp = WorkerLoop::new(
            &switch,
            switch.worker(),
            vec![p1, p2],
            LoopConfig::default(),
        );
        for _ in 0..5 {
            one.to_switch.push(frame(mac(2), mac(1)));
        }
        lp.step(Instant::from_secs(1));
        assert_eq!(sink.len(), 2);
        assert_eq!(lp.stats().tx_full, 3);
        let q = lp.tx_queue(Egress::Port(PortId(2))).unwrap().stats();
        assert_eq!(q.dropped, 3);
    }

    /// A transmit queue whose kernel is busy for the first `busy` flushes.
    struct BusyTx {
        queued: usize,
        flushed: Arc<std::sync::atomic::AtomicUsize>,
        busy: u32,
    }

    impl TxQueue for BusyTx {
        fn send(&mut self, _: &[u8], _: &[u8]) -> std::io::Result<bool> {
            self.queued += 1;
            Ok(true)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            if self.busy > 0 {
                self.busy -= 1;
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            self.flushed.fetch_add(self.queued, Ordering::Relaxed);
            self.queued = 0;
            Ok(())
        }

        fn stats(&mut self) -> QueueStats {
            QueueStats::default()
        }
    }

    #[test]
    fn a_flush_the_kernel_refuses_is_retried_on_the_next_turn() {
        let switch = switch();
        let (p1, one) = memory_port(Ingress::Port(PortId(1)));
        let flushed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p2 = Port::new(
            Ingress::Port(PortId(2)),
            Box::new(MemoryRx::new(Frames::new())),
            Box::new(BusyTx {
                queued: 0,
                flushed: Arc::clone(&flushed),
                busy: 2,
            }),
        );
        let mut lp = WorkerLoop::new(
            &switch,
            switch.worker(),
            vec![p1, p2],
            LoopConfig::default(),
        );
        one.to_switch.push(frame(mac(2), mac(1)));
        assert_eq!(lp.step(Instant::from_secs(1)), 1);
        assert_eq!(flushed.load(Ordering::Relaxed), 0);
        // Nothing received, but the flush is still due: tried again, and again.
        lp.step(Instant::from_secs(1));
        assert_eq!(flushed.load(Ordering::Relaxed), 0);
        lp.step(Instant::from_secs(1));
        assert_eq!(flushed.load(Ordering::Relaxed), 1);
        assert_eq!(lp.stats().tx_retries, 2);
        assert_eq!(lp.stats().tx_errors, 0);
    }

    #[test]
    fn timers_run_about_once_per_interval() {
        let switch = switch();
        let (p1, _one) = memory_port(Ingress::Port(PortId(1)));
        let mut lp = WorkerLoop::new(&switch, switch.worker(), vec![p1], LoopConfig::default());
        for ms in (0..3_000).step_by(100) {
            lp.step(Instant::from_millis(1_000 + ms));
        }
        assert_eq!(lp.stats().timer_runs, 3, "at 1.0 s, 2.0 s and 3.0 s");
    }

    /// A queue that hands out its frames with given offload metadata, as AF_PACKET with
    /// `PACKET_VNET_HDR` does.
    struct OffloadRx {
        frames: Vec<(Vec<u8>, FrameMeta)>,
        held: Vec<Vec<u8>>,
    }

    impl RxQueue for OffloadRx {
        fn recv<'a>(
            &'a mut self,
            frames: &mut Vec<&'a mut [u8]>,
            max: usize,
        ) -> std::io::Result<usize> {
            let mut metas = Vec::new();
            self.recv_with_meta(frames, &mut metas, max)
        }

        fn recv_with_meta<'a>(
            &'a mut self,
            frames: &mut Vec<&'a mut [u8]>,
            metas: &mut Vec<FrameMeta>,
            max: usize,
        ) -> std::io::Result<usize> {
            let take = self.frames.len().min(max);
            self.held.clear();
            for (frame, meta) in self.frames.drain(..take) {
                self.held.push(frame);
                metas.push(meta);
            }
            frames.extend(self.held.iter_mut().map(|f| f.as_mut_slice()));
            Ok(take)
        }

        fn release(&mut self) {
            self.held.clear();
        }

        fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
            None
        }

        fn stats(&mut self) -> QueueStats {
            QueueStats::default()
        }
    }

    /// Port 1, receiving `frames` with their metadata, transmitting into memory.
    fn offload_port(frames: Vec<(Vec<u8>, FrameMeta)>) -> Port {
        Port::new(
            Ingress::Port(PortId(1)),
            Box::new(OffloadRx {
                frames,
                held: Vec::new(),
            }),
            Box::new(MemoryTx::new(Frames::new(), 16)),
        )
    }

    #[test]
    fn partial_checksums_are_completed_and_gso_frames_refused_with_a_count() {
        let switch = switch();
        let (p2, two) = memory_port(Ingress::Port(PortId(2)));
        // A UDP frame whose checksum field holds the pseudo-header sum only.
        let mut partial = frame(mac(2), mac(1));
        let pseudo = crate::wire::checksum::combine(&[crate::wire::checksum::pseudo_header_v4(
            &smoltcp::wire::Ipv4Address::new(198, 19, 0, 1),
            &smoltcp::wire::Ipv4Address::new(198, 19, 0, 2),
            smoltcp::wire::IpProtocol::Udp,
            30,
        )]);
        partial[40..42].copy_from_slice(&pseudo.to_be_bytes());
        let partial_meta = FrameMeta {
            partial_checksum: Some(PartialChecksum {
                start: 34,
                offset: 6,
            }),
            ..FrameMeta::default()
        };
        let gso_meta = FrameMeta {
            gso: Some(Gso {
                kind: GsoKind::TcpV4,
                ecn: false,
                segment_size: 1448,
                header_len: 66,
            }),
            ..partial_meta
        };
        let p1 = offload_port(vec![
            (partial.clone(), partial_meta),
            (frame(mac(2), mac(1)), gso_meta),
        ]);
        let mut lp = WorkerLoop::new(
            &switch,
            switch.worker(),
            vec![p1, p2],
            LoopConfig::default(),
        );
        assert_eq!(lp.step(Instant::from_secs(1)), 2);
        let out = two.from_switch.drain();
        assert_eq!(out.len(), 1, "the GSO frame is not forwarded");
        // Checked with etherparse (not our checksum code): the UDP checksum is now whole.
        let parsed = etherparse::SlicedPacket::from_ethernet(&out[0]).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = parsed.net else {
            panic!("IPv4")
        };
        let Some(etherparse::TransportSlice::Udp(udp)) = parsed.transport else {
            panic!("UDP")
        };
        let expected = udp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), udp.payload())
            .unwrap();
        assert_eq!(udp.checksum(), expected);
        assert_ne!(udp.checksum(), pseudo);
        let stats = lp.stats();
        assert_eq!(stats.checksums_completed, 1);
        assert_eq!(stats.gso_frames, 1);
        assert_eq!(stats.gso_dropped, 1);
        assert_eq!(lp.worker().counters.received, 1);
    }

    #[test]
    fn tcp_super_frames_are_cut_into_segments_in_order() {
        let switch = switch();
        let (p2, two) = memory_port(Ingress::Port(PortId(2)));
        // A 5000-byte TCP super-frame (etherparse builds it), then a small frame after it.
        let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut super_frame = Vec::new();
        etherparse::PacketBuilder::ethernet2(mac(1), mac(2))
            .ipv4([198, 19, 0, 1], [198, 19, 0, 2], 64)
            .tcp(40000, 5201, 1000, 501)
            .ack(1)
            .psh()
            .write(&mut super_frame, &payload)
            .unwrap();
        super_frame[50..52].copy_from_slice(&[0xab, 0xcd]); // a partial checksum
        let gso = FrameMeta {
            partial_checksum: Some(PartialChecksum {
                start: 34,
                offset: 16,
            }),
            gso: Some(Gso {
                kind: GsoKind::TcpV4,
                ecn: false,
                segment_size: 1448,
                header_len: 66,
            }),
            ..FrameMeta::default()
        };
        let p1 = offload_port(vec![
            (super_frame, gso),
            (frame(mac(2), mac(1)), FrameMeta::default()),
        ]);
        let mut lp = WorkerLoop::new(
            &switch,
            switch.worker(),
            vec![p1, p2],
            LoopConfig::default(),
        );
        assert_eq!(lp.step(Instant::from_secs(1)), 2);
        let out = two.from_switch.drain();
        assert_eq!(out.len(), 5, "four segments, then the small frame");
        let mut joined = Vec::new();
        for (i, segment) in out[..4].iter().enumerate() {
            assert!(
                segment.len() <= 1514,
                "segment {i}: {} bytes",
                segment.len()
            );
            let parsed = etherparse::SlicedPacket::from_ethernet(segment).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = parsed.net else {
                panic!("IPv4")
            };
            let Some(etherparse::TransportSlice::Tcp(tcp)) = parsed.transport else {
                panic!("TCP")
            };
            let expected = tcp
                .to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
                .unwrap();
            assert_eq!(tcp.checksum(), expected, "segment {i}");
            assert_eq!(tcp.sequence_number(), 1000 + 1448 * i as u32);
            joined.extend_from_slice(tcp.payload());
        }
        assert_eq!(joined, payload);
        assert_eq!(out[4], frame(mac(2), mac(1)));
        let stats = lp.stats();
        assert_eq!(
            (stats.gso_frames, stats.gso_segments, stats.gso_dropped),
            (1, 4, 0)
        );
        assert_eq!(lp.worker().counters.received, 5);
    }

    /// Frames and their metadata, as an offloading queue was given them.
    type SentWithMeta = Arc<std::sync::Mutex<Vec<(Vec<u8>, FrameMeta)>>>;

    /// A transmit queue that takes offloads and records what it is given.
    struct OffloadTx {
        sent: SentWithMeta,
    }

    impl TxQueue for OffloadTx {
        fn send(&mut self, header: &[u8], payload: &[u8]) -> std::io::Result<bool> {
            self.send_offloaded(header, payload, &FrameMeta::default())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }

        fn accepts_offloads(&self) -> bool {
            true
        }

        fn send_offloaded(
            &mut self,
            header: &[u8],
            payload: &[u8],
            meta: &FrameMeta,
        ) -> std::io::Result<bool> {
            let frame = [header, payload].concat();
            self.sent.lock().unwrap().push((frame, *meta));
            Ok(true)
        }

        fn stats(&mut self) -> QueueStats {
            QueueStats::default()
        }
    }

    #[test]
    fn a_super_frame_for_a_port_that_takes_offloads_goes_whole() {
        let switch = switch();
        let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut super_frame = Vec::new();
        etherparse::PacketBuilder::ethernet2(mac(1), mac(2))
            .ipv4([198, 19, 0, 1], [198, 19, 0, 2], 64)
            .tcp(40000, 5201, 1000, 501)
            .write(&mut super_frame, &payload)
            .unwrap();
        let gso = FrameMeta {
            partial_checksum: Some(PartialChecksum {
                start: 34,
                offset: 16,
            }),
            gso: Some(Gso {
                kind: GsoKind::TcpV4,
                ecn: false,
                segment_size: 1400, // segments + VXLAN fit the underlay's 1500
                header_len: 54,
            }),
            ..FrameMeta::default()
        };
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (to_two, from_two) = (Frames::new(), Frames::new());
        let p1 = offload_port(vec![(super_frame.clone(), gso), (super_frame.clone(), gso)]);
        let p2 = Port::new(
            Ingress::Port(PortId(2)),
            Box::new(MemoryRx::new(to_two.clone())),
            Box::new(OffloadTx {
                sent: Arc::clone(&sent),
            }),
        );
        let (pu, underlay) = memory_port(Ingress::Underlay);
        let config = LoopConfig {
            batch_size: 1,
            ..LoopConfig::default()
        };
        let mut lp = WorkerLoop::new(&switch, switch.worker(), vec![p1, p2, pu], config);
        let _ = from_two;

        // mac(2) unknown: the first super-frame is flooded (port 2 and the remote VTEP), so
        // it is cut into segments, which fit the underlay's MTU.
        assert_eq!(lp.step(Instant::from_secs(1)), 1);
        assert_eq!(sent.lock().unwrap().len(), 4);
        assert_eq!(underlay.from_switch.len(), 4);
        // mac(2) learned on port 2; the second goes there whole, offloads and all.
        to_two.push(frame(mac(1), mac(2)));
        while lp.step(Instant::from_secs(1)) > 0 {}
        let sent = sent.lock().unwrap();
        let (whole, meta) = sent.last().unwrap();
        assert_eq!(whole, &super_frame);
        assert_eq!(meta, &gso);
        assert_eq!(
            underlay.from_switch.len(),
            4,
            "nothing more to the underlay"
        );
        let stats = lp.stats();
        assert_eq!(stats.gso_frames, 2);
        assert_eq!(stats.gso_whole, 1);
        assert_eq!(stats.gso_segments, 4);
        assert_eq!(stats.gso_dropped, 0);
    }

    /// An IPv4 TCP frame with ACK, built by etherparse: 198.19.0.2:5001 -> 198.19.0.1:40000,
    /// sequence number 1000, `payload`.
    fn tcp_ack_frame(src: [u8; 6], dst: [u8; 6], payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2(src, dst)
            .ipv4([198, 19, 0, 2], [198, 19, 0, 1], 64)
            .tcp(5001, 40000, 1000, 501)
            .ack(1)
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    /// The segments `crate::gso` cuts a TCP super-frame into.
    fn tcp_segments(frame: &[u8], mss: u16) -> Vec<Vec<u8>> {
        let mut segmenter = crate::gso::TcpSegmenter::new(frame, mss).unwrap();
        let mut buffer = vec![0u8; segmenter.max_segment_len()];
        let mut segments = Vec::new();
        while let Some(len) = segmenter.next_into(&mut buffer) {
            segments.push(buffer[..len].to_vec());
        }
        segments
    }

    /// TCP segments of one flow for a port that takes offloads leave as one super-frame
    /// (its partial checksum completed, the sender's super-frame again), and before the
    /// frame that followed them; with `coalesce` off, as they came.
    #[test]
    fn tcp_segments_for_a_port_that_takes_offloads_are_joined() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 3) as u8).collect();
        let super_frame = tcp_ack_frame(mac(1), mac(2), &payload);
        let segments = tcp_segments(&super_frame, 1448);
        assert_eq!(segments.len(), 4);
        let after = frame(mac(2), mac(1));

        for coalesce in [true, false] {
            let switch = switch();
            let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
            let to_two = Frames::new();
            let p2 = Port::new(
                Ingress::Port(PortId(2)),
                Box::new(MemoryRx::new(to_two.clone())),
                Box::new(OffloadTx {
                    sent: Arc::clone(&sent),
                }),
            );
            let (p1, one) = memory_port(Ingress::Port(PortId(1)));
            let config = LoopConfig {
                coalesce,
                ..LoopConfig::default()
            };
            let mut lp = WorkerLoop::new(&switch, switch.worker(), vec![p1, p2], config);
            // mac(2) learned on port 2 first.
            to_two.push(frame(mac(1), mac(2)));
            while lp.step(Instant::from_secs(1)) > 0 {}
            for segment in &segments {
                one.to_switch.push(segment.clone());
            }
            one.to_switch.push(after.clone());
            while lp.step(Instant::from_secs(1)) > 0 {}

            let sent = sent.lock().unwrap();
            let stats = lp.stats();
            if !coalesce {
                let frames: Vec<&Vec<u8>> = sent.iter().map(|(f, _)| f).collect();
                assert_eq!(frames[..4], segments.iter().collect::<Vec<_>>()[..]);
                assert_eq!((stats.gro_frames, stats.gro_segments), (0, 0));
                continue;
            }
            assert_eq!(sent.len(), 2, "one super-frame, then the frame after it");
            let (joined, meta) = &sent[0];
            let expected_meta = FrameMeta {
                partial_checksum: Some(PartialChecksum {
                    start: 34,
                    offset: 16,
                }),
                gso: Some(Gso {
                    kind: GsoKind::TcpV4,
                    ecn: false,
                    segment_size: 1448,
                    header_len: 54,
                }),
                checksum_valid: false,
            };
            assert_eq!(meta, &expected_meta);
            let mut completed = joined.clone();
            assert!(meta.partial_checksum.unwrap().complete(&mut completed));
            assert_eq!(completed, super_frame);
            assert_eq!(sent[1], (after.clone(), FrameMeta::default()));
            assert_eq!((stats.gro_frames, stats.gro_segments), (1, 4));
            assert_eq!(lp.worker().counters.received, 6);
        }
    }

    /// A UDP GSO super-frame from the underlay (the VXLAN datagrams of a TCP super-frame,
    /// joined by the sending switch) is cut into its datagrams, each decapsulated: the local
    /// ports get the inner segments as they were sent.
    #[test]
    fn udp_gso_super_frames_from_the_underlay_are_cut_and_decapsulated() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 11) as u8).collect();
        let segments = tcp_segments(&tcp_ack_frame(mac(7), mac(1), &payload), 1398);
        let mut join = crate::gro::UdpCoalescer::new();
        for (i, segment) in segments.iter().enumerate() {
            let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 100, 0];
            vxlan.extend_from_slice(segment);
            let mut datagram = Vec::new();
            etherparse::PacketBuilder::ethernet2(mac(3), [2, 0xee, 0, 0, 0, 1])
                .ipv4([198, 18, 0, 2], [198, 18, 0, 1], 64)
                .udp(50000, 4789)
                .write(&mut datagram, &vxlan)
                .unwrap();
            datagram[40..42].fill(0);
            let joined = if i == 0 {
                join.start([&datagram, &[]])
            } else {
                join.merge([&datagram, &[]])
            };
            assert!(joined, "datagram {i}");
        }
        let out = join.finish().unwrap();
        let gso = out.gso.unwrap();
        let meta = FrameMeta {
            partial_checksum: Some(PartialChecksum {
                start: gso.checksum_start,
                offset: gso.checksum_offset,
            }),
            gso: Some(Gso {
                kind: GsoKind::UdpL4,
                ecn: false,
                segment_size: gso.segment_size,
                header_len: gso.header_len,
            }),
            checksum_valid: false,
        };
        let underlay = Port::new(
            Ingress::Underlay,
            Box::new(OffloadRx {
                frames: vec![(out.frame.to_vec(), meta)],
                held: Vec::new(),
            }),
            Box::new(MemoryTx::new(Frames::new(), 16)),
        );
        let switch = switch();
        let (p1, one) = memory_port(Ingress::Port(PortId(1)));
        let (p2, two) = memory_port(Ingress::Port(PortId(2)));
        let mut lp = WorkerLoop::new(
            &switch,
            switch.worker(),
            vec![underlay, p1, p2],
            LoopConfig::default(),
        );
        while lp.step(Instant::from_secs(1)) > 0 {}
        // mac(1) is unknown: flooded to both local ports (never back to the underlay).
        assert_eq!(one.from_switch.drain(), segments);
        assert_eq!(two.from_switch.drain(), segments);
        let stats = lp.stats();
        assert_eq!(
            (stats.gso_frames, stats.gso_segments, stats.gso_dropped),
            (1, 4, 0)
        );
        assert_eq!(lp.worker().counters.received, 4);
    }

    #[test]
    fn udp_tunnel_super_frames_are_cut_with_outer_headers_made_right() {
        // What a kernel VTEP hands a veth underlay: VXLAN over IPv4/UDP (checksummed)
        // around a 5000-byte TCP super-frame, flagged by AF_PACKET as TCP GSO.
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let inner = tcp_ack_frame(mac(1), mac(2), &payload);
        let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
        vxlan.extend_from_slice(&inner);
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2(mac(3), mac(4))
            .ipv4([198, 18, 0, 2], [198, 18, 0, 1], 64)
            .udp(50000, 4789)
            .write(&mut frame, &vxlan)
            .unwrap();
        let gso = Gso {
            kind: GsoKind::TcpV4,
            ecn: false,
            segment_size: 1398,
            header_len: 116,
        };
        let (mut scratch, mut lengths) = (Vec::new(), Vec::new());
        let count = segment(&frame, gso, true, &mut scratch, 8 << 20, &mut lengths).unwrap();
        assert_eq!((count, lengths.len()), (4, 4));
        let (mut at, mut joined) = (0, Vec::new());
        for (i, len) in lengths.into_iter().enumerate() {
            let segment = &scratch[at..at + len];
            at += len;
            assert!(len <= 1514, "segment {i}: {len} bytes");
            let outer = etherparse::SlicedPacket::from_ethernet(segment).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = outer.net else {
                panic!("IPv4")
            };
            let ip_header = ip.header().to_header();
            assert_eq!(ip_header.header_checksum, ip_header.calc_header_checksum());
            assert_eq!(usize::from(ip_header.total_len), len - 14, "segment {i}");
            let Some(etherparse::TransportSlice::Udp(udp)) = outer.transport else {
                panic!("UDP")
            };
            assert_eq!(usize::from(udp.length()), len - 34, "segment {i}");
            let expected = udp
                .to_header()
                .calc_checksum_ipv4(&ip_header, udp.payload())
                .unwrap();
            assert_eq!(udp.checksum(), expected, "segment {i}: outer UDP checksum");
            assert_eq!(&udp.payload()[..8], &[0x08, 0, 0, 0, 0, 0, 42, 0]);
            let inner = etherparse::SlicedPacket::from_ethernet(&udp.payload()[8..]).unwrap();
            let Some(etherparse::NetSlice::Ipv4(inner_ip)) = inner.net else {
                panic!("inner IPv4")
            };
            let Some(etherparse::TransportSlice::Tcp(tcp)) = inner.transport else {
                panic!("inner TCP")
            };
            let expected = tcp
                .to_header()
                .calc_checksum_ipv4(&inner_ip.header().to_header(), tcp.payload())
                .unwrap();
            assert_eq!(tcp.checksum(), expected, "segment {i}: inner TCP checksum");
            assert_eq!(tcp.sequence_number(), 1000 + 1398 * i as u32);
            joined.extend_from_slice(tcp.payload());
        }
        assert_eq!(at, scratch.len());
        assert_eq!(joined, payload);
    }

    #[test]
    fn run_stops_when_asked_and_forwards_meanwhile() {
        let switch = Arc::new(switch());
        let (p1, one) = memory_port(Ingress::Port(PortId(1)));
        let (p2, two) = memory_port(Ingress::Port(PortId(2)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (switch, stop) = (Arc::clone(&switch), Arc::clone(&stop));
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let clock = || Instant::from_nanos(started.elapsed().as_nanos() as u64);
                run_worker(&switch, switch.worker(), vec![p1, p2], clock, &stop)
            })
        };
        for _ in 0..100 {
            one.to_switch.push(frame(mac(2), mac(1)));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while two.from_switch.len() < 100 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        let (stats, worker) = thread.join().unwrap();
        assert_eq!(two.from_switch.len(), 100);
        assert_eq!(stats.received, 100);
        assert_eq!(worker.counters.received, 100);
    }
}
