//! The batch pipeline; documented in the parent module.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::ops::Range;

use super::config::{
    underlay_towards, ConfigError, NextHop, PortMode, PortSecurity, ServiceProblem, SwitchConfig,
};
use super::neighbor::{
    parse_arp_request, parse_neighbor_solicitation, write_arp_reply, write_neighbor_advertisement,
    ARP_REPLY_LEN, NEIGHBOR_ADVERTISEMENT_LEN,
};
use super::neighbor_map::NeighborMap;
use super::resolver::{Resolution, Resolver, PROBE_MAX_LEN};
use crate::addr_map::AddrMap;
use crate::fdb::{Destination, Fdb, FloodList, Found, Learn, VniConfig};
use crate::lb::{self, Decision, Disruption, LbHandle, LoadBalancer, ServiceKey};
use crate::sync::{AtomicU32, Ordering};
use crate::time::Instant;
use crate::tunnel::{
    decap, DecapConfig, EncapTemplate, IpIdent, OUTER_HEADER_LEN_IPV6, TOO_BIG_REPLY_MAX_LEN,
};
use crate::wire::{ethertype, EthernetAddress, ETHERNET_HEADER_LEN};
use crate::{DropCounters, DropReason, PortId, Vni};

/// The longest header an action carries: the outer headers over IPv6.
pub const MAX_ACTION_HEADER: usize = OUTER_HEADER_LEN_IPV6;

/// Where a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// A local port.
    Port(PortId),
    /// The underlay: a VXLAN frame, outer headers included.
    Underlay,
}

/// Where an action's frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// A local port.
    Port(PortId),
    /// The underlay: the frame is a whole outer VXLAN frame.
    Underlay,
}

/// A received frame: its ingress and its bytes, which the switch may change in place.
#[derive(Debug)]
pub struct Received<'a> {
    /// Where it came from.
    pub ingress: Ingress,
    /// The frame, Ethernet header first.
    pub frame: &'a mut [u8],
}

/// The payload of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// `received[index].frame[range]`.
    Received {
        /// Index into the batch given to [`Switch::process`].
        index: usize,
        /// The bytes of that frame.
        range: Range<usize>,
    },
    /// `output.generated[range]`: bytes the switch wrote (ARP replies, ICMP errors).
    Generated(Range<usize>),
}

/// One frame to transmit: `header()` then the payload.
#[derive(Debug, Clone)]
pub struct Action {
    /// Where to send it.
    pub egress: Egress,
    header: [u8; MAX_ACTION_HEADER],
    header_len: u8,
    /// The egress port's index among the worker's port counters (`NONE` for the underlay).
    counter: u32,
    /// What follows the header.
    pub payload: Payload,
}

impl Action {
    /// The bytes before the payload (often none).
    pub fn header(&self) -> &[u8] {
        self.header
            .get(..usize::from(self.header_len))
            .unwrap_or(&[])
    }
}

/// The actions of one batch, and the bytes the switch generated for them. Reuse it across
/// batches: [`Switch::process`] clears it.
#[derive(Debug, Default)]
pub struct Output {
    /// The frames to send, in no particular order.
    pub actions: Vec<Action>,
    /// Bytes of generated frames, referred to by [`Payload::Generated`].
    pub generated: Vec<u8>,
}

impl Output {
    /// The two parts of `action`'s frame: header and payload.
    pub fn parts<'a>(
        &'a self,
        action: &'a Action,
        received: &'a [Received<'_>],
    ) -> (&'a [u8], &'a [u8]) {
        let payload = match &action.payload {
            Payload::Received { index, range } => received
                .get(*index)
                .and_then(|r| r.frame.get(range.clone()))
                .unwrap_or(&[]),
            Payload::Generated(range) => self.generated.get(range.clone()).unwrap_or(&[]),
        };
        (action.header(), payload)
    }

    /// `action`'s frame as one vector (for tests and tools; a backend gathers the parts).
    pub fn frame(&self, action: &Action, received: &[Received<'_>]) -> Vec<u8> {
        let (header, payload) = self.parts(action, received);
        let mut frame = Vec::with_capacity(header.len() + payload.len());
        frame.extend_from_slice(header);
        frame.extend_from_slice(payload);
        frame
    }
}

/// Counters of one port or one VNI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    /// Frames received.
    pub received: u64,
    /// Frames sent (one per action).
    pub sent: u64,
    /// Received frames dropped.
    pub dropped: u64,
}

/// A worker's counters. Each worker counts its own frames (no shared cache line on the data
/// path); [`SwitchCounters::merge`] sums them when they are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwitchCounters {
    /// Frames given to [`Switch::process`].
    pub received: u64,
    /// Received frames that produced at least one action.
    pub forwarded: u64,
    /// Received frames answered by the switch itself (ARP/ND suppression).
    pub consumed: u64,
    /// Received frames dropped, by reason.
    pub dropped: DropCounters,
    /// Actions produced (a flood produces several per frame).
    pub sent: u64,
    /// Actions whose payload the switch generated (replies, ICMP errors).
    pub generated: u64,
    /// Source MACs not learned, by reason (the frames were still forwarded).
    pub learn_refused: DropCounters,
    /// Per port, in port-number order.
    pub ports: Vec<(PortId, TrafficCounters)>,
    /// Per VNI, in VNI order.
    pub vnis: Vec<(Vni, TrafficCounters)>,
    /// Frames from the underlay.
    pub underlay: TrafficCounters,
}

impl SwitchCounters {
    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &SwitchCounters) {
        self.received += other.received;
        self.forwarded += other.forwarded;
        self.consumed += other.consumed;
        self.dropped.merge(&other.dropped);
        self.sent += other.sent;
        self.generated += other.generated;
        self.learn_refused.merge(&other.learn_refused);
        merge_keyed(&mut self.ports, &other.ports);
        merge_keyed(&mut self.vnis, &other.vnis);
        self.underlay.received += other.underlay.received;
        self.underlay.sent += other.underlay.sent;
        self.underlay.dropped += other.underlay.dropped;
    }
}

/// The resolver for `config`'s underlay, with the MACs the host supplied; `None` for fixed
/// next hops.
fn resolver_for(config: &SwitchConfig) -> Option<Resolver> {
    let resolver_config = config.underlay.resolver_config()?;
    let mut resolver = Resolver::new(resolver_config).ok()?;
    if let NextHop::Resolve { supplied, .. } = &config.underlay.next_hop {
        for &(ip, mac) in supplied {
            resolver.supply(ip, mac);
        }
    }
    Some(resolver)
}

/// Counts a frame that was not forwarded (dropped, or consumed by the switch): kept out of
/// the per-frame loop of [`Switch::process`], whose common case is a forwarded frame.
#[inline(never)]
fn count_unforwarded(counters: &mut SwitchCounters, ingress: Ingress, meta: &Meta) {
    let reason = match meta.verdict {
        Verdict::Dropped(reason) => reason,
        Verdict::Consumed => {
            counters.consumed += 1;
            return;
        }
        Verdict::Pending => return,
    };
    counters.dropped.record(reason);
    if let Some(traffic) = ingress_traffic(counters, ingress, meta) {
        traffic.dropped += 1;
    }
    if let Some((_, traffic)) = counters.vnis.get_mut(meta.vni_index as usize) {
        traffic.dropped += 1;
    }
}

/// The traffic counters of a frame's ingress: its port's (`None` for an unknown port), or
/// the underlay's.
#[inline(always)]
fn ingress_traffic<'c>(
    counters: &'c mut SwitchCounters,
    ingress: Ingress,
    meta: &Meta,
) -> Option<&'c mut TrafficCounters> {
    match ingress {
        Ingress::Port(_) => counters.ports.get_mut(meta.port as usize).map(|(_, t)| t),
        Ingress::Underlay => Some(&mut counters.underlay),
    }
}

/// Appends a probe for the underlay as a generated action.
fn push_underlay_probe(output: &mut Output, probe: &[u8]) {
    let start = output.generated.len();
    output.generated.extend_from_slice(probe);
    output.actions.push(Action {
        egress: Egress::Underlay,
        header: [0; MAX_ACTION_HEADER],
        header_len: 0,
        counter: NONE,
        payload: Payload::Generated(start..output.generated.len()),
    });
}

/// Counters for `keys`, in their order, keeping the counts of keys that were in `old`.
fn carried<'a, K: Ord + Copy + 'a>(
    old: &[(K, TrafficCounters)],
    keys: impl Iterator<Item = &'a K>,
) -> Vec<(K, TrafficCounters)> {
    keys.map(|&key| {
        let counts = old
            .iter()
            .find(|(k, _)| *k == key)
            .map_or_else(TrafficCounters::default, |&(_, counts)| counts);
        (key, counts)
    })
    .collect()
}

