//! The switch's configuration: ports, underlay, VNIs, static entries and neighbours, validated
//! as a whole before anything runs, with errors that name the offending item.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;

use crate::fdb::{Destination, FdbConfig, FdbError};
use crate::lb::{self, ConnTrackConfig, LoadBalancer, ServiceConfig, ServiceKey};
use crate::time::Duration;
use crate::tunnel::{self, DecapConfig, EncapConfig};
use crate::wire::EthernetAddress;
use crate::{PortId, Vni};

/// Everything a switch needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct SwitchConfig {
    /// The underlay: local VTEP, encapsulation and decapsulation options.
    pub underlay: UnderlayConfig,
    /// The access and trunk ports.
    pub ports: Vec<PortConfig>,
    /// The VNIs. A port may only name a VNI listed here.
    pub vnis: Vec<VniSettings>,
    /// Forwarding entries that never move and never age.
    pub static_entries: Vec<StaticEntry>,
    /// IP -> MAC bindings per VNI, answered for when the VNI suppresses ARP/ND.
    pub neighbors: Vec<Neighbor>,
    /// The forwarding table's size bounds.
    pub fdb: FdbConfig,
    /// Services (VIP, port, protocol) and their backends, load-balanced by the switch.
    pub services: Vec<ServiceSettings>,
    /// The load balancer's settings.
    pub lb: LbSettings,
}

/// A service the switch load-balances, in one VNI.
///
/// Frames in `vni` towards the VIP and port are translated (DNAT) to a backend chosen by
/// Maglev and sent to that backend's MAC, which the VNI's neighbour table must hold (a
/// [`Neighbor`] for every backend address). The replies are translated back where the
/// forward direction was, before they reach the client. The switch answers ARP requests and
/// neighbour solicitations for the VIP in `vni` with [`LbSettings::virtual_mac`], whether or
/// not the VNI suppresses ARP/ND.
///
/// Each VNI has its own load balancer (services, connection tracking): VNIs are tenants, and
/// the same VIP may be a different service in another VNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    /// The VNI the VIP is reachable in.
    pub vni: Vni,
    /// The VIP, port and protocol.
    pub key: ServiceKey,
    /// The backends, table size and session affinity.
    pub service: ServiceConfig,
}

/// The load balancer's settings, fixed when the switch is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbSettings {
    /// The MAC the switch answers ARP/ND for VIPs with, and the source MAC of translated
    /// replies. The same on every node (an anycast gateway MAC): clients may move.
    pub virtual_mac: EthernetAddress,
    /// Connection tracking of each worker.
    pub conntrack: ConnTrackConfig,
    /// The most workers at a time that translate (each holds a slot to receive new service
    /// tables); a worker beyond it drops frames in VNIs with services
    /// ([`DropReason::LbNoWorkerSlot`](crate::DropReason::LbNoWorkerSlot)).
    pub max_workers: usize,
}

impl LbSettings {
    /// The default virtual MAC: locally administered, unicast.
    pub const DEFAULT_VIRTUAL_MAC: EthernetAddress =
        EthernetAddress([0x02, 0x73, 0x79, 0x00, 0x00, 0x01]);
}

impl Default for LbSettings {
    fn default() -> Self {
        LbSettings {
            virtual_mac: Self::DEFAULT_VIRTUAL_MAC,
            conntrack: ConnTrackConfig::default(),
            max_workers: 64,
        }
    }
}

/// The underlay side of the switch.
#[derive(Debug, Clone, PartialEq)]
pub struct UnderlayConfig {
    /// The local VTEP address: the outer source address of every encapsulated frame.
    pub local_ip: IpAddr,
    /// The underlay interface's MAC: the outer source MAC.
    pub local_mac: EthernetAddress,
    /// How the outer destination MAC of each remote VTEP is found.
    pub next_hop: NextHop,
    /// Encapsulation options (UDP port, source ports, checksums, DF/TTL/TOS, MTU). Its
    /// `carry_inner_vlan` is ignored: that is per VNI ([`VniSettings::carry_inner_vlan`]).
    pub encap: EncapConfig,
    /// Decapsulation options. Its `carry_inner_vlan` is ignored, as above.
    pub decap: DecapConfig,
}

