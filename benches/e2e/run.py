#!/usr/bin/env python3
"""End-to-end benchmark: switchyard beside the kernel and Open vSwitch, same machine, same run.

For each contender this builds, in network namespaces it creates,

    pod A (eth0) -- (pod0) node A (ul0) ---- underlay veth ---- (ul0) node B (pod0) -- (eth0) pod B

with a VXLAN overlay (VNI 42, UDP 4789) between the nodes, measures, and tears it all down
(also on failure and Ctrl-C). Addresses come only from 198.18.0.0/15: underlay 198.18.0.1-2/24,
pods 198.19.0.1-2/24.

Contenders:
  kernel               Linux bridge + kernel vxlan device on both nodes
  ovs                  Open vSwitch userspace datapath (datapath_type=netdev), AF_PACKET ports
  switchyard-afpacket  switchyard's vswitch on both nodes, AF_PACKET underlay
  switchyard-iouring   switchyard's vswitch on both nodes, io_uring underlay
  ovs-afxdp            Open vSwitch userspace datapath with afxdp-nonpmd ports

Measurements (per repetition; the median, min and max are reported):
  tcp_gbps        iperf3 TCP pod A -> pod B, receiver's rate
  mpps            64-byte frames delivered per second at pod B's eth0 (rx_packets), offered at
                  trafgen's maximum from pod A
  loss_pct        1 - delivered / offered (offered = pod A eth0 tx_packets + tx_dropped)
  cpu_s_per_mpkt  the switch processes' CPU seconds (utime+stime from /proc/PID/stat, both
                  nodes) per million delivered frames, during the 64-byte test; for the kernel,
                  the whole machine's softirq seconds from /proc/stat (labelled as such)
  lat_p50_ms, lat_p99_ms   ping -i 0.01 pod A -> pod B (idle network), percentiles of the RTTs

    sudo python3 benches/e2e/run.py                          # everything, 3 x 10 s
    sudo python3 benches/e2e/run.py -c kernel,switchyard-afpacket -d 2 -r 1

Python 3 standard library only, plus ip, iperf3, trafgen (netsniff-ng), ping, taskset and
Open vSwitch's programs for the OVS contenders.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ALL = ["kernel", "ovs", "switchyard-afpacket", "switchyard-iouring", "ovs-afxdp"]
VNI = 42
UL = {"A": "198.18.0.1", "B": "198.18.0.2"}
POD = {"A": "198.19.0.1", "B": "198.19.0.2"}
POD_MAC = {"A": "02:00:00:00:00:01", "B": "02:00:00:00:00:02"}
# 64-byte frames (60 bytes + FCS) go to pod B's MAC but to an address it does not hold. Pod B
# counts them at rx_packets and drops them at once with an nftables netdev ingress rule:
# whoever transmits into pod B's veth runs pod B's receive softirq inline (the switch's
# sendto, for the userspace switches), so an expensive sink (a route lookup and an ICMP
# error per frame) would be charged to the switch's CPU.
SINK_IP = "198.19.0.99"
SINK_NFT = """table netdev e2e_sink {
  chain ingress {
    type filter hook ingress device "eth0" priority 0; policy accept;
    ip daddr %s counter drop
  }
}
""" % SINK_IP
CLK_TCK = os.sysconf("SC_CLK_TCK")

TOOLS = {  # program -> Debian package
    "ip": "iproute2",
    "ping": "iputils-ping",
    "iperf3": "iperf3",
    "trafgen": "netsniff-ng",
    "taskset": "util-linux",
    "ethtool": "ethtool",
    "nft": "nftables",
}
OVS_TOOLS = {
    "ovsdb-server": "openvswitch-switch",
    "ovs-vswitchd": "openvswitch-switch",
    "ovs-vsctl": "openvswitch-switch",
    "ovs-appctl": "openvswitch-switch",
    "ovsdb-tool": "openvswitch-switch",
}


class Failed(Exception):
    """A contender could not be set up or measured; the message says why."""


class Unsupported(Exception):
    """A contender this machine cannot run; the message says why."""


class Interrupted(BaseException):
    pass


def log(msg):
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, check=True, timeout=60, env=None):
    """Runs a command, returns its stdout; raises Failed with stderr when it fails."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise Failed(f"timed out after {timeout} s: {' '.join(cmd)}")
    if check and p.returncode != 0:
        raise Failed(f"{' '.join(cmd)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()}")
    return p.stdout


def tail(path, n=6):
    """The last lines of a log, or its ERROR lines when it has any."""
    try:
        with open(path, errors="replace") as f:
            lines = [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in f.read().splitlines()]
    except OSError:
        return ""
    errors = [l for l in lines if re.search(r"\bERROR\b|\|ERR\||\|EMER\|", l)]
    return " | ".join((errors or lines)[-n:])


def taskset(cpus):
    return ["taskset", "-c", cpus] if cpus else []


# ---------------------------------------------------------------------------------------------
# The topology


