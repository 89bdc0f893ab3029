//! Encapsulation into headroom, from a per-VTEP template.

use core::ops::Range;

use super::icmp;
use super::inner::{self, Layout};
use super::{
    check_port, ConfigError, DfPolicy, EncapConfig, OuterAddrs, PortRange, TosPolicy, TtlPolicy,
    Underlay, OUTER_HEADER_LEN_IPV4, OUTER_HEADER_LEN_IPV6,
};
use crate::wire::checksum::{fold, sum_bytes};
use crate::wire::{ethertype, vxlan, ETHERNET_HEADER_LEN};
use crate::{DropReason, Vni};

/// Source of IPv4 identification values for outer packets that may be fragmented (DF
/// clear). Keep one per worker and pass it to every [`EncapTemplate::encap`] call. Packets
/// with DF set are atomic datagrams whose ID is 0 (RFC 6864 section 4.1) and take none.
#[derive(Debug, Clone, Default)]
pub struct IpIdent {
    next: u16,
}

impl IpIdent {
    /// Starts at `first`; give workers different starting points.
    pub const fn new(first: u16) -> IpIdent {
        IpIdent { next: first }
    }

    #[inline]
    fn take(&mut self) -> u16 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        id
    }
}

// Offsets inside the outer header.
const IP: usize = ETHERNET_HEADER_LEN;
const UDP_V4: usize = IP + 20;
const UDP_V6: usize = IP + 40;

/// Outer headers for one remote VTEP and VNI, prepared once: copy and patch per packet.
#[derive(Debug, Clone)]
pub struct EncapTemplate {
    header: [u8; OUTER_HEADER_LEN_IPV6],
    header_len: usize,
    ipv6: bool,
    /// IPv4: the one's complement sum of the header words that never change (version/IHL
    /// without TOS, protocol, addresses).
    ip_sum: u32,
    /// The sum of the UDP checksum's fixed inputs: pseudo-header addresses and protocol,
    /// destination port, VXLAN header.
    udp_sum: u32,
    compute_udp_checksum: bool,
    source_ports: PortRange,
    df: DfPolicy,
    ttl: TtlPolicy,
    tos: TosPolicy,
    mtu: u16,
    carry_inner_vlan: bool,
    ipv6_flow_label: bool,
    /// The IPv4 header prepared for the common configuration (DF set, fixed TTL and DSCP, no
    /// UDP checksum): `header` with those fields written, and the checksum sum of every
    /// field that does not change per packet. `None` when the configuration is otherwise.
    fixed_ipv4: Option<([u8; OUTER_HEADER_LEN_IPV4], u32)>,
}

fn sum_words(bytes: &[u8]) -> u32 {
    u32::from(sum_bytes(bytes))
}

impl EncapTemplate {
    /// Prepares the outer headers towards `underlay.addrs`' destination for `vni`, checking
    /// the configuration.
    pub fn new(
        config: &EncapConfig,
        underlay: &Underlay,
        vni: Vni,
    ) -> Result<EncapTemplate, ConfigError> {
        check_port(config.udp_port)?;
        if let TtlPolicy::Fixed(0) = config.ttl {
            return Err(ConfigError::ZeroTtl);
        }
        if let TosPolicy::Fixed(tos) = config.tos {
            if tos & 0b11 != 0 {
                return Err(ConfigError::TosEcnBits(tos));
            }
        }
        let (ipv6, header_len, overhead) = match underlay.addrs {
            OuterAddrs::V4 { src, dst } => {
                for addr in [src, dst] {
                    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
                        return Err(ConfigError::InvalidVtepAddress);
                    }
                }
                (false, OUTER_HEADER_LEN_IPV4, super::OVERHEAD_IPV4)
            }
            OuterAddrs::V6 { src, dst } => {
                for addr in [src, dst] {
                    if addr.is_unspecified() || addr.is_multicast() {
                        return Err(ConfigError::InvalidVtepAddress);
                    }
                }
                (true, OUTER_HEADER_LEN_IPV6, super::OVERHEAD_IPV6)
            }
        };
        // The smallest inner frame is an Ethernet header; a 64-byte minimum frame must fit.
        let minimum = overhead + 64 - ETHERNET_HEADER_LEN as u16;
        if config.mtu < minimum {
            return Err(ConfigError::MtuTooSmall {
                mtu: config.mtu,
                minimum,
            });
        }

