//! The AF_PACKET backend on veth pairs in network namespaces of its own (root only; skipped
//! loudly otherwise, and a failure under `CI=true`): frames both ways through the rings, a
//! burst of 100 000 frames below the ring's capacity with none lost, fanout between two
//! workers, the worker loop switching pings between two namespaces, and UDP GSO sends
//! (equal datagrams joined) that the peer's kernel delivers datagram by datagram.
//!
//! The peer of a ring port is the `recvmmsg`/`sendmmsg` port: different code (no rings) on
//! the same kernel, so a bug in the ring walk cannot hide behind the same bug on the other
//! side.
#![cfg(all(feature = "af-packet", target_os = "linux"))]

mod netns_lab;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netns_lab::{root_or_skip, Lab};
use switchyard::backend::af_packet::{self, AfPacketConfig, AfPacketRx, AfPacketTx};
use switchyard::backend::packet_mmsg::{self, MmsgRx, MmsgTx};
use switchyard::backend::{netns, LoopConfig, Port, RxQueue, TxQueue, WorkerLoop};
use switchyard::switch::{Ingress, Switch};
use switchyard::wire::EthernetAddress;
use switchyard::{PortId, Vni};

/// IEEE 802 local experimental ethertype: the test frames; nothing in the kernel answers it.
const TEST_ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// A test frame of `len` bytes carrying `seq`, from `src` to a MAC no interface has.
fn test_frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
    f[12..14].copy_from_slice(&TEST_ETHERTYPE);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[18..].iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    f
}

fn seq_of(frame: &[u8]) -> Option<u32> {
    (frame.get(12..14)? == TEST_ETHERTYPE)
        .then(|| u32::from_be_bytes(frame[14..18].try_into().unwrap()))
}

/// An IPv4/UDP frame of flow `flow` (its source port) carrying `seq`: fanout hashes on the
/// flow, so the frames of one flow reach one socket.
fn udp_frame(seq: u32, flow: u16) -> Vec<u8> {
    let builder =
        etherparse::PacketBuilder::ethernet2([0x02, 0, 0, 0, 0, 0xaa], [0x02, 0, 0, 0, 0, 0xbb])
            .ipv4([198, 18, 200, 1], [198, 18, 200, 2], 64)
            .udp(10_000 + flow, 9);
    let mut f = Vec::new();
    builder.write(&mut f, &seq.to_be_bytes()).unwrap();
    f
}

fn udp_of(frame: &[u8]) -> Option<(u16, u32)> {
    let p = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::TransportSlice::Udp(udp)) = p.transport else {
        return None;
    };
    if udp.destination_port() != 9 {
        return None;
    }
    let seq = u32::from_be_bytes(udp.payload().get(..4)?.try_into().ok()?);
    Some((udp.source_port() - 10_000, seq))
}

/// Receives until `done` says so or `timeout`, passing each frame's bytes to `take`.
fn receive(rx: &mut dyn RxQueue, timeout: Duration, mut take: impl FnMut(&[u8]) -> bool) {
    let deadline = Instant::now() + timeout;
    let mut frames = Vec::new();
    loop {
        let mut batch = switchyard::backend::recycle(std::mem::take(&mut frames));
        let n = rx.recv(&mut batch, 256).unwrap();
        let mut done = false;
        for f in &batch {
            done |= take(f);
        }
        frames = switchyard::backend::recycle(batch);
        rx.release();
        if done || Instant::now() > deadline {
            return;
        }
        if n == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Sends `frames` through `tx`, flushing every `batch` and retrying while the queue is
/// full; `pause` between batches paces the sender.
fn send_all(
    tx: &mut dyn TxQueue,
    frames: impl Iterator<Item = Vec<u8>>,
    batch: usize,
    pause: Duration,
) {
    let mut in_batch = 0;
    for f in frames {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tx.send(&f, &[]).unwrap() {
            let _ = tx.flush();
            assert!(Instant::now() < deadline, "TX queue stays full");
            std::thread::sleep(Duration::from_micros(100));
        }
        in_batch += 1;
        if in_batch == batch {
            flush_fully(tx);
            in_batch = 0;
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    }
    flush_fully(tx);
}

fn flush_fully(tx: &mut dyn TxQueue) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tx.flush() {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "flush keeps blocking");
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => panic!("flush: {e}"),
        }
    }
}

