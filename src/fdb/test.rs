//! Unit tests: small tables, so that miri runs them in seconds.

use super::*;
use alloc::vec;

fn vni(n: u32) -> Vni {
    Vni::new(n).unwrap()
}

fn mac(n: u32) -> EthernetAddress {
    let b = n.to_be_bytes();
    EthernetAddress([0x02, 0x00, b[0], b[1], b[2], b[3]])
}

fn port(n: u32) -> Destination {
    Destination::Port(PortId(n))
}

fn v4(last: u8) -> Destination {
    Destination::Vtep(IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)))
}

fn v6(last: u16) -> Destination {
    Destination::Vtep(IpAddr::V6(Ipv6Addr::new(
        0x2001, 0xdb8, 0, 0, 0, 0, 0, last,
    )))
}

fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

fn small(capacity: u32) -> Fdb {
    Fdb::new(FdbConfig {
        capacity,
        max_entries_per_vni: capacity,
        max_vnis: 8,
        max_ipv6_vteps: 4,
        max_flood_members: 4,
        ..FdbConfig::default()
    })
    .unwrap()
}

#[test]
fn learn_then_lookup_refresh_and_fresh() {
    let fdb = small(16);
    assert_eq!(fdb.lookup(vni(1), mac(1)), None);
    assert_eq!(fdb.learn(vni(1), mac(1), v4(2), secs(10)), Learn::Inserted);
    assert_eq!(fdb.lookup(vni(1), mac(1)), Some(v4(2)));
    // Within the granularity (1 s): nothing stored.
    assert_eq!(
        fdb.learn(vni(1), mac(1), v4(2), Instant::from_millis(10_900)),
        Learn::Fresh
    );
    assert_eq!(fdb.learn(vni(1), mac(1), v4(2), secs(11)), Learn::Refreshed);
    assert_eq!(fdb.learn(vni(1), mac(1), v4(2), secs(11)), Learn::Fresh);
    // A clock that steps back stores nothing.
    assert_eq!(fdb.learn(vni(1), mac(1), v4(2), secs(5)), Learn::Fresh);
    let entry = fdb.get(vni(1), mac(1), secs(12)).unwrap();
    assert_eq!(entry.last_seen, Some(secs(11)));
    assert_eq!(entry.kind, EntryKind::Learned);
    assert_eq!(fdb.len(), 1);
    assert_eq!(fdb.counters().learned, 1);
}

#[test]
fn vnis_are_isolated() {
    let fdb = small(16);
    assert_eq!(fdb.learn(vni(1), mac(1), port(1), secs(0)), Learn::Inserted);
    assert_eq!(fdb.learn(vni(2), mac(1), port(2), secs(0)), Learn::Inserted);
    // VNIs that differ only in their high byte are different keys too.
    assert_eq!(
        fdb.learn(vni(0x01_0001), mac(1), port(3), secs(0)),
        Learn::Inserted
    );
    assert_eq!(fdb.lookup(vni(1), mac(1)), Some(port(1)));
    assert_eq!(fdb.lookup(vni(2), mac(1)), Some(port(2)));
    assert_eq!(fdb.lookup(vni(0x01_0001), mac(1)), Some(port(3)));
    assert_eq!(fdb.flush_vni(vni(1)), 1);
    assert_eq!(fdb.lookup(vni(1), mac(1)), None);
    assert_eq!(fdb.lookup(vni(2), mac(1)), Some(port(2)));
    assert_eq!(fdb.vni_len(vni(2)), 1);
    assert_eq!(fdb.vni_len(vni(1)), 0);
}

#[test]
fn learned_entries_move_and_count() {
    let fdb = small(16);
    fdb.learn(vni(1), mac(1), v4(2), secs(0));
    assert_eq!(
        fdb.learn(vni(1), mac(1), port(7), secs(1)),
        Learn::Moved { from: v4(2) }
    );
    assert_eq!(fdb.lookup(vni(1), mac(1)), Some(port(7)));
    assert_eq!(
        fdb.learn(vni(1), mac(1), v6(1), secs(2)),
        Learn::Moved { from: port(7) }
    );
    assert_eq!(fdb.lookup(vni(1), mac(1)), Some(v6(1)));
    assert_eq!(fdb.ipv6_vteps(), 1);
    assert_eq!(
        fdb.learn(vni(1), mac(1), v4(3), secs(3)),
        Learn::Moved { from: v6(1) }
    );
    // The IPv6 address lost its last reference.
    assert_eq!(fdb.ipv6_vteps(), 0);
    assert_eq!(fdb.counters().moved, 3);
    assert_eq!(fdb.len(), 1);
}

