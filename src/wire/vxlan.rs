//! The VXLAN header (RFC 7348 section 5), with the Group Based Policy extension
//! (draft-smith-vxlan-group-policy) and recognition of VXLAN-GPE
//! (draft-ietf-nvo3-vxlan-gpe) so that it is never mistaken for VXLAN.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |G|R|R|R|I|R|R|R|R|D|R|R|A|R|R|R|   Group Policy ID (GBP only)  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          VXLAN Network Identifier (VNI)       |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! In plain RFC 7348 everything but the I flag and the VNI is reserved: sent as zero and
//! ignored on receipt. VXLAN-GPE reuses bits of the first word: a version (0x30), the P flag
//! (0x04, "next protocol present") and a next-protocol byte in byte 3.

use core::fmt;

use crate::{DropReason, Vni};

/// A read/write wrapper around a VXLAN header and the inner frame behind it.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    pub type Field = core::ops::Range<usize>;
    pub const FLAGS: usize = 0;
    pub const GBP_FLAGS: usize = 1;
    pub const RESERVED1: Field = 1..4;
    pub const GROUP_POLICY_ID: Field = 2..4;
    pub const GPE_NEXT_PROTOCOL: usize = 3;
    pub const VNI: Field = 4..7;
    pub const RESERVED2: usize = 7;
    pub const PAYLOAD: usize = 8;
}

/// The length of a VXLAN header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// The IANA UDP port for VXLAN (RFC 7348 section 5).
pub const PORT: u16 = 4789;
/// The port Linux used before IANA assigned one, still its default without `dstport`.
pub const LINUX_LEGACY_PORT: u16 = 8472;
/// The IANA UDP port for VXLAN-GPE, a different protocol.
pub const GPE_PORT: u16 = 4790;

/// Flag bits of the first byte.
pub mod flags {
    /// I: the VNI is valid. The only flag RFC 7348 defines; must be set.
    pub const VNI: u8 = 0x08;
    /// G (VXLAN-GBP): the group policy id is present.
    pub const GBP: u8 = 0x80;
    /// P (VXLAN-GPE): the next-protocol byte is present.
    pub const GPE_NEXT_PROTOCOL: u8 = 0x04;
    /// The VXLAN-GPE version field; version 0 is the only one defined.
    pub const GPE_VERSION_MASK: u8 = 0x30;
    /// D (VXLAN-GBP, second byte): don't learn.
    pub const GBP_DONT_LEARN: u8 = 0x40;
    /// A (VXLAN-GBP, second byte): the group policy has already been applied.
    pub const GBP_POLICY_APPLIED: u8 = 0x08;
}

/// VXLAN-GPE next-protocol value for an Ethernet payload: the same payload as VXLAN's.
pub const GPE_NEXT_PROTOCOL_ETHERNET: u8 = 3;

/// The header is shorter than [`HEADER_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VXLAN header truncated")
    }
}

impl core::error::Error for Truncated {}

impl From<Truncated> for DropReason {
    fn from(_: Truncated) -> DropReason {
        DropReason::VxlanTruncated
    }
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer and checks that it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Truncated> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole header; after this no accessor panics.
    pub fn check_len(&self) -> Result<(), Truncated> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The first byte: all flags.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The I flag: the VNI is valid.
    pub fn vni_flag(&self) -> bool {
        self.flags() & flags::VNI != 0
    }

    /// The G flag of VXLAN-GBP.
    pub fn gbp_flag(&self) -> bool {
        self.flags() & flags::GBP != 0
    }

    /// The 24 bits after the flags: reserved in RFC 7348, GBP flags and group policy id in
    /// VXLAN-GBP, the next protocol (low byte) in VXLAN-GPE.
    pub fn reserved1(&self) -> u32 {
        let data = self.buffer.as_ref();
        u32::from_be_bytes([
            0,
            data[field::RESERVED1.start],
            data[field::RESERVED1.start + 1],
            data[field::RESERVED1.start + 2],
        ])
    }

    /// The second byte read as VXLAN-GBP flags.
    pub fn gbp_flags(&self) -> u8 {
        self.buffer.as_ref()[field::GBP_FLAGS]
    }

