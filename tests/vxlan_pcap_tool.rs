//! Integration test of the `vxlan-pcap` example (examples/vxlan-pcap.rs): runs the built
//! binary on its own demo and on third-party captures, reads what it writes back with
//! pcap-file, and has Wireshark's `tshark` check it independently (checksums, malformed
//! packets, VXLAN VNIs).
//!
//! The tool is built by this test (`cargo build --example vxlan-pcap`, a no-op when it is up
//! to date), because `cargo test --test vxlan_pcap_tool` alone does not build examples.
//!
//! Checks that need `tshark` (Debian/Ubuntu: `apt-get install tshark`) or the third-party
//! captures in `../shared/testdata/vxlan` fail when `CI=true` and are skipped with a loud
//! notice otherwise.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapHeader, PcapReader, PcapWriter, RawPcapPacket};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};

/// The demo's VNIs (see `DEMO_VNI_IPV4`/`DEMO_VNI_IPV6` in the example).
const DEMO_VNI_IPV4: u32 = 4242;
const DEMO_VNI_IPV6: u32 = 4243;

/// The demo's files and how many frames each must hold: six inner frames; the IPv4 tunnel
/// refuses the VLAN-tagged one and the one too big for the MTU, the IPv6 tunnel carries tags
/// and refuses only the big one; one ICMP "fragmentation needed" per tunnel.
const DEMO_FILES: [(&str, usize); 6] = [
    ("inner.pcap", 6),
    ("vxlan-ipv4.pcap", 4),
    ("vxlan-ipv6.pcap", 5),
    ("decap-ipv4.pcap", 4),
    ("decap-ipv6.pcap", 5),
    ("icmp-too-big.pcap", 2),
];

// ---------------------------------------------------------------------------------------------
// Helpers

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci == "true")
}

