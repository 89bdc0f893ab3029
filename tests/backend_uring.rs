//! The io_uring underlay in network namespaces (root only; feature `io-uring`).
//!
//! Each test builds its own pair of namespaces joined by a veth pair, with addresses from
//! 198.18.0.0/15 and 2001:db8::/32 only, and removes them when done, failed or not. The
//! underlay queue runs in namespace A (opened by a thread that entered A with `setns`), a
//! plain UDP socket (or a second underlay queue) in namespace B. Nothing here touches the
//! default namespace's interfaces.
//!
//! Without root the tests say loudly on stderr that they are skipped, and pass; with
//! `CI=true` they fail instead.
#![cfg(all(feature = "io-uring", target_os = "linux"))]

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use switchyard::backend::io_uring::{
    check_opcodes, open, open_queues, probe_kernel, UringConfig, UringError, UringRx, UringTx,
    REQUIRED_OPCODES,
};
use switchyard::backend::{RxQueue, TxQueue};
use switchyard::tunnel::{decap, DecapConfig, EncapConfig, EncapTemplate, IpIdent, Underlay};
use switchyard::wire::EthernetAddress;
use switchyard::Vni;

const PORT: u16 = 4789;
const A_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const B_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const A_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x75, 0, 0, 0, 0, 1);
const B_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x75, 0, 0, 0, 0, 2);
const MAC: EthernetAddress = EthernetAddress([0x02, 0x75, 0, 0, 0, 1]);

