//! Forwarding-table lookups and learning, against the concurrent maps a Rust program would
//! otherwise use: `dashmap`, `papaya` and a `std::sync::RwLock<HashMap>`.
//!
//! `cargo bench --bench fdb`. Every contender holds the same table (the same (VNI, MAC) keys,
//! random MACs over 16 VNIs, half of them behind local ports and half behind IPv4 VTEPs) and
//! answers the same pre-generated random stream of keys, all hits. An iteration is a batch of
//! `BATCH` lookups (`Throughput::Elements`): the time per iteration divided by `BATCH` is the
//! time per lookup. Every contender writes what it found for each key into an output array of
//! the batch's length (`Option<Destination>` for the peers and for [`Fdb::lookup`], a
//! [`Found`] for [`Fdb::lookup_batch`]), which is `black_box`ed once per batch, so the lookups
//! cannot be optimised away and do not each pay a barrier. (Until 2026-11-28 the answers were
//! folded into one checksum instead, a `match` on each: that put a branch mispredicted about
//! every other key, half the keys being behind ports and half behind VTEPs, into every
//! contender's time; consuming the answer is the caller's work, not the lookup's.)
//!
//! The peers run as their documentation shows: their default hasher (SipHash-1-3 with a
//! random key), a key of `(Vni, EthernetAddress)`. papaya pins its guard once per batch and
//! the `RwLock` is read-locked once per batch (as a backend would, per receive batch);
//! dashmap locks a shard per lookup, as its `get` does.
//!
//! `switchyard` measures the batch API, [`Fdb::lookup_batch`] (and [`Fdb::learn_batch`] in
//! `fdb_learn`): the switch pipeline's way of using the table, a receive batch at a time, which
//! touches the home buckets of a group of keys before looking any of them up so that their
//! cache misses overlap. The peers have no batch API, so they run one lookup after another as
//! before (their misses overlap only as far as the out-of-order core finds them on its own).
//! `switchyard_single` (and `*_single` in `fdb_learn`) is the same table with one-at-a-time
//! [`Fdb::lookup`] ([`Fdb::learn`]), the like-for-like comparison with the peers.
//!
//! `floor` is not a contender but a reference for the same memory pattern: the same keys in
//! the same layout (64-byte buckets of four (key, destination) slots, as many buckets as
//! `switchyard` has, linear probing), in a plain array, one thread, no sequence check, no
//! atomics, a destination word instead of a `Destination`, and the same prefetch 16 keys
//! ahead; its answers are summed. It compares each slot's key with a branch, which the
//! switchyard table does not (it compares the four low key words without one), so it is not
//! a lower bound on this machine.
//!
//! Groups:
//! - `fdb_lookup`: 100k entries, one thread.
//! - `fdb_lookup_1m`: 1M entries, one thread.
//! - `fdb_read_scaling`: `switchyard/N`, `switchyard_single/N` and `papaya/N`, N reader
//!   threads over the 100k table while a writer thread learns (moves entries) at 1 % of the
//!   readers' rate, in a burst every millisecond. The readers claim batches from a shared
//!   counter until N times the iteration count are done; the time is the wall time until they
//!   are and the writer has caught up, and the throughput counts all readers (see
//!   `read_scaling_run` for why not a fixed share each, and why bursts a millisecond apart).
//!   Each reader writes its answers into its own output array with the same API as in
//!   `fdb_lookup` (`switchyard`: [`Fdb::lookup_batch`]; `switchyard_single`: [`Fdb::lookup`]).
//! - `fdb_learn`, in the 100k table, over a working set of 8k MACs (the active senders; the
//!   lookup groups are the ones that measure cold, random access): `refresh_existing` (the
//!   clock advances every batch, so each learn of an existing entry stores its new tick) and
//!   `insert_new` (a batch of new MACs, removed again outside the timed section), each with
//!   `learn_batch` and, as `*_single`, with one `learn` after another.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, RwLock};
use std::thread;
use std::time::{Duration as WallDuration, Instant as WallInstant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dashmap::DashMap;
use switchyard::fdb::{Destination, Fdb, FdbConfig, Found, Learn};
use switchyard::time::Instant;
use switchyard::wire::EthernetAddress;
use switchyard::{PortId, Vni};

/// How often the read-scaling writer wakes to learn (see `read_scaling_run`).
const WRITER_INTERVAL: WallDuration = WallDuration::from_millis(1);

/// Lookups per iteration.
const BATCH: usize = 1024;
/// Length of the random key stream (a power of two); iterations walk through it.
const STREAM: usize = 1 << 20;
const VNIS: u32 = 16;

type Key = (Vni, EthernetAddress);

/// xorshift64*, fixed seeds: every run and every contender sees the same keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn key(&mut self) -> Key {
        let r = self.next();
        let b = r.to_le_bytes();
        let vni = Vni::new((r >> 56) as u32 % VNIS + 100).unwrap();
        (
            vni,
            EthernetAddress([(b[0] & 0xFC) | 0x02, b[1], b[2], b[3], b[4], b[5]]),
        )
    }
}

