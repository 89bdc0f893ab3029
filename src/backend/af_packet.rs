//! AF_PACKET ports (feature `af-packet`): a memory-mapped TPACKET_V3 receive ring and a
//! memory-mapped TPACKET_V2 transmit ring on an interface, as `packet(7)` and the kernel's
//! `Documentation/networking/packet_mmap.rst` describe them.
//!
//! **Sockets of a port.** The receive socket ([`AfPacketRx`]) is bound to every protocol
//! (`ETH_P_ALL`) and owns the RX ring; the transmit socket ([`AfPacketTx`]) is bound with
//! protocol 0, so the kernel never queues received frames to it, and owns the TX ring. Each
//! has the ring version that suits it: V3 for receiving (variable-size frames packed into
//! blocks, one block per batch, a fraction of V2's memory and wake-ups), V2 for transmitting
//! (V3's TX ring is V2's with a different header; fixed slots either way).
//!
//! **Socket options, and why:**
//! - `PACKET_VERSION` (`TPACKET_V3` RX, `TPACKET_V2` TX): the ring layouts above.
//! - `PACKET_VNET_HDR` (RX, on by default): a virtio-net header in front of each frame says
//!   which frames carry a partial checksum or are GSO super-frames (veth peers send both);
//!   without it they are indistinguishable from ordinary frames ([`FrameMeta`]).
//! - `PACKET_VNET_HDR` (TX, on by default): a virtio-net header in front of each frame sent.
//!   For ordinary frames its `hdr_len` is the whole frame, so the kernel copies it rather
//!   than reference the ring's page (faster for small frames: see BENCHMARKS.md); for a GSO
//!   super-frame sent whole ([`TxQueue::send_offloaded`]) it asks the kernel to segment and
//!   checksum. Super-frames exceed a ring slot, so they go through a third socket (no ring,
//!   same options), one `sendmsg` each, after a flush of the ring to keep a flow's order.
//! - `PACKET_RX_RING` / `PACKET_TX_RING` + `mmap`: frames without a copy to user space on
//!   receive, and a whole batch per system call on transmit.
//! - `PACKET_IGNORE_OUTGOING` (RX): frames this host sends on the interface (ours included)
//!   are not looped back into the RX ring.
//! - `PACKET_ADD_MEMBERSHIP` with `PACKET_MR_PROMISC` (RX): a switch port receives frames for
//!   every MAC behind it; the membership ends with the socket.
//! - `PACKET_FANOUT` (`PACKET_FANOUT_HASH`, a group id) (RX, optional): several workers share
//!   one interface, each flow always reaching the same worker.
//! - `PACKET_STATISTICS` (RX, read): frames the kernel dropped because the ring was full,
//!   exported as [`QueueStats::dropped`].
//! - `PACKET_QDISC_BYPASS` (TX): frames go straight to the driver, as a switch port wants
//!   (no queueing discipline, no taps).
//! - `PACKET_LOSS` (TX): a frame the kernel refuses (too long for the MTU) is skipped and its
//!   slot freed; without it, the ring would stop at that frame for good.
//! - `SO_SNDBUFFORCE` (TX, falling back to `SO_SNDBUF`): the socket buffer bounds the frames
//!   in flight from the TX ring; the default (~200 KB) would stall a ring of thousands.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::format;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::string::String;
use std::vec::Vec;

use core::sync::atomic::{AtomicU32, Ordering};

use super::offload::VNET_HEADER_LEN;
use super::{FrameMeta, QueueStats, RxQueue, TxQueue};
use crate::gro::{Coalesced, UdpCoalescer};

/// `TPACKET_V2` and `TPACKET_V3`, the values of `enum tpacket_versions` (libc has the enum,
/// but `setsockopt` wants the `int`).
const TPACKET_V2: libc::c_int = 1;
const TPACKET_V3: libc::c_int = 2;

/// Offsets in `struct tpacket_block_desc` (version, offset_to_priv, then `tpacket_hdr_v1`).
const BLOCK_STATUS: usize = 8;
const BLOCK_NUM_PKTS: usize = 12;
const BLOCK_OFFSET_TO_FIRST_PKT: usize = 16;

/// Where a TPACKET_V2 TX frame's data starts: `TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)`,
/// the kernel's default when `PACKET_TX_HAS_OFF` is off.
const TX_DATA_OFFSET: usize = libc::TPACKET2_HDRLEN - core::mem::size_of::<libc::sockaddr_ll>();

/// The TPID of an 802.1Q tag, for tags the kernel took out of the frame.
const ETH_P_8021Q: u16 = 0x8100;

