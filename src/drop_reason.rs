//! Why a frame was refused: one enum for the whole core, so that every drop has a counter.

use core::fmt;

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])+ $name:ident = $label:literal,)+) => {
        /// Why the core refused a frame. Every refusal carries one of these, and
        /// [`DropReason::index`] makes it an index into a counter array ([`DropCounters`]).
        ///
        /// The list grows as the core grows; match with a wildcard arm.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[doc = $doc])+ $name,)+
        }

        impl DropReason {
            /// Every reason, in index order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)+];
            /// How many reasons there are: the length of a counter array.
            pub const COUNT: usize = Self::ALL.len();

            /// A stable snake_case name, for metrics and logs.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(DropReason::$name => $label,)+
                }
            }
        }
    };
}

drop_reasons! {
    /// The frame is shorter than an Ethernet header.
    EthernetTruncated = "ethernet_truncated",
    /// The outer EtherType is neither IPv4 nor IPv6.
    OuterNotIp = "outer_not_ip",
    /// The frame ends before the outer IP packet does: its header, or the payload its length
    /// field announces, is cut short (a capture's snap length, a broken link).
    OuterTruncated = "outer_truncated",
    /// The outer IPv4 version or header length is wrong.
    Ipv4HeaderInvalid = "ipv4_header_invalid",
    /// The outer IPv4 header checksum does not verify (always checked).
    Ipv4Checksum = "ipv4_checksum",
    /// The outer IPv4 total length is zero (a BIG TCP super-packet) or shorter than its
    /// header.
    Ipv4LengthInvalid = "ipv4_length_invalid",
    /// The outer IPv6 version is wrong.
    Ipv6HeaderInvalid = "ipv6_header_invalid",
    /// The outer IPv6 payload length is zero (a jumbogram or BIG TCP super-packet).
    Ipv6LengthInvalid = "ipv6_length_invalid",
    /// The outer IPv6 header is followed by an extension header other than a fragment header.
    Ipv6ExtensionHeader = "ipv6_extension_header",
    /// The outer packet is a fragment; VXLAN is never fragmented (RFC 7348 section 4.3).
    OuterFragment = "outer_fragment",
    /// The outer IP packet does not carry UDP.
    OuterNotUdp = "outer_not_udp",
    /// The outer UDP length is zero, shorter than the UDP header, or longer than the IP payload.
    UdpLengthInvalid = "udp_length_invalid",
    /// The outer UDP destination port is not the configured VXLAN port.
    NotVxlanPort = "not_vxlan_port",
    /// The outer UDP checksum is non-zero and does not verify.
    UdpChecksum = "udp_checksum",
    /// The outer UDP checksum over IPv6 is zero and zero checksums are refused (RFC 6935).
    UdpZeroChecksumIpv6 = "udp_zero_checksum_ipv6",
    /// VXLAN-GPE (UDP port 4790, or the P flag with a next protocol other than Ethernet): a
    /// different protocol, never decapsulated as RFC 7348 VXLAN.
    VxlanGpe = "vxlan_gpe",
    /// The UDP payload is shorter than a VXLAN header.
    VxlanTruncated = "vxlan_truncated",
    /// The VXLAN I flag (valid VNI) is clear (RFC 7348 section 5).
    VxlanNoVniFlag = "vxlan_no_vni_flag",
    /// A reserved VXLAN flag or field is non-zero and the receiver is in strict mode (as Linux).
    VxlanReservedBits = "vxlan_reserved_bits",
    /// The inner frame is shorter than an Ethernet header.
    InnerTruncated = "inner_truncated",
    /// The inner frame carries an 802.1Q or 802.1ad tag and the VNI does not carry tags
    /// (RFC 7348 section 6.1).
    InnerVlanTagged = "inner_vlan_tagged",
    /// The outer ECN field is CE and the inner packet is Not-ECT (RFC 6040 section 4.2).
    EcnCeOnNotEct = "ecn_ce_on_not_ect",
    /// There is not enough headroom in front of the inner frame for the outer headers.
    NoHeadroom = "no_headroom",
    /// The outer packet would exceed the underlay MTU; VXLAN never fragments.
    MtuExceeded = "mtu_exceeded",
    // Forwarding table.
    /// Not learned: the forwarding table holds its total capacity of entries (the frame is
    /// still forwarded).
    FdbFull = "fdb_full",
    /// Not learned: the VNI holds its maximum number of entries (the frame is still
    /// forwarded).
    FdbVniFull = "fdb_vni_full",
    /// Not learned: the forwarding table's VNI table is full (the frame is still forwarded).
    FdbVniTableFull = "fdb_vni_table_full",
    /// Not learned: the forwarding table's IPv6 VTEP table is full (the frame is still
    /// forwarded).
    FdbVtepTableFull = "fdb_vtep_table_full",
    /// A frame from a MAC bound by a static entry arrived from another place: static entries
    /// never move, the frame is dropped.
    FdbStaticMove = "fdb_static_move",
    /// The source MAC is multicast, broadcast or all zeros: never learned, the frame is
    /// dropped (as Linux' bridge does).
    FdbSourceMacInvalid = "fdb_source_mac_invalid",
    // Load balancer.
    /// The load balancer got a packet that is not a well-formed IPv4 or IPv6 packet, or a TCP
    /// or UDP packet cut inside its header.
    LbMalformed = "lb_malformed",
    /// A fragment towards a VIP: later fragments carry no ports to choose a backend by (Katran
    /// drops them too).
    LbFragment = "lb_fragment",
    /// An IPv6 packet towards a VIP with an extension header the load balancer does not walk.
    LbUnsupportedHeader = "lb_unsupported_header",
    /// The service has no backend that takes new flows (all down, draining or of weight 0).
    LbNoBackend = "lb_no_backend",
    /// An ICMP error towards a VIP about a flow that is not tracked here.
    LbIcmpUnknownFlow = "lb_icmp_unknown_flow",
    // Switch.
    /// The frame arrived on a port the switch has no configuration for.
    PortUnknown = "port_unknown",
    /// A trunk port's frame is untagged or carries a VLAN ID that the trunk does not map.
    VlanUnmapped = "vlan_unmapped",
    /// A decapsulated frame's VNI is not configured on this switch.
    VniUnknown = "vni_unknown",
    /// A frame from the underlay is for a MAC behind another VTEP: the switch never forwards
    /// from one tunnel into another (split horizon).
    SplitHorizon = "split_horizon",
    /// The frame has nowhere to go: its destination is the port it came from, or its flood
    /// list holds nothing but its ingress.
    NoDestination = "no_destination",
    /// Port security: the source MAC is not one the port allows.
    SpoofedSourceMac = "spoofed_source_mac",
    /// Port security: the source IP address (IPv4, ARP sender or IPv6) is not one the port
    /// allows, or the frame is too short to tell.
    SpoofedSourceIp = "spoofed_source_ip",
    /// The underlay MAC of the remote VTEP (or its gateway) is not resolved yet, or its
    /// ARP/ND probes went unanswered.
    NextHopUnresolved = "next_hop_unresolved",
    /// A frame in a VNI with services found no load-balancer slot for its worker (more
    /// workers than [`LbSettings::max_workers`](crate::switch::LbSettings::max_workers)):
    /// it could not be translated.
    LbNoWorkerSlot = "lb_no_worker_slot",
    /// A packet was translated to a backend whose MAC the VNI's neighbour table does not hold
    /// (a reconfiguration removed it while the service still named the backend).
    LbBackendUnresolved = "lb_backend_unresolved",
    /// A frame to the services' virtual MAC that is not towards a service (a ping to a VIP,
    /// a port the VIP does not serve): nothing stands behind that MAC.
    VirtualMacNotService = "virtual_mac_not_service",
}

