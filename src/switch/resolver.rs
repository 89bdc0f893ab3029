//! The underlay next hop: which MAC an encapsulated frame for a remote VTEP goes to.
//!
//! A backend that owns the underlay's link layer (AF_PACKET) writes the outer Ethernet header
//! itself, so it must know the MAC of each remote VTEP, or of the gateway towards it when the
//! VTEP is not on the underlay's subnet. [`Resolver`] finds them with ARP (IPv4) or neighbour
//! discovery (IPv6), sans-IO in smoltcp's style: the caller asks [`Resolver::resolve`] on the
//! data path, sends whatever [`Resolver::poll`] writes, feeds received frames to
//! [`Resolver::handle_frame`], and calls `poll` again at [`Resolver::poll_at`]. A host that
//! knows the MACs (from its own neighbour table) supplies them with [`Resolver::supply`] and no
//! probe is ever sent for those.
//!
//! The states follow Linux's neighbour table, simplified: an answered entry is reachable for
//! `reachable_time` (Linux: `base_reachable_time_ms`, 30 s); after that it stays in use while
//! it is probed again; `max_probes` unanswered probes `retry_interval` apart (Linux:
//! `mcast_solicit` 3, `retrans_time_ms` 1 s) make it failed, and a failed address is not
//! probed again before `failed_hold` has passed, so a dead VTEP costs one probe burst per hold
//! time, not one per frame. Frames towards an unresolved next hop are the caller's to drop
//! (and count); Linux queues three, which a batch switch gains nothing from.
//!
//! The cache is bounded: remote VTEPs and gateways are few (one per node), and an address
//! beyond the bound is refused, counted, and reported [`Resolution::Failed`].

use alloc::collections::BTreeMap;
use core::fmt;
use core::net::IpAddr;

use super::neighbor::{
    parse_arp_reply, parse_neighbor_advertisement, write_arp_request, write_neighbor_solicitation,
    ARP_REQUEST_LEN, NEIGHBOR_SOLICITATION_LEN,
};
use crate::time::{Duration, Instant};
use crate::wire::EthernetAddress;

/// The longest probe [`Resolver::poll`] writes: a neighbour solicitation (86 bytes).
pub const PROBE_MAX_LEN: usize = if NEIGHBOR_SOLICITATION_LEN > ARP_REQUEST_LEN {
    NEIGHBOR_SOLICITATION_LEN
} else {
    ARP_REQUEST_LEN
};

/// How the underlay is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolverConfig {
    /// The underlay interface's MAC: the source of probes.
    pub local_mac: EthernetAddress,
    /// The local VTEP address: the source of probes, and the family of every next hop.
    pub local_ip: IpAddr,
    /// The prefix length of the underlay subnet: VTEPs inside it are on-link.
    pub prefix_len: u8,
    /// The next hop towards VTEPs outside the subnet; `None` treats every VTEP as on-link.
    pub gateway: Option<IpAddr>,
    /// How long an answer is trusted before the address is probed again.
    pub reachable_time: Duration,
    /// The time between probes.
    pub retry_interval: Duration,
    /// Unanswered probes before an address is failed.
    pub max_probes: u8,
    /// How long a failed address stays failed before it is probed again.
    pub failed_hold: Duration,
    /// The most addresses the cache holds.
    pub capacity: usize,
}

impl ResolverConfig {
    /// Linux's defaults (30 s reachable, 3 probes 1 s apart), a 10 s hold after a failure,
    /// room for 1024 next hops.
    pub const fn new(local_mac: EthernetAddress, local_ip: IpAddr, prefix_len: u8) -> Self {
        ResolverConfig {
            local_mac,
            local_ip,
            prefix_len,
            gateway: None,
            reachable_time: Duration::from_secs(30),
            retry_interval: Duration::from_secs(1),
            max_probes: 3,
            failed_hold: Duration::from_secs(10),
            capacity: 1024,
        }
    }
}

