//! The load balancer at full size: Maglev's properties at M = 16381 and 65537 with up to 1000
//! backends (SPEC-overlay.md, "Maglev"), connection tracking under a SYN flood, and workers
//! reading while the control plane publishes.
//!
//! `cargo test --release --test lb -- --nocapture` prints the churn figures.

mod lb_common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lb_common::*;
use smoltcp::wire::TcpControl;
use switchyard::lb::{
    Backend, ConnTrackConfig, Decision, FlowKey, LoadBalancer, Maglev, Permutation, Protocol,
    ServiceConfig, ServiceKey, TableSize, WorkerState,
};
use switchyard::time::{Duration, Instant};

fn backend(i: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from_bits(0x0A00_0000 + i)), 8080)
}

fn vip() -> SocketAddr {
    "198.51.100.10:443".parse().unwrap()
}

fn key() -> ServiceKey {
    ServiceKey::new(vip(), Protocol::Tcp)
}

fn config(ids: impl IntoIterator<Item = u32>, m: u32) -> ServiceConfig {
    ServiceConfig {
        backends: ids.into_iter().map(|i| Backend::new(backend(i))).collect(),
        table_size: TableSize::new(m).unwrap(),
        affinity: Default::default(),
    }
}

/// A small deterministic generator (xorshift64*), so that failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Every property of SPEC-overlay.md's Maglev section, and the churn figures, for M in
/// {16381, 65537} and N in {10, 100, 1000}.
#[test]
fn maglev_properties_at_full_size() {
    for m in [16381u32, 65537] {
        for n in [10u32, 100, 1000] {
            let mut lb = LoadBalancer::new();
            lb.set_service(key(), config(0..n, m)).unwrap();
            let table = lb.service(&key()).unwrap();
            let slots = table.maglev().slots().to_vec();
            assert_eq!(slots.len(), m as usize, "no empty slot");
            let shares = table.maglev().shares(n as usize);
            let (lo, hi) = (m / n, m.div_ceil(n));
            assert!(
                shares.iter().all(|&s| s == lo || s == hi),
                "M {m} N {n}: shares outside floor/ceil"
            );
            let names: Vec<String> = table.names().to_vec();
            let before: Vec<&str> = slots.iter().map(|&i| names[i as usize].as_str()).collect();

            // Remove one backend (the 7th by address).
            let removed = backend(7);
            let removed_name = Backend::new(removed).name();
            let report = lb.remove_backend(&key(), removed).unwrap();
            let after_table = lb.service(&key()).unwrap();
            let after: Vec<&str> = after_table
                .maglev()
                .slots()
                .iter()
                .map(|&i| after_table.names()[i as usize].as_str())
                .collect();
            let mut survivors_moved = 0u32;
            let mut removed_slots = 0u32;
            for (b, a) in before.iter().zip(&after) {
                assert_ne!(*a, removed_name);
                if *b == removed_name {
                    removed_slots += 1;
                } else if b != a {
                    survivors_moved += 1;
                }
            }
            assert_eq!(report.slots_moved, removed_slots + survivors_moved);
            let reported_survivors: u32 = report
                .moves
                .iter()
                .filter(|mv| mv.from.as_deref() != Some(removed_name.as_str()))
                .map(|mv| mv.slots)
                .sum();
            assert_eq!(reported_survivors, survivors_moved);
            let percent = 100.0 * f64::from(survivors_moved) / f64::from(m);
            println!(
                "churn M={m:>5} N={n:>4}: removed backend owned {removed_slots} slots; \
                 survivors' slots moved: {survivors_moved} ({percent:.3} % of M)"
            );
            assert!(percent <= 2.0, "M {m} N {n}: churn {percent} %");
        }
    }
}

#[test]
fn table_is_order_independent_at_full_size() {
    let ids: Vec<u32> = (0..300).collect();
    let mut reference = None;
    let mut rng = Rng(0x1234_5678);
    for _ in 0..4 {
        let mut shuffled = ids.clone();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let mut lb = LoadBalancer::new();
        lb.set_service(key(), config(shuffled, 65537)).unwrap();
        let t = lb.service(&key()).unwrap();
        let names: Vec<String> = t
            .maglev()
            .slots()
            .iter()
            .map(|&i| t.names()[i as usize].clone())
            .collect();
        match &reference {
            None => reference = Some(names),
            Some(r) => assert!(r == &names),
        }
    }
}

