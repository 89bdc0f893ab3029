//! The forwarding table: (VNI, MAC) -> destination, with learning, ageing, static entries,
//! capacity bounds and per-VNI flood lists, shared by any number of threads through `&self`.
//!
//! # Behaviour (the overlay specification, "Inner frames and forwarding")
//!
//! - Entries are per (VNI, MAC): the same MAC in two VNIs is two independent entries, and no
//!   operation on one VNI reads or changes another's entries.
//! - [`Fdb::learn`] is called with the *source* MAC of every frame and where it came from. An
//!   entry that exists and points there is refreshed; a learned entry pointing elsewhere moves
//!   (counted); a static entry never moves: the frame is dropped and counted
//!   ([`DropReason::FdbStaticMove`]).
//! - [`Fdb::age`] removes learned entries whose MAC has not *sent* a frame for the VNI's
//!   ageing time. [`Fdb::lookup`] (traffic towards a MAC) never refreshes anything.
//! - Capacity is bounded in total and per VNI. When a bound is reached new learning is refused
//!   and counted (the frame is still forwarded, as unknown unicast is), static entries are
//!   never evicted, and existing entries keep working.
//! - Each VNI has a flood list (remote VTEPs and local ports) for broadcast, unknown unicast
//!   and multicast, replaced as a whole by [`Fdb::set_flood_list`].
//!
//! # Design
//!
//! **Table.** One preallocated open-addressing table sized from the capacity bound (slots for
//! at least 4/3 of it), which never grows. A bucket is one 64-byte cache line with four
//! entries: key words, destination word and a 16-bit metadata field per entry, an overflow
//! count for linear probing (folly F14's scheme: no tombstones, a lookup stops at the first
//! bucket with a zero count) and a sequence number. A destination is one 32-bit word: a port
//! number, an IPv4 address, or the index of an IPv6 address interned in a small
//! reference-counted table. Last-seen times are coarse ticks (one tick = the refresh
//! granularity) in an array apart from the buckets, so refreshes never dirty the lines that
//! lookups read. Only 32-bit atomics are used: the table builds for `thumbv7em`, which has no
//! 64-bit atomics.
//!
//! **Readers** ([`Fdb::lookup`], [`Fdb::flood_list`], [`Fdb::for_each`]) take no lock, never
//! allocate and never store: each bucket (and each flood list) is read under its sequence
//! lock (load the sequence, load the words, acquire fence, load the sequence again, retry if it
//! changed or was odd). A lookup is linearizable and reads one cache line in the common case
//! (plus the IPv6 VTEP table for an IPv6 destination). Guarantee: a reader retries only while
//! a writer is changing *the bucket it reads*, which takes a handful of stores; it can spin if
//! that writer is preempted in the middle of those stores (the trade-off of every sequence
//! lock, as Linux's `seqcount`). Readers are never blocked by writers of other buckets, by
//! refreshes, or by ageing elsewhere in the table.
//!
//! **Batches.** A table much larger than the cache costs a memory miss per lookup. The
//! pipeline therefore looks destinations up a receive batch at a time ([`Fdb::lookup_batch`],
//! [`Fdb::learn_batch`]) or calls [`Fdb::prefetch`] a stage ahead, as FD.io VPP does: the home
//! buckets of the keys a fixed distance ahead are prefetched while each key is looked up, so
//! that their misses overlap.
//!
//! **Writers.** Learning a MAC that is present, points to the same place and was refreshed
//! within the refresh granularity does only the lookup and one load: no store at all. Past the
//! granularity it stores the new tick (one relaxed store to the last-seen array, no
//! read-modify-write). Inserts, moves, removals, ageing, flushes and flood-list changes take
//! one writer spin lock, as the Linux bridge does (`br_fdb_update` refreshes under RCU and
//! creates under `hash_lock`): an insert may touch several buckets (the overflow counts of a
//! probe sequence) and the per-VNI and IPv6 tables, and one lock keeps all of that consistent
//! and deadlock-free, whereas per-bucket locks would need a lock order across wrapping probe
//! sequences. Capacity refusals are decided before the lock from relaxed counts (re-checked
//! under it), so a MAC flood against a full table does not serialise on the lock.
//!
//! **Reclamation.** None is needed: entry slots, per-VNI records, flood-list storage and IPv6
//! VTEP slots are all preallocated and reused in place, never freed while the table is shared,
//! and every reader validates what it read with a sequence number. This is why there is no
//! crossbeam-epoch here: nothing would ever be retired, readers need no pin (a pin costs a
//! fence per lookup), no_std needs no per-thread handle, and loom models every atomic of the
//! structure, flood lists included.
//!
//! **Counters.** Learning outcomes are returned ([`Learn`]) so that a data-path worker can
//! count them in its own [`DropCounters`](crate::DropCounters). The table also keeps totals
//! for `show` output ([`Fdb::counters`]): each in its own `CachePadded` atomic, incremented
//! only off the fast path (inserts and moves under the writer lock, refusals and drops), never
//! by a lookup, a fresh learn or a refresh. They are `usize` and wrap on 32-bit targets.
//!
//! **Time.** `now` is always an argument. Ticks are 32-bit and compared with wrapping
//! arithmetic: [`Fdb::age`] must run at least once every 2^31 ticks (68 years at the default
//! granularity of one second, 24 days at the minimum of one millisecond). An ageing time is
//! rounded up to whole ticks and last-seen down to one, so an entry expires between
//! `ageing - granularity` and `ageing` after its MAC last sent. A learner whose `now` is older
//! than the stored tick does not store.
//!
//! Everything here needs only `core` and `alloc`.
//!
//! [`DropReason::FdbStaticMove`]: crate::DropReason::FdbStaticMove

mod table;
mod vnis;
mod vtep;

use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crossbeam_utils::CachePadded;

use crate::port::PortId;
use crate::sync::{spin_loop, AtomicBool, AtomicU32, AtomicUsize, Ordering};
use crate::time::{Duration, Instant};
use crate::wire::EthernetAddress;
use crate::{DropReason, Vni};

use table::{Home, Key, SlotRef, Table, Value};
use vnis::{Defaults, Record, VniTable};
use vtep::VtepTable;

const KIND_PORT: u32 = 0;
const KIND_IPV4: u32 = 1;
const KIND_IPV6: u32 = 2;

/// Where frames for a MAC go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// A local port of this switch.
    Port(PortId),
    /// A remote VTEP: encapsulate towards this underlay address.
    Vtep(IpAddr),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Port(port) => fmt::Display::fmt(port, f),
            Destination::Vtep(address) => write!(f, "vtep {address}"),
        }
    }
}

