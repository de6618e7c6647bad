//! Control requests: register, unregister, list, fetch, stats and describe.

use super::{Client, RegisterOptions, ServerId};
use crate::error::{ClientError, Result};
use crate::reply::{OffloadInfo, Response};
use naam_core::wire::{
    Body, DescribeRepr, FetchRepr, OffloadIdRepr, PageRequestRepr, RegisterRepr,
};

impl Client {
    pub(super) fn control(&mut self, server: ServerId, body: Body<'_>) -> Result<Response> {
        let t = self
            .ep
            .submit_control(std::time::Instant::now(), server, body)?;
        let t = self.sent(t)?;
        self.wait(t)
    }

    /// Registers an ELF object on `server`; returns the offload id it got. When the program
    /// also loads here, it becomes runnable locally under the same id.
    pub fn register(
        &mut self,
        server: ServerId,
        object: &[u8],
        opts: &RegisterOptions,
    ) -> Result<u32> {
        let max = naam_core::wire::sealed_object_max(&opts.name, opts.section.as_deref());
        if object.len() > max {
            return Err(ClientError::TooLarge {
                what: "the object",
                len: object.len(),
                max,
            });
        }
        let body = Body::Register(RegisterRepr {
            name: &opts.name,
            tenant: self.ep.cfg.tenant,
            class: opts.class,
            read_only: opts.read_only,
            section: opts.section.as_deref(),
            object,
        });
        let id = match self.control(server, body)? {
            Response::Registered(id) => id,
            other => return Err(unexpected(0, "register reply", &other)),
        };
        // Local execution is an optimisation: a program the local engine cannot take simply
        // always runs at the server.
        let _ = self.ep.load_local(
            id,
            object,
            opts.section.as_deref(),
            opts.class,
            opts.read_only,
        );
        Ok(id)
    }

    /// Registers one of the bundled handlers on `server` (under a new id: the fixed ids
    /// are taken by the server's own registration of the bundled applications).
    pub fn register_bundled(
        &mut self,
        server: ServerId,
        o: crate::bundled::BundledOffload,
        name: &str,
    ) -> Result<u32> {
        let object = crate::bundled::object(o).ok_or(ClientError::NotLocal {
            offload: o.id,
            reason: "this build does not bundle its object",
        })?;
        let opts = RegisterOptions {
            name: name.to_owned(),
            section: Some(o.section.to_owned()),
            class: o.class,
            read_only: o.read_only,
        };
        self.register(server, object, &opts)
    }

    /// Unregisters offload `id` on `server` (and forgets it locally).
    pub fn unregister(&mut self, server: ServerId, id: u32) -> Result<()> {
        match self.control(server, Body::Unregister(OffloadIdRepr { id }))? {
            Response::Ack => {
                self.ep.local.unload(id);
                Ok(())
            }
            other => Err(unexpected(0, "ack", &other)),
        }
    }

    /// Every offload registered on `server` (all pages).
    pub fn list(&mut self, server: ServerId) -> Result<Vec<OffloadInfo>> {
        let mut all = Vec::new();
        let mut start = 0;
        for _ in 0..MAX_PAGES {
            let body = Body::List(PageRequestRepr { start, max: 0 });
            match self.control(server, body)? {
                Response::List(page) => {
                    all.extend(page.entries);
                    match page.next {
                        None => return Ok(all),
                        // Every page must move on: a server that answers "more" from the
                        // same place would be asked forever.
                        Some(n) if n > start && all.len() <= MAX_ENTRIES => start = n,
                        Some(_) => return Err(endless("offload list")),
                    }
                }
                other => return Err(unexpected(0, "list reply", &other)),
            }
        }
        Err(endless("offload list"))
    }