/// A configuration [`Resolver::new`] refuses, naming the offending field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResolverConfigError {
    /// `prefix_len` is longer than the address (32 for IPv4, 128 for IPv6).
    PrefixLen(u8),
    /// The gateway is of the other family than `local_ip`, or outside the subnet.
    GatewayNotOnLink(IpAddr),
    /// `local_ip` is unspecified, multicast or broadcast.
    LocalIp(IpAddr),
    /// `local_mac` is not a unicast address.
    LocalMac(EthernetAddress),
    /// `max_probes` or `capacity` is zero.
    Zero(&'static str),
}

impl fmt::Display for ResolverConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PrefixLen(len) => {
                write!(f, "underlay prefix_len {len} is longer than the address")
            }
            Self::GatewayNotOnLink(ip) => {
                write!(f, "underlay gateway {ip} is not on the local VTEP's subnet")
            }
            Self::LocalIp(ip) => write!(f, "local VTEP address {ip} is not a unicast address"),
            Self::LocalMac(mac) => write!(f, "underlay MAC {mac} is not a unicast address"),
            Self::Zero(field) => write!(f, "{field} must be at least 1"),
        }
    }
}

impl core::error::Error for ResolverConfigError {}

/// What [`Resolver::resolve`] knows of a VTEP's next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Send to this MAC.
    Resolved(EthernetAddress),
    /// Being probed: no MAC yet.
    Pending,
    /// Unreachable for now: the probes went unanswered, the address is of the other family
    /// than the underlay, or the cache is full.
    Failed,
}

/// A cache entry's state, as [`Resolver::entries`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// Supplied by the host: never probed, never expires.
    Permanent,
    /// Answered, trusted until the instant given.
    Reachable {
        /// When the answer stops being trusted.
        until: Instant,
    },
    /// Being probed (again, if a MAC is known: it stays in use meanwhile).
    Probing {
        /// Probes sent so far in this round.
        probes_sent: u8,
        /// When the next probe is due.
        next_probe: Instant,
    },
    /// No answer: not probed again before the instant given.
    Failed {
        /// When the address may be probed again.
        retry_at: Instant,
    },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: Option<EthernetAddress>,
    state: EntryState,
}

/// Counters of the resolver's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResolverCounters {
    /// Probes written by [`Resolver::poll`].
    pub probes_sent: u64,
    /// Answers that set or refreshed a MAC.
    pub answers: u64,
    /// Addresses that went unanswered for `max_probes` probes.
    pub failures: u64,
    /// New addresses refused because the cache was full.
    pub refused_full: u64,
}

/// Next-hop MACs of remote VTEPs; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Resolver {
    config: ResolverConfig,
    entries: BTreeMap<IpAddr, Entry>,
    counters: ResolverCounters,
}