/// True if the test may run; false (after saying why, loudly) if it must be skipped.
/// Panics under `CI=true` when it cannot run.
fn privileged() -> bool {
    let why = if unsafe_geteuid() != 0 {
        Some("not running as root (network namespaces and veth pairs need CAP_SYS_ADMIN and CAP_NET_ADMIN)")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("the `ip` command (iproute2) is missing")
    } else {
        None
    };
    let Some(why) = why else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("CI=true, but the io_uring namespace tests cannot run: {why}");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!` of passing
    // tests, and a skip must not pass unseen.
    let bar = "!".repeat(78);
    let _ = writeln!(
        io::stderr(),
        "\n{bar}\n!! SKIPPED: io_uring underlay namespace test: {why}\n\
         !! Run as root (CI does, with CI=true) to exercise the backend.\n{bar}"
    );
    false
}

#[allow(unsafe_code)]
fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn ip(args: &[&str]) -> io::Result<()> {
    let output = Command::new("ip").args(args).output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Two namespaces joined by a veth pair; removed on drop.
struct Lab {
    a: String,
    b: String,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            a: format!("sy-uring-{pid}-{tag}-a"),
            b: format!("sy-uring-{pid}-{tag}-b"),
        };
        // Interface names: at most 15 bytes, unique per test within the process; they live
        // only inside the lab's namespaces.
        let (va, vb) = ("uring-a", "uring-b");
        let setup = || -> io::Result<()> {
            ip(&["netns", "add", &lab.a])?;
            ip(&["netns", "add", &lab.b])?;
            ip(&[
                "link", "add", va, "netns", &lab.a, "type", "veth", "peer", "name", vb, "netns",
                &lab.b,
            ])?;
            for (ns, dev, v4, v6) in [(&lab.a, va, A_V4, A_V6), (&lab.b, vb, B_V4, B_V6)] {
                ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev])?;
                ip(&[
                    "-n",
                    ns,
                    "-6",
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ])?;
                ip(&["-n", ns, "link", "set", "lo", "up"])?;
                ip(&["-n", ns, "link", "set", dev, "up"])?;
            }
            Ok(())
        };
        if let Err(error) = setup() {
            drop(lab);
            panic!("lab setup failed: {error}");
        }
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the pair.
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`: sockets and rings created
/// there belong to it and may then be used from any thread.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        #[allow(unsafe_code)]
        // SAFETY: setns on a namespace file descriptor changes only this thread's network
        // namespace; the thread ends after `f`.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

fn open_in(ns: &str, config: UringConfig) -> Result<(UringRx, UringTx), UringError> {
    in_netns(ns, move || open(&config))
}

fn plain_socket_in(ns: &str, addr: SocketAddr) -> UdpSocket {
    in_netns(ns, move || {
        let socket = UdpSocket::bind(addr).expect("bind the plain peer socket");
        // Room for the bursts (beyond net.core.rmem_max: SO_RCVBUFFORCE, as root).
        let size: libc::c_int = 8 << 20;
        #[allow(unsafe_code)]
        // SAFETY: a live c_int and its size, on the socket's own descriptor.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", io::Error::last_os_error());
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
    })
}

/// An inner Ethernet frame carrying `sequence` (IPv4/UDP, 64 bytes of payload).
fn inner_frame(sequence: u32) -> Vec<u8> {
    let mut frame = vec![0u8; 14 + 20 + 8 + 64];
    frame[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut frame[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&92u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let sum = (sum & 0xFFFF) + (sum >> 16);
    let checksum = !((sum & 0xFFFF) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    frame[34..36].copy_from_slice(&1234u16.to_be_bytes());
    frame[36..38].copy_from_slice(&5678u16.to_be_bytes());
    frame[38..40].copy_from_slice(&72u16.to_be_bytes());
    frame[42..46].copy_from_slice(&sequence.to_be_bytes());
    frame
}

fn sequence_of(inner: &[u8]) -> u32 {
    u32::from_be_bytes(inner[42..46].try_into().unwrap())
}

fn template(local: IpAddr, remote: IpAddr, vni: Vni) -> EncapTemplate {
    let underlay = match (local, remote) {
        (IpAddr::V4(l), IpAddr::V4(r)) => Underlay::ipv4(MAC, MAC, l, r),
        (IpAddr::V6(l), IpAddr::V6(r)) => Underlay::ipv6(MAC, MAC, l, r),
        _ => unreachable!(),
    };
    EncapTemplate::new(&EncapConfig::default(), &underlay, vni).unwrap()
}

/// The outer headers the core would write for `inner`, and the UDP payload (VXLAN header
/// and inner frame) a VXLAN peer puts on the wire.
fn encapsulate(template: &EncapTemplate, inner: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut header = [0u8; 70];
    let len = template
        .encap_header(inner, &mut header, &mut IpIdent::new(1))
        .unwrap();
    let header = header[..len].to_vec();
    let mut datagram = header[len - 8..].to_vec();
    datagram.extend_from_slice(inner);
    (header, datagram)
}

/// Waits for the ring's descriptor to poll readable, up to `timeout`.
fn wait_readable(rx: &UringRx, timeout: Duration) {
    let mut fd = libc::pollfd {
        fd: rx.poll_fd().expect("the ring has a descriptor"),
        events: libc::POLLIN,
        revents: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe {
        libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int)
    };
}

/// Receives until `want` frames came or `timeout` passed, handing each to `each`, releasing
/// every batch. Returns how many came.
fn receive(
    rx: &mut UringRx,
    want: usize,
    timeout: Duration,
    mut each: impl FnMut(&mut [u8]),
) -> usize {
    let start = Instant::now();
    let mut got = 0;
    while got < want && start.elapsed() < timeout {
        let count = {
            let mut frames = Vec::new();
            let count = rx.recv(&mut frames, 256).expect("recv");
            for frame in frames {
                each(frame);
            }
            count
        };
        rx.release();
        got += count;
        if count == 0 {
            wait_readable(rx, Duration::from_millis(50));
        }
    }
    got
}

fn icmp_dest_unreachables_sent(ns: &str) -> u64 {
    in_netns(ns, || {
        let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap();
        let mut lines = snmp.lines().filter(|l| l.starts_with("Icmp:"));
        let names: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let values: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let at = names.iter().position(|n| *n == "OutDestUnreachs").unwrap();
        values[at].parse().unwrap()
    })
}

/// Frames both ways between the underlay queue in A and a plain UDP socket in B.
fn both_directions(tag: &str, a: IpAddr, b: IpAddr, options: bool) {
    if !privileged() {
        return;
    }
    let lab = Lab::new(tag);
    let mut config = UringConfig::new(SocketAddr::new(a, PORT));
    config.defer_taskrun = options;
    config.send_zerocopy = options;
    let (mut rx, mut tx) = open_in(&lab.a, config).expect("open the io_uring underlay");
    assert_eq!(
        rx.is_deferred(),
        options,
        "this kernel (6.1+) has DEFER_TASKRUN"
    );
    let peer = plain_socket_in(&lab.b, SocketAddr::new(b, PORT));
    let vni = Vni::new(77).unwrap();
    let icmp_before = icmp_dest_unreachables_sent(&lab.a);

    // B -> A: the peer sends VXLAN datagrams, ECT(0) in the outer header; A's frames
    // decapsulate with the peer as the outer source, the VNI and the inner frame it sent, and
    // the outer ECN field it sent.
    let ect0 = 0b10;
    let peer_ref = socket2::SockRef::from(&peer);
    match b {
        IpAddr::V4(_) => peer_ref.set_tos_v4(ect0).unwrap(),
        IpAddr::V6(_) => peer_ref.set_tclass_v6(ect0).unwrap(),
    }
    let from_b = template(b, a, vni);
    let count = 200;
    for sequence in 0..count {
        let (_, datagram) = encapsulate(&from_b, &inner_frame(sequence));
        peer.send_to(&datagram, SocketAddr::new(a, PORT)).unwrap();
    }
    let mut seen = HashSet::new();
    let got = receive(&mut rx, count as usize, Duration::from_secs(5), |frame| {
        let d = decap(&DecapConfig::default(), frame).expect("decap accepts the frame");
        assert_eq!(d.vni, vni);
        assert_eq!(d.outer.src(), b);
        assert_eq!(d.outer.dst(), a);
        assert_eq!(d.udp_src_port, PORT);
        assert_eq!(u32::from(d.outer_tos), ect0);
        let inner = d.inner_frame(frame);
        assert_eq!(inner, &inner_frame(sequence_of(inner))[..]);
        assert!(seen.insert(sequence_of(inner)));
    });
    assert_eq!(got, count as usize);
    assert_eq!(seen.len(), count as usize);
    let stats = rx.stats();
    assert_eq!(stats.frames, u64::from(count));
    assert_eq!((stats.dropped, stats.malformed), (0, 0));

    // A -> B: frames the core encapsulated arrive at the peer as their UDP payload, from our
    // VXLAN port.
    let to_b = template(a, b, vni);
    for sequence in 0..count {
        let inner = inner_frame(sequence);
        let (header, _) = encapsulate(&to_b, &inner);
        assert!(tx.send(&header, &inner).unwrap());
        if sequence % 64 == 63 {
            tx.flush().unwrap();
        }
    }
    tx.flush().unwrap();
    let mut buffer = [0u8; 2048];
    for sequence in 0..count {
        let (len, from) = peer.recv_from(&mut buffer).expect("the peer receives");
        assert_eq!(from, SocketAddr::new(a, PORT));
        let (_, expected) = encapsulate(&to_b, &inner_frame(sequence));
        assert_eq!(&buffer[..len], &expected[..], "datagram {sequence}");
    }
    let stats = tx.stats();
    assert_eq!(stats.frames, u64::from(count));
    assert_eq!(stats.dropped, 0, "{:?}", tx.last_error());
    // Received VXLAN was taken by our socket: no port unreachable went back.
    assert_eq!(icmp_dest_unreachables_sent(&lab.a), icmp_before);
}

#[test]
fn ipv4_frames_both_directions() {
    both_directions("v4", IpAddr::V4(A_V4), IpAddr::V4(B_V4), false);
}

/// The same with the options: the receive ring's completion work deferred (DEFER_TASKRUN;
/// opened on one thread, it becomes the test thread's at the first `recv`, and is dropped
/// there), and zero-copy sends (SENDMSG_ZC, whose notifications `flush` waits for).
#[test]
fn ipv4_frames_both_directions_deferred_and_zerocopy() {
    both_directions("v4d", IpAddr::V4(A_V4), IpAddr::V4(B_V4), true);
}

#[test]
fn ipv6_frames_both_directions() {
    both_directions("v6", IpAddr::V6(A_V6), IpAddr::V6(B_V6), false);
}

/// An underlay queue with GSO sends to one with GRO: batches leave as super-datagrams and
/// arrive coalesced, and every frame still decapsulates, in order, once.
#[test]
fn gso_to_gro_between_two_underlay_queues() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("gso");
    let (a, b) = (IpAddr::V4(A_V4), IpAddr::V4(B_V4));
    let (_, mut tx) = open_in(
        &lab.a,
        UringConfig::new(SocketAddr::new(a, PORT)).with_offloads(),
    )
    .unwrap();
    let (mut rx, _) = open_in(
        &lab.b,
        UringConfig::new(SocketAddr::new(b, PORT)).with_offloads(),
    )
    .unwrap();
    let vni = Vni::new(9).unwrap();
    let to_b = template(a, b, vni);
    let count = 1000u32;
    for sequence in 0..count {
        let inner = inner_frame(sequence);
        let (header, _) = encapsulate(&to_b, &inner);
        assert!(tx.send(&header, &inner).unwrap());
        if sequence % 200 == 199 {
            tx.flush().unwrap();
        }
    }
    tx.flush().unwrap();
    assert_eq!(tx.stats().frames, u64::from(count));
    assert!(tx.gso_sends() > 0, "no GSO send");
    let mut sequences = Vec::new();
    let got = receive(&mut rx, count as usize, Duration::from_secs(5), |frame| {
        let d = decap(&DecapConfig::default(), frame).expect("decap");
        assert_eq!((d.vni, d.outer.src()), (vni, a));
        sequences.push(sequence_of(d.inner_frame(frame)));
    });
    assert_eq!(got, count as usize);
    assert_eq!(sequences, (0..count).collect::<Vec<_>>());
    assert!(
        rx.coalesced() > 0,
        "GRO delivered no coalesced datagram ({} frames)",
        rx.stats().frames
    );
    eprintln!(
        "GSO: {} sends for {count} frames; GRO: {} coalesced completions",
        tx.gso_sends(),
        rx.coalesced()
    );
}

/// 100 000 datagrams into the underlay queue, with the sender kept at most half a buffer
/// ring ahead of the switch: none may be lost. And 100 000 out of it to a plain socket.
#[test]
fn burst_of_100k_without_loss() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("burst");
    let (a, b) = (IpAddr::V4(A_V4), IpAddr::V4(B_V4));
    let config = UringConfig::new(SocketAddr::new(a, PORT));
    let window = u64::from(config.rx_buffers / 2);
    let (mut rx, mut tx) = open_in(&lab.a, config).unwrap();
    let peer = plain_socket_in(&lab.b, SocketAddr::new(b, PORT));
    let vni = Vni::new(5).unwrap();
    const COUNT: u32 = 100_000;

    // Inbound.
    let received = Arc::new(AtomicU64::new(0));
    let sender = {
        let peer = peer.try_clone().unwrap();
        let received = Arc::clone(&received);
        let from_b = template(b, a, vni);
        thread::spawn(move || {
            for sequence in 0..COUNT {
                while u64::from(sequence) >= received.load(Ordering::Acquire) + window {
                    thread::yield_now();
                }
                let (_, datagram) = encapsulate(&from_b, &inner_frame(sequence));
                peer.send_to(&datagram, SocketAddr::new(a, PORT)).unwrap();
            }
        })
    };
    let mut seen = vec![false; COUNT as usize];
    let mut duplicates = 0;
    let got = receive(&mut rx, COUNT as usize, Duration::from_secs(60), |frame| {
        let d = decap(&DecapConfig::default(), frame).expect("decap");
        let sequence = sequence_of(d.inner_frame(frame)) as usize;
        duplicates += usize::from(seen[sequence]);
        seen[sequence] = true;
        received.fetch_add(1, Ordering::Release);
    });
    sender.join().unwrap();
    assert_eq!(got, COUNT as usize);
    assert_eq!(duplicates, 0);
    assert!(seen.iter().all(|s| *s));
    assert_eq!(rx.stats().dropped, 0, "kernel drops at the socket");
    eprintln!(
        "inbound: {COUNT} received, buffer ring exhausted {} times",
        rx.ring_exhausted()
    );

    // Outbound.
    let delivered = Arc::new(AtomicUsize::new(0));
    let receiver = {
        let delivered = Arc::clone(&delivered);
        thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            let mut seen = vec![false; COUNT as usize];
            while delivered.load(Ordering::Relaxed) < COUNT as usize {
                let Ok((len, _)) = peer.recv_from(&mut buffer) else {
                    break;
                };
                let sequence = sequence_of(&buffer[8..len]) as usize;
                assert!(!seen[sequence], "duplicate {sequence}");
                seen[sequence] = true;
                delivered.fetch_add(1, Ordering::Release);
            }
        })
    };
    let to_b = template(a, b, vni);
    for sequence in 0..COUNT {
        while sequence as usize >= delivered.load(Ordering::Acquire) + window as usize {
            thread::yield_now();
        }
        let inner = inner_frame(sequence);
        let (header, _) = encapsulate(&to_b, &inner);
        assert!(tx.send(&header, &inner).unwrap());
        if sequence % 256 == 255 {
            tx.flush().unwrap();
        }
    }
    tx.flush().unwrap();
    receiver.join().unwrap();
    assert_eq!(delivered.load(Ordering::Acquire), COUNT as usize);
    assert_eq!(tx.stats().frames, u64::from(COUNT));
    assert_eq!(tx.stats().dropped, 0);
}

