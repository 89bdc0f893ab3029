//! VXLAN encapsulation and decapsulation (RFC 7348), with RFC 6040 ECN propagation.
//!
//! Encapsulation is prepared once per remote VTEP as an [`EncapTemplate`]: the outer
//! Ethernet, IP, UDP and VXLAN headers with every fixed field written and their checksum
//! contributions summed. [`EncapTemplate::encap`] then copies the template into the headroom
//! in front of the inner frame, in the caller's buffer, and patches the per-packet fields
//! (lengths, source port, TTL, TOS, DF, checksums). The inner frame is never copied.
//!
//! [`decap`] validates a frame from the underlay against every receive rule (outer IP,
//! UDP port and checksum, VXLAN flags, inner VLAN policy, RFC 6040 ECN), applies the ECN
//! decapsulation table to the inner IP header in place, and returns where the inner frame
//! is. Every refusal is a [`DropReason`](crate::DropReason).
//!
//! Defaults, and where peers differ (each difference is an option here):
//!
//! | rule | default | Linux | Open vSwitch |
//! |---|---|---|---|
//! | UDP destination port | 4789 | 8472 without `dstport` | 4789 |
//! | source ports | 49152..=65535 (RFC 7348) | 32768..60999 | 32768..61000 |
//! | IPv4 UDP checksum | 0 | computed | 0 |
//! | IPv6 UDP checksum | computed | computed | computed |
//! | DF | set | unset | set |
//! | TTL | 64 | 64 | 64 |
//! | reserved bits on receipt | ignored (RFC 7348) | dropped | ignored |
//! | CE at encapsulation | copied (RFC 6040) | sent as ECT(0) | copied |

mod decap;
pub mod ecn;
mod encap;
mod icmp;
mod inner;

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

pub use decap::{decap, decap_udp_payload, Decapsulated, OuterAddrs};
pub use ecn::Ecn;
pub use encap::{EncapTemplate, IpIdent};
pub use icmp::TOO_BIG_REPLY_MAX_LEN;

use crate::wire::{vxlan, EthernetAddress};

/// Outer header bytes in front of the inner frame over an IPv4 underlay: Ethernet 14,
/// IPv4 20, UDP 8, VXLAN 8.
pub const OUTER_HEADER_LEN_IPV4: usize = 50;
/// Outer header bytes in front of the inner frame over an IPv6 underlay: Ethernet 14,
/// IPv6 40, UDP 8, VXLAN 8.
pub const OUTER_HEADER_LEN_IPV6: usize = 70;
/// What VXLAN over IPv4 takes from the underlay MTU: IPv4 20, UDP 8, VXLAN 8 and the inner
/// Ethernet header 14 (RFC 7348 section 4.3).
pub const OVERHEAD_IPV4: u16 = 50;
/// What VXLAN over IPv6 takes from the underlay MTU: IPv6 40, UDP 8, VXLAN 8 and the inner
/// Ethernet header 14.
pub const OVERHEAD_IPV6: u16 = 70;

/// An inclusive range of UDP source ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// RFC 7348 section 5's recommendation: the dynamic/private range 49152..=65535.
    pub const RFC7348: PortRange = PortRange {
        first: 49152,
        last: 65535,
    };
    /// The range Linux's VXLAN driver uses (the ephemeral port range 32768..=60999).
    pub const LINUX: PortRange = PortRange {
        first: 32768,
        last: 60999,
    };

    /// A range `first..=last`; both ends must be non-zero and in order.
    pub const fn new(first: u16, last: u16) -> Result<PortRange, ConfigError> {
        if first == 0 || first > last {
            Err(ConfigError::SourcePortRange { first, last })
        } else {
            Ok(PortRange { first, last })
        }
    }

    /// The first port.
    pub const fn first(self) -> u16 {
        self.first
    }

    /// The last port.
    pub const fn last(self) -> u16 {
        self.last
    }

    /// The port a flow hash maps to: spread evenly over the range (Lemire's multiply-shift,
    /// no division on the per-packet path).
    #[inline]
    pub const fn pick(self, hash: u32) -> u16 {
        let span = (self.last - self.first) as u64 + 1;
        self.first + ((hash as u64 * span) >> 32) as u16
    }
}

impl Default for PortRange {
    fn default() -> Self {
        Self::RFC7348
    }
}

