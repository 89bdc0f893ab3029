//! The pipeline frame by frame: floods, split horizon, suppression, trunks, moves, static
//! entries, isolation and the counter invariant, with frames built by hand.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use switchyard::fdb::{Destination, FdbConfig};
use switchyard::lb::{Backend, Protocol, ServiceConfig, ServiceKey};
use switchyard::switch::{
    ConfigError, Egress, Ingress, LbSettings, Neighbor, Output, PortConfig, PortMode, Received,
    ServiceProblem, ServiceSettings, StaticEntry, Switch, SwitchConfig, TrafficCounters,
    UnderlayConfig, VniSettings, Worker,
};
use switchyard::time::Instant;
use switchyard::tunnel::{DecapConfig, EncapConfig, EncapTemplate, IpIdent, Underlay};
use switchyard::wire::EthernetAddress;
use switchyard::{DropReason, PortId, Vni};

fn vni(n: u32) -> Vni {
    Vni::new(n).unwrap()
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
const REMOTE_B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
const REMOTE_C: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3));
const REMOTE_D: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 4));
const LOCAL_MAC: EthernetAddress = EthernetAddress([0x02, 0xee, 0, 0, 0, 1]);
const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x02, 0xee, 0, 0, 0, 0xff]);

fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

/// VNI 100 on access ports 1, 2, 3 and trunk port 9 (VLAN 10), flooding to B, C and D;
/// VNI 200 on port 4 and trunk port 9 (VLAN 20), flooding to B.
fn config() -> SwitchConfig {
    let mut v100 = VniSettings::new(vni(100), vec![REMOTE_B, REMOTE_C, REMOTE_D]);
    v100.suppress_arp_nd = true;
    SwitchConfig {
        underlay: UnderlayConfig {
            local_ip: LOCAL,
            local_mac: LOCAL_MAC,
            next_hop: switchyard::switch::NextHop::Static {
                default: GATEWAY_MAC,
                per_vtep: Vec::new(),
            },
            encap: EncapConfig::default(),
            decap: DecapConfig::default(),
        },
        ports: [1, 2, 3]
            .map(|p| PortConfig {
                id: PortId(p),
                mode: PortMode::Access(vni(100)),
                security: None,
            })
            .into_iter()
            .chain([
                PortConfig {
                    id: PortId(4),
                    mode: PortMode::Access(vni(200)),
                    security: None,
                },
                PortConfig {
                    id: PortId(9),
                    mode: PortMode::Trunk(vec![(10, vni(100)), (20, vni(200))]),
                    security: None,
                },
            ])
            .collect(),
        vnis: vec![v100, VniSettings::new(vni(200), vec![REMOTE_B])],
        static_entries: vec![StaticEntry {
            vni: vni(100),
            mac: EthernetAddress(mac(0x55)),
            destination: Destination::Port(PortId(3)),
        }],
        neighbors: vec![Neighbor {
            vni: vni(100),
            ip: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2)),
            mac: EthernetAddress(mac(2)),
        }],
        fdb: FdbConfig {
            capacity: 4096,
            ..FdbConfig::default()
        },
        services: Vec::new(),
        lb: switchyard::switch::LbSettings::default(),
    }
}

/// An Ethernet + IPv4 + UDP frame of 64 bytes.
fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&50u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[198, 19, 0, src[5]]);
    f[30..34].copy_from_slice(&[198, 19, 0, dst[5]]);
    f
}

fn tagged(mut f: Vec<u8>, vid: u16) -> Vec<u8> {
    let tag = [0x81, 0x00, (vid >> 8) as u8, vid as u8];
    f.splice(12..12, tag);
    f
}

/// A frame from remote VTEP `from` in `vni`, encapsulated as that VTEP would.
fn from_vtep(from: IpAddr, vni: Vni, inner: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (from, LOCAL) else {
        unreachable!()
    };
    let template = EncapTemplate::new(
        &EncapConfig::default(),
        &Underlay::ipv4(GATEWAY_MAC, LOCAL_MAC, src, dst),
        vni,
    )
    .unwrap();
    let mut buf = vec![0u8; 50 + inner.len()];
    buf[50..].copy_from_slice(inner);
    let range = template
        .encap(&mut buf, 50..50 + inner.len(), &mut IpIdent::new(0))
        .unwrap();
    buf[range].to_vec()
}

/// Runs one frame through the switch; returns (egress, frame) per action.
fn run(
    switch: &Switch,
    worker: &mut Worker,
    ingress: Ingress,
    mut bytes: Vec<u8>,
) -> Vec<(Egress, Vec<u8>)> {
    let mut output = Output::default();
    let mut batch = [Received {
        ingress,
        frame: &mut bytes,
    }];
    let before = worker.counters.clone();
    switch.process(worker, &mut batch, Instant::from_secs(1), &mut output);
    let c = &worker.counters;
    assert_eq!(c.received, c.forwarded + c.dropped.total() + c.consumed);
    // The frame is counted on its ingress (a port, or the underlay) unless that port is
    // unknown, dropped there if it was dropped; each action on its egress. (Per port: a
    // reconfiguration between batches removes the counters of a port it removes.)
    let delta = |count: fn(&TrafficCounters) -> u64| {
        let was = |port| {
            before
                .ports
                .iter()
                .find(|(p, _)| *p == port)
                .map(|(_, t)| count(t))
        };
        c.ports
            .iter()
            .map(|&(port, ref t)| count(t) - was(port).unwrap_or(0))
            .sum::<u64>()
            + count(&c.underlay)
            - count(&before.underlay)
    };
    let unknown =
        c.dropped.get(DropReason::PortUnknown) - before.dropped.get(DropReason::PortUnknown);
    assert_eq!(delta(|t| t.received), 1 - unknown);
    assert_eq!(
        delta(|t| t.dropped),
        c.dropped.total() - before.dropped.total() - unknown
    );
    assert_eq!(delta(|t| t.sent), c.sent - before.sent);
    assert_eq!(c.sent - before.sent, output.actions.len() as u64);
    output
        .actions
        .iter()
        .map(|a| (a.egress, output.frame(a, &batch)))
        .collect()
}

