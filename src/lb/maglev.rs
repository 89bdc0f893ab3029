//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, section 3.4), with Katran's weighted turns.
//!
//! A table of `M` slots (M prime) maps a flow hash to a backend. Backend `i` has a preference
//! list, the permutation `(offset_i + j * skip_i) mod M` for `j = 0, 1, ...`; the backends take
//! turns, each claiming its next preferred slot that is still free, until every slot is taken.
//! Because `M` is prime and `1 <= skip < M`, every preference list visits every slot, so the
//! build always terminates with no empty slot.
//!
//! **Hash.** [`Permutation::for_name`] fixes how a backend's offset and skip come from its
//! name: `offset = XXH64(name, seed 0) mod M`, `skip = XXH64(name, seed 1) mod (M - 1) + 1`.
//! XXH64 is specified byte for byte and implemented by a maintained crate (xxhash-rust), so a
//! node written in any language computes the same table from the same set of backends.
//!
//! **Weights** follow Katran's Maglev V2 (`katran/lib/MaglevHashV2.cpp`): in every round each
//! backend adds its weight to an accumulator, and takes a turn when the accumulator reaches the
//! largest weight, which it then subtracts. The heaviest backend takes a turn every round; one
//! with half its weight every other round. With equal weights every backend takes one turn per
//! round, which is the paper's algorithm exactly, so shares are `floor(M/N)` or `ceil(M/N)`.
//! A backend of weight 0 takes no turn and owns no slot.
//!
//! **Speed.** Preferences are generated on the fly with additions and conditional
//! subtractions (never a multiplication or a division). The claimed slots are a map that
//! holds every slot twice, at `s` and `s + M`, so that a candidate `next + k * skip` is tested
//! before it is reduced mod M: a byte per slot up to M = 2^18 (128 KiB for M = 65537, in L2;
//! a test is one load, where a bitmap in L1 costs twice the instructions and measured slower),
//! a bit per slot above (where the byte map would outgrow L2). Nothing is allocated but the
//! table, the map, the per-member state (12 bytes a member, and per walking stage everything
//! a turn reads, together) and, once, the list of the last free slots. The walk for a
//! member's next free slot changes with the table's fill: while under three eighths is taken
//! it tests one preference at a time (the first is usually free, the branch predicted);
//! fuller, the number of steps is random and a branch per step would mispredict at the end of
//! nearly every walk, so it tests four, then (past seven eighths) eight preferences at once,
//! without a branch between them, and takes the first free one. The last sqrt(M) claims would
//! cost over half of all probes (a member walks about M / free preferences per claim); for
//! the last sqrt(M) / 2, the member's next slot is instead the free slot the fewest steps
//! along its list, `(slot - next) * skip^-1 mod M` steps away (a Barrett reduction, no
//! division), which gives the same table.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// The paper's and Katran's default table size: a prime well above 100 x the number of
/// backends of a typical service, so that shares differ by under 1 % (paper section 3.4).
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// The largest table size accepted: 2^24. Tables of up to 16 million slots keep the build
/// under a second; the paper found 65537 ample for hundreds of backends.
pub const MAX_TABLE_SIZE: u32 = 1 << 24;

/// The most backends one table can hold: table entries are `u16` indices, so that a 65537-slot
/// table is 128 KiB and stays in L2 on the lookup path.
pub const MAX_BACKENDS: usize = u16::MAX as usize;

/// A table size that is not usable for Maglev.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableSizeError {
    /// The size is not a prime number (Maglev needs a prime so every skip generates a full
    /// permutation).
    NotPrime(u32),
    /// The size is above [`MAX_TABLE_SIZE`].
    TooLarge(u32),
}

impl fmt::Display for TableSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableSizeError::NotPrime(m) => {
                write!(f, "Maglev table size {m} is not prime (try 16381 or 65537)")
            }
            TableSizeError::TooLarge(m) => {
                write!(
                    f,
                    "Maglev table size {m} is above the limit of {MAX_TABLE_SIZE}"
                )
            }
        }
    }
}

impl core::error::Error for TableSizeError {}

/// A validated Maglev table size: a prime no larger than [`MAX_TABLE_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableSize(u32);

impl TableSize {
    /// The default size, 65537.
    pub const DEFAULT: TableSize = TableSize(DEFAULT_TABLE_SIZE);

    /// `m` if it is a prime no larger than [`MAX_TABLE_SIZE`].
    pub fn new(m: u32) -> Result<TableSize, TableSizeError> {
        if m > MAX_TABLE_SIZE {
            return Err(TableSizeError::TooLarge(m));
        }
        if !is_prime(m) {
            return Err(TableSizeError::NotPrime(m));
        }
        Ok(TableSize(m))
    }

