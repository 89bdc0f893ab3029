//! Interoperability of `vswitch` with the Linux kernel's VXLAN device (what Flannel, Calico
//! and Weave program on every Kubernetes node), in network namespaces: node A runs vswitch
//! (AF_PACKET backend) with pods behind it, nodes B and C a Linux bridge + kernel `vxlan`
//! device with a pod each, all three nodes on one underlay L2 (a bridge in a namespace of its
//! own). Each test builds its own lab and removes it (namespaces, vswitch, captures) also when
//! it fails; tests run one at a time.
//!
//! Root only: skipped loudly otherwise, and a failure under `CI=true`. Tools: iproute2,
//! iputils-ping, tcpdump, tshark (missing ones: skipped loudly, or a failure under CI with
//! the `apt-get install` line).
//!
//! Captures of what vswitch sends are taken on the underlay bridge's port towards node A:
//! vswitch transmits with `PACKET_QDISC_BYPASS`, which skips the kernel's packet taps, so
//! tcpdump on node A's own `ul0` sees only what node A receives. `INTEROP_HOLD_SECS=N`
//! keeps each lab (with vswitch running) for N seconds before removing it, for inspection.
#![cfg(all(target_os = "linux", feature = "af-packet"))]

mod interop;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use interop::{
    count, counter, exec, exec_ok, marker_frame, send_frames, start, tshark, udp_frame,
    vxlan_payload, worker_sum, Options, Pod, Stream, Topology, VNI,
};
use switchyard::backend::netns;

const PING: (&str, &str) = ("ping", "iputils-ping");
const TCPDUMP: (&str, &str) = ("tcpdump", "tcpdump");
const TSHARK: (&str, &str) = ("tshark", "tshark");

/// `ping -c N` from `from`; asserts every reply came back.
fn ping_all(t: &Topology, from: &Pod, to: &str, n: u32) -> String {
    let n_text = n.to_string();
    let out = exec(
        &from.ns,
        &["ping", "-n", "-c", &n_text, "-i", "0.2", "-W", "2", to],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains(&format!("{n} received")),
        "ping {to} from {}: {text}{}\ncounters: {}",
        from.ns,
        String::from_utf8_lossy(&out.stderr),
        t.ctl(&["show", "counters"])
    );
    text
}

// ---------------------------------------------------------------------------------------
// 1. ping both ways

#[test]
fn ping_both_ways_between_vswitch_and_kernel_vtep() {
    let Some((_serial, t)) = start(
        "ping_both_ways_between_vswitch_and_kernel_vtep",
        &[PING],
        "ping",
        Options::default(),
    ) else {
        return;
    };
    let (a, b) = (t.pods_a[0].clone(), t.pod_b.clone());
    t.wait_ping(&a, &b.ip_text(), Duration::from_secs(10));
    ping_all(&t, &a, &b.ip_text(), 5);
    ping_all(&t, &b, &a.ip_text(), 5);
    // The kernel VTEP learned pod A behind vswitch's underlay address.
    let kernel_fdb = exec_ok(&t.node_b, &["bridge", "fdb", "show", "dev", "vxlan0"]);
    assert!(
        kernel_fdb.contains(&format!("{} dst 198.18.0.1", a.mac_text())),
        "node B's kernel FDB lacks pod A behind 198.18.0.1:\n{kernel_fdb}"
    );
}

// ---------------------------------------------------------------------------------------
// 8. IPv6 underlay