        let mut header = [0u8; OUTER_HEADER_LEN_IPV6];
        header[0..6].copy_from_slice(&underlay.next_hop_mac.0);
        header[6..12].copy_from_slice(&underlay.local_mac.0);
        let udp = match underlay.addrs {
            OuterAddrs::V4 { src, dst } => {
                header[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
                header[IP] = 0x45;
                header[IP + 9] = 17; // UDP
                header[IP + 12..IP + 16].copy_from_slice(&src.octets());
                header[IP + 16..IP + 20].copy_from_slice(&dst.octets());
                UDP_V4
            }
            OuterAddrs::V6 { src, dst } => {
                header[12..14].copy_from_slice(&ethertype::IPV6.to_be_bytes());
                header[IP] = 0x60;
                header[IP + 6] = 17; // UDP
                header[IP + 8..IP + 24].copy_from_slice(&src.octets());
                header[IP + 24..IP + 40].copy_from_slice(&dst.octets());
                UDP_V6
            }
        };
        header[udp + 2..udp + 4].copy_from_slice(&config.udp_port.to_be_bytes());
        vxlan::Repr::new(vni).emit(&mut vxlan::Packet::new_unchecked(
            &mut header[udp + 8..udp + 16],
        ));

        let (ip_sum, udp_sum) = if ipv6 {
            let addrs = sum_words(&header[IP + 8..IP + 40]);
            (0, addrs + 17 + sum_words(&header[udp..udp + 16]))
        } else {
            // Version/IHL word without the TOS byte, TTL/protocol word without the TTL,
            // addresses; the checksum field is zero in the template.
            let fixed = sum_words(&header[IP..IP + 20]);
            let addrs = sum_words(&header[IP + 12..IP + 20]);
            (fixed, addrs + 17 + sum_words(&header[udp..udp + 16]))
        };

        Ok(EncapTemplate {
            header,
            header_len,
            ipv6,
            ip_sum,
            udp_sum,
            compute_udp_checksum: if ipv6 {
                !config.zero_checksum_ipv6
            } else {
                config.udp_checksum_ipv4
            },
            source_ports: config.source_ports,
            df: config.df,
            ttl: config.ttl,
            tos: config.tos,
            mtu: config.mtu,
            carry_inner_vlan: config.carry_inner_vlan,
            ipv6_flow_label: config.ipv6_flow_label,
            fixed_ipv4: match (ipv6, config.df, config.ttl, config.tos) {
                (false, DfPolicy::Set, TtlPolicy::Fixed(ttl), TosPolicy::Fixed(dscp))
                    if !config.udp_checksum_ipv4 =>
                {
                    let mut fixed = [0u8; OUTER_HEADER_LEN_IPV4];
                    fixed.copy_from_slice(&header[..OUTER_HEADER_LEN_IPV4]);
                    fixed[IP + 1] = dscp;
                    fixed[IP + 6] = 0x40; // DF
                    fixed[IP + 8] = ttl;
                    Some((fixed, sum_words(&fixed[IP..IP + 20])))
                }
                _ => None,
            },
        })
    }

    /// How many bytes of headroom [`encap`](Self::encap) needs in front of the inner frame:
    /// 50 over IPv4, 70 over IPv6.
    pub const fn header_len(&self) -> usize {
        self.header_len
    }

    /// True if the underlay is IPv6.
    pub const fn is_ipv6(&self) -> bool {
        self.ipv6
    }

    /// The largest inner IP packet that fits, for an inner frame with `inner_l2_len` bytes
    /// of Ethernet header (14, or 18 with a tag): the MTU an ICMP error reports.
    pub const fn inner_ip_mtu(&self, inner_l2_len: usize) -> u16 {
        let ip_and_udp = (self.header_len - ETHERNET_HEADER_LEN) as u16;
        self.mtu - ip_and_udp - inner_l2_len as u16
    }

