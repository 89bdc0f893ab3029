//! Connection tracking: which backend each established flow went to, so that it keeps that
//! backend when the Maglev table changes (the paper's section 3.3 connection tracking, and
//! Katran's per-CPU LRU map).
//!
//! One [`ConnTrack`] belongs to one worker thread (`&mut`, no locks, no atomics), like Katran's
//! per-CPU LRU maps: the dispatcher must send every packet of a connection, in both directions,
//! to the same worker ([`crate::lb::Services::steering_hash`] gives the key to do it with).
//!
//! **Layout.** Everything is allocated once, in [`ConnTrack::new`]: a slab of `capacity`
//! entries and two bucket arrays of `u32` heads (a power of two at least the capacity), one
//! indexing entries by their forward flow (client -> VIP) and one by their reply flow
//! (backend -> client), each chained through `u32` links inside the entries. The hash is
//! [`FlowKey::hash`] keyed with [`ConnTrackConfig::hash_seed`], so that nobody outside can
//! aim flows at one chain.
//!
//! **Eviction.** Entries sit in one of two recency lists: flows that never saw a reply (a SYN
//! flood is made of these) and flows that did. Every packet moves its entry to the front of
//! its list. When the table is full, a new flow takes the place of, in order: the least
//! recently seen unreplied entry if it has expired, the least recently seen replied entry if it
//! has expired, the least recently seen unreplied entry (counted in `evictions_unreplied`),
//! and only when no flow is unreplied, the least recently seen replied one (counted in
//! `evictions_replied`, the "then least recently used"). A flood of new flows,
//! whatever its size, therefore only ever displaces other unreplied flows: established flows
//! survive it.
//!
//! Recency is kept to [`RECENCY_GRANULARITY`] (1 s): a packet moves its entry to the front of
//! its list only if the entry was last moved that long ago (or changes list, which always moves
//! it). A busy flow thus costs one write to its own entry per packet instead of writes to three
//! (its neighbours and the old head), and the eviction order is least recently used up to one
//! second, in the spirit of the kernel's BPF LRU maps that only mark an entry as referenced on
//! lookup.
//!
//! **Timeouts** (Cilium's documented defaults, `--bpf-ct-timeout-regular-*`): an established
//! TCP flow lives 6 h after its last packet, an unreplied one (SYN sent) 60 s, one that saw a
//! FIN or RST 10 s (Linux' `nf_conntrack_tcp_timeout_close` is also 10 s), a UDP flow 60 s.
//! Expired entries are dropped lazily, when a lookup finds them or a new flow needs room.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::flow::{addr_bits, bits_addr, FlowKey, Protocol};
use crate::time::{Duration, Instant};

/// An absent link.
const NIL: u32 = u32::MAX;

/// How stale an entry's place in its recency list may get: see the module documentation.
pub const RECENCY_GRANULARITY: Duration = Duration::from_secs(1);
const RECENCY_NANOS: u64 = 1_000_000_000;

/// TCP flag bits (RFC 9293 section 3.1), in the 13th byte of the header.
pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;

/// Sizes and timeouts of a [`ConnTrack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnTrackConfig {
    /// The most flows tracked at once (at least 1; at most 2^31).
    pub capacity: usize,
    /// An established TCP flow (it has seen a reply) expires this long after its last packet.
    /// Default 6 h (Cilium's `--bpf-ct-timeout-regular-tcp`).
    pub tcp_established: Duration,
    /// A TCP flow that never saw a reply expires this long after its last packet. Default
    /// 60 s (Cilium's `--bpf-ct-timeout-regular-tcp-syn`).
    pub tcp_unreplied: Duration,
    /// A TCP flow that saw a FIN or an RST expires this long after its last packet. Default
    /// 10 s (Cilium's `--bpf-ct-timeout-regular-tcp-fin`, Linux' close timeout).
    pub tcp_closing: Duration,
    /// A UDP flow expires this long after its last packet. Default 60 s (Cilium's
    /// `--bpf-ct-timeout-regular-any`).
    pub udp: Duration,
    /// The key of the table's hash. Pass a random value: a predictable key lets a sender
    /// choose flows that all land in one chain.
    pub hash_seed: u64,
}