    /// Bytes 2..4 read as the VXLAN-GBP group policy id.
    pub fn group_policy_id(&self) -> u16 {
        let data = self.buffer.as_ref();
        u16::from_be_bytes([
            data[field::GROUP_POLICY_ID.start],
            data[field::GROUP_POLICY_ID.start + 1],
        ])
    }

    /// Byte 3 read as the VXLAN-GPE next protocol.
    pub fn gpe_next_protocol(&self) -> u8 {
        self.buffer.as_ref()[field::GPE_NEXT_PROTOCOL]
    }

    /// True if the header can only be VXLAN-GPE carrying something other than Ethernet: the P
    /// flag set with GPE version 0 and a non-zero next protocol that is not Ethernet.
    ///
    /// Such a payload is not an Ethernet frame; RFC 7348 receivers that ignore the P bit would
    /// hand garbage to the switch. A header with the P flag and next protocol Ethernet carries
    /// the same payload as VXLAN and is not refused here; nor is one whose version bits are not
    /// GPE's (hand-crafted or corrupted flags are RFC 7348 reserved bits, to be ignored).
    pub fn is_gpe_non_ethernet(&self) -> bool {
        let flags = self.flags();
        let next = self.gpe_next_protocol();
        flags & flags::GPE_NEXT_PROTOCOL != 0
            && flags & flags::GPE_VERSION_MASK == 0
            && next != 0
            && next != GPE_NEXT_PROTOCOL_ETHERNET
    }

    /// The VXLAN network identifier.
    pub fn vni(&self) -> Vni {
        let data = self.buffer.as_ref();
        Vni::from_u24_truncating(u32::from_be_bytes([
            0,
            data[field::VNI.start],
            data[field::VNI.start + 1],
            data[field::VNI.start + 2],
        ]))
    }

    /// The last, reserved byte.
    pub fn reserved2(&self) -> u8 {
        self.buffer.as_ref()[field::RESERVED2]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The inner Ethernet frame.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flags byte.
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the 24 bits after the flags (the low 24 bits of `value`).
    pub fn set_reserved1(&mut self, value: u32) {
        let [_, a, b, c] = value.to_be_bytes();
        self.buffer.as_mut()[field::RESERVED1].copy_from_slice(&[a, b, c]);
    }

    /// Sets the second byte (VXLAN-GBP flags).
    pub fn set_gbp_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::GBP_FLAGS] = value;
    }

    /// Sets bytes 2..4 (VXLAN-GBP group policy id).
    pub fn set_group_policy_id(&mut self, value: u16) {
        self.buffer.as_mut()[field::GROUP_POLICY_ID].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the VNI.
    pub fn set_vni(&mut self, vni: Vni) {
        let [_, a, b, c] = vni.get().to_be_bytes();
        self.buffer.as_mut()[field::VNI].copy_from_slice(&[a, b, c]);
    }

    /// Sets the last, reserved byte.
    pub fn set_reserved2(&mut self, value: u8) {
        self.buffer.as_mut()[field::RESERVED2] = value;
    }

    /// The inner Ethernet frame, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// The VXLAN Group Based Policy fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Gbp {
    /// D: the receiver must not learn the source of this frame.
    pub dont_learn: bool,
    /// A: the policy has already been applied.
    pub policy_applied: bool,
    /// The source group policy id.
    pub group_policy_id: u16,
}

/// How a receiver reads the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseOptions {
    /// Refuse frames with any reserved bit set, as Linux does by default, instead of ignoring
    /// them as RFC 7348 section 5 asks.
    pub strict_reserved_bits: bool,
    /// Read the VXLAN-GBP fields when the G flag is set. Without it, they are reserved bits.
    pub gbp: bool,
}

/// A validated VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The network identifier.
    pub vni: Vni,
    /// The Group Based Policy fields, when present and asked for.
    pub gbp: Option<Gbp>,
}

impl Repr {
    /// A plain RFC 7348 header for `vni`.
    pub const fn new(vni: Vni) -> Repr {
        Repr { vni, gbp: None }
    }

