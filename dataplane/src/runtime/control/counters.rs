//! The dataplane's counters: what STATS pages and `/metrics` serve, and the host agent's
//! per-offload counters, read on a thread of their own.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use naam_core::pool::OffloadId;
use naam_core::wire::{clip_utf8, fit_page};
use naam_core::wire::{
    Body, EntryList, ErrorCode, KvEntry, KvListRepr, Message, PageRequestRepr, NAME_MAX,
};

use super::*;
use crate::runtime::hostctl::HostControl;
use crate::runtime::shared::Shared;
use crate::steering::Steering;

/// Reads the host agent's per-offload counters every `every` into `into`, while the host
/// agent is up and not suspect, until the dataplane stops. Runs on a thread of its own with
/// its own connection: a host agent that stalls mid-request blocks only this thread.
pub fn watch_host_counters(
    mut host: HostControl,
    shared: Arc<Shared>,
    into: Arc<Mutex<Vec<(String, u64)>>>,
    every: std::time::Duration,
) {
    let mut last = std::time::Instant::now();
    while !shared.stopping() {
        std::thread::sleep(std::time::Duration::from_millis(20));
        if last.elapsed() < every || !shared.host_up() || shared.host_suspect() {
            continue;
        }
        last = std::time::Instant::now();
        if let Some(v) = host_offload_counters(&mut host) {
            *into.lock().unwrap_or_else(|e| e.into_inner()) = v;
        }
    }
}

/// The host agent's counters STATS relays: per offload, and what its applications read from
/// their data (MICA's log and evictions), and the link socket's refused connections.
const RELAYED: [&str; 3] = ["offload.", "mica.", "link.refused."];

/// The host agent's counters STATS relays under `host.`, since this process has its own of
/// the same names: its gate's (`host.auth.refused.full`: a key's requests refused at the host
/// agent, which forwarded control requests meet after this process's gate).
const RELAYED_AS_HOST: [&str; 1] = ["auth."];

/// The host agent's [`RELAYED`] counters (all STATS pages), or `None` if it did not answer.
pub(super) fn host_offload_counters(host: &mut HostControl) -> Option<Vec<(String, u64)>> {
    let mut v = Vec::new();
    let mut start = 0;
    loop {
        let req = Message::new(0, 0, Body::Stats(PageRequestRepr { start, max: 0 }));
        let mut buf = [0u8; 64];
        let n = req.emit(&mut buf).ok()?;
        // Unsealed: on the host agent's own socket this process speaks as the admin.
        let reply = host.request(&buf[..n]).ok()?;
        let Ok(Body::StatsReply(page)) = Message::parse(reply).map(|m| m.body) else {
            return None;
        };
        for e in page.entries.iter() {
            if RELAYED.iter().any(|p| e.name.starts_with(p)) {
                v.push((e.name.to_owned(), e.value));
            } else if RELAYED_AS_HOST.iter().any(|p| e.name.starts_with(p)) {
                v.push((format!("host.{}", e.name), e.value));
            }
        }
        if !page.more {
            return Some(v);
        }
        start = page.next;
    }
}

impl ControlPlane {
    /// Every counter STATS reports, in a stable order: this process's own, then those it
    /// relays from the host agent.
    pub fn counters(&self) -> Vec<(String, u64)> {
        self.counters_where(|_| true)
    }

    /// Those of [`Self::counters`] whose name `keep` keeps; the relayed ones are looked at
    /// before they are copied (thousands of another tenant's offloads relay tens of thousands).
    fn counters_where(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, u64)> {
        let mut v = self.own_counters();
        v.retain(|(name, _)| keep(name));
        let relayed = self.host_counters.lock().unwrap_or_else(|e| e.into_inner());
        v.extend(relayed.iter().filter(|(name, _)| keep(name)).cloned());
        v
    }

