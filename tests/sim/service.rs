//! A service on the in-memory cluster: three nodes, a client on node 1, one backend on each
//! node, the same service configured on every node (as a cluster's control plane would).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpCidr, IpEndpoint, Ipv4Address};
use switchyard::lb::{Backend, Protocol, ServiceConfig, ServiceKey};
use switchyard::switch::{Neighbor, ServiceChange, ServiceSettings, SwitchConfig};
use switchyard::wire::EthernetAddress;
use switchyard::{PortId, Vni};

use super::cluster::{node_config, Cluster, Node};
use super::{step, Clock, Host};

/// The service's VNI.
pub const VNI: u32 = 100;
/// The virtual IP and port clients connect to.
pub const VIP: Ipv4Address = Ipv4Address::new(198, 19, 1, 100);
/// The VIP's port.
pub const VIP_PORT: u16 = 80;
/// Where the backends listen.
pub const BACKEND_PORT: u16 = 8080;
/// Listening sockets per backend: how many connections each can hold.
const LISTENERS: usize = 24;

/// The client's host index; backends are hosts 1, 2 and 3, on nodes 1, 2 and 3.
pub const CLIENT: usize = 0;
/// The backends' host indices.
pub const BACKENDS: [usize; 3] = [1, 2, 3];

/// Host `h`'s address.
pub fn host_ip(h: usize) -> Ipv4Address {
    Ipv4Address::new(198, 19, 1, 10 + h as u8)
}

fn host_mac(h: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x01, h as u8]
}

fn node_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, n))
}

/// The service key.
pub fn service_key() -> ServiceKey {
    ServiceKey::new(SocketAddr::new(IpAddr::V4(VIP), VIP_PORT), Protocol::Tcp)
}

/// The lab: the cluster, its hosts, the clock and every node's configuration.
pub struct ServiceLab {
    pub cluster: Cluster,
    pub hosts: Vec<Host>,
    pub clock: Clock,
    pub configs: Vec<SwitchConfig>,
    /// The backends' listening sockets, per backend host.
    pub listeners: Vec<(usize, Vec<SocketHandle>)>,
}

impl ServiceLab {
    /// Three nodes; host 0 (the client) and host 1 on node 1, host 2 on node 2, host 3 on
    /// node 3; the service VIP:80 -> hosts 1-3 port 8080 on every node.
    pub fn new() -> ServiceLab {
        let clock = Clock::default();
        let vni = Vni::new(VNI).expect("a 24-bit VNI");
        let placement: [&[usize]; 3] = [&[CLIENT, 1], &[2], &[3]];
        let backends: Vec<Backend> = BACKENDS
            .iter()
            .map(|&h| Backend::new(SocketAddr::new(IpAddr::V4(host_ip(h)), BACKEND_PORT)))
            .collect();
        let neighbors: Vec<Neighbor> = (0..4)
            .map(|h| Neighbor {
                vni,
                ip: IpAddr::V4(host_ip(h)),
                mac: EthernetAddress(host_mac(h)),
            })
            .collect();
        let mut nodes = Vec::new();
        let mut configs = Vec::new();
        for (i, hosts) in placement.iter().enumerate() {
            let n = i as u8 + 1;
            let ports: Vec<(PortId, usize)> = hosts
                .iter()
                .enumerate()
                .map(|(p, &h)| (PortId(p as u32 + 1), h))
                .collect();
            let others = (1..=3).filter(|&m| m != n).map(node_ip).collect();
            let mut config = node_config(
                node_ip(n),
                EthernetAddress([0x02, 0xee, 0, 0, 0, n]),
                vni,
                others,
                &ports,
            );
            config.neighbors = neighbors.clone();
            config.services = vec![ServiceSettings {
                vni,
                key: service_key(),
                service: ServiceConfig::new(backends.clone()),
            }];
            configs.push(config.clone());
            nodes.push(Node::new(config, ports));
        }
        let mut hosts: Vec<Host> = (0..4)
            .map(|h| {
                Host::with_mtu(
                    "host",
                    host_mac(h),
                    IpCidr::new(IpAddress::Ipv4(host_ip(h)), 24),
                    1450,
                    clock,
                )
            })
            .collect();
        let listeners = BACKENDS
            .iter()
            .map(|&b| {
                let sockets = (0..LISTENERS)
                    .map(|_| {
                        let s = hosts[b].tcp_socket();
                        hosts[b].tcp(s).listen(BACKEND_PORT).expect("listen");
                        s
                    })
                    .collect();
                (b, sockets)
            })
            .collect();
        ServiceLab {
            cluster: Cluster { nodes, lost: 0 },
            hosts,
            clock,
            configs,
            listeners,
        }
    }

    /// Runs `rounds` rounds of the hosts and the network.
    pub fn run(&mut self, rounds: usize) {
        let cluster = &mut self.cluster;
        let mut network = |from: usize, frame: Vec<u8>, clock: &mut Clock| {
            cluster.carry(from, frame, clock.instant())
        };
        for _ in 0..rounds {
            step(&mut self.hosts, &mut self.clock, &mut network);
        }
    }

    /// Opens a connection from the client's port `local_port` to the VIP.
    pub fn connect(&mut self, local_port: u16) -> SocketHandle {
        let client = &mut self.hosts[CLIENT];
        let socket = client.tcp_socket();
        let cx = client.iface.context();
        client
            .sockets
            .get_mut::<tcp::Socket>(socket)
            .connect(cx, (IpAddress::Ipv4(VIP), VIP_PORT), local_port)
            .expect("connect");
        socket
    }

    /// The backend host and its socket that hold the connection from the client's port
    /// `local_port`, if one does.
    pub fn backend_of(&mut self, local_port: u16) -> Option<(usize, SocketHandle)> {
        let client = IpEndpoint::new(IpAddress::Ipv4(host_ip(CLIENT)), local_port);
        for (backend, sockets) in &self.listeners {
            for &socket in sockets {
                let s = self.hosts[*backend].tcp(socket);
                if s.remote_endpoint() == Some(client) && s.state() != tcp::State::Listen {
                    return Some((*backend, socket));
                }
            }
        }
        None
    }

    /// Reconfigures every node with the service's backend on host `host` removed; returns
    /// each node's report of what moved.
    pub fn remove_backend(&mut self, host: usize) -> Vec<Vec<ServiceChange>> {
        let gone = IpAddr::V4(host_ip(host));
        self.configs
            .iter_mut()
            .zip(&self.cluster.nodes)
            .map(|(config, node)| {
                for service in &mut config.services {
                    service.service.backends.retain(|b| b.addr.ip() != gone);
                }
                node.switch
                    .reconfigure(config.clone())
                    .expect("a valid reconfiguration")
            })
            .collect()
    }
}
