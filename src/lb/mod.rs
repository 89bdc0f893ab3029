//! A service load balancer: Maglev consistent hashing, connection tracking, session affinity
//! and NAT, sans-IO.
//!
//! A *service* is a (VIP, port, protocol) with a set of backends (address, port, weight,
//! state). A packet to a service is sent to a backend chosen by a Maglev table (Eisenbud et
//! al., NSDI 2016, section 3.4; see [`maglev`]) and rewritten in place (DNAT, with incremental
//! checksum updates after RFC 1624; see [`nat`](self#nat)); its flow is remembered in a
//! per-worker [`ConnTrack`] so that it keeps its backend when the table changes, and its
//! replies, which must come back through the node that translated them (over the tunnel if
//! need be), get their source rewritten back to the VIP.
//!
//! # Planes
//!
//! - The control plane is a [`LoadBalancer`] (`&mut self`, one owner). Every change rebuilds
//!   the tables of the service it touches, off the data path, publishes a new immutable
//!   [`Services`] snapshot with one atomic pointer swap, and returns a [`Disruption`]: how
//!   many Maglev slots changed backend, from which backend to which.
//! - The data plane is one [`Worker`] per thread ([`LbHandle::worker`]), with its own
//!   [`ConnTrack`] and [`AffinityTable`] (`&mut`, like Katran's per-CPU LRU maps). Reading the
//!   snapshot never blocks (see `publish.rs`: each worker has a mailbox, an atomic pointer
//!   that the control plane fills and the worker empties; an old snapshot is an `Arc`, freed
//!   when the last worker using it has moved on). The dispatcher (RSS, `PACKET_FANOUT`, a software ring) must deliver
//!   both directions of a connection to the same worker: [`Services::steering_hash`] gives a
//!   key that is equal for the packets of a flow and for its replies.
//!
//! # Backend states
//!
//! - `Active` with a positive weight: in the Maglev table.
//! - `Draining`, or weight 0: out of the table, so no new flow goes there; tracked flows
//!   continue to it.
//! - `Down`, or removed from the service: out of the table, and a tracked flow that still
//!   points there moves to the table's choice on its next packet.
//!
//! # Determinism
//!
//! A service's table is a pure function of its set of (backend name, weight) and its table
//! size: the name of a backend is its `"ip:port"` text (`"[ip]:port"` for IPv6, addresses in
//! RFC 5952 form as Rust prints them), backends take turns in byte-wise order of their names,
//! offsets and skips are XXH64 of the name with seeds 0 and 1 ([`Permutation::for_name`]), and
//! the flow hash that picks a slot ([`FlowKey::hash`] with seed 0) has no per-process key. Every
//! node of a cluster with the same configuration picks the same backend for a flow.
//!
//! # NAT
//!
//! DNAT on the way in (VIP:port -> backend:port), the reverse on replies, incremental
//! checksum updates for IPv4 and IPv6, TCP and UDP, and translation of ICMP errors about
//! translated flows. Fragments towards a VIP are dropped (as Katran does: the later fragments
//! carry no ports).
//!
//! ```
//! use core::net::SocketAddr;
//! use switchyard::lb::{
//!     Backend, ConnTrackConfig, Decision, LoadBalancer, Protocol, ServiceConfig, ServiceKey,
//! };
//! use switchyard::time::Instant;
//!
//! let mut lb = LoadBalancer::new();
//! let vip: SocketAddr = "198.51.100.10:80".parse()?;
//! let key = ServiceKey::new(vip, Protocol::Udp);
//! let backends = ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
//!     .iter()
//!     .map(|a| Ok(Backend::new(a.parse()?)))
//!     .collect::<Result<Vec<_>, core::net::AddrParseError>>()?;
//! let report = lb.set_service(key, ServiceConfig::new(backends))?;
//! assert_eq!(report.slots_moved, 65537); // a new service: every slot got a backend
//!
//! // On a worker thread.
//! let mut worker = lb.handle().worker(ConnTrackConfig::default()).expect("a free slot");
//! // An IPv4/UDP packet 192.0.2.7:5000 -> 198.51.100.10:80, checksums left at zero.
//! let mut packet = [0u8; 28];
//! packet[..4].copy_from_slice(&[0x45, 0, 0, 28]);
//! packet[8..10].copy_from_slice(&[64, 17]);
//! packet[12..16].copy_from_slice(&[192, 0, 2, 7]);
//! packet[16..20].copy_from_slice(&[198, 51, 100, 10]);
//! packet[20..24].copy_from_slice(&[0x13, 0x88, 0, 80]);
//! packet[24..26].copy_from_slice(&[0, 8]);
//! match worker.process(&mut packet, Instant::from_secs(1)) {
//!     Decision::Forward { backend } => {
//!         // Rewritten in place: the destination is now the backend.
//!         let core::net::IpAddr::V4(ip) = backend.addr.ip() else { unreachable!() };
//!         assert_eq!(packet[16..20], ip.octets());
//!         assert_eq!(backend.addr.port(), 8080);
//!     }
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod affinity;
mod conntrack;
mod flow;
pub mod maglev;
mod nat;
mod publish;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, SocketAddr};

