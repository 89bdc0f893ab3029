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
#![cfg(all(target_os = "linux", feature = "af-packet"))]

mod interop;

use std::time::Duration;

use interop::{count, exec, exec_ok, ready, serial, Options, Topology};

const PING: (&str, &str) = ("ping", "iputils-ping");
const TCPDUMP: (&str, &str) = ("tcpdump", "tcpdump");
const TSHARK: (&str, &str) = ("tshark", "tshark");

/// `ping -c N` from `from`; asserts every reply came back.
fn ping_all(t: &Topology, from: &interop::Pod, to: &str, n: u32) -> String {
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
    if !ready("ping_both_ways_between_vswitch_and_kernel_vtep", &[PING]) {
        return;
    }
    let _serial = serial();
    let t = Topology::new("ping", Options::default());
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
    if !ready("ipv6_underlay_ping_across", &[PING]) {
        return;
    }
    let _serial = serial();
    let t = Topology::new(
        "v6",
        Options {
            ipv6: true,
            // 70 bytes of IPv6 VXLAN overhead under a 1500-byte underlay.
            vswitch_pod_mtu: 1430,
            kernel_pod_mtu: 1430,
            ..Options::default()
        },
    );
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
    if !ready("udp_port_8472_as_flannel", &[PING, TCPDUMP, TSHARK]) {
        return;
    }
    let _serial = serial();
    let mut t = Topology::new(
        "p8472",
        Options {
            udp_port: 8472,
            ..Options::default()
        },
    );
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