/// How to open an AF_PACKET port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// The interface's name (`veth0`, `eth1`), in the network namespace of the thread that
    /// opens the port.
    pub interface: String,
    /// Bytes per RX block: a power of two, a multiple of the page size, larger than the
    /// largest frame (with `vnet_header`, GSO super-frames of 64 KB: hence 256 KiB).
    pub rx_block_size: u32,
    /// RX blocks (64: 16 MiB with the default block size, ~100 000 small frames).
    pub rx_block_count: u32,
    /// Milliseconds after which the kernel hands over a block that is not full
    /// (`tp_retire_blk_tov`): the worst-case latency at a trickle (2 ms).
    pub rx_block_timeout_ms: u32,
    /// Bytes per TX slot, header included: a multiple of 16; frames up to
    /// `tx_frame_size - 32` bytes fit (2048: a 1500-byte MTU with VXLAN and VLAN headers).
    pub tx_frame_size: u32,
    /// TX slots (4096).
    pub tx_frame_count: u32,
    /// Join the fanout group with this id (hash of the flow), to share the interface with
    /// other workers; `None`: this socket alone receives everything.
    pub fanout: Option<u16>,
    /// Ask for a virtio-net header per received frame (`PACKET_VNET_HDR`), so that
    /// partial checksums and GSO super-frames are known as such.
    pub vnet_header: bool,
    /// Promiscuous membership on the interface.
    pub promiscuous: bool,
    /// Transmit around the queueing discipline.
    pub qdisc_bypass: bool,
    /// Put a virtio-net header in front of each transmitted frame (`PACKET_VNET_HDR` on the
    /// TX socket), with `hdr_len` the whole frame: the kernel then copies small frames into
    /// the socket buffer instead of attaching ring pages to it (a page reference taken and
    /// dropped per frame), and the header is there for frames that need offloads.
    pub tx_vnet_header: bool,
    /// Join consecutive UDP datagrams of one flow and one size (the VXLAN packets of one
    /// TCP super-frame towards one VTEP, a stream of equal frames) into one UDP GSO
    /// super-frame ([`crate::gro::UdpCoalescer`]), sent with one `sendmsg` and a
    /// `VIRTIO_NET_HDR_GSO_UDP_L4` header: the kernel cuts it where a link needs it, and a
    /// veth carries it whole. The datagrams get UDP checksums (the kernel's UDP GSO needs
    /// them), also over IPv4. For an underlay port; needs `tx_vnet_header`. Default off.
    pub tx_udp_gso: bool,
}

impl AfPacketConfig {
    /// The defaults above, on `interface`.
    pub fn new(interface: &str) -> AfPacketConfig {
        AfPacketConfig {
            interface: String::from(interface),
            rx_block_size: 1 << 18,
            rx_block_count: 64,
            rx_block_timeout_ms: 2,
            tx_frame_size: 2048,
            tx_frame_count: 4096,
            fanout: None,
            vnet_header: true,
            promiscuous: true,
            qdisc_bypass: true,
            tx_vnet_header: true,
            tx_udp_gso: false,
        }
    }
}

/// Opens both halves of a port on `config.interface`.
pub fn open(config: &AfPacketConfig) -> io::Result<(AfPacketRx, AfPacketTx)> {
    Ok((AfPacketRx::open(config)?, AfPacketTx::open(config)?))
}

/// An error that names the operation and the interface.
fn os_error(what: &str, interface: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("AF_PACKET {what} on {interface}: {e}"))
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

fn packet_socket(interface: &str) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the descriptor it returns is new and owned by
    // nobody else, so OwnedFd may take it.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(os_error("socket", interface));
    }
    // SAFETY: `fd` was just returned by socket(2) and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_option<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
    what: &str,
    interface: &str,
) -> io::Result<()> {
    // SAFETY: `value` is a live `T` for the duration of the call and its size is passed
    // with it; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            core::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(os_error(what, interface));
    }
    Ok(())
}

fn interface_index(interface: &str) -> io::Result<libc::c_int> {
    let name = CString::new(interface)
        .map_err(|_| invalid(format!("interface name {interface:?} contains NUL")))?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(os_error("if_nametoindex", interface));
    }
    libc::c_int::try_from(index).map_err(|_| invalid(format!("ifindex of {interface}")))
}

/// The interface's MTU (`SIOCGIFMTU`), asked through `fd`.
fn interface_mtu(fd: &OwnedFd, interface: &str) -> io::Result<usize> {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { core::mem::zeroed() };
    for (slot, byte) in request
        .ifr_name
        .iter_mut()
        .zip(interface.bytes().take(libc::IFNAMSIZ - 1))
    {
        *slot = byte as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads the name from and writes the MTU into `request`, a live and
    // exclusively borrowed ifreq.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &mut request) };
    if r != 0 {
        return Err(os_error("SIOCGIFMTU", interface));
    }
    // SAFETY: after SIOCGIFMTU succeeded, the union holds the MTU.
    let mtu = unsafe { request.ifr_ifru.ifru_mtu };
    usize::try_from(mtu).map_err(|_| invalid(format!("MTU {mtu} of {interface}")))
}

fn bind(fd: &OwnedFd, index: libc::c_int, protocol: u16, interface: &str) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
    let mut address: libc::sockaddr_ll = unsafe { core::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as libc::c_ushort;
    address.sll_protocol = protocol.to_be();
    address.sll_ifindex = index;
    // SAFETY: `address` is a live sockaddr_ll and its size is passed with it.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&address as *const libc::sockaddr_ll).cast(),
            core::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(os_error("bind", interface));
    }
    Ok(())
}

