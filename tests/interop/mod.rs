//! The interop lab: node A runs `vswitch` (AF_PACKET), nodes B and C the Linux kernel's bridge +
//! `vxlan` device, pods (namespaces) behind each node, and an underlay bridge in a namespace of
//! its own joining the nodes' `ul0` interfaces (one L2 for all three). Everything is named
//! `sy<PID>i<N>-<role>`, created with `ip`, and removed when the [`Topology`] drops (also when
//! a test panics): the vswitch process and captures are killed by their own PIDs first.
//! Nothing here touches the default namespace's interfaces: every veth is created inside a
//! namespace of ours. Addresses: 198.18.0.0/24 (underlay), 198.19.0.0/16 (pods),
//! 2001:db8::/64 (IPv6 underlay) only.

// Each integration test is its own crate and may use only part of this module.
#![allow(dead_code)]

#[path = "../netns_lab/mod.rs"]
mod netns_lab;

use netns_lab::is_root;
pub use netns_lab::{exec, run, vswitch_binary};

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The VNI of every test.
pub const VNI: u32 = 42;

/// One test at a time: the scenarios count packets on the underlay and age entries by the
/// clock, and the machine has two cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The start of every scenario: [`ready`] (or a loud skip: `None`), then [`serial`], then
/// the topology `Topology::new(tag, options)`.
pub fn start(
    test: &str,
    tools: &[(&str, &str)],
    tag: &str,
    options: Options,
) -> Option<(MutexGuard<'static, ()>, Topology)> {
    if !ready(test, tools) {
        return None;
    }
    let serial = serial();
    Some((serial, Topology::new(tag, options)))
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn loud_skip(test: &str, reason: &str) {
    // Straight to the process's stderr: the harness captures `eprintln!` of passing tests,
    // and a skip must be seen.
    let banner = "*".repeat(78);
    let _ = writeln!(
        std::io::stderr(),
        "\n{banner}\n*** SKIPPED {test}: {reason}\n*** (CI=true makes this a failure)\n{banner}\n"
    );
}

/// True if the test may run: root, `ip`/`bridge`, and each of `tools` (binary, Debian package).
/// Otherwise prints loudly why it is skipped and returns false; under `CI=true` it panics
/// with the reason (and the `apt-get install` line for missing tools).
pub fn ready(test: &str, tools: &[(&str, &str)]) -> bool {
    let mut tools = tools.to_vec();
    tools.push(("ip", "iproute2"));
    tools.push(("bridge", "iproute2"));
    let reason = if !is_root() {
        Some(
            "not root (network namespaces, veth pairs and AF_PACKET need CAP_SYS_ADMIN and \
             CAP_NET_RAW)"
                .to_owned(),
        )
    } else {
        let mut missing: Vec<&str> = tools
            .iter()
            .filter(|(bin, _)| !have(bin))
            .map(|(_, package)| *package)
            .collect();
        missing.dedup();
        (!missing.is_empty()).then(|| {
            format!(
                "missing tools; run: apt-get install -y {}",
                missing.join(" ")
            )
        })
    };
    let Some(reason) = reason else {
        return true;
    };
    if in_ci() {
        panic!("{test}: cannot run under CI: {reason}");
    }
    loud_skip(test, &reason);
    false
}

fn have(binary: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
        .unwrap_or(false)
}

/// `exec`, panicking if the command fails.
pub fn exec_ok(ns: &str, args: &[&str]) -> String {
    let out = exec(ns, args);
    assert!(
        out.status.success(),
        "in {ns}: {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends SIGTERM to one process (by its PID), waits up to 3 s, then SIGKILL.
fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Options of a topology.
#[derive(Clone, Debug)]
pub struct Options {
    /// Kernel nodes: 1 (B) or 2 (B and C).
    pub kernel_nodes: usize,
    /// Pods behind vswitch: 1 (a1) or 2 (a1, a2).
    pub vswitch_pods: usize,
    /// Underlay over IPv6 (2001:db8::N/64) instead of IPv4 (198.18.0.N/24).
    pub ipv6: bool,
    /// The VXLAN UDP port (vswitch and kernel devices).
    pub udp_port: u16,
    /// MTU of the pods behind vswitch (and of their node-side veth ends).
    pub vswitch_pod_mtu: u32,
    /// MTU of the pods behind the kernel nodes.
    pub kernel_pod_mtu: u32,
    /// Extra lines in the vswitch configuration's `[underlay]`.
    pub underlay: String,
    /// Extra lines in the `[[vni]]` table.
    pub vni: String,
    /// Extra tables at the end of the configuration (`[[fdb]]`, `[[neighbor]]`, ...).
    pub extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kernel_nodes: 1,
            vswitch_pods: 1,
            ipv6: false,
            udp_port: 4789,
            vswitch_pod_mtu: 1450,
            kernel_pod_mtu: 1450,
            underlay: String::new(),
            vni: String::new(),
            extra: String::new(),
        }
    }
}

/// A pod: its namespace, interface (`eth0`), MAC and IPv4 address.
#[derive(Clone, Debug)]
pub struct Pod {
    pub ns: String,
    pub mac: [u8; 6],
    pub ip: [u8; 4],
}

impl Pod {
    pub fn mac_text(&self) -> String {
        mac_text(&self.mac)
    }
    pub fn ip_text(&self) -> String {
        let [a, b, c, d] = self.ip;
        format!("{a}.{b}.{c}.{d}")
    }
}

pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Node numbers: A = 1 (vswitch), B = 2, C = 3.
pub fn underlay_ip(ipv6: bool, node: u8) -> String {
    if ipv6 {
        format!("2001:db8::{node}")
    } else {
        format!("198.18.0.{node}")
    }
}

/// The lab of one test.
pub struct Topology {
    pub options: Options,
    pub prefix: String,
    namespaces: Vec<String>,
    pub dir: PathBuf,
    pub underlay_ns: String,
    pub node_a: String,
    pub node_b: String,
    pub node_c: Option<String>,
    /// Pods behind vswitch (a1, a2).
    pub pods_a: Vec<Pod>,
    pub pod_b: Pod,
    pub pod_c: Option<Pod>,
    pub socket: PathBuf,
    pub config: PathBuf,
    vswitch: Option<Child>,
    /// The vswitch process's PID (from `Child::id`).
    pub vswitch_pid: Option<u32>,
    captures: Vec<Child>,
}

impl Topology {
    /// Builds the namespaces, links and kernel VTEPs, and starts vswitch with the options'
    /// configuration.
    pub fn new(tag: &str, options: Options) -> Topology {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("sy{}i{n}-", std::process::id());
        let dir = std::env::temp_dir().join(format!("{prefix}{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pod = |ns: String, last: u8| Pod {
            ns,
            mac: [0x02, 0, 0, 0, 0, last],
            ip: [198, 19, 0, last],
        };
        let mut t = Topology {
            socket: dir.join("vswitch.sock"),
            config: dir.join("vswitch.toml"),
            underlay_ns: format!("{prefix}ul"),
            node_a: format!("{prefix}nodeA"),
            node_b: format!("{prefix}nodeB"),
            node_c: (options.kernel_nodes > 1).then(|| format!("{prefix}nodeC")),
            pods_a: (0..options.vswitch_pods)
                .map(|i| {
                    let last = if i == 0 { 1 } else { 11 + i as u8 - 1 };
                    pod(format!("{prefix}podA{}", i + 1), last)
                })
                .collect(),
            pod_b: pod(format!("{prefix}podB"), 2),
            pod_c: (options.kernel_nodes > 1).then(|| pod(format!("{prefix}podC"), 3)),
            options,
            prefix,
            namespaces: Vec::new(),
            dir,
            vswitch: None,
            vswitch_pid: None,
            captures: Vec::new(),
        };
        t.build();
        let config = t.default_config();
        t.start_vswitch(&config);
        t
    }

    fn add_namespace(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_owned());
        // No IPv6 on new interfaces unless a test enables it: router solicitations and MLD
        // reports would be flooded across the overlay and spoil exact counts.
        exec_ok(
            name,
            &[
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.disable_ipv6=1",
                "net.ipv6.conf.all.disable_ipv6=1",
            ],
        );
        run(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    fn kernel_nodes(&self) -> Vec<(u8, String, Pod)> {
        let mut nodes = vec![(2, self.node_b.clone(), self.pod_b.clone())];
        if let (Some(ns), Some(pod)) = (&self.node_c, &self.pod_c) {
            nodes.push((3, ns.clone(), pod.clone()));
        }
        nodes
    }

    fn node_numbers(&self) -> Vec<u8> {
        let mut v = vec![1, 2];
        if self.node_c.is_some() {
            v.push(3);
        }
        v
    }

    fn build(&mut self) {
        let o = self.options.clone();
        let ul = self.underlay_ns.clone();
        self.add_namespace(&ul);
        run(&["ip", "-n", &ul, "link", "add", "br0", "type", "bridge"]);
        run(&[
            "ip",
            "-n",
            &ul,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        run(&["ip", "-n", &ul, "link", "set", "br0", "up"]);
        let mut nodes = vec![(1u8, self.node_a.clone())];
        nodes.extend(self.kernel_nodes().into_iter().map(|(n, ns, _)| (n, ns)));
        for (n, ns) in &nodes {
            self.add_namespace(ns);
            if o.ipv6 {
                // IPv6 on the underlay only, without duplicate address detection's delay.
                exec_ok(
                    ns,
                    &[
                        "sysctl",
                        "-qw",
                        "net.ipv6.conf.all.disable_ipv6=0",
                        "net.ipv6.conf.default.disable_ipv6=0",
                        "net.ipv6.conf.default.accept_dad=0",
                        "net.ipv6.conf.default.dad_transmits=0",
                    ],
                );
            }
            let port = format!("ul{n}");
            run(&[
                "ip", "-n", &ul, "link", "add", &port, "type", "veth", "peer", "name", "ul0",
                "netns", ns,
            ]);
            run(&["ip", "-n", &ul, "link", "set", &port, "master", "br0"]);
            run(&["ip", "-n", &ul, "link", "set", &port, "up"]);
            let ip = underlay_ip(o.ipv6, *n);
            let cidr = if o.ipv6 {
                format!("{ip}/64")
            } else {
                format!("{ip}/24")
            };
            if o.ipv6 {
                run(&["ip", "-n", ns, "addr", "add", &cidr, "dev", "ul0", "nodad"]);
            } else {
                run(&["ip", "-n", ns, "addr", "add", &cidr, "dev", "ul0"]);
            }
            run(&["ip", "-n", ns, "link", "set", "ul0", "up"]);
            if o.ipv6 {
                // Back to no IPv6 for the interfaces made after the underlay's.
                exec_ok(
                    ns,
                    &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
                );
            }
        }
        // Pods behind vswitch.
        for (i, pod) in self.pods_a.clone().iter().enumerate() {
            self.add_namespace(&pod.ns);
            let port = format!("pa{}", i + 1);
            self.pod_link(&self.node_a.clone(), &port, pod, o.vswitch_pod_mtu);
        }
        // Kernel nodes: bridge + vxlan, flooding to every other node.
        for (n, ns, pod) in self.kernel_nodes() {
            self.add_namespace(&pod.ns);
            let local = underlay_ip(o.ipv6, n);
            let dstport = o.udp_port.to_string();
            run(&[
                "ip", "-n", &ns, "link", "add", "vxlan0", "type", "vxlan", "id", "42", "local",
                &local, "dstport", &dstport, "dev", "ul0",
            ]);
            run(&["ip", "-n", &ns, "link", "add", "br0", "type", "bridge"]);
            run(&[
                "ip",
                "-n",
                &ns,
                "link",
                "set",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ]);
            run(&["ip", "-n", &ns, "link", "set", "vxlan0", "master", "br0"]);
            let port = format!("p{}", (b'a' + n - 1) as char);
            self.pod_link(&ns, &port, &pod, o.kernel_pod_mtu);
            run(&["ip", "-n", &ns, "link", "set", &port, "master", "br0"]);
            run(&["ip", "-n", &ns, "link", "set", "vxlan0", "up"]);
            run(&["ip", "-n", &ns, "link", "set", "br0", "up"]);
            for peer in self.node_numbers() {
                if peer != n {
                    let dst = underlay_ip(o.ipv6, peer);
                    run(&[
                        "bridge",
                        "-n",
                        &ns,
                        "fdb",
                        "append",
                        "00:00:00:00:00:00",
                        "dev",
                        "vxlan0",
                        "dst",
                        &dst,
                    ]);
                }
            }
        }
    }

    /// A veth `port` in `node` to `eth0` in the pod.
    fn pod_link(&self, node: &str, port: &str, pod: &Pod, mtu: u32) {
        let mtu = mtu.to_string();
        run(&[
            "ip", "-n", node, "link", "add", port, "mtu", &mtu, "type", "veth", "peer", "name",
            "eth0", "mtu", &mtu, "netns", &pod.ns,
        ]);
        run(&[
            "ip",
            "-n",
            &pod.ns,
            "link",
            "set",
            "eth0",
            "address",
            &pod.mac_text(),
        ]);
        let cidr = format!("{}/16", pod.ip_text());
        run(&["ip", "-n", &pod.ns, "addr", "add", &cidr, "dev", "eth0"]);
        run(&["ip", "-n", &pod.ns, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", node, "link", "set", port, "up"]);
    }

    /// The vswitch configuration of the options.
    pub fn default_config(&self) -> String {
        let o = &self.options;
        let flood: Vec<String> = self
            .kernel_nodes()
            .iter()
            .map(|(n, _, _)| format!("{:?}", underlay_ip(o.ipv6, *n)))
            .collect();
        let mut text = format!(
            "[switch]\ncontrol_socket = {:?}\n\n[underlay]\ninterface = \"ul0\"\nlocal_ip = {:?}\n\
             udp_port = {}\n{}\n\n[[vni]]\nid = {VNI}\nflood = [{}]\n{}\n",
            self.socket.display().to_string(),
            underlay_ip(o.ipv6, 1),
            o.udp_port,
            o.underlay,
            flood.join(", "),
            o.vni,
        );
        for i in 0..self.pods_a.len() {
            text.push_str(&format!(
                "\n[[port]]\nname = \"pod-a{n}\"\ninterface = \"pa{n}\"\nvni = {VNI}\n",
                n = i + 1
            ));
        }
        text.push('\n');
        text.push_str(&o.extra);
        text
    }

    /// Starts vswitch in node A with `config` (stopping a running one first) and waits for its
    /// control socket to answer.
    pub fn start_vswitch(&mut self, config: &str) {
        self.stop_vswitch();
        std::fs::write(&self.config, config).expect("writing the configuration");
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::File::create(self.dir.join("vswitch.log")).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.node_a])
            .arg(vswitch_binary())
            .arg("run")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("starting vswitch");
        // `ip netns exec` enters the namespace and execs: this PID is vswitch's own.
        self.vswitch_pid = Some(child.id());
        self.vswitch = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(child) = &mut self.vswitch {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "vswitch exited at start ({status}):\n{}",
                        self.vswitch_log()
                    );
                }
            }
            if self.socket.exists() {
                if let Ok(ports) = self.try_ctl(&["show", "ports"]) {
                    if ports.as_array().is_some_and(|p| !p.is_empty()) {
                        break;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "vswitch's control socket did not answer within 15 s:\n{}",
                self.vswitch_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The workers open their rings after the control socket listens.
        std::thread::sleep(Duration::from_millis(300));
    }

    pub fn stop_vswitch(&mut self) {
        if let Some(mut child) = self.vswitch.take() {
            stop_child(&mut child);
        }
        self.vswitch_pid = None;
    }

    pub fn vswitch_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vswitch.log")).unwrap_or_default()
    }

    /// `vswitch ctl SOCKET args...`, its JSON answer.
    pub fn try_ctl(&self, args: &[&str]) -> Result<Value, String> {
        let out = Command::new(vswitch_binary())
            .arg("ctl")
            .arg(&self.socket)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "vswitch ctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("vswitch ctl {args:?}: {e}"))
    }

    pub fn ctl(&self, args: &[&str]) -> Value {
        self.try_ctl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `show counters`.
    pub fn counters(&self) -> Value {
        // Workers publish their counters every 250 ms.
        std::thread::sleep(Duration::from_millis(600));
        self.ctl(&["show", "counters"])
    }

    /// `show fdb` as (mac, destination, kind) triples.
    pub fn fdb(&self) -> Vec<(String, String, String)> {
        self.ctl(&["show", "fdb"])
            .as_array()
            .expect("fdb is an array")
            .iter()
            .map(|e| {
                (
                    e["mac"].as_str().unwrap_or_default().replace('-', ":"),
                    e["destination"].as_str().unwrap_or_default().to_owned(),
                    e["kind"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Pings until one reply comes back (the first may wait for next-hop resolution), at
    /// most `timeout`.
    pub fn wait_ping(&self, from: &Pod, to: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = exec(&from.ns, &["ping", "-c", "1", "-W", "1", "-n", to]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no ping reply from {to} to {} within {timeout:?}: {}\nvswitch log:\n{}\n\
                 counters: {}",
                from.ns,
                String::from_utf8_lossy(&out.stdout),
                self.vswitch_log(),
                self.try_ctl(&["show", "counters"])
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            );
        }
    }

    /// Starts `tcpdump -i IFACE` in `ns` writing to `name.pcap` in the test's directory, and
    /// waits until it listens.
    pub fn capture(&mut self, ns: &str, iface: &str, name: &str) -> PathBuf {
        let file = self.dir.join(format!("{name}.pcap"));
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "tcpdump",
                "-i",
                iface,
                "-n",
                "-U",
                "--immediate-mode",
                "-Z",
            ])
            .arg("root")
            .arg("-w")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tcpdump");
        let stderr = child.stderr.take().expect("tcpdump stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.captures.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => seen.push(line),
                Err(_) => panic!("tcpdump on {iface} in {ns} did not start: {seen:?}"),
            }
        }
        file
    }

    /// Captures node A's underlay link from the underlay bridge's side (port `ul1`): vswitch
    /// transmits with `PACKET_QDISC_BYPASS`, which skips the kernel's packet taps, so a
    /// capture on node A's own `ul0` never shows what vswitch sends.
    pub fn capture_underlay(&mut self, name: &str) -> PathBuf {
        let ns = self.underlay_ns.clone();
        self.capture(&ns, "ul1", name)
    }

    /// Stops every running capture (SIGTERM by PID, so the files are complete).
    pub fn stop_captures(&mut self) {
        std::thread::sleep(Duration::from_millis(300));
        for mut child in self.captures.drain(..) {
            stop_child(&mut child);
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(secs) = std::env::var("INTEROP_HOLD_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            // Debugging: keep the lab for inspection before it is removed.
            let _ = writeln!(std::io::stderr(), "holding {} for {secs} s", self.prefix);
            std::thread::sleep(Duration::from_secs(secs));
        }
        self.stop_vswitch();
        for mut child in self.captures.drain(..) {
            stop_child(&mut child);
        }
        if std::thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "--- vswitch log ({}):\n{}",
                self.dir.display(),
                self.vswitch_log()
            );
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        if !std::thread::panicking() || in_ci() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `tshark -r FILE -Y FILTER -T fields -e FIELD...` (VXLAN decoded on `udp_port` too), one
/// vector of field values per packet; a field with several occurrences gives the first
/// (`-E occurrence=f`) unless `all_occurrences`.
pub fn tshark(
    file: &Path,
    udp_port: u16,
    filter: &str,
    fields: &[&str],
    all_occurrences: bool,
) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n")
        .arg("-r")
        .arg(file)
        .args(["-d", &format!("udp.port=={udp_port},vxlan")])
        .args(["-o", "ip.check_checksum:TRUE"])
        .args(["-Y", filter, "-T", "fields", "-E", "separator=|"]);
    if !all_occurrences {
        cmd.args(["-E", "occurrence=f"]);
    }
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("running tshark");
    assert!(
        out.status.success(),
        "tshark -r {} -Y {filter:?} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// Packets in `file` matching `filter`.
pub fn count(file: &Path, udp_port: u16, filter: &str) -> usize {
    tshark(file, udp_port, filter, &["frame.number"], false).len()
}

/// A counter from `show counters`: `dropped_by_reason.REASON` style paths.
pub fn counter(counters: &Value, path: &str) -> u64 {
    let mut v = counters;
    for key in path.split('.') {
        v = &v[key];
    }
    v.as_u64().unwrap_or(0)
}

/// Sum of a field over the workers of `show counters`.
pub fn worker_sum(counters: &Value, key: &str) -> u64 {
    counters["workers"]
        .as_array()
        .map(|w| w.iter().map(|w| w[key].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0)
}

/// Sends raw Ethernet frames out of `iface` in namespace `ns` (an AF_PACKET socket of the
/// crate's backend, opened there).
pub fn send_frames(ns: &str, iface: &str, frames: &[Vec<u8>]) {
    use switchyard::backend::af_packet::{AfPacketConfig, AfPacketTx};
    use switchyard::backend::TxQueue;
    let iface = iface.to_owned();
    switchyard::backend::netns::run_in(ns, || {
        let mut tx = AfPacketTx::open(&AfPacketConfig::new(&iface)).expect("AF_PACKET tx");
        for f in frames {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !tx.send(f, &[]).expect("send") {
                tx.flush().expect("flush");
                assert!(Instant::now() < deadline, "TX ring stays full");
            }
        }
        tx.flush().expect("flush");
        // The ring is drained asynchronously: let the kernel take the frames before closing.
        std::thread::sleep(Duration::from_millis(100));
    })
    .expect("entering the namespace");
}

/// An Ethernet frame with the local experimental EtherType 0x88b5 and `marker` as payload.
pub fn marker_frame(dst: [u8; 6], src: [u8; 6], marker: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(&marker.to_be_bytes());
    f.resize(60, 0);
    f
}

/// The Internet checksum of `data`.
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet + IPv4 + UDP frame with the given TOS byte (DSCP and ECN), UDP checksum 0.
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    tos: u8,
    ports: (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[1] = tos;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let sum = inet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&ports.0.to_be_bytes());
    f.extend_from_slice(&ports.1.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A VXLAN header (I flag) for `vni` followed by `inner`.
pub fn vxlan_payload(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0];
    v.extend_from_slice(&(vni << 8).to_be_bytes());
    v.extend_from_slice(inner);
    v
}

/// A deterministic byte stream (xorshift64*), for payloads checked byte by byte whatever
/// the sizes of the reads and writes.
pub struct Stream {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Stream {
    pub fn new(seed: u64) -> Stream {
        Stream {
            state: seed | 1,
            word: [0; 8],
            used: 8,
        }
    }
    pub fn next_byte(&mut self) -> u8 {
        if self.used == 8 {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            self.word = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            self.used = 0;
        }
        self.used += 1;
        self.word[self.used - 1]
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_byte();
        }
    }
}
