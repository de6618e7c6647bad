/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * mica.h — the MICA (NSDI'14) table layout and the arguments of the MICA handlers.
 *
 * Shared by handlers/mica.bpf.c and mirrored in Rust by naam_handlers::mica::layout (a test
 * compiles static assertions generated from the Rust constants against this header).
 *
 * Index region (atomic + read + write):
 *   [0, 64)            header line: u64 magic, u64 bucket_count, u64 overflow_count,
 *                      u64 overflow_next (FAA counter: next free overflow bucket), then
 *                      what the host agent filled the table with (not read by handlers)
 *   [64, 64 + 64*B)    B = bucket_count (a power of two) home buckets
 *   then 64*O bytes    O = overflow_count overflow buckets, handed out by FAA on overflow_next
 *                      and never freed (a lost link race leaks one)
 *   bucket (64 bytes): u64 version, then 7 u64 slots.
 *     version   bumped by 2 (FAA) after every slot change; always even here, because slots are
 *               changed with CAS, never under a lock. Readers do not need it for consistency
 *               (items are immutable, see below); it tells one-sided readers a bucket changed.
 *     slots 0-5 item slots: tag (16 bits, never 0) << 48 | logical log offset (48 bits);
 *               0 = empty.
 *     slot 6    link: 0 = end of chain, else (overflow bucket number + 1) with a zero tag.
 *
 * Log region (atomic + read + write):
 *   [0, 64)            header line: u64 tail (FAA to allocate; a logical offset that only
 *                      grows), u64 log_size (a power of two), u64 flags (MICA_FLAG_LOSSLESS:
 *                      the table's mode, which clients copy into their arguments)
 *   [64, 64 + L + MICA_ITEM_MAX)  the circular log. An item at logical offset o lives at byte
 *                      64 + (o & (L - 1)); it may run past L into the slack, so an item is always
 *                      one contiguous READ / WRITE.
 *   item: u64 key hash, u16 key_len, u16 value_len, u32 lap (low 32 bits of o),
 *         key (16 bytes, zero padded), value (value_len bytes, padded to 8).
 *
 * Consistency: a writer allocates with FAA, WRITEs the whole item, then CASes the slot; items
 * are never changed after that, only overwritten when the log wraps. A reader reads an item
 * and then the tail, in the same step (ops run in order): if tail <= o + L no allocation that
 * overlaps the item's bytes had been made when the item was read, so the item is whole;
 * otherwise the slot is stale and counts as a miss (MICA's lossy log).
 *
 * Lossless mode (MICA_FLAG_LOSSLESS in the arguments' flags): the log never wraps. A PUT whose
 * allocation would pass the end of the first lap aborts with MICA_E_LOG_FULL (its FAA has
 * moved the tail past the log, so every later PUT does too), and no slot is ever stale: an
 * acknowledged item stays readable until it is deleted or updated.
 */
#ifndef MICA_H
#define MICA_H

#include "naam.h"

#define MICA_MAGIC 0x3141434943494d4eULL /* "NMICMICA"-ish tag in the index header */

#define MICA_LINE 64
#define MICA_HDR 64 /* header line of both regions */
#define MICA_SLOTS 6 /* item slots per bucket */
#define MICA_LINK_SLOT 6
#define MICA_INDEX_OVF_NEXT 24 /* offset of overflow_next in the index header */
#define MICA_LOG_TAIL 0        /* offset of tail in the log header */
#define MICA_LOG_FLAGS 16       /* offset of the table's flags in the log header */
#define MICA_FLAG_LOSSLESS 1

#define MICA_KEY_MAX 16
#define MICA_VALUE_MIN 1
#define MICA_VALUE_MAX 1024
#define MICA_ITEM_HDR 32 /* hash, lens, lap, key[16] */
#define MICA_ITEM_MAX (MICA_ITEM_HDR + MICA_VALUE_MAX)
#define MICA_OFFSET_MASK 0xffffffffffffULL

/* Arguments of all three handlers. GET and DELETE send only the fixed part
 * (MICA_ARGS_FIXED bytes); PUT appends value_len bytes of value. */
struct mica_args {
	naam_u32 index_region;
	naam_u32 log_region;
	naam_u64 bucket_mask;    /* bucket_count - 1 */
	naam_u64 overflow_count; /* overflow buckets after the home buckets */
	naam_u64 log_mask;       /* log_size - 1 */
	naam_u16 key_len;        /* 1 ..= MICA_KEY_MAX */
	naam_u16 value_len;      /* PUT: the value's length; GET: bytes to read at first (0 = max) */
	naam_u32 flags;          /* MICA_FLAG_LOSSLESS: the table is in lossless mode */
	naam_u8 key[MICA_KEY_MAX]; /* zero padded */
	naam_u8 value[MICA_VALUE_MAX];
};
#define MICA_ARGS_FIXED 56
_Static_assert(__builtin_offsetof(struct mica_args, value) == MICA_ARGS_FIXED, "mica_args layout");

/* Reply of every handler after NAAM_DONE: u32 status, u32 value_len, then (GET, found) the
 * value. */
#define MICA_REPLY_HDR 8
#define MICA_OK 0
#define MICA_NOT_FOUND 1

/* Abort codes. */
#define MICA_E_ARGS 1      /* arguments too short, key length out of range */
#define MICA_E_VALUE 2     /* value length 0 or larger than MICA_VALUE_MAX */
#define MICA_E_FULL 3      /* no overflow bucket left for a full chain */
#define MICA_E_CONTENDED 4 /* the slot changed under us MICA_MAX_RETRIES times */
#define MICA_E_STATE 5     /* the handler's state is inconsistent (a bug) */
#define MICA_E_LOG_FULL 6  /* lossless mode: the log is used up (PUT refuses, evicts nothing) */

#define MICA_MAX_RETRIES 4

#endif /* MICA_H */
