//! Property tests of the load balancer's data path: random IPv4/IPv6 TCP/UDP packets are
//! translated on the way in, on the way back, and inside ICMP errors, and every checksum of
//! the result verifies with smoltcp; arbitrary bytes never make it panic.

mod lb_common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lb_common::*;
use proptest::prelude::*;
use smoltcp::wire::TcpControl;
use switchyard::lb::{
    Backend, ConnTrackConfig, Decision, LoadBalancer, Protocol, ServiceConfig, ServiceKey,
    TableSize, WorkerState,
};
use switchyard::time::Instant;

/// A random address of the family `ipv6`.
fn addr(ipv6: bool, bits: u128) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::from_bits(bits))
    } else {
        IpAddr::V4(Ipv4Addr::from_bits(bits as u32))
    }
}

#[derive(Debug, Clone)]
struct Case {
    ipv6: bool,
    tcp: bool,
    control: u8,
    zero_udp_checksum: bool,
    client: u128,
    client_port: u16,
    vip: u128,
    vip_port: u16,
    backends: Vec<(u128, u16)>,
    payload: Vec<u8>,
    reply_payload: Vec<u8>,
    quote_cut: usize,
    router: u128,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (any::<bool>(), any::<bool>(), 0u8..4, any::<bool>()),
        (any::<u128>(), any::<u16>(), any::<u128>(), any::<u16>()),
        prop::collection::vec((any::<u128>(), any::<u16>()), 1..6),
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(any::<u8>(), 0..300),
        (any::<usize>(), any::<u128>()),
    )
        .prop_map(
            |(
                (ipv6, tcp, control, zero_udp_checksum),
                (client, client_port, vip, vip_port),
                backends,
                payload,
                reply_payload,
                (quote_cut, router),
            )| Case {
                ipv6,
                tcp,
                control,
                zero_udp_checksum,
                client,
                client_port,
                vip,
                vip_port,
                backends,
                payload,
                reply_payload,
                quote_cut,
                router,
            },
        )
        // The VIP, the clients, the router and the backends must be distinct endpoints.
        .prop_filter("distinct addresses", |c| {
            let mut all: Vec<u128> = c.backends.iter().map(|b| b.0).collect();
            all.extend([c.client, c.vip, c.router]);
            let mask = if c.ipv6 { u128::MAX } else { 0xFFFF_FFFF };
            let mut masked: Vec<u128> = all.iter().map(|a| a & mask).collect();
            masked.sort_unstable();
            masked.dedup();
            masked.len() == all.len()
        })
}

