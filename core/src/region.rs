//! Registered memory regions and the checks every op passes before it touches one.
//!
//! A region is what RDMA would call a memory region: an id, a length, the tenant that owns it,
//! what may be done to it, and a 64-bit key that one-sided client ops must present. The checks
//! here are the second wall of isolation (the verifier is the first): a handler can ask for any
//! op, but only ops inside its own tenant's regions, within bounds and permissions, run.

use crate::abi::{OpKind, RawOp, DATA_SIZE};

/// A region id, as handlers and clients name it.
pub type RegionId = u32;
/// A tenant id: offloads and regions belong to one.
pub type TenantId = u32;

/// What may be done to a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perms(u8);

impl Perms {
    pub const READ: Perms = Perms(1);
    pub const WRITE: Perms = Perms(2);
    pub const ATOMIC: Perms = Perms(4);
    pub const ALL: Perms = Perms(7);
    pub const NONE: Perms = Perms(0);

    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Keeps only known bits.
    pub const fn from_bits(bits: u8) -> Self {
        Perms(bits & 7)
    }

    pub const fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: Perms) -> Perms {
        Perms(self.0 | other.0)
    }

    /// The permission an op kind needs.
    pub const fn needed_by(kind: OpKind) -> Perms {
        match kind {
            OpKind::Read => Perms::READ,
            OpKind::Write => Perms::WRITE,
            OpKind::Cas | OpKind::Faa => Perms::ATOMIC,
        }
    }
}

impl core::fmt::Display for Perms {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let flag = |p: Perms, c: char| if self.contains(p) { c } else { '-' };
        write!(
            f,
            "{}{}{}",
            flag(Perms::READ, 'r'),
            flag(Perms::WRITE, 'w'),
            flag(Perms::ATOMIC, 'a')
        )
    }
}

/// The description of one registered region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionDesc {
    pub id: RegionId,
    pub tenant: TenantId,
    pub len: u64,
    pub perms: Perms,
    /// Presented by one-sided client ops; random, never derived from the id.
    pub key: u64,
}

/// Why an op was refused. Every variant names what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("op {index}: unknown op kind {kind}")]
    UnknownKind { index: usize, kind: u8 },
    #[error("op {index}: no region {region}")]
    NoSuchRegion { index: usize, region: RegionId },
    #[error("op {index}: region {region} belongs to another tenant than {tenant}")]
    WrongTenant {
        index: usize,
        region: RegionId,
        tenant: TenantId,
    },
    #[error("op {index}: region {region} does not allow {kind:?} (it allows {allowed})")]
    PermissionDenied {
        index: usize,
        region: RegionId,
        kind: OpKind,
        allowed: Perms,
    },
    #[error(
        "op {index}: bytes {offset}..+{len} are outside region {region}{}",
        region_size(*region_len)
    )]
    OutOfBounds {
        index: usize,
        region: RegionId,
        offset: u64,
        len: u64,
        region_len: u64,
    },
    #[error(
        "op {index}: data window {data_off}..+{len} is outside the {DATA_SIZE}-byte data area"
    )]
    BadWindow {
        index: usize,
        data_off: u32,
        len: u32,
    },
    #[error("op {index}: {kind:?} needs an 8-byte aligned offset and length 8, got offset {offset} length {len}")]
    BadAtomic {
        index: usize,
        kind: OpKind,
        offset: u64,
        len: u32,
    },
    #[error("op {index}: zero-length {kind:?}")]
    Empty { index: usize, kind: OpKind },
    #[error("{n} ops requested, at most {max} per step")]
    TooManyOps { n: u32, max: usize },
    #[error("wrong key for region {region}")]
    BadKey { region: RegionId },
    #[error(
        "op {index}: {kind:?} asked for by an offload registered read-only (its requests are \
         not de-duplicated, so a retransmission would run it again): register it without \
         --read-only"
    )]
    ReadOnlyOffload { index: usize, kind: OpKind },
}

/// How [`OpError::OutOfBounds`] names a region's size: a client does not know it (its table
/// holds `u64::MAX`, the server checks the bounds), so its refusal is of bytes past 2^64.
fn region_size(len: u64) -> String {
    if len == u64::MAX {
        " (they pass the end of the address space)".to_owned()
    } else {
        format!(" of {len} bytes")
    }
}

impl OpError {
    /// A small stable code for counters and error replies.
    pub fn code(&self) -> OpErrorCode {
        match self {
            OpError::UnknownKind { .. } | OpError::TooManyOps { .. } | OpError::Empty { .. } => {
                OpErrorCode::Malformed
            }
            OpError::NoSuchRegion { .. } => OpErrorCode::NoSuchRegion,
            OpError::WrongTenant { .. } => OpErrorCode::WrongTenant,
            OpError::PermissionDenied { .. } | OpError::ReadOnlyOffload { .. } => {
                OpErrorCode::PermissionDenied
            }
            OpError::OutOfBounds { .. } | OpError::BadWindow { .. } => OpErrorCode::OutOfBounds,
            OpError::BadAtomic { .. } => OpErrorCode::Misaligned,
            OpError::BadKey { .. } => OpErrorCode::BadKey,
        }
    }
}