#[test]
fn ipv6_underlay_ping_across() {
    let Some((_serial, t)) = start(
        "ipv6_underlay_ping_across",
        &[PING],
        "v6",
        Options {
            ipv6: true,
            // 70 bytes of IPv6 VXLAN overhead under a 1500-byte underlay.
            vswitch_pod_mtu: 1430,
            kernel_pod_mtu: 1430,
            ..Options::default()
        },
    ) else {
        return;
    };
    let (a, b) = (t.pods_a[0].clone(), t.pod_b.clone());
    t.wait_ping(&a, &b.ip_text(), Duration::from_secs(15));
    ping_all(&t, &a, &b.ip_text(), 5);
    ping_all(&t, &b, &a.ip_text(), 5);
    // Full-size frames too (1430-byte inner packets: 1500-byte outer IPv6 packets).
    let out = exec(
        &a.ns,
        &[
            "ping",
            "-n",
            "-c",
            "3",
            "-i",
            "0.2",
            "-M",
            "do",
            "-s",
            "1402",
            &b.ip_text(),
        ],
    );
    assert!(
        out.status.success(),
        "full-size ping over the IPv6 underlay: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let fdb = t.fdb();
    assert!(
        fdb.iter()
            .any(|(mac, dst, _)| *mac == b.mac_text() && dst == "vtep 2001:db8::2"),
        "pod B not learned behind 2001:db8::2: {fdb:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 9. destination port 8472

#[test]
fn udp_port_8472_as_flannel() {
    let Some((_serial, mut t)) = start(
        "udp_port_8472_as_flannel",
        &[PING, TCPDUMP, TSHARK],
        "p8472",
        Options {
            udp_port: 8472,
            ..Options::default()
        },
    ) else {
        return;
    };
    let (a, b) = (t.pods_a[0].clone(), t.pod_b.clone());
    t.wait_ping(&a, &b.ip_text(), Duration::from_secs(10));
    let file = t.capture_underlay("ul");
    ping_all(&t, &a, &b.ip_text(), 3);
    ping_all(&t, &b, &a.ip_text(), 3);
    t.stop_captures();
    // 6 echo requests and 6 replies, all on UDP 8472 both ways; none on 4789.
    let to_b = count(
        &file,
        8472,
        "ip.src == 198.18.0.1 && ip.dst == 198.18.0.2 && udp.dstport == 8472 && vxlan.vni == 42 && icmp",
    );
    let from_b = count(
        &file,
        8472,
        "ip.src == 198.18.0.2 && ip.dst == 198.18.0.1 && udp.dstport == 8472 && vxlan.vni == 42 && icmp",
    );
    assert_eq!((to_b, from_b), (6, 6), "ICMP in VXLAN on port 8472");
    assert_eq!(count(&file, 8472, "udp.port == 4789"), 0);
}

// ---------------------------------------------------------------------------------------
// 2. a 10 MB TCP transfer both ways with intact payload

/// Accepts one connection within `timeout` on a listener opened in the calling thread's
/// namespace.
fn accept_within(listener: &TcpListener, timeout: Duration) -> std::io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sends `bytes` of the stream `seed` from a client in `client_ns` to a server in
/// `server_ns` listening on `addr`; the server checks every byte. Returns (bytes received,
/// bytes that differ, seconds).
fn tcp_transfer(
    server_ns: &str,
    client_ns: &str,
    addr: SocketAddr,
    bytes: usize,
    seed: u64,
) -> (usize, usize, f64) {
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let server = scope.spawn(move || {
            netns::run_in(server_ns, move || -> std::io::Result<(usize, usize)> {
                let listener = TcpListener::bind(addr)?;
                ready_tx.send(()).expect("test alive");
                let mut stream = accept_within(&listener, Duration::from_secs(15))?;
                stream.set_read_timeout(Some(Duration::from_secs(20)))?;
                let mut expected = Stream::new(seed);
                let mut buf = vec![0u8; 1 << 16];
                let (mut total, mut differ) = (0usize, 0usize);
                loop {
                    let n = stream.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    differ += buf[..n]
                        .iter()
                        .filter(|&&b| b != expected.next_byte())
                        .count();
                    total += n;
                }
                Ok((total, differ))
            })
            .expect("entering the server's namespace")
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server listening");
        let started = Instant::now();
        netns::run_in(client_ns, || -> std::io::Result<()> {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
            stream.set_write_timeout(Some(Duration::from_secs(5)))?;
            let mut source = Stream::new(seed);
            let mut buf = vec![0u8; 1 << 16];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len());
                source.fill(&mut buf[..n]);
                stream.write_all(&buf[..n])?;
                left -= n;
            }
            stream.shutdown(Shutdown::Write)
        })
        .expect("entering the client's namespace")
        .expect("client: connect and send");
        let (total, differ) = server
            .join()
            .expect("server thread")
            .expect("server: accept and receive");
        (total, differ, started.elapsed().as_secs_f64())
    })
}

/// The 10 MB transfers both ways; returns `show counters` afterwards.
fn tcp_both_ways(t: &Topology) -> serde_json::Value {
    let (a, b) = (t.pods_a[0].clone(), t.pod_b.clone());
    t.wait_ping(&a, &b.ip_text(), Duration::from_secs(10));
    const BYTES: usize = 10 * 1024 * 1024;
    let to_b: SocketAddr = format!("{}:5001", b.ip_text()).parse().unwrap();
    let to_a: SocketAddr = format!("{}:5002", a.ip_text()).parse().unwrap();
    let (got, differ, secs) = tcp_transfer(&b.ns, &a.ns, to_b, BYTES, 0xa11ce);
    eprintln!("pod A -> pod B: {got} bytes in {secs:.2} s, {differ} differ");
    assert_eq!((got, differ), (BYTES, 0), "pod A -> pod B");
    let (got, differ, secs) = tcp_transfer(&a.ns, &b.ns, to_a, BYTES, 0xb0b);
    eprintln!("pod B -> pod A: {got} bytes in {secs:.2} s, {differ} differ");
    assert_eq!((got, differ), (BYTES, 0), "pod B -> pod A");
    let c = t.counters();
    eprintln!(
        "vswitch: gso_frames {} gso_segments {} gso_dropped {} checksums_completed {}",
        worker_sum(&c, "gso_frames"),
        worker_sum(&c, "gso_segments"),
        worker_sum(&c, "gso_dropped"),
        worker_sum(&c, "checksums_completed")
    );
    c
}

#[test]
fn tcp_10_mb_both_ways_intact() {
    // Every veth keeps its default offloads: pod A's TCP reaches vswitch as TCP GSO
    // super-frames, and node B's kernel hands its VXLAN-encapsulated TCP to the veth
    // underlay as UDP-tunnel GSO super-frames; vswitch cuts both in software.
    let Some((_serial, t)) = start(
        "tcp_10_mb_both_ways_intact",
        &[PING],
        "tcp",
        Options::default(),
    ) else {
        return;
    };
    let c = tcp_both_ways(&t);
    assert!(
        worker_sum(&c, "gso_segments") > 0,
        "no GSO super-frame was cut: {c}"
    );
    assert_eq!(worker_sum(&c, "gso_dropped"), 0, "counters: {c}");
}

// ---------------------------------------------------------------------------------------
// 3. ARP suppression

#[test]
fn arp_suppression_answers_locally_and_nothing_crosses() {
    let b_mac = "02:00:00:00:00:02";
    let Some((_serial, mut t)) = start(
        "arp_suppression_answers_locally_and_nothing_crosses",
        &[PING, TCPDUMP, TSHARK],
        "arp",
        Options {
            vni: "arp_suppression = true".into(),
            extra: format!("[[neighbor]]\nvni = {VNI}\nip = \"198.19.0.2\"\nmac = \"{b_mac}\"\n"),
            ..Options::default()
        },
    ) else {
        return;
    };
    let (a, b) = (t.pods_a[0].clone(), t.pod_b.clone());
    // Pod B knows pod A already: its own ARP (the kernel VTEP does not suppress) stays out of
    // the count.
    exec_ok(
        &b.ns,
        &[
            "ip",
            "neigh",
            "replace",
            &a.ip_text(),
            "lladdr",
            &a.mac_text(),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    );
    // Resolve the underlay next hop first, then forget pod B in pod A.
    t.wait_ping(&a, &b.ip_text(), Duration::from_secs(10));
    exec_ok(&a.ns, &["ip", "neigh", "flush", "dev", "eth0"]);
    let before = t.counters();
    let file = t.capture_underlay("suppressed");
    ping_all(&t, &a, &b.ip_text(), 3);
    t.stop_captures();
    let after = t.counters();
    let neigh = exec_ok(&a.ns, &["ip", "neigh", "show", &b.ip_text()]);
    assert!(
        neigh.contains(&format!("lladdr {b_mac}")),
        "pod A did not resolve pod B: {neigh:?}"
    );
    let arp_in_vxlan = count(&file, 4789, "vxlan && arp");
    let icmp_in_vxlan = count(&file, 4789, "vxlan && icmp");
    assert_eq!(
        arp_in_vxlan, 0,
        "ARP crossed the tunnel despite suppression"
    );
    assert_eq!(icmp_in_vxlan, 6, "the pings themselves crossed");
    assert!(
        counter(&after, "consumed") > counter(&before, "consumed"),
        "vswitch did not count the ARP request as consumed: {before} -> {after}"
    );

    // Control: without the neighbour entry, pod A's ARP request is flooded over the tunnel,
    // so the capture above would have seen one.
    t.ctl(&["del", "neighbor", "vni=42", "ip=198.19.0.2"]);
    exec_ok(&a.ns, &["ip", "neigh", "flush", "dev", "eth0"]);
    let file = t.capture_underlay("not-suppressed");
    ping_all(&t, &a, &b.ip_text(), 1);
    t.stop_captures();
    assert!(
        count(
            &file,
            4789,
            "vxlan && arp.opcode == 1 && arp.dst.proto_ipv4 == 198.19.0.2"
        ) >= 1,
        "control: no ARP request in VXLAN without the neighbour entry"
    );
}

// ---------------------------------------------------------------------------------------
// 4. exact flood counts with two kernel VTEPs, split horizon

/// (outer source, outer destination) of the VXLAN packets matching `filter`, sorted.
fn outer_pairs(file: &std::path::Path, filter: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = tshark(file, 4789, filter, &["ip.src", "ip.dst"], false)
        .into_iter()
        .map(|f| (f[0].clone(), f[1].clone()))
        .collect();
    v.sort();
    v
}

fn pair(src: &str, dst: &str) -> (String, String) {
    (src.to_owned(), dst.to_owned())
}

#[test]
fn flood_one_copy_per_vtep_and_split_horizon() {
    let Some((_serial, mut t)) = start(
        "flood_one_copy_per_vtep_and_split_horizon",
        &[PING, TCPDUMP, TSHARK],
        "flood",
        Options {
            kernel_nodes: 2,
            ..Options::default()
        },
    ) else {
        return;
    };
    let a = t.pods_a[0].clone();
    let (b, c) = (t.pod_b.clone(), t.pod_c.clone().unwrap());
    t.wait_ping(&a, &b.ip_text(), Duration::from_secs(10));
    t.wait_ping(&a, &c.ip_text(), Duration::from_secs(10));
    let underlay = t.capture_underlay("underlay");
    let at_a = t.capture(&a.ns, "eth0", "pod-a");
    let at_b = t.capture(&b.ns, "eth0", "pod-b");
    let at_c = t.capture(&c.ns, "eth0", "pod-c");
    let broadcast = [0xff; 6];
    send_frames(
        &a.ns,
        "eth0",
        &[marker_frame(broadcast, a.mac, 0xa1a1_a1a1)],
    );
    std::thread::sleep(Duration::from_millis(300));
    send_frames(
        &b.ns,
        "eth0",
        &[marker_frame(broadcast, b.mac, 0xb2b2_b2b2)],
    );
    t.stop_captures();

    let from_a = format!("vxlan && eth.type == 0x88b5 && eth.src == {}", a.mac_text());
    assert_eq!(
        outer_pairs(&underlay, &from_a),
        vec![
            pair("198.18.0.1", "198.18.0.2"),
            pair("198.18.0.1", "198.18.0.3")
        ],
        "one broadcast from pod A: exactly one VXLAN copy to B and one to C"
    );
    let marker_from = |mac: &str| format!("eth.type == 0x88b5 && eth.src == {mac}");
    assert_eq!(count(&at_b, 4789, &marker_from(&a.mac_text())), 1, "pod B");
    assert_eq!(count(&at_c, 4789, &marker_from(&a.mac_text())), 1, "pod C");

    // Node B's kernel floods pod B's broadcast to A (and C); A delivers it to its pod once
    // and never sends it back into the tunnel.
    let from_b = format!("vxlan && eth.type == 0x88b5 && eth.src == {}", b.mac_text());
    let pairs = outer_pairs(&underlay, &from_b);
    assert_eq!(
        pairs.iter().filter(|p| p.1 == "198.18.0.1").count(),
        1,
        "node B's copy to A: {pairs:?}"
    );
    assert_eq!(
        pairs.iter().filter(|p| p.0 == "198.18.0.1").count(),
        0,
        "split horizon: vswitch re-flooded a frame from the tunnel: {pairs:?}"
    );
    assert_eq!(count(&at_a, 4789, &marker_from(&b.mac_text())), 1, "pod A");
}

// ---------------------------------------------------------------------------------------
// 5. static entries, learning, ageing by source refresh only

fn has(fdb: &[(String, String, String)], mac: &str, destination: &str, kind: &str) -> bool {
    fdb.iter()
        .any(|(m, d, k)| m == mac && d == destination && k == kind)
}

#[test]
fn static_entries_learning_and_ageing_by_source_only() {
    let Some((_serial, mut t)) = start(
        "static_entries_learning_and_ageing_by_source_only",
        &[PING, TCPDUMP, TSHARK],
        "fdb",
        Options {
            kernel_nodes: 2,
            vni: "ageing_secs = 3".into(),
            extra: format!(
                "[[fdb]]\nvni = {VNI}\nmac = \"02:00:00:00:00:99\"\nremote = \"198.18.0.2\"\n"
            ),
            ..Options::default()
        },
    ) else {
        return;
    };
    let a = t.pods_a[0].clone();
    let (b, c) = (t.pod_b.clone(), t.pod_c.clone().unwrap());
    t.wait_ping(&a, &b.ip_text(), Duration::from_secs(10));
    t.wait_ping(&a, &c.ip_text(), Duration::from_secs(10));

    // Static: from the file, and added at run time.
    t.ctl(&[
        "add",
        "fdb",
        "vni=42",
        "mac=02:00:00:00:00:98",
        "remote=198.18.0.3",
    ]);
    let fdb = t.fdb();
    assert!(
        has(&fdb, "02:00:00:00:00:99", "vtep 198.18.0.2", "static"),
        "{fdb:?}"
    );
    assert!(
        has(&fdb, "02:00:00:00:00:98", "vtep 198.18.0.3", "static"),
        "{fdb:?}"
    );
    // Learned: pods B and C behind their VTEPs, pod A on its port.
    assert!(
        has(&fdb, &b.mac_text(), "vtep 198.18.0.2", "learned"),
        "{fdb:?}"
    );
    assert!(
        has(&fdb, &c.mac_text(), "vtep 198.18.0.3", "learned"),
        "{fdb:?}"
    );
    assert!(
        has(&fdb, &a.mac_text(), "port pod-a1", "learned"),
        "{fdb:?}"
    );

    // Static entries forward: exactly one copy, to their VTEP (flooding would send to both).
    let underlay = t.capture_underlay("static");
    send_frames(
        &a.ns,
        "eth0",
        &[
            marker_frame([2, 0, 0, 0, 0, 0x99], a.mac, 1),
            marker_frame([2, 0, 0, 0, 0, 0x98], a.mac, 2),
        ],
    );
    t.stop_captures();
    assert_eq!(
        outer_pairs(&underlay, "vxlan && eth.dst == 02:00:00:00:00:99"),
        vec![pair("198.18.0.1", "198.18.0.2")]
    );
    assert_eq!(
        outer_pairs(&underlay, "vxlan && eth.dst == 02:00:00:00:00:98"),
        vec![pair("198.18.0.1", "198.18.0.3")]
    );
    t.ctl(&["del", "fdb", "vni=42", "mac=02:00:00:00:00:98"]);
    assert!(
        !t.fdb().iter().any(|(m, _, _)| m == "02:00:00:00:00:98"),
        "deleted static entry still shown"
    );

    // Ageing by source refresh only, with two MACs that exist only in crafted frames (the
    // pods' own kernels send ARP probes of their own accord): SILENT sends one frame from
    // node B's pod namespace, then only receives (frames towards it from pod A every 200 ms);
    // TALKER sends from node C's pod namespace every 200 ms. With ageing_secs = 3 (1 s
    // granularity) SILENT's entry goes about 2-3 s after its frame; TALKER's never does.
    const SILENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb0];
    const TALKER: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc0];
    let (silent, talker) = ("02:00:00:00:00:b0", "02:00:00:00:00:c0");
    let stop = Arc::new(AtomicBool::new(false));
    let ageing_capture = t.capture_underlay("ageing");
    let sender = {
        let (stop, c, a_mac) = (Arc::clone(&stop), c.clone(), a.mac);
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                send_frames(&c.ns, "eth0", &[marker_frame(a_mac, TALKER, 0xc000 + n)]);
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    send_frames(&b.ns, "eth0", &[marker_frame(a.mac, SILENT, 0xb000)]);
    let silent_sent = Instant::now();
    let (mut silent_seen, mut silent_gone) = (false, None);
    let mut talker_missing = Vec::new();
    let mut panic_message = None;
    while silent_sent.elapsed() < Duration::from_secs(7) {
        send_frames(&a.ns, "eth0", &[marker_frame(SILENT, a.mac, 0xa000)]);
        std::thread::sleep(Duration::from_millis(150));
        let fdb = t.fdb();
        let elapsed = silent_sent.elapsed();
        if !has(&fdb, talker, "vtep 198.18.0.3", "learned") {
            talker_missing.push(elapsed);
        }
        let there = has(&fdb, silent, "vtep 198.18.0.2", "learned");
        silent_seen |= there;
        if there && silent_gone.is_some() {
            panic_message = Some(format!(
                "{silent}'s entry came back at {elapsed:?} (gone at {silent_gone:?}): {fdb:?}"
            ));
            break;
        }
        if !there && silent_seen && silent_gone.is_none() {
            silent_gone = Some(elapsed);
        }
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("pod C's sender");
    t.stop_captures();
    if let Some(message) = panic_message {
        let from_silent = tshark(
            &ageing_capture,
            4789,
            &format!("eth.src == {silent}"),
            &["frame.time_relative", "ip.src", "ip.dst"],
            true,
        );
        panic!("{message}\nframes from {silent} on the underlay: {from_silent:?}");
    }
    assert!(silent_seen, "{silent} was never learned");
    let gone = silent_gone.expect("an entry that only receives traffic never aged out");
    assert!(
        gone >= Duration::from_millis(1500) && gone <= Duration::from_millis(4500),
        "{silent}'s entry aged out after {gone:?}; expected 2-3 s (ageing_secs = 3, 1 s \
         granularity)"
    );
    assert!(
        talker_missing.is_empty(),
        "{talker} kept sending but its entry was missing at {talker_missing:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 6. TTL / TOS / DF of the outer header, as tshark sees them on the underlay

/// (ttl, dsfield, df) of the outer and inner IPv4 headers of the ICMP echo requests vswitch
/// sent, one per packet.
fn outer_and_inner(file: &std::path::Path) -> Vec<[String; 6]> {
    tshark(
        file,
        4789,
        "ip.src == 198.18.0.1 && vxlan && icmp.type == 8",
        &["ip.ttl", "ip.dsfield", "ip.flags.df"],
        true,
    )
    .into_iter()
    .map(|f| {
        let two = |s: &String| {
            let mut it = s.split(',').map(str::to_owned);
            (it.next().unwrap_or_default(), it.next().unwrap_or_default())
        };
        let (ttl, dsfield, df) = (two(&f[0]), two(&f[1]), two(&f[2]));
        [ttl.0, dsfield.0, df.0, ttl.1, dsfield.1, df.1]
    })
    .collect()
}

fn echo_requests(t: &mut Topology, name: &str, ping_args: &[&str]) -> Vec<[String; 6]> {
    let (a, b) = (t.pods_a[0].clone(), t.pod_b.clone());
    t.wait_ping(&a, &b.ip_text(), Duration::from_secs(10));
    let file = t.capture_underlay(name);
    let mut args = vec!["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2"];
    args.extend_from_slice(ping_args);
    let b_ip = b.ip_text();
    args.push(&b_ip);
    let out = exec(&a.ns, &args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    t.stop_captures();
    let rows = outer_and_inner(&file);
    assert_eq!(rows.len(), 3, "{name}: echo requests captured: {rows:?}");
    rows
}

#[test]
fn outer_ttl_tos_df_fixed_unset_and_inherited() {
    let Some((_serial, mut t)) = start(
        "outer_ttl_tos_df_fixed_unset_and_inherited",
        &[PING, TCPDUMP, TSHARK],
        "ttl",
        Options {
            underlay: "ttl = 17\ntos = 0x20\ndf = \"set\"".into(),
            ..Options::default()
        },
    ) else {
        return;
    };
    let fixed = echo_requests(&mut t, "fixed", &["-t", "50", "-Q", "0x08"]);
    for row in &fixed {
        assert_eq!(
            (&row[0][..], &row[1][..], &row[2][..]),
            ("17", "0x20", "1"),
            "ttl = 17, tos = 0x20, df = set: outer (ttl, dsfield, df) = {row:?}"
        );
    }

    let unset = t
        .default_config()
        .replace("ttl = 17\ntos = 0x20\ndf = \"set\"", "df = \"unset\"");
    t.start_vswitch(&unset);
    for row in &echo_requests(&mut t, "unset", &["-M", "do"]) {
        assert_eq!(
            (&row[0][..], &row[1][..], &row[2][..]),
            ("64", "0x00", "0"),
            "defaults and df = unset (inner DF set): outer (ttl, dsfield, df) = {row:?}"
        );
    }

    let inherit = t.default_config().replace(
        "ttl = 17\ntos = 0x20\ndf = \"set\"",
        "ttl = \"inherit\"\ntos = \"inherit\"\ndf = \"inherit\"",
    );
    t.start_vswitch(&inherit);
    let with_df = echo_requests(
        &mut t,
        "inherit-df",
        &["-t", "33", "-Q", "0x28", "-M", "do"],
    );
    let without_df = echo_requests(
        &mut t,
        "inherit-nodf",
        &["-t", "21", "-Q", "0xb8", "-M", "dont"],
    );
    for (rows, expected) in [
        (with_df, ["33", "0x28", "1"]),
        (without_df, ["21", "0xb8", "0"]),
    ] {
        for row in rows {
            assert_eq!(
                [&row[3][..], &row[4][..], &row[5][..]],
                expected,
                "inner header as sent by ping: {row:?}"
            );
            assert_eq!(
                [&row[0][..], &row[1][..], &row[2][..]],
                expected,
                "inherit: outer (ttl, dsfield, df) must copy the inner: {row:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 7. the ECN decapsulation table (RFC 6040)

const NOT_ECT: u8 = 0b00;
const ECT1: u8 = 0b01;
const ECT0: u8 = 0b10;
const CE: u8 = 0b11;

/// SPEC-overlay.md's table: what the inner ECN becomes (None: dropped).
fn rfc6040(inner: u8, outer: u8) -> Option<u8> {
    match (inner, outer) {
        (NOT_ECT, CE) => None,
        (NOT_ECT, _) => Some(NOT_ECT),
        (CE, _) => Some(CE),
        (_, CE) => Some(CE),
        (ECT0, ECT1) => Some(ECT1),
        (inner, _) => Some(inner),
    }
}

#[test]
fn ecn_decapsulation_table_rfc6040() {
    let Some((_serial, mut t)) = start(
        "ecn_decapsulation_table_rfc6040",
        &[PING, TCPDUMP, TSHARK],
        "ecn",
        Options::default(),
    ) else {
        return;
    };
    let a = t.pods_a[0].clone();
    t.wait_ping(&a, &t.pod_b.ip_text(), Duration::from_secs(10));
    let before = t.counters();
    let at_a = t.capture(&a.ns, "eth0", "pod-a");
    // From node B's namespace: a UDP socket whose IP_TOS sets the outer ECN field, carrying
    // VXLAN with an inner IPv4/UDP packet (DSCP 10) whose ECN field is the other half of the
    // combination; the inner source port names the combination.
    let src_mac = [0x02, 0, 0, 0, 0, 0x42];
    netns::run_in(&t.node_b, || {
        for outer in 0..4u8 {
            for inner in 0..4u8 {
                let socket = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::DGRAM,
                    Some(socket2::Protocol::UDP),
                )
                .expect("UDP socket");
                socket.set_tos_v4(u32::from(outer)).expect("IP_TOS");
                let from: SocketAddr = "198.18.0.2:0".parse().unwrap();
                socket.bind(&from.into()).expect("bind");
                let inner_frame = udp_frame(
                    a.mac,
                    src_mac,
                    [198, 19, 0, 42],
                    a.ip,
                    (10 << 2) | inner,
                    (40_000 + u16::from(outer * 4 + inner), 9),
                    b"ecn",
                );
                let to: SocketAddr = "198.18.0.1:4789".parse().unwrap();
                socket
                    .send_to(&vxlan_payload(VNI, &inner_frame), &to.into())
                    .expect("send");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    })
    .expect("entering node B");
    t.stop_captures();
    let after = t.counters();
    let rows = tshark(
        &at_a,
        4789,
        "udp.dstport == 9 && udp.srcport >= 40000 && udp.srcport < 40016",
        &[
            "udp.srcport",
            "ip.dsfield.ecn",
            "ip.dsfield.dscp",
            "ip.checksum.status",
        ],
        false,
    );
    let mut seen = std::collections::BTreeMap::new();
    for row in &rows {
        let combination: u8 = (row[0].parse::<u16>().unwrap() - 40_000) as u8;
        assert!(
            seen.insert(combination, row.clone()).is_none(),
            "combination {combination} delivered twice: {rows:?}"
        );
    }
    let names = ["Not-ECT", "ECT(1)", "ECT(0)", "CE"];
    let mut wrong = Vec::new();
    for outer in 0..4u8 {
        for inner in 0..4u8 {
            let got = seen.get(&(outer * 4 + inner));
            let expected = rfc6040(inner, outer);
            let got_ecn = got.map(|r| r[1].parse::<u8>().unwrap());
            if got_ecn != expected {
                wrong.push(format!(
                    "outer {} x inner {}: expected {:?}, got {:?}",
                    names[outer as usize],
                    names[inner as usize],
                    expected.map(|e| names[e as usize]),
                    got_ecn.map(|e| names[e as usize])
                ));
            }
            if let Some(row) = got {
                assert_eq!(row[2], "10", "DSCP changed on decapsulation: {row:?}");
                assert_eq!(row[3], "1", "inner IPv4 checksum not good: {row:?}");
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "RFC 6040 decapsulation:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        counter(&after, "dropped_by_reason.ecn_ce_on_not_ect")
            - counter(&before, "dropped_by_reason.ecn_ce_on_not_ect"),
        1,
        "the one CE-over-Not-ECT packet is dropped and counted: {after}"
    );
}

// ---------------------------------------------------------------------------------------
// 10. an oversized ping with DF: "fragmentation needed", never an outer fragment

#[test]
fn oversized_df_ping_gets_frag_needed_and_no_outer_fragment() {
    let Some((_serial, mut t)) = start(
        "oversized_df_ping_gets_frag_needed_and_no_outer_fragment",
        &[PING, TCPDUMP, TSHARK],
        "mtu",
        Options {
            vswitch_pod_mtu: 1500,
            ..Options::default()
        },
    ) else {
        return;
    };
    let (a, b) = (t.pods_a[0].clone(), t.pod_b.clone());
    t.wait_ping(&a, &b.ip_text(), Duration::from_secs(10));
    let before = t.counters();
    let underlay = t.capture_underlay("underlay");
    let at_a = t.capture(&a.ns, "eth0", "pod-a");
    let out = exec(
        &a.ns,
        &[
            "ping",
            "-n",
            "-c",
            "3",
            "-i",
            "0.3",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            "1472",
            &b.ip_text(),
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The largest inner packet that fits: 1450 bytes.
    let fits = exec(
        &a.ns,
        &[
            "ping",
            "-n",
            "-c",
            "2",
            "-i",
            "0.3",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1422",
            &b.ip_text(),
        ],
    );
    t.stop_captures();
    let after = t.counters();
    assert!(
        text.contains("Frag needed and DF set (mtu = 1450)") || text.contains("mtu=1450"),
        "ping -M do -s 1472 did not report fragmentation needed with mtu 1450:\n{text}"
    );
    assert!(
        fits.status.success(),
        "a 1450-byte inner packet must fit: {}",
        String::from_utf8_lossy(&fits.stdout)
    );
    assert!(
        count(
            &at_a,
            4789,
            "icmp.type == 3 && icmp.code == 4 && icmp.mtu == 1450"
        ) >= 1,
        "no ICMP fragmentation needed (mtu 1450) reached pod A"
    );
    assert_eq!(
        count(&underlay, 4789, "ip.flags.mf == 1 || ip.frag_offset > 0"),
        0,
        "an outer fragment on the underlay"
    );
    assert_eq!(
        count(&underlay, 4789, "frame.len > 1514"),
        0,
        "a frame above the underlay MTU"
    );
    assert_eq!(
        count(
            &underlay,
            4789,
            "ip.src == 198.18.0.1 && vxlan && icmp.type == 8"
        ),
        2,
        "only the two echo requests that fit crossed (none of the three oversized ones)"
    );
    assert!(
        counter(&after, "dropped_by_reason.mtu_exceeded")
            > counter(&before, "dropped_by_reason.mtu_exceeded"),
        "mtu_exceeded not counted: {after}"
    );
}

// ---------------------------------------------------------------------------------------
// 11. a service VIP with backends on A and B; removing the other backend keeps the connection

const VIP: &str = "198.19.255.10";

/// Serves on `addr` in `ns` until `stop`: each connection gets `name` and a newline, then
/// everything it sends echoed back.
fn echo_server(ns: String, addr: SocketAddr, name: &'static str, stop: Arc<AtomicBool>) {
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        netns::enter(&ns).expect("entering the backend's namespace");
        let listener = TcpListener::bind(addr).expect("backend bind");
        listener.set_nonblocking(true).expect("nonblocking");
        ready_tx.send(()).expect("test alive");
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    std::thread::spawn(move || {
                        stream.set_nonblocking(false)?;
                        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                        stream.write_all(format!("{name}\n").as_bytes())?;
                        let mut buf = [0u8; 16384];
                        loop {
                            let n = stream.read(&mut buf)?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            stream.write_all(&buf[..n])?;
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("backend listening");
}

/// Reads the backend's name line.
fn read_name(stream: &mut TcpStream) -> String {
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    while name.len() < 32 {
        stream
            .read_exact(&mut byte)
            .expect("reading the backend's name");
        if byte[0] == b'\n' {
            break;
        }
        name.push(byte[0]);
    }
    String::from_utf8_lossy(&name).into_owned()
}

fn connect_vip() -> TcpStream {
    let vip: SocketAddr = format!("{VIP}:80").parse().unwrap();
    let stream = TcpStream::connect_timeout(&vip, Duration::from_secs(5)).expect("connect to VIP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

#[test]
fn service_vip_survives_removal_of_the_other_backend() {
    let Some((_serial, t)) = start(
        "service_vip_survives_removal_of_the_other_backend",
        &[PING],
        "svc",
        Options {
            vswitch_pods: 2,
            extra: format!(
                "[[neighbor]]\nvni = {VNI}\nip = \"198.19.0.11\"\nmac = \"02:00:00:00:00:0b\"\n\n\
                 [[neighbor]]\nvni = {VNI}\nip = \"198.19.0.2\"\nmac = \"02:00:00:00:00:02\"\n\n\
                 [[service]]\nname = \"web\"\nvip = \"{VIP}\"\nport = 80\nprotocol = \"tcp\"\n\
                 backends = [{{ addr = \"198.19.0.11:8080\" }}, {{ addr = \"198.19.0.2:8080\" }}]\n"
            ),
            ..Options::default()
        },
    ) else {
        return;
    };
    let (client, local, remote) = (t.pods_a[0].clone(), t.pods_a[1].clone(), t.pod_b.clone());
    t.wait_ping(&client, &remote.ip_text(), Duration::from_secs(10));
    t.wait_ping(&client, &local.ip_text(), Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    echo_server(
        local.ns.clone(),
        "198.19.0.11:8080".parse().unwrap(),
        "pod-a2",
        Arc::clone(&stop),
    );
    echo_server(
        remote.ns.clone(),
        "198.19.0.2:8080".parse().unwrap(),
        "pod-b",
        Arc::clone(&stop),
    );
    struct StopServers(Arc<AtomicBool>);
    impl Drop for StopServers {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_servers = StopServers(Arc::clone(&stop));

    // New connections spread over both backends (16 client ports: all on one backend has a
    // chance of 2^-15).
    let names: Vec<String> = netns::run_in(&client.ns, || {
        (0..16)
            .map(|_| {
                let mut s = connect_vip();
                read_name(&mut s)
            })
            .collect()
    })
    .unwrap();
    assert!(
        names.iter().any(|n| n == "pod-a2") && names.iter().any(|n| n == "pod-b"),
        "16 connections to the VIP did not reach both backends: {names:?}"
    );

    // One long connection; while it runs, the other backend is removed.
    let (name_tx, name_rx) = mpsc::channel();
    let client_ns = client.ns.clone();
    let long = std::thread::spawn(move || {
        netns::enter(&client_ns).expect("entering the client's namespace");
        let mut stream = connect_vip();
        let name = read_name(&mut stream);
        name_tx.send(name.clone()).expect("test alive");
        let mut source = Stream::new(0x5e77);
        let (mut echoed, mut differ) = (0usize, 0usize);
        let mut chunk = vec![0u8; 32 * 1024];
        let mut back = vec![0u8; 32 * 1024];
        for _ in 0..40 {
            source.fill(&mut chunk);
            stream
                .write_all(&chunk)
                .expect("send on the long connection");
            stream
                .read_exact(&mut back)
                .expect("echo on the long connection");
            differ += chunk.iter().zip(&back).filter(|(a, b)| a != b).count();
            echoed += back.len();
            std::thread::sleep(Duration::from_millis(100));
        }
        (name, echoed, differ)
    });
    let serving = name_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the long connection's backend");
    std::thread::sleep(Duration::from_secs(1));
    let (other, survivor) = if serving == "pod-b" {
        ("198.19.0.11:8080", "pod-b")
    } else {
        ("198.19.0.2:8080", "pod-a2")
    };
    let answer = t.ctl(&["del", "backend", "service=web", &format!("addr={other}")]);
    assert_eq!(answer["applied"], true, "{answer}");
    let (name, echoed, differ) = long.join().expect("the long connection");
    assert_eq!(name, survivor);
    assert_eq!(
        (echoed, differ),
        (40 * 32 * 1024, 0),
        "the long connection (on {name}) after removing {other}"
    );
    let services = t.ctl(&["show", "services"]);
    assert_eq!(
        services[0]["backends"].as_array().map(Vec::len),
        Some(1),
        "{services}"
    );

    // New connections all go to the remaining backend.
    let names: Vec<String> = netns::run_in(&client.ns, || {
        (0..16)
            .map(|_| {
                let mut s = connect_vip();
                read_name(&mut s)
            })
            .collect()
    })
    .unwrap();
    assert!(
        names.iter().all(|n| n == survivor),
        "after removing {other}, new connections went to {names:?}"
    );
}
