//! Credentials and the authentication of control requests (DESIGN §10, docs/security.md).
//!
//! A credential is a key id, the principal it speaks for (the admin, or one tenant) and a
//! 32-byte secret. A client seals each control request ([`Credential::seal`]): a SEALED
//! message carrying the key id, a nonce (its wall clock, ns since the Unix epoch), an
//! HMAC-SHA256 over those and the whole inner request, then the inner request. A server opens
//! it with a [`Gate`]: the key must be known, the MAC right, the nonce within [`WINDOW_NS`] of
//! the server's clock, and the (key, nonce) pair not seen before in that window: a repeat is
//! reported as such (a retransmission gets its cached reply, never a second execution). The
//! principal comes from the key, never from the request. Pure logic: keys come in as text,
//! time as an argument.

use std::collections::{HashSet, VecDeque};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::wire::{Body, ErrorCode, HeaderPacket, Message, SealedRepr, WireError, MAC_LEN};

/// Bytes of a credential's secret.
pub const SECRET_LEN: usize = 32;
/// How far a nonce may be from the receiver's clock, either way.
pub const WINDOW_NS: u64 = 30_000_000_000;
/// How far ahead of the receiver's clock a nonce may be: little, since a nonce from the
/// future is remembered for longer and would hold the window open for others.
pub const FUTURE_NS: u64 = 5_000_000_000;
/// Nonces a server's gate remembers: sealed requests per window beyond this are refused
/// (`busy`) until older ones leave the window (about 2 200 requests a second sustained).
pub const GATE_NONCES: usize = 65_536;
/// The first word of a key line (`naam-key 1 <key id> <admin|tenant:N> <secret hex>`).
const KEY_LINE: &str = "naam-key";
/// Domain separation for the MAC input.
const SEAL_DOMAIN: &[u8] = b"naam-seal-v1\0";
/// Domain separation for data-path capabilities.
const CAP_DOMAIN: &[u8] = b"naam-cap-v1\0";
/// The tenant an admin capability is made for: it stands for every tenant, so no key and no
/// offload may belong to it.
pub const ANY_TENANT: u32 = u32::MAX;

/// The wall clock in nanoseconds since the Unix epoch: the nonce a sender seals with and the
/// time a receiver checks it against (0 if the clock is before 1970).
pub fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Whom a credential speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Principal {
    /// Every verb, every tenant's offloads and applications.
    Admin,
    /// One tenant's offloads and applications.
    Tenant(u32),
}

impl Principal {
    pub fn is_admin(self) -> bool {
        self == Principal::Admin
    }

    /// Whether this principal may act on what `tenant` owns.
    pub fn may_act_for(self, tenant: u32) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Tenant(t) => t == tenant,
        }
    }
}

impl core::fmt::Display for Principal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Principal::Admin => f.write_str("admin"),
            Principal::Tenant(t) => write!(f, "tenant:{t}"),
        }
    }
}

/// Why a key line or key file is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "line {line}: {reason} (expected `{KEY_LINE} 1 <key id> <admin|tenant:N> <64 hex digits>`)"
    )]
    BadKeyLine { line: usize, reason: &'static str },
    #[error("key id {key_id} appears twice")]
    DuplicateKey { key_id: u32 },
    /// A tenant key for the id that stands for every tenant on the data path: its holder
    /// would act as the admin for every tenant.
    #[error("key id {key_id}: tenant {ANY_TENANT} is reserved (it stands for every tenant)")]
    ReservedTenant { key_id: u32 },
    /// A secret anyone can guess.
    #[error("key id {key_id}: its secret is all zeros")]
    ZeroSecret { key_id: u32 },
    /// Two keys with one secret: the holder of either can compute the other's MACs and
    /// capabilities (a tenant the admin's).
    #[error(
        "key ids {first} and {second} have the same secret: each holder could act as the other"
    )]
    SharedSecret { first: u32, second: u32 },
    #[error("no key in the file")]
    Empty,
}