/// The receiving socket of a port: options that must come before `bind` (`setup`: the
/// ring), then `PACKET_IGNORE_OUTGOING`, `bind` to `ETH_P_ALL` on the interface, promiscuous
/// membership and fanout as `config` asks.
fn receive_socket_with<T>(
    config: &AfPacketConfig,
    setup: impl FnOnce(&OwnedFd) -> io::Result<T>,
) -> io::Result<(OwnedFd, T)> {
    let interface = config.interface.as_str();
    let index = interface_index(interface)?;
    // Protocol 0 until set up: nothing is queued to the socket before `bind`.
    let fd = packet_socket(interface)?;
    let extra = setup(&fd)?;
    let sol = libc::SOL_PACKET;
    let on: libc::c_int = 1;
    set_option(
        &fd,
        sol,
        libc::PACKET_IGNORE_OUTGOING,
        &on,
        "PACKET_IGNORE_OUTGOING",
        interface,
    )?;
    bind(&fd, index, libc::ETH_P_ALL as u16, interface)?;
    if config.promiscuous {
        let membership = libc::packet_mreq {
            mr_ifindex: index,
            mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        set_option(
            &fd,
            sol,
            libc::PACKET_ADD_MEMBERSHIP,
            &membership,
            "PACKET_ADD_MEMBERSHIP",
            interface,
        )?;
    }
    if let Some(group) = config.fanout {
        // The fanout argument: the group id in the low 16 bits, mode and flags above. A
        // socket in a fanout group no longer honours PACKET_IGNORE_OUTGOING: the group's own
        // flag says it (without it, the workers would receive the host's outgoing frames and
        // learn the host's own MACs on its ports).
        let mode = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
        let argument = libc::c_int::from(group) | ((mode as i32) << 16);
        set_option(
            &fd,
            sol,
            libc::PACKET_FANOUT,
            &argument,
            "PACKET_FANOUT",
            interface,
        )?;
    }
    Ok((fd, extra))
}

/// A receiving socket as the ring port's, without the ring (for the `recvmmsg` port).
pub(crate) fn receive_socket(config: &AfPacketConfig) -> io::Result<OwnedFd> {
    receive_socket_with(config, |_| Ok(())).map(|(fd, ())| fd)
}

/// The transmitting socket of a port: `setup` (the ring), `PACKET_QDISC_BYPASS` as `config`
/// asks, `bind` to protocol 0 (it transmits only; the kernel queues nothing to it).
fn transmit_socket_with<T>(
    config: &AfPacketConfig,
    setup: impl FnOnce(&OwnedFd) -> io::Result<T>,
) -> io::Result<(OwnedFd, T)> {
    let interface = config.interface.as_str();
    let index = interface_index(interface)?;
    let fd = packet_socket(interface)?;
    let extra = setup(&fd)?;
    if config.qdisc_bypass {
        let on: libc::c_int = 1;
        set_option(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &on,
            "PACKET_QDISC_BYPASS",
            interface,
        )?;
    }
    bind(&fd, index, 0, interface)?;
    Ok((fd, extra))
}

/// A transmitting socket as the ring port's, without the ring (for the `sendmmsg` port).
pub(crate) fn transmit_socket(config: &AfPacketConfig) -> io::Result<OwnedFd> {
    transmit_socket_with(config, |_| Ok(())).map(|(fd, ())| fd)
}

/// A shared memory mapping of a socket's ring, unmapped on drop.
#[derive(Debug)]
struct Ring {
    base: *mut u8,
    len: usize,
}

impl Ring {
    fn map(fd: &OwnedFd, len: usize, interface: &str) -> io::Result<Ring> {
        // SAFETY: a new shared mapping of the socket's ring at an address the kernel picks;
        // no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_error("mmap", interface));
        }
        Ok(Ring {
            base: base.cast(),
            len,
        })
    }

    /// The u32 at `offset` that the kernel and we hand back and forth (a status word).
    ///
    /// # Safety
    /// `offset + 4 <= len` and `offset` is 4-aligned.
    unsafe fn status(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: the caller keeps the word inside the mapping and aligned; the mapping lives
        // as long as `self`; the kernel accesses this word atomically as well (smp_wmb/rmb
        // around plain stores, which acquire/release loads and stores pair with).
        unsafe { AtomicU32::from_ptr(self.base.add(offset).cast()) }
    }

    /// A plain u32 the kernel wrote before handing the memory over.
    ///
    /// # Safety
    /// `offset + 4 <= len`.
    unsafe fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: inside the mapping (caller); the memory is ours until we give it back.
        unsafe { core::ptr::read_unaligned(self.base.add(offset).cast::<u32>()) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `map`; no slice into it
        // outlives `self` (frames borrow the queue that owns the ring).
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

/// Where the walk of the RX ring stands inside a block handed over by the kernel.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    remaining: u32,
    offset: usize,
}

/// Offload counters of an AF_PACKET receive queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffloadStats {
    /// Frames with a partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
    pub partial_checksums: u64,
    /// GSO super-frames.
    pub gso_frames: u64,
    /// Frames whose 802.1Q tag the kernel had taken out, put back in front of the payload.
    pub vlan_tags_restored: u64,
}