/// Adds `other`'s per-key counts to `list`'s, keeping `list` sorted by key.
fn merge_keyed<K: Ord + Copy>(
    list: &mut Vec<(K, TrafficCounters)>,
    other: &[(K, TrafficCounters)],
) {
    for &(key, theirs) in other {
        match list.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => {
                if let Some((_, mine)) = list.get_mut(i) {
                    mine.received += theirs.received;
                    mine.sent += theirs.sent;
                    mine.dropped += theirs.dropped;
                }
            }
            Err(i) => list.insert(i, (key, theirs)),
        }
    }
}

/// A key of a [`SortedMap`]: ordered, and a number of 32 bits.
trait MapKey: Ord + Copy {
    fn bits(self) -> u32;
}

impl MapKey for PortId {
    #[inline(always)]
    fn bits(self) -> u32 {
        self.get()
    }
}

impl MapKey for Vni {
    #[inline(always)]
    fn bits(self) -> u32 {
        self.get()
    }
}

/// A map from few keys, looked up on every frame (the ingress port and its VNI, the egress
/// port): the entries in key order (for iteration and the counters' order), found by their
/// positions in a table indexed by the key itself when the keys are small numbers (ports
/// numbered from 0 or 1, VNIs below [`DENSE_KEYS`]: one load), and otherwise through an
/// [`AddrMap`] (one hash and almost always one slot). A bisection over eight ports and the
/// hash each take about 30 instructions a lookup, the table about 10.
#[derive(Debug, Clone)]
struct SortedMap<K, V> {
    entries: Vec<(K, V)>,
    /// Position in `entries` by key, `NONE` for no entry; empty when the keys are not all
    /// below [`DENSE_KEYS`].
    dense: Vec<u32>,
    /// Position in `entries` by key, when `dense` is empty.
    positions: AddrMap<u32>,
}

/// The largest key range indexed directly (16 KiB of positions).
const DENSE_KEYS: u32 = 4096;

impl<K: MapKey, V> SortedMap<K, V> {
    /// The map of `entries`; of two entries with one key, `get` finds the later one.
    fn from_unsorted(mut entries: Vec<(K, V)>) -> Self {
        entries.sort_by_key(|entry| entry.0);
        let positions = entries
            .iter()
            .enumerate()
            .map(|(position, (key, _))| (key.bits(), position as u32));
        let mut dense = Vec::new();
        let mut sparse = AddrMap::default();
        match entries.last() {
            Some((last, _)) if last.bits() < DENSE_KEYS => {
                dense = vec![NONE; last.bits() as usize + 1];
                for (key, position) in positions {
                    if let Some(slot) = dense.get_mut(key as usize) {
                        *slot = position;
                    }
                }
            }
            _ => {
                sparse =
                    AddrMap::new(positions.map(|(key, position)| ((u128::from(key), 0), position)));
            }
        }
        SortedMap {
            entries,
            dense,
            positions: sparse,
        }
    }

    #[inline]
    fn get(&self, key: &K) -> Option<&V> {
        let bits = key.bits();
        let position = if self.dense.is_empty() {
            self.positions.get(u128::from(bits), 0)?
        } else {
            *self.dense.get(bits as usize)?
        };
        self.entries.get(position as usize).map(|(_, v)| v)
    }

    fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }
}

/// Encapsulation templates by (VNI, remote VTEP), direct-mapped: one hash, one compare.
/// A collision rebuilds a template (a few hundred nanoseconds), which only a node talking to
/// more (VNI, VTEP) pairs at once than it has slots ever sees often.
#[derive(Debug)]
struct TemplateCache {
    slots: Vec<Option<(TemplateKey, EncapTemplate)>>,
}

const TEMPLATE_CACHE_SLOTS: usize = 256;

impl TemplateCache {
    fn new() -> TemplateCache {
        TemplateCache {
            slots: (0..TEMPLATE_CACHE_SLOTS).map(|_| None).collect(),
        }
    }
}

/// A template's (VNI, VTEP) as plain integers. An `IpAddr` key was compared as the enum it
/// is: the caller's address went through the stack in narrow stores and came back in a wider
/// load, which the processor cannot forward from the stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TemplateKey {
    vni: u32,
    ipv6: bool,
    address: u128,
}

impl TemplateKey {
    #[inline(always)]
    fn new(vni: Vni, vtep: IpAddr) -> TemplateKey {
        let (ipv6, address) = match vtep {
            IpAddr::V4(ip) => (false, u128::from(ip.to_bits())),
            IpAddr::V6(ip) => (true, ip.to_bits()),
        };
        TemplateKey {
            vni: vni.get(),
            ipv6,
            address,
        }
    }

    /// The key's slot in the cache.
    #[inline(always)]
    fn slot(self) -> usize {
        let address = (self.address as u64) ^ ((self.address >> 64) as u64);
        let key = address ^ (u64::from(self.vni) << 40);
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % TEMPLATE_CACHE_SLOTS
    }
}

/// Slots of a worker's [`BackendMacs`] for each load balancer (a power of two).
const BACKEND_MAC_SLOTS: usize = 64;

/// A worker's copy of the neighbour entries of the backends it translated frames to, direct
/// mapped by a multiply of the backend's address: a translated frame finds its backend's MAC
/// with one compare instead of the neighbour map's hash, probe and key. (Not by the
/// backend's index in its service's table: every service's first backends would share the
/// first slots.) The neighbours change only with a new [`State`], which empties the cache.
#[derive(Debug)]
struct BackendMacs {
    /// `BACKEND_MAC_SLOTS` for each load balancer, in the order of `State::lbs`.
    slots: Vec<BackendMac>,
}

/// One slot of [`BackendMacs`]: the backend's address as 128 bits (IPv4 in the low 32), its
/// family (4 or 6; 0 for an empty slot) and its MAC.
#[derive(Debug, Clone, Copy, Default)]
struct BackendMac {
    address: u128,
    family: u32,
    mac: EthernetAddress,
}

impl BackendMacs {
    fn new(state: &State) -> BackendMacs {
        BackendMacs {
            slots: vec![BackendMac::default(); state.lbs.len() * BACKEND_MAC_SLOTS],
        }
    }

    /// The slot of the backend at `address` (as 128 bits) among its load balancer's.
    #[inline(always)]
    fn slot(address: u128) -> usize {
        let folded = (address as u64) ^ ((address >> 64) as u64);
        // The top bits of the product depend on every bit of the address.
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % BACKEND_MAC_SLOTS
    }
}

#[derive(Debug, Clone)]
struct PortState {
    index: usize,
    mode: PortMode,
    security: Option<PortSecurity>,
    /// For an access port, its VNI's index in `State::vnis` (so that classification does not
    /// look the VNI up a second time), or `NONE` (a trunk, or a VNI not configured).
    access_vni: u32,
}

impl PortState {
    /// The VNI of a frame from this port: its access VNI, or its trunk's mapping of the
    /// frame's 802.1Q tag (`VlanUnmapped` for an untagged frame or an unmapped VLAN).
    fn vni_of(&self, frame: &[u8]) -> Result<Vni, DropReason> {
        match &self.mode {
            PortMode::Access(vni) => Ok(*vni),
            PortMode::Trunk(map) => {
                let Some(&[t0, t1, v0, v1]) = frame.get(12..16) else {
                    return Err(DropReason::VlanUnmapped);
                };
                if u16::from_be_bytes([t0, t1]) != ethertype::VLAN
                    || frame.len() < ETHERNET_HEADER_LEN + 4
                {
                    return Err(DropReason::VlanUnmapped);
                }
                let vid = u16::from_be_bytes([v0, v1]) & 0x0FFF;
                map.iter()
                    .find(|&&(v, _)| v == vid)
                    .map(|&(_, vni)| vni)
                    .ok_or(DropReason::VlanUnmapped)
            }
        }
    }

    /// The VLAN ID that carries `vni` on this port: `Some(None)` for an access port in the
    /// VNI, `Some(Some(vid))` for a trunk, `None` if the port is not in the VNI.
    fn tag_for(&self, vni: Vni) -> Option<Option<u16>> {
        match &self.mode {
            PortMode::Access(port_vni) => (*port_vni == vni).then_some(None),
            PortMode::Trunk(map) => map
                .iter()
                .find(|&&(_, mapped)| mapped == vni)
                .map(|&(vid, _)| Some(vid)),
        }
    }
}

#[derive(Debug, Clone)]
struct VniState {
    index: usize,
    suppress: bool,
    carry_inner_vlan: bool,
    /// The index of the VNI's load balancer in `State::lbs` (and a worker's `lbs`), if the
    /// VNI has services.
    lb: Option<usize>,
}

