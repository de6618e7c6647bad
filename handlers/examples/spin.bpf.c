/* spin: a compute-only handler of fixed cost that touches no region. It mixes its first
 * argument word through ROUNDS rounds of a xorshift-multiply and replies with the result (8
 * bytes). `naam-bench fairness` registers it as a second tenant's offload (the bundled
 * regions are tenant 1's): a cheap request like a GET, from a tenant that owns no data here.
 *
 * args: u64 seed
 *
 * Register: naam offload add spin.bpf.o --class 7 --read-only
 * Call:     naam call ID --class 7 u64:1
 */
#include "naam.h"

#define ROUNDS 40

NAAM_HANDLER(spin)
{
	if (ctx->args_len < 8)
		return NAAM_ABORT(1);
	naam_u64 x = *(naam_u64 *)&ctx->args[0] | 1;
	/* Straight-line code (every step is a DAG): the loop is unrolled. */
	NAAM_UNROLL
	for (int i = 0; i < ROUNDS; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		x *= 0x9e3779b97f4a7c15ULL;
	}
	NAAM_WORDS(ctx->out)[0] = x;
	ctx->out_len = 8;
	return NAAM_DONE;
}
