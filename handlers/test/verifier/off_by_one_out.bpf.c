/* Unsafe: the bound check admits i == NAAM_OUT_MAX, one byte past the end of the context.
 * Rejected: OutOfBounds. */
#include "naam.h"

NAAM_HANDLER(off_by_one_out)
{
	naam_u32 i = *(naam_u32 *)&ctx->args[0];
	if (i <= NAAM_OUT_MAX)
		ctx->out[i] = 1;
	return NAAM_DONE;
}
