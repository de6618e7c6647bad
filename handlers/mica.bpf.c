/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * MICA (Lim et al., NSDI'14) as NAAM handlers: GET, PUT (insert or update) and DELETE on a
 * table of 64-byte buckets of tagged slots pointing into a circular log of immutable items.
 * The layout and the consistency argument are in include/mica.h.
 *
 * Each handler is a small state machine kept in ctx->state; every step is one pass through a
 * loop-free body. The common path:
 *
 *   GET     0: READ home bucket
 *           1: tag matches a slot -> READ item, READ log tail   (in this order)
 *           2: item whole (tail check) and key equal -> reply value; else scan on / miss
 *   PUT     0: READ home bucket, FAA log tail (allocate), copy key+value into data
 *           1: WRITE item; tag match -> READ item header + tail; else CAS a free slot
 *           2: (after a candidate) key equal -> CAS its slot; CAS result checked next step
 *   DELETE  like GET, then CAS the slot to 0.
 *
 * A full bucket chain gets an overflow bucket: FAA on the index header's overflow_next, CAS
 * the chain's last link slot, then the scan restarts. A failed slot CAS restarts the scan
 * (up to MICA_MAX_RETRIES times, then ABORT(MICA_E_CONTENDED)).
 *
 * Writers of the same key must be serialised (MICA's CREW model: a key's writes go to one
 * worker); two concurrent first inserts of one key could otherwise both take a free slot.
 */
#include "naam.h"
#include "mica.h"

#define MODE_GET 0
#define MODE_PUT 1
#define MODE_DELETE 2

/* Phases of the state machine. The state block is zeroed before the first step. */
#define P_START 0
#define P_SCAN 1    /* a bucket is in data[D_BUCKET..] */
#define P_CAND 2    /* a candidate item (or its header) and the tail are in data */
#define P_INSTALL 3 /* a slot CAS ran; check it */
#define P_OVF 4     /* an overflow bucket number came back from FAA */
#define P_LINK 5    /* the link CAS ran; restart */

/* Windows in ctx->data. */
#define D_BUCKET 0
#define D_TAIL 64
#define D_CAND 128
#define MICA_STAGE_CHUNK 128
#define D_SPARE 72  /* target of dummy READs */
#define D_STAGE 256 /* PUT: the new item */

struct mica_state {
	naam_u32 phase;
	naam_u32 retries;
	naam_u64 hash;
	naam_u64 bucket;    /* index offset of the bucket in data[D_BUCKET..] */
	naam_u64 next_slot; /* first slot of that bucket not scanned yet */
	naam_u64 cand;      /* candidate slot value */
	naam_u64 cand_at;   /* its index offset */
	naam_u64 free_at;   /* PUT: a free (empty or stale) slot, 0 = none yet */
	naam_u64 free_old;  /* its value */
	naam_u64 alloc;     /* PUT: logical log offset of the new item */
	naam_u64 written;   /* PUT: 1 = alloc known, 2 = the item WRITE was issued */
	naam_u64 op;        /* index of the op whose result the next step needs */
	naam_u64 expect;    /* the expected value of the install CAS */
	naam_u64 read_len;  /* GET: value bytes read with the item */
	naam_u64 copied;    /* PUT: value halves staged in data; GET: halves copied out */
};

/* naam_ctx with the byte areas seen as words, so clang emits 8-byte loads and stores for the
 * value copies (through u8 arrays it copies byte by byte). */
struct mica_view {
	naam_u8 head[32];
	naam_u8 args_fixed[MICA_ARGS_FIXED];
	naam_u64 args_value[MICA_VALUE_MAX / 8];
	naam_u8 args_pad[NAAM_ARGS_MAX - MICA_ARGS_FIXED - MICA_VALUE_MAX];
	naam_u8 state[NAAM_STATE_SIZE];
	struct naam_op ops[NAAM_MAX_OPS];
	naam_u64 data[NAAM_DATA_SIZE / 8];
	naam_u64 out[NAAM_OUT_MAX / 8];
};
_Static_assert(sizeof(struct mica_view) == sizeof(struct naam_ctx), "view size");
_Static_assert(__builtin_offsetof(struct mica_view, data) == __builtin_offsetof(struct naam_ctx, data), "data");
_Static_assert(__builtin_offsetof(struct mica_view, out) == __builtin_offsetof(struct naam_ctx, out), "out");
_Static_assert(__builtin_offsetof(struct mica_view, args_value) ==
		       __builtin_offsetof(struct naam_ctx, args) + __builtin_offsetof(struct mica_args, value),
	       "value");

#define U64(p) (*(naam_u64 *)(p))
#define U32(p) (*(naam_u32 *)(p))
#define U16(p) (*(naam_u16 *)(p))

NAAM_INLINE naam_u64 reply(struct naam_ctx *ctx, naam_u32 status, naam_u32 vlen)
{
	U32(&ctx->out[0]) = status;
	U32(&ctx->out[4]) = vlen;
	ctx->out_len = MICA_REPLY_HDR + vlen;
	return NAAM_DONE;
}

/* A slot that is older than the log size is stale (its item may be overwritten). `tail` is a
 * lower bound of the log tail; slots newer than it are never stale. */
NAAM_INLINE int stale(naam_u64 tail, naam_u64 slot, naam_u64 log_size)
{
	return (long long)(tail - (slot & MICA_OFFSET_MASK)) > (long long)log_size;
}

/* A harmless op (READ the log tail into a spare window) for steps that need an op only to
 * keep a constant op layout or to get one more step. */
NAAM_INLINE void dummy_op(struct naam_ctx *ctx, struct mica_args *a)
{
	naam_op_read(ctx, 0, a->log_region, MICA_LOG_TAIL, 8, D_SPARE);
}

/* The three requests a step ends with (each used once, at the shared tails at the end). */
NAAM_INLINE naam_u64 req_bucket(struct naam_ctx *ctx, struct mica_state *st, naam_u32 n,
				naam_u32 region, naam_u64 at)
{
	st->bucket = at;
	st->next_slot = 0;
	st->phase = P_SCAN;
	naam_op_read(ctx, n, region, at, MICA_LINE, D_BUCKET);
	ctx->n_ops = n + 1;
	return NAAM_NEXT;
}

/* The candidate item (GET: with read_len value bytes; else its header), then the tail: in
 * this order, so the tail check covers the item read. */
NAAM_INLINE naam_u64 req_cand(struct naam_ctx *ctx, struct mica_state *st, naam_u32 n,
			      struct mica_args *a, naam_u32 read_len)
{
	st->phase = P_CAND;
	naam_op_read(ctx, n, a->log_region, MICA_HDR + (st->cand & a->log_mask),
		     MICA_ITEM_HDR + read_len, D_CAND);
	naam_op_read(ctx, n + 1, a->log_region, MICA_LOG_TAIL, 8, D_TAIL);
	ctx->n_ops = n + 2;
	return NAAM_NEXT;
}

/* CAS the slot at `at` (after the item WRITE, if any), then bump its bucket's version. */
NAAM_INLINE naam_u64 req_install(struct naam_ctx *ctx, struct mica_state *st, naam_u32 n,
				 naam_u32 region, naam_u64 at, naam_u64 expect, naam_u64 desired)
{
	st->expect = expect;
	st->op = n;
	naam_op_cas(ctx, n, region, at, expect, desired);
	naam_op_faa(ctx, n + 1, region, at & ~(naam_u64)(MICA_LINE - 1), 2);
	st->phase = P_INSTALL;
	ctx->n_ops = n + 2;
	return NAAM_NEXT;
}

/* One body for the three handlers; `mode` is a constant, so clang drops what a handler does
 * not need. Paths that end in the same kind of request jump to one shared tail (bucket read,
 * candidate read, install CAS), which keeps each program small. */
NAAM_INLINE naam_u64 mica_step(struct naam_ctx *ctx, int mode)
{
	struct mica_args *a = (void *)ctx->args;
	struct mica_state *st = (void *)ctx->state;
	struct mica_view *v = (void *)ctx;
	naam_u32 klen = a->key_len;
	naam_u64 k0 = U64(&a->key[0]);
	naam_u64 k1 = U64(&a->key[8]);
	naam_u64 log_size = a->log_mask + 1;
	/* All ones in lossy mode, 0 in lossless mode (masks rather than branches keep the PUT
	 * program small). */
	naam_u64 lossy = (naam_u64)(a->flags & MICA_FLAG_LOSSLESS) - 1;
	/* How far behind the tail a slot may be before it is stale: the log in lossy mode; in
	 * lossless mode no slot is ever stale. */
	naam_u64 keep = log_size | (~lossy >> 2);
	naam_u32 vlen = a->value_len;
	naam_u32 isize = MICA_ITEM_HDR + ((vlen + 7) & ~7u);
	naam_u32 phase = st->phase;
	/* Index of the first op a request may use: PUT always spends op 0 first (FAA, the item
	 * WRITE, or a dummy READ), so that every op index is a constant: the verifier cannot
	 * prove a store through a variable op index stays in the op's writable fields. */
	const naam_u32 n = mode == MODE_PUT ? 1 : 0;
	naam_u64 h, tag, cand, at, expect = 0;

	if (ctx->args_len < MICA_ARGS_FIXED || klen == 0 || klen > MICA_KEY_MAX)
		return NAAM_ABORT(MICA_E_ARGS);
	if (mode == MODE_PUT) {
		if (vlen == 0 || vlen > MICA_VALUE_MAX)
			return NAAM_ABORT(MICA_E_VALUE);
		if (ctx->args_len < MICA_ARGS_FIXED + vlen)
			return NAAM_ABORT(MICA_E_ARGS);
		/* Stage the value into data, one chunk per step from the first step on: a small
		 * copy routine keeps the program within the JIT's page. The item is written
		 * once it is staged and a slot is chosen (values over two chunks wait a few
		 * steps, see do_install). */
		if (st->copied * MICA_STAGE_CHUNK < vlen) {
			naam_u64 c = st->copied & 7;
			naam_u64 *dst = &v->data[(D_STAGE + MICA_ITEM_HDR) / 8 + c * 16];
			naam_u64 *src = &v->args_value[c * 16];
			naam_u32 left = vlen - (naam_u32)c * MICA_STAGE_CHUNK;
			st->copied = c + 1;
			NAAM_UNROLL
			for (int b = 0; b < MICA_STAGE_CHUNK / 64; b++) {
				if (b * 64 < left) {
					NAAM_UNROLL
					for (int w = 0; w < 8; w++)
						dst[b * 8 + w] = src[b * 8 + w];
				}
			}
		}
	}

	if (phase != P_START) {
		naam_u64 home = MICA_HDR + (st->hash & a->bucket_mask) * MICA_LINE;
		h = st->hash;
		tag = h >> 48;
		if (tag == 0)
			tag = 1;
		if (mode != MODE_GET && phase == P_INSTALL) {
			if (ctx->ops[n].result == st->expect)
				return reply(ctx, MICA_OK, 0);
			if (++st->retries > MICA_MAX_RETRIES)
				return NAAM_ABORT(MICA_E_CONTENDED);
			/* From the home bucket, forgetting what the last pass found. */
			st->free_at = 0;
			at = home;
			if (mode == MODE_PUT)
				dummy_op(ctx, a);
			goto do_bucket;
		} else if (mode == MODE_PUT && phase == P_LINK) {
			st->free_at = 0;
			at = home;
			dummy_op(ctx, a);
			goto do_bucket;
		} else if (mode == MODE_PUT && phase == P_OVF) {
			naam_u64 j = ctx->ops[n].result;
			if (j >= a->overflow_count)
				return NAAM_ABORT(MICA_E_FULL);
			naam_op_cas(ctx, 0, a->index_region, st->bucket + 8 + 8 * MICA_LINK_SLOT, 0,
				    j + 1);
			st->phase = P_LINK;
			ctx->n_ops = 1;
			return NAAM_NEXT;
		} else if (phase != P_SCAN && phase != P_CAND) {
			return NAAM_ABORT(MICA_E_STATE);
		} else {
			/* PUT: the first step after START has the allocation. */
			if (mode == MODE_PUT) {
				if (st->written == 0) {
					st->alloc = ctx->ops[0].result;
					/* Lossless: never into the second lap (that would evict). */
					if (((st->alloc + isize) & ~lossy) > log_size)
						return NAAM_ABORT(MICA_E_LOG_FULL);
					st->written = 1;
					U32(&ctx->data[D_STAGE + 12]) = (naam_u32)st->alloc;
				}
				dummy_op(ctx, a);
			}
			if (phase == P_CAND) {
				naam_u8 *it = &ctx->data[D_CAND];
				naam_u64 tail = U64(&ctx->data[D_TAIL]);
				naam_u32 ivlen = U16(it + 10);
				int dead;
				cand = st->cand;
				dead = stale(tail, cand, keep);
				if (!dead && U64(it) == h && U16(it + 8) == klen &&
				    U32(it + 12) == (naam_u32)(cand & MICA_OFFSET_MASK) &&
				    U64(it + 16) == k0 && U64(it + 24) == k1 && ivlen <= MICA_VALUE_MAX) {
					if (mode != MODE_GET) {
						at = st->cand_at;
						expect = cand;
						goto do_install;
					} else if (ivlen > st->read_len) {
						/* The first read was short: read the whole item. */
						st->read_len = (ivlen + 7) & ~7u;
						goto do_cand;
					} else {
						/* Copy the value into the reply, 512 bytes per step:
						 * longer values take one more step (with a dummy op),
						 * which keeps the program within the JIT's page. */
						naam_u64 c = st->copied & 1;
						naam_u64 *src =
							&v->data[(D_CAND + MICA_ITEM_HDR) / 8 + c * 64];
						naam_u64 *dst = &v->out[MICA_REPLY_HDR / 8 + c * 64];
						naam_u32 left = ivlen - (naam_u32)c * 512;
						NAAM_UNROLL
						for (int b = 0; b < 8; b++) {
							if (b * 64 < left) {
								NAAM_UNROLL
								for (int w = 0; w < 8; w++)
									dst[b * 8 + w] = src[b * 8 + w];
							}
						}
						if (c == 0 && ivlen > 512) {
							st->copied = 1;
							dummy_op(ctx, a);
							ctx->n_ops = 1;
							return NAAM_NEXT;
						}
						return reply(ctx, MICA_OK, ivlen);
					}
				} else if (mode == MODE_PUT && dead && !st->free_at) {
					st->free_at = st->cand_at;
					st->free_old = cand;
				}
				/* Not our key: scan on in the bucket still in data. */
			}
			{
				naam_u64 next = st->next_slot;
				naam_u64 bucket = st->bucket;
				naam_u64 found = MICA_SLOTS;
				naam_u64 link = v->data[D_BUCKET / 8 + 1 + MICA_LINK_SLOT];
				NAAM_UNROLL
				for (int i = MICA_SLOTS - 1; i >= 0; i--) {
					naam_u64 s = v->data[D_BUCKET / 8 + 1 + i];
					if (i >= next && (s >> 48) == tag)
						found = i;
				}
				if (mode == MODE_PUT && !st->free_at) {
					/* The first empty or stale slot of this bucket (the bucket in
					 * data is one snapshot, so no slot seen on an earlier pass was
					 * free); offsets compare in 48-bit arithmetic (shifted left). */
					naam_u64 lim = ((st->alloc - log_size) << 16) & lossy;
					naam_u64 fi = MICA_SLOTS;
					NAAM_UNROLL
					for (int i = MICA_SLOTS - 1; i >= 0; i--) {
						naam_u64 s = v->data[D_BUCKET / 8 + 1 + i];
						if (s == 0 || (long long)(lim - (s << 16)) > 0)
							fi = i;
					}
					if (fi < MICA_SLOTS) {
						st->free_at = bucket + 8 + 8 * fi;
						st->free_old = v->data[D_BUCKET / 8 + 1 + (fi & 7)];
					}
				}
				if (found < MICA_SLOTS) {
					st->cand = v->data[D_BUCKET / 8 + 1 + (found & 7)];
					st->cand_at = bucket + 8 + 8 * found;
					st->next_slot = found + 1;
					goto do_cand;
				} else if (link) {
					at = MICA_HDR + (a->bucket_mask + link) * MICA_LINE;
					goto do_bucket;
				} else if (mode != MODE_PUT) {
					/* End of the chain without the key. */
					return reply(ctx, MICA_NOT_FOUND, 0);
				} else if (st->free_at) {
					at = st->free_at;
					expect = st->free_old;
					goto do_install;
				} else {
					/* The chain is full: take an overflow bucket. */
					st->op = n;
					naam_op_faa(ctx, n, a->index_region, MICA_INDEX_OVF_NEXT, 1);
					st->phase = P_OVF;
					ctx->n_ops = n + 1;
					return NAAM_NEXT;
				}
			}
		}
	}

	/* START: hash the key, read the home bucket (PUT: allocate, stage the item). Last in
	 * the source, so that clang's merged request tails land at the end (jumps forward). */
	h = naam_hash64(k0, k1);
	st->hash = h;
	if (mode == MODE_GET) {
		naam_u32 want = vlen == 0 || vlen > MICA_VALUE_MAX ? MICA_VALUE_MAX : vlen;
		st->read_len = (want + 7) & ~7u;
	}
	if (mode == MODE_PUT) {
		naam_u8 *it = &ctx->data[D_STAGE];
		U64(it) = h;
		U16(it + 8) = klen;
		U16(it + 10) = vlen;
		U64(it + 16) = k0;
		U64(it + 24) = k1;
		naam_op_faa(ctx, 0, a->log_region, MICA_LOG_TAIL, isize);
	}
	at = MICA_HDR + (h & a->bucket_mask) * MICA_LINE;
	tag = 0;

	/* The shared request tails. clang lays some of their predecessors out after them (a
	 * DAG with backward jumps); MicaPrograms::load re-lays the blocks out in topological
	 * order before verification. */
do_bucket:
	return req_bucket(ctx, st, n, a->index_region, at);
do_cand:
	return req_cand(ctx, st, n, a, mode == MODE_GET ? st->read_len : 0);
do_install:
	if (mode == MODE_PUT) {
		/* Not staged yet: one more step (op 0 is a dummy) reruns this one on the same
		 * data and comes back here. */
		if (st->copied * MICA_STAGE_CHUNK < vlen) {
			ctx->n_ops = 1;
			return NAAM_NEXT;
		}
		/* Write the item once, before the CAS that publishes it: a late rewrite could
		 * clobber a newer item after the log wrapped. */
		if (st->written == 1) {
			st->written = 2;
			naam_op_write(ctx, 0, a->log_region, MICA_HDR + (st->alloc & a->log_mask),
				      isize, D_STAGE);
		}
	}
	return req_install(ctx, st, n, a->index_region, at, expect,
			   mode == MODE_PUT ? tag << 48 | (st->alloc & MICA_OFFSET_MASK) : 0);
}

NAAM_HANDLER(mica_get)
{
	return mica_step(ctx, MODE_GET);
}

NAAM_HANDLER(mica_put)
{
	return mica_step(ctx, MODE_PUT);
}

NAAM_HANDLER(mica_delete)
{
	return mica_step(ctx, MODE_DELETE);
}
