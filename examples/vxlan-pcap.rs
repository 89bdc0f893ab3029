//! `vxlan-pcap`: VXLAN encapsulation and decapsulation of packet captures, through switchyard's
//! own tunnel code ([`switchyard::tunnel::decap`] and [`EncapTemplate::encap`]).
//!
//! Until the switch exists this is the project's main tool: it shows on real captures what
//! the core accepts, what it refuses and why, and it writes captures that Wireshark can check
//! independently.
//!
//! # Subcommands
//!
//! `decap IN OUT`: takes the outer Ethernet/IP/UDP/VXLAN headers off every frame of `IN`
//! (classic pcap or pcapng, Ethernet link type) and writes the inner frames to `OUT` (classic
//! pcap, Ethernet, the original timestamps). It prints how many frames were decapsulated, the
//! count per VNI, and the count per [`DropReason`] of the frames refused. Frames cut short by
//! the capture's snap length are decapsulated if what was kept is whole, else counted.
//!
//! ```text
//! # An AWS VPC Traffic Mirroring session arrives as VXLAN on port 4789:
//! cargo run --example vxlan-pcap -- decap mirror.pcapng inner.pcap
//! # Linux's legacy port, refusing reserved bits as Linux does:
//! cargo run --example vxlan-pcap -- decap --port 8472 --strict in.pcap out.pcap
//! ```
//!
//! `encap IN OUT --vni N --local IP --remote IP`: wraps every Ethernet frame of `IN` in outer
//! headers towards the remote VTEP (IPv6 outer headers when the addresses are IPv6) and writes
//! the outer frames to `OUT`. Frames the tunnel refuses (too big for `--mtu`, VLAN-tagged
//! without `--carry-vlan`, cut short by the capture) are counted per reason; for frames too big,
//! `--icmp-out FILE` receives the ICMP "fragmentation needed" / "packet too big" replies that
//! the tunnel would send back to the inner sender.
//!
//! ```text
//! cargo run --example vxlan-pcap -- encap inner.pcap vxlan.pcap \
//!     --vni 42 --local 198.18.0.1 --remote 198.18.0.2 --udp-checksum --icmp-out icmp.pcap
//! cargo run --example vxlan-pcap -- encap inner.pcap vxlan6.pcap \
//!     --vni 42 --local 2001:db8::1 --remote 2001:db8::2 --ttl inherit --mtu 9000
//! ```
//!
//! `demo DIR`: builds its own inner capture (ARP, ICMP echo, a TCP SYN with ECT(0), UDP over
//! IPv6, an 802.1Q-tagged frame and one IPv4 frame too big for the tunnel, all on documentation
//! and benchmarking addresses), encapsulates it over IPv4 and IPv6, decapsulates the result
//! and checks that every frame came back byte for byte. It writes `inner.pcap`,
//! `vxlan-ipv4.pcap`, `vxlan-ipv6.pcap`, `decap-ipv4.pcap`, `decap-ipv6.pcap` and
//! `icmp-too-big.pcap`, to be opened in Wireshark:
//!
//! ```text
//! cargo run --example vxlan-pcap -- demo /tmp/vxlan-demo
//! tshark -r /tmp/vxlan-demo/vxlan-ipv4.pcap -o udp.check_checksum:TRUE -T fields -e vxlan.vni
//! ```
//!
//! Exit status: 0 on success, 1 on an error (a file that cannot be read or written, a bad
//! configuration, a demo round trip that does not match), 2 on a usage error.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Display;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};
use switchyard::tunnel::{
    decap, DecapConfig, DfPolicy, EncapConfig, EncapTemplate, IpIdent, PortRange, TosPolicy,
    TtlPolicy, Underlay, OUTER_HEADER_LEN_IPV6, TOO_BIG_REPLY_MAX_LEN,
};
use switchyard::wire::{
    ethertype, vlan, ArpOperation, ArpPacket, ArpRepr, ChecksumCapabilities, EthernetAddress,
    EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    UdpPacket, UdpRepr, ETHERNET_HEADER_LEN,
};
use switchyard::{DropCounters, DropReason, Vni};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Headroom in front of each inner frame: enough for either underlay's outer headers.
const HEADROOM: usize = OUTER_HEADER_LEN_IPV6;

/// The snap length written into output headers: tcpdump's largest (`MAXIMUM_SNAPLEN`), so that
/// a decapsulated GSO super-packet (up to 64 KiB of inner frame) still fits.
const OUTPUT_SNAPLEN: u32 = 262_144;

// ---------------------------------------------------------------------------------------------
// Command line

/// VXLAN (RFC 7348) encapsulation and decapsulation of pcap/pcapng captures, using
/// switchyard's tunnel code.
#[derive(Debug, Parser)]
#[command(name = "vxlan-pcap", version, about, long_about = None)]
#[command(after_help = "Examples:\n  \
    vxlan-pcap decap mirror.pcapng inner.pcap\n  \
    vxlan-pcap encap inner.pcap vxlan.pcap --vni 42 --local 198.18.0.1 --remote 198.18.0.2\n  \
    vxlan-pcap demo /tmp/vxlan-demo")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decapsulate every VXLAN frame of a capture and write the inner Ethernet frames.
    ///
    /// Reads classic pcap or pcapng (Ethernet link type only), writes classic pcap with the
    /// original timestamps. Prints the frames decapsulated, the count per VNI and the count
    /// per drop reason of the frames refused.
    Decap(DecapArgs),
    /// Encapsulate every Ethernet frame of a capture in VXLAN towards one remote VTEP.
    ///
    /// IPv4 or IPv6 outer headers, following the family of --local and --remote. Frames the
    /// tunnel refuses are counted per drop reason.
    Encap(EncapArgs),
    /// Build a small inner capture, encapsulate it over IPv4 and IPv6, decapsulate it back
    /// and check the round trip; writes six pcap files into DIR.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct DecapArgs {
    /// Capture to read: classic pcap or pcapng, Ethernet link type.
    input: PathBuf,
    /// Capture to write the inner frames to (classic pcap, Ethernet).
    output: PathBuf,
    /// UDP destination port VXLAN arrives on (8472 for Linux's legacy default).
    #[arg(long, default_value_t = switchyard::wire::vxlan::PORT)]
    port: u16,
    /// Drop frames with reserved VXLAN bits set, as Linux does (RFC 7348 says ignore them).
    #[arg(long)]
    strict: bool,
    /// Read VXLAN Group Based Policy fields (draft-smith-vxlan-group-policy) when the G flag
    /// is set.
    #[arg(long)]
    gbp: bool,
    /// Accept frames whose non-zero outer UDP checksum does not verify (captures taken on the
    /// sending host with checksum offload hold partial checksums).
    #[arg(long)]
    no_verify_checksum: bool,
    /// Deliver inner frames carrying an 802.1Q/802.1ad tag (dropped by default, RFC 7348
    /// section 6.1).
    #[arg(long)]
    carry_vlan: bool,
}