/// The receiving half of an AF_PACKET port: a TPACKET_V3 ring.
#[derive(Debug)]
pub struct AfPacketRx {
    // Field order: the mapping goes before the socket.
    ring: Ring,
    fd: OwnedFd,
    interface: String,
    block_size: usize,
    block_count: usize,
    vnet_header: bool,
    /// The next block to look at when `cursor` is empty.
    next_block: usize,
    cursor: Option<Cursor>,
    /// Blocks walked to their end since the last release, starting at `release_from`.
    walked: usize,
    release_from: usize,
    stats: QueueStats,
    offload: OffloadStats,
}

// SAFETY: the ring's memory is reachable only through this value (the raw pointer is not
// shared with any other value), so moving it to another thread moves its sole owner.
unsafe impl Send for AfPacketRx {}

impl AfPacketRx {
    /// Opens the receiving half on `config.interface`.
    pub fn open(config: &AfPacketConfig) -> io::Result<AfPacketRx> {
        let interface = config.interface.as_str();
        let page = 4096;
        let block_size = config.rx_block_size;
        if !block_size.is_power_of_two() || block_size < page || config.rx_block_count == 0 {
            return Err(invalid(format!(
                "RX ring: block size {block_size} must be a power of two of at least {page}, \
                 and blocks at least 1"
            )));
        }
        let block_count = config.rx_block_count;
        let (fd, ring) = receive_socket_with(config, |fd| {
            let sol = libc::SOL_PACKET;
            set_option(
                fd,
                sol,
                libc::PACKET_VERSION,
                &TPACKET_V3,
                "PACKET_VERSION",
                interface,
            )?;
            if config.vnet_header {
                let on: libc::c_int = 1;
                set_option(
                    fd,
                    sol,
                    libc::PACKET_VNET_HDR,
                    &on,
                    "PACKET_VNET_HDR",
                    interface,
                )?;
            }
            let frame_size: u32 = 2048; // only the ring's accounting unit in V3
            let request = libc::tpacket_req3 {
                tp_block_size: block_size,
                tp_block_nr: block_count,
                tp_frame_size: frame_size,
                tp_frame_nr: (block_size / frame_size) * block_count,
                tp_retire_blk_tov: config.rx_block_timeout_ms.max(1),
                tp_sizeof_priv: 0,
                tp_feature_req_word: 0,
            };
            set_option(
                fd,
                sol,
                libc::PACKET_RX_RING,
                &request,
                "PACKET_RX_RING",
                interface,
            )?;
            Ring::map(fd, block_size as usize * block_count as usize, interface)
        })?;
        let mut rx = AfPacketRx {
            ring,
            fd,
            interface: String::from(interface),
            block_size: block_size as usize,
            block_count: config.rx_block_count as usize,
            vnet_header: config.vnet_header,
            next_block: 0,
            cursor: None,
            walked: 0,
            release_from: 0,
            stats: QueueStats::default(),
            offload: OffloadStats::default(),
        };
        // Start the kernel's drop counter from here.
        rx.read_kernel_drops()?;
        rx.stats.dropped = 0;
        Ok(rx)
    }

    /// The interface's name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Offload counters: partial checksums, GSO super-frames, VLAN tags restored.
    pub fn offload_stats(&self) -> OffloadStats {
        self.offload
    }

