//! The batch pipeline; documented in the parent module.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::IpAddr;
use core::ops::Range;

use super::config::{underlay_towards, ConfigError, PortMode, PortSecurity, SwitchConfig};
use super::neighbor::{
    parse_arp_request, parse_neighbor_solicitation, write_arp_reply, write_neighbor_advertisement,
    ARP_REPLY_LEN, NEIGHBOR_ADVERTISEMENT_LEN,
};
use crate::fdb::{Destination, Fdb, FloodList, Learn, VniConfig};
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
    /// Per port, in port-number order ([`Switch::ports`]).
    pub ports: Vec<TrafficCounters>,
    /// Per VNI, in VNI order ([`Switch::vnis`]).
    pub vnis: Vec<TrafficCounters>,
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
        for (list, others) in [
            (&mut self.ports, &other.ports),
            (&mut self.vnis, &other.vnis),
        ] {
            if list.len() < others.len() {
                list.resize(others.len(), TrafficCounters::default());
            }
            for (mine, theirs) in list.iter_mut().zip(others) {
                mine.received += theirs.received;
                mine.sent += theirs.sent;
                mine.dropped += theirs.dropped;
            }
        }
        self.underlay.received += other.underlay.received;
        self.underlay.sent += other.underlay.sent;
        self.underlay.dropped += other.underlay.dropped;
    }
}

/// A map from few keys, looked up on every frame: a sorted vector searched by bisection,
/// which for the tens of ports and VNIs of a node is a few compares in one or two cache
/// lines (a `BTreeMap` costs a pointer chase per level).
#[derive(Debug, Clone)]
struct SortedMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K: Ord + Copy, V> SortedMap<K, V> {
    fn from_unsorted(mut entries: Vec<(K, V)>) -> Self {
        entries.sort_by_key(|entry| entry.0);
        SortedMap { entries }
    }

    #[inline]
    fn get(&self, key: &K) -> Option<&V> {
        self.entries
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .and_then(|i| self.entries.get(i))
            .map(|(_, v)| v)
    }

    fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Encapsulation templates by (VNI, remote VTEP), direct-mapped: one hash, one compare.
/// A collision rebuilds a template (a few hundred nanoseconds), which only a node talking to
/// more (VNI, VTEP) pairs at once than it has slots ever sees often.
#[derive(Debug)]
struct TemplateCache {
    slots: Vec<Option<((Vni, IpAddr), EncapTemplate)>>,
}

const TEMPLATE_CACHE_SLOTS: usize = 256;

impl TemplateCache {
    fn new() -> TemplateCache {
        TemplateCache {
            slots: (0..TEMPLATE_CACHE_SLOTS).map(|_| None).collect(),
        }
    }

