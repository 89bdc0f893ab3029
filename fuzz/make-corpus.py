#!/usr/bin/env python3
"""Builds the seed corpus of the vxlan_decap fuzz target.

Reads every capture (classic pcap in either byte order and time resolution, or pcapng) in a
directory, by default ../shared/testdata/vxlan beside the repository, and writes each packet
as a file in fuzz/corpus/vxlan_decap/, named by the SHA-1 of its contents as libFuzzer names
its own finds. Adds a few frames it builds itself, with their checksums computed here.

The captures are third-party (see SOURCES.md beside them) and are not copied into the
repository: fuzz/corpus/ is git-ignored, and this script is what is committed.

The target reads two option bytes before the frame (see fuzz_targets/vxlan_decap.rs): byte 0
the receive configuration, byte 1 the re-encapsulation. Every packet is written twice: with
the default configuration (00 00), and with inner VLAN tags carried, the reply direction and
inherited TTL, TOS and DF, UDP checksums computed. Bit 5 of byte 0 (UDP port 8472) is set for
packets sent to port 8472, so that Linux-legacy captures get past the port check.

Python 3 standard library only.
"""

import argparse
import hashlib
import os
import struct
import sys

VXLAN_PORT = 4789
LINUX_LEGACY_PORT = 8472

# Byte 0: carry inner VLAN tags (bit 3). Byte 1: swap addresses (0), swap MACs (1), inherit
# TTL (2) and TOS (3), IPv4 UDP checksum (4), DF inherit (bits 6-7 = 2).
DEFAULT_OPTIONS = (0x00, 0x00)
REPLY_OPTIONS = (0x08, 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x80)
PORT_8472_BIT = 0x20

# Link types (https://www.tcpdump.org/linktypes.html) and how to turn each into Ethernet.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
DLT_RAW_BSD = (12, 14)


def ethernet_header(ethertype, dst=b"\x02\x00\x00\x00\x00\x02", src=b"\x02\x00\x00\x00\x00\x01"):
    return dst + src + struct.pack("!H", ethertype)


def ip_ethertype(packet):
    version = packet[0] >> 4 if packet else 0
    return {4: 0x0800, 6: 0x86DD}.get(version)


def to_ethernet(linktype, data):
    """The packet as an Ethernet frame, or None for a link type without one."""
    if linktype == LINKTYPE_ETHERNET:
        return data
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6) + DLT_RAW_BSD:
        ethertype = ip_ethertype(data)
        return ethernet_header(ethertype) + data if ethertype else None
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        ethertype = ip_ethertype(data[4:])
        return ethernet_header(ethertype) + data[4:] if ethertype else None
    if linktype == LINKTYPE_LINUX_SLL and len(data) >= 16:
        (address_len,) = struct.unpack("!H", data[4:6])
        src = (data[6 : 6 + min(address_len, 6)] + bytes(6))[:6]
        (protocol,) = struct.unpack("!H", data[14:16])
        return ethernet_header(protocol, src=src) + data[16:]
    if linktype == LINKTYPE_LINUX_SLL2 and len(data) >= 20:
        (protocol,) = struct.unpack("!H", data[0:2])
        address_len = data[11]
        src = (data[12 : 12 + min(address_len, 6)] + bytes(6))[:6]
        return ethernet_header(protocol, src=src) + data[20:]
    return None


def read_classic_pcap(data, name):
    """Yields (linktype, packet bytes) of a classic pcap file."""
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{name}: not a pcap file")
    if len(data) < 24:
        raise ValueError(f"{name}: truncated file header")
    (linktype,) = struct.unpack(endian + "I", data[20:24])
    linktype &= 0x0FFFFFFF  # The high bits may hold an FCS length (pcap-savefile(5)).
    offset = 24
    while offset + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        offset += 16
        if offset + caplen > len(data):
            print(f"{name}: last record truncated, skipped", file=sys.stderr)
            return
        yield linktype, data[offset : offset + caplen]
        offset += caplen