    /// The outer UDP source port for an inner frame: its flow hash spread over the configured
    /// range. The same for every frame of a flow.
    pub fn source_port(&self, inner_frame: &[u8]) -> Result<u16, DropReason> {
        let layout = inner::layout(inner_frame)?;
        Ok(self
            .source_ports
            .pick(inner::flow_hash(inner_frame, layout)))
    }

    /// Encapsulates the inner Ethernet frame at `buf[inner]`, writing the outer headers into
    /// the [`header_len`](Self::header_len) bytes in front of it. Returns where the outer
    /// frame is in `buf`. The inner frame is not moved or changed.
    ///
    /// Refusals: [`DropReason::NoHeadroom`] when `inner.start` is less than the header
    /// length; [`DropReason::InnerTruncated`] for a range outside `buf` or a frame shorter
    /// than its Ethernet header (14 bytes, 18 with a tag); [`DropReason::InnerVlanTagged`] for a tagged frame when tags
    /// are not carried; [`DropReason::MtuExceeded`] when the outer packet would exceed the
    /// MTU. In that last case [`too_big_reply`](Self::too_big_reply) builds the ICMP error
    /// for the inner sender.
    #[inline(always)]
    pub fn encap(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
        ident: &mut IpIdent,
    ) -> Result<Range<usize>, DropReason> {
        let Range { start, end } = inner;
        let Some(outer_start) = start.checked_sub(self.header_len) else {
            return Err(DropReason::NoHeadroom);
        };
        // `None` also for `start > end`: the slice is then shorter than the header.
        let Some((head, frame)) = buf
            .get_mut(outer_start..end)
            .and_then(|outer| outer.split_at_mut_checked(self.header_len))
        else {
            return Err(DropReason::InnerTruncated);
        };
        self.write_header(head, frame, ident)?;
        Ok(outer_start..end)
    }

    /// The same as [`encap`](Self::encap), with the outer headers written into `header`
    /// instead of in front of the frame: for a transmit path that gathers header and frame
    /// (`sendmsg` with two `iovec`s, a copy into a transmit ring), so that one received frame
    /// can go to several VTEPs without being copied. Returns the header's length; `header`
    /// must hold [`header_len`](Self::header_len) bytes, or the refusal is
    /// [`DropReason::NoHeadroom`]. The other refusals are [`encap`](Self::encap)'s.
    #[inline(always)]
    pub fn encap_header(
        &self,
        inner_frame: &[u8],
        header: &mut [u8],
        ident: &mut IpIdent,
    ) -> Result<usize, DropReason> {
        let Some(head) = header.get_mut(..self.header_len) else {
            return Err(DropReason::NoHeadroom);
        };
        self.write_header(head, inner_frame, ident)?;
        Ok(self.header_len)
    }

    /// Writes the outer headers for `frame` into `head`, which is `header_len` bytes long.
    #[inline(always)]
    fn write_header(
        &self,
        head: &mut [u8],
        frame: &[u8],
        ident: &mut IpIdent,
    ) -> Result<(), DropReason> {
        if let Some((fixed, fixed_sum)) = &self.fixed_ipv4 {
            if let Ok(head) = <&mut [u8; OUTER_HEADER_LEN_IPV4]>::try_from(&mut *head) {
                if self.encap_fixed_ipv4(fixed, *fixed_sum, head, frame) {
                    return Ok(());
                }
            }
        }
        self.encap_general(head, frame, ident)
    }