pub use affinity::AffinityTable;
pub use conntrack::{ConnTrack, ConnTrackConfig, ConnTrackCounters, RECENCY_GRANULARITY};
pub use flow::{FlowKey, Protocol};
pub use maglev::{
    Maglev, MaglevError, Permutation, TableSize, TableSizeError, DEFAULT_TABLE_SIZE, MAX_BACKENDS,
    MAX_TABLE_SIZE,
};

use conntrack::{TCP_ACK, TCP_SYN};
pub(crate) use flow::addr_bits;
use nat::{End, Parsed};

use crate::addr_map::AddrMap;
use crate::sync::Arc;
use crate::time::{Duration, Instant};
use crate::DropReason;

/// A service: the virtual address, port and protocol clients connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The virtual IP.
    pub vip: IpAddr,
    /// The port on the VIP.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl ServiceKey {
    /// The service at `vip` (address and port) for `protocol`.
    pub fn new(vip: SocketAddr, protocol: Protocol) -> ServiceKey {
        ServiceKey {
            vip: vip.ip(),
            port: vip.port(),
            protocol,
        }
    }

    /// The compact form the data path searches by.
    fn compact(&self) -> (u128, u32) {
        compact_key(
            addr_bits(self.vip),
            self.vip.is_ipv6(),
            self.port,
            self.protocol,
        )
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            SocketAddr::new(self.vip, self.port),
            self.protocol
        )
    }
}

/// A service key as two integers that order like the tuple (address, is IPv6, port,
/// protocol): the key of the data path's index (the tag has 25 bits, as `AddrMap` wants
/// at most 31), and the order of `Services::keys` for `is_vip`'s search.
#[inline(always)]
fn compact_key(addr: u128, ipv6: bool, port: u16, protocol: Protocol) -> (u128, u32) {
    (
        addr,
        (u32::from(ipv6) << 24) | (u32::from(port) << 8) | u32::from(protocol as u8),
    )
}

/// Whether a backend takes new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendState {
    /// Takes new flows (if its weight is positive).
    #[default]
    Active,
    /// Takes no new flow; its tracked flows continue.
    Draining,
    /// Takes nothing: its tracked flows move to another backend on their next packet.
    Down,
}

/// A backend of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Where it listens. Same address family as the VIP (no NAT64).
    pub addr: SocketAddr,
    /// Its relative share of new flows; 0 takes none (like draining).
    pub weight: u32,
    /// Active, draining or down.
    pub state: BackendState,
}

impl Backend {
    /// An active backend of weight 1.
    pub fn new(addr: SocketAddr) -> Backend {
        Backend {
            addr,
            weight: 1,
            state: BackendState::Active,
        }
    }

    /// The same backend with another weight.
    pub fn with_weight(self, weight: u32) -> Backend {
        Backend { weight, ..self }
    }

    /// The same backend in another state.
    pub fn with_state(self, state: BackendState) -> Backend {
        Backend { state, ..self }
    }

    /// The name Maglev hashes: `"ip:port"`, or `"[ip]:port"` for IPv6 (never a scope id).
    pub fn name(&self) -> String {
        match self.addr.ip() {
            IpAddr::V4(ip) => alloc::format!("{ip}:{}", self.addr.port()),
            IpAddr::V6(ip) => alloc::format!("[{ip}]:{}", self.addr.port()),
        }
    }

    /// True if the backend is in the Maglev table: active with a positive weight.
    pub fn takes_new_flows(&self) -> bool {
        self.state == BackendState::Active && self.weight > 0
    }
}

/// Session affinity of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Affinity {
    /// Every flow is placed on its own (by its 5-tuple).
    #[default]
    None,
    /// A client's new flows go to the backend it used last, while it started one within
    /// `timeout` (Kubernetes' `sessionAffinity: ClientIP`).
    ClientIp {
        /// Kubernetes' `timeoutSeconds`; [`Affinity::DEFAULT_CLIENT_IP_TIMEOUT`] by default.
        timeout: Duration,
    },
}

impl Affinity {
    /// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`: 10800 s (3 h).
    pub const DEFAULT_CLIENT_IP_TIMEOUT: Duration = Duration::from_secs(10800);

    /// `ClientIp` with Kubernetes' default timeout.
    pub const fn client_ip() -> Affinity {
        Affinity::ClientIp {
            timeout: Self::DEFAULT_CLIENT_IP_TIMEOUT,
        }
    }
}

/// The configuration of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Its backends, in any order (the table does not depend on it).
    pub backends: Vec<Backend>,
    /// The Maglev table size, a prime (65537 by default).
    pub table_size: TableSize,
    /// Session affinity (none by default).
    pub affinity: Affinity,
}

impl ServiceConfig {
    /// `backends` with the default table size and no affinity.
    pub fn new(backends: Vec<Backend>) -> ServiceConfig {
        ServiceConfig {
            backends,
            table_size: TableSize::DEFAULT,
            affinity: Affinity::None,
        }
    }
}