#[derive(Debug, Args)]
struct EncapArgs {
    /// Capture of inner Ethernet frames: classic pcap or pcapng, Ethernet link type.
    input: PathBuf,
    /// Capture to write the outer (encapsulated) frames to (classic pcap, Ethernet).
    output: PathBuf,
    /// VXLAN network identifier, 0..=16777215.
    #[arg(long, value_parser = parse_vni)]
    vni: Vni,
    /// Our VTEP address, the outer source (IPv4 or IPv6, the same family as --remote).
    #[arg(long)]
    local: IpAddr,
    /// The remote VTEP address, the outer destination.
    #[arg(long)]
    remote: IpAddr,
    /// Outer source MAC address.
    #[arg(long, value_parser = parse_mac, default_value = "02:00:00:00:00:01")]
    local_mac: EthernetAddress,
    /// Outer destination MAC address (the next hop towards the remote VTEP).
    #[arg(long, value_parser = parse_mac, default_value = "02:00:00:00:00:02")]
    remote_mac: EthernetAddress,
    /// UDP destination port (8472 for Linux's legacy default).
    #[arg(long, default_value_t = switchyard::wire::vxlan::PORT)]
    port: u16,
    /// Compute the outer UDP checksum over IPv4 (over IPv6 it is always computed).
    #[arg(long)]
    udp_checksum: bool,
    /// Outer TTL / hop limit: 1..=255, or `inherit` to copy the inner packet's (64 for ARP).
    #[arg(long, value_parser = parse_ttl, default_value = "64")]
    ttl: TtlPolicy,
    /// Outer TOS / traffic class without ECN bits (DSCP << 2; decimal or 0x hex), or
    /// `inherit` for the inner DSCP. ECN is always copied from the inner packet (RFC 6040).
    #[arg(long, value_parser = parse_tos, default_value = "0")]
    tos: TosPolicy,
    /// Outer IPv4 Don't Fragment bit.
    #[arg(long, value_enum, default_value_t = DfArg::Set)]
    df: DfArg,
    /// Underlay MTU: the largest outer IP packet. Larger frames are refused (mtu_exceeded);
    /// captures taken with GRO/TSO hold frames larger than 1500, raise it for those.
    #[arg(long, default_value_t = 1500)]
    mtu: u16,
    /// Encapsulate frames carrying an 802.1Q/802.1ad tag (refused by default, RFC 7348
    /// section 6.1).
    #[arg(long)]
    carry_vlan: bool,
    /// Range of outer UDP source ports the inner flow hash is spread over, FIRST-LAST
    /// [default: 49152-65535, RFC 7348]. Linux uses 32768-60999.
    #[arg(long, value_parser = parse_port_range, value_name = "FIRST-LAST")]
    source_ports: Option<PortRange>,
    /// Write the ICMP errors the tunnel sends back for frames too big for the MTU to this
    /// capture (classic pcap, Ethernet).
    #[arg(long, value_name = "FILE")]
    icmp_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Directory to write the captures into (created if missing).
    dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DfArg {
    /// Always set (VXLAN must not be fragmented).
    Set,
    /// Never set (Linux's default).
    Unset,
    /// Copied from an inner IPv4 header; set for inner IPv6; clear for anything else.
    Inherit,
}

impl From<DfArg> for DfPolicy {
    fn from(df: DfArg) -> DfPolicy {
        match df {
            DfArg::Set => DfPolicy::Set,
            DfArg::Unset => DfPolicy::Unset,
            DfArg::Inherit => DfPolicy::Inherit,
        }
    }
}

fn parse_vni(text: &str) -> Result<Vni, String> {
    let value: u32 = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number: {e}"))?;
    Vni::new(value).map_err(|e| e.to_string())
}

fn parse_mac(text: &str) -> Result<EthernetAddress, String> {
    let mut octets = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for octet in &mut octets {
        let part = parts.next().unwrap_or("");
        if part.is_empty() || part.len() > 2 {
            return Err(format!(
                "{text:?} is not a MAC address like 02:00:00:00:00:01"
            ));
        }
        *octet = u8::from_str_radix(part, 16)
            .map_err(|_| format!("{text:?} is not a MAC address like 02:00:00:00:00:01"))?;
    }
    if parts.next().is_some() {
        return Err(format!("{text:?} has more than six octets"));
    }
    Ok(EthernetAddress(octets))
}

fn parse_number_u8(text: &str) -> Result<u8, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("{text:?} is not a number from 0 to 255: {e}"))
}

fn parse_ttl(text: &str) -> Result<TtlPolicy, String> {
    if text.eq_ignore_ascii_case("inherit") {
        Ok(TtlPolicy::Inherit)
    } else {
        parse_number_u8(text).map(TtlPolicy::Fixed)
    }
}

fn parse_tos(text: &str) -> Result<TosPolicy, String> {
    if text.eq_ignore_ascii_case("inherit") {
        Ok(TosPolicy::Inherit)
    } else {
        parse_number_u8(text).map(TosPolicy::Fixed)
    }
}

fn parse_port_range(text: &str) -> Result<PortRange, String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a range like 49152-65535"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|e| format!("{p:?} in {text:?} is not a port: {e}"))
    };
    PortRange::new(port(first)?, port(last)?).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The report is gathered and printed at the end, so that a reader that goes away early
    // (`vxlan-pcap demo DIR | head`) cannot stop the work half-way.
    let mut report = Vec::new();
    let outcome = match cli.command {
        Command::Decap(args) => run_decap(&mut report, &args),
        Command::Encap(args) => run_encap(&mut report, &args),
        Command::Demo(args) => run_demo(&mut report, &args.dir),
    };
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_all(&report).and_then(|()| stdout.flush()) {
        if e.kind() != ErrorKind::BrokenPipe {
            eprintln!("vxlan-pcap: error: cannot print the report: {e}");
            return ExitCode::FAILURE;
        }
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vxlan-pcap: error: {error}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Adds what was being done (and to which file) to an error.
trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| format!("{}: {e}", what()).into())
    }
}

