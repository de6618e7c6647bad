/* ELF loader test: two entry sections calling shared functions in .text (not inlined), so the
 * loader must append .text and patch R_BPF_64_32 call relocations. */
#include "naam.h"

__attribute__((noinline)) naam_u64 twice(naam_u64 x)
{
	return x * 2;
}

__attribute__((noinline)) naam_u64 plus_three(naam_u64 x)
{
	return twice(x) + 3;
}

NAAM_HANDLER(calls_a)
{
	*(naam_u64 *)&ctx->out[0] = plus_three(*(naam_u64 *)&ctx->args[0]);
	ctx->out_len = 8;
	return NAAM_DONE;
}

NAAM_HANDLER(calls_b)
{
	*(naam_u64 *)&ctx->out[0] = twice(*(naam_u64 *)&ctx->args[0]);
	ctx->out_len = 8;
	return NAAM_DONE;
}
