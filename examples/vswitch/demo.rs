//! `vswitch demo`: switchyard nodes joined by an in-memory underlay, smoltcp hosts on their
//! access ports, a fake clock. No privileges, no network: it runs anywhere and ends by itself.
//!
//! It prints what happens: ARP and pings between hosts on different nodes, a 1 MiB TCP
//! transfer across the overlay (checked byte for byte), what each node learned, and each
//! node's counters, whose invariant (received = forwarded + dropped + consumed) is checked
//! after every batch. Then a service: a VIP with three backends on three nodes, connections
//! spread over them by Maglev, a transfer that survives the removal of another backend, and
//! what each change moved.

#[path = "../../tests/sim/mod.rs"]
mod sim;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant as WallClock;

use sim::cluster::{Cluster, Node};
use sim::{pattern, step, tcp_transfer, Clock, Host, TcpFlow};
use smoltcp::wire::{IpAddress, IpCidr, Ipv4Address};
use switchyard::wire::EthernetAddress;
use switchyard::{PortId, Vni};

const NODES: u8 = 3;
const HOSTS_PER_NODE: u8 = 2;

fn node_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, n))
}

fn host_ip(h: u8) -> Ipv4Address {
    Ipv4Address::new(198, 19, 1, 10 + h)
}

fn node(n: u8) -> Node {
    let vni = Vni::new(100).expect("a 24-bit VNI");
    let hosts: Vec<usize> = (0..HOSTS_PER_NODE)
        .map(|i| usize::from((n - 1) * HOSTS_PER_NODE + i))
        .collect();
    let ports: Vec<(PortId, usize)> = hosts
        .iter()
        .enumerate()
        .map(|(i, &h)| (PortId(i as u32 + 1), h))
        .collect();
    let others = (1..=NODES).filter(|&m| m != n).map(node_ip).collect();
    let mac = EthernetAddress([0x02, 0xee, 0, 0, 0, n]);
    Node::new(
        sim::cluster::node_config(node_ip(n), mac, vni, others, &ports),
        ports,
    )
}

/// Runs the demo; the process exits with 1 if anything did not work.
pub fn main() {
    let started = WallClock::now();
    let mut clock = Clock::default();
    let mut cluster = Cluster {
        nodes: (1..=NODES).map(node).collect(),
        lost: 0,
    };
    let mut hosts: Vec<Host> = (0..NODES * HOSTS_PER_NODE)
        .map(|h| {
            Host::with_mtu(
                "host",
                [0x02, 0, 0, 0, 0x01, h],
                IpCidr::new(IpAddress::Ipv4(host_ip(h)), 24),
                1450,
                clock,
            )
        })
        .collect();
    println!(
        "switchyard cluster demo: {NODES} nodes on an in-memory underlay (198.18.0.1-{NODES}), \
         {} hosts on VNI 100 (198.19.1.10-{}), pod MTU 1450",
        hosts.len(),
        10 + hosts.len() - 1
    );

    // Every host pings the host after it (on another node for odd ones).
    println!("\n== ARP and ping");
    let sockets: Vec<_> = (0..hosts.len())
        .map(|h| {
            let socket = hosts[h].icmp_socket(0x100 + h as u16);
            let target = host_ip(((h + 1) % hosts.len()) as u8);
            hosts[h].ping(socket, 0x100 + h as u16, 1, target, b"switchyard");
            socket
        })
        .collect();
    let mut network = |from: usize, frame: Vec<u8>, clock: &mut Clock| {
        cluster.carry(from, frame, clock.instant())
    };
    for _ in 0..50 {
        step(&mut hosts, &mut clock, &mut network);
    }
    for (h, &socket) in sockets.iter().enumerate() {
        let replies = hosts[h].echo_replies(socket);
        let target = host_ip(((h + 1) % hosts.len()) as u8);
        match replies.first() {
            Some((from, seq, _)) => println!(
                "  {} -> {target}: reply from {from} seq {seq}",
                host_ip(h as u8)
            ),
            None => println!("  {} -> {target}: NO REPLY", host_ip(h as u8)),
        }
    }

    println!(
        "\n== TCP: 1 MiB from {} (node 1) to {} (node 3)",
        host_ip(0),
        host_ip(5)
    );
    let data = pattern(1 << 20, 42);
    let t0 = clock.0;
    let received = tcp_transfer(
        &mut hosts,
        TcpFlow {
            client: 0,
            server: 5,
            port: 5001,
        },
        &data,
        &mut clock,
        200_000,
        |from, frame, clock| cluster.carry(from, frame, clock.instant()),
    );
    println!(
        "  {} bytes received, byte-exact: {}; {} ms of simulated time",
        received.len(),
        received == data,
        clock.0 - t0
    );

    println!("\n== what the nodes learned and counted");
    let vni = Vni::new(100).expect("a 24-bit VNI");
    for (n, node) in cluster.nodes.iter().enumerate() {
        let c = &node.worker.counters;
        println!(
            "  node {} ({}): received {} = forwarded {} + dropped {} + consumed {}; sent {}",
            n + 1,
            node.underlay_ip,
            c.received,
            c.forwarded,
            c.dropped.total(),
            c.consumed,
            c.sent
        );
        let mut entries = node.switch.fdb().entries(clock.instant());
        entries.sort_by_key(|e| e.mac.0);
        for entry in entries.iter().filter(|e| e.vni == vni) {
            println!("    fdb {} -> {}", entry.mac, entry.destination);
        }
    }
    println!("\nunderlay frames lost: {}", cluster.lost);
    let service_ok = service_demo();
    println!(
        "\ndone in {:.2} s of wall time",
        started.elapsed().as_secs_f64()
    );
    if received != data || cluster.lost != 0 || !service_ok {
        std::process::exit(1);
    }
}

