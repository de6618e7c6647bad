/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Cell-style B-tree LOOKUP and SCAN (layout and consistency protocol: include/btree.h).
 *
 * Both handlers descend one node per step:
 *   step 0     check the args; READ the root offset from the superblock (args.root == 0)
 *              or start at args.root;
 *   step k     the previous step READ a node as three ops (version, body, version again).
 *              If the versions differ or are odd a writer raced: READ the node again.
 *              Otherwise search it (binary search unrolled: 5 probes over 16 keys) and READ
 *              the next node: the right sibling when the key is above the node's `high`
 *              (B-link move right), the child on an internal node, the next leaf for a SCAN
 *              that wants more pairs; or reply.
 */
#include "naam.h"
#include "btree.h"

#define D64(off) (*(naam_u64 *)&ctx->data[(off)])
#define D32(off) (*(naam_u32 *)&ctx->data[(off)])
/* Indexed as u64 arrays so that clang keeps the 8-byte alignment (a u8 array indexed by a
 * variable degrades to byte loads). Indices are masked so every access provably stays inside
 * the node image. */
/* An optimisation barrier on one value (see btree_step). */
#define NAAM_OPAQUE(x) asm volatile("" : "+r"(x))

#define DW(i) (((naam_u64 *)ctx->data)[(i)])
#define OUTW(i) (((naam_u64 *)ctx->out)[(i)])
#define KEY(i) DW(BTREE_NODE_KEYS / 8 + ((i) & (BTREE_FANOUT - 1)))
#define VAL(i) DW(BTREE_NODE_VALS / 8 + ((i) & 31))

/* READ the node at `node`: its version, its body, its version again. The ops run in order, so
 * the second version read happens after the body read (see btree.h). */
NAAM_INLINE void read_node(struct naam_ctx *ctx, naam_u32 region, naam_u64 node)
{
	naam_op_read(ctx, 0, region, node + BTREE_NODE_VERSION, 8, BTREE_DATA_NODE);
	naam_op_read(ctx, 1, region, node + 8, BTREE_NODE_SIZE - 8, BTREE_DATA_NODE + 8);
	naam_op_read(ctx, 2, region, node + BTREE_NODE_VERSION, 8, BTREE_DATA_VERSION_AFTER);
	ctx->n_ops = 3;
}

/* The number of keys[0 .. count) that are <= key (keys are sorted): 4 probes of a binary
 * lifting search resolve the first 15 slots, one more the 16th. Slots at or past `count` act
 * as +infinity. */
NAAM_INLINE naam_u32 upper_bound(struct naam_ctx *ctx, naam_u32 count, naam_u64 key)
{
	naam_u32 idx = 0;

	NAAM_UNROLL
	for (naam_u32 step = 8; step > 0; step >>= 1) {
		naam_u32 p = idx + step - 1;
		if (p < count && KEY(p) <= key)
			idx += step;
	}
	if (idx == 15 && count == 16 && KEY(15) <= key)
		idx = 16;
	return idx;
}

/* One step, written as straight-line code: every case is computed and the results are chosen
 * with conditional expressions (small forward diamonds), and there is one return at the end.
 * The verifier wants every jump to go forward and the program to end in its only exit; with
 * early returns clang shares and reorders tails and produced backward jumps. Writing a reply
 * or state that a case does not use is harmless (the runtime reads the reply only after DONE,
 * and every index is masked); the ops are written only for NEXT, in one forward diamond at the
 * end, because they are the costliest stores of a step.
 *
 * Cases, by what the previous step left in data:
 *   step 0        check args; READ the root node (args.root) or the superblock (offset 0,
 *                 read like a node: its root word lands at data[8]);
 *   superblock    READ the root it names;
 *   node image    torn (versions differ or odd): READ it again; key above high: READ next
 *                 (move right); internal: READ the child; leaf: reply (LOOKUP) or copy pairs
 *                 and READ the next leaf or reply (SCAN). */