/// The outer IPv4 Don't Fragment bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DfPolicy {
    /// Always set (Open vSwitch's default, and ours: VXLAN must not be fragmented).
    #[default]
    Set,
    /// Never set (Linux's default).
    Unset,
    /// Copied from an inner IPv4 header, set for inner IPv6, clear for other payloads.
    Inherit,
}

/// The outer TTL or hop limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlPolicy {
    /// A fixed value, 1..=255.
    Fixed(u8),
    /// The inner IPv4 TTL or IPv6 hop limit; 64 for other payloads such as ARP, and in place
    /// of an inherited 0 (which the first router would drop), as Linux falls back to the
    /// route's default.
    Inherit,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        TtlPolicy::Fixed(64)
    }
}

/// The outer DSCP (the six high bits of the TOS or traffic-class byte). The two ECN bits
/// always come from the inner packet (RFC 6040).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TosPolicy {
    /// A fixed TOS byte whose ECN bits are zero (DSCP << 2).
    Fixed(u8),
    /// The inner DSCP; 0 for payloads that are not IP.
    Inherit,
}

impl Default for TosPolicy {
    fn default() -> Self {
        TosPolicy::Fixed(0)
    }
}

/// How to build outer headers. One configuration serves every remote VTEP; an
/// [`EncapTemplate`] binds it to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncapConfig {
    /// UDP destination port. Default 4789; Linux' legacy default is 8472.
    pub udp_port: u16,
    /// Range of outer UDP source ports that flow hashes are spread over.
    pub source_ports: PortRange,
    /// Compute the UDP checksum over IPv4. Default off (zero, as RFC 7348 allows).
    pub udp_checksum_ipv4: bool,
    /// Send a zero UDP checksum over IPv6 (RFC 6935/6936). Default off: computed.
    pub zero_checksum_ipv6: bool,
    /// Outer IPv4 DF bit.
    pub df: DfPolicy,
    /// Outer TTL / hop limit.
    pub ttl: TtlPolicy,
    /// Outer DSCP.
    pub tos: TosPolicy,
    /// Underlay MTU: the largest outer IP packet. Default 1500.
    pub mtu: u16,
    /// Encapsulate inner frames that carry an 802.1Q/802.1ad tag. Default off: such frames
    /// are dropped (RFC 7348 section 6.1).
    pub carry_inner_vlan: bool,
    /// Set the outer IPv6 flow label from the inner flow hash (RFC 6438), so that the underlay
    /// can balance on it. Default on; off sends label 0.
    pub ipv6_flow_label: bool,
}

impl Default for EncapConfig {
    fn default() -> Self {
        EncapConfig {
            udp_port: vxlan::PORT,
            source_ports: PortRange::RFC7348,
            udp_checksum_ipv4: false,
            zero_checksum_ipv6: false,
            df: DfPolicy::Set,
            ttl: TtlPolicy::Fixed(64),
            tos: TosPolicy::Fixed(0),
            mtu: 1500,
            carry_inner_vlan: false,
            ipv6_flow_label: true,
        }
    }
}

/// How to validate frames from the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecapConfig {
    /// The UDP destination port VXLAN arrives on. Default 4789.
    pub udp_port: u16,
    /// Drop frames with any reserved VXLAN bit set, as Linux does; default off: ignored as
    /// RFC 7348 section 5 asks.
    pub strict_reserved_bits: bool,
    /// Read VXLAN-GBP fields when the G flag is set.
    pub gbp: bool,
    /// Verify non-zero UDP checksums. Default on. A zero checksum is always accepted over
    /// IPv4 (it means "none").
    pub verify_udp_checksum: bool,
    /// Drop IPv6 frames whose UDP checksum is zero, as Linux does unless told otherwise.
    /// Default off: accepted, as RFC 6935 allows tunnel endpoints to.
    pub reject_zero_checksum_ipv6: bool,
    /// Deliver inner frames that carry an 802.1Q/802.1ad tag. Default off: dropped (RFC 7348
    /// section 6.1).
    pub carry_inner_vlan: bool,
}

impl Default for DecapConfig {
    fn default() -> Self {
        DecapConfig {
            udp_port: vxlan::PORT,
            strict_reserved_bits: false,
            gbp: false,
            verify_udp_checksum: true,
            reject_zero_checksum_ipv6: false,
            carry_inner_vlan: false,
        }
    }
}

impl DecapConfig {
    /// Checks the configuration: the port must be non-zero and neither VXLAN-GPE's nor
    /// Geneve's.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_port(self.udp_port)
    }

    pub(crate) fn parse_options(&self) -> vxlan::ParseOptions {
        vxlan::ParseOptions {
            strict_reserved_bits: self.strict_reserved_bits,
            gbp: self.gbp,
        }
    }
}