/// A configuration the control plane refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Maglev refused the backend set.
    Maglev(MaglevError),
    /// Two backends of a service have the same address and port.
    DuplicateBackend(SocketAddr),
    /// A backend's address family differs from its VIP's.
    FamilyMismatch(SocketAddr),
    /// No such service.
    UnknownService(ServiceKey),
    /// No such backend in the service.
    UnknownBackend(SocketAddr),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Maglev(e) => e.fmt(f),
            ConfigError::DuplicateBackend(a) => write!(f, "backend {a} is listed twice"),
            ConfigError::FamilyMismatch(a) => {
                write!(f, "backend {a} is not of the VIP's address family")
            }
            ConfigError::UnknownService(k) => write!(f, "no service {k}"),
            ConfigError::UnknownBackend(a) => write!(f, "no backend {a} in the service"),
        }
    }
}

impl core::error::Error for ConfigError {}

impl From<MaglevError> for ConfigError {
    fn from(e: MaglevError) -> Self {
        ConfigError::Maglev(e)
    }
}

/// A backend as the data path reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendRef {
    /// Its index in [`ServiceTable::backends`] of the snapshot that chose it.
    pub index: u16,
    /// Its address and port: where the translated packet goes.
    pub addr: SocketAddr,
}

/// One service as published: its backends sorted by name and its Maglev table. Immutable.
#[derive(Debug)]
pub struct ServiceTable {
    key: ServiceKey,
    /// Bumped on every rebuild of any service: a conntrack entry's cached backend index is
    /// valid while the generation it was taken from is current.
    generation: u64,
    affinity: Affinity,
    backends: Vec<Backend>,
    names: Vec<String>,
    /// (address, port, index) sorted, to find a backend from a tracked flow.
    by_addr: Vec<(u128, u16, u16)>,
    maglev: Maglev,
}

impl ServiceTable {
    fn build(
        key: ServiceKey,
        config: &ServiceConfig,
        generation: u64,
    ) -> Result<ServiceTable, ConfigError> {
        if config.backends.len() > MAX_BACKENDS {
            return Err(MaglevError::TooManyBackends(config.backends.len()).into());
        }
        let mut named: Vec<(String, Backend)> = Vec::with_capacity(config.backends.len());
        for b in &config.backends {
            if b.addr.is_ipv6() != key.vip.is_ipv6() {
                return Err(ConfigError::FamilyMismatch(b.addr));
            }
            named.push((b.name(), *b));
        }
        named.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = named.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ConfigError::DuplicateBackend(w[0].1.addr));
        }
        let members: Vec<(Permutation, u32)> = named
            .iter()
            .map(|(name, b)| {
                let weight = if b.takes_new_flows() { b.weight } else { 0 };
                (
                    Permutation::for_name(name.as_bytes(), config.table_size),
                    weight,
                )
            })
            .collect();
        let maglev = Maglev::build(config.table_size, &members)?;
        let mut by_addr: Vec<(u128, u16, u16)> = named
            .iter()
            .enumerate()
            .map(|(i, (_, b))| (addr_bits(b.addr.ip()), b.addr.port(), i as u16))
            .collect();
        by_addr.sort_unstable();
        let (names, backends) = named.into_iter().unzip();
        Ok(ServiceTable {
            key,
            generation,
            affinity: config.affinity,
            backends,
            names,
            by_addr,
            maglev,
        })
    }

    /// The service.
    pub fn key(&self) -> ServiceKey {
        self.key
    }

    /// The backends, sorted by name: the order Maglev's turns follow and the table's indices.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The backends' names, in the same order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The Maglev table: slot -> index into [`ServiceTable::backends`].
    pub fn maglev(&self) -> &Maglev {
        &self.maglev
    }

    /// The session affinity.
    pub fn affinity(&self) -> Affinity {
        self.affinity
    }

    fn index_of(&self, addr: u128, port: u16) -> Option<u16> {
        self.by_addr
            .binary_search_by(|&(a, p, _)| (a, p).cmp(&(addr, port)))
            .ok()
            .and_then(|i| self.by_addr.get(i))
            .map(|&(_, _, index)| index)
    }

    #[inline]
    fn backend_ref(&self, index: u16) -> Option<BackendRef> {
        self.backends.get(usize::from(index)).map(|b| BackendRef {
            index,
            addr: b.addr,
        })
    }

    /// The backend Maglev gives the flow hash `hash` (no connection tracking).
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<BackendRef> {
        self.backend_ref(self.maglev.lookup(hash)?)
    }
}

/// How many Maglev slots changed backend in one change, and between which backends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disruption {
    /// The table size after the change (0 if the service was removed).
    pub table_size: u32,
    /// Slots whose backend changed (a slot that gains or loses its backend counts).
    pub slots_moved: u32,
    /// The moves, one line per (from, to) pair, in order of `from` then `to`; `None` for a
    /// slot that had no backend (a new or empty table) or has none now.
    pub moves: Vec<SlotMove>,
}

