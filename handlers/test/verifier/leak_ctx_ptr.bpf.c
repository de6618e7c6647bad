/* Unsafe: stores the context's address into persistent state (an address leak). Rejected:
 * PointerLeak. */
#include "naam.h"

NAAM_HANDLER(leak_ctx_ptr)
{
	*(naam_u64 *)&ctx->state[0] = (naam_u64)ctx;
	return NAAM_DONE;
}
