/* One process-wide flag, set from a signal handler and polled by long operations. */
#include <signal.h>

#include "mbuild/cancel.h"

static volatile sig_atomic_t cancelled;

void mb_cancel_request(void)
{
    cancelled = 1;
}

bool mb_cancel_requested(void)
{
    return cancelled != 0;
}