class Topology:
    """Four namespaces and three veth pairs; the contender fills in the nodes."""

    def __init__(self, tag, work):
        self.tag = tag
        self.work = work
        self.ns = {r: f"{tag}-{r}" for r in ("podA", "nodeA", "nodeB", "podB")}
        self.procs = []  # (name, Popen) started by us, killed by PID at teardown
        self.created = []

    def node(self, side):
        return self.ns["node" + side]

    def pod(self, side):
        return self.ns["pod" + side]

    def build(self):
        for ns in self.ns.values():
            run(["ip", "netns", "add", ns])
            self.created.append(ns)
            # No IPv6: its DAD and MLD chatter would cross the overlay and the counters.
            for key in ("all", "default"):
                run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                     f"net.ipv6.conf.{key}.disable_ipv6=1"])
        nA, nB = self.node("A"), self.node("B")
        run(["ip", "link", "add", "ul0", "netns", nA, "type", "veth", "peer", "name", "ul0",
             "netns", nB])
        for s in "AB":
            run(["ip", "link", "add", "eth0", "netns", self.pod(s), "type", "veth", "peer",
                 "name", "pod0", "netns", self.node(s)])
            p = self.pod(s)
            run(["ip", "-n", p, "link", "set", "eth0", "address", POD_MAC[s], "mtu", "1450"])
            run(["ip", "-n", p, "addr", "add", POD[s] + "/24", "dev", "eth0"])
            # Static neighbours: the latency and TCP tests do not wait on ARP across the overlay.
            other = "B" if s == "A" else "A"
            run(["ip", "-n", p, "neigh", "replace", POD[other], "lladdr", POD_MAC[other],
                 "dev", "eth0", "nud", "permanent"])
        for ns in self.ns.values():
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        sink = os.path.join(self.work, "sink.nft")
        with open(sink, "w") as f:
            f.write(SINK_NFT)
        run(["ip", "netns", "exec", self.pod("B"), "nft", "-f", sink])
        for s in "AB":
            run(["ip", "-n", self.pod(s), "link", "set", "eth0", "up"])
            run(["ip", "-n", self.node(s), "link", "set", "pod0", "up"])
            run(["ip", "-n", self.node(s), "link", "set", "ul0", "up"])

    def start(self, name, cmd, env=None, cpus=None, group=False):
        """Starts a long-running process; `ip netns exec` and `taskset` exec, so the PID we get
        is the program's own."""
        logpath = os.path.join(self.work, name + ".log")
        out = open(logpath, "w")
        full = taskset(cpus) + cmd if cpus else cmd
        p = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, env=env,
                             stdin=subprocess.DEVNULL, start_new_session=group)
        out.close()
        p.logpath = logpath
        p.tag = name
        self.procs.append((name, p))
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=5):
        """Stops one process we started; returns a note when it did not stop cleanly."""
        if p.poll() is not None:
            return None
        try:
            if getattr(p, "group", False):
                os.killpg(p.pid, sig)
            else:
                p.send_signal(sig)
            p.wait(timeout=timeout)
            if p.returncode not in (0, -sig, 128 + sig) and sig != signal.SIGINT:
                return f"{p.tag} exited {p.returncode} on {signal.Signals(sig).name}"
            return None
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                if getattr(p, "group", False):
                    os.killpg(p.pid, signal.SIGKILL)
                else:
                    p.kill()
                p.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            return f"{p.tag} did not stop within {timeout} s of {signal.Signals(sig).name}: killed"

    def teardown(self):
        notes = []
        for name, p in reversed(self.procs):
            note = self.stop(p)
            if note and name.startswith(("vswitch", "ovs")):  # iperf3 -s exits 1 on SIGTERM
                notes.append(note)
        self.procs = []
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.created = []
        return notes

    def counters(self, side):
        out = run(["ip", "-n", self.pod(side), "-s", "-j", "link", "show", "dev", "eth0"])
        st = json.loads(out)[0]["stats64"]
        return st["rx"]["packets"], st["tx"]["packets"], st["tx"].get("dropped", 0)

    def link_stats(self):
        """Every interface's kernel counters in the four namespaces (for the JSON)."""
        out = {}
        for role, ns in self.ns.items():
            try:
                links = json.loads(run(["ip", "-n", ns, "-s", "-j", "link", "show"]))
            except (Failed, ValueError) as e:
                out[role] = str(e)
                continue
            out[role] = {l["ifname"]: {d: {k: l["stats64"][d].get(k) for k in
                                           ("packets", "bytes", "dropped", "errors")}
                                       for d in ("rx", "tx")}
                         for l in links if "stats64" in l and l["ifname"] != "lo"}
        return out

    def reachable(self, seconds, alive=lambda: None):
        deadline = time.time() + seconds
        while time.time() < deadline:
            alive()
            r = subprocess.run(["ip", "netns", "exec", self.pod("A"), "ping", "-c", "1", "-W",
                                "1", POD["B"]], capture_output=True)
            if r.returncode == 0:
                return True
            time.sleep(0.2)
        return False


# ---------------------------------------------------------------------------------------------
# Contenders


class Contender:
    name = "?"

    def __init__(self, topo, opts):
        self.t = topo
        self.o = opts

    def check(self):
        """Raises Unsupported when this machine cannot run the contender."""

    def setup(self):
        raise NotImplementedError

    def switch_pids(self):
        return []

    def alive(self):
        """Raises Failed when a switch process this contender started has exited."""
        for name, p in self.t.procs:
            if p.poll() is not None and name != "trafgen" and not name.startswith("perf"):
                raise Failed(f"{name} exited ({p.returncode}): {tail(p.logpath)}")

    def diagnostics(self):
        return {}


class Kernel(Contender):
    name = "kernel"

    def setup(self):
        for s, peer in (("A", "B"), ("B", "A")):
            n = self.t.node(s)
            run(["ip", "-n", n, "addr", "add", UL[s] + "/24", "dev", "ul0"])
            run(["ip", "-n", n, "link", "add", "vx0", "type", "vxlan", "id", str(VNI), "local",
                 UL[s], "dstport", "4789", "dev", "ul0"])
            run(["ip", "-n", n, "link", "add", "br0", "type", "bridge"])
            run(["ip", "-n", n, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])
            run(["ip", "-n", n, "link", "set", "vx0", "master", "br0"])
            run(["ip", "-n", n, "link", "set", "pod0", "master", "br0"])
            for dev in ("vx0", "br0"):
                run(["ip", "-n", n, "link", "set", dev, "up"])
            run(["bridge", "-n", n, "fdb", "append", "00:00:00:00:00:00", "dev", "vx0", "dst",
                 UL[peer]])