/// What a lookup found for one key, as the table stores it: nothing, a local port, or a
/// remote VTEP. [`Fdb::lookup_batch`] writes one per key; [`Found::destination`] (or
/// [`Found::port`], [`Found::vtep`]) reads it.
///
/// Why not `Option<Destination>`: in a batch whose destinations mix local ports and VTEPs at
/// random, as a switch's do, writing an `Option<Destination>` costs either a branch on the
/// kind (mispredicted about every other key) or building both variants in memory and copying
/// the chosen one out, a load that must wait for the two partial stores before it (no store
/// forwarding): either is about as dear as the rest of the lookup. A `Found` is written with
/// two stores whatever the kind (an IPv6 VTEP's address is a third), and the caller branches
/// on it once, where it acts on it.
///
/// ```
/// use switchyard::fdb::{Destination, Fdb, FdbConfig, Found};
/// use switchyard::time::Instant;
/// use switchyard::wire::EthernetAddress;
/// use switchyard::{PortId, Vni};
///
/// let fdb = Fdb::new(FdbConfig::default())?;
/// let vni = Vni::new(100).unwrap();
/// let mac = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
/// fdb.learn(vni, mac, Destination::Port(PortId(3)), Instant::from_secs(1));
///
/// let other = EthernetAddress([0x02, 0, 0, 0, 0, 2]);
/// let mut found = [Found::NOTHING; 2];
/// fdb.lookup_batch(&[(vni, mac), (vni, other)], &mut found);
/// assert_eq!(found[0].port(), Some(PortId(3)));
/// assert_eq!(found[1].destination(), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy)]
pub struct Found {
    /// `FOUND_NOTHING`, or one of the `KIND_*` constants plus one.
    kind: u8,
    /// The port number or the IPv4 address (as `u32::from(Ipv4Addr)`).
    word: u32,
    /// The address of an IPv6 VTEP; meaningless for the other kinds (a batch slot keeps what
    /// an earlier lookup wrote there).
    ipv6: Ipv6Addr,
}

const FOUND_NOTHING: u8 = 0;
const FOUND_PORT: u8 = KIND_PORT as u8 + 1;
const FOUND_IPV4: u8 = KIND_IPV4 as u8 + 1;

impl Found {
    /// Nothing found: what a batch's output slots start as.
    pub const NOTHING: Found = Found {
        kind: FOUND_NOTHING,
        word: 0,
        ipv6: Ipv6Addr::UNSPECIFIED,
    };

    /// Whether the key was found.
    #[inline]
    pub fn is_found(&self) -> bool {
        self.kind != FOUND_NOTHING
    }

    /// The local port, if the key was found behind one.
    #[inline]
    pub fn port(&self) -> Option<PortId> {
        (self.kind == FOUND_PORT).then_some(PortId(self.word))
    }

    /// The remote VTEP, if the key was found behind one.
    #[inline]
    pub fn vtep(&self) -> Option<IpAddr> {
        match self.kind {
            FOUND_NOTHING | FOUND_PORT => None,
            FOUND_IPV4 => Some(IpAddr::V4(Ipv4Addr::from(self.word))),
            // As `Fdb::decode`: any larger kind is an IPv6 VTEP.
            _ => Some(IpAddr::V6(self.ipv6)),
        }
    }

    /// The destination found, as [`Fdb::lookup`] returns it.
    #[inline]
    pub fn destination(&self) -> Option<Destination> {
        match self.kind {
            FOUND_NOTHING => None,
            FOUND_PORT => Some(Destination::Port(PortId(self.word))),
            _ => self.vtep().map(Destination::Vtep),
        }
    }
}

impl Default for Found {
    fn default() -> Found {
        Found::NOTHING
    }
}

impl PartialEq for Found {
    fn eq(&self, other: &Found) -> bool {
        self.destination() == other.destination()
    }
}

impl Eq for Found {}

impl fmt::Debug for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Found").field(&self.destination()).finish()
    }
}

impl From<Found> for Option<Destination> {
    fn from(found: Found) -> Option<Destination> {
        found.destination()
    }
}

/// How an entry came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Configured: never moves, never ages, never evicted; removed only by [`Fdb::remove`].
    Static,
    /// Learned from a frame's source MAC: moves, ages, flushed.
    Learned,
}

/// One entry, as [`Fdb::get`] and [`Fdb::for_each`] show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The VNI the entry belongs to.
    pub vni: Vni,
    /// The MAC.
    pub mac: EthernetAddress,
    /// Where frames to `mac` in `vni` go.
    pub destination: Destination,
    /// Static or learned.
    pub kind: EntryKind,
    /// When the MAC last sent a frame (learned entries), to the refresh granularity.
    pub last_seen: Option<Instant>,
}

/// What [`Fdb::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Learn {
    /// The entry exists, points there and was refreshed within the refresh granularity (or
    /// is static): nothing was stored.
    Fresh,
    /// The entry exists and points there; its last-seen time was updated.
    Refreshed,
    /// A new learned entry.
    Inserted,
    /// The learned entry pointed elsewhere and now points here (a MAC move, counted).
    Moved {
        /// Where it pointed before.
        from: Destination,
    },
    /// Not learned, but the frame is forwarded as usual: a capacity bound was reached.
    Refused(DropReason),
    /// The frame must be dropped (a static MAC seen elsewhere, an invalid source MAC).
    Dropped(DropReason),
    /// Learning is disabled in this VNI: nothing was inserted or moved.
    Disabled,
}

impl Learn {
    /// Whether the frame that was learned from should still be forwarded.
    pub fn forward(self) -> bool {
        !matches!(self, Learn::Dropped(_))
    }
}

/// The forwarding table's configuration, fixed at [`Fdb::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbConfig {
    /// Entries in total, static and learned (at most 2^26). The table's memory is sized from
    /// it: 64 bytes per bucket for at least 4/3 of it, plus 4 bytes of last-seen per slot.
    pub capacity: u32,
    /// Entries per VNI, for VNIs without their own [`VniConfig`].
    pub max_entries_per_vni: u32,
    /// Ageing time for VNIs without their own [`VniConfig`] (Linux' default: 300 s).
    pub ageing: Duration,
    /// The resolution of last-seen times: a learn within it stores nothing. At least 1 ms.
    pub refresh_granularity: Duration,
    /// VNIs that can hold entries, a configuration or a flood list (at most 2^20).
    pub max_vnis: u32,
    /// Distinct IPv6 remote VTEP addresses named at once (at most 2^20; IPv4 needs none).
    pub max_ipv6_vteps: u32,
    /// Members per flood list (at most 4096). Storage for them is preallocated per VNI: 8
    /// bytes per member, and `max_vnis * max_flood_members` may not exceed 2^24 (128 MiB).
    pub max_flood_members: u32,
    /// The key of the hash: pass a random value so that MACs cannot be aimed at one bucket.
    pub hash_seed: u64,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            capacity: 65_536,
            max_entries_per_vni: 65_536,
            ageing: Duration::from_secs(300),
            refresh_granularity: Duration::from_secs(1),
            max_vnis: 1024,
            max_ipv6_vteps: 1024,
            max_flood_members: 64,
            hash_seed: 0x5EED_F00D_CAFE_D00D,
        }
    }
}

