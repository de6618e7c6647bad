/* Unsafe: calls helper 99, which is not whitelisted. Rejected: UnknownHelper. */
#include "naam.h"

static naam_u64 (*not_a_helper)(naam_u64 a) = (void *)99;

NAAM_HANDLER(unknown_helper)
{
	return not_a_helper(ctx->args[0]);
}