class Ovs(Contender):
    """ovsdb-server + ovs-vswitchd per node, in private directories, inside the node's
    namespace; the underlay address on br-ul's internal port (native tunnelling routes and
    ARPs through it), the pod veth and a vxlan port on br-int."""

    name = "ovs"
    port_type = None  # "afxdp-nonpmd" for ovs-afxdp

    def __init__(self, topo, opts):
        super().__init__(topo, opts)
        self.vswitchd = {}
        self.dirs = {}

    def env(self, d):
        env = dict(os.environ)
        env.update(OVS_RUNDIR=d, OVS_LOGDIR=d, OVS_DBDIR=d, OVS_SYSCONFDIR=d)
        return env

    def vsctl(self, s, *args, timeout=20):
        d = self.dirs[s]
        return run(["ip", "netns", "exec", self.t.node(s), "ovs-vsctl",
                    f"--db=unix:{d}/db.sock", f"--timeout={timeout}"] + list(args),
                   env=self.env(d), timeout=timeout + 5)

    def appctl(self, s, *args):
        d = self.dirs[s]
        return run(["ovs-appctl", "-t", f"{d}/vswitchd.ctl"] + list(args), env=self.env(d))

    def start_node(self, s):
        d = os.path.join(self.t.work, f"ovs-{s}")
        os.makedirs(d)
        self.dirs[s] = d
        env = self.env(d)
        schema = "/usr/share/openvswitch/vswitch.ovsschema"
        run(["ovsdb-tool", "create", f"{d}/conf.db", schema], env=env)
        ns = self.t.node(s)
        db = self.t.start(f"ovsdb-server-{s}", [
            "ip", "netns", "exec", ns, "ovsdb-server", f"{d}/conf.db",
            f"--remote=punix:{d}/db.sock", f"--pidfile={d}/ovsdb-server.pid",
            f"--unixctl={d}/ovsdb-server.ctl", f"--log-file={d}/ovsdb-server.log",
            "-vconsole:off"], env=env)
        wait_for(lambda: os.path.exists(f"{d}/db.sock"), 10, db, "ovsdb-server")
        run(["ip", "netns", "exec", ns, "ovs-vsctl", f"--db=unix:{d}/db.sock", "--no-wait",
             "init"], env=env)
        vd = self.t.start(f"ovs-vswitchd-{s}", [
            "ip", "netns", "exec", ns, "ovs-vswitchd", f"unix:{d}/db.sock",
            f"--pidfile={d}/ovs-vswitchd.pid", f"--unixctl={d}/vswitchd.ctl",
            f"--log-file={d}/ovs-vswitchd.log", "-vconsole:off"],
            env=env, cpus=self.o.pin_switch)
        wait_for(lambda: os.path.exists(f"{d}/vswitchd.ctl"), 10, vd, "ovs-vswitchd")
        self.vswitchd[s] = vd

    def check(self):
        missing = [t for t in OVS_TOOLS if not shutil.which(t)]
        if missing:
            raise Unsupported(f"missing {', '.join(missing)} (apt-get install openvswitch-switch)")

    def iface_types(self, s):
        return self.vsctl(s, "get", "Open_vSwitch", ".", "iface_types")

    def add_port(self, s, br, port):
        args = ["add-port", br, port]
        if self.port_type:
            args += ["--", "set", "interface", port, f"type={self.port_type}"]
        self.vsctl(s, *args)
        err = self.vsctl(s, "get", "interface", port, "error").strip()
        if err not in ("[]", ""):
            raise Failed(f"node {s}: port {port}: {err}")

    def setup(self):
        # OVS userspace (3.1, without userspace-tso) forwards the pods' partially checksummed
        # TCP frames as they are, so the receiver drops them: TCP never connects. The pods
        # compute checksums themselves for OVS (ethtool -K eth0 tx off), as OVS's userspace
        # documentation advises for veth; ICMP and the 64-byte UDP frames are not affected.
        for s in "AB":
            run(["ip", "netns", "exec", self.t.pod(s), "ethtool", "-K", "eth0", "tx", "off"])
        for s, peer in (("A", "B"), ("B", "A")):
            self.start_node(s)
            if self.port_type:
                types = self.iface_types(s)
                if self.port_type not in types:
                    raise Unsupported(f"this ovs-vswitchd has no {self.port_type} interface "
                                      f"type (iface_types: {types.strip()})")
            n = self.t.node(s)
            self.vsctl(s, "add-br", "br-ul", "--", "set", "bridge", "br-ul",
                       "datapath_type=netdev")
            self.add_port(s, "br-ul", "ul0")
            run(["ip", "-n", n, "addr", "add", UL[s] + "/24", "dev", "br-ul"])
            run(["ip", "-n", n, "link", "set", "br-ul", "up"])
            self.vsctl(s, "add-br", "br-int", "--", "set", "bridge", "br-int",
                       "datapath_type=netdev")
            self.add_port(s, "br-int", "pod0")
            self.vsctl(s, "add-port", "br-int", "vx0", "--", "set", "interface", "vx0",
                       "type=vxlan", f"options:remote_ip={UL[peer]}", f"options:key={VNI}")
            err = self.vsctl(s, "get", "interface", "vx0", "error").strip()
            if err not in ("[]", ""):
                raise Failed(f"node {s}: vxlan port: {err}")

    def switch_pids(self):
        return [p.pid for p in self.vswitchd.values()]

    def diagnostics(self):
        out = {}
        for s in self.dirs:
            for port in ("ul0", "pod0"):
                try:
                    out[f"node{s}_{port}_status"] = self.vsctl(
                        s, "get", "interface", port, "type", "status", "statistics").split("\n")
                except Failed as e:
                    out[f"node{s}_{port}_status"] = str(e)
            try:
                out[f"node{s}_coverage_drops"] = [
                    l.strip() for l in self.appctl(s, "coverage/show").splitlines()
                    if "drop" in l][:20]
            except Failed as e:
                out[f"node{s}_coverage_drops"] = str(e)
        return out