fn outer_dst(frame: &[u8]) -> IpAddr {
    IpAddr::from(<[u8; 4]>::try_from(&frame[30..34]).unwrap())
}

#[test]
fn broadcast_from_a_port_floods_once_to_every_member_but_the_ingress() {
    let switch = Switch::new(config()).unwrap();
    let mut worker = switch.worker();
    let out = run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(1)),
        frame([0xff; 6], mac(1)),
    );
    let mut ports: Vec<u32> = out
        .iter()
        .filter_map(|(e, _)| match e {
            Egress::Port(p) => Some(p.0),
            Egress::Underlay => None,
        })
        .collect();
    ports.sort();
    assert_eq!(ports, [2, 3, 9], "local ports of VNI 100 but the ingress");
    let mut vteps: Vec<IpAddr> = out
        .iter()
        .filter(|(e, _)| *e == Egress::Underlay)
        .map(|(_, f)| outer_dst(f))
        .collect();
    vteps.sort();
    assert_eq!(
        vteps,
        [REMOTE_B, REMOTE_C, REMOTE_D],
        "one copy per remote VTEP"
    );
    // The trunk copy carries VLAN 10, the access copies are untagged and unchanged.
    let trunk = &out
        .iter()
        .find(|(e, _)| *e == Egress::Port(PortId(9)))
        .unwrap()
        .1;
    assert_eq!(trunk, &tagged(frame([0xff; 6], mac(1)), 10));
    let access = &out
        .iter()
        .find(|(e, _)| *e == Egress::Port(PortId(2)))
        .unwrap()
        .1;
    assert_eq!(access, &frame([0xff; 6], mac(1)));
    assert_eq!(worker.counters.forwarded, 1);
    assert_eq!(worker.counters.sent, 6);
}

#[test]
fn from_the_underlay_floods_to_local_ports_only() {
    let switch = Switch::new(config()).unwrap();
    let mut worker = switch.worker();
    let inner = frame([0xff; 6], mac(0x20));
    let out = run(
        &switch,
        &mut worker,
        Ingress::Underlay,
        from_vtep(REMOTE_B, vni(100), &inner),
    );
    let mut egresses: Vec<Egress> = out.iter().map(|(e, _)| *e).collect();
    egresses.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        egresses,
        [1, 2, 3, 9].map(|p| Egress::Port(PortId(p))),
        "split horizon: no VTEP gets a copy"
    );
    // Learned: the inner source MAC is behind B.
    assert_eq!(
        switch.fdb().lookup(vni(100), EthernetAddress(mac(0x20))),
        Some(Destination::Vtep(REMOTE_B))
    );
    // A frame from C for that MAC is never sent back into the tunnel.
    let out = run(
        &switch,
        &mut worker,
        Ingress::Underlay,
        from_vtep(REMOTE_C, vni(100), &frame(mac(0x20), mac(0x21))),
    );
    assert!(out.is_empty());
    assert_eq!(worker.counters.dropped.get(DropReason::SplitHorizon), 1);
}

#[test]
fn known_unicast_goes_to_one_place() {
    let switch = Switch::new(config()).unwrap();
    let mut worker = switch.worker();
    run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(2)),
        frame([0xff; 6], mac(2)),
    );
    let out = run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(1)),
        frame(mac(2), mac(1)),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0], (Egress::Port(PortId(2)), frame(mac(2), mac(1))));
    // Back to the ingress port: nowhere to go.
    let out = run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(2)),
        frame(mac(2), mac(7)),
    );
    assert!(out.is_empty());
    assert_eq!(worker.counters.dropped.get(DropReason::NoDestination), 1);
}

/// A switch that has learned `mac(0x30)` behind VTEP C in VNI 100, from a frame it sent to
/// `mac(1)`.
fn knowing_a_remote_mac() -> (Switch, Worker) {
    let switch = Switch::new(config()).unwrap();
    let mut worker = switch.worker();
    let inner = frame(mac(1), mac(0x30));
    run(
        &switch,
        &mut worker,
        Ingress::Underlay,
        from_vtep(REMOTE_C, vni(100), &inner),
    );
    (switch, worker)
}

#[test]
fn remote_unicast_is_encapsulated_to_its_vtep() {
    let (switch, mut worker) = knowing_a_remote_mac();
    let out = run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(1)),
        frame(mac(0x30), mac(1)),
    );
    assert_eq!(out.len(), 1);
    let (egress, outer) = &out[0];
    assert_eq!(*egress, Egress::Underlay);
    assert_eq!(outer_dst(outer), REMOTE_C);
    let mut outer = outer.clone();
    let d = switchyard::tunnel::decap(&DecapConfig::default(), &mut outer).unwrap();
    assert_eq!(d.vni, vni(100));
    assert_eq!(&outer[d.inner], &frame(mac(0x30), mac(1))[..]);
}