/// The probe succeeds on this kernel and reports the opcodes; an error for an opcode it
/// pretends is missing names it.
#[test]
fn probe_reports_opcodes_and_names_a_missing_one() {
    let (required, send_zc) = match probe_kernel() {
        Ok(found) => found,
        Err(error) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("io_uring unavailable under CI: {error}")
        }
        Err(error) => {
            // Not a skip of the check: the error must name the operation.
            let text = error.to_string();
            assert!(
                text.contains("io_uring_setup") || text.contains("IORING_"),
                "{text}"
            );
            eprintln!("!! io_uring unavailable here, probe said: {text}");
            return;
        }
    };
    eprintln!("probe: {required:?}, SEND_ZC: {send_zc}");
    assert_eq!(required.len(), REQUIRED_OPCODES.len());
    for (name, code) in REQUIRED_OPCODES {
        assert!(required.contains(&name));
        let error = check_opcodes(|c| c != code).unwrap_err();
        assert!(matches!(error, UringError::MissingOpcode { operation } if operation == name));
        assert!(error.to_string().contains(name), "{error}");
        let io_error = io::Error::from(error);
        assert_eq!(io_error.kind(), io::ErrorKind::Unsupported);
    }
}

/// A kernel VXLAN device already on the port in the namespace: opening fails at `bind`,
/// so the two can never both receive the same packets.
#[test]
fn kernel_vxlan_device_on_the_port_is_refused() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("kvx");
    ip(&[
        "-n",
        &lab.a,
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        "4789",
        "local",
        "198.18.0.1",
        "dev",
        "uring-a",
    ])
    .unwrap();
    ip(&["-n", &lab.a, "link", "set", "vx0", "up"]).unwrap();
    let error = open_in(
        &lab.a,
        UringConfig::new(SocketAddr::new(IpAddr::V4(A_V4), PORT)),
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(
            error,
            UringError::Socket {
                operation: "bind",
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("bind"), "{text}");
    // And the other way round: with our socket on the port, the device cannot come up.
    ip(&["-n", &lab.a, "link", "set", "vx0", "down"]).unwrap();
    let (_rx, _tx) = open_in(
        &lab.a,
        UringConfig::new(SocketAddr::new(IpAddr::V4(A_V4), PORT)),
    )
    .unwrap();
    assert!(ip(&["-n", &lab.a, "link", "set", "vx0", "up"]).is_err());
}

/// Dropping both halves frees the port at once (the rings' registered file is released with
/// them, not whenever the asynchronous ring teardown runs): the underlay can be reopened.
#[test]
fn reopen_after_drop() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("reopen");
    let local = SocketAddr::new(IpAddr::V4(A_V4), PORT);
    for _ in 0..3 {
        let (mut rx, tx) = open_in(&lab.a, UringConfig::new(local)).expect("open");
        // With the multishot receive armed (and a datagram taken) when dropped.
        let peer = plain_socket_in(&lab.b, SocketAddr::new(IpAddr::V4(B_V4), 0));
        peer.send_to(&[0x08, 0, 0, 0, 0, 0, 1, 0], local).unwrap();
        let got = receive(&mut rx, 1, Duration::from_secs(5), |_| {});
        assert_eq!(got, 1);
        drop((rx, tx));
    }
}

