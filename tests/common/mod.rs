//! Reading the third-party captures in `../shared/testdata/vxlan` (their provenance and
//! licences are in `SOURCES.md` there). The files are read where they are, never copied.

// Each integration test is its own crate and may use only part of this module.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;

/// One captured frame: the bytes that were captured and the frame's length on the wire
/// (larger than `data.len()` when the capture's snap length cut it short).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFrame {
    /// The captured bytes, from the Ethernet header on.
    pub data: Vec<u8>,
    /// The frame's length on the wire.
    pub orig_len: u32,
}

/// The directory of VXLAN captures, or `None` (after a loud notice) when it is absent.
///
/// Under CI (`CI=true`) an absent directory is a failure: CI must run these tests.
pub fn vxlan_testdata() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/vxlan");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "../shared/testdata not found at {}: CI must run the capture tests",
            dir.display()
        );
    }
    // Straight to the stderr handle: the test harness captures `eprintln!` of passing
    // tests, and this notice must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n\
         ************************************************************************\n\
         SKIPPED: ../shared/testdata not found ({}); this capture test did not run\n\
         ************************************************************************\n",
        dir.display()
    );
    None
}

/// Classic pcap magic numbers (microsecond and nanosecond timestamps, either byte order),
/// as the first four bytes of the file.
const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];
/// The pcapng Section Header Block type, the first four bytes of every pcapng file.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Reads every frame of a pcap or pcapng file (told apart by the magic number, whatever the
/// extension). Panics on a file that is neither, or whose link type is not Ethernet.
pub fn read_capture(path: &Path) -> Vec<CapturedFrame> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_capture(&bytes, &path.display().to_string())
}

/// Parses the bytes of a pcap or pcapng file; `name` is for messages.
pub fn parse_capture(bytes: &[u8], name: &str) -> Vec<CapturedFrame> {
    let magic: [u8; 4] = bytes
        .get(..4)
        .and_then(|m| m.try_into().ok())
        .unwrap_or_else(|| panic!("{name}: shorter than a magic number"));
    if PCAP_MAGICS.contains(&magic) {
        parse_pcap(bytes, name)
    } else if magic == PCAPNG_MAGIC {
        parse_pcapng(bytes, name)
    } else {
        panic!("{name}: magic {magic:02x?} is neither pcap nor pcapng")
    }
}

fn parse_pcap(bytes: &[u8], name: &str) -> Vec<CapturedFrame> {
    let mut reader = PcapReader::new(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let header = reader.header();
    assert_eq!(header.datalink, DataLink::ETHERNET, "{name}: link type");
    let mut frames = Vec::new();
    // Raw records: pcap-file 2.0.0's validated `next_packet` refuses every record whose
    // original length exceeds the snap length, which is exactly what a frame cut short by
    // the snap length looks like (zeek__geneve-vxlan-dns-truncated.pcap).
    while let Some(record) = reader.next_raw_packet() {
        let record = record.unwrap_or_else(|e| panic!("{name}: frame {}: {e}", frames.len() + 1));
        let context = || format!("{name}: frame {}", frames.len() + 1);
        assert_eq!(record.data.len(), record.incl_len as usize, "{}", context());
        assert!(
            record.incl_len <= record.orig_len,
            "{}: longer than on the wire",
            context()
        );
        assert!(
            record.incl_len <= header.snaplen,
            "{}: longer than the snap length",
            context()
        );
        frames.push(CapturedFrame {
            data: record.data.into_owned(),
            orig_len: record.orig_len,
        });
    }
    frames
}

fn parse_pcapng(bytes: &[u8], name: &str) -> Vec<CapturedFrame> {
    let mut reader = PcapNgReader::new(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    // Link types of the current section's interfaces, by interface id.
    let mut interfaces: Vec<DataLink> = Vec::new();
    let mut frames = Vec::new();
    let check_ethernet = |interfaces: &[DataLink], id: usize| {
        let linktype = interfaces
            .get(id)
            .unwrap_or_else(|| panic!("{name}: frame on undeclared interface {id}"));
        assert_eq!(
            *linktype,
            DataLink::ETHERNET,
            "{name}: link type of interface {id}"
        );
    };
    while let Some(block) = reader.next_block() {
        match block.unwrap_or_else(|e| panic!("{name}: block after frame {}: {e}", frames.len())) {
            Block::SectionHeader(_) => interfaces.clear(),
            Block::InterfaceDescription(interface) => interfaces.push(interface.linktype),
            Block::EnhancedPacket(packet) => {
                check_ethernet(&interfaces, packet.interface_id as usize);
                frames.push(CapturedFrame {
                    data: packet.data.into_owned(),
                    orig_len: packet.original_len,
                });
            }
            Block::SimplePacket(packet) => {
                check_ethernet(&interfaces, 0);
                // A simple packet block has no captured length: its data is padded to 32
                // bits, so keep at most the original length.
                let mut data = packet.data.into_owned();
                data.truncate(packet.original_len as usize);
                frames.push(CapturedFrame {
                    data,
                    orig_len: packet.original_len,
                });
            }
            Block::Packet(packet) => {
                check_ethernet(&interfaces, usize::from(packet.interface_id));
                frames.push(CapturedFrame {
                    data: packet.data.into_owned(),
                    orig_len: packet.original_len,
                });
            }
            _ => {}
        }
    }
    frames
}