NAAM_INLINE naam_u64 btree_step(struct naam_ctx *ctx, int scan)
{
	struct btree_args *a = (void *)ctx->args;
	struct btree_state *s = (void *)ctx->state;
	naam_u32 region = a->region;
	naam_u64 abort_args = NAAM_ABORT(BTREE_E_ARGS);
	naam_u64 abort_corrupt = NAAM_ABORT(BTREE_E_CORRUPT);

	/* step 0 */
	int first = ctx->step == 0;
	int args_bad = ctx->args_len < sizeof(struct btree_args) ||
		       (scan && a->count - 1 >= BTREE_SCAN_MAX); /* count 0 wraps around */
	naam_u64 key = first ? a->key : s->key;
	naam_u32 want_level = first ? BTREE_LEVEL_ANY : s->level;
	naam_u32 n = first ? 0 : s->n;
	naam_u32 want = a->count;

	/* the superblock */
	int super = !first && s->node == 0;
	naam_u64 root = D64(BTREE_SUPER_ROOT);
	int super_ok = D64(BTREE_SUPER_MAGIC) == BTREE_MAGIC && root != 0;

	/* a node image */
	naam_u64 version = D64(BTREE_NODE_VERSION);
	naam_u32 level = D32(BTREE_NODE_LEVEL);
	naam_u32 count = D32(BTREE_NODE_COUNT);
	naam_u64 high = D64(BTREE_NODE_HIGH);
	naam_u64 next = D64(BTREE_NODE_NEXT);
	int torn = (version & 1) || version != D64(BTREE_DATA_VERSION_AFTER);
	int bad = (want_level != BTREE_LEVEL_ANY && level != want_level) || count > BTREE_FANOUT;
	int right = key > high;
	/* LOOKUP: idx = the keys <= key. SCAN: first = the keys < key (the first slot to copy),
	 * and idx from it. The barrier keeps clang from threading jumps on idx's value, which
	 * duplicated code behind a backward jump. */
	naam_u32 first_slot = 0, idx;
	if (scan) {
		first_slot = key == 0 ? 0 : upper_bound(ctx, count, key - 1);
		NAAM_OPAQUE(first_slot);
		idx = first_slot + (first_slot < count && KEY(first_slot) == key);
	} else {
		idx = upper_bound(ctx, count, key);
		NAAM_OPAQUE(idx);
	}
	naam_u64 child = VAL(idx);
	int leaf = !torn && !bad && !right && level == 0;

	/* LOOKUP reply (the LOOKUP program only) */
	if (!scan) {
		struct btree_lookup_reply *r = (void *)ctx->out;
		naam_u32 i = idx - 1;
		naam_u64 found = idx != 0 && KEY(i) == key;
		r->found = found;
		r->value = found ? VAL(i) : 0;
		ctx->out_len = sizeof(*r);
	}

	/* SCAN: copy the leaf's pairs >= key that are still wanted to slots n, n + 1, ... All 16
	 * slots from n are written (cheaper than a test per pair); those past n + take hold
	 * nothing of the reply and are overwritten by the next leaf or cut by out_len. n < want
	 * <= BTREE_SCAN_MAX whenever a leaf is copied, so the clamp changes nothing but lets the
	 * verifier see that slot n + 15 is inside out. */
	int end = next == 0 || high == ~0ULL;
	if (scan) {
		naam_u32 avail = count - first_slot; /* first_slot <= count */
		naam_u32 room = want - n;            /* n < want */
		naam_u32 take = avail < room ? avail : room;
		naam_u32 base = n < BTREE_SCAN_MAX ? n : BTREE_SCAN_MAX - 1;
		const naam_u64 *src = &DW(BTREE_NODE_KEYS / 8 + (first_slot & 31));
		naam_u64 *out = &OUTW(sizeof(struct btree_scan_reply) / 8 + (base & 63) * 2);
		NAAM_UNROLL
		for (naam_u32 j = 0; j < BTREE_FANOUT; j++) {
			out[2 * j] = src[j];
			out[2 * j + 1] = src[j + BTREE_FANOUT];
		}
		n += leaf ? take : 0;
		struct btree_scan_reply *r = (void *)ctx->out;
		r->n = n;
		r->flags = leaf && n < want && end ? BTREE_SCAN_END : 0;
		ctx->out_len = sizeof(*r) + n * 16;
	}

	/* Decide. */
	naam_u64 ret, target;
	naam_u32 new_level = want_level;
	if (first) {
		ret = args_bad ? abort_args : NAAM_NEXT;
		target = a->root; /* 0: the superblock */
	} else if (super) {
		ret = super_ok ? NAAM_NEXT : abort_corrupt;
		target = root;
	} else if (torn) {
		ret = NAAM_NEXT;
		target = s->node;
	} else if (bad) {
		ret = abort_corrupt;
		target = 0;
	} else if (right) {
		/* The node split after its parent was read: move right. */
		ret = next != 0 ? NAAM_NEXT : abort_corrupt;
		target = next;
		new_level = level;
	} else if (level != 0) {
		ret = child != 0 ? NAAM_NEXT : abort_corrupt;
		target = child;
		new_level = level - 1;
	} else if (!scan) {
		ret = NAAM_DONE;
		target = 0;
	} else {
		/* Every key of the next leaf is above this leaf's high. */
		ret = n >= want || end ? NAAM_DONE : NAAM_NEXT;
		target = next;
		new_level = 0;
		key = high + 1;
	}
	/* Out of steps: a LOOKUP aborts, a SCAN replies with what it has (without SCAN_END). */
	if (ret == NAAM_NEXT && ctx->step + 1 >= BTREE_MAX_STEPS)
		ret = scan ? NAAM_DONE : NAAM_ABORT(BTREE_E_BUSY);

	s->key = key;
	s->level = new_level;
	s->n = n;
	s->node = target;
	if (ret == NAAM_NEXT)
		read_node(ctx, region, target);
	return ret;
}

NAAM_HANDLER(btree_lookup)
{
	return btree_step(ctx, 0);
}

NAAM_HANDLER(btree_scan)
{
	return btree_step(ctx, 1);
}
