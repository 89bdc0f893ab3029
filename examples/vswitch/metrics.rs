//! Prometheus metrics over HTTP (text exposition format 0.0.4), served from the workers'
//! snapshots: frames per port and VNI, drops by reason, queue and loop counters, forwarding
//! table size, tracked flows and conntrack counters per VNI.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use switchyard::switch::SwitchCounters;
use switchyard::DropReason;

use crate::run::Shared;

/// Listens on `listen` on a thread of its own; every GET gets the metrics.
pub fn serve(shared: Arc<Shared>, listen: SocketAddr, stop: Arc<AtomicBool>) -> io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("vswitch-metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = answer(&shared, stream);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
                }
            }
        })?;
    Ok(())
}

fn answer(shared: &Shared, mut stream: std::net::TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    // The request line, then headers up to the blank line.
    reader.read_line(&mut line)?;
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let body = render(shared);
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The metrics as text.
pub fn render(shared: &Shared) -> String {
    let snapshots = shared.snapshots();
    let mut total = SwitchCounters::default();
    for s in &snapshots {
        total.merge(&s.counters);
    }
    let names = crate::run::port_names(shared);
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let port_label = |id: u32| names.get(&id).cloned().unwrap_or_else(|| id.to_string());
    for (metric, help, pick) in [
        (
            "switchyard_port_received_frames_total",
            "Frames received on a port (underlay: VXLAN frames).",
            0,
        ),
        (
            "switchyard_port_sent_frames_total",
            "Frames sent on a port.",
            1,
        ),
        (
            "switchyard_port_dropped_frames_total",
            "Received frames dropped by the switch.",
            2,
        ),
    ] {
        let value = |t: &switchyard::switch::TrafficCounters| match pick {
            0 => t.received,
            1 => t.sent,
            _ => t.dropped,
        };
        let mut samples: Vec<(String, u64)> = total
            .ports
            .iter()
            .map(|(id, t)| (format!("{{port=\"{}\"}}", port_label(id.0)), value(t)))
            .collect();
        samples.push(("{port=\"underlay\"}".into(), value(&total.underlay)));
        family(metric, "counter", help, samples);
        let samples = total
            .vnis
            .iter()
            .map(|(vni, t)| (format!("{{vni=\"{vni}\"}}"), value(t)))
            .collect();
        family(
            &metric.replace("port_", "vni_"),
            "counter",
            &help.replace("a port", "a VNI"),
            samples,
        );
    }
    family(
        "switchyard_dropped_frames_total",
        "counter",
        "Received frames dropped, by reason.",
        DropReason::ALL
            .iter()
            .map(|&r| {
                (
                    format!("{{reason=\"{}\"}}", r.as_str()),
                    total.dropped.get(r),
                )
            })
            .collect(),
    );
    family(
        "switchyard_consumed_frames_total",
        "counter",
        "Frames answered by the switch itself (ARP/ND suppression, VIPs).",
        vec![(String::new(), total.consumed)],
    );
    family(
        "switchyard_fdb_entries",
        "gauge",
        "Entries in the forwarding table.",
        vec![(String::new(), shared.switch.fdb().len() as u64)],
    );
    let mut flows: std::collections::BTreeMap<u32, (u64, u64, u64, u64)> = Default::default();
    for s in &snapshots {
        for (vni, len, c) in &s.conntrack {
            let e = flows.entry(vni.get()).or_default();
            e.0 += *len as u64;
            e.1 += c.hits;
            e.2 += c.misses_syn;
            e.3 += c.misses_non_syn;
        }
    }
    for (metric, kind, help, pick) in [
        (
            "switchyard_conntrack_flows",
            "gauge",
            "Tracked service flows.",
            0,
        ),
        (
            "switchyard_conntrack_hits_total",
            "counter",
            "Packets of tracked flows.",
            1,
        ),
        (
            "switchyard_conntrack_misses_syn_total",
            "counter",
            "New connections to services.",
            2,
        ),
        (
            "switchyard_conntrack_misses_non_syn_total",
            "counter",
            "Mid-connection packets whose flow was not tracked.",
            3,
        ),
    ] {
        family(
            metric,
            kind,
            help,
            flows
                .iter()
                .map(|(vni, v)| {
                    let value = [v.0, v.1, v.2, v.3][pick];
                    (format!("{{vni=\"{vni}\"}}"), value)
                })
                .collect(),
        );
    }
    let mut per_backend: std::collections::BTreeMap<(u32, std::net::SocketAddr), u64> =
        Default::default();
    for s in &snapshots {
        for (vni, backend, n) in &s.backend_flows {
            *per_backend.entry((vni.get(), *backend)).or_default() += *n as u64;
        }
    }
    family(
        "switchyard_backend_flows",
        "gauge",
        "Tracked service flows per backend (refreshed every 2 s).",
        per_backend
            .iter()
            .map(|((vni, backend), n)| (format!("{{vni=\"{vni}\",backend=\"{backend}\"}}"), *n))
            .collect(),
    );
    let queue = |pick: fn(&switchyard::backend::QueueStats) -> u64, rx: bool| {
        let mut sums: std::collections::BTreeMap<String, u64> = Default::default();
        for s in &snapshots {
            for (name, r, t) in &s.queues {
                *sums.entry(name.clone()).or_default() += pick(if rx { r } else { t });
            }
        }
        sums.into_iter()
            .map(|(name, v)| (format!("{{port=\"{name}\"}}"), v))
            .collect::<Vec<_>>()
    };
    family(
        "switchyard_rx_ring_dropped_total",
        "counter",
        "Frames the kernel dropped because a receive ring was full (PACKET_STATISTICS).",
        queue(|q| q.dropped, true),
    );
    family(
        "switchyard_tx_queue_dropped_total",
        "counter",
        "Frames refused by a full transmit queue.",
        queue(|q| q.dropped, false),
    );
    out
}
