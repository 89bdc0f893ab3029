//! Heavy forwarding-table tests, kept out of the library so that miri's run stays short: a
//! flood of one million random source MACs against the capacity bounds, and a multi-thread
//! stress test of readers against writers, bounded in time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration as WallDuration;

use switchyard::fdb::{Destination, EntryKind, Fdb, FdbConfig, Learn, VniConfig};
use switchyard::time::{Duration, Instant};
use switchyard::wire::EthernetAddress;
use switchyard::{DropReason, PortId, Vni};

/// xorshift64*: a deterministic random stream for the tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A random unicast MAC (locally administered).
    fn mac(&mut self) -> EthernetAddress {
        let b = self.next().to_le_bytes();
        EthernetAddress([(b[0] & 0xFC) | 0x02, b[1], b[2], b[3], b[4], b[5]])
    }
}

fn vni(n: u32) -> Vni {
    Vni::new(n).unwrap()
}

fn vtep4(n: u8) -> Destination {
    Destination::Vtep(IpAddr::V4(Ipv4Addr::new(198, 18, 1, n)))
}

#[test]
fn mac_flood_keeps_the_bounds_and_the_static_entries() {
    const CAPACITY: u32 = 50_000;
    const PER_VNI: u32 = 30_000;
    const FLOOD: usize = 1_000_000;
    let fdb = Fdb::new(FdbConfig {
        capacity: CAPACITY,
        max_entries_per_vni: PER_VNI,
        hash_seed: 0xDEAD_BEEF,
        ..FdbConfig::default()
    })
    .unwrap();
    let mut rng = Rng(0x1234_5678);

    // Configuration and existing flows before the flood.
    let statics: Vec<(Vni, EthernetAddress, Destination)> = (0..100u32)
        .map(|i| (vni(1 + i % 2), rng.mac(), Destination::Port(PortId(i))))
        .collect();
    for &(v, m, d) in &statics {
        assert_eq!(fdb.insert_static(v, m, d), Ok(None));
    }
    let flows: Vec<(Vni, EthernetAddress)> =
        (0..1000).map(|i| (vni(1 + i % 2), rng.mac())).collect();
    for &(v, m) in &flows {
        assert_eq!(
            fdb.learn(v, m, vtep4(1), Instant::from_secs(1)),
            Learn::Inserted
        );
    }

    // The flood: one million random sources spread over two VNIs, from an attacker's VTEP,
    // some of them the static MACs themselves.
    let now = Instant::from_secs(2);
    let (mut inserted, mut refused_full, mut refused_vni, mut static_drops) = (0, 0, 0, 0);
    for i in 0..FLOOD {
        let (v, m) = if i % 10_000 == 0 {
            let (v, m, _) = statics[i / 10_000 % statics.len()];
            (v, m)
        } else {
            (vni(1 + (i % 2) as u32), rng.mac())
        };
        match fdb.learn(v, m, vtep4(66), now) {
            Learn::Inserted => inserted += 1,
            Learn::Refused(DropReason::FdbFull) => refused_full += 1,
            Learn::Refused(DropReason::FdbVniFull) => refused_vni += 1,
            Learn::Dropped(DropReason::FdbStaticMove) => static_drops += 1,
            other => panic!("flood frame {i}: {other:?}"),
        }
        if i % 100_000 == 0 {
            assert!(fdb.len() <= CAPACITY as usize);
        }
    }

    assert_eq!(fdb.len(), CAPACITY as usize);
    assert_eq!(inserted, CAPACITY as usize - 1100);
    assert!(fdb.vni_len(vni(1)) <= PER_VNI as usize);
    assert!(fdb.vni_len(vni(2)) <= PER_VNI as usize);
    assert_eq!(fdb.vni_len(vni(1)) + fdb.vni_len(vni(2)), CAPACITY as usize);
    assert_eq!(static_drops, 100);
    assert_eq!(inserted + refused_full + refused_vni + static_drops, FLOOD);
    let counters = fdb.counters();
    assert_eq!(counters.refused_full as usize, refused_full);
    assert_eq!(counters.refused_vni_full as usize, refused_vni);
    assert_eq!(counters.static_move_dropped, 100);

    // Static entries survived untouched, existing flows keep working and refreshing.
    for &(v, m, d) in &statics {
        assert_eq!(fdb.lookup(v, m), Some(d));
    }
    for &(v, m) in &flows {
        assert_eq!(fdb.lookup(v, m), Some(vtep4(1)));
        assert_eq!(
            fdb.learn(v, m, vtep4(1), Instant::from_secs(3)),
            Learn::Refreshed
        );
    }
    let shown = fdb.entries(Instant::from_secs(3));
    assert_eq!(shown.len(), CAPACITY as usize);
    assert_eq!(
        shown.iter().filter(|e| e.kind == EntryKind::Static).count(),
        100
    );

    // Once the flood has aged out, the room is back; flows that kept sending stay.
    assert_eq!(fdb.age(Instant::from_secs(302)), CAPACITY as usize - 1100);
    assert_eq!(fdb.len(), 1100);
    for &(v, m) in &flows {
        assert_eq!(fdb.lookup(v, m), Some(vtep4(1)));
    }
    assert_eq!(
        fdb.learn(vni(1), rng.mac(), vtep4(2), Instant::from_secs(302)),
        Learn::Inserted
    );
}

