/*
 * Cancellation: a front end's SIGINT/SIGTERM handler calls
 * mb_cancel_request(); long library operations (a step VM, a transfer)
 * poll mb_cancel_requested(), stop their children, clean up and fail with
 * MB_ERR_INTERRUPTED. Safe to call from a signal handler.
 */
#ifndef MBUILD_CANCEL_H
#define MBUILD_CANCEL_H

#include <stdbool.h>

void mb_cancel_request(void);
bool mb_cancel_requested(void);

#endif