    /// Every case [`encap_fixed_ipv4`](Self::encap_fixed_ipv4) does not take. Kept out of line
    /// so that a loop over frames holds the fast path's values in registers: inlined, its
    /// register pressure made the compiler spill the template's fields to the stack and
    /// reload them for every frame.
    #[inline(never)]
    fn encap_general(
        &self,
        head: &mut [u8],
        frame: &[u8],
        ident: &mut IpIdent,
    ) -> Result<(), DropReason> {
        let inspection = inner::inspect(frame)?;
        let layout = inspection.layout;
        if layout.tagged && !self.carry_inner_vlan {
            return Err(DropReason::InnerVlanTagged);
        }
        let ip_len = self.header_len - ETHERNET_HEADER_LEN + frame.len();
        if ip_len > usize::from(self.mtu) {
            return Err(DropReason::MtuExceeded);
        }
        let ip_len = ip_len as u16; // <= mtu
        let udp_len = (frame.len() + vxlan::HEADER_LEN + 8) as u16; // < ip_len
        let fields = inspection.ip;
        let inner_tos = fields.map_or(0, |f| f.tos);
        let ttl = match self.ttl {
            TtlPolicy::Fixed(ttl) => ttl,
            TtlPolicy::Inherit => match fields {
                Some(f) if f.ttl != 0 => f.ttl,
                _ => 64,
            },
        };
        // DSCP from the policy, ECN copied from the inner packet (RFC 6040 normal mode).
        let tos = match self.tos {
            TosPolicy::Fixed(tos) => tos,
            TosPolicy::Inherit => inner_tos & !0b11,
        } | super::ecn::encap(super::Ecn::from_tos(inner_tos)).bits();
        let hash = inspection.hash;
        let source_port = self.source_ports.pick(hash);

        // Constant-length copies: a runtime length would make this a call to memmove.
        if let Ok(head) = <&mut [u8; OUTER_HEADER_LEN_IPV6]>::try_from(&mut *head) {
            *head = self.header;
        } else if let Ok(head) = <&mut [u8; OUTER_HEADER_LEN_IPV4]>::try_from(&mut *head) {
            head.copy_from_slice(&self.header[..OUTER_HEADER_LEN_IPV4]);
        }
        let udp = if self.ipv6 {
            let flow_label = if self.ipv6_flow_label {
                hash & 0x000F_FFFF
            } else {
                0
            };
            let first_word = (6u32 << 28) | (u32::from(tos) << 20) | flow_label;
            head[IP..IP + 4].copy_from_slice(&first_word.to_be_bytes());
            head[IP + 4..IP + 6].copy_from_slice(&udp_len.to_be_bytes());
            head[IP + 7] = ttl;
            UDP_V6
        } else {
            let dont_fragment = match self.df {
                DfPolicy::Set => true,
                DfPolicy::Unset => false,
                DfPolicy::Inherit => fields.is_some_and(|f| f.dont_fragment),
            };
            let (id, flags) = if dont_fragment {
                (0, 0x4000u16)
            } else {
                (ident.take(), 0)
            };
            head[IP + 1] = tos;
            head[IP + 2..IP + 4].copy_from_slice(&ip_len.to_be_bytes());
            head[IP + 4..IP + 6].copy_from_slice(&id.to_be_bytes());
            head[IP + 6..IP + 8].copy_from_slice(&flags.to_be_bytes());
            head[IP + 8] = ttl;
            let sum = self.ip_sum
                + u32::from(tos)
                + u32::from(ip_len)
                + u32::from(id)
                + u32::from(flags)
                + (u32::from(ttl) << 8);
            head[IP + 10..IP + 12].copy_from_slice(&(!fold(sum)).to_be_bytes());
            UDP_V4
        };
        head[udp..udp + 2].copy_from_slice(&source_port.to_be_bytes());
        head[udp + 4..udp + 6].copy_from_slice(&udp_len.to_be_bytes());
        if self.compute_udp_checksum {
            // Pseudo-header length and UDP length are the same value, counted twice.
            let sum = self.udp_sum
                + 2 * u32::from(udp_len)
                + u32::from(source_port)
                + u32::from(sum_bytes(frame));
            let checksum = match !fold(sum) {
                0 => 0xFFFF, // RFC 768: a computed zero is sent as all ones.
                checksum => checksum,
            };
            head[udp + 6..udp + 8].copy_from_slice(&checksum.to_be_bytes());
        }
        Ok(())
    }

