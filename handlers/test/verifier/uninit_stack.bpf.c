/* Unsafe: reads a stack array of which only one element was written. Rejected: UninitStack. */
#include "naam.h"

NAAM_HANDLER(uninit_stack)
{
	volatile naam_u64 buf[4];
	buf[0] = ctx->args[1];
	return buf[ctx->args[0] & 3];
}
