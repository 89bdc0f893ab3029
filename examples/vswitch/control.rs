//! The control socket: a Unix stream socket speaking line-delimited JSON, one request per
//! line, one response per line, so that any tool (`socat`, a Python script) can drive it.
//!
//! Requests:
//!
//! ```text
//! {"op":"show","what":"fdb"}           also: ports, vnis, neighbors, services, counters, conntrack
//! {"op":"add","what":"fdb","vni":42,"mac":"02:00:00:00:00:02","remote":"198.18.0.2"}
//! {"op":"add","what":"fdb","vni":42,"mac":"02:00:00:00:00:03","port":"pod-b"}
//! {"op":"del","what":"fdb","vni":42,"mac":"02:00:00:00:00:02"}
//! {"op":"add","what":"flood","vni":42,"remote":"198.18.0.3"}        (del likewise)
//! {"op":"add","what":"neighbor","vni":42,"ip":"198.19.0.2","mac":"02:00:00:00:00:02"}
//! {"op":"del","what":"neighbor","vni":42,"ip":"198.19.0.2"}
//! {"op":"add","what":"backend","service":"web","addr":"198.19.0.3:8080","weight":1}
//! {"op":"del","what":"backend","service":"web","addr":"198.19.0.3:8080"}
//! ```
//!
//! Responses: `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`. A change is applied
//! like a reload of the file with that change (validated as a whole; refused changes leave
//! everything as it was) and its result lists what each service's Maglev table moved.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};

use serde_json::{json, Map, Value};
use switchyard::fdb::{Destination, EntryKind};
use switchyard::DropReason;

use crate::config::{BackendSection, FdbSection, NeighborSection, StateName};
use crate::run::Shared;

/// Listens on `path` (replacing a stale socket file) on a thread of its own.
pub fn serve(shared: Arc<Shared>, path: PathBuf, stop: Arc<AtomicBool>) -> io::Result<()> {
    if path.exists() {
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("vswitch-control".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = Arc::clone(&shared);
                        std::thread::spawn(move || {
                            let _ = session(&shared, stream);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
                }
            }
        })?;
    Ok(())
}

fn session(shared: &Shared, stream: UnixStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut writer = stream.try_clone()?;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<Value>(&line) {
            Ok(request) => match handle(shared, &request) {
                Ok(result) => json!({"ok": true, "result": result}),
                Err(error) => json!({"ok": false, "error": error}),
            },
            Err(e) => json!({"ok": false, "error": format!("not JSON: {e}")}),
        };
        writeln!(writer, "{response}")?;
    }
    Ok(())
}

fn field<'a>(request: &'a Value, key: &str) -> Result<&'a Value, String> {
    request.get(key).ok_or_else(|| format!("missing {key:?}"))
}

fn text(request: &Value, key: &str) -> Result<String, String> {
    field(request, key)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{key:?} must be a string"))
}

fn number(request: &Value, key: &str) -> Result<u64, String> {
    let value = field(request, key)?;
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| format!("{key:?} must be a number"))
}

/// Answers one request.
pub fn handle(shared: &Shared, request: &Value) -> Result<Value, String> {
    let op = text(request, "op")?;
    let what = text(request, "what")?;
    match op.as_str() {
        "show" => show(shared, &what),
        "add" | "del" => change(shared, op == "add", &what, request),
        _ => Err(format!("unknown op {op:?}: show, add or del")),
    }
}