/// Slots that moved from one backend to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMove {
    /// The backend's name before, if the slot had one.
    pub from: Option<String>,
    /// The backend's name after, if the slot has one.
    pub to: Option<String>,
    /// How many slots.
    pub slots: u32,
}

impl Disruption {
    /// Diffs two tables of a service, slot by slot, naming backends by name so that a
    /// backend whose index changed (another one was added before it) does not count as moved.
    pub fn between(old: Option<&ServiceTable>, new: Option<&ServiceTable>) -> Disruption {
        let empty: &[u16] = &[];
        let old_slots = old.map_or(empty, |t| t.maglev.slots());
        let new_slots = new.map_or(empty, |t| t.maglev.slots());
        // Old index -> new index of the same name.
        let renumber: Vec<Option<u16>> = match (old, new) {
            (Some(o), Some(n)) => o
                .names
                .iter()
                .map(|name| n.names.binary_search(name).ok().map(|i| i as u16))
                .collect(),
            (Some(o), None) => alloc::vec![None; o.names.len()],
            _ => Vec::new(),
        };
        let mut pairs: BTreeMap<(Option<u16>, Option<u16>), u32> = BTreeMap::new();
        let mut moved = 0u32;
        for slot in 0..old_slots.len().max(new_slots.len()) {
            let before = old_slots.get(slot).copied();
            let after = new_slots.get(slot).copied();
            let before_in_new = before.and_then(|i| renumber.get(usize::from(i)).copied()?);
            let unchanged = match (before, after) {
                (None, None) => true,
                (Some(_), Some(_)) => before_in_new == after,
                _ => false,
            };
            if unchanged {
                continue;
            }
            moved += 1;
            *pairs.entry((before, after)).or_insert(0) += 1;
        }
        let name = |table: Option<&ServiceTable>, i: Option<u16>| {
            i.and_then(|i| table?.names.get(usize::from(i)).cloned())
        };
        Disruption {
            table_size: new.map_or(0, |t| t.maglev.size().get()),
            slots_moved: moved,
            moves: pairs
                .into_iter()
                .map(|((from, to), slots)| SlotMove {
                    from: name(old, from),
                    to: name(new, to),
                    slots,
                })
                .collect(),
        }
    }
}

/// What the data path decided for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// The packet (or ICMP error) was towards a service: it has been translated in place and
    /// goes to `backend`.
    Forward {
        /// The backend it goes to.
        backend: BackendRef,
    },
    /// The packet (or ICMP error) was a reply of a tracked flow: its source has been
    /// translated back to `service` and it goes to the client.
    Reply {
        /// The VIP and port it now comes from.
        service: SocketAddr,
    },
    /// Neither towards a service nor a reply of a tracked flow: untouched, the caller
    /// forwards it as it would without a load balancer.
    NotForUs,
    /// Refused: the packet is left as it was and should be dropped and counted.
    Drop(DropReason),
}

/// The per-worker state of the data path: connection tracking and affinity memory.
#[derive(Debug, Clone)]
pub struct WorkerState {
    /// Connection tracking.
    pub conntrack: ConnTrack,
    /// ClientIP affinity memory.
    pub affinity: AffinityTable,
}

impl WorkerState {
    /// State for one worker; the affinity table gets a quarter of the conntrack capacity.
    pub fn new(config: ConnTrackConfig) -> WorkerState {
        WorkerState {
            affinity: AffinityTable::new(
                (config.capacity / 4).max(affinity::WAYS),
                config.hash_seed.rotate_left(17),
            ),
            conntrack: ConnTrack::new(config),
        }
    }
}

/// Up to this many services, the data path compares a packet's key with each in turn
/// instead of hashing it for `Services::index`.
const FEW_SERVICES: usize = 4;

/// The published set of services: immutable, shared by all workers.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// Sorted by `ServiceKey::compact`, parallel to `tables`.
    keys: Vec<(u128, u32)>,
    tables: Vec<Arc<ServiceTable>>,
    /// `ServiceKey::compact` -> index in `tables`: what the data path asks, once a packet.
    index: AddrMap<usize>,
}

impl Services {
    /// The service `key`, if configured.
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceTable> {
        self.find(&key.compact())
    }

    /// Every service, in order.
    pub fn iter(&self) -> impl Iterator<Item = &ServiceTable> {
        self.tables.iter().map(|t| &**t)
    }

    #[inline]
    fn find(&self, key: &(u128, u32)) -> Option<&ServiceTable> {
        // A few services: compared in turn, no hash on the packet's way; more: the index.
        let i = if self.keys.len() <= FEW_SERVICES {
            self.keys
                .iter()
                .position(|k| ((k.0 ^ key.0) | u128::from(k.1 ^ key.1)) == 0)?
        } else {
            self.index.get(key.0, key.1)?
        };
        self.tables.get(i).map(|t| &**t)
    }

    #[inline]
    fn find_flow_dst(&self, flow: &FlowKey) -> Option<&ServiceTable> {
        if self.keys.is_empty() {
            return None;
        }
        self.find(&compact_key(
            flow.dst,
            flow.ipv6,
            flow.dst_port,
            flow.protocol,
        ))
    }