/// One worker's private state: counters, IP identification, encapsulation templates and
/// scratch space. Make one per thread with [`Switch::worker`].
#[derive(Debug)]
pub struct Worker {
    /// This worker's counters.
    pub counters: SwitchCounters,
    /// The configuration this worker runs, and its generation.
    state: Arc<State>,
    generation: u32,
    resolved: u32,
    ident: IpIdent,
    templates: TemplateCache,
    metas: Vec<Meta>,
    /// The sources of a batch to learn, and what learning them gave (in frame order; a
    /// frame's `Meta::learn` is its index here).
    sources: Vec<(Vni, EthernetAddress, Destination)>,
    learned: Vec<Learn>,
    /// The unicast destinations of a batch to look up, and what was found (in frame order;
    /// a frame's `Meta::lookup` is its index here).
    keys: Vec<(Vni, EthernetAddress)>,
    found: Vec<Found>,
    flood: FloodList,
    /// One load-balancer worker per VNI with services, in the order of `State::lbs`; `None`
    /// where the VNI's load balancer had no free worker slot.
    lbs: Vec<(Vni, LbHandle, Option<lb::Worker>)>,
    /// The MACs of the backends the load balancers chose, from the state's neighbours.
    backend_macs: BackendMacs,
}

impl Worker {
    /// The connection tracking and affinity state of this worker, per VNI with services.
    pub fn lb_states(&self) -> impl Iterator<Item = (Vni, &lb::WorkerState)> {
        self.lbs
            .iter()
            .filter_map(|(vni, _, worker)| worker.as_ref().map(|w| (*vni, w.state())))
    }
}

#[derive(Debug, Clone)]
struct Meta {
    vni: Vni,
    inner: Range<usize>,
    from: Destination,
    verdict: Verdict,
    /// The ingress port's index in `State::ports` (and the worker's port counters), or
    /// `NONE` (the underlay, or an unknown port).
    port: u32,
    /// The VNI's index in `State::vnis` (and the worker's VNI counters), or `NONE`.
    vni_index: u32,
    /// The index of its source in the worker's `sources` (and of the outcome in `learned`),
    /// or `NONE` (nothing learned).
    learn: u32,
    /// The index of its destination's lookup in the worker's `found`, or `NONE` (not looked
    /// up: not unicast, or not forwarded).
    lookup: u32,
}

/// No index ([`Meta::port`], [`Meta::vni_index`], [`Meta::learn`], [`Meta::lookup`]).
const NONE: u32 = u32::MAX;

impl Meta {
    fn dropped(reason: DropReason, port: u32) -> Meta {
        Meta {
            vni: Vni::from_u24_truncating(0),
            inner: 0..0,
            from: Destination::Port(PortId(0)),
            verdict: Verdict::Dropped(reason),
            port,
            vni_index: NONE,
            learn: NONE,
            lookup: NONE,
        }
    }

    fn consumed() -> Meta {
        Meta {
            verdict: Verdict::Consumed,
            ..Meta::dropped(DropReason::NoDestination, NONE)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pending,
    Dropped(DropReason),
    Consumed,
}

/// What the data path reads of the configuration. Immutable: a change builds a new one and
/// swaps it in whole ([`Switch::reconfigure`]).
#[derive(Debug)]
struct State {
    config: SwitchConfig,
    ports: SortedMap<PortId, PortState>,
    vnis: SortedMap<Vni, VniState>,
    neighbors: NeighborMap,
    /// The VIPs of each VNI's services, answered for with the virtual MAC.
    vips: BTreeSet<(Vni, IpAddr)>,
    /// The load balancers of the VNIs with services, by VNI.
    lbs: Vec<(Vni, LbHandle)>,
    /// Whether any VNI suppresses ARP/ND or has VIPs: whether stage 3 runs at all.
    answers: bool,
    decap: DecapConfig,
}

/// The switch: configuration, forwarding table and the pipeline; shared by the workers
/// (`Arc<Switch>`), changed at run time with [`Switch::reconfigure`].
///
/// **Reconfiguration without stopping traffic.** The configuration the data path reads is an
/// immutable `State` behind an `Arc`. A change validates the new configuration, applies its
/// difference to the forwarding table (entries never disappear for VNIs and ports that stay),
/// then swaps the `Arc` and bumps a generation number. Each worker compares the generation
/// once per batch (one load) and takes the new `Arc` when it changed: a batch always runs on
/// one whole configuration, old or new, and a worker never waits for a change to finish (the
/// lock around the `Arc` is held for the swap of one pointer).
#[derive(Debug)]
pub struct Switch {
    fdb: Fdb,
    current: spin::Mutex<Arc<State>>,
    generation: AtomicU32,
    /// Serialises reconfigurations (not the data path).
    reconfiguring: spin::Mutex<()>,
    /// Underlay next hops, when they are resolved ([`NextHop::Resolve`]). Taken on a worker's
    /// template miss and for ARP/ND frames from the underlay, never per forwarded frame.
    resolver: spin::Mutex<Option<Resolver>>,
    /// Bumped whenever a resolved MAC changes: workers then rebuild their templates.
    resolved: AtomicU32,
    /// The control plane of each VNI's load balancer. A VNI's load balancer lives as long as
    /// the VNI has services.
    lbs: spin::Mutex<BTreeMap<Vni, LoadBalancer>>,
}

impl Switch {
    /// A switch running `config`, or the first problem with it.
    pub fn new(config: SwitchConfig) -> Result<Switch, ConfigError> {
        config.validate()?;
        let fdb = Fdb::new(config.fdb).map_err(ConfigError::Fdb)?;
        let mut lbs = BTreeMap::new();
        apply_services(&mut lbs, &[], &config.services, &config.lb)?;
        let state = State::build(config, &lbs);
        let switch = Switch {
            fdb,
            current: spin::Mutex::new(Arc::new(State::build(
                SwitchConfig {
                    ports: Vec::new(),
                    vnis: Vec::new(),
                    static_entries: Vec::new(),
                    neighbors: Vec::new(),
                    services: Vec::new(),
                    ..state.config.clone()
                },
                &BTreeMap::new(),
            ))),
            generation: AtomicU32::new(0),
            reconfiguring: spin::Mutex::new(()),
            resolver: spin::Mutex::new(resolver_for(&state.config)),
            resolved: AtomicU32::new(0),
            lbs: spin::Mutex::new(lbs),
        };
        switch
            .apply_to_fdb(None, &state)
            .map_err(ConfigError::Fdb)?;
        *switch.current.lock() = Arc::new(state);
        Ok(switch)
    }

    /// Replaces the running configuration with `config`, without stopping traffic (see the
    /// type's documentation). An invalid configuration, or one the forwarding table cannot
    /// hold, is refused with the running state untouched. The forwarding table's own bounds
    /// (`config.fdb`) are fixed at [`Switch::new`].
    ///
    /// What changes: learned entries of removed VNIs and ports are flushed; static entries
    /// follow the new list; flood lists, VNI settings, neighbours, port modes and security,
    /// and the underlay options apply from the next batch of each worker. Services whose
    /// configuration changed get new tables (their tracked connections keep their backends
    /// unless a backend is down or removed); the returned list says, for each, how many Maglev
    /// slots moved between which backends. The load balancer's settings (`lb`) are fixed at
    /// [`Switch::new`], like the forwarding table's bounds.
    pub fn reconfigure(&self, config: SwitchConfig) -> Result<Vec<ServiceChange>, ConfigError> {
        config.validate()?;
        let _one_at_a_time = self.reconfiguring.lock();
        let old = Arc::clone(&self.current.lock());
        if config.fdb != old.config.fdb {
            return Err(ConfigError::FdbBoundsFixed);
        }
        if config.lb != old.config.lb {
            return Err(ConfigError::LbSettingsFixed);
        }
        let mut lbs = self.lbs.lock();
        let changes = apply_services(&mut lbs, &old.config.services, &config.services, &config.lb)?;
        let new = State::build(config, &lbs);
        if let Err(error) = self.apply_to_fdb(Some(&old), &new) {
            // Put the table and the services back as the running configuration has them.
            let _ = self.apply_to_fdb(Some(&new), &old);
            let _ = apply_services(
                &mut lbs,
                &new.config.services,
                &old.config.services,
                &old.config.lb,
            );
            return Err(ConfigError::Fdb(error));
        }
        if new.config.underlay != old.config.underlay {
            *self.resolver.lock() = resolver_for(&new.config);
        }
        *self.current.lock() = Arc::new(new);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(changes)
    }

    /// Makes the forwarding table match `new`: flood lists, VNI settings and static entries,
    /// and flushes what `old` had that `new` has not.
    fn apply_to_fdb(&self, old: Option<&State>, new: &State) -> Result<(), crate::fdb::FdbError> {
        if let Some(old) = old {
            for &vni in old.vnis.keys() {
                if new.vnis.get(&vni).is_none() {
                    self.fdb.flush_vni(vni);
                    self.fdb.set_flood_list(vni, &[])?;
                }
            }
            for &port in old.ports.keys() {
                if new.ports.get(&port).is_none() {
                    self.fdb.flush_port(port);
                }
            }
            for entry in &old.config.static_entries {
                let kept = new
                    .config
                    .static_entries
                    .iter()
                    .any(|e| e.vni == entry.vni && e.mac == entry.mac);
                if !kept {
                    self.fdb.remove(entry.vni, entry.mac);
                }
            }
        }
        for settings in &new.config.vnis {
            self.fdb.configure_vni(
                settings.vni,
                VniConfig {
                    ageing: settings.ageing,
                    max_entries: new.config.fdb.max_entries_per_vni,
                    learning: settings.learning,
                },
            )?;
            self.fdb
                .set_flood_list(settings.vni, &new.flood_members(settings.vni))?;
        }
        for entry in &new.config.static_entries {
            self.fdb
                .insert_static(entry.vni, entry.mac, entry.destination)?;
        }
        Ok(())
    }

    /// The configuration running now.
    pub fn config(&self) -> SwitchConfig {
        self.current.lock().config.clone()
    }

    /// The generation of the running configuration: 0 at [`Switch::new`], one more after
    /// each accepted [`Switch::reconfigure`].
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::Acquire)
    }

