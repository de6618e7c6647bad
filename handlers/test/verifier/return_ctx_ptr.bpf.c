/* Unsafe: returns the context's address. Rejected: ReturnPointer. */
#include "naam.h"

NAAM_HANDLER(return_ctx_ptr)
{
	return (naam_u64)&ctx->out[0];
}
