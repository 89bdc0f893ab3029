//! TCP throughput between two namespaces through the switch's worker loop on two AF_PACKET
//! ports: with the hosts' veth offloads on, GSO super-frames sent whole to the other port
//! with a virtio-net header (the kernel segments), or cut into segments by the loop
//! (`switchyard::gso`, TX sockets without the header); with the offloads off (`ethtool -K tso
//! off gso off tx off`: plain frames with full checksums), their segments coalesced into
//! super-frames for the receiving port (`switchyard::gro`) or sent as they came; and through a
//! Linux bridge in the same place as the kernel's reference.
//!
//! ```text
//! cargo run --release --features af-packet --example tcp-bench -- [--megabytes 256] [--reps 3]
//! ```

#[path = "../tests/netns_lab/mod.rs"]
mod netns_lab;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use switchyard::backend::af_packet::{self, AfPacketConfig};
use switchyard::backend::{netns, LoopConfig, LoopStats, Port, WorkerLoop};
use switchyard::switch::{Ingress, Switch};
use switchyard::PortId;

#[derive(Parser, Debug)]
#[command(about = "TCP throughput through the worker loop, offloads on and off, and a bridge")]
struct Args {
    /// Megabytes per transfer.
    #[arg(long, default_value_t = 256)]
    megabytes: usize,
    /// Repetitions of each mode.
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

/// Gbit/s of one transfer of `bytes` from h1 to h2 (198.18.1.2).
fn transfer(h1: &str, h2: &str, bytes: usize) -> f64 {
    let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)), 5201);
    let listener = netns::run_in(h2, || std::net::TcpListener::bind(address))
        .unwrap()
        .unwrap();
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut buf = vec![0u8; 1 << 18];
            let mut total = 0usize;
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
            }
            total
        });
        let mut stream = netns::run_in(h1, || {
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))
        })
        .unwrap()
        .unwrap();
        let chunk = vec![0x5au8; 1 << 18];
        let started = Instant::now();
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            if stream.write_all(&chunk[..n]).is_err() {
                break;
            }
            sent += n;
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let received = reader.join().unwrap();
        let elapsed = started.elapsed();
        if received < bytes {
            eprintln!("    transfer incomplete: {received} of {bytes} bytes");
        }
        received as f64 * 8.0 / elapsed.as_secs_f64() / 1e9
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let args = Args::parse();
    if !netns_lab::root_or_skip("tcp-bench") {
        return;
    }
    let bytes = args.megabytes << 20;
    let (lab, h1, h2, sw) = netns_lab::two_hosts("tcpb", false);
    println!(
        "tcp-bench: {} MB per transfer, {} reps, h1 -> s1 [sw] s2 -> h2",
        args.megabytes, args.reps
    );

    let offloads = |on: &str| {
        for (ns, dev) in [(&h1, "h1"), (&h2, "h2")] {
            let out = lab.exec(ns, &["ethtool", "-K", dev, "tso", on, "gso", on, "tx", on]);
            assert!(
                out.status.success(),
                "ethtool: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };

    for (mode, on, tx_vnet_header, coalesce) in [
        (
            "switchyard, offloads on, super-frames whole",
            "on",
            true,
            true,
        ),
        ("switchyard, offloads on, software GSO", "on", false, false),
        (
            "switchyard, hosts' offloads off, coalesced",
            "off",
            true,
            true,
        ),
        (
            "switchyard, hosts' offloads off, as sent",
            "off",
            true,
            false,
        ),
    ] {
        offloads(on);
        let switch = Switch::new(netns_lab::two_port_switch_config()).unwrap();
        let open = |dev: &str| {
            let config = AfPacketConfig {
                tx_vnet_header,
                ..AfPacketConfig::new(dev)
            };
            netns::run_in(&sw, || af_packet::open(&config))
                .unwrap()
                .unwrap()
        };
        let (s1_rx, s1_tx) = open("s1");
        let (s2_rx, s2_tx) = open("s2");
        let ports = vec![
            Port::new(Ingress::Port(PortId(1)), Box::new(s1_rx), Box::new(s1_tx)),
            Port::new(Ingress::Port(PortId(2)), Box::new(s2_rx), Box::new(s2_tx)),
        ];
        let stop = AtomicBool::new(false);
        let (rates, stats): (Vec<f64>, LoopStats) = std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                let started = Instant::now();
                let config = LoopConfig {
                    coalesce,
                    ..LoopConfig::default()
                };
                let mut lp = WorkerLoop::new(&switch, switch.worker(), ports, config);
                lp.run(
                    || switchyard::time::Instant::from_nanos(started.elapsed().as_nanos() as u64),
                    &stop,
                );
                lp.stats()
            });
            let rates = (0..args.reps).map(|_| transfer(&h1, &h2, bytes)).collect();
            stop.store(true, Ordering::Relaxed);
            (rates, worker.join().unwrap())
        });
        println!(
            "  {mode:44} median {:6.2} Gbit/s  {rates:.2?}\n    loop: {} frames in, {} sent, {} GSO super-frames: {} whole, {} segments ({} dropped), {} checksums completed, {} segments coalesced into {} super-frames",
            median(rates.clone()),
            stats.received,
            stats.sent,
            stats.gso_frames,
            stats.gso_whole,
            stats.gso_segments,
            stats.gso_dropped,
            stats.checksums_completed,
            stats.gro_segments,
            stats.gro_frames,
        );
    }

    // The kernel's reference: a bridge in the switch namespace, offloads on.
    offloads("on");
    lab.ip(&sw, &["link", "add", "br0", "type", "bridge"]);
    lab.ip(
        &sw,
        &[
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ],
    );
    lab.ip(&sw, &["link", "set", "s1", "master", "br0"]);
    lab.ip(&sw, &["link", "set", "s2", "master", "br0"]);
    lab.ip(&sw, &["link", "set", "br0", "up"]);
    std::thread::sleep(Duration::from_millis(200));
    let rates: Vec<f64> = (0..args.reps).map(|_| transfer(&h1, &h2, bytes)).collect();
    println!(
        "  {:44} median {:6.2} Gbit/s  {rates:.2?}",
        "Linux bridge (kernel), offloads on",
        median(rates.clone())
    );
}