/// Op error classes, used as counter indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpErrorCode {
    Malformed = 0,
    NoSuchRegion = 1,
    WrongTenant = 2,
    PermissionDenied = 3,
    OutOfBounds = 4,
    Misaligned = 5,
    BadKey = 6,
}

impl OpErrorCode {
    pub const COUNT: usize = 7;
    pub const ALL: [OpErrorCode; Self::COUNT] = [
        OpErrorCode::Malformed,
        OpErrorCode::NoSuchRegion,
        OpErrorCode::WrongTenant,
        OpErrorCode::PermissionDenied,
        OpErrorCode::OutOfBounds,
        OpErrorCode::Misaligned,
        OpErrorCode::BadKey,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpErrorCode::Malformed => "malformed",
            OpErrorCode::NoSuchRegion => "no_such_region",
            OpErrorCode::WrongTenant => "wrong_tenant",
            OpErrorCode::PermissionDenied => "permission_denied",
            OpErrorCode::OutOfBounds => "out_of_bounds",
            OpErrorCode::Misaligned => "misaligned",
            OpErrorCode::BadKey => "bad_key",
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }
}

/// An op that passed every check: only [`RegionTable::check`] builds one, so a memory backend
/// may rely on its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedOp {
    pub kind: OpKind,
    pub region: RegionId,
    pub offset: u64,
    pub len: u32,
    pub data_off: u32,
    pub arg0: u64,
    pub arg1: u64,
}

impl CheckedOp {
    /// A zero-length READ of region 0: what fills op arrays before a step's ops are checked
    /// into them (never executed).
    pub const EMPTY: CheckedOp = CheckedOp {
        kind: OpKind::Read,
        region: 0,
        offset: 0,
        len: 0,
        data_off: 0,
        arg0: 0,
        arg1: 0,
    };
}

/// The registered regions, indexed by id (ids are small and dense).
#[derive(Debug, Clone, Default)]
pub struct RegionTable {
    regions: Vec<Option<RegionDesc>>,
}

/// The largest region id a table accepts (ids index a vector).
pub const MAX_REGION_ID: RegionId = 1 << 20;