impl Resolver {
    /// A resolver with an empty cache, or the first problem with `config`.
    pub fn new(config: ResolverConfig) -> Result<Resolver, ResolverConfigError> {
        let max_prefix = if config.local_ip.is_ipv4() { 32 } else { 128 };
        if config.prefix_len > max_prefix {
            return Err(ResolverConfigError::PrefixLen(config.prefix_len));
        }
        let local_ok = match config.local_ip {
            IpAddr::V4(ip) => !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast()),
            IpAddr::V6(ip) => !(ip.is_unspecified() || ip.is_multicast()),
        };
        if !local_ok {
            return Err(ResolverConfigError::LocalIp(config.local_ip));
        }
        if !config.local_mac.is_unicast() {
            return Err(ResolverConfigError::LocalMac(config.local_mac));
        }
        if config.max_probes == 0 {
            return Err(ResolverConfigError::Zero("max_probes"));
        }
        if config.capacity == 0 {
            return Err(ResolverConfigError::Zero("capacity"));
        }
        let resolver = Resolver {
            config,
            entries: BTreeMap::new(),
            counters: ResolverCounters::default(),
        };
        if let Some(gateway) = config.gateway {
            if !resolver.on_link(gateway) {
                return Err(ResolverConfigError::GatewayNotOnLink(gateway));
            }
        }
        Ok(resolver)
    }

    /// The configuration.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// The counters.
    pub fn counters(&self) -> ResolverCounters {
        self.counters
    }

    fn on_link(&self, ip: IpAddr) -> bool {
        let len = u32::from(self.config.prefix_len);
        match (self.config.local_ip, ip) {
            (IpAddr::V4(local), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                local.to_bits() & mask == ip.to_bits() & mask
            }
            (IpAddr::V6(local), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                local.to_bits() & mask == ip.to_bits() & mask
            }
            _ => false,
        }
    }

    /// The address whose MAC frames for `vtep` go to: the VTEP itself when it is on-link (or
    /// no gateway is configured), else the gateway. `None` for an address of the other family
    /// than the underlay.
    pub fn next_hop(&self, vtep: IpAddr) -> Option<IpAddr> {
        if vtep.is_ipv4() != self.config.local_ip.is_ipv4() {
            return None;
        }
        match self.config.gateway {
            Some(gateway) if !self.on_link(vtep) => Some(gateway),
            _ => Some(vtep),
        }
    }

    /// The MAC to send frames for `vtep` to, as far as it is known at `now`. An unknown next
    /// hop starts being probed: [`poll`](Self::poll) writes the probes.
    pub fn resolve(&mut self, vtep: IpAddr, now: Instant) -> Resolution {
        let Some(hop) = self.next_hop(vtep) else {
            return Resolution::Failed;
        };
        let probing = EntryState::Probing {
            probes_sent: 0,
            next_probe: now,
        };
        let full = self.entries.len() >= self.config.capacity;
        let Some(entry) = self.entries.get_mut(&hop) else {
            if full {
                self.counters.refused_full += 1;
                return Resolution::Failed;
            }
            self.entries.insert(
                hop,
                Entry {
                    mac: None,
                    state: probing,
                },
            );
            return Resolution::Pending;
        };
        match entry.state {
            EntryState::Reachable { until } if now >= until => entry.state = probing,
            EntryState::Failed { retry_at } if now >= retry_at => entry.state = probing,
            EntryState::Failed { .. } => return Resolution::Failed,
            _ => {}
        }
        entry.mac.map_or(Resolution::Pending, Resolution::Resolved)
    }

    /// Binds `ip` to `mac` for good, as the host knows it: never probed, never expires, and
    /// answers never change it.
    pub fn supply(&mut self, ip: IpAddr, mac: EthernetAddress) {
        self.entries.insert(
            ip,
            Entry {
                mac: Some(mac),
                state: EntryState::Permanent,
            },
        );
    }

    /// Forgets `ip`, supplied or learned.
    pub fn remove(&mut self, ip: IpAddr) -> bool {
        self.entries.remove(&ip).is_some()
    }

    /// Writes the next probe due at `now` into `out` and returns its length; `None` when no
    /// probe is due. Call it until it returns `None`, sending each probe on the underlay.
    /// Also fails entries whose last probe went unanswered. `out` must hold
    /// [`PROBE_MAX_LEN`] bytes; a shorter one makes this return `None` without sending.
    pub fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        let config = self.config;
        for (&ip, entry) in self.entries.iter_mut() {
            let EntryState::Probing {
                probes_sent,
                next_probe,
            } = entry.state
            else {
                continue;
            };
            if now < next_probe {
                continue;
            }
            if probes_sent >= config.max_probes {
                entry.mac = None;
                entry.state = EntryState::Failed {
                    retry_at: now + config.failed_hold,
                };
                self.counters.failures += 1;
                continue;
            }
            let len = match (config.local_ip, ip) {
                (IpAddr::V4(local), IpAddr::V4(target)) => {
                    write_arp_request(config.local_mac, local, target, out)
                }
                (IpAddr::V6(local), IpAddr::V6(target)) => {
                    write_neighbor_solicitation(config.local_mac, local, target, out)
                }
                _ => None,
            }?;
            entry.state = EntryState::Probing {
                probes_sent: probes_sent + 1,
                next_probe: now + config.retry_interval,
            };
            self.counters.probes_sent += 1;
            return Some(len);
        }
        None
    }

    /// When [`poll`](Self::poll) has work next: the earliest due probe or failure; `None`
    /// when nothing is being probed.
    pub fn poll_at(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|entry| match entry.state {
                EntryState::Probing { next_probe, .. } => Some(next_probe),
                _ => None,
            })
            .min()
    }

    /// Takes an ARP reply or neighbour advertisement received on the underlay. Returns true
    /// when it answered an address in the cache (the frame is consumed); false for every other
    /// frame, which goes on to the rest of the switch. Answers for addresses the cache does
    /// not hold are not learned (no one can fill the cache by sending replies), and permanent
    /// entries never change.
    pub fn handle_frame(&mut self, frame: &[u8], now: Instant) -> bool {
        let local = self.config.local_ip;
        let (ip, mac) = match local {
            IpAddr::V4(local) => match parse_arp_reply(frame) {
                Some(reply) if reply.target_ip == local => {
                    (IpAddr::V4(reply.sender_ip), reply.sender_mac)
                }
                _ => return false,
            },
            IpAddr::V6(local) => match parse_neighbor_advertisement(frame) {
                Some(na) if na.dst_ip == local || na.dst_ip.is_multicast() => {
                    (IpAddr::V6(na.target_ip), na.target_mac)
                }
                _ => return false,
            },
        };
        let Some(entry) = self.entries.get_mut(&ip) else {
            return false;
        };
        if entry.state != EntryState::Permanent {
            entry.mac = Some(mac);
            entry.state = EntryState::Reachable {
                until: now + self.config.reachable_time,
            };
            self.counters.answers += 1;
        }
        true
    }

    /// Every cached address with its MAC (if known) and state, in address order: for `show`.
    pub fn entries(
        &self,
    ) -> impl Iterator<Item = (IpAddr, Option<EthernetAddress>, EntryState)> + '_ {
        self.entries
            .iter()
            .map(|(&ip, entry)| (ip, entry.mac, entry.state))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::switch::neighbor::{
        parse_arp_request, parse_neighbor_solicitation, write_arp_reply,
        write_neighbor_advertisement,
    };
    use core::net::{Ipv4Addr, Ipv6Addr};

    const LOCAL_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
    const PEER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 2]);
    const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0xfe]);
    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    const FAR: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 7, 9));
    const GATEWAY: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 254));

    fn t(secs: u64) -> Instant {
        Instant::from_secs(secs)
    }

    fn v4() -> Resolver {
        let mut config = ResolverConfig::new(LOCAL_MAC, LOCAL, 24);
        config.gateway = Some(GATEWAY);
        Resolver::new(config).unwrap()
    }

    /// Answers a probe as the owner of `mac` would.
    fn answer(probe: &[u8], mac: EthernetAddress) -> std::vec::Vec<u8> {
        let mut out = std::vec![0u8; 128];
        let len = if let Some(request) = parse_arp_request(probe) {
            write_arp_reply(&request, mac, &mut out).unwrap()
        } else {
            let ns = parse_neighbor_solicitation(probe).unwrap();
            write_neighbor_advertisement(&ns, mac, false, &mut out).unwrap()
        };
        out.truncate(len);
        out
    }

    #[test]
    fn config_errors_name_the_field() {
        let mut config = ResolverConfig::new(LOCAL_MAC, LOCAL, 33);
        assert_eq!(
            Resolver::new(config).unwrap_err(),
            ResolverConfigError::PrefixLen(33)
        );
        config.prefix_len = 24;
        config.gateway = Some(FAR);
        let error = Resolver::new(config).unwrap_err();
        assert_eq!(error, ResolverConfigError::GatewayNotOnLink(FAR));
        assert_eq!(
            std::format!("{error}"),
            "underlay gateway 198.19.7.9 is not on the local VTEP's subnet"
        );
        config.gateway = Some(IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert!(matches!(
            Resolver::new(config),
            Err(ResolverConfigError::GatewayNotOnLink(_))
        ));
        config.gateway = None;
        config.max_probes = 0;
        assert_eq!(
            Resolver::new(config).unwrap_err(),
            ResolverConfigError::Zero("max_probes")
        );
        let multicast = ResolverConfig::new(LOCAL_MAC, IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)), 4);
        assert!(matches!(
            Resolver::new(multicast),
            Err(ResolverConfigError::LocalIp(_))
        ));
        let bad_mac = ResolverConfig::new(EthernetAddress::BROADCAST, LOCAL, 24);
        assert!(matches!(
            Resolver::new(bad_mac),
            Err(ResolverConfigError::LocalMac(_))
        ));
    }

    #[test]
    fn next_hop_is_the_vtep_on_link_and_the_gateway_beyond() {
        let resolver = v4();
        assert_eq!(resolver.next_hop(PEER), Some(PEER));
        assert_eq!(resolver.next_hop(FAR), Some(GATEWAY));
        assert_eq!(resolver.next_hop(IpAddr::V6(Ipv6Addr::LOCALHOST)), None);
        let mut no_gateway = *resolver.config();
        no_gateway.gateway = None;
        assert_eq!(Resolver::new(no_gateway).unwrap().next_hop(FAR), Some(FAR));
    }

    #[test]
    fn probe_answer_use_refresh() {
        let mut r = v4();
        let mut out = [0u8; PROBE_MAX_LEN];
        assert_eq!(r.poll_at(), None);
        assert_eq!(r.resolve(PEER, t(0)), Resolution::Pending);
        assert_eq!(r.poll_at(), Some(t(0)));
        let len = r.poll(t(0), &mut out).unwrap();
        assert_eq!(r.poll(t(0), &mut out), None, "one probe per retry interval");
        let request = parse_arp_request(&out[..len]).unwrap();
        assert_eq!(
            (
                request.sender_mac,
                IpAddr::V4(request.sender_ip),
                IpAddr::V4(request.target_ip)
            ),
            (LOCAL_MAC, LOCAL, PEER)
        );
        assert!(r.handle_frame(&answer(&out[..len], PEER_MAC), t(0)));
        assert_eq!(r.resolve(PEER, t(1)), Resolution::Resolved(PEER_MAC));
        assert_eq!(r.poll_at(), None);

        // After reachable_time the MAC stays in use while it is probed again.
        assert_eq!(r.resolve(PEER, t(31)), Resolution::Resolved(PEER_MAC));
        assert!(r.poll(t(31), &mut out).is_some());
        assert!(r.handle_frame(&answer(&out[..ARP_REQUEST_LEN], PEER_MAC), t(31)));
        assert_eq!(
            r.entries().collect::<std::vec::Vec<_>>(),
            [(PEER, Some(PEER_MAC), EntryState::Reachable { until: t(61) })]
        );
        assert_eq!(
            r.counters(),
            ResolverCounters {
                probes_sent: 2,
                answers: 2,
                failures: 0,
                refused_full: 0
            }
        );
    }

    #[test]
    fn unanswered_probes_fail_and_hold() {
        let mut r = v4();
        let mut out = [0u8; PROBE_MAX_LEN];
        assert_eq!(r.resolve(FAR, t(0)), Resolution::Pending);
        // Three probes, a second apart, all for the gateway.
        for second in 0..3 {
            assert_eq!(r.poll(t(second), &mut out), Some(ARP_REQUEST_LEN));
            let request = parse_arp_request(&out[..ARP_REQUEST_LEN]).unwrap();
            assert_eq!(IpAddr::V4(request.target_ip), GATEWAY);
            assert_eq!(r.poll(t(second), &mut out), None);
        }
        assert_eq!(r.resolve(FAR, t(3)), Resolution::Pending);
        assert_eq!(
            r.poll(t(3), &mut out),
            None,
            "failed, not probed a fourth time"
        );
        assert_eq!(r.resolve(FAR, t(4)), Resolution::Failed);
        assert_eq!(r.resolve(FAR, t(12)), Resolution::Failed, "held 10 s");
        assert_eq!(r.poll_at(), None);
        assert_eq!(r.resolve(FAR, t(13)), Resolution::Pending, "probed again");
        assert!(r.poll(t(13), &mut out).is_some());
        assert_eq!(r.counters().failures, 1);
        assert_eq!(r.counters().probes_sent, 4);
    }

    #[test]
    fn refresh_that_goes_unanswered_fails_the_entry() {
        let mut r = v4();
        let mut out = [0u8; PROBE_MAX_LEN];
        r.resolve(PEER, t(0));
        let len = r.poll(t(0), &mut out).unwrap();
        r.handle_frame(&answer(&out[..len], PEER_MAC), t(0));
        assert_eq!(r.resolve(PEER, t(30)), Resolution::Resolved(PEER_MAC));
        for second in 30..33 {
            assert!(r.poll(t(second), &mut out).is_some());
        }
        assert_eq!(r.resolve(PEER, t(32)), Resolution::Resolved(PEER_MAC));
        assert_eq!(r.poll(t(33), &mut out), None);
        assert_eq!(r.resolve(PEER, t(33)), Resolution::Failed);
    }

    #[test]
    fn supplied_entries_are_never_probed_or_changed() {
        let mut r = v4();
        let mut out = [0u8; PROBE_MAX_LEN];
        r.supply(PEER, PEER_MAC);
        assert_eq!(
            r.resolve(PEER, t(1_000_000)),
            Resolution::Resolved(PEER_MAC)
        );
        assert_eq!(r.poll(t(1_000_000), &mut out), None);
        // An answer for it is consumed but does not change it.
        let mut reply = [0u8; 64];
        let request = crate::switch::neighbor::ArpRequest {
            sender_mac: LOCAL_MAC,
            sender_ip: Ipv4Addr::new(198, 18, 0, 1),
            target_ip: Ipv4Addr::new(198, 18, 0, 2),
        };
        let len = write_arp_reply(&request, GATEWAY_MAC, &mut reply).unwrap();
        assert!(r.handle_frame(&reply[..len], t(0)));
        assert_eq!(r.resolve(PEER, t(0)), Resolution::Resolved(PEER_MAC));
        assert!(r.remove(PEER));
        assert_eq!(r.resolve(PEER, t(0)), Resolution::Pending);
    }

    #[test]
    fn unsolicited_answers_and_other_frames_are_not_learned() {
        let mut r = v4();
        let request = crate::switch::neighbor::ArpRequest {
            sender_mac: LOCAL_MAC,
            sender_ip: Ipv4Addr::new(198, 18, 0, 1),
            target_ip: Ipv4Addr::new(198, 18, 0, 77),
        };
        let mut reply = [0u8; 64];
        let len = write_arp_reply(&request, PEER_MAC, &mut reply).unwrap();
        assert!(!r.handle_frame(&reply[..len], t(0)), "not asked for");
        assert_eq!(r.entries().count(), 0);
        assert!(!r.handle_frame(&[0u8; 60], t(0)));
        assert!(!r.handle_frame(&[], t(0)));
    }

    #[test]
    fn capacity_bounds_the_cache() {
        let mut config = ResolverConfig::new(LOCAL_MAC, LOCAL, 16);
        config.capacity = 2;
        let mut r = Resolver::new(config).unwrap();
        for host in 2..4 {
            let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, host));
            assert_eq!(r.resolve(ip, t(0)), Resolution::Pending);
        }
        assert_eq!(r.resolve(FAR, t(0)), Resolution::Failed);
        assert_eq!(r.counters().refused_full, 1);
        assert_eq!(r.entries().count(), 2);
    }

    #[test]
    fn ipv6_underlay_uses_neighbor_discovery() {
        let local = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let peer = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
        let mut r = Resolver::new(ResolverConfig::new(LOCAL_MAC, local, 64)).unwrap();
        let mut out = [0u8; PROBE_MAX_LEN];
        assert_eq!(r.resolve(peer, t(0)), Resolution::Pending);
        assert_eq!(r.resolve(PEER, t(0)), Resolution::Failed, "other family");
        let len = r.poll(t(0), &mut out).unwrap();
        assert_eq!(len, NEIGHBOR_SOLICITATION_LEN);
        let ns = parse_neighbor_solicitation(&out[..len]).unwrap();
        assert_eq!(
            (IpAddr::V6(ns.sender_ip), IpAddr::V6(ns.target_ip)),
            (local, peer)
        );
        assert!(r.handle_frame(&answer(&out[..len], PEER_MAC), t(0)));
        assert_eq!(r.resolve(peer, t(0)), Resolution::Resolved(PEER_MAC));
    }
}
