/* sum: the README's worked example. Reads one 64-byte record of a region and replies with the
 * sum of its eight 64-bit words: one READ, then DONE.
 *
 * args: u32 region, u32 pad, u64 offset
 *
 * Build:    clang -O2 -target bpf -mcpu=v3 -I handlers/include -c sum.bpf.c -o sum.bpf.o
 * Check:    naam verify sum.bpf.o
 * Register: naam offload add sum.bpf.o --class 7 --read-only      (prints the offload id)
 * Call:     naam call ID --class 7 u32:4 u32:0 u64:128            (region 4 = the records)
 */
#include "naam.h"

NAAM_HANDLER(sum)
{
	/* Arguments are read-only; a short message is a caller error. */
	if (ctx->args_len < 16)
		return NAAM_ABORT(1);

	if (ctx->step == 0) {
		/* Step 0: ask for the record. The runtime checks the region's bounds, tenant and
		 * permissions, runs the READ wherever this handler runs (host memory, over the link
		 * from the NIC, or one-sided from a client), and calls us again. */
		naam_u32 region = *(naam_u32 *)&ctx->args[0];
		naam_u64 offset = *(naam_u64 *)&ctx->args[8];
		naam_op_read(ctx, 0, region, offset, 64, 0);
		ctx->n_ops = 1;
		return NAAM_NEXT;
	}

	/* Step 1: the record is in ctx->data. Loops must be unrolled: every step is a DAG. */
	naam_u64 *words = NAAM_WORDS(ctx->data);
	naam_u64 total = 0;
	NAAM_UNROLL
	for (int i = 0; i < 8; i++)
		total += words[i];
	NAAM_WORDS(ctx->out)[0] = total;
	ctx->out_len = 8;
	return NAAM_DONE;
}