/// A key id, its principal and its secret. `Debug` does not print the secret.
#[derive(Clone)]
pub struct Credential {
    pub key_id: u32,
    pub principal: Principal,
    secret: [u8; SECRET_LEN],
    /// HMAC-SHA256 keyed with the secret (its inner and outer pads hashed): each MAC starts
    /// from a copy, so it costs two compressions of the message instead of four. A server
    /// pays one per datagram that names a key, forged ones included.
    keyed: Hmac<Sha256>,
}

impl PartialEq for Credential {
    fn eq(&self, other: &Credential) -> bool {
        // `keyed` follows from the secret.
        (self.key_id, self.principal, self.secret) == (other.key_id, other.principal, other.secret)
    }
}

impl Eq for Credential {}

impl core::fmt::Debug for Credential {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Credential")
            .field("key_id", &self.key_id)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// A credential from a secret the caller drew from a cryptographic random source.
    pub fn new(key_id: u32, principal: Principal, secret: [u8; SECRET_LEN]) -> Credential {
        // HMAC takes keys of any length: this cannot fail.
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(&secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        Credential {
            key_id,
            principal,
            secret,
            keyed,
        }
    }

    /// Parses one key line (`line` numbers it in errors).
    pub fn from_line(text: &str, line: usize) -> Result<Credential, AuthError> {
        let bad = |reason| AuthError::BadKeyLine { line, reason };
        let words: Vec<&str> = text.split_whitespace().collect();
        let [KEY_LINE, "1", id, who, hex] = words[..] else {
            return Err(bad("not a version 1 key line"));
        };
        let key_id = id
            .parse::<u32>()
            .map_err(|_| bad("key id is not a number"))?;
        let principal = match who {
            "admin" => Principal::Admin,
            _ => match who.strip_prefix("tenant:").map(str::parse::<u32>) {
                Some(Ok(ANY_TENANT)) => {
                    return Err(bad(
                        "tenant 4294967295 is reserved (it stands for every tenant)",
                    ))
                }
                Some(Ok(t)) => Principal::Tenant(t),
                _ => return Err(bad("principal is neither admin nor tenant:N")),
            },
        };
        if hex.len() != 2 * SECRET_LEN {
            return Err(bad("the secret is not 64 hex digits"));
        }
        let mut secret = [0u8; SECRET_LEN];
        for (i, b) in secret.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| bad("the secret is not 64 hex digits"))?;
        }
        Ok(Credential::new(key_id, principal, secret))
    }

    /// The key line of this credential (what a key file holds).
    pub fn to_line(&self) -> String {
        let hex: String = self.secret.iter().map(|b| format!("{b:02x}")).collect();
        format!("{KEY_LINE} 1 {} {} {hex}", self.key_id, self.principal)
    }

    /// The MAC of a sealed request.
    pub fn mac(&self, nonce: u64, inner: &[u8]) -> [u8; MAC_LEN] {
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&self.hmac(nonce, inner).finalize().into_bytes());
        out
    }

    fn hmac(&self, nonce: u64, inner: &[u8]) -> Hmac<Sha256> {
        let mut m = self.keyed.clone();
        m.update(SEAL_DOMAIN);
        m.update(&self.key_id.to_le_bytes());
        m.update(&nonce.to_le_bytes());
        m.update(inner);
        m
    }

    /// The data-path capability this credential presents for `tenant` (docs/security.md): 64
    /// bits of an HMAC of the tenant id under the secret, so only a key holder can make it and
    /// the server checks it with one compare. A tenant's key makes its own tenant's; the
    /// admin's one capability ([`ANY_TENANT`]) stands for every tenant.
    pub fn capability(&self, tenant: u32) -> u64 {
        let t = match self.principal {
            Principal::Admin => ANY_TENANT,
            Principal::Tenant(_) => tenant,
        };
        let mut m = self.keyed.clone();
        m.update(CAP_DOMAIN);
        m.update(&t.to_le_bytes());
        let mac = m.finalize().into_bytes();
        let mut w = [0u8; 8];
        w.copy_from_slice(&mac[..8]);
        // Never 0, the value of "no capability".
        u64::from_le_bytes(w) | 1
    }

    /// Whether `mac` is the MAC of (`nonce`, `inner`), compared in constant time.
    pub fn verify(&self, nonce: u64, inner: &[u8], mac: &[u8; MAC_LEN]) -> bool {
        self.hmac(nonce, inner).verify_slice(mac).is_ok()
    }

    /// Seals the request datagram `inner` at `nonce` (the sender's wall clock, ns since the
    /// Unix epoch): the SEALED datagram, with the inner request id and class.
    pub fn seal(&self, nonce: u64, inner: &[u8]) -> Result<Vec<u8>, WireError> {
        let header = HeaderPacket::new_checked(inner)?;
        let msg = Message::new(
            header.request_id(),
            header.class(),
            Body::Sealed(SealedRepr {
                key_id: self.key_id,
                nonce,
                mac: self.mac(nonce, inner),
                inner,
            }),
        );
        let mut out = vec![0u8; msg.buffer_len()];
        let n = msg.emit(&mut out)?;
        out.truncate(n);
        Ok(out)
    }
}