fn packet(case: &Case, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    if case.tcp {
        let control = match case.control {
            0 => TcpControl::Syn,
            1 => TcpControl::None,
            2 => TcpControl::Fin,
            _ => TcpControl::Psh,
        };
        tcp(src, dst, control, case.control != 0, payload)
    } else {
        udp(src, dst, payload, case.zero_udp_checksum && !case.ipv6)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 512 }))]

    #[test]
    fn nat_keeps_every_checksum_valid(case in case()) {
        let client = SocketAddr::new(addr(case.ipv6, case.client), case.client_port);
        let vip = SocketAddr::new(addr(case.ipv6, case.vip), case.vip_port);
        let router = addr(case.ipv6, case.router);
        let protocol = if case.tcp { Protocol::Tcp } else { Protocol::Udp };
        let mut backends: Vec<Backend> = case
            .backends
            .iter()
            .map(|&(a, p)| Backend::new(SocketAddr::new(addr(case.ipv6, a), p)))
            .collect();
        backends.sort_by_key(|b| b.addr);
        backends.dedup_by_key(|b| b.addr);
        let mut lb = LoadBalancer::new();
        let key = ServiceKey::new(vip, protocol);
        lb.set_service(key, ServiceConfig {
            backends,
            table_size: TableSize::new(251).unwrap(),
            affinity: Default::default(),
        }).unwrap();
        let services = lb.snapshot();
        let mut state = WorkerState::new(ConnTrackConfig { capacity: 16, ..Default::default() });
        let now = Instant::from_secs(1);

        // In: DNAT to a backend.
        let original = packet(&case, client, vip, &case.payload);
        let steering = services.steering_hash(&original);
        prop_assert!(steering.is_some());
        let mut forward = original.clone();
        let backend = match services.process(&mut state, &mut forward, now) {
            Decision::Forward { backend } => backend.addr,
            other => panic!("{other:?}"),
        };
        prop_assert_eq!(verified_flow(&forward), (client, backend));
        if !case.tcp && case.zero_udp_checksum && !case.ipv6 {
            prop_assert_eq!(udp_checksum(&forward), 0);
        }
        // Only the addresses, ports and checksums changed: the lengths and the payload did not.
        prop_assert_eq!(forward.len(), original.len());
        let tail = case.payload.len();
        prop_assert_eq!(&forward[forward.len() - tail..], &original[original.len() - tail..]);

        // Back: the reply's source becomes the VIP again.
        let mut reply = packet(&case, backend, client, &case.reply_payload);
        // The dispatcher sends the reply to the worker of the flow.
        prop_assert_eq!(services.steering_hash(&reply), steering);
        prop_assert_eq!(
            services.process(&mut state, &mut reply, now),
            Decision::Reply { service: vip }
        );
        prop_assert_eq!(verified_flow(&reply), (vip, client));

        // An ICMP error from a router about the translated packet, quoting a random-length
        // prefix of it (at least the IP header and 8 bytes), goes back to the client about
        // the VIP.
        let header = if case.ipv6 { 40 } else { 20 };
        let cut = header + 8 + case.quote_cut % (forward.len() - header - 7);
        let mut error = icmp_error(router, client.ip(), &forward[..cut]);
        prop_assert_eq!(services.steering_hash(&error), steering);
        prop_assert_eq!(
            services.process(&mut state, &mut error, now),
            Decision::Reply { service: vip }
        );
        let e = verified_icmp(&error);
        prop_assert_eq!((e.outer_src, e.outer_dst), (router, client.ip()));
        prop_assert_eq!((e.quoted_src, e.quoted_dst), (client, vip));
        prop_assert_eq!(e.quote_whole, cut == forward.len());

        // The same error sent by the backend itself: the outer source becomes the VIP too.
        let mut error = icmp_error(backend.ip(), client.ip(), &forward[..cut]);
        prop_assert_eq!(
            services.process(&mut state, &mut error, now),
            Decision::Reply { service: vip }
        );
        let e = verified_icmp(&error);
        prop_assert_eq!((e.outer_src, e.outer_dst), (vip.ip(), client.ip()));
        prop_assert_eq!((e.quoted_src, e.quoted_dst), (client, vip));

        // The client's error about the (translated) reply goes to the backend.
        let cut = header + 8 + case.quote_cut % (reply.len() - header - 7);
        let mut error = icmp_error(client.ip(), vip.ip(), &reply[..cut]);
        prop_assert_eq!(services.steering_hash(&error), steering);
        match services.process(&mut state, &mut error, now) {
            Decision::Forward { backend: b } => prop_assert_eq!(b.addr, backend),
            other => panic!("{other:?}"),
        }
        let e = verified_icmp(&error);
        prop_assert_eq!((e.outer_src, e.outer_dst), (client.ip(), backend.ip()));
        prop_assert_eq!((e.quoted_src, e.quoted_dst), (backend, client));

        // Unrelated traffic is left alone.
        let mut other = packet(&case, router_sock(router), client, b"x");
        let before = other.clone();
        prop_assert_eq!(services.process(&mut state, &mut other, now), Decision::NotForUs);
        prop_assert_eq!(other, before);
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..120), v6 in any::<bool>()) {
        let (services, mut state) = fuzz_target();
        if let Some(first) = bytes.first_mut() {
            *first = (*first & 0x0F) | if v6 { 0x60 } else { 0x45 & 0xF0 };
        }
        let _ = services.process(&mut state, &mut bytes, Instant::from_secs(1));
        let _ = services.steering_hash(&bytes);
    }

    #[test]
    fn mutated_packets_never_panic(
        case in case(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let (services, mut state) = fuzz_target();
        let client = SocketAddr::new(addr(case.ipv6, case.client), case.client_port);
        let mut p = packet(&case, client, fuzz_vip(case.ipv6), &case.payload);
        let inner = p.clone();
        if case.control == 3 {
            p = icmp_error(addr(case.ipv6, case.router), client.ip(), &inner);
        }
        for (at, byte) in flips {
            let len = p.len();
            p[at % len] ^= byte;
        }
        let len = cut % (p.len() + 1);
        let _ = services.process(&mut state, &mut p[..len], Instant::from_secs(1));
        let _ = services.process(&mut state, &mut p, Instant::from_secs(1));
    }
}

fn router_sock(router: IpAddr) -> SocketAddr {
    SocketAddr::new(router, 9)
}

fn fuzz_vip(ipv6: bool) -> SocketAddr {
    if ipv6 {
        "[2001:db8::10]:80".parse().unwrap()
    } else {
        "198.51.100.10:80".parse().unwrap()
    }
}

/// Services on the fuzz VIPs (both families, both protocols), so that mutated packets reach
/// every path.
fn fuzz_target() -> (switchyard::lb::Services, WorkerState) {
    let mut lb = LoadBalancer::new();
    for ipv6 in [false, true] {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let backend: SocketAddr = if ipv6 {
                "[2001:db8::1:1]:8080".parse().unwrap()
            } else {
                "10.0.0.1:8080".parse().unwrap()
            };
            lb.set_service(
                ServiceKey::new(fuzz_vip(ipv6), protocol),
                ServiceConfig {
                    backends: vec![Backend::new(backend)],
                    table_size: TableSize::new(13).unwrap(),
                    affinity: Default::default(),
                },
            )
            .unwrap();
        }
    }
    (
        lb.snapshot(),
        WorkerState::new(ConnTrackConfig {
            capacity: 8,
            ..Default::default()
        }),
    )
}