/// The port number of a stressed key's destination encodes the key, so that a reader can tell
/// a destination that belongs to another key (a torn read) from a legitimate one.
fn stress_destination(key: u32, version: u64) -> Destination {
    match version % 3 {
        0 => Destination::Port(PortId(key * 1_000 + (version % 1_000) as u32)),
        1 => Destination::Vtep(IpAddr::V4(Ipv4Addr::from(
            key * 1_000 + (version % 1_000) as u32,
        ))),
        _ => Destination::Vtep(IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            key as u16,
            (version % 7) as u16,
        ))),
    }
}

fn key_of(destination: Destination) -> u32 {
    match destination {
        Destination::Port(port) => port.0 / 1_000,
        Destination::Vtep(IpAddr::V4(a)) => u32::from(a) / 1_000,
        Destination::Vtep(IpAddr::V6(a)) => u32::from(a.segments()[6]),
    }
}

fn stress_mac(key: u32) -> EthernetAddress {
    let b = key.to_be_bytes();
    EthernetAddress([0x02, 0x55, b[0], b[1], b[2], b[3]])
}

#[test]
fn readers_and_writers_stress() {
    const KEYS: u32 = 512;
    const STATICS: u32 = 64;
    let fdb = Arc::new(
        Fdb::new(FdbConfig {
            capacity: 600,
            max_entries_per_vni: 600,
            max_ipv6_vteps: 2048,
            max_flood_members: 8,
            ..FdbConfig::default()
        })
        .unwrap(),
    );
    let v = vni(5);
    fdb.configure_vni(
        v,
        VniConfig {
            ageing: Duration::from_secs(2),
            max_entries: 600,
            learning: true,
        },
    )
    .unwrap();
    // Static keys live above the learned ones and never change.
    for key in KEYS..KEYS + STATICS {
        fdb.insert_static(v, stress_mac(key), stress_destination(key, 0))
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let clock = Arc::new(AtomicU64::new(0));
    let lookups = Arc::new(AtomicU64::new(0));

    let mut handles = Vec::new();
    // Two writers learning, moving and removing keys, on a shared fake clock.
    for writer in 0..2u64 {
        let (fdb, stop, clock) = (fdb.clone(), stop.clone(), clock.clone());
        handles.push(thread::spawn(move || {
            let mut rng = Rng(0x9E37_79B9 + writer);
            while !stop.load(Ordering::Relaxed) {
                let key = (rng.next() % u64::from(KEYS)) as u32;
                let now = Instant::from_millis(clock.fetch_add(1, Ordering::Relaxed) / 16);
                if rng.next().is_multiple_of(16) {
                    fdb.remove(v, stress_mac(key));
                } else {
                    let outcome =
                        fdb.learn(v, stress_mac(key), stress_destination(key, rng.next()), now);
                    assert!(
                        !matches!(outcome, Learn::Dropped(_) | Learn::Disabled),
                        "{outcome:?}"
                    );
                }
                // A static MAC showing up elsewhere is dropped, never moved.
                if rng.next().is_multiple_of(64) {
                    let key = KEYS + (rng.next() % u64::from(STATICS)) as u32;
                    let outcome = fdb.learn(v, stress_mac(key), stress_destination(key, 1), now);
                    assert_eq!(outcome, Learn::Dropped(DropReason::FdbStaticMove));
                }
            }
        }));
    }
    // A control-plane thread: flood-list replacement and ageing.
    {
        let (fdb, stop, clock) = (fdb.clone(), stop.clone(), clock.clone());
        handles.push(thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n = n.wrapping_add(1);
                let list: Vec<Destination> = (0..4)
                    .map(|i| Destination::Port(PortId(n * 10 + i)))
                    .collect();
                fdb.set_flood_list(v, &list).unwrap();
                fdb.age(Instant::from_millis(clock.load(Ordering::Relaxed) / 16));
                thread::yield_now();
            }
        }));
    }
    // Two readers: every answer is absent or belongs to its key, statics never flicker,
    // flood lists are whole.
    for reader in 0..2u64 {
        let (fdb, stop, lookups) = (fdb.clone(), stop.clone(), lookups.clone());
        handles.push(thread::spawn(move || {
            let mut rng = Rng(0xC0FFEE + reader);
            let mut flood = fdb.flood_buffer();
            let mut count = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..256 {
                    let key = (rng.next() % u64::from(KEYS + STATICS)) as u32;
                    let seen = fdb.lookup(v, stress_mac(key));
                    if key >= KEYS {
                        assert_eq!(seen, Some(stress_destination(key, 0)));
                    } else if let Some(destination) = seen {
                        assert_eq!(key_of(destination), key, "{destination:?}");
                    }
                    count += 1;
                }
                fdb.flood_list(v, &mut flood);
                if let Some(Destination::Port(first)) = flood.as_slice().first().copied() {
                    let expected: Vec<Destination> = (0..4)
                        .map(|i| Destination::Port(PortId(first.0 + i)))
                        .collect();
                    assert_eq!(flood.as_slice(), expected.as_slice());
                }
            }
            lookups.fetch_add(count, Ordering::Relaxed);
        }));
    }

    thread::sleep(WallDuration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.join().unwrap();
    }

    // Quiescent: the counts agree with what is shown, the statics are all there.
    let now = Instant::from_millis(clock.load(Ordering::Relaxed) / 16);
    let shown = fdb.entries(now);
    assert_eq!(shown.len(), fdb.len());
    assert_eq!(fdb.vni_len(v), fdb.len());
    for entry in &shown {
        assert_eq!(
            key_of(entry.destination),
            u32::from_be_bytes([
                entry.mac.0[2],
                entry.mac.0[3],
                entry.mac.0[4],
                entry.mac.0[5]
            ])
        );
    }
    assert_eq!(
        shown.iter().filter(|e| e.kind == EntryKind::Static).count(),
        STATICS as usize
    );
    assert!(lookups.load(Ordering::Relaxed) > 0);
    // Every IPv6 VTEP still named is named by a shown entry (the flood lists hold ports).
    let named: std::collections::BTreeSet<_> = shown
        .iter()
        .filter_map(|e| match e.destination {
            Destination::Vtep(IpAddr::V6(a)) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(fdb.ipv6_vteps(), named.len());
}