/// A frame too large to encapsulate (DF set) towards a remote MAC: dropped and counted, the
/// sender's port gets ICMP "fragmentation needed", and nothing at all goes to the underlay.
#[test]
fn too_large_to_encapsulate_answers_the_sender_and_sends_nothing_to_the_underlay() {
    let (switch, mut worker) = knowing_a_remote_mac();
    // 1500 bytes of IPv4 with DF: 1550 with VXLAN, over the 1500-byte underlay.
    let mut big = frame(mac(0x30), mac(1));
    big.resize(14 + 1500, 0);
    big[16..18].copy_from_slice(&1500u16.to_be_bytes());
    big[20] = 0x40;
    let dropped = worker.counters.dropped.get(DropReason::MtuExceeded);
    let out = run(&switch, &mut worker, Ingress::Port(PortId(1)), big);
    assert_eq!(
        worker.counters.dropped.get(DropReason::MtuExceeded),
        dropped + 1
    );
    assert_eq!(out.len(), 1, "only the ICMP error: {out:?}");
    let (egress, reply) = &out[0];
    assert_eq!(*egress, Egress::Port(PortId(1)));
    assert_eq!(&reply[..6], &mac(1), "to the sender");
    assert_eq!(
        (reply[23], reply[34], reply[35]),
        (1, 3, 4),
        "ICMP fragmentation needed"
    );
}

#[test]
fn mac_moves_and_static_entries_do_not() {
    let switch = Switch::new(config()).unwrap();
    let mut worker = switch.worker();
    run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(1)),
        frame([0xff; 6], mac(9)),
    );
    run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(2)),
        frame([0xff; 6], mac(9)),
    );
    assert_eq!(
        switch.fdb().lookup(vni(100), EthernetAddress(mac(9))),
        Some(Destination::Port(PortId(2)))
    );
    assert_eq!(switch.fdb().counters().moved, 1);
    // 02:..:55 is bound to port 3 by a static entry: from port 1 it is dropped.
    let out = run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(1)),
        frame([0xff; 6], mac(0x55)),
    );
    assert!(out.is_empty());
    assert_eq!(worker.counters.dropped.get(DropReason::FdbStaticMove), 1);
    assert_eq!(
        switch.fdb().lookup(vni(100), EthernetAddress(mac(0x55))),
        Some(Destination::Port(PortId(3)))
    );
}

#[test]
fn arp_for_a_known_neighbor_is_answered_not_flooded() {
    let switch = Switch::new(config()).unwrap();
    let mut worker = switch.worker();
    let request = switchyard::switch::neighbor::ArpRequest {
        sender_mac: EthernetAddress(mac(1)),
        sender_ip: Ipv4Addr::new(198, 19, 0, 1),
        target_ip: Ipv4Addr::new(198, 19, 0, 2),
    };
    let mut arp = vec![0u8; 42];
    // A request as a host sends it: broadcast, written by the resolver's writer.
    switchyard::switch::neighbor::write_arp_request(
        request.sender_mac,
        request.sender_ip,
        request.target_ip,
        &mut arp,
    )
    .unwrap();
    let out = run(&switch, &mut worker, Ingress::Port(PortId(1)), arp.clone());
    assert_eq!(out.len(), 1, "answered, not flooded");
    let mut expected = vec![0u8; 42];
    switchyard::switch::neighbor::write_arp_reply(&request, EthernetAddress(mac(2)), &mut expected)
        .unwrap();
    assert_eq!(out[0], (Egress::Port(PortId(1)), expected));
    assert_eq!(worker.counters.consumed, 1);
    // An unknown target floods as usual.
    switchyard::switch::neighbor::write_arp_request(
        request.sender_mac,
        request.sender_ip,
        Ipv4Addr::new(198, 19, 0, 99),
        &mut arp,
    )
    .unwrap();
    let out = run(&switch, &mut worker, Ingress::Port(PortId(1)), arp);
    assert_eq!(out.len(), 6);
}

#[test]
fn trunk_vlans_map_to_vnis() {
    let switch = Switch::new(config()).unwrap();
    let mut worker = switch.worker();
    // VLAN 20 is VNI 200: port 4 and VTEP B get it, untagged inside.
    let out = run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(9)),
        tagged(frame([0xff; 6], mac(0x40)), 20),
    );
    let mut egresses: Vec<String> = out.iter().map(|(e, _)| format!("{e:?}")).collect();
    egresses.sort();
    assert_eq!(egresses, ["Port(PortId(4))", "Underlay"]);
    let port4 = &out
        .iter()
        .find(|(e, _)| *e == Egress::Port(PortId(4)))
        .unwrap()
        .1;
    assert_eq!(port4, &frame([0xff; 6], mac(0x40)));
    // Unmapped VLAN and untagged frames on a trunk are dropped.
    for bytes in [
        tagged(frame([0xff; 6], mac(0x41)), 30),
        frame([0xff; 6], mac(0x41)),
    ] {
        assert!(run(&switch, &mut worker, Ingress::Port(PortId(9)), bytes).is_empty());
    }
    assert_eq!(worker.counters.dropped.get(DropReason::VlanUnmapped), 2);
    // A tagged frame on an access port of a VNI that carries no tags.
    assert!(run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(1)),
        tagged(frame([0xff; 6], mac(0x42)), 10)
    )
    .is_empty());
    assert_eq!(worker.counters.dropped.get(DropReason::InnerVlanTagged), 1);
}

