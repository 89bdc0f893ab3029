//! The backend benchmark: 64-byte frames on a veth pair between two network namespaces it
//! creates (and deletes), receive and transmit packet rates of each contender, in the same
//! run, repeated, medians and ratios against the `recvmmsg`/`sendmmsg` baseline.
//!
//! ```text
//! cargo run --release --features af-packet --example backend-bench -- [--seconds 2] [--reps 5]
//!     [--contender ring,mmsg] [--size 64] [--direction rx,tx] [--busy-poll] [--no-pin] [--list]
//! ```
//!
//! - **RX**: a generator in namespace `gen` (always the AF_PACKET TX ring, the fastest sender
//!   at hand, so every contender faces the same offered load) sends to `b0` as fast as it can;
//!   the contender receives on `a0` in namespace `dut`, batches of up to 256, sleeping in
//!   `poll(2)` when its queue is empty as the worker loop does (`--busy-poll`: spinning).
//!   Reported: frames the contender received per second, and per second of the receiver
//!   thread's CPU time.
//! - **TX**: the contender sends on `a0` as fast as it can (batches of 256, one flush per
//!   batch); reported: frames `b0` delivered per second (its `rx_packets`), not frames
//!   "sent": frames a socket accepted and then dropped do not count; and per second of the
//!   sender thread's CPU time (which includes the kernel's transmit path and, on a veth, the
//!   peer's receive softirq).
//!
//! With two cores, the generator or sender is pinned to CPU 0 and the receiver to CPU 1
//! (`--no-pin` to leave it to the scheduler). On a veth, the kernel's delivery of a frame to
//! the receiving socket runs in the sender's context (softirq), so RX rates include that cost
//! on the generator's core.
//!
//! **Adding a contender** (the io_uring backend, say): write a `fn(&str) -> io::Result<(Box<dyn
//! RxQueue>, Box<dyn TxQueue>)>` that opens both halves on the named interface (it is called
//! inside the `dut` namespace) and add a line to [`contenders`]. Everything else (namespaces,
//! generator, timing, medians, ratios to `mmsg`) is shared.

// Pinning threads to CPUs (sched_setaffinity).
#![allow(unsafe_code)]

#[path = "../tests/netns_lab/mod.rs"]
mod netns_lab;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use switchyard::backend::af_packet::{self, AfPacketConfig};
use switchyard::backend::{netns, packet_mmsg, recycle, RxQueue, TxQueue};

/// Opens both halves of a contender's port on an interface (called in the namespace).
type Open = fn(&str) -> io::Result<(Box<dyn RxQueue>, Box<dyn TxQueue>)>;

/// The contenders: name, what it is, how to open it. The first that is not `mmsg` is
/// compared with `mmsg`, and so is every other.
fn contenders() -> Vec<(&'static str, &'static str, Open)> {
    vec![
        (
            "ring",
            "AF_PACKET TPACKET_V3 RX ring / TPACKET_V2 TX ring (switchyard::backend::af_packet)",
            |interface| {
                let (rx, tx) = af_packet::open(&AfPacketConfig::new(interface))?;
                Ok((Box::new(rx), Box::new(tx)))
            },
        ),
        (
            "mmsg",
            "AF_PACKET socket with recvmmsg / sendmmsg, batches of 256 (the baseline)",
            |interface| {
                let (rx, tx) = packet_mmsg::open(&AfPacketConfig::new(interface), 256)?;
                Ok((Box::new(rx), Box::new(tx)))
            },
        ),
        // The io_uring backend goes here, e.g.
        // ("io-uring", "...", |interface| { ... }),
    ]
}

#[derive(Parser, Debug)]
#[command(about = "RX/TX packet rates of the AF_PACKET backends on a veth pair")]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Repetitions (contenders interleaved in each).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Contenders, comma-separated (see --list).
    #[arg(long, value_delimiter = ',', default_value = "ring,mmsg")]
    contender: Vec<String>,
    /// Frame size in bytes (Ethernet header included, no FCS).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Directions to measure: rx, tx or both.
    #[arg(long, value_delimiter = ',', default_value = "rx,tx")]
    direction: Vec<String>,
    /// Do not pin the threads to CPUs 0 and 1.
    #[arg(long)]
    no_pin: bool,
    /// RX: the receiver spins on an empty queue instead of sleeping in poll(2).
    #[arg(long)]
    busy_poll: bool,
    /// Pin the receiver to the sender's CPU (0): one core does everything, so the
    /// receiver's cost shows in the rate.
    #[arg(long)]
    same_core: bool,
    /// Receive Packet Steering on both veth ends: each end's receive processing (which veth
    /// otherwise runs in the sender's softirq, on the sender's core) moves to CPU 1, as it
    /// would be on the far side of a real link: the generator's core then only transmits
    /// (RX), and the measured sender's core does not also pay the sink's receive (TX).
    #[arg(long)]
    rps: bool,
    /// List the contenders and exit.
    #[arg(long)]
    list: bool,
}