impl DropReason {
    /// The position of this reason in [`DropReason::ALL`]: an index into a counter array.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for DropReason {}

/// A counter per [`DropReason`]. Plain integers: keep one per worker and sum them when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::COUNT],
}

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters {
            counts: [0; DropReason::COUNT],
        }
    }
}

impl DropCounters {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one drop for `reason`.
    #[inline]
    pub fn record(&mut self, reason: DropReason) {
        // `index` is below COUNT by construction, so this never panics.
        self.counts[reason.index()] += 1;
    }

    /// How many frames were dropped for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason.index()]
    }

    /// All drops, whatever the reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The reasons with a non-zero count, in index order.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .zip(self.counts.iter())
            .filter(|(_, &count)| count != 0)
            .map(|(&reason, &count)| (reason, count))
    }

    /// Adds another set of counters to this one (summing per-worker counters).
    pub fn merge(&mut self, other: &DropCounters) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn index_matches_position() {
        for (position, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), position);
        }
    }

    #[test]
    fn names_are_unique_snake_case() {
        for (i, a) in DropReason::ALL.iter().enumerate() {
            assert!(a
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            for b in &DropReason::ALL[i + 1..] {
                assert_ne!(a.as_str(), b.as_str());
            }
        }
    }

    #[test]
    fn counters_count_and_merge() {
        let mut a = DropCounters::new();
        a.record(DropReason::UdpChecksum);
        a.record(DropReason::UdpChecksum);
        let mut b = DropCounters::new();
        b.record(DropReason::VxlanGpe);
        a.merge(&b);
        assert_eq!(a.get(DropReason::UdpChecksum), 2);
        assert_eq!(a.get(DropReason::VxlanGpe), 1);
        assert_eq!(a.total(), 3);
        let nonzero: [(DropReason, u64); 2] =
            [(DropReason::UdpChecksum, 2), (DropReason::VxlanGpe, 1)];
        assert!(a.nonzero().eq(nonzero.iter().copied()));
    }
}