    /// Adds the kernel's drops since the last read (`PACKET_STATISTICS` resets them).
    fn read_kernel_drops(&mut self) -> io::Result<()> {
        let mut counters = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = core::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `counters` and `len` are live and exclusively borrowed; the kernel writes at
        // most `len` bytes into `counters` and the length it wrote into `len`.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut counters as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(os_error("PACKET_STATISTICS", &self.interface));
        }
        self.stats.dropped += u64::from(counters.tp_drops);
        Ok(())
    }

    /// The offset of the frame at `offset` in the block at `block_base` if it is whole and
    /// inside the block, with its metadata, or `None` (counted as malformed).
    fn take_frame(
        &mut self,
        block_base: usize,
        offset: usize,
    ) -> Option<(usize, usize, FrameMeta)> {
        let header_len = core::mem::size_of::<libc::tpacket3_hdr>();
        if offset.checked_add(header_len)? > self.block_size {
            return None;
        }
        let at = block_base + offset;
        // SAFETY: the header lies inside the block (checked above), which the kernel handed
        // to us (TP_STATUS_USER) and does not write until we give it back.
        let header: libc::tpacket3_hdr =
            unsafe { core::ptr::read_unaligned(self.ring.base.add(at).cast()) };
        let mac = usize::from(header.tp_mac);
        let snaplen = header.tp_snaplen as usize;
        if mac < libc::TPACKET3_HDRLEN || offset + mac + snaplen > self.block_size {
            return None;
        }
        if header.tp_snaplen < header.tp_len {
            // Cut by the block size: forwarding the rest would be wrong.
            return None;
        }
        let mut meta = FrameMeta::default();
        if self.vnet_header {
            let mut vnet = [0u8; VNET_HEADER_LEN];
            // SAFETY: the kernel writes the virtio-net header right before the frame, after
            // the tpacket header and address (`mac >= TPACKET3_HDRLEN + VNET_HEADER_LEN`
            // whenever PACKET_VNET_HDR is on); checked to be inside the block.
            if mac < libc::TPACKET3_HDRLEN + VNET_HEADER_LEN {
                return None;
            }
            unsafe {
                core::ptr::copy_nonoverlapping(
                    self.ring.base.add(at + mac - VNET_HEADER_LEN),
                    vnet.as_mut_ptr(),
                    VNET_HEADER_LEN,
                );
            }
            meta = FrameMeta::from_vnet_header(&vnet).unwrap_or_default();
            if meta.partial_checksum.is_some() {
                self.offload.partial_checksums += 1;
            }
            if meta.gso.is_some() {
                self.offload.gso_frames += 1;
            }
        }
        let mut start = at + mac;
        let mut len = snaplen;
        if header.tp_status & libc::TP_STATUS_VLAN_VALID != 0 && snaplen >= 12 {
            // The kernel took the 802.1Q tag out (tp_vlan_tci); a trunk port needs it in the
            // frame. Four bytes before the frame are free (the tpacket header and address end
            // at TPACKET3_HDRLEN; with a vnet header we have read it already): move the MACs
            // there and write the tag after them.
            let tpid = if header.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                header.hv1.tp_vlan_tpid
            } else {
                ETH_P_8021Q
            };
            let tci = header.hv1.tp_vlan_tci as u16;
            if mac < libc::TPACKET3_HDRLEN + 4 {
                return None;
            }
            let mut tag = [0u8; 4];
            tag[..2].copy_from_slice(&tpid.to_be_bytes());
            tag[2..].copy_from_slice(&tci.to_be_bytes());
            // SAFETY: `start - 4 .. start + snaplen` lies inside this frame's slot in the
            // block (mac >= TPACKET3_HDRLEN + 4, checked above); nothing else refers to it.
            unsafe {
                core::ptr::copy(self.ring.base.add(start), self.ring.base.add(start - 4), 12);
                core::ptr::copy_nonoverlapping(tag.as_ptr(), self.ring.base.add(start + 8), 4);
            }
            start -= 4;
            len += 4;
            if let Some(partial) = meta.partial_checksum.as_mut() {
                partial.start = partial.start.saturating_add(4);
            }
            self.offload.vlan_tags_restored += 1;
        }
        Some((start, len, meta))
    }

    /// Lends up to `max` frames of the ring out into `frames`, handing each one's metadata
    /// to `meta_of` (`recv` drops it without collecting it anywhere: no allocation).
    fn take_frames<'a>(
        &'a mut self,
        frames: &mut Vec<&'a mut [u8]>,
        max: usize,
        mut meta_of: impl FnMut(FrameMeta),
    ) -> io::Result<usize> {
        let mut count = 0;
        while count < max {
            let block = self.next_block;
            let block_base = block * self.block_size;
            let mut cursor = match self.cursor {
                Some(cursor) => cursor,
                None => {
                    // SAFETY: block_base + 8 is inside the mapping (block < block_count) and
                    // 8-aligned (blocks are page-aligned).
                    let status = unsafe { self.ring.status(block_base + BLOCK_STATUS) };
                    if status.load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                        break;
                    }
                    // SAFETY: inside the block descriptor, which the kernel handed to us.
                    let (num_pkts, first) = unsafe {
                        (
                            self.ring.read_u32(block_base + BLOCK_NUM_PKTS),
                            self.ring.read_u32(block_base + BLOCK_OFFSET_TO_FIRST_PKT),
                        )
                    };
                    Cursor {
                        remaining: num_pkts,
                        offset: first as usize,
                    }
                }
            };
            while cursor.remaining > 0 && count < max {
                let Some((start, len, meta)) = self.take_frame(block_base, cursor.offset) else {
                    // A frame we cannot take: count it and leave the rest of the block (its
                    // offsets may be off as well).
                    self.stats.malformed += u64::from(cursor.remaining);
                    cursor.remaining = 0;
                    break;
                };
                // SAFETY: within the block's bounds (take_frame checked it); the header word
                // is read before the frame is lent out.
                let next = unsafe { self.ring.read_u32(block_base + cursor.offset) } as usize;
                // SAFETY: `start..start + len` is inside a block the kernel handed over and
                // will not touch until `release`, which takes `&mut self` and so ends the
                // borrow 'a first; frames in a block do not overlap, and each is lent once
                // (the cursor moves past it), so no two live slices alias.
                let frame =
                    unsafe { core::slice::from_raw_parts_mut(self.ring.base.add(start), len) };
                frames.push(frame);
                meta_of(meta);
                self.stats.frames += 1;
                self.stats.bytes += len as u64;
                count += 1;
                cursor.remaining -= 1;
                cursor.offset += next;
            }
            if cursor.remaining == 0 {
                self.cursor = None;
                self.walked += 1;
                self.next_block = (block + 1) % self.block_count;
                if self.walked == self.block_count {
                    break; // every block is ours until released
                }
            } else {
                self.cursor = Some(cursor);
            }
        }
        Ok(count)
    }
}

