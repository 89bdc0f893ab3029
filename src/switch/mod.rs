//! The switch: what ties the tunnel, the forwarding table and the load balancer together.
//!
//! This module grows with issue 5 (the batch pipeline). What is here now are the pieces of
//! address resolution that the pipeline needs and that stand on their own:
//! - [`neighbor`]: reading ARP requests and IPv6 neighbour solicitations that the switch may
//!   answer for a host (ARP/ND suppression), and writing the answers; ARP requests and
//!   solicitations of its own.
//! - [`resolver`]: the underlay next hop's MAC for each remote VTEP, found with ARP or
//!   neighbour discovery from the core (sans-IO: the caller sends the probes it is handed),
//!   cached, refreshed and retried.

pub mod neighbor;
#[cfg(feature = "alloc")]
pub mod resolver;
