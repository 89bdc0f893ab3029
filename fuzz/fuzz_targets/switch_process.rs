//! Arbitrary frame sequences on arbitrary ports into `Switch::process`: it must never panic,
//! every received frame must end forwarded, dropped or consumed (the counter invariant), and
//! every action must be well formed (a payload inside its frame, a header no longer than the
//! outer headers).
//!
//! Input: a configuration byte, then a sequence of records `[ingress, length, bytes...]`:
//! `ingress` picks one of the ports 0..=10 (0 and 10 are unconfigured, 9 is a trunk) or, at
//! 11 and above, the underlay; `length` bytes follow (fewer at the end of the input). Records
//! are processed in batches of up to eight; the clock advances one second per batch, and the
//! switch's timers (`Switch::poll`) run after each. The configuration byte's bits: 0, the
//! underlay's next hops resolved with ARP/ND (which then reads what arrives from the
//! underlay as answers to its probes) instead of fixed; 1, an IPv6 underlay; 2, port security
//! on ports 1 and 2 and a second backend for the services; 3, a reconfiguration every fourth
//! batch, back and forth between this configuration and one with bits 0 and 2 flipped (and
//! bit 1 too when bit 4 is set), with the traffic's state (learned entries, tracked flows) in
//! place. A refused change must leave the generation as it was, an accepted one advance it by
//! one.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use switchyard::fdb::{Destination, FdbConfig};
use switchyard::lb::{Backend, ConnTrackConfig, Protocol, ServiceConfig, ServiceKey, TableSize};
use switchyard::switch::ServiceSettings;
use switchyard::switch::{
    Egress, Ingress, Neighbor, NextHop, Output, Payload, PortConfig, PortMode, PortSecurity,
    Received, StaticEntry, Switch, SwitchConfig, TrafficCounters, UnderlayConfig, VniSettings,
    MAX_ACTION_HEADER,
};
use switchyard::time::Instant;
use switchyard::tunnel::{DecapConfig, EncapConfig};
use switchyard::wire::EthernetAddress;
use switchyard::{DropReason, PortId, Vni};