class OvsAfxdp(Ovs):
    name = "ovs-afxdp"
    port_type = "afxdp-nonpmd"


class Switchyard(Contender):
    backend = "af-packet"
    name = "switchyard-afpacket"

    def __init__(self, topo, opts):
        super().__init__(topo, opts)
        self.procs = {}
        self.sockets = {}

    def check(self):
        if not os.path.exists(self.o.vswitch):
            raise Unsupported(f"no vswitch binary at {self.o.vswitch} (cargo build --release "
                              "--features af-packet,io-uring --example vswitch)")

    def setup(self):
        for s, peer in (("A", "B"), ("B", "A")):
            n = self.t.node(s)
            run(["ip", "-n", n, "addr", "add", UL[s] + "/24", "dev", "ul0"])
            sock = os.path.join(self.t.work, f"vswitch-{s}.sock")
            self.sockets[s] = sock
            cfg = os.path.join(self.t.work, f"vswitch-{s}.toml")
            with open(cfg, "w") as f:
                f.write(f"""[switch]
workers = {self.o.workers}
control_socket = "{sock}"

[underlay]
interface = "ul0"
local_ip = "{UL[s]}"
backend = "{self.backend}"
df = "unset"

[[vni]]
id = {VNI}
flood = ["{UL[peer]}"]

[[port]]
name = "pod0"
interface = "pod0"
vni = {VNI}
""")
            env = dict(os.environ, NO_COLOR="1", RUST_LOG=os.environ.get("RUST_LOG", "info"))
            p = self.t.start(f"vswitch-{s}", ["ip", "netns", "exec", n, self.o.vswitch, "run",
                                              cfg], env=env, cpus=self.o.pin_switch)
            self.procs[s] = p
            try:
                wait_for(lambda: os.path.exists(sock), 10, p, f"vswitch ({self.backend})")
            except Failed as e:
                raise Failed(f"node {s}: {e}")
        # The control socket listens before the ports open: give a failing port time to end
        # the process, so its error is reported rather than a missing ping.
        time.sleep(0.5)
        self.alive()

    def switch_pids(self):
        return [p.pid for p in self.procs.values()]

    def check_counters(self, dg):
        """vswitch's queue counters against the kernel's interface counters, traffic stopped:
        frames vswitch sent on an interface = the interface's tx_packets (minus frames the
        node's own kernel sent: ARP, ICMP), frames its ring took in + dropped = rx_packets.

        The underlay joins equal datagrams into UDP GSO sends (udp_offloads), which the
        kernel counts as one packet each: there its bytes are compared instead. The io_uring
        underlay is a UDP socket, whose datagrams the kernel counts in GSO and GRO batches,
        with headers of its own: not compared."""
        bad = []
        for s in "AB":
            ports = dg.get(f"node{s}_ports")
            links = dg.get("links", {}).get(f"node{s}", {})
            if not isinstance(ports, list) or not isinstance(links, dict):
                continue
            for p in ports:
                k = links.get(p["interface"])
                underlay = p["name"] == "underlay"
                if not k or (underlay and self.backend == "io-uring"):
                    continue
                rxq, txq = p["rx_queue"], p["tx_queue"]
                ring_rx = rxq["frames"] + rxq["dropped"]
                kern_tx, kern_rx = k["tx"]["packets"], k["rx"]["packets"]
                # The node's kernel may send a few frames of its own (ARP, ICMP): allow 1 %.
                slack = 50 + kern_rx // 100
                if ring_rx > kern_rx or kern_rx - ring_rx > slack:
                    bad.append(f"node {s} {p['name']}: ring received+dropped {ring_rx}, "
                               f"kernel rx_packets {kern_rx}")
                if underlay:
                    ring, kern = txq["bytes"], k["tx"]["bytes"]
                    what = "bytes"
                else:
                    ring, kern = txq["frames"], kern_tx
                    what = "tx_packets"
                slack = (50 * 1514 if underlay else 50) + kern // 100
                if ring > kern or kern - ring > slack:
                    bad.append(f"node {s} {p['name']}: ring sent {ring} {what.split('_')[0]}, "
                               f"kernel {what} {kern}")
        return bad

    def ctl(self, s, *req):
        return run([self.o.vswitch, "ctl", self.sockets[s]] + list(req), timeout=10)

    def diagnostics(self):
        out = {}
        for s in self.procs:
            try:
                out[f"node{s}_counters"] = json.loads(self.ctl(s, "show", "counters"))
                out[f"node{s}_ports"] = json.loads(self.ctl(s, "show", "ports"))
            except (Failed, ValueError) as e:
                out[f"node{s}_counters"] = str(e)
        return out