    #[inline]
    fn slot(vni: Vni, vtep: IpAddr) -> usize {
        let address = match vtep {
            IpAddr::V4(ip) => u64::from(ip.to_bits()),
            IpAddr::V6(ip) => {
                let bits = ip.to_bits();
                (bits as u64) ^ ((bits >> 64) as u64)
            }
        };
        let key = address ^ (u64::from(vni.get()) << 40);
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % TEMPLATE_CACHE_SLOTS
    }
}

#[derive(Debug, Clone)]
struct PortState {
    index: usize,
    mode: PortMode,
    security: Option<PortSecurity>,
}

impl PortState {
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
}

/// One worker's private state: counters, IP identification, encapsulation templates and
/// scratch space. Make one per thread with [`Switch::worker`].
#[derive(Debug)]
pub struct Worker {
    /// This worker's counters.
    pub counters: SwitchCounters,
    ident: IpIdent,
    templates: TemplateCache,
    metas: Vec<Meta>,
    flood: FloodList,
}

#[derive(Debug, Clone)]
struct Meta {
    vni: Vni,
    inner: Range<usize>,
    from: Destination,
    verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pending,
    Dropped(DropReason),
    Consumed,
}

/// The switch: configuration, forwarding table and the pipeline; shared by the workers.
#[derive(Debug)]
pub struct Switch {
    config: SwitchConfig,
    fdb: Fdb,
    ports: SortedMap<PortId, PortState>,
    vnis: SortedMap<Vni, VniState>,
    neighbors: BTreeMap<(Vni, IpAddr), EthernetAddress>,
    decap: DecapConfig,
}

impl Switch {
    /// A switch running `config`, or the first problem with it.
    pub fn new(config: SwitchConfig) -> Result<Switch, ConfigError> {
        config.validate()?;
        let fdb = Fdb::new(config.fdb).map_err(ConfigError::Fdb)?;
        let mut ports = BTreeMap::new();
        let mut ids: Vec<PortId> = config.ports.iter().map(|p| p.id).collect();
        ids.sort();
        for port in &config.ports {
            let index = ids.binary_search(&port.id).unwrap_or(0);
            ports.insert(
                port.id,
                PortState {
                    index,
                    mode: port.mode.clone(),
                    security: port.security.clone(),
                },
            );
        }
        let mut vni_ids: Vec<Vni> = config.vnis.iter().map(|v| v.vni).collect();
        vni_ids.sort();
        let mut vnis = BTreeMap::new();
        for settings in &config.vnis {
            vnis.insert(
                settings.vni,
                VniState {
                    index: vni_ids.binary_search(&settings.vni).unwrap_or(0),
                    suppress: settings.suppress_arp_nd,
                    carry_inner_vlan: settings.carry_inner_vlan,
                },
            );
            fdb.configure_vni(
                settings.vni,
                VniConfig {
                    ageing: settings.ageing,
                    max_entries: config.fdb.max_entries_per_vni,
                    learning: settings.learning,
                },
            )
            .map_err(ConfigError::Fdb)?;
            let mut members: Vec<Destination> = ids
                .iter()
                .filter(|id| {
                    ports
                        .get(id)
                        .is_some_and(|p: &PortState| p.tag_for(settings.vni).is_some())
                })
                .map(|&id| Destination::Port(id))
                .collect();
            members.extend(
                settings
                    .remote_vteps
                    .iter()
                    .map(|&ip| Destination::Vtep(ip)),
            );
            fdb.set_flood_list(settings.vni, &members)
                .map_err(ConfigError::Fdb)?;
        }
        for entry in &config.static_entries {
            fdb.insert_static(entry.vni, entry.mac, entry.destination)
                .map_err(ConfigError::Fdb)?;
        }
        let neighbors = config
            .neighbors
            .iter()
            .map(|n| ((n.vni, n.ip), n.mac))
            .collect();
        let decap = DecapConfig {
            // Per VNI, checked after decapsulation.
            carry_inner_vlan: true,
            ..config.underlay.decap
        };
        Ok(Switch {
            config,
            fdb,
            ports: SortedMap::from_unsorted(ports.into_iter().collect()),
            vnis: SortedMap::from_unsorted(vnis.into_iter().collect()),
            neighbors,
            decap,
        })
    }

    /// The forwarding table.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The configuration running.
    pub fn config(&self) -> &SwitchConfig {
        &self.config
    }

    /// The port numbers, in the order of [`SwitchCounters::ports`].
    pub fn ports(&self) -> Vec<PortId> {
        self.ports.keys().copied().collect()
    }

    /// The VNIs, in the order of [`SwitchCounters::vnis`].
    pub fn vnis(&self) -> Vec<Vni> {
        self.vnis.keys().copied().collect()
    }