fn destination(i: usize) -> Destination {
    if i.is_multiple_of(2) {
        Destination::Port(PortId(i as u32 % 64))
    } else {
        Destination::Vtep(IpAddr::V4(Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8)))
    }
}

/// The table contents and the lookup stream.
struct Workload {
    entries: Vec<(Key, Destination)>,
    stream: Vec<Key>,
}

impl Workload {
    fn new(len: usize) -> Workload {
        let mut rng = Rng(0x5EED_0000 + len as u64);
        let mut seen = std::collections::HashSet::with_capacity(len);
        let mut entries = Vec::with_capacity(len);
        while entries.len() < len {
            let key = rng.key();
            if seen.insert(key) {
                entries.push((key, destination(entries.len())));
            }
        }
        let stream = (0..STREAM)
            .map(|_| entries[(rng.next() % len as u64) as usize].0)
            .collect();
        Workload { entries, stream }
    }

    /// The table with room for `spare` entries beyond the workload's (the capacity bound
    /// sizes its memory: a switch configures it for the entries it expects).
    fn fdb(&self, spare: usize) -> Fdb {
        let capacity = (self.entries.len() + spare) as u32;
        let fdb = Fdb::new(FdbConfig {
            capacity,
            max_entries_per_vni: capacity,
            hash_seed: 0x0123_4567_89AB_CDEF,
            ..FdbConfig::default()
        })
        .unwrap();
        for &((vni, mac), destination) in &self.entries {
            assert_eq!(
                fdb.learn(vni, mac, destination, Instant::from_secs(1)),
                Learn::Inserted
            );
        }
        fdb
    }

    fn batch(&self, iteration: usize) -> &[Key] {
        let start = (iteration * BATCH) % STREAM;
        &self.stream[start..start + BATCH]
    }
}

/// The floor contender (see the module docs): a single-threaded table with `Fdb`'s bucket
/// layout and sizing, its keys hashed the same way (a 64x64->128-bit multiply), and no
/// concurrency at all.
struct Floor {
    /// Per bucket: a header word (unused: `Fdb` keeps its sequence and metadata there), then
    /// per slot the key's low word, high word and the destination word.
    buckets: Vec<[u32; 16]>,
    mask: usize,
}

impl Floor {
    fn key(&(vni, mac): &Key) -> (u32, u32) {
        let m = mac.0;
        (
            u32::from_be_bytes([m[2], m[3], m[4], m[5]]),
            u32::from_be_bytes([m[0], m[1], 0, 0]) | (vni.get() & 0xFFFF),
        )
    }

    fn home(&self, (low, high): (u32, u32)) -> usize {
        let x = (u64::from(high) << 32) | u64::from(low);
        let product = u128::from(x ^ 0x0123_4567_89AB_CDEF)
            * u128::from(x.rotate_left(29) ^ 0x9E37_79B9_7F4A_7C15);
        (((product as u64) ^ ((product >> 64) as u64)) >> 32) as usize & self.mask
    }

