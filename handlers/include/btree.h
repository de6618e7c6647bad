/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * btree.h — layout of the Cell-style B-tree (Mitchell et al., ATC'16) shared by the handlers
 * in btree.bpf.c and the Rust builder (naam_handlers::btree::layout mirrors every constant;
 * a test compiles static assertions generated from the Rust side against this header).
 *
 * One region holds the whole tree: a 64-byte superblock at offset 0, then fixed-size nodes.
 *
 *   superblock: magic, root (offset of the root node), alloc (next free byte, the host
 *               writer's bump pointer), node size, fanout, height, number of keys.
 *   node:       version, level, count, high, next, keys[16], vals[17].
 *
 * Nodes are a B-link tree (Lehman and Yao): every node covers the keys up to and including
 * `high` (u64::MAX for the rightmost node of a level) and links its right sibling at the same
 * level in `next` (0 = none). A split moves the upper half of a node into a new right sibling
 * before the parent learns about it, so a reader that reaches a node whose `high` is below its
 * key moves right along `next`. Nodes are never freed, so a stale root or child offset only
 * costs extra steps, never a wrong answer.
 *
 * Internal node (level > 0): keys[0 .. count) are separators, vals[0 .. count] child offsets;
 *   child i covers keys in [keys[i-1], keys[i]) (unbounded at the ends).
 * Leaf (level 0): keys[0 .. count) sorted, vals[i] is the value of keys[i]; `next` links the
 *   leaves in key order for scans.
 *
 * Consistency (a seqlock per node): the version word is even while the node is stable and odd
 * while the single writer (the host agent) modifies it. The writer stores version+1, then the
 * body, then version+2. A reader READs the version, the body and the version again, in that
 * order as three ops of one step, and uses the node only when both versions are equal and even;
 * otherwise it reads the node again (within the step budget).
 */
#ifndef NAAM_BTREE_H
#define NAAM_BTREE_H

#include "naam.h"

/* Keys per node; internal nodes have up to BTREE_FANOUT + 1 children. */
#define BTREE_FANOUT 16
#define BTREE_NODE_SIZE 320
#define BTREE_SUPER_SIZE 64
/* "NAAMBT01" little-endian. */
#define BTREE_MAGIC 0x313054424d41414eULL

/* Superblock field offsets. */
#define BTREE_SUPER_MAGIC 0
#define BTREE_SUPER_ROOT 8
#define BTREE_SUPER_ALLOC 16
#define BTREE_SUPER_NODE_SIZE 24 /* u32 */
#define BTREE_SUPER_FANOUT 28    /* u32 */
#define BTREE_SUPER_HEIGHT 32
#define BTREE_SUPER_N_KEYS 40

struct btree_node {
	naam_u64 version;               /* even: stable; odd: being modified */
	naam_u32 level;                 /* 0 = leaf */
	naam_u32 count;                 /* keys in use, <= BTREE_FANOUT */
	naam_u64 high;                  /* largest key this node covers (inclusive) */
	naam_u64 next;                  /* right sibling at the same level, 0 = none */
	naam_u64 keys[BTREE_FANOUT];
	naam_u64 vals[BTREE_FANOUT + 1];
	naam_u64 reserved[3];
};

/* Node field offsets (the handler reads them out of ctx->data). */
#define BTREE_NODE_VERSION 0
#define BTREE_NODE_LEVEL 8
#define BTREE_NODE_COUNT 12
#define BTREE_NODE_HIGH 16
#define BTREE_NODE_NEXT 24
#define BTREE_NODE_KEYS 32
#define BTREE_NODE_VALS 160

/* Message arguments of both handlers. */
struct btree_args {
	naam_u32 region; /* the tree's region */
	naam_u32 count;  /* SCAN: pairs wanted, 1 ..= BTREE_SCAN_MAX; LOOKUP: 0 */
	naam_u64 root;   /* offset of the root node, or 0: read it from the superblock first */
	naam_u64 key;    /* LOOKUP: the key; SCAN: the first key wanted (inclusive) */
};

/* Most pairs one SCAN returns. The reply is 8 + 16 * n bytes; the handler copies a whole leaf
 * (16 pairs) from slot n <= BTREE_SCAN_MAX - 1 on, so 8 + 16 * (BTREE_SCAN_MAX + 15) must fit
 * in NAAM_OUT_MAX. */
#define BTREE_SCAN_MAX 48

/* LOOKUP reply: found (0 or 1), then the value (0 when not found). */
struct btree_lookup_reply {
	naam_u64 found;
	naam_u64 value;
};

/* SCAN reply header, followed by n (key, value) pairs of two u64. */
struct btree_scan_reply {
	naam_u32 n;
	naam_u32 flags; /* BTREE_SCAN_END: no key after the last pair returned */
};
#define BTREE_SCAN_END 1

/* Abort codes. */
#define BTREE_E_ARGS 1    /* args shorter than struct btree_args, or a bad SCAN count */
#define BTREE_E_CORRUPT 2 /* a stable node that breaks the layout's invariants */
#define BTREE_E_BUSY 3    /* LOOKUP: the step budget ran out (writer contention) */

/* The step budget the handlers plan for (naam_core::exec::DEFAULT_MAX_STEPS). A LOOKUP that
 * would need more aborts with BTREE_E_BUSY; a SCAN replies with the pairs it has (without
 * BTREE_SCAN_END) and the client continues after the last key. */
#define BTREE_MAX_STEPS 32

/* Handler state in ctx->state. */
struct btree_state {
	naam_u64 node;  /* offset of the node being read; 0: the superblock (read like a node) */
	naam_u64 key;   /* LOOKUP: the key; SCAN: the next key wanted */
	naam_u32 level; /* level the node read must have, BTREE_LEVEL_ANY for the root */
	naam_u32 n;     /* SCAN: pairs written to out so far */
};
#define BTREE_LEVEL_ANY 0xffffffffu

/* Where a node read lands in ctx->data: the node image at 0 (its version word is the first
 * read), the version re-read after the body at BTREE_DATA_VERSION_AFTER. The superblock is
 * read the same way (a node read at offset 0), so a region holds at least one node. */
#define BTREE_DATA_NODE 0
#define BTREE_DATA_VERSION_AFTER BTREE_NODE_SIZE

#endif /* NAAM_BTREE_H */