/// How the switch finds the MAC that an encapsulated frame goes to on the underlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    /// Fixed MACs: `default` for every VTEP (a gateway, or the one peer of a point-to-point
    /// underlay), except those listed in `per_vtep`. For backends whose kernel routes the
    /// outer packet (a UDP socket) the MAC is not used at all.
    Static {
        /// The MAC for VTEPs not listed.
        default: EthernetAddress,
        /// MACs of particular VTEPs.
        per_vtep: Vec<(IpAddr, EthernetAddress)>,
    },
    /// Resolved by the switch with ARP (IPv4) or neighbour discovery (IPv6), for backends that
    /// own the underlay's link layer (AF_PACKET): VTEPs within `prefix_len` bits of the local
    /// address directly, the others through `gateway` ([`super::resolver`]).
    Resolve {
        /// The underlay subnet's prefix length.
        prefix_len: u8,
        /// The router towards VTEPs outside the subnet.
        gateway: Option<IpAddr>,
        /// MACs the host already knows (from its own neighbour table): never probed.
        supplied: Vec<(IpAddr, EthernetAddress)>,
    },
}

/// A local port of the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// The port's number, as the backend knows it.
    pub id: PortId,
    /// Access (one VNI, untagged) or trunk (VLAN tags mapped to VNIs).
    pub mode: PortMode,
    /// Which source addresses the port may use; `None` lets everything through.
    pub security: Option<PortSecurity>,
}

impl PortConfig {
    /// An access port in `vni`, without port security.
    pub fn access(id: PortId, vni: Vni) -> PortConfig {
        PortConfig {
            id,
            mode: PortMode::Access(vni),
            security: None,
        }
    }

    /// A trunk port with the VLAN -> VNI map `vlans`, without port security.
    pub fn trunk(id: PortId, vlans: Vec<(u16, Vni)>) -> PortConfig {
        PortConfig {
            id,
            mode: PortMode::Trunk(vlans),
            security: None,
        }
    }
}

/// Port security: the source addresses a port's host may use (what OpenStack's and
/// Kubernetes CNIs' anti-spoofing rules enforce). A frame with another source is dropped and
/// counted ([`DropReason::SpoofedSourceMac`], [`DropReason::SpoofedSourceIp`]).
///
/// Always allowed, whatever `ips` says: the unspecified source of DHCP discovery, ARP probes
/// (RFC 5227) and IPv6 duplicate address detection, and IPv6 link-local sources (fe80::/10),
/// which a host derives by itself before anything is configured.
///
/// [`DropReason::SpoofedSourceMac`]: crate::DropReason::SpoofedSourceMac
/// [`DropReason::SpoofedSourceIp`]: crate::DropReason::SpoofedSourceIp
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSecurity {
    /// Source MACs allowed; empty allows any.
    pub macs: Vec<EthernetAddress>,
    /// Source IP addresses allowed (in IPv4, ARP and IPv6 headers); empty allows any.
    pub ips: Vec<IpAddr>,
}

/// How a port's frames map to VNIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMode {
    /// Untagged frames, all in this VNI.
    Access(Vni),
    /// 802.1Q-tagged frames, the tag's VLAN ID mapped to a VNI; untagged frames are dropped.
    Trunk(Vec<(u16, Vni)>),
}

/// One VNI's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VniSettings {
    /// The VNI.
    pub vni: Vni,
    /// Remote VTEPs that get a copy of broadcast, unknown unicast and multicast (head-end
    /// replication, RFC 8365). Local ports in the VNI are added to the flood list
    /// automatically.
    pub remote_vteps: Vec<IpAddr>,
    /// Whether source MACs are learned.
    pub learning: bool,
    /// How long a learned entry lives after its MAC last sent.
    pub ageing: Duration,
    /// Whether ARP requests and neighbour solicitations for known neighbours are answered by
    /// the switch instead of flooded.
    pub suppress_arp_nd: bool,
    /// Whether inner 802.1Q tags are carried through the tunnel (RFC 7348 section 6.1):
    /// otherwise tagged inner frames are dropped on decapsulation and refused on
    /// encapsulation.
    pub carry_inner_vlan: bool,
}