    /// True if `addr` is the VIP of any service (any port).
    fn is_vip(&self, addr: u128, ipv6: bool) -> bool {
        let family = |k: &(u128, u32)| (k.0, k.1 >> 24 != 0);
        let start = self.keys.partition_point(|k| family(k) < (addr, ipv6));
        self.keys
            .get(start)
            .is_some_and(|k| family(k) == (addr, ipv6))
    }

    /// The backend for a packet of `flow` (client -> VIP) with TCP flags `tcp_flags` (0 for
    /// UDP) at `now`: the tracked one, or a new choice (affinity, then Maglev) that is then
    /// tracked. `None` if `flow` is not towards a service, or the service has no backend that
    /// takes new flows. This is [`Services::process`] without the packet.
    pub fn select(
        &self,
        state: &mut WorkerState,
        flow: &FlowKey,
        tcp_flags: u8,
        now: Instant,
    ) -> Option<BackendRef> {
        let service = self.find_flow_dst(flow)?;
        let found = state.conntrack.lookup_forward(flow, now);
        if let Some((backend, _)) =
            found.and_then(|id| hit(service, state, id, flow, tcp_flags, now))
        {
            return Some(backend);
        }
        select_found(service, state, flow, tcp_flags, now, found)
            .ok()
            .map(|(backend, _)| backend)
    }

    /// The backend Maglev alone gives `flow`, without tracking or affinity (what every node
    /// of the cluster computes for a new flow).
    #[inline]
    pub fn maglev_backend(&self, flow: &FlowKey) -> Option<BackendRef> {
        self.find_flow_dst(flow)?.lookup(flow.hash(0))
    }

    /// A key for the dispatcher that is the same for both directions of a load-balanced
    /// connection: a hash of the client's address and port (the source of a packet to a
    /// service, the destination of anything else). `None` if `packet` is not a TCP or UDP
    /// packet (or an ICMP error quoting one).
    pub fn steering_hash(&self, packet: &[u8]) -> Option<u64> {
        let flow = match nat::parse(packet).ok()? {
            Parsed::Transport(t) => t.flow,
            // The error is about the quoted packet, and travels the other way.
            Parsed::IcmpError(e) => e.quoted.reversed(),
            Parsed::Other { .. } => return None,
        };
        let client = if self.find_flow_dst(&flow).is_some() {
            flow
        } else {
            flow.reversed()
        };
        Some(
            FlowKey {
                dst: 0,
                dst_port: 0,
                ..client
            }
            .hash(0),
        )
    }

    /// The data path: decides what to do with the IP packet `packet` (starting at its IP
    /// header) at `now`, translating it in place when it goes to a backend or back to a client.
    /// Never panics, whatever the bytes.
    #[inline]
    pub fn process(&self, state: &mut WorkerState, packet: &mut [u8], now: Instant) -> Decision {
        // TCP and UDP, the common case, parsed in place; anything else takes the full parse.
        match nat::parse_transport(packet) {
            Some(t) => self.process_transport(state, packet, &t, now),
            None => self.process_other(state, packet, now),
        }
    }

    /// A TCP or UDP packet: towards a service, or maybe a reply of a tracked flow.
    #[inline(always)]
    fn process_transport(
        &self,
        state: &mut WorkerState,
        packet: &mut [u8],
        t: &nat::Transport,
        now: Instant,
    ) -> Decision {
        if let Some(service) = self.find_flow_dst(&t.flow) {
            let found = state.conntrack.lookup_forward(&t.flow, now);
            // The common case, translated here: nothing is built on the way (a `Result` of a
            // tuple, merged with the slow paths' and read back from the stack, cost more
            // than the rest of the hit).
            if let Some((backend, bits)) =
                found.and_then(|id| hit(service, state, id, &t.flow, t.tcp_flags, now))
            {
                nat::translate(packet, t, End::Destination, bits, backend.addr.port());
                return Decision::Forward { backend };
            }
            return match select_found(service, state, &t.flow, t.tcp_flags, now, found) {
                Ok((backend, bits)) => {
                    nat::translate(packet, t, End::Destination, bits, backend.addr.port());
                    Decision::Forward { backend }
                }
                Err(reason) => Decision::Drop(reason),
            };
        }
        let Some(id) = state.conntrack.lookup_reply(&t.flow, now) else {
            return Decision::NotForUs;
        };
        state.conntrack.touch(id, now, true, t.tcp_flags);
        let vip = &state.conntrack.entry(id).flow;
        let (vip_addr, vip_port, service) = (vip.dst, vip.dst_port, vip.dst());
        nat::translate(packet, t, End::Source, vip_addr, vip_port);
        Decision::Reply { service }
    }