    /// The common case, as FD.io VPP's encap nodes do it: the default configuration over IPv4
    /// (`fixed_ipv4`), and an untagged inner IPv4 frame without options that fits the MTU.
    /// The outer header comes from a template with everything but the lengths, ECN, checksum
    /// and source port already written. `false` sends the frame through the general path, which
    /// gives the same bytes for what this accepts (tested) and names the reason of a refusal.
    #[inline(always)]
    fn encap_fixed_ipv4(
        &self,
        fixed: &[u8; OUTER_HEADER_LEN_IPV4],
        fixed_sum: u32,
        head: &mut [u8; OUTER_HEADER_LEN_IPV4],
        frame: &[u8],
    ) -> bool {
        let Some(inner_bytes) = frame.first_chunk::<38>() else {
            return false;
        };
        if inner_bytes[12..15] != [0x08, 0x00, 0x45] {
            return false;
        }
        let ip_len = OUTER_HEADER_LEN_IPV4 - ETHERNET_HEADER_LEN + frame.len();
        if ip_len > usize::from(self.mtu) {
            return false;
        }
        let ip_len = ip_len as u16; // <= mtu
        let udp_len = ip_len - 20;
        let ecn = inner_bytes[15] & 0b11;
        let source_port = self.source_ports.pick(inner::flow_hash_ipv4(inner_bytes));
        *head = *fixed;
        head[IP + 1] |= ecn;
        head[IP + 2..IP + 4].copy_from_slice(&ip_len.to_be_bytes());
        let sum = fixed_sum + u32::from(ecn) + u32::from(ip_len);
        head[IP + 10..IP + 12].copy_from_slice(&(!fold(sum)).to_be_bytes());
        head[UDP_V4..UDP_V4 + 2].copy_from_slice(&source_port.to_be_bytes());
        head[UDP_V4 + 4..UDP_V4 + 6].copy_from_slice(&udp_len.to_be_bytes());
        true
    }