    /// The number of slots.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl Default for TableSize {
    fn default() -> Self {
        TableSize::DEFAULT
    }
}

/// Deterministic primality by trial division: at most sqrt(2^24) = 4096 candidates, a few
/// microseconds, and no probabilistic step to argue about.
fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let mut d: u32 = 5;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// A backend's preference list: slots `offset, offset + skip, offset + 2 skip, ...` mod M.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permutation {
    /// The first preferred slot, below M.
    pub offset: u32,
    /// The step between preferred slots, in `1..M`.
    pub skip: u32,
}

impl Permutation {
    /// The specified permutation of the backend called `name` (its `"ip:port"` text, see
    /// [`crate::lb::Backend::name`]): `offset = XXH64(name, 0) mod M`,
    /// `skip = XXH64(name, 1) mod (M - 1) + 1`.
    pub fn for_name(name: &[u8], size: TableSize) -> Permutation {
        let m = u64::from(size.get());
        let offset = xxhash_rust::xxh64::xxh64(name, 0) % m;
        // M = 2 would make M - 1 = 1 and skip 1; M >= 2 always, so no division by zero.
        let skip = xxhash_rust::xxh64::xxh64(name, 1) % (m - 1) + 1;
        Permutation {
            offset: offset as u32,
            skip: skip as u32,
        }
    }
}

/// Why a table could not be built from the given members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MaglevError {
    /// More members than [`MAX_BACKENDS`].
    TooManyBackends(usize),
    /// An injected permutation has `offset >= M`, `skip == 0` or `skip >= M` (member index).
    BadPermutation(usize),
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaglevError::TooManyBackends(n) => {
                write!(f, "{n} backends, above the Maglev limit of {MAX_BACKENDS}")
            }
            MaglevError::BadPermutation(i) => write!(
                f,
                "backend {i} has an offset or skip outside the table (need offset < M, 0 < skip < M)"
            ),
        }
    }
}

impl core::error::Error for MaglevError {}

/// A built Maglev lookup table: slot -> member index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maglev {
    /// Member index per slot; empty when no member has a positive weight.
    slots: Vec<u16>,
    size: TableSize,
}

/// The order in which the members of a build take turns.
trait Turns {
    /// The position (in the builder's per-member arrays) of the member whose turn is next.
    fn next_turn(&mut self) -> usize;

    /// Calls `claim` with the state of the member of each of the next `claims` turns;
    /// `states` holds one per member, in position order.
    #[inline(always)]
    fn take<T>(&mut self, states: &mut [T], claims: u32, mut claim: impl FnMut(&mut T)) {
        for _ in 0..claims {
            if let Some(state) = states.get_mut(self.next_turn()) {
                claim(state);
            }
        }
    }
}

/// Equal weights: every member takes one turn per round, the paper's algorithm.
struct RoundRobin {
    members: usize,
    position: usize,
}

impl Turns for RoundRobin {
    #[inline(always)]
    fn next_turn(&mut self) -> usize {
        let p = self.position;
        self.position = if p + 1 == self.members { 0 } else { p + 1 };
        p
    }

    /// The turns as runs of consecutive members: a walk along the slice, with no position
    /// arithmetic or bounds check per turn.
    #[inline(always)]
    fn take<T>(&mut self, states: &mut [T], claims: u32, mut claim: impl FnMut(&mut T)) {
        let mut left = claims as usize;
        while left > 0 {
            let rest = match states.get_mut(self.position..) {
                Some(rest) if !rest.is_empty() => rest,
                _ => return,
            };
            let run = rest.len().min(left);
            rest.iter_mut().take(run).for_each(&mut claim);
            left -= run;
            self.position += run;
            if self.position >= states.len() {
                self.position = 0;
            }
        }
    }
}

/// Katran's weighted turns: each member adds its weight to an accumulator in every round and
/// takes a turn when it reaches the largest weight, which it then subtracts.
struct Weighted {
    /// (weight, accumulated) per member.
    members: Vec<(u64, u64)>,
    max_weight: u64,
    position: usize,
}

impl Turns for Weighted {
    #[inline]
    fn next_turn(&mut self) -> usize {
        // Terminates: a member of the largest weight takes a turn in every round.
        loop {
            let p = self.position;
            self.position = if p + 1 == self.members.len() {
                0
            } else {
                p + 1
            };
            if let Some((weight, accumulated)) = self.members.get_mut(p) {
                *accumulated += *weight;
                if *accumulated >= self.max_weight {
                    *accumulated -= self.max_weight;
                    return p;
                }
            }
        }
    }
}

/// A member of positive weight, walking its preference list.
#[derive(Debug, Clone, Copy)]
struct Walker {
    /// Its next preferred slot.
    next: u32,
    skip: u32,
    /// Its index in the build's members, the value of the slots it claims.
    index: u16,
}

