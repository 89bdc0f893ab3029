//! The VXLAN underlay over io_uring: one UDP socket on the VXLAN port, read with multishot
//! `RECVMSG` into a provided buffer ring, written with batched `SENDMSG` (feature `io-uring`,
//! Linux 6.0 or later).
//!
//! # What the switch sees
//!
//! The core takes and gives underlay frames as whole Ethernet frames (outer Ethernet, IP, UDP,
//! VXLAN, inner frame: [`Ingress::Underlay`](crate::switch::Ingress::Underlay)); a UDP socket
//! takes and gives only the UDP payload (the VXLAN header and the inner frame). So:
//!
//! - [`UringRx`] has the kernel write each datagram into a provided buffer behind the
//!   `io_uring_recvmsg_out` header, the sender's address and the control messages (92 bytes
//!   in all), then writes synthetic outer Ethernet, IP and UDP headers over those 92 bytes,
//!   right in front of the payload, once it has read them: no copy. The outer source is the
//!   sender's address and port (so the switch learns the right remote VTEP), the destination
//!   our bound address and port; IPv4 gets a valid header checksum and UDP checksum 0 (which
//!   decapsulation always accepts); the outer TOS or traffic class is the received one
//!   (`IP_RECVTOS` / `IPV6_RECVTCLASS`), so RFC 6040 ECN propagation still works. The outer
//!   MACs are unknown to a UDP socket: destination [`UringConfig::local_mac`], source zero.
//!   Over IPv6 the UDP checksum is 0 by default: the kernel has already verified the real one,
//!   and [`DecapConfig`](crate::tunnel::DecapConfig)'s default
//!   (`reject_zero_checksum_ipv6: false`, RFC 6935) accepts it. A switch configured to reject
//!   zero IPv6 checksums must set [`UringConfig::ipv6_udp_checksum`], which computes it (one
//!   pass over the payload per packet).
//! - [`UringTx`] takes the outer destination address and port and the TOS from the outer
//!   headers the core wrote, and sends what follows the UDP header as the datagram. The
//!   kernel writes the outer IP and UDP headers again, with our bound address and port as the
//!   source, and computes the UDP checksum (over IPv4 too: UDP GSO requires it, and it costs
//!   nothing with checksum offload; Linux's own VXLAN device does the same).
//!
//! # The outer source port: chosen, measured, justified
//!
//! The core picks an outer UDP source port per inner flow (RFC 7348 section 5), so that
//! routers that balance on the 5-tuple spread the tunnel's flows. A plain UDP socket sends
//! every datagram from its own port (the VXLAN port here), so that entropy is lost: all
//! traffic between two VTEPs is one 5-tuple on the underlay. The alternatives:
//!
//! - a raw IP socket (`IP_HDRINCL`) or AF_PACKET, which keep every header the core wrote:
//!   neither has UDP GSO, a raw socket still needs the bound UDP socket to keep the kernel
//!   from answering with ICMP port unreachable, and AF_PACKET needs the core's neighbour
//!   resolution for the outer MACs (the AF_PACKET backend is that path);
//! - several UDP sockets bound to a range of source ports, picked per flow (io_uring's
//!   registered file table makes switching sockets per request free), which would give as
//!   many distinct 5-tuples as sockets but splits GSO batches by flow.
//!
//! This backend keeps the single socket: it is what UDP GSO and GRO need to pay off (one
//! 5-tuple: one super-datagram for a whole batch; measured below at 14x to 17x the packet
//! rate of `sendmmsg` on transmit and 9x to 12x `recvmmsg` on receive, against 0.65x to 0.95x
//! without them), and
//! on a single underlay link, as between two hosts or two namespaces, there is nothing to
//! balance. Where the underlay has ECMP paths, use the AF_PACKET underlay, which keeps the
//! per-flow ports.
//!
//! # Measured
//!
//! `examples/uring-bench.rs --sleep`: 64-byte UDP payloads over a veth pair between two
//! namespaces, receiving contenders sleeping when idle, 2 vCPUs shared with two other
//! engineers' builds (load average 6 to 7 during the run: rates move by 2x from one
//! repetition to the next; the CPU time per packet of the contender's thread moves less).
//! 5 repetitions of 1.5 s, medians; ratios of delivered packets per second against
//! `recvmmsg` with the same peer, or against `sendmmsg`:
//!
//! | case | Mpps | ratio | ns of CPU per packet |
//! |---|---|---|---|
//! | RX `recvmmsg` (64 per call, with the sender's address), peer GSO | 0.313 | 1.00 | 1211 |
//! | RX io_uring, peer GSO | 0.220 | 0.70 | 1668 |
//! | RX io_uring without ECN, peer GSO | 0.205 | 0.65 | 1586 |
//! | RX io_uring with DEFER_TASKRUN, peer GSO | 0.211 | 0.67 | 1571 |
//! | RX io_uring + `UDP_GRO`, peer GSO | 3.664 | 11.70 | 89 |
//! | RX `recvmmsg`, peer `sendmmsg`, veth GRO | 0.081 | 1.00 | (peer-bound) |
//! | RX io_uring + `UDP_GRO`, peer `sendmmsg`, veth GRO | 0.098 | 1.21 | (peer-bound) |
//! | TX `sendmmsg` (64 per call) | 0.057 | 1.00 | 5840 |
//! | TX io_uring (64 `send`s, one `flush`) | 0.053 | 0.93 | 5879 |
//! | TX io_uring, `SENDMSG_ZC` | 0.047 | 0.83 | 6190 |
//! | TX io_uring + `UDP_SEGMENT` | 0.972 | 17.11 | 172 |
//!
//! Busy-polling contenders, same machine a few minutes earlier: RX io_uring 0.81x
//! `recvmmsg` (peer GSO), with `UDP_GRO` 8.7x; TX io_uring 0.85x `sendmmsg`, with GSO 13.9x;
//! in a quieter run before: 0.92x, 9.8x, 0.91x and 15.1x.
//!
//! Part of that gap is not io_uring's: the underlay reads each datagram's TOS byte
//! (`IP_RECVTOS`, for ECN) and the `recvmmsg` above does not. With a `recvmmsg` that reads
//! it too (the bench's `recvmmsg + IP_RECVTOS` row, 2026-11-29, five runs of 5 repetitions
//! on a quieter machine), the like-for-like ratios are 0.87x to 1.04x (median 0.95x) with
//! ECN and 0.86x to 1.40x (median 1.01x) without it on both sides; reading the TOS costs
//! `recvmmsg` 8 to 22 % of its rate.
//!
//! So: datagram by datagram, the io_uring underlay does not beat `recvmmsg`/`sendmmsg` on
//! this machine; it receives at 0.65x to 0.95x of `recvmmsg` and costs 20 to 40 % more CPU
//! per datagram (a profile puts the difference in the kernel: the multishot receive runs as
//! task work, one `recvmsg` per datagram, contending with the sender for the socket's queue
//! lock; the user-space part, parsing and the synthetic headers, is under 5 %). It sends at
//! 0.85x to 0.95x of `sendmmsg`. What pays is the offloads, which a single socket makes
//! possible: with a GSO peer and `UDP_GRO`, and with `UDP_SEGMENT` on transmit, one buffer
//! and one completion carry up to 64 datagrams, 9x to 17x the packet rate. On a veth the
//! receiving side's kernel work runs in the sender's softirq, so rows with a `sendmmsg` peer
//! measure the peer.
//!
//! # Received VXLAN goes to us, and only to us
//!
//! The socket is bound to the VTEP address and the VXLAN port without `SO_REUSEADDR` or
//! `SO_REUSEPORT` (several queues from [`open_queues`] share the port in a `SO_REUSEPORT`
//! group that only sockets setting `SO_REUSEPORT` can join, which a kernel VXLAN device's
//! does not), so: the kernel never answers a VXLAN packet with ICMP port unreachable
//! (a bound socket takes it), and no kernel VXLAN device in the same network namespace can
//! share the port: if one already holds it (it binds the wildcard address), our `bind` fails
//! with `EADDRINUSE`, reported as [`UringError::Socket`] naming `bind`; if we hold it first,
//! bringing such a device up fails. Packets are therefore never delivered twice.
//!
//! # Socket options and io_uring features, and why
//!
//! | what | why |
//! |---|---|
//! | `bind` without `SO_REUSEADDR`/`SO_REUSEPORT` | exclusive port: no ICMP unreachable, no kernel VXLAN device on it |
//! | `SO_REUSEPORT` (only [`open_queues`] with several queues) | one socket per worker, datagrams spread by flow hash; a kernel VXLAN device still cannot join |
//! | `IPV6_V6ONLY` (IPv6) | an IPv6 VTEP takes only IPv6 |
//! | `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` (else `SO_RCVBUF`/`SO_SNDBUF`) | room for bursts beyond the buffer ring |
//! | `SO_MEMINFO` (read in [`RxQueue::stats`]) | the kernel's count of datagrams dropped at the socket: [`QueueStats::dropped`] (not `SO_RXQ_OVFL`, which costs a control message per datagram) |
//! | `IP_RECVTOS` / `IPV6_RECVTCLASS` ([`UringConfig::receive_ecn`]) | the outer ECN field, for RFC 6040 decapsulation |
//! | `IP_MTU_DISCOVER = IP_PMTUDISC_DO` / `IPV6_DONTFRAG` | DF set, as the core's default [`DfPolicy::Set`](crate::tunnel::DfPolicy): VXLAN is not fragmented |
//! | `UDP_NO_CHECK6_RX` (unless [`UringConfig::reject_zero_checksum_ipv6`]) | accept zero IPv6 UDP checksums, as the core's default does |
//! | `UDP_GRO` ([`UringConfig::gro`]) | coalesced datagrams of one flow in one buffer, split here |
//! | `UDP_SEGMENT` control message ([`UringConfig::gso`]) | consecutive same-size datagrams to one VTEP in one `sendmsg` |
//! | `IP_TOS` / `IPV6_TCLASS` control message | the outer TOS the core chose (DSCP and ECN) |
//! | `IORING_OP_RECVMSG` multishot + `IORING_REGISTER_PBUF_RING` | one request receives until the ring of buffers runs out; no per-datagram submission; re-armed when the kernel ends it |
//! | `IORING_OP_SENDMSG`, one `io_uring_enter` per batch | batched transmission |
//! | `IORING_OP_SENDMSG_ZC` ([`UringConfig::send_zerocopy`], off) | measured 0.55x to 0.9x of `SENDMSG` for 64-byte datagrams: pinning and the second completion cost more than the copy |
//! | `IORING_OP_ASYNC_CANCEL` | stop the multishot receive before the buffers are unmapped |
//! | registered file (`IORING_REGISTER_FILES`) | no file table lookup per request; unregistered on drop, so that the port is free at once |
//! | `IORING_SETUP_COOP_TASKRUN` + `IORING_SETUP_TASKRUN_FLAG` | no inter-processor interrupt per arrival: the worker runs the flagged receive work at its next `recv` |
//! | `IORING_SETUP_DEFER_TASKRUN` + `SINGLE_ISSUER` + `R_DISABLED` ([`UringConfig::defer_taskrun`], off) | measured no faster than cooperative task running, within noise, and it binds the queue to a thread |
//! | `IORING_REGISTER_PROBE` | fail at start, naming the missing operation |
//!
//! Not used: registered buffers (only the `SEND`/`SEND_ZC` opcodes take a fixed buffer;
//! `SENDMSG`, which carries the destination and the control messages, does not), `SQPOLL`
//! (a kernel thread per ring spinning on a core: not on a shared host), `IP_RECVERR` (ICMP
//! errors for sent datagrams are of no use to a tunnel endpoint without a connected peer),
//! `SO_RXQ_OVFL` (a control message per datagram, for a counter that `SO_MEMINFO` gives on
//! demand).

