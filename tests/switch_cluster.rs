//! The switch on an in-memory cluster: smoltcp hosts on access ports of switchyard nodes
//! joined by an in-memory underlay.

mod sim;

use std::net::{IpAddr, Ipv4Addr};

use sim::cluster::{Cluster, Node};
use sim::{pattern, step, tcp_transfer, Clock, Host, TcpFlow};
use smoltcp::wire::{IpAddress, IpCidr, Ipv4Address};
use switchyard::wire::EthernetAddress;
use switchyard::{PortId, Vni};

const VNI: u32 = 100;

fn node_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, n))
}

fn node_mac(n: u8) -> EthernetAddress {
    EthernetAddress([0x02, 0xee, 0, 0, 0, n])
}

/// Node `n` (1-based) of `count`, with host ports 1..=hosts, all in VNI 100, flooding to
/// every other node.
fn node(n: u8, count: u8, hosts: &[usize]) -> Node {
    node_on(node_ip, n, count, hosts)
}

/// The same on an IPv6 underlay.
fn node6(n: u8, count: u8, hosts: &[usize]) -> Node {
    node_on(
        |n| {
            IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                0,
                u16::from(n),
            ))
        },
        n,
        count,
        hosts,
    )
}

fn node_on(node_ip: fn(u8) -> IpAddr, n: u8, count: u8, hosts: &[usize]) -> Node {
    let vni = Vni::new(VNI).unwrap();
    let others: Vec<IpAddr> = (1..=count).filter(|&m| m != n).map(node_ip).collect();
    let ports: Vec<(PortId, usize)> = hosts
        .iter()
        .enumerate()
        .map(|(i, &host)| (PortId(i as u32 + 1), host))
        .collect();
    Node::new(
        sim::cluster::node_config(node_ip(n), node_mac(n), vni, others, &ports),
        ports,
    )
}

/// A host with the overlay MTU that Flannel and Calico give pods: 1450, the underlay's 1500
/// minus VXLAN's 50 bytes over IPv4.
fn host(index: u8, clock: Clock) -> Host {
    Host::with_mtu(
        "host",
        [0x02, 0, 0, 0, 0x01, index],
        IpCidr::new(IpAddress::Ipv4(host_ip(index)), 24),
        1450,
        clock,
    )
}

fn host_ip(index: u8) -> Ipv4Address {
    Ipv4Address::new(198, 19, 1, 10 + index)
}

/// Two nodes, one host each.
fn two_nodes(clock: Clock) -> (Cluster, Vec<Host>) {
    let cluster = Cluster {
        nodes: vec![node(1, 2, &[0]), node(2, 2, &[1])],
        lost: 0,
    };
    (cluster, vec![host(0, clock), host(1, clock)])
}

#[test]
fn arp_and_ping_across_nodes() {
    let mut clock = Clock::default();
    let (mut cluster, mut hosts) = two_nodes(clock);
    let icmp = hosts[0].icmp_socket(7);
    hosts[0].ping(icmp, 7, 1, host_ip(1), b"across the overlay");
    let mut network = |from: usize, frame: Vec<u8>, clock: &mut Clock| {
        cluster.carry(from, frame, clock.instant())
    };
    for _ in 0..20 {
        step(&mut hosts, &mut clock, &mut network);
    }
    assert_eq!(
        hosts[0].echo_replies(icmp),
        [(
            IpAddress::Ipv4(host_ip(1)),
            1,
            b"across the overlay".to_vec()
        )]
    );
    // Each node learned the far host behind the other node, the near one on its port.
    let vni = Vni::new(VNI).unwrap();
    let far = EthernetAddress(hosts[1].mac.0);
    assert_eq!(
        cluster.nodes[0].switch.fdb().lookup(vni, far),
        Some(switchyard::fdb::Destination::Vtep(node_ip(2)))
    );
    assert_eq!(cluster.lost, 0);
}

#[test]
fn tcp_megabyte_across_nodes_byte_exact() {
    let mut clock = Clock::default();
    let (mut cluster, mut hosts) = two_nodes(clock);
    let data = pattern(1 << 20, 11);
    let received = tcp_transfer(
        &mut hosts,
        TcpFlow {
            client: 0,
            server: 1,
            port: 5001,
        },
        &data,
        &mut clock,
        100_000,
        |from, frame, clock| cluster.carry(from, frame, clock.instant()),
    );
    assert!(
        received == data,
        "the received bytes differ from the sent ones"
    );
    let node = &cluster.nodes[0].worker.counters;
    assert_eq!(node.dropped.total(), 0, "{:?}", node.dropped);
}

