/*
 * SHA-256 digests, through OpenSSL.
 *
 * A digest travels as `struct mb_digest` (32 raw bytes) inside the library
 * and as "sha256:<64 hex>" on disk and on the wire (OCI). Parsing accepts
 * only that exact form, lowercase, so a digest read from a hostile file can
 * be used as a file name.
 */
#ifndef MBUILD_HASH_H
#define MBUILD_HASH_H

#include <stddef.h>
#include <stdbool.h>

#include "mbuild/error.h"

#define MB_DIGEST_LEN     32
#define MB_DIGEST_HEX_LEN 64
/* "sha256:" + hex + NUL */
#define MB_DIGEST_STR_LEN (7 + MB_DIGEST_HEX_LEN + 1)

struct mb_digest {
    unsigned char bytes[MB_DIGEST_LEN];
};

/* A running hash. Opaque; free with mb_sha256_free (also after final). */
struct mb_sha256;

struct mb_sha256 *mb_sha256_new(struct mb_error *err);
void mb_sha256_update(struct mb_sha256 *h, const void *data, size_t len);
void mb_sha256_final(struct mb_sha256 *h, struct mb_digest *out);
void mb_sha256_free(struct mb_sha256 *h);

/* One-shot digest of a buffer. */
void mb_sha256_buf(const void *data, size_t len, struct mb_digest *out);

/* Digest of everything readable from fd, from its current offset, streaming. */
int mb_sha256_fd(int fd, struct mb_digest *out, struct mb_error *err);

/* `hex` gets 64 lowercase hex digits and a NUL. */
void mb_digest_hex(const struct mb_digest *d, char hex[MB_DIGEST_HEX_LEN + 1]);
/* `str` gets "sha256:<hex>" and a NUL. */
void mb_digest_str(const struct mb_digest *d, char str[MB_DIGEST_STR_LEN]);

/* Parse exactly 64 lowercase hex digits. */
int mb_digest_parse_hex(const char *hex, struct mb_digest *out, struct mb_error *err);
/* Parse exactly "sha256:" followed by 64 lowercase hex digits. */
int mb_digest_parse(const char *str, struct mb_digest *out, struct mb_error *err);

bool mb_digest_equal(const struct mb_digest *a, const struct mb_digest *b);

#endif