    /// The forwarding table.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// Timers, to call about once a second (and the data path needs no other call): ageing
    /// of the forwarding table, and ARP/ND probes for underlay next hops (every VTEP the
    /// configuration names is resolved from the first call on, before traffic needs it), which
    /// it writes into `output` as actions to the underlay (`output` is cleared first). Returns
    /// how many entries aged out.
    pub fn poll(&self, now: Instant, output: &mut Output) -> usize {
        output.actions.clear();
        output.generated.clear();
        let aged = self.fdb.age(now);
        if let Some(resolver) = self.resolver.lock().as_mut() {
            // Every VTEP of a flood list or static entry is resolved ahead of its first frame,
            // so that first frame (often an ARP request) is not the one dropped while waiting.
            let state = Arc::clone(&self.current.lock());
            let known =
                state
                    .config
                    .vnis
                    .iter()
                    .flat_map(|v| v.remote_vteps.iter().copied())
                    .chain(state.config.static_entries.iter().filter_map(
                        |e| match e.destination {
                            Destination::Vtep(ip) => Some(ip),
                            Destination::Port(_) => None,
                        },
                    ));
            for vtep in known {
                let _ = resolver.resolve(vtep, now);
            }
            let mut probe = [0u8; PROBE_MAX_LEN];
            while let Some(len) = resolver.poll(now, &mut probe) {
                push_underlay_probe(output, probe.get(..len).unwrap_or(&[]));
            }
        }
        aged
    }

    /// The underlay next hops being resolved, with their MACs and states, for `show`.
    pub fn next_hops(&self) -> Vec<(IpAddr, Option<EthernetAddress>, super::resolver::EntryState)> {
        self.resolver
            .lock()
            .as_ref()
            .map(|r| r.entries().collect())
            .unwrap_or_default()
    }

    /// The next-hop MAC for `vtep`, or why there is none; a first miss sends a probe.
    fn resolve(
        &self,
        vtep: IpAddr,
        now: Instant,
        output: &mut Output,
    ) -> Result<EthernetAddress, DropReason> {
        let mut resolver = self.resolver.lock();
        let Some(resolver) = resolver.as_mut() else {
            return Err(DropReason::NextHopUnresolved);
        };
        match resolver.resolve(vtep, now) {
            Resolution::Resolved(mac) => Ok(mac),
            Resolution::Pending | Resolution::Failed => {
                let mut probe = [0u8; PROBE_MAX_LEN];
                while let Some(len) = resolver.poll(now, &mut probe) {
                    push_underlay_probe(output, probe.get(..len).unwrap_or(&[]));
                }
                Err(DropReason::NextHopUnresolved)
            }
        }
    }

    /// Gives an ARP or neighbour-discovery frame from the underlay to the resolver; true if
    /// it answered one of its probes (the frame is consumed).
    fn resolver_takes(&self, frame: &[u8], now: Instant) -> bool {
        // ARP, or IPv6 carrying ICMPv6 directly.
        let candidate = match ethertype_of(frame) {
            Some(ethertype::ARP) => true,
            Some(ethertype::IPV6) => frame.get(20) == Some(&58),
            _ => false,
        };
        if !candidate {
            return false;
        }
        let mut resolver = self.resolver.lock();
        let Some(resolver) = resolver.as_mut() else {
            return false;
        };
        let answered = resolver.handle_frame(frame, now);
        if answered {
            self.resolved.fetch_add(1, Ordering::Release);
        }
        answered
    }

    /// The one local port a frame from `ingress` goes to, if that is known before switching
    /// it: a unicast destination learned (or static) on another local port of the frame's
    /// VNI. A backend asks this of a GSO super-frame, which it may then hand to that port
    /// whole for the kernel to segment, instead of cutting it first (a frame for the
    /// underlay, or flooded, must fit the MTU before [`Switch::process`]). `process` still
    /// decides: the table can change in between, and port security may refuse the frame.
    pub fn local_destination(
        &self,
        worker: &Worker,
        ingress: Ingress,
        frame: &[u8],
    ) -> Option<PortId> {
        let Ingress::Port(port) = ingress else {
            return None;
        };
        let state = &worker.state;
        let vni = state.ports.get(&port)?.vni_of(frame).ok()?;
        state.vnis.get(&vni)?;
        // The destination MAC leads the frame, tagged or not.
        let dst = mac_at(frame, 0)?;
        if !dst.is_unicast() {
            return None; // broadcast, multicast: flooded
        }
        match self.fdb.lookup(vni, dst)? {
            Destination::Port(to) if to != port && state.ports.get(&to).is_some() => Some(to),
            _ => None,
        }
    }

    /// A worker for one thread.
    pub fn worker(&self) -> Worker {
        let generation = self.generation.load(Ordering::Acquire);
        let state = Arc::clone(&self.current.lock());
        Worker {
            counters: SwitchCounters {
                ports: state
                    .ports
                    .keys()
                    .map(|&p| (p, TrafficCounters::default()))
                    .collect(),
                vnis: state
                    .vnis
                    .keys()
                    .map(|&v| (v, TrafficCounters::default()))
                    .collect(),
                ..SwitchCounters::default()
            },
            generation,
            resolved: self.resolved.load(Ordering::Acquire),
            ident: IpIdent::new(0),
            templates: TemplateCache::new(),
            metas: Vec::new(),
            sources: Vec::new(),
            learned: Vec::new(),
            keys: Vec::new(),
            found: Vec::new(),
            flood: self.fdb.flood_buffer(),
            lbs: lb_workers(Vec::new(), &state),
            backend_macs: BackendMacs::new(&state),
            state,
        }
    }

    /// Brings `worker` to the running configuration if it changed since its last batch.
    #[inline]
    fn refresh(&self, worker: &mut Worker) {
        let resolved = self.resolved.load(Ordering::Acquire);
        if resolved != worker.resolved {
            worker.templates = TemplateCache::new();
            worker.resolved = resolved;
        }
        let generation = self.generation.load(Ordering::Acquire);
        if generation == worker.generation {
            return;
        }
        let state = Arc::clone(&self.current.lock());
        // Counters follow their port or VNI into the new order.
        worker.counters.ports = carried(&worker.counters.ports, state.ports.keys());
        worker.counters.vnis = carried(&worker.counters.vnis, state.vnis.keys());
        worker.templates = TemplateCache::new();
        worker.lbs = lb_workers(core::mem::take(&mut worker.lbs), &state);
        worker.backend_macs = BackendMacs::new(&state);
        worker.state = state;
        worker.generation = generation;
    }

