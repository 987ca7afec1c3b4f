/*
 * One libcurl easy transfer into a temp file, hashed on the way; curl's
 * errors are translated here, once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "mbuild/cancel.h"
#include "mbuild/download.h"
#include "mbuild/fsutil.h"

struct sink {
    int fd;
    struct mb_sha256 *hash;
    struct mb_error *err;
    int failed;
};

static size_t on_data(char *data, size_t size, size_t count, void *ctx)
{
    struct sink *s = ctx;
    size_t len = size * count;

    if (mb_fs_write_all(s->fd, data, len, s->err) < 0) {
        s->failed = 1;
        return 0;
    }
    mb_sha256_update(s->hash, data, len);
    return len;
}

static int on_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)ctx;
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return mb_cancel_requested() ? 1 : 0; /* non-zero aborts the transfer */
}

static int transfer(const char *url, struct sink *s, struct mb_error *err)
{
    CURL *curl = curl_easy_init();
    char curl_err[CURL_ERROR_SIZE] = "";
    CURLcode rc;
    long status = 0;

    if (curl == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "libcurl cannot start a transfer");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
    /* A stalled transfer (under 1 KiB/s for a minute) fails rather than hangs. */
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    if (rc == CURLE_OK)
        return 0;
    if (s->failed)
        return mb_error_prefix(err, "write");
    if (rc == CURLE_ABORTED_BY_CALLBACK)
        return mb_error_set(err, MB_ERR_INTERRUPTED, "interrupted");
    if (rc == CURLE_HTTP_RETURNED_ERROR)
        return mb_error_set(err, MB_ERR_GENERAL, "HTTP %ld", status);
    return mb_error_set(err, MB_ERR_GENERAL, "%s",
                        curl_err[0] != '\0' ? curl_err : curl_easy_strerror(rc));
}

int mb_download(const char *url, const struct mb_digest *want, const char *dest,
                const struct mb_progress *progress, struct mb_error *err)
{
    struct sink s = {.fd = -1, .err = err};
    struct mb_digest got;
    char *tmp = NULL, want_str[MB_DIGEST_STR_LEN], got_str[MB_DIGEST_STR_LEN];
    int rc = -1;

    mb_progress_say(progress, "downloading %s", url);
    s.hash = mb_sha256_new(err);
    if (s.hash != NULL && asprintf(&tmp, "%s.part-XXXXXX", dest) >= 0 &&
        (s.fd = mkostemp(tmp, O_CLOEXEC)) >= 0)
        rc = transfer(url, &s, err);
    else if (s.hash != NULL)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "create a temp file for '%s'", dest);
    if (rc == 0) {
        mb_sha256_final(s.hash, &got);
        mb_digest_str(want, want_str);
        mb_digest_str(&got, got_str);
        if (!mb_digest_equal(&got, want))
            rc = mb_error_set(err, MB_ERR_INTEGRITY, "content is %s, not the pinned %s", got_str,
                              want_str);
    }
    if (rc == 0 && fsync(s.fd) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "fsync '%s'", tmp);
    if (rc == 0 && rename(tmp, dest) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "publish '%s'", dest);
    if (s.fd >= 0)
        close(s.fd);
    if (rc < 0 && tmp != NULL && s.fd >= 0)
        unlink(tmp);
    free(tmp);
    mb_sha256_free(s.hash);
    return rc < 0 ? mb_error_prefix(err, "download %s", url) : 0;
}
