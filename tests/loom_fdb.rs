//! loom models of the forwarding table's reader/writer races.
//!
//! `RUSTFLAGS="--cfg switchyard_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom
//! cargo test --release --test loom_fdb` (`.ci/run` runs it). Under that cfg every atomic and
//! fence of `switchyard::fdb` is loom's, so loom explores the interleavings of the sequence
//! locks, the writer lock and the reuse of IPv6 VTEP slots. The tables are tiny (two buckets)
//! so that each model finishes in seconds. The table never grows, so there is no growth race
//! to model, and nothing is reclaimed (slots are reused in place and validated by sequence
//! numbers), so there is no reclamation scheme outside loom's view.
//!
//! The reader runs in a spawned thread and the writer on the model's main thread. The order
//! matters to loom 0.7: its DPOR remembers only the last access to each atomic, so a reader
//! that loads *before* a writer that itself loads then stores the same word would be explored
//! in one order only. With the writer first, every load of the reader depends on the store it
//! read, and loom backtracks into the middle of the writer's stores. `runs` counts the
//! executions so that each model checks it explored more than one.
#![cfg(switchyard_loom)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use loom::sync::Arc;
use loom::thread;
use switchyard::fdb::{Destination, Fdb, FdbConfig, Found, Learn};
use switchyard::time::Instant;
use switchyard::wire::EthernetAddress;
use switchyard::{PortId, Vni};

fn tiny() -> Fdb {
    Fdb::new(FdbConfig {
        capacity: 4,
        max_entries_per_vni: 4,
        max_vnis: 1,
        max_ipv6_vteps: 1,
        max_flood_members: 2,
        ..FdbConfig::default()
    })
    .unwrap()
}

fn vni() -> Vni {
    Vni::new(7).unwrap()
}

fn mac(n: u8) -> EthernetAddress {
    EthernetAddress([0x02, 0, 0, 0, 0, n])
}

fn port(n: u32) -> Destination {
    Destination::Port(PortId(n))
}

fn v4(n: u8) -> Destination {
    Destination::Vtep(IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)))
}

fn v6(n: u16) -> Destination {
    Destination::Vtep(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n)))
}

const NOW: Instant = Instant::from_secs(1);

/// Runs `model` under loom and returns how many executions loom explored (a std atomic:
/// it counts across executions, which loom's own would not).
fn explore(model: impl Fn() + Sync + Send + 'static) -> usize {
    let runs: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    loom::model(move || {
        runs.fetch_add(1, Ordering::Relaxed);
        model();
    });
    runs.load(Ordering::Relaxed)
}

/// Spawns `read` on a loom thread of its own.
fn reader<T: Send + 'static>(
    fdb: &Arc<Fdb>,
    read: impl FnOnce(&Fdb) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let fdb = fdb.clone();
    thread::spawn(move || read(&fdb))
}

#[test]
fn reader_vs_insert() {
    let runs = explore(|| {
        let fdb = Arc::new(tiny());
        let read = reader(&fdb, |fdb| fdb.lookup(vni(), mac(1)));
        assert_eq!(fdb.learn(vni(), mac(1), v6(1), NOW), Learn::Inserted);
        // Before the insert: absent; after it: the whole IPv6 address, never a torn one.
        let seen = read.join().unwrap();
        assert!(seen.is_none() || seen == Some(v6(1)), "{seen:?}");
    });
    assert!(runs > 1, "{runs}");
}

#[test]
fn reader_vs_remove() {
    let runs = explore(|| {
        let fdb = Arc::new(tiny());
        fdb.learn(vni(), mac(1), v4(1), NOW);
        fdb.learn(vni(), mac(2), port(2), NOW);
        // The batch lookup: each key its own linearizable read, like `lookup`.
        let read = reader(&fdb, |fdb| {
            let mut found = [Found::NOTHING; 2];
            fdb.lookup_batch(&[(vni(), mac(1)), (vni(), mac(2))], &mut found);
            (found[0].destination(), found[1].destination())
        });
        assert_eq!(fdb.remove(vni(), mac(1)), Some(v4(1)));
        let (seen, neighbour) = read.join().unwrap();
        assert!(seen.is_none() || seen == Some(v4(1)), "{seen:?}");
        // Another entry of the same table is untouched throughout.
        assert_eq!(neighbour, Some(port(2)));
    });
    assert!(runs > 1, "{runs}");
}

