/* A tenant that looks at whatever its context holds: the isolation tests run it right after
 * another tenant's messages, on the same context, and look for their bytes in its reply.
 *
 * args: u32 off (rounded down to 8, at most the context's size less NAAM_OUT_MAX)
 * step 0: out = the NAAM_OUT_MAX context bytes from off (its own args and out included)
 */
#include "naam.h"

#define CTX_BYTES (sizeof(struct naam_ctx))

NAAM_HANDLER(peek)
{
	naam_u64 off = *(naam_u32 *)&ctx->args[0] & ~7ULL;

	if (off > CTX_BYTES - NAAM_OUT_MAX)
		return NAAM_ABORT(1);
	naam_u64 *from = (naam_u64 *)((naam_u8 *)ctx + off);
	naam_u64 *to = NAAM_WORDS(ctx->out);
	NAAM_UNROLL
	for (int i = 0; i < NAAM_OUT_MAX / 8; i++)
		to[i] = from[i];
	ctx->out_len = NAAM_OUT_MAX;
	return NAAM_DONE;
}
