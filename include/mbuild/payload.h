/*
 * The payload of a step VM: a tar archive the appliance unpacks before it
 * runs the step (see recipes/appliance/init).
 *
 *   step.sh        the script, run with `sh -e` as root in the layer
 *   env            `export NAME='value'` lines, sourced before step.sh
 *   files/<target> each copied file at its absolute target path
 *   ca.pem         certificates the step's TLS clients should also trust,
 *                  when the build was given any (a proxy's CA); never in
 *                  a key or a layer
 *
 * Copied files are read beneath the project directory only and re-hashed
 * as they are written: a file that no longer matches the digest in the
 * layer's key fails the build instead of producing a layer under a key
 * that does not describe it.
 */
#ifndef MBUILD_PAYLOAD_H
#define MBUILD_PAYLOAD_H

#include "mbuild/error.h"
#include "mbuild/layers.h"
#include "mbuild/machinefile.h"

/* The script a layer runs: the step's text, or the package installation. */
int mb_payload_script(const struct mb_layer *layer, char **out, struct mb_error *err);

/* Write the payload of `layer` to `dest` (created or truncated); `ca_file` may be NULL. */
int mb_payload_write(const struct mb_machinefile *mf, const struct mb_layer *layer,
                     const char *ca_file, const char *dest, struct mb_error *err);

#endif