impl RxQueue for AfPacketRx {
    fn recv<'a>(&'a mut self, frames: &mut Vec<&'a mut [u8]>, max: usize) -> io::Result<usize> {
        // Metadata dropped: a caller of plain `recv` gets the frames as the kernel gave them.
        self.take_frames(frames, max, |_| {})
    }

    fn recv_with_meta<'a>(
        &'a mut self,
        frames: &mut Vec<&'a mut [u8]>,
        metas: &mut Vec<FrameMeta>,
        max: usize,
    ) -> io::Result<usize> {
        self.take_frames(frames, max, |meta| metas.push(meta))
    }

    fn release(&mut self) {
        for _ in 0..core::mem::take(&mut self.walked) {
            let block_base = self.release_from * self.block_size;
            // SAFETY: inside the mapping and aligned, as in `recv`; no frame of this block is
            // borrowed any more (`&mut self`).
            let status = unsafe { self.ring.status(block_base + BLOCK_STATUS) };
            status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.release_from = (self.release_from + 1) % self.block_count;
        }
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn stats(&mut self) -> QueueStats {
        // A failure leaves the drops as last read; the counters stay usable.
        let _ = self.read_kernel_drops();
        self.stats
    }
}

/// The transmitting half of an AF_PACKET port: a TPACKET_V2 ring.
#[derive(Debug)]
pub struct AfPacketTx {
    ring: Ring,
    fd: OwnedFd,
    interface: String,
    frame_size: usize,
    frame_count: usize,
    /// The longest frame the interface takes (MTU + Ethernet + one VLAN tag) or the slot
    /// holds, whichever is less.
    max_frame: usize,
    /// Bytes of virtio-net header in front of each frame (0 or 10).
    vnet_len: usize,
    /// A third socket, without a ring, for frames too large for a ring slot that the kernel
    /// is to segment (GSO super-frames): one `sendmsg` each, after the ring's frames.
    offload: Option<OwnedFd>,
    /// Datagrams being joined into one UDP GSO send (`tx_udp_gso`).
    udp_join: Option<UdpCoalescer>,
    head: usize,
    pending: usize,
    stats: QueueStats,
}

// SAFETY: as for AfPacketRx: the ring is reachable only through this value.
unsafe impl Send for AfPacketTx {}