#[test]
fn static_entries_never_move_and_drop_the_frame() {
    let fdb = small(16);
    assert_eq!(fdb.insert_static(vni(1), mac(1), port(1)), Ok(None));
    assert_eq!(fdb.learn(vni(1), mac(1), port(1), secs(0)), Learn::Fresh);
    let moved = fdb.learn(vni(1), mac(1), v4(9), secs(0));
    assert_eq!(moved, Learn::Dropped(DropReason::FdbStaticMove));
    assert!(!moved.forward());
    assert_eq!(fdb.lookup(vni(1), mac(1)), Some(port(1)));
    assert_eq!(fdb.counters().static_move_dropped, 1);
    // Static entries never age and are not flushed.
    assert_eq!(fdb.age(secs(1_000_000)), 0);
    assert_eq!(fdb.flush_port(PortId(1)), 0);
    assert_eq!(fdb.flush_vni(vni(1)), 0);
    let entry = fdb.get(vni(1), mac(1), secs(0)).unwrap();
    assert_eq!((entry.kind, entry.last_seen), (EntryKind::Static, None));
    // Only remove takes them away.
    assert_eq!(fdb.remove(vni(1), mac(1)), Some(port(1)));
    assert_eq!(fdb.lookup(vni(1), mac(1)), None);
    assert!(fdb.is_empty());
}

#[test]
fn static_replaces_learned_in_place() {
    let fdb = small(16);
    fdb.learn(vni(1), mac(1), v6(1), secs(0));
    assert_eq!(fdb.insert_static(vni(1), mac(1), port(4)), Ok(Some(v6(1))));
    assert_eq!(fdb.ipv6_vteps(), 0);
    assert_eq!(fdb.len(), 1);
    assert_eq!(
        fdb.get(vni(1), mac(1), secs(0)).unwrap().kind,
        EntryKind::Static
    );
    assert_eq!(fdb.insert_static(vni(1), mac(1), v4(1)), Ok(Some(port(4))));
    assert_eq!(fdb.lookup(vni(1), mac(1)), Some(v4(1)));
}

#[test]
fn invalid_source_macs_are_dropped() {
    let fdb = small(16);
    for source in [
        EthernetAddress([0xff; 6]),
        EthernetAddress([0x01, 0x00, 0x5e, 0, 0, 1]),
        EthernetAddress([0; 6]),
    ] {
        assert_eq!(
            fdb.learn(vni(1), source, port(1), secs(0)),
            Learn::Dropped(DropReason::FdbSourceMacInvalid)
        );
    }
    assert!(fdb.is_empty());
    assert_eq!(fdb.counters().invalid_source_dropped, 3);
}

#[test]
fn ageing_follows_frames_from_the_mac_only() {
    let fdb = small(16);
    fdb.learn(vni(1), mac(1), port(1), secs(0));
    fdb.learn(vni(1), mac(2), port(1), secs(0));
    // Traffic towards mac(1) all along: it does not keep it alive.
    for t in 0..300 {
        assert!(fdb.lookup(vni(1), mac(1)).is_some());
        if t % 100 == 0 {
            fdb.learn(vni(1), mac(2), port(1), secs(t));
        }
    }
    assert_eq!(fdb.age(secs(299)), 0);
    assert_eq!(fdb.age(secs(300)), 1);
    assert_eq!(fdb.lookup(vni(1), mac(1)), None);
    assert_eq!(fdb.lookup(vni(1), mac(2)), Some(port(1)));
    assert_eq!(fdb.age(secs(499)), 0);
    assert_eq!(fdb.age(secs(500)), 1);
    assert_eq!(fdb.counters().aged, 2);
    assert!(fdb.is_empty());
}