#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::vec::Vec;
use std::{boxed::Box, fmt, mem, ptr, slice};

use ::io_uring::{cqueue, opcode, types, IoUring, Probe};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{QueueStats, RxQueue, TxQueue};
use crate::wire::checksum::{fold, ipv4_header, sum_bytes};
use crate::wire::{ethertype, EthernetAddress, ETHERNET_HEADER_LEN, UDP_HEADER_LEN};

/// Synthetic outer headers over IPv4: Ethernet 14, IPv4 20, UDP 8.
const OUTER_V4: usize = ETHERNET_HEADER_LEN + 20 + UDP_HEADER_LEN;
/// Synthetic outer headers over IPv6: Ethernet 14, IPv6 40, UDP 8.
const OUTER_V6: usize = ETHERNET_HEADER_LEN + 40 + UDP_HEADER_LEN;

/// `sizeof(struct io_uring_recvmsg_out)`: what multishot `RECVMSG` writes first in a buffer.
const RECVMSG_OUT_LEN: usize = 16;
/// Room for the sender's address: `sizeof(struct sockaddr_in6)`.
const NAME_LEN: usize = 28;
/// `CMSG_SPACE` of a 4-byte value on 64-bit Linux: a 16-byte header, the value, padding.
const CMSG_SPACE_4: usize = 24;
/// Room for the control messages: the TOS or traffic class, and `UDP_GRO`'s segment size.
const CONTROL_LEN: usize = 2 * CMSG_SPACE_4;
/// Where the payload starts in a receive buffer, and the room in front of it that the outer
/// headers are written into.
const HEADROOM: usize = RECVMSG_OUT_LEN + NAME_LEN + CONTROL_LEN;
const _: () = assert!(HEADROOM >= OUTER_V6);

/// The most segments Linux accepts in one UDP GSO send (`UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: u16 = 64;
/// The most bytes in one UDP GSO send: below the 64 KiB IP packet limit with headers.
const GSO_MAX_BYTES: usize = 65_000;

/// The completion tag of the multishot receive.
const RECV_TAG: u64 = u64::MAX;
/// The completion tag of its cancellation.
const CANCEL_TAG: u64 = u64::MAX - 1;
/// The buffer group of the receive buffer ring.
const BUFFER_GROUP: u16 = 0;

/// Why the io_uring underlay could not start. `Display` names the failed operation.
#[derive(Debug)]
#[non_exhaustive]
pub enum UringError {
    /// An io_uring operation failed: `io_uring_setup` refused (`ENOSYS` on a kernel without
    /// io_uring, `EPERM` under a seccomp filter or `kernel.io_uring_disabled`), or a
    /// registration the backend needs is missing.
    Unavailable {
        /// The operation, as the kernel names it.
        operation: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
    /// The kernel's io_uring does not support an opcode the backend needs.
    MissingOpcode {
        /// The opcode, as the kernel names it.
        operation: &'static str,
    },
    /// Creating, configuring or binding the UDP socket failed.
    Socket {
        /// The system call or socket option.
        operation: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
    /// The configuration cannot work.
    Config(&'static str),
}

impl fmt::Display for UringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UringError::Unavailable { operation, source } => {
                write!(f, "io_uring: {operation} failed: {source}")?;
                if *operation == "io_uring_setup"
                    && matches!(source.raw_os_error(), Some(libc::ENOSYS | libc::EPERM))
                {
                    f.write_str(" (io_uring missing from the kernel, or blocked by seccomp or kernel.io_uring_disabled)")?;
                }
                Ok(())
            }
            UringError::MissingOpcode { operation } => {
                write!(f, "io_uring: the kernel does not support {operation}")
            }
            UringError::Socket { operation, source } => {
                write!(f, "io_uring underlay socket: {operation} failed: {source}")
            }
            UringError::Config(what) => write!(f, "io_uring underlay configuration: {what}"),
        }
    }
}

impl std::error::Error for UringError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UringError::Unavailable { source, .. } | UringError::Socket { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

impl From<UringError> for io::Error {
    fn from(error: UringError) -> io::Error {
        let kind = match &error {
            UringError::Unavailable { source, .. } | UringError::Socket { source, .. } => {
                source.kind()
            }
            UringError::MissingOpcode { .. } => io::ErrorKind::Unsupported,
            UringError::Config(_) => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, error)
    }
}

/// The opcodes the backend needs, with the names the kernel gives them: multishot receive
/// into selected buffers, and `SENDMSG`.
pub const REQUIRED_OPCODES: [(&str, u8); 3] = [
    (
        "IORING_OP_RECVMSG (multishot RecvMsgMulti)",
        opcode::RecvMsgMulti::CODE,
    ),
    ("IORING_OP_SENDMSG", opcode::SendMsg::CODE),
    (
        "IORING_OP_PROVIDE_BUFFERS (buffer select)",
        opcode::ProvideBuffers::CODE,
    ),
];

/// Checks a probe result against [`REQUIRED_OPCODES`]: `supported(code)` says whether the
/// kernel supports opcode `code`. The error names the first missing one. Split from
/// [`probe_kernel`] so that a synthetic probe result can be checked.
pub fn check_opcodes(supported: impl Fn(u8) -> bool) -> Result<(), UringError> {
    match REQUIRED_OPCODES.iter().find(|(_, code)| !supported(*code)) {
        Some(&(operation, _)) => Err(UringError::MissingOpcode { operation }),
        None => Ok(()),
    }
}

/// Creates a small ring, asks the kernel which opcodes it supports, and checks the ones the
/// backend needs. Returns the names of the required opcodes (all supported) and whether
/// the optional `IORING_OP_SEND_ZC` is there.
pub fn probe_kernel() -> Result<(Vec<&'static str>, bool), UringError> {
    let ring = IoUring::new(4).map_err(|source| UringError::Unavailable {
        operation: "io_uring_setup",
        source,
    })?;
    let probe = probe_ring(&ring)?;
    check_opcodes(|code| probe.is_supported(code))?;
    Ok((
        REQUIRED_OPCODES.iter().map(|(name, _)| *name).collect(),
        probe.is_supported(opcode::SendZc::CODE),
    ))
}

fn probe_ring(ring: &IoUring) -> Result<Probe, UringError> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|source| UringError::Unavailable {
            operation: "IORING_REGISTER_PROBE",
            source,
        })?;
    Ok(probe)
}

