//! Arbitrary frame sequences on arbitrary ports into `Switch::process`: it must never panic,
//! every received frame must end forwarded, dropped or consumed (the counter invariant), and
//! every action must be well formed (a payload inside its frame, a header no longer than the
//! outer headers).
//!
//! Input: a sequence of records `[ingress, length, bytes...]`: `ingress` picks one of the
//! ports 0..=10 (0 and 10 are unconfigured, 9 is a trunk) or, at 11 and above, the underlay;
//! `length` bytes follow (fewer at the end of the input). Records are processed in batches of
//! up to eight; the clock advances one second per batch.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use switchyard::fdb::{Destination, FdbConfig};
use switchyard::lb::{Backend, ConnTrackConfig, Protocol, ServiceConfig, ServiceKey, TableSize};
use switchyard::switch::ServiceSettings;
use switchyard::switch::{
    Egress, Ingress, Neighbor, Output, Payload, PortConfig, PortMode, Received, StaticEntry,
    Switch, SwitchConfig, UnderlayConfig, VniSettings, MAX_ACTION_HEADER,
};
use switchyard::time::Instant;
use switchyard::tunnel::{DecapConfig, EncapConfig};
use switchyard::wire::EthernetAddress;
use switchyard::{PortId, Vni};

fn config() -> SwitchConfig {
    let v = |n| Vni::new(n).unwrap();
    let remote = |n| IpAddr::V4(Ipv4Addr::new(198, 18, 0, n));
    let mut v100 = VniSettings::new(v(100), vec![remote(2), remote(3)]);
    v100.suppress_arp_nd = true;
    let mut v200 = VniSettings::new(v(200), vec![remote(2)]);
    v200.carry_inner_vlan = true;
    SwitchConfig {
        underlay: UnderlayConfig {
            local_ip: remote(1),
            local_mac: EthernetAddress([2, 0xee, 0, 0, 0, 1]),
            next_hop: switchyard::switch::NextHop::Static {
                default: EthernetAddress([2, 0xee, 0, 0, 0, 0xff]),
                per_vtep: Vec::new(),
            },
            encap: EncapConfig::default(),
            decap: DecapConfig::default(),
        },
        ports: (1..=8)
            .map(|p| PortConfig {
                id: PortId(p),
                mode: PortMode::Access(if p <= 4 { v(100) } else { v(200) }),
                security: None,
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
                    ..ServiceConfig::new(vec![Backend::new(
                        "198.19.0.5:8080".parse().expect("an address"),
                    )])
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
    let switch = Switch::new(config()).expect("a valid configuration");
    let mut worker = switch.worker();
    let mut output = Output::default();
    let mut records: Vec<(Ingress, Vec<u8>)> = Vec::new();
    let mut rest = data;
    while let [ingress, length, tail @ ..] = rest {
        let take = usize::from(*length).min(tail.len());
        let ingress = match *ingress {
            n @ 0..=10 => Ingress::Port(PortId(u32::from(n))),
            _ => Ingress::Underlay,
        };
        records.push((ingress, tail[..take].to_vec()));
        rest = &tail[take..];
    }
    for (second, chunk) in records.chunks_mut(8).enumerate() {
        let mut batch: Vec<Received<'_>> = chunk
            .iter_mut()
            .map(|(ingress, frame)| Received {
                ingress: *ingress,
                frame: frame.as_mut_slice(),
            })
            .collect();
        let lens: Vec<usize> = batch.iter().map(|r| r.frame.len()).collect();
        switch.process(
            &mut worker,
            &mut batch,
            Instant::from_secs(second as u64),
            &mut output,
        );
        let c = &worker.counters;
        assert_eq!(c.received, c.forwarded + c.dropped.total() + c.consumed);
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
    }
});
