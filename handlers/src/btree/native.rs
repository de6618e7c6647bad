//! Native Rust LOOKUP and SCAN on the same layout and under the same protocol as the handlers:
//! the reference the handlers are tested against, and the baseline they are measured against.
//!
//! [`lookup`] and [`scan`] read nodes in place, word by word, as host code would (every load
//! is an acquire load, so the version re-read comes after the words it guards).
//! [`lookup_copying`] copies each node out first with the same three reads a handler asks
//! for (version, body, version): the cost a handler pays for its node images, without the VM.

use super::layout::{node, sup, Node, FANOUT, LEVEL_ANY, NODE_SIZE};
use naam_core::memory::RegionMem;

/// Node reads one operation may make before it gives up on a writer that keeps racing it.
pub const MAX_NODE_READS: usize = 1 << 16;

/// Why a native operation failed (the handlers abort with the matching code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NativeError {
    #[error("node at offset {offset} is corrupt or outside the region")]
    Corrupt { offset: u64 },
    #[error("gave up after {MAX_NODE_READS} node reads (writer contention)")]
    Busy,
}

/// What a scan returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Pairs written to the front of the output slice.
    pub n: usize,
    /// No key follows the last pair.
    pub end: bool,
}

fn word(mem: &RegionMem, off: u64) -> Result<u64, NativeError> {
    mem.load_u64(off)
        .ok_or(NativeError::Corrupt { offset: off })
}

/// The root offset from the superblock.
pub fn root(mem: &RegionMem) -> Result<u64, NativeError> {
    match word(mem, sup::ROOT as u64)? {
        0 => Err(NativeError::Corrupt { offset: 0 }),
        r => Ok(r),
    }
}

/// The number of `key(0..count)` that are `<= key`: the handler's unrolled search (four
/// probes of binary lifting over the first 15 slots, one for the 16th).
#[inline(always)]
fn upper_bound(
    count: u32,
    key: u64,
    mut key_at: impl FnMut(u32) -> Result<u64, NativeError>,
) -> Result<u32, NativeError> {
    let mut idx = 0u32;
    for step in [8u32, 4, 2, 1] {
        let p = idx + step - 1;
        if p < count && key_at(p)? <= key {
            idx += step;
        }
    }
    if idx == 15 && count == 16 && key_at(15)? <= key {
        idx = 16;
    }
    Ok(idx)
}

/// A node's header words, read in place.
struct Header {
    level: u32,
    count: u32,
    high: u64,
    next: u64,
}

fn header(mem: &RegionMem, off: u64) -> Result<Header, NativeError> {
    let lc = word(mem, off + node::LEVEL as u64)?;
    Ok(Header {
        level: lc as u32,
        count: (lc >> 32) as u32,
        high: word(mem, off + node::HIGH as u64)?,
        next: word(mem, off + node::NEXT as u64)?,
    })
}

/// Where a validated node sends a reader next.
enum Step<T> {
    Retry,
    Go { node: u64, level: u32 },
    Done(T),
}

/// Checks the invariants of a node image that passed its version check.
fn check(h: &Header, want_level: u32, off: u64) -> Result<(), NativeError> {
    if (want_level != LEVEL_ANY && h.level != want_level) || h.count as usize > FANOUT {
        return Err(NativeError::Corrupt { offset: off });
    }
    Ok(())
}

/// Where a node sends a reader: read before the node is validated, so it may be garbage and
/// is only acted on (and checked) after the version re-read.
#[derive(Clone, Copy)]
enum Route {
    Right(u64),
    Down(u64),
    Leaf,
}

fn route(mem: &RegionMem, h: &Header, key: u64, idx: u32, off: u64) -> Result<Route, NativeError> {
    Ok(if key > h.high {
        Route::Right(h.next)
    } else if h.level != 0 {
        Route::Down(word(mem, off + (node::VALS + 8 * idx as usize) as u64)?)
    } else {
        Route::Leaf
    })
}

/// Acts on the route of a validated node.
fn follow<T>(r: Route, h: &Header, off: u64) -> Result<Option<Step<T>>, NativeError> {
    match r {
        Route::Right(0) | Route::Down(0) => Err(NativeError::Corrupt { offset: off }),
        Route::Right(node) => Ok(Some(Step::Go {
            node,
            level: h.level,
        })),
        Route::Down(node) => Ok(Some(Step::Go {
            node,
            level: h.level - 1,
        })),
        Route::Leaf => Ok(None),
    }
}

/// Runs `visit` on nodes from `start` until it is done, retrying a node whose version changed.
fn walk<T>(
    start: u64,
    mut visit: impl FnMut(u64, u32) -> Result<Step<T>, NativeError>,
) -> Result<T, NativeError> {
    let mut off = start;
    let mut level = LEVEL_ANY;
    for _ in 0..MAX_NODE_READS {
        match visit(off, level)? {
            Step::Retry => {}
            Step::Go { node, level: l } => {
                off = node;
                level = l;
            }
            Step::Done(v) => return Ok(v),
        }
    }
    Err(NativeError::Busy)
}