/// pcap-file's `Display` for I/O errors hides the I/O error itself; show it.
fn describe(error: &PcapError) -> String {
    match error {
        PcapError::IoError(io) if io.kind() == ErrorKind::UnexpectedEof => {
            "the file ends in the middle of a header or packet".to_string()
        }
        PcapError::IoError(io) => io.to_string(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading captures

/// One frame read from a capture.
#[derive(Debug, Clone, Copy)]
struct Frame<'a> {
    /// When it was captured, since the Unix epoch.
    timestamp: Duration,
    /// Its length on the wire.
    original_len: usize,
    /// The bytes the capture kept: fewer than `original_len` when the snap length cut it.
    data: &'a [u8],
}

impl Frame<'_> {
    fn is_truncated(&self) -> bool {
        self.data.len() < self.original_len
    }
}

/// A pcapng interface: its link type and how to read its timestamps.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: DataLink,
    /// `if_tsresol` (RFC draft-ietf-opsawg-pcapng section 4.2): 10^-n seconds, or 2^-n with
    /// the high bit set; 6 (microseconds) when absent.
    tsresol: u8,
    /// `if_tsoffset`: seconds to add.
    tsoffset: u64,
}

enum Reader {
    Pcap(PcapReader<BufReader<File>>),
    PcapNg {
        reader: PcapNgReader<BufReader<File>>,
        interfaces: Vec<Interface>,
    },
}

/// An input capture, classic pcap or pcapng, told apart by its magic number.
struct Capture {
    path: PathBuf,
    reader: Reader,
    /// The resolution to write derived captures with: the input's for classic pcap,
    /// nanoseconds for pcapng (whose interfaces may each have their own).
    ts_resolution: TsResolution,
}

const PCAPNG_MAGIC: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];
const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xA1, 0xB2, 0xC3, 0xD4], // microseconds, big endian
    [0xD4, 0xC3, 0xB2, 0xA1], // microseconds, little endian
    [0xA1, 0xB2, 0x3C, 0x4D], // nanoseconds, big endian
    [0x4D, 0x3C, 0xB2, 0xA1], // nanoseconds, little endian
];