    /// Validates a header with the receive rules of RFC 7348 (or of Linux, in strict mode).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&T>,
        options: ParseOptions,
    ) -> Result<Repr, DropReason> {
        packet.check_len()?;
        let flags_byte = packet.flags();
        if flags_byte & flags::VNI == 0 {
            return Err(DropReason::VxlanNoVniFlag);
        }
        if packet.is_gpe_non_ethernet() {
            return Err(DropReason::VxlanGpe);
        }
        let gbp = if options.gbp && flags_byte & flags::GBP != 0 {
            let gbp_flags = packet.gbp_flags();
            Some(Gbp {
                dont_learn: gbp_flags & flags::GBP_DONT_LEARN != 0,
                policy_applied: gbp_flags & flags::GBP_POLICY_APPLIED != 0,
                group_policy_id: packet.group_policy_id(),
            })
        } else {
            None
        };
        if options.strict_reserved_bits {
            let (allowed_flags, reserved1_mask) = match gbp {
                Some(_) => (
                    flags::VNI | flags::GBP,
                    !(u32::from(flags::GBP_DONT_LEARN | flags::GBP_POLICY_APPLIED) << 16 | 0xFFFF),
                ),
                None => (flags::VNI, 0x00FF_FFFF),
            };
            if flags_byte & !allowed_flags != 0
                || packet.reserved1() & reserved1_mask & 0x00FF_FFFF != 0
                || packet.reserved2() != 0
            {
                return Err(DropReason::VxlanReservedBits);
            }
        }
        Ok(Repr {
            vni: packet.vni(),
            gbp,
        })
    }

    /// The length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header: the I flag (and G with GBP), the VNI, every reserved bit zero.
    /// `packet` must hold [`HEADER_LEN`] bytes (check with `check_len`).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        match self.gbp {
            None => {
                packet.set_flags(flags::VNI);
                packet.set_reserved1(0);
            }
            Some(gbp) => {
                packet.set_flags(flags::VNI | flags::GBP);
                packet.set_gbp_flags(
                    if gbp.dont_learn {
                        flags::GBP_DONT_LEARN
                    } else {
                        0
                    } | if gbp.policy_applied {
                        flags::GBP_POLICY_APPLIED
                    } else {
                        0
                    },
                );
                packet.set_group_policy_id(gbp.group_policy_id);
            }
        }
        packet.set_vni(self.vni);
        packet.set_reserved2(0);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // RFC 7348 section 5 header for VNI 42: flags 0x08, reserved zero. scapy agrees:
    // raw(VXLAN(flags=0x08, vni=42)) = 0800000000002a00 (python3-scapy 2.5).
    static VNI_42: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 0x2a, 0];
    // scapy: raw(VXLAN(flags=0x88, gpflags=0x48, gpid=0x1234, vni=0xFFFFFF)) = 88481234ffffff00:
    // G and I flags, D and A GBP flags, group 0x1234, the largest VNI.
    static GBP_MAX_VNI: [u8; 8] = [0x88, 0x48, 0x12, 0x34, 0xff, 0xff, 0xff, 0x00];
    // tcpdump's tests/vxlan.pcap, packet 1 (VNI 100), the VXLAN header.
    static TCPDUMP_VNI_100: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 0x64, 0];
    // suricata-verify vxlan-non-zero-reserved-fields, a header with every flag set, reserved1
    // non-zero and reserved2 = 1 (VNI 11). RFC 7348 receivers ignore all of that.
    static ALL_FLAGS: [u8; 8] = [0xff, 0x12, 0x34, 0x56, 0, 0, 0x0b, 0x01];
    // tcpdump's tests/nsh-over-vxlan-gpe.pcap: VXLAN-GPE flags 0x0c, next protocol 4 (NSH).
    static GPE_NSH: [u8; 8] = [0x0c, 0, 0, 0x04, 0, 0, 0x09, 0];
    // zeek's vxlan-triple-v2.pcap: flags 0x0c, next protocol 3 (Ethernet): VXLAN's payload.
    static GPE_ETHERNET: [u8; 8] = [0x0c, 0, 0, 0x03, 0, 0, 0x01, 0];

    fn parse(bytes: &[u8], options: ParseOptions) -> Result<Repr, DropReason> {
        Repr::parse(&Packet::new_unchecked(bytes), options)
    }

    const RFC: ParseOptions = ParseOptions {
        strict_reserved_bits: false,
        gbp: false,
    };
    const STRICT: ParseOptions = ParseOptions {
        strict_reserved_bits: true,
        gbp: false,
    };
    const GBP: ParseOptions = ParseOptions {
        strict_reserved_bits: true,
        gbp: true,
    };

    #[test]
    fn parse_plain() {
        let vni42 = Vni::new(42).unwrap();
        assert_eq!(parse(&VNI_42, RFC), Ok(Repr::new(vni42)));
        assert_eq!(parse(&VNI_42, STRICT), Ok(Repr::new(vni42)));
        assert_eq!(
            parse(&TCPDUMP_VNI_100, STRICT).unwrap().vni,
            Vni::new(100).unwrap()
        );
    }

    #[test]
    fn emit_plain() {
        let mut bytes = [0xAAu8; 8];
        Repr::new(Vni::new(42).unwrap()).emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, VNI_42);
    }

    #[test]
    fn vni_extremes_are_valid() {
        for vni in [Vni::new(0).unwrap(), Vni::MAX] {
            let mut bytes = [0u8; 8];
            Repr::new(vni).emit(&mut Packet::new_unchecked(&mut bytes[..]));
            assert_eq!(parse(&bytes, STRICT), Ok(Repr::new(vni)));
        }
    }

    #[test]
    fn gbp() {
        let expected = Repr {
            vni: Vni::MAX,
            gbp: Some(Gbp {
                dont_learn: true,
                policy_applied: true,
                group_policy_id: 0x1234,
            }),
        };
        assert_eq!(parse(&GBP_MAX_VNI, GBP), Ok(expected));
        let mut bytes = [0u8; 8];
        expected.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, GBP_MAX_VNI);
        // Without GBP configured the same bits are reserved: ignored, or refused when strict.
        assert_eq!(parse(&GBP_MAX_VNI, RFC), Ok(Repr::new(Vni::MAX)));
        assert_eq!(
            parse(&GBP_MAX_VNI, STRICT),
            Err(DropReason::VxlanReservedBits)
        );
        // GBP with a reserved GBP flag bit set is refused in strict mode.
        let mut odd = GBP_MAX_VNI;
        odd[1] |= 0x01;
        assert_eq!(parse(&odd, GBP), Err(DropReason::VxlanReservedBits));
    }

    #[test]
    fn reserved_bits_ignored_unless_strict() {
        assert_eq!(parse(&ALL_FLAGS, RFC).unwrap().vni, Vni::new(11).unwrap());
        assert_eq!(
            parse(&ALL_FLAGS, STRICT),
            Err(DropReason::VxlanReservedBits)
        );
        for (index, bit) in [(0usize, 0x01u8), (1, 0x80), (2, 0x01), (3, 0x10), (7, 0x01)] {
            let mut bytes = VNI_42;
            bytes[index] |= bit;
            assert!(parse(&bytes, RFC).is_ok(), "byte {index} bit {bit:#x}");
            assert_eq!(parse(&bytes, STRICT), Err(DropReason::VxlanReservedBits));
        }
    }

    #[test]
    fn no_vni_flag() {
        let mut bytes = VNI_42;
        bytes[0] = 0;
        assert_eq!(parse(&bytes, RFC), Err(DropReason::VxlanNoVniFlag));
        bytes[0] = 0xf7;
        assert_eq!(parse(&bytes, RFC), Err(DropReason::VxlanNoVniFlag));
    }

    #[test]
    fn gpe() {
        assert_eq!(parse(&GPE_NSH, RFC), Err(DropReason::VxlanGpe));
        assert_eq!(parse(&GPE_NSH, STRICT), Err(DropReason::VxlanGpe));
        assert_eq!(parse(&GPE_ETHERNET, RFC).unwrap().vni, Vni::new(1).unwrap());
        assert_eq!(
            parse(&GPE_ETHERNET, STRICT),
            Err(DropReason::VxlanReservedBits)
        );
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(parse(&VNI_42[..len], RFC), Err(DropReason::VxlanTruncated));
        }
    }

    #[test]
    fn payload() {
        let mut bytes = [0u8; 10];
        bytes[..8].copy_from_slice(&VNI_42);
        bytes[8..].copy_from_slice(&[1, 2]);
        assert_eq!(Packet::new_checked(&bytes[..]).unwrap().payload(), &[1, 2]);
    }
}