/// A member's state in a stage that tests `W` preferences at a time: everything a turn reads,
/// together, so that a turn costs one run of loads and no bounds check.
#[derive(Debug, Clone, Copy)]
struct Strider<const W: usize> {
    next: u32,
    /// `k * skip mod M` for `k < W` (so `multiples[1]` is the skip).
    multiples: [u32; W],
    /// `W * skip mod M`: from one group of `W` preferences to the next.
    stride: u32,
    index: u16,
}

/// The claimed slots of a build, each held twice, at `s` and at `s + M`, so that a candidate
/// `a + b` (`a, b < M`) can be tested before it is reduced mod M. The length is a power of
/// two, so that a masked index needs no bounds check.
trait Claimed {
    /// An empty map for a table of `m` slots.
    fn new(m: u32) -> Self;
    /// The test of a candidate below 2 M: 1 if it is claimed, else 0. (A closure over the
    /// map's storage, taken once per walk step, so that no length is reloaded per candidate.)
    fn tester(&self) -> impl Fn(u32) -> u32 + '_;
    /// Marks `slot` (below M) claimed, at `slot` and `slot + m`.
    fn mark(&mut self, slot: u32, m: u32);
    /// The free slots below `m`, in order.
    fn free(&self, m: u32) -> Vec<u32>;
}

/// A byte per slot (1: claimed): a test is one load, no bit arithmetic. The map is 2 M bytes
/// (128 KiB for M = 65537, in L2); a bitmap stays in L1 but costs twice the instructions a
/// test, and its builds measured 9-10 % slower at M = 65537 and 8 % at M = 262139 (fastest
/// of 20, three alternating runs, `examples/maglev-build.rs`). Past 2^18 slots the byte map
/// outgrows L2 and the bitmap is faster: 6 % at M = 524287, 30 % at M = 1000003.
struct ByteMap {
    bytes: Vec<u8>,
    mask: usize,
}

/// The largest M built with a [`ByteMap`]: 512 KiB of map; larger tables use a [`BitMap`].
const BYTE_MAP_MAX_SLOTS: u32 = 1 << 18;

impl Claimed for ByteMap {
    fn new(m: u32) -> Self {
        let len = (2 * m as usize).next_power_of_two();
        ByteMap {
            bytes: vec![0; len],
            mask: len - 1,
        }
    }

    #[inline(always)]
    fn tester(&self) -> impl Fn(u32) -> u32 + '_ {
        let mask = self.mask;
        let bytes = &self.bytes[..=mask];
        move |slot| u32::from(bytes[slot as usize & mask])
    }

    #[inline(always)]
    fn mark(&mut self, slot: u32, m: u32) {
        let mask = self.mask;
        let bytes = &mut self.bytes[..=mask];
        for s in [slot, slot + m] {
            bytes[s as usize & mask] = 1;
        }
    }

    fn free(&self, m: u32) -> Vec<u32> {
        // Eight bytes at a time: nearly every group is all claimed (one free slot in 500).
        const ALL_CLAIMED: u64 = 0x0101_0101_0101_0101;
        let bytes = self.bytes.get(..m as usize).unwrap_or(&self.bytes);
        let mut free = Vec::new();
        let mut read = |group: &[u8], base: u32| {
            free.extend(
                (base..)
                    .zip(group)
                    .filter(|&(_, &b)| b == 0)
                    .map(|(s, _)| s),
            );
        };
        let mut groups = bytes.chunks_exact(8);
        let mut base = 0u32;
        for group in &mut groups {
            let word = group
                .iter()
                .rev()
                .fold(0u64, |w, &b| (w << 8) | u64::from(b));
            if word != ALL_CLAIMED {
                read(group, base);
            }
            base += 8;
        }
        read(groups.remainder(), base);
        free
    }
}

/// A bit per slot: 2 M bits (256 KiB for M = 2^20), for the tables too large for a
/// [`ByteMap`] to stay in L2.
struct BitMap {
    words: Vec<u64>,
    mask: usize,
}

impl Claimed for BitMap {
    fn new(m: u32) -> Self {
        let len = (2 * m as usize).div_ceil(64).next_power_of_two();
        BitMap {
            words: vec![0; len],
            mask: len - 1,
        }
    }