/// Refuses link types other than Ethernet, naming the one found.
fn check_linktype(linktype: DataLink) -> std::result::Result<(), String> {
    if linktype == DataLink::ETHERNET {
        return Ok(());
    }
    let hint = match linktype {
        DataLink::LINUX_SLL | DataLink::LINUX_SLL2 => {
            " (a Linux \"cooked\" capture, as `tcpdump -i any` makes: capture on one interface instead)"
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => {
            " (raw IP without Ethernet headers: VXLAN needs the outer Ethernet header)"
        }
        _ => "",
    };
    Err(format!(
        "link type {} ({linktype:?}) is not supported{hint}; vxlan-pcap reads Ethernet captures (link type 1, EN10MB) only",
        u32::from(linktype),
    ))
}

/// A pcapng timestamp in `tsresol` units, as a duration since the epoch.
fn pcapng_timestamp(raw: u64, interface: &Interface) -> Duration {
    const NANOS_PER_SECOND: u128 = 1_000_000_000;
    let raw = u128::from(raw);
    let nanos = if interface.tsresol & 0x80 == 0 {
        let exponent = u32::from(interface.tsresol);
        if exponent <= 9 {
            raw * 10u128.pow(9 - exponent)
        } else {
            10u128
                .checked_pow(exponent - 9)
                .map_or(0, |divisor| raw / divisor)
        }
    } else {
        (raw * NANOS_PER_SECOND) >> u32::from(interface.tsresol & 0x7F)
    };
    let seconds = u64::try_from(nanos / NANOS_PER_SECOND).unwrap_or(u64::MAX);
    let subsec = (nanos % NANOS_PER_SECOND) as u32; // < 10^9
    Duration::new(seconds, subsec).saturating_add(Duration::from_secs(interface.tsoffset))
}

impl Capture {
    fn open(path: &Path) -> Result<Capture> {
        let file = File::open(path).context(|| format!("cannot open {}", path.display()))?;
        let mut buffered = BufReader::new(file);
        let head = buffered
            .fill_buf()
            .context(|| format!("cannot read {}", path.display()))?;
        let magic: [u8; 4] = match head.get(..4) {
            Some(&[a, b, c, d]) => [a, b, c, d],
            _ => {
                return Err(format!(
                    "{}: too short to be a pcap or pcapng capture",
                    path.display()
                )
                .into())
            }
        };
        if magic == PCAPNG_MAGIC {
            let reader = PcapNgReader::new(buffered).map_err(|e| {
                format!(
                    "{}: not a valid pcapng capture: {}",
                    path.display(),
                    describe(&e)
                )
            })?;
            Ok(Capture {
                path: path.to_path_buf(),
                reader: Reader::PcapNg {
                    reader,
                    interfaces: Vec::new(),
                },
                ts_resolution: TsResolution::NanoSecond,
            })
        } else if PCAP_MAGICS.contains(&magic) {
            let reader = PcapReader::new(buffered).map_err(|e| {
                format!(
                    "{}: not a valid pcap capture: {}",
                    path.display(),
                    describe(&e)
                )
            })?;
            let header = reader.header();
            check_linktype(header.datalink).context(|| path.display().to_string())?;
            Ok(Capture {
                path: path.to_path_buf(),
                reader: Reader::Pcap(reader),
                ts_resolution: header.ts_resolution,
            })
        } else {
            Err(format!(
                "{}: not a pcap or pcapng capture (magic number {:02x}{:02x}{:02x}{:02x})",
                path.display(),
                magic[0],
                magic[1],
                magic[2],
                magic[3]
            )
            .into())
        }
    }

    /// Calls `each` for every frame, in file order; returns how many there were. A file that
    /// ends in the middle of a frame (a capture cut off while being written) is read up to
    /// there, with a warning.
    fn for_each_frame(&mut self, mut each: impl FnMut(Frame<'_>) -> Result<()>) -> Result<u64> {
        let path = self.path.clone();
        let mut count = 0u64;
        let cut_off = |count: u64, e: &PcapError| {
            eprintln!(
                "vxlan-pcap: warning: {}: {} after frame {count}; using the frames before it",
                path.display(),
                describe(e)
            );
        };
        match &mut self.reader {
            Reader::Pcap(reader) => {
                let nanoseconds = reader.header().ts_resolution == TsResolution::NanoSecond;
                while let Some(next) = reader.next_raw_packet() {
                    // Raw packets: pcap-file's checked `PcapPacket` refuses an original length
                    // above the snap length, which is exactly what a cut capture holds.
                    let raw = match next {
                        Ok(raw) => raw,
                        Err(PcapError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                            cut_off(count, &PcapError::IoError(e));
                            break;
                        }
                        Err(e) => {
                            return Err(format!(
                                "{}: frame {}: {}",
                                path.display(),
                                count + 1,
                                describe(&e)
                            )
                            .into())
                        }
                    };
                    let fraction = if nanoseconds {
                        Duration::from_nanos(u64::from(raw.ts_frac))
                    } else {
                        Duration::from_micros(u64::from(raw.ts_frac))
                    };
                    count += 1;
                    each(Frame {
                        timestamp: Duration::from_secs(u64::from(raw.ts_sec)) + fraction,
                        original_len: raw.orig_len as usize,
                        data: &raw.data,
                    })?;
                }
            }
            Reader::PcapNg { reader, interfaces } => {
                while let Some(next) = reader.next_block() {
                    let block = match next {
                        Ok(block) => block,
                        Err(PcapError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                            cut_off(count, &PcapError::IoError(e));
                            break;
                        }
                        Err(e) => {
                            return Err(format!(
                                "{}: after frame {count}: {}",
                                path.display(),
                                describe(&e)
                            )
                            .into())
                        }
                    };
                    // (interface id, raw timestamp, original length, data)
                    let (interface_id, raw_timestamp, original_len, data) = match &block {
                        Block::SectionHeader(_) => {
                            interfaces.clear(); // Interface ids restart in each section.
                            continue;
                        }
                        Block::InterfaceDescription(description) => {
                            let mut interface = Interface {
                                linktype: description.linktype,
                                tsresol: 6,
                                tsoffset: 0,
                            };
                            for option in &description.options {
                                match option {
                                    InterfaceDescriptionOption::IfTsResol(r) => {
                                        interface.tsresol = *r
                                    }
                                    InterfaceDescriptionOption::IfTsOffset(o) => {
                                        interface.tsoffset = *o
                                    }
                                    _ => {}
                                }
                            }
                            interfaces.push(interface);
                            continue;
                        }
                        // pcap-file 2 stores the raw timestamp units as nanoseconds, whatever
                        // the interface's resolution: take them back out and scale them.
                        Block::EnhancedPacket(packet) => (
                            packet.interface_id as usize,
                            u64::try_from(packet.timestamp.as_nanos()).unwrap_or(u64::MAX),
                            packet.original_len,
                            &packet.data,
                        ),
                        Block::Packet(packet) => (
                            usize::from(packet.interface_id),
                            packet.timestamp,
                            packet.original_len,
                            &packet.data,
                        ),
                        // No timestamp; always interface 0.
                        Block::SimplePacket(packet) => (0, 0, packet.original_len, &packet.data),
                        _ => continue,
                    };
                    let Some(interface) = interfaces.get(interface_id) else {
                        return Err(format!(
                            "{}: frame {} refers to interface {interface_id}, which no interface description block declared",
                            path.display(),
                            count + 1
                        )
                        .into());
                    };
                    check_linktype(interface.linktype).context(|| {
                        format!(
                            "{}: frame {} (interface {interface_id})",
                            path.display(),
                            count + 1
                        )
                    })?;
                    count += 1;
                    each(Frame {
                        timestamp: pcapng_timestamp(raw_timestamp, interface),
                        original_len: original_len as usize,
                        data,
                    })?;
                }
            }
        }
        Ok(count)
    }

    /// Every frame's timestamp and bytes.
    fn read_all(path: &Path) -> Result<Vec<(Duration, Vec<u8>)>> {
        let mut frames = Vec::new();
        Capture::open(path)?.for_each_frame(|frame| {
            frames.push((frame.timestamp, frame.data.to_vec()));
            Ok(())
        })?;
        Ok(frames)
    }
}

// ---------------------------------------------------------------------------------------------
// Writing captures

/// An output capture: classic pcap, Ethernet, little endian.
struct CaptureWriter {
    path: PathBuf,
    writer: PcapWriter<BufWriter<File>>,
    frames: u64,
}

impl CaptureWriter {
    fn create(path: &Path, ts_resolution: TsResolution) -> Result<CaptureWriter> {
        let file = File::create(path).context(|| format!("cannot create {}", path.display()))?;
        let header = PcapHeader {
            snaplen: OUTPUT_SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution,
            endianness: Endianness::Little,
            ..PcapHeader::default()
        };
        let writer = PcapWriter::with_header(BufWriter::new(file), header)
            .map_err(|e| format!("cannot write {}: {}", path.display(), describe(&e)))?;
        Ok(CaptureWriter {
            path: path.to_path_buf(),
            writer,
            frames: 0,
        })
    }

    fn write(&mut self, timestamp: Duration, data: &[u8]) -> Result<()> {
        let original_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.writer
            .write_packet(&PcapPacket::new(timestamp, original_len, data))
            .map_err(|e| format!("cannot write {}: {}", self.path.display(), describe(&e)))?;
        self.frames += 1;
        Ok(())
    }

    /// Flushes the file; returns how many frames it holds.
    fn finish(self) -> Result<u64> {
        let path = self.path;
        self.writer
            .into_writer()
            .flush()
            .context(|| format!("cannot write {}", path.display()))?;
        Ok(self.frames)
    }
}

// ---------------------------------------------------------------------------------------------
// The two code paths: decapsulation and encapsulation of a whole capture

/// What decapsulating a capture did.
#[derive(Debug, Default)]
struct DecapReport {
    frames: u64,
    decapsulated: u64,
    /// Frames the capture's snap length cut short.
    truncated_by_capture: u64,
    /// Of those, how many could still be decapsulated (the cut only took padding).
    truncated_but_decapsulated: u64,
    with_gbp: u64,
    per_vni: BTreeMap<Vni, u64>,
    drops: DropCounters,
}

/// Decapsulates every frame of `capture` into `out`.
fn decap_frames(
    capture: &mut Capture,
    out: &mut CaptureWriter,
    config: &DecapConfig,
) -> Result<DecapReport> {
    let mut report = DecapReport::default();
    let mut buf = Vec::new();
    report.frames = capture.for_each_frame(|frame| {
        if frame.is_truncated() {
            report.truncated_by_capture += 1;
        }
        // `decap` rewrites the inner ECN field in place (RFC 6040): work on a copy.
        buf.clear();
        buf.extend_from_slice(frame.data);
        match decap(config, &mut buf) {
            Ok(decapsulated) => {
                report.decapsulated += 1;
                if frame.is_truncated() {
                    report.truncated_but_decapsulated += 1;
                }
                if decapsulated.gbp.is_some() {
                    report.with_gbp += 1;
                }
                *report.per_vni.entry(decapsulated.vni).or_default() += 1;
                out.write(frame.timestamp, decapsulated.inner_frame(&buf))?;
            }
            Err(reason) => report.drops.record(reason),
        }
        Ok(())
    })?;
    Ok(report)
}

/// What encapsulating a capture did.
#[derive(Debug, Default)]
struct EncapReport {
    frames: u64,
    encapsulated: u64,
    drops: DropCounters,
    /// ICMP errors built for frames too big for the MTU.
    too_big_replies: u64,
    /// Frames too big for which no ICMP error may be sent (IPv4 without DF, non-IP, ...).
    too_big_silent: u64,
}

/// Encapsulates every frame of `capture` into `out`; the ICMP replies to frames too big go to
/// `icmp_out` when there is one (they are counted either way).
fn encap_frames(
    capture: &mut Capture,
    out: &mut CaptureWriter,
    mut icmp_out: Option<&mut CaptureWriter>,
    template: &EncapTemplate,
) -> Result<EncapReport> {
    let mut report = EncapReport::default();
    let mut ident = IpIdent::new(1);
    let mut buf = Vec::new();
    let mut reply = [0u8; TOO_BIG_REPLY_MAX_LEN];
    report.frames = capture.for_each_frame(|frame| {
        if frame.is_truncated() {
            // Encapsulating what the capture kept would send a frame that never existed.
            report.drops.record(DropReason::InnerTruncated);
            return Ok(());
        }
        buf.clear();
        buf.resize(HEADROOM, 0);
        buf.extend_from_slice(frame.data);
        let inner = HEADROOM..buf.len();
        match template.encap(&mut buf, inner, &mut ident) {
            Ok(outer) => {
                let outer_frame = buf
                    .get(outer)
                    .ok_or("EncapTemplate::encap returned a range outside the buffer")?;
                out.write(frame.timestamp, outer_frame)?;
                report.encapsulated += 1;
            }
            Err(reason) => {
                report.drops.record(reason);
                if reason == DropReason::MtuExceeded {
                    match template
                        .too_big_reply(frame.data, &mut reply)
                        .and_then(|len| reply.get(..len))
                    {
                        Some(icmp) => {
                            report.too_big_replies += 1;
                            if let Some(icmp_out) = icmp_out.as_deref_mut() {
                                icmp_out.write(frame.timestamp, icmp)?;
                            }
                        }
                        None => report.too_big_silent += 1,
                    }
                }
            }
        }
        Ok(())
    })?;
    Ok(report)
}

fn print_drops(out: &mut dyn Write, drops: &DropCounters) -> io::Result<()> {
    writeln!(out, "  dropped             {}", drops.total())?;
    for (reason, count) in drops.nonzero() {
        writeln!(out, "    {:<24} {count}", reason.as_str())?;
    }
    Ok(())
}

fn print_decap_report(out: &mut dyn Write, report: &DecapReport) -> io::Result<()> {
    writeln!(out, "  frames read         {}", report.frames)?;
    writeln!(out, "  decapsulated        {}", report.decapsulated)?;
    for (vni, count) in &report.per_vni {
        writeln!(out, "    vni {:<20} {count}", vni.get())?;
    }
    if report.with_gbp > 0 {
        writeln!(out, "  with GBP header     {}", report.with_gbp)?;
    }
    print_drops(out, &report.drops)?;
    if report.truncated_by_capture > 0 {
        writeln!(
            out,
            "  cut by snap length  {} ({} of them still whole enough to decapsulate)",
            report.truncated_by_capture, report.truncated_but_decapsulated
        )?;
    }
    Ok(())
}

fn print_encap_report(
    out: &mut dyn Write,
    report: &EncapReport,
    icmp_out: Option<&Path>,
) -> io::Result<()> {
    writeln!(out, "  frames read         {}", report.frames)?;
    writeln!(out, "  encapsulated        {}", report.encapsulated)?;
    print_drops(out, &report.drops)?;
    if report.drops.get(DropReason::MtuExceeded) > 0 {
        writeln!(
            out,
            "  ICMP too-big sent   {}{}",
            report.too_big_replies,
            match icmp_out {
                Some(path) => format!(" (written to {})", path.display()),
                None => " (not written: give --icmp-out FILE)".to_string(),
            },
        )?;
        writeln!(
            out,
            "  ICMP too-big none   {} (IPv4 without DF, not IP, or an ICMP error itself)",
            report.too_big_silent
        )?;
    }
    Ok(())
}

/// Where `path` is or would be: symbolic links and `..` resolved, also for a file not yet
/// created (through its directory).
fn real_path(path: &Path) -> Option<PathBuf> {
    fs::canonicalize(path).ok().or_else(|| {
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        Some(fs::canonicalize(directory).ok()?.join(path.file_name()?))
    })
}

/// Refuses to write over a capture that is being read or written by the same run: creating
/// the output would truncate it.
fn check_distinct(files: &[(&str, &Path)]) -> Result<()> {
    for (i, (role_a, a)) in files.iter().enumerate() {
        for (role_b, b) in &files[i + 1..] {
            if let (Some(a_real), Some(b_real)) = (real_path(a), real_path(b)) {
                if a_real == b_real {
                    return Err(format!(
                        "{} is both the {role_a} and the {role_b}; give different files",
                        b.display()
                    )
                    .into());
                }
            }
        }
    }
    Ok(())
}

fn run_decap(out: &mut dyn Write, args: &DecapArgs) -> Result<()> {
    check_distinct(&[("input", &args.input), ("output", &args.output)])?;
    let config = DecapConfig {
        udp_port: args.port,
        strict_reserved_bits: args.strict,
        gbp: args.gbp,
        verify_udp_checksum: !args.no_verify_checksum,
        carry_inner_vlan: args.carry_vlan,
        ..DecapConfig::default()
    };
    config
        .validate()
        .context(|| format!("--port {}", args.port))?;
    let mut capture = Capture::open(&args.input)?;
    let mut inner_out = CaptureWriter::create(&args.output, capture.ts_resolution)?;
    let report = decap_frames(&mut capture, &mut inner_out, &config)?;
    inner_out.finish()?;
    writeln!(
        out,
        "vxlan-pcap decap: {} -> {} (UDP port {})",
        args.input.display(),
        args.output.display(),
        args.port
    )?;
    print_decap_report(out, &report)?;
    Ok(())
}

fn underlay(
    local: IpAddr,
    remote: IpAddr,
    local_mac: EthernetAddress,
    remote_mac: EthernetAddress,
) -> Result<Underlay> {
    match (local, remote) {
        (IpAddr::V4(local), IpAddr::V4(remote)) => {
            Ok(Underlay::ipv4(local_mac, remote_mac, local, remote))
        }
        (IpAddr::V6(local), IpAddr::V6(remote)) => {
            Ok(Underlay::ipv6(local_mac, remote_mac, local, remote))
        }
        _ => Err(format!(
            "--local {local} and --remote {remote} are of different address families; both VTEP addresses must be IPv4 or both IPv6"
        )
        .into()),
    }
}

fn run_encap(out: &mut dyn Write, args: &EncapArgs) -> Result<()> {
    let mut files = vec![
        ("input", args.input.as_path()),
        ("output", args.output.as_path()),
    ];
    if let Some(icmp_out) = &args.icmp_out {
        files.push(("--icmp-out file", icmp_out.as_path()));
    }
    check_distinct(&files)?;
    let underlay = underlay(args.local, args.remote, args.local_mac, args.remote_mac)?;
    let config = EncapConfig {
        udp_port: args.port,
        source_ports: args.source_ports.unwrap_or_default(),
        udp_checksum_ipv4: args.udp_checksum,
        df: args.df.into(),
        ttl: args.ttl,
        tos: args.tos,
        mtu: args.mtu,
        carry_inner_vlan: args.carry_vlan,
        ..EncapConfig::default()
    };
    let template = EncapTemplate::new(&config, &underlay, args.vni)
        .context(|| "invalid tunnel configuration".to_string())?;
    let mut capture = Capture::open(&args.input)?;
    let mut outer_out = CaptureWriter::create(&args.output, capture.ts_resolution)?;
    let mut icmp_out = match &args.icmp_out {
        Some(path) => Some(CaptureWriter::create(path, capture.ts_resolution)?),
        None => None,
    };
    let report = encap_frames(&mut capture, &mut outer_out, icmp_out.as_mut(), &template)?;
    outer_out.finish()?;
    if let Some(icmp_out) = icmp_out {
        icmp_out.finish()?;
    }
    writeln!(
        out,
        "vxlan-pcap encap: {} -> {} (VNI {}, {} -> {}, UDP port {}, MTU {})",
        args.input.display(),
        args.output.display(),
        args.vni,
        args.local,
        args.remote,
        args.port,
        args.mtu
    )?;
    print_encap_report(out, &report, args.icmp_out.as_deref())?;
    let too_big = report.drops.get(DropReason::MtuExceeded);
    if too_big > 0 {
        writeln!(out,
            "note: {too_big} frames did not fit the MTU of {}; captures taken with GRO/TSO hold frames larger than the wire's, raise --mtu (up to 65535) to carry them",
            args.mtu
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The demo: a capture of our own, both tunnels, and a check of the round trip

/// Inner hosts: 198.18.0.0/15 (RFC 2544 benchmarking) and 2001:db8::/32 (RFC 3849
/// documentation); locally administered MACs (the 0x02 bit).
const HOST_A_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0x01]);
const HOST_B_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0x02]);
const HOST_A_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const HOST_B_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const HOST_A_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const HOST_B_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
const VLAN_A_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x02, 0x01]);
const VLAN_B_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x02, 0x02]);
const VLAN_A_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const VLAN_B_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const DEMO_VLAN_ID: u16 = 100;

