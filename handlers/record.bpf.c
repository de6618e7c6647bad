/* record: read one 64-byte record of the offload's own region and reply with a digest of it.
 *
 * The scale experiment (naam-bench scale) registers hundreds of distinct copies of this
 * program, one per offload, each with its own region: the copies differ in RECORD_SALT, which
 * the benchmark patches (it is the immediate of the one `lddw` loading it), so every offload
 * is a distinct program with its own JIT code, as distinct tenants' handlers would be.
 *
 * args: u32 region, u32 pad, u64 offset
 * step 0: READ 64 bytes at offset
 * step 1: reply { digest (u64) } where digest = hash over the 8 words and the salt
 */
#include "naam.h"

#define RECORD_SALT 0x5a175a175a175a17ULL

NAAM_HANDLER(record)
{
	if (ctx->args_len < 16)
		return NAAM_ABORT(1);
	if (ctx->step == 0) {
		naam_op_read(ctx, 0, *(naam_u32 *)&ctx->args[0], *(naam_u64 *)&ctx->args[8], 64, 0);
		ctx->n_ops = 1;
		return NAAM_NEXT;
	}
	naam_u64 *words = NAAM_WORDS(ctx->data);
	naam_u64 h = RECORD_SALT;
	NAAM_UNROLL
	for (int i = 0; i < 8; i++)
		h = naam_hash64(h, words[i]);
	NAAM_WORDS(ctx->out)[0] = h;
	ctx->out_len = 8;
	return NAAM_DONE;
}
