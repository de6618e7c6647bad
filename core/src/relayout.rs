//! Re-lays out a loop-free program so that every jump goes forward.
//!
//! The verifier (DESIGN §4) wants a DAG whose jumps all go forward. clang builds DAGs from
//! unrolled C, but its block placement and tail merging may put a shared tail *before* some
//! of its predecessors, so a few jumps go backward although there is no loop. This pass
//! splits the program into basic blocks, orders them topologically (keeping clang's order
//! wherever it already works), and rewrites jump offsets, adding a `ja` where a block's
//! fall-through successor no longer follows it. A real loop is an error. The result computes
//! exactly what the input did; the verifier still checks it from scratch.

use crate::elf::{Program, INSN_SIZE};

const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const OP_JA: u8 = 0x05;
const OP_CALL: u8 = 0x85;
const OP_EXIT: u8 = 0x95;
const OP_LDDW: u8 = 0x18;

/// Why a program could not be re-laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayoutError {
    #[error("instruction {insn}: jump outside the program")]
    BadTarget { insn: usize },
    #[error("the program has a loop (through instruction {insn})")]
    Loop { insn: usize },
    #[error("instruction {insn}: bpf-to-bpf calls are not supported here")]
    Call { insn: usize },
    #[error("the program is empty or not a whole number of instructions")]
    Malformed,
    #[error("a jump offset does not fit 16 bits after re-layout")]
    TooFar,
    #[error("instruction {insn}: lddw is cut off by the end of the program")]
    TruncatedLddw { insn: usize },
    #[error("instruction {insn}: jump into the second half of an lddw")]
    IntoLddw { insn: usize },
    #[error("instruction {insn}: execution runs off the end of the program")]
    FallsOffEnd { insn: usize },
}

fn is_jump(op: u8) -> bool {
    let class = op & 0x07;
    (class == CLASS_JMP || class == CLASS_JMP32) && op != OP_CALL && op != OP_EXIT
}