/// Per-VNI settings ([`Fdb::configure_vni`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VniConfig {
    /// How long a learned entry lives after its MAC last sent (rounded up to whole
    /// refresh granularities).
    pub ageing: Duration,
    /// Entries in this VNI, static and learned.
    pub max_entries: u32,
    /// Whether frames' source MACs are learned (inserted or moved) in this VNI.
    pub learning: bool,
}

/// Why a configuration or control-plane change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FdbError {
    /// `capacity` is zero or above 2^26, or another size bound is out of its range.
    SizeOutOfRange,
    /// The refresh granularity is below 1 ms.
    GranularityTooFine,
    /// An ageing time is zero or more than 2^30 refresh granularities.
    AgeingOutOfRange,
    /// The table holds `capacity` entries.
    Full,
    /// The VNI holds its maximum number of entries.
    VniFull,
    /// `max_vnis` VNIs are in use.
    VniTableFull,
    /// `max_ipv6_vteps` IPv6 VTEP addresses are in use.
    VtepTableFull,
    /// A flood list longer than `max_flood_members`.
    FloodListTooLong,
}

impl fmt::Display for FdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FdbError::SizeOutOfRange => "a size bound of the forwarding table is out of range",
            FdbError::GranularityTooFine => "the refresh granularity is below 1 ms",
            FdbError::AgeingOutOfRange => {
                "the ageing time is zero or more than 2^30 refresh granularities"
            }
            FdbError::Full => "the forwarding table is full",
            FdbError::VniFull => "the VNI holds its maximum number of entries",
            FdbError::VniTableFull => "the forwarding table's VNI table is full",
            FdbError::VtepTableFull => "the forwarding table's IPv6 VTEP table is full",
            FdbError::FloodListTooLong => "the flood list is longer than max_flood_members",
        })
    }
}

impl core::error::Error for FdbError {}

/// Totals since the table was made, for `show` output ([`Fdb::counters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FdbCounters {
    /// Entries learned (inserted by [`Fdb::learn`]).
    pub learned: u64,
    /// Learned entries that moved to another destination.
    pub moved: u64,
    /// Learning refused: the table was full ([`DropReason::FdbFull`]).
    pub refused_full: u64,
    /// Learning refused: the VNI was full ([`DropReason::FdbVniFull`]).
    pub refused_vni_full: u64,
    /// Learning refused: `max_vnis` VNIs were in use ([`DropReason::FdbVniTableFull`]).
    pub refused_vni_table_full: u64,
    /// Learning refused: the IPv6 VTEP table was full ([`DropReason::FdbVtepTableFull`]).
    pub refused_vtep_table_full: u64,
    /// Frames dropped: a static MAC arrived from elsewhere ([`DropReason::FdbStaticMove`]).
    pub static_move_dropped: u64,
    /// Frames dropped: a multicast or all-zero source MAC ([`DropReason::FdbSourceMacInvalid`]).
    pub invalid_source_dropped: u64,
    /// Learned entries removed by [`Fdb::age`].
    pub aged: u64,
}

/// One counter on a cache line of its own.
type Counter = CachePadded<AtomicUsize>;

fn bump(counter: &Counter) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn bump_by(counter: &Counter, n: usize) {
    if n != 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Counters {
    learned: Counter,
    moved: Counter,
    refused_full: Counter,
    refused_vni_full: Counter,
    refused_vni_table_full: Counter,
    refused_vtep_table_full: Counter,
    static_move_dropped: Counter,
    invalid_source_dropped: Counter,
    aged: Counter,
}

/// A flood list copied out of the table by [`Fdb::flood_list`]. Make it with
/// [`Fdb::flood_buffer`] and reuse it: copying into it then never allocates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FloodList {
    members: Vec<Destination>,
}

impl FloodList {
    /// The members, remote VTEPs and local ports, each once, in configuration order.
    pub fn as_slice(&self) -> &[Destination] {
        &self.members
    }

    /// Iterates over the members.
    pub fn iter(&self) -> core::slice::Iter<'_, Destination> {
        self.members.iter()
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// No members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// Converts `now` to ticks of the refresh granularity with a multiply instead of a 64-bit
/// division (which costs tens of cycles on the learning path).
#[derive(Debug, Clone, Copy)]
struct Ticker {
    nanos: u64,
    /// floor((2^64 - 1) / nanos): the quotient estimate is exact or one short.
    reciprocal: u64,
}

impl Ticker {
    fn new(nanos: u64) -> Ticker {
        let nanos = nanos.max(2);
        Ticker {
            nanos,
            reciprocal: u64::MAX / nanos,
        }
    }

    #[inline]
    fn ticks(self, now: Instant) -> u64 {
        let n = now.as_nanos();
        let mut quotient = ((u128::from(n) * u128::from(self.reciprocal)) >> 64) as u64;
        if n.wrapping_sub(quotient.wrapping_mul(self.nanos)) >= self.nanos {
            quotient += 1;
        }
        quotient
    }

    /// The 32-bit tick stored in the table (wrapping by design).
    #[inline]
    fn tick(self, now: Instant) -> u32 {
        self.ticks(now) as u32
    }

