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

#[cfg(feature = "alloc")]
mod config;
pub mod neighbor;
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