impl Default for ConnTrackConfig {
    fn default() -> Self {
        ConnTrackConfig {
            capacity: 65536,
            tcp_established: Duration::from_secs(6 * 3600),
            tcp_unreplied: Duration::from_secs(60),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_secs(60),
            hash_seed: 0x5eed_5eed_5eed_5eed,
        }
    }
}

/// What connection tracking counted. Plain integers: one set per worker, summed when read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnTrackCounters {
    /// Packets of a tracked flow, either direction.
    pub hits: u64,
    /// Packets towards a service whose flow was not tracked (a new flow, or one whose state
    /// was lost).
    pub misses: u64,
    /// TCP misses on a SYN without ACK: new connections.
    pub misses_syn: u64,
    /// TCP misses on any other segment: mid-connection packets whose state is gone (evicted,
    /// expired, or kept by another worker or node), as Katran counts them apart.
    pub misses_non_syn: u64,
    /// Unreplied flows evicted, while still live, to make room.
    pub evictions_unreplied: u64,
    /// Replied (established) flows evicted, while still live, to make room.
    pub evictions_replied: u64,
    /// Entries dropped because their timeout had passed.
    pub expired: u64,
}

/// Entry flags.
const REPLIED: u8 = 1;
const CLOSING: u8 = 2;
const IN_USE: u8 = 4;

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The forward flow: client -> VIP.
    pub(crate) flow: FlowKey,
    /// The backend it was sent to (same family as the flow).
    pub(crate) backend: u128,
    pub(crate) backend_port: u16,
    /// The backend's index in its service table of generation `generation`: a cache that
    /// spares a search while the service is unchanged.
    pub(crate) backend_index: u16,
    pub(crate) generation: u64,
    /// Nanoseconds; the entry is dead from this instant on.
    deadline: u64,
    /// Nanoseconds; when the entry was last moved to (or found at) the front of its list.
    moved: u64,
    flags: u8,
    forward_next: u32,
    reply_next: u32,
    prev: u32,
    next: u32,
}

impl Entry {
    fn matches_reply(&self, reply: &FlowKey) -> bool {
        self.backend == reply.src
            && self.backend_port == reply.src_port
            && self.flow.src == reply.dst
            && self.flow.src_port == reply.dst_port
            && self.flow.protocol == reply.protocol
            && self.flow.ipv6 == reply.ipv6
    }

    fn reply_key(&self) -> FlowKey {
        FlowKey {
            src: self.backend,
            src_port: self.backend_port,
            dst: self.flow.src,
            dst_port: self.flow.src_port,
            ..self.flow
        }
    }

    /// True once the flow has seen a FIN or an RST.
    pub(crate) fn is_closing(&self) -> bool {
        self.flags & CLOSING != 0
    }

    /// The backend's address and port.
    pub(crate) fn backend_addr(&self) -> SocketAddr {
        SocketAddr::new(bits_addr(self.backend, self.flow.ipv6), self.backend_port)
    }
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

/// A handle on a tracked flow, valid until the next call that inserts or removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryId(u32);

/// Bounded connection tracking for one worker. See the module documentation.
#[derive(Debug, Clone)]
pub struct ConnTrack {
    config: ConnTrackConfig,
    /// The timeouts in nanoseconds: UDP, TCP closing, TCP unreplied, TCP established.
    timeouts: [u64; 4],
    entries: Vec<Entry>,
    forward_buckets: Vec<u32>,
    reply_buckets: Vec<u32>,
    mask: u64,
    /// Never-used or freed entries, chained through `next`.
    free: u32,
    len: usize,
    /// [unreplied, replied], most recent at the head.
    lists: [List; 2],
    pub(crate) counters: ConnTrackCounters,
}

impl ConnTrack {
    /// A table for `config.capacity` flows (clamped to `1..=2^31`), allocated here once.
    pub fn new(config: ConnTrackConfig) -> ConnTrack {
        let capacity = config.capacity.clamp(1, 1 << 31);
        let buckets = capacity.next_power_of_two();
        let blank_flow = FlowKey {
            src: 0,
            dst: 0,
            src_port: 0,
            dst_port: 0,
            protocol: Protocol::Tcp,
            ipv6: false,
        };
        let entries = (0..capacity)
            .map(|i| Entry {
                flow: blank_flow,
                backend: 0,
                backend_port: 0,
                backend_index: 0,
                generation: 0,
                deadline: 0,
                moved: 0,
                flags: 0,
                forward_next: NIL,
                reply_next: NIL,
                prev: NIL,
                next: if i + 1 < capacity {
                    (i + 1) as u32
                } else {
                    NIL
                },
            })
            .collect();
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        ConnTrack {
            timeouts: [
                nanos(config.udp),
                nanos(config.tcp_closing),
                nanos(config.tcp_unreplied),
                nanos(config.tcp_established),
            ],
            config: ConnTrackConfig { capacity, ..config },
            entries,
            forward_buckets: vec![NIL; buckets],
            reply_buckets: vec![NIL; buckets],
            mask: (buckets - 1) as u64,
            free: 0,
            len: 0,
            lists: [EMPTY; 2],
            counters: ConnTrackCounters::default(),
        }
    }

