//! Offloads run at the client: loading, fetching a program from the server (by id, checked
//! by its content hash) and where each call runs.

use super::endpoint::{Endpoint, Fetched, ServerId, FETCH_RETRY};
use super::{unexpected, Client};
use crate::config::ExecMode;
use crate::error::{ClientError, Result};
use crate::reply::Response;
use naam_core::elf;
use naam_core::pool::OffloadSpec;
use naam_core::verifier::{self, VerifierConfig};
use naam_core::wire::{Body, FetchRepr};
use std::sync::Arc;
use std::time::Instant;

impl Endpoint {
    /// Makes offload `id` runnable here: loads `object` (section `section`), verifies it and
    /// compiles it in the local VM pool. The server must know the same offload by the same id.
    pub fn load_local(
        &mut self,
        id: u32,
        object: &[u8],
        section: Option<&str>,
        class: u16,
        read_only: bool,
    ) -> Result<()> {
        let program =
            elf::load_program(object, section).map_err(|e| ClientError::InvalidProgram {
                detail: e.to_string(),
            })?;
        self.load_local_program(id, program, class, read_only)
    }

    /// As [`Self::load_local`], for a program already extracted (and possibly rewritten).
    pub fn load_local_program(
        &mut self,
        id: u32,
        program: elf::Program,
        class: u16,
        read_only: bool,
    ) -> Result<()> {
        let verified = verifier::verify(&program, &VerifierConfig::default()).map_err(|e| {
            ClientError::InvalidProgram {
                detail: e.to_string(),
            }
        })?;
        let spec = OffloadSpec {
            name: program.name.clone(),
            tenant: self.cfg.tenant,
            class,
            read_only,
        };
        self.local.load(id, spec, Arc::new(verified))
    }

    /// As [`Self::load_local`], for a program already verified (say, a bundled handler that
    /// its crate rewrites before verifying).
    pub fn load_local_verified(
        &mut self,
        id: u32,
        program: Arc<naam_core::verifier::VerifiedProgram>,
        class: u16,
        read_only: bool,
    ) -> Result<()> {
        let spec = OffloadSpec {
            name: program.name().to_owned(),
            tenant: self.cfg.tenant,
            class,
            read_only,
        };
        self.local.load(id, spec, program)
    }
}

impl Client {
    /// Makes sure a program this client would run itself is the server's current one:
    /// fetches a program it lacks (FETCH, verified here; in `Auto` mode only read-only ones,
    /// the only ones a lease moves), and checks a fetched one's digest again when it is
    /// about to run after the start of its class's lease (`Auto`) or on every call
    /// (`Local`). A replaced program is fetched again, a removed one unloaded; programs
    /// loaded by the application ([`Endpoint::load_local`], the bundled ones) are its own and
    /// left alone. Failures other than in `Local` mode only mean "run at the server".
    pub(super) fn ensure_program(
        &mut self,
        server: ServerId,
        offload: u32,
        mode: ExecMode,
    ) -> Result<()> {
        let now = Instant::now();
        let key = (server, offload);
        if let Some(f) = self.ep.fetched.get(&key) {
            let class = self.ep.local.offload(offload).map(|o| o.class);
            let s = self.ep.server(server)?;
            let lease = class.and_then(|c| s.lease_began.get(&c));
            let due = mode == ExecMode::Local || lease.is_some_and(|&began| f.checked < began);
            if !due {
                return Ok(());
            }
            let (digest, checked) = (f.digest, self.remote_digest(server, offload));
            match checked {
                Ok(d) if d == digest => {
                    if let Some(f) = self.ep.fetched.get_mut(&key) {
                        f.checked = now;
                    }
                    return Ok(());
                }
                // Replaced (fetched again below), or gone or unreachable: not run here.
                Ok(_) | Err(_) => {
                    self.ep.fetched.remove(&key);
                    self.ep.local.unload(offload);
                }
            }
        } else if self.ep.local.offload(offload).is_some() {
            return Ok(());
        }
        if self
            .ep
            .unfetchable
            .get(&key)
            .is_some_and(|&until| now < until)
        {
            return Ok(());
        }
        match self.fetch_local(server, offload, mode) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.ep.unfetchable.insert(key, now + FETCH_RETRY);
                if mode == ExecMode::Local {
                    Err(ClientError::NotLocal {
                        offload,
                        reason: "the client has no program for it and could not fetch one",
                    })
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Fetches offload `id`'s program from `server`, verifies it and loads it for local runs.
    pub(super) fn fetch_local(&mut self, server: ServerId, id: u32, mode: ExecMode) -> Result<()> {
        let info =
            self.list(server)?
                .into_iter()
                .find(|o| o.id == id)
                .ok_or(ClientError::NotLocal {
                    offload: id,
                    reason: "the server has no such offload",
                })?;
        if !info.served {
            return Err(ClientError::NotLocal {
                offload: id,
                reason: "the dataplane does not run it (see its log), nor hands it out",
            });
        }
        if mode == ExecMode::Auto && !info.read_only {
            return Err(ClientError::NotLocal {
                offload: id,
                reason: "only read-only offloads move to clients",
            });
        }
        let (insns, digest) = self.fetch_program(server, id)?;
        let program = elf::Program::from_insns(info.name.clone(), insns);
        self.ep
            .load_local_program(id, program, info.class, info.read_only)?;
        self.ep.fetched.insert(
            (server, id),
            Fetched {
                digest,
                checked: Instant::now(),
            },
        );
        self.ep.stats.fetched += 1;
        Ok(())
    }

    /// The digest of offload `id`'s program at `server` (a FETCH past its end: no bytes).
    pub(super) fn remote_digest(&mut self, server: ServerId, id: u32) -> Result<u64> {
        let body = Body::Fetch(FetchRepr {
            id,
            start: u32::MAX,
        });
        match self.control(server, body)? {
            Response::Fetched(p) => Ok(p.digest),
            other => Err(unexpected(0, "fetch reply", &other)),
        }
    }
}