/// Sends `frames` on `tx` while a thread receives the test frames among them on `rx`.
fn exchange(
    tx: &mut dyn TxQueue,
    rx: &mut (dyn RxQueue + Send),
    frames: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            let mut got = Vec::new();
            receive(rx, Duration::from_secs(10), |f| {
                if seq_of(f).is_some() {
                    got.push(f.to_vec());
                }
                got.len() == frames.len()
            });
            got
        });
        // Paced: the receiving socket must keep up (the ring's frames come fast).
        send_all(tx, frames.iter().cloned(), 32, Duration::from_micros(300));
        receiver.join().unwrap()
    })
}

/// Two namespaces `a` and `b` joined by veth a0 - b0.
fn pair(tag: &str) -> (Lab, String, String) {
    let mut lab = Lab::new(tag);
    let a = lab.namespace("a", false);
    let b = lab.namespace("b", false);
    lab.veth(&a, "a0", &b, "b0");
    (lab, a, b)
}

fn ring_port(namespace: &str, config: AfPacketConfig) -> (AfPacketRx, AfPacketTx) {
    netns::run_in(namespace, || af_packet::open(&config))
        .unwrap()
        .unwrap()
}

fn mmsg_port(namespace: &str, interface: &str) -> (MmsgRx, MmsgTx) {
    netns::run_in(namespace, || {
        packet_mmsg::open(&AfPacketConfig::new(interface), 256)
    })
    .unwrap()
    .unwrap()
}

#[test]
fn ring_port_sends_and_receives_both_ways() {
    if !root_or_skip("ring_port_sends_and_receives_both_ways") {
        return;
    }
    let (lab, a, b) = pair("both");
    let (mut ring_rx, mut ring_tx) = ring_port(&a, AfPacketConfig::new("a0"));
    let (mut peer_rx, mut peer_tx) = mmsg_port(&b, "b0");
    let sizes = [60usize, 64, 128, 1000, 1514];
    let frames: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| test_frame(i, sizes[i as usize % sizes.len()]))
        .collect();

    // Ring TX -> peer, received as it is sent.
    let got = exchange(&mut ring_tx, &mut peer_rx, &frames);
    assert_eq!(
        got.len(),
        frames.len(),
        "frames the peer received from the ring"
    );
    assert!(
        got == frames,
        "the peer receives the ring's frames intact and in order"
    );
    assert_eq!(ring_tx.stats().frames, 1000);

    // Peer -> ring RX.
    let got = exchange(&mut peer_tx, &mut ring_rx, &frames);
    assert_eq!(
        got.len(),
        frames.len(),
        "frames the ring received from the peer"
    );
    assert!(
        got == frames,
        "the ring receives the peer's frames intact and in order"
    );
    let stats = ring_rx.stats();
    assert!(stats.frames >= 1000, "{stats:?}");
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.malformed, 0);
    // The veth saw them too.
    assert!(lab.counter(&a, "a0", "rx_packets") >= 1000);
}

#[test]
fn tx_ring_refuses_frames_above_the_mtu() {
    if !root_or_skip("tx_ring_refuses_frames_above_the_mtu") {
        return;
    }
    let (_lab, a, _b) = pair("mtu");
    let (_rx, mut tx) = ring_port(&a, AfPacketConfig::new("a0"));
    assert_eq!(tx.max_frame(), 1500 + 14 + 4);
    assert!(!tx.send(&test_frame(1, 1519), &[]).unwrap());
    assert!(tx.send(&test_frame(1, 1518), &[]).unwrap());
    tx.flush().unwrap();
    assert_eq!(tx.stats().malformed, 1);
}

/// A TX socket without a virtio-net header cannot carry offloads: it says so, and refuses a
/// frame that needs them rather than send it with a partial checksum.
#[test]
fn tx_ring_without_vnet_header_refuses_offloads() {
    if !root_or_skip("tx_ring_without_vnet_header_refuses_offloads") {
        return;
    }
    let (_lab, a, _b) = pair("novnet");
    let config = AfPacketConfig {
        tx_vnet_header: false,
        ..AfPacketConfig::new("a0")
    };
    let (_rx, mut tx) = ring_port(&a, config);
    assert!(!tx.accepts_offloads());
    let partial = switchyard::backend::FrameMeta {
        partial_checksum: Some(switchyard::backend::PartialChecksum {
            start: 34,
            offset: 16,
        }),
        ..Default::default()
    };
    assert!(!tx.send_offloaded(&udp_frame(1, 1), &[], &partial).unwrap());
    assert!(tx
        .send_offloaded(&udp_frame(2, 1), &[], &Default::default())
        .unwrap());
    tx.flush().unwrap();
    let stats = tx.stats();
    assert_eq!((stats.frames, stats.malformed), (1, 1));
    let (_rx, tx) = ring_port(&a, AfPacketConfig::new("a0"));
    assert!(tx.accepts_offloads());
}

