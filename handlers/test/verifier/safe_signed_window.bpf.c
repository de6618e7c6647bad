/* Safe: a signed offset checked on both sides, 32-bit arithmetic, a copy through data.
 * Accepted; JIT and interpreter agree on random contexts. */
#include "naam.h"

NAAM_HANDLER(safe_signed_window)
{
	int off = *(int *)&ctx->args[4];
	if (off < 0 || off > NAAM_DATA_SIZE - 8)
		return NAAM_ABORT(2);
	naam_u64 v = naam_load64(&ctx->data[off]);
	naam_u32 w = (naam_u32)v * 3 + 1;
	naam_store64(&ctx->out[0], v ^ w);
	naam_store32(&ctx->out[8], w >> 3);
	ctx->out_len = 12;
	return NAAM_DONE;
}
