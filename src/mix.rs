//! The multiply-fold mixer the crate's non-cryptographic hashes are built from.

/// The 64 x 64 -> 128-bit product folded to 64 bits (the mixing step of foldhash and wyhash):
/// cheap, and every input bit reaches every output bit.
#[inline(always)]
pub(crate) const fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = (a as u128).wrapping_mul(b as u128);
    (full as u64) ^ ((full >> 64) as u64)
}

/// Marsaglia's xorshift64 from `seed` (not zero): the tests' source of reproducible
/// pseudo-random numbers.
#[cfg(test)]
pub(crate) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