    #[inline(always)]
    fn tester(&self) -> impl Fn(u32) -> u32 + '_ {
        let mask = self.mask;
        let words = &self.words[..=mask];
        move |slot| ((words[(slot / 64) as usize & mask] >> (slot % 64)) & 1) as u32
    }

    #[inline(always)]
    fn mark(&mut self, slot: u32, m: u32) {
        let mask = self.mask;
        let words = &mut self.words[..=mask];
        for bit in [slot, slot + m] {
            words[(bit / 64) as usize & mask] |= 1u64 << (bit % 64);
        }
    }

    fn free(&self, m: u32) -> Vec<u32> {
        let mut free = Vec::new();
        for (w, &word) in self.words.iter().enumerate().take(m.div_ceil(64) as usize) {
            let mut bits = !word;
            while bits != 0 {
                let slot = w as u32 * 64 + bits.trailing_zeros();
                if slot >= m {
                    break;
                }
                free.push(slot);
                bits &= bits - 1;
            }
        }
        free
    }
}

/// The table being built and the map of its claimed slots.
struct Table<C> {
    m: u32,
    slots: Vec<u16>,
    claimed: C,
}

impl<C: Claimed> Table<C> {
    /// Gives `slot` (below M) to the member of index `index`.
    #[inline(always)]
    fn claim(&mut self, slot: u32, index: u16) {
        self.claimed.mark(slot, self.m);
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = index;
        }
    }

    /// The first free slot of the preference list `next, next + skip, ...` (one exists), one
    /// preference at a time: right for a table that is mostly free, where the first
    /// preference is free and the branch predicted.
    #[inline(always)]
    fn first_free_single(&self, next: u32, skip: u32) -> u32 {
        let test = self.claimed.tester();
        let mut slot = next;
        while test(slot) != 0 {
            slot = add_mod(slot, skip, self.m);
        }
        slot
    }

    /// The first free slot of the preference list `next, next + skip, ...` (one exists), with
    /// `multiples` `k * skip mod M` for `k < W` and `stride` `W * skip mod M`. Fuller, the
    /// number of steps is random and a branch per step would mispredict at the end of almost
    /// every walk: `W` preferences are tested at once, without a branch between them.
    #[inline(always)]
    fn first_free<const W: usize>(&self, next: u32, multiples: &[u32; W], stride: u32) -> u32 {
        const { assert!(W >= 2 && W <= 32) };
        let m = self.m;
        let mut base = next;
        loop {
            // Candidates below 2 M, tested unreduced (the map holds every slot twice); only
            // the one returned is reduced. Bit k of `claimed` is candidate k's, shifted in
            // from the last candidate to the first: a shift and an or per candidate (placing
            // each at its own position cost one more instruction per candidate, and holding
            // the candidates in an array kept them on the stack). Candidate 0 is `base`
            // itself (`multiples[0]` is 0, which the compiler cannot know).
            let test = self.claimed.tester();
            let mut claimed = 0u32;
            for k in (1..W).rev() {
                claimed = (claimed << 1) | test(base + multiples[k]);
            }
            claimed = (claimed << 1) | test(base);
            if claimed != (1 << W) - 1 {
                let slot = base + multiples[(!claimed).trailing_zeros() as usize % W];
                return if slot >= m { slot - m } else { slot };
            }
            base = add_mod(base, stride, m);
        }
    }
}

/// The state of one build: the table and, per member of positive weight, its walk.
struct Builder<C> {
    table: Table<C>,
    walkers: Vec<Walker>,
}

impl<C: Claimed> Builder<C> {
    /// `claims` turns, each claiming the member's next free preferred slot by walking its
    /// preference list, `W` preferences at a time. The caller leaves at least one slot free
    /// per turn. Not inlined: each stage gets its own registers.
    #[inline(never)]
    fn walk<const W: usize>(&mut self, turns: &mut impl Turns, claims: u32) {
        // Per member, `k * skip mod M` for `k < W` and the stride `W * skip mod M`: computed
        // once per stage rather than once per claim.
        let m = self.table.m;
        let mut striders: Vec<Strider<W>> = self
            .walkers
            .iter()
            .map(|w| {
                let mut multiples = [0u32; W];
                for k in 1..W {
                    multiples[k] = add_mod(multiples[k - 1], w.skip, m);
                }
                Strider {
                    next: w.next,
                    multiples,
                    stride: add_mod(multiples[W - 1], w.skip, m),
                    index: w.index,
                }
            })
            .collect();
        let table = &mut self.table;
        turns.take(&mut striders, claims, |s| {
            let slot = table.first_free::<W>(s.next, &s.multiples, s.stride);
            table.claim(slot, s.index);
            s.next = add_mod(slot, s.multiples[1], m);
        });
        for (w, s) in self.walkers.iter_mut().zip(&striders) {
            w.next = s.next;
        }
    }

    /// [`Builder::walk`] one preference at a time.
    #[inline(never)]
    fn walk_single(&mut self, turns: &mut impl Turns, claims: u32) {
        let table = &mut self.table;
        let m = table.m;
        turns.take(&mut self.walkers, claims, |w| {
            let slot = table.first_free_single(w.next, w.skip);
            table.claim(slot, w.index);
            w.next = add_mod(slot, w.skip, m);
        });
    }

