/* Unsafe: stores into the runtime's `result` field of op i (variable i): that field is
 * read-only for handlers, whichever op it is. Rejected. */
#include "naam.h"

NAAM_HANDLER(variable_op_result_store)
{
	naam_u32 i = ctx->args[0];
	if (i >= NAAM_MAX_OPS)
		return NAAM_ABORT(1);
	ctx->ops[i].result = 7;
	return NAAM_DONE;
}