impl AfPacketTx {
    /// Opens the transmitting half on `config.interface`.
    pub fn open(config: &AfPacketConfig) -> io::Result<AfPacketTx> {
        let interface = config.interface.as_str();
        if config.tx_udp_gso && !config.tx_vnet_header {
            return Err(invalid(String::from(
                "tx_udp_gso needs tx_vnet_header (the GSO type travels in it)",
            )));
        }
        let frame_size = config.tx_frame_size;
        if !frame_size.is_multiple_of(16) || (frame_size as usize) < TX_DATA_OFFSET + 64 {
            return Err(invalid(format!(
                "TX ring: frame size {frame_size} must be a multiple of 16 and hold a frame"
            )));
        }
        let block_size = (frame_size.max(4096)).next_power_of_two();
        let per_block = block_size / frame_size;
        let block_count = config.tx_frame_count.div_ceil(per_block).max(1);
        let frame_count = per_block * block_count;
        let (fd, ring) = transmit_socket_with(config, |fd| {
            let sol = libc::SOL_PACKET;
            set_option(
                fd,
                sol,
                libc::PACKET_VERSION,
                &TPACKET_V2,
                "PACKET_VERSION",
                interface,
            )?;
            let on: libc::c_int = 1;
            set_option(fd, sol, libc::PACKET_LOSS, &on, "PACKET_LOSS", interface)?;
            if config.tx_vnet_header {
                set_option(
                    fd,
                    sol,
                    libc::PACKET_VNET_HDR,
                    &on,
                    "PACKET_VNET_HDR",
                    interface,
                )?;
            }
            let request = libc::tpacket_req {
                tp_block_size: block_size,
                tp_block_nr: block_count,
                tp_frame_size: frame_size,
                tp_frame_nr: frame_count,
            };
            set_option(
                fd,
                sol,
                libc::PACKET_TX_RING,
                &request,
                "PACKET_TX_RING",
                interface,
            )?;
            let len = block_size as usize * block_count as usize;
            let ring = Ring::map(fd, len, interface)?;
            // Room in the socket buffer for a full ring of frames in flight.
            let sndbuf = libc::c_int::try_from(len).unwrap_or(libc::c_int::MAX);
            const SO_SNDBUFFORCE: libc::c_int = 32; // asm-generic/socket.h; not in libc for gnu
            let forced = set_option(
                fd,
                libc::SOL_SOCKET,
                SO_SNDBUFFORCE,
                &sndbuf,
                "SO_SNDBUFFORCE",
                interface,
            );
            if forced.is_err() {
                // Without CAP_NET_ADMIN: as much as net.core.wmem_max allows.
                let _ = set_option(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    &sndbuf,
                    "SO_SNDBUF",
                    interface,
                );
            }
            Ok(ring)
        })?;
        let mtu = interface_mtu(&fd, interface)?;
        let offload = if config.tx_vnet_header {
            let (fd, ()) = transmit_socket_with(config, |fd| {
                let on: libc::c_int = 1;
                let sol = libc::SOL_PACKET;
                set_option(
                    fd,
                    sol,
                    libc::PACKET_VNET_HDR,
                    &on,
                    "PACKET_VNET_HDR",
                    interface,
                )
            })?;
            Some(fd)
        } else {
            None
        };
        let vnet_len = if config.tx_vnet_header {
            VNET_HEADER_LEN
        } else {
            0
        };
        Ok(AfPacketTx {
            ring,
            fd,
            interface: String::from(interface),
            frame_size: frame_size as usize,
            frame_count: frame_count as usize,
            max_frame: (mtu + 14 + 4).min(frame_size as usize - TX_DATA_OFFSET - vnet_len),
            vnet_len,
            udp_join: (config.tx_udp_gso && offload.is_some()).then(UdpCoalescer::new),
            offload,
            head: 0,
            pending: 0,
            stats: QueueStats::default(),
        })
    }

    /// The interface's name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The longest frame [`TxQueue::send`] takes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.frame_count
    }

    /// Copies one frame into the next ring slot behind the virtio-net header `vnet` (unused
    /// without `tx_vnet_header`).
    fn send_with_vnet(
        &mut self,
        header: &[u8],
        payload: &[u8],
        vnet: &[u8; VNET_HEADER_LEN],
    ) -> io::Result<bool> {
        let len = header.len() + payload.len();
        if len > self.max_frame || len < 14 {
            self.stats.malformed += 1;
            return Ok(false);
        }
        let slot = self.head * self.frame_size;
        // SAFETY: the slot's first word (tp_status) is inside the mapping and 16-aligned.
        let status = unsafe { self.ring.status(slot) };
        let current = status.load(Ordering::Acquire);
        if current & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING) != 0 {
            self.stats.dropped += 1;
            return Ok(false);
        }
        let vnet = vnet.get(..self.vnet_len).unwrap_or(&[]);
        // SAFETY: the slot is ours (status AVAILABLE, or WRONG_FORMAT which the kernel no
        // longer touches); `TX_DATA_OFFSET + vnet_len + len <= frame_size` (max_frame), so the
        // copies stay inside it; the sources are distinct from the mapping.
        unsafe {
            let data = self.ring.base.add(slot + TX_DATA_OFFSET);
            core::ptr::copy_nonoverlapping(vnet.as_ptr(), data, vnet.len());
            let data = data.add(vnet.len());
            core::ptr::copy_nonoverlapping(header.as_ptr(), data, header.len());
            core::ptr::copy_nonoverlapping(payload.as_ptr(), data.add(header.len()), payload.len());
            let hdr = self.ring.base.add(slot).cast::<libc::tpacket2_hdr>();
            let tp_len = (vnet.len() + len) as u32;
            core::ptr::addr_of_mut!((*hdr).tp_len).write(tp_len);
            core::ptr::addr_of_mut!((*hdr).tp_snaplen).write(tp_len);
        }
        // The release store publishes the bytes above to the kernel with the status.
        status.store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.head = (self.head + 1) % self.frame_count;
        self.pending += 1;
        self.stats.frames += 1;
        self.stats.bytes += len as u64;
        Ok(true)
    }
}