impl VniSettings {
    /// A VNI with learning on, Linux's 300 s ageing, suppression off, no tags carried, and
    /// the given remote VTEPs.
    pub fn new(vni: Vni, remote_vteps: Vec<IpAddr>) -> VniSettings {
        VniSettings {
            vni,
            remote_vteps,
            learning: true,
            ageing: Duration::from_secs(300),
            suppress_arp_nd: false,
            carry_inner_vlan: false,
        }
    }
}

/// A static forwarding entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticEntry {
    /// The VNI.
    pub vni: Vni,
    /// The MAC.
    pub mac: EthernetAddress,
    /// A local port in that VNI, or a remote VTEP.
    pub destination: Destination,
}

/// An IP -> MAC binding in a VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    /// The VNI.
    pub vni: Vni,
    /// The address.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: EthernetAddress,
}

/// A configuration the switch refuses. Each names the item at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Two ports with the same number.
    DuplicatePort(PortId),
    /// A port names a VNI that is not configured.
    PortVniUnknown {
        /// The port.
        port: PortId,
        /// The VNI it names.
        vni: Vni,
    },
    /// A trunk maps VLAN ID 0, 4095 or above, or maps one VLAN twice.
    TrunkVlan {
        /// The port.
        port: PortId,
        /// The VLAN ID.
        vlan: u16,
    },
    /// Two VNI entries for the same VNI.
    DuplicateVni(Vni),
    /// A remote VTEP is of the other family than the local one, unspecified, multicast, or
    /// the local address itself.
    RemoteVtep {
        /// The VNI whose flood list names it.
        vni: Vni,
        /// The address.
        vtep: IpAddr,
    },
    /// A static entry names an unknown VNI, a multicast MAC, a port not in its VNI or a
    /// remote VTEP of the wrong family.
    StaticEntry {
        /// The VNI.
        vni: Vni,
        /// The MAC.
        mac: EthernetAddress,
    },
    /// A neighbour names an unknown VNI or a non-unicast MAC.
    Neighbor {
        /// The VNI.
        vni: Vni,
        /// The address.
        ip: IpAddr,
    },
    /// The local VTEP address or MAC is not a unicast address.
    LocalVtep,
    /// The next-hop resolution settings (the resolver's own error: prefix length, gateway).
    NextHop(super::resolver::ResolverConfigError),
    /// The encapsulation options (the tunnel's own error).
    Encap(tunnel::ConfigError),
    /// The decapsulation options (the tunnel's own error).
    Decap(tunnel::ConfigError),
    /// The forwarding table refused its configuration.
    Fdb(FdbError),
    /// A reconfiguration changes the forwarding table's bounds, which are fixed when the
    /// switch is made.
    FdbBoundsFixed,
    /// A service names an unknown VNI, a VIP that is also a neighbour, a backend without a
    /// neighbour entry in its VNI, or the load balancer refused it.
    Service {
        /// The service.
        key: ServiceKey,
        /// What is wrong.
        problem: ServiceProblem,
    },
    /// Two entries for the same service in one VNI.
    DuplicateService {
        /// The VNI.
        vni: Vni,
        /// The service.
        key: ServiceKey,
    },
    /// A reconfiguration changes the load balancer's settings (`lb`), which are fixed when the
    /// switch is made.
    LbSettingsFixed,
    /// The virtual MAC is not a unicast MAC.
    VirtualMac,
}

/// What is wrong with a service ([`ConfigError::Service`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceProblem {
    /// Its VNI is not configured.
    VniUnknown(Vni),
    /// Its VIP is also a neighbour entry of the VNI (a host's address).
    VipIsNeighbor,
    /// A backend has no neighbour entry in the VNI, so its MAC is unknown.
    BackendWithoutNeighbor(IpAddr),
    /// The load balancer refused the service (table size, backends).
    Lb(lb::ConfigError),
}