/// 100 000 frames into a ring that holds them all, not read until the burst is over: every
/// one arrives, in order, and the kernel reports no drop (PACKET_STATISTICS).
#[test]
fn burst_of_100k_frames_below_the_ring_capacity_loses_none() {
    if !root_or_skip("burst_of_100k_frames_below_the_ring_capacity_loses_none") {
        return;
    }
    let (lab, a, b) = pair("burst");
    // 64-byte frames take 160 bytes of ring each (header, vnet header, alignment):
    // 128 blocks of 256 KiB hold ~200 000 of them.
    // Blocks are handed over when full, not after the usual 2 ms: a paced burst into a
    // ring nobody reads would otherwise fill it with part-full blocks.
    let config = AfPacketConfig {
        rx_block_count: 128,
        rx_block_timeout_ms: 1000,
        ..AfPacketConfig::new("a0")
    };
    let (mut ring_rx, _ring_tx) = ring_port(&a, config);
    let (_peer_rx, mut peer_tx) = mmsg_port(&b, "b0");
    const N: u32 = 100_000;
    let before = lab.counter(&a, "a0", "rx_packets");
    // Paced: the veth hands frames to the receiving side's backlog (1000 frames), which
    // drains between batches.
    send_all(
        &mut peer_tx,
        (0..N).map(|i| test_frame(i, 64)),
        256,
        Duration::from_micros(200),
    );
    let arrived = lab.counter(&a, "a0", "rx_packets") - before;
    assert!(
        arrived >= u64::from(N),
        "the veth delivered {arrived} of {N}: the sender outran it"
    );

    let mut next = 0u32;
    let mut out_of_order = 0;
    receive(&mut ring_rx, Duration::from_secs(20), |f| {
        if let Some(seq) = seq_of(f) {
            if seq != next {
                out_of_order += 1;
            }
            next = seq + 1;
        }
        next == N
    });
    let stats = ring_rx.stats();
    assert_eq!(next, N, "last sequence number received");
    assert_eq!(out_of_order, 0);
    assert_eq!(stats.dropped, 0, "kernel drops (PACKET_STATISTICS)");
    assert_eq!(stats.malformed, 0);
}