/// Fails under CI, else prints a loud notice; the caller then returns.
fn skip(what: &str, fix: &str) {
    if in_ci() {
        panic!("{what}, and CI=true requires this check to run: {fix}");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!` of passing
    // tests, and this notice must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n**********\nSKIPPED: {what}; {fix}\n**********\n"
    );
}

/// The example binary: target/<profile>/examples/vxlan-pcap, next to this test's
/// target/<profile>/deps/. Built once per test run.
fn tool() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
        let profile = match profile_dir.file_name().and_then(OsStr::to_str) {
            Some("debug") => "dev",
            Some(name) => name,
            None => "dev",
        };
        let tool = profile_dir
            .join("examples")
            .join(format!("vxlan-pcap{}", std::env::consts::EXE_SUFFIX));
        let cargo = std::env::var_os("CARGO")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(option_env!("CARGO").unwrap_or("cargo")));
        let build = Command::new(&cargo)
            .args([
                "build",
                "--quiet",
                "--example",
                "vxlan-pcap",
                "--profile",
                profile,
            ])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output();
        match build {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!(
                "cargo build --example vxlan-pcap failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) if tool.exists() => {
                eprintln!(
                    "warning: cannot run {} ({e}); using {} as built",
                    cargo.display(),
                    tool.display()
                )
            }
            Err(e) => panic!("cannot run {} to build the example: {e}", cargo.display()),
        }
        assert!(tool.exists(), "{} was not built", tool.display());
        tool
    })
}

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "switchyard-vxlan-pcap-{name}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    fn join(&self, file: impl AsRef<Path>) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(tool())
        .args(args)
        .output()
        .expect("run vxlan-pcap")
}

fn describe(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs the tool, asserts it succeeded, returns its standard output.
fn run_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = run(args);
    assert!(
        output.status.success(),
        "vxlan-pcap failed: {}",
        describe(&output)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// The number printed after `label` at the start of a line of the tool's report
/// (`decapsulated        10`, `vni 100      10`, `mtu_exceeded    1`).
fn count(report: &str, label: &str) -> u64 {
    report
        .lines()
        .find_map(|line| {
            let rest = line.trim_start().strip_prefix(label)?;
            if !rest.starts_with(char::is_whitespace) {
                return None;
            }
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {label:?} count in the report:\n{report}"))
}

/// Every frame of a classic pcap file: timestamp, original length, data. Uses pcap-file's
/// checked reader, so it also validates the headers the tool wrote.
fn read_pcap(path: &Path) -> Vec<(Duration, u32, Vec<u8>)> {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut reader = PcapReader::new(BufReader::new(file))
        .unwrap_or_else(|e| panic!("{} is not a pcap file: {e}", path.display()));
    assert_eq!(reader.header().datalink, DataLink::ETHERNET);
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            packet.orig_len as usize,
            packet.data.len(),
            "{}: the tool writes whole frames",
            path.display()
        );
        frames.push((packet.timestamp, packet.orig_len, packet.data.into_owned()));
    }
    frames
}

/// Runs the demo into a new temporary directory.
fn demo(name: &str) -> (TempDir, String) {
    let dir = TempDir::new(name);
    let report = run_ok([OsStr::new("demo"), dir.0.as_os_str()]);
    (dir, report)
}

/// The third-party captures, or `None` (after `skip`) when they are missing.
fn shared_testdata() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/vxlan");
    if dir.join("tcpdump__vxlan.pcap").is_file() {
        Some(dir)
    } else {
        skip(
            &format!("third-party captures not found in {}", dir.display()),
            "check out the shared test data next to the crate (../shared/testdata/vxlan)",
        );
        None
    }
}

// ---------------------------------------------------------------------------------------------
// tshark

/// True if tshark runs; else `skip`s.
fn have_tshark() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        Command::new("tshark")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        skip("tshark not installed", "apt-get install tshark");
    }
    found
}

/// Checksum verification is off by default in Wireshark for IPv4, UDP and TCP.
const CHECKSUM_PREFS: [&str; 6] = [
    "-o",
    "ip.check_checksum:TRUE",
    "-o",
    "udp.check_checksum:TRUE",
    "-o",
    "tcp.check_checksum:TRUE",
];

fn tshark(file: &Path, args: &[&str]) -> String {
    let output = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(CHECKSUM_PREFS)
        .args(args)
        .output()
        .expect("run tshark");
    // tshark warns on stderr when run as root; anything else there (a damaged or cut-off
    // file) is a finding.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("Running as user"))
        .collect();
    assert!(
        output.status.success() && complaints.is_empty(),
        "tshark on {}: {}",
        file.display(),
        describe(&output)
    );
    String::from_utf8(output.stdout).expect("UTF-8 from tshark")
}

/// What tshark's expert system says about `file` at note level and above: an empty list for
/// a clean file, else the lines about malformed packets, bad checksums, errors and warnings.
fn tshark_findings(file: &Path) -> (Vec<String>, String) {
    let report = tshark(file, &["-z", "expert,note", "-q"]);
    let findings = report
        .lines()
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            lower.contains("malformed")
                || lower.contains("bad checksum")
                || lower.contains("incorrect")
                || lower.starts_with("errors (")
                || lower.starts_with("warns (")
        })
        .map(str::to_string)
        .collect();
    (findings, report)
}

/// The checksum status fields Wireshark fills in (0 is "Bad", 1 "Good", 2 "Unverified"),
/// then the VNI.
const TSHARK_FIELDS: [&str; 6] = [
    "ip.checksum.status",
    "udp.checksum.status",
    "tcp.checksum.status",
    "icmp.checksum.status",
    "icmpv6.checksum.status",
    "vxlan.vni",
];

/// Per frame, the values of `TSHARK_FIELDS` (each possibly several, comma
/// separated, outer header first).
fn tshark_fields(file: &Path) -> Vec<Vec<String>> {
    let mut args = vec!["-T", "fields", "-E", "separator=/t"];
    for field in TSHARK_FIELDS {
        args.extend(["-e", field]);
    }
    tshark(file, &args)
        .lines()
        .map(|line| line.split('\t').map(str::to_string).collect())
        .collect()
}

fn flip_byte(source: &Path, target: &Path, offset: usize, mask: u8) {
    let mut bytes = fs::read(source).expect("read the capture");
    bytes[offset] ^= mask;
    fs::write(target, bytes).expect("write the corrupted copy");
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn demo_writes_the_expected_captures() {
    let (dir, report) = demo("demo");
    assert!(report.contains("round trip OK"), "{report}");
    for (file, frames) in DEMO_FILES {
        let path = dir.join(file);
        assert!(path.is_file(), "{} missing", path.display());
        assert_eq!(read_pcap(&path).len(), frames, "{file}");
    }

    // Decapsulated frames are the inner frames each tunnel carried, with their timestamps.
    let inner = read_pcap(&dir.join("inner.pcap"));
    let over_ipv4: Vec<_> = inner
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 4 && *i != 5) // the tagged one, the big one
        .map(|(_, frame)| frame.clone())
        .collect();
    assert_eq!(read_pcap(&dir.join("decap-ipv4.pcap")), over_ipv4);
    assert_eq!(read_pcap(&dir.join("decap-ipv6.pcap")), inner[..5].to_vec());

    // The outer frames are the inner ones with 50 or 70 bytes in front.
    for (file, header_len, expected) in [
        ("vxlan-ipv4.pcap", 50, &over_ipv4[..]),
        ("vxlan-ipv6.pcap", 70, &inner[..5]),
    ] {
        let outer = read_pcap(&dir.join(file));
        for ((_, _, outer), (_, _, inner)) in outer.iter().zip(expected) {
            assert_eq!(&outer[header_len..], &inner[..], "{file}");
        }
    }

    // The report counts what the tunnels refused, per reason.
    assert_eq!(count(&report, "inner_vlan_tagged"), 1, "{report}");
    assert_eq!(
        count(&report, &format!("vni {DEMO_VNI_IPV4}")),
        4,
        "{report}"
    );
    assert_eq!(
        count(&report, &format!("vni {DEMO_VNI_IPV6}")),
        5,
        "{report}"
    );
}

#[test]
fn demo_is_reproducible() {
    let (first, _) = demo("repro-a");
    let (second, _) = demo("repro-b");
    for (file, _) in DEMO_FILES {
        assert_eq!(
            fs::read(first.join(file)).expect("read"),
            fs::read(second.join(file)).expect("read"),
            "{file} differs between two runs"
        );
    }
}

#[test]
fn tshark_finds_nothing_wrong_in_the_demo_and_flags_corrupted_copies() {
    if !have_tshark() {
        return;
    }
    let (dir, _) = demo("tshark");

    // Every file is clean: no malformed packet, no bad checksum, no error or warning.
    for (file, frames) in DEMO_FILES {
        let path = dir.join(file);
        let (findings, report) = tshark_findings(&path);
        assert!(
            findings.is_empty(),
            "tshark flags {file}: {findings:?}\n{report}"
        );
        let fields = tshark_fields(&path);
        assert_eq!(fields.len(), frames, "{file}: {fields:?}");
        for (frame, values) in fields.iter().enumerate() {
            let (statuses, vni) = values.split_at(TSHARK_FIELDS.len() - 1);
            for status in statuses.iter().flat_map(|s| s.split(',')) {
                assert_ne!(
                    status,
                    "0",
                    "{file} frame {}: bad checksum {values:?}",
                    frame + 1
                );
            }
            let vni = vni.first().map_or("", String::as_str);
            // Checksums were verified, not merely present: the outer IP and UDP ones of the
            // VXLAN files (UDP over IPv4 because the demo turns --udp-checksum on).
            match file {
                "vxlan-ipv4.pcap" => {
                    assert_eq!(vni, DEMO_VNI_IPV4.to_string(), "{file} frame {}", frame + 1);
                    assert!(statuses[0].starts_with('1'), "{file}: IPv4 {values:?}");
                    assert!(statuses[1].starts_with('1'), "{file}: UDP {values:?}");
                }
                "vxlan-ipv6.pcap" => {
                    assert_eq!(vni, DEMO_VNI_IPV6.to_string(), "{file} frame {}", frame + 1);
                    assert!(statuses[1].starts_with('1'), "{file}: UDP {values:?}");
                }
                "icmp-too-big.pcap" => {
                    assert_eq!(vni, "", "{file}");
                    assert!(statuses[0].starts_with('1'), "{file}: IPv4 {values:?}");
                    assert!(statuses[3].starts_with('1'), "{file}: ICMP {values:?}");
                }
                _ => assert_eq!(vni, "", "{file} is not VXLAN"),
            }
        }
    }
    // The inner TCP SYN, ICMP echo and UDP over IPv6 verify after a round trip.
    let decap = tshark_fields(&dir.join("decap-ipv4.pcap"));
    assert!(decap[1][3].starts_with('1'), "ICMP: {decap:?}");
    assert!(decap[2][2].starts_with('1'), "TCP: {decap:?}");
    assert!(decap[3][1].starts_with('1'), "UDP over IPv6: {decap:?}");
    // The too-big replies report each tunnel's inner MTU: 1500 - 36 - 14 over IPv4,
    // 1500 - 56 - 14 over IPv6.
    let mtus = tshark(
        &dir.join("icmp-too-big.pcap"),
        &[
            "-T",
            "fields",
            "-e",
            "icmp.type",
            "-e",
            "icmp.code",
            "-e",
            "icmp.mtu",
        ],
    );
    assert_eq!(mtus, "3,8\t4,0\t1450\n3,8\t4,0\t1430\n");

    // The checker can fail: corrupted copies are flagged.
    let original = dir.join("vxlan-ipv4.pcap");
    let frames = read_pcap(&original);
    let first_frame = 24 + 16; // global header, record header
    let second_frame = first_frame + frames[0].2.len() + 16;
    let cases = [
        // The last byte of the ICMP echo's payload: the outer UDP checksum (and the inner
        // ICMP checksum) no longer verify.
        (
            "payload",
            second_frame + frames[1].2.len() - 1,
            0xFF,
            "bad checksum",
        ),
        // The outer IPv4 TTL of the first frame: the header checksum no longer verifies.
        ("ttl", first_frame + 14 + 8, 0x01, "bad checksum"),
        // The high byte of the outer UDP length: longer than the IP payload.
        ("udp-length", first_frame + 14 + 20 + 4, 0x40, "malformed"),
    ];
    for (name, offset, mask, expected) in cases {
        let corrupted = dir.join(format!("corrupted-{name}.pcap"));
        flip_byte(&original, &corrupted, offset, mask);
        let (findings, report) = tshark_findings(&corrupted);
        assert!(
            findings
                .iter()
                .any(|line| line.to_ascii_lowercase().contains(expected)),
            "tshark did not flag the {name} corruption with {expected:?}:\n{report}"
        );
    }
}

#[test]
fn decap_tcpdump_vxlan_capture() {
    let Some(testdata) = shared_testdata() else {
        return;
    };
    let dir = TempDir::new("tcpdump");
    let input = testdata.join("tcpdump__vxlan.pcap");
    let output = dir.join("inner.pcap");
    let report = run_ok([OsStr::new("decap"), input.as_os_str(), output.as_os_str()]);
    assert_eq!(count(&report, "frames read"), 10, "{report}");
    assert_eq!(count(&report, "decapsulated"), 10, "{report}");
    assert_eq!(count(&report, "vni 100"), 10, "{report}");
    assert_eq!(count(&report, "dropped"), 0, "{report}");

    // Outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 taken off, timestamps kept.
    let outer = read_pcap_raw(&input);
    let inner = read_pcap(&output);
    assert_eq!(inner.len(), 10);
    for ((outer_time, outer_data), (inner_time, _, inner_data)) in outer.iter().zip(&inner) {
        assert_eq!(outer_time, inner_time);
        assert_eq!(&outer_data[50..], &inner_data[..]);
    }
}

#[test]
fn decap_aws_traffic_mirroring_capture() {
    let Some(testdata) = shared_testdata() else {
        return;
    };
    let dir = TempDir::new("aws");
    let input = testdata.join("suricata-verify__vxlan-decoder-03-aws-mirror.pcap");
    let output = dir.join("inner.pcap");
    let report = run_ok([OsStr::new("decap"), input.as_os_str(), output.as_os_str()]);
    assert_eq!(count(&report, "frames read"), 100, "{report}");
    assert_eq!(count(&report, "decapsulated"), 100, "{report}");
    assert_eq!(count(&report, "vni 5569041"), 100, "{report}");
    assert_eq!(read_pcap(&output).len(), 100);
}

/// Every frame of a classic pcap, read without pcap-file's snap length checks.
fn read_pcap_raw(path: &Path) -> Vec<(Duration, Vec<u8>)> {
    let file = File::open(path).expect("open");
    let mut reader = PcapReader::new(BufReader::new(file)).expect("a pcap file");
    let nanos = reader.header().ts_resolution == pcap_file::TsResolution::NanoSecond;
    let mut frames = Vec::new();
    while let Some(raw) = reader.next_raw_packet() {
        let raw = raw.expect("a pcap record");
        let fraction = if nanos {
            Duration::from_nanos(raw.ts_frac.into())
        } else {
            Duration::from_micros(raw.ts_frac.into())
        };
        frames.push((
            Duration::from_secs(raw.ts_sec.into()) + fraction,
            raw.data.into_owned(),
        ));
    }
    frames
}

#[test]
fn decap_counts_frames_cut_by_the_snap_length() {
    let Some(testdata) = shared_testdata() else {
        return;
    };
    let dir = TempDir::new("snaplen");
    let input = testdata.join("tcpdump__vxlan.pcap");
    for snaplen in [0usize, 13, 60, 98] {
        // A copy of the capture as `tcpdump -s <snaplen>` would have taken it.
        let cut = dir.join(format!("cut-{snaplen}.pcap"));
        let mut whole = 0;
        {
            let mut reader =
                PcapReader::new(BufReader::new(File::open(&input).expect("open"))).expect("pcap");
            let header = PcapHeader {
                snaplen: snaplen as u32,
                ..reader.header()
            };
            let mut writer =
                PcapWriter::with_header(File::create(&cut).expect("create"), header).expect("pcap");
            while let Some(raw) = reader.next_raw_packet() {
                let raw = raw.expect("record");
                let kept = raw.data.len().min(snaplen);
                if kept == raw.data.len() {
                    whole += 1;
                }
                writer
                    .write_raw_packet(&RawPcapPacket {
                        incl_len: kept as u32,
                        data: Cow::Borrowed(&raw.data[..kept]),
                        ..raw.clone()
                    })
                    .expect("write");
            }
        }
        let output = dir.join(format!("out-{snaplen}.pcap"));
        let report = run_ok([OsStr::new("decap"), cut.as_os_str(), output.as_os_str()]);
        assert_eq!(count(&report, "frames read"), 10, "{report}");
        assert_eq!(count(&report, "decapsulated"), whole, "{report}");
        assert_eq!(count(&report, "dropped"), 10 - whole, "{report}");
        if whole < 10 {
            assert_eq!(count(&report, "cut by snap length"), 10 - whole, "{report}");
        }
        assert_eq!(read_pcap(&output).len() as u64, whole);
    }
}

#[test]
fn decap_reads_pcapng_with_each_interfaces_timestamp_resolution() {
    let (dir, _) = demo("pcapng");
    let frames = read_pcap(&dir.join("vxlan-ipv4.pcap"));
    // Three interfaces: nanoseconds (if_tsresol 9), microseconds (no if_tsresol, the
    // default), and 2^-20 seconds. pcap-file 2 writes the raw timestamp units given as a
    // Duration's nanoseconds.
    let interfaces = [Some(9u8), None, Some(0x80 | 20)];
    let pcapng = dir.join("vxlan-ipv4.pcapng");
    let mut expected = Vec::new();
    {
        let mut writer =
            PcapNgWriter::with_endianness(File::create(&pcapng).expect("create"), Endianness::Big)
                .expect("pcapng");
        for tsresol in interfaces {
            let mut interface = InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0);
            if let Some(tsresol) = tsresol {
                interface
                    .options
                    .push(InterfaceDescriptionOption::IfTsResol(tsresol));
            }
            writer.write_pcapng_block(interface).expect("write");
        }
        for (index, (_, _, data)) in frames.iter().enumerate() {
            let interface = index % interfaces.len();
            // 2025-01-01T00:00:00Z plus index eighths of a second, exact in every resolution.
            let seconds = 1_735_689_600u64;
            let eighths = index as u64;
            let raw = match interfaces[interface] {
                Some(9) => seconds * 1_000_000_000 + eighths * 125_000_000,
                None => seconds * 1_000_000 + eighths * 125_000,
                _ => (seconds << 20) + eighths * (1 << 17),
            };
            expected.push(Duration::from_secs(seconds) + Duration::from_millis(eighths * 125));
            writer
                .write_pcapng_block(EnhancedPacketBlock {
                    interface_id: interface as u32,
                    timestamp: Duration::from_nanos(raw),
                    original_len: data.len() as u32,
                    data: Cow::Borrowed(data),
                    options: vec![],
                })
                .expect("write");
        }
    }
    let output = dir.join("from-pcapng.pcap");
    let report = run_ok([OsStr::new("decap"), pcapng.as_os_str(), output.as_os_str()]);
    assert_eq!(
        count(&report, "decapsulated"),
        frames.len() as u64,
        "{report}"
    );
    let decapsulated = read_pcap(&output);
    let times: Vec<Duration> = decapsulated.iter().map(|(time, _, _)| *time).collect();
    assert_eq!(times, expected);
    let inner = read_pcap(&dir.join("decap-ipv4.pcap"));
    for ((_, _, got), (_, _, want)) in decapsulated.iter().zip(&inner) {
        assert_eq!(got, want);
    }

    // Wireshark reads the same times from the pcapng we wrote.
    if have_tshark() {
        let epochs = tshark(&pcapng, &["-T", "fields", "-e", "frame.time_epoch"]);
        let ours: String = expected
            .iter()
            .map(|t| format!("{}.{:09}\n", t.as_secs(), t.subsec_nanos()))
            .collect();
        assert_eq!(epochs, ours);
    }
}

#[test]
fn encap_then_decap_on_the_command_line() {
    let (dir, _) = demo("cli");
    let inner = dir.join("inner.pcap");
    let outer = dir.join("outer6.pcap");
    let icmp = dir.join("icmp6.pcap");
    let back = dir.join("back.pcap");

    // IPv6 underlay, jumbo MTU, tags carried: every frame goes through and comes back.
    let report = run_ok([
        "encap",
        inner.to_str().expect("UTF-8 path"),
        outer.to_str().expect("UTF-8 path"),
        "--vni",
        "16777215",
        "--local",
        "2001:db8::10",
        "--remote",
        "2001:db8::20",
        "--mtu",
        "9000",
        "--carry-vlan",
        "--ttl",
        "inherit",
        "--tos",
        "inherit",
        "--source-ports",
        "32768-60999",
        "--local-mac",
        "02:00:00:00:00:10",
        "--remote-mac",
        "02-00-00-00-00-20",
        "--icmp-out",
        icmp.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(count(&report, "encapsulated"), 6, "{report}");
    assert_eq!(count(&report, "dropped"), 0, "{report}");
    assert_eq!(read_pcap(&icmp).len(), 0);
    let outer_frames = read_pcap(&outer);
    for (_, _, frame) in &outer_frames {
        assert_eq!(&frame[..12], &[2, 0, 0, 0, 0, 0x20, 2, 0, 0, 0, 0, 0x10]);
        let source_port = u16::from_be_bytes([frame[54], frame[55]]);
        assert!((32768..=60999).contains(&source_port), "{source_port}");
    }

    let report = run_ok([
        OsStr::new("decap"),
        OsStr::new("--carry-vlan"),
        outer.as_os_str(),
        back.as_os_str(),
    ]);
    assert_eq!(count(&report, "vni 16777215"), 6, "{report}");
    assert_eq!(read_pcap(&back), read_pcap(&inner));

    // IPv4 underlay with the defaults: the tagged frame and the big one are refused, and the
    // big one's ICMP error goes to --icmp-out.
    let outer4 = dir.join("outer4.pcap");
    let icmp4 = dir.join("icmp4.pcap");
    let report = run_ok([
        "encap",
        inner.to_str().expect("UTF-8 path"),
        outer4.to_str().expect("UTF-8 path"),
        "--vni",
        "7",
        "--local",
        "198.18.0.10",
        "--remote",
        "198.18.0.20",
        "--icmp-out",
        icmp4.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(count(&report, "encapsulated"), 4, "{report}");
    assert_eq!(count(&report, "inner_vlan_tagged"), 1, "{report}");
    assert_eq!(count(&report, "mtu_exceeded"), 1, "{report}");
    assert_eq!(read_pcap(&outer4).len(), 4);
    assert_eq!(read_pcap(&icmp4).len(), 1);
}

#[test]
fn errors_name_the_problem_and_exit_with_1_usage_errors_with_2() {
    let dir = TempDir::new("errors");
    let out = dir.join("out.pcap");
    let out = out.to_str().expect("UTF-8 path");

    // Usage errors: clap exits with 2.
    let missing_vni = run([
        "encap",
        "in.pcap",
        out,
        "--local",
        "198.18.0.1",
        "--remote",
        "198.18.0.2",
    ]);
    assert_eq!(
        missing_vni.status.code(),
        Some(2),
        "{}",
        describe(&missing_vni)
    );
    let big_vni = run([
        "encap",
        "in.pcap",
        out,
        "--vni",
        "16777216",
        "--local",
        "198.18.0.1",
        "--remote",
        "198.18.0.2",
    ]);
    assert_eq!(big_vni.status.code(), Some(2), "{}", describe(&big_vni));
    assert!(String::from_utf8_lossy(&big_vni.stderr).contains("24 bits"));

    let expect_error = |args: &[&str], needle: &str| {
        let output = run(args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            describe(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(needle),
            "{args:?}: {needle:?} not in {stderr}"
        );
    };

    // A text file, a missing file, an output in a missing directory.
    let text = dir.join("notes.txt");
    fs::write(&text, "not a capture at all").expect("write");
    let text = text.to_str().expect("UTF-8 path");
    expect_error(&["decap", text, out], "not a pcap or pcapng capture");
    expect_error(
        &["decap", "/nonexistent/in.pcap", out],
        "/nonexistent/in.pcap",
    );

    // A capture without Ethernet headers.
    let raw = dir.join("raw.pcap");
    {
        let header = PcapHeader {
            datalink: DataLink::RAW,
            ..PcapHeader::default()
        };
        PcapWriter::with_header(File::create(&raw).expect("create"), header).expect("pcap");
    }
    let raw = raw.to_str().expect("UTF-8 path");
    expect_error(&["decap", raw, out], "link type 101 (RAW) is not supported");

    // An output that cannot be created.
    let empty = dir.join("empty.pcap");
    PcapWriter::new(File::create(&empty).expect("create")).expect("pcap");
    let empty = empty.to_str().expect("UTF-8 path");
    expect_error(
        &["decap", empty, "/nonexistent/dir/out.pcap"],
        "cannot create /nonexistent/dir/out.pcap",
    );

    // Configurations the library refuses, and mixed address families.
    let vxlan = [
        "encap",
        empty,
        out,
        "--vni",
        "1",
        "--local",
        "198.18.0.1",
        "--remote",
    ];
    expect_error(
        &[&vxlan[..], &["2001:db8::2"]].concat(),
        "different address families",
    );
    expect_error(
        &[&vxlan[..], &["198.18.0.2", "--port", "4790"]].concat(),
        "VXLAN-GPE",
    );
    expect_error(
        &[&vxlan[..], &["198.18.0.2", "--tos", "0xb9"]].concat(),
        "ECN",
    );
    expect_error(&[&vxlan[..], &["198.18.0.2", "--ttl", "0"]].concat(), "ttl");
    expect_error(&["decap", "--port", "4790", empty, out], "VXLAN-GPE");

    // Never write over the input.
    expect_error(&["decap", empty, empty], "both the input and the output");
    expect_error(
        &[&vxlan[..], &["198.18.0.2", "--icmp-out", out]].concat(),
        "both the output and the --icmp-out file",
    );
}
