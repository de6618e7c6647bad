/* Safe: an unrolled loop over a bounded prefix of args, state kept across steps, ops written.
 * Accepted; JIT and interpreter agree on random contexts. */
#include "naam.h"

NAAM_HANDLER(safe_unrolled_sum)
{
	naam_u64 sum = *(naam_u64 *)&ctx->state[8];
	naam_u32 n = ctx->args_len;
	NAAM_UNROLL
	for (int k = 0; k < 32; k++) {
		if (k < n)
			sum += (naam_u64)ctx->args[k] << (k & 7);
	}
	*(naam_u64 *)&ctx->state[8] = sum;
	naam_u32 slot = (naam_u32)(sum >> 60);
	/* Op slots are chosen by constants: a variable op index would need a stride domain. */
	if (slot < 2)
		naam_op_faa(ctx, 0, 3, sum & 0xff8, 1);
	else
		naam_op_read(ctx, 1, 4, sum & 0xfff, 16, (naam_u32)(sum & 0x3ff));
	ctx->n_ops = slot < 2 ? 1 : 2;
	if (sum == 0)
		return NAAM_ABORT(9);
	return sum & 1 ? NAAM_NEXT : NAAM_DONE;
}