    /// The configuration (with the capacity as clamped).
    pub fn config(&self) -> &ConnTrackConfig {
        &self.config
    }

    /// Flows tracked now, including expired ones not yet reclaimed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The counters so far.
    pub fn counters(&self) -> ConnTrackCounters {
        self.counters
    }

    /// The backend of the tracked forward flow `flow` (client -> VIP), if it is tracked and
    /// has not expired at `now`. Does not refresh the entry.
    pub fn backend_of(&self, flow: &FlowKey, now: Instant) -> Option<SocketAddr> {
        let id = self.find_forward(flow)?;
        let e = &self.entries[id as usize];
        (now.as_nanos() < e.deadline).then(|| e.backend_addr())
    }

    /// Tracked flows (live at `now`) per backend address, for metrics and `show` output: a
    /// walk over the whole table, for the control plane, not the data path.
    pub fn flows_per_backend(&self, now: Instant) -> BTreeMap<SocketAddr, usize> {
        let mut flows = BTreeMap::new();
        for e in &self.entries {
            if e.flags & IN_USE != 0 && now.as_nanos() < e.deadline {
                *flows.entry(e.backend_addr()).or_insert(0) += 1;
            }
        }
        flows
    }

    /// True if `flow` is tracked and has seen a reply (whatever its deadline).
    pub fn is_replied(&self, flow: &FlowKey) -> bool {
        self.find_forward(flow)
            .is_some_and(|id| self.entries[id as usize].flags & REPLIED != 0)
    }

    #[inline]
    fn bucket(&self, flow: &FlowKey) -> usize {
        (flow.hash(self.config.hash_seed) & self.mask) as usize
    }

    #[inline]
    fn find_forward(&self, flow: &FlowKey) -> Option<u32> {
        let mut cur = *self.forward_buckets.get(self.bucket(flow))?;
        // NIL is past the end (the capacity is at most 2^31): the bounds check ends the chain.
        while let Some(e) = self.entries.get(cur as usize) {
            if e.flow.same(flow) {
                return Some(cur);
            }
            cur = e.forward_next;
        }
        None
    }

    #[inline]
    fn find_reply(&self, reply: &FlowKey) -> Option<u32> {
        let mut cur = self.reply_buckets[self.bucket(reply)];
        while cur != NIL {
            let e = &self.entries[cur as usize];
            if e.matches_reply(reply) {
                return Some(cur);
            }
            cur = e.reply_next;
        }
        None
    }

    /// The live entry of forward flow `flow`; an expired one is removed and reported absent.
    #[inline]
    pub(crate) fn lookup_forward(&mut self, flow: &FlowKey, now: Instant) -> Option<EntryId> {
        let id = self.find_forward(flow)?;
        self.live(id, now)
    }

    /// The live entry whose reply flow (backend -> client) is `reply`.
    #[inline]
    pub(crate) fn lookup_reply(&mut self, reply: &FlowKey, now: Instant) -> Option<EntryId> {
        let id = self.find_reply(reply)?;
        self.live(id, now)
    }

    #[inline]
    fn live(&mut self, id: u32, now: Instant) -> Option<EntryId> {
        let deadline = self.entries.get(id as usize).map_or(0, |e| e.deadline);
        if now.as_nanos() >= deadline {
            self.counters.expired += 1;
            self.release(id);
            return None;
        }
        Some(EntryId(id))
    }

