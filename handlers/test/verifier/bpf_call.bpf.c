/* Unsafe for our engines: a real bpf-to-bpf call (not inlined). Rejected: BpfCall. */
#include "naam.h"

static __attribute__((noinline)) naam_u64 twice(naam_u64 x)
{
	return x * 2 + 1;
}

NAAM_HANDLER(bpf_call)
{
	return twice(ctx->args[0]);
}