    /// A worker for one thread.
    pub fn worker(&self) -> Worker {
        Worker {
            counters: SwitchCounters {
                ports: alloc::vec![TrafficCounters::default(); self.ports.len()],
                vnis: alloc::vec![TrafficCounters::default(); self.vnis.len()],
                ..SwitchCounters::default()
            },
            ident: IpIdent::new(0),
            templates: TemplateCache::new(),
            metas: Vec::new(),
            flood: self.fdb.flood_buffer(),
        }
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
        let mut metas = core::mem::take(&mut worker.metas);
        metas.clear();
        worker.counters.received += batch.len() as u64;

        // Stage 1: classify.
        for received in batch.iter_mut() {
            metas.push(self.classify(received));
        }
        // Stage 2: learn the sources.
        for (received, meta) in batch.iter().zip(metas.iter_mut()) {
            if meta.verdict != Verdict::Pending {
                continue;
            }
            let Some(src) = received
                .frame
                .get(meta.inner.start + 6..meta.inner.start + 12)
            else {
                meta.verdict = Verdict::Dropped(DropReason::InnerTruncated);
                continue;
            };
            let src = EthernetAddress::from_bytes(src);
            match self.fdb.learn(meta.vni, src, meta.from, now) {
                Learn::Dropped(reason) => meta.verdict = Verdict::Dropped(reason),
                Learn::Refused(reason) => worker.counters.learn_refused.record(reason),
                _ => {}
            }
        }
        // Stage 3: answer ARP / ND for known neighbours.
        for (received, meta) in batch.iter().zip(metas.iter_mut()) {
            if meta.verdict == Verdict::Pending {
                self.answer(received, meta, output);
            }
        }
        // Stage 4: forward.
        for (index, (received, meta)) in batch.iter().zip(metas.iter_mut()).enumerate() {
            if meta.verdict == Verdict::Pending {
                self.forward(index, received, meta, worker, output);
            }
        }
        // Counters.
        for (received, meta) in batch.iter().zip(&metas) {
            let dropped = match meta.verdict {
                Verdict::Dropped(reason) => {
                    worker.counters.dropped.record(reason);
                    true
                }
                Verdict::Consumed => {
                    worker.counters.consumed += 1;
                    false
                }
                Verdict::Pending => {
                    worker.counters.forwarded += 1;
                    false
                }
            };
            let traffic = match received.ingress {
                Ingress::Port(port) => self
                    .ports
                    .get(&port)
                    .and_then(|p| worker.counters.ports.get_mut(p.index)),
                Ingress::Underlay => Some(&mut worker.counters.underlay),
            };
            if let Some(traffic) = traffic {
                traffic.received += 1;
                traffic.dropped += u64::from(dropped);
            }
            if let Some(vni) = self.vnis.get(&meta.vni) {
                if let Some(traffic) = worker.counters.vnis.get_mut(vni.index) {
                    traffic.received += 1;
                    traffic.dropped += u64::from(dropped);
                }
            }
        }
        worker.counters.sent += output.actions.len() as u64;
        for action in &output.actions {
            if matches!(action.payload, Payload::Generated(_)) {
                worker.counters.generated += 1;
            }
            let traffic = match action.egress {
                Egress::Port(port) => self
                    .ports
                    .get(&port)
                    .and_then(|p| worker.counters.ports.get_mut(p.index)),
                Egress::Underlay => Some(&mut worker.counters.underlay),
            };
            if let Some(traffic) = traffic {
                traffic.sent += 1;
            }
        }
        worker.metas = metas;
    }

    fn classify(&self, received: &mut Received<'_>) -> Meta {
        let dropped = |reason| Meta {
            vni: Vni::from_u24_truncating(0),
            inner: 0..0,
            from: Destination::Port(PortId(0)),
            verdict: Verdict::Dropped(reason),
        };
        let frame = &mut *received.frame;
        match received.ingress {
            Ingress::Port(port) => {
                let Some(state) = self.ports.get(&port) else {
                    return dropped(DropReason::PortUnknown);
                };
                if frame.len() < ETHERNET_HEADER_LEN {
                    return dropped(DropReason::InnerTruncated);
                }
                let (vni, inner) = match &state.mode {
                    PortMode::Access(vni) => (*vni, 0..frame.len()),
                    PortMode::Trunk(map) => {
                        let tpid = u16::from_be_bytes([frame[12], frame[13]]);
                        if tpid != ethertype::VLAN || frame.len() < ETHERNET_HEADER_LEN + 4 {
                            return dropped(DropReason::VlanUnmapped);
                        }
                        let vid = u16::from_be_bytes([frame[14], frame[15]]) & 0x0FFF;
                        let Some(&(_, vni)) = map.iter().find(|&&(v, _)| v == vid) else {
                            return dropped(DropReason::VlanUnmapped);
                        };
                        // Untag in place: the MACs move up over the tag.
                        frame.copy_within(0..12, 4);
                        (vni, 4..frame.len())
                    }
                };
                let Some(settings) = self.vnis.get(&vni) else {
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
                }
            }
            Ingress::Underlay => {
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
                }
            }
        }
    }

