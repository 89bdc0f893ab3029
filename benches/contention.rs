//! Is this core shared right now? A probe for the benchmark machines, not a benchmark of the
//! crate.
//!
//! `taskset -c 1 cargo bench --bench contention [-- SECONDS]` (default 10). About four times
//! a second it prints two figures measured on the CPU it runs on:
//!
//! - `alu`: eight independent xorshift generators stepped in turn (the compiler runs them in
//!   vector registers), arithmetic only, many instructions ready every cycle: the throughput
//!   of the core's execution units, in billions of generator operations a second.
//! - `l2`: a chase of dependent loads around a random cycle of 256 KiB of cache lines (more
//!   than L1, less than L2): the latency of the core's L2, in nanoseconds a load.
//!
//! On the shared 2-vCPU guests these benchmarks run on, both figures alternate between two
//! levels, from a fraction of a second to many seconds apart (2026-11-30, the Zen 3 EPYC guest:
//! `alu` 17.5-19.6 against 12.2-13.8, `l2` 4.5-5.4 ns against 8.5-10.7 ns, the two changing
//! together), while a chain of dependent additions (a loop measured apart) keeps the same
//! clock, 2.9 GHz, throughout. That is the signature of the other hardware thread of the
//! physical core being busy: another tenant takes a share of the execution units and of L1
//! and L2. Code that retires three to four instructions a cycle, as the switch pipeline does,
//! loses the most (about 1.6x). Run this before and after a benchmark to know which phase it
//! met, or rely on `benches/medians.py`, which reports each run's 10th percentile of samples
//! for the same reason.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Cache lines in the chase: 256 KiB.
const CHASE_LINES: usize = 256 * 1024 / 64;
/// Generator steps per measurement of `alu` (six operations each).
const ALU_STEPS: u64 = 60_000_000;
/// Loads per measurement of `l2`.
const CHASE_LOADS: usize = 10_000_000;

/// Eight xorshift64 generators, stepped in turn: each step depends on its own previous one
/// only, so eight chains run side by side.
fn alu(steps: u64, seed: u64) -> u64 {
    let mut x = [0u64; 8];
    for (i, value) in x.iter_mut().enumerate() {
        *value = seed
            .wrapping_add(i as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            | 1;
    }
    for _ in 0..steps {
        for value in &mut x {
            *value ^= *value << 13;
            *value ^= *value >> 7;
            *value ^= *value << 17;
        }
    }
    x.iter().fold(0, |a, &b| a ^ b)
}

/// A random cyclic permutation of the lines: `next[i]` is the line after line `i`, at the
/// start of each 64-byte line (the rest of the line unused).
fn chase_ring() -> Vec<usize> {
    let mut order: Vec<usize> = (0..CHASE_LINES).collect();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..order.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let mut next = vec![0usize; CHASE_LINES * 8];
    for (k, &line) in order.iter().enumerate() {
        next[line * 8] = order[(k + 1) % order.len()] * 8;
    }
    next
}

fn chase(next: &[usize], loads: usize) -> usize {
    let mut at = 0;
    for _ in 0..loads {
        at = next[at];
    }
    at
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then one quick round,
    // so that the test run only checks that the probe works.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benching = args.iter().any(|a| a == "--bench");
    let seconds = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .find_map(|a| a.parse::<f64>().ok())
        .unwrap_or(10.0);
    let (steps, loads, deadline) = if benching {
        // A negative, infinite or absurd count of seconds is the default's.
        let deadline = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::from_secs(10));
        (ALU_STEPS, CHASE_LOADS, deadline)
    } else {
        (ALU_STEPS / 100, CHASE_LOADS / 100, Duration::ZERO)
    };
    let next = chase_ring();
    chase(&next, CHASE_LINES); // brings the ring into the cache
    let start = Instant::now();
    let mut sink = 0u64;
    loop {
        let t0 = Instant::now();
        sink ^= alu(black_box(steps), sink);
        let t1 = Instant::now();
        sink ^= chase(black_box(&next), loads) as u64;
        let t2 = Instant::now();
        // Six operations a step and eight generators.
        let alu_rate = (steps * 8 * 6) as f64 / (t1 - t0).as_secs_f64() / 1e9;
        let l2 = (t2 - t1).as_secs_f64() / loads as f64 * 1e9;
        println!(
            "{:6.1} s  alu {alu_rate:5.2} G ops/s  l2 {l2:5.2} ns",
            start.elapsed().as_secs_f64()
        );
        if start.elapsed() >= deadline {
            break;
        }
    }
    black_box(sink);
}