    fn new(entries: &[(Key, Destination)]) -> Floor {
        let len = entries.len().div_ceil(3).next_power_of_two();
        let mut floor = Floor {
            buckets: vec![[0; 16]; len],
            mask: len - 1,
        };
        for (i, (key, _)) in entries.iter().enumerate() {
            let (low, high) = Floor::key(key);
            let mut b = floor.home((low, high));
            'probe: loop {
                for slot in 0..4 {
                    let words = &mut floor.buckets[b][4 + slot * 3..7 + slot * 3];
                    if words[2] == 0 {
                        words.copy_from_slice(&[low, high, i as u32 + 1]);
                        break 'probe;
                    }
                }
                b = (b + 1) & floor.mask;
            }
        }
        floor
    }

    #[allow(unsafe_code)]
    fn prefetch(&self, bucket: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint that never faults; the address is in the table.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                self.buckets[bucket].as_ptr().cast(),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = bucket;
    }

    /// The destination word of every key (0: absent), prefetching 16 keys ahead; summed.
    fn lookup_batch(&self, keys: &[Key]) -> u64 {
        const AHEAD: usize = 16;
        for key in keys.iter().take(AHEAD) {
            self.prefetch(self.home(Floor::key(key)));
        }
        let mut sum = 0u64;
        for (i, key) in keys.iter().enumerate() {
            if let Some(next) = keys.get(i + AHEAD) {
                self.prefetch(self.home(Floor::key(next)));
            }
            let (low, high) = Floor::key(key);
            let mut b = self.home((low, high));
            let found = 'probe: loop {
                let bucket = &self.buckets[b];
                for slot in 0..4 {
                    let words = &bucket[4 + slot * 3..7 + slot * 3];
                    if words[0] == low && words[1] == high {
                        break 'probe words[2];
                    }
                    if words[2] == 0 {
                        break 'probe 0;
                    }
                }
                b = (b + 1) & self.mask;
            };
            sum = sum.wrapping_add(u64::from(found));
        }
        sum
    }
}

