/* Ops of one step run in order, whatever runs them (issue 12): a READ, a WRITE whose data
 * window overlaps the READ's (so it sends bytes the READ brought), a CAS, and a READ of what
 * the WRITE wrote.
 *
 * args: u32 region, u32 pad, u64 offset (8-aligned), u64 expected, u64 desired
 * step 0: data[16..24) = 0x5a5a..5a; then
 *         READ  region[offset, +16)      into data[0..16)
 *         WRITE data[8..24)              to   region[offset + 8, +16)
 *         CAS   region[offset + 24]      expected -> desired
 *         READ  region[offset + 8, +16)  into data[24..40)
 * step 1: reply data[0..40) then the CAS's previous word: 48 bytes.
 * In order, the WRITE puts back the 8 bytes the READ brought and the marker after them, and
 * the last READ sees both.
 */
#include "naam.h"

NAAM_HANDLER(ordered_ops)
{
	if (ctx->args_len < 32)
		return NAAM_ABORT(1);
	naam_u32 region = *(naam_u32 *)&ctx->args[0];
	naam_u64 offset = *(naam_u64 *)&ctx->args[8];
	naam_u64 expected = *(naam_u64 *)&ctx->args[16];
	naam_u64 desired = *(naam_u64 *)&ctx->args[24];

	if (ctx->step == 0) {
		*(naam_u64 *)&ctx->data[16] = 0x5a5a5a5a5a5a5a5aULL;
		naam_op_read(ctx, 0, region, offset, 16, 0);
		naam_op_write(ctx, 1, region, offset + 8, 16, 8);
		naam_op_cas(ctx, 2, region, offset + 24, expected, desired);
		naam_op_read(ctx, 3, region, offset + 8, 16, 24);
		ctx->n_ops = 4;
		return NAAM_NEXT;
	}
	for (int i = 0; i < 5; i++)
		*(naam_u64 *)&ctx->out[8 * i] = *(naam_u64 *)&ctx->data[8 * i];
	*(naam_u64 *)&ctx->out[40] = ctx->ops[2].result;
	ctx->out_len = 48;
	return NAAM_DONE;
}