    #[inline(always)]
    pub(crate) fn entry(&self, id: EntryId) -> &Entry {
        &self.entries[id.0 as usize]
    }

    /// Records a packet of the entry at `now`: `reply` if it went backend -> client,
    /// `tcp_flags` the TCP flags byte (0 for UDP). Moves the entry to the front of its list.
    ///
    /// The common case (flags unchanged, moved to the front less than `RECENCY_NANOS` ago)
    /// is a counter and a deadline, inlined into the data path; the list work is apart.
    #[inline(always)]
    pub(crate) fn touch(&mut self, id: EntryId, now: Instant, reply: bool, tcp_flags: u8) {
        self.counters.hits += 1;
        let i = id.0;
        let Some(e) = self.entries.get_mut(i as usize) else {
            return;
        };
        let was = e.flags;
        let mut flags = was;
        if reply {
            flags |= REPLIED;
        }
        if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
            flags |= CLOSING;
        }
        let now = now.as_nanos();
        e.deadline = now.saturating_add(timeout(&self.timeouts, e.flow.protocol, flags));
        if flags != was || now.saturating_sub(e.moved) >= RECENCY_NANOS {
            self.touch_lists(i, was, flags, now);
        }
    }

    /// The rest of `touch` when the flags changed or the entry was last put at the front
    /// `RECENCY_NANOS` ago or more: the new flags, and the move (to the front of the list
    /// its flags name, unless it is there already: then it is stamped as if moved, so that
    /// the next packets of a flow alone at the front stay on `touch`'s inlined path).
    #[inline(never)]
    fn touch_lists(&mut self, i: u32, was: u8, flags: u8, now: u64) {
        let (from, to) = (list_of(was), list_of(flags));
        let e = &mut self.entries[i as usize];
        e.flags = flags;
        let stale = now.saturating_sub(e.moved) >= RECENCY_NANOS;
        if from != to || stale {
            e.moved = now;
            if from != to || self.lists[to].head != i {
                self.list_unlink(i, from);
                self.list_push_front(i, to);
            }
        }
    }

    #[inline]
    fn timeout(&self, protocol: Protocol, flags: u8) -> u64 {
        timeout(&self.timeouts, protocol, flags)
    }

