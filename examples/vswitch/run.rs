//! `vswitch run CONFIG.toml`: the switch on real interfaces.
//!
//! One AF_PACKET port per pod interface and one on the underlay interface (or the io_uring
//! underlay), `workers` threads each with its own rings (PACKET_FANOUT spreads an interface's
//! frames over them), the switch shared by all. The main thread handles signals: SIGINT and
//! SIGTERM stop cleanly, SIGHUP reloads the file and applies only the difference (a bad file
//! is logged and the running state kept). The control socket and the metrics listener run on
//! threads of their own.
//!
//! With more than one worker, the kernel's fanout hash may give a service connection's
//! replies from the underlay to another worker than its requests, which then cannot translate
//! them: run services with `workers = 1` (the default).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant as WallClock};

use switchyard::backend::af_packet::{AfPacketConfig, AfPacketRx, AfPacketTx};
use switchyard::backend::host::{wait_readable, UnderlayGuard};
use switchyard::backend::{LoopConfig, LoopStats, Port, QueueStats, WorkerLoop};
use switchyard::lb::ConnTrackCounters;
use switchyard::switch::{Ingress, Switch, SwitchCounters, Worker};
use switchyard::time::Instant;
use switchyard::wire::EthernetAddress;
use switchyard::Vni;
use tracing::{error, info, warn};

use crate::capture::{CaptureRx, CaptureTx, Pcap};
use crate::config::{self, BackendKind, Config, File, HostFacts, PortBinding, PortIds};

/// What the workers publish for the control socket and the metrics (a few times a second).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub counters: SwitchCounters,
    pub loop_stats: LoopStats,
    /// Per port (by name, "underlay" for the underlay): receive and transmit queue counters.
    pub queues: Vec<(String, QueueStats, QueueStats)>,
    /// Per VNI with services: tracked flows and conntrack counters.
    pub conntrack: Vec<(Vni, usize, ConnTrackCounters)>,
    /// Per VNI and backend: tracked flows (refreshed every few seconds: a table walk).
    pub backend_flows: Vec<(Vni, std::net::SocketAddr, usize)>,
}

/// The running configuration: the file as loaded, what it became, and the port numbers.
pub struct Running {
    pub file: File,
    pub config: Config,
    pub ids: PortIds,
    pub host: HostFacts,
}

/// What every thread shares.
pub struct Shared {
    pub switch: Switch,
    pub path: PathBuf,
    pub running: Mutex<Running>,
    pub snapshots: Mutex<Vec<Snapshot>>,
    pub started: WallClock,
}