#[test]
fn unknown_port_and_vni_are_dropped_and_counted() {
    let switch = Switch::new(config()).unwrap();
    let mut worker = switch.worker();
    assert!(run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(77)),
        frame([0xff; 6], mac(1))
    )
    .is_empty());
    let inner = frame([0xff; 6], mac(0x20));
    assert!(run(
        &switch,
        &mut worker,
        Ingress::Underlay,
        from_vtep(REMOTE_B, vni(999), &inner)
    )
    .is_empty());
    assert_eq!(worker.counters.dropped.get(DropReason::PortUnknown), 1);
    assert_eq!(worker.counters.dropped.get(DropReason::VniUnknown), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]

    /// Per-VNI isolation: whatever enters in VNI 200 (port 4, trunk VLAN 20, or the tunnel
    /// with VNI 200) never leaves on a port of VNI 100 only, on the trunk tagged 10, or in a
    /// tunnel with another VNI, translated by VNI 200's service or not; and the counter
    /// invariant holds for any bytes on any port.
    #[test]
    fn vni_isolation(
        frames in prop::collection::vec(
            (0usize..3, any::<[u8; 6]>(), any::<[u8; 6]>(), prop::collection::vec(any::<u8>(), 0..80)),
            1..40,
        )
    ) {
        let switch = Switch::new(config_with_service()).unwrap();
        let mut worker = switch.worker();
        for (kind, dst, src, tail) in frames {
            let mut inner = frame(dst, src);
            inner.extend_from_slice(&tail);
            let (ingress, bytes) = match kind {
                0 => (Ingress::Port(PortId(4)), inner),
                1 => (Ingress::Port(PortId(9)), tagged(inner, 20)),
                _ => (Ingress::Underlay, from_vtep(REMOTE_B, vni(200), &inner)),
            };
            for (egress, out) in run(&switch, &mut worker, ingress, bytes) {
                match egress {
                    Egress::Port(PortId(4)) => {}
                    Egress::Port(PortId(9)) => {
                        prop_assert_eq!(&out[12..16], &[0x81, 0x00, 0x00, 20][..]);
                    }
                    Egress::Port(other) => prop_assert!(false, "left VNI 200 on {other:?}"),
                    Egress::Underlay => {
                        let mut out = out;
                        let d = switchyard::tunnel::decap(&DecapConfig::default(), &mut out).unwrap();
                        prop_assert_eq!(d.vni, vni(200));
                    }
                }
            }
        }
    }

    /// Arbitrary bytes on any ingress never panic and keep the counter invariant (checked
    /// in `run`), with a service in VNI 200.
    #[test]
    fn arbitrary_frames(
        frames in prop::collection::vec((0u32..11, prop::collection::vec(any::<u8>(), 0..200)), 1..30)
    ) {
        let switch = Switch::new(config_with_service()).unwrap();
        let mut worker = switch.worker();
        for (port, bytes) in frames {
            let ingress = if port == 10 { Ingress::Underlay } else { Ingress::Port(PortId(port)) };
            run(&switch, &mut worker, ingress, bytes);
        }
    }
}

#[test]
fn port_security_drops_spoofed_sources() {
    let mut config = config();
    config.ports[0].security = Some(switchyard::switch::PortSecurity {
        macs: vec![EthernetAddress(mac(1))],
        ips: vec![IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1))],
    });
    let switch = Switch::new(config).unwrap();
    let mut worker = switch.worker();
    // frame() puts 198.19.0.<last MAC byte> as the IPv4 source.
    assert_eq!(
        run(
            &switch,
            &mut worker,
            Ingress::Port(PortId(1)),
            frame([0xff; 6], mac(1))
        )
        .len(),
        6,
        "the allowed MAC and IP pass"
    );
    assert!(run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(1)),
        frame([0xff; 6], mac(7))
    )
    .is_empty());
    assert_eq!(worker.counters.dropped.get(DropReason::SpoofedSourceMac), 1);
    let mut spoofed_ip = frame([0xff; 6], mac(1));
    spoofed_ip[26..30].copy_from_slice(&[198, 19, 0, 66]);
    assert!(run(&switch, &mut worker, Ingress::Port(PortId(1)), spoofed_ip).is_empty());
    // ARP claiming another sender IP.
    let mut arp = vec![0u8; 42];
    switchyard::switch::neighbor::write_arp_request(
        EthernetAddress(mac(1)),
        Ipv4Addr::new(198, 19, 0, 66),
        Ipv4Addr::new(198, 19, 0, 99),
        &mut arp,
    )
    .unwrap();
    assert!(run(&switch, &mut worker, Ingress::Port(PortId(1)), arp.clone()).is_empty());
    assert_eq!(worker.counters.dropped.get(DropReason::SpoofedSourceIp), 2);
    // An ARP probe (sender 0.0.0.0) is allowed.
    arp[28..32].fill(0);
    assert!(!run(&switch, &mut worker, Ingress::Port(PortId(1)), arp).is_empty());
    // The spoofed source was never learned.
    assert_eq!(switch.fdb().lookup(vni(100), EthernetAddress(mac(7))), None);
    // Port 2 has no security.
    assert!(!run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(2)),
        frame([0xff; 6], mac(7))
    )
    .is_empty());
}

