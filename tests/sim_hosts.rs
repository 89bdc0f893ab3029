//! The simulated hosts on a plain cable (no switch): ARP, ping and a 1 MB TCP transfer. This
//! checks the harness that the switch scenarios use, and is their baseline: what two hosts do
//! on one wire, they must do across switchyard nodes.

mod sim;

use sim::{pattern, step, tcp_transfer, Clock, Host, TcpFlow};
use smoltcp::wire::{IpAddress, IpCidr, Ipv4Address};

const A_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x0a];
const B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x0b];
const A_IP: Ipv4Address = Ipv4Address::new(198, 18, 1, 10);
const B_IP: Ipv4Address = Ipv4Address::new(198, 18, 1, 11);

fn pair(clock: Clock) -> Vec<Host> {
    vec![
        Host::new("a", A_MAC, IpCidr::new(IpAddress::Ipv4(A_IP), 24), clock),
        Host::new("b", B_MAC, IpCidr::new(IpAddress::Ipv4(B_IP), 24), clock),
    ]
}

/// A cable: what one end sends, the other receives.
fn cable(from: usize, frame: Vec<u8>, _: &mut Clock) -> Vec<(usize, Vec<u8>)> {
    vec![(1 - from, frame)]
}

#[test]
fn arp_then_ping() {
    let mut clock = Clock::default();
    let mut hosts = pair(clock);
    let icmp = hosts[0].icmp_socket(0x1234);
    hosts[0].ping(icmp, 0x1234, 1, B_IP, b"switchyard");
    let mut ethertypes = Vec::new();
    let mut network = |from: usize, frame: Vec<u8>, clock: &mut Clock| {
        ethertypes.push((from, u16::from_be_bytes([frame[12], frame[13]])));
        cable(from, frame, clock)
    };
    for _ in 0..10 {
        step(&mut hosts, &mut clock, &mut network);
    }
    // A asked for B's MAC, B answered, then the echo request and reply.
    assert_eq!(
        ethertypes,
        [(0, 0x0806), (1, 0x0806), (0, 0x0800), (1, 0x0800)]
    );
    assert_eq!(
        hosts[0].echo_replies(icmp),
        [(IpAddress::Ipv4(B_IP), 1, b"switchyard".to_vec())]
    );
}

#[test]
fn tcp_megabyte_arrives_byte_exact() {
    let mut clock = Clock::default();
    let mut hosts = pair(clock);
    let data = pattern(1 << 20, 7);
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
        cable,
    );
    assert_eq!(received.len(), data.len());
    assert!(
        received == data,
        "the received bytes differ from the sent ones"
    );
}
