/* Unsafe: passes the context's address to a helper. Rejected: HelperArg. */
#include "naam.h"

NAAM_HANDLER(helper_ptr_arg)
{
	*(naam_u64 *)&ctx->out[0] = naam_hash64((naam_u64)ctx, 1);
	return NAAM_DONE;
}
