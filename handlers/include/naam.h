/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * naam.h — the NAAM handler ABI.
 *
 * A handler is loop-free eBPF code run once per *step*. The runtime calls it with r1 pointing
 * at a `struct naam_ctx`. The handler reads its arguments, keeps what it needs across steps in
 * `state`, and returns one of:
 *
 *   NAAM_DONE         reply to the client with out[0 .. out_len)
 *   NAAM_NEXT         execute ops[0 .. n_ops), then run the next step
 *   NAAM_ABORT(code)  reply with an error carrying `code`
 *
 * Ops are one-sided operations on (region, offset, length): READ copies region bytes into
 * data[data_off ..], WRITE copies data[data_off ..] into the region, CAS and FAA work on one
 * aligned 8-byte word and leave the previous value in `result`. Whether the runtime executes
 * them with local loads and stores (host), DMA/RDMA (NIC) or network one-sided ops (client) is
 * invisible to the handler. Every op is checked against the region's bounds, tenant and
 * permissions; a violation ends the message with an error reply.
 *
 * The Rust mirror is naam_core::abi; a test in naam-core compiles static assertions generated
 * from it against this header, so the two cannot drift.
 *
 * Compile with: clang -O2 -g -target bpf -mcpu=v3 -I handlers/include -c x.bpf.c -o x.bpf.o
 */
#ifndef NAAM_H
#define NAAM_H

typedef unsigned char naam_u8;
typedef unsigned short naam_u16;
typedef unsigned int naam_u32;
typedef int naam_s32;
typedef unsigned long long naam_u64;

#define NAAM_ABI_VERSION 1

/* Sizes of the context areas, in bytes. */
#define NAAM_ARGS_MAX 1088  /* 16-byte key + 1024-byte value + 48 bytes of parameters */
#define NAAM_STATE_SIZE 256 /* persistent across steps, zeroed at the first step */
#define NAAM_MAX_OPS 4      /* ops per step */
#define NAAM_DATA_SIZE 2048 /* op data windows */
#define NAAM_OUT_MAX 1088   /* reply payload */

/* Return codes. The low byte is the kind; ABORT carries a 32-bit code above it. */
#define NAAM_DONE 0ULL
#define NAAM_NEXT 1ULL
#define NAAM_ABORT(code) ((((naam_u64)(naam_u32)(code)) << 8) | 2ULL)

/* Op kinds. */
#define NAAM_OP_NONE 0
#define NAAM_OP_READ 1
#define NAAM_OP_WRITE 2
#define NAAM_OP_CAS 3
#define NAAM_OP_FAA 4

/* Op status written back by the runtime (0 = done). Isolation violations never come back as a
 * status: they end the message. */
#define NAAM_OP_OK 0

/* One op. The first 40 bytes are written by the handler; the last 16 by the runtime. */
struct naam_op {
	naam_u8 kind;      /* NAAM_OP_* */
	naam_u8 flags;     /* reserved, 0 */
	naam_u16 reserved; /* 0 */
	naam_u32 region;   /* region id */
	naam_u64 offset;   /* byte offset in the region (8-aligned for CAS/FAA) */
	naam_u32 len;      /* READ/WRITE: bytes; CAS/FAA: 8 */
	naam_u32 data_off; /* READ/WRITE: window in ctx->data */
	naam_u64 arg0;     /* CAS: expected; FAA: addend */
	naam_u64 arg1;     /* CAS: desired */
	/* written by the runtime */
	naam_u64 result;   /* CAS/FAA: the previous value of the word */
	naam_s32 status;   /* NAAM_OP_OK */
	naam_u32 reserved2;
};

/* Byte areas are 8-aligned (their offsets are multiples of 8) so that handlers may load and
 * store whole words. Index words through a typed pointer, NAAM_WORDS(ctx->data)[i]: clang 14
 * turns `*(naam_u64 *)&ctx->data[8 * i]` inside unrolled loops into byte loads. */
#define NAAM_ALIGNED __attribute__((aligned(8)))
#define NAAM_WORDS(area) ((naam_u64 *)(area))

/* The context r1 points at. Read-only parts are written by the runtime; the verifier rejects
 * stores into them. */