#[test]
fn per_vni_ageing_and_learning_switch() {
    let fdb = small(16);
    let short = VniConfig {
        ageing: Duration::from_millis(2500),
        max_entries: 16,
        learning: true,
    };
    fdb.configure_vni(vni(2), short).unwrap();
    // Rounded up to whole granularities.
    assert_eq!(fdb.vni_config(vni(2)).ageing, Duration::from_secs(3));
    assert_eq!(fdb.vni_config(vni(9)).ageing, Duration::from_secs(300));
    fdb.learn(vni(1), mac(1), port(1), secs(0));
    fdb.learn(vni(2), mac(1), port(1), secs(0));
    assert_eq!(fdb.age(secs(3)), 1);
    assert_eq!(fdb.lookup(vni(2), mac(1)), None);
    assert_eq!(fdb.lookup(vni(1), mac(1)), Some(port(1)));

    fdb.configure_vni(
        vni(3),
        VniConfig {
            learning: false,
            ..short
        },
    )
    .unwrap();
    assert_eq!(fdb.learn(vni(3), mac(1), port(1), secs(0)), Learn::Disabled);
    assert_eq!(fdb.lookup(vni(3), mac(1)), None);
    assert_eq!(
        fdb.configure_vni(
            vni(3),
            VniConfig {
                ageing: Duration::ZERO,
                ..short
            }
        ),
        Err(FdbError::AgeingOutOfRange)
    );
}

#[test]
fn capacity_bounds_refuse_learning_keep_statics_and_flows() {
    let fdb = small(8);
    fdb.configure_vni(
        vni(2),
        VniConfig {
            ageing: Duration::from_secs(300),
            max_entries: 2,
            learning: true,
        },
    )
    .unwrap();
    assert_eq!(fdb.insert_static(vni(2), mac(100), port(1)), Ok(None));
    assert_eq!(fdb.learn(vni(2), mac(1), port(1), secs(0)), Learn::Inserted);
    assert_eq!(
        fdb.learn(vni(2), mac(2), port(1), secs(0)),
        Learn::Refused(DropReason::FdbVniFull)
    );
    assert_eq!(
        fdb.insert_static(vni(2), mac(101), port(1)),
        Err(FdbError::VniFull)
    );
    for i in 0..6 {
        assert_eq!(fdb.learn(vni(1), mac(i), port(1), secs(0)), Learn::Inserted);
    }
    assert_eq!(fdb.len(), 8);
    let refused = fdb.learn(vni(1), mac(50), port(1), secs(0));
    assert_eq!(refused, Learn::Refused(DropReason::FdbFull));
    assert!(refused.forward());
    assert_eq!(
        fdb.insert_static(vni(3), mac(1), port(1)),
        Err(FdbError::Full)
    );
    // Existing entries keep refreshing and moving while full.
    assert_eq!(
        fdb.learn(vni(1), mac(0), port(1), secs(5)),
        Learn::Refreshed
    );
    assert_eq!(
        fdb.learn(vni(1), mac(0), port(2), secs(6)),
        Learn::Moved { from: port(1) }
    );
    // Ageing frees room; the static entry survives it.
    assert_eq!(fdb.age(secs(1000)), 7);
    assert_eq!(fdb.lookup(vni(2), mac(100)), Some(port(1)));
    assert_eq!(
        fdb.learn(vni(1), mac(50), port(1), secs(1000)),
        Learn::Inserted
    );
    let counters = fdb.counters();
    assert_eq!((counters.refused_full, counters.refused_vni_full), (1, 1));
}

#[test]
fn vni_table_bound() {
    let fdb = Fdb::new(FdbConfig {
        capacity: 16,
        max_vnis: 2,
        ..FdbConfig::default()
    })
    .unwrap();
    fdb.learn(vni(1), mac(1), port(1), secs(0));
    fdb.learn(vni(2), mac(1), port(1), secs(0));
    assert_eq!(
        fdb.learn(vni(3), mac(1), port(1), secs(0)),
        Learn::Refused(DropReason::FdbVniTableFull)
    );
    assert_eq!(
        fdb.insert_static(vni(3), mac(1), port(1)),
        Err(FdbError::VniTableFull)
    );
    assert_eq!(fdb.counters().refused_vni_table_full, 1);
}

