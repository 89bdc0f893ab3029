//! Tests of the service layer, small enough for miri (tables of 251 or 1021 slots; the
//! 65537-slot properties are in `tests/lb.rs`).

use alloc::format;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::*;

const SMALL: u32 = 251;

fn backend_addr(i: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 8080)
}

fn vip() -> SocketAddr {
    "198.51.100.10:80".parse().unwrap()
}

fn key() -> ServiceKey {
    ServiceKey::new(vip(), Protocol::Tcp)
}

fn config(backends: &[u8], size: u32) -> ServiceConfig {
    ServiceConfig {
        backends: backends
            .iter()
            .map(|&i| Backend::new(backend_addr(i)))
            .collect(),
        table_size: TableSize::new(size).unwrap(),
        affinity: Affinity::None,
    }
}

fn client_flow(i: u32) -> FlowKey {
    let client = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from_bits(0xC000_0200 + (i >> 16))),
        (i & 0xFFFF) as u16,
    );
    FlowKey::new(Protocol::Tcp, client, vip()).unwrap()
}

fn state() -> WorkerState {
    WorkerState::new(ConnTrackConfig {
        capacity: 1024,
        ..ConnTrackConfig::default()
    })
}

/// The name of the backend in every slot.
fn slot_names(t: &ServiceTable) -> Vec<&str> {
    t.maglev()
        .slots()
        .iter()
        .map(|&i| t.names()[usize::from(i)].as_str())
        .collect()
}

#[test]
fn table_is_independent_of_insertion_order() {
    let mut a = LoadBalancer::new();
    let mut b = LoadBalancer::new();
    a.set_service(key(), config(&[1, 2, 3, 4, 5, 6, 7], SMALL))
        .unwrap();
    b.set_service(key(), config(&[7, 3, 5, 1, 6, 2, 4], SMALL))
        .unwrap();
    assert_eq!(
        slot_names(a.service(&key()).unwrap()),
        slot_names(b.service(&key()).unwrap())
    );
    // Built up one backend at a time, in yet another order.
    let mut c = LoadBalancer::new();
    c.set_service(key(), config(&[4], SMALL)).unwrap();
    for i in [2, 6, 1, 7, 3, 5] {
        c.set_backend(&key(), Backend::new(backend_addr(i)))
            .unwrap();
    }
    assert_eq!(
        slot_names(a.service(&key()).unwrap()),
        slot_names(c.service(&key()).unwrap())
    );
}

#[test]
fn names_follow_the_specification() {
    assert_eq!(Backend::new(backend_addr(3)).name(), "10.0.0.3:8080");
    let v6 = Backend::new("[2001:db8::1]:443".parse().unwrap());
    assert_eq!(v6.name(), "[2001:db8::1]:443");
    // The offset and skip of a name are XXH64 with seeds 0 and 1, reduced mod M and M - 1.
    let m = TableSize::new(65537).unwrap();
    let p = Permutation::for_name(b"10.0.0.3:8080", m);
    assert_eq!(
        u64::from(p.offset),
        xxhash_rust::xxh64::xxh64(b"10.0.0.3:8080", 0) % 65537
    );
    assert_eq!(
        u64::from(p.skip),
        xxhash_rust::xxh64::xxh64(b"10.0.0.3:8080", 1) % 65536 + 1
    );
}

#[test]
fn disruption_report_of_a_removal() {
    let mut lb = LoadBalancer::new();
    let first = lb
        .set_service(key(), config(&[1, 2, 3, 4, 5], SMALL))
        .unwrap();
    assert_eq!(first.slots_moved, SMALL);
    assert!(first.moves.iter().all(|m| m.from.is_none()));
    let removed_share = lb.service(&key()).unwrap().maglev().shares(5)[2];
    let report = lb.remove_backend(&key(), backend_addr(3)).unwrap();
    let from_removed: u32 = report
        .moves
        .iter()
        .filter(|m| m.from.as_deref() == Some("10.0.0.3:8080"))
        .map(|m| {
            assert!(
                m.to.is_some(),
                "a removed backend's slot went to a survivor"
            );
            m.slots
        })
        .sum();
    assert_eq!(from_removed, removed_share);
    assert_eq!(
        report.moves.iter().map(|m| m.slots).sum::<u32>(),
        report.slots_moved
    );
    assert!(report
        .moves
        .iter()
        .all(|m| m.to.as_deref() != Some("10.0.0.3:8080")));
    // The report agrees with a direct diff of the slot names.
    let before_names: Vec<alloc::string::String> = {
        let mut lb2 = LoadBalancer::new();
        lb2.set_service(key(), config(&[1, 2, 3, 4, 5], SMALL))
            .unwrap();
        slot_names(lb2.service(&key()).unwrap())
            .into_iter()
            .map(Into::into)
            .collect()
    };
    let after = slot_names(lb.service(&key()).unwrap());
    let differ = before_names
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.as_str() != **b)
        .count();
    assert_eq!(differ as u32, report.slots_moved);
    // Removing the service moves every slot to nowhere.
    let gone = lb.remove_service(&key()).unwrap();
    assert_eq!(gone.slots_moved, SMALL);
    assert!(gone.moves.iter().all(|m| m.to.is_none()));
    assert_eq!(
        lb.remove_service(&key()),
        Err(ConfigError::UnknownService(key()))
    );
}

