//! The vswitch configuration file (TOML): parsing, checking, and its translation into the
//! core's [`SwitchConfig`]. Every error names the key at fault (`port[1].vni`, ...).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;
use switchyard::fdb::{Destination, FdbConfig};
use switchyard::lb::{
    Affinity, Backend, BackendState, Protocol, ServiceConfig, ServiceKey, TableSize,
};
use switchyard::switch::{
    LbSettings, Neighbor, NextHop, PortConfig, PortSecurity, ServiceSettings, StaticEntry,
    SwitchConfig, UnderlayConfig, VniSettings,
};
use switchyard::time::Duration;
use switchyard::tunnel::{DecapConfig, DfPolicy, EncapConfig, PortRange, TosPolicy, TtlPolicy};
use switchyard::wire::EthernetAddress;
use switchyard::{PortId, Vni};

/// The file as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub switch: SwitchSection,
    pub underlay: UnderlaySection,
    #[serde(default)]
    pub vni: Vec<VniSection>,
    #[serde(default)]
    pub port: Vec<PortSection>,
    #[serde(default)]
    pub fdb: Vec<FdbSection>,
    #[serde(default)]
    pub neighbor: Vec<NeighborSection>,
    #[serde(default)]
    pub service: Vec<ServiceSection>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SwitchSection {
    #[serde(default = "one")]
    pub workers: usize,
    pub control_socket: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    /// Forwarding-table capacity (entries).
    #[serde(default = "default_fdb_capacity")]
    pub fdb_capacity: u32,
}

impl Default for SwitchSection {
    fn default() -> Self {
        SwitchSection {
            workers: 1,
            control_socket: None,
            metrics_listen: None,
            fdb_capacity: default_fdb_capacity(),
        }
    }
}

fn one() -> usize {
    1
}

fn default_fdb_capacity() -> u32 {
    65536
}

/// `ttl = 64` or `ttl = "inherit"`; the same for `tos`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum NumberOrInherit {
    Number(u8),
    Word(Inherit),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Inherit {
    Inherit,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Df {
    #[default]
    Set,
    Unset,
    Inherit,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    #[default]
    AfPacket,
    IoUring,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UnderlaySection {
    pub interface: String,
    pub local_ip: IpAddr,
    /// The underlay interface's MAC; read from the interface when absent.
    pub local_mac: Option<String>,
    #[serde(default = "vxlan_port")]
    pub udp_port: u16,
    #[serde(default)]
    pub backend: BackendKind,
    /// The MTU of the underlay; the interface's when absent.
    pub mtu: Option<u16>,
    #[serde(default = "rfc7348_range")]
    pub source_port_range: [u16; 2],
    pub ttl: Option<NumberOrInherit>,
    pub tos: Option<NumberOrInherit>,
    #[serde(default)]
    pub df: Df,
    #[serde(default)]
    pub udp_checksum: bool,
    #[serde(default)]
    pub zero_checksum_ipv6: bool,
    /// The underlay subnet's prefix length (next hops within it are resolved directly);
    /// the interface's when absent.
    pub prefix_len: Option<u8>,
    /// The router towards VTEPs outside the subnet.
    pub gateway: Option<IpAddr>,
    /// UDP GSO on transmit: consecutive same-size datagrams to one VTEP (a TCP super-frame's
    /// segments, a stream of equal frames) in one send, with UDP checksums also over IPv4
    /// (UDP GSO needs them). io-uring also receives with UDP GRO (33 MiB of 64 KiB buffers).
    /// Default on.
    pub udp_offloads: Option<bool>,
}

fn vxlan_port() -> u16 {
    4789
}

fn rfc7348_range() -> [u16; 2] {
    [49152, 65535]
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VniSection {
    pub id: u32,
    #[serde(default = "yes")]
    pub learning: bool,
    #[serde(default = "linux_ageing")]
    pub ageing_secs: u64,
    #[serde(default)]
    pub arp_suppression: bool,
    #[serde(default)]
    pub carry_inner_vlan: bool,
    #[serde(default)]
    pub flood: Vec<IpAddr>,
}

fn yes() -> bool {
    true
}

fn linux_ageing() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortSection {
    pub name: String,
    pub interface: String,
    pub vni: u32,
    #[serde(default)]
    pub allowed_macs: Vec<String>,
    #[serde(default)]
    pub allowed_ips: Vec<IpAddr>,
    pub capture: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FdbSection {
    pub vni: u32,
    pub mac: String,
    pub remote: Option<IpAddr>,
    pub port: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NeighborSection {
    pub vni: u32,
    pub ip: IpAddr,
    pub mac: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    pub name: String,
    /// The VNI the VIP lives in; may be left out when there is only one VNI.
    pub vni: Option<u32>,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: ProtocolName,
    #[serde(default)]
    pub affinity_secs: u64,
    pub maglev_table_size: Option<u32>,
    #[serde(default)]
    pub backends: Vec<BackendSection>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolName {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    pub addr: SocketAddr,
    #[serde(default = "one_u32")]
    pub weight: u32,
    #[serde(default)]
    pub state: StateName,
}

fn one_u32() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    #[default]
    Active,
    Draining,
    Down,
}

/// A configuration error: the key at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn error(key: impl Into<String>, problem: impl fmt::Display) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.to_string(),
    }
}

/// What the host tells about its interfaces: MAC, MTU and the underlay's prefix length.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    pub underlay_mac: Option<EthernetAddress>,
    pub underlay_mtu: Option<u16>,
    pub underlay_prefix_len: Option<u8>,
}

/// A checked configuration: the core's, and what only the program uses.
#[derive(Debug, Clone)]
pub struct Config {
    pub switch: SwitchConfig,
    /// Port name -> (id, interface, capture file).
    pub ports: Vec<PortBinding>,
}

/// A port of the file, with the number the switch knows it by.
#[derive(Debug, Clone, PartialEq)]
pub struct PortBinding {
    pub id: PortId,
    pub name: String,
    pub interface: String,
    pub capture: Option<PathBuf>,
}

/// Port numbers by port name, stable across reloads: a port keeps its number while its name
/// stays in the file (forwarding entries learned on it stay right), a new name gets a number
/// never used before.
#[derive(Debug, Clone, Default)]
pub struct PortIds {
    ids: BTreeMap<String, u32>,
    next: u32,
}

impl PortIds {
    fn id_for(&mut self, name: &str) -> PortId {
        if let Some(&id) = self.ids.get(name) {
            return PortId(id);
        }
        self.next += 1;
        self.ids.insert(name.to_owned(), self.next);
        PortId(self.next)
    }
}

/// Parses TOML text; syntax and type errors come with serde's line and column.
pub fn parse(text: &str) -> Result<File, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let key = e
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}")
            })
            .unwrap_or_else(|| "file".to_owned());
        error(key, e.message())
    })
}

