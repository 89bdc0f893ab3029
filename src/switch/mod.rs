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
//! # The pipeline (work in progress for issue 5)
//!
//! [`Switch::process`] takes a batch of frames from any ports and the underlay and runs each
//! stage over the whole batch before the next (vector processing, as FD.io VPP's graph nodes
//! do): classify (port and VLAN -> VNI, or decapsulate), learn the source, answer ARP/ND for
//! known neighbours, forward (local port, remote VTEP, or flood). Every received frame ends in
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
    ConfigError, Neighbor, NextHop, PortConfig, PortMode, PortSecurity, StaticEntry, SwitchConfig,
    UnderlayConfig, VniSettings,
};
#[cfg(feature = "alloc")]
pub use pipeline::{
    Action, Egress, Ingress, Output, Payload, Received, Switch, SwitchCounters, TrafficCounters,
    Worker, MAX_ACTION_HEADER,
};
