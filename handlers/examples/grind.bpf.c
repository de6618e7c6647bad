/* grind: an expensive handler of chosen cost. Every step READs 64 bytes of a region and mixes
 * them (and the running hash) through ROUNDS rounds of a xorshift-multiply; after `steps`
 * steps it replies with the hash (8 bytes). `naam-bench fairness` runs it as the heavy
 * tenant: each message takes the NIC worker tens of microseconds in the shared VM pool.
 *
 * args: u32 region, u32 steps (1..=30), u64 offset (of a 64-byte record)
 *
 * Register: naam offload add grind.bpf.o --class 6 --read-only
 * Call:     naam call ID --class 6 u32:4 u32:20 u64:0     (region 4 = the records)
 */
#include "naam.h"

#define ROUNDS 40

NAAM_HANDLER(grind)
{
	if (ctx->args_len < 16)
		return NAAM_ABORT(1);
	naam_u32 region = *(naam_u32 *)&ctx->args[0];
	naam_u32 steps = *(naam_u32 *)&ctx->args[4];
	naam_u64 offset = *(naam_u64 *)&ctx->args[8];
	if (steps < 1 || steps > 30)
		return NAAM_ABORT(2);
	/* The running hash lives in the state block (zeroed before the first step). */
	naam_u64 *h = (naam_u64 *)ctx->state;
	if (ctx->step > 0) {
		naam_u64 *w = NAAM_WORDS(ctx->data);
		naam_u64 x = *h ^ w[0] ^ w[7] ^ ctx->step;
		NAAM_UNROLL
		for (int i = 0; i < ROUNDS; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			x *= 0x9e3779b97f4a7c15ULL;
		}
		*h = x;
		if (ctx->step >= steps) {
			NAAM_WORDS(ctx->out)[0] = x;
			ctx->out_len = 8;
			return NAAM_DONE;
		}
	}
	naam_op_read(ctx, 0, region, offset, 64, 0);
	ctx->n_ops = 1;
	return NAAM_NEXT;
}