/// The VTEPs: the underlay of both tunnels.
const VTEP_LOCAL_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
const VTEP_REMOTE_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x02]);
const VTEP_LOCAL_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const VTEP_REMOTE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const VTEP_LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const VTEP_REMOTE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const DEMO_VNI_IPV4: u32 = 4242;
const DEMO_VNI_IPV6: u32 = 4243;

/// 2025-01-01T00:00:00Z: fixed, so that the demo's files are the same on every run.
const DEMO_EPOCH: Duration = Duration::from_secs(1_735_689_600);

/// What a demo frame should meet in a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Carried,
    Dropped(DropReason),
}

struct DemoFrame {
    name: &'static str,
    bytes: Vec<u8>,
    over_ipv4: Expect,
    over_ipv6: Expect,
}

/// An Ethernet frame of `payload_len` bytes after a header to `dst` from `src`, filled in by
/// `payload`.
fn ethernet_frame(
    dst: EthernetAddress,
    src: EthernetAddress,
    ethertype: EthernetProtocol,
    payload_len: usize,
    payload: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let mut frame = vec![0u8; ETHERNET_HEADER_LEN + payload_len];
    let mut ethernet = EthernetFrame::new_unchecked(&mut frame);
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype,
    }
    .emit(&mut ethernet);
    payload(ethernet.payload_mut());
    frame
}

