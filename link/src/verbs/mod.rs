//! `VerbsLink`: the link over RDMA RC queue pairs through the `sideway` crate (feature
//! `verbs`), with the same [`Link`] semantics as shared memory:
//!
//! - the memory owner ([`VerbsHost`]) registers regions as memory regions; the directory
//!   (region description, virtual address, rkey) travels to the peer during setup;
//! - one-sided ops are checked against that directory (key, bounds, permissions — refused and
//!   counted before anything is posted) and then posted as RDMA READ / WRITE / WRITE with
//!   immediate / atomic CAS / FAA; atomics return the previous word through a per-request slot;
//! - the rings are SEND/RECV with the same entry header as shared memory (position, length,
//!   checksum), so corrupt entries are detected; back-pressure is credit-based: the receiver
//!   RDMA-writes its consumed count into the sender's credit word, and a sender with no credit
//!   gets [`LinkError::Full`] instead of overrunning the peer's receive queue;
//! - setup runs over a TCP side channel (QP number, PSN, LID, GID, credit word, directory),
//!   which stays open afterwards as the liveness signal, like the shm socket.
//!
//! Posting sends uses the extended (`ibv_wr_*`) API, which does not allocate; sideway's receive
//! guard allocates a small vector per repost (a sideway limitation).

mod qp;

pub use qp::VerbsQp;

use crate::error::LinkError;
use crate::sys::verbs::RegisteredBuf;
use crate::{DirEntry, RegionSpec};
use naam_core::memory::RegionMem;
use naam_core::region::{Perms, RegionDesc, RegionId};
use sideway::ibverbs::device::{DeviceInfo, DeviceList};
use sideway::ibverbs::device_context::DeviceContext;
use sideway::ibverbs::protection_domain::ProtectionDomain;
use sideway::ibverbs::AccessFlags;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

/// Device and queue sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerbsConfig {
    /// Device name (`mlx5_0`); the first device when `None`.
    pub device: Option<String>,
    pub port: u8,
    pub gid_index: u8,
    /// Receive buffers per queue pair: the ring depth.
    pub ring_slots: u32,
    pub staging_bytes: usize,
    /// One-sided ops in flight (plus completions not yet polled).
    pub cq_depth: usize,
}

impl Default for VerbsConfig {
    fn default() -> Self {
        VerbsConfig {
            device: None,
            port: 1,
            gid_index: 0,
            ring_slots: 64,
            staging_bytes: 64 << 10,
            cq_depth: 64,
        }
    }
}

fn rdma<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> LinkError {
    move |e| LinkError::Rdma {
        what,
        detail: e.to_string(),
    }
}

/// An opened RDMA device and protection domain.
pub struct VerbsDevice {
    ctx: Arc<DeviceContext>,
    pd: Arc<ProtectionDomain>,
    cfg: VerbsConfig,
}

impl VerbsDevice {
    /// Opens the configured device. Fails with `LinkError::Rdma { what: "no RDMA device", .. }`
    /// on machines without one.
    pub fn open(cfg: VerbsConfig) -> Result<VerbsDevice, LinkError> {
        let list = DeviceList::new().map_err(|e| LinkError::Rdma {
            what: "no RDMA device",
            detail: format!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            ),
        })?;
        let dev = match &cfg.device {
            Some(name) => list.iter().find(|d| d.name() == *name),
            None => list.iter().next(),
        }
        .ok_or_else(|| LinkError::Rdma {
            what: "no RDMA device",
            detail: match &cfg.device {
                Some(n) => format!("device {n} not found"),
                None => "the device list is empty".to_owned(),
            },
        })?;
        let ctx = dev.open().map_err(rdma("open device"))?;
        let pd = ctx.alloc_pd().map_err(rdma("allocate protection domain"))?;
        Ok(VerbsDevice { ctx, pd, cfg })
    }
}

fn region_access(perms: Perms) -> AccessFlags {
    let mut a = AccessFlags::LocalWrite;
    if perms.contains(Perms::READ) {
        a |= AccessFlags::RemoteRead;
    }
    if perms.contains(Perms::WRITE) {
        a |= AccessFlags::RemoteWrite;
    }
    if perms.contains(Perms::ATOMIC) {
        a |= AccessFlags::RemoteAtomic;
    }
    a
}

/// The memory owner's side: registered regions, and queue pairs accepted from peers.
pub struct VerbsHost {
    dev: Arc<VerbsDevice>,
    regions: Vec<(DirEntry, RegisteredBuf)>,
}

impl VerbsHost {
    pub fn new(dev: VerbsDevice) -> Self {
        VerbsHost {
            dev: Arc::new(dev),
            regions: Vec::new(),
        }
    }