#[test]
fn an_unchanged_table_reports_nothing() {
    let mut lb = LoadBalancer::new();
    lb.set_service(key(), config(&[1, 2, 3], SMALL)).unwrap();
    let report = lb.set_service(key(), config(&[3, 2, 1], SMALL)).unwrap();
    assert_eq!(report.slots_moved, 0);
    assert!(report.moves.is_empty());
    assert_eq!(report.table_size, SMALL);
}

#[test]
fn configuration_errors() {
    let mut lb = LoadBalancer::new();
    assert_eq!(
        lb.set_service(key(), config(&[1, 1], SMALL)),
        Err(ConfigError::DuplicateBackend(backend_addr(1)))
    );
    let v6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
    let mut mixed = config(&[1], SMALL);
    mixed.backends.push(Backend::new(v6));
    assert_eq!(
        lb.set_service(key(), mixed),
        Err(ConfigError::FamilyMismatch(v6))
    );
    assert_eq!(
        lb.set_backend_state(&key(), backend_addr(1), BackendState::Down),
        Err(ConfigError::UnknownService(key()))
    );
    lb.set_service(key(), config(&[1], SMALL)).unwrap();
    assert_eq!(
        lb.remove_backend(&key(), backend_addr(9)),
        Err(ConfigError::UnknownBackend(backend_addr(9)))
    );
    let text = format!("{}", ConfigError::DuplicateBackend(backend_addr(1)));
    assert!(text.contains("10.0.0.1:8080"), "{text}");
}

#[test]
fn tracked_flows_keep_their_backend_across_addition_and_removal() {
    let mut lb = LoadBalancer::new();
    lb.set_service(key(), config(&[1, 2, 3, 4], SMALL)).unwrap();
    let mut st = state();
    let now = Instant::from_secs(1);
    let flows: Vec<FlowKey> = (0..200).map(client_flow).collect();
    let first: Vec<BackendRef> = {
        let services = lb.snapshot();
        flows
            .iter()
            .map(|f| services.select(&mut st, f, TCP_SYN, now).unwrap())
            .collect()
    };
    // Adding a backend changes some slots, but no tracked flow moves.
    let added = lb
        .set_backend(&key(), Backend::new(backend_addr(5)))
        .unwrap();
    assert!(added.slots_moved > 0);
    let services = lb.snapshot();
    let mut maglev_would_move = 0;
    for (f, before) in flows.iter().zip(&first) {
        if services.maglev_backend(f).unwrap().addr != before.addr {
            maglev_would_move += 1;
        }
        let now_backend = services.select(&mut st, f, TCP_ACK, now).unwrap();
        assert_eq!(now_backend.addr, before.addr);
    }
    assert!(
        maglev_would_move > 0,
        "the test must exercise a changed slot"
    );
    // Removing backend 4: flows on the other backends stay; flows on 4 move to survivors.
    lb.remove_backend(&key(), backend_addr(4)).unwrap();
    let services = lb.snapshot();
    for (f, before) in flows.iter().zip(&first) {
        let b = services.select(&mut st, f, TCP_ACK, now).unwrap();
        if before.addr == backend_addr(4) {
            assert_ne!(b.addr, backend_addr(4));
        } else {
            assert_eq!(b.addr, before.addr);
        }
    }
    let c = st.conntrack.counters();
    assert_eq!(c.misses, 200);
    assert_eq!(c.misses_syn, 200);
    assert_eq!(c.hits, 400);
}