#[test]
fn ipv6_vteps_are_interned_released_and_bounded() {
    let fdb = small(16); // four IPv6 VTEPs at once
    for i in 0..4 {
        assert_eq!(
            fdb.learn(vni(1), mac(i), v6(i as u16), secs(0)),
            Learn::Inserted
        );
    }
    assert_eq!(fdb.learn(vni(1), mac(10), v6(0), secs(0)), Learn::Inserted);
    assert_eq!(fdb.ipv6_vteps(), 4);
    assert_eq!(
        fdb.learn(vni(1), mac(11), v6(99), secs(0)),
        Learn::Refused(DropReason::FdbVtepTableFull)
    );
    assert_eq!(fdb.flush_vtep(v6_ip(0)), 2);
    assert_eq!(fdb.ipv6_vteps(), 3);
    // The freed slot serves another address, and every lookup still resolves right.
    assert_eq!(fdb.learn(vni(1), mac(11), v6(99), secs(0)), Learn::Inserted);
    for i in 1..4 {
        assert_eq!(fdb.lookup(vni(1), mac(i)), Some(v6(i as u16)));
    }
    assert_eq!(fdb.lookup(vni(1), mac(11)), Some(v6(99)));
    assert_eq!(fdb.flush_vtep(v6_ip(1234)), 0);
}

fn v6_ip(last: u16) -> IpAddr {
    match v6(last) {
        Destination::Vtep(ip) => ip,
        Destination::Port(_) => unreachable!(),
    }
}

#[test]
fn flush_by_port_and_vtep() {
    let fdb = small(16);
    fdb.learn(vni(1), mac(1), port(1), secs(0));
    fdb.learn(vni(2), mac(2), port(1), secs(0));
    fdb.learn(vni(1), mac(3), port(2), secs(0));
    fdb.learn(vni(1), mac(4), v4(1), secs(0));
    fdb.learn(vni(3), mac(5), v4(1), secs(0));
    fdb.insert_static(vni(1), mac(6), port(1)).unwrap();
    fdb.insert_static(vni(1), mac(7), v4(1)).unwrap();
    assert_eq!(fdb.flush_port(PortId(1)), 2);
    assert_eq!(fdb.flush_vtep(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))), 2);
    let mut left: Vec<_> = fdb
        .entries(secs(0))
        .into_iter()
        .map(|e| (e.vni, e.mac, e.destination, e.kind))
        .collect();
    left.sort_by_key(|&(v, m, _, _)| (v, m.0));
    assert_eq!(
        left,
        vec![
            (vni(1), mac(3), port(2), EntryKind::Learned),
            (vni(1), mac(6), port(1), EntryKind::Static),
            (vni(1), mac(7), v4(1), EntryKind::Static),
        ]
    );
}

#[test]
fn flood_lists() {
    let fdb = small(16);
    let mut flood = fdb.flood_buffer();
    fdb.flood_list(vni(1), &mut flood);
    assert!(flood.is_empty());
    fdb.set_flood_list(vni(1), &[v4(1), port(1), v6(1), v4(1)])
        .unwrap();
    fdb.flood_list(vni(1), &mut flood);
    assert_eq!(flood.as_slice(), &[v4(1), port(1), v6(1)]);
    fdb.flood_list(vni(2), &mut flood);
    assert!(flood.is_empty());
    assert_eq!(fdb.ipv6_vteps(), 1);
    assert_eq!(
        fdb.set_flood_list(vni(1), &[port(1), port(2), port(3), port(4), port(5)]),
        Err(FdbError::FloodListTooLong)
    );
    fdb.set_flood_list(vni(1), &[port(2)]).unwrap();
    fdb.flood_list(vni(1), &mut flood);
    assert_eq!(flood.as_slice(), &[port(2)]);
    assert_eq!(flood.len(), 1);
    assert_eq!(fdb.ipv6_vteps(), 0);
    // A full IPv6 table refuses the list whole and keeps the old one.
    assert_eq!(
        fdb.set_flood_list(vni(1), &[v6(1), v6(2), v6(3), v6(4), v6(5)]),
        Err(FdbError::FloodListTooLong)
    );
    fdb.set_flood_list(vni(2), &[v6(1), v6(2), v6(3), v6(4)])
        .unwrap();
    assert_eq!(
        fdb.set_flood_list(vni(1), &[v6(5)]),
        Err(FdbError::VtepTableFull)
    );
    fdb.flood_list(vni(1), &mut flood);
    assert_eq!(flood.as_slice(), &[port(2)]);
    assert_eq!(fdb.ipv6_vteps(), 4);
}

