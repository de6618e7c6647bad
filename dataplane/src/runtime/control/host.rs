//! The host agent as the source of truth: reconciling the registry with it, fetching
//! programs from it, and relaying requests it answers.

use std::sync::Arc;

use naam_core::verifier::verify;
use naam_core::wire::{Body, DescribeRepr, ErrorCode, FetchRepr, Message, PageRequestRepr};

use super::*;
use crate::runtime::hostctl::HostCtlError;

/// Why a program could not be fetched from the host agent.
#[derive(Debug, thiserror::Error)]
pub(super) enum FetchError {
    /// No answer (stalled, gone): it may answer later.
    #[error(transparent)]
    Unreachable(HostCtlError),
    /// Its answer: it will not give that program.
    #[error("{0}")]
    Refused(String),
}

/// Times in a row the host agent may be unreachable while its offloads are re-added before
/// the one asked for is given up (listed as not served until the next reconnection).
pub(super) const READD_TRIES: u32 = 5;

/// What adding one offload is taken to cost before one was measured (fetch, verify, compile:
/// a fraction of a millisecond in a release build, several in a debug build).
pub(super) const READD_EACH_NS: u64 = 1_000_000;

/// Bounds of the wait a worker tells a client whose offload is being added.
const READD_WAIT_NS: std::ops::RangeInclusive<u64> = 1_000_000..=1_000_000_000;

impl ControlPlane {
    /// After a (re)connection to the host agent, makes the registries agree; the host agent
    /// is the source of truth. Removes the run-time offloads (ids from `FIRST_DYNAMIC_ID`)
    /// the host agent does not hold under the same id, name, tenant, class and mode (a
    /// restarted one without `--persist` or `--snapshot` forgot them), and queues for
    /// [`ControlPlane::readd`] those it holds and this dataplane lacks (a restarted
    /// dataplane, or a host agent that restored its offloads). Returns how many were removed
    /// and queued; `None` when the host agent did not answer.
    pub fn reconcile_with_host(&mut self) -> Option<(usize, usize)> {
        // What an earlier connection left to add is this one's to decide (its host agent
        // may not hold them).
        // The workers keep answering from the last listing until this one's is in (when it
        // was cleared here first, ids in neither it nor the registry were answered
        // `unknown_offload` while the pages came, probe 21).
        self.readding.clear();
        self.readd_failures = 0;
        let mut host: Vec<OffloadInfo> = Vec::new();
        let mut start = 0;
        loop {
            let req = Message::new(0, 0, Body::List(PageRequestRepr { start, max: 0 }));
            let mut buf = [0u8; 64];
            let n = req.emit(&mut buf).ok()?;
            // Unsealed: on the host agent's own socket this process speaks as the admin.
            // Not listed: its offloads may be any run-time id (`host_unavailable`, retry)
            // until a listing succeeds.
            let unlisted = || self.shared.pending.unlisted();
            let Ok(reply) = self.host.request_while(&buf[..n], &*self.host_live) else {
                unlisted();
                return None;
            };
            let Ok(Body::ListReply(page)) = Message::parse(reply).map(|m| m.body) else {
                unlisted();
                return None;
            };
            host.extend(page.entries.iter().map(|e| OffloadInfo::from(&e)));
            if !page.more {
                break;
            }
            start = page.next;
        }
        let mut removed = 0;
        for o in self.shared.registry.list() {
            // The same id must be the same offload: name, owner, class and mode (a host agent
            // restarted from an older or edited store may hold another under that id).
            let known = host.iter().any(|h| {
                h.id == o.id
                    && h.name == o.name
                    && h.tenant == o.tenant
                    && h.class == o.class
                    && h.read_only == o.read_only
            });
            if o.id >= FIRST_DYNAMIC_ID && !known && self.shared.registry.unregister(o.id).is_ok() {
                tracing::warn!(
                    id = o.id,
                    name = o.name,
                    "offload the host agent does not hold removed"
                );
                removed += 1;
            }
        }
        self.unserved.clear();
        for h in host {
            if h.id < FIRST_DYNAMIC_ID || self.shared.registry.get(h.id).is_some() {
                continue;
            }
            if h.class >= self.classes {
                tracing::error!(
                    id = h.id,
                    name = h.name,
                    class = h.class,
                    classes = self.classes,
                    "the host agent's offload has a class this dataplane does not serve: not added"
                );
                self.unserved.push(OffloadInfo { served: false, ..h });
                continue;
            }
            self.readding.push_back(h);
        }
        let wait = self.readd_wait_ns();
        self.shared
            .pending
            .adding(self.readding.iter().map(|o| o.id), wait);
        if !self.readding.is_empty() {
            tracing::info!(
                offloads = self.readding.len(),
                "adding the host agent's offloads this dataplane lacks"
            );
        }
        self.describe_bundled_apps();
        Some((removed, self.readding.len()))
    }