    /// Processes a batch: see the [module documentation](crate::switch). `output` is
    /// cleared first.
    pub fn process(
        &self,
        worker: &mut Worker,
        batch: &mut [Received<'_>],
        now: Instant,
        output: &mut Output,
    ) {
        output.actions.clear();
        output.generated.clear();
        self.refresh(worker);
        let Worker {
            counters,
            state,
            ident,
            templates,
            metas,
            sources,
            learned,
            keys,
            found,
            flood,
            lbs,
            backend_macs,
            ..
        } = worker;
        let state: &State = state;
        metas.clear();
        counters.received += batch.len() as u64;

        // Stage 1: classify (ARP/ND answers for the resolver are consumed here), and gather
        // the sources to learn.
        sources.clear();
        for received in batch.iter_mut() {
            let mut meta = if received.ingress == Ingress::Underlay
                && self.resolver_takes(received.frame, now)
            {
                Meta::consumed()
            } else {
                state.classify(received)
            };
            if meta.verdict == Verdict::Pending {
                match mac_at(received.frame, meta.inner.start + 6) {
                    Some(src) => {
                        meta.learn = sources.len() as u32;
                        sources.push((meta.vni, src, meta.from));
                    }
                    None => meta.verdict = Verdict::Dropped(DropReason::InnerTruncated),
                }
            }
            metas.push(meta);
        }
        // Stage 2: learn the sources, as one batch (the forwarding table prefetches a group
        // of them at a time, hashing each key once).
        // The batch learn writes every outcome, so the vector is only grown, never refilled
        // (what lies beyond this batch's sources is never read).
        if learned.len() < sources.len() {
            learned.resize(sources.len(), Learn::Fresh);
        }
        let learned = learned.get_mut(..sources.len()).unwrap_or(&mut []);
        // Outcomes other than a refresh are rare once the senders are known: the frames are
        // looked through for drops and refusals only when there are any.
        if self.fdb.learn_batch(sources, now, learned) > 0 {
            for meta in metas.iter_mut() {
                match learned.get(meta.learn as usize) {
                    Some(Learn::Dropped(reason)) => meta.verdict = Verdict::Dropped(*reason),
                    Some(Learn::Refused(reason)) => counters.learn_refused.record(*reason),
                    _ => {}
                }
            }
        }
        // Stage 3: answer ARP / ND for known neighbours and VIPs.
        if state.answers {
            for (received, meta) in batch.iter().zip(metas.iter_mut()) {
                if meta.verdict == Verdict::Pending {
                    state.answer(received, meta, output);
                }
            }
        }
        // Stage 4: services: DNAT towards VIPs, reverse NAT of replies.
        if !state.lbs.is_empty() {
            for (received, meta) in batch.iter_mut().zip(metas.iter_mut()) {
                if meta.verdict == Verdict::Pending {
                    state.balance(received, meta, lbs, backend_macs, now);
                }
            }
        }
        // Stage 5: forward. The unicast destinations are looked up first, as one batch (after
        // stages 3 and 4, which consume frames and rewrite destinations), with the table's
        // rolling prefetch.
        keys.clear();
        for (received, meta) in batch.iter().zip(metas.iter_mut()) {
            if meta.verdict != Verdict::Pending {
                continue;
            }
            // The destination MAC opens the inner frame (`forward` checks the inner range
            // again before it sends anything).
            if let Some(dst) = mac_at(received.frame, meta.inner.start) {
                if dst.is_unicast() {
                    meta.lookup = keys.len() as u32;
                    keys.push((meta.vni, dst));
                }
            }
        }
        // As `learned`: every answer is written, and only this batch's are read.
        if found.len() < keys.len() {
            found.resize(keys.len(), Found::NOTHING);
        }
        let found = found.get_mut(..keys.len()).unwrap_or(&mut []);
        self.fdb.lookup_batch(keys, found);
        let mut forwarding = Forwarding {
            now,
            state,
            templates,
            ident,
            flood,
            output,
        };
        // The frames' counters go in the same pass, each frame's verdict being final once
        // it has been forwarded. A forwarded frame costs only its port's and VNI's `received`
        // (`forwarded` is what is left of the batch); the rest is counted out of line.
        let mut unforwarded = 0usize;
        for (index, (received, meta)) in batch.iter().zip(metas.iter_mut()).enumerate() {
            if meta.verdict == Verdict::Pending {
                let known = found.get(meta.lookup as usize).unwrap_or(&Found::NOTHING);
                self.forward(index, received, meta, known, &mut forwarding);
            }
            if meta.verdict != Verdict::Pending {
                unforwarded += 1;
                count_unforwarded(counters, received.ingress, meta);
            }
            if let Some(traffic) = ingress_traffic(counters, received.ingress, meta) {
                traffic.received += 1;
            }
            if let Some((_, traffic)) = counters.vnis.get_mut(meta.vni_index as usize) {
                traffic.received += 1;
            }
        }
        counters.forwarded += (batch.len() - unforwarded) as u64;
        counters.sent += output.actions.len() as u64;
        let mut underlay_sent = 0u64;
        for action in &output.actions {
            counters.generated += u64::from(matches!(action.payload, Payload::Generated(_)));
            match action.egress {
                Egress::Underlay => underlay_sent += 1,
                Egress::Port(_) => {
                    if let Some((_, traffic)) = counters.ports.get_mut(action.counter as usize) {
                        traffic.sent += 1;
                    }
                }
            }
        }
        counters.underlay.sent += underlay_sent;
    }

    /// Forwards one frame; `known` is the forwarding table's answer for its destination
    /// ([`Found::NOTHING`] for a destination not unicast, or not found). Taken as the table
    /// wrote it rather than as an `Option<Destination>`: building that enum and matching it
    /// again went through the stack, with narrow stores read back by wider loads.
    fn forward(
        &self,
        index: usize,
        received: &Received<'_>,
        meta: &mut Meta,
        known: &Found,
        fwd: &mut Forwarding<'_>,
    ) {
        let frame = received.frame.get(meta.inner.clone()).unwrap_or(&[]);
        let ingress_port = match meta.from {
            Destination::Port(port) => Some(port),
            Destination::Vtep(_) => None,
        };
        if mac_at(frame, 0).is_none() {
            meta.verdict = Verdict::Dropped(DropReason::InnerTruncated);
            return;
        }
        let mut sent = 0usize;
        let mut last_error = DropReason::NoDestination;
        match (known.port(), known.vtep()) {
            (Some(port), _) => {
                if Some(port) != ingress_port {
                    sent += usize::from(fwd.state.to_port(index, port, frame, meta, fwd.output));
                }
            }
            (None, Some(vtep)) => {
                if ingress_port.is_none() {
                    meta.verdict = Verdict::Dropped(DropReason::SplitHorizon);
                    return;
                }
                // An IPv4 VTEP through its own inlined copy, where the address stays in a
                // register; an `IpAddr` passed on as either family went through the stack.
                let result = match vtep {
                    IpAddr::V4(ipv4) => self.to_vtep(index, IpAddr::V4(ipv4), frame, meta, fwd),
                    IpAddr::V6(_) => self.to_vtep_out_of_line(index, vtep, frame, meta, fwd),
                };
                match result {
                    Ok(()) => sent += 1,
                    Err(reason) => last_error = reason,
                }
            }
            (None, None) => {
                self.fdb.flood_list(meta.vni, fwd.flood);
                let flood = core::mem::take(fwd.flood);
                for member in flood.iter() {
                    match *member {
                        Destination::Port(port) if Some(port) != ingress_port => {
                            sent += usize::from(
                                fwd.state
                                    .to_port_out_of_line(index, port, frame, meta, fwd.output),
                            );
                        }
                        // Split horizon: from the underlay, flood to local ports only.
                        Destination::Vtep(vtep) if ingress_port.is_some() => {
                            match self.to_vtep_out_of_line(index, vtep, frame, meta, fwd) {
                                Ok(()) => sent += 1,
                                Err(reason) => last_error = reason,
                            }
                        }
                        _ => {}
                    }
                }
                *fwd.flood = flood;
            }
        }
        if sent == 0 {
            meta.verdict = Verdict::Dropped(last_error);
        }
    }

    /// [`Switch::to_vtep`] as a call rather than inlined: for the flood loop and IPv6 VTEPs
    /// (one copy of its code, where the address is built in memory anyway).
    #[inline(never)]
    fn to_vtep_out_of_line(
        &self,
        index: usize,
        vtep: IpAddr,
        frame: &[u8],
        meta: &Meta,
        fwd: &mut Forwarding<'_>,
    ) -> Result<(), DropReason> {
        self.to_vtep(index, vtep, frame, meta, fwd)
    }

    /// Encapsulates the frame towards `vtep`: one action for the underlay, its header from
    /// the worker's template for (VNI, VTEP). A hit reads the cache slot once; a miss goes
    /// out of line.
    #[inline(always)]
    fn to_vtep(
        &self,
        index: usize,
        vtep: IpAddr,
        frame: &[u8],
        meta: &Meta,
        fwd: &mut Forwarding<'_>,
    ) -> Result<(), DropReason> {
        let key = TemplateKey::new(meta.vni, vtep);
        let slot = key.slot();
        match fwd.templates.slots.get(slot) {
            Some(Some((cached, template))) if *cached == key => encap_action(
                index, template, frame, meta, fwd.state, fwd.ident, fwd.output,
            ),
            _ => self.to_vtep_missed(index, slot, vtep, frame, meta, fwd),
        }
    }

    /// [`Switch::to_vtep`] when the worker has no template for (VNI, VTEP) at `slot`: builds
    /// it, then encapsulates with it.
    #[cold]
    #[inline(never)]
    fn to_vtep_missed(
        &self,
        index: usize,
        slot: usize,
        vtep: IpAddr,
        frame: &[u8],
        meta: &Meta,
        fwd: &mut Forwarding<'_>,
    ) -> Result<(), DropReason> {
        self.fill_template(slot, vtep, meta, fwd)?;
        let Some(Some((_, template))) = fwd.templates.slots.get(slot) else {
            return Err(DropReason::NoDestination);
        };
        encap_action(
            index, template, frame, meta, fwd.state, fwd.ident, fwd.output,
        )
    }

    /// Builds the template towards `vtep` in `meta`'s VNI into the worker's cache, at `slot`
    /// (out of line: a miss is rare, and its code kept the hit's values from registers).
    #[cold]
    #[inline(never)]
    fn fill_template(
        &self,
        slot: usize,
        vtep: IpAddr,
        meta: &Meta,
        fwd: &mut Forwarding<'_>,
    ) -> Result<(), DropReason> {
        let state = fwd.state;
        let underlay = &state.config.underlay;
        let next_hop = match &underlay.next_hop {
            NextHop::Static { default, per_vtep } => per_vtep
                .iter()
                .find(|(ip, _)| *ip == vtep)
                .map_or(*default, |&(_, mac)| mac),
            NextHop::Resolve { .. } => self.resolve(vtep, fwd.now, fwd.output)?,
        };
        let carry = state
            .vnis
            .get(&meta.vni)
            .is_some_and(|v| v.carry_inner_vlan);
        let encap = crate::tunnel::EncapConfig {
            carry_inner_vlan: carry,
            ..underlay.encap
        };
        let template = EncapTemplate::new(
            &encap,
            &underlay_towards(underlay, vtep, next_hop),
            meta.vni,
        )
        .map_err(|_| DropReason::NoDestination)?;
        let cached = fwd
            .templates
            .slots
            .get_mut(slot)
            .ok_or(DropReason::NoDestination)?;
        *cached = Some((TemplateKey::new(meta.vni, vtep), template));
        Ok(())
    }
}

/// Pushes the action that sends `frame` (the inner frame of batch entry `index`) to the
/// underlay with `template`'s header. When the template refuses the frame, the action is
/// taken back, and the sender of a frame too big for the underlay is told ([`too_big`]).
#[inline(always)]
fn encap_action(
    index: usize,
    template: &EncapTemplate,
    frame: &[u8],
    meta: &Meta,
    state: &State,
    ident: &mut IpIdent,
    output: &mut Output,
) -> Result<(), DropReason> {
    // Built where it stays (the header is written in place), and taken back on failure:
    // one copy of the action fewer a frame.
    output.actions.push(Action {
        egress: Egress::Underlay,
        header: [0; MAX_ACTION_HEADER],
        header_len: 0,
        counter: NONE,
        payload: Payload::Received {
            index,
            range: meta.inner.clone(),
        },
    });
    let encapsulated = match output.actions.last_mut() {
        Some(action) => template
            .encap_header(frame, &mut action.header, ident)
            .map(|len| action.header_len = len as u8),
        None => Err(DropReason::NoDestination),
    };
    if let Err(reason) = encapsulated {
        output.actions.pop();
        if reason == DropReason::MtuExceeded {
            too_big(template, frame, meta, state, output);
        }
    }
    encapsulated
}

/// Tells the sender of `frame`, which `template` refused as too big for the underlay, on its
/// port, when it is one of ours (an ICMP "fragmentation needed" or "packet too big").
#[cold]
#[inline(never)]
fn too_big(
    template: &EncapTemplate,
    frame: &[u8],
    meta: &Meta,
    state: &State,
    output: &mut Output,
) {
    if let Destination::Port(port) = meta.from {
        let start = output.generated.len();
        output.generated.resize(start + TOO_BIG_REPLY_MAX_LEN, 0);
        match template.too_big_reply(frame, &mut output.generated[start..]) {
            Some(len) => {
                output.generated.truncate(start + len);
                state.to_port_generated(port, meta.vni, start..start + len, output);
            }
            None => output.generated.truncate(start),
        }
    }
}

/// The stage state a forwarding decision needs besides the table: the configuration, this
/// worker's templates, IP identification and flood-list buffer, and the output.
struct Forwarding<'a> {
    now: Instant,
    state: &'a State,
    templates: &'a mut TemplateCache,
    ident: &'a mut IpIdent,
    flood: &'a mut FloodList,
    output: &'a mut Output,
}