/// The service part; true if everything worked.
fn service_demo() -> bool {
    use sim::service::{host_ip, ServiceLab, BACKENDS, CLIENT, VIP, VIP_PORT};
    use smoltcp::socket::tcp;

    let mut lab = ServiceLab::new();
    println!(
        "\n== service {VIP}:{VIP_PORT}/tcp -> backends {}, {}, {} (port 8080) on nodes 1, 2, 3",
        host_ip(1),
        host_ip(2),
        host_ip(3)
    );
    println!(
        "  client {} on node 1 resolves the VIP: the switch answers with its virtual MAC",
        host_ip(CLIENT)
    );
    let first_port = 40000;
    let connections = 30u16;
    let sockets: Vec<_> = (0..connections)
        .map(|i| lab.connect(first_port + i))
        .collect();
    lab.run(300);
    let mut per_backend = [0usize; 4];
    let mut placed = Vec::new();
    for (i, &socket) in sockets.iter().enumerate() {
        let port = first_port + i as u16;
        let established = lab.hosts[CLIENT].tcp(socket).state() == tcp::State::Established;
        if let (true, Some((backend, _))) = (established, lab.backend_of(port)) {
            per_backend[backend] += 1;
            placed.push((port, backend));
        }
    }
    println!("  {connections} connections to the VIP, spread by Maglev:");
    for backend in BACKENDS {
        println!(
            "    {}: {} connections",
            host_ip(backend),
            per_backend[backend]
        );
    }

    // A 1 MiB transfer on a connection to a remote backend; halfway, another backend leaves.
    let Some(&(long_port, long_backend)) = placed.iter().find(|&&(_, b)| b != 1) else {
        println!("  no connection reached a remote backend");
        return false;
    };
    let Some(&removed) = BACKENDS.iter().find(|&&b| b != long_backend) else {
        return false;
    };
    let long = sockets[usize::from(long_port - first_port)];
    let Some((_, server)) = lab.backend_of(long_port) else {
        return false;
    };
    println!(
        "  1 MiB on the connection from port {long_port} (backend {}); halfway, backend {} is removed",
        host_ip(long_backend),
        host_ip(removed)
    );
    let data = pattern(1 << 20, 7);
    let (mut sent, mut received) = (0, Vec::with_capacity(data.len()));
    let mut removed_yet = false;
    for _ in 0..200_000 {
        let s = lab.hosts[CLIENT].tcp(long);
        if s.can_send() && sent < data.len() {
            sent += s.send_slice(&data[sent..]).unwrap_or(0);
        }
        let s = lab.hosts[long_backend].tcp(server);
        while s.can_recv() {
            let _ = s.recv(|bytes| {
                received.extend_from_slice(bytes);
                (bytes.len(), ())
            });
        }
        if !removed_yet && received.len() >= data.len() / 2 {
            removed_yet = true;
            let reports = lab.remove_backend(removed);
            if let Some(change) = reports.first().and_then(|r| r.first()) {
                println!(
                    "    node 1 reports: {} of {} Maglev slots moved",
                    change.disruption.slots_moved, change.disruption.table_size
                );
                for m in &change.disruption.moves {
                    println!(
                        "      {} -> {}: {} slots",
                        m.from.as_deref().unwrap_or("-"),
                        m.to.as_deref().unwrap_or("-"),
                        m.slots
                    );
                }
            }
        }
        if received.len() == data.len() {
            break;
        }
        lab.run(1);
    }
    let intact = received == data;
    println!(
        "  {} bytes received, byte-exact: {intact}; the connection is {:?}",
        received.len(),
        lab.hosts[CLIENT].tcp(long).state()
    );

    println!("\n== service counters");
    for (n, node) in lab.cluster.nodes.iter().enumerate() {
        let c = &node.worker.counters;
        print!(
            "  node {}: received {} = forwarded {} + dropped {} + consumed {}",
            n + 1,
            c.received,
            c.forwarded,
            c.dropped.total(),
            c.consumed
        );
        for (_, state) in node.worker.lb_states() {
            let ct = state.conntrack.counters();
            print!(
                "; conntrack {} flows, {} hits, {} SYN misses",
                state.conntrack.len(),
                ct.hits,
                ct.misses_syn
            );
        }
        println!();
    }
    intact && lab.cluster.lost == 0
}