#[test]
fn learned_entries_age_only_from_their_own_traffic() {
    let mut config = config();
    config.vnis[0].ageing = std::time::Duration::from_secs(10);
    let switch = Switch::new(config).unwrap();
    let mut worker = switch.worker();
    let mut output = Output::default();
    let mut send = |port: u32, bytes: Vec<u8>, second: u64| {
        let mut bytes = bytes;
        let mut batch = [Received {
            ingress: Ingress::Port(PortId(port)),
            frame: &mut bytes,
        }];
        switch.process(
            &mut worker,
            &mut batch,
            Instant::from_secs(second),
            &mut output,
        );
    };
    send(2, frame([0xff; 6], mac(2)), 0);
    // Traffic towards mac(2) for 20 s does not keep it alive...
    for second in 1..20 {
        send(1, frame(mac(2), mac(1)), second);
    }
    switch.fdb().age(Instant::from_secs(20));
    assert_eq!(switch.fdb().lookup(vni(100), EthernetAddress(mac(2))), None);
    // ...while mac(1), which sent all along, stays.
    assert_eq!(
        switch.fdb().lookup(vni(100), EthernetAddress(mac(1))),
        Some(Destination::Port(PortId(1)))
    );
}

#[test]
fn reconfiguration_applies_to_the_next_batch_and_refusals_change_nothing() {
    let switch = Switch::new(config()).unwrap();
    let mut worker = switch.worker();
    // Learn a MAC on port 2, then take port 2 out of the configuration and VTEP D out of
    // VNI 100's flood list.
    run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(2)),
        frame([0xff; 6], mac(2)),
    );
    let mut changed = config();
    changed.ports.retain(|p| p.id != PortId(2));
    changed.vnis[0].remote_vteps.retain(|&ip| ip != REMOTE_D);
    switch.reconfigure(changed.clone()).unwrap();
    assert_eq!(switch.generation(), 1);
    assert_eq!(
        switch.fdb().lookup(vni(100), EthernetAddress(mac(2))),
        None,
        "flushed"
    );
    let out = run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(1)),
        frame([0xff; 6], mac(1)),
    );
    let mut egresses: Vec<String> = out
        .iter()
        .map(|(e, f)| match e {
            Egress::Port(p) => format!("port {}", p.0),
            Egress::Underlay => format!("vtep {}", outer_dst(f)),
        })
        .collect();
    egresses.sort();
    assert_eq!(
        egresses,
        ["port 3", "port 9", "vtep 198.18.0.2", "vtep 198.18.0.3"]
    );
    // Frames from the removed port are now dropped.
    assert!(run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(2)),
        frame([0xff; 6], mac(2))
    )
    .is_empty());
    assert_eq!(worker.counters.dropped.get(DropReason::PortUnknown), 1);
    // The per-port counters followed the ports: port 2 is gone, port 1 kept its counts.
    assert!(worker.counters.ports.iter().all(|(p, _)| *p != PortId(2)));
    let port1 = worker
        .counters
        .ports
        .iter()
        .find(|(p, _)| *p == PortId(1))
        .unwrap()
        .1;
    assert_eq!(port1.received, 1);

    // An invalid change is refused, naming the fault, and nothing changes.
    let mut invalid = changed.clone();
    invalid.ports.push(PortConfig::access(PortId(1), vni(100)));
    assert_eq!(
        switch.reconfigure(invalid).unwrap_err(),
        switchyard::switch::ConfigError::DuplicatePort(PortId(1))
    );
    assert_eq!(switch.generation(), 1);
    assert_eq!(switch.config(), changed);
    let mut resized = changed.clone();
    resized.fdb.capacity *= 2;
    assert_eq!(
        switch.reconfigure(resized).unwrap_err(),
        switchyard::switch::ConfigError::FdbBoundsFixed
    );
    // A static entry added at run time takes effect.
    let mut with_static = changed;
    with_static.static_entries.push(StaticEntry {
        vni: vni(100),
        mac: EthernetAddress(mac(0x77)),
        destination: Destination::Vtep(REMOTE_C),
    });
    switch.reconfigure(with_static).unwrap();
    let out = run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(1)),
        frame(mac(0x77), mac(1)),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(outer_dst(&out[0].1), REMOTE_C);
}