    /// Answers an ARP request or neighbour solicitation from a local port for a neighbour the
    /// VNI knows, when the VNI suppresses: the reply goes back to the ingress port.
    fn answer(&self, received: &Received<'_>, meta: &mut Meta, output: &mut Output) {
        let (Ingress::Port(port), Destination::Port(_)) = (received.ingress, meta.from) else {
            return;
        };
        if !self.vnis.get(&meta.vni).is_some_and(|v| v.suppress) {
            return;
        }
        let Some(frame) = received.frame.get(meta.inner.clone()) else {
            return;
        };
        let start = output.generated.len();
        if let Some(request) = parse_arp_request(frame) {
            let Some(&mac) = self
                .neighbors
                .get(&(meta.vni, IpAddr::V4(request.target_ip)))
            else {
                return;
            };
            output.generated.resize(start + ARP_REPLY_LEN, 0);
            let Some(len) = write_arp_reply(&request, mac, &mut output.generated[start..]) else {
                output.generated.truncate(start);
                return;
            };
            output.generated.truncate(start + len);
        } else if let Some(solicitation) = parse_neighbor_solicitation(frame) {
            let Some(&mac) = self
                .neighbors
                .get(&(meta.vni, IpAddr::V6(solicitation.target_ip)))
            else {
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

    fn forward(
        &self,
        index: usize,
        received: &Received<'_>,
        meta: &mut Meta,
        worker: &mut Worker,
        output: &mut Output,
    ) {
        let frame = received.frame.get(meta.inner.clone()).unwrap_or(&[]);
        let ingress_port = match meta.from {
            Destination::Port(port) => Some(port),
            Destination::Vtep(_) => None,
        };
        let Some(dst) = frame.get(..6) else {
            meta.verdict = Verdict::Dropped(DropReason::InnerTruncated);
            return;
        };
        let dst = EthernetAddress::from_bytes(dst);
        let mut sent = 0usize;
        let mut last_error = DropReason::NoDestination;
        let known = if dst.is_unicast() {
            self.fdb.lookup(meta.vni, dst)
        } else {
            None
        };
        match known {
            Some(Destination::Port(port)) => {
                if Some(port) != ingress_port {
                    sent += usize::from(self.to_port(index, port, frame, meta, output));
                }
            }
            Some(Destination::Vtep(vtep)) => {
                if ingress_port.is_none() {
                    meta.verdict = Verdict::Dropped(DropReason::SplitHorizon);
                    return;
                }
                match self.to_vtep(index, vtep, frame, meta, worker, output) {
                    Ok(()) => sent += 1,
                    Err(reason) => last_error = reason,
                }
            }
            None => {
                self.fdb.flood_list(meta.vni, &mut worker.flood);
                let flood = core::mem::take(&mut worker.flood);
                for member in flood.iter() {
                    match *member {
                        Destination::Port(port) if Some(port) != ingress_port => {
                            sent += usize::from(self.to_port(index, port, frame, meta, output));
                        }
                        // Split horizon: from the underlay, flood to local ports only.
                        Destination::Vtep(vtep) if ingress_port.is_some() => {
                            match self.to_vtep(index, vtep, frame, meta, worker, output) {
                                Ok(()) => sent += 1,
                                Err(reason) => last_error = reason,
                            }
                        }
                        _ => {}
                    }
                }
                worker.flood = flood;
            }
        }
        if sent == 0 {
            meta.verdict = Verdict::Dropped(last_error);
        }
    }

    /// Sends the frame to a local port (tagged for a trunk). False if the port is no longer
    /// in the VNI (it left since the entry was learned).
    fn to_port(
        &self,
        index: usize,
        port: PortId,
        frame: &[u8],
        meta: &Meta,
        output: &mut Output,
    ) -> bool {
        let Some(tag) = self.ports.get(&port).and_then(|p| p.tag_for(meta.vni)) else {
            return false;
        };
        let mut action = Action {
            egress: Egress::Port(port),
            header: [0; MAX_ACTION_HEADER],
            header_len: 0,
            payload: Payload::Received {
                index,
                range: meta.inner.clone(),
            },
        };
        if let Some(vid) = tag {
            // The MACs and the tag in the header, the frame from its EtherType on after it.
            let Some(macs) = frame.get(..12) else {
                return false;
            };
            action.header[..12].copy_from_slice(macs);
            action.header[12..14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
            action.header[14..16].copy_from_slice(&vid.to_be_bytes());
            action.header_len = 16;
            action.payload = Payload::Received {
                index,
                range: meta.inner.start + 12..meta.inner.end,
            };
        }
        output.actions.push(action);
        true
    }

    fn to_port_generated(&self, port: PortId, vni: Vni, range: Range<usize>, output: &mut Output) {
        let Some(tag) = self.ports.get(&port).and_then(|p| p.tag_for(vni)) else {
            return;
        };
        let mut action = Action {
            egress: Egress::Port(port),
            header: [0; MAX_ACTION_HEADER],
            header_len: 0,
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

    fn to_vtep(
        &self,
        index: usize,
        vtep: IpAddr,
        frame: &[u8],
        meta: &Meta,
        worker: &mut Worker,
        output: &mut Output,
    ) -> Result<(), DropReason> {
        let slot = TemplateCache::slot(meta.vni, vtep);
        let cached = worker
            .templates
            .slots
            .get_mut(slot)
            .ok_or(DropReason::NoDestination)?;
        let template = match cached {
            Some((key, template)) if *key == (meta.vni, vtep) => template,
            _ => {
                let underlay = &self.config.underlay;
                let next_hop = underlay
                    .next_hops
                    .iter()
                    .find(|(ip, _)| *ip == vtep)
                    .map_or(underlay.default_next_hop_mac, |&(_, mac)| mac);
                let carry = self.vnis.get(&meta.vni).is_some_and(|v| v.carry_inner_vlan);
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
                &mut cached.insert(((meta.vni, vtep), template)).1
            }
        };
        let mut action = Action {
            egress: Egress::Underlay,
            header: [0; MAX_ACTION_HEADER],
            header_len: 0,
            payload: Payload::Received {
                index,
                range: meta.inner.clone(),
            },
        };
        match template.encap_header(frame, &mut action.header, &mut worker.ident) {
            Ok(len) => {
                action.header_len = len as u8;
                output.actions.push(action);
                Ok(())
            }
            Err(DropReason::MtuExceeded) => {
                // Tell the sender on its port, when it is one of ours.
                if let Destination::Port(port) = meta.from {
                    let start = output.generated.len();
                    output.generated.resize(start + TOO_BIG_REPLY_MAX_LEN, 0);
                    match template.too_big_reply(frame, &mut output.generated[start..]) {
                        Some(len) => {
                            output.generated.truncate(start + len);
                            self.to_port_generated(port, meta.vni, start..start + len, output);
                        }
                        None => output.generated.truncate(start),
                    }
                }
                Err(DropReason::MtuExceeded)
            }
            Err(reason) => Err(reason),
        }
    }
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

fn is_tagged(frame: &[u8]) -> bool {
    matches!(
        frame.get(12..14),
        Some(&[a, b]) if matches!(u16::from_be_bytes([a, b]), ethertype::VLAN | ethertype::QINQ)
    )
}