impl Shared {
    /// The switch's clock: nanoseconds since the program started.
    pub fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Every worker's snapshot.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Checks a new file and translates it, changing nothing: what [`Shared::commit`] then
    /// applies. Refuses what only a restart can change (the forwarding table's bounds, the
    /// load balancer's settings).
    pub fn prepare(&self, file: File) -> Result<Prepared, String> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ids = running.ids.clone();
        let mut config = file
            .to_config(&running.host, &mut ids)
            .map_err(|e| e.to_string())?;
        // The hash seeds were drawn at start; the file does not carry them.
        config.switch.fdb.hash_seed = running.config.switch.fdb.hash_seed;
        config.switch.lb.conntrack.hash_seed = running.config.switch.lb.conntrack.hash_seed;
        if config.switch.fdb != running.config.switch.fdb {
            return Err("switch.fdb_capacity cannot change while the switch runs".into());
        }
        if config.switch.lb != running.config.switch.lb {
            return Err("switch.workers cannot change while the switch runs".into());
        }
        let ports_changed = config.ports != running.config.ports
            || file.underlay.interface != running.file.underlay.interface
            || file.underlay.backend != running.file.underlay.backend
            || file.underlay.local_ip != running.file.underlay.local_ip
            || file.underlay.udp_port != running.file.underlay.udp_port;
        Ok(Prepared {
            setup: Setup {
                file: file.clone(),
                bindings: config.ports.clone(),
                local_mac: config.switch.underlay.local_mac,
            },
            file,
            config,
            ids,
            ports_changed,
        })
    }

    /// Gives a prepared configuration to the switch; on success it is the running one.
    /// Returns a line per service whose Maglev table moved.
    pub fn commit(&self, prepared: Prepared) -> Result<Vec<String>, String> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let changes = self
            .switch
            .reconfigure(prepared.config.switch.clone())
            .map_err(|e| e.to_string())?;
        let lines = changes
            .iter()
            .map(|c| {
                format!(
                    "service {} in VNI {}: {} of {} slots moved",
                    c.key, c.vni, c.disruption.slots_moved, c.disruption.table_size
                )
            })
            .collect();
        *running = Running {
            file: prepared.file,
            config: prepared.config,
            ids: prepared.ids,
            host: running.host.clone(),
        };
        Ok(lines)
    }

    /// [`Shared::prepare`] then [`Shared::commit`], for changes that keep the ports (the
    /// control socket's): refused if the ports would change.
    pub fn apply(&self, file: File) -> Result<Vec<String>, String> {
        let prepared = self.prepare(file)?;
        if prepared.ports_changed {
            return Err("port changes need a reload of the file (SIGHUP)".into());
        }
        self.commit(prepared)
    }

    /// What the workers of the running configuration open.
    fn setup(&self) -> Setup {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        Setup {
            file: running.file.clone(),
            bindings: running.config.ports.clone(),
            local_mac: running.config.switch.underlay.local_mac,
        }
    }
}

/// A checked configuration not applied yet.
pub struct Prepared {
    setup: Setup,
    file: File,
    config: Config,
    ids: PortIds,
    ports_changed: bool,
}

/// What a generation of workers opens: the underlay and the ports.
#[derive(Clone)]
struct Setup {
    file: File,
    bindings: Vec<PortBinding>,
    local_mac: EthernetAddress,
}

/// Reads the interface's MAC, MTU and (with `ip`) the prefix length of `local_ip` on it.
fn host_facts(interface: &str, local_ip: std::net::IpAddr) -> HostFacts {
    let sys = |what: &str| std::fs::read_to_string(format!("/sys/class/net/{interface}/{what}"));
    let underlay_mac = sys("address")
        .ok()
        .and_then(|text| config::parse_mac(text.trim()));
    let underlay_mtu = sys("mtu").ok().and_then(|text| text.trim().parse().ok());
    let underlay_prefix_len = std::process::Command::new("ip")
        .args(["-o", "addr", "show", "dev", interface])
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split_whitespace()
                .filter_map(|word| word.split_once('/'))
                .find(|(ip, _)| ip.parse() == Ok(local_ip))
                .and_then(|(_, len)| len.parse().ok())
        });
    HostFacts {
        underlay_mac: underlay_mac.filter(|m: &EthernetAddress| m.is_unicast()),
        underlay_mtu,
        underlay_prefix_len,
    }
}

/// A random 64-bit seed (for hash tables an attacker must not predict).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(WallClock::now().elapsed().as_nanos());
    hasher.finish()
}

