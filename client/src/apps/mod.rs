//! Typed wrappers for the bundled applications: MICA (`get`/`put`/`delete`) and the B-tree
//! (`lookup`/`scan`). Both learn their parameters (regions, keys, geometry) with `Describe`
//! on every server, build arguments with the handler crate's builders, and route each key to
//! its server through [`Shards`] (one server for a [`Client`], the hash ring for a
//! [`crate::ShardedClient`]).

use crate::bundled::{self, BundledOffload};
use crate::client::{Client, ServerId};
use crate::error::{ClientError, Result};
use crate::reply::{Reply, Response, Ticket};
use crate::sharded::Shards;
use naam_handlers::btree::layout::SCAN_MAX;
use naam_handlers::btree::{parse_lookup_reply, Args as BTreeArgs, ScanReply};
use naam_handlers::mica::{MicaArgs, MicaError, MicaGeometry, MicaReply};

fn param(params: &[(String, u64)], app: &'static str, name: &str) -> Result<u64> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|&(_, v)| v)
        .ok_or_else(|| ClientError::App {
            app,
            reason: format!("the server's describe({app}) has no {name}"),
        })
}

/// Arguments MICA refuses here, before anything is sent.
fn mica_args_err(e: MicaError) -> ClientError {
    ClientError::Argument {
        app: "mica",
        reason: e.to_string(),
    }
}

fn mica_err(e: MicaError) -> ClientError {
    ClientError::App {
        app: "mica",
        reason: e.to_string(),
    }
}

/// What a MICA request ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MicaOutcome {
    /// GET found the key.
    Value(Vec<u8>),
    /// PUT stored, DELETE removed.
    Done,
    /// GET or DELETE: no such key.
    NotFound,
}

/// The MICA key-value store on one or more servers.
pub struct Mica<S: Shards = Client> {
    inner: S,
    geoms: Vec<MicaGeometry>,
    params: Vec<Vec<(String, u64)>>,
}

impl<S: Shards> Mica<S> {
    /// Describes `mica` on every server (remembering its region keys) and makes the bundled
    /// MICA handlers runnable locally when they load here.
    pub fn new(mut inner: S) -> Result<Self> {
        let mut geoms = Vec::new();
        let mut params = Vec::new();
        for s in 0..inner.server_count() {
            let p = inner.client().describe(s, "mica")?;
            let buckets = param(&p, "mica", "buckets")?;
            geoms.push(MicaGeometry {
                index_region: param(&p, "mica", "index_region")? as u32,
                log_region: param(&p, "mica", "log_region")? as u32,
                bucket_count: buckets,
                // Older servers do not report it; this is the builder's default.
                overflow_count: param(&p, "mica", "overflow").unwrap_or(buckets / 8 + 16),
                log_size: param(&p, "mica", "log_size")?,
                // The table's mode; older servers do not report it (lossy).
                lossless: param(&p, "mica", "lossless").is_ok_and(|v| v != 0),
            });
            params.push(p);
        }
        let _ = bundled::load_local_mica(inner.client());
        Ok(Self {
            inner,
            geoms,
            params,
        })
    }

    /// A parameter of `describe(mica)` on `server` (say `seed`, the key set the server
    /// pre-filled the table with, when it reports one).
    pub fn param(&self, server: ServerId, name: &str) -> Option<u64> {
        self.params
            .get(server)?
            .iter()
            .find(|(k, _)| k == name)
            .map(|&(_, v)| v)
    }

    pub fn geometry(&self, server: ServerId) -> Option<&MicaGeometry> {
        self.geoms.get(server)
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }

    fn submit(&mut self, o: BundledOffload, key: &[u8], args: &[u8]) -> Result<Ticket> {
        let server = self.inner.server_for(key);
        let client = self.inner.client();
        let mode = client.config().exec_mode;
        client.submit_call_on(server, o.id, o.class, args, mode)
    }

    fn geom(&self, key: &[u8]) -> &MicaGeometry {
        &self.geoms[self.inner.server_for(key)]
    }

    /// Starts a GET; finish it with [`Self::decode`] on the polled reply.
    pub fn submit_get(&mut self, key: &[u8]) -> Result<Ticket> {
        let args = MicaArgs::get(self.geom(key), key).map_err(mica_args_err)?;
        self.submit(bundled::MICA_GET, key, args.as_bytes())
    }

    pub fn submit_put(&mut self, key: &[u8], value: &[u8]) -> Result<Ticket> {
        let args = MicaArgs::put(self.geom(key), key, value).map_err(mica_args_err)?;
        self.submit(bundled::MICA_PUT, key, args.as_bytes())
    }

    pub fn submit_delete(&mut self, key: &[u8]) -> Result<Ticket> {
        let args = MicaArgs::delete(self.geom(key), key).map_err(mica_args_err)?;
        self.submit(bundled::MICA_DELETE, key, args.as_bytes())
    }