    /// The last claims, once few slots are free: the member's next free slot is the free slot
    /// the fewest steps of its preference list away from its next preference. A slot `s` is
    /// `(s - next) * skip^-1 mod M` steps away.
    fn end_game(&mut self, turns: &mut impl Turns) {
        let m = self.table.m;
        let m64 = u64::from(m);
        // Barrett reduction: for y < 2^48, `y - floor(y * mu / 2^64) * M` is below 2 M.
        let mu = u64::MAX / m64;
        let mut free = self.table.claimed.free(m);
        // `skip`'s inverse mod M per member, computed on its first claim here (0: not yet;
        // 0 is never an inverse).
        let mut inverses = vec![0u32; self.walkers.len()];
        while !free.is_empty() {
            let p = turns.next_turn();
            let (Some(walker), Some(inverse)) = (self.walkers.get_mut(p), inverses.get_mut(p))
            else {
                continue;
            };
            if *inverse == 0 {
                *inverse = inverse_mod(walker.skip, m);
            }
            let inverse = u64::from(*inverse);
            let next = walker.next;
            let mut best = 0;
            let mut best_steps = u64::MAX;
            for (i, &s) in free.iter().enumerate() {
                // (s - next) mod M, then times the inverse, mod M.
                let d = if s >= next { s - next } else { s + m - next };
                let y = u64::from(d) * inverse;
                let q = ((u128::from(y) * u128::from(mu)) >> 64) as u64;
                let mut steps = y - q * m64;
                if steps >= m64 {
                    steps -= m64;
                }
                if steps < best_steps {
                    (best, best_steps) = (i, steps);
                }
            }
            let slot = free.swap_remove(best);
            self.table.claim(slot, walker.index);
            walker.next = add_mod(slot, walker.skip, m);
        }
    }
}

/// `a + b mod m` for `a, b < m`, without a branch (half of these would mispredict).
#[inline(always)]
fn add_mod(a: u32, b: u32, m: u32) -> u32 {
    let s = a + b;
    core::hint::select_unpredictable(s >= m, s.wrapping_sub(m), s)
}

/// The inverse of `a` mod the prime `m` (`0 < a < m`), by the extended Euclidean algorithm.
fn inverse_mod(a: u32, m: u32) -> u32 {
    let (mut t, mut next_t) = (0i64, 1i64);
    let (mut r, mut next_r) = (m, a);
    while next_r != 0 {
        let q = r / next_r;
        (t, next_t) = (next_t, t - i64::from(q) * next_t);
        (r, next_r) = (next_r, r - q * next_r);
    }
    if t < 0 {
        t += i64::from(m);
    }
    t as u32
}

/// The slots of the table of `members` (permutations checked, `active` of them of positive
/// weight, the largest weight `max_weight > 0`), with the map `C` of claimed slots.
fn fill<C: Claimed>(
    m: u32,
    members: &[(Permutation, u32)],
    active: usize,
    max_weight: u32,
) -> Vec<u16> {
    let mut builder = Builder {
        table: Table {
            m,
            slots: vec![0u16; m as usize],
            claimed: C::new(m),
        },
        walkers: members
            .iter()
            .enumerate()
            .filter(|&(_, &(_, w))| w > 0)
            .map(|(i, &(perm, _))| Walker {
                next: perm.offset,
                skip: perm.skip,
                index: i as u16,
            })
            .collect(),
    };
    // When few slots remain free, a member's next slot is found from the list of free
    // slots instead of by walking its preferences. Walking costs about M / free probes per
    // claim (the last 256 of 65537 slots cost over half of all probes), the list a few
    // multiplications per free slot: the two cost the same near sqrt(M) / 2 (with the
    // byte map's cheap probes; 3.5 % fewer instructions a build than at sqrt(M), and the
    // fastest of the thresholds timed). Both give the same slot, so where the switch
    // happens does not change the table.
    let end_game = m.isqrt() / 2;
    // Claims by walking one preference at a time while under three eighths of the table
    // is taken, four at a time up to seven eighths, then eight at a time: the fastest of the
    // splits timed with the byte map (one at a time up to a half takes 3 % fewer instructions
    // but measured slower, fastest builds 910-976 against 861-870 us: the single walk's
    // mispredictions).
    let walked = m - end_game;
    let single = (m / 8 * 3).min(walked);
    let seven_eighths = (m / 8 * 7).clamp(single, walked);
    let stages = [single, seven_eighths - single, walked - seven_eighths];
    if members.iter().all(|&(_, w)| w == 0 || w == max_weight) {
        let mut turns = RoundRobin {
            members: active,
            position: 0,
        };
        builder.walk_single(&mut turns, stages[0]);
        builder.walk::<4>(&mut turns, stages[1]);
        builder.walk::<8>(&mut turns, stages[2]);
        builder.end_game(&mut turns);
    } else {
        let mut turns = Weighted {
            members: members
                .iter()
                .filter(|&&(_, w)| w > 0)
                .map(|&(_, w)| (u64::from(w), 0))
                .collect(),
            max_weight: u64::from(max_weight),
            position: 0,
        };
        builder.walk_single(&mut turns, stages[0]);
        builder.walk::<4>(&mut turns, stages[1]);
        builder.walk::<8>(&mut turns, stages[2]);
        builder.end_game(&mut turns);
    }
    builder.table.slots
}