impl RegionTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a region. Ids above [`MAX_REGION_ID`] are refused.
    pub fn insert(&mut self, desc: RegionDesc) -> Result<(), OpError> {
        if desc.id > MAX_REGION_ID {
            return Err(OpError::NoSuchRegion {
                index: 0,
                region: desc.id,
            });
        }
        let i = desc.id as usize;
        if self.regions.len() <= i {
            self.regions.resize(i + 1, None);
        }
        self.regions[i] = Some(desc);
        Ok(())
    }

    pub fn remove(&mut self, id: RegionId) -> Option<RegionDesc> {
        self.regions.get_mut(id as usize).and_then(Option::take)
    }

    pub fn get(&self, id: RegionId) -> Option<&RegionDesc> {
        self.regions.get(id as usize).and_then(Option::as_ref)
    }

    pub fn iter(&self) -> impl Iterator<Item = &RegionDesc> {
        self.regions.iter().flatten()
    }

    /// Checks op `index` requested by a handler of `tenant`.
    #[inline]
    pub fn check(&self, tenant: TenantId, index: usize, raw: &RawOp) -> Result<CheckedOp, OpError> {
        let kind = OpKind::from_u8(raw.kind).ok_or(OpError::UnknownKind {
            index,
            kind: raw.kind,
        })?;
        let desc = self.get(raw.region).ok_or(OpError::NoSuchRegion {
            index,
            region: raw.region,
        })?;
        if desc.tenant != tenant {
            return Err(OpError::WrongTenant {
                index,
                region: raw.region,
                tenant,
            });
        }
        self.check_access(desc, index, kind, raw)
    }

    /// Checks a one-sided op from a client, which presents the region key instead of running
    /// as a tenant's handler.
    pub fn check_keyed(&self, key: u64, raw: &RawOp) -> Result<CheckedOp, OpError> {
        let kind = OpKind::from_u8(raw.kind).ok_or(OpError::UnknownKind {
            index: 0,
            kind: raw.kind,
        })?;
        let desc = self.get(raw.region).ok_or(OpError::NoSuchRegion {
            index: 0,
            region: raw.region,
        })?;
        // Compare without an early exit so timing does not tell how much of a key was right.
        if (desc.key ^ key) != 0 {
            return Err(OpError::BadKey { region: raw.region });
        }
        self.check_access(desc, 0, kind, raw)
    }

    #[inline]
    fn check_access(
        &self,
        desc: &RegionDesc,
        index: usize,
        kind: OpKind,
        raw: &RawOp,
    ) -> Result<CheckedOp, OpError> {
        if !desc.perms.contains(Perms::needed_by(kind)) {
            return Err(OpError::PermissionDenied {
                index,
                region: desc.id,
                kind,
                allowed: desc.perms,
            });
        }
        match kind {
            OpKind::Read | OpKind::Write => {
                if raw.len == 0 {
                    return Err(OpError::Empty { index, kind });
                }
                let window_end = raw.data_off as u64 + raw.len as u64;
                if window_end > DATA_SIZE as u64 {
                    return Err(OpError::BadWindow {
                        index,
                        data_off: raw.data_off,
                        len: raw.len,
                    });
                }
            }
            OpKind::Cas | OpKind::Faa => {
                if raw.len != 8 || raw.offset % 8 != 0 {
                    return Err(OpError::BadAtomic {
                        index,
                        kind,
                        offset: raw.offset,
                        len: raw.len,
                    });
                }
            }
        }
        let in_bounds = raw
            .offset
            .checked_add(raw.len as u64)
            .is_some_and(|end| end <= desc.len);
        if !in_bounds {
            return Err(OpError::OutOfBounds {
                index,
                region: desc.id,
                offset: raw.offset,
                len: raw.len as u64,
                region_len: desc.len,
            });
        }
        Ok(CheckedOp {
            kind,
            region: desc.id,
            offset: raw.offset,
            len: raw.len,
            data_off: raw.data_off,
            arg0: raw.arg0,
            arg1: raw.arg1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's table does not know a region's size (`u64::MAX`): its refusal named one
    /// of 18446744073709551615 bytes (probe 20).
    #[test]
    fn an_out_of_bounds_refusal_names_a_size_only_when_it_is_known() {
        let e = |region_len| {
            OpError::OutOfBounds {
                index: 0,
                region: 4,
                offset: u64::MAX - 15,
                len: 32,
                region_len,
            }
            .to_string()
        };
        assert!(
            e(65536).ends_with("outside region 4 of 65536 bytes"),
            "{}",
            e(65536)
        );
        let unknown = e(u64::MAX);
        assert!(
            unknown.contains("end of the address space")
                && !unknown.contains("18446744073709551615 bytes"),
            "{unknown}"
        );
    }

    fn table() -> RegionTable {
        let mut t = RegionTable::new();
        t.insert(RegionDesc {
            id: 1,
            tenant: 10,
            len: 4096,
            perms: Perms::ALL,
            key: 0xfeed,
        })
        .unwrap();
        t.insert(RegionDesc {
            id: 2,
            tenant: 10,
            len: 64,
            perms: Perms::READ,
            key: 0xbeef,
        })
        .unwrap();
        t.insert(RegionDesc {
            id: 3,
            tenant: 11,
            len: 64,
            perms: Perms::ALL,
            key: 0xcafe,
        })
        .unwrap();
        t
    }

    fn read(region: u32, offset: u64, len: u32) -> RawOp {
        RawOp {
            kind: OpKind::Read as u8,
            region,
            offset,
            len,
            ..Default::default()
        }
    }

    #[test]
    fn accepts_ops_in_bounds() {
        let t = table();
        assert!(t.check(10, 0, &read(1, 4000, 96)).is_ok());
        let cas = RawOp {
            kind: 3,
            region: 1,
            offset: 8,
            len: 8,
            ..Default::default()
        };
        assert_eq!(t.check(10, 0, &cas).unwrap().kind, OpKind::Cas);
    }

    #[test]
    fn refuses_each_violation_with_its_reason() {
        let t = table();
        assert!(matches!(
            t.check(10, 0, &read(1, 4000, 97)),
            Err(OpError::OutOfBounds { .. })
        ));
        assert!(matches!(
            t.check(10, 0, &read(1, u64::MAX, 8)),
            Err(OpError::OutOfBounds { .. })
        ));
        assert!(matches!(
            t.check(10, 1, &read(3, 0, 8)),
            Err(OpError::WrongTenant { index: 1, .. })
        ));
        assert!(matches!(
            t.check(10, 0, &read(9, 0, 8)),
            Err(OpError::NoSuchRegion { .. })
        ));
        assert!(matches!(
            t.check(10, 0, &read(1, 0, 0)),
            Err(OpError::Empty { .. })
        ));
        let w = RawOp {
            kind: 2,
            region: 2,
            offset: 0,
            len: 8,
            ..Default::default()
        };
        assert!(matches!(
            t.check(10, 0, &w),
            Err(OpError::PermissionDenied { .. })
        ));
        let win = RawOp {
            data_off: DATA_SIZE as u32 - 4,
            ..read(1, 0, 8)
        };
        assert!(matches!(
            t.check(10, 0, &win),
            Err(OpError::BadWindow { .. })
        ));
        let mis = RawOp {
            kind: 4,
            region: 1,
            offset: 4,
            len: 8,
            ..Default::default()
        };
        assert!(matches!(
            t.check(10, 0, &mis),
            Err(OpError::BadAtomic { .. })
        ));
        let bad = RawOp {
            kind: 9,
            ..read(1, 0, 8)
        };
        assert!(matches!(
            t.check(10, 0, &bad),
            Err(OpError::UnknownKind { kind: 9, .. })
        ));
    }

    #[test]
    fn keyed_ops_need_the_region_key() {
        let t = table();
        assert!(t.check_keyed(0xfeed, &read(1, 0, 8)).is_ok());
        assert_eq!(
            t.check_keyed(0xfeee, &read(1, 0, 8)),
            Err(OpError::BadKey { region: 1 })
        );
    }
}
