//! The switch: what ties the tunnel, the forwarding table and the load balancer together.
//!
//! Address resolution:
//! - [`neighbor`]: reading ARP requests and IPv6 neighbour solicitations that the switch may
//!   answer for a host (ARP/ND suppression), and writing the answers; ARP requests and
//!   solicitations of its own.
//! - [`resolver`]: the underlay next hop's MAC for each remote VTEP, found with ARP or
//!   neighbour discovery from the core (sans-IO: the caller sends the probes it is handed),
//!   cached, refreshed and retried.
//!
//! # The pipeline
//!
//! [`Switch::process`] takes a batch of frames from any ports and the underlay and runs each
//! stage over the whole batch before the next (vector processing, as FD.io VPP's graph nodes
//! do): classify (port and VLAN -> VNI, port security, or decapsulate), learn the source,
//! answer ARP/ND for known neighbours and for service VIPs, translate packets of services
//! (DNAT towards a backend, the reverse for replies), forward (local port, remote VTEP, or
//! flood).
//!
//! **Services.** Each VNI with [`ServiceSettings`] has its own load balancer
//! ([`crate::lb`]): Maglev tables shared by the workers, connection tracking per worker. A
//! client resolves the VIP to the switch's virtual MAC ([`LbSettings::virtual_mac`]); its
//! packet is translated to a backend and re-addressed to the backend's MAC (from the
//! neighbour table), keeping the client's source MAC, so the backend's reply goes straight
//! back to the client's node, which alone tracks the flow and translates the reply (source
//! VIP, source MAC the virtual MAC), whether the reply came from a local port or over the
//! tunnel. A dispatcher that spreads frames over several workers must send both directions of
//! a connection to the same worker ([`crate::lb::Services::steering_hash`]). Every received frame ends in
//! exactly one of three ways, counted: forwarded (one or more actions), dropped (one
//! [`DropReason`](crate::DropReason)) or consumed (answered by the switch). Hence the invariant, checked by the
//! tests: `received = forwarded + dropped + consumed`.
//!
//! **Actions gather.** An [`Action`] is a small header written by the switch (the outer
//! VXLAN headers, or a trunk port's MACs and tag) followed by a payload that is a range of a
//! received frame or of the bytes the switch generated (ARP replies, ICMP errors). The
//! transmit side writes the two one after the other (one copy into a TX ring slot, or
//! `sendmsg` with two `iovec`s). So a flood to N ports and VTEPs copies nothing in the core:
//! N actions share the received frame, each with its own header.
//!
//! **In place.** Decapsulation may rewrite the inner ECN field (RFC 6040), and a frame from a
//! trunk port has its tag removed by moving its two MAC addresses four bytes up; both in the
//! received buffer, which is why frames come in as `&mut [u8]`.

//! # Example
//!
//! Two access ports in VNI 100 and one remote VTEP; a broadcast from port 1 goes to port 2
//! and, encapsulated, to the VTEP (never back to port 1); the switch learned its source.
//!
//! ```
//! use core::net::{IpAddr, Ipv4Addr};
//! use switchyard::fdb::{Destination, FdbConfig};
//! use switchyard::switch::{
//!     Egress, Ingress, LbSettings, NextHop, Output, PortConfig, Received, Switch,
//!     SwitchConfig, UnderlayConfig, VniSettings,
//! };
//! use switchyard::time::Instant;
//! use switchyard::tunnel::{DecapConfig, EncapConfig};
//! use switchyard::wire::EthernetAddress;
//! use switchyard::{PortId, Vni};
//!
//! let vni = Vni::new(100)?;
//! let remote = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
//! let switch = Switch::new(SwitchConfig {
//!     underlay: UnderlayConfig {
//!         local_ip: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
//!         local_mac: EthernetAddress([0x02, 0xee, 0, 0, 0, 1]),
//!         next_hop: NextHop::Static {
//!             default: EthernetAddress([0x02, 0xee, 0, 0, 0, 2]),
//!             per_vtep: Vec::new(),
//!         },
//!         encap: EncapConfig::default(),
//!         decap: DecapConfig::default(),
//!     },
//!     ports: vec![PortConfig::access(PortId(1), vni), PortConfig::access(PortId(2), vni)],
//!     vnis: vec![VniSettings::new(vni, vec![remote])],
//!     static_entries: Vec::new(),
//!     neighbors: Vec::new(),
//!     fdb: FdbConfig::default(),
//!     services: Vec::new(),
//!     lb: LbSettings::default(),
//! })?;
//! let mut worker = switch.worker(); // one per thread
//!
//! // A broadcast ARP request from a host on port 1.
//! let mut frame = [0u8; 60];
//! frame[..6].copy_from_slice(&[0xff; 6]);
//! frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x0a]);
//! frame[12..14].copy_from_slice(&[0x08, 0x06]);
//! let mut batch = [Received { ingress: Ingress::Port(PortId(1)), frame: &mut frame }];
//! let mut output = Output::default();
//! switch.process(&mut worker, &mut batch, Instant::from_secs(1), &mut output);
//!
//! let egresses: Vec<Egress> = output.actions.iter().map(|a| a.egress).collect();
//! assert_eq!(egresses, [Egress::Port(PortId(2)), Egress::Underlay]);
//! // The underlay copy is the outer headers (50 bytes over IPv4) then the frame itself.
//! let (header, payload) = output.parts(&output.actions[1], &batch);
//! assert_eq!((header.len(), payload.len()), (50, 60));
//! let src = EthernetAddress([0x02, 0, 0, 0, 0, 0x0a]);
//! assert_eq!(switch.fdb().lookup(vni, src), Some(Destination::Port(PortId(1))));
//! let c = &worker.counters;
//! assert_eq!((c.received, c.forwarded, c.sent), (1, 1, 2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "alloc")]
mod config;
pub mod neighbor;
#[cfg(feature = "alloc")]
mod neighbor_map;
#[cfg(feature = "alloc")]
mod pipeline;
#[cfg(feature = "alloc")]
pub mod resolver;

#[cfg(feature = "alloc")]
pub use config::{
    ConfigError, LbSettings, Neighbor, NextHop, PortConfig, PortMode, PortSecurity, ServiceProblem,
    ServiceSettings, StaticEntry, SwitchConfig, UnderlayConfig, VniSettings,
};
#[cfg(feature = "alloc")]
pub use pipeline::{
    Action, Egress, Ingress, Output, Payload, Received, ServiceChange, Switch, SwitchCounters,
    TrafficCounters, Worker, MAX_ACTION_HEADER,
};