#[test]
fn probing_past_full_buckets_survives_removal() {
    // 12 entries in 4 buckets of 4: many live away from home.
    let fdb = small(12);
    assert_eq!(fdb.slots(), 16);
    for i in 0..12 {
        assert_eq!(fdb.learn(vni(1), mac(i), port(i), secs(0)), Learn::Inserted);
    }
    let spread = {
        let _guard = fdb.lock();
        fdb.table.probe_histogram_locked()
    };
    assert_eq!(spread.iter().sum::<usize>(), 12);
    for round in 0..3u32 {
        for i in (round % 2..12).step_by(2) {
            assert_eq!(fdb.remove(vni(1), mac(i)), Some(port(i)));
        }
        for i in 0..12 {
            let expected = (i % 2 != round % 2).then_some(port(i));
            assert_eq!(
                fdb.lookup(vni(1), mac(i)),
                expected,
                "round {round} mac {i}"
            );
        }
        for i in (round % 2..12).step_by(2) {
            assert_eq!(fdb.learn(vni(1), mac(i), port(i), secs(0)), Learn::Inserted);
        }
        for i in 0..12 {
            assert_eq!(fdb.lookup(vni(1), mac(i)), Some(port(i)));
        }
    }
    // Misses in a full table terminate.
    assert_eq!(fdb.lookup(vni(1), mac(999)), None);
}

#[test]
fn show_lists_every_entry_with_its_age() {
    let fdb = small(16);
    fdb.learn(vni(1), mac(1), port(1), secs(3));
    fdb.insert_static(vni(4), mac(2), v6(7)).unwrap();
    let mut entries = fdb.entries(secs(10));
    entries.sort_by_key(|e| e.vni);
    assert_eq!(
        entries,
        vec![
            Entry {
                vni: vni(1),
                mac: mac(1),
                destination: port(1),
                kind: EntryKind::Learned,
                last_seen: Some(secs(3)),
            },
            Entry {
                vni: vni(4),
                mac: mac(2),
                destination: v6(7),
                kind: EntryKind::Static,
                last_seen: None,
            },
        ]
    );
}

#[test]
fn configuration_is_checked() {
    let bad = |config: FdbConfig| Fdb::new(config).unwrap_err();
    let good = FdbConfig::default();
    assert_eq!(
        bad(FdbConfig {
            capacity: 0,
            ..good
        }),
        FdbError::SizeOutOfRange
    );
    assert_eq!(
        bad(FdbConfig {
            capacity: MAX_CAPACITY + 1,
            ..good
        }),
        FdbError::SizeOutOfRange
    );
    assert_eq!(
        bad(FdbConfig {
            max_vnis: 1 << 20,
            max_flood_members: 32,
            ..good
        }),
        FdbError::SizeOutOfRange
    );
    assert_eq!(
        bad(FdbConfig {
            refresh_granularity: Duration::from_micros(999),
            ..good
        }),
        FdbError::GranularityTooFine
    );
    assert_eq!(
        bad(FdbConfig {
            ageing: Duration::ZERO,
            ..good
        }),
        FdbError::AgeingOutOfRange
    );
    assert_eq!(
        bad(FdbConfig {
            ageing: Duration::from_secs(1 << 31),
            ..good
        }),
        FdbError::AgeingOutOfRange
    );
}

#[test]
fn ticks_divide_exactly() {
    let mut next = crate::mix::xorshift(0x1234_5678_9abc_def0u64);
    for nanos in [1_000_000u64, 1_000_000_000, 1 << 20, 3_333_333, 7, 2] {
        let ticker = Ticker::new(nanos);
        let nanos = nanos.max(2);
        let edges = [0, 1, nanos - 1, nanos, nanos + 1, u64::MAX, u64::MAX - 1];
        for n in edges.into_iter().chain((0..200).map(|_| next())) {
            assert_eq!(
                ticker.ticks(Instant::from_nanos(n)),
                n / nanos,
                "{n} / {nanos}"
            );
        }
    }
}

#[test]
fn keys_round_trip() {
    for (v, m) in [
        (0u32, [0u8; 6]),
        (0xFF_FFFF, [0xff; 6]),
        (0x12_3456, [1, 2, 3, 4, 5, 6]),
    ] {
        let key = Key::new(vni(v), EthernetAddress(m));
        assert_eq!(key.vni(), vni(v));
        assert_eq!(key.mac(), EthernetAddress(m));
    }
}

