//! IEEE 802.1Q VLAN tags (smoltcp has none).
//!
//! A tag sits between the source MAC and the EtherType of an Ethernet frame: a tag protocol
//! identifier (TPID, 0x8100 for 802.1Q, 0x88A8 for an 802.1ad service tag), then the tag
//! control information (priority, drop-eligible bit, VLAN id), then the EtherType of what
//! follows. [`Packet`] views the four bytes after the TPID: the TCI and the inner EtherType,
//! with the payload behind them, as smoltcp views a header and its payload.

use core::fmt;

/// A read/write wrapper around an 802.1Q tag's TCI and inner EtherType, and the payload.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    pub type Field = core::ops::Range<usize>;
    pub const TCI: Field = 0..2;
    pub const ETHERTYPE: Field = 2..4;
    pub const PAYLOAD: usize = 4;
}

/// The length of a tag after its TPID: TCI and EtherType.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// The tag is shorter than [`HEADER_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("802.1Q tag truncated")
    }
}

impl core::error::Error for Truncated {}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer and checks that it holds a whole tag.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Truncated> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole tag; after this no accessor panics.
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

    fn tci(&self) -> u16 {
        let data = self.buffer.as_ref();
        u16::from_be_bytes([data[field::TCI.start], data[field::TCI.start + 1]])
    }

    /// The priority code point (IEEE 802.1p class of service), 0..=7.
    pub fn priority(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// The drop eligible indicator.
    pub fn drop_eligible(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// The VLAN identifier, 0..=4095.
    pub fn vlan_id(&self) -> u16 {
        self.tci() & 0x0FFF
    }

    /// The EtherType of what follows the tag.
    pub fn ethertype(&self) -> u16 {
        let data = self.buffer.as_ref();
        u16::from_be_bytes([
            data[field::ETHERTYPE.start],
            data[field::ETHERTYPE.start + 1],
        ])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The bytes after the tag.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_tci(&mut self, value: u16) {
        self.buffer.as_mut()[field::TCI].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the priority code point; only the low three bits of `value` are used.
    pub fn set_priority(&mut self, value: u8) {
        let tci = (self.tci() & 0x1FFF) | (u16::from(value & 7) << 13);
        self.set_tci(tci);
    }

    /// Sets the drop eligible indicator.
    pub fn set_drop_eligible(&mut self, value: bool) {
        let tci = (self.tci() & !0x1000) | if value { 0x1000 } else { 0 };
        self.set_tci(tci);
    }

    /// Sets the VLAN identifier; only the low twelve bits of `value` are used.
    pub fn set_vlan_id(&mut self, value: u16) {
        let tci = (self.tci() & 0xF000) | (value & 0x0FFF);
        self.set_tci(tci);
    }

    /// Sets the EtherType of what follows the tag.
    pub fn set_ethertype(&mut self, value: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&value.to_be_bytes());
    }

    /// The bytes after the tag, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// A validated 802.1Q tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Priority code point, 0..=7.
    pub priority: u8,
    /// Drop eligible indicator.
    pub drop_eligible: bool,
    /// VLAN identifier, 0..=4095 (0 means priority-tagged only; 4095 is reserved).
    pub vlan_id: u16,
    /// EtherType of what follows.
    pub ethertype: u16,
}

impl Repr {
    /// Reads a tag.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr, Truncated> {
        packet.check_len()?;
        Ok(Repr {
            priority: packet.priority(),
            drop_eligible: packet.drop_eligible(),
            vlan_id: packet.vlan_id(),
            ethertype: packet.ethertype(),
        })
    }

    /// The length of the emitted tag (after the TPID).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the tag; `packet` must hold [`HEADER_LEN`] bytes (check with `check_len`).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_tci(
            (u16::from(self.priority & 7) << 13)
                | if self.drop_eligible { 0x1000 } else { 0 }
                | (self.vlan_id & 0x0FFF),
        );
        packet.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // Both vectors are scapy's (python3-scapy 2.5, Debian), after the TPID:
    // raw(Dot1Q(prio=0, id=0, vlan=32, type=0x0800)) = 00200800, followed here by the first
    // two bytes of an IPv4 header as payload.
    static TAG_VLAN32: [u8; 6] = [0x00, 0x20, 0x08, 0x00, 0x45, 0x00];
    // raw(Dot1Q(prio=5, id=1, vlan=4094, type=0x0806)) = bffe0806.
    static TAG_PRIORITY: [u8; 4] = [0xBF, 0xFE, 0x08, 0x06];

    #[test]
    fn parse() {
        let packet = Packet::new_checked(&TAG_VLAN32[..]).unwrap();
        let repr = Repr::parse(&packet).unwrap();
        assert_eq!(
            repr,
            Repr {
                priority: 0,
                drop_eligible: false,
                vlan_id: 32,
                ethertype: 0x0800
            }
        );
        assert_eq!(packet.payload(), &[0x45, 0x00]);

        let repr = Repr::parse(&Packet::new_unchecked(&TAG_PRIORITY[..])).unwrap();
        assert_eq!(
            (repr.priority, repr.drop_eligible, repr.vlan_id),
            (5, true, 4094)
        );
        assert_eq!(repr.ethertype, 0x0806);
    }

    #[test]
    fn emit() {
        let repr = Repr {
            priority: 5,
            drop_eligible: true,
            vlan_id: 4094,
            ethertype: 0x0806,
        };
        let mut bytes = [0u8; 4];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, TAG_PRIORITY);
    }

    #[test]
    fn setters_keep_other_fields() {
        let mut bytes = TAG_PRIORITY;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_vlan_id(7);
        packet.set_priority(1);
        packet.set_drop_eligible(false);
        assert_eq!(
            (packet.priority(), packet.drop_eligible(), packet.vlan_id()),
            (1, false, 7)
        );
        assert_eq!(packet.ethertype(), 0x0806);
    }

    #[test]
    fn truncated() {
        assert_eq!(Packet::new_checked(&TAG_VLAN32[..3]), Err(Truncated));
        assert!(Repr::parse(&Packet::new_unchecked(&[0u8; 0][..])).is_err());
    }
}