    /// Tracks a new forward flow to `backend`, making room if the table is full (see the
    /// module documentation for whom it evicts). The caller has checked that `flow` is not
    /// tracked already.
    pub(crate) fn insert(
        &mut self,
        flow: &FlowKey,
        backend: SocketAddr,
        backend_index: u16,
        generation: u64,
        now: Instant,
        tcp_flags: u8,
    ) -> EntryId {
        if self.free == NIL {
            let victim = self.pick_victim(now);
            self.release(victim);
        }
        let id = self.free;
        let mut flags = IN_USE;
        if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
            flags |= CLOSING;
        }
        let deadline = now
            .as_nanos()
            .saturating_add(self.timeout(flow.protocol, flags));
        let forward_bucket = self.bucket(flow);
        let e = &mut self.entries[id as usize];
        self.free = e.next;
        e.flow = *flow;
        e.backend = addr_bits(backend.ip());
        e.backend_port = backend.port();
        e.backend_index = backend_index;
        e.generation = generation;
        e.deadline = deadline;
        e.moved = now.as_nanos();
        e.flags = flags;
        e.forward_next = self.forward_buckets[forward_bucket];
        self.forward_buckets[forward_bucket] = id;
        self.link_reply(id);
        self.list_push_front(id, 0);
        self.len += 1;
        EntryId(id)
    }

    /// Points the entry at another backend (its old one went down): its reply flow changes.
    pub(crate) fn rebind(
        &mut self,
        id: EntryId,
        backend: SocketAddr,
        backend_index: u16,
        generation: u64,
    ) {
        self.unlink_reply(id.0);
        let e = &mut self.entries[id.0 as usize];
        e.backend = addr_bits(backend.ip());
        e.backend_port = backend.port();
        e.backend_index = backend_index;
        e.generation = generation;
        // A new backend has not replied yet.
        let was = e.flags;
        e.flags &= !REPLIED;
        self.link_reply(id.0);
        if list_of(was) != 0 {
            self.list_unlink(id.0, 1);
            self.list_push_front(id.0, 0);
        }
    }

    /// Refreshes the cached backend index of an entry whose service was republished.
    #[inline]
    pub(crate) fn set_backend_index(&mut self, id: EntryId, backend_index: u16, generation: u64) {
        let e = &mut self.entries[id.0 as usize];
        e.backend_index = backend_index;
        e.generation = generation;
    }

    /// Stops tracking the entry.
    pub(crate) fn remove(&mut self, id: EntryId) {
        self.release(id.0);
    }

    fn pick_victim(&mut self, now: Instant) -> u32 {
        let now = now.as_nanos();
        let unreplied = self.lists[0].tail;
        let replied = self.lists[1].tail;
        let expired = |id: u32| id != NIL && now >= self.entries[id as usize].deadline;
        if expired(unreplied) {
            self.counters.expired += 1;
            unreplied
        } else if expired(replied) {
            self.counters.expired += 1;
            replied
        } else if unreplied != NIL {
            self.counters.evictions_unreplied += 1;
            unreplied
        } else {
            // The table is full (capacity >= 1), so one of the lists is non-empty.
            self.counters.evictions_replied += 1;
            replied
        }
    }

    fn release(&mut self, id: u32) {
        let flow = self.entries[id as usize].flow;
        let bucket = self.bucket(&flow);
        // Unlink from the forward chain.
        let mut cur = self.forward_buckets[bucket];
        let mut prev = NIL;
        while cur != NIL && cur != id {
            prev = cur;
            cur = self.entries[cur as usize].forward_next;
        }
        let after = self.entries[id as usize].forward_next;
        if prev == NIL {
            self.forward_buckets[bucket] = after;
        } else {
            self.entries[prev as usize].forward_next = after;
        }
        self.unlink_reply(id);
        let list = list_of(self.entries[id as usize].flags);
        self.list_unlink(id, list);
        let e = &mut self.entries[id as usize];
        e.flags = 0;
        e.forward_next = NIL;
        e.reply_next = NIL;
        e.next = self.free;
        self.free = id;
        self.len -= 1;
    }

    fn link_reply(&mut self, id: u32) {
        let bucket = self.bucket(&self.entries[id as usize].reply_key());
        self.entries[id as usize].reply_next = self.reply_buckets[bucket];
        self.reply_buckets[bucket] = id;
    }

    fn unlink_reply(&mut self, id: u32) {
        let bucket = self.bucket(&self.entries[id as usize].reply_key());
        let mut cur = self.reply_buckets[bucket];
        let mut prev = NIL;
        while cur != NIL && cur != id {
            prev = cur;
            cur = self.entries[cur as usize].reply_next;
        }
        let after = self.entries[id as usize].reply_next;
        if prev == NIL {
            self.reply_buckets[bucket] = after;
        } else {
            self.entries[prev as usize].reply_next = after;
        }
    }

    fn list_unlink(&mut self, id: u32, list: usize) {
        let (prev, next) = {
            let e = &self.entries[id as usize];
            (e.prev, e.next)
        };
        if prev == NIL {
            self.lists[list].head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.lists[list].tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
    }

    fn list_push_front(&mut self, id: u32, list: usize) {
        let head = self.lists[list].head;
        {
            let e = &mut self.entries[id as usize];
            e.prev = NIL;
            e.next = head;
        }
        if head == NIL {
            self.lists[list].tail = id;
        } else {
            self.entries[head as usize].prev = id;
        }
        self.lists[list].head = id;
    }

    /// Checks every structural invariant; for tests.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut in_lists = 0;
        for (list, l) in self.lists.iter().enumerate() {
            let mut cur = l.head;
            let mut prev = NIL;
            while cur != NIL {
                let e = &self.entries[cur as usize];
                assert_eq!(e.prev, prev);
                assert_eq!(list_of(e.flags), list);
                assert!(e.flags & IN_USE != 0);
                assert_eq!(self.find_forward(&e.flow), Some(cur));
                assert_eq!(self.find_reply(&e.reply_key()), Some(cur));
                prev = cur;
                cur = e.next;
                in_lists += 1;
            }
            assert_eq!(l.tail, prev);
        }
        assert_eq!(in_lists, self.len);
        let mut free = 0;
        let mut cur = self.free;
        while cur != NIL {
            assert_eq!(self.entries[cur as usize].flags, 0);
            cur = self.entries[cur as usize].next;
            free += 1;
        }
        assert_eq!(free + self.len, self.entries.len());
    }
}