    /// Everything but a well-formed TCP or UDP packet: ICMP errors, fragments, other
    /// protocols, malformed packets.
    #[inline(never)]
    fn process_other(&self, state: &mut WorkerState, packet: &mut [u8], now: Instant) -> Decision {
        let parsed = match nat::parse(packet) {
            Ok(p) => p,
            Err(nat::Malformed) => return Decision::Drop(DropReason::LbMalformed),
        };
        match parsed {
            Parsed::Transport(t) => self.process_transport(state, packet, &t, now),
            Parsed::IcmpError(e) => {
                // The error quotes a packet we sent; it travels the other way.
                let about = e.quoted.reversed();
                if self.find_flow_dst(&about).is_some() {
                    // A client's error about a reply (quoted VIP -> client), sent to the VIP:
                    // it goes to the flow's backend.
                    let Some(id) = state.conntrack.lookup_forward(&about, now) else {
                        return Decision::Drop(DropReason::LbIcmpUnknownFlow);
                    };
                    let backend = state.conntrack.entry(id).backend_addr();
                    let index = state.conntrack.entry(id).backend_index;
                    nat::translate_icmp(
                        packet,
                        &e,
                        End::Source,
                        addr_bits(backend.ip()),
                        backend.port(),
                    );
                    return Decision::Forward {
                        backend: BackendRef {
                            index,
                            addr: backend,
                        },
                    };
                }
                // An error about a translated packet (quoted client -> backend), on its way to
                // the client: the quote and the sender (if it is the backend) become the VIP.
                let Some(id) = state.conntrack.lookup_reply(&about, now) else {
                    return Decision::NotForUs;
                };
                let vip = state.conntrack.entry(id).flow;
                nat::translate_icmp(packet, &e, End::Destination, vip.dst, vip.dst_port);
                Decision::Reply { service: vip.dst() }
            }
            Parsed::Other {
                dst,
                ipv6,
                fragment,
                extension_header,
            } => {
                if (fragment || extension_header) && self.is_vip(dst, ipv6) {
                    Decision::Drop(if fragment {
                        DropReason::LbFragment
                    } else {
                        DropReason::LbUnsupportedHeader
                    })
                } else {
                    Decision::NotForUs
                }
            }
        }
    }
}

