/* The monotonic clock: see clock.h. */
#include <time.h>

#include "mbuild/clock.h"

long long mb_clock_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double mb_clock_seconds_since(long long start_ms)
{
    return (double)(mb_clock_ms() - start_ms) / 1000.0;
}

void mb_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}
