//! FETCH: a registered offload's verified instructions, one piece per reply (`naam offload
//! dump`; a client that lacks a program fetches it to run it itself).
//!
//! The reply carries the program's total length and a digest of all of it, so a reader that
//! pages through a program replaced meanwhile sees the digest change and starts again, and a
//! cached copy is known stale by its digest.

use super::{
    exact, get_u16, get_u32, get_u64, need, set_u16, set_u32, set_u64, zero, Field, WireError,
};

mod req {
    use super::Field;

    pub const ID: Field = 0..4;
    /// Byte offset into the instructions.
    pub const START: Field = 4..8;
    pub const LEN: usize = 8;
}

mod rep {
    use super::Field;

    pub const ID: Field = 0..4;
    pub const TOTAL: Field = 4..8;
    pub const START: Field = 8..12;
    pub const LEN: Field = 12..14;
    pub const RESERVED: Field = 14..16;
    pub const DIGEST: Field = 16..24;
    pub const BYTES: usize = 24;
}

/// Instruction bytes in one FETCH_REPLY (a multiple of 8; with the header it fits every
/// port's 2048-byte buffers).
pub const FETCH_CHUNK: usize = 1024;

/// Ask for offload `id`'s instructions from byte `start` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRepr {
    pub id: u32,
    pub start: u32,
}

impl FetchRepr {
    pub fn parse(payload: &[u8]) -> Result<Self, WireError> {
        exact(req::LEN, 0, payload.len(), "fetch", "fetch")?;
        Ok(Self {
            id: get_u32(payload, req::ID),
            start: get_u32(payload, req::START),
        })
    }

    pub fn check(&self) -> Result<(), WireError> {
        Ok(())
    }

    pub const fn buffer_len(&self) -> usize {
        req::LEN
    }

    pub fn emit(&self, payload: &mut [u8]) {
        set_u32(payload, req::ID, self.id);
        set_u32(payload, req::START, self.start);
    }
}

/// A piece of offload `id`'s verified instructions: `bytes` from byte `start` of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchReplyRepr<'a> {
    pub id: u32,
    pub total: u32,
    pub start: u32,
    /// Of the whole program ([`program_digest`]).
    pub digest: u64,
    pub bytes: &'a [u8],
}

impl<'a> FetchReplyRepr<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, WireError> {
        need(rep::BYTES, payload.len())?;
        let len = get_u16(payload, rep::LEN) as usize;
        exact(
            rep::BYTES,
            len,
            payload.len(),
            "fetch_reply.len",
            "fetch reply",
        )?;
        zero("fetch_reply.reserved", &payload[rep::RESERVED])?;
        let repr = Self {
            id: get_u32(payload, rep::ID),
            total: get_u32(payload, rep::TOTAL),
            start: get_u32(payload, rep::START),
            digest: get_u64(payload, rep::DIGEST),
            bytes: &payload[rep::BYTES..],
        };
        repr.check()?;
        Ok(repr)
    }

    /// The piece lies inside the program and is at most [`FETCH_CHUNK`] bytes.
    pub fn check(&self) -> Result<(), WireError> {
        super::at_most("fetch_reply.bytes", self.bytes.len(), FETCH_CHUNK)?;
        let end = self.start as u64 + self.bytes.len() as u64;
        if end > self.total as u64 {
            return Err(WireError::LengthPastEnd {
                field: "fetch_reply.bytes",
                len: self.bytes.len(),
                available: (self.total as u64).saturating_sub(self.start as u64) as usize,
            });
        }
        Ok(())
    }

    pub fn buffer_len(&self) -> usize {
        rep::BYTES + self.bytes.len()
    }

    pub fn emit(&self, payload: &mut [u8]) {
        set_u32(payload, rep::ID, self.id);
        set_u32(payload, rep::TOTAL, self.total);
        set_u32(payload, rep::START, self.start);
        set_u16(payload, rep::LEN, self.bytes.len() as u16);
        set_u16(payload, rep::RESERVED, 0);
        set_u64(payload, rep::DIGEST, self.digest);
        payload[rep::BYTES..].copy_from_slice(self.bytes);
    }

    /// The reply to `req` for a program of instructions `insns` (the piece from `req.start`,
    /// empty past the end).
    pub fn piece(req: FetchRepr, insns: &'a [u8], digest: u64) -> Self {
        let start = (req.start as usize).min(insns.len());
        let end = (start + FETCH_CHUNK).min(insns.len());
        Self {
            id: req.id,
            total: insns.len() as u32,
            start: start as u32,
            digest,
            bytes: &insns[start..end],
        }
    }
}

/// The digest FETCH reports: the first 8 bytes of the SHA-256 of the instructions.
pub fn program_digest(insns: &[u8]) -> u64 {
    use sha2::Digest;
    let h = sha2::Sha256::digest(insns);
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
}