/// Runs the switch described by the file at `path` until SIGINT or SIGTERM.
pub fn run(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let host = host_facts(&file.underlay.interface, file.underlay.local_ip);
    let mut ids = PortIds::default();
    let mut config = file
        .to_config(&host, &mut ids)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    config.switch.fdb.hash_seed = random_seed();
    config.switch.lb.conntrack.hash_seed = random_seed();
    let switch = Switch::new(config.switch.clone()).map_err(|e| e.to_string())?;
    let workers = file.switch.workers;
    if workers > 1 && !file.service.is_empty() {
        warn!(
            workers,
            "services with more than one worker: the kernel's fanout may hand a connection's \
             replies to another worker than its requests, which cannot translate them; \
             use workers = 1 with services"
        );
    }
    let shared = Arc::new(Shared {
        switch,
        path: path.to_owned(),
        running: Mutex::new(Running {
            file: file.clone(),
            config,
            ids,
            host,
        }),
        snapshots: Mutex::new(vec![Snapshot::default(); workers]),
        started: WallClock::now(),
    });

    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(|e| e.to_string())?;

    if let Some(socket) = &file.switch.control_socket {
        crate::control::serve(Arc::clone(&shared), socket.clone(), Arc::clone(&stop))
            .map_err(|e| format!("control socket {}: {e}", socket.display()))?;
        info!(socket = %socket.display(), "control socket listening");
    }
    if let Some(listen) = file.switch.metrics_listen {
        crate::metrics::serve(Arc::clone(&shared), listen, Arc::clone(&stop))
            .map_err(|e| format!("metrics on {listen}: {e}"))?;
        info!(%listen, "metrics listening");
    }

    let mut generation = Generation::start(
        &shared,
        &shared.setup(),
        (0..workers).map(|_| None).collect(),
    )
    .map_err(|(e, _)| e)?;
    info!(
        workers,
        config = %path.display(),
        "running: {} ports, underlay {} ({})",
        generation.port_count,
        file.underlay.interface,
        file.underlay.local_ip
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if reload.swap(false, Ordering::Relaxed) {
            generation = reload_file(&shared, generation)?;
        }
    }
    info!("stopping");
    generation.stop();
    if let Some(socket) = &file.switch.control_socket {
        let _ = std::fs::remove_file(socket);
    }
    Ok(())
}

/// SIGHUP: reads the file again and applies it. When its ports differ, the workers stop and
/// start again on the new ports with their state; if a new port cannot be opened, the old
/// ports are opened again and the file is refused. A refused file leaves everything as it
/// was (logged); only failing to reopen the old ports ends the program.
fn reload_file(shared: &Arc<Shared>, generation: Generation) -> Result<Generation, String> {
    let prepared = std::fs::read_to_string(&shared.path)
        .map_err(|e| e.to_string())
        .and_then(|text| config::parse(&text).map_err(|e| e.to_string()))
        .and_then(|file| shared.prepare(file));
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            error!("reload refused, running configuration kept: {e}");
            return Ok(generation);
        }
    };
    let log = |lines: Vec<String>| {
        info!("configuration reloaded");
        for line in lines {
            info!("{line}");
        }
    };
    if !prepared.ports_changed {
        match shared.commit(prepared) {
            Ok(lines) => log(lines),
            Err(e) => error!("reload refused, running configuration kept: {e}"),
        }
        return Ok(generation);
    }
    info!("ports changed: restarting the workers on the new ports (their state is kept)");
    let old = shared.setup();
    let workers = generation.stop().into_iter().map(Some).collect();
    let restart_old = |workers: Vec<Option<Worker>>| {
        Generation::start(shared, &old, workers)
            .map_err(|(e, _)| format!("cannot reopen the previous ports either: {e}"))
    };
    match Generation::start(shared, &prepared.setup.clone(), workers) {
        Ok(new) => match shared.commit(prepared) {
            Ok(lines) => {
                log(lines);
                Ok(new)
            }
            Err(e) => {
                error!("reload refused, running configuration kept: {e}");
                restart_old(new.stop().into_iter().map(Some).collect())
            }
        },
        Err((e, workers)) => {
            error!("reload refused, running configuration kept: {e}");
            restart_old(workers)
        }
    }
}

/// The worker threads of one set of ports.
struct Generation {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Option<Worker>>>,
    _guard: Option<UnderlayGuard>,
    port_count: usize,
}

