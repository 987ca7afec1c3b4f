/*
 * SHA-256 over OpenSSL's EVP interface, and the one textual form of a
 * digest the project accepts.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "mbuild/hash.h"

struct mb_sha256 {
    EVP_MD_CTX *ctx;
};

struct mb_sha256 *mb_sha256_new(struct mb_error *err)
{
    struct mb_sha256 *h = calloc(1, sizeof(*h));

    if (h == NULL) {
        mb_error_set(err, MB_ERR_GENERAL, "out of memory");
        return NULL;
    }
    h->ctx = EVP_MD_CTX_new();
    if (h->ctx == NULL || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        mb_sha256_free(h);
        mb_error_set(err, MB_ERR_GENERAL, "cannot initialise SHA-256");
        return NULL;
    }
    return h;
}

void mb_sha256_update(struct mb_sha256 *h, const void *data, size_t len)
{
    EVP_DigestUpdate(h->ctx, data, len);
}

void mb_sha256_final(struct mb_sha256 *h, struct mb_digest *out)
{
    unsigned int len = MB_DIGEST_LEN;

    EVP_DigestFinal_ex(h->ctx, out->bytes, &len);
}

void mb_sha256_free(struct mb_sha256 *h)
{
    if (h == NULL)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

void mb_sha256_buf(const void *data, size_t len, struct mb_digest *out)
{
    unsigned int n = MB_DIGEST_LEN;

    EVP_Digest(data, len, out->bytes, &n, EVP_sha256(), NULL);
}

int mb_sha256_fd(int fd, struct mb_digest *out, struct mb_error *err)
{
    enum { CHUNK = 1 << 20 };
    struct mb_sha256 *h = mb_sha256_new(err);
    char *buf = malloc(CHUNK);
    ssize_t n;

    if (h == NULL || buf == NULL) {
        mb_sha256_free(h);
        free(buf);
        return h == NULL ? -1 : mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    }
    for (;;) {
        n = read(fd, buf, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        mb_sha256_update(h, buf, (size_t)n);
    }
    if (n == 0)
        mb_sha256_final(h, out);
    else
        mb_error_errno(err, MB_ERR_GENERAL, errno, "read");
    mb_sha256_free(h);
    free(buf);
    return n == 0 ? 0 : -1;
}

void mb_digest_hex(const struct mb_digest *d, char hex[MB_DIGEST_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";

    for (int i = 0; i < MB_DIGEST_LEN; i++) {
        hex[2 * i] = digits[d->bytes[i] >> 4];
        hex[2 * i + 1] = digits[d->bytes[i] & 0xf];
    }
    hex[MB_DIGEST_HEX_LEN] = '\0';
}

void mb_digest_str(const struct mb_digest *d, char str[MB_DIGEST_STR_LEN])
{
    memcpy(str, "sha256:", 7);
    mb_digest_hex(d, str + 7);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int mb_digest_parse_hex(const char *hex, struct mb_digest *out, struct mb_error *err)
{
    if (strlen(hex) != MB_DIGEST_HEX_LEN)
        return mb_error_set(err, MB_ERR_INPUT, "digest '%.80s' is not 64 hex digits", hex);
    for (int i = 0; i < MB_DIGEST_LEN; i++) {
        int hi = hex_value(hex[2 * i]);
        int lo = hex_value(hex[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return mb_error_set(err, MB_ERR_INPUT, "digest '%.80s' is not lowercase hex", hex);
        out->bytes[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

int mb_digest_parse(const char *str, struct mb_digest *out, struct mb_error *err)
{
    if (strncmp(str, "sha256:", 7) != 0)
        return mb_error_set(err, MB_ERR_INPUT, "digest '%.80s' does not start with 'sha256:'", str);
    return mb_digest_parse_hex(str + 7, out, err);
}

bool mb_digest_equal(const struct mb_digest *a, const struct mb_digest *b)
{
    return memcmp(a->bytes, b->bytes, MB_DIGEST_LEN) == 0;
}