fn config(variant: u8) -> SwitchConfig {
    let (resolve, ipv6, secure) = (variant & 1 != 0, variant & 2 != 0, variant & 4 != 0);
    let v = |n| Vni::new(n).unwrap();
    let remote = |n: u8| {
        if ipv6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n)))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, n))
        }
    };
    let mut v100 = VniSettings::new(v(100), vec![remote(2), remote(3)]);
    v100.suppress_arp_nd = true;
    let mut v200 = VniSettings::new(v(200), vec![remote(2), remote(40)]);
    v200.carry_inner_vlan = true;
    SwitchConfig {
        underlay: UnderlayConfig {
            local_ip: remote(1),
            local_mac: EthernetAddress([2, 0xee, 0, 0, 0, 1]),
            // Resolved: VTEPs 2, 3 and the gateway (14) on the link, the rest (40) through it.
            next_hop: if resolve {
                NextHop::Resolve {
                    prefix_len: if ipv6 { 124 } else { 28 },
                    gateway: Some(remote(14)),
                    supplied: Vec::new(),
                }
            } else {
                NextHop::Static {
                    default: EthernetAddress([2, 0xee, 0, 0, 0, 0xff]),
                    per_vtep: Vec::new(),
                }
            },
            encap: EncapConfig::default(),
            decap: DecapConfig::default(),
        },
        ports: (1..=8)
            .map(|p| PortConfig {
                id: PortId(p),
                mode: PortMode::Access(if p <= 4 { v(100) } else { v(200) }),
                security: (secure && p <= 2).then(|| PortSecurity {
                    macs: vec![EthernetAddress([2, 0, 0, 0, 0, p as u8])],
                    ips: vec![
                        IpAddr::V4(Ipv4Addr::new(198, 19, 0, p as u8)),
                        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, p as u16)),
                    ],
                }),
            })
            .chain([PortConfig {
                id: PortId(9),
                mode: PortMode::Trunk(vec![(10, v(100)), (20, v(200))]),
                security: None,
            }])
            .collect(),
        vnis: vec![v100, v200],
        static_entries: vec![StaticEntry {
            vni: v(100),
            mac: EthernetAddress([2, 0, 0, 0, 0, 0x55]),
            destination: Destination::Port(PortId(3)),
        }],
        neighbors: vec![
            Neighbor {
                vni: v(100),
                ip: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2)),
                mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
            },
            Neighbor {
                vni: v(200),
                ip: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 5)),
                mac: EthernetAddress([2, 0, 0, 0, 0, 5]),
            },
            Neighbor {
                vni: v(200),
                ip: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 6)),
                mac: EthernetAddress([2, 0, 0, 0, 0, 6]),
            },
        ],
        // Small bounds, for fast runs (each builds its switch) and reachable limits.
        fdb: FdbConfig {
            capacity: 64,
            max_entries_per_vni: 48,
            max_vnis: 4,
            max_ipv6_vteps: 4,
            max_flood_members: 8,
            ..FdbConfig::default()
        },
        // Services in VNI 200 (which carries inner tags): the load balancer sees tagged and
        // untagged frames, from ports and the underlay. A small table keeps each run fast.
        services: [Protocol::Tcp, Protocol::Udp]
            .map(|protocol| ServiceSettings {
                vni: v(200),
                key: ServiceKey::new("198.19.0.100:80".parse().expect("an address"), protocol),
                service: ServiceConfig {
                    table_size: TableSize::new(31).expect("a prime"),
                    // With bit 2, a second backend: a reconfiguration adds or removes it, with
                    // tracked flows on both.
                    ..ServiceConfig::new(
                        ["198.19.0.5:8080", "198.19.0.6:8080"][..if secure { 2 } else { 1 }]
                            .iter()
                            .map(|a| Backend::new(a.parse().expect("an address")))
                            .collect(),
                    )
                },
            })
            .to_vec(),
        // A small connection table: the default (64k flows) took most of each run to build
        // (57 runs a second), and a small one is also filled by the fuzzer's flows.
        lb: switchyard::switch::LbSettings {
            conntrack: ConnTrackConfig {
                capacity: 8,
                ..ConnTrackConfig::default()
            },
            ..switchyard::switch::LbSettings::default()
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&variant, mut rest)) = data.split_first() else {
        return;
    };
    let switch = Switch::new(config(variant)).expect("a valid configuration");
    let mut worker = switch.worker();
    let mut output = Output::default();
    let mut timers = Output::default();
    let mut records: Vec<(Ingress, Vec<u8>)> = Vec::new();
    while let [ingress, length, tail @ ..] = rest {
        let take = usize::from(*length).min(tail.len());
        let ingress = match *ingress {
            n @ 0..=10 => Ingress::Port(PortId(u32::from(n))),
            _ => Ingress::Underlay,
        };
        records.push((ingress, tail[..take].to_vec()));
        rest = &tail[take..];
    }
    let flip = 0b101 | if variant & 0x10 != 0 { 0b10 } else { 0 };
    for (second, chunk) in records.chunks_mut(8).enumerate() {
        if variant & 8 != 0 && second % 4 == 3 {
            let to = if (second / 4) % 2 == 0 {
                variant ^ flip
            } else {
                variant
            };
            let generation = switch.generation();
            match switch.reconfigure(config(to)) {
                Ok(_) => assert_eq!(switch.generation(), generation + 1),
                Err(_) => assert_eq!(switch.generation(), generation),
            }
        }
        let mut batch: Vec<Received<'_>> = chunk
            .iter_mut()
            .map(|(ingress, frame)| Received {
                ingress: *ingress,
                frame: frame.as_mut_slice(),
            })
            .collect();
        let lens: Vec<usize> = batch.iter().map(|r| r.frame.len()).collect();
        let now = Instant::from_secs(second as u64);
        let before = worker.counters.clone();
        switch.process(&mut worker, &mut batch, now, &mut output);
        let c = &worker.counters;
        assert_eq!(c.received, c.forwarded + c.dropped.total() + c.consumed);
        // Every frame counted on its ingress (but one from an unknown port), every drop there
        // too, every action on its egress; a port's counts compared only with its own.
        let on_ingresses = |count: fn(&TrafficCounters) -> u64| {
            let was = |id| {
                before
                    .ports
                    .iter()
                    .find(|(p, _)| *p == id)
                    .map(|(_, t)| count(t))
            };
            let ports: u64 = c
                .ports
                .iter()
                .map(|(id, t)| count(t) - was(*id).unwrap_or(0))
                .sum();
            ports + count(&c.underlay) - count(&before.underlay)
        };
        let unknown =
            c.dropped.get(DropReason::PortUnknown) - before.dropped.get(DropReason::PortUnknown);
        assert_eq!(on_ingresses(|t| t.received), batch.len() as u64 - unknown);
        let dropped = c.dropped.total() - before.dropped.total();
        assert_eq!(on_ingresses(|t| t.dropped), dropped - unknown);
        assert_eq!(on_ingresses(|t| t.sent), output.actions.len() as u64);
        assert_eq!(c.sent - before.sent, output.actions.len() as u64);
        for action in &output.actions {
            assert!(action.header().len() <= MAX_ACTION_HEADER);
            match &action.payload {
                Payload::Received { index, range } => {
                    assert!(range.start <= range.end && range.end <= lens[*index]);
                }
                Payload::Generated(range) => {
                    assert!(range.start <= range.end && range.end <= output.generated.len());
                }
            }
            if let Egress::Port(port) = action.egress {
                assert!(
                    (1..=9).contains(&port.0),
                    "sent to an unconfigured {port:?}"
                );
            }
        }
        // The timers: ageing, and the resolver's probes, generated frames to the underlay.
        switch.poll(now, &mut timers);
        for action in &timers.actions {
            assert_eq!(action.egress, Egress::Underlay);
            let Payload::Generated(range) = &action.payload else {
                panic!("a probe that is not generated");
            };
            assert!(range.start < range.end && range.end <= timers.generated.len());
        }
    }
});