#[test]
fn underlay_next_hops_are_resolved_with_arp() {
    use switchyard::switch::neighbor::{parse_arp_request, write_arp_reply, ArpRequest};
    use switchyard::switch::NextHop;

    const B_MAC: EthernetAddress = EthernetAddress([0x02, 0xbb, 0, 0, 0, 2]);
    const C_MAC: EthernetAddress = EthernetAddress([0x02, 0xcc, 0, 0, 0, 3]);
    let mut config = config();
    config.underlay.next_hop = NextHop::Resolve {
        prefix_len: 24,
        gateway: None,
        supplied: vec![(REMOTE_C, C_MAC)],
    };
    for (n, vtep) in [(0x61, REMOTE_B), (0x62, REMOTE_C), (0x63, REMOTE_D)] {
        config.static_entries.push(StaticEntry {
            vni: vni(100),
            mac: EthernetAddress(mac(n)),
            destination: Destination::Vtep(vtep),
        });
    }
    let switch = Switch::new(config).unwrap();
    let mut worker = switch.worker();

    // To B: not resolved yet. The frame is dropped and an ARP request goes out instead.
    let out = run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(1)),
        frame(mac(0x61), mac(1)),
    );
    assert_eq!(
        worker.counters.dropped.get(DropReason::NextHopUnresolved),
        1
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, Egress::Underlay);
    let request = parse_arp_request(&out[0].1).expect("an ARP request");
    assert_eq!(
        (
            request.sender_mac,
            IpAddr::V4(request.sender_ip),
            IpAddr::V4(request.target_ip)
        ),
        (LOCAL_MAC, LOCAL, REMOTE_B)
    );
    // B answers (as its kernel would); the answer is consumed.
    let mut reply = vec![0u8; 42];
    let asked = ArpRequest {
        sender_mac: LOCAL_MAC,
        sender_ip: Ipv4Addr::new(198, 18, 0, 1),
        target_ip: Ipv4Addr::new(198, 18, 0, 2),
    };
    write_arp_reply(&asked, B_MAC, &mut reply).unwrap();
    assert!(run(&switch, &mut worker, Ingress::Underlay, reply).is_empty());
    assert_eq!(worker.counters.consumed, 1);
    // Now the frame goes out, to B's MAC.
    let out = run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(1)),
        frame(mac(0x61), mac(1)),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1[..6], B_MAC.0, "outer destination MAC");
    assert_eq!(outer_dst(&out[0].1), REMOTE_B);

    // C's MAC was supplied by the host: no probe, straight out.
    let out = run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(1)),
        frame(mac(0x62), mac(1)),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1[..6], C_MAC.0);

    // D never answers: a probe now and two retries from the timers, then it has failed.
    let out = run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(1)),
        frame(mac(0x63), mac(1)),
    );
    assert_eq!(out.len(), 1, "the first probe");
    let mut output = Output::default();
    let mut probes = 0;
    for second in 2..6 {
        switch.poll(Instant::from_secs(second), &mut output);
        probes += output.actions.len();
    }
    assert_eq!(probes, 2, "two retries, then failed");
    let failed = switch
        .next_hops()
        .into_iter()
        .find(|(ip, _, _)| *ip == REMOTE_D)
        .unwrap();
    assert!(matches!(
        failed.2,
        switchyard::switch::resolver::EntryState::Failed { .. }
    ));
}

/// VNI 200 (no ARP suppression) with the UDP service 198.19.0.100:80 -> 198.19.0.5:8080, on
/// a Maglev table of 251 slots (quick to build for every proptest case).
fn config_with_service() -> SwitchConfig {
    let mut config = config();
    config.neighbors.push(Neighbor {
        vni: vni(200),
        ip: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 5)),
        mac: EthernetAddress(mac(5)),
    });
    config.services.push(ServiceSettings {
        vni: vni(200),
        key: ServiceKey::new("198.19.0.100:80".parse().unwrap(), Protocol::Udp),
        service: ServiceConfig {
            table_size: switchyard::lb::TableSize::new(251).unwrap(),
            ..ServiceConfig::new(vec![Backend::new("198.19.0.5:8080".parse().unwrap())])
        },
    });
    config
}

#[test]
fn service_vips_are_answered_and_translated_and_nothing_else_uses_the_virtual_mac() {
    let switch = Switch::new(config_with_service()).unwrap();
    let mut worker = switch.worker();
    let virtual_mac = LbSettings::DEFAULT_VIRTUAL_MAC;
    let vip = Ipv4Addr::new(198, 19, 0, 100);

    // ARP for the VIP is answered with the virtual MAC, though VNI 200 does not suppress.
    let request = switchyard::switch::neighbor::ArpRequest {
        sender_mac: EthernetAddress(mac(4)),
        sender_ip: Ipv4Addr::new(198, 19, 0, 4),
        target_ip: vip,
    };
    let mut arp = vec![0u8; 42];
    switchyard::switch::neighbor::write_arp_request(
        request.sender_mac,
        request.sender_ip,
        vip,
        &mut arp,
    )
    .unwrap();
    let out = run(&switch, &mut worker, Ingress::Port(PortId(4)), arp);
    let mut expected = vec![0u8; 42];
    switchyard::switch::neighbor::write_arp_reply(&request, virtual_mac, &mut expected).unwrap();
    assert_eq!(out, [(Egress::Port(PortId(4)), expected)]);

    // A datagram to the VIP goes to the backend's MAC, address and port.
    let udp_to = |port: u16, protocol: u8| {
        let mut f = frame(virtual_mac.0, mac(4));
        f[23] = protocol;
        f[30..34].copy_from_slice(&vip.octets());
        f[34..36].copy_from_slice(&5000u16.to_be_bytes());
        f[36..38].copy_from_slice(&port.to_be_bytes());
        f[38..40].copy_from_slice(&30u16.to_be_bytes());
        f
    };
    let out = run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(4)),
        udp_to(80, 17),
    );
    assert!(!out.is_empty());
    for (egress, f) in &out {
        let inner = match egress {
            Egress::Port(_) => &f[..],
            Egress::Underlay => &f[50..],
        };
        let inner = if inner[12..14] == [0x81, 0x00] {
            // The trunk's copy carries VLAN 20's tag.
            [&inner[..12], &inner[16..]].concat()
        } else {
            inner.to_vec()
        };
        assert_eq!(inner[..6], mac(5), "to the backend's MAC");
        assert_eq!(inner[6..12], mac(4), "from the client's");
        assert_eq!(inner[30..34], [198, 19, 0, 5]);
        assert_eq!(inner[36..38], 8080u16.to_be_bytes());
    }
    // Its reply, from the backend's port (learned from the trunk side here), is translated
    // back: source VIP:80 and the virtual MAC.
    let mut reply = frame(mac(4), mac(5));
    reply[26..30].copy_from_slice(&[198, 19, 0, 5]);
    reply[30..34].copy_from_slice(&[198, 19, 0, 4]);
    reply[34..36].copy_from_slice(&8080u16.to_be_bytes());
    reply[36..38].copy_from_slice(&5000u16.to_be_bytes());
    reply[38..40].copy_from_slice(&30u16.to_be_bytes());
    let out = run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(9)),
        tagged(reply, 20),
    );
    assert_eq!(out.len(), 1, "to port 4, where mac(4) was learned");
    let (egress, f) = &out[0];
    assert_eq!(*egress, Egress::Port(PortId(4)));
    assert_eq!(f[6..12], virtual_mac.0);
    assert_eq!(f[26..30], vip.octets());
    assert_eq!(f[34..36], 80u16.to_be_bytes());

    // A ping to the VIP, and a port the VIP does not serve, stop at the virtual MAC.
    let dropped = worker.counters.dropped.total();
    assert!(run(&switch, &mut worker, Ingress::Port(PortId(4)), udp_to(0, 1)).is_empty());
    assert!(run(
        &switch,
        &mut worker,
        Ingress::Port(PortId(4)),
        udp_to(81, 17)
    )
    .is_empty());
    assert_eq!(worker.counters.dropped.total(), dropped + 2);
    assert_eq!(
        worker
            .counters
            .dropped
            .get(DropReason::VirtualMacNotService),
        2
    );
    // VNI 100 has no services: the VIP's address means nothing there (suppressed VNI, unknown
    // neighbour: the request floods).
    let mut arp = vec![0u8; 42];
    switchyard::switch::neighbor::write_arp_request(
        EthernetAddress(mac(1)),
        Ipv4Addr::new(198, 19, 0, 1),
        vip,
        &mut arp,
    )
    .unwrap();
    assert_eq!(
        run(&switch, &mut worker, Ingress::Port(PortId(1)), arp).len(),
        6
    );
}

