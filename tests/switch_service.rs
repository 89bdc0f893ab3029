//! A service VIP with three backends on three nodes of the in-memory cluster: the switch
//! answers ARP for the VIP, translates connections to backends chosen by Maglev, translates
//! the replies back on the client's node, and keeps a connection on its backend while another
//! backend is removed in the middle of a transfer.

mod sim;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use sim::pattern;
use sim::service::{
    host_ip, service_key, ServiceLab, BACKENDS, BACKEND_PORT, CLIENT, VIP, VIP_PORT,
};
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint};
use switchyard::lb::{FlowKey, Protocol};

const CONNECTIONS: u16 = 12;
const FIRST_PORT: u16 = 50000;

#[test]
fn service_spreads_connections_and_survives_a_backend_removal() {
    let mut lab = ServiceLab::new();

    // Twelve connections to the VIP from twelve client ports.
    let sockets: Vec<_> = (0..CONNECTIONS)
        .map(|i| lab.connect(FIRST_PORT + i))
        .collect();
    lab.run(200);
    let vip = IpEndpoint::new(IpAddress::Ipv4(VIP), VIP_PORT);
    let mut placed: BTreeMap<u16, usize> = BTreeMap::new();
    for (i, &socket) in sockets.iter().enumerate() {
        let port = FIRST_PORT + i as u16;
        let s = lab.hosts[CLIENT].tcp(socket);
        // The client talks to the VIP and nothing else: replies were translated back.
        assert_eq!(s.state(), tcp::State::Established, "connection from {port}");
        assert_eq!(s.remote_endpoint(), Some(vip));
        let (backend, _) = lab.backend_of(port).expect("a backend accepted it");
        placed.insert(port, backend);
    }
    // Maglev spreads them: every backend got some.
    for backend in BACKENDS {
        assert!(
            placed.values().any(|&b| b == backend),
            "backend {backend} got no connection: {placed:?}"
        );
    }
    // A long transfer on a connection whose backend is on another node, so that its replies
    // cross the underlay and are translated back on the client's node.
    let (&long_port, &long_backend) = placed
        .iter()
        .find(|(_, &b)| b != 1)
        .expect("a connection to a remote backend");
    let removed = *BACKENDS
        .iter()
        .find(|&&b| b != long_backend)
        .expect("another backend");
    let long = sockets[usize::from(long_port - FIRST_PORT)];
    let (_, server) = lab.backend_of(long_port).expect("placed above");
    let data = pattern(1 << 20, 5);
    let mut sent = 0;
    let mut received = Vec::with_capacity(data.len());
    let mut reports = None;
    for _ in 0..200_000 {
        {
            let s = lab.hosts[CLIENT].tcp(long);
            if s.can_send() && sent < data.len() {
                sent += s.send_slice(&data[sent..]).expect("send");
            }
        }
        {
            let s = lab.hosts[long_backend].tcp(server);
            while s.can_recv() {
                s.recv(|bytes| {
                    received.extend_from_slice(bytes);
                    (bytes.len(), ())
                })
                .expect("recv");
            }
        }
        if reports.is_none() && received.len() >= data.len() / 2 {
            // Halfway through: backend `removed` leaves the service on every node.
            reports = Some(lab.remove_backend(removed));
        }
        if received.len() == data.len() {
            break;
        }
        lab.run(1);
    }
    assert!(
        received == data,
        "{} of {} bytes arrived, or they differ",
        received.len(),
        data.len()
    );
    assert_eq!(
        lab.hosts[CLIENT].tcp(long).state(),
        tcp::State::Established,
        "the long connection survived the removal"
    );

    // Each node reported the same disruption: every slot of the removed backend (about a
    // third of 65537) moved to the two others; Maglev moves few slots between the backends
    // that stay (its disruption is near minimal, not minimal).
    let reports = reports.expect("the removal happened");
    let removed_name = format!("{}:{BACKEND_PORT}", host_ip(removed));
    for node in &reports {
        assert_eq!(node.len(), 1);
        let change = &node[0];
        assert_eq!(change.key, service_key());
        let disruption = &change.disruption;
        assert_eq!(disruption, &reports[0][0].disruption);
        let from_removed: u32 = disruption
            .moves
            .iter()
            .filter(|m| m.from.as_deref() == Some(removed_name.as_str()))
            .map(|m| m.slots)
            .sum();
        assert!(
            (65537 / 4..65537 / 2).contains(&from_removed),
            "{from_removed} slots of the removed backend moved"
        );
        assert!(
            disruption
                .moves
                .iter()
                .all(|m| m.to.as_deref() != Some(removed_name.as_str())),
            "{disruption:?}"
        );
        let between_others = disruption.slots_moved - from_removed;
        assert!(
            between_others < 65537 / 50,
            "{between_others} slots moved between remaining backends: {disruption:?}"
        );
    }

    // New connections after the removal never reach the removed backend.
    let before = placed.len() as u16;
    let new_sockets: Vec<_> = (0..CONNECTIONS)
        .map(|i| lab.connect(FIRST_PORT + before + i))
        .collect();
    lab.run(200);
    for (i, &socket) in new_sockets.iter().enumerate() {
        let port = FIRST_PORT + before + i as u16;
        assert_eq!(
            lab.hosts[CLIENT].tcp(socket).state(),
            tcp::State::Established
        );
        let (backend, _) = lab.backend_of(port).expect("a backend accepted it");
        assert_ne!(
            backend, removed,
            "connection from {port} went to the removed backend"
        );
    }

    assert_eq!(lab.cluster.lost, 0);
    for node in &lab.cluster.nodes {
        let counters = &node.worker.counters;
        assert_eq!(counters.dropped.total(), 0, "{:?}", counters.dropped);
    }
    // The client's node translated every connection (24 SYNs, each a conntrack miss) and
    // still tracks the long one to its backend; the backends' nodes translated nothing.
    let now = lab.clock.instant();
    let (_, state) = lab.cluster.nodes[0]
        .worker
        .lb_states()
        .next()
        .expect("the VNI has a load balancer");
    assert_eq!(
        state.conntrack.counters().misses_syn,
        2 * u64::from(CONNECTIONS)
    );
    let flow = FlowKey::new(
        Protocol::Tcp,
        SocketAddr::new(IpAddr::V4(host_ip(CLIENT)), long_port),
        SocketAddr::new(IpAddr::V4(VIP), VIP_PORT),
    )
    .expect("one family");
    assert_eq!(
        state.conntrack.backend_of(&flow, now),
        Some(SocketAddr::new(
            IpAddr::V4(host_ip(long_backend)),
            BACKEND_PORT
        ))
    );
    // Per backend, as metrics show it: every connection is tracked, on the backend it went
    // to (the removed backend's flows stay tracked until they move or expire).
    let per_backend = state.conntrack.flows_per_backend(now);
    assert_eq!(
        per_backend.values().sum::<usize>(),
        2 * usize::from(CONNECTIONS)
    );
    for (backend, flows) in &per_backend {
        let host = BACKENDS
            .iter()
            .find(|&&b| IpAddr::V4(host_ip(b)) == backend.ip())
            .expect("a backend of the service");
        let expected = placed.values().filter(|&&b| b == *host).count();
        assert!(
            *flows >= expected,
            "{backend}: {flows} flows, {expected} placed before"
        );
    }
    for node in &lab.cluster.nodes[1..] {
        let (_, state) = node.worker.lb_states().next().expect("a load balancer");
        assert_eq!(state.conntrack.counters().misses, 0);
    }
}