impl fmt::Display for ServiceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VniUnknown(vni) => write!(f, "VNI {vni} is not configured"),
            Self::VipIsNeighbor => f.write_str("the VIP is also a neighbour entry of the VNI"),
            Self::BackendWithoutNeighbor(ip) => write!(
                f,
                "backend {ip} has no neighbour entry in the VNI (its MAC is unknown)"
            ),
            Self::Lb(error) => error.fmt(f),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicatePort(port) => write!(f, "{port} is configured twice"),
            Self::PortVniUnknown { port, vni } => {
                write!(f, "{port} names VNI {vni}, which is not configured")
            }
            Self::TrunkVlan { port, vlan } => write!(
                f,
                "{port} maps VLAN {vlan}: VLAN IDs are 1..=4094, each mapped once"
            ),
            Self::DuplicateVni(vni) => write!(f, "VNI {vni} is configured twice"),
            Self::RemoteVtep { vni, vtep } => write!(
                f,
                "VNI {vni} floods to remote VTEP {vtep}: not a unicast address of the \
                 underlay's family, or the local VTEP itself"
            ),
            Self::StaticEntry { vni, mac } => write!(
                f,
                "static entry {mac} in VNI {vni}: unknown VNI, multicast MAC, port not in the \
                 VNI or VTEP of the wrong family"
            ),
            Self::Neighbor { vni, ip } => write!(
                f,
                "neighbour {ip} in VNI {vni}: unknown VNI or non-unicast MAC"
            ),
            Self::LocalVtep => f.write_str("the local VTEP address or MAC is not unicast"),
            Self::NextHop(error) => write!(f, "underlay next hop: {error}"),
            Self::Encap(error) => write!(f, "underlay encapsulation: {error}"),
            Self::Decap(error) => write!(f, "underlay decapsulation: {error}"),
            Self::Fdb(error) => write!(f, "forwarding table: {error}"),
            Self::FdbBoundsFixed => f.write_str(
                "the forwarding table's bounds (fdb) cannot change while the switch runs",
            ),
            Self::Service { key, problem } => write!(f, "service {key}: {problem}"),
            Self::DuplicateService { vni, key } => {
                write!(f, "service {key} is configured twice in VNI {vni}")
            }
            Self::LbSettingsFixed => {
                f.write_str("the load balancer's settings (lb) cannot change while the switch runs")
            }
            Self::VirtualMac => f.write_str("the virtual MAC is not a unicast MAC"),
        }
    }
}

impl core::error::Error for ConfigError {}

impl UnderlayConfig {
    /// The resolver's configuration, when next hops are resolved.
    pub(crate) fn resolver_config(&self) -> Option<super::resolver::ResolverConfig> {
        let NextHop::Resolve {
            prefix_len,
            gateway,
            ..
        } = &self.next_hop
        else {
            return None;
        };
        let mut config =
            super::resolver::ResolverConfig::new(self.local_mac, self.local_ip, *prefix_len);
        config.gateway = *gateway;
        Some(config)
    }
}

/// The underlay towards `remote`, for an encapsulation template.
pub(crate) fn underlay_towards(
    underlay: &UnderlayConfig,
    remote: IpAddr,
    next_hop_mac: EthernetAddress,
) -> tunnel::Underlay {
    let addrs = match (underlay.local_ip, remote) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => tunnel::OuterAddrs::V4 { src, dst },
        (IpAddr::V6(src), IpAddr::V6(dst)) => tunnel::OuterAddrs::V6 { src, dst },
        // Refused by validation; an invalid address makes the template refuse too.
        (IpAddr::V4(src), IpAddr::V6(_)) => tunnel::OuterAddrs::V4 {
            src,
            dst: core::net::Ipv4Addr::UNSPECIFIED,
        },
        (IpAddr::V6(src), IpAddr::V4(_)) => tunnel::OuterAddrs::V6 {
            src,
            dst: core::net::Ipv6Addr::UNSPECIFIED,
        },
    };
    tunnel::Underlay {
        local_mac: underlay.local_mac,
        next_hop_mac,
        addrs,
    }
}

fn unicast_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast()),
        IpAddr::V6(ip) => !(ip.is_unspecified() || ip.is_multicast()),
    }
}

impl SwitchConfig {
    /// Checks the configuration as a whole; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let underlay = &self.underlay;
        if !unicast_ip(underlay.local_ip) || !underlay.local_mac.is_unicast() {
            return Err(ConfigError::LocalVtep);
        }
        // The template towards ourselves checks every encapsulation option for this family.
        tunnel::EncapTemplate::new(
            &underlay.encap,
            &underlay_towards(underlay, underlay.local_ip, underlay.local_mac),
            Vni::from_u24_truncating(0),
        )
        .map_err(ConfigError::Encap)?;
        underlay.decap.validate().map_err(ConfigError::Decap)?;
        if let Some(config) = underlay.resolver_config() {
            super::resolver::Resolver::new(config).map_err(ConfigError::NextHop)?;
        }