def read_pcapng(data, name):
    """Yields (linktype, packet bytes) of a pcapng file, every section and interface."""
    offset = 0
    endian = "<"
    linktypes = []
    while offset + 12 <= len(data):
        block_type_raw = data[offset : offset + 4]
        if block_type_raw == b"\x0a\x0d\x0d\x0a":
            # Section header: its byte-order magic says how to read this section.
            byte_order = data[offset + 8 : offset + 12]
            if byte_order == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif byte_order == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise ValueError(f"{name}: bad pcapng byte-order magic")
            linktypes = []
        block_type, block_len = struct.unpack(endian + "II", data[offset : offset + 8])
        if block_len < 12 or offset + block_len > len(data):
            print(f"{name}: truncated pcapng block at {offset}, stopped", file=sys.stderr)
            return
        body = data[offset + 8 : offset + block_len - 4]
        if block_type == 1 and len(body) >= 8:  # Interface description
            (linktype,) = struct.unpack(endian + "H", body[0:2])
            linktypes.append(linktype)
        elif block_type == 6 and len(body) >= 20:  # Enhanced packet
            interface, _, _, caplen, _ = struct.unpack(endian + "IIIII", body[0:20])
            if interface < len(linktypes):
                yield linktypes[interface], body[20 : 20 + caplen]
        elif block_type == 3 and len(body) >= 4 and linktypes:  # Simple packet
            (original_len,) = struct.unpack(endian + "I", body[0:4])
            yield linktypes[0], body[4 : 4 + min(original_len, len(body) - 4)]
        elif block_type == 2 and len(body) >= 20:  # Obsolete packet block
            interface, _, _, _, caplen, _ = struct.unpack(endian + "HHIIII", body[0:20])
            if interface < len(linktypes):
                yield linktypes[interface], body[20 : 20 + caplen]
        offset += block_len


def read_capture(path):
    with open(path, "rb") as f:
        data = f.read()
    name = os.path.basename(path)
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        return "pcapng", list(read_pcapng(data, name))
    return "pcap", list(read_classic_pcap(data, name))


def udp_destination_port(frame):
    """The outer UDP destination port of an Ethernet frame, or None."""
    if len(frame) < 14:
        return None
    (ethertype,) = struct.unpack("!H", frame[12:14])
    ip = frame[14:]
    if ethertype == 0x0800 and len(ip) >= 20 and ip[9] == 17:
        udp = ip[(ip[0] & 0x0F) * 4 :]
    elif ethertype == 0x86DD and len(ip) >= 40 and ip[6] == 17:
        udp = ip[40:]
    else:
        return None
    return struct.unpack("!H", udp[2:4])[0] if len(udp) >= 4 else None


# Synthetic frames, built here with their checksums.


