/* ELF loader test: a handler using global data, which must be rejected. */
#include "naam.h"

naam_u64 counter;

NAAM_HANDLER(uses_global)
{
	counter++;
	ctx->out_len = 0;
	return NAAM_DONE;
}