/// The credentials a server knows (a key file: one key line each; `#` comments).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<Credential>,
}

impl Keyring {
    pub fn new(keys: Vec<Credential>) -> Result<Keyring, AuthError> {
        let mut ids = HashSet::new();
        for k in &keys {
            if !ids.insert(k.key_id) {
                return Err(AuthError::DuplicateKey { key_id: k.key_id });
            }
            if k.principal == Principal::Tenant(ANY_TENANT) {
                return Err(AuthError::ReservedTenant { key_id: k.key_id });
            }
            if k.secret == [0; SECRET_LEN] {
                return Err(AuthError::ZeroSecret { key_id: k.key_id });
            }
        }
        for (i, a) in keys.iter().enumerate() {
            if let Some(b) = keys[i + 1..].iter().find(|b| b.secret == a.secret) {
                return Err(AuthError::SharedSecret {
                    first: a.key_id,
                    second: b.key_id,
                });
            }
        }
        Ok(Keyring { keys })
    }

    /// Parses a key file.
    pub fn parse(text: &str) -> Result<Keyring, AuthError> {
        let keys = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|(i, l)| Credential::from_line(l, i + 1))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(AuthError::Empty);
        }
        Keyring::new(keys)
    }

    /// The key file's text.
    pub fn to_text(&self) -> String {
        let mut s = String::from("# NAAM credentials: keep this file secret (mode 0600)\n");
        for k in &self.keys {
            s.push_str(&k.to_line());
            s.push('\n');
        }
        s
    }

    pub fn get(&self, key_id: u32) -> Option<&Credential> {
        self.keys.iter().find(|k| k.key_id == key_id)
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The first credential of `principal`.
    pub fn of(&self, principal: Principal) -> Option<&Credential> {
        self.keys.iter().find(|k| k.principal == principal)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Credential> {
        self.keys.iter()
    }
}

/// What the data path accepts: for each tenant with a key, that key's capability, and the
/// admin's for every tenant. Built at setup from the keyring; [`Capabilities::check`] is one
/// probe of a small table in the expected case (O(1), no hashing, no allocation), like an rkey
/// check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Open addressing with linear probing, keyed by the capability itself: 64 bits of a MAC
    /// are uniformly spread, so their low bits are the slot. (capability, tenant it stands
    /// for, [`ANY_TENANT`] for the admin's); capability 0 (which no check accepts) marks an
    /// empty slot. At most half full, so a probe ends at an empty slot soon.
    slots: Box<[(u64, u32)]>,
}

impl Default for Capabilities {
    /// Accepts nothing.
    fn default() -> Self {
        Capabilities {
            slots: Box::new([(0, 0)]),
        }
    }
}