    /// Adds offloads [`ControlPlane::reconcile_with_host`] queued, until `until_ns` (at
    /// least one): each is fetched from the host agent (FETCH), verified and compiled here,
    /// a fraction of a millisecond each (several in a debug build). Done between the
    /// monitor's samples and the batches of control requests, so that a dataplane restarted
    /// beside thousands of offloads serves its control port, its monitor and its policy
    /// meanwhile (re-adding all of them at once held them ~24 s in a debug build, probe 16).
    /// Returns how many were added.
    pub fn readd(&mut self, until_ns: u64) -> usize {
        let mut added = 0;
        while let Some(h) = self.readding.pop_front() {
            let (id, began) = (h.id, naam_link::now_ns());
            match self.fetch_from_host(h.id) {
                Ok(insns) => {
                    let prog = naam_core::elf::Program::from_insns(h.name.clone(), insns);
                    let verified = verify(&prog, &self.verifier).map_err(|e| e.to_string());
                    let registered = verified.and_then(|v| {
                        self.shared
                            .registry
                            .register_as(h.id, h.spec(), Arc::new(v))
                            .map_err(|e| e.to_string())
                    });
                    match registered {
                        Ok(_) => {
                            tracing::debug!(
                                id = h.id,
                                name = h.name,
                                "offload of the host agent added"
                            );
                            added += 1;
                        }
                        Err(e) => {
                            tracing::error!(id = h.id, name = h.name, error = %e, "the host agent's offload refused here");
                            self.unserved.push(OffloadInfo { served: false, ..h });
                        }
                    }
                }
                // The host agent stalled or went away since the last look: tried again
                // next time (a stall does not reconnect, so marked unserved it would stay
                // so), unless that keeps failing.
                Err(FetchError::Unreachable(e)) if self.readd_failures < READD_TRIES => {
                    tracing::debug!(id = h.id, error = %naam_core::with_sources(&e), "host agent unreachable; the offload is fetched later");
                    self.readd_failures += 1;
                    self.readding.push_front(h);
                    break;
                }
                Err(e) => {
                    tracing::warn!(id = h.id, error = %naam_core::with_sources(&e), "could not fetch the host agent's offload");
                    self.unserved.push(OffloadInfo { served: false, ..h });
                }
            }
            self.readd_failures = 0;
            let now = naam_link::now_ns();
            self.readd_each_ns = (3 * self.readd_each_ns + now.saturating_sub(began)) / 4;
            // Added (the registry has it) or given up: no longer pending either way.
            self.shared.pending.done(id, self.readd_wait_ns());
            if now >= until_ns {
                break;
            }
        }
        if added > 0 && self.readding.is_empty() {
            tracing::info!("the host agent's offloads are all added");
        }
        added
    }

    /// About how long adding what waits takes: what a worker tells a client to wait.
    pub(super) fn readd_wait_ns(&self) -> u64 {
        let left = self.readding.len() as u64;
        let wait = left.saturating_mul(self.readd_each_ns);
        wait.clamp(*READD_WAIT_NS.start(), *READD_WAIT_NS.end())
    }

    /// Whether offloads of the host agent wait to be added ([`ControlPlane::readd`]).
    pub fn readding(&self) -> bool {
        !self.readding.is_empty()
    }

    /// Offload `id`'s verified instructions from the host agent (all FETCH pieces, the digest
    /// checked).
    pub(super) fn fetch_from_host(&mut self, id: u32) -> Result<Vec<u8>, FetchError> {
        let refused = |d: String| FetchError::Refused(d);
        let mut insns = Vec::new();
        loop {
            let start = insns.len() as u32;
            let req = Message::new(0, 0, Body::Fetch(FetchRepr { id, start }));
            let mut buf = [0u8; 64];
            let n = req.emit(&mut buf).map_err(|e| refused(e.to_string()))?;
            let reply = self
                .host
                .request_while(&buf[..n], &*self.host_live)
                .map_err(FetchError::Unreachable)?;
            let piece = match Message::parse(reply).map(|m| m.body) {
                Ok(Body::FetchReply(p)) if p.start == start => p,
                Ok(Body::Error(e)) => {
                    return Err(refused(format!("{}: {}", e.code.name(), e.detail)))
                }
                _ => return Err(refused("unexpected reply to FETCH".into())),
            };
            insns.extend_from_slice(piece.bytes);
            if insns.len() >= piece.total as usize || piece.bytes.is_empty() {
                if naam_core::wire::program_digest(&insns) != piece.digest {
                    return Err(refused("the program changed while it was fetched".into()));
                }
                return Ok(insns);
            }
        }
    }

    /// Forwards one request to the host agent's control socket, unless the host agent is
    /// suspect: then the request is refused at once rather than blocking this thread (which
    /// also runs the monitor, the policy and the reconnect) for the socket's timeout.
    pub(super) fn ask_host(&mut self, raw: &[u8]) -> Result<&[u8], HostCtlError> {
        ask(&self.shared, &mut self.host, &*self.host_live, raw)
    }

