/*
 * The canonical encoding behind layer keys.
 *
 * Each input is one field: a tag byte, its length as 8 big-endian bytes,
 * then its bytes. Lengths make the encoding unambiguous (no separator can
 * be forged by a step's text); the fixed field order and the sorted env
 * make it canonical. The first field names the encoding and its version:
 * changing anything here means bumping KEY_ENCODING, which changes every
 * key, on purpose.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mbuild/layers.h"

#define KEY_ENCODING "mbuild layer key v1"

static void field(struct mb_sha256 *h, char tag, const void *data, size_t len)
{
    unsigned char head[9];

    head[0] = (unsigned char)tag;
    for (int i = 0; i < 8; i++)
        head[1 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    mb_sha256_update(h, head, sizeof(head));
    mb_sha256_update(h, data, len);
}

static void field_str(struct mb_sha256 *h, char tag, const char *s)
{
    field(h, tag, s, strlen(s));
}

static void field_uint(struct mb_sha256 *h, char tag, unsigned long long v, const char *fmt)
{
    char buf[32];

    snprintf(buf, sizeof(buf), fmt, v);
    field_str(h, tag, buf);
}

static void encode_files(struct mb_sha256 *h, const struct mb_layer *layer)
{
    field_uint(h, 'C', layer->file_count, "%llu");
    for (size_t i = 0; i < layer->file_count; i++) {
        const struct mb_copied_file *f = &layer->files[i];
        char type = (char)f->type;

        field_str(h, 'p', f->target);
        field(h, 't', &type, 1);
        field_uint(h, 'm', f->mode, "%04llo");
        field(h, 'd', f->digest.bytes, MB_DIGEST_LEN);
    }
}

void mb_layer_compute_key(struct mb_layer *layer)
{
    struct mb_sha256 *h;
    struct mb_error err;

    h = mb_sha256_new(&err);
    if (h == NULL)
        abort(); /* OpenSSL cannot make a digest context: nothing sane to do */
    field_str(h, 'H', KEY_ENCODING);
    field_uint(h, 'F', MB_LAYER_FORMAT_VERSION, "%llu");
    field_str(h, 'A', layer->arch);
    field(h, 'P', layer->parent.bytes, layer->has_parent ? MB_DIGEST_LEN : 0);
    field_str(h, 'K', mb_layer_kind_name(layer->kind));
    field_str(h, 'T', layer->text);
    field_str(h, 'N', layer->network ? "1" : "0");
    field_uint(h, 'E', layer->env.count, "%llu");
    for (size_t i = 0; i < layer->env.count; i++) {
        field_str(h, 'e', layer->env.vars[i].name);
        field_str(h, 'v', layer->env.vars[i].value);
    }
    encode_files(h, layer);
    mb_sha256_final(h, &layer->key);
    mb_sha256_free(h);
}

const char *mb_layer_kind_name(enum mb_layer_kind kind)
{
    switch (kind) {
    case MB_LAYER_BASE:
        return "base";
    case MB_LAYER_PACKAGES:
        return "packages";
    case MB_LAYER_RUN:
        return "run";
    }
    return "unknown";
}
