//! Snapshots of the registered regions (`--snapshot`): format 2 with a CRC-32 trailer.

use super::ShmHost;
use crate::error::LinkError;
use crate::RegionSpec;
use naam_core::region::{Perms, RegionId};
use std::io::{Read as _, Write as _};

/// Snapshot format 2: magic, region count, per region a header and its bytes, then the
/// CRC-32 of everything before it (as a u64).
const SNAPSHOT_MAGIC: u64 = u64::from_le_bytes(*b"NAAMSNP2");
/// Format 1 had no checksum: refused with a message saying so.
const SNAPSHOT_MAGIC_V1: u64 = u64::from_le_bytes(*b"NAAMSNP1");

/// A writer or reader that checksums what passes through it.
struct Crc<T> {
    inner: T,
    crc: crc32fast::Hasher,
}

impl<T> Crc<T> {
    fn new(inner: T) -> Self {
        Crc {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }

    fn sum(&self) -> u64 {
        self.crc.clone().finalize() as u64
    }
}

impl<W: std::io::Write> std::io::Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: std::io::Read> std::io::Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

impl ShmHost {
    /// Writes every registered region (description and bytes) to `w`; returns how many. Each
    /// word is read atomically, but the whole is a consistent cut only if writers are quiet.
    pub fn write_snapshot(&self, w: &mut dyn std::io::Write) -> Result<usize, LinkError> {
        let mut w = Crc::new(w);
        let err = LinkError::io("write snapshot");
        let dir = self.area.directory();
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&SNAPSHOT_MAGIC.to_le_bytes());
        out.extend_from_slice(&(dir.len() as u64).to_le_bytes());
        w.write_all(&out).map_err(err)?;
        let mut chunk = vec![0u8; 1 << 16];
        for e in &dir {
            let d = e.desc;
            let mut h = Vec::with_capacity(40);
            for v in [
                d.id as u64,
                d.tenant as u64,
                d.perms.bits() as u64,
                d.key,
                d.len,
            ] {
                h.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&h).map_err(LinkError::io("write snapshot"))?;
            let mem = self.area.view(e.offset, d.len)?;
            let mut at = 0u64;
            while at < d.len {
                let n = (d.len - at).min(chunk.len() as u64) as usize;
                mem.read(at, &mut chunk[..n]);
                w.write_all(&chunk[..n])
                    .map_err(LinkError::io("write snapshot"))?;
                at += n as u64;
            }
        }
        let sum = w.sum();
        w.inner
            .write_all(&sum.to_le_bytes())
            .map_err(LinkError::io("write snapshot"))?;
        Ok(dir.len())
    }

    /// Registers the regions saved by [`ShmHost::write_snapshot`] and fills them; returns how
    /// many. Ids already registered are refused. A snapshot that is cut short, corrupt (its
    /// checksum), followed by other bytes or of another format is refused whole: the regions it had registered are
    /// removed again.
    pub fn restore_snapshot(&mut self, r: &mut dyn std::io::Read) -> Result<usize, LinkError> {
        let mut added = Vec::new();
        let result = self.restore_regions(&mut Crc::new(r), &mut added);
        if result.is_err() {
            for id in added {
                let _ = self.unregister_region(id);
            }
        }
        result
    }

    fn restore_regions(
        &mut self,
        r: &mut Crc<&mut dyn std::io::Read>,
        added: &mut Vec<RegionId>,
    ) -> Result<usize, LinkError> {
        fn word(r: &mut dyn std::io::Read) -> Result<u64, LinkError> {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).map_err(|e| LinkError::Snapshot {
                reason: format!("cut short ({e})"),
            })?;
            Ok(u64::from_le_bytes(b))
        }
        let refuse = |reason: &str| LinkError::Snapshot {
            reason: reason.to_owned(),
        };
        match word(r)? {
            SNAPSHOT_MAGIC => {}
            SNAPSHOT_MAGIC_V1 => {
                return Err(refuse(
                    "format 1 has no checksum; write a new snapshot with this version",
                ))
            }
            _ => return Err(refuse("not a link snapshot (wrong magic)")),
        }
        let n = word(r)?;
        if n > self.area.layout.max_regions as u64 {
            return Err(refuse("snapshot has more regions than the directory holds"));
        }
        let mut chunk = vec![0u8; 1 << 16];
        for _ in 0..n {
            let (id, tenant, perms, key, len) = (word(r)?, word(r)?, word(r)?, word(r)?, word(r)?);
            let (Ok(id), Ok(tenant)) = (u32::try_from(id), u32::try_from(tenant)) else {
                return Err(refuse("snapshot region id or tenant out of range"));
            };
            let spec = RegionSpec {
                id,
                tenant,
                len,
                perms: Perms::from_bits(perms as u8),
                key,
            };
            // The bytes follow each header: register and fill before reading the next header.
            let e = self.register_region(spec)?;
            added.push(id);
            let mem = self.area.view(e.offset, len)?;
            let mut at = 0u64;
            while at < len {
                let k = (len - at).min(chunk.len() as u64) as usize;
                r.read_exact(&mut chunk[..k])
                    .map_err(|e| LinkError::Snapshot {
                        reason: format!("cut short in region {id} ({e})"),
                    })?;
                mem.write(at, &chunk[..k]);
                at += k as u64;
            }
        }
        let sum = r.sum();
        if word(&mut r.inner)? != sum {
            return Err(refuse("checksum mismatch: the file is corrupt"));
        }
        // The checksum ends the file: anything after it was not written by a snapshot (two
        // files concatenated, an append by mistake), and would be lost in silence.
        let mut more = [0u8; 1];
        loop {
            return match r.inner.read(&mut more) {
                Ok(0) => Ok(added.len()),
                Ok(_) => Err(refuse(
                    "bytes after the checksum: the file is not one snapshot",
                )),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(LinkError::Snapshot {
                    reason: format!("reading past the checksum ({e})"),
                }),
            };
        }
    }
}
