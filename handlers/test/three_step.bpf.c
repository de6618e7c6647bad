/* A three-step handler used by the foundation tests: READ a word, CAS it, reply.
 *
 * args: u32 region, u32 pad, u64 offset, u64 add
 * step 0: READ 8 bytes at offset into data[0..8)
 * step 1: CAS the word from its value v to v + add
 * step 2: reply { v (u64), cas_old (u64), swapped (u64) }
 */
#include "naam.h"

NAAM_HANDLER(three_step)
{
	naam_u32 region = *(naam_u32 *)&ctx->args[0];
	naam_u64 offset = *(naam_u64 *)&ctx->args[8];
	naam_u64 add = *(naam_u64 *)&ctx->args[16];

	if (ctx->args_len < 24)
		return NAAM_ABORT(1);
	if (ctx->step == 0) {
		naam_op_read(ctx, 0, region, offset, 8, 0);
		ctx->n_ops = 1;
		return NAAM_NEXT;
	}
	if (ctx->step == 1) {
		naam_u64 v = *(naam_u64 *)&ctx->data[0];
		*(naam_u64 *)&ctx->state[0] = v;
		naam_op_cas(ctx, 0, region, offset, v, v + add);
		ctx->n_ops = 1;
		return NAAM_NEXT;
	}
	naam_u64 v = *(naam_u64 *)&ctx->state[0];
	naam_u64 old = ctx->ops[0].result;
	*(naam_u64 *)&ctx->out[0] = v;
	*(naam_u64 *)&ctx->out[8] = old;
	*(naam_u64 *)&ctx->out[16] = old == v;
	ctx->out_len = 24;
	return NAAM_DONE;
}
