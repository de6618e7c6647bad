//! Shared by the btree_* tests: runs the B-tree handlers through the step executor against
//! a region in local memory, and checks trees against a BTreeMap model.
#![allow(dead_code)]

use naam_core::abi::Ctx;
use naam_core::exec::{Executor, Outcome};
use naam_core::memory::{LocalMemory, OwnedRegion, RegionMem};
use naam_core::region::{Perms, RegionDesc, RegionTable};
use naam_core::vm::{CompiledVm, Engine};
use naam_handlers::btree::{self, layout::SCAN_MAX, parse_lookup_reply, Args, ScanReply};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const REGION: u32 = 3;
pub const TENANT: u32 = 11;

/// The engines this machine can run: its compiled engine, then the interpreter.
pub fn engines() -> Vec<Engine> {
    let mut v = vec![Engine::native()];
    if Engine::native() != Engine::Interpreter {
        v.push(Engine::Interpreter);
    }
    v
}

/// A region of `len` bytes and the tables the executor needs to reach it (read-only: the
/// handlers never write).
pub struct Vm {
    regions: RegionTable,
    mem: LocalMemory,
    exec: Executor,
    lookup: CompiledVm,
    scan: CompiledVm,
    ctx: Box<Ctx>,
}

/// How a VM call ended when it did not reply.
#[derive(Debug)]
pub enum Failure {
    Aborted(u32),
    Failed(String),
}

impl Vm {
    pub fn new(engine: Engine, region: RegionMem) -> Self {
        let progs = btree::programs().expect("embedded B-tree handlers load and verify");
        let mut regions = RegionTable::new();
        regions
            .insert(RegionDesc {
                id: REGION,
                tenant: TENANT,
                len: region.len() as u64,
                perms: Perms::READ,
                key: 0x5eed,
            })
            .expect("region id in range");
        let mut mem = LocalMemory::new();
        mem.map(REGION, region);
        Self {
            regions,
            mem,
            exec: Executor::default(),
            lookup: CompiledVm::new(Arc::clone(&progs.lookup), engine).expect("lookup compiles"),
            scan: CompiledVm::new(Arc::clone(&progs.scan), engine).expect("scan compiles"),
            ctx: Ctx::boxed(),
        }
    }

    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// Runs one message; returns the reply bytes and the steps taken.
    pub fn call(&mut self, scan: bool, args: &[u8]) -> Result<(Vec<u8>, u32), Failure> {
        self.ctx.start(args);
        let vm = if scan { &self.scan } else { &self.lookup };
        match self
            .exec
            .run(vm, TENANT, &self.regions, &mut self.mem, &mut self.ctx)
        {
            Outcome::Done { steps } => Ok((
                self.ctx
                    .out()
                    .expect("out_len checked by the executor")
                    .to_vec(),
                steps,
            )),
            Outcome::Aborted { code, .. } => Err(Failure::Aborted(code)),
            Outcome::Failed { error, .. } => Err(Failure::Failed(error.to_string())),
        }
    }

    pub fn lookup(&mut self, key: u64) -> Result<Option<u64>, Failure> {
        self.lookup_args(Args::lookup(REGION, key))
    }

    /// One LOOKUP, sent again (as a client would) when it ran out of steps because writers
    /// kept changing the nodes it read (abort code 3).
    pub fn lookup_args(&mut self, args: Args) -> Result<Option<u64>, Failure> {
        let mut attempts = 0;
        loop {
            match self.call(false, &args.to_bytes()) {
                Ok((out, _)) => {
                    return Ok(parse_lookup_reply(&out).expect("well-formed LOOKUP reply"))
                }
                Err(Failure::Aborted(3)) if attempts < 100 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// One SCAN message: the pairs and the end flag.
    pub fn scan_once(&mut self, from: u64, count: u32) -> Result<(Vec<(u64, u64)>, bool), Failure> {
        let (out, _) = self.call(true, &Args::scan(REGION, from, count).to_bytes())?;
        let reply = ScanReply::parse(&out).expect("well-formed SCAN reply");
        assert!(
            reply.len() <= count as usize,
            "scan returned {} pairs for {count}",
            reply.len()
        );
        Ok((reply.pairs().collect(), reply.end))
    }

    /// `count` pairs from `from` (fewer only at the end of the tree), continuing with further
    /// messages when one ran out of steps, as a client would.
    pub fn scan(&mut self, from: u64, count: usize) -> Vec<(u64, u64)> {
        let mut got = Vec::new();
        let mut key = from;
        let mut stalls = 0;
        loop {
            let want = (count - got.len()).min(SCAN_MAX) as u32;
            let (pairs, end) = self.scan_once(key, want).expect("scan replies");
            if pairs.is_empty() && !end {
                stalls += 1;
                assert!(stalls < 100, "scan makes no progress from {key}");
            }
            if let Some(&(k, _)) = pairs.last() {
                got.extend_from_slice(&pairs);
                if k == u64::MAX {
                    assert!(end || got.len() == count, "the last key must end the scan");
                    return got;
                }
                key = k + 1;
            }
            if end || got.len() == count {
                return got;
            }
        }
    }
}

/// The first `count` pairs of `model` from `from`.
pub fn model_scan(model: &BTreeMap<u64, u64>, from: u64, count: usize) -> Vec<(u64, u64)> {
    model
        .range(from..)
        .take(count)
        .map(|(&k, &v)| (k, v))
        .collect()
}

/// A zeroed region of `len` bytes.
pub fn region(len: usize) -> OwnedRegion {
    OwnedRegion::zeroed(len)
}