class SwitchyardUring(Switchyard):
    backend = "io-uring"
    name = "switchyard-iouring"


CONTENDERS = {c.name: c for c in (Kernel, Ovs, Switchyard, SwitchyardUring, OvsAfxdp)}


def wait_for(cond, seconds, proc, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise Failed(f"{what} exited at start ({proc.returncode}): {tail(proc.logpath)}")
        time.sleep(0.05)
    raise Failed(f"{what} not ready after {seconds} s: {tail(proc.logpath) if proc else ''}")


# ---------------------------------------------------------------------------------------------
# Measurements


def proc_cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def softirq_seconds():
    with open("/proc/stat") as f:
        cpu = f.readline().split()
    return int(cpu[7]) / CLK_TCK  # user nice system idle iowait irq softirq


def percentile(sorted_values, q):
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def measure_latency(topo, opts):
    count = max(100, int(opts.duration * 100))
    out = run(["ip", "netns", "exec", topo.pod("A")] + taskset(opts.pin_gen) +
              ["ping", "-i", "0.01", "-c", str(count), "-W", "1", POD["B"]], check=False,
              timeout=opts.duration + count * 0.01 + 30)
    rtts = sorted(float(m) for m in re.findall(r"time=([\d.]+) ms", out))
    if not rtts:
        raise Failed(f"ping: no replies: {out.strip()[-300:]}")
    return {"lat_p50_ms": percentile(rtts, 50), "lat_p99_ms": percentile(rtts, 99),
            "lat_replies": len(rtts), "lat_sent": count}


def measure_tcp(topo, opts):
    out = run(["ip", "netns", "exec", topo.pod("A")] + taskset(opts.pin_gen) +
              ["iperf3", "-c", POD["B"], "-t", str(opts.duration), "-J", "--connect-timeout",
               "3000"], check=False, timeout=opts.duration + 30)
    try:
        j = json.loads(out)
    except ValueError:
        raise Failed(f"iperf3: {out.strip()[-300:]}")
    if "error" in j:
        raise Failed(f"iperf3: {j['error']}")
    end = j["end"]
    return {"tcp_gbps": end["sum_received"]["bits_per_second"] / 1e9,
            "tcp_retransmits": end["sum_sent"].get("retransmits")}


# 64-byte frames (60 + FCS) from pod A to pod B's MAC: Ethernet, IPv4, UDP (256 source
# ports, for the fanout over workers), 18 bytes of payload. trafgen takes no comments inside.
TRAFGEN_CONF = """\
{
  0x02, 0x00, 0x00, 0x00, 0x00, 0x02,
  0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
  0x08, 0x00,
  0x45, 0x00, const16(46), const16(0), 0x40, 0x00, 0x40, 17, csumip(14, 33),
  198, 19, 0, 1,
  198, 19, 0, 99,
  0x30, dinc(0, 255, 1), const16(9), const16(26), const16(0),
  fill(0x00, 18)
}
"""


def start_perf(topo, contender, opts, pids):
    """`perf record -g` of the switch processes (the whole machine for the kernel contender)
    during the timed 64-byte window; None without --perf."""
    if not opts.perf:
        return None
    opts.perf_count = getattr(opts, "perf_count", 0) + 1
    base = os.path.join(opts.perf_dir, f"{contender.name}-{opts.perf_count}")
    target = ["-p", ",".join(map(str, pids))] if pids else ["-a"]
    p = topo.start(f"perf-{opts.perf_count}", ["perf", "record", "-g", "-F", "999", "-o",
                                               base + ".data"] + target + ["--", "sleep",
                                                                           str(opts.duration)])
    p.base = base
    return p


def finish_perf(topo, p, opts):
    try:
        p.wait(timeout=opts.duration + 30)
    except subprocess.TimeoutExpired:
        topo.stop(p, signal.SIGINT)
    out = run(["perf", "report", "--stdio", "--no-children", "--percent-limit", "1", "-g",
               "none", "-i", p.base + ".data"], check=False, timeout=120)
    with open(p.base + ".txt", "w") as f:
        f.write(out)
    log(f"perf profile: {p.base}.txt")


def measure_udp(topo, contender, opts):
    conf = os.path.join(topo.work, "udp64.trafgen")
    with open(conf, "w") as f:
        f.write(TRAFGEN_CONF)
    # Loss is counted over the whole burst (counters before the start and after the drain),
    # not over the timed window: reading two namespaces' counters is not instantaneous, and at
    # these rates a few milliseconds of skew would show as loss (or as negative loss).
    pre_rx, _, _ = topo.counters("B")
    _, pre_tx, pre_txd = topo.counters("A")
    gen = topo.start("trafgen", ["ip", "netns", "exec", topo.pod("A")] + taskset(opts.pin_gen) +
                     ["trafgen", "--dev", "eth0", "--conf", conf, "--no-sock-mem",
                      "--notouch-irq", "--cpus", str(opts.gen_procs)], group=True)
    gen.group = True
    try:
        time.sleep(1.0)  # warm-up: rings full, switch busy
        if gen.poll() is not None:
            raise Failed(f"trafgen exited ({gen.returncode}): {tail(gen.logpath)}")
        pids = contender.switch_pids()
        rx0, _, _ = topo.counters("B")
        _, tx0, txd0 = topo.counters("A")
        c0 = proc_cpu_seconds(pids) if pids else None
        s0 = softirq_seconds()
        t0 = time.monotonic()
        perf = start_perf(topo, contender, opts, pids)
        time.sleep(opts.duration)
        rx1, _, _ = topo.counters("B")
        _, tx1, txd1 = topo.counters("A")
        t1 = time.monotonic()
        c1 = proc_cpu_seconds(pids) if pids else None
        s1 = softirq_seconds()
    finally:
        topo.stop(gen, signal.SIGINT)
    if perf is not None:
        finish_perf(topo, perf, opts)
    time.sleep(0.5)  # let the switches' queues drain
    post_rx, _, _ = topo.counters("B")
    _, post_tx, post_txd = topo.counters("A")
    elapsed = t1 - t0
    delivered = rx1 - rx0
    offered = (tx1 - tx0) + (txd1 - txd0)
    burst_offered = (post_tx - pre_tx) + (post_txd - pre_txd)
    burst_delivered = post_rx - pre_rx
    r = {"mpps": delivered / elapsed / 1e6, "offered_mpps": offered / elapsed / 1e6,
         "loss_pct": (100.0 * (burst_offered - burst_delivered) / burst_offered
                      if burst_offered else None),
         "delivered": delivered, "offered": offered, "burst_offered": burst_offered,
         "burst_delivered": burst_delivered}
    mpkt = delivered / 1e6
    if pids:
        r["cpu_s"] = c1 - c0
        r["cpu_s_per_mpkt"] = (c1 - c0) / mpkt if mpkt else None
    else:
        r["softirq_s"] = s1 - s0
        r["softirq_s_per_mpkt"] = (s1 - s0) / mpkt if mpkt else None
    return r


METRICS = ["tcp_gbps", "mpps", "loss_pct", "cpu_s_per_mpkt", "softirq_s_per_mpkt", "lat_p50_ms",
           "lat_p99_ms", "offered_mpps", "tcp_retransmits"]


def bench_contender(index, name, opts, work, reps=None, first_rep=0):
    tag = f"e2e{os.getpid()}c{index}"
    topo = Topology(tag, os.path.join(work, f"{name}-{first_rep + 1}" if reps else name))
    os.makedirs(topo.work)
    c = CONTENDERS[name](topo, opts)
    res = {"contender": name, "status": "ok", "reps": [], "errors": []}
    try:
        c.check()
        topo.build()
        c.setup()
        if not topo.reachable(opts.converge, c.alive):
            raise Failed(f"pod A cannot ping pod B after {opts.converge} s")
        if opts.pause:
            print(f"topology up: namespaces {' '.join(topo.ns.values())}; work directory "
                  f"{topo.work}. Enter to go on.", flush=True)
            input()
        server = topo.start("iperf3-server", ["ip", "netns", "exec", topo.pod("B")] +
                            taskset(opts.pin_recv) + ["iperf3", "-s"])
        time.sleep(0.3)
        for i in range(first_rep, first_rep + (reps or opts.reps)):
            rep = {}
            for test, fn in (("latency", lambda: measure_latency(topo, opts)),
                             ("tcp", lambda: measure_tcp(topo, opts)),
                             ("udp64", lambda: measure_udp(topo, c, opts))):
                if test not in opts.tests:
                    continue
                try:
                    rep.update(fn())
                except Failed as e:
                    res["errors"].append(f"rep {i + 1} {test}: {e}")
                    log(f"{name}: rep {i + 1} {test}: {e}")
                c.alive()
            log(f"{name}: rep {i + 1}: " + ", ".join(
                f"{k}={fmt(v)}" for k, v in rep.items() if k in METRICS))
            res["reps"].append(rep)
        # vswitch publishes its counters every 250 ms: wait for a snapshot newer than the
        # traffic, then read the kernel's after it (the kernel's can only be larger).
        time.sleep(0.6)
        res["diagnostics"] = c.diagnostics()
        res["diagnostics"]["links"] = topo.link_stats()
        if isinstance(c, Switchyard):
            bad = c.check_counters(res["diagnostics"])
            res["diagnostics"]["counter_check"] = bad or "vswitch and kernel counters agree"
            for b in bad:
                res["errors"].append(f"counters: {b}")
    except Unsupported as e:
        res["status"] = f"unsupported: {e}"
    except Failed as e:
        res["status"] = f"failed: {e}"
        try:
            res["diagnostics"] = c.diagnostics()
        except Exception:  # noqa: BLE001 - diagnostics are best effort
            pass
    finally:
        for note in topo.teardown():
            res["errors"].append(f"teardown: {note}")
    res["summary"] = summarize(res["reps"])
    if res["status"] == "ok" and not res["reps"]:
        res["status"] = "failed: no repetition completed"
    return res


def summarize(reps):
    out = {}
    for m in METRICS:
        vals = [r[m] for r in reps if r.get(m) is not None]
        if vals:
            out[m] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
                      "n": len(vals)}
    return out