#[test]
fn draining_takes_no_new_flow_but_keeps_old_ones() {
    let mut lb = LoadBalancer::new();
    lb.set_service(key(), config(&[1, 2, 3], SMALL)).unwrap();
    let mut st = state();
    let now = Instant::from_secs(1);
    let old: Vec<(FlowKey, BackendRef)> = {
        let s = lb.snapshot();
        (0..150)
            .map(|i| {
                let f = client_flow(i);
                (f, s.select(&mut st, &f, TCP_SYN, now).unwrap())
            })
            .collect()
    };
    assert!(old.iter().any(|(_, b)| b.addr == backend_addr(2)));
    lb.set_backend_state(&key(), backend_addr(2), BackendState::Draining)
        .unwrap();
    let s = lb.snapshot();
    for (f, b) in &old {
        assert_eq!(s.select(&mut st, f, TCP_ACK, now).unwrap().addr, b.addr);
    }
    for i in 1000..1300 {
        let b = s.select(&mut st, &client_flow(i), TCP_SYN, now).unwrap();
        assert_ne!(b.addr, backend_addr(2));
    }
    // Weight 0 is draining too.
    lb.set_backend(&key(), Backend::new(backend_addr(2)).with_weight(0))
        .unwrap();
    let s = lb.snapshot();
    assert_eq!(s.service(&key()).unwrap().maglev().shares(3)[1], 0);
    for (f, b) in &old {
        assert_eq!(s.select(&mut st, f, TCP_ACK, now).unwrap().addr, b.addr);
    }
}

#[test]
fn down_backend_flows_move_on_next_packet() {
    let mut lb = LoadBalancer::new();
    lb.set_service(key(), config(&[1, 2, 3], SMALL)).unwrap();
    let mut st = state();
    let now = Instant::from_secs(1);
    let s = lb.snapshot();
    let on_two: Vec<FlowKey> = (0..150)
        .map(client_flow)
        .filter(|f| s.select(&mut st, f, TCP_SYN, now).unwrap().addr == backend_addr(2))
        .collect();
    assert!(!on_two.is_empty());
    lb.set_backend_state(&key(), backend_addr(2), BackendState::Down)
        .unwrap();
    let s = lb.snapshot();
    for f in &on_two {
        let b = s.select(&mut st, f, TCP_ACK, now).unwrap();
        assert_ne!(b.addr, backend_addr(2));
        assert_eq!(b.addr, s.maglev_backend(f).unwrap().addr);
        assert_eq!(st.conntrack.backend_of(f, now), Some(b.addr));
    }
    // All down: no backend.
    lb.set_backend_state(&key(), backend_addr(1), BackendState::Down)
        .unwrap();
    lb.set_backend_state(&key(), backend_addr(3), BackendState::Down)
        .unwrap();
    let s = lb.snapshot();
    assert_eq!(s.select(&mut st, &client_flow(99_999), TCP_SYN, now), None);
    assert_eq!(s.select(&mut st, &on_two[0], TCP_ACK, now), None);
}

#[test]
fn client_ip_affinity_lasts_until_its_timeout() {
    let mut lb = LoadBalancer::new();
    let mut c = config(&[1, 2, 3, 4, 5, 6], SMALL);
    c.affinity = Affinity::ClientIp {
        timeout: Duration::from_secs(100),
    };
    lb.set_service(key(), c).unwrap();
    let mut st = state();
    let t0 = Instant::from_secs(1000);
    let s = lb.snapshot();
    // One client, many connections (ports): all to one backend.
    let client = |port: u16| {
        FlowKey::new(
            Protocol::Tcp,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), port),
            vip(),
        )
        .unwrap()
    };
    let first = s.select(&mut st, &client(1), TCP_SYN, t0).unwrap();
    for port in 2..50 {
        let b = s.select(&mut st, &client(port), TCP_SYN, t0).unwrap();
        assert_eq!(b.addr, first.addr);
    }
    // The table changes so that Maglev would send the client elsewhere; affinity holds.
    let others: Vec<u8> = (1..=6).filter(|&i| backend_addr(i) != first.addr).collect();
    let mut c2 = config(&others, SMALL);
    c2.backends.push(Backend::new(first.addr));
    c2.backends
        .extend((7..40).map(|i| Backend::new(backend_addr(i))));
    c2.affinity = Affinity::ClientIp {
        timeout: Duration::from_secs(100),
    };
    lb.set_service(key(), c2).unwrap();
    let s = lb.snapshot();
    let fresh = s
        .service(&key())
        .unwrap()
        .lookup(client(1).source_hash())
        .unwrap();
    assert_ne!(fresh.addr, first.addr, "pick a client whose slot moved");
    let t1 = t0 + Duration::from_secs(99);
    assert_eq!(
        s.select(&mut st, &client(100), TCP_SYN, t1).unwrap().addr,
        first.addr
    );
    // Refreshed at t1: still there 99 s later, gone 100 s after the last new flow.
    let t2 = t1 + Duration::from_secs(99);
    assert_eq!(
        s.select(&mut st, &client(101), TCP_SYN, t2).unwrap().addr,
        first.addr
    );
    let t3 = t2 + Duration::from_secs(100);
    assert_eq!(
        s.select(&mut st, &client(102), TCP_SYN, t3).unwrap().addr,
        fresh.addr
    );
    assert_eq!(
        Affinity::client_ip(),
        Affinity::ClientIp {
            timeout: Duration::from_secs(10800)
        }
    );
}