impl State {
    fn build(config: SwitchConfig, lbs: &BTreeMap<Vni, LoadBalancer>) -> State {
        let lbs: Vec<(Vni, LbHandle)> = lbs.iter().map(|(&vni, lb)| (vni, lb.handle())).collect();
        let mut ids: Vec<PortId> = config.ports.iter().map(|p| p.id).collect();
        ids.sort();
        let mut vni_ids: Vec<Vni> = config.vnis.iter().map(|v| v.vni).collect();
        vni_ids.sort();
        let ports = config
            .ports
            .iter()
            .map(|port| {
                let access_vni = match port.mode {
                    PortMode::Access(vni) => vni_ids.binary_search(&vni).map_or(NONE, |i| i as u32),
                    PortMode::Trunk(_) => NONE,
                };
                let state = PortState {
                    index: ids.binary_search(&port.id).unwrap_or(0),
                    mode: port.mode.clone(),
                    security: port.security.clone(),
                    access_vni,
                };
                (port.id, state)
            })
            .collect();
        let vnis = config
            .vnis
            .iter()
            .map(|settings| {
                let state = VniState {
                    index: vni_ids.binary_search(&settings.vni).unwrap_or(0),
                    suppress: settings.suppress_arp_nd,
                    carry_inner_vlan: settings.carry_inner_vlan,
                    lb: lbs.iter().position(|(vni, _)| *vni == settings.vni),
                };
                (settings.vni, state)
            })
            .collect();
        let neighbors = NeighborMap::new(config.neighbors.iter().map(|n| (n.vni, n.ip, n.mac)));
        let vips: BTreeSet<(Vni, IpAddr)> = config
            .services
            .iter()
            .map(|service| (service.vni, service.key.vip))
            .collect();
        let decap = DecapConfig {
            // Per VNI, checked after decapsulation.
            carry_inner_vlan: true,
            ..config.underlay.decap
        };
        State {
            ports: SortedMap::from_unsorted(ports),
            vnis: SortedMap::from_unsorted(vnis),
            neighbors,
            answers: !vips.is_empty() || config.vnis.iter().any(|v| v.suppress_arp_nd),
            vips,
            lbs,
            decap,
            config,
        }
    }

    /// The state of `meta`'s VNI (found at classification).
    #[inline]
    fn vni_state(&self, meta: &Meta) -> Option<&VniState> {
        self.vnis
            .entries
            .get(meta.vni_index as usize)
            .map(|(_, state)| state)
    }

    /// The flood list of `vni`: its local ports in port order, then its remote VTEPs.
    fn flood_members(&self, vni: Vni) -> Vec<Destination> {
        let mut members: Vec<Destination> = self
            .ports
            .entries
            .iter()
            .filter(|(_, port)| port.tag_for(vni).is_some())
            .map(|&(id, _)| Destination::Port(id))
            .collect();
        if let Some(settings) = self.config.vnis.iter().find(|v| v.vni == vni) {
            members.extend(
                settings
                    .remote_vteps
                    .iter()
                    .map(|&ip| Destination::Vtep(ip)),
            );
        }
        members
    }

    fn classify(&self, received: &mut Received<'_>) -> Meta {
        let frame = &mut *received.frame;
        match received.ingress {
            Ingress::Port(port) => {
                let Some(state) = self.ports.get(&port) else {
                    return Meta::dropped(DropReason::PortUnknown, NONE);
                };
                let index = state.index as u32;
                let dropped = |reason| Meta::dropped(reason, index);
                if frame.len() < ETHERNET_HEADER_LEN {
                    return dropped(DropReason::InnerTruncated);
                }
                let vni = match state.vni_of(frame) {
                    Ok(vni) => vni,
                    Err(reason) => return dropped(reason),
                };
                let inner = match state.mode {
                    PortMode::Access(_) => 0..frame.len(),
                    PortMode::Trunk(_) => {
                        // Untag in place: the MACs move up over the tag.
                        frame.copy_within(0..12, 4);
                        4..frame.len()
                    }
                };
                let settings = match state.mode {
                    PortMode::Access(_) => self
                        .vnis
                        .entries
                        .get(state.access_vni as usize)
                        .map(|(_, v)| v),
                    PortMode::Trunk(_) => self.vnis.get(&vni),
                };
                let Some(settings) = settings else {
                    return dropped(DropReason::VniUnknown);
                };
                if !settings.carry_inner_vlan && is_tagged(&frame[inner.clone()]) {
                    return dropped(DropReason::InnerVlanTagged);
                }
                if let Some(security) = &state.security {
                    if let Err(reason) = check_source(security, &frame[inner.clone()]) {
                        return dropped(reason);
                    }
                }
                Meta {
                    vni,
                    inner,
                    from: Destination::Port(port),
                    verdict: Verdict::Pending,
                    port: index,
                    vni_index: settings.index as u32,
                    learn: NONE,
                    lookup: NONE,
                }
            }
            Ingress::Underlay => {
                let dropped = |reason| Meta::dropped(reason, NONE);
                let decapsulated = match decap(&self.decap, frame) {
                    Ok(d) => d,
                    Err(reason) => return dropped(reason),
                };
                let Some(settings) = self.vnis.get(&decapsulated.vni) else {
                    return dropped(DropReason::VniUnknown);
                };
                if !settings.carry_inner_vlan && is_tagged(decapsulated.inner_frame(frame)) {
                    return dropped(DropReason::InnerVlanTagged);
                }
                Meta {
                    vni: decapsulated.vni,
                    inner: decapsulated.inner,
                    from: Destination::Vtep(decapsulated.outer.src()),
                    verdict: Verdict::Pending,
                    port: NONE,
                    vni_index: settings.index as u32,
                    learn: NONE,
                    lookup: NONE,
                }
            }
        }
    }