/// How to set up the io_uring underlay.
#[derive(Debug, Clone)]
pub struct UringConfig {
    /// The local VTEP address and the VXLAN port, bound exclusively. Must be a specific
    /// address (it is the destination written into received frames' outer headers).
    pub local: SocketAddr,
    /// The destination MAC written into received frames' synthetic outer Ethernet header.
    pub local_mac: EthernetAddress,
    /// Receive buffers in the provided buffer ring: a power of two, at most 32768. The
    /// datagrams that can wait for the switch between two [`RxQueue::release`] calls,
    /// beyond which they wait in the socket buffer. The kernel takes the buffers in ring
    /// order, so every one of them is written in turn: more than a few batches' worth only
    /// spreads the copies over more memory (with 4096, the former default, 8 MiB, out of
    /// the caches by the time a buffer comes round again; `examples/uring-bench.rs`
    /// measured 512 at 14-23 % less CPU time a datagram).
    pub rx_buffers: u16,
    /// Bytes per receive buffer, the 92 bytes of headroom included. Datagrams longer than
    /// `rx_buffer_size - 92` are truncated by the kernel and counted as malformed. With
    /// [`gro`](Self::gro), coalesced datagrams reach 64 KiB.
    pub rx_buffer_size: u32,
    /// Datagrams (or GSO super-datagrams) queued for one [`TxQueue::flush`].
    pub tx_messages: u32,
    /// Bytes of datagram data queued for one [`TxQueue::flush`].
    pub tx_bytes: usize,
    /// Send consecutive same-size datagrams to one destination as one `UDP_SEGMENT` send.
    pub gso: bool,
    /// Send with `IORING_OP_SENDMSG_ZC` (Linux 6.1) instead of `SENDMSG`: the kernel sends
    /// from the arena without copying, and `flush` also waits for its notifications that
    /// the data is no longer needed. Default off: measured slower for small datagrams
    /// (`examples/uring-bench.rs`).
    pub send_zerocopy: bool,
    /// Receive coalesced datagrams (`UDP_GRO`) and split them here.
    pub gro: bool,
    /// Socket receive and send buffer size (`SO_RCVBUFFORCE`, else `SO_RCVBUF`).
    pub socket_buffer: usize,
    /// Run the receive ring's completion work only when the worker asks for completions
    /// (`IORING_SETUP_DEFER_TASKRUN`, Linux 6.1; falls back to cooperative task running).
    /// The receiving half then belongs to the thread of its first [`RxQueue::recv`]: receive
    /// and drop it there. Default off: measured no faster than cooperative task running on
    /// a veth (`examples/uring-bench.rs`), and it ties the queue to a thread.
    pub defer_taskrun: bool,
    /// Read each datagram's outer TOS or traffic class (`IP_RECVTOS` / `IPV6_RECVTCLASS`) into
    /// the synthetic headers, so that decapsulation propagates ECN (RFC 6040). Default on;
    /// off saves a control message per datagram, and received frames say Not-ECT.
    pub receive_ecn: bool,
    /// Compute the UDP checksum of received IPv6 frames' synthetic headers (for a switch
    /// whose decapsulation rejects zero IPv6 checksums). Default off: zero.
    pub ipv6_udp_checksum: bool,
    /// Drop received IPv6 datagrams whose UDP checksum is zero, in the kernel (as
    /// [`DecapConfig::reject_zero_checksum_ipv6`](crate::tunnel::DecapConfig)). Default off:
    /// `UDP_NO_CHECK6_RX` lets them in.
    pub reject_zero_checksum_ipv6: bool,
}

impl UringConfig {
    /// Defaults for the VTEP at `local` (address and VXLAN port): 512 receive buffers of
    /// 2 KiB, 1024 transmit messages, 4 MiB socket buffers, no GSO/GRO.
    pub fn new(local: SocketAddr) -> UringConfig {
        UringConfig {
            local,
            local_mac: EthernetAddress([0x02, 0, 0, 0, 0, 0x01]),
            rx_buffers: 512,
            rx_buffer_size: 2048,
            tx_messages: 1024,
            tx_bytes: 1 << 20,
            gso: false,
            send_zerocopy: false,
            gro: false,
            socket_buffer: 4 << 20,
            receive_ecn: true,
            defer_taskrun: false,
            ipv6_udp_checksum: false,
            reject_zero_checksum_ipv6: false,
        }
    }

    /// Turns GSO and GRO on, with receive buffers that hold a whole coalesced datagram
    /// (64 KiB and headroom), 512 of them (33 MiB).
    pub fn with_offloads(mut self) -> UringConfig {
        self.gso = true;
        self.gro = true;
        self.rx_buffer_size = 65_536 + 512;
        self.rx_buffers = 512;
        self
    }

    fn validate(&self) -> Result<(), UringError> {
        if self.local.ip().is_unspecified() || self.local.ip().is_multicast() {
            return Err(UringError::Config(
                "the local address must be a specific unicast address",
            ));
        }
        if self.local.port() == 0 {
            return Err(UringError::Config("the VXLAN port must not be zero"));
        }
        if !self.rx_buffers.is_power_of_two() || self.rx_buffers > 32768 {
            return Err(UringError::Config(
                "rx_buffers must be a power of two, at most 32768",
            ));
        }
        if (self.rx_buffer_size as usize) < HEADROOM + 64 {
            return Err(UringError::Config("rx_buffer_size is below 156 bytes"));
        }
        if self.tx_messages == 0 || self.tx_messages > 32768 || self.tx_bytes < 65_536 {
            return Err(UringError::Config(
                "tx_messages must be 1..=32768 and tx_bytes at least 64 KiB",
            ));
        }
        Ok(())
    }
}

/// Opens the underlay: probes io_uring, binds the socket, sets up a receive ring with its
/// buffer ring (the multishot receive is armed at the first [`RxQueue::recv`]), and a
/// transmit ring. The two halves share the socket and may live on different threads.
pub fn open(config: &UringConfig) -> Result<(UringRx, UringTx), UringError> {
    let mut queues = open_queues(config, 1)?;
    queues.pop().ok_or(UringError::Config("no queue"))
}

/// Opens `count` underlay queues on the same address and port, one per worker: `count`
/// sockets in one `SO_REUSEPORT` group (when `count > 1`), each with its own rings. The
/// kernel spreads received datagrams over the sockets by a hash of their addresses and
/// ports, so the datagrams of one outer flow always reach the same worker (in order).
///
/// `SO_REUSEPORT` lets only sockets of the same user that also set it join the group: a
/// kernel VXLAN device's socket sets neither, and still cannot share the port.
pub fn open_queues(
    config: &UringConfig,
    count: usize,
) -> Result<Vec<(UringRx, UringTx)>, UringError> {
    config.validate()?;
    if count == 0 {
        return Err(UringError::Config("at least one queue"));
    }
    let (_, send_zc) = probe_kernel()?;
    if config.send_zerocopy && !send_zc {
        return Err(UringError::MissingOpcode {
            operation: "IORING_OP_SEND_ZC (for send_zerocopy)",
        });
    }
    (0..count)
        .map(|_| {
            let socket = Arc::new(open_socket(config, count > 1)?);
            let rx = UringRx::new(config, Arc::clone(&socket))?;
            let tx = UringTx::new(config, socket)?;
            Ok((rx, tx))
        })
        .collect()
}

fn socket_error(operation: &'static str) -> impl FnOnce(io::Error) -> UringError {
    move |source| UringError::Socket { operation, source }
}

fn set_int_option(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int for the duration of the call and its size is passed;
    // the descriptor is the socket's own.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            ptr::from_ref(&value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn open_socket(config: &UringConfig, reuse_port: bool) -> Result<Socket, UringError> {
    let v6 = config.local.is_ipv6();
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))
        .map_err(socket_error("socket"))?;
    if reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(socket_error("SO_REUSEPORT"))?;
    }
    if v6 {
        socket
            .set_only_v6(true)
            .map_err(socket_error("IPV6_V6ONLY"))?;
        socket
            .set_recv_tclass_v6(config.receive_ecn)
            .map_err(socket_error("IPV6_RECVTCLASS"))?;
        set_int_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1)
            .map_err(socket_error("IPV6_DONTFRAG"))?;
        if !config.reject_zero_checksum_ipv6 {
            set_int_option(&socket, libc::SOL_UDP, libc::UDP_NO_CHECK6_RX, 1)
                .map_err(socket_error("UDP_NO_CHECK6_RX"))?;
        }
    } else {
        socket
            .set_recv_tos_v4(config.receive_ecn)
            .map_err(socket_error("IP_RECVTOS"))?;
        set_int_option(
            &socket,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
        .map_err(socket_error("IP_MTU_DISCOVER"))?;
    }
    let size = libc::c_int::try_from(config.socket_buffer).unwrap_or(libc::c_int::MAX);
    // The forced sizes need CAP_NET_ADMIN; without it, the ordinary ones (capped by
    // net.core.rmem_max / wmem_max) are what there is.
    if set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
        socket
            .set_recv_buffer_size(config.socket_buffer)
            .map_err(socket_error("SO_RCVBUF"))?;
    }
    if set_int_option(&socket, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size).is_err() {
        socket
            .set_send_buffer_size(config.socket_buffer)
            .map_err(socket_error("SO_SNDBUF"))?;
    }
    if config.gro {
        set_int_option(&socket, libc::SOL_UDP, libc::UDP_GRO, 1)
            .map_err(socket_error("UDP_GRO"))?;
    }
    socket
        .bind(&SockAddr::from(config.local))
        .map_err(socket_error("bind"))?;
    Ok(socket)
}

/// Builds a ring with the socket as registered file 0.
///
/// With `IORING_SETUP_COOP_TASKRUN` and `IORING_SETUP_TASKRUN_FLAG` (Linux 5.19) where the
/// kernel has them: completion work (the receive itself, for the multishot `RECVMSG`) is not
/// forced on the task with an inter-processor interrupt whenever a datagram arrives, but
/// flagged in the ring, and run when the worker next enters the kernel, in a batch.
///
/// With `deferred` (receive rings, [`UringConfig::defer_taskrun`]), first tries
/// `IORING_SETUP_DEFER_TASKRUN` with `IORING_SETUP_SINGLE_ISSUER` (Linux 6.1), created
/// disabled (`IORING_SETUP_R_DISABLED`) so that the thread of the first `recv` becomes its
/// issuer: completion work then runs only when that thread asks for completions, in one
/// batch, and completions are posted without the completion lock. Returns the ring and
/// whether it is deferred.
fn ring_for(
    socket: &Socket,
    entries: u32,
    cq_entries: u32,
    deferred: bool,
) -> Result<(IoUring, bool), UringError> {
    #[derive(PartialEq)]
    enum Mode {
        Deferred,
        Cooperative,
        Plain,
    }
    let build = |mode: &Mode| {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq_entries).setup_clamp();
        match mode {
            Mode::Deferred => {
                builder
                    .setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag()
                    .setup_r_disabled();
            }
            Mode::Cooperative => {
                builder.setup_coop_taskrun().setup_taskrun_flag();
            }
            Mode::Plain => {}
        }
        builder.build(entries)
    };
    let modes: &[Mode] = if deferred {
        &[Mode::Deferred, Mode::Cooperative, Mode::Plain]
    } else {
        &[Mode::Cooperative, Mode::Plain]
    };
    let mut result = Err(io::Error::from_raw_os_error(libc::EINVAL));
    let mut chosen = &Mode::Plain;
    for mode in modes {
        result = build(mode);
        chosen = mode;
        match &result {
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => continue,
            _ => break,
        }
    }
    let ring = result.map_err(|source| UringError::Unavailable {
        operation: "io_uring_setup",
        source,
    })?;
    ring.submitter()
        .register_files(&[socket.as_raw_fd()])
        .map_err(|source| UringError::Unavailable {
            operation: "IORING_REGISTER_FILES",
            source,
        })?;
    Ok((ring, *chosen == Mode::Deferred))
}