impl Maglev {
    /// Builds the table for `members`, given as (permutation, weight), taking turns in the
    /// order given: callers that want a table independent of insertion order sort the members
    /// by name first (the service layer does). Slot values are indices into `members`;
    /// members of weight 0 own no slot. With no member of positive weight the table is empty
    /// and [`Maglev::lookup`] returns `None`.
    pub fn build(size: TableSize, members: &[(Permutation, u32)]) -> Result<Maglev, MaglevError> {
        if members.len() > MAX_BACKENDS {
            return Err(MaglevError::TooManyBackends(members.len()));
        }
        let m = size.get();
        for (i, (perm, _)) in members.iter().enumerate() {
            if perm.offset >= m || perm.skip == 0 || perm.skip >= m {
                return Err(MaglevError::BadPermutation(i));
            }
        }
        let active = members.iter().filter(|&&(_, w)| w > 0).count();
        let max_weight = members.iter().map(|&(_, w)| w).max().unwrap_or(0);
        if max_weight == 0 {
            return Ok(Maglev {
                slots: Vec::new(),
                size,
            });
        }
        let slots = if m <= BYTE_MAP_MAX_SLOTS {
            fill::<ByteMap>(m, members, active, max_weight)
        } else {
            fill::<BitMap>(m, members, active, max_weight)
        };
        Ok(Maglev { slots, size })
    }

    /// The table size M.
    pub fn size(&self) -> TableSize {
        self.size
    }

