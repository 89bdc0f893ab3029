//! Internet checksums (RFC 1071) and their incremental update (RFC 1624).
//!
//! smoltcp's [`smoltcp::wire::checksum`] computes full checksums and pseudo-headers; what it
//! lacks, and what a forwarding path needs, is the incremental update of a checksum when one
//! field changes, and a checksum of a fixed 20-byte IPv4 header cheap enough for every packet.

pub use smoltcp::wire::checksum::{combine, data, pseudo_header_v4, pseudo_header_v6};

/// Folds a 32-bit one's complement sum into 16 bits.
#[inline]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum as u16
}

/// Folds a 64-bit one's complement sum into 16 bits.
#[inline]
pub const fn fold64(sum: u64) -> u16 {
    let sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    let sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    fold(sum as u32)
}

/// The one's complement sum of `data` (not complemented), as a big-endian value, computed
/// eight bytes at a time. Equal to [`data`] for every input; faster on long frames.
pub fn sum_bytes(data: &[u8]) -> u16 {
    let mut accum: u64 = 0;
    let (chunks, rest) = data.as_chunks::<4>();
    for chunk in chunks {
        accum += u64::from(u32::from_ne_bytes(*chunk));
    }
    let mut rest = rest;
    if let [a, b, tail @ ..] = rest {
        accum += u64::from(u16::from_ne_bytes([*a, *b]));
        rest = tail;
    }
    if let [last] = rest {
        accum += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    u16::from_be(fold64(accum))
}

/// The checksum field value for an IPv4 header of `header_len` bytes at the start of
/// `header`, computed with the checksum field taken as zero. `None` if `header` is shorter.
pub fn ipv4_header(header: &[u8], header_len: usize) -> Option<u16> {
    let header = header.get(..header_len)?;
    let sum = u32::from(sum_bytes(header)) + 0xFFFF
        - u32::from(u16::from_be_bytes([*header.get(10)?, *header.get(11)?]));
    Some(!fold(sum))
}

/// True if the IPv4 header of `header_len` bytes at the start of `header` has a valid
/// checksum.
#[inline]
pub fn ipv4_header_valid(header: &[u8], header_len: usize) -> bool {
    match header.get(..header_len) {
        Some(header) => sum_bytes(header) == 0xFFFF,
        None => false,
    }
}

/// True if a 20-byte IPv4 header (no options) has a valid checksum: five 32-bit loads, no
/// loop, for the per-packet fast paths.
#[inline(always)]
pub fn ipv4_header_valid_20(header: &[u8; 20]) -> bool {
    let mut sum: u64 = 0;
    for word in header.as_chunks::<4>().0 {
        sum += u64::from(u32::from_ne_bytes(*word));
    }
    // A valid header sums to 0xFFFF, which reads the same in either byte order.
    fold64(sum) == 0xFFFF
}

/// Updates a checksum field for a 16-bit word of the covered data changing from `old` to
/// `new`: RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`, which never produces `-0` (0xFFFF)
/// from a correct checksum over non-zero data.
#[inline]
pub const fn update16(checksum: u16, old: u16, new: u16) -> u16 {
    let sum = (!checksum as u32) + (!old as u32) + (new as u32);
    !fold(sum)
}

#[cfg(test)]
mod test {
    use super::*;

    /// The worked example of Wikipedia's "Internet checksum" article (192.168.0.1 ->
    /// 192.168.0.199, UDP, DF): its checksum field is 0xb861.
    const WIKIPEDIA_HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn ipv4_header_example() {
        assert_eq!(ipv4_header(&WIKIPEDIA_HEADER, 20), Some(0xb861));
        assert!(ipv4_header_valid(&WIKIPEDIA_HEADER, 20));
        assert!(ipv4_header_valid_20(&WIKIPEDIA_HEADER));
        let mut bad = WIKIPEDIA_HEADER;
        bad[10] ^= 1;
        assert!(!ipv4_header_valid(&bad, 20));
        assert!(!ipv4_header_valid_20(&bad));
        assert_eq!(ipv4_header(&WIKIPEDIA_HEADER[..19], 20), None);
    }

    #[test]
    fn sum_bytes_matches_smoltcp() {
        let bytes: [u8; 67] = core::array::from_fn(|i| (i * 37 + 11) as u8);
        for len in 0..bytes.len() {
            assert_eq!(sum_bytes(&bytes[..len]), data(&bytes[..len]), "len {len}");
        }
    }

    #[test]
    fn incremental_matches_full() {
        let mut header = WIKIPEDIA_HEADER;
        // Change the TOS byte (word 0) from 0x4500 to 0x4503 and the TTL/protocol word.
        let checksum = u16::from_be_bytes([header[10], header[11]]);
        let updated = update16(checksum, 0x4500, 0x4503);
        header[1] = 0x03;
        header[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(ipv4_header(&header, 20), Some(updated));
    }

    #[test]
    fn fold_carries() {
        assert_eq!(fold(0x0001_FFFF), 0x0001);
        assert_eq!(fold(0xFFFF_FFFF), 0xFFFF);
        assert_eq!(fold64(0xFFFF_FFFF_FFFF_FFFF), 0xFFFF);
    }
}