/// `02:00:00:00:00:01` (or with `-`).
pub fn parse_mac(text: &str) -> Option<EthernetAddress> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(EthernetAddress(mac))
}

fn vni(id: u32, key: &str) -> Result<Vni, ConfigError> {
    Vni::new(id).map_err(|_| error(key, format!("{id} is not a 24-bit VNI")))
}

impl File {
    /// The core's configuration for this file, with what the host told about the underlay
    /// interface; every problem names its key. The core's own validation runs last, and its
    /// errors are mapped back to keys where they name an item.
    pub fn to_config(&self, host: &HostFacts, ids: &mut PortIds) -> Result<Config, ConfigError> {
        let u = &self.underlay;
        let local_mac = match &u.local_mac {
            Some(text) => parse_mac(text)
                .ok_or_else(|| error("underlay.local_mac", format!("{text:?} is not a MAC")))?,
            None => host.underlay_mac.ok_or_else(|| {
                error(
                    "underlay.local_mac",
                    format!(
                        "not given, and interface {:?} has no MAC to read",
                        u.interface
                    ),
                )
            })?,
        };
        let prefix_len = u
            .prefix_len
            .or(host.underlay_prefix_len)
            .unwrap_or(if u.local_ip.is_ipv4() { 24 } else { 64 });
        let [first, last] = u.source_port_range;
        let source_ports =
            PortRange::new(first, last).map_err(|e| error("underlay.source_port_range", e))?;
        let policy = |value: Option<NumberOrInherit>, key: &str, default: u8| {
            match value {
                None => Ok(Some(default)),
                Some(NumberOrInherit::Number(n)) => Ok(Some(n)),
                Some(NumberOrInherit::Word(Inherit::Inherit)) => Ok::<_, ConfigError>(None),
            }
            .map_err(|e: ConfigError| error(key, e))
        };
        let ttl = match policy(u.ttl, "underlay.ttl", 64)? {
            Some(0) => return Err(error("underlay.ttl", "0 would be dropped by the first hop")),
            Some(n) => TtlPolicy::Fixed(n),
            None => TtlPolicy::Inherit,
        };
        let tos = match policy(u.tos, "underlay.tos", 0)? {
            Some(n) => TosPolicy::Fixed(n),
            None => TosPolicy::Inherit,
        };
        let mtu = u.mtu.or(host.underlay_mtu).unwrap_or(1500);
        let encap = EncapConfig {
            udp_port: u.udp_port,
            source_ports,
            udp_checksum_ipv4: u.udp_checksum,
            zero_checksum_ipv6: u.zero_checksum_ipv6,
            df: match u.df {
                Df::Set => DfPolicy::Set,
                Df::Unset => DfPolicy::Unset,
                Df::Inherit => DfPolicy::Inherit,
            },
            ttl,
            tos,
            mtu,
            ..EncapConfig::default()
        };
        let decap = DecapConfig {
            udp_port: u.udp_port,
            reject_zero_checksum_ipv6: !u.zero_checksum_ipv6,
            ..DecapConfig::default()
        };

        let mut vnis = Vec::new();
        for (i, v) in self.vni.iter().enumerate() {
            let id = vni(v.id, &format!("vni[{i}].id"))?;
            let mut settings = VniSettings::new(id, v.flood.clone());
            settings.learning = v.learning;
            settings.ageing = Duration::from_secs(v.ageing_secs);
            settings.suppress_arp_nd = v.arp_suppression;
            settings.carry_inner_vlan = v.carry_inner_vlan;
            vnis.push(settings);
        }

        let mut ports = Vec::new();
        let mut by_name: BTreeMap<&str, PortId> = BTreeMap::new();
        let mut port_configs = Vec::new();
        for (i, p) in self.port.iter().enumerate() {
            let id = ids.id_for(&p.name);
            if by_name.insert(p.name.as_str(), id).is_some() {
                return Err(error(
                    format!("port[{i}].name"),
                    format!("{:?} is used twice", p.name),
                ));
            }
            if p.interface == u.interface {
                return Err(error(
                    format!("port[{i}].interface"),
                    "is the underlay interface",
                ));
            }
            let mut config = PortConfig::access(id, vni(p.vni, &format!("port[{i}].vni"))?);
            if !p.allowed_macs.is_empty() || !p.allowed_ips.is_empty() {
                let macs = p
                    .allowed_macs
                    .iter()
                    .map(|m| {
                        parse_mac(m).ok_or_else(|| {
                            error(
                                format!("port[{i}].allowed_macs"),
                                format!("{m:?} is not a MAC"),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
                config.security = Some(PortSecurity {
                    macs,
                    ips: p.allowed_ips.clone(),
                });
            }
            port_configs.push(config);
            ports.push(PortBinding {
                id,
                name: p.name.clone(),
                interface: p.interface.clone(),
                capture: p.capture.clone(),
            });
        }

        let mut static_entries = Vec::new();
        for (i, f) in self.fdb.iter().enumerate() {
            let key = |k: &str| format!("fdb[{i}].{k}");
            let mac = parse_mac(&f.mac)
                .ok_or_else(|| error(key("mac"), format!("{:?} is not a MAC", f.mac)))?;
            let destination = match (&f.remote, &f.port) {
                (Some(ip), None) => Destination::Vtep(*ip),
                (None, Some(name)) => Destination::Port(
                    *by_name
                        .get(name.as_str())
                        .ok_or_else(|| error(key("port"), format!("no port is named {name:?}")))?,
                ),
                _ => return Err(error(key("remote"), "give exactly one of remote and port")),
            };
            static_entries.push(StaticEntry {
                vni: vni(f.vni, &key("vni"))?,
                mac,
                destination,
            });
        }

        let mut neighbors = Vec::new();
        for (i, n) in self.neighbor.iter().enumerate() {
            let mac = parse_mac(&n.mac).ok_or_else(|| {
                error(
                    format!("neighbor[{i}].mac"),
                    format!("{:?} is not a MAC", n.mac),
                )
            })?;
            neighbors.push(Neighbor {
                vni: vni(n.vni, &format!("neighbor[{i}].vni"))?,
                ip: n.ip,
                mac,
            });
        }

        let mut services = Vec::new();
        for (i, s) in self.service.iter().enumerate() {
            let key = |k: &str| format!("service[{i}].{k}");
            let vni_id = match (s.vni, self.vni.as_slice()) {
                (Some(id), _) => id,
                (None, [only]) => only.id,
                (None, _) => {
                    return Err(error(
                        key("vni"),
                        "required when more than one VNI is configured",
                    ))
                }
            };
            let table_size = match s.maglev_table_size {
                Some(m) => TableSize::new(m).map_err(|e| error(key("maglev_table_size"), e))?,
                None => TableSize::DEFAULT,
            };
            let backends = s
                .backends
                .iter()
                .map(|b| {
                    Backend::new(b.addr)
                        .with_weight(b.weight)
                        .with_state(match b.state {
                            StateName::Active => BackendState::Active,
                            StateName::Draining => BackendState::Draining,
                            StateName::Down => BackendState::Down,
                        })
                })
                .collect();
            services.push(ServiceSettings {
                vni: vni(vni_id, &key("vni"))?,
                key: ServiceKey::new(
                    SocketAddr::new(s.vip, s.port),
                    match s.protocol {
                        ProtocolName::Tcp => Protocol::Tcp,
                        ProtocolName::Udp => Protocol::Udp,
                    },
                ),
                service: ServiceConfig {
                    table_size,
                    affinity: if s.affinity_secs == 0 {
                        Affinity::None
                    } else {
                        Affinity::ClientIp {
                            timeout: Duration::from_secs(s.affinity_secs),
                        }
                    },
                    ..ServiceConfig::new(backends)
                },
            });
        }

        if self.switch.workers == 0 {
            return Err(error("switch.workers", "at least 1"));
        }
        let switch = SwitchConfig {
            underlay: UnderlayConfig {
                local_ip: u.local_ip,
                local_mac,
                next_hop: match u.backend {
                    // AF_PACKET owns the underlay's link layer: the switch resolves next hops.
                    BackendKind::AfPacket => NextHop::Resolve {
                        prefix_len,
                        gateway: u.gateway,
                        supplied: Vec::new(),
                    },
                    // A UDP socket: the kernel routes and resolves; the MAC is not used.
                    BackendKind::IoUring => NextHop::Static {
                        default: local_mac,
                        per_vtep: Vec::new(),
                    },
                },
                encap,
                decap,
            },
            ports: port_configs,
            vnis,
            static_entries,
            neighbors,
            fdb: FdbConfig {
                capacity: self.switch.fdb_capacity,
                max_entries_per_vni: self.switch.fdb_capacity,
                ..FdbConfig::default()
            },
            services,
            lb: LbSettings {
                max_workers: self.switch.workers.max(1),
                ..LbSettings::default()
            },
        };
        switch.validate().map_err(|e| self.core_error(&e))?;
        Ok(Config { switch, ports })
    }

    /// The core's validation error, with the file's key for the item it names.
    fn core_error(&self, e: &switchyard::switch::ConfigError) -> ConfigError {
        use switchyard::switch::ConfigError as E;
        let vni_key = |vni: Vni| {
            self.vni
                .iter()
                .position(|v| v.id == vni.get())
                .map_or_else(|| "vni".to_owned(), |i| format!("vni[{i}]"))
        };
        let key = match e {
            E::DuplicatePort(_) => "port".to_owned(),
            E::PortVniUnknown { vni, .. } => self
                .port
                .iter()
                .position(|p| p.vni == vni.get())
                .map_or_else(|| "port".to_owned(), |i| format!("port[{i}].vni")),
            E::DuplicateVni(vni) => vni_key(*vni),
            E::RemoteVtep { vni, .. } => format!("{}.flood", vni_key(*vni)),
            E::StaticEntry { vni, mac } => self
                .fdb
                .iter()
                .position(|f| f.vni == vni.get() && parse_mac(&f.mac) == Some(*mac))
                .map_or_else(|| "fdb".to_owned(), |i| format!("fdb[{i}]")),
            E::Neighbor { vni, ip } => self
                .neighbor
                .iter()
                .position(|n| n.vni == vni.get() && n.ip == *ip)
                .map_or_else(|| "neighbor".to_owned(), |i| format!("neighbor[{i}]")),
            E::LocalVtep => "underlay.local_ip".to_owned(),
            E::NextHop(_) => "underlay.gateway".to_owned(),
            E::Encap(_) | E::Decap(_) => "underlay".to_owned(),
            E::Service { key, .. } | E::DuplicateService { key, .. } => self
                .service
                .iter()
                .position(|s| s.vip == key.vip && s.port == key.port)
                .map_or_else(|| "service".to_owned(), |i| format!("service[{i}]")),
            E::VirtualMac => "switch".to_owned(),
            _ => "file".to_owned(),
        };
        error(key, e)
    }
}