    /// This process's own counters (none relayed from the host agent).
    fn own_counters(&self) -> Vec<(String, u64)> {
        let mut v = Vec::new();
        let m = &self.monitor;
        v.push(("dp.workers".into(), self.workers.len() as u64));
        v.push(("dp.host_up".into(), self.shared.host_up() as u64));
        v.push(("dp.host_suspect".into(), self.shared.host_suspect() as u64));
        v.push(("dp.control_failed".into(), self.failed));
        v.push(("ctl.answered".into(), self.answered));
        v.push(("ctl.ignored".into(), self.ignored));
        v.push(("ctl.describe_cached".into(), self.described.served));
        v.push(("ctl.stats_lists_built".into(), self.stats_lists_built));
        v.push(("ctl.kernel_drops".into(), self.kernel_drops));
        v.push(("ctl.unproven_unanswered".into(), self.unproven_unanswered));
        v.push(("ctl.queue_full".into(), self.queue_full));
        let (intake, held) = (&self.intake, &self.held);
        v.push(("ctl.queued_copies".into(), intake.copies + held.copies));
        v.push(("ctl.queued_too_long".into(), intake.stale + held.stale));
        v.push(("ctl.offloads_readding".into(), self.readding.len() as u64));
        for (c, n) in ErrorCode::ALL.iter().zip(self.errors) {
            if n > 0 {
                v.push((format!("ctl.error.{}", c.name()), n));
            }
        }
        v.extend(self.gate.counters());
        v.push((
            "dp.link_generation".into(),
            self.shared.link_generation.load(Ordering::Relaxed),
        ));
        v.push(("dp.keys_refused_by_host".into(), self.keys_refused_by_host));
        v.push((
            "dp.link_refused".into(),
            self.shared.link_refused.load(Ordering::Relaxed),
        ));
        v.push(("dp.decisions_unlogged".into(), m.decisions_unlogged()));
        v.push(("dp.nic_busy_ppm".into(), (m.last_nic_busy * 1e6) as u64));
        v.push(("dp.nic_queue".into(), m.last_nic_queue as u64));
        v.push(("dp.host_busy_ppm".into(), (m.last_host.busy * 1e6) as u64));
        v.push(("dp.host_queue".into(), m.last_host.queue as u64));
        let left = self
            .shared
            .nic_congest_until_ns
            .load(Ordering::Relaxed)
            .saturating_sub(naam_link::now_ns());
        v.push(("dp.nic_congest_left_ms".into(), left / 1_000_000));
        let mut totals: Vec<(String, u64)> = Vec::new();
        for (i, w) in self.workers.iter().enumerate() {
            for (name, value) in w.counters() {
                match totals.iter_mut().find(|(n, _)| *n == name) {
                    Some(t) => t.1 += value,
                    None => totals.push((name.clone(), value)),
                }
                v.push((format!("w{i}.{name}"), value));
            }
        }
        v.extend(totals.into_iter().map(|(n, x)| (format!("total.{n}"), x)));
        v.extend(self.offload_counters());
        let table = self.switch.table();
        v.push(("steer.misses".into(), table.misses()));
        let now = naam_link::now_ns();
        let classes_in_use: Vec<u16> = {
            let mut c: Vec<u16> = self
                .shared
                .registry
                .list()
                .iter()
                .map(|o| o.class)
                .collect();
            c.sort_unstable();
            c.dedup();
            c
        };
        for c in 0..self.classes {
            let placed = m.placement(c);
            if !classes_in_use.contains(&c) && placed == m.home() {
                continue;
            }
            v.push((format!("class.{c}.placement"), placed as u64));
            v.push((format!("class.{c}.moves"), m.moves(c)));
            if let Some(ms) = self.shared.hints.lease_ms(c, now) {
                v.push((format!("class.{c}.lease_ms"), ms as u64));
            }
        }
        for (i, rule) in (0..self.classes).filter_map(|c| {
            let id = m.rule(c)?;
            self.switch.counters(id).map(|r| (c, r))
        }) {
            if rule.packets > 0 {
                v.push((format!("steer.class.{i}.packets"), rule.packets));
            }
        }
        for (k, d) in m.recent().enumerate() {
            let name = format!(
                "decision.{k}.c{}.{}-{}.{:?}",
                d.class,
                d.from.name(),
                d.to.name(),
                d.reason
            );
            v.push((clip_utf8(&name, NAME_MAX).to_owned(), d.at));
        }
        v
    }

    /// The Prometheus text of this process's own counters and the offloads registered. What
    /// STATS relays from the host agent is left out: the host agent exports it itself
    /// (`naam_host_*`), where it is a counter of that process (here it went down when the
    /// host agent restarted under a running dataplane, and a sum over both jobs counted it
    /// twice).
    pub fn metrics_text(&self) -> String {
        naam_metrics::render(
            "naam_dp",
            &self.own_counters(),
            &self.shared.registry.list(),
        )
    }

    /// Per offload that ran on the NIC, summed over the NIC workers: `offload.ID.nic_runs`,
    /// `nic_steps`, `nic_errors`, `nic_run_ns` (the last stays 0 unless run time is measured).
    pub(super) fn offload_counters(&self) -> Vec<(String, u64)> {
        let mut sums: std::collections::BTreeMap<OffloadId, [u64; 4]> = Default::default();
        for w in &self.workers {
            for (id, c) in w.offload_runs() {
                let s = sums.entry(id).or_default();
                for (a, b) in s.iter_mut().zip(c) {
                    *a += b;
                }
            }
        }
        let mut v = Vec::new();
        // Offloads that never ran on the NIC say nothing (thousands of idle ones made every
        // STATS rebuild tens of thousands of names).
        for (id, c) in sums.into_iter().filter(|(_, c)| c.iter().any(|&x| x != 0)) {
            for (name, x) in ["nic_runs", "nic_steps", "nic_errors", "nic_run_ns"]
                .iter()
                .zip(c)
            {
                v.push((format!("offload.{id}.{name}"), x));
            }
        }
        v
    }

