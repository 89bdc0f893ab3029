//! Network namespaces with veth pairs for the backend tests and the backend benchmark: named
//! after the process (`sy<PID>-<tag>-<name>`), created with `ip`, deleted on drop (also when
//! a test panics). Nothing here touches the default namespace's interfaces: every veth is
//! created inside a namespace of ours (`ip -n NS link add ... peer ... netns OTHER`).
//! Addresses come from 198.18.0.0/15 and 2001:db8::/32 only.

// Each integration test is its own crate and may use only part of this module.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// True if the tests may run: root. Otherwise prints loudly why they are skipped and returns
/// false; under CI (`CI=true`) not being able to run is a failure (panics with the reason).
pub fn root_or_skip(test: &str) -> bool {
    let reason = if !is_root() {
        Some("not root (namespaces, veth pairs and AF_PACKET need CAP_SYS_ADMIN and CAP_NET_RAW)")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("`ip` (iproute2) is not installed")
    } else {
        None
    };
    let Some(reason) = reason else {
        return true;
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: cannot run under CI: {reason}");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!` of passing
    // tests, and a skip must be seen.
    let banner = "*".repeat(70);
    let _ = writeln!(
        std::io::stderr(),
        "\n{banner}\n*** SKIPPED {test}: {reason}\n*** (run as root to exercise the AF_PACKET \
         backend; CI=true makes this a failure)\n{banner}\n"
    );
    false
}

/// True if the process runs as root (effective UID 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs a command in namespace `ns` (`ip netns exec`), returning its output whatever its
/// status.
pub fn exec(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip netns exec {ns} {args:?}: {e}"))
}

/// Two hosts, `h1` (198.18.1.1) and `h2` (198.18.1.2; with `ipv6` also 2001:db8:1::1 and
/// ::2), each cabled by a veth to a switch namespace whose ends are `s1` and `s2`: the
/// topology of the worker-loop tests and the TCP benchmark. Returns the lab and the names of
/// the namespaces h1, h2 and the switch's.
pub fn two_hosts(tag: &str, ipv6: bool) -> (Lab, String, String, String) {
    let mut lab = Lab::new(tag);
    let h1 = lab.namespace("h1", ipv6);
    let h2 = lab.namespace("h2", ipv6);
    let sw = lab.namespace("sw", false);
    lab.veth(&h1, "h1", &sw, "s1");
    lab.veth(&h2, "h2", &sw, "s2");
    for (ns, dev, host) in [(&h1, "h1", 1), (&h2, "h2", 2)] {
        lab.ip(
            ns,
            &["addr", "add", &format!("198.18.1.{host}/24"), "dev", dev],
        );
        if ipv6 {
            let address = format!("2001:db8:1::{host}/64");
            lab.ip(ns, &["addr", "add", &address, "dev", dev, "nodad"]);
        }
    }
    (lab, h1, h2, sw)
}

/// A switch with two access ports (1 and 2) in VNI 100 and a static underlay next hop: what
/// the worker-loop tests and the TCP benchmark put between two namespaces.
pub fn two_port_switch_config() -> switchyard::switch::SwitchConfig {
    use std::net::{IpAddr, Ipv4Addr};
    use switchyard::switch::{NextHop, PortConfig, SwitchConfig, UnderlayConfig, VniSettings};
    use switchyard::wire::EthernetAddress;
    use switchyard::{PortId, Vni};
    let vni = Vni::new(100).expect("a valid VNI");
    SwitchConfig {
        underlay: UnderlayConfig {
            local_ip: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            local_mac: EthernetAddress([0x02, 0xee, 0, 0, 0, 1]),
            next_hop: NextHop::Static {
                default: EthernetAddress([0x02, 0xee, 0, 0, 0, 0xff]),
                per_vtep: Vec::new(),
            },
            encap: switchyard::tunnel::EncapConfig::default(),
            decap: switchyard::tunnel::DecapConfig::default(),
        },
        ports: vec![
            PortConfig::access(PortId(1), vni),
            PortConfig::access(PortId(2), vni),
        ],
        vnis: vec![VniSettings::new(vni, Vec::new())],
        static_entries: Vec::new(),
        neighbors: Vec::new(),
        fdb: switchyard::fdb::FdbConfig {
            capacity: 1024,
            ..switchyard::fdb::FdbConfig::default()
        },
        services: Vec::new(),
        lb: switchyard::switch::LbSettings::default(),
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn run(args: &[&str]) -> Output {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A set of namespaces, deleted on drop.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
}

impl Lab {
    /// An empty lab; namespace names start with `sy<PID>-<tag>-`.
    pub fn new(tag: &str) -> Lab {
        Lab {
            prefix: format!("sy{}-{tag}-", std::process::id()),
            namespaces: Vec::new(),
        }
    }

    /// Creates namespace `name` (loopback up, IPv6 off unless `ipv6`: no router
    /// solicitations or DAD probes in the counts) and returns its full name.
    pub fn namespace(&mut self, name: &str, ipv6: bool) -> String {
        let full = format!("{}{name}", self.prefix);
        run(&["ip", "netns", "add", &full]);
        self.namespaces.push(full.clone());
        run(&["ip", "-n", &full, "link", "set", "lo", "up"]);
        let disable = if ipv6 { "0" } else { "1" };
        for key in ["all", "default"] {
            run(&[
                "ip",
                "netns",
                "exec",
                &full,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{key}.disable_ipv6={disable}"),
            ]);
        }
        full
    }

    /// A veth pair: `a_if` in namespace `a`, `b_if` in namespace `b`, both up.
    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        run(&[
            "ip", "-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b,
        ]);
        run(&["ip", "-n", a, "link", "set", a_if, "up"]);
        run(&["ip", "-n", b, "link", "set", b_if, "up"]);
    }

    /// `ip -n NS <args>`.
    pub fn ip(&self, namespace: &str, args: &[&str]) -> Output {
        let mut all = vec!["ip", "-n", namespace];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Runs a command in a namespace (`ip netns exec`), returning its output whatever its
    /// status.
    pub fn exec(&self, namespace: &str, args: &[&str]) -> Output {
        exec(namespace, args)
    }

    /// An interface's counter (`rx_packets`, `tx_dropped`...), read in its namespace.
    pub fn counter(&self, namespace: &str, interface: &str, name: &str) -> u64 {
        let out = self.exec(
            namespace,
            &[
                "cat",
                &format!("/sys/class/net/{interface}/statistics/{name}"),
            ],
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// The vswitch binary (`target/debug/examples/vswitch`, under `CARGO_TARGET_DIR` if set),
/// built once with the backends if it is missing.
pub fn vswitch_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = BINARY.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| if t.is_absolute() { t } else { manifest.join(t) })
            .unwrap_or_else(|| manifest.join("target"));
        let binary = target.join("debug/examples/vswitch");
        if binary.is_file() {
            return Ok(binary);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(manifest)
            .args([
                "build",
                "--features",
                "af-packet,io-uring",
                "--example",
                "vswitch",
            ])
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() || !binary.is_file() {
            return Err(format!(
                "`cargo build --features af-packet,io-uring --example vswitch` failed ({status}); \
                 {} is missing",
                binary.display()
            ));
        }
        Ok(binary)
    });
    match result {
        Ok(path) => path,
        Err(e) => panic!("vswitch binary: {e}"),
    }
}
