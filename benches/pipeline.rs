//! The switch pipeline over batches of 256 frames, with a forwarding table of 100k entries.
//!
//! `cargo bench --bench pipeline`. `Throughput::Elements(256)`: time per iteration / 256 is
//! the time per frame. What is timed is `Switch::process` alone: classification, learning
//! (every source is known and fresh, as in steady state), ARP/ND checks, service
//! translation, lookup, encap or decap, and writing the actions; not the transmission of the
//! actions.
//!
//! - `access_to_tunnel`, `tunnel_to_access`: known unicast between local hosts and hosts
//!   behind 16 remote VTEPs.
//! - `access_to_service_tunnel/64`: UDP from local clients to a service VIP (256 flows, each
//!   tracked after the first pass, as in steady state) translated to one of 16 backends behind
//!   remote VTEPs, and encapsulated. The translation rewrites the frames, so each iteration
//!   gets fresh copies (made outside the timing).
//! - `flood_4_remotes/64`: broadcasts from a port alone in its VNI with 4 remote VTEPs: four
//!   encapsulated copies per frame (head-end replication, no copy of the inner frame).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use switchyard::fdb::{Destination, FdbConfig};
use switchyard::lb::{Backend, Protocol, ServiceConfig, ServiceKey};
use switchyard::switch::{
    Ingress, LbSettings, Neighbor, Output, PortConfig, PortMode, Received, ServiceSettings, Switch,
    SwitchConfig, UnderlayConfig, VniSettings,
};
use switchyard::time::Instant;
use switchyard::tunnel::{DecapConfig, EncapConfig, EncapTemplate, IpIdent, Underlay};
use switchyard::wire::EthernetAddress;
use switchyard::{PortId, Vni};

const BATCH: usize = 256;
const FDB_ENTRIES: u32 = 100_000;
const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const LOCAL_MAC: EthernetAddress = EthernetAddress([0x02, 0xee, 0, 0, 0, 1]);
const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x02, 0xee, 0, 0, 0, 0xff]);
const PORTS: u32 = 8;
const REMOTES: u32 = 16;
/// The flood benchmark's port, alone in VNI 200 with four remote VTEPs.
const FLOOD_PORT: PortId = PortId(100);
const FLOOD_REMOTES: u32 = 4;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
const BACKENDS: u32 = 16;

fn vni() -> Vni {
    Vni::new(100).unwrap()
}

fn flood_vni() -> Vni {
    Vni::new(200).unwrap()
}

/// Backend `k`'s address; its MAC is remote MAC number `2k + 1`.
fn backend_ip(k: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 200, k as u8 + 1)
}

fn remote(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 1, i as u8 + 1))
}

/// MAC number `i`: even numbers are local (behind port i % PORTS), odd ones remote.
fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0x10, b[0], b[1], b[2], b[3]]
}

