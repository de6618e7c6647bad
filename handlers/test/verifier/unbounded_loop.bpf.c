/* Unsafe: a loop whose trip count comes from the message, not unrolled. Rejected: BackEdge. */
#include "naam.h"

NAAM_HANDLER(unbounded_loop)
{
	naam_u64 sum = 0;
	naam_u32 n = ctx->args_len;
#pragma clang loop unroll(disable)
	for (naam_u32 i = 0; i < n && i < NAAM_ARGS_MAX; i++)
		sum += ctx->args[i];
	return sum;
}
