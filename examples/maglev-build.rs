//! `maglev-build`: how long one Maglev table build takes, as a median of many builds in one
//! process, for comparing two builds of the crate in alternation on a machine whose speed
//! drifts (see BENCHMARKS.md, "Load balancer"). `benches/lb.rs` (`maglev_build`) is the
//! criterion benchmark of the same job.
//!
//! ```text
//! cargo run --release --example maglev-build -- [BACKENDS] [BUILDS] [TABLE_SIZE]
//! # defaults: 1000 backends, 100 builds, M = 65537
//! ```
//!
//! The backends are `198.19.x.y:8080` of equal weight, sorted by name as the service layer
//! sorts them; each build starts from their permutations (the XXH64 of the names is
//! computed once, outside the timing). Prints the minimum, quartiles and maximum in
//! microseconds, and a checksum of the last table so that two builds of the crate can be seen
//! to agree.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use switchyard::lb::{Maglev, Permutation, TableSize};

fn main() -> ExitCode {
    let arg = |i: usize, default: u32| -> Result<u32, String> {
        std::env::args().nth(i).map_or(Ok(default), |a| {
            a.parse().map_err(|e| format!("argument {i} ({a:?}): {e}"))
        })
    };
    let (backends, builds, size) = match (arg(1, 1000), arg(2, 100), arg(3, 65537)) {
        (Ok(n), Ok(b), Ok(m)) if n > 0 && b > 0 => (n, b, m),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("maglev-build: {e}");
            return ExitCode::from(2);
        }
        _ => {
            eprintln!("maglev-build: BACKENDS and BUILDS must be positive");
            return ExitCode::from(2);
        }
    };
    let size = match TableSize::new(size) {
        Ok(size) => size,
        Err(e) => {
            eprintln!("maglev-build: {e}");
            return ExitCode::from(2);
        }
    };
    let mut names: Vec<String> = (0..backends)
        .map(|i| format!("198.19.{}.{}:8080", i / 250, i % 250 + 1))
        .collect();
    names.sort();
    let members: Vec<(Permutation, u32)> = names
        .iter()
        .map(|name| (Permutation::for_name(name.as_bytes(), size), 1))
        .collect();
    let mut micros = Vec::with_capacity(builds as usize);
    let mut checksum = 0u64;
    for _ in 0..builds {
        let start = Instant::now();
        let table = match Maglev::build(size, black_box(&members)) {
            Ok(table) => table,
            Err(e) => {
                eprintln!("maglev-build: {e}");
                return ExitCode::FAILURE;
            }
        };
        micros.push(start.elapsed().as_secs_f64() * 1e6);
        checksum = table
            .slots()
            .iter()
            .fold(0u64, |h, &s| h.rotate_left(5) ^ u64::from(s));
    }
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    println!(
        "M={} N={backends} builds={builds}: min {:.0} q1 {:.0} median {:.0} q3 {:.0} max {:.0} µs (table checksum {checksum:016x})",
        size.get(),
        at(0.0),
        at(0.25),
        at(0.5),
        at(0.75),
        at(1.0),
    );
    ExitCode::SUCCESS
}
