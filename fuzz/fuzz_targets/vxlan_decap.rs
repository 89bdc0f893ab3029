//! Arbitrary bytes from the underlay into `decap`: it must never panic, must change only what
//! RFC 6040 lets it change, and whatever it accepts must survive encapsulation again with the
//! parameters it parsed (same VNI, same inner bytes).
//!
//! Input: two option bytes, then the frame (outer Ethernet onwards).
//!
//! Byte 0, the receive configuration (0 is `DecapConfig::default()`):
//! bit 0 strict reserved bits, bit 1 GBP, bit 2 skip UDP checksum verification, bit 3 carry
//! inner VLAN tags, bit 4 refuse zero IPv6 UDP checksums, bit 5 UDP port 8472 instead of
//! 4789, bit 6 no IPv6 flow label on re-encapsulation, bit 7 re-encapsulate with the
//! received source port as a one-port range.
//!
//! Byte 1, the re-encapsulation: bit 0 swap the outer addresses (the reply direction),
//! bit 1 swap the outer MACs, bit 2 inherit TTL (else the received TTL, fixed), bit 3 inherit
//! TOS (else the received TOS byte, fixed: refused when its ECN bits are set), bit 4 compute
//! the IPv4 UDP checksum, bit 5 zero IPv6 UDP checksum, bits 6-7 DF (set, unset, inherit,
//! set).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::tunnel::{
    decap, DecapConfig, DfPolicy, EncapConfig, EncapTemplate, IpIdent, OuterAddrs, PortRange,
    TosPolicy, TtlPolicy, Underlay,
};
use switchyard_fuzz::{
    check_decap_changes, check_outer_headers, check_template_result, explained_encap_errors,
    ExpectedOuter,
};

fuzz_target!(|data: &[u8]| {
    let [receive, resend, frame @ ..] = data else {
        return;
    };
    let bit = |byte: u8, n: u8| byte & (1 << n) != 0;
    let config = DecapConfig {
        udp_port: if bit(*receive, 5) { 8472 } else { 4789 },
        strict_reserved_bits: bit(*receive, 0),
        gbp: bit(*receive, 1),
        verify_udp_checksum: !bit(*receive, 2),
        reject_zero_checksum_ipv6: bit(*receive, 4),
        carry_inner_vlan: bit(*receive, 3),
    };

    let mut received = frame.to_vec();
    let result = decap(&config, &mut received);
    check_decap_changes(frame, &received, &result);
    let Ok(first) = result else {
        return;
    };
    // Compare against the inner frame after the first decapsulation: it may have rewritten
    // the inner ECN field (RFC 6040), and the second pass must not change it again.
    let inner = &received[first.inner.clone()];
    if !config.carry_inner_vlan {
        assert!(
            !switchyard_fuzz::inner_layout(inner).is_some_and(|l| l.2),
            "a tagged inner frame passed a receiver that does not carry tags"
        );
    }

    let addrs = if bit(*resend, 0) {
        match first.outer {
            OuterAddrs::V4 { src, dst } => OuterAddrs::V4 { src: dst, dst: src },
            OuterAddrs::V6 { src, dst } => OuterAddrs::V6 { src: dst, dst: src },
        }
    } else {
        first.outer
    };
    let (local_mac, next_hop_mac) = if bit(*resend, 1) {
        (first.outer_dst_mac, first.outer_src_mac)
    } else {
        (first.outer_src_mac, first.outer_dst_mac)
    };
    let underlay = Underlay {
        local_mac,
        next_hop_mac,
        addrs,
    };
    let source_ports = match PortRange::new(first.udp_src_port, first.udp_src_port) {
        Ok(one_port) if bit(*receive, 7) => one_port,
        _ => PortRange::RFC7348,
    };
    let encap_config = EncapConfig {
        udp_port: config.udp_port,
        source_ports,
        udp_checksum_ipv4: bit(*resend, 4),
        zero_checksum_ipv6: bit(*resend, 5),
        df: match resend >> 6 {
            1 => DfPolicy::Unset,
            2 => DfPolicy::Inherit,
            _ => DfPolicy::Set,
        },
        ttl: if bit(*resend, 2) {
            TtlPolicy::Inherit
        } else {
            TtlPolicy::Fixed(first.outer_ttl)
        },
        tos: if bit(*resend, 3) {
            TosPolicy::Inherit
        } else {
            TosPolicy::Fixed(first.outer_tos)
        },
        // The largest the field holds; EncapTemplate::new only sets a lower bound.
        mtu: u16::MAX,
        carry_inner_vlan: true,
        ipv6_flow_label: !bit(*receive, 6),
    };
    let template = EncapTemplate::new(&encap_config, &underlay, first.vni);
    check_template_result(&template, &encap_config, &underlay);
    let Ok(template) = template else {
        // Refused for a documented reason: an address from arbitrary bytes that cannot be a
        // VTEP, a received TTL of 0, a received TOS with ECN bits given as a fixed TOS.
        return;
    };

    let headroom = template.header_len();
    let mut buf = vec![0u8; headroom + inner.len()];
    buf[headroom..].copy_from_slice(inner);
    let explained = explained_encap_errors(
        inner,
        headroom,
        encap_config.mtu,
        encap_config.carry_inner_vlan,
    );
    let end = buf.len();
    let outer = match template.encap(&mut buf, headroom..end, &mut IpIdent::new(7)) {
        Ok(outer) => {
            assert!(explained.is_empty(), "encapsulated despite {explained:?}");
            outer
        }
        Err(reason) => {
            assert!(
                explained.contains(&reason),
                "encap refused with {reason}, explained only {explained:?}"
            );
            return;
        }
    };
    assert_eq!(outer, 0..end);
    let source_port = template
        .source_port(inner)
        .expect("source port of an accepted frame");
    if bit(*receive, 7) && first.udp_src_port != 0 {
        assert_eq!(source_port, first.udp_src_port);
    }
    check_outer_headers(
        &buf,
        &ExpectedOuter {
            config: &encap_config,
            underlay: &underlay,
            vni: first.vni,
            inner,
            source_port,
        },
    );

    let ipv6 = matches!(addrs, OuterAddrs::V6 { .. });
    let again_config = DecapConfig {
        udp_port: config.udp_port,
        // Encapsulation writes every reserved bit as zero.
        strict_reserved_bits: true,
        gbp: config.gbp,
        verify_udp_checksum: true,
        reject_zero_checksum_ipv6: ipv6 && !encap_config.zero_checksum_ipv6,
        carry_inner_vlan: true,
    };
    let sent = buf.clone();
    let again = decap(&again_config, &mut buf);
    check_decap_changes(&sent, &buf, &again);
    let again = match again {
        Ok(again) => again,
        Err(reason) => panic!("decap refused our own encapsulation: {reason}; inner {inner:02x?}"),
    };
    assert_eq!(again.vni, first.vni);
    assert_eq!(again.gbp, None);
    assert_eq!(again.outer, addrs);
    assert_eq!(again.udp_src_port, source_port);
    assert_eq!(&buf[again.inner.clone()], inner, "inner frame changed");
});