    /// Decodes the reply of a MICA request (an abort becomes the MICA error it stands for).
    pub fn decode(reply: &Reply) -> Result<MicaOutcome> {
        match reply.status {
            naam_core::wire::AmStatus::Aborted(code) => Err(mica_err(MicaError::from_abort(code))),
            naam_core::wire::AmStatus::Done => {
                Ok(match MicaReply::parse(&reply.output).map_err(mica_err)? {
                    MicaReply::Value(v) => MicaOutcome::Value(v.to_vec()),
                    MicaReply::Done => MicaOutcome::Done,
                    MicaReply::NotFound => MicaOutcome::NotFound,
                })
            }
        }
    }

    fn wait(&mut self, t: Ticket) -> Result<MicaOutcome> {
        match self.inner.client().wait(t)? {
            Response::Am(r) => Self::decode(&r),
            other => Err(ClientError::App {
                app: "mica",
                reason: format!("unexpected {other:?}"),
            }),
        }
    }

    /// The value of `key`, or `None`.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let t = self.submit_get(key)?;
        match self.wait(t)? {
            MicaOutcome::Value(v) => Ok(Some(v)),
            MicaOutcome::NotFound => Ok(None),
            MicaOutcome::Done => Err(mica_err(MicaError::BadReply { len: 8 })),
        }
    }

    /// Stores `key = value` (insert or update).
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let t = self.submit_put(key, value)?;
        self.wait(t).map(|_| ())
    }

    /// Removes `key`; false when it was not there.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        let t = self.submit_delete(key)?;
        Ok(self.wait(t)? == MicaOutcome::Done)
    }
}

/// Per-server B-tree parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BTreeParams {
    pub region: u32,
    /// Root node offset (0: the handler reads it from the superblock).
    pub root: u64,
    pub depth: u64,
    pub keys: u64,
}

fn btree_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::App {
        app: "btree",
        reason: e.to_string(),
    }
}

/// The Cell-style B-tree on one or more servers.
pub struct BTree<S: Shards = Client> {
    inner: S,
    params: Vec<BTreeParams>,
}

impl<S: Shards> BTree<S> {
    pub fn new(mut inner: S) -> Result<Self> {
        let mut params = Vec::new();
        for s in 0..inner.server_count() {
            let p = inner.client().describe(s, "btree")?;
            params.push(BTreeParams {
                region: param(&p, "btree", "region")? as u32,
                root: param(&p, "btree", "root").unwrap_or(0),
                depth: param(&p, "btree", "depth").unwrap_or(0),
                keys: param(&p, "btree", "keys").unwrap_or(0),
            });
        }
        let _ = bundled::load_local_btree(inner.client());
        Ok(Self { inner, params })
    }

    pub fn params(&self, server: ServerId) -> Option<&BTreeParams> {
        self.params.get(server)
    }

    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    fn call(&mut self, server: ServerId, o: BundledOffload, args: &[u8]) -> Result<Vec<u8>> {
        let client = self.inner.client();
        let mode = client.config().exec_mode;
        client
            .call_on(server, o.id, o.class, args, mode)?
            .into_output()
    }

    /// The value stored under `key`, or `None`.
    pub fn lookup(&mut self, key: u64) -> Result<Option<u64>> {
        let s = self.inner.server_for(&key.to_le_bytes());
        let p = self.params[s];
        let args = BTreeArgs::lookup(p.region, key)
            .with_root(p.root)
            .to_bytes();
        let out = self.call(s, bundled::BTREE_LOOKUP, &args)?;
        parse_lookup_reply(&out).map_err(btree_err)
    }

    /// Up to `n` (key, value) pairs with keys `>= from`, in key order, across all servers.
    pub fn scan(&mut self, from: u64, n: usize) -> Result<Vec<(u64, u64)>> {
        let mut all = Vec::new();
        for s in 0..self.inner.server_count() {
            let p = self.params[s];
            let mut next = from;
            let mut got = 0;
            while got < n {
                let count = (n - got).min(SCAN_MAX) as u32;
                let args = BTreeArgs::scan(p.region, next, count)
                    .with_root(p.root)
                    .to_bytes();
                let out = self.call(s, bundled::BTREE_SCAN, &args)?;
                let r = ScanReply::parse(&out).map_err(btree_err)?;
                let pairs: Vec<(u64, u64)> = r.pairs().collect();
                got += pairs.len();
                let last = pairs.last().map(|&(k, _)| k);
                all.extend(pairs);
                match last {
                    _ if r.end => break,
                    Some(k) if k < u64::MAX => next = k + 1,
                    _ => break,
                }
            }
        }
        all.sort_unstable();
        all.truncate(n);
        Ok(all)
    }
}