/// An anonymous private mapping, page aligned as the buffer ring needs.
struct Mapping {
    base: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choice touches
        // no existing memory; the result is checked.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            base: base.cast(),
            len,
        })
    }
}

impl Mapping {
    /// Gives up the mapping without unmapping it.
    fn leak(&mut self) {
        self.len = 0;
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: `base` and `len` are the mapping made in `new`, unmapped once, here.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

/// The provided buffer ring: the ring of `io_uring_buf` entries the kernel takes receive
/// buffers from, and the buffers.
struct BufRing {
    entries: Mapping,
    buffers: Mapping,
    count: u16,
    buffer_size: usize,
    /// Our tail: the entries before it are the kernel's to take.
    tail: u16,
}

impl BufRing {
    fn new(count: u16, buffer_size: usize) -> io::Result<BufRing> {
        let entries = Mapping::new(usize::from(count) * mem::size_of::<types::BufRingEntry>())?;
        let buffers = Mapping::new(usize::from(count) * buffer_size)?;
        Ok(BufRing {
            entries,
            buffers,
            count,
            buffer_size,
            tail: 0,
        })
    }

    /// Queues buffer `bid` for the kernel; [`publish`](Self::publish) hands it over.
    fn push(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        let entry: *mut types::BufRingEntry = self.entries.base.cast();
        // SAFETY: `index < count`, so the entry is inside the mapping. The kernel reads only
        // the entries between its head and the published tail, and this one is past the
        // tail: no one else accesses it. The setters write `addr`, `len` and `bid` only, not
        // the shared tail that overlays entry 0's `resv`.
        let entry = unsafe { &mut *entry.add(index) };
        entry.set_addr(self.buffer(bid) as u64);
        entry.set_len(self.buffer_size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the pushed buffers visible to the kernel.
    fn publish(&self) {
        let base: *const types::BufRingEntry = self.entries.base.cast();
        // SAFETY: the tail is a naturally aligned u16 inside entry 0 of the live mapping
        // (`BufRingEntry::tail`); the kernel reads it concurrently, so it is written as an
        // atomic, with release ordering so that the entries written before are seen first.
        unsafe {
            let tail = types::BufRingEntry::tail(base).cast_mut();
            (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release);
        }
    }

    fn buffer(&self, bid: u16) -> *mut u8 {
        // `bid < count`: inside the mapping (checked by the callers).
        self.buffers
            .base
            .wrapping_add(usize::from(bid) * self.buffer_size)
    }
}

/// A datagram split into GRO segments that did not all fit in the last batch.
#[derive(Debug, Clone, Copy)]
struct Partial {
    bid: u16,
    /// Offset of the next segment in the buffer.
    next: usize,
    /// Offset of the payload's end in the buffer.
    end: usize,
    segment: usize,
    source: SocketAddr,
    tos: u8,
}

/// What a completion delivered into one buffer, read before the headers are written over it.
#[derive(Debug, Clone, Copy)]
struct Received {
    source: SocketAddr,
    tos: u8,
    /// `UDP_GRO`'s segment size, if the datagram is several coalesced ones.
    segment: Option<usize>,
    len: usize,
}

/// The receiving half: multishot `RECVMSG` into the buffer ring. Frames are whole
/// underlay frames with synthetic outer headers (see the module documentation);
/// [`QueueStats::bytes`] counts their UDP payload bytes, and [`QueueStats::dropped`] the
/// datagrams the kernel dropped at the socket.
///
/// The multishot receive is armed at the first [`RxQueue::recv`], by the calling thread
/// (datagrams that arrive before wait in the socket). The kernel runs the receive's
/// completion work in that thread, when it next enters the kernel: keep the queue on the
/// thread that first receives with it (one worker, one queue, as [`open_queues`] gives).
/// It may be opened on another thread, and moved before its first `recv`.
pub struct UringRx {
    // Dropped first: the ring (whose requests write into `buffers`) before the mappings.
    ring: IoUring,
    buffers: BufRing,
    socket: Arc<Socket>,
    /// The multishot request's `msghdr`: only the name and control lengths are read.
    msghdr: Box<libc::msghdr>,
    armed: bool,
    held: Vec<u16>,
    partial: Option<Partial>,
    /// Room for GRO segments after the first (which is given in place).
    scratch: Vec<u8>,
    local: SocketAddr,
    local_mac: EthernetAddress,
    ipv6_udp_checksum: bool,
    stats: QueueStats,
    /// Receive errors other than an exhausted buffer ring.
    errors: u64,
    /// Times the multishot request ended because the buffer ring was empty.
    ring_exhausted: u64,
    /// Completions that carried several coalesced datagrams (`UDP_GRO`).
    coalesced: u64,
    /// The ring waits for its issuer: the thread of the first `recv`.
    disabled: bool,
    /// The ring runs completion work only when asked (DEFER_TASKRUN).
    deferred: bool,
}

// SAFETY: the raw pointers (the mappings, the msghdr's null name and control pointers) are
// owned by this value and used only through `&mut self`; nothing is tied to a thread (the
// ring is set up without SINGLE_ISSUER).
unsafe impl Send for UringRx {}

impl fmt::Debug for UringRx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringRx")
            .field("local", &self.local)
            .field("armed", &self.armed)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl UringRx {
    fn new(config: &UringConfig, socket: Arc<Socket>) -> Result<UringRx, UringError> {
        let count = config.rx_buffers;
        let (ring, deferred) = ring_for(
            &socket,
            64,
            u32::from(count).max(64) * 2,
            config.defer_taskrun,
        )?;
        let mut buffers =
            BufRing::new(count, config.rx_buffer_size as usize).map_err(|source| {
                UringError::Unavailable {
                    operation: "mmap (receive buffers)",
                    source,
                }
            })?;
        // SAFETY: the entries mapping holds `count` entries, is page aligned, and outlives
        // the registration: the ring is dropped (and with it the registration) first.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buffers.entries.base as u64,
                count,
                BUFFER_GROUP,
                0,
            )
        }
        .map_err(|source| UringError::Unavailable {
            operation: "IORING_REGISTER_PBUF_RING",
            source,
        })?;
        for bid in 0..count {
            buffers.push(bid);
        }
        buffers.publish();
        // SAFETY: msghdr is a plain C struct; all zeros (null pointers, zero lengths) is a
        // valid value.
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { mem::zeroed() });
        msghdr.msg_namelen = NAME_LEN as libc::socklen_t;
        msghdr.msg_controllen = CONTROL_LEN;
        let mut rx = UringRx {
            ring,
            buffers,
            socket,
            msghdr,
            armed: false,
            held: Vec::with_capacity(usize::from(count)),
            partial: None,
            scratch: if config.gro {
                std::vec![0; 256 << 10]
            } else {
                Vec::new()
            },
            local: config.local,
            local_mac: config.local_mac,
            ipv6_udp_checksum: config.ipv6_udp_checksum,
            stats: QueueStats::default(),
            errors: 0,
            ring_exhausted: 0,
            coalesced: 0,
            disabled: deferred,
            deferred,
        };
        // A kernel without multishot RECVMSG (before 6.0) fails the request at once: arm it,
        // cancel it, and see how it ended. It is armed for good at the first `recv`, by the
        // worker's thread: the kernel runs a request's completion work in the task that
        // submitted it, and the thread that opens the underlay may be gone by then. (A
        // kernel with DEFER_TASKRUN, 6.1, has multishot RECVMSG; and a disabled ring takes
        // no submission until then.)
        if deferred {
            return Ok(rx);
        }
        rx.arm().map_err(|source| UringError::Unavailable {
            operation: "io_uring_enter (RECVMSG multishot)",
            source,
        })?;
        if rx.stop_receiving() == Some(-libc::EINVAL) {
            return Err(UringError::MissingOpcode {
                operation: "IORING_OP_RECVMSG with IORING_RECV_MULTISHOT",
            });
        }
        Ok(rx)
    }

    /// Submits the multishot receive.
    fn arm(&mut self) -> io::Result<()> {
        arm_receive(&mut self.ring, &self.msghdr)?;
        self.armed = true;
        Ok(())
    }

    /// The socket both halves share (bound to the VTEP address and VXLAN port).
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Times the multishot receive ended because every buffer was held by the switch (it is
    /// armed again at the next [`RxQueue::recv`]; meanwhile datagrams wait in the socket).
    pub fn ring_exhausted(&self) -> u64 {
        self.ring_exhausted
    }

    /// True if the receive ring defers its completion work to the worker
    /// ([`UringConfig::defer_taskrun`], and the kernel has it).
    pub fn is_deferred(&self) -> bool {
        self.deferred
    }

    /// Completions that carried several coalesced datagrams (`UDP_GRO`), each split into
    /// frames.
    pub fn coalesced(&self) -> u64 {
        self.coalesced
    }

    /// Receive completions with an error other than an exhausted buffer ring.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The buffer `bid` as a slice of its whole size.
    ///
    /// # Safety
    ///
    /// `bid < count`, and no other live reference to that buffer.
    unsafe fn buffer_mut<'a>(buffers: &BufRing, bid: u16) -> &'a mut [u8] {
        // SAFETY: the caller's contract: inside the mapping, and not aliased.
        unsafe { slice::from_raw_parts_mut(buffers.buffer(bid), buffers.buffer_size) }
    }
}

/// Submits the multishot receive on `ring`, with `msghdr` (which must live as long as it).
fn arm_receive(ring: &mut IoUring, msghdr: &libc::msghdr) -> io::Result<()> {
    let entry = opcode::RecvMsgMulti::new(types::Fixed(0), ptr::from_ref(msghdr), BUFFER_GROUP)
        .build()
        .user_data(RECV_TAG);
    // SAFETY: the msghdr is the queue's boxed one, which lives as long as the ring; the
    // buffers the request selects belong to the registered buffer ring.
    unsafe {
        ring.submission()
            .push(&entry)
            .map_err(|_| io::Error::other("submission queue full"))?;
    }
    ring.submit()?;
    Ok(())
}

/// Reads the sender, TOS, GRO segment size and drop counter from a multishot `RECVMSG`
/// buffer. `None` if the layout is not as requested.
fn parse_received(buffer: &[u8], msghdr: &libc::msghdr) -> Option<Received> {
    let out = types::RecvMsgOut::parse(buffer, msghdr).ok()?;
    if out.is_payload_truncated() {
        return None;
    }
    let source = parse_sockaddr(out.name_data())?;
    let mut received = Received {
        source,
        tos: 0,
        segment: None,
        len: out.payload_data().len(),
    };
    let mut control = out.control_data();
    // struct cmsghdr on 64-bit Linux: cmsg_len (usize), cmsg_level, cmsg_type (c_int);
    // the data follows, and the next header starts 8-byte aligned.
    while let Some((header, _)) = control.split_first_chunk::<16>() {
        let len = usize::from_ne_bytes(header[0..8].try_into().ok()?);
        let level = i32::from_ne_bytes(header[8..12].try_into().ok()?);
        let kind = i32::from_ne_bytes(header[12..16].try_into().ok()?);
        let data = control.get(16..len)?;
        let int = || data.first_chunk::<4>().map(|b| i32::from_ne_bytes(*b));
        match (level, kind) {
            (libc::IPPROTO_IP, libc::IP_TOS) => received.tos = *data.first()?,
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => received.tos = int()? as u8,
            (libc::SOL_UDP, libc::UDP_GRO) => received.segment = usize::try_from(int()?).ok(),
            _ => {}
        }
        control = control.get(len.next_multiple_of(8)..).unwrap_or(&[]);
    }
    Some(received)
}

fn parse_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(*name.first_chunk::<2>()?);
    let port = u16::from_be_bytes(*name.get(2..4)?.first_chunk::<2>()?);
    match i32::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = *name.get(4..8)?.first_chunk()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            let ip: [u8; 16] = *name.get(8..24)?.first_chunk()?;
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

/// The length of the synthetic outer headers for a datagram from `source`.
fn outer_len(source: &SocketAddr) -> usize {
    if source.is_ipv6() {
        OUTER_V6
    } else {
        OUTER_V4
    }
}

/// Writes synthetic outer Ethernet, IP and UDP headers into `frame[..outer_len]` for the
/// datagram in `frame[outer_len..]`, received from `source` at `local` with outer TOS or
/// traffic class `tos`. `false` if the families differ or the frame is too short or long.
fn write_outer(
    frame: &mut [u8],
    source: SocketAddr,
    local: SocketAddr,
    local_mac: EthernetAddress,
    tos: u8,
    ipv6_udp_checksum: bool,
) -> bool {
    let header_len = outer_len(&source);
    let Some(udp_len) = frame
        .len()
        .checked_sub(header_len - UDP_HEADER_LEN)
        .and_then(|len| u16::try_from(len).ok())
    else {
        return false;
    };
    let Some((head, payload)) = frame.split_at_mut_checked(header_len) else {
        return false;
    };
    head[0..6].copy_from_slice(&local_mac.0);
    head[6..12].fill(0);
    let ip = ETHERNET_HEADER_LEN;
    match (source, local) {
        (SocketAddr::V4(source), SocketAddr::V4(local)) => {
            let Some(total_len) = udp_len.checked_add(20) else {
                return false;
            };
            head[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
            let header: &mut [u8] = &mut head[ip..ip + 20];
            header[0] = 0x45;
            header[1] = tos;
            header[2..4].copy_from_slice(&total_len.to_be_bytes());
            header[4..6].fill(0);
            header[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
            header[8] = 64;
            header[9] = 17;
            header[10..12].fill(0);
            header[12..16].copy_from_slice(&source.ip().octets());
            header[16..20].copy_from_slice(&local.ip().octets());
            let checksum = ipv4_header(header, 20).unwrap_or(0);
            header[10..12].copy_from_slice(&checksum.to_be_bytes());
            let udp = &mut head[ip + 20..];
            udp[0..2].copy_from_slice(&source.port().to_be_bytes());
            udp[2..4].copy_from_slice(&local.port().to_be_bytes());
            udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
            udp[6..8].fill(0);
            true
        }
        (SocketAddr::V6(source), SocketAddr::V6(local)) => {
            head[12..14].copy_from_slice(&ethertype::IPV6.to_be_bytes());
            let header: &mut [u8] = &mut head[ip..ip + 40];
            header[0..4].copy_from_slice(&(0x6000_0000u32 | u32::from(tos) << 20).to_be_bytes());
            header[4..6].copy_from_slice(&udp_len.to_be_bytes());
            header[6] = 17;
            header[7] = 64;
            header[8..24].copy_from_slice(&source.ip().octets());
            header[24..40].copy_from_slice(&local.ip().octets());
            let udp = &mut head[ip + 40..];
            udp[0..2].copy_from_slice(&source.port().to_be_bytes());
            udp[2..4].copy_from_slice(&local.port().to_be_bytes());
            udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
            udp[6..8].fill(0);
            if ipv6_udp_checksum {
                // RFC 8200 section 8.1: the pseudo-header, then the datagram (whose payload
                // starts at an even offset, so the two sums add up).
                let sum = u32::from(sum_bytes(&source.ip().octets()))
                    + u32::from(sum_bytes(&local.ip().octets()))
                    + 17
                    + u32::from(udp_len)
                    + u32::from(sum_bytes(&udp[..8]))
                    + u32::from(sum_bytes(payload));
                let checksum = match !fold(sum) {
                    0 => 0xFFFF,
                    sum => sum,
                };
                udp[6..8].copy_from_slice(&checksum.to_be_bytes());
            }
            true
        }
        _ => false,
    }
}

/// What the synthetic outer headers of received frames need besides the datagram.
#[derive(Debug, Clone, Copy)]
struct Synth {
    local: SocketAddr,
    local_mac: EthernetAddress,
    ipv6_udp_checksum: bool,
}

impl Synth {
    fn write(&self, frame: &mut [u8], source: SocketAddr, tos: u8) -> bool {
        write_outer(
            frame,
            source,
            self.local,
            self.local_mac,
            tos,
            self.ipv6_udp_checksum,
        )
    }
}

/// Hands out the GRO segments of `part` from `part.next` on, each copied into `scratch`
/// behind its own headers, while `frames` takes fewer than `max` more and `scratch` has room.
/// True if all were handed out (the buffer may then be released with the batch).
#[allow(clippy::too_many_arguments)]
fn hand_out_segments<'a>(
    part: &mut Partial,
    buffers: &BufRing,
    scratch: &mut &'a mut [u8],
    frames: &mut Vec<&'a mut [u8]>,
    max: usize,
    added: &mut usize,
    synth: Synth,
    stats: &mut QueueStats,
) -> bool {
    let header_len = outer_len(&part.source);
    while part.next < part.end {
        let len = part.segment.min(part.end - part.next);
        if *added >= max || scratch.len() < header_len + len {
            return false;
        }
        let (frame, rest) = mem::take(scratch).split_at_mut(header_len + len);
        *scratch = rest;
        // SAFETY: `part.bid < count` and `next..next + len` lies inside its buffer (within the
        // payload the kernel reported), after the first segment, which a frame may borrow:
        // this range is borrowed by no one, and only read.
        let segment =
            unsafe { slice::from_raw_parts(buffers.buffer(part.bid).add(part.next), len) };
        frame[header_len..].copy_from_slice(segment);
        if synth.write(frame, part.source, part.tos) {
            stats.frames += 1;
            stats.bytes += len as u64;
            frames.push(frame);
            *added += 1;
        } else {
            stats.malformed += 1;
        }
        part.next += len;
    }
    true
}

impl RxQueue for UringRx {
    fn recv<'a>(&'a mut self, frames: &mut Vec<&'a mut [u8]>, max: usize) -> io::Result<usize> {
        if self.disabled {
            self.ring.submitter().register_enable_rings()?;
            self.disabled = false;
        }
        if !self.armed && self.held.is_empty() && self.partial.is_none() {
            self.arm()?;
        } else {
            let submission = self.ring.submission();
            // Enter the kernel only when the completions already there are not enough.
            let flagged = submission.taskrun() || submission.cq_overflow();
            drop(submission);
            if flagged && self.ring.completion().len() < max {
                // Runs the flagged completion work (one system call for whatever arrived
                // since the last), and moves overflowed completions into the ring.
                self.ring.submit()?;
            }
        }
        let UringRx {
            ring,
            buffers,
            msghdr,
            armed,
            held,
            partial,
            scratch,
            local,
            local_mac,
            ipv6_udp_checksum,
            stats,
            errors,
            ring_exhausted,
            coalesced,
            ..
        } = self;
        let synth = Synth {
            local: *local,
            local_mac: *local_mac,
            ipv6_udp_checksum: *ipv6_udp_checksum,
        };
        let mut scratch: &'a mut [u8] = scratch.as_mut_slice();
        let mut added = 0;

        if let Some(mut part) = partial.take() {
            if hand_out_segments(
                &mut part,
                buffers,
                &mut scratch,
                frames,
                max,
                &mut added,
                synth,
                stats,
            ) {
                held.push(part.bid);
            } else {
                *partial = Some(part);
                return Ok(added);
            }
        }

        let mut completions = ring.completion();
        while added < max {
            let Some(entry) = completions.next() else {
                break;
            };
            if entry.user_data() != RECV_TAG {
                continue; // The cancellation's own completion.
            }
            if !cqueue::more(entry.flags()) {
                *armed = false;
            }
            let result = entry.result();
            let Some(bid) = cqueue::buffer_select(entry.flags()).filter(|bid| *bid < buffers.count)
            else {
                if result == -libc::ENOBUFS {
                    *ring_exhausted += 1;
                } else if result < 0 {
                    *errors += 1;
                }
                continue;
            };
            // SAFETY: `bid < count`, and the kernel handed this buffer to us with this
            // completion: it is in no frame given out and not in the ring.
            let buffer: &'a mut [u8] = unsafe { UringRx::buffer_mut(buffers, bid) };
            let received = if result >= 0 {
                parse_received(buffer, msghdr)
            } else {
                None
            };
            let Some(received) = received else {
                if result < 0 {
                    *errors += 1;
                } else {
                    stats.malformed += 1;
                }
                held.push(bid);
                continue;
            };
            let header_len = outer_len(&received.source);
            let end = HEADROOM + received.len;
            let first_len = match received.segment {
                Some(segment) if segment > 0 && segment < received.len => {
                    *coalesced += 1;
                    segment
                }
                _ => received.len,
            };
            // The first (or only) datagram in place, its headers over the read-out metadata.
            // (The payload lies inside the buffer: `parse_received` measured it there.)
            let Some(frame) = buffer.get_mut(HEADROOM - header_len..HEADROOM + first_len) else {
                stats.malformed += 1;
                held.push(bid);
                continue;
            };
            if synth.write(frame, received.source, received.tos) {
                stats.frames += 1;
                stats.bytes += first_len as u64;
                frames.push(frame);
                added += 1;
            } else {
                stats.malformed += 1;
            }
            let mut part = Partial {
                bid,
                next: HEADROOM + first_len,
                end,
                segment: first_len,
                source: received.source,
                tos: received.tos,
            };
            if hand_out_segments(
                &mut part,
                buffers,
                &mut scratch,
                frames,
                max,
                &mut added,
                synth,
                stats,
            ) {
                held.push(bid);
            } else {
                *partial = Some(part);
                break;
            }
        }
        drop(completions);
        // The multishot receive ended (its last completion is reaped, so every buffer not
        // held here is back in the ring): arm it again now if the ring has buffers, not at
        // the next call. A worker that sleeps on `poll_fd` after an empty batch would
        // otherwise sleep with nothing armed while datagrams pile up in the socket.
        let owned = held.len() + usize::from(partial.is_some());
        if !*armed && owned < usize::from(buffers.count) {
            arm_receive(ring, msghdr)?;
            *armed = true;
        }
        Ok(added)
    }

    fn release(&mut self) {
        if self.held.is_empty() {
            return;
        }
        for index in 0..self.held.len() {
            let bid = self.held[index];
            self.buffers.push(bid);
        }
        self.held.clear();
        self.buffers.publish();
        if !self.armed && self.partial.is_none() {
            // Errors resurface at the next `recv`, which arms again.
            let _ = self.arm();
        }
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.ring.as_raw_fd())
    }

    fn stats(&mut self) -> QueueStats {
        if let Some(drops) = socket_drops(&self.socket) {
            self.stats.dropped = drops;
        }
        self.stats
    }
}

/// The datagrams the kernel dropped at the socket (receive buffer full, bad checksum), from
/// `SO_MEMINFO`'s `SK_MEMINFO_DROPS`.
fn socket_drops(socket: &Socket) -> Option<u64> {
    let mut info = [0u32; 9];
    let mut len = mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes, and the kernel writes at most `len` and
    // updates it.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let at = libc::SK_MEMINFO_DROPS as usize;
    (rc == 0 && len as usize > at * 4).then(|| u64::from(info[at]))
}

impl Drop for UringRx {
    fn drop(&mut self) {
        if self.stop_receiving().is_none() && self.armed {
            // The receive could not be stopped (a deferred ring dropped by a thread other
            // than its issuer): the kernel may still write into the buffers until the
            // ring's asynchronous teardown ends it, so they are left mapped (leaked) rather
            // than unmapped under it.
            self.buffers.buffers.leak();
        }
        // The ring's teardown is asynchronous, and its file table holds a reference to the
        // socket: unregistered here, the port is free as soon as the socket is closed, not
        // whenever the teardown gets to it.
        let _ = self.ring.submitter().unregister_files();
    }
}

impl UringRx {
    /// Cancels the multishot receive and waits (bounded) for its last completion, so that
    /// the kernel writes no more into the buffers. Buffers of completions met meanwhile go
    /// back to the ring (their datagrams are lost: this runs at open and drop only). Returns
    /// the last completion's result.
    fn stop_receiving(&mut self) -> Option<i32> {
        if !self.armed {
            return None;
        }
        let cancel = opcode::AsyncCancel::new(RECV_TAG)
            .build()
            .user_data(CANCEL_TAG);
        // SAFETY: the cancellation refers to no memory.
        if unsafe { self.ring.submission().push(&cancel) }.is_err() {
            return None;
        }
        let timeout = types::Timespec::from(Duration::from_millis(500));
        let args = types::SubmitArgs::new().timespec(&timeout);
        for _ in 0..8 {
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let mut last = None;
            for entry in self.ring.completion() {
                if entry.user_data() != RECV_TAG {
                    continue;
                }
                if let Some(bid) =
                    cqueue::buffer_select(entry.flags()).filter(|bid| *bid < self.buffers.count)
                {
                    self.buffers.push(bid);
                }
                if !cqueue::more(entry.flags()) {
                    last = Some(entry.result());
                }
            }
            self.buffers.publish();
            if last.is_some() {
                self.armed = false;
                return last;
            }
        }
        None
    }
}

/// The outer destination of a frame the core encapsulated: where its datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OuterDestination {
    destination: SocketAddr,
    tos: u8,
    /// Where the UDP payload (the VXLAN header) starts in the frame.
    payload: usize,
}