/// xorshift64*, for the batch tests' random keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// One of few VNIs and few MACs, so that the same MAC shows up in several VNIs.
    fn key(&mut self) -> (Vni, EthernetAddress) {
        let r = self.next();
        (vni(1 + (r % 3) as u32), mac((r >> 8) as u32 % 700))
    }

    fn destination(&mut self) -> Destination {
        let r = self.next();
        match r % 3 {
            0 => port((r >> 8) as u32 % 8),
            1 => v4((r >> 8) as u8),
            _ => v6((r >> 8) as u16 % 3),
        }
    }
}

#[test]
fn lookup_batch_gives_what_lookup_gives() {
    // Full to the capacity bound (75 % of the slots), so that some probes pass full buckets.
    // Smaller under miri, which interprets every instruction (the full size took minutes).
    let (entries, stream) = if cfg!(miri) { (64, 120) } else { (512, 2000) };
    let fdb = small(512);
    let mut rng = Rng(0x0BAD_5EED);
    while fdb.len() < entries {
        let (v, m) = rng.key();
        let to = rng.destination();
        if rng.next().is_multiple_of(8) {
            fdb.insert_static(v, m, to).unwrap();
        } else {
            fdb.learn(v, m, to, secs(1));
        }
    }
    let mut keys: Vec<(Vni, EthernetAddress)> = (0..stream).map(|_| rng.key()).collect();
    // Every stored key too, so that the batch finds entries that live past their home bucket
    // (the probe a batch continues from its kept home: `Table::find_at`); the full-size table
    // has some (the miri size is too sparse to be sure of any).
    let (stored, spread) = {
        let _guard = fdb.lock();
        let stored: Vec<(Vni, EthernetAddress)> = fdb
            .table
            .entries_locked()
            .map(|(_, key, _)| (key.vni(), key.mac()))
            .collect();
        (stored, fdb.table.probe_histogram_locked())
    };
    if !cfg!(miri) {
        assert!(spread.iter().skip(1).sum::<usize>() > 0, "{spread:?}");
    }
    keys.extend(stored);
    let stream = keys.len();
    let expected: Vec<Option<Destination>> = keys.iter().map(|&(v, m)| fdb.lookup(v, m)).collect();
    assert!(expected.iter().any(Option::is_some) && expected.iter().any(Option::is_none));
    // What the output slots hold before: an IPv6 VTEP, whose address a lookup that finds a
    // port or an IPv4 VTEP leaves in place; it must not show.
    let stale = Found {
        kind: FOUND_IPV4 + 1,
        word: 999,
        ipv6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99),
    };
    let destinations = |found: &[Found]| -> Vec<Option<Destination>> {
        found.iter().map(Found::destination).collect()
    };
    // Batches shorter than, equal to and longer than a prefetch group, and odd lengths (fewer
    // under miri).
    let lens: &[usize] = if cfg!(miri) {
        &[0, 1, 16, 17, stream]
    } else {
        &[0, 1, 2, 15, 16, 17, 33, 100, stream]
    };
    for &len in lens {
        for start in [0, 7.min(keys.len() - len), keys.len() - len] {
            let mut out = vec![stale; len];
            fdb.lookup_batch(&keys[start..start + len], &mut out);
            assert_eq!(
                destinations(&out),
                &expected[start..start + len],
                "{len} at {start}"
            );
            for (found, expected) in out.iter().zip(&expected[start..start + len]) {
                assert_eq!(found.is_found(), expected.is_some());
                assert_eq!(
                    found.port(),
                    expected.and_then(|d| match d {
                        Destination::Port(p) => Some(p),
                        Destination::Vtep(_) => None,
                    })
                );
                assert_eq!(
                    found.vtep(),
                    expected.and_then(|d| match d {
                        Destination::Port(_) => None,
                        Destination::Vtep(a) => Some(a),
                    })
                );
            }
        }
    }
    // Lengths that differ: only the common prefix is written.
    let mut out = vec![stale; 40];
    fdb.lookup_batch(&keys[..20], &mut out);
    assert_eq!(destinations(&out[..20]), expected[..20]);
    assert!(out[20..].iter().all(|d| *d == stale));
    let mut out = vec![Found::NOTHING; 20];
    fdb.lookup_batch(&keys[..40], &mut out);
    assert_eq!(destinations(&out), expected[..20]);
    // Prefetching changes nothing.
    for &(v, m) in &keys {
        fdb.prefetch(v, m);
    }
    assert_eq!(fdb.len(), entries);
}