#[test]
fn service_configuration_errors_name_the_service() {
    let key = ServiceKey::new("198.19.0.100:80".parse().unwrap(), Protocol::Udp);
    let service_error = |config: SwitchConfig| match Switch::new(config).map(|_| ()) {
        Err(ConfigError::Service { key: k, problem }) => {
            assert_eq!(k, key);
            problem
        }
        other => panic!("{other:?}"),
    };
    // A backend whose MAC the VNI does not know.
    let mut config = config_with_service();
    config.neighbors.retain(|n| n.vni != vni(200));
    assert_eq!(
        service_error(config),
        ServiceProblem::BackendWithoutNeighbor(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 5)))
    );
    // A VIP that is a host's address.
    let mut config = config_with_service();
    config.neighbors.push(Neighbor {
        vni: vni(200),
        ip: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 100)),
        mac: EthernetAddress(mac(9)),
    });
    assert_eq!(service_error(config), ServiceProblem::VipIsNeighbor);
    // The same backend twice: the load balancer's own error.
    let mut config = config_with_service();
    config.services[0]
        .service
        .backends
        .push(Backend::new("198.19.0.5:8080".parse().unwrap()));
    assert!(matches!(service_error(config), ServiceProblem::Lb(_)));
    // A VNI without its own configuration.
    let mut config = config_with_service();
    config.services[0].vni = vni(300);
    assert_eq!(service_error(config), ServiceProblem::VniUnknown(vni(300)));

    // At run time: a refused change leaves the services as they were, and the load
    // balancer's settings are fixed.
    let switch = Switch::new(config_with_service()).unwrap();
    let mut bad = config_with_service();
    bad.services[0].service.backends.clear();
    bad.services[0]
        .service
        .backends
        .push(Backend::new("198.19.0.6:8080".parse().unwrap()));
    assert!(switch.reconfigure(bad).is_err());
    assert_eq!(switch.config(), config_with_service());
    let mut moved_mac = config_with_service();
    moved_mac.lb.virtual_mac = EthernetAddress(mac(0x77));
    assert_eq!(
        switch.reconfigure(moved_mac).unwrap_err(),
        ConfigError::LbSettingsFixed
    );
    // Removing the service reports every slot moving away from its backend.
    let mut without = config_with_service();
    without.services.clear();
    let changes = switch.reconfigure(without).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].key, key);
    assert_eq!(changes[0].disruption.slots_moved, 251);
}

#[test]
fn local_destination_names_the_one_local_port_of_a_known_unicast() {
    let switch = Switch::new(config()).unwrap();
    let worker = switch.worker();
    let known = frame(mac(0x55), mac(1)); // static entry: port 3
    let port = |p| Ingress::Port(PortId(p));
    assert_eq!(
        switch.local_destination(&worker, port(1), &known),
        Some(PortId(3))
    );
    assert_eq!(
        switch.local_destination(&worker, port(3), &known),
        None,
        "never back out of its ingress"
    );
    assert_eq!(
        switch.local_destination(&worker, port(1), &frame([0xff; 6], mac(1))),
        None,
        "broadcast: flooded"
    );
    assert_eq!(
        switch.local_destination(&worker, port(1), &frame(mac(0x77), mac(1))),
        None,
        "unknown: flooded"
    );
    assert_eq!(
        switch.local_destination(&worker, port(4), &known),
        None,
        "another VNI does not know it"
    );
    // The trunk: VLAN 10 is VNI 100, VLAN 20 is VNI 200; untagged is refused.
    assert_eq!(
        switch.local_destination(&worker, port(9), &tagged(known.clone(), 10)),
        Some(PortId(3))
    );
    assert_eq!(
        switch.local_destination(&worker, port(9), &tagged(known.clone(), 20)),
        None
    );
    assert_eq!(switch.local_destination(&worker, port(9), &known), None);
    assert_eq!(
        switch.local_destination(&worker, Ingress::Underlay, &known),
        None
    );
    assert_eq!(
        switch.local_destination(&worker, port(1), &known[..5]),
        None
    );
}