/// Two workers on one interface in one fanout group: both get traffic, together exactly
/// what was sent (no duplicate, none lost), and each flow stays on one worker.
#[test]
fn fanout_shares_an_interface_between_two_workers() {
    if !root_or_skip("fanout_shares_an_interface_between_two_workers") {
        return;
    }
    let (lab, a, b) = pair("fanout");
    // The host's own frames out of a0 come from its IP stack (a packet socket's transmit
    // with PACKET_QDISC_BYPASS skips the taps): an address and a fixed neighbour for it.
    lab.ip(&a, &["addr", "add", "198.18.200.2/24", "dev", "a0"]);
    lab.ip(
        &a,
        &[
            "neigh",
            "add",
            "198.18.200.1",
            "lladdr",
            "02:00:00:00:00:bb",
            "dev",
            "a0",
            "nud",
            "permanent",
        ],
    );
    let group = (std::process::id() & 0xffff) as u16;
    let config = AfPacketConfig {
        fanout: Some(group),
        ..AfPacketConfig::new("a0")
    };
    let (mut first, _) = ring_port(&a, config.clone());
    let (mut second, _) = ring_port(&a, config);
    let (_peer_rx, mut peer_tx) = mmsg_port(&b, "b0");
    const N: u32 = 10_000;
    const OUTGOING: u32 = 1_000;
    const FLOWS: u32 = 64;
    // Each worker receives on its own thread while the peer sends.
    let seen: Vec<Vec<(u16, u32)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = [&mut first, &mut second]
            .into_iter()
            .map(|rx| {
                scope.spawn(move || {
                    let mut seen = Vec::new();
                    receive(rx, Duration::from_secs(4), |f| {
                        if let Some(x) = udp_of(f) {
                            seen.push(x);
                        }
                        false
                    });
                    seen
                })
            })
            .collect();
        send_all(
            &mut peer_tx,
            (0..N).map(|i| udp_frame(i, (i % FLOWS) as u16)),
            256,
            Duration::from_micros(200),
        );
        // The host's own outgoing frames on the shared interface must reach neither worker
        // (PACKET_FANOUT_FLAG_IGNORE_OUTGOING: a fanout socket ignores
        // PACKET_IGNORE_OUTGOING).
        netns::run_in(&a, || {
            let socket = std::net::UdpSocket::bind("198.18.200.2:10000").unwrap();
            for i in N..N + OUTGOING {
                socket.send_to(&i.to_be_bytes(), "198.18.200.1:9").unwrap();
            }
        })
        .unwrap();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let outgoing_seen = seen.iter().flatten().filter(|&&(_, seq)| seq >= N).count();
    assert_eq!(
        outgoing_seen, 0,
        "the host's outgoing frames reached the workers"
    );
    let seen: Vec<Vec<(u16, u32)>> = seen
        .into_iter()
        .map(|frames| frames.into_iter().filter(|&(_, seq)| seq < N).collect())
        .collect();
    assert!(
        !seen[0].is_empty() && !seen[1].is_empty(),
        "both workers get traffic: {} / {}",
        seen[0].len(),
        seen[1].len()
    );
    let all: Vec<u32> = seen.iter().flatten().map(|&(_, seq)| seq).collect();
    let unique: HashSet<u32> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "no frame reaches both workers");
    assert_eq!(unique.len() as u32, N, "every frame reaches one worker");
    let mut owner: HashMap<u16, usize> = HashMap::new();
    for (worker, frames) in seen.iter().enumerate() {
        for &(flow, _) in frames {
            assert_eq!(
                *owner.entry(flow).or_insert(worker),
                worker,
                "flow {flow} on both workers"
            );
        }
    }
    assert_eq!(first.stats().dropped + second.stats().dropped, 0);
}

/// Hosts h1 and h2, each in its namespace, cabled by veth to ports s1 and s2 of a switch in
/// a third: the worker loop over two AF_PACKET ports carries ping (IPv4 and IPv6) between
/// them, learning both MACs on the way.
#[test]
fn worker_loop_switches_ping_between_two_namespaces() {
    if !root_or_skip("worker_loop_switches_ping_between_two_namespaces") {
        return;
    }
    let (lab, h1, h2, sw) = netns_lab::two_hosts("ping", true);

    let switch = Switch::new(netns_lab::two_port_switch_config()).unwrap();
    let (s1_rx, s1_tx) = ring_port(&sw, AfPacketConfig::new("s1"));
    let (s2_rx, s2_tx) = ring_port(&sw, AfPacketConfig::new("s2"));
    let ports = vec![
        Port::new(Ingress::Port(PortId(1)), Box::new(s1_rx), Box::new(s1_tx)),
        Port::new(Ingress::Port(PortId(2)), Box::new(s2_rx), Box::new(s2_tx)),
    ];
    let stop = AtomicBool::new(false);
    let (ping4, ping6, stats, counters) = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let started = Instant::now();
            let mut lp = WorkerLoop::new(&switch, switch.worker(), ports, LoopConfig::default());
            lp.run(
                || switchyard::time::Instant::from_nanos(started.elapsed().as_nanos() as u64),
                &stop,
            );
            (lp.stats(), lp.worker().counters.clone())
        });
        let ping4 = lab.exec(
            &h1,
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.18.1.2"],
        );
        let ping6 = lab.exec(
            &h1,
            &[
                "ping",
                "-6",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "2",
                "2001:db8:1::2",
            ],
        );
        stop.store(true, Ordering::Relaxed);
        let (stats, counters) = worker.join().unwrap();
        (ping4, ping6, stats, counters)
    });
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(
        ping4.status.success(),
        "IPv4 ping through the switch: {}",
        text(&ping4)
    );
    assert!(text(&ping4).contains("3 received"), "{}", text(&ping4));
    assert!(
        ping6.status.success(),
        "IPv6 ping through the switch: {}",
        text(&ping6)
    );
    assert!(text(&ping6).contains("3 received"), "{}", text(&ping6));
    // ARP request, reply, 3 echo requests and 3 replies at least, per family (ND likewise).
    assert!(stats.received >= 16, "{stats:?}");
    assert_eq!(stats.no_egress, 0, "{stats:?}");
    assert_eq!(stats.tx_errors + stats.rx_errors, 0, "{stats:?}");
    assert!(counters.forwarded >= 16, "{counters:?}");
    let vni = Vni::new(100).unwrap();
    let fdb = switch.fdb();
    let learned = [
        lab.ip(&h1, &["-br", "link", "show", "h1"]),
        lab.ip(&h2, &["-br", "link", "show", "h2"]),
    ]
    .map(|o| {
        let line = String::from_utf8_lossy(&o.stdout).to_string();
        let mac = line.split_whitespace().nth(2).unwrap().to_string();
        let bytes: Vec<u8> = mac
            .split(':')
            .map(|x| u8::from_str_radix(x, 16).unwrap())
            .collect();
        fdb.lookup(vni, EthernetAddress::from_bytes(&bytes))
    });
    assert!(
        learned.iter().all(|l| l.is_some()),
        "both hosts' MACs learned: {learned:?}"
    );
}