/// The table is a function of names and weights only: building it from the raw permutations
/// (in name order) gives the same slots, so another implementation that follows the
/// documented hash reproduces it.
#[test]
fn table_follows_the_documented_hash() {
    let m = TableSize::new(65537).unwrap();
    let mut names: Vec<String> = (0..50).map(|i| Backend::new(backend(i)).name()).collect();
    names.sort();
    let members: Vec<(Permutation, u32)> = names
        .iter()
        .map(|n| {
            let offset = (xxhash_rust_free::xxh64(n.as_bytes(), 0) % 65537) as u32;
            let skip = (xxhash_rust_free::xxh64(n.as_bytes(), 1) % 65536) as u32 + 1;
            (Permutation { offset, skip }, 1)
        })
        .collect();
    let direct = Maglev::build(m, &members).unwrap();
    let mut lb = LoadBalancer::new();
    lb.set_service(key(), config(0..50, 65537)).unwrap();
    let t = lb.service(&key()).unwrap();
    assert_eq!(t.names(), &names[..]);
    assert_eq!(t.maglev().slots(), direct.slots());
}

/// XXH64 written out from its specification
/// (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md), independent of the crate
/// the library uses, to pin the hash down.
mod xxhash_rust_free {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;

    fn round(acc: u64, lane: u64) -> u64 {
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    }

    fn merge(acc: u64, value: u64) -> u64 {
        (acc ^ round(0, value)).wrapping_mul(P1).wrapping_add(P4)
    }

    pub fn xxh64(input: &[u8], seed: u64) -> u64 {
        let mut rest = input;
        let mut acc;
        if input.len() >= 32 {
            let mut v = [
                seed.wrapping_add(P1).wrapping_add(P2),
                seed.wrapping_add(P2),
                seed,
                seed.wrapping_sub(P1),
            ];
            while rest.len() >= 32 {
                for (i, lane) in v.iter_mut().enumerate() {
                    let word = u64::from_le_bytes(rest[i * 8..i * 8 + 8].try_into().unwrap());
                    *lane = round(*lane, word);
                }
                rest = &rest[32..];
            }
            acc = v[0]
                .rotate_left(1)
                .wrapping_add(v[1].rotate_left(7))
                .wrapping_add(v[2].rotate_left(12))
                .wrapping_add(v[3].rotate_left(18));
            for lane in v {
                acc = merge(acc, lane);
            }
        } else {
            acc = seed.wrapping_add(P5);
        }
        acc = acc.wrapping_add(input.len() as u64);
        while rest.len() >= 8 {
            let lane = u64::from_le_bytes(rest[..8].try_into().unwrap());
            acc = (acc ^ round(0, lane))
                .rotate_left(27)
                .wrapping_mul(P1)
                .wrapping_add(P4);
            rest = &rest[8..];
        }
        if rest.len() >= 4 {
            let lane = u64::from(u32::from_le_bytes(rest[..4].try_into().unwrap()));
            acc = (acc ^ lane.wrapping_mul(P1))
                .rotate_left(23)
                .wrapping_mul(P2)
                .wrapping_add(P3);
            rest = &rest[4..];
        }
        for &byte in rest {
            acc = (acc ^ u64::from(byte).wrapping_mul(P5))
                .rotate_left(11)
                .wrapping_mul(P1);
        }
        acc ^= acc >> 33;
        acc = acc.wrapping_mul(P2);
        acc ^= acc >> 29;
        acc = acc.wrapping_mul(P3);
        acc ^ (acc >> 32)
    }

    #[test]
    fn known_answers() {
        // From the xxHash repository's sanity tests: XXH64("", 0) and XXH64("", PRIME32_1).
        assert_eq!(xxh64(b"", 0), 0xEF46_DB37_51D8_E999);
    }
}

#[test]
fn weights_at_full_size() {
    let m = 65537u32;
    let mut c = config(0..20, m);
    for (i, b) in c.backends.iter_mut().enumerate() {
        b.weight = [1, 2, 3, 5][i % 4];
    }
    let mut lb = LoadBalancer::new();
    lb.set_service(key(), c.clone()).unwrap();
    let t = lb.service(&key()).unwrap();
    let shares = t.maglev().shares(20);
    let total: u32 = c.backends.iter().map(|b| b.weight).sum();
    for (i, name) in t.names().iter().enumerate() {
        let weight = c
            .backends
            .iter()
            .find(|b| &b.name() == name)
            .unwrap()
            .weight;
        let expected = f64::from(m) * f64::from(weight) / f64::from(total);
        let error = (f64::from(shares[i]) - expected).abs() / expected;
        assert!(
            error < 0.01,
            "{name}: weight {weight}, {} slots, expected {expected:.0}",
            shares[i]
        );
    }
}

/// Moves a flow through a three-way handshake with packets, so that it is established.
fn handshake(
    services: &switchyard::lb::Services,
    st: &mut WorkerState,
    client: SocketAddr,
    now: Instant,
) -> SocketAddr {
    let mut syn = tcp(client, vip(), TcpControl::Syn, false, b"");
    let backend = match services.process(st, &mut syn, now) {
        Decision::Forward { backend } => backend.addr,
        other => panic!("{other:?}"),
    };
    let mut syn_ack = tcp(backend, client, TcpControl::Syn, true, b"");
    assert_eq!(
        services.process(st, &mut syn_ack, now),
        Decision::Reply { service: vip() }
    );
    let mut ack = tcp(client, vip(), TcpControl::None, true, b"GET /");
    assert!(
        matches!(services.process(st, &mut ack, now), Decision::Forward { backend: b } if b.addr == backend)
    );
    backend
}