impl Generation {
    /// Opens every port for every worker, then starts the threads; `workers[i]` is worker
    /// i's state from a previous generation, if any. On an error nothing runs and the
    /// workers are given back.
    #[allow(clippy::type_complexity)]
    fn start(
        shared: &Arc<Shared>,
        setup: &Setup,
        workers: Vec<Option<Worker>>,
    ) -> Result<Generation, (String, Vec<Option<Worker>>)> {
        match open_all(setup, workers.len()) {
            Ok((guard, ports)) => {
                let stop = Arc::new(AtomicBool::new(false));
                let mut threads = Vec::new();
                for (index, (previous, (ports, names))) in
                    workers.into_iter().zip(ports).enumerate()
                {
                    let worker = previous.unwrap_or_else(|| shared.switch.worker());
                    let shared = Arc::clone(shared);
                    let stop = Arc::clone(&stop);
                    let spawned = std::thread::Builder::new()
                        .name(format!("vswitch-worker-{index}"))
                        .spawn(move || worker_thread(&shared, index, worker, ports, names, &stop));
                    match spawned {
                        Ok(thread) => threads.push(thread),
                        Err(e) => error!("worker {index} could not start: {e}"),
                    }
                }
                Ok(Generation {
                    stop,
                    threads,
                    _guard: guard,
                    port_count: setup.bindings.len(),
                })
            }
            Err(e) => Err((e, workers)),
        }
    }

    /// Stops the threads and gives their workers back.
    fn stop(self) -> Vec<Worker> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .filter_map(|t| t.join().ok().flatten())
            .collect()
    }
}

/// Every worker's ports (with their names, the underlay first) and the underlay guard.
#[allow(clippy::type_complexity)]
fn open_all(
    setup: &Setup,
    count: usize,
) -> Result<(Option<UnderlayGuard>, Vec<(Vec<Port>, Vec<String>)>), String> {
    let file = &setup.file;
    let underlay = &file.underlay;
    let guard = match underlay.backend {
        BackendKind::AfPacket => Some(
            UnderlayGuard::bind(underlay.local_ip, underlay.udp_port).map_err(|e| e.to_string())?,
        ),
        BackendKind::IoUring => None,
    };
    let fanout_base = (std::process::id() as u16).wrapping_mul(31);
    let fanout = |n: usize| (count > 1).then(|| fanout_base.wrapping_add(n as u16));
    let underlays: Vec<Port> = match underlay.backend {
        BackendKind::AfPacket => (0..count)
            .map(|_| open_underlay(file, fanout(0)))
            .collect::<io::Result<_>>(),
        BackendKind::IoUring => crate::uring::open_underlays(file, setup.local_mac, count),
    }
    .map_err(|e| format!("underlay {}: {e}", underlay.interface))?;
    let mut all = Vec::new();
    for underlay_port in underlays {
        let mut ports = vec![underlay_port];
        let mut names = vec!["underlay".to_owned()];
        for (n, binding) in setup.bindings.iter().enumerate() {
            ports.push(
                open_port(binding, fanout(n + 1))
                    .map_err(|e| format!("port {} ({}): {e}", binding.name, binding.interface))?,
            );
            names.push(binding.name.clone());
        }
        all.push((ports, names));
    }
    Ok((guard, all))
}

fn af_packet(interface: &str, fanout: Option<u16>) -> AfPacketConfig {
    AfPacketConfig {
        fanout,
        // A TPACKET_V3 block reaches us when it is full or this old: at a trickle (a ping)
        // it is the latency of each hop through the switch, so the smallest the kernel takes.
        rx_block_timeout_ms: 1,
        ..AfPacketConfig::new(interface)
    }
}

fn open_port(binding: &PortBinding, fanout: Option<u16>) -> io::Result<Port> {
    let config = af_packet(&binding.interface, fanout);
    let rx = AfPacketRx::open(&config)?;
    let tx = AfPacketTx::open(&config)?;
    let ingress = Ingress::Port(binding.id);
    Ok(match &binding.capture {
        Some(path) => {
            let pcap = Pcap::create(path)?;
            Port::new(
                ingress,
                Box::new(CaptureRx::new(rx, pcap.clone())),
                Box::new(CaptureTx::new(tx, pcap)),
            )
        }
        None => Port::new(ingress, Box::new(rx), Box::new(tx)),
    })
}