/// True for a TCP SYN without ACK: the first packet of a new connection.
#[inline(always)]
fn is_syn(flow: &FlowKey, tcp_flags: u8) -> bool {
    flow.protocol == Protocol::Tcp && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// The common case of a tracked flow, inlined into the data path: its entry `id` is stamped
/// with `service`'s generation and the packet is not a SYN reopening a closing flow. The
/// entry is touched and its backend returned, with its address as 128 bits (see `FlowKey`).
/// `None` for everything else, which [`select_found`] decides.
#[inline(always)]
fn hit(
    service: &ServiceTable,
    state: &mut WorkerState,
    id: conntrack::EntryId,
    flow: &FlowKey,
    tcp_flags: u8,
    now: Instant,
) -> Option<(BackendRef, u128)> {
    let entry = state.conntrack.entry(id);
    // An entry stamped with the current generation holds an index checked in this very
    // table (when it was chosen or last revalidated), and a published table never changes:
    // the backend is still there and not down.
    if entry.generation != service.generation || (entry.is_closing() && is_syn(flow, tcp_flags)) {
        return None;
    }
    let (bits, port, index) = (entry.backend, entry.backend_port, entry.backend_index);
    state.conntrack.touch(id, now, false, tcp_flags);
    let addr = SocketAddr::new(flow::bits_addr(bits, flow.ipv6), port);
    Some((BackendRef { index, addr }, bits))
}

/// The backend of `flow` in `service` once its entry, if any, has been looked up (`found`)
/// and [`hit`] did not decide: the tracked backend, or a new choice, tracked from now on;
/// with the backend's address as 128 bits (see `FlowKey`), for the translation.
#[inline(never)]
fn select_found(
    service: &ServiceTable,
    state: &mut WorkerState,
    flow: &FlowKey,
    tcp_flags: u8,
    now: Instant,
    found: Option<conntrack::EntryId>,
) -> Result<(BackendRef, u128), DropReason> {
    let is_syn = is_syn(flow, tcp_flags);
    let Some(id) = found else {
        return select_new(service, state, flow, tcp_flags, now, is_syn);
    };
    let entry = state.conntrack.entry(id);
    // A new SYN on a flow that was closing: the client reuses its port for a new
    // connection, which gets a fresh choice.
    if is_syn && entry.is_closing() {
        state.conntrack.remove(id);
        return select_new(service, state, flow, tcp_flags, now, is_syn);
    }
    let (bits, port) = (entry.backend, entry.backend_port);
    // `hit` did not decide, so the service changed since the entry was stamped: its backend
    // is looked up in the current table (it may be down, or gone).
    let still_up = service.index_of(bits, port).filter(|&i| {
        service
            .backends
            .get(usize::from(i))
            .is_some_and(|b| b.state != BackendState::Down)
    });
    let Some(index) = still_up else {
        return select_moved(service, state, flow, tcp_flags, now, id);
    };
    state
        .conntrack
        .set_backend_index(id, index, service.generation);
    state.conntrack.touch(id, now, false, tcp_flags);
    let addr = SocketAddr::new(flow::bits_addr(bits, flow.ipv6), port);
    Ok((BackendRef { index, addr }, bits))
}

/// A tracked flow whose backend is down or gone: it moves to the table's choice.
#[inline(never)]
fn select_moved(
    service: &ServiceTable,
    state: &mut WorkerState,
    flow: &FlowKey,
    tcp_flags: u8,
    now: Instant,
    id: conntrack::EntryId,
) -> Result<(BackendRef, u128), DropReason> {
    let backend = choose(service, state, flow, now)?;
    state
        .conntrack
        .rebind(id, backend.addr, backend.index, service.generation);
    state.conntrack.touch(id, now, false, tcp_flags);
    Ok((backend, addr_bits(backend.addr.ip())))
}

/// A flow that is not tracked: a new choice, tracked from now on.
#[inline(never)]
fn select_new(
    service: &ServiceTable,
    state: &mut WorkerState,
    flow: &FlowKey,
    tcp_flags: u8,
    now: Instant,
    is_syn: bool,
) -> Result<(BackendRef, u128), DropReason> {
    let counters = &mut state.conntrack.counters;
    counters.misses += 1;
    if flow.protocol == Protocol::Tcp {
        if is_syn {
            counters.misses_syn += 1;
        } else {
            counters.misses_non_syn += 1;
        }
    }
    let backend = choose(service, state, flow, now)?;
    state.conntrack.insert(
        flow,
        backend.addr,
        backend.index,
        service.generation,
        now,
        tcp_flags,
    );
    Ok((backend, addr_bits(backend.addr.ip())))
}

/// A backend for a new flow: the client's remembered one under affinity, else Maglev's.
fn choose(
    service: &ServiceTable,
    state: &mut WorkerState,
    flow: &FlowKey,
    now: Instant,
) -> Result<BackendRef, DropReason> {
    let Affinity::ClientIp { timeout } = service.affinity else {
        return service.lookup(flow.hash(0)).ok_or(DropReason::LbNoBackend);
    };
    let key = FlowKey {
        src_port: 0,
        ..*flow
    };
    let remembered = state
        .affinity
        .lookup(&key, now, timeout)
        .and_then(|(addr, port)| service.index_of(addr, port))
        .filter(|&i| {
            service
                .backends
                .get(usize::from(i))
                .is_some_and(Backend::takes_new_flows)
        })
        .and_then(|i| service.backend_ref(i));
    let backend = match remembered {
        Some(b) => b,
        None => service
            .lookup(flow.source_hash())
            .ok_or(DropReason::LbNoBackend)?,
    };
    state.affinity.record(
        &key,
        addr_bits(backend.addr.ip()),
        backend.addr.port(),
        now,
        timeout,
    );
    Ok(backend)
}

/// The control plane: owns the configuration, builds tables, publishes snapshots.
pub struct LoadBalancer {
    published: Arc<publish::Published>,
    configs: BTreeMap<ServiceKey, (ServiceConfig, Arc<ServiceTable>)>,
    next_generation: u64,
}

impl Default for LoadBalancer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LoadBalancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBalancer")
            .field("services", &self.configs.len())
            .finish_non_exhaustive()
    }
}

impl LoadBalancer {
    /// A load balancer without services, for up to 64 workers at a time.
    pub fn new() -> LoadBalancer {
        Self::with_max_workers(publish::DEFAULT_MAX_WORKERS)
    }

    /// A load balancer without services, for up to `max_workers` workers at a time (at
    /// least 1): each worker holds a slot through which it receives new snapshots.
    pub fn with_max_workers(max_workers: usize) -> LoadBalancer {
        LoadBalancer {
            published: Arc::new(publish::Published::new(Services::default(), max_workers)),
            configs: BTreeMap::new(),
            next_generation: 1,
        }
    }

    /// A handle for the data plane: clone it to every worker thread.
    pub fn handle(&self) -> LbHandle {
        LbHandle {
            published: self.published.clone(),
        }
    }

    /// The configuration of service `key`.
    pub fn config(&self, key: &ServiceKey) -> Option<&ServiceConfig> {
        self.configs.get(key).map(|(c, _)| c)
    }

    /// How many services are configured.
    pub fn service_count(&self) -> usize {
        self.configs.len()
    }

    /// The published table of service `key`.
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceTable> {
        self.configs.get(key).map(|(_, t)| &**t)
    }

    /// A copy of the published snapshot (cheap: the tables are shared; only the index of the
    /// services, a slot or two per service, is built), for a caller that runs the data path
    /// itself with [`Services::process`].
    pub fn snapshot(&self) -> Services {
        let (keys, tables): (Vec<(u128, u32)>, Vec<Arc<ServiceTable>>) = self
            .configs
            .values()
            .map(|(_, t)| (t.key.compact(), t.clone()))
            .unzip();
        let index = AddrMap::new(keys.iter().enumerate().map(|(i, &key)| (key, i)));
        Services {
            keys,
            tables,
            index,
        }
    }