/// Sends `bytes` of a pattern over TCP from namespace `client` to `server_ip` in namespace
/// `server`; returns the bytes the server read and whether they matched the pattern.
fn tcp_transfer(client: &str, server: &str, server_ip: IpAddr, bytes: usize) -> (usize, bool) {
    use std::io::{Read, Write};
    let address = std::net::SocketAddr::new(server_ip, 5201);
    let listener = netns::run_in(server, || std::net::TcpListener::bind(address))
        .unwrap()
        .unwrap();
    let pattern = |i: usize| (i % 251) as u8;
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let (mut total, mut intact) = (0usize, true);
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        intact &= buf[..n]
                            .iter()
                            .enumerate()
                            .all(|(i, &b)| b == pattern(total + i));
                        total += n;
                    }
                }
            }
            (total, intact)
        });
        let mut stream = netns::run_in(client, || {
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))
        })
        .unwrap()
        .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let data: Vec<u8> = (0..bytes).map(pattern).collect();
        let _ = stream.write_all(&data);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        reader.join().unwrap()
    })
}

/// TCP between two namespaces through the switch (returns the loop's counters), with the
/// veths' offloads as Linux sets
/// them (TSO, GSO and checksum offload on): the hosts send 64 KB super-frames with partial
/// checksums, the ring reads them with their virtio-net header, the loop sends them whole to
/// the other port with a virtio-net header for the kernel (or, flooded, cuts them into
/// segments with complete checksums), and 8 MB arrive intact over IPv4 and over IPv6.
fn tcp_through_the_switch(tag: &str, tx_offloads: bool) -> switchyard::backend::LoopStats {
    let (_lab, h1, h2, sw) = netns_lab::two_hosts(tag, true);

    let switch = Switch::new(netns_lab::two_port_switch_config()).unwrap();
    let config = |dev: &str| AfPacketConfig {
        tx_vnet_header: tx_offloads,
        ..AfPacketConfig::new(dev)
    };
    let (s1_rx, s1_tx) = ring_port(&sw, config("s1"));
    let (s2_rx, s2_tx) = ring_port(&sw, config("s2"));
    let ports = vec![
        Port::new(Ingress::Port(PortId(1)), Box::new(s1_rx), Box::new(s1_tx)),
        Port::new(Ingress::Port(PortId(2)), Box::new(s2_rx), Box::new(s2_tx)),
    ];
    const BYTES: usize = 8 << 20;
    let stop = AtomicBool::new(false);
    let (v4, v6, stats) = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let started = Instant::now();
            let mut lp = WorkerLoop::new(&switch, switch.worker(), ports, LoopConfig::default());
            lp.run(
                || switchyard::time::Instant::from_nanos(started.elapsed().as_nanos() as u64),
                &stop,
            );
            lp.stats()
        });
        let v4 = tcp_transfer(&h1, &h2, "198.18.1.2".parse().unwrap(), BYTES);
        let v6 = tcp_transfer(&h1, &h2, "2001:db8:1::2".parse().unwrap(), BYTES);
        stop.store(true, Ordering::Relaxed);
        (v4, v6, worker.join().unwrap())
    });
    eprintln!("TCP through the switch: {stats:?}");
    assert_eq!(v4, (BYTES, true), "IPv4: bytes received, intact");
    assert_eq!(v6, (BYTES, true), "IPv6: bytes received, intact");
    assert!(stats.gso_frames > 0, "super-frames seen: {stats:?}");
    assert_eq!(stats.gso_dropped, 0, "{stats:?}");
    assert!(
        stats.checksums_completed > 0,
        "partial checksums (ACKs, small segments): {stats:?}"
    );
    assert_eq!(stats.tx_errors, 0, "{stats:?}");
    stats
}