fn lookups(c: &mut Criterion, group_name: &str, len: usize) {
    let workload = Workload::new(len);
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(BATCH as u64));

    {
        let fdb = workload.fdb(0);
        let mut i = 0;
        let mut found = vec![Found::NOTHING; BATCH];
        group.bench_function("switchyard", |b| {
            b.iter(|| {
                i += 1;
                fdb.lookup_batch(workload.batch(i), &mut found);
                black_box(&found);
            })
        });
        // The batch API answers what the table holds, for every key.
        let keys: Vec<Key> = workload.entries.iter().map(|&(key, _)| key).collect();
        let mut all = vec![Found::NOTHING; keys.len()];
        fdb.lookup_batch(&keys, &mut all);
        assert!(all
            .iter()
            .zip(&workload.entries)
            .all(|(found, &(_, destination))| found.destination() == Some(destination)));
        let mut i = 0;
        let mut out = vec![None; BATCH];
        group.bench_function("switchyard_single", |b| {
            b.iter(|| {
                i += 1;
                for (&(vni, mac), out) in workload.batch(i).iter().zip(&mut out) {
                    *out = fdb.lookup(vni, mac);
                }
                black_box(&out);
            })
        });
    }
    {
        let floor = Floor::new(&workload.entries);
        let mut i = 0;
        group.bench_function("floor", |b| {
            b.iter(|| {
                i += 1;
                black_box(floor.lookup_batch(workload.batch(i)))
            })
        });
        // Every key found: the floor does the same job.
        assert!(workload.batch(0).iter().all(|key| {
            let one = std::slice::from_ref(key);
            floor.lookup_batch(one) != 0
        }));
    }
    {
        let map: DashMap<Key, Destination> = workload.entries.iter().copied().collect();
        let mut i = 0;
        let mut out = vec![None; BATCH];
        group.bench_function("dashmap", |b| {
            b.iter(|| {
                i += 1;
                for (key, out) in workload.batch(i).iter().zip(&mut out) {
                    *out = map.get(key).as_deref().copied();
                }
                black_box(&out);
            })
        });
    }
    {
        let map: papaya::HashMap<Key, Destination> = workload.entries.iter().copied().collect();
        let mut i = 0;
        let mut out = vec![None; BATCH];
        group.bench_function("papaya", |b| {
            b.iter(|| {
                i += 1;
                let pinned = map.pin();
                for (key, out) in workload.batch(i).iter().zip(&mut out) {
                    *out = pinned.get(key).copied();
                }
                black_box(&out);
            })
        });
    }
    {
        let map: RwLock<HashMap<Key, Destination>> =
            RwLock::new(workload.entries.iter().copied().collect());
        let mut i = 0;
        let mut out = vec![None; BATCH];
        group.bench_function("rwlock_hashmap", |b| {
            b.iter(|| {
                i += 1;
                let Ok(read) = map.read() else {
                    return;
                };
                for (key, out) in workload.batch(i).iter().zip(&mut out) {
                    *out = read.get(key).copied();
                }
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn fdb_lookup(c: &mut Criterion) {
    lookups(c, "fdb_lookup", 100_000);
}

fn fdb_lookup_1m(c: &mut Criterion) {
    lookups(c, "fdb_lookup_1m", 1_000_000);
}

/// What the read-scaling contenders must do: look a key up, learn a key from somewhere.
trait Contender: Send + Sync + 'static {
    /// What a lookup writes for each key.
    type Answer: Copy + Default + Send;
    fn lookup_batch(&self, keys: &[Key], out: &mut [Self::Answer]);
    fn learn(&self, key: Key, destination: Destination, now: Instant);
}

impl Contender for Fdb {
    type Answer = Found;

    fn lookup_batch(&self, keys: &[Key], out: &mut [Found]) {
        Fdb::lookup_batch(self, keys, out);
    }

    fn learn(&self, (vni, mac): Key, destination: Destination, now: Instant) {
        black_box(Fdb::learn(self, vni, mac, destination, now));
    }
}

/// The same table read with one [`Fdb::lookup`] after another (`switchyard_single/N`).
struct SingleLookups(Fdb);

impl Contender for SingleLookups {
    type Answer = Option<Destination>;

    fn lookup_batch(&self, keys: &[Key], out: &mut [Option<Destination>]) {
        for (&(vni, mac), out) in keys.iter().zip(out) {
            *out = self.0.lookup(vni, mac);
        }
    }

    fn learn(&self, key: Key, destination: Destination, now: Instant) {
        Contender::learn(&self.0, key, destination, now);
    }
}

impl Contender for papaya::HashMap<Key, Destination> {
    type Answer = Option<Destination>;

    fn lookup_batch(&self, keys: &[Key], out: &mut [Option<Destination>]) {
        let pinned = self.pin();
        for (key, out) in keys.iter().zip(out) {
            *out = pinned.get(key).copied();
        }
    }

    fn learn(&self, key: Key, destination: Destination, _now: Instant) {
        // A learn is a lookup, then a store only when the destination changed.
        let pinned = self.pin();
        if pinned.get(&key) != Some(&destination) {
            pinned.insert(key, destination);
        }
    }
}

/// `threads` readers look up `iterations * threads` batches between them while one writer
/// learns at 1 % of their combined rate; returns the wall time until the readers are done and
/// the writer has made all of its learns.
///
/// The readers claim batches one at a time from a shared counter (one `fetch_add` a batch of
/// 1024 lookups), rather than each doing a fixed share: when there are no more cores than
/// readers, the writer's work (which grows with the readers' rate) takes time from one of them,
/// and with fixed shares the whole run would wait for that reader's share, measuring how the
/// scheduler splits one core rather than how the table's reads scale.
///
/// The writer learns in bursts, waking every [`WRITER_INTERVAL`] to catch up with the readers'
/// count. Each wake-up costs CPU of its own on the benchmark machine (a nested guest,
/// `nested_pvm=1` on its kernel command line): a probe writer that woke every 50 us and did not
/// learn (it only fetched its keys) used 19-20 % of a CPU, 16-18 us a wake-up beside the key
/// fetches (thread CPU time, 2026-11-30), and with two readers on two CPUs that came out of
/// theirs as the table's cost would. Waking every millisecond, the wake-ups cost 16-25 us a
/// millisecond (the same probe), about 2 %. The writer trails the readers by up to one
/// interval, so when the readers finish it is woken at once to make the rest of its learns,
/// and the time includes them: every learn that the readers' count asks for is made inside
/// the timed section.
///
/// The writer takes its keys from the workload's entries in order (from a random start), not
/// at random: a random index into the 3.2 MB array misses the cache on nearly every learn (the
/// same probe, fetching keys at random from a 1.2 MB array, spent 29-35 ns of CPU on each), the
/// harness's cost and not the table's. The entries are in random order, so the buckets that
/// the learns reach are as random as before; each learn's destination is still drawn at random
/// (nearly always a move).
fn read_scaling_run<C: Contender>(
    table: &Arc<C>,
    workload: &Arc<Workload>,
    threads: usize,
    iterations: u64,
) -> WallDuration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let total = iterations * threads as u64;
    // Batches claimed by the readers: their progress, read by the writer.
    let claimed = Arc::new(AtomicU64::new(0));
    // Set when the readers are done: the writer makes its remaining learns and ends.
    let done = Arc::new(AtomicBool::new(false));

    let writer = {
        let (table, workload, claimed, done) = (
            table.clone(),
            workload.clone(),
            claimed.clone(),
            done.clone(),
        );
        thread::spawn(move || {
            let mut rng = Rng(0xB0B ^ iterations);
            let start = (rng.next() % workload.entries.len() as u64) as usize;
            let mut learned = 0u64;
            let mut second = 2;
            loop {
                // Read before the count: once `done` is seen, the count is final.
                let last = done.load(Ordering::Acquire);
                // Keep at 1 % of the lookups done so far, in bursts, waiting in between (with
                // as many cores as readers, it still takes some of a reader's time).
                let target = claimed.load(Ordering::Relaxed).min(total) * BATCH as u64 / 100;
                while learned < target {
                    // The next entry in the workload's (random) order, from a random start.
                    let index = (start + learned as usize) % workload.entries.len();
                    let (key, _) = workload.entries[index];
                    second += 1;
                    table.learn(
                        key,
                        destination(rng.next() as usize),
                        Instant::from_secs(second),
                    );
                    learned += 1;
                }
                if last {
                    break;
                }
                thread::park_timeout(WRITER_INTERVAL);
            }
        })
    };

    let readers: Vec<_> = (0..threads)
        .map(|_| {
            let (table, workload, barrier, claimed) = (
                table.clone(),
                workload.clone(),
                barrier.clone(),
                claimed.clone(),
            );
            thread::spawn(move || {
                barrier.wait();
                let mut out = vec![C::Answer::default(); BATCH];
                loop {
                    let n = claimed.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    table.lookup_batch(workload.batch(n as usize * 7), &mut out);
                    black_box(&out);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = WallInstant::now();
    for reader in readers {
        reader.join().unwrap();
    }
    done.store(true, Ordering::Release);
    writer.thread().unpark();
    writer.join().unwrap();
    start.elapsed()
}

fn fdb_read_scaling(c: &mut Criterion) {
    let workload = Arc::new(Workload::new(100_000));
    let fdb = Arc::new(workload.fdb(0));
    let single = Arc::new(SingleLookups(workload.fdb(0)));
    let papaya: Arc<papaya::HashMap<Key, Destination>> =
        Arc::new(workload.entries.iter().copied().collect());
    let mut group = c.benchmark_group("fdb_read_scaling");
    for threads in [1usize, 2] {
        group.throughput(Throughput::Elements((BATCH * threads) as u64));
        group.bench_function(BenchmarkId::new("switchyard", threads), |b| {
            b.iter_custom(|iterations| read_scaling_run(&fdb, &workload, threads, iterations))
        });
        group.bench_function(BenchmarkId::new("switchyard_single", threads), |b| {
            b.iter_custom(|iterations| read_scaling_run(&single, &workload, threads, iterations))
        });
        group.bench_function(BenchmarkId::new("papaya", threads), |b| {
            b.iter_custom(|iterations| read_scaling_run(&papaya, &workload, threads, iterations))
        });
    }
    group.finish();
}

/// Batches of MACs that `fdb_learn` cycles through: 8k MACs, the active senders of a busy
/// switch. Both functions touch the same number of distinct buckets, so they compare.
const WORKING_SET: usize = 8;

fn fdb_learn(c: &mut Criterion) {
    let workload = Workload::new(100_000);
    let fdb = workload.fdb(WORKING_SET * BATCH);
    let mut group = c.benchmark_group("fdb_learn");
    group.throughput(Throughput::Elements(BATCH as u64));

    let mut i = 0;
    let mut second = 10u64;
    let mut outcomes = vec![Learn::Fresh; BATCH];
    let sources: Vec<(Vni, EthernetAddress, Destination)> = workload.entries[..WORKING_SET * BATCH]
        .iter()
        .map(|&((vni, mac), destination)| (vni, mac, destination))
        .collect();
    group.bench_function("refresh_existing", |b| {
        b.iter(|| {
            i += 1;
            second += 1;
            let batch = &sources[(i % WORKING_SET) * BATCH..(i % WORKING_SET + 1) * BATCH];
            fdb.learn_batch(batch, Instant::from_secs(second), &mut outcomes);
            let refreshed = outcomes
                .iter()
                .filter(|&&outcome| outcome == Learn::Refreshed)
                .count();
            black_box(refreshed)
        })
    });
    group.bench_function("refresh_existing_single", |b| {
        b.iter(|| {
            i += 1;
            second += 1;
            let now = Instant::from_secs(second);
            let mut refreshed = 0u32;
            for offset in 0..BATCH {
                let index = (i % WORKING_SET) * BATCH + offset;
                let ((vni, mac), destination) = workload.entries[index];
                refreshed += u32::from(fdb.learn(vni, mac, destination, now) == Learn::Refreshed);
            }
            black_box(refreshed)
        })
    });

    // New MACs: a separate random stream, each checked absent from the table.
    let mut rng = Rng(0xFEED);
    let mut fresh: Vec<Key> = Vec::with_capacity(BATCH * WORKING_SET);
    while fresh.len() < BATCH * WORKING_SET {
        let key = rng.key();
        if fdb.lookup(key.0, key.1).is_none() && !fresh.contains(&key) {
            fresh.push(key);
        }
    }
    let mut round = 0;
    let fresh_sources: Vec<(Vni, EthernetAddress, Destination)> = fresh
        .iter()
        .enumerate()
        .map(|(n, &(vni, mac))| (vni, mac, destination(n % BATCH)))
        .collect();
    group.bench_function("insert_new", |b| {
        b.iter_custom(|iterations| {
            let mut total = WallDuration::ZERO;
            for _ in 0..iterations {
                round += 1;
                let range = (round % WORKING_SET) * BATCH..(round % WORKING_SET + 1) * BATCH;
                let now = Instant::from_secs(20);
                let start = WallInstant::now();
                fdb.learn_batch(&fresh_sources[range.clone()], now, &mut outcomes);
                total += start.elapsed();
                let inserted = outcomes
                    .iter()
                    .filter(|&&outcome| outcome == Learn::Inserted)
                    .count();
                assert_eq!(black_box(inserted), BATCH);
                for &(vni, mac) in &fresh[range] {
                    fdb.remove(vni, mac);
                }
            }
            total
        })
    });
    group.bench_function("insert_new_single", |b| {
        b.iter_custom(|iterations| {
            let mut total = WallDuration::ZERO;
            for _ in 0..iterations {
                round += 1;
                let keys = &fresh[(round % WORKING_SET) * BATCH..(round % WORKING_SET + 1) * BATCH];
                let now = Instant::from_secs(20);
                let start = WallInstant::now();
                let mut inserted = 0u32;
                for (n, &(vni, mac)) in keys.iter().enumerate() {
                    inserted +=
                        u32::from(fdb.learn(vni, mac, destination(n), now) == Learn::Inserted);
                }
                total += start.elapsed();
                assert_eq!(black_box(inserted), BATCH as u32);
                for &(vni, mac) in keys {
                    fdb.remove(vni, mac);
                }
            }
            total
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    fdb_lookup,
    fdb_lookup_1m,
    fdb_read_scaling,
    fdb_learn
);
criterion_main!(benches);