/// An IPv4 packet (DF set, as smoltcp emits it) holding `l4_len` bytes filled by `l4`, which
/// gets the IPv4 header to adjust (ECN) before its checksum is computed.
fn ipv4_packet(
    buf: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: IpProtocol,
    l4_len: usize,
    ecn: u8,
    l4: impl FnOnce(&mut [u8]),
) {
    let caps = ChecksumCapabilities::default();
    let mut packet = Ipv4Packet::new_unchecked(buf);
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: protocol,
        payload_len: l4_len,
        hop_limit: 64,
    }
    .emit(&mut packet, &caps);
    packet.set_ecn(ecn);
    packet.fill_checksum();
    l4(packet.payload_mut());
}

fn icmpv4_echo_len(data: &[u8]) -> usize {
    Icmpv4Repr::EchoRequest {
        ident: 0,
        seq_no: 0,
        data,
    }
    .buffer_len()
}

fn emit_icmpv4_echo(buf: &mut [u8], ident: u16, seq_no: u16, data: &[u8]) {
    Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    }
    .emit(
        &mut Icmpv4Packet::new_unchecked(buf),
        &ChecksumCapabilities::default(),
    );
}

/// An ICMP echo request from host A to host B, like `ping -M do -s <data.len()>`.
fn ping_v4(seq_no: u16, data: &[u8]) -> Vec<u8> {
    let icmp_len = icmpv4_echo_len(data);
    ethernet_frame(
        HOST_B_MAC,
        HOST_A_MAC,
        EthernetProtocol::Ipv4,
        20 + icmp_len,
        |ip| {
            ipv4_packet(
                ip,
                HOST_A_V4,
                HOST_B_V4,
                IpProtocol::Icmp,
                icmp_len,
                0,
                |icmp| emit_icmpv4_echo(icmp, 0x5359, seq_no, data),
            )
        },
    )
}