/// Reads the outer destination address, port and TOS, and where the UDP payload starts,
/// from the outer headers at the start of `header`. `None` unless they are Ethernet, IPv4
/// or IPv6 (without extension headers), UDP, all within `header`.
fn parse_outer(header: &[u8]) -> Option<OuterDestination> {
    let ip = ETHERNET_HEADER_LEN;
    let be16 = |at: usize| {
        header
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let (address, tos, udp) = match be16(12)? {
        ethertype::IPV4 => {
            let version_ihl = *header.get(ip)?;
            let header_len = usize::from(version_ihl & 0x0F) * 4;
            if version_ihl >> 4 != 4 || header_len < 20 || *header.get(ip + 9)? != 17 {
                return None;
            }
            let dst: [u8; 4] = *header.get(ip + 16..ip + 20)?.first_chunk()?;
            (
                IpAddr::V4(Ipv4Addr::from(dst)),
                *header.get(ip + 1)?,
                ip + header_len,
            )
        }
        ethertype::IPV6 => {
            let first = *header.get(ip)?;
            if first >> 4 != 6 || *header.get(ip + 6)? != 17 {
                return None;
            }
            let dst: [u8; 16] = *header.get(ip + 24..ip + 40)?.first_chunk()?;
            let tclass = (first << 4) | (*header.get(ip + 1)? >> 4);
            (IpAddr::V6(Ipv6Addr::from(dst)), tclass, ip + 40)
        }
        _ => return None,
    };
    let port = be16(udp + 2)?;
    let payload = udp + UDP_HEADER_LEN;
    (payload <= header.len()).then_some(OuterDestination {
        destination: SocketAddr::new(address, port),
        tos,
        payload,
    })
}

/// Room for the transmit control messages: `UDP_SEGMENT` (a u16) and `IP_TOS` or
/// `IPV6_TCLASS` (an int), each `CMSG_SPACE` 24 bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; 2 * CMSG_SPACE_4]);

impl Control {
    /// Writes one control message at `at`; returns the offset after it.
    fn put(&mut self, at: usize, level: libc::c_int, kind: libc::c_int, data: &[u8]) -> usize {
        let len = 16 + data.len();
        self.0[at..at + 8].copy_from_slice(&len.to_ne_bytes());
        self.0[at + 8..at + 12].copy_from_slice(&level.to_ne_bytes());
        self.0[at + 12..at + 16].copy_from_slice(&kind.to_ne_bytes());
        self.0[at + 16..at + len].copy_from_slice(data);
        self.0[at + len..at + CMSG_SPACE_4].fill(0);
        at + CMSG_SPACE_4
    }
}

/// One queued `sendmsg`: a datagram, or a GSO super-datagram of several same-size ones.
struct Message {
    destination: SocketAddr,
    tos: u8,
    /// Where the data is in the arena.
    start: usize,
    len: usize,
    /// The segment size: the first datagram's length.
    segment: usize,
    segments: u16,
    /// The last datagram was shorter than `segment`: nothing more may be appended.
    closed: bool,
    // What the kernel reads; written at flush time, stable in memory until the completion.
    msghdr: libc::msghdr,
    iov: libc::iovec,
    name: SockAddr,
    control: Control,
}

/// The transmitting half: datagrams copied into an arena, sent with one `SENDMSG` request
/// each (one per GSO super-datagram), one `io_uring_enter` per [`TxQueue::flush`], which
/// returns when the kernel is done with every request (so the arena is free again).
///
/// [`TxQueue::send`] takes the destination from the outer headers and ignores their source
/// (the socket's address and port are used). It returns `Ok(false)`, counted in
/// [`QueueStats::malformed`], for a frame that is not UDP over the socket's IP version: an
/// ARP request the core sends to resolve an underlay next hop, for one, means nothing on a
/// UDP underlay, where the kernel resolves next hops; give the switch resolved next hops
/// (any MAC) for this backend. A batch larger than the queue is flushed early rather than
/// dropped. [`QueueStats::bytes`] counts UDP payload bytes (what crossed the socket), as
/// the receiving half does.
pub struct UringTx {
    // Dropped first: the ring before the memory its requests point to.
    ring: IoUring,
    socket: Arc<Socket>,
    messages: Box<[Message]>,
    queued: usize,
    arena: Box<[u8]>,
    arena_used: usize,
    gso: bool,
    ipv6: bool,
    stats: QueueStats,
    last_error: Option<i32>,
    gso_sends: u64,
    zerocopy: bool,
}

// SAFETY: the raw pointers (in the messages' msghdr and iovec) point into boxes owned by this
// value and are only used through `&mut self`; the ring is not tied to a thread.
unsafe impl Send for UringTx {}

impl fmt::Debug for UringTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringTx")
            .field("queued", &self.queued)
            .field("gso", &self.gso)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Drop for UringTx {
    fn drop(&mut self) {
        // As for the receiving half: free the port when the socket closes. No request is in
        // flight: `flush` waits for all of its completions.
        let _ = self.ring.submitter().unregister_files();
    }
}

impl UringTx {
    fn new(config: &UringConfig, socket: Arc<Socket>) -> Result<UringTx, UringError> {
        let (ring, _) = ring_for(&socket, config.tx_messages, config.tx_messages * 2, false)?;
        let messages = (0..config.tx_messages)
            .map(|_| Message {
                destination: config.local,
                tos: 0,
                start: 0,
                len: 0,
                segment: 0,
                segments: 0,
                closed: false,
                // SAFETY: plain C structs; all zeros is a valid value.
                msghdr: unsafe { mem::zeroed() },
                iov: libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                },
                name: SockAddr::from(config.local),
                control: Control([0; 2 * CMSG_SPACE_4]),
            })
            .collect();
        Ok(UringTx {
            ring,
            socket,
            messages,
            queued: 0,
            arena: std::vec![0; config.tx_bytes].into_boxed_slice(),
            arena_used: 0,
            gso: config.gso,
            ipv6: config.local.is_ipv6(),
            stats: QueueStats::default(),
            last_error: None,
            gso_sends: 0,
            zerocopy: config.send_zerocopy,
        })
    }

    /// The socket both halves share.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// The error of the last failed send, if any (an `errno` value).
    pub fn last_error(&self) -> Option<io::Error> {
        self.last_error.map(io::Error::from_raw_os_error)
    }

    /// `sendmsg` requests that carried more than one datagram (UDP GSO).
    pub fn gso_sends(&self) -> u64 {
        self.gso_sends
    }

    /// Appends `datagram` (in two parts) to the last message if GSO allows.
    fn append(&mut self, destination: SocketAddr, tos: u8, parts: [&[u8]; 2]) -> bool {
        let len = parts[0].len() + parts[1].len();
        let Some(last) = self.queued.checked_sub(1).map(|i| &mut self.messages[i]) else {
            return false;
        };
        if !self.gso
            || last.closed
            || last.destination != destination
            || last.tos != tos
            || len > last.segment
            || last.segments >= GSO_MAX_SEGMENTS
            || last.len + len > GSO_MAX_BYTES
            || self.arena_used + len > self.arena.len()
        {
            return false;
        }
        // The last message's data ends where the arena's used part does.
        let at = self.arena_used;
        self.arena[at..at + parts[0].len()].copy_from_slice(parts[0]);
        self.arena[at + parts[0].len()..at + len].copy_from_slice(parts[1]);
        self.arena_used += len;
        last.len += len;
        last.segments += 1;
        last.closed = len < last.segment;
        true
    }
}

