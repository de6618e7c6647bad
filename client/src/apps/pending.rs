//! PLACEHOLDER until `naam_handlers::mica` and `naam_handlers::btree` land in main: the few
//! names the wrappers use, with the argument and reply layouts of those modules. Switching is
//! replacing the two `use` lines in `apps/mod.rs` and deleting this file.

pub mod mica {
    use naam_core::region::RegionId;

    pub const KEY_MAX: usize = 16;
    pub const VALUE_MAX: usize = 1024;
    const ARGS_FIXED: usize = 56;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct MicaGeometry {
        pub index_region: RegionId,
        pub log_region: RegionId,
        pub bucket_count: u64,
        pub overflow_count: u64,
        pub log_size: u64,
    }

    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum MicaError {
        #[error("key of {len} bytes: keys are 1 to 16 bytes")]
        KeyLength { len: usize },
        #[error("value of {len} bytes: values are 1 to 1024 bytes")]
        ValueTooLarge { len: usize, max: usize },
        #[error("malformed reply of {len} bytes")]
        BadReply { len: usize },
        #[error("handler aborted with code {code}")]
        Aborted { code: u32 },
    }

    impl MicaError {
        pub fn from_abort(code: u32) -> Self {
            MicaError::Aborted { code }
        }
    }

    pub struct MicaArgs {
        buf: Vec<u8>,
    }

    impl MicaArgs {
        fn fixed(g: &MicaGeometry, key: &[u8], vlen: u16) -> Result<Self, MicaError> {
            if key.is_empty() || key.len() > KEY_MAX {
                return Err(MicaError::KeyLength { len: key.len() });
            }
            let mut b = vec![0u8; ARGS_FIXED];
            b[0..4].copy_from_slice(&g.index_region.to_le_bytes());
            b[4..8].copy_from_slice(&g.log_region.to_le_bytes());
            b[8..16].copy_from_slice(&(g.bucket_count - 1).to_le_bytes());
            b[16..24].copy_from_slice(&g.overflow_count.to_le_bytes());
            b[24..32].copy_from_slice(&(g.log_size - 1).to_le_bytes());
            b[32..34].copy_from_slice(&(key.len() as u16).to_le_bytes());
            b[34..36].copy_from_slice(&vlen.to_le_bytes());
            b[40..40 + key.len()].copy_from_slice(key);
            Ok(Self { buf: b })
        }
        pub fn get(g: &MicaGeometry, key: &[u8]) -> Result<Self, MicaError> {
            Self::fixed(g, key, 0)
        }
        pub fn put(g: &MicaGeometry, key: &[u8], value: &[u8]) -> Result<Self, MicaError> {
            if value.is_empty() || value.len() > VALUE_MAX {
                return Err(MicaError::ValueTooLarge {
                    len: value.len(),
                    max: VALUE_MAX,
                });
            }
            let mut a = Self::fixed(g, key, value.len() as u16)?;
            a.buf.extend_from_slice(value);
            Ok(a)
        }
        pub fn delete(g: &MicaGeometry, key: &[u8]) -> Result<Self, MicaError> {
            Self::fixed(g, key, 0)
        }
        pub fn as_bytes(&self) -> &[u8] {
            &self.buf
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum MicaReply<'a> {
        Value(&'a [u8]),
        Done,
        NotFound,
    }

    impl<'a> MicaReply<'a> {
        pub fn parse(out: &'a [u8]) -> Result<Self, MicaError> {
            if out.len() < 8 {
                return Err(MicaError::BadReply { len: out.len() });
            }
            let status = u32::from_le_bytes(out[..4].try_into().expect("4 bytes"));
            let vlen = u32::from_le_bytes(out[4..8].try_into().expect("4 bytes")) as usize;
            match status {
                1 => Ok(MicaReply::NotFound),
                0 if out.len() == 8 && vlen == 0 => Ok(MicaReply::Done),
                0 if out.len() == 8 + vlen => Ok(MicaReply::Value(&out[8..])),
                _ => Err(MicaError::BadReply { len: out.len() }),
            }
        }
    }
}

#[allow(clippy::wrong_self_convention)]
pub mod btree {
    pub const SCAN_MAX: usize = 48;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Args {
        pub region: u32,
        pub count: u32,
        pub root: u64,
        pub key: u64,
    }

    impl Args {
        pub fn lookup(region: u32, key: u64) -> Self {
            Self {
                region,
                count: 0,
                root: 0,
                key,
            }
        }
        pub fn scan(region: u32, from: u64, count: u32) -> Self {
            Self {
                region,
                count,
                root: 0,
                key: from,
            }
        }
        pub fn with_root(self, root: u64) -> Self {
            Self { root, ..self }
        }
        pub fn to_bytes(&self) -> [u8; 24] {
            let mut b = [0u8; 24];
            b[0..4].copy_from_slice(&self.region.to_le_bytes());
            b[4..8].copy_from_slice(&self.count.to_le_bytes());
            b[8..16].copy_from_slice(&self.root.to_le_bytes());
            b[16..24].copy_from_slice(&self.key.to_le_bytes());
            b
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    #[error("malformed B-tree reply of {len} bytes")]
    pub struct ReplyError {
        pub len: usize,
    }

    pub fn parse_lookup_reply(out: &[u8]) -> Result<Option<u64>, ReplyError> {
        let Ok(b) = <&[u8; 16]>::try_from(out) else {
            return Err(ReplyError { len: out.len() });
        };
        let found = u64::from_le_bytes(b[0..8].try_into().expect("8 bytes"));
        let value = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
        match found {
            0 => Ok(None),
            1 => Ok(Some(value)),
            _ => Err(ReplyError { len: out.len() }),
        }
    }

    #[derive(Debug, Clone, Copy)]
    pub struct ScanReply<'a> {
        pairs: &'a [u8],
        pub end: bool,
    }

    impl<'a> ScanReply<'a> {
        pub fn parse(out: &'a [u8]) -> Result<Self, ReplyError> {
            let bad = ReplyError { len: out.len() };
            if out.len() < 8 {
                return Err(bad);
            }
            let n = u32::from_le_bytes(out[0..4].try_into().expect("4 bytes")) as usize;
            let flags = u32::from_le_bytes(out[4..8].try_into().expect("4 bytes"));
            if out.len() != 8 + n * 16 {
                return Err(bad);
            }
            Ok(Self {
                pairs: &out[8..],
                end: flags & 1 != 0,
            })
        }
        pub fn pairs(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
            self.pairs.chunks_exact(16).map(|c| {
                (
                    u64::from_le_bytes(c[0..8].try_into().expect("8 bytes")),
                    u64::from_le_bytes(c[8..16].try_into().expect("8 bytes")),
                )
            })
        }
    }
}