fn demo_frames() -> Vec<DemoFrame> {
    let caps = ChecksumCapabilities::default();
    let mut frames = Vec::new();

    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: HOST_A_MAC,
        source_protocol_addr: HOST_A_V4,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: HOST_B_V4,
    };
    frames.push(DemoFrame {
        name: "ARP request",
        bytes: ethernet_frame(
            EthernetAddress::BROADCAST,
            HOST_A_MAC,
            EthernetProtocol::Arp,
            arp.buffer_len(),
            |payload| arp.emit(&mut ArpPacket::new_unchecked(payload)),
        ),
        over_ipv4: Expect::Carried,
        over_ipv6: Expect::Carried,
    });

    let ping_data: Vec<u8> = (0..56u8).collect();
    frames.push(DemoFrame {
        name: "ICMP echo request, IPv4, DF",
        bytes: ping_v4(1, &ping_data),
        over_ipv4: Expect::Carried,
        over_ipv6: Expect::Carried,
    });

    let syn = TcpRepr {
        src_port: 49_200,
        dst_port: 80,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(0x0bad_cafe),
        ack_number: None,
        window_len: 64_240,
        window_scale: Some(7),
        max_seg_size: Some(1460),
        sack_permitted: true,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let syn_len = syn.buffer_len();
    frames.push(DemoFrame {
        name: "TCP SYN, IPv4, ECT(0)",
        bytes: ethernet_frame(
            HOST_B_MAC,
            HOST_A_MAC,
            EthernetProtocol::Ipv4,
            20 + syn_len,
            |ip| {
                ipv4_packet(
                    ip,
                    HOST_A_V4,
                    HOST_B_V4,
                    IpProtocol::Tcp,
                    syn_len,
                    0b10, // ECT(0)
                    |tcp| {
                        syn.emit(
                            &mut TcpPacket::new_unchecked(tcp),
                            &IpAddress::Ipv4(HOST_A_V4),
                            &IpAddress::Ipv4(HOST_B_V4),
                            &caps,
                        )
                    },
                )
            },
        ),
        over_ipv4: Expect::Carried,
        over_ipv6: Expect::Carried,
    });

    let udp_data = b"switchyard vxlan-pcap demo";
    let udp = UdpRepr {
        src_port: 40_000,
        dst_port: 7, // echo
    };
    let udp_len = udp.header_len() + udp_data.len();
    frames.push(DemoFrame {
        name: "UDP, IPv6",
        bytes: ethernet_frame(
            HOST_B_MAC,
            HOST_A_MAC,
            EthernetProtocol::Ipv6,
            40 + udp_len,
            |ip| {
                let mut packet = Ipv6Packet::new_unchecked(ip);
                Ipv6Repr {
                    src_addr: HOST_A_V6,
                    dst_addr: HOST_B_V6,
                    next_header: IpProtocol::Udp,
                    payload_len: udp_len,
                    hop_limit: 64,
                }
                .emit(&mut packet);
                udp.emit(
                    &mut UdpPacket::new_unchecked(packet.payload_mut()),
                    &IpAddress::Ipv6(HOST_A_V6),
                    &IpAddress::Ipv6(HOST_B_V6),
                    udp_data.len(),
                    |payload| payload.copy_from_slice(udp_data),
                    &caps,
                );
            },
        ),
        over_ipv4: Expect::Carried,
        over_ipv6: Expect::Carried,
    });

    let icmp_len = icmpv4_echo_len(&ping_data);
    let tag = vlan::Repr {
        priority: 0,
        drop_eligible: false,
        vlan_id: DEMO_VLAN_ID,
        ethertype: ethertype::IPV4,
    };
    frames.push(DemoFrame {
        name: "ICMP echo request in 802.1Q VLAN 100",
        bytes: ethernet_frame(
            VLAN_B_MAC,
            VLAN_A_MAC,
            EthernetProtocol::Unknown(ethertype::VLAN),
            tag.buffer_len() + 20 + icmp_len,
            |tagged| {
                tag.emit(&mut vlan::Packet::new_unchecked(&mut *tagged));
                if let Some(ip) = tagged.get_mut(tag.buffer_len()..) {
                    ipv4_packet(
                        ip,
                        VLAN_A_V4,
                        VLAN_B_V4,
                        IpProtocol::Icmp,
                        icmp_len,
                        0,
                        |icmp| emit_icmpv4_echo(icmp, 0x5359, 1, &ping_data),
                    );
                }
            },
        ),
        // The IPv4 tunnel keeps RFC 7348's default; the IPv6 one carries tags.
        over_ipv4: Expect::Dropped(DropReason::InnerVlanTagged),
        over_ipv6: Expect::Carried,
    });

    // A 1500-byte IPv4 packet with DF: fits a 1500 link, not a 1500 underlay plus VXLAN.
    let big_data: Vec<u8> = (0..1472u32).map(|i| i as u8).collect();
    frames.push(DemoFrame {
        name: "ICMP echo request, 1500 bytes of IPv4, DF",
        bytes: ping_v4(2, &big_data),
        over_ipv4: Expect::Dropped(DropReason::MtuExceeded),
        over_ipv6: Expect::Dropped(DropReason::MtuExceeded),
    });
    frames
}

struct DemoTunnel {
    family: &'static str,
    vxlan_file: &'static str,
    decap_file: &'static str,
    underlay: Underlay,
    vni: u32,
    encap: EncapConfig,
    decap: DecapConfig,
    expect: fn(&DemoFrame) -> Expect,
}

