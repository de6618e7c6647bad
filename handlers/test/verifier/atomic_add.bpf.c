/* Unsafe for rbpf: an atomic add, which rbpf does not implement. Rejected: Atomic. */
#include "naam.h"

NAAM_HANDLER(atomic_add)
{
	__sync_fetch_and_add(&ctx->scratch, 1);
	return NAAM_DONE;
}