impl Capabilities {
    pub fn from_keyring(keys: &Keyring) -> Capabilities {
        let entries: Vec<(u64, u32)> = keys
            .iter()
            .map(|k| match k.principal {
                Principal::Tenant(t) => (k.capability(t), t),
                Principal::Admin => (k.capability(ANY_TENANT), ANY_TENANT),
            })
            .filter(|&(cap, _)| cap != 0)
            .collect();
        let mut slots = vec![(0u64, 0u32); (entries.len() * 2).next_power_of_two().max(2)];
        let mask = slots.len() - 1;
        for (cap, tenant) in entries {
            let mut i = cap as usize & mask;
            while slots[i].0 != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = (cap, tenant);
        }
        Capabilities {
            slots: slots.into_boxed_slice(),
        }
    }

    /// Whether `capability` lets its sender act for `tenant`.
    #[inline]
    pub fn check(&self, tenant: u32, capability: u64) -> bool {
        if capability == 0 {
            return false;
        }
        // The length is a power of two with at least one empty slot: the probe ends.
        let mask = self.slots.len() - 1;
        let mut i = capability as usize & mask;
        loop {
            let (cap, t) = self.slots[i];
            if cap == 0 {
                return false;
            }
            // Two keys with the same 64-bit capability would need a MAC collision; should
            // one occur, the probe goes on to the next entry rather than stopping at the first.
            if cap == capability && (t == tenant || t == ANY_TENANT) {
                return true;
            }
            i = (i + 1) & mask;
        }
    }
}

/// Why a control request was refused before it was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a SEALED message.
    Unsealed,
    /// The key id is not in the keyring.
    UnknownKey,
    /// The MAC does not match.
    BadMac,
    /// The outer header's request id or class is not the inner one's.
    Mismatch,
    /// The nonce is further than [`WINDOW_NS`] from the receiver's clock.
    Expired,
    /// The window's every remembered nonce is still live: try again shortly.
    Full,
    /// Sealed before this gate started ([`Gate::serving_since`]): the nonces seen before are
    /// not known here, so it could be a replay of a request that already ran.
    BeforeStart,
}

impl Refusal {
    pub const ALL: [Refusal; 7] = [
        Refusal::Unsealed,
        Refusal::UnknownKey,
        Refusal::BadMac,
        Refusal::Mismatch,
        Refusal::Expired,
        Refusal::Full,
        Refusal::BeforeStart,
    ];

    /// A short stable name (counters: `auth.refused.NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Unsealed => "unsealed",
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadMac => "bad_mac",
            Refusal::Mismatch => "mismatch",
            Refusal::Expired => "expired",
            Refusal::Full => "full",
            Refusal::BeforeStart => "before_start",
        }
    }

    /// Whether the request proved no key (unsealed, unknown key, wrong MAC): anyone can send
    /// it, so the answer to it is what a flood would be made of.
    pub fn proves_nothing(self) -> bool {
        matches!(
            self,
            Refusal::Unsealed | Refusal::UnknownKey | Refusal::BadMac
        )
    }

    /// The error code the requester is answered with: `busy` (retry) for a full window,
    /// `unauthorized` otherwise.
    pub fn code(self) -> ErrorCode {
        match self {
            Refusal::Full => ErrorCode::Busy,
            _ => ErrorCode::Unauthorized,
        }
    }

    /// What the requester is told.
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::Unsealed => {
                "control requests must be sealed with a credential (--key-file, NAAM_KEY_FILE)"
            }
            Refusal::UnknownKey => "unknown key id",
            Refusal::BadMac => "bad MAC: wrong key or altered request",
            Refusal::Mismatch => "the sealed request's id or class differs from its envelope's",
            Refusal::Expired => "nonce outside the time window: check the clocks, then resend",
            Refusal::Full => "too many recent control requests: retry shortly",
            Refusal::BeforeStart => "sealed before this server started: not run; seal it anew",
        }
    }
}

/// An opened SEALED request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened<'a> {
    pub principal: Principal,
    pub key_id: u32,
    pub nonce: u64,
    /// The inner request datagram, authenticated.
    pub inner: &'a [u8],
    /// False when this (key, nonce) was seen before in the window: a retransmission or a
    /// replay. Answer it from a reply cache, never by executing it again.
    pub fresh: bool,
}

