/* ELF loader test: a handler calling a function defined nowhere, which must be rejected. */
#include "naam.h"

extern naam_u64 not_defined_anywhere(naam_u64 x);

NAAM_HANDLER(uses_extern)
{
	ctx->out_len = (naam_u32)not_defined_anywhere(ctx->step);
	return NAAM_DONE;
}