# ---------------------------------------------------------------------------------------------
# Output


def fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def med(res, m):
    s = res["summary"].get(m)
    return s["median"] if s else None


def ratio(a, b):
    return a / b if a is not None and b else None


def table_rows(results):
    """The header, the rows (a failed contender's row is [name, status]) and the notes."""
    by = {r["contender"]: r for r in results}
    kern, ovs = by.get("kernel"), by.get("ovs")
    cols = ["contender", "TCP Gbps", "Mpps 64B", "loss %", "CPU s/Mpkt", "p50 ms", "p99 ms",
            "TCP x kern", "pps x kern", "TCP x OVS", "pps x OVS", "CPU x OVS"]
    rows = []
    notes = []
    for r in results:
        if not r["status"].startswith("ok"):
            rows.append([r["contender"], r["status"]])
            continue
        cpu = med(r, "cpu_s_per_mpkt")
        cpu_s = fmt(cpu)
        if cpu is None and med(r, "softirq_s_per_mpkt") is not None:
            cpu_s = fmt(med(r, "softirq_s_per_mpkt")) + "*"
            notes.append("* kernel: softirq seconds of the whole machine (/proc/stat) per "
                         "million delivered; the kernel switches in softirq, not in a process")
        row = [r["contender"]]
        for m in ("tcp_gbps", "mpps", "loss_pct"):
            s = r["summary"].get(m)
            row.append(f"{fmt(s['median'])} [{fmt(s['min'])}-{fmt(s['max'])}]" if s else "-")
        row += [cpu_s, fmt(med(r, "lat_p50_ms")), fmt(med(r, "lat_p99_ms"))]
        for base in (kern,):
            ok = base and base["status"] == "ok"
            row += [fmt(ratio(med(r, "tcp_gbps"), med(base, "tcp_gbps")) if ok else None),
                    fmt(ratio(med(r, "mpps"), med(base, "mpps")) if ok else None)]
        ok = ovs and ovs["status"] == "ok"
        row += [fmt(ratio(med(r, "tcp_gbps"), med(ovs, "tcp_gbps")) if ok else None),
                fmt(ratio(med(r, "mpps"), med(ovs, "mpps")) if ok else None),
                fmt(ratio(cpu, med(ovs, "cpu_s_per_mpkt")) if ok else None)]
        rows.append(row)
    return cols, rows, sorted(set(notes))


