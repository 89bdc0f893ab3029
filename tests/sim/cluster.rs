//! Switchyard nodes joined by an in-memory underlay, with hosts on their access ports.

use std::collections::VecDeque;
use std::net::IpAddr;

use switchyard::fdb::FdbConfig;
use switchyard::switch::{
    Egress, Ingress, LbSettings, NextHop, Output, PortConfig, Received, Switch, SwitchConfig,
    UnderlayConfig, VniSettings, Worker,
};
use switchyard::tunnel::{DecapConfig, EncapConfig};
use switchyard::wire::EthernetAddress;
use switchyard::{PortId, Vni};

/// One switchyard node: its switch, one worker, and which host sits on which port.
pub struct Node {
    pub switch: Switch,
    pub worker: Worker,
    pub underlay_ip: IpAddr,
    /// (port, host index)
    pub ports: Vec<(PortId, usize)>,
}

impl Node {
    /// A node running `config`, with host `host` on port `port` for each `(port, host)`.
    pub fn new(config: SwitchConfig, ports: Vec<(PortId, usize)>) -> Node {
        let underlay_ip = config.underlay.local_ip;
        let switch = Switch::new(config).expect("a valid configuration");
        let worker = switch.worker();
        Node {
            switch,
            worker,
            underlay_ip,
            ports,
        }
    }
}

/// The configuration of a node of a flat cluster: the underlay address `local_ip`, the
/// access ports `ports` all in `vni`, which floods to the VTEPs `others`. The in-memory
/// underlay routes by outer IP address, so any next-hop MAC will do.
pub fn node_config(
    local_ip: IpAddr,
    local_mac: EthernetAddress,
    vni: Vni,
    others: Vec<IpAddr>,
    ports: &[(PortId, usize)],
) -> SwitchConfig {
    SwitchConfig {
        underlay: UnderlayConfig {
            local_ip,
            local_mac,
            next_hop: NextHop::Static {
                default: EthernetAddress([0x02, 0xee, 0, 0, 0, 0xff]),
                per_vtep: Vec::new(),
            },
            encap: EncapConfig::default(),
            decap: DecapConfig::default(),
        },
        ports: ports
            .iter()
            .map(|&(id, _)| PortConfig::access(id, vni))
            .collect(),
        vnis: vec![VniSettings::new(vni, others)],
        static_entries: Vec::new(),
        neighbors: Vec::new(),
        fdb: FdbConfig {
            capacity: 4096,
            ..FdbConfig::default()
        },
        services: Vec::new(),
        lb: LbSettings::default(),
    }
}

/// Nodes joined by an underlay that delivers each outer frame to the node owning its outer
/// destination address.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// Outer frames that went to no node.
    pub lost: usize,
}

impl Cluster {
    /// Takes a frame that host `host` sent and runs it through the nodes until it reaches
    /// hosts; returns (host, frame) deliveries.
    pub fn carry(
        &mut self,
        host: usize,
        frame: Vec<u8>,
        now: switchyard::time::Instant,
    ) -> Vec<(usize, Vec<u8>)> {
        let Some((node, port)) = self.nodes.iter().enumerate().find_map(|(n, node)| {
            node.ports
                .iter()
                .find(|&&(_, h)| h == host)
                .map(|&(port, _)| (n, port))
        }) else {
            return Vec::new();
        };
        let mut queue = VecDeque::from([(node, Ingress::Port(port), frame)]);
        let mut deliveries = Vec::new();
        let mut output = Output::default();
        let underlay: Vec<IpAddr> = self.nodes.iter().map(|n| n.underlay_ip).collect();
        while let Some((n, ingress, mut frame)) = queue.pop_front() {
            let node = &mut self.nodes[n];
            let mut batch = [Received {
                ingress,
                frame: &mut frame,
            }];
            node.switch
                .process(&mut node.worker, &mut batch, now, &mut output);
            let counters = &node.worker.counters;
            assert_eq!(
                counters.received,
                counters.forwarded + counters.dropped.total() + counters.consumed,
                "frames in = forwarded + dropped + consumed"
            );
            for action in &output.actions {
                let bytes = output.frame(action, &batch);
                match action.egress {
                    Egress::Port(port) => {
                        if let Some(&(_, host)) = node.ports.iter().find(|&&(p, _)| p == port) {
                            deliveries.push((host, bytes));
                        }
                    }
                    Egress::Underlay => match outer_destination(&bytes)
                        .and_then(|dst| underlay.iter().position(|&ip| ip == dst))
                    {
                        Some(to) => queue.push_back((to, Ingress::Underlay, bytes)),
                        None => self.lost += 1,
                    },
                }
            }
        }
        deliveries
    }
}

fn outer_destination(frame: &[u8]) -> Option<IpAddr> {
    match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        0x0800 => {
            let d: [u8; 4] = frame.get(30..34)?.try_into().ok()?;
            Some(IpAddr::from(d))
        }
        0x86dd => {
            let d: [u8; 16] = frame.get(38..54)?.try_into().ok()?;
            Some(IpAddr::from(d))
        }
        _ => None,
    }
}
