//! The io_uring underlay against plain `recvmmsg` / `sendmmsg` on a veth pair, 64-byte UDP
//! payloads (a VXLAN header and a 56-byte inner frame), in one run: RX and TX packets per
//! second, with and without UDP GSO/GRO, a few repetitions, medians and ratios.
//!
//! ```text
//! sudo cargo run --release --features io-uring --example uring-bench -- [--reps 5] [--secs 1.5] [--filter RX] [--sleep] [--rps] [--pace MPPS]
//! ```
//!
//! `--rps`: Receive Packet Steering to CPU 1 on both veth ends. A veth otherwise runs the
//! receiving end's softirq in the sender's context, on the sender's core; with it, each
//! end's receive work runs on CPU 1, as it would with a NIC queue whose interrupts go to the
//! receiving worker's core (RX), and the sender's core no longer pays its sink's receive (TX).
//!
//! `--pace MPPS`: the RX peer sends at most MPPS million datagrams a second (by default as
//! fast as it can). Without RPS the peer's core does the receive work of every datagram and
//! is the limit, whatever the contender; with `--rps` and a GSO peer unpaced, CPU 1 is
//! swamped by the receive work and delivers nothing to a receiver without `UDP_GRO`
//! (receive livelock: measured 0.000 Mpps of 3.4 offered). `--rps --pace`
//! puts the receive work and the contender on one core with an offered load the core can
//! almost take: then what the contender costs a datagram decides what it receives.
//!
//! It creates two network namespaces (`sy-ubench-PID-a`, `-b`) joined by a veth pair with
//! addresses from 198.18.0.0/15, and removes them at the end (also after a panic). Nothing is
//! sent outside them. The contender runs in namespace A pinned to CPU 1, the traffic peer in
//! namespace B pinned to CPU 0; both busy-poll (with `--sleep`, the receiving contenders
//! sleep when idle instead: blocking `recvmmsg`, `poll` on the ring). The CPU time of the
//! contender's thread per packet is reported too: on a shared machine it moves less than
//! the rates. Rates are counted where the packets are
//! *delivered*: by the receiving application (the contender for RX, the peer for TX), never
//! as sent.
//!
//! - RX: the peer sends as fast as it can, with `sendmmsg` (64 per call) or with UDP GSO
//!   (64 segments per `sendmsg`); the contenders are `recvmmsg` (64 per call, non-blocking,
//!   with the sender's address, which an underlay needs; with the GSO peer also with
//!   `IP_RECVTOS`, reading each datagram's TOS byte as the underlay does for ECN by
//!   default: the like-for-like baseline of the underlay's default), the io_uring underlay
//!   (with and without ECN), and the io_uring underlay with `UDP_GRO`. A veth coalesces
//!   nothing unless GRO is on for it (`ethtool -K DEV gro on rx-udp-gro-forwarding on`,
//!   which gives it a NAPI context, as a physical NIC has, and makes locally sent UDP take
//!   it), so the `sendmmsg` peer runs with A's veth GRO off and
//!   on; a GSO peer's super-datagrams cross the veth whole.
//! - TX: the contenders send as fast as they can, 64 datagrams per system call: `sendmmsg`,
//!   the io_uring underlay (64 `send`s and a `flush`), and the underlay with GSO; the peer
//!   counts with `recvmmsg` and `UDP_GRO` (coalesced datagrams counted by segment).

#[cfg(not(all(feature = "io-uring", target_os = "linux")))]
fn main() {
    eprintln!("uring-bench needs Linux and --features io-uring");
}

#[cfg(all(feature = "io-uring", target_os = "linux"))]
fn main() {
    bench::main();
}