/// The value of `key`, reading nodes in place; `start` is the root (see [`root`]).
pub fn lookup(mem: &RegionMem, start: u64, key: u64) -> Result<Option<u64>, NativeError> {
    walk(start, |off, want_level| {
        let v1 = word(mem, off)?;
        if v1 & 1 != 0 {
            return Ok(Step::Retry);
        }
        let h = header(mem, off)?;
        let count = h.count.min(FANOUT as u32);
        let idx = upper_bound(count, key, |i| {
            word(mem, off + (node::KEYS + 8 * i as usize) as u64)
        })?;
        let leaf_hit = if h.level == 0 && idx > 0 {
            let i = (idx - 1) as usize;
            (word(mem, off + (node::KEYS + 8 * i) as u64)? == key)
                .then(|| word(mem, off + (node::VALS + 8 * i) as u64))
                .transpose()?
        } else {
            None
        };
        let next = route(mem, &h, key, idx, off)?;
        if word(mem, off)? != v1 {
            return Ok(Step::Retry);
        }
        check(&h, want_level, off)?;
        Ok(follow(next, &h, off)?.unwrap_or(Step::Done(leaf_hit)))
    })
}

/// Up to `out.len()` pairs with keys `>= from`, in key order, following leaf links. Each leaf
/// is consistent; the scan as a whole is not a snapshot (as with the handler).
pub fn scan(
    mem: &RegionMem,
    start: u64,
    from: u64,
    out: &mut [(u64, u64)],
) -> Result<ScanOutcome, NativeError> {
    let mut key = from;
    let mut n = 0usize;
    if out.is_empty() {
        return Ok(ScanOutcome { n: 0, end: false });
    }
    walk(start, |off, want_level| {
        let v1 = word(mem, off)?;
        if v1 & 1 != 0 {
            return Ok(Step::Retry);
        }
        let h = header(mem, off)?;
        let count = h.count.min(FANOUT as u32);
        let key_at = |i: u32| word(mem, off + (node::KEYS + 8 * i as usize) as u64);
        let idx = upper_bound(count, key, key_at)?;
        let next = route(mem, &h, key, idx, off)?;
        let mut taken = 0;
        if matches!(next, Route::Leaf) {
            // The leaf: copy tentatively, keep only if the version held.
            let first = if key == 0 {
                0
            } else {
                upper_bound(count, key - 1, key_at)?
            };
            for i in first..count {
                if n + taken == out.len() {
                    break;
                }
                out[n + taken] = (
                    key_at(i)?,
                    word(mem, off + (node::VALS + 8 * i as usize) as u64)?,
                );
                taken += 1;
            }
        }
        if word(mem, off)? != v1 {
            return Ok(Step::Retry);
        }
        check(&h, want_level, off)?;
        if let Some(step) = follow(next, &h, off)? {
            return Ok(step);
        }
        n += taken;
        if n == out.len() {
            return Ok(Step::Done(ScanOutcome { n, end: false }));
        }
        if h.next == 0 || h.high == u64::MAX {
            return Ok(Step::Done(ScanOutcome { n, end: true }));
        }
        key = h.high + 1;
        Ok(Step::Go {
            node: h.next,
            level: 0,
        })
    })
}

/// [`lookup`], but copying every node out of the region with the handler's three reads
/// (version, body, version) and searching the copy.
pub fn lookup_copying(mem: &RegionMem, start: u64, key: u64) -> Result<Option<u64>, NativeError> {
    let mut image = [0u8; NODE_SIZE];
    walk(start, |off, want_level| {
        let corrupt = NativeError::Corrupt { offset: off };
        let (v1, rest) = image.split_at_mut(8);
        let mut v2 = [0u8; 8];
        if !(mem.read(off, v1) && mem.read(off + 8, rest) && mem.read(off, &mut v2)) {
            return Err(corrupt);
        }
        let v = u64::from_le_bytes(v2);
        if v & 1 != 0 || v1 != v2 {
            return Ok(Step::Retry);
        }
        let n = Node::decode(&image);
        let h = Header {
            level: n.level,
            count: n.count,
            high: n.high,
            next: n.next,
        };
        check(&h, want_level, off)?;
        if key > n.high {
            return match n.next {
                0 => Err(corrupt),
                next => Ok(Step::Go {
                    node: next,
                    level: n.level,
                }),
            };
        }
        let idx = upper_bound(n.count, key, |i| Ok(n.keys[i as usize]))? as usize;
        if n.level > 0 {
            return match n.vals[idx] {
                0 => Err(corrupt),
                child => Ok(Step::Go {
                    node: child,
                    level: n.level - 1,
                }),
            };
        }
        Ok(Step::Done(
            (idx > 0 && n.keys[idx - 1] == key).then(|| n.vals[idx - 1]),
        ))
    })
}