    /// The instant of a stored tick, unwrapped relative to `now`.
    fn instant(self, now: Instant, stored: u32) -> Instant {
        let now_ticks = self.ticks(now);
        let elapsed = i64::from((now_ticks as u32).wrapping_sub(stored) as i32);
        let ticks = i128::from(now_ticks) - i128::from(elapsed);
        let nanos = ticks.max(0).saturating_mul(i128::from(self.nanos));
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Whole ticks in `duration`, rounded up, or `None` if zero or above 2^30.
    fn ticks_in(self, duration: Duration) -> Option<u32> {
        let nanos = duration.as_nanos();
        if nanos == 0 {
            return None;
        }
        let ticks = nanos.div_ceil(u128::from(self.nanos));
        u32::try_from(ticks).ok().filter(|&t| t <= 1 << 30)
    }
}

/// Holds the writer lock until dropped.
struct WriterGuard<'a>(&'a AtomicBool);

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The forwarding table. Share it with `Arc`: every method takes `&self`.
///
/// ```
/// use core::net::{IpAddr, Ipv4Addr};
/// use switchyard::fdb::{Destination, Fdb, FdbConfig, Learn};
/// use switchyard::time::{Duration, Instant};
/// use switchyard::wire::EthernetAddress;
/// use switchyard::{PortId, Vni};
///
/// let fdb = Fdb::new(FdbConfig {
///     capacity: 1024,
///     ageing: Duration::from_secs(300),
///     ..FdbConfig::default()
/// })?;
/// let vni = Vni::new(42)?;
/// let host = EthernetAddress([0x02, 0, 0, 0, 0, 0x0a]);
/// let remote = Destination::Vtep(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)));
///
/// // A frame from `host` arrives over the tunnel from 198.18.0.2: learn where it lives.
/// assert_eq!(fdb.learn(vni, host, remote, Instant::from_secs(1)), Learn::Inserted);
/// assert_eq!(fdb.lookup(vni, host), Some(remote));
/// // The same MAC in another VNI is another entry.
/// assert_eq!(fdb.lookup(Vni::new(43)?, host), None);
///
/// // It shows up on a local port: a learned entry moves.
/// let local = Destination::Port(PortId(3));
/// assert_eq!(
///     fdb.learn(vni, host, local, Instant::from_secs(2)),
///     Learn::Moved { from: remote }
/// );
///
/// // Silent for longer than the ageing time: gone.
/// assert_eq!(fdb.age(Instant::from_secs(303)), 1);
/// assert_eq!(fdb.lookup(vni, host), None);
///
/// // Broadcast and unknown unicast go to the VNI's flood list.
/// fdb.set_flood_list(vni, &[remote, local])?;
/// let mut flood = fdb.flood_buffer();
/// fdb.flood_list(vni, &mut flood);
/// assert_eq!(flood.as_slice(), &[remote, local]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Fdb {
    config: FdbConfig,
    ticker: Ticker,
    default_ageing_ticks: u32,
    table: Table,
    vnis: VniTable,
    vteps: VtepTable,
    /// Entries in the table: changed under the writer lock, read by the capacity pre-check.
    len: CachePadded<AtomicU32>,
    writer: CachePadded<AtomicBool>,
    counters: Counters,
}

impl fmt::Debug for Fdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fdb")
            .field("config", &self.config)
            .field("len", &self.len())
            .field("slots", &self.table.slots())
            .finish_non_exhaustive()
    }
}

/// How many keys ahead of the one being looked up `lookup_batch` prefetches (and how many
/// sources `learn_batch` prefetches at a time): enough misses in flight to hide the memory
/// latency (a C loop of the same pattern on the benchmark machine: 16 and 32 ahead equally
/// good, 8 slower). A power of two.
const PREFETCH_AHEAD: usize = 16;

/// The largest `capacity`.
const MAX_CAPACITY: u32 = 1 << 26;

impl Fdb {
    /// A table with the bounds of `config`, all of its memory allocated now.
    pub fn new(config: FdbConfig) -> Result<Fdb, FdbError> {
        if config.capacity == 0
            || config.capacity > MAX_CAPACITY
            || config.max_vnis == 0
            || config.max_vnis > 1 << 20
            || config.max_ipv6_vteps > 1 << 20
            || config.max_flood_members > 4096
            || u64::from(config.max_vnis) * u64::from(config.max_flood_members) > 1 << 24
        {
            return Err(FdbError::SizeOutOfRange);
        }
        let granularity = u64::try_from(config.refresh_granularity.as_nanos())
            .map_err(|_| FdbError::AgeingOutOfRange)?;
        if granularity < 1_000_000 {
            return Err(FdbError::GranularityTooFine);
        }
        let ticker = Ticker::new(granularity);
        let default_ageing_ticks = ticker
            .ticks_in(config.ageing)
            .ok_or(FdbError::AgeingOutOfRange)?;
        Ok(Fdb {
            ticker,
            default_ageing_ticks,
            table: Table::new(config.capacity as usize, config.hash_seed),
            vnis: VniTable::new(config.max_vnis, config.max_flood_members as usize),
            vteps: VtepTable::new(config.max_ipv6_vteps),
            len: CachePadded::new(AtomicU32::new(0)),
            writer: CachePadded::new(AtomicBool::new(false)),
            counters: Counters::default(),
            config,
        })
    }

    /// The configuration the table was made with.
    pub fn config(&self) -> &FdbConfig {
        &self.config
    }

    /// Entries in the table, static and learned.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed) as usize
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries in `vni`, static and learned.
    pub fn vni_len(&self, vni: Vni) -> usize {
        self.vnis
            .find(vni)
            .map_or(0, |record| record.count.load(Ordering::Relaxed) as usize)
    }

    /// Slots in the table (more than `capacity`): its memory is 16 bytes per slot, plus 4.
    pub fn slots(&self) -> usize {
        self.table.slots()
    }