#[cfg(all(feature = "io-uring", target_os = "linux"))]
#[allow(unsafe_code)]
mod bench {
    use std::fs::File;
    use std::io;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::os::fd::AsRawFd;
    use std::os::unix::thread::JoinHandleExt;
    use std::process::Command;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Barrier};
    use std::thread;
    use std::time::{Duration, Instant};

    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    use switchyard::backend::io_uring::{open, UringConfig};
    use switchyard::backend::{RxQueue, TxQueue};
    use switchyard::tunnel::{EncapConfig, EncapTemplate, IpIdent, Underlay};
    use switchyard::wire::EthernetAddress;
    use switchyard::Vni;

    const PORT: u16 = 4789;
    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    /// UDP payload bytes: VXLAN header 8, inner frame 56.
    const PAYLOAD: usize = 64;
    const INNER: usize = PAYLOAD - 8;
    const BATCH: usize = 64;
    /// Every socket's receive buffer (`SO_RCVBUFFORCE`), the underlay's included.
    const SOCKET_BUFFER: usize = 16 << 20;
    const MAC: EthernetAddress = EthernetAddress([0x02, 0x75, 0, 0, 0, 1]);

    fn ip(args: &[&str]) {
        let output = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            output.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn ip_netns_exec(ns: &str, command: &[&str]) {
        let mut args = vec!["netns", "exec", ns];
        args.extend_from_slice(command);
        ip(&args);
    }

    struct Lab {
        a: String,
        b: String,
    }

    impl Lab {
        fn new(rps: bool) -> Lab {
            let pid = std::process::id();
            let lab = Lab {
                a: format!("sy-ubench-{pid}-a"),
                b: format!("sy-ubench-{pid}-b"),
            };
            ip(&["netns", "add", &lab.a]);
            ip(&["netns", "add", &lab.b]);
            ip(&[
                "link", "add", "ubench-a", "netns", &lab.a, "type", "veth", "peer", "name",
                "ubench-b", "netns", &lab.b,
            ]);
            for (ns, dev, addr) in [(&lab.a, "ubench-a", A), (&lab.b, "ubench-b", B)] {
                ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
                ip(&["-n", ns, "link", "set", "lo", "up"]);
                ip(&["-n", ns, "link", "set", dev, "up"]);
                if rps {
                    // Receive Packet Steering to CPU 1: see `--rps` in the module docs.
                    ip_netns_exec(
                        ns,
                        &[
                            "sh",
                            "-c",
                            &format!("echo 2 > /sys/class/net/{dev}/queues/rx-0/rps_cpus"),
                        ],
                    );
                }
            }
            lab
        }
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
            let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
        }
    }

    /// Enters namespace `ns` and pins the calling thread to `cpu`.
    fn enter(ns: &str, cpu: usize) {
        let file = File::open(format!("/run/netns/{ns}")).expect("namespace file");
        // SAFETY: setns on a namespace descriptor changes this thread's namespace only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
        // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity get a valid one.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu % num_cpus(), &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }

    fn num_cpus() -> usize {
        thread::available_parallelism().map_or(1, |n| n.get())
    }

    fn set_int(socket: &Socket, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
        // SAFETY: a live c_int and its size, on the socket's own descriptor.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt {name}: {}", io::Error::last_os_error());
    }

    fn udp_socket(bind: SocketAddr) -> Socket {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        set_int(
            &socket,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            SOCKET_BUFFER as i32,
        );
        set_int(&socket, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20);
        socket.bind(&SockAddr::from(bind)).unwrap();
        socket
    }

    fn payload() -> [u8; PAYLOAD] {
        let mut payload = [0u8; PAYLOAD];
        payload[0] = 0x08; // VXLAN I flag
        payload[4..7].copy_from_slice(&[0, 0, 42]);
        payload[8..14].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        payload[14..20].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        payload[20..22].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental
        payload
    }

    /// `sendmmsg` of `BATCH` copies of one datagram to `to`, or with `gso` one `sendmsg` of
    /// `BATCH` segments. Until `stop`, adding to `count` the datagrams sent.
    fn blast(socket: &Socket, to: SocketAddr, gso: bool, count: &AtomicU64, stop: &AtomicBool) {
        // `--pace`: before each send, wait (spinning, on the peer's own core) until the
        // schedule of PACE datagrams a second allows it.
        let pace = f64::from_bits(PACE.load(Ordering::Relaxed));
        let start = Instant::now();
        let mut sent = 0u64;
        let mut wait = |batch: u64| {
            if pace > 0.0 {
                while sent as f64 > start.elapsed().as_secs_f64() * pace
                    && !stop.load(Ordering::Relaxed)
                {
                    std::hint::spin_loop();
                }
                sent += batch;
            }
        };
        let name = SockAddr::from(to);
        let mut data = payload().repeat(BATCH);
        let mut iovs: Vec<libc::iovec> = (0..BATCH)
            .map(|i| libc::iovec {
                iov_base: data[i * PAYLOAD..].as_mut_ptr().cast(),
                iov_len: PAYLOAD,
            })
            .collect();
        if gso {
            let mut whole = libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            };
            #[repr(C, align(8))]
            struct Control([u8; 24]);
            let mut control = Control([0; 24]);
            control.0[0..8].copy_from_slice(&18usize.to_ne_bytes());
            control.0[8..12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
            control.0[12..16].copy_from_slice(&libc::UDP_SEGMENT.to_ne_bytes());
            control.0[16..18].copy_from_slice(&(PAYLOAD as u16).to_ne_bytes());
            // SAFETY: zeroed msghdr, then pointers to live locals.
            let mut msghdr: libc::msghdr = unsafe { std::mem::zeroed() };
            msghdr.msg_name = name.as_ptr().cast_mut().cast();
            msghdr.msg_namelen = name.len();
            msghdr.msg_iov = &mut whole;
            msghdr.msg_iovlen = 1;
            msghdr.msg_control = control.0.as_mut_ptr().cast();
            msghdr.msg_controllen = 24;
            while !stop.load(Ordering::Relaxed) {
                wait(BATCH as u64);
                // SAFETY: the msghdr and what it points to live across the call.
                if unsafe { libc::sendmsg(socket.as_raw_fd(), &msghdr, 0) } > 0 {
                    count.fetch_add(BATCH as u64, Ordering::Relaxed);
                }
            }
        } else {
            let mut msgs: Vec<libc::mmsghdr> = iovs
                .iter_mut()
                .map(|iov| {
                    // SAFETY: zeroed mmsghdr, then pointers to live locals.
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    m.msg_hdr.msg_name = name.as_ptr().cast_mut().cast();
                    m.msg_hdr.msg_namelen = name.len();
                    m.msg_hdr.msg_iov = iov;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            while !stop.load(Ordering::Relaxed) {
                wait(BATCH as u64);
                // SAFETY: BATCH valid mmsghdrs pointing at live buffers.
                let n = unsafe {
                    libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0)
                };
                if n > 0 {
                    count.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    }

    /// Receives with non-blocking `recvmmsg`, `BATCH` per call, until `stop`, adding to
    /// `count` the datagrams received (coalesced ones by segment, with `UDP_GRO`).
    /// With `tos`, the socket also asks for each datagram's TOS byte (`IP_RECVTOS`) and reads
    /// it, as the io_uring underlay does by default for RFC 6040 decapsulation (ECN).
    fn drain(socket: &Socket, count: &AtomicU64, stop: &AtomicBool, sleep: bool, tos: bool) {
        if tos {
            set_int(socket, libc::IPPROTO_IP, libc::IP_RECVTOS, 1);
        }
        let mut tos_seen = 0u8;
        if sleep {
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
        }
        let flags = if sleep {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        let mut bufs = vec![[0u8; 2048]; BATCH];
        // The sender's address, as an underlay needs it (the remote VTEP to learn).
        // SAFETY: sockaddr_storage is plain data; zeros are valid.
        let mut names: Vec<libc::sockaddr_storage> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut controls = vec![[0u64; 8]; BATCH];
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdrs, filled below with pointers to live locals.
        let mut msgs: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        while !stop.load(Ordering::Relaxed) {
            for (((m, iov), control), name) in msgs
                .iter_mut()
                .zip(&mut iovs)
                .zip(&mut controls)
                .zip(&mut names)
            {
                m.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m.msg_hdr.msg_control = control.as_mut_ptr().cast();
                m.msg_hdr.msg_controllen = 64;
            }
            // SAFETY: BATCH valid mmsghdrs pointing at live buffers.
            let n = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    BATCH as u32,
                    flags,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                continue;
            }
            let mut datagrams = 0u64;
            for m in &msgs[..n as usize] {
                let len = m.msg_len as usize;
                let control = &m.msg_hdr;
                let bytes: &[u8] = if control.msg_controllen >= 20 {
                    // SAFETY: the kernel wrote msg_controllen bytes of the 64 given.
                    unsafe {
                        std::slice::from_raw_parts(
                            control.msg_control.cast::<u8>(),
                            control.msg_controllen,
                        )
                    }
                } else {
                    &[]
                };
                let segment = gro_segment(bytes).unwrap_or(len).max(1);
                datagrams += len.div_ceil(segment).max(1) as u64;
                if tos {
                    tos_seen |= control_data(bytes, libc::IPPROTO_IP, libc::IP_TOS)
                        .and_then(|data| data.first().copied())
                        .unwrap_or(0);
                }
            }
            count.fetch_add(datagrams, Ordering::Relaxed);
        }
        std::hint::black_box(tos_seen);
    }

    fn gro_segment(control: &[u8]) -> Option<usize> {
        let data = control_data(control, libc::SOL_UDP, libc::UDP_GRO)?;
        Some(i32::from_ne_bytes(data.get(..4)?.try_into().ok()?) as usize)
    }

    /// The data of the control message (`level`, `kind`) in `control`, if there is one.
    fn control_data(mut control: &[u8], level: i32, kind: i32) -> Option<&[u8]> {
        while control.len() >= 16 {
            let len = usize::from_ne_bytes(control[0..8].try_into().ok()?);
            let this_level = i32::from_ne_bytes(control[8..12].try_into().ok()?);
            let this_kind = i32::from_ne_bytes(control[12..16].try_into().ok()?);
            if this_level == level && this_kind == kind {
                return control.get(16..len.max(16));
            }
            control = control.get(len.next_multiple_of(8).max(16)..)?;
        }
        None
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Rx {
        Recvmmsg,
        /// `recvmmsg` reading each datagram's TOS too (`IP_RECVTOS`), as the underlay does.
        RecvmmsgTos,
        Uring,
        /// With DEFER_TASKRUN.
        UringDeferred,
        /// Without the outer TOS control message.
        UringNoEcn,
        UringGro,
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Tx {
        Sendmmsg,
        Uring,
        UringZerocopy,
        UringGso,
    }

    /// One side of a trial: its counter and the stop flag.
    type Side = Box<dyn FnOnce(&AtomicU64, &AtomicBool) + Send>;

    /// Runs `contender` in A and `peer` in B, each with its own counter; returns the rates
    /// of the contender's and the peer's counters over the measurement window, in Mpps.
    /// measurement window, in Mpps.
    fn trial(
        lab: &Lab,
        secs: f64,
        contender: impl FnOnce(&AtomicU64, &AtomicBool) + Send + 'static,
        peer: impl FnOnce(&AtomicU64, &AtomicBool) + Send + 'static,
    ) -> Trial {
        let counts = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(Barrier::new(3));
        let spawn = |ns: String, cpu: usize, f: Side| {
            let (count, stop, ready) = (counts[cpu].clone(), stop.clone(), ready.clone());
            thread::spawn(move || {
                enter(&ns, cpu);
                ready.wait();
                f(&count, &stop);
            })
        };
        let a = spawn(lab.a.clone(), 1, Box::new(contender));
        let b = spawn(lab.b.clone(), 0, Box::new(peer));
        ready.wait();
        // The contender's CPU time, read from here through its thread's CPU clock.
        let mut clock: libc::clockid_t = 0;
        // SAFETY: `a` is a live, joinable thread until the join below.
        let rc = unsafe { libc::pthread_getcpuclockid(a.as_pthread_t(), &mut clock) };
        assert_eq!(rc, 0, "pthread_getcpuclockid");
        let cpu = || {
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid clock id and a writable timespec.
            unsafe { libc::clock_gettime(clock, &mut now) };
            now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
        };
        thread::sleep(Duration::from_millis(300));
        let load = || counts.each_ref().map(|c| c.load(Ordering::Relaxed));
        let (c0, t0, cpu0) = (load(), Instant::now(), cpu());
        thread::sleep(Duration::from_secs_f64(secs));
        let (c1, t1, cpu1) = (load(), Instant::now(), cpu());
        stop.store(true, Ordering::Relaxed);
        a.join().unwrap();
        b.join().unwrap();
        let rate = |i: usize| (c1[i] - c0[i]) as f64 / (t1 - t0).as_secs_f64() / 1e6;
        // Counter 1 is the contender's (CPU 1), 0 the peer's.
        Trial {
            contender: rate(1),
            peer: rate(0),
            contender_ns_per_packet: (cpu1 - cpu0) * 1e9 / (c1[1] - c0[1]).max(1) as f64,
        }
    }

    /// What one trial measured.
    struct Trial {
        /// The contender's counter, Mpps.
        contender: f64,
        /// The peer's counter, Mpps.
        peer: f64,
        /// CPU time of the contender's thread per packet it counted, ns.
        contender_ns_per_packet: f64,
    }

    /// Contenders sleep when idle (`--sleep`): blocking `recvmmsg`, `poll` on the ring.
    static SLEEP: AtomicBool = AtomicBool::new(false);

    /// The RX peer's rate limit in datagrams a second (`--pace`, in Mpps), as `f64` bits; 0
    /// for none.
    static PACE: AtomicU64 = AtomicU64::new(0);

    /// (delivered to the contender, sent by the peer, contender CPU ns per packet).
    fn rx_trial(lab: &Lab, secs: f64, contender: Rx, peer_gso: bool) -> (f64, f64, f64) {
        let local = SocketAddr::new(IpAddr::V4(A), PORT);
        // The contender's socket is set up inside its closure, during the warm-up that
        // precedes the measurement.
        let t = trial(
            lab,
            secs,
            move |count, stop| match contender {
                Rx::Recvmmsg | Rx::RecvmmsgTos => drain(
                    &udp_socket(local),
                    count,
                    stop,
                    SLEEP.load(Ordering::Relaxed),
                    contender == Rx::RecvmmsgTos,
                ),
                Rx::Uring | Rx::UringDeferred | Rx::UringNoEcn | Rx::UringGro => {
                    let mut config = UringConfig::new(local);
                    if contender == Rx::UringGro {
                        config = config.with_offloads();
                    } else {
                        let buffers = arg("--rx-buffers", f64::from(config.rx_buffers));
                        config.rx_buffers = buffers as u16;
                    }
                    config.defer_taskrun = contender == Rx::UringDeferred;
                    // The same socket buffer as the recvmmsg contender's.
                    config.socket_buffer = SOCKET_BUFFER;
                    config.receive_ecn = contender != Rx::UringNoEcn;
                    let (mut rx, _tx) = open(&config).expect("open the underlay");
                    let mut spare: Vec<&'static mut [u8]> = Vec::with_capacity(256);
                    while !stop.load(Ordering::Relaxed) {
                        let mut frames = switchyard::backend::recycle(std::mem::take(&mut spare));
                        let n = rx.recv(&mut frames, 256).expect("recv");
                        spare = switchyard::backend::recycle(frames);
                        rx.release();
                        if n > 0 {
                            count.fetch_add(n as u64, Ordering::Relaxed);
                        } else if SLEEP.load(Ordering::Relaxed) {
                            let mut fd = libc::pollfd {
                                fd: rx.poll_fd().unwrap(),
                                events: libc::POLLIN,
                                revents: 0,
                            };
                            // SAFETY: one valid pollfd.
                            unsafe { libc::poll(&mut fd, 1, 50) };
                        }
                    }
                }
            },
            move |count, stop| {
                let socket = udp_socket(SocketAddr::new(IpAddr::V4(B), PORT));
                blast(&socket, local, peer_gso, count, stop);
            },
        );
        (t.contender, t.peer, t.contender_ns_per_packet)
    }

    /// (delivered to the peer, sent by the contender, contender CPU ns per packet sent).
    fn tx_trial(lab: &Lab, secs: f64, contender: Tx) -> (f64, f64, f64) {
        let local = SocketAddr::new(IpAddr::V4(A), PORT);
        let remote = SocketAddr::new(IpAddr::V4(B), PORT);
        let t = trial(
            lab,
            secs,
            move |count, stop| match contender {
                Tx::Sendmmsg => {
                    blast(&udp_socket(local), remote, false, count, stop);
                }
                Tx::Uring | Tx::UringZerocopy | Tx::UringGso => {
                    let mut config = UringConfig::new(local);
                    config.gso = contender == Tx::UringGso;
                    config.send_zerocopy = contender == Tx::UringZerocopy;
                    let (_rx, mut tx) = open(&config).expect("open the underlay");
                    let underlay = Underlay::ipv4(MAC, MAC, A, B);
                    let template = EncapTemplate::new(
                        &EncapConfig::default(),
                        &underlay,
                        Vni::new(42).unwrap(),
                    )
                    .unwrap();
                    let inner = &payload()[8..];
                    assert_eq!(inner.len(), INNER);
                    let mut header = [0u8; 70];
                    let len = template
                        .encap_header(inner, &mut header, &mut IpIdent::new(1))
                        .unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..BATCH {
                            tx.send(&header[..len], inner).expect("send");
                        }
                        tx.flush().expect("flush");
                        count.fetch_add(BATCH as u64, Ordering::Relaxed);
                    }
                    let stats = tx.stats();
                    assert_eq!(stats.dropped, 0, "{:?}", tx.last_error());
                }
            },
            move |count, stop| {
                let socket = udp_socket(remote);
                set_int(&socket, libc::SOL_UDP, libc::UDP_GRO, 1);
                drain(&socket, count, stop, false, false);
            },
        );
        (t.peer, t.contender, t.contender_ns_per_packet)
    }

    fn median(values: &mut [f64]) -> f64 {
        if values.is_empty() {
            return f64::NAN;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        }
    }

    fn arg(name: &str, default: f64) -> f64 {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    pub fn main() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("uring-bench needs root (network namespaces); nothing measured");
            std::process::exit(1);
        }
        let reps = arg("--reps", 5.0) as usize;
        let secs = arg("--secs", 1.5);
        // Only the cases whose name contains this (all by default).
        let filter = std::env::args()
            .skip_while(|a| a != "--filter")
            .nth(1)
            .unwrap_or_default();
        let sleep = std::env::args().any(|a| a == "--sleep");
        SLEEP.store(sleep, Ordering::Relaxed);
        let rps = std::env::args().any(|a| a == "--rps");
        PACE.store((arg("--pace", 0.0) * 1e6).to_bits(), Ordering::Relaxed);
        let lab = Lab::new(rps);
        println!(
            "uring-bench: {PAYLOAD}-byte UDP payloads over veth, {reps} repetitions of {secs} s, \
             {} CPUs (contender on CPU 1, peer on CPU 0; the machine may be shared)",
            num_cpus()
        );
        // (name, contender, peer sends with GSO, GRO on A's veth, baseline row). The io_uring
        // underlay reads each datagram's TOS (ECN) by default: its like-for-like baseline is
        // `recvmmsg` with `IP_RECVTOS`; without ECN, plain `recvmmsg`.
        let rx_cases: [(&str, Rx, bool, bool, usize); 10] = [
            (
                "RX recvmmsg       (peer sendmmsg)",
                Rx::Recvmmsg,
                false,
                false,
                0,
            ),
            (
                "RX io_uring       (peer sendmmsg)",
                Rx::Uring,
                false,
                false,
                0,
            ),
            (
                "RX recvmmsg       (peer sendmmsg, veth GRO)",
                Rx::Recvmmsg,
                false,
                true,
                2,
            ),
            (
                "RX io_uring + GRO (peer sendmmsg, veth GRO)",
                Rx::UringGro,
                false,
                true,
                2,
            ),
            ("RX recvmmsg       (peer GSO)", Rx::Recvmmsg, true, false, 4),
            (
                "RX recvmmsg + IP_RECVTOS (peer GSO)",
                Rx::RecvmmsgTos,
                true,
                false,
                4,
            ),
            ("RX io_uring       (peer GSO)", Rx::Uring, true, false, 5),
            (
                "RX io_uring, no ECN (peer GSO)",
                Rx::UringNoEcn,
                true,
                false,
                4,
            ),
            (
                "RX io_uring, DEFER_TASKRUN (peer GSO)",
                Rx::UringDeferred,
                true,
                false,
                5,
            ),
            ("RX io_uring + GRO (peer GSO)", Rx::UringGro, true, false, 4),
        ];
        let tx_cases: [(&str, Tx); 4] = [
            ("TX sendmmsg", Tx::Sendmmsg),
            ("TX io_uring", Tx::Uring),
            ("TX io_uring, SENDMSG_ZC", Tx::UringZerocopy),
            ("TX io_uring + GSO", Tx::UringGso),
        ];
        let mut rx_results = vec![Vec::new(); rx_cases.len()];
        let mut tx_results = vec![Vec::new(); tx_cases.len()];
        let mut rx_offered = vec![Vec::new(); rx_cases.len()];
        let mut tx_offered = vec![Vec::new(); tx_cases.len()];
        let mut rx_cpu = vec![Vec::new(); rx_cases.len()];
        let mut tx_cpu = vec![Vec::new(); tx_cases.len()];
        // Interleaved: every repetition runs every case, so slow phases of a shared machine
        // hit all of them.
        for rep in 0..reps {
            for (i, (name, contender, peer_gso, veth_gro, _)) in rx_cases.iter().enumerate() {
                if !name.contains(&filter) {
                    continue;
                }
                // A veth hands a locally sent UDP packet to its peer's NAPI (where GRO runs)
                // only if that peer also has rx-udp-gro-forwarding (or rx-gro-list) on:
                // veth_skb_is_eligible_for_gro().
                let gro = if *veth_gro { "on" } else { "off" };
                ip_netns_exec(
                    &lab.a,
                    &[
                        "ethtool",
                        "-K",
                        "ubench-a",
                        "gro",
                        gro,
                        "rx-udp-gro-forwarding",
                        gro,
                    ],
                );
                let (mpps, offered, ns) = rx_trial(&lab, secs, *contender, *peer_gso);
                eprintln!(
                    "rep {rep}: {name} {mpps:.3} Mpps (peer sent {offered:.3}), {ns:.0} ns/packet"
                );
                rx_results[i].push(mpps);
                rx_offered[i].push(offered);
                rx_cpu[i].push(ns);
            }
            for (i, (name, contender)) in tx_cases.iter().enumerate() {
                if !name.contains(&filter) {
                    continue;
                }
                let (mpps, sent, ns) = tx_trial(&lab, secs, *contender);
                eprintln!("rep {rep}: {name} {mpps:.3} Mpps (sent {sent:.3}), {ns:.0} ns/packet");
                tx_results[i].push(mpps);
                tx_offered[i].push(sent);
                tx_cpu[i].push(ns);
            }
        }
        println!(
            "\n{:<46} {:>9} {:>7} {:>8} {:>8}  delivered, each repetition (Mpps)",
            "case", "delivered", "ratio", "sent", "ns/pkt"
        );
        // Each RX row against recvmmsg with the same peer and veth setting.
        for (i, ((name, _, _, _, base), results)) in rx_cases.iter().zip(&rx_results).enumerate() {
            let m = median(&mut results.clone());
            let base = median(&mut rx_results[*base].clone());
            println!(
                "{name:<46} {m:>9.3} {:>6.2}x {:>8.3} {:>8.0}  {:?}",
                m / base,
                median(&mut rx_offered[i].clone()),
                median(&mut rx_cpu[i].clone()),
                results
                    .iter()
                    .map(|v| (v * 1000.0).round() / 1000.0)
                    .collect::<Vec<_>>()
            );
        }
        let tx_base = median(&mut tx_results[0].clone());
        for (i, ((name, _), results)) in tx_cases.iter().zip(&tx_results).enumerate() {
            let m = median(&mut results.clone());
            println!(
                "{name:<46} {m:>9.3} {:>6.2}x {:>8.3} {:>8.0}  {:?}",
                m / tx_base,
                median(&mut tx_offered[i].clone()),
                median(&mut tx_cpu[i].clone()),
                results
                    .iter()
                    .map(|v| (v * 1000.0).round() / 1000.0)
                    .collect::<Vec<_>>()
            );
        }
        println!(
            "(ratios: RX against recvmmsg with the same peer (io_uring with ECN against \
             recvmmsg + IP_RECVTOS), TX against sendmmsg; ns/pkt: CPU time of the contender's \
             thread per packet it received or sent{})",
            if sleep {
                ", contenders sleeping when idle"
            } else {
                ", busy-polling"
            }
        );
    }
}