fn open_underlay(file: &File, fanout: Option<u16>) -> io::Result<Port> {
    let config = AfPacketConfig {
        tx_udp_gso: file.underlay.udp_offloads.unwrap_or(true),
        ..af_packet(&file.underlay.interface, fanout)
    };
    Ok(Port::new(
        Ingress::Underlay,
        Box::new(AfPacketRx::open(&config)?),
        Box::new(AfPacketTx::open(&config)?),
    ))
}

fn worker_thread(
    shared: &Shared,
    index: usize,
    worker: Worker,
    ports: Vec<Port>,
    names: Vec<String>,
    stop: &AtomicBool,
) -> Option<Worker> {
    let fds: Vec<RawFd> = ports.iter().filter_map(|p| p.rx.poll_fd()).collect();
    let ingresses: Vec<Ingress> = ports.iter().map(|p| p.ingress).collect();
    let mut lp = WorkerLoop::new(&shared.switch, worker, ports, LoopConfig::default());
    let mut idle = 0u32;
    let mut next_publish = shared.now();
    let publish_every = switchyard::time::Duration::from_millis(250);
    let mut publishes = 0u64;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let now = shared.now();
        if now >= next_publish || stopping {
            next_publish = now.saturating_add(publish_every);
            // The per-backend walk of the connection table every 2 s, the rest every 250 ms.
            let walk = publishes.is_multiple_of(8) || stopping;
            publishes += 1;
            let snapshot = snapshot(&mut lp, &ingresses, &names, walk.then_some(now));
            if let Some(slot) = shared
                .snapshots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(index)
            {
                let backend_flows = if walk {
                    snapshot.backend_flows.clone()
                } else {
                    core::mem::take(&mut slot.backend_flows)
                };
                *slot = Snapshot {
                    backend_flows,
                    ..snapshot
                };
            }
        }
        if stopping {
            break;
        }
        if lp.step(now) > 0 {
            idle = 0;
        } else {
            idle = idle.saturating_add(1);
            if idle > 32 {
                wait_readable(&fds, Duration::from_millis(10));
            }
        }
    }
    let (worker, _ports) = lp.into_parts();
    Some(worker)
}

fn snapshot(
    lp: &mut WorkerLoop<'_>,
    ingresses: &[Ingress],
    names: &[String],
    walk_at: Option<Instant>,
) -> Snapshot {
    let queues = ingresses
        .iter()
        .zip(names)
        .map(|(&ingress, name)| {
            let rx = lp.rx_queue(ingress).map(|q| q.stats()).unwrap_or_default();
            let egress = match ingress {
                Ingress::Port(p) => switchyard::switch::Egress::Port(p),
                Ingress::Underlay => switchyard::switch::Egress::Underlay,
            };
            let tx = lp.tx_queue(egress).map(|q| q.stats()).unwrap_or_default();
            (name.clone(), rx, tx)
        })
        .collect();
    let worker = lp.worker();
    Snapshot {
        counters: worker.counters.clone(),
        loop_stats: lp.stats(),
        queues,
        conntrack: worker
            .lb_states()
            .map(|(vni, state)| (vni, state.conntrack.len(), state.conntrack.counters()))
            .collect(),
        backend_flows: match walk_at {
            Some(now) => worker
                .lb_states()
                .flat_map(|(vni, state)| {
                    state
                        .conntrack
                        .flows_per_backend(now)
                        .into_iter()
                        .map(move |(backend, flows)| (vni, backend, flows))
                })
                .collect(),
            None => Vec::new(),
        },
    }
}

/// The names of ports by number, for output.
pub fn port_names(shared: &Shared) -> BTreeMap<u32, String> {
    let running = shared
        .running
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    running
        .config
        .ports
        .iter()
        .map(|p| (p.id.0, p.name.clone()))
        .collect()
}