/// The timeout of an entry of `protocol` with `flags`, from `timeouts` (see `ConnTrack`).
#[inline(always)]
fn timeout(timeouts: &[u64; 4], protocol: Protocol, flags: u8) -> u64 {
    let which = match protocol {
        Protocol::Udp => 0,
        Protocol::Tcp if flags & CLOSING != 0 => 1,
        Protocol::Tcp if flags & REPLIED == 0 => 2,
        Protocol::Tcp => 3,
    };
    timeouts[which]
}

#[inline]
fn list_of(flags: u8) -> usize {
    usize::from(flags & REPLIED != 0)
}

#[cfg(test)]
mod test {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr};

    fn sock(last: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port)
    }

    fn flow(client_port: u16) -> FlowKey {
        FlowKey::new(Protocol::Tcp, sock(1, client_port), sock(100, 80)).unwrap()
    }

    fn small(capacity: usize) -> ConnTrack {
        ConnTrack::new(ConnTrackConfig {
            capacity,
            ..ConnTrackConfig::default()
        })
    }

    fn reply_of(f: &FlowKey, backend: SocketAddr) -> FlowKey {
        FlowKey::new(f.protocol, backend, f.src()).unwrap()
    }

    #[test]
    fn insert_lookup_both_directions() {
        let mut ct = small(8);
        let now = Instant::from_secs(1);
        let f = flow(1000);
        assert!(ct.lookup_forward(&f, now).is_none());
        let id = ct.insert(&f, sock(7, 8080), 3, 1, now, TCP_SYN);
        assert_eq!(ct.entry(id).backend_addr(), sock(7, 8080));
        assert_eq!(ct.lookup_forward(&f, now), Some(id));
        assert_eq!(ct.lookup_reply(&reply_of(&f, sock(7, 8080)), now), Some(id));
        assert_eq!(ct.lookup_reply(&reply_of(&f, sock(8, 8080)), now), None);
        assert!(!ct.is_replied(&f));
        ct.touch(id, now, true, TCP_SYN | TCP_ACK);
        assert!(ct.is_replied(&f));
        ct.check_invariants();
        ct.remove(id);
        assert!(ct.is_empty());
        ct.check_invariants();
    }

    #[test]
    fn timeouts_follow_state() {
        let mut ct = small(8);
        let t0 = Instant::from_secs(100);
        let f = flow(1);
        let id = ct.insert(&f, sock(7, 80), 0, 1, t0, TCP_SYN);
        // Unreplied: 60 s.
        assert!(ct.backend_of(&f, t0 + Duration::from_secs(59)).is_some());
        assert!(ct.backend_of(&f, t0 + Duration::from_secs(60)).is_none());
        ct.touch(id, t0, true, TCP_SYN | TCP_ACK);
        // Established: 6 h.
        assert!(ct
            .backend_of(&f, t0 + Duration::from_secs(6 * 3600 - 1))
            .is_some());
        ct.touch(id, t0, false, TCP_FIN | TCP_ACK);
        // Closing: 10 s.
        assert!(ct.backend_of(&f, t0 + Duration::from_secs(9)).is_some());
        assert!(ct
            .lookup_forward(&f, t0 + Duration::from_secs(10))
            .is_none());
        assert_eq!(ct.counters().expired, 1);
        assert!(ct.is_empty());
        let u = FlowKey::new(Protocol::Udp, sock(1, 53), sock(100, 53)).unwrap();
        ct.insert(&u, sock(7, 53), 0, 1, t0, 0);
        assert!(ct.backend_of(&u, t0 + Duration::from_secs(59)).is_some());
        assert!(ct.backend_of(&u, t0 + Duration::from_secs(60)).is_none());
        ct.check_invariants();
    }

    #[test]
    fn full_table_evicts_unreplied_before_replied() {
        let mut ct = small(4);
        let now = Instant::from_secs(1);
        // Two established flows, the oldest of all.
        for p in [1, 2] {
            let id = ct.insert(&flow(p), sock(7, 80), 0, 1, now, TCP_SYN);
            ct.touch(id, now, true, TCP_SYN | TCP_ACK);
        }
        // A flood of unreplied flows, far more than the capacity.
        for p in 100..140 {
            ct.insert(&flow(p), sock(7, 80), 0, 1, now, TCP_SYN);
            ct.check_invariants();
        }
        assert_eq!(ct.len(), 4);
        assert!(ct.is_replied(&flow(1)) && ct.is_replied(&flow(2)));
        // The survivors of the flood are its most recent flows.
        assert!(ct.backend_of(&flow(139), now).is_some());
        assert!(ct.backend_of(&flow(138), now).is_some());
        assert_eq!(ct.counters().evictions_unreplied, 38);
        assert_eq!(ct.counters().evictions_replied, 0);
    }

    #[test]
    fn all_replied_evicts_least_recently_used() {
        let mut ct = small(3);
        let now = Instant::from_secs(1);
        let mut ids = Vec::new();
        for p in [1, 2, 3] {
            let id = ct.insert(&flow(p), sock(7, 80), 0, 1, now, TCP_SYN);
            ct.touch(id, now, true, TCP_ACK);
            ids.push(id);
        }
        // Flow 1 is used again within a second: its place does not change (granularity).
        ct.touch(ids[0], now + Duration::from_millis(500), false, TCP_ACK);
        assert_eq!(ct.lists[1].tail, ids[0].0);
        // Two seconds later it moves to the front: flow 2 becomes the least recently used.
        let now = now + Duration::from_secs(2);
        ct.touch(ids[0], now, false, TCP_ACK);
        ct.insert(&flow(4), sock(7, 80), 0, 1, now, TCP_SYN);
        assert!(ct.backend_of(&flow(2), now).is_none());
        assert!(ct.backend_of(&flow(1), now).is_some());
        assert!(ct.backend_of(&flow(3), now).is_some());
        assert_eq!(ct.counters().evictions_replied, 1);
        ct.check_invariants();
    }

    #[test]
    fn expired_entries_go_first() {
        let mut ct = small(2);
        let t0 = Instant::from_secs(1);
        let id = ct.insert(&flow(1), sock(7, 80), 0, 1, t0, TCP_SYN);
        ct.touch(id, t0, true, TCP_ACK);
        ct.touch(id, t0, false, TCP_RST);
        let later = t0 + Duration::from_secs(30);
        ct.insert(&flow(2), sock(7, 80), 0, 1, later, TCP_SYN);
        // Full: flow 1 (closing, expired) goes before the live unreplied flow 2.
        ct.insert(&flow(3), sock(7, 80), 0, 1, later, TCP_SYN);
        assert!(ct.backend_of(&flow(2), later).is_some());
        assert_eq!(ct.counters().expired, 1);
        assert_eq!(ct.counters().evictions_unreplied, 0);
        ct.check_invariants();
    }

    #[test]
    fn rebind_moves_reply_key() {
        let mut ct = small(4);
        let now = Instant::from_secs(1);
        let f = flow(9);
        let id = ct.insert(&f, sock(7, 80), 0, 1, now, TCP_SYN);
        ct.touch(id, now, true, TCP_ACK);
        ct.rebind(id, sock(8, 81), 1, 2);
        assert_eq!(ct.lookup_reply(&reply_of(&f, sock(7, 80)), now), None);
        assert_eq!(ct.lookup_reply(&reply_of(&f, sock(8, 81)), now), Some(id));
        assert!(!ct.is_replied(&f));
        ct.check_invariants();
    }

    #[test]
    fn many_flows_through_small_table_keep_invariants() {
        let mut ct = small(16);
        let mut now = Instant::from_secs(1);
        let n: u16 = if cfg!(miri) { 60 } else { 600 };
        for p in 0..n {
            now = now + Duration::from_millis(100);
            let f = flow(p % 40);
            match ct.lookup_forward(&f, now) {
                Some(id) => ct.touch(id, now, p % 3 == 0, TCP_ACK),
                None => {
                    ct.insert(&f, sock((p % 5) as u8, 80), 0, 1, now, TCP_SYN);
                }
            }
            if p % 7 == 0 {
                ct.check_invariants();
            }
        }
        ct.check_invariants();
    }
}