    /// The member index of every slot, in slot order (empty if no member has a weight).
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }

    /// True if no member owns a slot.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slot a 64-bit flow hash falls into: `((hash >> 32) * M) >> 32`, Lemire's
    /// multiply-shift range reduction (a multiplication instead of a division; it is part of
    /// the specification, since every node must pick the same slot).
    #[inline]
    pub fn slot_of(&self, hash: u64) -> usize {
        (((hash >> 32) * u64::from(self.size.get())) >> 32) as usize
    }

    /// The member that owns the slot of `hash`, or `None` for an empty table.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u16> {
        self.slots.get(self.slot_of(hash)).copied()
    }

    /// How many slots each of `members` members owns.
    pub fn shares(&self, members: usize) -> Vec<u32> {
        let mut shares = vec![0u32; members];
        for &s in &self.slots {
            if let Some(c) = shares.get_mut(usize::from(s)) {
                *c += 1;
            }
        }
        shares
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn p(offset: u32, skip: u32) -> Permutation {
        Permutation { offset, skip }
    }

    /// The worked example of the Maglev paper, section 3.4, table 1 (M = 7).
    #[test]
    fn paper_example() {
        let m = TableSize::new(7).unwrap();
        let all = [(p(3, 4), 1), (p(0, 2), 1), (p(3, 1), 1)];
        let table = Maglev::build(m, &all).unwrap();
        assert_eq!(table.slots(), &[1, 0, 1, 0, 2, 2, 0]);
        // Without B1: its weight 0 keeps the indices of B0 and B2.
        let without_b1 = [(p(3, 4), 1), (p(0, 2), 0), (p(3, 1), 1)];
        let table = Maglev::build(m, &without_b1).unwrap();
        assert_eq!(table.slots(), &[0, 0, 0, 0, 2, 2, 2]);
        // And removing it from the list altogether gives the same table.
        let table = Maglev::build(m, &[(p(3, 4), 1), (p(3, 1), 1)]).unwrap();
        assert_eq!(table.slots(), &[0, 0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn sizes() {
        assert_eq!(TableSize::new(65537).unwrap().get(), 65537);
        assert_eq!(TableSize::new(16381).unwrap().get(), 16381);
        assert_eq!(TableSize::new(2).unwrap().get(), 2);
        assert_eq!(TableSize::new(65536), Err(TableSizeError::NotPrime(65536)));
        assert_eq!(TableSize::new(1), Err(TableSizeError::NotPrime(1)));
        assert_eq!(TableSize::new(0), Err(TableSizeError::NotPrime(0)));
        // 65537 * 65537 would overflow u32 in a careless loop; 4294967291 is prime but big.
        assert_eq!(
            TableSize::new(4_294_967_291),
            Err(TableSizeError::TooLarge(4_294_967_291))
        );
        // 16777213 = 2^24 - 3 is the largest prime below the limit.
        assert!(TableSize::new(16_777_213).is_ok());
        assert_eq!(
            TableSize::new(16_777_215),
            Err(TableSizeError::NotPrime(16_777_215))
        );
        let text = alloc::string::ToString::to_string(&TableSizeError::NotPrime(65536));
        assert!(text.contains("65536"), "{text}");
    }

    #[test]
    fn inverses() {
        for m in [7u32, 251, 65537] {
            for a in (1..m).step_by((m / 50).max(1) as usize) {
                let inv = inverse_mod(a, m);
                assert!(inv > 0 && inv < m);
                assert_eq!(
                    u64::from(a) * u64::from(inv) % u64::from(m),
                    1,
                    "{a} mod {m}"
                );
            }
        }
    }

    /// The end game gives the table the plain walk gives: checked against a direct
    /// transcription of the paper's pseudo-code.
    #[test]
    fn end_game_matches_the_plain_walk() {
        let m = if cfg!(miri) { 1021 } else { 4093 };
        let size = TableSize::new(m).unwrap();
        for n in [1u32, 3, 40] {
            let members: Vec<(Permutation, u32)> = (0..n)
                .map(|i| {
                    let name = alloc::format!("b{i}");
                    (Permutation::for_name(name.as_bytes(), size), 1)
                })
                .collect();
            let mut plain = vec![u16::MAX; m as usize];
            let mut next: Vec<u32> = members.iter().map(|(p, _)| p.offset).collect();
            let mut filled = 0;
            'fill: loop {
                for (i, (p, _)) in members.iter().enumerate() {
                    let mut c = next[i];
                    while plain[c as usize] != u16::MAX {
                        c = (c + p.skip) % m;
                    }
                    plain[c as usize] = i as u16;
                    next[i] = (c + p.skip) % m;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
            assert_eq!(
                Maglev::build(size, &members).unwrap().slots(),
                &plain[..],
                "n {n}"
            );
        }
    }

    /// A direct transcription of the paper's loop, with Katran's weighted turns: every
    /// member walks its preferences one at a time, no end game.
    fn plain_build(m: u32, members: &[(Permutation, u32)]) -> Vec<u16> {
        let max = members.iter().map(|&(_, w)| w).max().unwrap_or(0);
        if max == 0 {
            return Vec::new();
        }
        let mut table = vec![u16::MAX; m as usize];
        let mut next: Vec<u32> = members.iter().map(|(p, _)| p.offset).collect();
        let mut accumulated = vec![0u32; members.len()];
        let mut filled = 0;
        loop {
            for (i, &(p, w)) in members.iter().enumerate() {
                accumulated[i] += w;
                if accumulated[i] < max {
                    continue;
                }
                accumulated[i] -= max;
                let mut c = next[i];
                while table[c as usize] != u16::MAX {
                    c = (c + p.skip) % m;
                }
                table[c as usize] = i as u16;
                next[i] = (c + p.skip) % m;
                filled += 1;
                if filled == m {
                    return table;
                }
            }
        }
    }

    /// The optimised build (staged walks, end game) gives the plain loop's table on random
    /// sizes, permutations and weights.
    #[test]
    fn optimised_build_matches_the_plain_loop() {
        let mut rng = crate::mix::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let primes = [2u32, 3, 7, 13, 61, 251, 1009, 4093, 16381];
        let cases = if cfg!(miri) { 6 } else { 200 };
        for case in 0..cases {
            let m = primes[(rng() % primes.len() as u64) as usize];
            if cfg!(miri) && m > 1009 {
                continue;
            }
            let n = 1 + (rng() % 70) as usize;
            let weighted = case % 2 == 1;
            let members: Vec<(Permutation, u32)> = (0..n)
                .map(|_| {
                    let offset = (rng() % u64::from(m)) as u32;
                    let skip = if m == 2 {
                        1
                    } else {
                        1 + (rng() % u64::from(m - 1)) as u32
                    };
                    let weight = if weighted { (rng() % 5) as u32 } else { 1 };
                    (p(offset, skip), weight)
                })
                .collect();
            let size = TableSize::new(m).unwrap();
            let plain = plain_build(m, &members);
            assert_eq!(
                Maglev::build(size, &members).unwrap().slots(),
                &plain[..],
                "case {case}: m {m}, {members:?}"
            );
            // Both maps of claimed slots (`build` picks by M), directly.
            let active = members.iter().filter(|&&(_, w)| w > 0).count();
            let max_weight = members.iter().map(|&(_, w)| w).max().unwrap_or(0);
            if max_weight > 0 {
                let bytes = fill::<ByteMap>(m, &members, active, max_weight);
                let bits = fill::<BitMap>(m, &members, active, max_weight);
                assert_eq!(bytes, plain, "case {case}: byte map, m {m}, {members:?}");
                assert_eq!(bits, plain, "case {case}: bitmap, m {m}, {members:?}");
            }
        }
    }

    /// Tables above [`BYTE_MAP_MAX_SLOTS`] are built with the bitmap: still the plain loop's.
    #[test]
    #[cfg_attr(miri, ignore = "a quarter-million-slot build is too slow under miri")]
    fn large_tables_match_the_plain_loop() {
        let m = 262147;
        assert!(m > BYTE_MAP_MAX_SLOTS);
        let size = TableSize::new(m).unwrap();
        let members: Vec<(Permutation, u32)> = (0..5u32)
            .map(|i| {
                let name = alloc::format!("b{i}");
                (Permutation::for_name(name.as_bytes(), size), 1 + i % 2)
            })
            .collect();
        assert_eq!(
            Maglev::build(size, &members).unwrap().slots(),
            &plain_build(m, &members)[..]
        );
    }

    #[test]
    fn primes_agree_with_a_sieve() {
        let limit = 2000usize;
        let mut sieve = vec![true; limit];
        sieve[0] = false;
        sieve[1] = false;
        for i in 2..limit {
            if sieve[i] {
                let mut j = i * i;
                while j < limit {
                    sieve[j] = false;
                    j += i;
                }
            }
        }
        for (n, &prime) in sieve.iter().enumerate() {
            assert_eq!(is_prime(n as u32), prime, "{n}");
        }
    }

    #[test]
    fn rejects_bad_permutations() {
        let m = TableSize::new(7).unwrap();
        assert_eq!(
            Maglev::build(m, &[(p(7, 1), 1)]),
            Err(MaglevError::BadPermutation(0))
        );
        assert_eq!(
            Maglev::build(m, &[(p(0, 1), 1), (p(0, 0), 1)]),
            Err(MaglevError::BadPermutation(1))
        );
        assert_eq!(
            Maglev::build(m, &[(p(0, 7), 1)]),
            Err(MaglevError::BadPermutation(0))
        );
    }

    #[test]
    fn empty_and_single() {
        let m = TableSize::new(13).unwrap();
        let empty = Maglev::build(m, &[]).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.lookup(12345), None);
        let zero = Maglev::build(m, &[(p(1, 1), 0)]).unwrap();
        assert!(zero.is_empty());
        let one = Maglev::build(m, &[(p(5, 3), 1)]).unwrap();
        assert_eq!(one.slots(), &[0; 13]);
        assert_eq!(one.lookup(u64::MAX), Some(0));
    }

    #[test]
    fn equal_weights_give_floor_or_ceil_shares() {
        let m = TableSize::new(251).unwrap();
        for n in 1..=12u32 {
            let members: Vec<(Permutation, u32)> = (0..n)
                .map(|i| {
                    let name = alloc::format!("10.0.0.{i}:80");
                    (Permutation::for_name(name.as_bytes(), m), 1)
                })
                .collect();
            let table = Maglev::build(m, &members).unwrap();
            let (lo, hi) = (251 / n, 251u32.div_ceil(n));
            for share in table.shares(n as usize) {
                assert!(share == lo || share == hi, "n {n}: share {share}");
            }
        }
    }

    #[test]
    fn weights_scale_shares() {
        let m = TableSize::new(1009).unwrap();
        let members: Vec<(Permutation, u32)> = [("a", 1), ("b", 2), ("c", 1), ("d", 4)]
            .iter()
            .map(|&(n, w)| (Permutation::for_name(n.as_bytes(), m), w))
            .collect();
        let shares = Maglev::build(m, &members).unwrap().shares(4);
        // Total weight 8: expected 126, 252, 126, 504 of 1009; the rounds are exact up to the
        // last, partial round.
        assert_eq!(shares.iter().sum::<u32>(), 1009);
        for (share, weight) in shares.iter().zip([1u32, 2, 1, 4]) {
            let expected = 1009 * weight / 8;
            assert!(share.abs_diff(expected) <= 2, "{shares:?}");
        }
    }

    #[test]
    fn slot_of_stays_in_range() {
        let table = Maglev::build(TableSize::new(7).unwrap(), &[(p(0, 1), 1)]).unwrap();
        for hash in [0, 1, u64::MAX, u64::MAX / 2, 0xFFFF_FFFF] {
            assert!(table.slot_of(hash) < 7);
        }
        assert_eq!(table.slot_of(u64::MAX), 6);
        assert_eq!(table.slot_of(0), 0);
    }
}