/// A host that ignores the overlay's MTU sends a 1500-byte packet with DF set (smoltcp sets DF
/// on every IPv4 packet): the first node cannot encapsulate it (1550 bytes on a 1500-byte
/// underlay), drops it and sends the host ICMP "fragmentation needed" with the MTU that fits,
/// 1450, which the host's stack receives and verifies.
#[test]
fn oversized_frame_gets_fragmentation_needed() {
    use smoltcp::socket::{raw, udp};
    use smoltcp::wire::{IpProtocol, IpVersion, Ipv4Packet};

    let mut clock = Clock::default();
    let mut cluster = Cluster {
        nodes: vec![node(1, 2, &[0]), node(2, 2, &[1])],
        lost: 0,
    };
    let mut hosts = vec![
        Host::new(
            "a",
            [0x02, 0, 0, 0, 0x01, 0],
            IpCidr::new(IpAddress::Ipv4(host_ip(0)), 24),
            clock,
        ),
        Host::new(
            "b",
            [0x02, 0, 0, 0, 0x01, 1],
            IpCidr::new(IpAddress::Ipv4(host_ip(1)), 24),
            clock,
        ),
    ];
    let udp = hosts[0].sockets.add(udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
    ));
    let raw = hosts[0].sockets.add(raw::Socket::new(
        Some(IpVersion::Ipv4),
        Some(IpProtocol::Icmp),
        raw::PacketBuffer::new(vec![raw::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        raw::PacketBuffer::new(vec![raw::PacketMetadata::EMPTY; 4], vec![0; 4096]),
    ));
    {
        let socket = hosts[0].sockets.get_mut::<udp::Socket>(udp);
        socket.bind(5000).unwrap();
        socket
            .send_slice(&[0x5a; 1472], (IpAddress::Ipv4(host_ip(1)), 5001))
            .unwrap();
    }
    let mut network = |from: usize, frame: Vec<u8>, clock: &mut Clock| {
        cluster.carry(from, frame, clock.instant())
    };
    for _ in 0..20 {
        step(&mut hosts, &mut clock, &mut network);
    }
    let socket = hosts[0].sockets.get_mut::<raw::Socket>(raw);
    let packet = socket
        .recv()
        .expect("an ICMP error reached the host")
        .to_vec();
    let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.dst_addr(), host_ip(0));
    let icmp = ip.payload();
    assert_eq!(
        (icmp[0], icmp[1]),
        (3, 4),
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1450, "next-hop MTU");
    let icmp_packet = smoltcp::wire::Icmpv4Packet::new_checked(icmp).unwrap();
    assert!(icmp_packet.verify_checksum());
    let node = &cluster.nodes[0].worker.counters;
    assert_eq!(node.dropped.get(switchyard::DropReason::MtuExceeded), 1);
    assert_eq!(node.generated, 1);
}

/// IPv6 end to end: IPv6 hosts (neighbour discovery instead of ARP) on an IPv6 underlay,
/// whose UDP checksums are computed and verified. Pod MTU 1430: 1500 minus VXLAN's 70 bytes
/// over IPv6.
#[test]
fn tcp_over_ipv6_hosts_and_ipv6_underlay() {
    let mut clock = Clock::default();
    let mut cluster = Cluster {
        nodes: vec![node6(1, 2, &[0]), node6(2, 2, &[1])],
        lost: 0,
    };
    let ip6 = |i: u16| {
        IpCidr::new(
            IpAddress::Ipv6(std::net::Ipv6Addr::new(
                0x2001,
                0xdb8,
                1,
                0,
                0,
                0,
                0,
                0x10 + i,
            )),
            64,
        )
    };
    let mut hosts = vec![
        Host::with_mtu("a", [0x02, 0, 0, 0, 0x06, 0], ip6(0), 1430, clock),
        Host::with_mtu("b", [0x02, 0, 0, 0, 0x06, 1], ip6(1), 1430, clock),
    ];
    let data = pattern(256 << 10, 3);
    let received = tcp_transfer(
        &mut hosts,
        TcpFlow {
            client: 0,
            server: 1,
            port: 5001,
        },
        &data,
        &mut clock,
        100_000,
        |from, frame, clock| cluster.carry(from, frame, clock.instant()),
    );
    assert!(
        received == data,
        "the received bytes differ from the sent ones"
    );
    for node in &cluster.nodes {
        assert_eq!(
            node.worker.counters.dropped.total(),
            0,
            "{:?}",
            node.worker.counters.dropped
        );
    }
    assert_eq!(cluster.lost, 0);
}
