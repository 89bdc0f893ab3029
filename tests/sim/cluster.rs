//! Switchyard nodes joined by an in-memory underlay, with hosts on their access ports.

use std::collections::VecDeque;
use std::net::IpAddr;

use switchyard::switch::{Egress, Ingress, Output, Received, Switch, Worker};
use switchyard::PortId;

/// One switchyard node: its switch, one worker, and which host sits on which port.
pub struct Node {
    pub switch: Switch,
    pub worker: Worker,
    pub underlay_ip: IpAddr,
    /// (port, host index)
    pub ports: Vec<(PortId, usize)>,
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