/// The switch; `with_service` adds the service in VNI 100 (then every IPv4 frame of VNI 100
/// passes the load balancer, as on a node where pods use services).
fn switch(with_service: bool) -> Switch {
    let config = SwitchConfig {
        underlay: UnderlayConfig {
            local_ip: IpAddr::V4(LOCAL),
            local_mac: LOCAL_MAC,
            next_hop: switchyard::switch::NextHop::Static {
                default: GATEWAY_MAC,
                per_vtep: Vec::new(),
            },
            encap: EncapConfig {
                mtu: 9000,
                ..EncapConfig::default()
            },
            decap: DecapConfig::default(),
        },
        ports: (1..=PORTS)
            .map(|p| PortConfig {
                id: PortId(p),
                mode: PortMode::Access(vni()),
                security: None,
            })
            .chain([PortConfig {
                id: FLOOD_PORT,
                mode: PortMode::Access(flood_vni()),
                security: None,
            }])
            .collect(),
        vnis: vec![
            VniSettings::new(vni(), (0..REMOTES).map(remote).collect()),
            VniSettings::new(flood_vni(), (0..FLOOD_REMOTES).map(remote).collect()),
        ],
        static_entries: Vec::new(),
        neighbors: (0..BACKENDS)
            .map(|k| Neighbor {
                vni: vni(),
                ip: IpAddr::V4(backend_ip(k)),
                mac: EthernetAddress(mac(2 * k + 1)),
            })
            .collect(),
        fdb: FdbConfig {
            capacity: 2 * FDB_ENTRIES,
            max_entries_per_vni: 2 * FDB_ENTRIES,
            ..FdbConfig::default()
        },
        services: [ServiceSettings {
            vni: vni(),
            key: ServiceKey::new((VIP, 80).into(), Protocol::Udp),
            service: ServiceConfig::new(
                (0..BACKENDS)
                    .map(|k| Backend::new((backend_ip(k), 8080).into()))
                    .collect(),
            ),
        }]
        .into_iter()
        .filter(|_| with_service)
        .collect(),
        lb: LbSettings::default(),
    };
    let switch = Switch::new(config).unwrap();
    for i in 0..FDB_ENTRIES {
        let destination = if i % 2 == 0 {
            Destination::Port(PortId(1 + i % PORTS))
        } else {
            Destination::Vtep(remote(i % REMOTES))
        };
        switch.fdb().learn(
            vni(),
            EthernetAddress(mac(i)),
            destination,
            Instant::from_secs(1),
        );
    }
    switch
}

fn inner(dst: u32, src: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&mac(dst));
    f[6..12].copy_from_slice(&mac(src));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[198, 19, (src >> 8) as u8, src as u8]);
    f[30..34].copy_from_slice(&[198, 19, (dst >> 8) as u8, dst as u8]);
    f
}

struct Frames {
    ingress: Vec<Ingress>,
    bytes: Vec<Vec<u8>>,
}

impl Frames {
    fn batch(&mut self) -> Vec<Received<'_>> {
        self.ingress
            .iter()
            .zip(self.bytes.iter_mut())
            .map(|(&ingress, frame)| Received {
                ingress,
                frame: frame.as_mut_slice(),
            })
            .collect()
    }
}

/// Frames from local hosts (even MACs, on their ports) to remote MACs (odd).
fn access_to_tunnel(len: usize) -> Frames {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut ingress = Vec::new();
    let mut bytes = Vec::new();
    for _ in 0..BATCH {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let src = (rng as u32 % (FDB_ENTRIES / 2)) * 2;
        let dst = ((rng >> 32) as u32 % (FDB_ENTRIES / 2)) * 2 + 1;
        ingress.push(Ingress::Port(PortId(1 + src % PORTS)));
        bytes.push(inner(dst, src, len));
    }
    Frames { ingress, bytes }
}

/// Frames from remote MACs (odd, behind their VTEPs) to local MACs (even).
fn tunnel_to_access(len: usize) -> Frames {
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut ingress = Vec::new();
    let mut bytes = Vec::new();
    for _ in 0..BATCH {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let src = (rng as u32 % (FDB_ENTRIES / 2)) * 2 + 1;
        let dst = ((rng >> 32) as u32 % (FDB_ENTRIES / 2)) * 2;
        let IpAddr::V4(from) = remote(src % REMOTES) else {
            unreachable!()
        };
        let template = EncapTemplate::new(
            &EncapConfig {
                mtu: 9000,
                ..EncapConfig::default()
            },
            &Underlay::ipv4(GATEWAY_MAC, LOCAL_MAC, from, LOCAL),
            vni(),
        )
        .unwrap();
        let frame = inner(dst, src, len);
        let mut buf = vec![0u8; 50 + len];
        buf[50..].copy_from_slice(&frame);
        template
            .encap(&mut buf, 50..50 + len, &mut IpIdent::new(0))
            .unwrap();
        ingress.push(Ingress::Underlay);
        bytes.push(buf);
    }
    Frames { ingress, bytes }
}