/// Datagrams the kernel drops at the socket (a full receive buffer behind a full buffer
/// ring) are counted: received + dropped = sent.
#[test]
fn socket_drops_are_counted() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("drops");
    let local = SocketAddr::new(IpAddr::V4(A_V4), PORT);
    let mut config = UringConfig::new(local);
    config.rx_buffers = 16;
    config.socket_buffer = 4096; // The kernel's minimum is a few datagrams.
    let (mut rx, _tx) = open_in(&lab.a, config).expect("open");
    let peer = plain_socket_in(&lab.b, SocketAddr::new(IpAddr::V4(B_V4), 0));
    let sent = 2000;
    let (_, datagram) = encapsulate(
        &template(IpAddr::V4(B_V4), IpAddr::V4(A_V4), Vni::new(3).unwrap()),
        &inner_frame(0),
    );
    for _ in 0..sent {
        peer.send_to(&datagram, local).unwrap();
    }
    let got = receive(&mut rx, sent, Duration::from_secs(2), |_| {});
    let stats = rx.stats();
    eprintln!("sent {sent}, received {got}, dropped {}", stats.dropped);
    assert!(
        stats.dropped > 0,
        "nothing dropped: the test overflowed nothing"
    );
    assert_eq!(got as u64 + stats.dropped, sent as u64);
}