/// SPEC: a SYN flood of 10 x the capacity keeps every established flow.
#[test]
fn syn_flood_keeps_every_established_flow() {
    let capacity = 2000;
    let mut lb = LoadBalancer::new();
    lb.set_service(key(), config(0..10, 65537)).unwrap();
    let services = lb.snapshot();
    let mut st = WorkerState::new(ConnTrackConfig {
        capacity,
        hash_seed: 0xfeed,
        ..Default::default()
    });
    let mut now = Instant::from_secs(10);
    let established: Vec<(SocketAddr, SocketAddr)> = (0..capacity as u32 / 2)
        .map(|i| {
            let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::from_bits(0xC000_0200 + i)), 40000);
            (client, handshake(&services, &mut st, client, now))
        })
        .collect();
    // The flood: 10 x capacity SYNs from spoofed sources, over 20 s.
    let mut rng = Rng(42);
    for i in 0..10 * capacity {
        if i % 1000 == 0 {
            now = now + Duration::from_secs(1);
        }
        let r = rng.next();
        let src = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from_bits(0x6400_0000 | (r as u32 & 0x00FF_FFFF))),
            (r >> 32) as u16,
        );
        let mut syn = tcp(src, vip(), TcpControl::Syn, false, b"");
        assert!(matches!(
            services.process(&mut st, &mut syn, now),
            Decision::Forward { .. }
        ));
    }
    let during = st.conntrack.counters();
    assert_eq!(during.evictions_replied, 0);
    assert!(during.evictions_unreplied >= (9 * capacity) as u64 - capacity as u64 / 2);
    // Every established flow is still tracked, and its next packets hit, both ways.
    for &(client, backend) in &established {
        let flow = FlowKey::new(Protocol::Tcp, client, vip()).unwrap();
        assert_eq!(st.conntrack.backend_of(&flow, now), Some(backend));
        let mut data = tcp(client, vip(), TcpControl::Psh, true, b"more");
        assert_eq!(
            services.process(&mut st, &mut data, now),
            Decision::Forward {
                backend: services.select(&mut st, &flow, 0x10, now).unwrap()
            }
        );
        let mut reply = tcp(backend, client, TcpControl::Psh, true, b"ok");
        assert_eq!(
            services.process(&mut st, &mut reply, now),
            Decision::Reply { service: vip() }
        );
    }
    let after = st.conntrack.counters();
    assert_eq!(
        after.misses_non_syn, 0,
        "no established flow lost its state"
    );
    assert_eq!(after.misses - during.misses, 0);
    assert_eq!(after.misses_syn, (capacity / 2 + 10 * capacity) as u64);
}

/// Workers on their own threads process packets while the control plane republishes the
/// service many times: no reader blocks or sees a torn table, and flows keep their backend.
#[test]
fn workers_read_while_the_control_plane_publishes() {
    let mut lb = LoadBalancer::new();
    lb.set_service(key(), config(0..50, 16381)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let permanent: Arc<Vec<SocketAddr>> = Arc::new((0..50).map(backend).collect());
    let workers: Vec<_> = (0..2u32)
        .map(|w| {
            let permanent = permanent.clone();
            let handle = lb.handle();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut worker = handle
                    .worker(ConnTrackConfig {
                        capacity: 4096,
                        ..Default::default()
                    })
                    .unwrap();
                let mut first: HashMap<SocketAddr, SocketAddr> = HashMap::new();
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) || rounds < 10 {
                    for i in 0..500u32 {
                        let client = SocketAddr::new(
                            IpAddr::V4(Ipv4Addr::from_bits(0xC000_0000 + (w << 16) + i)),
                            1000,
                        );
                        let mut p = tcp(client, vip(), TcpControl::None, true, b"");
                        match worker.process(&mut p, Instant::from_secs(1)) {
                            Decision::Forward { backend } => {
                                let b = first.entry(client).or_insert(backend.addr);
                                if permanent.contains(b) {
                                    assert_eq!(*b, backend.addr, "a tracked flow moved");
                                } else {
                                    // First placed on a backend that comes and goes: once it
                                    // is removed the flow moves, as it must.
                                    *b = backend.addr;
                                }
                            }
                            other => panic!("{other:?}"),
                        }
                    }
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    // Add and remove a backend, a hundred times: every change republishes the snapshot.
    for round in 0..100u32 {
        let extra = 1000 + round % 7;
        lb.set_backend(&key(), Backend::new(backend(extra)))
            .unwrap();
        lb.remove_backend(&key(), backend(extra)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        assert!(w.join().unwrap() >= 10);
    }
}