/// Geneve's IANA port (RFC 8926): its headers can look like VXLAN's (a first byte of 0x08 or
/// 0x0a is a Geneve header with 8 or 40 bytes of options), so VXLAN must never listen there.
const GENEVE_PORT: u16 = 6081;

fn check_port(port: u16) -> Result<(), ConfigError> {
    match port {
        0 => Err(ConfigError::ZeroUdpPort),
        vxlan::GPE_PORT => Err(ConfigError::GpePort),
        GENEVE_PORT => Err(ConfigError::GenevePort),
        _ => Ok(()),
    }
}

/// The underlay side of one tunnel: our address and the remote VTEP's, and the MAC
/// addresses of the outer Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Underlay {
    /// Our underlay interface's MAC: the outer source MAC.
    pub local_mac: EthernetAddress,
    /// The MAC of the next hop towards the remote VTEP (the VTEP itself on a shared segment,
    /// else the gateway): the outer destination MAC.
    pub next_hop_mac: EthernetAddress,
    /// The local and remote VTEP addresses.
    pub addrs: OuterAddrs,
}

impl Underlay {
    /// An IPv4 underlay.
    pub const fn ipv4(
        local_mac: EthernetAddress,
        next_hop_mac: EthernetAddress,
        local: Ipv4Addr,
        remote: Ipv4Addr,
    ) -> Underlay {
        Underlay {
            local_mac,
            next_hop_mac,
            addrs: OuterAddrs::V4 {
                src: local,
                dst: remote,
            },
        }
    }

    /// An IPv6 underlay.
    pub const fn ipv6(
        local_mac: EthernetAddress,
        next_hop_mac: EthernetAddress,
        local: Ipv6Addr,
        remote: Ipv6Addr,
    ) -> Underlay {
        Underlay {
            local_mac,
            next_hop_mac,
            addrs: OuterAddrs::V6 {
                src: local,
                dst: remote,
            },
        }
    }
}

/// A configuration that cannot work. Each names the offending value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The UDP port is zero.
    ZeroUdpPort,
    /// The UDP port is 4790, VXLAN-GPE's: a different protocol.
    GpePort,
    /// The UDP port is 6081, Geneve's: a different protocol.
    GenevePort,
    /// The source port range is empty, reversed or includes port 0.
    SourcePortRange {
        /// First port given.
        first: u16,
        /// Last port given.
        last: u16,
    },
    /// A fixed TTL of zero: every router would drop the packet.
    ZeroTtl,
    /// A fixed TOS with ECN bits set; ECN always comes from the inner packet (RFC 6040).
    TosEcnBits(u8),
    /// The MTU cannot carry a minimum-size (64-byte) inner Ethernet frame.
    MtuTooSmall {
        /// MTU given.
        mtu: u16,
        /// The smallest that works for this underlay address family.
        minimum: u16,
    },
    /// An address that cannot be a VTEP: unspecified, multicast or broadcast.
    InvalidVtepAddress,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::ZeroUdpPort => f.write_str("udp_port: 0 is not a usable port"),
            ConfigError::GpePort => f.write_str(
                "udp_port: 4790 is VXLAN-GPE's port, a different protocol; use 4789 (IANA) or 8472 (Linux legacy)",
            ),
            ConfigError::GenevePort => f.write_str(
                "udp_port: 6081 is Geneve's port, a different protocol; use 4789 (IANA) or 8472 (Linux legacy)",
            ),
            ConfigError::SourcePortRange { first, last } => write!(
                f,
                "source_port_range: [{first}, {last}] must be non-zero and in order (first <= last)"
            ),
            ConfigError::ZeroTtl => f.write_str("ttl: 0 would be dropped by the first router; use 1..=255 or inherit"),
            ConfigError::TosEcnBits(tos) => write!(
                f,
                "tos: {tos:#04x} has ECN bits set; ECN is copied from the inner packet (RFC 6040), give DSCP << 2"
            ),
            ConfigError::MtuTooSmall { mtu, minimum } => {
                write!(f, "mtu: {mtu} is too small for VXLAN over this underlay (minimum {minimum})")
            }
            ConfigError::InvalidVtepAddress => {
                f.write_str("VTEP address: must be unicast and specified")
            }
        }
    }
}

impl core::error::Error for ConfigError {}

#[cfg(test)]
mod test_vectors;