/// Two queues (one per worker) in a SO_REUSEPORT group: the datagrams of one outer flow
/// all reach the same queue, flows spread over both, none is lost or duplicated; and a
/// kernel VXLAN device still cannot take the port.
#[test]
fn two_queues_share_the_port_by_flow() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("fanout");
    let local = SocketAddr::new(IpAddr::V4(A_V4), PORT);
    let config = UringConfig::new(local);
    let mut queues = in_netns(&lab.a, move || open_queues(&config, 2)).expect("open 2 queues");
    let flows = 32u32;
    let per_flow = 20u32;
    let peers: Vec<UdpSocket> = (0..flows)
        .map(|_| plain_socket_in(&lab.b, SocketAddr::new(IpAddr::V4(B_V4), 0)))
        .collect();
    let from_b = template(IpAddr::V4(B_V4), IpAddr::V4(A_V4), Vni::new(8).unwrap());
    for round in 0..per_flow {
        for (flow, peer) in peers.iter().enumerate() {
            let (_, datagram) = encapsulate(&from_b, &inner_frame(flow as u32 * 1000 + round));
            peer.send_to(&datagram, local).unwrap();
        }
    }
    // Source port of each flow -> the queue it reached.
    let mut queue_of = std::collections::HashMap::new();
    let mut total = 0;
    let mut per_queue = [0usize; 2];
    let start = Instant::now();
    while total < (flows * per_flow) as usize && start.elapsed() < Duration::from_secs(5) {
        for (index, (rx, _)) in queues.iter_mut().enumerate() {
            let got = receive(rx, 1, Duration::from_millis(20), |frame| {
                let d = decap(&DecapConfig::default(), frame).expect("decap");
                let previous = queue_of.insert(d.udp_src_port, index);
                assert!(
                    previous.is_none_or(|q| q == index),
                    "a flow reached both queues"
                );
            });
            per_queue[index] += got;
            total += got;
        }
    }
    eprintln!("per queue: {per_queue:?}");
    assert_eq!(total, (flows * per_flow) as usize);
    assert_eq!(queue_of.len(), flows as usize);
    assert!(
        per_queue.iter().all(|n| *n > 0),
        "one queue took every flow: {per_queue:?}"
    );
    ip(&[
        "-n",
        &lab.a,
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        "4789",
        "local",
        "198.18.0.1",
        "dev",
        "uring-a",
    ])
    .unwrap();
    assert!(ip(&["-n", &lab.a, "link", "set", "vx0", "up"]).is_err());
}

