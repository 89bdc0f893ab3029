//! Simulated hosts for in-memory scenarios: smoltcp interfaces and sockets on a queue device,
//! driven by a fake clock (the style of quinn's `Pair`). The switch scenarios of issue 5 put
//! switchyard nodes between these hosts; the scenarios here wire hosts directly, which checks
//! the harness itself and is the baseline the switched scenarios must match.
//!
//! Nothing here reads a real clock or opens a socket: a scenario advances [`Clock`] by hand and
//! moves frames between hosts with [`Host::take_sent`] and [`Host::deliver`].
#![allow(dead_code)] // Each test crate uses its own part of the harness.

pub mod cluster;
pub mod service;

use std::collections::VecDeque;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{icmp, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address,
};

/// A fake clock in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock(pub u64);

impl Clock {
    /// smoltcp's view of the time.
    pub fn now(self) -> Instant {
        Instant::from_millis(self.0 as i64)
    }

    /// switchyard's view of the time.
    pub fn instant(self) -> switchyard::time::Instant {
        switchyard::time::Instant::from_millis(self.0)
    }

    pub fn advance(&mut self, millis: u64) {
        self.0 += millis;
    }
}

/// A network device that is two queues: frames the host sent, frames waiting for it.
#[derive(Debug, Default)]
pub struct Wire {
    pub sent: VecDeque<Vec<u8>>,
    pub inbox: VecDeque<Vec<u8>>,
    pub mtu: usize,
}

impl Device for Wire {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // The MTU of an Ethernet device is its largest frame, header included, in smoltcp.
        caps.max_transmission_unit = self.mtu + 14;
        // Every checksum verified on receive: a switch that breaks one is caught here.
        caps
    }

    fn receive(&mut self, _: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.inbox.pop_front()?;
        Some((RxToken(frame), TxToken(&mut self.sent)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.sent))
    }
}

pub struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

pub struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.push_back(frame);
        result
    }
}

/// One simulated host: an interface with one address, its sockets and its device.
pub struct Host {
    pub name: &'static str,
    pub mac: EthernetAddress,
    pub ip: IpAddress,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub wire: Wire,
}

impl Host {
    /// A host with `mac` and `cidr` (e.g. `198.18.1.10/24`), MTU 1500.
    pub fn new(name: &'static str, mac: [u8; 6], cidr: IpCidr, clock: Clock) -> Host {
        Host::with_mtu(name, mac, cidr, 1500, clock)
    }

    /// The same with another IP MTU (smoltcp reads it when the interface is made).
    pub fn with_mtu(
        name: &'static str,
        mac: [u8; 6],
        cidr: IpCidr,
        mtu: usize,
        clock: Clock,
    ) -> Host {
        let mac = EthernetAddress(mac);
        let mut wire = Wire {
            mtu,
            ..Wire::default()
        };
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        // Different seeds per host: different initial sequence numbers and ports.
        config.random_seed = u64::from_be_bytes([
            0, 0, mac.0[0], mac.0[1], mac.0[2], mac.0[3], mac.0[4], mac.0[5],
        ]);
        let mut iface = Interface::new(config, &mut wire, clock.now());
        iface.update_ip_addrs(|addrs| addrs.push(cidr).expect("one address"));
        Host {
            name,
            mac,
            ip: cidr.address(),
            iface,
            sockets: SocketSet::new(Vec::new()),
            wire,
        }
    }

    /// Lets the host process what arrived and send what it has to.
    pub fn poll(&mut self, clock: Clock) {
        self.iface
            .poll(clock.now(), &mut self.wire, &mut self.sockets);
    }