    /// Builds, into `out`, the ICMP error that tells the sender of `inner_frame` (a frame
    /// [`encap`](Self::encap) refused with [`DropReason::MtuExceeded`]) the largest packet that
    /// fits: "fragmentation needed" (type 3 code 4, RFC 1191) for IPv4 with DF set, "packet too
    /// big" (RFC 4443 section 3.2) for IPv6. The reply is an Ethernet frame addressed back to
    /// the sender, as if from the inner destination (as Linux does), ready to deliver on the
    /// port the frame came from.
    ///
    /// Returns its length, or `None` when no error may be sent: IPv4 without DF, non-IP, an
    /// ICMP error about an ICMP error, a non-initial fragment, a sender that is not a unicast
    /// host, or an `out` too small for the headers. [`TOO_BIG_REPLY_MAX_LEN`] bytes are always
    /// enough.
    ///
    /// [`TOO_BIG_REPLY_MAX_LEN`]: super::TOO_BIG_REPLY_MAX_LEN
    pub fn too_big_reply(&self, inner_frame: &[u8], out: &mut [u8]) -> Option<usize> {
        let layout: Layout = inner::layout(inner_frame).ok()?;
        let mtu = self.inner_ip_mtu(layout.l3);
        icmp::too_big_reply(inner_frame, layout, mtu, out)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    use crate::tunnel::DecapConfig;
    use crate::wire::EthernetAddress;

    const LOCAL_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
    const NEXT_HOP_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x02]);

    fn v4() -> Underlay {
        Underlay::ipv4(
            LOCAL_MAC,
            NEXT_HOP_MAC,
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 2),
        )
    }

    fn v6() -> Underlay {
        Underlay::ipv6(
            LOCAL_MAC,
            NEXT_HOP_MAC,
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
        )
    }

    fn vni() -> Vni {
        Vni::new(42).unwrap()
    }

    #[test]
    fn config_errors_name_the_value() {
        let bad = |config: EncapConfig| EncapTemplate::new(&config, &v4(), vni()).unwrap_err();
        let base = EncapConfig::default();
        assert_eq!(
            bad(EncapConfig {
                udp_port: 0,
                ..base
            }),
            ConfigError::ZeroUdpPort
        );
        assert_eq!(
            bad(EncapConfig {
                udp_port: 4790,
                ..base
            }),
            ConfigError::GpePort
        );
        assert_eq!(
            bad(EncapConfig {
                udp_port: 6081,
                ..base
            }),
            ConfigError::GenevePort
        );
        let decap_on = |udp_port| {
            DecapConfig {
                udp_port,
                ..DecapConfig::default()
            }
            .validate()
        };
        assert_eq!(decap_on(4790), Err(ConfigError::GpePort));
        assert_eq!(decap_on(6081), Err(ConfigError::GenevePort));
        assert_eq!(decap_on(0), Err(ConfigError::ZeroUdpPort));
        assert_eq!(decap_on(8472), Ok(()));
        assert_eq!(
            bad(EncapConfig {
                ttl: TtlPolicy::Fixed(0),
                ..base
            }),
            ConfigError::ZeroTtl
        );
        assert_eq!(
            bad(EncapConfig {
                tos: TosPolicy::Fixed(0xb9),
                ..base
            }),
            ConfigError::TosEcnBits(0xb9)
        );
        assert_eq!(
            bad(EncapConfig { mtu: 99, ..base }),
            ConfigError::MtuTooSmall {
                mtu: 99,
                minimum: 100
            }
        );
        assert!(EncapTemplate::new(&EncapConfig { mtu: 100, ..base }, &v4(), vni()).is_ok());
        let multicast = Underlay::ipv4(
            LOCAL_MAC,
            NEXT_HOP_MAC,
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(239, 1, 1, 1),
        );
        assert_eq!(
            EncapTemplate::new(&base, &multicast, vni()).unwrap_err(),
            ConfigError::InvalidVtepAddress
        );
        assert_eq!(
            PortRange::new(2, 1),
            Err(ConfigError::SourcePortRange { first: 2, last: 1 })
        );
        assert!(PortRange::new(0, 1).is_err());
        assert!(PortRange::new(7, 7).is_ok());
    }

    #[test]
    #[allow(clippy::reversed_empty_ranges)] // A reversed range is one of the inputs tested.
    fn headroom_and_bounds() {
        let template = EncapTemplate::new(&EncapConfig::default(), &v4(), vni()).unwrap();
        let mut buf = [0u8; 200];
        let mut ident = IpIdent::new(0);
        assert_eq!(
            template.encap(&mut buf, 49..113, &mut ident),
            Err(DropReason::NoHeadroom)
        );
        assert_eq!(
            template.encap(&mut buf, 50..201, &mut ident),
            Err(DropReason::InnerTruncated)
        );
        assert_eq!(
            template.encap(&mut buf, 60..59, &mut ident),
            Err(DropReason::InnerTruncated)
        );
        assert_eq!(
            template.encap(&mut buf, 50..63, &mut ident),
            Err(DropReason::InnerTruncated)
        );
        assert_eq!(template.encap(&mut buf, 50..64, &mut ident), Ok(0..64));
        let template6 = EncapTemplate::new(&EncapConfig::default(), &v6(), vni()).unwrap();
        assert_eq!(
            template6.encap(&mut buf, 69..133, &mut ident),
            Err(DropReason::NoHeadroom)
        );
        assert_eq!(template6.encap(&mut buf, 70..134, &mut ident), Ok(0..134));
    }

    #[test]
    fn mtu_boundary() {
        let config = EncapConfig {
            mtu: 1500,
            ..EncapConfig::default()
        };
        for (underlay, headroom) in [(v4(), 50usize), (v6(), 70)] {
            let template = EncapTemplate::new(&config, &underlay, vni()).unwrap();
            let max_frame = 1500 - (headroom - 14) as u16;
            assert_eq!(template.inner_ip_mtu(14), 1500 - headroom as u16);
            let mut buf = [0u8; 1700];
            let fits = headroom..headroom + usize::from(max_frame);
            assert!(template.encap(&mut buf, fits, &mut IpIdent::new(0)).is_ok());
            let too_big = headroom..headroom + usize::from(max_frame) + 1;
            assert_eq!(
                template.encap(&mut buf, too_big, &mut IpIdent::new(0)),
                Err(DropReason::MtuExceeded)
            );
        }
    }

    /// The fixed-IPv4 fast path writes the same bytes as the general path, frame for frame.
    #[test]
    fn fast_path_matches_general_path() {
        let fast = EncapTemplate::new(&EncapConfig::default(), &v4(), vni()).unwrap();
        assert!(fast.fixed_ipv4.is_some());
        let general = EncapTemplate {
            fixed_ipv4: None,
            ..fast.clone()
        };
        let mut state = 0x2545_f491_4f6c_dd1du64;
        // Fewer cases under miri, which interprets every instruction.
        let cases = if cfg!(miri) { 40 } else { 2000 };
        for case in 0..cases {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = 14 + (state % 1530) as usize;
            let mut frame = [0u8; 1600];
            for (i, byte) in frame.iter_mut().enumerate() {
                *byte = (state >> (i % 57)) as u8 ^ i as u8;
            }
            frame[12..14].copy_from_slice(&[0x08, 0x00]);
            if case % 4 != 0 {
                frame[14] = 0x45;
            }
            if case % 7 == 0 {
                frame[20] = 0x20; // a fragment
            }
            let mut a = [0u8; 1700];
            let mut b = [0u8; 1700];
            a[50..50 + len].copy_from_slice(&frame[..len]);
            b[50..50 + len].copy_from_slice(&frame[..len]);
            let mut ident = IpIdent::new(9);
            let ra = fast.encap(&mut a, 50..50 + len, &mut ident);
            let rb = general.encap(&mut b, 50..50 + len, &mut ident);
            assert_eq!(ra, rb, "case {case}");
            assert_eq!(a, b, "case {case}");
        }
    }

    /// Writing the header apart gives the bytes that encapsulating in place gives, and the
    /// same refusals.
    #[test]
    fn encap_header_matches_encap() {
        let tagged = EncapConfig {
            carry_inner_vlan: true,
            ..EncapConfig::default()
        };
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let cases = if cfg!(miri) { 20 } else { 500 };
        for (config, underlay) in [
            (EncapConfig::default(), v4()),
            (EncapConfig::default(), v6()),
            (tagged, v4()),
        ] {
            let template = EncapTemplate::new(&config, &underlay, vni()).unwrap();
            let hl = template.header_len();
            for case in 0..cases {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let len = (state % 1600) as usize;
                let mut frame = [0u8; 1600];
                for (i, byte) in frame.iter_mut().enumerate() {
                    *byte = (state >> (i % 59)) as u8 ^ (i as u8).wrapping_mul(7);
                }
                let ethertype: [u8; 2] = match case % 4 {
                    0 => [0x81, 0x00],
                    1 => [0x86, 0xdd],
                    _ => [0x08, 0x00],
                };
                frame[12..14].copy_from_slice(&ethertype);
                frame[14] = if case % 3 == 0 { 0x46 } else { 0x45 };
                let mut in_place = [0u8; 1700];
                in_place[hl..hl + len].copy_from_slice(&frame[..len]);
                let mut header = [0u8; OUTER_HEADER_LEN_IPV6];
                let (mut a, mut b) = (IpIdent::new(3), IpIdent::new(3));
                let expected = template.encap(&mut in_place, hl..hl + len, &mut a);
                let got = template.encap_header(&frame[..len], &mut header, &mut b);
                assert_eq!(got.map(|n| 0..n + len), expected, "case {case}");
                if expected.is_ok() {
                    assert_eq!(header[..hl], in_place[..hl], "case {case}");
                }
                assert_eq!(
                    template.encap_header(&frame[..len], &mut header[..hl - 1], &mut b),
                    Err(DropReason::NoHeadroom)
                );
            }
        }
    }

    #[test]
    fn source_port_in_range_and_stable() {
        let config = EncapConfig {
            source_ports: PortRange::new(1000, 1003).unwrap(),
            ..EncapConfig::default()
        };
        let template = EncapTemplate::new(&config, &v4(), vni()).unwrap();
        let mut seen = [false; 4];
        for i in 0..64u8 {
            let mut frame = [0u8; 64];
            frame[0..6].copy_from_slice(&[2, 0, 0, 0, 0, i]);
            frame[12] = 0x08;
            frame[13] = 0x06;
            let port = template.source_port(&frame).unwrap();
            assert!((1000..=1003).contains(&port));
            assert_eq!(port, template.source_port(&frame).unwrap());
            seen[usize::from(port - 1000)] = true;
        }
        assert_eq!(seen, [true; 4]);
    }
}
