//! What a switch program needs from the host besides its ports: a UDP socket that keeps the
//! kernel quiet about the VXLAN port, and a wait for readable descriptors.

#![allow(unsafe_code)] // poll(2) on descriptors the caller owns.

use std::format;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::time::Duration;
use std::vec::Vec;

use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};

/// A UDP socket bound to the local VTEP's address and VXLAN port that receives nothing.
///
/// When the switch reads the underlay with AF_PACKET, the kernel's own stack also sees each
/// VXLAN datagram addressed to the local VTEP. With no socket on the port it would answer
/// every one with ICMP port unreachable; with a kernel VXLAN device on the port it would also
/// decapsulate it. Holding the port with this socket prevents both: binding fails with a
/// clear error if a kernel VXLAN device (or any program) already holds it, and a classic BPF
/// filter that accepts nothing (`ret #0`) keeps the socket's queue empty, so the datagrams
/// cost the kernel a lookup and nothing else.
#[derive(Debug)]
pub struct UnderlayGuard {
    _socket: Socket,
}

impl UnderlayGuard {
    /// Binds `local_ip`:`udp_port`.
    pub fn bind(local_ip: IpAddr, udp_port: u16) -> io::Result<UnderlayGuard> {
        let domain = if local_ip.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        // The filter first: nothing may be queued between bind and attach.
        socket.attach_filter(&[SockFilter::new(0x06, 0, 0, 0)])?;
        socket.set_recv_buffer_size(0)?;
        let address = SockAddr::from(SocketAddr::new(local_ip, udp_port));
        socket.bind(&address).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "holding UDP port {udp_port} on {local_ip}: {e} (a kernel VXLAN device or \
                     another program uses it; remove it, or give the switch another port)"
                ),
            )
        })?;
        Ok(UnderlayGuard { _socket: socket })
    }
}

/// Waits until one of `fds` polls readable, or `timeout`; true if one did. An interrupted
/// wait (a signal) returns false, like a timeout.
pub fn wait_readable(fds: &[RawFd], timeout: Duration) -> bool {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout_ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pollfds` is a live, exclusively borrowed array of `pollfds.len()` initialised
    // `pollfd`s; poll(2) writes only their `revents` fields. Descriptors that are closed make
    // poll report POLLNVAL for them, not touch memory.
    let ready = unsafe {
        libc::poll(
            pollfds.as_mut_ptr(),
            pollfds.len() as libc::nfds_t,
            timeout_ms,
        )
    };
    ready > 0
}

#[cfg(test)]
mod test {
    use std::string::ToString;

    use super::*;

    #[test]
    fn a_second_guard_on_the_same_port_is_refused_with_the_reason() {
        let first = UnderlayGuard::bind(IpAddr::from([127, 0, 0, 1]), 0).unwrap();
        drop(first);
        // Port 0 picks a free port; bind one for real, then the same again.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let error = UnderlayGuard::bind(IpAddr::from([127, 0, 0, 1]), port).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        assert!(error.to_string().contains("kernel VXLAN device"), "{error}");
    }

    #[test]
    fn the_guard_queues_nothing() {
        let guard = UnderlayGuard::bind(IpAddr::from([127, 0, 0, 1]), 0).unwrap();
        let port = guard
            ._socket
            .local_addr()
            .unwrap()
            .as_socket()
            .unwrap()
            .port();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"vxlan", ("127.0.0.1", port)).unwrap();
        guard._socket.set_nonblocking(true).unwrap();
        let mut buf = [std::mem::MaybeUninit::new(0u8); 16];
        let error = guard._socket.recv(&mut buf).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn wait_readable_sees_a_datagram_and_times_out_without_one() {
        use std::os::fd::AsRawFd;
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = receiver.as_raw_fd();
        assert!(!wait_readable(&[fd], Duration::from_millis(10)));
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender
            .send_to(b"x", receiver.local_addr().unwrap())
            .unwrap();
        assert!(wait_readable(&[fd], Duration::from_secs(5)));
    }
}