/// Returns `program` with its basic blocks in an order where every jump goes forward.
pub fn forward_layout(program: &Program) -> Result<Program, RelayoutError> {
    let bytes = &program.insns;
    if bytes.is_empty() || bytes.len() % INSN_SIZE != 0 {
        return Err(RelayoutError::Malformed);
    }
    let n = bytes.len() / INSN_SIZE;
    let insn = |i: usize| -> [u8; INSN_SIZE] {
        bytes[i * INSN_SIZE..(i + 1) * INSN_SIZE]
            .try_into()
            .expect("8 bytes")
    };
    let width = |i: usize| if insn(i)[0] == OP_LDDW { 2 } else { 1 };
    // `lddw` pairs first: every later pass walks instructions by width and looks blocks up
    // by their leaders, which holds only when no pair is cut and no jump lands inside one.
    let mut second_half = vec![false; n];
    let mut i = 0;
    while i < n {
        if width(i) == 2 {
            if i + 1 >= n {
                return Err(RelayoutError::TruncatedLddw { insn: i });
            }
            second_half[i + 1] = true;
        }
        i += width(i);
    }
    let target = |i: usize| -> Result<usize, RelayoutError> {
        let off = i16::from_le_bytes([insn(i)[2], insn(i)[3]]) as i64;
        let t = i as i64 + 1 + off;
        if t < 0 || t as usize >= n {
            return Err(RelayoutError::BadTarget { insn: i });
        }
        if second_half[t as usize] {
            return Err(RelayoutError::IntoLddw { insn: i });
        }
        Ok(t as usize)
    };
    // Block leaders.
    let mut leader = vec![false; n + 1];
    leader[0] = true;
    leader[n] = true;
    let mut i = 0;
    while i < n {
        let op = insn(i)[0];
        if op == OP_CALL && insn(i)[1] >> 4 != 0 {
            return Err(RelayoutError::Call { insn: i });
        }
        let w = width(i);
        if is_jump(op) {
            leader[target(i)?] = true;
            leader[(i + 1).min(n)] = true;
        } else if op == OP_EXIT {
            leader[(i + w).min(n)] = true;
        }
        i += w;
    }
    let starts: Vec<usize> = (0..n).filter(|&i| leader[i]).collect();
    // Every jump target was marked a leader above, so the search always finds it.
    let block_of = |i: usize| {
        starts
            .binary_search(&i)
            .map_err(|_| RelayoutError::BadTarget { insn: i })
    };
    let nb = starts.len();
    let end = |b: usize| if b + 1 < nb { starts[b + 1] } else { n };
    // The last instruction of a block, its jump target and fall-through successor.
    let mut last = vec![0; nb];
    let mut jump_to = vec![None; nb];
    let mut falls_to = vec![None; nb];
    for b in 0..nb {
        let mut j = starts[b];
        let mut l = j;
        while j < end(b) {
            l = j;
            j += width(j);
        }
        last[b] = l;
        let op = insn(l)[0];
        if is_jump(op) {
            jump_to[b] = Some(block_of(target(l)?)?);
        }
        let falls = op != OP_EXIT && op != OP_JA;
        if falls && b + 1 == nb {
            // Moved elsewhere, this block would fall into another one instead of off the end.
            return Err(RelayoutError::FallsOffEnd { insn: l });
        }
        if falls {
            falls_to[b] = Some(b + 1);
        }
    }
    // Kahn's algorithm, always taking the ready block that came first in clang's layout.
    let mut indeg = vec![0usize; nb];
    for b in 0..nb {
        for s in [jump_to[b], falls_to[b]].into_iter().flatten() {
            indeg[s] += 1;
        }
    }
    let mut ready = std::collections::BTreeSet::new();
    ready.extend((0..nb).filter(|&b| indeg[b] == 0));
    let mut order = Vec::with_capacity(nb);
    while let Some(b) = ready.pop_first() {
        order.push(b);
        for s in [jump_to[b], falls_to[b]].into_iter().flatten() {
            indeg[s] -= 1;
            if indeg[s] == 0 {
                ready.insert(s);
            }
        }
    }
    if order.len() != nb || order.first() != Some(&0) {
        let stuck = (0..nb).find(|&b| indeg[b] > 0).unwrap_or(0);
        return Err(RelayoutError::Loop {
            insn: starts[stuck],
        });
    }
    // Emit, then patch jump offsets.
    let mut out: Vec<[u8; INSN_SIZE]> = Vec::with_capacity(n + nb);
    // The original instruction of each output one (an added jump: its block's last), so
    // source lines follow their instructions.
    let mut origin: Vec<usize> = Vec::with_capacity(n + nb);
    let mut new_start = vec![0usize; nb];
    let mut fixups: Vec<(usize, usize)> = Vec::new(); // (instruction, target block)
    for (k, &b) in order.iter().enumerate() {
        new_start[b] = out.len();
        for j in starts[b]..end(b) {
            out.push(insn(j));
            origin.push(j);
        }
        if let Some(t) = jump_to[b] {
            fixups.push((new_start[b] + (last[b] - starts[b]), t));
        }
        if let Some(f) = falls_to[b] {
            if order.get(k + 1) != Some(&f) {
                out.push([OP_JA, 0, 0, 0, 0, 0, 0, 0]);
                origin.push(last[b]);
                fixups.push((out.len() - 1, f));
            }
        }
    }
    for (at, t) in fixups {
        let off = new_start[t] as i64 - (at as i64 + 1);
        let off = i16::try_from(off).map_err(|_| RelayoutError::TooFar)?;
        out[at][2..4].copy_from_slice(&off.to_le_bytes());
    }
    Ok(Program {
        source: program.source.remap(&origin),
        ..Program::from_insns(program.name.clone(), out.concat())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(insns: &[[u8; 8]]) -> Program {
        Program::from_insns("t", insns.concat())
    }

    fn ja(off: i16) -> [u8; 8] {
        let o = off.to_le_bytes();
        [OP_JA, 0, o[0], o[1], 0, 0, 0, 0]
    }

    const EXIT: [u8; 8] = [OP_EXIT, 0, 0, 0, 0, 0, 0, 0];
    const MOV0: [u8; 8] = [0xb7, 0, 0, 0, 1, 0, 0, 0]; // r0 = 1

    #[test]
    fn backward_jump_to_a_shared_tail_becomes_forward() {
        // 0: ja +2 -> 3; 1: r0=1 (tail); 2: exit; 3: ja -3 -> 1
        let p = prog(&[ja(2), MOV0, EXIT, ja(-3)]);
        let q = forward_layout(&p).unwrap();
        for (i, c) in q.insns.chunks(8).enumerate() {
            if c[0] == OP_JA {
                assert!(
                    i16::from_le_bytes([c[2], c[3]]) >= 0,
                    "insn {i} jumps backward"
                );
            }
        }
        assert_eq!(q.insns.len() % 8, 0);
    }

    #[test]
    fn loops_are_refused() {
        let p = prog(&[MOV0, ja(-2), EXIT]);
        assert!(matches!(
            forward_layout(&p),
            Err(RelayoutError::Loop { .. })
        ));
    }
}
