//! Helper functions handlers may call (`naam.h` declares them). rbpf calls helpers as plain
//! `fn(u64 x5) -> u64` with no context, so every helper here is a pure function.
//!
//! **Stack alignment.** rbpf's x86_64 JIT calls a helper with the stack 8 bytes off the
//! 16-byte alignment the System V ABI promises at a call. A helper must not depend on it:
//! integer work only, no calls into code that may spill SIMD registers with aligned moves
//! (formatting, allocation, most of `std`), no `#[repr(align(16))]` locals. `naam_hash64` is
//! integer arithmetic that the compiler keeps in registers. Check a new helper by running a
//! handler that calls it under the JIT (as the MICA tests do for `naam_hash64`), or give it
//! an assembly trampoline that realigns the stack.

use crate::abi::helper;

/// `naam_hash64(a, b)`: a 64-bit mix of two words (SplitMix64 finalisers chained). Native code
/// (the reference implementations, the client) uses this same function.
pub fn hash64(a: u64, b: u64) -> u64 {
    let mut h = a ^ 0x9e37_79b9_7f4a_7c15;
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= b;
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn hash64_helper(a: u64, b: u64, _: u64, _: u64, _: u64) -> u64 {
    hash64(a, b)
}

/// The helper whitelist: id, name, number of scalar arguments, function.
pub const HELPERS: &[(u32, &str, u8, rbpf::Helper)] =
    &[(helper::HASH64, "naam_hash64", 2, hash64_helper)];

/// The helper with this id, if whitelisted.
pub fn lookup(id: u32) -> Option<&'static (u32, &'static str, u8, rbpf::Helper)> {
    HELPERS.iter().find(|h| h.0 == id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_mixes_both_words() {
        let h = super::hash64(1, 2);
        assert_ne!(h, super::hash64(2, 1));
        assert_ne!(h, super::hash64(1, 3));
        assert_eq!(h, super::hash64(1, 2));
    }
}