    /// Answers an ARP request or neighbour solicitation from a local port for a neighbour the
    /// VNI knows, when the VNI suppresses: the reply goes back to the ingress port.
    fn answer(&self, received: &Received<'_>, meta: &mut Meta, output: &mut Output) {
        // Only untagged ARP and IPv6 can be a request the parsers below accept: everything
        // else (nearly every frame) leaves here first, on one load of its EtherType.
        let from_inner = received.frame.get(meta.inner.start..).unwrap_or(&[]);
        if !matches!(
            ethertype_of(from_inner),
            Some(ethertype::ARP | ethertype::IPV6)
        ) {
            return;
        }
        let (Ingress::Port(port), Destination::Port(_)) = (received.ingress, meta.from) else {
            return;
        };
        let Some(frame) = received.frame.get(meta.inner.clone()) else {
            return;
        };
        let suppress = self.vni_state(meta).is_some_and(|v| v.suppress);
        if !suppress && self.vips.is_empty() {
            return;
        }
        // VIPs are always answered (nobody else has them); hosts when the VNI suppresses.
        let known = |ip: IpAddr| {
            if self.vips.contains(&(meta.vni, ip)) {
                Some(self.config.lb.virtual_mac)
            } else if suppress {
                self.neighbors.get(meta.vni, ip)
            } else {
                None
            }
        };
        let start = output.generated.len();
        if let Some(request) = parse_arp_request(frame) {
            let Some(mac) = known(IpAddr::V4(request.target_ip)) else {
                return;
            };
            output.generated.resize(start + ARP_REPLY_LEN, 0);
            let Some(len) = write_arp_reply(&request, mac, &mut output.generated[start..]) else {
                output.generated.truncate(start);
                return;
            };
            output.generated.truncate(start + len);
        } else if let Some(solicitation) = parse_neighbor_solicitation(frame) {
            let Some(mac) = known(IpAddr::V6(solicitation.target_ip)) else {
                return;
            };
            output
                .generated
                .resize(start + NEIGHBOR_ADVERTISEMENT_LEN, 0);
            let Some(len) = write_neighbor_advertisement(
                &solicitation,
                mac,
                false,
                &mut output.generated[start..],
            ) else {
                output.generated.truncate(start);
                return;
            };
            output.generated.truncate(start + len);
        } else {
            return;
        }
        let end = output.generated.len();
        self.to_port_generated(port, meta.vni, start..end, output);
        meta.verdict = Verdict::Consumed;
    }

    /// The service stage: a packet towards a VIP of the frame's VNI is translated to a backend
    /// and its frame re-addressed to the backend's MAC; a reply of a translated flow gets the
    /// VIP back as its source and the virtual MAC as its source MAC. Other frames pass
    /// untouched, except those sent to the virtual MAC, which only services may use.
    fn balance(
        &self,
        received: &mut Received<'_>,
        meta: &mut Meta,
        lbs: &mut [(Vni, LbHandle, Option<lb::Worker>)],
        backend_macs: &mut BackendMacs,
        now: Instant,
    ) {
        let Some(index) = self.vni_state(meta).and_then(|v| v.lb) else {
            return;
        };
        let Some(frame) = received.frame.get_mut(meta.inner.clone()) else {
            return;
        };
        let l3 = match ethertype_of(frame) {
            Some(ethertype::IPV4 | ethertype::IPV6) => ETHERNET_HEADER_LEN,
            // The tagged frame's own EtherType, 4 bytes further on.
            Some(ethertype::VLAN) => match frame.get(4..).and_then(ethertype_of) {
                Some(ethertype::IPV4 | ethertype::IPV6) => ETHERNET_HEADER_LEN + 4,
                _ => return,
            },
            _ => return,
        };
        let virtual_mac = self.config.lb.virtual_mac;
        let to_virtual = frame.get(..6) == Some(&virtual_mac.0[..]);
        let Some(worker) = lbs.get_mut(index).and_then(|(_, _, w)| w.as_mut()) else {
            meta.verdict = Verdict::Dropped(DropReason::LbNoWorkerSlot);
            return;
        };
        let Some((macs, packet)) = frame.split_at_mut_checked(l3) else {
            return;
        };
        match worker.process(packet, now) {
            // By reference: the backend copied out of the returned decision whole was read in
            // a 16-byte load over the callee's narrower stores, which the core cannot forward
            // (12 % slower in `access_to_service_tunnel/64`).
            Decision::Forward { ref backend } => {
                // The address's fields read where they lie (`lb::addr_bits` over `addr.ip()`
                // built the `IpAddr` on the stack first: +3 instructions, and an IPv6 address
                // copied through it).
                let (family, address) = match &backend.addr {
                    SocketAddr::V4(a) => (4, u128::from(a.ip().to_bits())),
                    SocketAddr::V6(a) => (6, a.ip().to_bits()),
                };
                let slot = index * BACKEND_MAC_SLOTS + BackendMacs::slot(address);
                let mac = match backend_macs.slots.get(slot) {
                    Some(cached) if cached.family == family && cached.address == address => {
                        Some(cached.mac)
                    }
                    _ => self.backend_mac_missed(backend_macs, slot, meta.vni, backend, family),
                };
                match mac {
                    Some(mac) => macs[..6].copy_from_slice(&mac.0),
                    None => meta.verdict = Verdict::Dropped(DropReason::LbBackendUnresolved),
                }
            }
            Decision::Reply { .. } => macs[6..12].copy_from_slice(&virtual_mac.0),
            Decision::NotForUs if to_virtual => {
                meta.verdict = Verdict::Dropped(DropReason::VirtualMacNotService);
            }
            Decision::NotForUs => {}
            // A malformed IP packet not sent to a VIP's MAC is only switched, as without
            // services.
            Decision::Drop(DropReason::LbMalformed) if !to_virtual => {}
            Decision::Drop(reason) => meta.verdict = Verdict::Dropped(reason),
        }
    }

    /// The MAC of `backend` (its address of `family`, 4 or 6) in `vni`, from the neighbours,
    /// kept in `slot` of the worker's cache when known.
    #[cold]
    #[inline(never)]
    fn backend_mac_missed(
        &self,
        backend_macs: &mut BackendMacs,
        slot: usize,
        vni: Vni,
        backend: &lb::BackendRef,
        family: u32,
    ) -> Option<EthernetAddress> {
        let ip = backend.addr.ip();
        let mac = self.neighbors.get(vni, ip)?;
        if let Some(cached) = backend_macs.slots.get_mut(slot) {
            *cached = BackendMac {
                address: lb::addr_bits(ip),
                family,
                mac,
            };
        }
        Some(mac)
    }

    /// [`State::to_port`] as a call rather than inlined: for the flood loop.
    #[inline(never)]
    fn to_port_out_of_line(
        &self,
        index: usize,
        port: PortId,
        frame: &[u8],
        meta: &Meta,
        output: &mut Output,
    ) -> bool {
        self.to_port(index, port, frame, meta, output)
    }

