//! The io_uring underlay for `vswitch run` (`backend = "io-uring"`): one UDP socket per worker
//! on the VXLAN port (an `SO_REUSEPORT` group), read with multishot RECVMSG into a provided
//! buffer ring, written with batched SENDMSG (see `switchyard::backend::io_uring`).
//!
//! The kernel routes the outer packets (the switch's next-hop MACs are not used) and picks
//! their outer source port (the socket's, 4789: per-flow source ports need AF_PACKET).

use std::io;

use switchyard::backend::io_uring::{open_queues, UringConfig};
use switchyard::backend::Port;
use switchyard::switch::Ingress;

use crate::config::File;

/// Opens `workers` underlay queues for the file's underlay, one port per worker.
pub fn open_underlays(
    file: &File,
    local_mac: switchyard::wire::EthernetAddress,
    workers: usize,
) -> io::Result<Vec<Port>> {
    let underlay = &file.underlay;
    let mut config = UringConfig::new(std::net::SocketAddr::new(
        underlay.local_ip,
        underlay.udp_port,
    ));
    if underlay.udp_offloads.unwrap_or(true) {
        config = config.with_offloads();
    }
    config.local_mac = local_mac;
    config.reject_zero_checksum_ipv6 = !underlay.zero_checksum_ipv6;
    // The switch verifies IPv6 UDP checksums unless zero checksums are allowed: give it
    // synthetic headers it accepts.
    config.ipv6_udp_checksum = !underlay.zero_checksum_ipv6;
    let queues = open_queues(&config, workers).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(queues
        .into_iter()
        .map(|(rx, tx)| Port::new(Ingress::Underlay, Box::new(rx), Box::new(tx)))
        .collect())
}