impl AfPacketTx {
    /// Sends the ring's queued frames (`sendto` without data).
    fn flush_ring(&mut self) -> io::Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        // SAFETY: sendto(2) with no buffer and no address: the kernel sends the ring's
        // SEND_REQUEST slots (tpacket_snd) and touches no memory of ours besides the ring.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                core::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                core::ptr::null(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // Socket buffer full: the slots stay queued for the next flush.
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => Err(io::ErrorKind::WouldBlock.into()),
                _ => Err(io::Error::new(
                    e.kind(),
                    format!("AF_PACKET send on {}: {e}", self.interface),
                )),
            };
        }
        self.pending = 0;
        Ok(())
    }

    /// Sends one frame the kernel is to segment (or that is too large for a ring slot)
    /// through the offload socket, after the ring's queued frames; `datagrams` is how many
    /// frames it stands for, in the counters.
    fn send_gso(
        &mut self,
        header: &[u8],
        payload: &[u8],
        meta: &FrameMeta,
        datagrams: u64,
    ) -> io::Result<bool> {
        let len = header.len() + payload.len();
        let Some(offload) = self.offload.as_ref().map(|fd| fd.as_raw_fd()) else {
            self.stats.malformed += datagrams;
            return Ok(false);
        };
        // Frames queued in the ring go first, so that a flow keeps its order.
        match self.flush_ring() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let vnet = meta.to_vnet_header(len);
        let mut parts = [
            libc::iovec {
                iov_base: vnet.as_ptr() as *mut libc::c_void,
                iov_len: vnet.len(),
            },
            libc::iovec {
                iov_base: header.as_ptr() as *mut libc::c_void,
                iov_len: header.len(),
            },
            libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            },
        ];
        // SAFETY: msghdr is plain old data; all zeroes is a valid value.
        let mut message: libc::msghdr = unsafe { core::mem::zeroed() };
        message.msg_iov = parts.as_mut_ptr();
        message.msg_iovlen = parts.len() as _;
        // SAFETY: the message's three iovecs point to live buffers of the given lengths,
        // which the kernel only reads (sendmsg).
        let r = unsafe { libc::sendmsg(offload, &message, libc::MSG_DONTWAIT) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    self.stats.dropped += datagrams;
                    Ok(false)
                }
                Some(libc::EINVAL) | Some(libc::EMSGSIZE) => {
                    // Offsets or sizes the kernel refuses.
                    self.stats.malformed += datagrams;
                    Ok(false)
                }
                _ => Err(io::Error::new(
                    e.kind(),
                    format!("AF_PACKET offloaded send on {}: {e}", self.interface),
                )),
            };
        }
        self.stats.frames += datagrams;
        self.stats.bytes += len as u64;
        Ok(true)
    }

    /// Sends the datagrams being joined (`tx_udp_gso`): one alone through the ring, several
    /// as one UDP GSO super-frame.
    fn send_joined(&mut self) -> io::Result<()> {
        let Some(mut join) = self.udp_join.take() else {
            return Ok(());
        };
        let result = match join.finish() {
            None => Ok(()),
            Some(Coalesced { frame, gso: None }) => {
                let vnet = FrameMeta::default().to_vnet_header(frame.len());
                self.send_with_vnet(frame, &[], &vnet).map(drop)
            }
            Some(Coalesced {
                frame,
                gso: Some(gso),
            }) => {
                let meta = FrameMeta::from(gso);
                self.send_gso(frame, &[], &meta, u64::from(gso.segments))
                    .map(drop)
            }
        };
        self.udp_join = Some(join);
        result
    }
}

impl TxQueue for AfPacketTx {
    fn send(&mut self, header: &[u8], payload: &[u8]) -> io::Result<bool> {
        if self.udp_join.is_some() {
            if self
                .udp_join
                .as_mut()
                .is_some_and(|j| j.merge([header, payload]))
            {
                return Ok(true);
            }
            self.send_joined()?;
            if self
                .udp_join
                .as_mut()
                .is_some_and(|j| j.start([header, payload]))
            {
                return Ok(true);
            }
        }
        // No offload asked: flags 0, GSO none, and `hdr_len` the whole frame, which the kernel
        // copies into the socket buffer's linear part (no ring page attached to it).
        let vnet = FrameMeta::default().to_vnet_header(header.len() + payload.len());
        self.send_with_vnet(header, payload, &vnet)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_joined()?;
        self.flush_ring()
    }

    fn accepts_offloads(&self) -> bool {
        self.offload.is_some()
    }

    fn send_offloaded(
        &mut self,
        header: &[u8],
        payload: &[u8],
        meta: &FrameMeta,
    ) -> io::Result<bool> {
        if meta.is_plain() {
            return self.send(header, payload);
        }
        // Datagrams being joined came first.
        self.send_joined()?;
        if self.vnet_len == 0 {
            // No header to carry the offload: refused rather than sent with a partial
            // checksum.
            self.stats.malformed += 1;
            return Ok(false);
        }
        let len = header.len() + payload.len();
        if meta.gso.is_none() && len <= self.max_frame {
            // A partial checksum only: through the ring like any frame, with the header
            // asking the kernel to finish it.
            return self.send_with_vnet(header, payload, &meta.to_vnet_header(len));
        }
        self.send_gso(header, payload, meta, 1)
    }

    fn stats(&mut self) -> QueueStats {
        self.stats
    }
}