impl<'a> Opened<'a> {
    /// The inner request, parsed: it must be a control request (not a reply, not sealed
    /// again); otherwise the detail of the `bad_request` to answer.
    pub fn request(&self) -> Result<Message<'a>, String> {
        match Message::parse(self.inner) {
            Ok(m) if !m.kind().is_reply() && !matches!(m.body, Body::Sealed(_)) => Ok(m),
            Ok(_) => Err("a sealed request must hold a control request".into()),
            Err(e) => Err(format!("sealed request: {e}")),
        }
    }
}

/// Opens sealed requests: checks key, MAC and time, and remembers the nonces of the window.
#[derive(Debug)]
pub struct Gate {
    keys: Keyring,
    /// Live (key id, nonce) pairs and when each leaves the window, oldest first.
    order: VecDeque<(u32, u64, u64)>,
    seen: HashSet<(u32, u64)>,
    capacity: usize,
    /// Live nonces per key id, and how many each key may hold: an equal share of
    /// `capacity`, so that one key (a tenant flooding the control port) cannot fill the
    /// window for the others (the admin's requests still open).
    live: std::collections::HashMap<u32, usize>,
    per_key: usize,
    /// Nonces below this were sealed before the gate started ([`Gate::serving_since`]).
    since: u64,
    refused: [u64; Refusal::ALL.len()],
    opened: u64,
    repeats: u64,
    forbidden: u64,
}

impl Gate {
    /// A gate over `keys` that remembers at most `capacity` nonces, an equal share per key
    /// (a key's requests beyond its share within one window are refused with
    /// [`Refusal::Full`]).
    pub fn new(keys: Keyring, capacity: usize) -> Gate {
        let per_key = (capacity / keys.len().max(1)).max(1);
        Gate {
            keys,
            order: VecDeque::new(),
            seen: HashSet::new(),
            capacity: capacity.max(1),
            live: std::collections::HashMap::new(),
            per_key,
            since: 0,
            refused: [0; Refusal::ALL.len()],
            opened: 0,
            repeats: 0,
            forbidden: 0,
        }
    }