/// UDP from local clients (even MACs) to the VIP's virtual MAC, address and port, from 256
/// client ports.
fn access_to_service_tunnel(len: usize) -> Frames {
    let mut frames = access_to_tunnel(len);
    for (i, frame) in frames.bytes.iter_mut().enumerate() {
        frame[..6].copy_from_slice(&LbSettings::DEFAULT_VIRTUAL_MAC.0);
        frame[30..34].copy_from_slice(&VIP.octets());
        frame[34..36].copy_from_slice(&(10_000 + i as u16).to_be_bytes());
        frame[36..38].copy_from_slice(&80u16.to_be_bytes());
        frame[38..40].copy_from_slice(&((len - 34) as u16).to_be_bytes());
    }
    frames
}

/// Broadcasts from known local MACs on the flood port.
fn flood_4_remotes(len: usize) -> Frames {
    let mut frames = access_to_tunnel(len);
    for (ingress, frame) in frames.ingress.iter_mut().zip(frames.bytes.iter_mut()) {
        *ingress = Ingress::Port(FLOOD_PORT);
        frame[..6].copy_from_slice(&[0xff; 6]);
    }
    frames
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, make) in [
        ("access_to_tunnel", access_to_tunnel as fn(usize) -> Frames),
        ("tunnel_to_access", tunnel_to_access),
    ] {
        for len in [64usize, 1500] {
            let switch = switch(false);
            let mut worker = switch.worker();
            let mut frames = make(len);
            let mut output = Output::default();
            let now = Instant::from_secs(1);
            // Every frame is forwarded, to exactly one place.
            {
                let mut batch = frames.batch();
                switch.process(&mut worker, &mut batch, now, &mut output);
                assert_eq!(output.actions.len(), BATCH, "{name}");
                assert_eq!(worker.counters.forwarded, BATCH as u64, "{name}");
            }
            group.bench_function(BenchmarkId::new(name, len), |b| {
                b.iter(|| {
                    let mut batch = frames.batch();
                    switch.process(&mut worker, black_box(&mut batch), now, &mut output);
                    black_box(output.actions.len())
                })
            });
        }
    }
    for (name, make, copies) in [
        (
            "access_to_service_tunnel",
            access_to_service_tunnel as fn(usize) -> Frames,
            1,
        ),
        ("flood_4_remotes", flood_4_remotes, FLOOD_REMOTES as usize),
    ] {
        let len = 64;
        let switch = switch(copies == 1);
        let mut worker = switch.worker();
        let frames = make(len);
        let mut output = Output::default();
        let now = Instant::from_secs(1);
        let fresh = |bytes: &Vec<Vec<u8>>| {
            bytes
                .iter()
                .zip(&frames.ingress)
                .map(|(b, &i)| (i, b.clone()))
                .collect::<Vec<_>>()
        };
        let run = |worker: &mut _, copy: &mut Vec<(Ingress, Vec<u8>)>, output: &mut Output| {
            let mut batch: Vec<Received<'_>> = copy
                .iter_mut()
                .map(|(ingress, frame)| Received {
                    ingress: *ingress,
                    frame: frame.as_mut_slice(),
                })
                .collect();
            switch.process(worker, black_box(&mut batch), now, output);
        };
        // The first pass tracks the flows; every frame goes out, `copies` times.
        for _ in 0..2 {
            run(&mut worker, &mut fresh(&frames.bytes), &mut output);
            assert_eq!(output.actions.len(), BATCH * copies, "{name}");
        }
        assert_eq!(worker.counters.forwarded, 2 * BATCH as u64, "{name}");
        group.bench_function(BenchmarkId::new(name, len), |b| {
            b.iter_batched_ref(
                || fresh(&frames.bytes),
                |copy| {
                    run(&mut worker, copy, &mut output);
                    black_box(output.actions.len())
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