#[test]
fn worker_loop_carries_tcp_with_offloads_on() {
    if !root_or_skip("worker_loop_carries_tcp_with_offloads_on") {
        return;
    }
    let stats = tcp_through_the_switch("tcp", true);
    // Before both MACs are learned, super-frames are flooded and so cut into segments; after,
    // they go whole to the other port, whose TX socket takes a virtio-net header.
    assert!(stats.gso_whole > 0, "super-frames sent whole: {stats:?}");
}

/// The same with TX sockets that take no virtio-net header: every super-frame is cut into
/// segments in software.
#[test]
fn worker_loop_segments_tcp_for_ports_without_offloads() {
    if !root_or_skip("worker_loop_segments_tcp_for_ports_without_offloads") {
        return;
    }
    let stats = tcp_through_the_switch("tcpseg", false);
    assert_eq!(stats.gso_whole, 0, "{stats:?}");
    assert!(stats.gso_segments > stats.gso_frames, "{stats:?}");
}

/// Two worker threads share the switch and both of its ports, each port's receive side split
/// between them by a fanout group (hash of the flow): 16 TCP connections go through intact,
/// and both workers carry some of them.
#[test]
fn two_workers_share_the_ports_through_fanout() {
    if !root_or_skip("two_workers_share_the_ports_through_fanout") {
        return;
    }
    let (_lab, h1, h2, sw) = netns_lab::two_hosts("fan2", false);

    let switch = Switch::new(netns_lab::two_port_switch_config()).unwrap();
    // One fanout group per interface (a group belongs to one device).
    let base = (std::process::id() & 0x7fff) as u16;
    let port = |dev: &str, group: u16, id: u32| {
        let (rx, tx) = ring_port(
            &sw,
            AfPacketConfig {
                fanout: Some(group),
                ..AfPacketConfig::new(dev)
            },
        );
        Port::new(Ingress::Port(PortId(id)), Box::new(rx), Box::new(tx))
    };
    let workers_ports: Vec<Vec<Port>> = (0..2)
        .map(|_| vec![port("s1", base, 1), port("s2", base + 1, 2)])
        .collect();
    let stop = AtomicBool::new(false);
    let (results, stats) = std::thread::scope(|scope| {
        let workers: Vec<_> = workers_ports
            .into_iter()
            .map(|ports| {
                let (switch, stop) = (&switch, &stop);
                scope.spawn(move || {
                    let started = Instant::now();
                    let mut lp =
                        WorkerLoop::new(switch, switch.worker(), ports, LoopConfig::default());
                    lp.run(
                        || {
                            switchyard::time::Instant::from_nanos(
                                started.elapsed().as_nanos() as u64
                            )
                        },
                        stop,
                    );
                    lp.stats()
                })
            })
            .collect();
        let results: Vec<(usize, bool)> = (0..16)
            .map(|_| tcp_transfer(&h1, &h2, "198.18.1.2".parse().unwrap(), 256 << 10))
            .collect();
        stop.store(true, Ordering::Relaxed);
        let stats: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        (results, stats)
    });
    for (i, r) in results.iter().enumerate() {
        assert_eq!(*r, (256 << 10, true), "connection {i}");
    }
    eprintln!(
        "two workers: {:?}",
        stats
            .iter()
            .map(|s| (s.received, s.sent))
            .collect::<Vec<_>>()
    );
    assert!(
        stats.iter().all(|s| s.received > 0),
        "both workers carry traffic: {stats:?}"
    );
    assert!(
        stats.iter().all(|s| s.tx_errors == 0 && s.gso_dropped == 0),
        "{stats:?}"
    );
}