fn show(shared: &Shared, what: &str) -> Result<Value, String> {
    let names = crate::run::port_names(shared);
    let snapshots = shared.snapshots();
    let mut total = switchyard::switch::SwitchCounters::default();
    for s in &snapshots {
        total.merge(&s.counters);
    }
    let running = shared
        .running
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let file = &running.file;
    Ok(match what {
        "fdb" => {
            let now = shared.now();
            let mut entries = shared.switch.fdb().entries(now);
            entries.sort_by_key(|e| (e.vni, e.mac.0));
            Value::Array(
                entries
                    .iter()
                    .map(|e| {
                        let destination = match e.destination {
                            Destination::Port(p) => format!(
                                "port {}",
                                names.get(&p.0).cloned().unwrap_or_else(|| p.to_string())
                            ),
                            Destination::Vtep(ip) => format!("vtep {ip}"),
                        };
                        json!({
                            "vni": e.vni.get(),
                            "mac": colon_mac(e.mac),
                            "destination": destination,
                            "kind": match e.kind { EntryKind::Static => "static", _ => "learned" },
                            "age_secs": e.last_seen.map(|t| now.saturating_duration_since(t).as_secs()),
                        })
                    })
                    .collect(),
            )
        }
        "ports" => Value::Array(
            running
                .config
                .ports
                .iter()
                .zip(&file.port)
                .map(|(binding, section)| {
                    let traffic = total
                        .ports
                        .iter()
                        .find(|(id, _)| *id == binding.id)
                        .map(|(_, t)| *t)
                        .unwrap_or_default();
                    let (rx, tx) = queue_totals(&snapshots, &binding.name);
                    json!({
                        "name": binding.name,
                        "id": binding.id.0,
                        "interface": binding.interface,
                        "vni": section.vni,
                        "received": traffic.received,
                        "sent": traffic.sent,
                        "dropped": traffic.dropped,
                        "rx_queue": {"frames": rx.frames, "bytes": rx.bytes, "dropped": rx.dropped},
                        "tx_queue": {"frames": tx.frames, "bytes": tx.bytes, "dropped": tx.dropped},
                    })
                })
                .chain(std::iter::once({
                    let (rx, tx) = queue_totals(&snapshots, "underlay");
                    json!({
                        "name": "underlay",
                        "interface": file.underlay.interface,
                        "received": total.underlay.received,
                        "sent": total.underlay.sent,
                        "dropped": total.underlay.dropped,
                        "rx_queue": {"frames": rx.frames, "bytes": rx.bytes, "dropped": rx.dropped},
                        "tx_queue": {"frames": tx.frames, "bytes": tx.bytes, "dropped": tx.dropped},
                    })
                }))
                .collect(),
        ),
        "vnis" => Value::Array(
            file.vni
                .iter()
                .map(|v| {
                    let traffic = total
                        .vnis
                        .iter()
                        .find(|(id, _)| id.get() == v.id)
                        .map(|(_, t)| *t)
                        .unwrap_or_default();
                    json!({
                        "id": v.id,
                        "learning": v.learning,
                        "ageing_secs": v.ageing_secs,
                        "arp_suppression": v.arp_suppression,
                        "flood": v.flood.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
                        "received": traffic.received,
                        "sent": traffic.sent,
                        "dropped": traffic.dropped,
                    })
                })
                .collect(),
        ),
        "neighbors" => Value::Array(
            file.neighbor
                .iter()
                .map(|n| json!({"vni": n.vni, "ip": n.ip.to_string(), "mac": n.mac}))
                .collect(),
        ),
        "services" => Value::Array(
            file.service
                .iter()
                .map(|s| {
                    json!({
                        "name": s.name,
                        "vni": s.vni,
                        "vip": s.vip.to_string(),
                        "port": s.port,
                        "protocol": format!("{:?}", s.protocol).to_lowercase(),
                        "backends": s.backends.iter().map(|b| json!({
                            "addr": b.addr.to_string(),
                            "weight": b.weight,
                            "state": format!("{:?}", b.state).to_lowercase(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        ),
        "counters" => {
            let drops = |counters: &switchyard::DropCounters| {
                let mut map = Map::new();
                for &reason in DropReason::ALL {
                    let n = counters.get(reason);
                    if n > 0 {
                        map.insert(reason.as_str().to_owned(), json!(n));
                    }
                }
                Value::Object(map)
            };
            json!({
                "received": total.received,
                "forwarded": total.forwarded,
                "consumed": total.consumed,
                "dropped": total.dropped.total(),
                "dropped_by_reason": drops(&total.dropped),
                "learn_refused": drops(&total.learn_refused),
                "sent": total.sent,
                "generated": total.generated,
                "fdb_entries": shared.switch.fdb().len(),
                "workers": snapshots.iter().map(|s| json!({
                    "steps": s.loop_stats.steps,
                    "received": s.loop_stats.received,
                    "sent": s.loop_stats.sent,
                    "no_egress": s.loop_stats.no_egress,
                    "tx_full": s.loop_stats.tx_full,
                    "tx_errors": s.loop_stats.tx_errors,
                    "rx_errors": s.loop_stats.rx_errors,
                    "gso_frames": s.loop_stats.gso_frames,
                    "gso_segments": s.loop_stats.gso_segments,
                    "gso_dropped": s.loop_stats.gso_dropped,
                    "gso_whole": s.loop_stats.gso_whole,
                    "gro_frames": s.loop_stats.gro_frames,
                    "gro_segments": s.loop_stats.gro_segments,
                    "checksums_completed": s.loop_stats.checksums_completed,
                    "offload_malformed": s.loop_stats.offload_malformed,
                })).collect::<Vec<_>>(),
            })
        }
        "conntrack" => Value::Array(
            snapshots
                .iter()
                .enumerate()
                .flat_map(|(worker, s)| {
                    s.conntrack.iter().map(move |(vni, flows, c)| {
                        let backends: Map<String, Value> = s
                            .backend_flows
                            .iter()
                            .filter(|(v, _, _)| v == vni)
                            .map(|(_, backend, n)| (backend.to_string(), json!(n)))
                            .collect();
                        json!({
                            "worker": worker,
                            "vni": vni.get(),
                            "flows": flows,
                            "hits": c.hits,
                            "misses": c.misses,
                            "misses_syn": c.misses_syn,
                            "misses_non_syn": c.misses_non_syn,
                            "evictions_unreplied": c.evictions_unreplied,
                            "evictions_replied": c.evictions_replied,
                            "expired": c.expired,
                            "flows_per_backend": backends,
                        })
                    })
                })
                .collect(),
        ),
        _ => {
            return Err(format!(
                "unknown table {what:?}: fdb, ports, vnis, neighbors, services, counters, conntrack"
            ))
        }
    })
}

/// A MAC as the configuration writes it (`02:00:00:00:00:01`; smoltcp displays dashes).
fn colon_mac(mac: switchyard::wire::EthernetAddress) -> String {
    let b = mac.0;
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

fn queue_totals(
    snapshots: &[crate::run::Snapshot],
    name: &str,
) -> (
    switchyard::backend::QueueStats,
    switchyard::backend::QueueStats,
) {
    let mut rx = switchyard::backend::QueueStats::default();
    let mut tx = switchyard::backend::QueueStats::default();
    for (_, r, t) in snapshots
        .iter()
        .flat_map(|s| &s.queues)
        .filter(|q| q.0 == name)
    {
        for (sum, part) in [(&mut rx, r), (&mut tx, t)] {
            sum.frames += part.frames;
            sum.bytes += part.bytes;
            sum.dropped += part.dropped;
            sum.malformed += part.malformed;
        }
    }
    (rx, tx)
}

fn change(shared: &Shared, add: bool, what: &str, request: &Value) -> Result<Value, String> {
    let mut file = shared
        .running
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .file
        .clone();
    let vni = || number(request, "vni").map(|v| v as u32);
    match what {
        "fdb" => {
            let (vni, mac) = (vni()?, text(request, "mac")?);
            let same = |f: &FdbSection| {
                f.vni == vni && crate::config::parse_mac(&f.mac) == crate::config::parse_mac(&mac)
            };
            let before = file.fdb.len();
            file.fdb.retain(|f| !same(f));
            if add {
                let remote = match request.get("remote") {
                    Some(_) => Some(
                        text(request, "remote")?
                            .parse()
                            .map_err(|e| format!("remote: {e}"))?,
                    ),
                    None => None,
                };
                let port = request
                    .get("port")
                    .map(|_| text(request, "port"))
                    .transpose()?;
                file.fdb.push(FdbSection {
                    vni,
                    mac,
                    remote,
                    port,
                });
            } else if file.fdb.len() == before {
                return Err(format!("no static entry {mac} in VNI {vni}"));
            }
        }
        "flood" => {
            let (vni, remote) = (vni()?, text(request, "remote")?);
            let remote: std::net::IpAddr = remote.parse().map_err(|e| format!("remote: {e}"))?;
            let section = file
                .vni
                .iter_mut()
                .find(|v| v.id == vni)
                .ok_or_else(|| format!("no VNI {vni}"))?;
            let had = section.flood.contains(&remote);
            section.flood.retain(|ip| *ip != remote);
            if add {
                section.flood.push(remote);
            } else if !had {
                return Err(format!("{remote} is not in VNI {vni}'s flood list"));
            }
        }
        "neighbor" => {
            let vni = vni()?;
            let ip: std::net::IpAddr = text(request, "ip")?
                .parse()
                .map_err(|e| format!("ip: {e}"))?;
            let before = file.neighbor.len();
            file.neighbor.retain(|n| !(n.vni == vni && n.ip == ip));
            if add {
                file.neighbor.push(NeighborSection {
                    vni,
                    ip,
                    mac: text(request, "mac")?,
                });
            } else if file.neighbor.len() == before {
                return Err(format!("no neighbour {ip} in VNI {vni}"));
            }
        }
        "backend" => {
            let name = text(request, "service")?;
            let addr: std::net::SocketAddr = text(request, "addr")?
                .parse()
                .map_err(|e| format!("addr: {e}"))?;
            let service = file
                .service
                .iter_mut()
                .find(|s| s.name == name)
                .ok_or_else(|| format!("no service {name:?}"))?;
            let before = service.backends.len();
            service.backends.retain(|b| b.addr != addr);
            if add {
                let weight = match request.get("weight") {
                    Some(_) => number(request, "weight")? as u32,
                    None => 1,
                };
                let state = match request.get("state").and_then(Value::as_str) {
                    None | Some("active") => StateName::Active,
                    Some("draining") => StateName::Draining,
                    Some("down") => StateName::Down,
                    Some(other) => {
                        return Err(format!("state {other:?}: active, draining or down"))
                    }
                };
                service.backends.push(BackendSection {
                    addr,
                    weight,
                    state,
                });
            } else if service.backends.len() == before {
                return Err(format!("no backend {addr} in service {name:?}"));
            }
        }
        _ => {
            return Err(format!(
                "cannot {} {what:?}: fdb, flood, neighbor or backend",
                if add { "add" } else { "del" }
            ))
        }
    }
    let moved = shared.apply(file)?;
    Ok(json!({"applied": true, "services_moved": moved}))
}

/// `vswitch ctl SOCKET OP WHAT [key=value]...`: sends one request, prints the result.
pub fn client(socket: &std::path::Path, args: &[String]) -> Result<String, String> {
    let [op, what, rest @ ..] = args else {
        return Err("usage: vswitch ctl SOCKET show|add|del WHAT [key=value]...".into());
    };
    let mut request = Map::new();
    request.insert("op".into(), json!(op));
    request.insert("what".into(), json!(what));
    for pair in rest {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?}: expected key=value"))?;
        let value = match value.parse::<u64>() {
            Ok(n) => json!(n),
            Err(_) => json!(value),
        };
        request.insert(key.into(), value);
    }
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    writeln!(stream, "{}", Value::Object(request)).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let response: Value = serde_json::from_str(&line).map_err(|e| format!("bad response: {e}"))?;
    if response.get("ok") == Some(&Value::Bool(true)) {
        serde_json::to_string_pretty(response.get("result").unwrap_or(&Value::Null))
            .map_err(|e| e.to_string())
    } else {
        Err(response
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error")
            .to_owned())
    }
}