    /// STATS for `who`: a tenant's leaves out what is another tenant's business (probe 11:
    /// tenant 2 read tenant 1's PUT sizes from MICA's log tail, its hits and misses from its
    /// offloads' steps, its request counts and CPU time).
    pub(super) fn stats(
        &mut self,
        (who, from): (Principal, std::net::SocketAddr),
        msg: &Message<'_>,
        p: PageRequestRepr,
        out: &mut [u8],
    ) -> usize {
        // Built once per walk through the pages (`Snapshots`), not once per page; taken out
        // of `self` while the build reads the rest of it.
        let mut lists = std::mem::take(&mut self.stats_lists);
        let all = lists.get((who, from), p.start, naam_link::now_ns(), || {
            if who.is_admin() {
                return self.counters();
            }
            let offloads = self.shared.registry.list();
            let listed = offloads.iter().map(|o| (o.id, o.class, o.tenant));
            // The host agent's offloads this dataplane does not run (yet) are someone's too:
            // their relayed counters (`offload.ID.host_*`) stay their tenant's.
            let unserved = self.unserved.iter().chain(&self.readding);
            let unserved = unserved.map(|o| (o.id, o.class, o.tenant));
            let owners = Owners::of(listed.chain(unserved));
            self.counters_where(|name| owner(name, &owners).is_none_or(|t| who.may_act_for(t)))
        });
        self.stats_lists_built = lists.built();
        self.stats_lists = lists;
        let entries: Vec<KvEntry<'_>> = all
            .iter()
            .skip(p.start as usize)
            .map(|(n, v)| KvEntry {
                name: clip_utf8(n, NAME_MAX),
                value: *v,
            })
            .collect();
        let (n, more) = fit_page(&entries, p.max);
        emit(
            &msg.reply(Body::StatsReply(KvListRepr {
                more,
                next: if more { p.start + n as u32 } else { 0 },
                entries: EntryList::from_slice(&entries[..n]),
            })),
            out,
        )
    }
}

/// Which tenant each offload id and each class belongs to, looked up once per counter.
#[derive(Debug, Default)]
pub(super) struct Owners {
    by_id: std::collections::HashMap<u32, u32>,
    by_class: std::collections::HashMap<u16, u32>,
}

impl Owners {
    /// From (offload id, class, tenant) of every offload known.
    pub(super) fn of(offloads: impl Iterator<Item = (u32, u16, u32)>) -> Owners {
        let mut owners = Owners::default();
        for (id, class, tenant) in offloads {
            owners.by_id.insert(id, tenant);
            owners.by_class.insert(class, tenant);
        }
        owners
    }
}

/// The tenant whose business counter `name` is, if one's: its own per-tenant counters, its
/// offloads', its classes' (the placement log's too) and its applications' (MICA's, the
/// bundled tenant's). Worker, sum and relay prefixes (`w0.`, `total.`, `host.`) are looked
/// through. `None`: the deployment's, anybody's to read.
pub(super) fn owner(name: &str, owners: &Owners) -> Option<u32> {
    // A prefix and the three segments matched below, the rest in the last (no allocation:
    // this runs for every counter of every tenant's STATS).
    let mut parts = [""; 5];
    let mut n = 0;
    for part in name.splitn(parts.len(), '.') {
        parts[n] = part;
        n += 1;
    }
    let segs = &parts[..n];
    let s = match segs.first() {
        Some(&"total" | &"host") => &segs[1..],
        Some(w)
            if w.strip_prefix('w')
                .is_some_and(|n| n.parse::<u32>().is_ok()) =>
        {
            &segs[1..]
        }
        _ => segs,
    };
    let of_class = |c: &str| -> Option<u32> { owners.by_class.get(&c.parse().ok()?).copied() };
    match s {
        ["tenant", t, ..] => t.parse().ok(),
        ["offload", id, ..] => owners.by_id.get(&id.parse().ok()?).copied(),
        ["class", c, ..] | ["steer", "class", c, ..] => of_class(c),
        ["decision", _, c, ..] => of_class(c.strip_prefix('c')?),
        ["mica", ..] => Some(naam_handlers::bundled::TENANT),
        _ => None,
    }
}