    /// DESCRIBE `app` from entry `start`, for `who`: relayed to the host agent; a bundled
    /// application's answer is kept, and given again while the host agent is unavailable
    /// (`described`).
    pub(super) fn describe(
        &mut self,
        msg: &Message<'_>,
        app: &str,
        start: u32,
        who: Principal,
        raw: &[u8],
        out: &mut [u8],
    ) -> usize {
        let cacheable = described::is_bundled_app(app);
        // Not `ask_host`: its reply borrows all of `self`, and the answer is kept in `self`.
        let e = match ask(&self.shared, &mut self.host, &*self.host_live, raw) {
            Ok(r) if r.len() <= out.len() => {
                if cacheable {
                    self.described.store(who, app, start, r);
                }
                out[..r.len()].copy_from_slice(r);
                return r.len();
            }
            Ok(_) => {
                let d = "host reply too large";
                return emit(&msg.reply(error(ErrorCode::Internal, d)), out);
            }
            Err(e) => e,
        };
        let kept = match cacheable {
            true => self.described.serve(who, app, start),
            false => None,
        };
        if let Some(kept) = kept.and_then(|r| Message::parse(r).ok()) {
            return emit(&msg.reply(kept.body), out);
        }
        let d = crate::runtime::with_sources(&e);
        emit(&msg.reply(error(ErrorCode::HostUnavailable, &d)), out)
    }

    /// After a (re)connection: forgets the last host agent's descriptions and asks this one
    /// for every bundled application's on behalf of every principal of the keyring that may
    /// see them (the admin and their tenant; each request sealed with that principal's key,
    /// so the host agent answers each as it would answer its clients). So clients
    /// can start while the host agent is stalled even if none of them described an
    /// application before. Applications the host agent does not run are skipped.
    pub(super) fn describe_bundled_apps(&mut self) {
        /// Principals asked for at most (each costs a few requests at every connect).
        const PRINCIPALS: usize = 64;
        self.described.clear();
        self.keys_refused_by_host = 0;
        let mut asked: Vec<Principal> = Vec::new();
        let keys: Vec<naam_core::auth::Credential> = self.gate.keys().iter().cloned().collect();
        let mut nonce = wall_clock_ns();
        'principals: for key in keys {
            // Only those the bundled applications' tenant lets see them: asking for the
            // others made the host agent log and count a forbidden request per application
            // at every connect, polluting a security counter (the probe of 2026-12-06).
            let may_see = key.principal.may_act_for(naam_handlers::bundled::TENANT);
            if !may_see || asked.contains(&key.principal) || asked.len() == PRINCIPALS {
                continue;
            }
            asked.push(key.principal);
            for app in described::bundled_apps() {
                let mut start = 0;
                loop {
                    let req = Message::new(0, 0, Body::Describe(DescribeRepr { app, start }));
                    let mut buf = [0u8; 64];
                    let Ok(n) = req.emit(&mut buf) else { break };
                    // Distinct nonces: the host agent refuses a (key, nonce) it saw before.
                    nonce += 1;
                    let Ok(sealed) = key.seal(nonce, &buf[..n]) else {
                        break;
                    };
                    let Ok(reply) = self.host.request_while(&sealed, &*self.host_live) else {
                        return;
                    };
                    let next = match Message::parse(reply).map(|m| m.body) {
                        Ok(Body::DescribeReply(page)) => page.more.then_some(page.next),
                        Ok(Body::Error(e)) if e.code == ErrorCode::Unauthorized => {
                            // Said once per principal: every request its clients seal will
                            // be refused the same way.
                            self.keys_refused_by_host += 1;
                            tracing::error!(
                                principal = %key.principal,
                                key_id = key.key_id,
                                detail = e.detail,
                                "the host agent does not accept this dataplane's key: --credentials \
                                 is not the host agent's key file (its clients' requests will \
                                 be refused)"
                            );
                            continue 'principals;
                        }
                        _ => break,
                    };
                    let reply = reply.to_vec();
                    self.described.store(key.principal, app, start, &reply);
                    match next {
                        Some(n) if n > start => start = n,
                        _ => break,
                    }
                }
            }
        }
    }
}

/// [`ControlPlane::ask_host`] on the fields it needs.
fn ask<'h>(
    shared: &Shared,
    host: &'h mut HostControl,
    live: &dyn Fn() -> bool,
    raw: &[u8],
) -> Result<&'h [u8], HostCtlError> {
    // Gone (stopped, crashed: the monitor has seen its link close) is not late: a client
    // told to try again soon would wait for nothing.
    let gone = || !shared.host_up.load(Ordering::Relaxed);
    if gone() {
        return Err(if shared.host_refused.load(Ordering::Relaxed) {
            HostCtlError::Unusable
        } else {
            HostCtlError::Gone
        });
    }
    if shared.host_suspect() || !live() {
        return Err(HostCtlError::Unresponsive);
    }
    match host.request_while(raw, live) {
        Err(HostCtlError::Unresponsive) if gone() => Err(HostCtlError::Gone),
        r => r,
    }
}
