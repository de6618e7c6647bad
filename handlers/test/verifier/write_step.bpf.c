/* Unsafe: writes the runtime-owned step counter. Rejected: ReadOnlyCtx. */
#include "naam.h"

NAAM_HANDLER(write_step)
{
	ctx->step = 7;
	return NAAM_DONE;
}