#[test]
fn worker_sees_published_snapshots() {
    let mut lb = LoadBalancer::new();
    let handle = lb.handle();
    let mut worker = handle
        .worker(ConnTrackConfig {
            capacity: 64,
            ..ConnTrackConfig::default()
        })
        .unwrap();
    let f = client_flow(7);
    let now = Instant::from_secs(1);
    assert_eq!(
        worker.with_services(|s, st| s.select(st, &f, TCP_SYN, now)),
        None
    );
    lb.set_service(key(), config(&[1], SMALL)).unwrap();
    assert_eq!(
        worker
            .with_services(|s, st| s.select(st, &f, TCP_SYN, now))
            .map(|b| b.addr),
        Some(backend_addr(1))
    );
    // Each round publishes a table; a few are enough for miri, which takes seconds for each.
    let rounds = if cfg!(miri) { 4 } else { 20u8 };
    for round in 0..rounds {
        lb.set_backend(&key(), Backend::new(backend_addr(round + 2)))
            .unwrap();
        let services = worker.with_services(|s, _| s.iter().count());
        assert_eq!(services, 1);
    }
    assert_eq!(worker.state().conntrack.len(), 1);
    drop(lb);
    // The worker keeps the last snapshot alive after the control plane is gone.
    assert!(worker.with_services(|s, _| s.service(&key()).is_some()));
}

#[test]
fn syn_on_a_closing_flow_is_a_new_connection() {
    let mut lb = LoadBalancer::new();
    lb.set_service(key(), config(&[1, 2], SMALL)).unwrap();
    let mut st = state();
    let now = Instant::from_secs(1);
    let s = lb.snapshot();
    let f = client_flow(3);
    s.select(&mut st, &f, TCP_SYN, now).unwrap();
    s.select(&mut st, &f, conntrack::TCP_FIN | TCP_ACK, now)
        .unwrap();
    s.select(&mut st, &f, TCP_SYN, now).unwrap();
    let c = st.conntrack.counters();
    assert_eq!((c.misses_syn, c.hits), (2, 1));
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<LbHandle>();
    send_sync::<LoadBalancer>();
    send_sync::<Services>();
    fn send<T: Send>() {}
    send::<WorkerState>();
    send::<Worker>();
}

#[test]
fn worker_slots_are_bounded_and_reused() {
    let mut lb = LoadBalancer::with_max_workers(2);
    let handle = lb.handle();
    let config = ConnTrackConfig {
        capacity: 8,
        ..ConnTrackConfig::default()
    };
    let a = handle.worker(config).unwrap();
    let mut b = handle.worker(config).unwrap();
    assert!(handle.worker(config).is_none());
    drop(a);
    // Published while slot 0 is free: the next worker there starts with it.
    lb.set_service(key(), config_for_slots()).unwrap();
    let mut c = handle.worker(config).unwrap();
    assert!(c.with_services(|s, _| s.service(&key()).is_some()));
    assert!(b.with_services(|s, _| s.service(&key()).is_some()));
    // A worker that leaves without having picked up a snapshot leaves the newest one.
    lb.remove_service(&key()).unwrap();
    drop(b);
    let mut d = handle.worker(config).unwrap();
    assert!(d.with_services(|s, _| s.service(&key()).is_none()));
    assert!(c.with_services(|s, _| s.service(&key()).is_none()));
}

