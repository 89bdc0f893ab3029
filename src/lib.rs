//! # switchyard
//!
//! User-space packet switching for overlay networks: VXLAN encapsulation and decapsulation
//! exactly as RFC 7348 and RFC 6040 describe them, as a sans-IO library.
//!
//! The core never reads a clock, opens a socket or spawns a thread: it takes bytes (and, where
//! time matters, `now`) and returns what to do with them, borrowing the caller's buffers. It is
//! `#![no_std]`; the `alloc` feature adds what needs a heap, `std` (the default) adds what
//! needs an operating system.
//!
//! - [`wire`]: packet formats. smoltcp's types for Ethernet, ARP, IPv4, IPv6, UDP, TCP and
//!   ICMP, re-exported; our own for VXLAN ([`wire::vxlan`]) and 802.1Q ([`wire::vlan`]).
//! - [`tunnel`]: encapsulation into headroom in front of the inner frame, and decapsulation
//!   that returns the inner frame in place, with every rule of the overlay specification
//!   (flags, checksums, DF/TTL/TOS, ECN, MTU, inner VLAN tags).
//! - [`fdb`] (with `alloc`): the forwarding table, (VNI, MAC) -> local port or remote VTEP,
//!   with learning, MAC moves, ageing, capacity bounds and flood lists; lock-free lookups.
//! - [`switch`]: the switch's address resolution so far: ARP/ND suppression answers, and the
//!   underlay next hop's MAC for each remote VTEP.
//! - [`lb`] (with `alloc`): a service load balancer: Maglev tables, connection tracking,
//!   ClientIP affinity and NAT with incremental checksums, tables swapped without blocking.
//! - [`gso`]: software segmentation of TCP super-frames (GSO) that a Linux peer hands over.
//! - [`gro`] (with `alloc`): the inverse, consecutive TCP segments joined into a super-frame
//!   for a port that hands it to the kernel whole.
//! - [`time`]: the caller's clock, as an argument.
//! - [`DropReason`]: why a frame was refused, one enum for the whole core, usable as a
//!   counter index.
//!
//! ```
//! use core::net::Ipv4Addr;
//! use switchyard::tunnel::{decap, DecapConfig, EncapConfig, EncapTemplate, IpIdent, Underlay};
//! use switchyard::wire::EthernetAddress;
//! use switchyard::Vni;
//!
//! // A tunnel towards one remote VTEP, prepared once.
//! let underlay = Underlay::ipv4(
//!     EthernetAddress([0x02, 0, 0, 0, 0, 1]), // our underlay MAC
//!     EthernetAddress([0x02, 0, 0, 0, 0, 2]), // next hop towards the remote VTEP
//!     Ipv4Addr::new(198, 18, 0, 1),
//!     Ipv4Addr::new(198, 18, 0, 2),
//! );
//! let template = EncapTemplate::new(&EncapConfig::default(), &underlay, Vni::new(42).unwrap())?;
//!
//! // An inner Ethernet frame with room in front of it for the outer headers.
//! let mut buf = [0u8; 128];
//! let inner = 64..128;
//! buf[inner.start..inner.start + 6].copy_from_slice(&[0xff; 6]); // broadcast
//! buf[inner.start + 12..inner.start + 14].copy_from_slice(&[0x08, 0x06]); // ARP
//!
//! let outer = template.encap(&mut buf, inner.clone(), &mut IpIdent::new(0))?;
//! assert_eq!(outer, 14..128); // 50 bytes of outer headers in front of the inner frame
//!
//! // The receiving side takes it apart again, without copying.
//! let d = decap(&DecapConfig::default(), &mut buf[outer])?;
//! assert_eq!(d.vni, Vni::new(42).unwrap());
//! assert_eq!(d.inner.len(), 64);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "alloc")]
mod addr_map;
#[cfg(all(feature = "backend", target_os = "linux"))]
pub mod backend;
mod drop_reason;
#[cfg(feature = "alloc")]
pub mod fdb;
#[cfg(feature = "alloc")]
pub mod gro;
pub mod gso;
#[cfg(feature = "alloc")]
mod lanes;
#[cfg(feature = "alloc")]
pub mod lb;
mod mix;
mod port;
#[cfg(feature = "alloc")]
mod prefetch;
pub mod switch;
mod sync;
pub mod time;
pub mod tunnel;
mod vni;
pub mod wire;

pub use drop_reason::{DropCounters, DropReason};
pub use port::PortId;

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
pub use vni::{InvalidVni, Vni};
