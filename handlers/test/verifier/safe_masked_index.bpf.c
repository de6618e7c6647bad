/* Safe: indexes with `i & 15`, a checked `i < 15`, and a bounded stack buffer; calls the
 * hash helper. Accepted; JIT and interpreter agree on random contexts. */
#include "naam.h"

NAAM_HANDLER(safe_masked_index)
{
	naam_u8 buf[16];
	naam_u32 i = ctx->args[0] & 15;
	naam_u32 j = ctx->args[1];
	NAAM_UNROLL
	for (int k = 0; k < 16; k++)
		buf[k] = ctx->args[k + 2];
	naam_u64 h = naam_hash64(buf[i], ctx->args[i]);
	if (j < 15)
		ctx->state[j * 16] = buf[j];
	ctx->out[i] = (naam_u8)h;
	*(naam_u64 *)&ctx->out[16] = h;
	ctx->out_len = 24;
	return NAAM_DONE;
}