/// With `tx_udp_gso`, equal datagrams of one flow leave as a few UDP GSO sends (64
/// datagrams at most each, a shorter one ending one): the veth carries a handful of packets
/// instead of 101, the peer's kernel delivers every datagram intact and in order to a UDP
/// socket, and a ring port with virtio-net headers on the peer receives UDP GSO super-frames
/// that `gso::UdpSegmenter` cuts back into the very frames sent.
#[test]
fn udp_gso_sends_equal_datagrams_together_and_the_peer_gets_each() {
    if !root_or_skip("udp_gso_sends_equal_datagrams_together_and_the_peer_gets_each") {
        return;
    }
    let (lab, a, b) = pair("ugso");
    lab.ip(&b, &["addr", "add", "198.18.201.2/24", "dev", "b0"]);
    let mac = lab.exec(&b, &["cat", "/sys/class/net/b0/address"]);
    let mac: Vec<u8> = String::from_utf8_lossy(&mac.stdout)
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let socket = netns::run_in(&b, || std::net::UdpSocket::bind("198.18.201.2:4789"))
        .unwrap()
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (mut peer_rx, _peer_tx) = ring_port(&b, AfPacketConfig::new("b0"));
    let config = AfPacketConfig {
        tx_udp_gso: true,
        ..AfPacketConfig::new("a0")
    };
    let (_rx, mut tx) = ring_port(&a, config);

    let payloads: Vec<Vec<u8>> = (0..101u32)
        .map(|i| {
            let len = if i == 100 { 10 } else { 1000 };
            (0..len).map(|j| (i * 7 + j) as u8).collect()
        })
        .collect();
    let frames: Vec<Vec<u8>> = payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| {
            let mut header = etherparse::Ipv4Header::new(
                payload.len() as u16 + 8,
                64,
                etherparse::IpNumber::UDP,
                [198, 18, 201, 1],
                [198, 18, 201, 2],
            )
            .unwrap();
            header.identification = i as u16;
            header.dont_fragment = true;
            let mut frame = Vec::new();
            etherparse::PacketBuilder::ethernet2(
                [0x02, 0, 0, 0, 0, 0xaa],
                mac[..].try_into().unwrap(),
            )
            .ip(etherparse::IpHeaders::Ipv4(header, Default::default()))
            .udp(49152, 4789)
            .write(&mut frame, payload)
            .unwrap();
            frame[40..42].fill(0); // no UDP checksum, as VXLAN over IPv4 sends by default
            frame
        })
        .collect();

    let before = lab.counter(&a, "a0", "tx_packets");
    for frame in &frames {
        assert!(tx.send(frame, &[]).unwrap());
    }
    flush_fully(&mut tx);
    let stats = tx.stats();
    assert_eq!(
        (stats.frames, stats.dropped, stats.malformed),
        (101, 0, 0),
        "{stats:?}"
    );
    let carried = lab.counter(&a, "a0", "tx_packets") - before;
    assert!(
        carried <= 4,
        "the veth carried {carried} packets for 101 datagrams"
    );

    let mut buffer = [0u8; 2048];
    let got: Vec<Vec<u8>> = (0..101)
        .map(|_| {
            let n = socket.recv(&mut buffer).expect("a datagram");
            buffer[..n].to_vec()
        })
        .collect();
    assert_eq!(
        got, payloads,
        "the socket receives every datagram, intact, in order"
    );

    let mut cut = Vec::new();
    let mut frames_in = Vec::new();
    let mut metas = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cut.len() < 101 && Instant::now() < deadline {
        frames_in.clear();
        metas.clear();
        let mut batch = switchyard::backend::recycle(std::mem::take(&mut frames_in));
        peer_rx.recv_with_meta(&mut batch, &mut metas, 64).unwrap();
        for (frame, meta) in batch.iter().zip(&metas) {
            if udp_port_of(frame) != Some(4789) {
                continue;
            }
            match meta.gso {
                None => cut.push(frame.to_vec()),
                Some(gso) => {
                    assert_eq!(gso.kind, switchyard::backend::GsoKind::UdpL4);
                    let mut s =
                        switchyard::gso::UdpSegmenter::new(frame, gso.segment_size, true).unwrap();
                    let mut out = vec![0u8; s.max_segment_len()];
                    while let Some(n) = s.next_into(&mut out) {
                        cut.push(out[..n].to_vec());
                    }
                }
            }
        }
        frames_in = switchyard::backend::recycle(batch);
        peer_rx.release();
    }
    assert!(
        cut == frames,
        "the peer's ring port, cutting what it receives, has the frames sent"
    );
}

fn udp_port_of(frame: &[u8]) -> Option<u16> {
    let p = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    match p.transport? {
        etherparse::TransportSlice::Udp(udp) => Some(udp.destination_port()),
        _ => None,
    }
}