impl TxQueue for UringTx {
    fn send(&mut self, header: &[u8], payload: &[u8]) -> io::Result<bool> {
        let Some(outer) = parse_outer(header) else {
            self.stats.malformed += 1;
            return Ok(false);
        };
        if outer.destination.is_ipv6() != self.ipv6 {
            self.stats.malformed += 1;
            return Ok(false);
        }
        let parts = [&header[outer.payload..], payload];
        let len = parts[0].len() + parts[1].len();
        if len > GSO_MAX_BYTES {
            self.stats.malformed += 1;
            return Ok(false);
        }
        if self.append(outer.destination, outer.tos, parts) {
            return Ok(true);
        }
        if self.queued == self.messages.len() || self.arena_used + len > self.arena.len() {
            // A batch larger than the queue: one more submission rather than a drop.
            self.flush()?;
        }
        let at = self.arena_used;
        self.arena[at..at + parts[0].len()].copy_from_slice(parts[0]);
        self.arena[at + parts[0].len()..at + len].copy_from_slice(parts[1]);
        self.arena_used += len;
        let message = &mut self.messages[self.queued];
        message.destination = outer.destination;
        message.tos = outer.tos;
        message.start = at;
        message.len = len;
        message.segment = len;
        message.segments = 1;
        message.closed = false;
        self.queued += 1;
        Ok(true)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        let arena = self.arena.as_mut_ptr();
        let mut submission = self.ring.submission();
        for (index, message) in self.messages[..self.queued].iter_mut().enumerate() {
            message.name = SockAddr::from(message.destination);
            // `start + len` is inside the arena (checked when queued).
            message.iov.iov_base = arena.wrapping_add(message.start).cast();
            message.iov.iov_len = message.len;
            message.msghdr.msg_name = message.name.as_ptr().cast_mut().cast();
            message.msghdr.msg_namelen = message.name.len();
            message.msghdr.msg_iov = &mut message.iov;
            message.msghdr.msg_iovlen = 1;
            let mut control_len = 0;
            if message.segments > 1 {
                let segment = message.segment as u16;
                control_len = message.control.put(
                    control_len,
                    libc::SOL_UDP,
                    libc::UDP_SEGMENT,
                    &segment.to_ne_bytes(),
                );
            }
            if message.tos != 0 {
                let (level, kind) = if self.ipv6 {
                    (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
                } else {
                    (libc::IPPROTO_IP, libc::IP_TOS)
                };
                control_len = message.control.put(
                    control_len,
                    level,
                    kind,
                    &libc::c_int::from(message.tos).to_ne_bytes(),
                );
            }
            message.msghdr.msg_control = if control_len == 0 {
                ptr::null_mut()
            } else {
                message.control.0.as_mut_ptr().cast()
            };
            message.msghdr.msg_controllen = control_len;
            let entry = if self.zerocopy {
                opcode::SendMsgZc::new(types::Fixed(0), &message.msghdr).build()
            } else {
                opcode::SendMsg::new(types::Fixed(0), &message.msghdr).build()
            }
            .user_data(index as u64);
            // SAFETY: the msghdr, its iovec, name and control, and the arena data live in
            // boxes owned by `self`, unchanged until the completions are reaped below.
            // The ring has as many entries as there are messages, all free here.
            if unsafe { submission.push(&entry) }.is_err() {
                return Err(io::Error::other("submission queue full"));
            }
        }
        drop(submission);
        let mut pending = self.queued;
        let mut result = Ok(());
        while pending > 0 {
            if let Err(error) = self.ring.submit_and_wait(pending) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The requests are in the kernel's hands: wait for them regardless, as the
                // memory they point to is reused next. EBUSY (completion queue full) and the
                // like clear as completions are reaped.
                result = Err(error);
            }
            for entry in self.ring.completion() {
                let Some(message) = self.messages.get(entry.user_data() as usize) else {
                    continue;
                };
                pending = pending.saturating_sub(1);
                if cqueue::notif(entry.flags()) {
                    // SEND_ZC's second completion: the kernel is done with the data.
                    continue;
                }
                if cqueue::more(entry.flags()) {
                    pending += 1; // SEND_ZC: the notification follows.
                }
                if entry.result() < 0 {
                    self.stats.dropped += u64::from(message.segments);
                    self.last_error = Some(-entry.result());
                } else {
                    self.stats.frames += u64::from(message.segments);
                    self.stats.bytes += message.len as u64;
                    if message.segments > 1 {
                        self.gso_sends += 1;
                    }
                }
            }
            if result.is_err() && pending > 0 {
                std::thread::yield_now();
            }
        }
        self.queued = 0;
        self.arena_used = 0;
        result
    }