    /// Offload `id`'s verified instructions, as `server` holds them, and their digest
    /// ([`naam_core::wire::program_digest`]). Pages through the program; starts again when
    /// the digest changes on the way (the offload was replaced).
    pub fn fetch_program(&mut self, server: ServerId, id: u32) -> Result<(Vec<u8>, u64)> {
        const ATTEMPTS: usize = 4;
        for _ in 0..ATTEMPTS {
            let mut insns: Vec<u8> = Vec::new();
            let mut digest = None;
            loop {
                let body = Body::Fetch(FetchRepr {
                    id,
                    start: insns.len() as u32,
                });
                let piece = match self.control(server, body)? {
                    Response::Fetched(p) => p,
                    other => return Err(unexpected(0, "fetch reply", &other)),
                };
                if piece.total as usize > MAX_PROGRAM_BYTES {
                    return Err(ClientError::TooLarge {
                        what: "the fetched program",
                        len: piece.total as usize,
                        max: MAX_PROGRAM_BYTES,
                    });
                }
                if *digest.get_or_insert(piece.digest) != piece.digest
                    || piece.start as usize != insns.len()
                {
                    break;
                }
                insns.extend_from_slice(&piece.bytes);
                if insns.len() >= piece.total as usize || piece.bytes.is_empty() {
                    let d = digest.unwrap_or_default();
                    if insns.len() == piece.total as usize
                        && naam_core::wire::program_digest(&insns) == d
                    {
                        return Ok((insns, d));
                    }
                    break;
                }
            }
        }
        Err(ClientError::Fetch {
            offload: id,
            attempts: ATTEMPTS,
        })
    }

    /// Every counter of `server` (all pages).
    pub fn server_stats(&mut self, server: ServerId) -> Result<Vec<(String, u64)>> {
        self.kv_pages(server, |start| {
            Body::Stats(PageRequestRepr { start, max: 0 })
        })
    }

    /// The parameters of application `app` on `server` (all pages). Parameters named
    /// `*_region` with a matching `*_key` (and `region`/`key`) are remembered as region keys.
    pub fn describe(&mut self, server: ServerId, app: &str) -> Result<Vec<(String, u64)>> {
        let params = self.kv_pages(server, |start| Body::Describe(DescribeRepr { start, app }))?;
        let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|&(_, v)| v);
        for (name, region) in &params {
            let key_name = match name.strip_suffix("region") {
                Some(prefix) => format!("{prefix}key"),
                None => continue,
            };
            if let (Ok(region), Some(key)) = (u32::try_from(*region), get(&key_name)) {
                self.set_region_key(server, region, key)?;
            }
        }
        Ok(params)
    }

    pub(super) fn kv_pages<'a>(
        &mut self,
        server: ServerId,
        body: impl Fn(u32) -> Body<'a>,
    ) -> Result<Vec<(String, u64)>> {
        let mut all = Vec::new();
        let mut start = 0;
        for _ in 0..MAX_PAGES {
            match self.control(server, body(start))? {
                Response::Stats(page) | Response::Describe(page) => {
                    all.extend(page.entries);
                    match page.next {
                        None => return Ok(all),
                        Some(n) if n > start && all.len() <= MAX_ENTRIES => start = n,
                        Some(_) => return Err(endless("counter or parameter list")),
                    }
                }
                other => return Err(unexpected(0, "paged reply", &other)),
            }
        }
        Err(endless("counter or parameter list"))
    }
}

/// Pages of one paged answer the client follows at most, and entries it collects at most:
/// far beyond what a server holds (65 536 offloads; a few thousand counters), so that a
/// broken or hostile server cannot keep it asking, or growing, forever.
const MAX_PAGES: usize = 1 << 14;
const MAX_ENTRIES: usize = 1 << 18;

/// The largest program a client fetches: a verified program is at most a few thousand
/// instruction slots of 8 bytes.
const MAX_PROGRAM_BYTES: usize = 1 << 16;

fn endless(what: &'static str) -> ClientError {
    ClientError::EndlessPages { what }
}

pub(super) fn unexpected(request_id: u64, expected: &'static str, got: &Response) -> ClientError {
    ClientError::UnexpectedReply {
        request_id,
        expected,
        got: got.kind(),
    }
}