    /// Allocates and registers a region; its directory entry carries the address and rkey.
    pub fn register_region(&mut self, spec: RegionSpec) -> Result<DirEntry, LinkError> {
        if spec.len == 0 || self.regions.iter().any(|(e, _)| e.desc.id == spec.id) {
            return Err(LinkError::Directory {
                reason: "empty region or duplicate id",
            });
        }
        let len = usize::try_from(spec.len).map_err(|_| LinkError::Directory {
            reason: "region too large",
        })?;
        let buf =
            RegisteredBuf::new(&self.dev.pd, len, region_access(spec.perms)).map_err(|d| {
                LinkError::Rdma {
                    what: "register region",
                    detail: d,
                }
            })?;
        let entry = DirEntry {
            desc: spec.desc(),
            offset: buf.addr(),
            rkey: buf.rkey(),
        };
        self.regions.push((entry, buf));
        Ok(entry)
    }

    pub fn directory(&self) -> Vec<DirEntry> {
        self.regions.iter().map(|(e, _)| *e).collect()
    }

    /// Region `id`'s bytes in this process.
    pub fn region(&self, id: RegionId) -> Option<&RegionMem> {
        self.regions
            .iter()
            .find(|(e, _)| e.desc.id == id)
            .map(|(_, b)| b.mem())
    }

    /// Sets up a queue pair with the peer on the other end of `side`, offering this host's
    /// directory.
    pub fn accept(&self, side: TcpStream) -> Result<VerbsQp, LinkError> {
        VerbsQp::handshake(self.dev.clone(), side, &self.directory())
    }
}

impl crate::LinkHost for VerbsHost {
    fn register_region(&mut self, spec: RegionSpec) -> Result<DirEntry, LinkError> {
        VerbsHost::register_region(self, spec)
    }

    fn directory(&self) -> Vec<DirEntry> {
        VerbsHost::directory(self)
    }
}

/// The peer's connection parameters, exchanged over the side channel.
struct PeerInfo {
    qpn: u32,
    psn: u32,
    lid: u16,
    gid: [u8; 16],
    credit_addr: u64,
    credit_rkey: u32,
    ring_slots: u32,
    directory: Vec<DirEntry>,
}

const INFO_MAGIC: u32 = u32::from_le_bytes(*b"NAVB");
const ENTRY_WIRE: usize = 40;
const MAX_ENTRIES: usize = 1 << 16;

impl PeerInfo {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64 + self.directory.len() * ENTRY_WIRE);
        for w in [INFO_MAGIC, self.qpn, self.psn, self.lid as u32] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(&self.gid);
        v.extend_from_slice(&self.credit_addr.to_le_bytes());
        v.extend_from_slice(&self.credit_rkey.to_le_bytes());
        v.extend_from_slice(&self.ring_slots.to_le_bytes());
        v.extend_from_slice(&(self.directory.len() as u32).to_le_bytes());
        for e in &self.directory {
            for w in [e.desc.id, e.desc.tenant, e.desc.perms.bits() as u32, e.rkey] {
                v.extend_from_slice(&w.to_le_bytes());
            }
            for w in [e.desc.key, e.offset, e.desc.len] {
                v.extend_from_slice(&w.to_le_bytes());
            }
        }
        v
    }

    fn decode(b: &[u8]) -> Option<PeerInfo> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = b.get(at..at.checked_add(n)?)?;
            at += n;
            Some(s)
        };
        let u32_ = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or([0; 4]));
        let u64_ = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
        if u32_(take(4)?) != INFO_MAGIC {
            return None;
        }
        let (qpn, psn, lid) = (u32_(take(4)?), u32_(take(4)?), u32_(take(4)?) as u16);
        let gid: [u8; 16] = take(16)?.try_into().ok()?;
        let credit_addr = u64_(take(8)?);
        let credit_rkey = u32_(take(4)?);
        let ring_slots = u32_(take(4)?);
        let n = u32_(take(4)?) as usize;
        if n > MAX_ENTRIES {
            return None;
        }
        let mut directory = Vec::with_capacity(n);
        for _ in 0..n {
            let (id, tenant, perms, rkey) = (
                u32_(take(4)?),
                u32_(take(4)?),
                u32_(take(4)?),
                u32_(take(4)?),
            );
            let (key, addr, len) = (u64_(take(8)?), u64_(take(8)?), u64_(take(8)?));
            let desc = RegionDesc {
                id,
                tenant,
                len,
                perms: Perms::from_bits(perms as u8),
                key,
            };
            directory.push(DirEntry {
                desc,
                offset: addr,
                rkey,
            });
        }
        Some(PeerInfo {
            qpn,
            psn,
            lid,
            gid,
            credit_addr,
            credit_rkey,
            ring_slots,
            directory,
        })
    }
}

fn send_frame(s: &mut TcpStream, b: &[u8]) -> std::io::Result<()> {
    s.write_all(&(b.len() as u32).to_le_bytes())?;
    s.write_all(b)
}

fn recv_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut n = [0u8; 4];
    s.read_exact(&mut n)?;
    let n = u32::from_le_bytes(n) as usize;
    if n > 64 + MAX_ENTRIES * ENTRY_WIRE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "setup frame too large",
        ));
    }
    let mut b = vec![0u8; n];
    s.read_exact(&mut b)?;
    Ok(b)
}

#[cfg(test)]
mod tests;