    fn stats(&mut self) -> QueueStats {
        self.stats
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::tunnel::{decap, DecapConfig, EncapConfig, EncapTemplate, IpIdent, Underlay};
    use crate::Vni;
    use std::string::ToString;

    fn inner_frame() -> Vec<u8> {
        // Inner Ethernet + IPv4 + UDP, 64 bytes of payload.
        let mut frame = std::vec![0u8; 14 + 20 + 8 + 64];
        frame[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
        frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
        frame[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        let ip = &mut frame[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(20u16 + 8 + 64).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let checksum = ipv4_header(ip, 20).unwrap();
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());
        frame[34..36].copy_from_slice(&1234u16.to_be_bytes());
        frame[36..38].copy_from_slice(&5678u16.to_be_bytes());
        frame[38..40].copy_from_slice(&72u16.to_be_bytes());
        for (i, byte) in frame[42..].iter_mut().enumerate() {
            *byte = i as u8;
        }
        frame
    }

    /// The core's outer frame -> the TX path's datagram and destination -> the RX path's
    /// rebuilt frame, which decapsulation accepts with the VNI, inner frame and outer
    /// source of the original.
    fn round_trip(
        underlay: Underlay,
        remote_port_of_sender: u16,
        decap_config: DecapConfig,
        ipv6_udp_checksum: bool,
    ) {
        let vni = Vni::new(4242).unwrap();
        let template = EncapTemplate::new(&EncapConfig::default(), &underlay, vni).unwrap();
        let inner = inner_frame();
        let mut header = [0u8; 70];
        let header_len = template
            .encap_header(&inner, &mut header, &mut IpIdent::new(1))
            .unwrap();
        let header = &header[..header_len];

        // TX: where to, and what datagram.
        let outer = parse_outer(header).unwrap();
        let (local, remote) = (underlay.addrs.src(), underlay.addrs.dst());
        assert_eq!(outer.destination, SocketAddr::new(remote, 4789));
        let mut datagram = header[outer.payload..].to_vec();
        datagram.extend_from_slice(&inner);
        assert_eq!(datagram.len(), 8 + inner.len());

        // RX at the remote VTEP: the datagram behind the headroom, headers written in front.
        let sender = SocketAddr::new(local, remote_port_of_sender);
        let receiver = SocketAddr::new(remote, 4789);
        let mut buffer = std::vec![0xEEu8; HEADROOM + datagram.len()];
        buffer[HEADROOM..].copy_from_slice(&datagram);
        let frame = &mut buffer[HEADROOM - outer_len(&sender)..];
        let mac = EthernetAddress([2, 0, 0, 0, 0, 9]);
        assert!(write_outer(
            frame,
            sender,
            receiver,
            mac,
            outer.tos,
            ipv6_udp_checksum
        ));
        let decapsulated = decap(&decap_config, frame).unwrap();
        assert_eq!(decapsulated.vni, vni);
        assert_eq!(decapsulated.outer.src(), local);
        assert_eq!(decapsulated.outer.dst(), remote);
        assert_eq!(decapsulated.udp_src_port, remote_port_of_sender);
        assert_eq!(decapsulated.outer_dst_mac, mac);
        assert_eq!(decapsulated.inner_frame(frame), &inner[..]);
    }

    #[test]
    fn round_trip_ipv4() {
        let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let underlay = Underlay::ipv4(
            mac,
            mac,
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 2),
        );
        round_trip(underlay, 4789, DecapConfig::default(), false);
        round_trip(underlay, 51000, DecapConfig::default(), false);
    }

    #[test]
    fn round_trip_ipv6_zero_checksum_needs_the_default_decap() {
        let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let underlay = Underlay::ipv6(
            mac,
            mac,
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        round_trip(underlay, 4789, DecapConfig::default(), false);
        // A switch that rejects zero IPv6 checksums needs them computed...
        let strict = DecapConfig {
            reject_zero_checksum_ipv6: true,
            ..DecapConfig::default()
        };
        round_trip(underlay, 4789, strict, true);
        // ...and the computed one is verified, so it must be right: break it and see.
        let template =
            EncapTemplate::new(&EncapConfig::default(), &underlay, Vni::new(1).unwrap()).unwrap();
        let inner = inner_frame();
        let mut header = [0u8; 70];
        template
            .encap_header(&inner, &mut header, &mut IpIdent::new(1))
            .unwrap();
        let sender: SocketAddr = "[2001:db8::1]:4789".parse().unwrap();
        let receiver: SocketAddr = "[2001:db8::2]:4789".parse().unwrap();
        let mut frame = std::vec![0u8; OUTER_V6];
        frame.extend_from_slice(&header[62..70]);
        frame.extend_from_slice(&inner);
        assert!(write_outer(
            &mut frame,
            sender,
            receiver,
            EthernetAddress([0; 6]),
            0,
            true
        ));
        assert!(decap(&strict, &mut frame.clone()).is_ok());
        let last = frame.len() - 1;
        frame[last] ^= 1;
        assert_eq!(
            decap(&strict, &mut frame),
            Err(crate::DropReason::UdpChecksum)
        );
    }

    #[test]
    fn write_outer_refuses_mixed_families_and_short_frames() {
        let v4: SocketAddr = "198.18.0.1:4789".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:4789".parse().unwrap();
        let mac = EthernetAddress([0; 6]);
        assert!(!write_outer(&mut [0; 100], v4, v6, mac, 0, false));
        assert!(!write_outer(&mut [0; 100], v6, v4, mac, 0, false));
        assert!(!write_outer(&mut [0; OUTER_V4 - 1], v4, v4, mac, 0, false));
        assert!(write_outer(&mut [0; OUTER_V4], v4, v4, mac, 0, false));
    }

    #[test]
    fn parse_outer_refuses_what_is_not_udp_over_ip() {
        let mut arp = [0u8; 42];
        arp[12..14].copy_from_slice(&ethertype::ARP.to_be_bytes());
        assert_eq!(parse_outer(&arp), None);
        let mut tcp = [0u8; 60];
        tcp[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        tcp[14] = 0x45;
        tcp[23] = 6;
        assert_eq!(parse_outer(&tcp), None);
        tcp[23] = 17;
        assert!(parse_outer(&tcp).is_some());
        assert_eq!(parse_outer(&tcp[..41]), None);
    }

    #[test]
    fn received_metadata_is_read_from_the_buffer() {
        // A buffer laid out as multishot RECVMSG writes it: io_uring_recvmsg_out (namelen,
        // controllen, payloadlen, flags), the name field, the control field, the payload.
        let mut buffer = std::vec![0u8; HEADROOM + 10];
        buffer[0..4].copy_from_slice(&16u32.to_ne_bytes());
        buffer[4..8].copy_from_slice(&48u32.to_ne_bytes());
        buffer[8..12].copy_from_slice(&10u32.to_ne_bytes());
        let name = &mut buffer[16..16 + NAME_LEN];
        name[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        name[2..4].copy_from_slice(&4789u16.to_be_bytes());
        name[4..8].copy_from_slice(&[198, 18, 0, 2]);
        let control = &mut buffer[16 + NAME_LEN..HEADROOM];
        control[0..8].copy_from_slice(&17usize.to_ne_bytes());
        control[8..12].copy_from_slice(&libc::IPPROTO_IP.to_ne_bytes());
        control[12..16].copy_from_slice(&libc::IP_TOS.to_ne_bytes());
        control[16] = 0xB8 | 1;
        control[24..32].copy_from_slice(&20usize.to_ne_bytes());
        control[32..36].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
        control[36..40].copy_from_slice(&libc::UDP_GRO.to_ne_bytes());
        control[40..44].copy_from_slice(&5i32.to_ne_bytes());
        // SAFETY: a zeroed msghdr is valid.
        let mut msghdr: libc::msghdr = unsafe { mem::zeroed() };
        msghdr.msg_namelen = NAME_LEN as libc::socklen_t;
        msghdr.msg_controllen = CONTROL_LEN;
        let received = parse_received(&buffer, &msghdr).unwrap();
        assert_eq!(received.source, "198.18.0.2:4789".parse().unwrap());
        assert_eq!(received.tos, 0xB9);
        assert_eq!(received.segment, Some(5));
        assert_eq!(received.len, 10);
    }

    /// GRO segments after the first go out through the scratch space, each behind its own
    /// headers; when `max` or the scratch space runs out, the rest waits for the next call.
    #[test]
    fn coalesced_segments_are_handed_out_across_calls() {
        let buffers = BufRing::new(2, 4096).unwrap();
        let source: SocketAddr = "198.18.0.2:50000".parse().unwrap();
        let local: SocketAddr = "198.18.0.1:4789".parse().unwrap();
        // Buffer 1: five segments of 100 bytes and a last one of 30, behind the headroom.
        // SAFETY: buffer 1 lies inside the mapping, and nothing else refers to it.
        let buffer = unsafe { UringRx::buffer_mut(&buffers, 1) };
        for (i, byte) in buffer[HEADROOM..HEADROOM + 530].iter_mut().enumerate() {
            *byte = (i / 100) as u8;
        }
        let mut part = Partial {
            bid: 1,
            next: HEADROOM + 100, // The first segment went out in place.
            end: HEADROOM + 530,
            segment: 100,
            source,
            tos: 0,
        };
        let synth = Synth {
            local,
            local_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            ipv6_udp_checksum: false,
        };
        let mut stats = QueueStats::default();
        let mut scratch_space = std::vec![0u8; 3 * (OUTER_V4 + 100)];
        let mut lengths = Vec::new();
        {
            let mut scratch: &mut [u8] = &mut scratch_space;
            let mut frames = Vec::new();
            let mut added = 0;
            // `max` 2: two segments, then it stops.
            let done = hand_out_segments(
                &mut part,
                &buffers,
                &mut scratch,
                &mut frames,
                2,
                &mut added,
                synth,
                &mut stats,
            );
            assert!(!done);
            assert_eq!(added, 2);
            for (n, frame) in frames.iter().enumerate() {
                assert!(frame[OUTER_V4..].iter().all(|b| usize::from(*b) == n + 1));
                lengths.push(frame.len() - OUTER_V4);
            }
            // Scratch for one more: the third, then it stops again.
            let mut frames = Vec::new();
            let mut added = 0;
            assert!(!hand_out_segments(
                &mut part,
                &buffers,
                &mut scratch,
                &mut frames,
                10,
                &mut added,
                synth,
                &mut stats,
            ));
            assert_eq!(added, 1);
            lengths.push(frames[0].len() - OUTER_V4);
        }
        // The next batch, with fresh scratch space: the rest, the short last one included.
        let mut scratch: &mut [u8] = &mut scratch_space;
        let mut frames = Vec::new();
        let mut added = 0;
        assert!(hand_out_segments(
            &mut part,
            &buffers,
            &mut scratch,
            &mut frames,
            10,
            &mut added,
            synth,
            &mut stats,
        ));
        for frame in frames.iter_mut() {
            lengths.push(frame.len() - OUTER_V4);
            // Each decapsulation-ready: the IPv4 header checksum holds, lengths match.
            assert!(crate::wire::checksum::ipv4_header_valid(&frame[14..], 20));
            let udp_len = u16::from_be_bytes([frame[38], frame[39]]);
            assert_eq!(usize::from(udp_len), frame.len() - 34);
        }
        assert_eq!(lengths, [100, 100, 100, 100, 30]);
        assert_eq!(stats.frames, 5);
        assert_eq!(part.next, part.end);
    }

    #[test]
    fn probe_check_names_the_missing_opcode() {
        assert!(check_opcodes(|_| true).is_ok());
        let error = check_opcodes(|code| code != opcode::SendMsg::CODE).unwrap_err();
        assert!(error.to_string().contains("IORING_OP_SENDMSG"), "{error}");
        let error = check_opcodes(|_| false).unwrap_err();
        assert!(error.to_string().contains("IORING_OP_RECVMSG"), "{error}");
    }
}