    /// Whether [`LoadBalancer::set_service`] would take `config` for `key`, without changing
    /// anything (it builds the table and throws it away: milliseconds for a large table).
    pub fn validate(key: ServiceKey, config: &ServiceConfig) -> Result<(), ConfigError> {
        ServiceTable::build(key, config, 0).map(drop)
    }

    /// Adds or replaces service `key`, rebuilds its table and publishes.
    pub fn set_service(
        &mut self,
        key: ServiceKey,
        config: ServiceConfig,
    ) -> Result<Disruption, ConfigError> {
        let table = Arc::new(ServiceTable::build(key, &config, self.next_generation)?);
        self.next_generation += 1;
        let old = self.configs.insert(key, (config, table.clone()));
        let report = Disruption::between(old.as_ref().map(|(_, t)| &**t), Some(&table));
        self.publish();
        Ok(report)
    }

    /// Removes service `key` and publishes; its tracked flows are no longer translated.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<Disruption, ConfigError> {
        let (_, old) = self
            .configs
            .remove(key)
            .ok_or(ConfigError::UnknownService(*key))?;
        self.publish();
        Ok(Disruption::between(Some(&old), None))
    }

    /// Adds `backend` to service `key`, or updates the one with its address (weight, state).
    pub fn set_backend(
        &mut self,
        key: &ServiceKey,
        backend: Backend,
    ) -> Result<Disruption, ConfigError> {
        let mut config = self
            .config(key)
            .ok_or(ConfigError::UnknownService(*key))?
            .clone();
        match config.backends.iter_mut().find(|b| b.addr == backend.addr) {
            Some(b) => *b = backend,
            None => config.backends.push(backend),
        }
        self.set_service(*key, config)
    }

    /// Sets the state of backend `addr` of service `key`.
    pub fn set_backend_state(
        &mut self,
        key: &ServiceKey,
        addr: SocketAddr,
        state: BackendState,
    ) -> Result<Disruption, ConfigError> {
        let backend = self
            .config(key)
            .ok_or(ConfigError::UnknownService(*key))?
            .backends
            .iter()
            .find(|b| b.addr == addr)
            .ok_or(ConfigError::UnknownBackend(addr))?
            .with_state(state);
        self.set_backend(key, backend)
    }

    /// Removes backend `addr` from service `key`: its tracked flows move on their next packet.
    pub fn remove_backend(
        &mut self,
        key: &ServiceKey,
        addr: SocketAddr,
    ) -> Result<Disruption, ConfigError> {
        let mut config = self
            .config(key)
            .ok_or(ConfigError::UnknownService(*key))?
            .clone();
        let before = config.backends.len();
        config.backends.retain(|b| b.addr != addr);
        if config.backends.len() == before {
            return Err(ConfigError::UnknownBackend(addr));
        }
        self.set_service(*key, config)
    }

    fn publish(&self) {
        self.published.publish(self.snapshot());
    }
}

/// The data plane's handle on the published services: `Clone`, `Send`, `Sync`.
#[derive(Clone)]
pub struct LbHandle {
    published: Arc<publish::Published>,
}

impl fmt::Debug for LbHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LbHandle").finish_non_exhaustive()
    }
}

impl LbHandle {
    /// True if both handles are of the same [`LoadBalancer`].
    pub fn same_load_balancer(&self, other: &LbHandle) -> bool {
        Arc::ptr_eq(&self.published, &other.published)
    }

    /// A worker with its own connection tracking, on a free worker slot; `None` if all the
    /// slots of [`LoadBalancer::with_max_workers`] are taken. The slot is freed when the
    /// worker is dropped.
    pub fn worker(&self, config: ConnTrackConfig) -> Option<Worker> {
        let (slot, services) = self.published.register()?;
        Some(Worker {
            published: self.published.clone(),
            slot,
            services,
            state: WorkerState::new(config),
        })
    }
}

/// One data-path thread: picks up published snapshots without blocking, owns its state.
pub struct Worker {
    published: Arc<publish::Published>,
    slot: usize,
    services: Arc<Services>,
    state: WorkerState,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("slot", &self.slot)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// [`Services::process`] on the newest snapshot. Checks for a new snapshot on every call
    /// (one load of the worker's own slot); [`Worker::with_services`] checks once per batch.
    pub fn process(&mut self, packet: &mut [u8], now: Instant) -> Decision {
        self.published.refresh(self.slot, &mut self.services);
        self.services.process(&mut self.state, packet, now)
    }

    /// Runs `f` with the newest snapshot and this worker's state: a whole batch of packets
    /// against one snapshot.
    pub fn with_services<R>(&mut self, f: impl FnOnce(&Services, &mut WorkerState) -> R) -> R {
        self.published.refresh(self.slot, &mut self.services);
        f(&self.services, &mut self.state)
    }

    /// This worker's state (connection tracking and its counters, affinity memory).
    pub fn state(&self) -> &WorkerState {
        &self.state
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.published.unregister(self.slot, self.services.clone());
    }
}

#[cfg(test)]
mod test;