    fn lock(&self) -> WriterGuard<'_> {
        loop {
            if self
                .writer
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return WriterGuard(&self.writer);
            }
            while self.writer.load(Ordering::Relaxed) {
                spin_loop();
            }
        }
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            max_entries: self.config.max_entries_per_vni,
            ageing_ticks: self.default_ageing_ticks,
            learning: true,
        }
    }

    /// The destination a slot value names. Inside a read section for IPv6 (see `vtep`).
    ///
    /// Local ports and IPv4 VTEPs are mixed at random in a lookup stream, so a branch on the
    /// kind would be mispredicted about every other lookup (some 20 cycles each, more than
    /// the rest of a cached lookup): both are built and one is picked without a branch.
    #[inline]
    fn decode(&self, kind: u32, word: u32) -> Destination {
        if kind >= KIND_IPV6 {
            return self.decode_ipv6(word);
        }
        core::hint::select_unpredictable(
            kind == KIND_PORT,
            Destination::Port(PortId(word)),
            Destination::Vtep(IpAddr::V4(Ipv4Addr::from(word))),
        )
    }

    /// [`Fdb::decode`] of an interned IPv6 address.
    fn decode_ipv6(&self, word: u32) -> Destination {
        Destination::Vtep(IpAddr::V6(
            self.vteps.address(word).unwrap_or(Ipv6Addr::UNSPECIFIED),
        ))
    }

    /// The words for `destination`, taking a reference on an IPv6 address (writer lock held).
    fn encode_locked(&self, destination: Destination) -> Option<(u32, u32)> {
        Some(match destination {
            Destination::Port(port) => (KIND_PORT, port.0),
            Destination::Vtep(IpAddr::V4(address)) => (KIND_IPV4, u32::from(address)),
            Destination::Vtep(IpAddr::V6(address)) => {
                (KIND_IPV6, self.vteps.acquire_locked(address)?)
            }
        })
    }

    /// Drops what [`Fdb::encode_locked`] took.
    fn release_locked(&self, kind: u32, word: u32) {
        if kind == KIND_IPV6 {
            self.vteps.release_locked(word);
        }
    }

    fn entry(&self, key: Key, value: Value, last_seen: u32, now: Instant) -> Entry {
        Entry {
            vni: key.vni(),
            mac: key.mac(),
            destination: self.decode(value.kind, value.dest),
            kind: if value.is_static {
                EntryKind::Static
            } else {
                EntryKind::Learned
            },
            last_seen: (!value.is_static).then(|| self.ticker.instant(now, last_seen)),
        }
    }

    /// Where frames to `mac` in `vni` go, if known: the data path's lookup. No lock, no
    /// allocation, no store; one cache line in the common case.
    #[inline]
    pub fn lookup(&self, vni: Vni, mac: EthernetAddress) -> Option<Destination> {
        self.table
            .find(Key::new(vni, mac), |value| {
                self.decode(value.kind, value.dest)
            })
            .map(|(_, destination)| destination)
    }

    /// Starts loading the cache line that a [`Fdb::lookup`] or [`Fdb::learn`] of `mac` in `vni`
    /// reads first, without waiting for it: call it for a frame one pipeline stage (a few
    /// frames) before looking its destination up, so that the misses of several frames
    /// overlap instead of queueing. It changes nothing and returns nothing; its cost is the
    /// hash and one prefetch instruction.
    #[inline]
    pub fn prefetch(&self, vni: Vni, mac: EthernetAddress) {
        self.table.touch(self.table.home(Key::new(vni, mac)));
    }

    /// Calls `finish` for every item of `items` with the same position of `out`, in order,
    /// with the item's key and home bucket, having prefetched the home bucket of the item
    /// [`PREFETCH_AHEAD`] positions further on: a software pipeline (FD.io VPP's), so that the
    /// misses of that many lookups are in flight while one is served, and no group boundary
    /// ever waits for a whole miss.
    #[inline]
    fn pipelined<'t, T, O>(
        &'t self,
        items: &[T],
        out: &mut [O],
        key_of: impl Fn(&T) -> Key,
        mut finish: impl FnMut(&T, Key, Option<Home<'t>>, &mut O),
    ) {
        let prepare = |item: &T| {
            let key = key_of(item);
            (key, self.table.prefetch_home(key))
        };
        let n = items.len().min(out.len());
        let (items, out) = (&items[..n], &mut out[..n]);
        let mut ring = [(Key::default(), None); PREFETCH_AHEAD];
        for (slot, item) in ring.iter_mut().zip(items) {
            *slot = prepare(item);
        }
        for (i, (item, out)) in items.iter().zip(out.iter_mut()).enumerate() {
            // `PREFETCH_AHEAD` is a power of two: the index needs no bounds check.
            let slot = &mut ring[i % PREFETCH_AHEAD];
            let (key, home) = *slot;
            if let Some(next) = items.get(i + PREFETCH_AHEAD) {
                *slot = prepare(next);
            }
            finish(item, key, home, out);
        }
    }

    /// [`Fdb::lookup`] of every key of `keys` into the same position of `out` (see [`Found`]
    /// for why not an `Option<Destination>`): exactly what one-at-a-time lookups return,
    /// faster. Keys beyond `out.len()` (or positions of `out` beyond `keys.len()`) are left
    /// alone.
    ///
    /// The pipeline's way to look destinations up (FD.io VPP's): a table much larger than the
    /// cache costs a memory miss per lookup, and one-at-a-time lookups wait for each miss in
    /// turn (or for as many as the core's reorder buffer holds). Here the home bucket of the
    /// key a fixed distance ahead is prefetched while each key is looked up, so that many
    /// misses are in flight together and each lookup finds its line in the cache. Each lookup
    /// is still its own linearizable read.
    pub fn lookup_batch(&self, keys: &[(Vni, EthernetAddress)], out: &mut [Found]) {
        self.pipelined(
            keys,
            out,
            |&(vni, mac)| Key::new(vni, mac),
            |_, key, home, out| {
                let ipv6 = &mut out.ipv6;
                let found = home.and_then(|home| {
                    self.table.find_at(key, home, |value| {
                        // Inside the read section: the interned address is the entry's.
                        if value.kind >= KIND_IPV6 {
                            *ipv6 = self
                                .vteps
                                .address(value.dest)
                                .unwrap_or(Ipv6Addr::UNSPECIFIED);
                        }
                        // Two bits: the sum fits (`Found` reads 4 as IPv6, as `decode` does 3).
                        (value.kind as u8 + 1, value.dest)
                    })
                });
                let (kind, word) = found.map_or((FOUND_NOTHING, 0), |(_, found)| found);
                out.kind = kind;
                out.word = word;
            },
        );
    }

    /// The whole entry for `mac` in `vni`; `now` turns its last-seen tick into an instant.
    pub fn get(&self, vni: Vni, mac: EthernetAddress, now: Instant) -> Option<Entry> {
        let key = Key::new(vni, mac);
        self.table
            .find(key, |value| (value, self.decode(value.kind, value.dest)))
            .map(|(at, (value, destination))| {
                let last_seen = self.last_seen(at);
                Entry {
                    destination,
                    ..self.entry(key, value, last_seen, now)
                }
            })
    }

    fn last_seen(&self, at: SlotRef) -> u32 {
        self.table
            .last_seen(at)
            .map_or(0, |tick| tick.load(Ordering::Relaxed))
    }

    /// Learns that `mac` (a frame's source) is reachable through `from` in `vni` at `now`.
    ///
    /// Nearly free when the entry exists, points to `from` and is fresh: a lookup and one
    /// load, no store. See [`Learn`] for the outcomes; only [`Learn::Dropped`] means the frame
    /// must not be forwarded.
    #[inline]
    pub fn learn(&self, vni: Vni, mac: EthernetAddress, from: Destination, now: Instant) -> Learn {
        let key = Key::new(vni, mac);
        self.learn_from(
            vni,
            mac,
            key,
            self.table.locate(key),
            from,
            self.ticker.tick(now),
        )
    }

    /// [`Fdb::learn`] of every frame source of `sources` at `now`, each outcome into the same
    /// position of `out`: exactly what one-at-a-time learns in that order return, with the
    /// buckets (and last-seen ticks) of a group of 16 sources prefetched before any of them
    /// is learned. Sources beyond `out.len()` (or positions of `out` beyond
    /// `sources.len()`) are left alone.
    ///
    /// Returns how many outcomes are neither [`Learn::Refreshed`] nor [`Learn::Fresh`]: when
    /// it is zero (the steady state), a caller looking for drops and refusals need not read
    /// `out`.
    ///
    /// Groups rather than [`Fdb::lookup_batch`]'s rolling prefetch: learning mostly refreshes
    /// the entries of the active senders, which are in the cache, and there the simpler loop
    /// was faster (`fdb_learn/refresh_existing`, three alternating runs each: 21-25 ns per
    /// learn against 24-30 ns).
    pub fn learn_batch(
        &self,
        sources: &[(Vni, EthernetAddress, Destination)],
        now: Instant,
        out: &mut [Learn],
    ) -> usize {
        let tick = self.ticker.tick(now);
        let mut other = 0;
        let n = sources.len().min(out.len());
        let (sources, out) = (&sources[..n], &mut out[..n]);
        for (sources, out) in sources
            .chunks(PREFETCH_AHEAD)
            .zip(out.chunks_mut(PREFETCH_AHEAD))
        {
            // Each source's key and home bucket index, kept between the passes (24 bytes an
            // entry; the whole `Home` and an `Option` around it cost more to zero and store).
            let mut homes = [(Key::default(), 0usize); PREFETCH_AHEAD];
            for (&(vni, mac, _), home) in sources.iter().zip(homes.iter_mut()) {
                let key = Key::new(vni, mac);
                let index = self.table.home(key);
                self.table.touch(index);
                self.table.touch_last_seen(index);
                *home = (key, index);
            }
            for ((source, &(key, home)), out) in
                sources.iter().zip(homes.iter()).zip(out.iter_mut())
            {
                // The common outcomes are written as the constants they are; the rest comes
                // from the general learn, out of line, which writes its outcome itself (a
                // returned one made every outcome a copy of the whole enum through the stack).
                match self.refresh_from(key, self.table.home_at(home), &source.2, tick) {
                    Some(true) => *out = Learn::Refreshed,
                    Some(false) => *out = Learn::Fresh,
                    None => self.learn_general(source, tick, out, &mut other),
                }
            }
        }
        other
    }

    /// The fast path of a learn: `Some` when the entry exists in its home bucket (or
    /// further), points to `from` and is static or learned (then whether its last-seen tick
    /// was stored); `None` for everything else, which [`Fdb::learn_from`] decides.
    #[inline(always)]
    fn refresh_from(
        &self,
        key: Key,
        home: Option<Home<'_>>,
        from: &Destination,
        tick: u32,
    ) -> Option<bool> {
        // A multicast or zero source is refused even where a static entry holds it.
        if key.is_invalid_source() {
            return None;
        }
        let (at, value) = self.table.find_at(key, home?, |value| value)?;
        if !self.points_to(value, from) {
            return None;
        }
        if value.is_static {
            return Some(false);
        }
        Some(self.refresh(at, tick) == Learn::Refreshed)
    }

    /// Whether an entry's `value` points to `from`. A port or an IPv4 VTEP is compared as the
    /// word it is stored as; an IPv6 VTEP's word holds its interned number, so it is compared
    /// decoded.
    #[inline(always)]
    fn points_to(&self, value: Value, from: &Destination) -> bool {
        match *from {
            Destination::Port(port) => value.kind == KIND_PORT && value.dest == port.0,
            Destination::Vtep(IpAddr::V4(address)) => {
                value.kind == KIND_IPV4 && value.dest == address.to_bits()
            }
            Destination::Vtep(IpAddr::V6(_)) => {
                value.kind >= KIND_IPV6 && self.decode_ipv6(value.dest) == *from
            }
        }
    }

    /// [`Fdb::learn_from`] out of line, for what [`Fdb::refresh_from`] leaves, into `out`;
    /// counts an outcome other than a refresh in `other` (here, not in the caller's loop:
    /// counted there, `fdb_learn/refresh_existing` took 140.3 instructions a learn, against
    /// 134.0 counted here).
    #[inline(never)]
    fn learn_general(
        &self,
        &(vni, mac, from): &(Vni, EthernetAddress, Destination),
        tick: u32,
        out: &mut Learn,
        other: &mut usize,
    ) {
        let key = Key::new(vni, mac);
        *out = self.learn_from(vni, mac, key, self.table.locate(key), from, tick);
        *other += usize::from(!matches!(out, Learn::Refreshed | Learn::Fresh));
    }

    /// [`Fdb::learn`] with the key, its home bucket and the tick computed.
    #[inline]
    fn learn_from(
        &self,
        vni: Vni,
        mac: EthernetAddress,
        key: Key,
        home: Option<Home<'_>>,
        from: Destination,
        tick: u32,
    ) -> Learn {
        if mac.is_multicast() || mac.0 == [0; 6] {
            bump(&self.counters.invalid_source_dropped);
            return Learn::Dropped(DropReason::FdbSourceMacInvalid);
        }
        // (`home` is `None` only for a table without buckets, which `Table::new` never builds.)
        let found = home.and_then(|home| self.table.find_at(key, home, |value| value));
        match found {
            Some((at, value)) => {
                if self.points_to(value, &from) {
                    return if value.is_static {
                        Learn::Fresh
                    } else {
                        self.refresh(at, tick)
                    };
                }
                if value.is_static {
                    bump(&self.counters.static_move_dropped);
                    return Learn::Dropped(DropReason::FdbStaticMove);
                }
            }
            None => {
                // Lock-free pre-checks, in the locked path's order, so that a MAC flood against
                // a full table never takes the lock; the locked path checks again.
                let record = self.vnis.find(vni);
                if record.is_some_and(|r| !r.learning.load(Ordering::Relaxed)) {
                    return Learn::Disabled;
                }
                if self.len.load(Ordering::Relaxed) >= self.config.capacity {
                    bump(&self.counters.refused_full);
                    return Learn::Refused(DropReason::FdbFull);
                }
                if record.is_some_and(|r| {
                    r.count.load(Ordering::Relaxed) >= r.max_entries.load(Ordering::Relaxed)
                }) {
                    bump(&self.counters.refused_vni_full);
                    return Learn::Refused(DropReason::FdbVniFull);
                }
            }
        }
        self.learn_slow(key, from, tick)
    }

    /// Stores `tick` as last-seen unless the stored one is as recent.
    #[inline]
    fn refresh(&self, at: SlotRef, tick: u32) -> Learn {
        let Some(last_seen) = self.table.last_seen(at) else {
            return Learn::Fresh;
        };
        if tick.wrapping_sub(last_seen.load(Ordering::Relaxed)) as i32 <= 0 {
            Learn::Fresh
        } else {
            // A plain store, no read-modify-write: two learners racing store ticks that differ
            // by their clocks' skew at most. If the entry was replaced since the find, the new
            // entry (inserted at about this time) gets this tick: harmless either way.
            last_seen.store(tick, Ordering::Relaxed);
            Learn::Refreshed
        }
    }

    /// Insert or move, under the writer lock.
    #[cold]
    fn learn_slow(&self, key: Key, from: Destination, tick: u32) -> Learn {
        let _guard = self.lock();
        if let Some((at, value)) = self.table.find_locked(key) {
            let current = self.decode(value.kind, value.dest);
            if current == from {
                return if value.is_static {
                    Learn::Fresh
                } else {
                    self.refresh(at, tick)
                };
            }
            if value.is_static {
                bump(&self.counters.static_move_dropped);
                return Learn::Dropped(DropReason::FdbStaticMove);
            }
            if let Some(record) = self.vnis.find(key.vni()) {
                if !record.learning.load(Ordering::Relaxed) {
                    return Learn::Disabled;
                }
            }
            let Some((kind, word)) = self.encode_locked(from) else {
                bump(&self.counters.refused_vtep_table_full);
                return Learn::Refused(DropReason::FdbVtepTableFull);
            };
            self.table.update_locked(
                at,
                Value {
                    is_static: false,
                    kind,
                    dest: word,
                },
            );
            if let Some(last_seen) = self.table.last_seen(at) {
                last_seen.store(tick, Ordering::Relaxed);
            }
            self.release_locked(value.kind, value.dest);
            bump(&self.counters.moved);
            return Learn::Moved { from: current };
        }

        let Some(record) = self.vnis.find_or_create_locked(key.vni(), self.defaults()) else {
            bump(&self.counters.refused_vni_table_full);
            return Learn::Refused(DropReason::FdbVniTableFull);
        };
        if !record.learning.load(Ordering::Relaxed) {
            return Learn::Disabled;
        }
        if let Err(error) = self.check_room_locked(record) {
            return match error {
                FdbError::VniFull => {
                    bump(&self.counters.refused_vni_full);
                    Learn::Refused(DropReason::FdbVniFull)
                }
                _ => {
                    bump(&self.counters.refused_full);
                    Learn::Refused(DropReason::FdbFull)
                }
            };
        }
        let Some((kind, word)) = self.encode_locked(from) else {
            bump(&self.counters.refused_vtep_table_full);
            return Learn::Refused(DropReason::FdbVtepTableFull);
        };
        let value = Value {
            is_static: false,
            kind,
            dest: word,
        };
        if self.insert_locked(record, key, value, tick).is_err() {
            self.release_locked(kind, word);
            bump(&self.counters.refused_full);
            return Learn::Refused(DropReason::FdbFull);
        }
        bump(&self.counters.learned);
        Learn::Inserted
    }

    fn check_room_locked(&self, record: &Record) -> Result<(), FdbError> {
        if self.len.load(Ordering::Relaxed) >= self.config.capacity {
            return Err(FdbError::Full);
        }
        if record.count.load(Ordering::Relaxed) >= record.max_entries.load(Ordering::Relaxed) {
            return Err(FdbError::VniFull);
        }
        Ok(())
    }

    /// Inserts an absent key and counts it (writer lock held, room checked).
    fn insert_locked(
        &self,
        record: &Record,
        key: Key,
        value: Value,
        tick: u32,
    ) -> Result<(), FdbError> {
        // Unreachable while `len < capacity` (there are more slots than capacity).
        self.table
            .insert_locked(key, value, tick)
            .ok_or(FdbError::Full)?;
        self.len
            .store(self.len.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        record
            .count
            .store(record.count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes the entry in `at` and uncounts it (writer lock held).
    fn remove_locked(&self, at: SlotRef) -> Option<(Key, Value)> {
        let (key, value) = self.table.remove_locked(at)?;
        self.release_locked(value.kind, value.dest);
        self.len.store(
            self.len.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
        if let Some(record) = self.vnis.find(key.vni()) {
            record.count.store(
                record.count.load(Ordering::Relaxed).saturating_sub(1),
                Ordering::Relaxed,
            );
        }
        Some((key, value))
    }

    /// Binds `mac` in `vni` to `destination` as a static entry: it never moves, never ages
    /// and is never evicted. Replaces an existing entry (learned or static) in place and
    /// returns its destination. Static entries count towards the capacity bounds.
    pub fn insert_static(
        &self,
        vni: Vni,
        mac: EthernetAddress,
        destination: Destination,
    ) -> Result<Option<Destination>, FdbError> {
        let key = Key::new(vni, mac);
        let _guard = self.lock();
        let encode = |this: &Fdb| {
            this.encode_locked(destination)
                .map(|(kind, dest)| Value {
                    is_static: true,
                    kind,
                    dest,
                })
                .ok_or(FdbError::VtepTableFull)
        };
        if let Some((at, old)) = self.table.find_locked(key) {
            let value = encode(self)?;
            self.table.update_locked(at, value);
            let previous = self.decode(old.kind, old.dest);
            self.release_locked(old.kind, old.dest);
            return Ok(Some(previous));
        }
        let record = self
            .vnis
            .find_or_create_locked(vni, self.defaults())
            .ok_or(FdbError::VniTableFull)?;
        self.check_room_locked(record)?;
        let value = encode(self)?;
        if let Err(error) = self.insert_locked(record, key, value, 0) {
            self.release_locked(value.kind, value.dest);
            return Err(error);
        }
        Ok(None)
    }

    /// Removes the entry of `mac` in `vni`, static or learned, and returns its destination.
    pub fn remove(&self, vni: Vni, mac: EthernetAddress) -> Option<Destination> {
        let key = Key::new(vni, mac);
        let _guard = self.lock();
        let (at, _) = self.table.find_locked(key)?;
        let (_, value) = self.remove_locked(at)?;
        Some(self.decode(value.kind, value.dest))
    }

    /// Removes every learned entry for which `remove` is true; returns how many.
    fn remove_learned_where(&self, remove: impl FnMut(Key, Value, u32) -> bool) -> usize {
        let _guard = self.lock();
        self.remove_learned_where_locked(remove)
    }

    /// [`Fdb::remove_learned_where`] with the writer lock held.
    fn remove_learned_where_locked(
        &self,
        mut remove: impl FnMut(Key, Value, u32) -> bool,
    ) -> usize {
        let mut removed = 0;
        for (at, key, value) in self.table.entries_locked() {
            if !value.is_static
                && remove(key, value, self.last_seen(at))
                && self.remove_locked(at).is_some()
            {
                removed += 1;
            }
        }
        removed
    }

    /// Removes the learned entries whose MAC has not sent a frame for its VNI's ageing time;
    /// returns how many. Run it periodically (every few seconds; at least once every 2^31
    /// refresh granularities). It walks the whole table under the writer lock.
    pub fn age(&self, now: Instant) -> usize {
        let tick = self.ticker.tick(now);
        let mut cached: Option<(Vni, u32)> = None;
        let removed = self.remove_learned_where(|key, _, last_seen| {
            let vni = key.vni();
            let ageing = match cached {
                Some((cached_vni, ticks)) if cached_vni == vni => ticks,
                _ => {
                    let ticks = self.vnis.find(vni).map_or(self.default_ageing_ticks, |r| {
                        r.ageing_ticks.load(Ordering::Relaxed)
                    });
                    cached = Some((vni, ticks));
                    ticks
                }
            };
            let elapsed = tick.wrapping_sub(last_seen) as i32;
            i64::from(elapsed) >= i64::from(ageing)
        });
        bump_by(&self.counters.aged, removed);
        removed
    }

    /// Removes the learned entries of `vni` (static entries stay: they are configuration, as
    /// with Linux' `bridge fdb flush` without `static`). Returns how many.
    pub fn flush_vni(&self, vni: Vni) -> usize {
        self.remove_learned_where(|key, _, _| key.vni() == vni)
    }

    /// Removes the learned entries behind local port `port` (its link went down), in every
    /// VNI. Returns how many.
    pub fn flush_port(&self, port: PortId) -> usize {
        self.remove_learned_where(|_, value, _| value.kind == KIND_PORT && value.dest == port.0)
    }

    /// Removes the learned entries behind remote VTEP `address`, in every VNI. Returns how
    /// many.
    pub fn flush_vtep(&self, address: IpAddr) -> usize {
        match address {
            IpAddr::V4(v4) => {
                let word = u32::from(v4);
                self.remove_learned_where(|_, value, _| {
                    value.kind == KIND_IPV4 && value.dest == word
                })
            }
            IpAddr::V6(v6) => {
                // One locked section: the index of an address can change only when its last
                // reference goes.
                let _guard = self.lock();
                let Some(index) = self.vteps.find_locked(v6) else {
                    return 0;
                };
                self.remove_learned_where_locked(|_, value, _| {
                    value.kind == KIND_IPV6 && value.dest == index
                })
            }
        }
    }

    /// Calls `each` with every entry, for `show` output, without locking: each bucket is read
    /// consistently, the table as a whole is not a snapshot (entries changed meanwhile may be
    /// shown old or new, or not at all if removed).
    pub fn for_each(&self, now: Instant, mut each: impl FnMut(Entry)) {
        for index in 0..self.table.buckets() {
            let entries = self.table.read_bucket(index, |at, key, value| {
                self.entry(key, value, self.last_seen(at), now)
            });
            for entry in entries.into_iter().flatten() {
                each(entry);
            }
        }
    }

    /// Every entry, in table order ([`Fdb::for_each`] into a vector).
    pub fn entries(&self, now: Instant) -> Vec<Entry> {
        let mut entries = Vec::with_capacity(self.len());
        self.for_each(now, |entry| entries.push(entry));
        entries
    }

    /// Sets the ageing time, entry bound and learning switch of `vni`. Lowering the bound
    /// below the current count evicts nothing: learning is refused until entries go.
    pub fn configure_vni(&self, vni: Vni, config: VniConfig) -> Result<(), FdbError> {
        let ageing_ticks = self
            .ticker
            .ticks_in(config.ageing)
            .ok_or(FdbError::AgeingOutOfRange)?;
        let _guard = self.lock();
        let record = self
            .vnis
            .find_or_create_locked(vni, self.defaults())
            .ok_or(FdbError::VniTableFull)?;
        record.ageing_ticks.store(ageing_ticks, Ordering::Relaxed);
        record
            .max_entries
            .store(config.max_entries, Ordering::Relaxed);
        record.learning.store(config.learning, Ordering::Relaxed);
        Ok(())
    }

    /// The settings of `vni` (the defaults if it has none); the ageing time as rounded to
    /// whole refresh granularities.
    pub fn vni_config(&self, vni: Vni) -> VniConfig {
        let (ticks, max_entries, learning) = match self.vnis.find(vni) {
            Some(record) => (
                record.ageing_ticks.load(Ordering::Relaxed),
                record.max_entries.load(Ordering::Relaxed),
                record.learning.load(Ordering::Relaxed),
            ),
            None => (
                self.default_ageing_ticks,
                self.config.max_entries_per_vni,
                true,
            ),
        };
        VniConfig {
            ageing: Duration::from_nanos(u64::from(ticks).saturating_mul(self.ticker.nanos)),
            max_entries,
            learning,
        }
    }

    /// Replaces the flood list of `vni` as a whole: readers see the old list or the new one,
    /// never a mix. Duplicates are dropped (one copy per destination).
    pub fn set_flood_list(&self, vni: Vni, members: &[Destination]) -> Result<(), FdbError> {
        let mut unique: Vec<Destination> = Vec::with_capacity(members.len());
        for member in members {
            if !unique.contains(member) {
                unique.push(*member);
            }
        }
        if unique.len() > self.config.max_flood_members as usize {
            return Err(FdbError::FloodListTooLong);
        }
        let _guard = self.lock();
        let record = self
            .vnis
            .find_or_create_locked(vni, self.defaults())
            .ok_or(FdbError::VniTableFull)?;
        let mut encoded: Vec<(u32, u32)> = Vec::with_capacity(unique.len());
        for member in unique {
            match self.encode_locked(member) {
                Some(words) => encoded.push(words),
                None => {
                    for &(kind, word) in &encoded {
                        self.release_locked(kind, word);
                    }
                    return Err(FdbError::VtepTableFull);
                }
            }
        }
        let mut old: Vec<(u32, u32)> = Vec::new();
        self.vnis
            .flood_locked(record, |kind, word| old.push((kind, word)));
        self.vnis.write_flood_locked(record, &encoded);
        // After the list's sequence changed: see `vtep` on reusing an index.
        for (kind, word) in old {
            self.release_locked(kind, word);
        }
        Ok(())
    }

    /// A buffer for [`Fdb::flood_list`] with room for the longest list.
    pub fn flood_buffer(&self) -> FloodList {
        FloodList {
            members: Vec::with_capacity(self.config.max_flood_members as usize),
        }
    }

    /// Copies the flood list of `vni` into `out` (emptied first; empty if `vni` has none).
    /// No lock; no allocation when `out` came from [`Fdb::flood_buffer`].
    pub fn flood_list(&self, vni: Vni, out: &mut FloodList) {
        out.members.clear();
        let Some(record) = self.vnis.find(vni) else {
            return;
        };
        self.vnis
            .read_flood(record, &mut out.members, |kind, word| {
                self.decode(kind, word)
            });
    }

    /// Totals since the table was made.
    pub fn counters(&self) -> FdbCounters {
        let get = |counter: &Counter| counter.load(Ordering::Relaxed) as u64;
        FdbCounters {
            learned: get(&self.counters.learned),
            moved: get(&self.counters.moved),
            refused_full: get(&self.counters.refused_full),
            refused_vni_full: get(&self.counters.refused_vni_full),
            refused_vni_table_full: get(&self.counters.refused_vni_table_full),
            refused_vtep_table_full: get(&self.counters.refused_vtep_table_full),
            static_move_dropped: get(&self.counters.static_move_dropped),
            invalid_source_dropped: get(&self.counters.invalid_source_dropped),
            aged: get(&self.counters.aged),
        }
    }

    /// IPv6 VTEP addresses currently named by entries or flood lists.
    pub fn ipv6_vteps(&self) -> usize {
        self.vteps.live() as usize
    }
}

#[cfg(test)]
mod test;