    /// Sends the frame to a local port (tagged for a trunk). False if the port is no longer
    /// in the VNI (it left since the entry was learned). Inlined into the known-destination
    /// path: as a call, its register saves and arguments were a quarter of its cost.
    #[inline(always)]
    fn to_port(
        &self,
        index: usize,
        port: PortId,
        frame: &[u8],
        meta: &Meta,
        output: &mut Output,
    ) -> bool {
        let Some(state) = self.ports.get(&port) else {
            return false;
        };
        let Some(tag) = state.tag_for(meta.vni) else {
            return false;
        };
        // Pushed as built and then completed in place: an action built on the stack and
        // moved in was read back in 16-byte loads that overlapped the narrower stores of its
        // zeroed header, which the core cannot forward (a stall on every frame to a port).
        // (Two pushes: one merged after the tag's test cost 19 instructions a frame.)
        let port_action = |header_len: u8, range: Range<usize>| Action {
            egress: Egress::Port(port),
            header: [0; MAX_ACTION_HEADER],
            header_len,
            counter: state.index as u32,
            payload: Payload::Received { index, range },
        };
        let Some(vid) = tag else {
            output.actions.push(port_action(0, meta.inner.clone()));
            return true;
        };
        // Tagged: the MACs and the tag in the header, the frame from its EtherType on after it.
        let Some(macs) = frame.get(..12) else {
            return false;
        };
        output
            .actions
            .push(port_action(16, meta.inner.start + 12..meta.inner.end));
        if let Some(action) = output.actions.last_mut() {
            action.header[..12].copy_from_slice(macs);
            action.header[12..14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
            action.header[14..16].copy_from_slice(&vid.to_be_bytes());
        }
        true
    }

    fn to_port_generated(&self, port: PortId, vni: Vni, range: Range<usize>, output: &mut Output) {
        let Some(state) = self.ports.get(&port) else {
            return;
        };
        let Some(tag) = state.tag_for(vni) else {
            return;
        };
        let mut action = Action {
            egress: Egress::Port(port),
            header: [0; MAX_ACTION_HEADER],
            header_len: 0,
            counter: state.index as u32,
            payload: Payload::Generated(range.clone()),
        };
        if let Some(vid) = tag {
            let Some(macs) = output.generated.get(range.start..range.start + 12) else {
                return;
            };
            action.header[..12].copy_from_slice(macs);
            action.header[12..14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
            action.header[14..16].copy_from_slice(&vid.to_be_bytes());
            action.header_len = 16;
            action.payload = Payload::Generated(range.start + 12..range.end);
        }
        output.actions.push(action);
    }
}

/// What a reconfiguration changed in one service: how many of its Maglev slots moved, from
/// which backends to which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceChange {
    /// The service's VNI.
    pub vni: Vni,
    /// The service.
    pub key: ServiceKey,
    /// The slots that moved (all of them for a new service, none left for a removed one).
    pub disruption: Disruption,
}

/// Makes the load balancers' services go from `old` to `new`: removes what `new` lacks, sets
/// what changed, makes a load balancer for each VNI that gains services and drops those of
/// VNIs left without. On an error (which validation makes impossible: it builds the same
/// tables) the services are put back as `old` has them.
fn apply_services(
    lbs: &mut BTreeMap<Vni, LoadBalancer>,
    old: &[super::config::ServiceSettings],
    new: &[super::config::ServiceSettings],
    settings: &super::config::LbSettings,
) -> Result<Vec<ServiceChange>, ConfigError> {
    let mut changes = Vec::new();
    let mut failed = None;
    for gone in old {
        if !new.iter().any(|s| s.vni == gone.vni && s.key == gone.key) {
            if let Some(lb) = lbs.get_mut(&gone.vni) {
                if let Ok(disruption) = lb.remove_service(&gone.key) {
                    changes.push(ServiceChange {
                        vni: gone.vni,
                        key: gone.key,
                        disruption,
                    });
                }
            }
        }
    }
    for service in new {
        let unchanged = old.iter().any(|s| s == service);
        if unchanged && lbs.contains_key(&service.vni) {
            continue;
        }
        let lb = lbs
            .entry(service.vni)
            .or_insert_with(|| LoadBalancer::with_max_workers(settings.max_workers));
        match lb.set_service(service.key, service.service.clone()) {
            Ok(disruption) => changes.push(ServiceChange {
                vni: service.vni,
                key: service.key,
                disruption,
            }),
            Err(error) => {
                failed = Some(ConfigError::Service {
                    key: service.key,
                    problem: ServiceProblem::Lb(error),
                });
                break;
            }
        }
    }
    if let Some(error) = failed {
        let _ = apply_services(lbs, new, old, settings);
        return Err(error);
    }
    lbs.retain(|_, lb| lb.service_count() > 0);
    Ok(changes)
}

/// A worker's load-balancer workers for `state`'s VNIs with services: the ones it had for the
/// same load balancers, new ones for the others.
fn lb_workers(
    mut had: Vec<(Vni, LbHandle, Option<lb::Worker>)>,
    state: &State,
) -> Vec<(Vni, LbHandle, Option<lb::Worker>)> {
    state
        .lbs
        .iter()
        .map(|(vni, handle)| {
            let kept = had
                .iter()
                .position(|(v, h, _)| v == vni && h.same_load_balancer(handle))
                .map(|i| had.swap_remove(i));
            kept.unwrap_or_else(|| {
                let worker = handle.worker(state.config.lb.conntrack);
                (*vni, handle.clone(), worker)
            })
        })
        .collect()
}

/// Port security: the frame's source MAC and source IP address against what the port allows.
fn check_source(security: &PortSecurity, frame: &[u8]) -> Result<(), DropReason> {
    let src_mac = frame.get(6..12).ok_or(DropReason::InnerTruncated)?;
    if !security.macs.is_empty() && !security.macs.iter().any(|m| m.0 == *src_mac) {
        return Err(DropReason::SpoofedSourceMac);
    }
    if security.ips.is_empty() {
        return Ok(());
    }
    let l3 = if is_tagged(frame) { 18 } else { 14 };
    let ethertype = frame
        .get(l3 - 2..l3)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(DropReason::SpoofedSourceIp)?;
    let source = |at: core::ops::Range<usize>| frame.get(l3 + at.start..l3 + at.end);
    let src = match ethertype {
        ethertype::IPV4 | ethertype::ARP => {
            // IPv4 source at 12..16; ARP sender protocol address at 14..18.
            let at = if ethertype == ethertype::IPV4 {
                12..16
            } else {
                14..18
            };
            let bytes: [u8; 4] = source(at)
                .and_then(|b| b.try_into().ok())
                .ok_or(DropReason::SpoofedSourceIp)?;
            IpAddr::from(bytes)
        }
        ethertype::IPV6 => {
            let bytes: [u8; 16] = source(8..24)
                .and_then(|b| b.try_into().ok())
                .ok_or(DropReason::SpoofedSourceIp)?;
            IpAddr::from(bytes)
        }
        _ => return Ok(()), // Not IP: only the MAC is checked.
    };
    let always = match src {
        IpAddr::V4(ip) => ip.is_unspecified(),
        IpAddr::V6(ip) => ip.is_unspecified() || ip.is_unicast_link_local(),
    };
    if always || security.ips.contains(&src) {
        Ok(())
    } else {
        Err(DropReason::SpoofedSourceIp)
    }
}

/// The MAC at `at` in `frame`, if the frame holds six bytes there (smoltcp's `from_bytes`
/// is not inlined across crates, and panics on a short slice).
#[inline(always)]
fn mac_at(frame: &[u8], at: usize) -> Option<EthernetAddress> {
    let bytes: [u8; 6] = frame.get(at..at.checked_add(6)?)?.try_into().ok()?;
    Some(EthernetAddress(bytes))
}

/// The EtherType field of `frame` (bytes 12..14: a tag's TPID if it is tagged).
#[inline]
fn ethertype_of(frame: &[u8]) -> Option<u16> {
    match frame.get(12..14) {
        Some(&[a, b]) => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

fn is_tagged(frame: &[u8]) -> bool {
    matches!(ethertype_of(frame), Some(ethertype::VLAN | ethertype::QINQ))
}

#[cfg(test)]
mod test {
    use alloc::vec;

    use super::*;

    /// `get` finds what a linear search over the entries finds, for small port numbers (the
    /// directly indexed table) and large ones (the hashed one) with the top bit set (all 32
    /// bits count), repeated keys (the later wins) and absent keys.
    #[test]
    fn sorted_map_finds_what_a_linear_search_finds() {
        let mut next = crate::mix::xorshift(0x5EED);
        // Few rounds under miri, which took 71 s for the 200.
        let rounds = if cfg!(miri) { 9 } else { 200u32 };
        for round in 0..rounds {
            let n = (round % 40) as usize;
            // Few distinct values (repeats), spread over the whole u32 range.
            let entries: Vec<(PortId, u32)> = (0..n)
                .map(|i| {
                    let r = next();
                    // Every third round small numbers only (the directly indexed table).
                    let id = match (round % 3, r % 4) {
                        (0, _) => r as u32 % 64,
                        (_, 0) => r as u32 % 8,
                        (_, 1) => 0x8000_0000 | (r as u32 % 8),
                        _ => (r >> 32) as u32,
                    };
                    (PortId(id), i as u32)
                })
                .collect();
            let map = SortedMap::from_unsorted(entries.clone());
            let small = entries.iter().all(|(id, _)| id.0 < DENSE_KEYS);
            assert_eq!(!map.dense.is_empty(), small && n > 0, "round {round}");
            assert!(map.keys().is_sorted(), "round {round}");
            assert_eq!(map.keys().count(), n, "round {round}");
            for probe in entries
                .iter()
                .map(|&(id, _)| id)
                .chain([0, 1, 7, 63, 64, DENSE_KEYS - 1, DENSE_KEYS].map(PortId))
                .chain([0x8000_0000, 0x8000_0001, u32::MAX].map(PortId))
            {
                let expected = entries.iter().rev().find(|(id, _)| *id == probe);
                assert_eq!(
                    map.get(&probe),
                    expected.map(|(_, value)| value),
                    "round {round}, port {probe:?}"
                );
            }
        }
        let vni = |n| Vni::new(n).unwrap();
        let vnis = SortedMap::from_unsorted(vec![(vni(0xFF_FFFF), 'a'), (vni(100), 'b')]);
        assert_eq!(vnis.get(&vni(0xFF_FFFF)), Some(&'a'));
        assert_eq!(vnis.get(&vni(100)), Some(&'b'));
        assert_eq!(vnis.get(&vni(0)), None);
        let vnis = SortedMap::from_unsorted(vec![(vni(4095), 'a'), (vni(100), 'b')]);
        assert!(!vnis.dense.is_empty());
        assert_eq!(vnis.get(&vni(4095)), Some(&'a'));
        assert_eq!(vnis.get(&vni(100)), Some(&'b'));
        assert_eq!(vnis.get(&vni(4094)), None);
        assert_eq!(vnis.get(&vni(4096)), None);
    }
}