#[test]
fn a_service_translates_a_datagram_behind_an_inner_vlan_tag() {
    // VNI 200 carries inner tags: a tagged datagram to the VIP from its access port is
    // translated behind the tag (the IPv4 header 4 bytes further on) and keeps the tag.
    let mut config = config_with_service();
    for settings in &mut config.vnis {
        if settings.vni == vni(200) {
            settings.carry_inner_vlan = true;
        }
    }
    let switch = Switch::new(config).unwrap();
    let mut worker = switch.worker();
    let vip = Ipv4Addr::new(198, 19, 0, 100);
    let mut f = frame(LbSettings::DEFAULT_VIRTUAL_MAC.0, mac(4));
    f[30..34].copy_from_slice(&vip.octets());
    f[34..36].copy_from_slice(&5000u16.to_be_bytes());
    f[36..38].copy_from_slice(&80u16.to_be_bytes());
    f[38..40].copy_from_slice(&30u16.to_be_bytes());
    let out = run(&switch, &mut worker, Ingress::Port(PortId(4)), tagged(f, 7));
    let underlay: Vec<&Vec<u8>> = out
        .iter()
        .filter(|(egress, _)| *egress == Egress::Underlay)
        .map(|(_, f)| f)
        .collect();
    assert_eq!(underlay.len(), 1, "flooded to VTEP B: {out:?}");
    let inner = &underlay[0][50..];
    assert_eq!(inner[..6], mac(5), "to the backend's MAC");
    assert_eq!(inner[12..16], [0x81, 0x00, 0, 7], "the inner tag stays");
    assert_eq!(inner[34..38], [198, 19, 0, 5], "to the backend's address");
    assert_eq!(inner[40..42], 8080u16.to_be_bytes(), "and port");
}

#[test]
fn each_translated_frame_goes_to_its_backends_current_mac() {
    // More services (one backend each) than a worker keeps backend MACs for in one load
    // balancer (64), so that some share a place there: frames to all of them, in one batch
    // and across batches, each reach their own backend's MAC. Then every backend's neighbour
    // entry changes: the next frames reach the new MACs.
    const SERVICES: u8 = 80;
    let backend_mac = |generation: u8, i: u8| EthernetAddress([2, 0, 0, 0, generation, i]);
    let mut config = config_with_service();
    config.services.clear();
    for i in 1..=SERVICES {
        config.neighbors.push(Neighbor {
            vni: vni(200),
            ip: IpAddr::V4(Ipv4Addr::new(198, 19, 1, i)),
            mac: backend_mac(1, i),
        });
        config.services.push(ServiceSettings {
            vni: vni(200),
            key: ServiceKey::new((Ipv4Addr::new(198, 19, 2, i), 80).into(), Protocol::Udp),
            service: ServiceConfig::new(vec![Backend::new(
                (Ipv4Addr::new(198, 19, 1, i), 8080).into(),
            )]),
        });
    }
    let switch = Switch::new(config.clone()).unwrap();
    let mut worker = switch.worker();
    // A datagram from port 4 to each VIP of `vips`; what reached VTEP B (VNI 200's only
    // remote; the backends' MACs are not learned, so each frame floods there once): the
    // destination MAC and address of each inner frame.
    let sent = |worker: &mut Worker, vips: &[u8]| {
        let mut frames: Vec<Vec<u8>> = vips
            .iter()
            .map(|&i| {
                let mut f = frame(LbSettings::DEFAULT_VIRTUAL_MAC.0, mac(4));
                f[30..34].copy_from_slice(&[198, 19, 2, i]);
                f[34..36].copy_from_slice(&5000u16.to_be_bytes());
                f[36..38].copy_from_slice(&80u16.to_be_bytes());
                f[38..40].copy_from_slice(&30u16.to_be_bytes());
                f
            })
            .collect();
        let mut batch: Vec<Received<'_>> = frames
            .iter_mut()
            .map(|f| Received {
                ingress: Ingress::Port(PortId(4)),
                frame: f,
            })
            .collect();
        let mut output = Output::default();
        switch.process(worker, &mut batch, Instant::from_secs(1), &mut output);
        output
            .actions
            .iter()
            .filter(|a| a.egress == Egress::Underlay)
            .map(|a| {
                let f = output.frame(a, &batch);
                (EthernetAddress::from_bytes(&f[50..56]), f[80..84].to_vec())
            })
            .collect::<Vec<_>>()
    };
    let expected = |generation: u8, vips: &[u8]| {
        vips.iter()
            .map(|&i| (backend_mac(generation, i), vec![198, 19, 1, i]))
            .collect::<Vec<_>>()
    };
    let all: Vec<u8> = (1..=SERVICES).collect();
    let backwards: Vec<u8> = all.iter().rev().copied().collect();
    for vips in [&all, &backwards, &all] {
        assert_eq!(sent(&mut worker, vips), expected(1, vips));
    }
    for neighbor in &mut config.neighbors {
        if neighbor.mac.0[..5] == [2, 0, 0, 0, 1] {
            neighbor.mac.0[4] = 2;
        }
    }
    switch.reconfigure(config).unwrap();
    for vips in [&backwards, &all] {
        assert_eq!(sent(&mut worker, vips), expected(2, vips));
    }
    assert_eq!(
        worker.counters.dropped.get(DropReason::LbBackendUnresolved),
        0
    );
}