fn pin(cpu: usize, enabled: bool) {
    if !enabled {
        return;
    }
    // SAFETY: cpu_set_t is plain old data (all zeroes: the empty set); CPU_SET writes a bit
    // of it; sched_setaffinity reads it for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPU time of the calling thread (user and system).
fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime writes one timespec into `t`, a live local.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t);
    }
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Waits up to 10 ms for `fd` to poll readable.
fn wait_readable(fd: Option<std::os::fd::RawFd>) {
    let Some(fd) = fd else {
        return;
    };
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd, exclusively borrowed for the call.
    unsafe {
        libc::poll(&mut pollfd, 1, 10);
    }
}

/// One measurement: frames per second of wall time, and per second of the measured
/// thread's CPU time (the receiver for RX, the sender for TX): what one core would do, the
/// figure that other work on the machine disturbs least.
#[derive(Debug, Clone, Copy)]
struct Rate {
    wall: f64,
    per_cpu: f64,
}

fn frame(size: usize, seq: u64) -> Vec<u8> {
    let mut f = vec![0u8; size.max(60)];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..22].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Sends `template` as fast as `tx` takes it until `stop`; returns frames accepted.
fn blast(tx: &mut dyn TxQueue, template: &[u8], stop: &AtomicBool) -> u64 {
    let mut accepted = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..256 {
            if tx.send(template, &[]).unwrap_or(false) {
                accepted += 1;
            }
        }
        let _ = tx.flush();
    }
    let _ = tx.flush();
    accepted
}

struct Lab {
    lab: netns_lab::Lab,
    gen: String,
    dut: String,
}

fn lab(rps: bool) -> Lab {
    let mut lab = netns_lab::Lab::new("bench");
    let dut = lab.namespace("dut", false);
    let gen = lab.namespace("gen", false);
    lab.veth(&dut, "a0", &gen, "b0");
    if rps {
        for (namespace, interface) in [(&dut, "a0"), (&gen, "b0")] {
            let path = format!("/sys/class/net/{interface}/queues/rx-0/rps_cpus");
            let out = lab.exec(namespace, &["sh", "-c", &format!("echo 2 > {path}")]);
            assert!(out.status.success(), "setting {path}: {out:?}");
        }
    }
    Lab { lab, gen, dut }
}

/// Frames per second the contender received while the generator ran for `seconds`. The
/// receiver sleeps in `poll(2)` when its queue is empty, as the worker loop does, so that its
/// CPU time is the cost of receiving (`--busy-poll`: it spins instead).
fn measure_rx(lab: &Lab, open: Open, args: &Args) -> io::Result<Rate> {
    let (mut rx, _tx) = netns::run_in(&lab.dut, || open("a0"))??;
    let (_grx, mut gtx) = netns::run_in(&lab.gen, || af_packet::open(&AfPacketConfig::new("b0")))??;
    let template = frame(args.size, 0);
    let stop = AtomicBool::new(false);
    let received = AtomicU64::new(0);
    let pinned = !args.no_pin;
    let busy_poll = args.busy_poll;
    let same_core = args.same_core;
    let (elapsed, cpu) = std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            pin(if same_core { 0 } else { 1 }, pinned);
            let mut frames = Vec::with_capacity(256);
            let mut count = 0u64;
            // Warm-up: frames before the clock starts are not counted.
            let started = Instant::now();
            let warm = Duration::from_millis(200);
            let mut counting_since = None;
            let fd = rx.poll_fd();
            while !stop.load(Ordering::Relaxed) {
                let mut batch = recycle(std::mem::take(&mut frames));
                let n = rx.recv(&mut batch, 256).unwrap_or(0);
                frames = recycle(batch);
                rx.release();
                match counting_since {
                    Some(_) => count += n as u64,
                    None if started.elapsed() >= warm => {
                        counting_since = Some((Instant::now(), thread_cpu()))
                    }
                    None => {}
                }
                if n == 0 && !busy_poll {
                    wait_readable(fd);
                }
            }
            received.store(count, Ordering::Relaxed);
            counting_since
                .map(|(t, c)| (t.elapsed(), thread_cpu() - c))
                .unwrap_or_default()
        });
        let generator = scope.spawn(|| {
            pin(0, pinned);
            blast(&mut gtx, &template, &stop)
        });
        std::thread::sleep(Duration::from_secs_f64(args.seconds) + Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        generator.join().unwrap();
        receiver.join().unwrap()
    });
    let frames = received.load(Ordering::Relaxed) as f64;
    Ok(Rate {
        wall: frames / elapsed.as_secs_f64(),
        per_cpu: frames / cpu.as_secs_f64().max(1e-9),
    })
}