def table(results):
    cols, rows, notes = table_rows(results)
    widths = [max([len(cols[i])] + [len(r[i]) for r in rows if len(r) > 2])
              for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        if len(r) == 2:
            lines.append(f"{r[0].ljust(widths[0])}  {r[1]}")
        else:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    lines.append("medians [min-max]; ratios are medians over medians from this run; "
                 "CPU = switch processes' utime+stime, both nodes")
    lines += notes
    for r in results:
        for e in r.get("errors", []):
            lines.append(f"{r['contender']}: {e}")
    return "\n".join(lines)


def markdown(results, doc):
    """The same table in Markdown, with the command and the machine, for BENCHMARKS.md."""
    cols, rows, notes = table_rows(results)
    m = doc["machine"]
    o = doc["options"]
    out = [f"Command: `{' '.join(['sudo', 'python3', 'benches/e2e/run.py'] + doc['command'][1:])}`",
           "",
           f"Machine: {m['cpu_model']}, {m['cpus']} CPUs, Linux {m['kernel']}; "
           + "; ".join(m["tools"].values()) + f"; switchyard {m['switchyard_commit']}. "
           f"{o['reps']} x {o['duration']:g} s, vswitch workers {o['workers']}, pinning: "
           f"switch {o['pin_switch'] or 'none'}, generator {o['pin_gen'] or 'none'}, "
           f"receiver {o['pin_recv'] or 'none'}{', interleaved' if o['interleave'] else ''}. "
           f"Started {doc['started']}.",
           "",
           "| " + " | ".join(cols) + " |",
           "|" + "---|" * len(cols)]
    for r in rows:
        if len(r) == 2:
            r = [r[0], r[1].replace("|", "/")] + [""] * (len(cols) - 2)
        out.append("| " + " | ".join(r) + " |")
    out += ["", "Median [min-max]; ratios are medians over medians from this run; CPU = the "
                "switch processes' utime+stime on both nodes per million delivered frames."]
    out += notes
    return "\n".join(out) + "\n"


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    vers = {}
    for prog, args in (("iperf3", ["--version"]), ("trafgen", ["--version"]),
                       ("ovs-vswitchd", ["--version"])):
        if shutil.which(prog):
            out = subprocess.run([prog] + args, capture_output=True, text=True).stdout
            vers[prog] = out.splitlines()[0] if out else ""
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        if subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                          capture_output=True, text=True).stdout.strip():
            commit += " (with uncommitted changes)"
    except OSError:
        commit = ""
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": model,
            "tools": vers, "switchyard_commit": commit}


# ---------------------------------------------------------------------------------------------
# Tools


def ensure_tools(names, install):
    need = dict(TOOLS)
    if any(n.startswith("ovs") for n in names):
        need.update(OVS_TOOLS)
    missing = sorted({pkg for prog, pkg in need.items() if not shutil.which(prog)})
    if not missing:
        return
    cmd = "apt-get update && apt-get install -y " + " ".join(missing)
    if not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(f"e2e: missing packages {', '.join(missing)}; install them with: {cmd}")
    log(f"installing {' '.join(missing)}")
    # Installing openvswitch-switch must not start the system's own OVS service: a
    # policy-rc.d that denies service starts is in place only for the install (if none is).
    policy = "/usr/sbin/policy-rc.d"
    ours = False
    if "openvswitch-switch" in missing and not os.path.exists(policy):
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
        ours = True
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y"] + missing, check=True, env=env)
    except subprocess.CalledProcessError as e:
        sys.exit(f"e2e: {' '.join(e.cmd)} failed ({e.returncode}); install by hand: {cmd}")
    finally:
        if ours:
            os.unlink(policy)