#[test]
fn learn_batch_gives_what_learn_gives() {
    // Two tables fed the same frames, one at a time and in batches: same outcomes, same
    // entries, same counters. Small bounds, so that refusals, moves, static drops and
    // invalid sources all happen.
    let one = small(300);
    let batched = small(300);
    let mut rng = Rng(0xFEED_F00D);
    // Fewer rounds under miri (the 40 took 90 s there): the refusals then need not happen.
    let rounds = if cfg!(miri) { 16 } else { 40u64 };
    for round in 0..rounds {
        if round % 10 == 3 {
            let (v, m) = rng.key();
            let to = rng.destination();
            assert_eq!(one.insert_static(v, m, to), batched.insert_static(v, m, to));
        }
        let len = (rng.next() % 40) as usize;
        let sources: Vec<(Vni, EthernetAddress, Destination)> = (0..len)
            .map(|n| {
                let (v, m) = rng.key();
                let m = if n % 17 == 5 {
                    EthernetAddress([0x01, 0, 0x5e, 0, 0, 1])
                } else {
                    m
                };
                // Few destinations per key, so that refreshes outnumber moves.
                let to = if rng.next().is_multiple_of(4) {
                    rng.destination()
                } else {
                    port(1)
                };
                (v, m, to)
            })
            .collect();
        let now = Instant::from_millis(1000 + round * 700);
        let expected: Vec<Learn> = sources
            .iter()
            .map(|&(v, m, to)| one.learn(v, m, to, now))
            .collect();
        let mut out = vec![Learn::Disabled; len];
        let other = batched.learn_batch(&sources, now, &mut out);
        assert_eq!(out, expected, "round {round}");
        let not_refreshed = expected
            .iter()
            .filter(|outcome| !matches!(outcome, Learn::Refreshed | Learn::Fresh))
            .count();
        assert_eq!(other, not_refreshed, "round {round}");
        if round % 10 == 9 {
            assert_eq!(one.age(now), batched.age(now));
        }
    }
    assert_eq!(one.entries(secs(100)), batched.entries(secs(100)));
    assert_eq!(one.counters(), batched.counters());
    assert!(one.counters().learned > 0 && one.counters().moved > 0);
    if !cfg!(miri) {
        assert!(one.counters().refused_full > 0 || one.counters().refused_vtep_table_full > 0);
    }
}

#[test]
fn learn_batch_drops_invalid_sources_that_have_static_entries() {
    // A static entry may name a group MAC (a destination, never a source): learning from it
    // is dropped as an invalid source, batched or not, even though the entry exists and points
    // where the frame came from (the batch's fast path must not call it fresh). The unicast
    // MACs with zero bytes in either key word are refreshed as usual.
    let fdb = small(64);
    let invalid = [
        EthernetAddress([0xff; 6]),
        EthernetAddress([0x01, 0x00, 0x5e, 0, 0, 1]),
        EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
        EthernetAddress([0x01, 0, 0, 0, 0, 0]),
        EthernetAddress([0; 6]),
    ];
    let valid = [
        EthernetAddress([0, 0, 0, 0, 0, 1]),
        EthernetAddress([0, 1, 0, 0, 0, 0]),
        EthernetAddress([0x02, 0, 0, 0, 0, 0]),
        EthernetAddress([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]),
    ];
    for (n, &m) in invalid.iter().chain(valid.iter()).enumerate() {
        let to = if n % 2 == 0 { port(3) } else { v4(3) };
        assert_eq!(fdb.insert_static(vni(7), m, to), Ok(None));
        let mut out = [Learn::Disabled];
        fdb.learn_batch(&[(vni(7), m, to)], secs(1), &mut out);
        let expected = if invalid.contains(&m) {
            Learn::Dropped(DropReason::FdbSourceMacInvalid)
        } else {
            Learn::Fresh
        };
        assert_eq!(out[0], expected, "{m}");
        assert_eq!(fdb.learn(vni(7), m, to, secs(1)), expected, "{m}");
    }
    assert_eq!(
        fdb.counters().invalid_source_dropped,
        2 * invalid.len() as u64
    );
}
