/* Safe: fills op i for a variable i checked against NAAM_MAX_OPS (clang scales i by the op's
 * size): every store lands in the writable fields of some op. Accepted; JIT and interpreter
 * agree on random contexts. */
#include "naam.h"

NAAM_HANDLER(safe_variable_op_index)
{
	naam_u32 i = ctx->args[0];
	if (i >= NAAM_MAX_OPS)
		return NAAM_ABORT(1);
	naam_op_faa(ctx, i, 1, (naam_u64)ctx->args[1] * 8, 1);
	ctx->n_ops = 1;
	return NAAM_NEXT;
}
