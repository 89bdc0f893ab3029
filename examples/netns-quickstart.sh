#!/usr/bin/env bash
# A two-node overlay on one machine, in network namespaces: node A runs switchyard's vswitch,
# node B the Linux kernel's bridge + VXLAN device (what Flannel programs). A pod on each node,
# a ping across, the forwarding table and counters, then everything is removed.
#
#   sudo examples/netns-quickstart.sh                     (builds the example first)
#   sudo BACKEND=io-uring examples/netns-quickstart.sh    (the io_uring underlay)
#
# Addresses: underlay 198.18.0.1-2/24, pods 198.19.0.1-2/24 (RFC 2544's benchmarking range).
set -euo pipefail

cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "netns-quickstart: needs root (network namespaces)" >&2
    exit 1
fi
# VSWITCH=path uses a binary already built (CI passes the one `cargo test` built).
if [ -z "${VSWITCH:-}" ]; then
    cargo build --release --features af-packet,io-uring --example vswitch
    VSWITCH=$PWD/target/release/examples/vswitch
fi

tag=sy$$
nsA=$tag-nodeA nsB=$tag-nodeB podA=$tag-podA podB=$tag-podB
work=$(mktemp -d)
vswitch_pid=

cleanup() {
    [ -n "$vswitch_pid" ] && kill "$vswitch_pid" 2>/dev/null && wait "$vswitch_pid" 2>/dev/null
    for ns in "$nsA" "$nsB" "$podA" "$podB"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap "exit 1" INT TERM HUP PIPE

for ns in "$nsA" "$nsB" "$podA" "$podB"; do ip netns add "$ns"; done
# The underlay: one veth between the nodes.
ip link add ul0 netns "$nsA" type veth peer name ul0 netns "$nsB"
ip -n "$nsA" addr add 198.18.0.1/24 dev ul0
ip -n "$nsB" addr add 198.18.0.2/24 dev ul0
# Pods: a veth each, the pod end inside the pod's namespace.
ip link add eth0 netns "$podA" type veth peer name pod-a netns "$nsA"
ip link add eth0 netns "$podB" type veth peer name pod-b netns "$nsB"
ip -n "$podA" link set eth0 address 02:00:00:00:00:01 mtu 1450
ip -n "$podB" link set eth0 address 02:00:00:00:00:02 mtu 1450
ip -n "$podA" addr add 198.19.0.1/24 dev eth0
ip -n "$podB" addr add 198.19.0.2/24 dev eth0
for ns in "$nsA" "$nsB" "$podA" "$podB"; do
    ip -n "$ns" link set lo up
    for dev in $(ip -n "$ns" -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
        ip -n "$ns" link set "$dev" up
    done
done
# Node B: the kernel's VTEP, flooding to node A.
ip -n "$nsB" link add vxlan0 type vxlan id 42 local 198.18.0.2 dstport 4789 dev ul0
ip -n "$nsB" link add br0 type bridge
ip -n "$nsB" link set br0 type bridge mcast_snooping 0
ip -n "$nsB" link set vxlan0 master br0
ip -n "$nsB" link set pod-b master br0
ip -n "$nsB" link set vxlan0 up
ip -n "$nsB" link set br0 up
bridge -n "$nsB" fdb append 00:00:00:00:00:00 dev vxlan0 dst 198.18.0.1

# Node A: vswitch.
cat > "$work/vswitch.toml" <<TOML
[switch]
control_socket = "$work/vswitch.sock"

[underlay]
interface = "ul0"
local_ip = "198.18.0.1"
backend = "${BACKEND:-af-packet}"
df = "unset"

[[vni]]
id = 42
flood = ["198.18.0.2"]

[[port]]
name = "pod-a"
interface = "pod-a"
vni = 42
TOML
ip netns exec "$nsA" "$VSWITCH" run "$work/vswitch.toml" &
vswitch_pid=$!
for _ in $(seq 50); do [ -S "$work/vswitch.sock" ] && break; sleep 0.1; done

echo "== ping from pod A (vswitch node) to pod B (kernel VXLAN node)"
ip netns exec "$podA" ping -c 3 -i 0.2 198.19.0.2
echo "== vswitch forwarding table"
"$VSWITCH" ctl "$work/vswitch.sock" show fdb
echo "== kernel forwarding table on node B"
bridge -n "$nsB" fdb show dev vxlan0
echo "== vswitch counters"
"$VSWITCH" ctl "$work/vswitch.sock" show counters