#[test]
fn reader_vs_move() {
    let runs = explore(|| {
        let fdb = Arc::new(tiny());
        fdb.learn(vni(), mac(1), port(1), NOW);
        let read = reader(&fdb, |fdb| fdb.lookup(vni(), mac(1)));
        assert_eq!(
            fdb.learn(vni(), mac(1), v6(9), NOW),
            Learn::Moved { from: port(1) }
        );
        // A moving MAC is never missing: old place or new place, whole.
        let seen = read.join().unwrap();
        assert!(seen == Some(port(1)) || seen == Some(v6(9)), "{seen:?}");
    });
    assert!(runs > 1, "{runs}");
}

#[test]
fn reader_vs_ipv6_slot_reuse() {
    // One IPv6 slot: removing mac(1) frees it, learning mac(2) rewrites it with another
    // address. A reader of mac(1) must never see mac(2)'s address.
    let runs = explore(|| {
        let fdb = Arc::new(tiny());
        fdb.learn(vni(), mac(1), v6(1), NOW);
        let read = reader(&fdb, |fdb| fdb.lookup(vni(), mac(1)));
        assert_eq!(fdb.remove(vni(), mac(1)), Some(v6(1)));
        assert_eq!(fdb.learn(vni(), mac(2), v6(2), NOW), Learn::Inserted);
        let seen = read.join().unwrap();
        assert!(seen.is_none() || seen == Some(v6(1)), "{seen:?}");
    });
    assert!(runs > 1, "{runs}");
}

#[test]
fn flood_list_update_vs_reader() {
    let runs = explore(|| {
        let fdb = Arc::new(tiny());
        let old = [port(1), v6(1)];
        let middle = [port(1)];
        let new = [v4(2), v6(3)];
        fdb.set_flood_list(vni(), &old).unwrap();
        let read = reader(&fdb, |fdb| {
            let mut flood = fdb.flood_buffer();
            fdb.flood_list(vni(), &mut flood);
            flood
        });
        // The only IPv6 slot is freed, then rewritten from v6(1) to v6(3): a reader of the
        // old list must not see the new address in it.
        fdb.set_flood_list(vni(), &middle).unwrap();
        fdb.set_flood_list(vni(), &new).unwrap();
        let flood = read.join().unwrap();
        let seen = flood.as_slice();
        assert!(seen == old || seen == middle || seen == new, "{flood:?}");
    });
    assert!(runs > 1, "{runs}");
}

#[test]
fn two_writers_learn_the_same_key() {
    let runs = explore(|| {
        let fdb = Arc::new(tiny());
        let other = reader(&fdb, |fdb| fdb.learn(vni(), mac(1), port(2), NOW));
        let mine = fdb.learn(vni(), mac(1), port(1), NOW);
        let theirs = other.join().unwrap();
        // One inserts, the other moves it; the table ends with one entry, where the last
        // writer put it.
        let last = match (mine, theirs) {
            (Learn::Inserted, Learn::Moved { from }) => {
                assert_eq!(from, port(1));
                port(2)
            }
            (Learn::Moved { from }, Learn::Inserted) => {
                assert_eq!(from, port(2));
                port(1)
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(fdb.len(), 1);
        assert_eq!(fdb.lookup(vni(), mac(1)), Some(last));
    });
    assert!(runs > 1, "{runs}");
}

#[test]
fn reader_vs_ipv6_slot_reuse_by_another_writer() {
    // As above, but the removal and the reuse happen on two writer threads: the reuse must
    // not rely on a fence that only the removing thread executed.
    let runs = explore(|| {
        let fdb = Arc::new(tiny());
        fdb.learn(vni(), mac(1), v6(1), NOW);
        let read = reader(&fdb, |fdb| fdb.lookup(vni(), mac(1)));
        let remover = reader(&fdb, |fdb| fdb.remove(vni(), mac(1)));
        assert_eq!(remover.join().unwrap(), Some(v6(1)));
        assert_eq!(fdb.learn(vni(), mac(2), v6(2), NOW), Learn::Inserted);
        let seen = read.join().unwrap();
        assert!(seen.is_none() || seen == Some(v6(1)), "{seen:?}");
    });
    assert!(runs > 1, "{runs}");
}