    /// The frames the host has sent since the last call.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        self.wire.sent.drain(..).collect()
    }

    /// Puts a frame into the host's receive queue.
    pub fn deliver(&mut self, frame: Vec<u8>) {
        self.wire.inbox.push_back(frame);
    }

    /// A TCP socket with 64 KiB buffers each way.
    pub fn tcp_socket(&mut self) -> SocketHandle {
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 65536]),
        );
        self.sockets.add(socket)
    }

    pub fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    /// An ICMP socket bound to echo identifier `ident`.
    pub fn icmp_socket(&mut self, ident: u16) -> SocketHandle {
        let mut socket = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 4096]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 4096]),
        );
        socket.bind(icmp::Endpoint::Ident(ident)).expect("bind");
        self.sockets.add(socket)
    }

    /// Queues an ICMPv4 echo request with `data` to `dst` on the ICMP socket `handle`.
    pub fn ping(
        &mut self,
        handle: SocketHandle,
        ident: u16,
        seq_no: u16,
        dst: Ipv4Address,
        data: &[u8],
    ) {
        let repr = Icmpv4Repr::EchoRequest {
            ident,
            seq_no,
            data,
        };
        let socket = self.sockets.get_mut::<icmp::Socket>(handle);
        let buffer = socket
            .send(repr.buffer_len(), IpAddress::Ipv4(dst))
            .expect("room in the ICMP send buffer");
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(buffer),
            &phy::ChecksumCapabilities::default(),
        );
    }

    /// The echo replies received on `handle`: (from, sequence number, data).
    pub fn echo_replies(&mut self, handle: SocketHandle) -> Vec<(IpAddress, u16, Vec<u8>)> {
        let socket = self.sockets.get_mut::<icmp::Socket>(handle);
        let mut replies = Vec::new();
        while let Ok((bytes, from)) = socket.recv() {
            let packet = Icmpv4Packet::new_checked(bytes).expect("an ICMP packet");
            let repr = Icmpv4Repr::parse(&packet, &phy::ChecksumCapabilities::default())
                .expect("a valid ICMP packet");
            if let Icmpv4Repr::EchoReply { seq_no, data, .. } = repr {
                replies.push((from, seq_no, data.to_vec()));
            }
        }
        replies
    }
}

/// Bytes that a transfer can check byte for byte: a deterministic, non-repeating pattern.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Who connects to whom: host indices and the server's port.
#[derive(Debug, Clone, Copy)]
pub struct TcpFlow {
    pub client: usize,
    pub server: usize,
    pub port: u16,
}

/// Moves `data` from `flow.client` (connecting) to `flow.server` (listening) over TCP, with
/// `network` carrying the frames each host sent (returning the frames to deliver, by host
/// index) and the clock advancing by 1 ms per round. Returns what the server received, or
/// panics after `max_rounds`.
pub fn tcp_transfer(
    hosts: &mut [Host],
    flow: TcpFlow,
    data: &[u8],
    clock: &mut Clock,
    max_rounds: usize,
    mut network: impl FnMut(usize, Vec<u8>, &mut Clock) -> Vec<(usize, Vec<u8>)>,
) -> Vec<u8> {
    let TcpFlow {
        client,
        server,
        port,
    } = flow;
    let listener = hosts[server].tcp_socket();
    hosts[server].tcp(listener).listen(port).expect("listen");
    let connection = hosts[client].tcp_socket();
    let server_ip = hosts[server].ip;
    let cx = hosts[client].iface.context();
    hosts[client]
        .sockets
        .get_mut::<tcp::Socket>(connection)
        .connect(cx, (server_ip, port), 49152)
        .expect("connect");
    let mut sent = 0;
    let mut received = Vec::with_capacity(data.len());
    for _ in 0..max_rounds {
        {
            let socket = hosts[client].tcp(connection);
            if socket.can_send() && sent < data.len() {
                sent += socket.send_slice(&data[sent..]).expect("send");
            }
            if sent == data.len()
                && socket.send_queue() == 0
                && socket.state() == tcp::State::Established
            {
                socket.close();
            }
        }
        {
            let socket = hosts[server].tcp(listener);
            while socket.can_recv() {
                socket
                    .recv(|bytes| {
                        received.extend_from_slice(bytes);
                        (bytes.len(), ())
                    })
                    .expect("recv");
            }
            if received.len() == data.len() && !socket.may_recv() {
                return received;
            }
        }
        step(hosts, clock, &mut network);
    }
    panic!(
        "transfer incomplete after {max_rounds} rounds: {} of {} bytes sent, {} received",
        sent,
        data.len(),
        received.len()
    );
}

/// One round: every host polls, and every frame it sent goes through `network`.
pub fn step(
    hosts: &mut [Host],
    clock: &mut Clock,
    network: &mut impl FnMut(usize, Vec<u8>, &mut Clock) -> Vec<(usize, Vec<u8>)>,
) {
    for index in 0..hosts.len() {
        hosts[index].poll(*clock);
        for frame in hosts[index].take_sent() {
            for (to, frame) in network(index, frame, clock) {
                hosts[to].deliver(frame);
            }
        }
    }
    clock.advance(1);
}