/// A worker that sleeps on `poll_fd` after an empty batch is woken for datagrams that
/// arrive after the buffer ring ran out: the queue re-arms its receive as soon as it reaps
/// the completion that ended it, even in a batch that yields no frame.
#[test]
fn sleeping_worker_is_woken_after_the_ring_ran_out() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("rearm");
    let local = SocketAddr::new(IpAddr::V4(A_V4), PORT);
    let mut config = UringConfig::new(local);
    config.rx_buffers = 16;
    let (mut rx, _tx) = open_in(&lab.a, config).expect("open");
    let peer = plain_socket_in(&lab.b, SocketAddr::new(IpAddr::V4(B_V4), 0));
    let (_, datagram) = encapsulate(
        &template(IpAddr::V4(B_V4), IpAddr::V4(A_V4), Vni::new(3).unwrap()),
        &inner_frame(0),
    );
    // Armed, then more datagrams than buffers.
    assert_eq!(rx.recv(&mut Vec::new(), 16).unwrap(), 0);
    let sent = 500;
    for _ in 0..sent {
        peer.send_to(&datagram, local).unwrap();
    }
    let start = Instant::now();
    let mut got = 0;
    let mut sleeps = 0;
    while got < sent && start.elapsed() < Duration::from_secs(20) {
        let count = {
            let mut frames = Vec::new();
            // Batches of exactly the ring's size: the completion that ends the receive
            // comes alone in the next batch.
            rx.recv(&mut frames, 16).unwrap()
        };
        rx.release();
        got += count;
        if count == 0 {
            sleeps += 1;
            wait_readable(&rx, Duration::from_secs(10));
        }
    }
    let elapsed = start.elapsed();
    eprintln!(
        "{got} in {elapsed:?}, {sleeps} sleeps, ring ran out {} times",
        rx.ring_exhausted()
    );
    assert_eq!(got, sent);
    assert!(
        rx.ring_exhausted() > 0,
        "the ring never ran out: the test tested nothing"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "slept through arrivals: {elapsed:?}"
    );
}