struct naam_ctx {
	/* read-only header */
	naam_u32 abi_version;       /* NAAM_ABI_VERSION */
	naam_u32 step;              /* 0 for the first step */
	naam_u32 args_len;          /* valid bytes in args */
	naam_u32 reserved0;
	/* writable header */
	naam_u32 n_ops;             /* ops to execute after NAAM_NEXT */
	naam_u32 out_len;           /* reply bytes after NAAM_DONE */
	naam_u64 scratch;           /* persistent, free for the handler */
	/* read-only: the message arguments */
	naam_u8 args[NAAM_ARGS_MAX] NAAM_ALIGNED;
	/* writable, persistent across steps */
	naam_u8 state[NAAM_STATE_SIZE] NAAM_ALIGNED;
	struct naam_op ops[NAAM_MAX_OPS];
	naam_u8 data[NAAM_DATA_SIZE] NAAM_ALIGNED;
	naam_u8 out[NAAM_OUT_MAX] NAAM_ALIGNED;
};

/* Helpers: called as plain functions, compiled to `call ID` with no relocation. They run as
 * native code with the stack 8 bytes off 16-byte alignment under rbpf's x86_64 JIT: see
 * naam_core::helpers before adding one. */
/* A 64-bit hash of two words (keys are hashed 16 bytes at a time). Same function as
 * naam_core::helpers::hash64, so native code and handlers agree on placement. */
static naam_u64 (*naam_hash64)(naam_u64 a, naam_u64 b) = (void *)1;

/* Handler entry points live in sections named "naam/<name>". */
#define SEC(name) __attribute__((section(name), used))
#define NAAM_HANDLER(name) SEC("naam/" #name) naam_u64 name(struct naam_ctx *ctx)

/* Loops inside one step must be unrolled: every step is a DAG. */
#define NAAM_UNROLL _Pragma("unroll")

#define NAAM_INLINE static inline __attribute__((always_inline))

NAAM_INLINE void naam_op_read(struct naam_ctx *ctx, naam_u32 i, naam_u32 region, naam_u64 offset,
			      naam_u32 len, naam_u32 data_off)
{
	struct naam_op *op = &ctx->ops[i];
	op->kind = NAAM_OP_READ;
	op->region = region;
	op->offset = offset;
	op->len = len;
	op->data_off = data_off;
}

NAAM_INLINE void naam_op_write(struct naam_ctx *ctx, naam_u32 i, naam_u32 region, naam_u64 offset,
			       naam_u32 len, naam_u32 data_off)
{
	struct naam_op *op = &ctx->ops[i];
	op->kind = NAAM_OP_WRITE;
	op->region = region;
	op->offset = offset;
	op->len = len;
	op->data_off = data_off;
}

NAAM_INLINE void naam_op_cas(struct naam_ctx *ctx, naam_u32 i, naam_u32 region, naam_u64 offset,
			     naam_u64 expected, naam_u64 desired)
{
	struct naam_op *op = &ctx->ops[i];
	op->kind = NAAM_OP_CAS;
	op->region = region;
	op->offset = offset;
	op->len = 8;
	op->arg0 = expected;
	op->arg1 = desired;
}

NAAM_INLINE void naam_op_faa(struct naam_ctx *ctx, naam_u32 i, naam_u32 region, naam_u64 offset,
			     naam_u64 add)
{
	struct naam_op *op = &ctx->ops[i];
	op->kind = NAAM_OP_FAA;
	op->region = region;
	op->offset = offset;
	op->len = 8;
	op->arg0 = add;
}

/* Little-endian loads and stores at any alignment from context byte arrays. */
NAAM_INLINE naam_u64 naam_load64(const naam_u8 *p)
{
	return (naam_u64)p[0] | (naam_u64)p[1] << 8 | (naam_u64)p[2] << 16 | (naam_u64)p[3] << 24 |
	       (naam_u64)p[4] << 32 | (naam_u64)p[5] << 40 | (naam_u64)p[6] << 48 |
	       (naam_u64)p[7] << 56;
}

NAAM_INLINE naam_u32 naam_load32(const naam_u8 *p)
{
	return (naam_u32)p[0] | (naam_u32)p[1] << 8 | (naam_u32)p[2] << 16 | (naam_u32)p[3] << 24;
}

NAAM_INLINE void naam_store64(naam_u8 *p, naam_u64 v)
{
	NAAM_UNROLL
	for (int i = 0; i < 8; i++)
		p[i] = (naam_u8)(v >> (8 * i));
}

NAAM_INLINE void naam_store32(naam_u8 *p, naam_u32 v)
{
	NAAM_UNROLL
	for (int i = 0; i < 4; i++)
		p[i] = (naam_u8)(v >> (8 * i));
}

#endif /* NAAM_H */
