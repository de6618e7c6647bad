//! PLACEHOLDER until `naam_handlers::mica` lands in main: the few names the MICA wrapper
//! uses, with the argument and reply layouts of that module. Switching is replacing the `use`
//! line in `apps/mod.rs` and deleting this file.

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
