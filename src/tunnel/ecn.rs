//! ECN propagation through the tunnel (RFC 6040, normal mode).

/// The two-bit ECN field of an IP header (RFC 3168).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Ecn {
    /// Not ECN-capable transport, 0b00.
    NotEct = 0b00,
    /// ECN-capable transport ECT(1), 0b01.
    Ect1 = 0b01,
    /// ECN-capable transport ECT(0), 0b10.
    Ect0 = 0b10,
    /// Congestion experienced, 0b11.
    Ce = 0b11,
}

impl Ecn {
    /// The ECN field of a TOS or traffic-class byte (its two low bits).
    #[inline]
    pub const fn from_tos(tos: u8) -> Ecn {
        match tos & 0b11 {
            0b00 => Ecn::NotEct,
            0b01 => Ecn::Ect1,
            0b10 => Ecn::Ect0,
            _ => Ecn::Ce,
        }
    }

    /// The two-bit value.
    #[inline]
    pub const fn bits(self) -> u8 {
        self as u8
    }
}

/// The outer ECN field at encapsulation: a copy of the inner one, CE included (RFC 6040
/// section 4.1, normal mode). Linux instead sends CE as ECT(0), the RFC 3168 limited-functionality
/// option; both are decapsulated correctly by an RFC 6040 receiver, and the copy keeps
/// congestion visible to the underlay's AQM.
#[inline]
pub const fn encap(inner: Ecn) -> Ecn {
    inner
}

/// The inner ECN field after decapsulation (RFC 6040 section 4.2, figure 4), or `None` when
/// the packet must be dropped: a congestion mark on a transport that cannot take one.
///
/// | inner \ outer | Not-ECT | ECT(0) | ECT(1) | CE   |
/// |---------------|---------|--------|--------|------|
/// | Not-ECT       | Not-ECT | Not-ECT| Not-ECT| drop |
/// | ECT(0)        | ECT(0)  | ECT(0) | ECT(1) | CE   |
/// | ECT(1)        | ECT(1)  | ECT(1) | ECT(1) | CE   |
/// | CE            | CE      | CE     | CE     | CE   |
#[inline]
pub const fn decap(inner: Ecn, outer: Ecn) -> Option<Ecn> {
    match (inner, outer) {
        (Ecn::NotEct, Ecn::Ce) => None,
        (Ecn::NotEct, _) => Some(Ecn::NotEct),
        (Ecn::Ce, _) | (_, Ecn::Ce) => Some(Ecn::Ce),
        (Ecn::Ect0, Ecn::Ect1) => Some(Ecn::Ect1),
        (inner, _) => Some(inner),
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use Ecn::*;

    /// The table of ../shared/SPEC-overlay.md, itself RFC 6040 figure 4, row by row.
    #[test]
    fn decap_table_exactly() {
        let outer = [NotEct, Ect0, Ect1, Ce];
        let table: [(Ecn, [Option<Ecn>; 4]); 4] = [
            (NotEct, [Some(NotEct), Some(NotEct), Some(NotEct), None]),
            (Ect0, [Some(Ect0), Some(Ect0), Some(Ect1), Some(Ce)]),
            (Ect1, [Some(Ect1), Some(Ect1), Some(Ect1), Some(Ce)]),
            (Ce, [Some(Ce), Some(Ce), Some(Ce), Some(Ce)]),
        ];
        for (inner, row) in table {
            for (outer, expected) in outer.iter().zip(row) {
                assert_eq!(
                    decap(inner, *outer),
                    expected,
                    "inner {inner:?} outer {outer:?}"
                );
            }
        }
    }

    #[test]
    fn encap_copies_ce() {
        for ecn in [NotEct, Ect0, Ect1, Ce] {
            assert_eq!(encap(ecn), ecn);
        }
    }

    #[test]
    fn bits_round_trip() {
        for ecn in [NotEct, Ect0, Ect1, Ce] {
            assert_eq!(Ecn::from_tos(0xb8 | ecn.bits()), ecn);
        }
        assert_eq!(Ect0.bits(), 0b10);
        assert_eq!(Ect1.bits(), 0b01);
    }
}
