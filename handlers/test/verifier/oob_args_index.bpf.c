/* Unsafe: indexes args with an unchecked byte from the message: 32 + 255 * 32 + 8 runs past
 * the end of the context. Rejected: OutOfBounds. */
#include "naam.h"

NAAM_HANDLER(oob_args_index)
{
	naam_u32 i = ctx->args[0];
	return *(naam_u64 *)&ctx->args[i * 32];
}
