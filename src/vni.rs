//! The VXLAN network identifier.

use core::fmt;

/// A VXLAN network identifier: 24 bits (RFC 7348 section 5). Every value, 0 and 0xFFFFFF
/// included, is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Vni(u32);

impl Vni {
    /// The largest VNI, 2^24 - 1.
    pub const MAX: Vni = Vni(0x00FF_FFFF);

    /// A VNI from a number, or an error when it does not fit in 24 bits.
    pub const fn new(value: u32) -> Result<Vni, InvalidVni> {
        if value <= Self::MAX.0 {
            Ok(Vni(value))
        } else {
            Err(InvalidVni(value))
        }
    }

    /// The low 24 bits of `value`, for values read from a 24-bit wire field.
    pub const fn from_u24_truncating(value: u32) -> Vni {
        Vni(value & Self::MAX.0)
    }

    /// The VNI as a number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl TryFrom<u32> for Vni {
    type Error = InvalidVni;
    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Vni::new(value)
    }
}

impl From<Vni> for u32 {
    fn from(vni: Vni) -> u32 {
        vni.0
    }
}

/// A number that is not a VNI: it does not fit in 24 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidVni(pub u32);

impl fmt::Display for InvalidVni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VNI {} does not fit in 24 bits (maximum 16777215)",
            self.0
        )
    }
}

impl core::error::Error for InvalidVni {}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(Vni::new(0).unwrap().get(), 0);
        assert_eq!(Vni::new(0xFF_FFFF).unwrap(), Vni::MAX);
        assert_eq!(Vni::new(0x100_0000), Err(InvalidVni(0x100_0000)));
        assert_eq!(Vni::from_u24_truncating(0x1234_5678).get(), 0x34_5678);
    }
}