def checksum(data):
    """RFC 1071 Internet checksum (complemented)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_header(src, dst, protocol, payload_len, tos=0, ttl=64, dont_fragment=True, ident=0):
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        tos,
        20 + payload_len,
        ident,
        0x4000 if dont_fragment else 0,
        ttl,
        protocol,
        0,
        bytes(src),
        bytes(dst),
    )
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:]


def ipv6_header(src, dst, next_header, payload_len, traffic_class=0, hop_limit=64, flow=0):
    first_word = (6 << 28) | (traffic_class << 20) | flow
    return struct.pack("!IHBB", first_word, payload_len, next_header, hop_limit) + bytes(src) + bytes(dst)


def udp_datagram(sport, dport, payload, pseudo):
    """A UDP header and payload, its checksum over `pseudo` (addresses) computed."""
    length = 8 + len(payload)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    total = checksum(pseudo + struct.pack("!HH", 17, length) + header + payload)
    return struct.pack("!HHHH", sport, dport, length, total or 0xFFFF) + payload


def vxlan_header(vni, flags=0x08, reserved1=0):
    return struct.pack("!BBH", flags, (reserved1 >> 16) & 0xFF, reserved1 & 0xFFFF) + struct.pack("!I", vni << 8)


V4_LOCAL = (198, 18, 0, 1)
V4_REMOTE = (198, 18, 0, 2)
V6_LOCAL = bytes.fromhex("20010db8000000000000000000000001")
V6_REMOTE = bytes.fromhex("20010db8000000000000000000000002")
INNER_MACS = bytes.fromhex("02000000000b" "02000000000a")


def inner_ipv4_udp(tos=0, length=64):
    payload = bytes(range(length - 14 - 20 - 8))
    udp = udp_datagram(40000, 53, payload, bytes((10, 0, 0, 1, 10, 0, 0, 2)))
    return INNER_MACS + b"\x08\x00" + ipv4_header((10, 0, 0, 1), (10, 0, 0, 2), 17, len(udp), tos=tos) + udp


def inner_ipv6_tcp(traffic_class=0):
    # A SYN, checksum left zero: a switch never looks at it.
    tcp = struct.pack("!HHIIBBHHH", 50000, 443, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    src = bytes.fromhex("fd000000000000000000000000000001")
    dst = bytes.fromhex("fd000000000000000000000000000002")
    return INNER_MACS + b"\x86\xdd" + ipv6_header(src, dst, 6, len(tcp), traffic_class) + tcp


def inner_tagged_arp():
    arp = bytes.fromhex("0001080006040001" "02000000000a0a000001" "0000000000000a000002")
    return b"\xff" * 6 + INNER_MACS[6:] + b"\x81\x00\x00\x05\x08\x06" + arp + bytes(18)


def outer_ipv4(inner, vni=42, tos=0, vxlan=None, port=VXLAN_PORT):
    payload = (vxlan or vxlan_header(vni)) + inner
    udp = udp_datagram(49152, port, payload, bytes(V4_LOCAL + V4_REMOTE))
    ip = ipv4_header(V4_LOCAL, V4_REMOTE, 17, len(udp), tos=tos)
    return ethernet_header(0x0800) + ip + udp


def outer_ipv6(inner, vni=42, traffic_class=0, port=VXLAN_PORT):
    payload = vxlan_header(vni) + inner
    udp = udp_datagram(49153, port, payload, V6_LOCAL + V6_REMOTE)
    return ethernet_header(0x86DD) + ipv6_header(V6_LOCAL, V6_REMOTE, 17, len(udp), traffic_class) + udp


def synthetic_seeds():
    """(option bytes, frame) pairs that reach the accepting paths of decap."""
    return [
        # The minimal valid frames: IPv4 and IPv6 underlays, checksums computed.
        (DEFAULT_OPTIONS, outer_ipv4(inner_ipv4_udp())),
        (DEFAULT_OPTIONS, outer_ipv6(inner_ipv6_tcp())),
        # RFC 6040: outer CE over inner ECT(0) marks the inner CE; outer ECT(1) over ECT(0).
        (DEFAULT_OPTIONS, outer_ipv4(inner_ipv4_udp(tos=0xB8 | 0b10), tos=0x03)),
        (REPLY_OPTIONS, outer_ipv6(inner_ipv4_udp(tos=0b10), traffic_class=0x01)),
        (DEFAULT_OPTIONS, outer_ipv6(inner_ipv6_tcp(traffic_class=0b10), traffic_class=0x03)),
        # Outer CE over a Not-ECT inner packet: dropped.
        (DEFAULT_OPTIONS, outer_ipv4(inner_ipv4_udp(), tos=0x03)),
        # A tagged inner frame, carried (bit 3) and not.
        (REPLY_OPTIONS, outer_ipv4(inner_tagged_arp(), vni=0xFFFFFF)),
        (DEFAULT_OPTIONS, outer_ipv4(inner_tagged_arp())),
        # VXLAN-GBP (G flag, D and A flags, group 0x1234), read with bit 1 and strict (bit 0).
        ((0x03, 0x00), outer_ipv4(inner_ipv4_udp(), vxlan=vxlan_header(7, flags=0x88, reserved1=0x481234))),
        # The Linux legacy port.
        ((PORT_8472_BIT, 0x00), outer_ipv4(inner_ipv4_udp(), port=LINUX_LEGACY_PORT)),
    ]


def write_seed(directory, options, frame):
    data = bytes(options) + frame
    path = os.path.join(directory, hashlib.sha1(data).hexdigest())
    with open(path, "wb") as f:
        f.write(data)
    return path


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "captures",
        nargs="?",
        default=os.path.join(repo, "..", "shared", "testdata", "vxlan"),
        help="directory of pcap/pcapng files (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        default=os.path.join(here, "corpus"),
        help="corpus root; seeds go in OUT/vxlan_decap (default: %(default)s)",
    )
    args = parser.parse_args()

    decap_dir = os.path.join(args.out, "vxlan_decap")
    os.makedirs(decap_dir, exist_ok=True)
    # tunnel_roundtrip's input is a structure decoded by `arbitrary`: bytes written here would
    # mean nothing in particular, so it starts empty and libFuzzer grows its own corpus.
    os.makedirs(os.path.join(args.out, "tunnel_roundtrip"), exist_ok=True)

    written = set()
    if os.path.isdir(args.captures):
        for entry in sorted(os.listdir(args.captures)):
            path = os.path.join(args.captures, entry)
            if not os.path.isfile(path) or not entry.endswith((".pcap", ".pcapng", ".cap")):
                continue
            try:
                kind, packets = read_capture(path)
            except ValueError as error:
                print(f"skipped: {error}", file=sys.stderr)
                continue
            frames = 0
            for linktype, data in packets:
                frame = to_ethernet(linktype, data)
                if frame is None:
                    continue
                port_bit = PORT_8472_BIT if udp_destination_port(frame) == LINUX_LEGACY_PORT else 0
                for receive, resend in (DEFAULT_OPTIONS, REPLY_OPTIONS):
                    written.add(write_seed(decap_dir, (receive | port_bit, resend), frame))
                frames += 1
            print(f"{entry}: {kind}, {frames} of {len(packets)} packets", file=sys.stderr)
    else:
        print(f"no captures at {args.captures}: synthetic seeds only", file=sys.stderr)

    for options, frame in synthetic_seeds():
        written.add(write_seed(decap_dir, options, frame))
    print(f"{len(written)} seeds in {decap_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