/// Frames per second the peer interface delivered while the contender sent for `seconds`.
fn measure_tx(lab: &Lab, open: Open, args: &Args) -> io::Result<Rate> {
    let (_rx, mut tx) = netns::run_in(&lab.dut, || open("a0"))??;
    let template = frame(args.size, 1);
    let stop = AtomicBool::new(false);
    let counting = AtomicBool::new(false);
    let pinned = !args.no_pin;
    let (delivered, elapsed, cpu) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            pin(0, pinned);
            let mut accepted = 0u64;
            let mut cpu_start = None;
            while !stop.load(Ordering::Relaxed) {
                if cpu_start.is_none() && counting.load(Ordering::Relaxed) {
                    cpu_start = Some(thread_cpu());
                }
                for _ in 0..256 {
                    if tx.send(&template, &[]).unwrap_or(false) {
                        accepted += 1;
                    }
                }
                let _ = tx.flush();
            }
            let cpu = cpu_start.map(|c| thread_cpu() - c).unwrap_or_default();
            let _ = tx.flush();
            (accepted, cpu)
        });
        std::thread::sleep(Duration::from_millis(200)); // warm-up
        let before = lab.lab.counter(&lab.gen, "b0", "rx_packets");
        counting.store(true, Ordering::Relaxed);
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(args.seconds));
        let after = lab.lab.counter(&lab.gen, "b0", "rx_packets");
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let (_, cpu) = sender.join().unwrap();
        (after - before, elapsed, cpu)
    });
    Ok(Rate {
        wall: delivered as f64 / elapsed.as_secs_f64(),
        per_cpu: delivered as f64 / cpu.as_secs_f64().max(1e-9),
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let all = contenders();
    if args.list {
        for (name, what, _) in &all {
            println!("{name:10} {what}");
        }
        return Ok(());
    }
    if !netns_lab::root_or_skip("backend-bench") {
        return Ok(());
    }
    let chosen: Vec<_> = args
        .contender
        .iter()
        .map(|name| {
            all.iter()
                .find(|(n, _, _)| n == name)
                .copied()
                .ok_or_else(|| format!("unknown contender {name:?} (try --list)"))
        })
        .collect::<Result<_, _>>()?;
    let lab = lab(args.rps);
    println!(
        "backend-bench: {} B frames, {} s x {} reps, veth a0 (dut) <-> b0 (gen), {}",
        args.size.max(60),
        args.seconds,
        args.reps,
        if args.no_pin {
            "unpinned"
        } else {
            "pinned: sender CPU 0, receiver CPU 1"
        }
    );
    let directions: Vec<&str> = ["rx", "tx"]
        .into_iter()
        .filter(|d| args.direction.iter().any(|x| x == d))
        .collect();
    let mut results: Vec<Vec<Vec<Rate>>> = vec![vec![Vec::new(); chosen.len()]; directions.len()];
    for rep in 0..args.reps {
        for (d, direction) in directions.iter().enumerate() {
            for (c, (name, _, open)) in chosen.iter().enumerate() {
                let rate = match *direction {
                    "rx" => measure_rx(&lab, *open, &args)?,
                    _ => measure_tx(&lab, *open, &args)?,
                };
                println!(
                    "  rep {rep} {direction} {name:8} {:8.3} Mpps   {:8.3} Mpps per core of the {}",
                    rate.wall / 1e6,
                    rate.per_cpu / 1e6,
                    if *direction == "rx" {
                        "receiver"
                    } else {
                        "sender"
                    },
                );
                results[d][c].push(rate);
            }
        }
    }
    println!("\nmedians ({} reps):", args.reps);
    let baseline = chosen.iter().position(|(n, _, _)| *n == "mmsg");
    for (d, direction) in directions.iter().enumerate() {
        for (metric, pick) in [
            ("Mpps", (|r: &Rate| r.wall) as fn(&Rate) -> f64),
            ("Mpps/core", |r: &Rate| r.per_cpu),
        ] {
            let values: Vec<Vec<f64>> = results[d]
                .iter()
                .map(|rs| rs.iter().map(pick).collect())
                .collect();
            let medians: Vec<f64> = values.iter().map(|v| median(&mut v.clone())).collect();
            for (c, (name, _, _)) in chosen.iter().enumerate() {
                let ratio = baseline
                    .filter(|&b| b != c && medians[b] > 0.0)
                    .map(|b| format!("  {:.2}x mmsg", medians[c] / medians[b]))
                    .unwrap_or_default();
                let min = values[c].iter().copied().fold(f64::INFINITY, f64::min);
                let max = values[c].iter().copied().fold(0.0, f64::max);
                println!(
                    "  {direction} {name:8} {:8.3} {metric:9} (min {:.3}, max {:.3}){ratio}",
                    medians[c] / 1e6,
                    min / 1e6,
                    max / 1e6,
                );
            }
        }
    }
    Ok(())
}