        let mut vnis = BTreeSet::new();
        for settings in &self.vnis {
            if !vnis.insert(settings.vni) {
                return Err(ConfigError::DuplicateVni(settings.vni));
            }
            for &vtep in &settings.remote_vteps {
                if vtep.is_ipv4() != underlay.local_ip.is_ipv4()
                    || !unicast_ip(vtep)
                    || vtep == underlay.local_ip
                {
                    return Err(ConfigError::RemoteVtep {
                        vni: settings.vni,
                        vtep,
                    });
                }
            }
        }
        let mut port_vnis: BTreeMap<PortId, Vec<Vni>> = BTreeMap::new();
        for port in &self.ports {
            let members = match &port.mode {
                PortMode::Access(vni) => alloc::vec![*vni],
                PortMode::Trunk(map) => {
                    let mut vlans = BTreeSet::new();
                    for &(vlan, _) in map {
                        if vlan == 0 || vlan >= 4095 || !vlans.insert(vlan) {
                            return Err(ConfigError::TrunkVlan {
                                port: port.id,
                                vlan,
                            });
                        }
                    }
                    map.iter().map(|&(_, vni)| vni).collect()
                }
            };
            for &vni in &members {
                if !vnis.contains(&vni) {
                    return Err(ConfigError::PortVniUnknown { port: port.id, vni });
                }
            }
            if port_vnis.insert(port.id, members).is_some() {
                return Err(ConfigError::DuplicatePort(port.id));
            }
        }
        for entry in &self.static_entries {
            let ok = vnis.contains(&entry.vni)
                && entry.mac.is_unicast()
                && entry.mac.0 != [0; 6]
                && match entry.destination {
                    Destination::Port(port) => port_vnis
                        .get(&port)
                        .is_some_and(|members| members.contains(&entry.vni)),
                    Destination::Vtep(vtep) => {
                        vtep.is_ipv4() == underlay.local_ip.is_ipv4() && unicast_ip(vtep)
                    }
                };
            if !ok {
                return Err(ConfigError::StaticEntry {
                    vni: entry.vni,
                    mac: entry.mac,
                });
            }
        }
        for neighbor in &self.neighbors {
            if !vnis.contains(&neighbor.vni) || !neighbor.mac.is_unicast() {
                return Err(ConfigError::Neighbor {
                    vni: neighbor.vni,
                    ip: neighbor.ip,
                });
            }
        }
        self.validate_services(&vnis)
    }

    fn validate_services(&self, vnis: &BTreeSet<Vni>) -> Result<(), ConfigError> {
        if !self.lb.virtual_mac.is_unicast() || self.lb.virtual_mac.0 == [0; 6] {
            return Err(ConfigError::VirtualMac);
        }
        let neighbors: BTreeSet<(Vni, IpAddr)> =
            self.neighbors.iter().map(|n| (n.vni, n.ip)).collect();
        let mut keys = BTreeSet::new();
        for settings in &self.services {
            let (vni, key) = (settings.vni, settings.key);
            let refuse = |problem| Err(ConfigError::Service { key, problem });
            if !keys.insert((vni, key)) {
                return Err(ConfigError::DuplicateService { vni, key });
            }
            if !vnis.contains(&vni) {
                return refuse(ServiceProblem::VniUnknown(vni));
            }
            if neighbors.contains(&(settings.vni, key.vip)) {
                return refuse(ServiceProblem::VipIsNeighbor);
            }
            for backend in &settings.service.backends {
                let ip = backend.addr.ip();
                if !neighbors.contains(&(settings.vni, ip)) {
                    return refuse(ServiceProblem::BackendWithoutNeighbor(ip));
                }
            }
            if let Err(error) = LoadBalancer::validate(key, &settings.service) {
                return refuse(ServiceProblem::Lb(error));
            }
        }
        Ok(())
    }
}