    /// This gate for a server that started serving at `unix_ns` (its wall clock): a request
    /// sealed before then is refused ([`Refusal::BeforeStart`]). A restarted server does not
    /// know the nonces its previous process saw, so without this a request captured within
    /// the last [`WINDOW_NS`] could be replayed to it and run a second time. The cost: a
    /// retransmission that crosses the restart is refused (its sender seals it again), as is,
    /// for as long as its clock lags, a client whose clock is behind the server's.
    pub fn serving_since(mut self, unix_ns: u64) -> Gate {
        self.since = unix_ns;
        self
    }

    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// Checks a control request datagram `msg` received at `now_unix_ns`.
    pub fn open<'a>(&mut self, msg: &Message<'a>, now_unix_ns: u64) -> Result<Opened<'a>, Refusal> {
        let r = self.check(msg, now_unix_ns);
        self.count(&r);
        r
    }

    /// Counts what [`Gate::open`] or [`Gate::peek`] found (`auth.opened`, `auth.repeats`,
    /// `auth.refused.REASON`): a server that answers a request from its peek, without
    /// opening it, counts it here.
    pub fn count(&mut self, r: &Result<Opened<'_>, Refusal>) {
        match r {
            Ok(o) => {
                self.opened += 1;
                self.repeats += u64::from(!o.fresh);
            }
            Err(e) => self.refused[*e as usize] += 1,
        }
    }

    /// What [`Gate::open`] would find of `msg` at `now`, without counting or remembering
    /// anything (except that the gate's window being full is not checked). A server uses it
    /// to queue requests per principal before serving them: only a request that would open
    /// is queued under its principal, so a sender cannot fill another principal's queue
    /// without its key, nor with a capture replayed (`fresh` is false) or stale.
    pub fn peek<'a>(&self, msg: &Message<'a>, now_unix_ns: u64) -> Result<Opened<'a>, Refusal> {
        let (s, key) = self.verify(msg, now_unix_ns)?;
        Ok(Opened {
            principal: key.principal,
            key_id: s.key_id,
            nonce: s.nonce,
            inner: s.inner,
            fresh: !self.seen.contains(&(s.key_id, s.nonce)),
        })
    }

    /// The checks of a sealed request that need no memory of earlier ones: key, MAC, header,
    /// time; its sealed form and its key.
    fn verify<'a>(
        &self,
        msg: &Message<'a>,
        now: u64,
    ) -> Result<(SealedRepr<'a>, &Credential), Refusal> {
        let Body::Sealed(s) = msg.body else {
            return Err(Refusal::Unsealed);
        };
        let key = self.keys.get(s.key_id).ok_or(Refusal::UnknownKey)?;
        if !key.verify(s.nonce, s.inner, &s.mac) {
            return Err(Refusal::BadMac);
        }
        let h = HeaderPacket::new_unchecked(s.inner); // SealedRepr checked its length
        if h.request_id() != msg.request_id || h.class() != msg.class {
            return Err(Refusal::Mismatch);
        }
        if now.saturating_sub(s.nonce) > WINDOW_NS || s.nonce.saturating_sub(now) > FUTURE_NS {
            return Err(Refusal::Expired);
        }
        if s.nonce < self.since {
            return Err(Refusal::BeforeStart);
        }
        Ok((s, key))
    }

    fn check<'a>(&mut self, msg: &Message<'a>, now: u64) -> Result<Opened<'a>, Refusal> {
        let (s, key) = self.verify(msg, now)?;
        let principal = key.principal;
        while let Some(&(k, n, until)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            if self.seen.remove(&(k, n)) {
                self.release(k);
            }
        }
        let fresh = !self.seen.contains(&(s.key_id, s.nonce));
        if fresh {
            let mine = self.live.get(&s.key_id).copied().unwrap_or(0);
            if mine >= self.per_key || self.order.len() >= self.capacity {
                return Err(Refusal::Full);
            }
            *self.live.entry(s.key_id).or_default() += 1;
            self.seen.insert((s.key_id, s.nonce));
            // A nonce is remembered until it could no longer pass the time check.
            let until = s.nonce.saturating_add(WINDOW_NS + 1).max(now);
            self.order.push_back((s.key_id, s.nonce, until));
        }
        Ok(Opened {
            principal,
            key_id: s.key_id,
            nonce: s.nonce,
            inner: s.inner,
            fresh,
        })
    }

    /// Forgets a (key, nonce) whose request was answered "not executed, retry" (`busy`,
    /// `host_unavailable`): its retransmission, which carries the same nonce, must run.
    pub fn forget(&mut self, key_id: u32, nonce: u64) {
        if self.seen.remove(&(key_id, nonce)) {
            self.order.retain(|&(k, n, _)| (k, n) != (key_id, nonce));
            self.release(key_id);
        }
    }

    /// One of `key_id`'s nonces left the window.
    fn release(&mut self, key_id: u32) {
        if let Some(n) = self.live.get_mut(&key_id) {
            *n -= 1;
            if *n == 0 {
                self.live.remove(&key_id);
            }
        }
    }

    /// Counts a request that was opened but that its principal may not make (the caller
    /// decides that: it knows who owns what).
    pub fn count_forbidden(&mut self) {
        self.forbidden += 1;
    }

    /// Counters: `auth.opened`, `auth.repeats`, `auth.forbidden`, `auth.refused.REASON`.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut v = vec![
            ("auth.opened".to_owned(), self.opened),
            ("auth.repeats".to_owned(), self.repeats),
            ("auth.forbidden".to_owned(), self.forbidden),
        ];
        for r in Refusal::ALL {
            v.push((
                format!("auth.refused.{}", r.name()),
                self.refused[r as usize],
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests;
