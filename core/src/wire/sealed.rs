//! SEALED: a control request with a message authentication code (DESIGN §10). The payload
//! names the credential (key id), carries a nonce (the sender's wall clock) and the MAC, then
//! the whole inner request datagram. The MAC ([`crate::auth`]) covers the key id, the nonce
//! and the inner datagram; the outer header (whose RETRANSMIT flag a client sets on resends)
//! is not covered, so its request id and class must equal the inner ones.

use super::{exact, get_u32, get_u64, need, set_u32, set_u64, zero, WireError, HEADER_LEN};

/// Where a datagram's header keeps its payload length (docs/protocol.md).
const INNER_PAYLOAD_LEN: core::ops::Range<usize> = 16..20;

mod seal {
    use crate::wire::Field;

    pub const KEY_ID: Field = 0..4;
    pub const RESERVED: Field = 4..8;
    pub const NONCE: Field = 8..16;
    pub const MAC: Field = 16..48;
    pub const INNER: usize = 48;
}

/// Bytes of a MAC.
pub const MAC_LEN: usize = 32;
/// Bytes a SEALED payload adds in front of the inner datagram.
pub const SEALED_OVERHEAD: usize = seal::INNER;

/// A view of a SEALED payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SealedPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The fixed part, then exactly one inner datagram: a header whose payload length
    /// accounts for every byte after it.
    pub fn check_len(&self) -> Result<(), WireError> {
        let d = self.buffer.as_ref();
        need(seal::INNER + HEADER_LEN, d.len())?;
        let inner_payload = get_u32(&d[seal::INNER..], INNER_PAYLOAD_LEN) as usize;
        exact(
            seal::INNER + HEADER_LEN,
            inner_payload,
            d.len(),
            "sealed.inner.payload_len",
            "sealed inner datagram",
        )
    }

    pub fn key_id(&self) -> u32 {
        get_u32(self.buffer.as_ref(), seal::KEY_ID)
    }

    pub fn nonce(&self) -> u64 {
        get_u64(self.buffer.as_ref(), seal::NONCE)
    }

    pub fn mac(&self) -> [u8; MAC_LEN] {
        let mut m = [0u8; MAC_LEN];
        m.copy_from_slice(&self.buffer.as_ref()[seal::MAC]);
        m
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> SealedPacket<&'a T> {
    pub fn inner(&self) -> &'a [u8] {
        &self.buffer.as_ref()[seal::INNER..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SealedPacket<T> {
    pub fn set_key_id(&mut self, v: u32) {
        let d = self.buffer.as_mut();
        set_u32(d, seal::KEY_ID, v);
        d[seal::RESERVED].fill(0);
    }

    pub fn set_nonce(&mut self, v: u64) {
        set_u64(self.buffer.as_mut(), seal::NONCE, v);
    }

    pub fn set_mac(&mut self, mac: &[u8; MAC_LEN]) {
        self.buffer.as_mut()[seal::MAC].copy_from_slice(mac);
    }

    pub fn inner_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[seal::INNER..]
    }
}

/// A sealed control request: which credential, when, its MAC and the inner datagram (not
/// parsed here: the receiver parses it after the MAC is verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedRepr<'a> {
    pub key_id: u32,
    /// The sender's wall clock, nanoseconds since the Unix epoch.
    pub nonce: u64,
    pub mac: [u8; MAC_LEN],
    /// A whole request datagram (header and payload).
    pub inner: &'a [u8],
}

impl<'a> SealedRepr<'a> {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &SealedPacket<&'a T>) -> Result<Self, WireError> {
        packet.check_len()?;
        zero("sealed.reserved", &packet.buffer.as_ref()[seal::RESERVED])?;
        let repr = Self {
            key_id: packet.key_id(),
            nonce: packet.nonce(),
            mac: packet.mac(),
            inner: packet.inner(),
        };
        repr.check()?;
        Ok(repr)
    }

    pub fn check(&self) -> Result<(), WireError> {
        need(HEADER_LEN, self.inner.len())?;
        let inner_payload = get_u32(self.inner, INNER_PAYLOAD_LEN) as usize;
        exact(
            HEADER_LEN,
            inner_payload,
            self.inner.len(),
            "sealed.inner.payload_len",
            "sealed inner datagram",
        )
    }

    pub fn buffer_len(&self) -> usize {
        seal::INNER + self.inner.len()
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut SealedPacket<T>) {
        packet.set_key_id(self.key_id);
        packet.set_nonce(self.nonce);
        packet.set_mac(&self.mac);
        packet.inner_mut().copy_from_slice(self.inner);
    }
}