fn config_for_slots() -> ServiceConfig {
    config(&[1], SMALL)
}

/// A 40-byte IPv4 TCP packet of `flow` with `flags` (checksums zero: the decision does not
/// read them, and the translation updates whatever is there).
fn tcp_packet(flow: &FlowKey, flags: u8) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&(flow.src as u32).to_be_bytes());
    p[16..20].copy_from_slice(&(flow.dst as u32).to_be_bytes());
    p[20..22].copy_from_slice(&flow.src_port.to_be_bytes());
    p[22..24].copy_from_slice(&flow.dst_port.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = flags;
    p
}

/// The packet path (`process`, with its inlined fast path for tracked flows) and the flow
/// path (`select`) make the same choice, and count the same, through flows opening,
/// closing and reopening, backends going down and coming back, added and removed, and time
/// passing (entries moving in their lists, and expiring).
#[test]
fn packet_path_agrees_with_select() {
    let mut lb = LoadBalancer::new();
    lb.set_service(key(), config(&[1, 2, 3], SMALL)).unwrap();
    let (mut by_packet, mut by_flow) = (state(), state());
    let mut now = Instant::from_secs(1);
    let mut next = crate::mix::xorshift(0x2545_F491_4F6C_DD1Du64);
    let flags = [
        TCP_SYN,
        conntrack::TCP_ACK,
        conntrack::TCP_ACK,
        conntrack::TCP_ACK,
        conntrack::TCP_FIN | conntrack::TCP_ACK,
        conntrack::TCP_RST,
    ];
    let steps = if cfg!(miri) { 300 } else { 4000 };
    let mut forwarded = 0;
    for step in 0..steps {
        if step % 97 == 96 {
            match next() % 5 {
                0 => lb
                    .set_backend_state(&key(), backend_addr(2), BackendState::Down)
                    .unwrap(),
                1 => lb
                    .set_backend_state(&key(), backend_addr(2), BackendState::Active)
                    .unwrap(),
                2 => lb.set_service(key(), config(&[1, 2, 3, 4], SMALL)).unwrap(),
                3 => lb.set_service(key(), config(&[2, 3], SMALL)).unwrap(),
                _ => lb.set_service(key(), config(&[1, 2, 3], SMALL)).unwrap(),
            };
        }
        if step % 13 == 12 {
            // Mostly past the recency interval (1 s), now and then past the timeouts.
            let r = next();
            let limit = if r.is_multiple_of(8) { 200 } else { 2 };
            now = Instant::from_nanos(now.as_nanos() + (r >> 8) % (limit * 1_000_000_000));
        }
        let s = lb.snapshot();
        let r = next();
        let flow = client_flow((r % 40) as u32);
        let f = flags[(r >> 32) as usize % flags.len()];
        let mut packet = tcp_packet(&flow, f);
        let decided = s.process(&mut by_packet, &mut packet, now);
        let selected = s.select(&mut by_flow, &flow, f, now);
        match (decided, selected) {
            (Decision::Forward { backend }, Some(chosen)) => {
                assert_eq!(backend, chosen, "step {step}");
                // Translated to it.
                let IpAddr::V4(ip) = chosen.addr.ip() else {
                    panic!("{chosen:?}")
                };
                assert_eq!(packet[16..20], ip.octets());
                assert_eq!(packet[22..24], chosen.addr.port().to_be_bytes());
                forwarded += 1;
            }
            (Decision::Drop(DropReason::LbNoBackend), None) => {}
            other => panic!("step {step}: {other:?}"),
        }
        assert_eq!(
            by_packet.conntrack.counters(),
            by_flow.conntrack.counters(),
            "step {step}"
        );
        // Every step, but under miri (a walk of all 1024 entries, interpreted) every 50th.
        if !cfg!(miri) || step % 50 == 0 {
            by_packet.conntrack.check_invariants();
        }
    }
    by_packet.conntrack.check_invariants();
    assert!(forwarded > steps / 2, "{forwarded} of {steps}");
    // The fast path was taken: most packets were hits; and the slow ones happened.
    let c = by_packet.conntrack.counters();
    assert!(c.hits > steps as u64 / 2, "{c:?}");
    assert!(c.expired > 0 && c.misses_non_syn > 0, "{c:?}");
}
