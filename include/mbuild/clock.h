/* The monotonic clock in milliseconds, for timeouts and reported durations. */
#ifndef MB_CLOCK_H
#define MB_CLOCK_H

/* Milliseconds on CLOCK_MONOTONIC: only differences mean anything. */
long long mb_clock_ms(void);

/* Seconds since `start_ms`, a value mb_clock_ms returned. */
double mb_clock_seconds_since(long long start_ms);

/* Sleep `ms` milliseconds (less when a signal arrives). */
void mb_sleep_ms(long ms);

#endif
