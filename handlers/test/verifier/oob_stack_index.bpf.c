/* Unsafe: a 64-byte stack buffer indexed by any byte value. Rejected: OutOfBounds. */
#include "naam.h"

NAAM_HANDLER(oob_stack_index)
{
	volatile naam_u8 buf[64];
	NAAM_UNROLL
	for (int k = 0; k < 64; k++)
		buf[k] = (naam_u8)k;
	naam_u32 i = ctx->args[0];
	buf[i] = 1;
	return buf[0];
}