def build_vswitch(opts):
    cargo = shutil.which("cargo")
    if not cargo and os.environ.get("SUDO_USER"):
        cand = os.path.expanduser(f"~{os.environ['SUDO_USER']}/.cargo/bin/cargo")
        cargo = cand if os.path.exists(cand) else None
    if not cargo:
        log("cargo not found: using the existing vswitch binary as it is")
        return
    log("cargo build --release --features af-packet,io-uring --example vswitch")
    r = subprocess.run([cargo, "build", "--release", "--features", "af-packet,io-uring",
                        "--example", "vswitch"], cwd=ROOT)
    if r.returncode != 0:
        sys.exit("e2e: cargo build failed (above); fix it or pass --no-build --vswitch PATH")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="contenders: " + ", ".join(ALL))
    ap.add_argument("-c", "--contenders", default=",".join(ALL),
                    help="comma-separated, in order (default: all)")
    ap.add_argument("-d", "--duration", type=float, default=10, help="seconds per test (10)")
    ap.add_argument("-r", "--reps", type=int, default=3, help="repetitions (3)")
    ap.add_argument("-w", "--workers", type=int, default=1, help="vswitch [switch] workers (1)")
    ap.add_argument("--tests", default="latency,tcp,udp64", help="subset of latency,tcp,udp64")
    ap.add_argument("--pin-switch", metavar="CPUS",
                    help="taskset CPU list for ovs-vswitchd / vswitch (e.g. 1)")
    ap.add_argument("--pin-gen", metavar="CPUS",
                    help="taskset CPU list for the senders in pod A: trafgen, iperf3 -c, ping")
    ap.add_argument("--pin-recv", metavar="CPUS", help="taskset CPU list for iperf3 -s in pod B")
    ap.add_argument("--gen-procs", type=int, default=1,
                    help="trafgen processes (--cpus), 1 by default")
    ap.add_argument("--converge", type=float, default=15,
                    help="seconds to wait for pod A to reach pod B after setup (15)")
    ap.add_argument("-o", "--json", help="JSON output (default target/e2e/e2e-TIMESTAMP.json)")
    ap.add_argument("--vswitch", default=os.path.join(ROOT, "target/release/examples/vswitch"),
                    help="the vswitch binary")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build first")
    ap.add_argument("--no-install", action="store_true",
                    help="name missing packages instead of installing them")
    ap.add_argument("--interleave", action="store_true",
                    help="repetition by repetition (kernel, ovs, ... then again) rather than "
                         "contender by contender; each repetition builds its own topology")
    ap.add_argument("--perf", action="store_true",
                    help="perf record -g the switch processes during each 64-byte test; "
                         "profiles next to the JSON (<json>-perf/)")
    ap.add_argument("--pause", action="store_true",
                    help="after each setup, wait for Enter (to look at the topology by hand)")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep the work directory (configs and process logs)")
    opts = ap.parse_args()
    names = [n.strip() for n in opts.contenders.split(",") if n.strip()]
    bad = [n for n in names if n not in CONTENDERS]
    if bad:
        ap.error(f"unknown contender(s) {', '.join(bad)}; choose from {', '.join(ALL)}")
    opts.tests = set(t.strip() for t in opts.tests.split(","))
    if os.geteuid() != 0:
        sys.exit("e2e: needs root (network namespaces): sudo python3 benches/e2e/run.py ...")
    ensure_tools(names, not opts.no_install)
    if any(n.startswith("switchyard") for n in names) and not opts.no_build:
        build_vswitch(opts)

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_path = opts.json or os.path.join(ROOT, "target", "e2e", f"e2e-{stamp}.json")
    work = tempfile.mkdtemp(prefix="switchyard-e2e-")
    if opts.perf:
        if not shutil.which("perf"):
            sys.exit("e2e: --perf needs perf: apt-get install linux-perf")
        opts.perf_dir = os.path.splitext(os.path.abspath(out_path))[0] + "-perf"
        os.makedirs(opts.perf_dir, exist_ok=True)
    results = []
    try:
        if not opts.interleave:
            for i, n in enumerate(names):
                log(f"== {n}")
                r = bench_contender(i, n, opts, work)
                log(f"{n}: {r['status']}")
                results.append(r)
        else:
            # Repetition by repetition: each contender is built, measured once and torn down
            # in turn, so a machine whose load drifts weighs on every contender alike.
            by = {}
            for k in range(opts.reps):
                for i, n in enumerate(names):
                    if n in by and not by[n]["status"].startswith("ok"):
                        continue  # failed or unsupported: not retried
                    log(f"== {n} (repetition {k + 1} of {opts.reps})")
                    r = bench_contender(i, n, opts, work, reps=1, first_rep=k)
                    log(f"{n}: {r['status']}")
                    if n not in by:
                        by[n] = r
                        results.append(r)
                        continue
                    acc = by[n]
                    if not r["status"].startswith("ok"):
                        acc["errors"].append(f"rep {k + 1}: {r['status']}")
                    acc["reps"] += r["reps"]
                    acc["errors"] += r["errors"]
                    acc["diagnostics"] = r.get("diagnostics", acc.get("diagnostics"))
                    if acc["reps"]:
                        acc["status"] = "ok"
                    acc["summary"] = summarize(acc["reps"])
    except (KeyboardInterrupt, Interrupted) as e:
        log(f"interrupted ({e or 'SIGINT'}): torn down; results so far follow")
    finally:
        if opts.keep_logs:
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    doc = {"started": stamp, "command": sys.argv, "machine": machine(),
           "options": {k: (sorted(v) if isinstance(v, set) else v)
                       for k, v in vars(opts).items()},
           "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=2)
    md_path = os.path.splitext(out_path)[0] + ".md"
    with open(md_path, "w") as f:
        f.write(markdown(results, doc))
    print(f"JSON: {out_path}\nMarkdown table: {md_path}")
    return 0 if results and all(r["status"] == "ok" or r["status"].startswith("unsupported")
                                for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