fn run_demo(out: &mut dyn Write, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).context(|| format!("cannot create directory {}", dir.display()))?;
    let frames = demo_frames();
    let inner_path = dir.join("inner.pcap");
    let mut inner = CaptureWriter::create(&inner_path, TsResolution::MicroSecond)?;
    let timestamp = |index: usize| DEMO_EPOCH + Duration::from_millis(index as u64);
    for (index, frame) in frames.iter().enumerate() {
        inner.write(timestamp(index), &frame.bytes)?;
    }
    inner.finish()?;
    writeln!(
        out,
        "vxlan-pcap demo: {} inner frames in {}",
        frames.len(),
        inner_path.display()
    )?;
    for (index, frame) in frames.iter().enumerate() {
        writeln!(
            out,
            "  {}. {} ({} bytes)",
            index + 1,
            frame.name,
            frame.bytes.len()
        )?;
    }

    let tunnels = [
        DemoTunnel {
            family: "IPv4",
            vxlan_file: "vxlan-ipv4.pcap",
            decap_file: "decap-ipv4.pcap",
            underlay: Underlay::ipv4(
                VTEP_LOCAL_MAC,
                VTEP_REMOTE_MAC,
                VTEP_LOCAL_V4,
                VTEP_REMOTE_V4,
            ),
            vni: DEMO_VNI_IPV4,
            encap: EncapConfig {
                udp_checksum_ipv4: true,
                ..EncapConfig::default()
            },
            decap: DecapConfig::default(),
            expect: |frame| frame.over_ipv4,
        },
        DemoTunnel {
            family: "IPv6",
            vxlan_file: "vxlan-ipv6.pcap",
            decap_file: "decap-ipv6.pcap",
            underlay: Underlay::ipv6(
                VTEP_LOCAL_MAC,
                VTEP_REMOTE_MAC,
                VTEP_LOCAL_V6,
                VTEP_REMOTE_V6,
            ),
            vni: DEMO_VNI_IPV6,
            encap: EncapConfig {
                carry_inner_vlan: true,
                ..EncapConfig::default()
            },
            decap: DecapConfig {
                carry_inner_vlan: true,
                ..DecapConfig::default()
            },
            expect: |frame| frame.over_ipv6,
        },
    ];

    let icmp_path = dir.join("icmp-too-big.pcap");
    let mut icmp_out = CaptureWriter::create(&icmp_path, TsResolution::MicroSecond)?;
    let mut mismatches = Vec::new();
    for tunnel in &tunnels {
        let vni = Vni::new(tunnel.vni)?;
        let template = EncapTemplate::new(&tunnel.encap, &tunnel.underlay, vni)
            .context(|| format!("demo {} tunnel", tunnel.family))?;
        let vxlan_path = dir.join(tunnel.vxlan_file);
        let decap_path = dir.join(tunnel.decap_file);

        let mut vxlan_out = CaptureWriter::create(&vxlan_path, TsResolution::MicroSecond)?;
        let encap_report = encap_frames(
            &mut Capture::open(&inner_path)?,
            &mut vxlan_out,
            Some(&mut icmp_out),
            &template,
        )?;
        vxlan_out.finish()?;
        let mut decap_out = CaptureWriter::create(&decap_path, TsResolution::MicroSecond)?;
        let decap_report = decap_frames(
            &mut Capture::open(&vxlan_path)?,
            &mut decap_out,
            &tunnel.decap,
        )?;
        decap_out.finish()?;

        writeln!(
            out,
            "\nover {} (VTEP {} -> {}, VNI {}, MTU {}, UDP checksum {}, VLAN tags {}):",
            tunnel.family,
            tunnel.underlay.addrs.src(),
            tunnel.underlay.addrs.dst(),
            tunnel.vni,
            tunnel.encap.mtu,
            if tunnel.family == "IPv6" || tunnel.encap.udp_checksum_ipv4 {
                "on"
            } else {
                "off"
            },
            if tunnel.encap.carry_inner_vlan {
                "carried"
            } else {
                "dropped"
            },
        )?;
        writeln!(out, "  encap -> {}", vxlan_path.display())?;
        print_encap_report(out, &encap_report, Some(&icmp_path))?;
        writeln!(out, "  decap -> {}", decap_path.display())?;
        print_decap_report(out, &decap_report)?;

        // The check: what came back is exactly what was expected to go through, with its
        // timestamp, and every refusal had the expected reason.
        let mut expected_drops = DropCounters::new();
        let mut expected_frames = Vec::new();
        for (index, frame) in frames.iter().enumerate() {
            match (tunnel.expect)(frame) {
                Expect::Carried => expected_frames.push((timestamp(index), frame.bytes.clone())),
                Expect::Dropped(reason) => expected_drops.record(reason),
            }
        }
        let decapsulated = Capture::read_all(&decap_path)?;
        if decapsulated != expected_frames {
            let first_difference = decapsulated
                .iter()
                .zip(&expected_frames)
                .position(|(got, want)| got != want)
                .map_or(String::new(), |i| {
                    format!(", first difference at frame {}", i + 1)
                });
            mismatches.push(format!(
                "{}: {} frames do not equal the {} inner frames sent over {}{first_difference}",
                decap_path.display(),
                decapsulated.len(),
                expected_frames.len(),
                tunnel.family,
            ));
        }
        if encap_report.drops != expected_drops {
            mismatches.push(format!(
                "encap over {}: drops {:?}, expected {:?}",
                tunnel.family,
                encap_report.drops.nonzero().collect::<Vec<_>>(),
                expected_drops.nonzero().collect::<Vec<_>>()
            ));
        }
        if decap_report.drops.total() != 0 || decap_report.per_vni.keys().ne([vni].iter()) {
            mismatches.push(format!(
                "decap over {}: drops {:?}, VNIs {:?}; expected none and VNI {vni} only",
                tunnel.family,
                decap_report.drops.nonzero().collect::<Vec<_>>(),
                decap_report.per_vni,
            ));
        }
        if encap_report.too_big_replies != expected_drops.get(DropReason::MtuExceeded) {
            mismatches.push(format!(
                "encap over {}: {} ICMP too-big replies for {} frames too big",
                tunnel.family,
                encap_report.too_big_replies,
                expected_drops.get(DropReason::MtuExceeded)
            ));
        }
    }
    let icmp_replies = icmp_out.finish()?;
    writeln!(
        out,
        "\n{icmp_replies} ICMP too-big replies (one per tunnel, each with its own MTU) in {}",
        icmp_path.display()
    )?;
    if !mismatches.is_empty() {
        return Err(format!("demo round trip FAILED:\n  {}", mismatches.join("\n  ")).into());
    }
    writeln!(
        out,
        "round trip OK: every frame each tunnel carried came back byte for byte"
    )?;
    Ok(())
}
