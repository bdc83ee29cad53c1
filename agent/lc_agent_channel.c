
/*
 * lifecycle-agent: the channels. outbox writes files, smtp and webhook
 * go through libcurl. Each says whether the message was sent, is worth
 * another try, failed for good, or may have arrived (never sent again).
 */


#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "lc_agent.h"


#define LC_AGENT_SMTP_TIMEOUT     30L
#define LC_AGENT_CONNECT_TIMEOUT  10L


typedef struct {
    const char                 *data;
    size_t                      len;
    size_t                      pos;
    lc_agent_msg_t             *msg;
} lc_agent_upload_t;


/*
 * "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>": the
 * receiver recomputes it, compares in constant time and refuses an old
 * t, so a captured request cannot be replayed later.
 */

void
lc_agent_signature(const char *secret, long long t, const char *body,
    size_t len, lc_agent_buf_t *out)
{
    char            hex[2 * 32 + 1];
    lc_agent_buf_t  msg = { NULL, 0, 0, 0 };

    lc_agent_buf_printf(&msg, "%lld.", t);
    lc_agent_buf_add(&msg, body, len);

    if (msg.failed) {
        out->failed = 1;
        lc_agent_buf_free(&msg);
        return;
    }

    lc_agent_hmac_hex(secret, strlen(secret), msg.data, msg.len, hex);
    lc_agent_buf_printf(out, "t=%lld,v1=%s", t, hex);

    lc_agent_buf_free(&msg);
}


/* a file made whole or not at all: a temporary name, fsync, rename */

static int
lc_agent_write_atomic(const char *dir, const char *name, const char *data,
    size_t len, char *err, size_t errlen)
{
    int      fd;
    char     tmp[PATH_MAX], path[PATH_MAX];
    size_t   off;
    ssize_t  n;

    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
    snprintf(path, sizeof(path), "%s/%s", dir, name);

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }

    for (off = 0; off < len; off += (size_t) n) {
        n = write(fd, data + off, len - off);

        if (n < 0) {
            if (errno == EINTR) {
                n = 0;
                continue;
            }

            snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
    }

    if (fsync(fd) != 0 || close(fd) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }

    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }

    return 0;
}


int
lc_agent_outbox_has(lc_agent_conf_t *cf, const char *id)
{
    char         path[PATH_MAX];
    struct stat  st;

    snprintf(path, sizeof(path), "%s/%s.eml", cf->outbox, id);

    return stat(path, &st) == 0;
}


/* the .json first: whoever waits for the .eml finds both */

static lc_agent_result_e
lc_agent_outbox(lc_agent_conf_t *cf, lc_agent_msg_t *m, char *err,
    size_t errlen)
{
    int   fd;
    char  name[LC_AGENT_ID_LEN + 8];

    snprintf(name, sizeof(name), "%s.json", m->ref->id);

    if (lc_agent_write_atomic(cf->outbox, name, m->json, m->json_len, err,
                              errlen)
        != 0)
    {
        return LC_AGENT_RETRY;
    }

    snprintf(name, sizeof(name), "%s.eml", m->ref->id);

    if (lc_agent_write_atomic(cf->outbox, name, m->eml, m->eml_len, err,
                              errlen)
        != 0)
    {
        return LC_AGENT_RETRY;
    }

    /* the renames themselves are durable once the directory is synced */
    fd = open(cf->outbox, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void) fsync(fd);
        close(fd);
    }

    return LC_AGENT_SENT;
}


static size_t
lc_agent_upload(char *buf, size_t size, size_t nitems, void *ctx)
{
    size_t              n;
    lc_agent_upload_t  *u;

    u = ctx;
    n = size * nitems;

    if (n >= u->len - u->pos) {
        n = u->len - u->pos;

        /* the last bytes: from here on the server may have it */
        if (u->msg->handed && !u->msg->handed_done) {
            u->msg->handed_done = 1;
            u->msg->handed(u->msg);
        }
    }

    memcpy(buf, u->data + u->pos, n);
    u->pos += n;

    return n;
}


static size_t
lc_agent_discard(char *buf, size_t size, size_t nitems, void *ctx)
{
    (void) buf;
    (void) ctx;

    return size * nitems;
}


/* the envelope sender: the address of smtp_from */

static void
lc_agent_envelope_from(const char *from, char *out, size_t size)
{
    const char  *lt, *gt;

    lt = strchr(from, '<');
    gt = lt ? strchr(lt, '>') : NULL;

    if (lt && gt) {
        snprintf(out, size, "<%.*s>", (int) (gt - lt - 1), lt + 1);

    } else {
        snprintf(out, size, "<%s>", from);
    }
}


static lc_agent_result_e
lc_agent_smtp(lc_agent_conf_t *cf, lc_agent_msg_t *m, char *err,
    size_t errlen)
{
    long                 code;
    CURL                *c;
    CURLcode             rc;
    char                 from[LC_EMAIL_MAX + 8], to[LC_EMAIL_MAX + 8];
    struct curl_slist   *rcpt;
    lc_agent_upload_t    u;
    lc_agent_result_e    result;
    static const long    tls[] = { CURLUSESSL_NONE, CURLUSESSL_TRY,
                                   CURLUSESSL_ALL };

    c = curl_easy_init();
    if (c == NULL) {
        snprintf(err, errlen, "curl_easy_init() failed");
        return LC_AGENT_RETRY;
    }

    lc_agent_envelope_from(cf->smtp_from, from, sizeof(from));
    snprintf(to, sizeof(to), "<%s>", m->to);

    rcpt = curl_slist_append(NULL, to);

    u.data = m->eml;
    u.len = m->eml_len;
    u.pos = 0;
    u.msg = m;

    curl_easy_setopt(c, CURLOPT_URL, cf->smtp_url);
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, lc_agent_upload);
    curl_easy_setopt(c, CURLOPT_READDATA, &u);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t) u.len);
    curl_easy_setopt(c, CURLOPT_USE_SSL, tls[cf->smtp_starttls]);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, LC_AGENT_CONNECT_TIMEOUT);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, LC_AGENT_SMTP_TIMEOUT);

    if (cf->smtp_user) {
        curl_easy_setopt(c, CURLOPT_USERNAME, cf->smtp_user);
        curl_easy_setopt(c, CURLOPT_PASSWORD,
                         cf->smtp_password ? cf->smtp_password : "");
    }

    rc = curl_easy_perform(c);

    code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);

    if (rc == CURLE_OK) {
        result = LC_AGENT_SENT;

    } else if (m->handed_done) {
        /*
         * The whole message went out and no verdict came back: the
         * server may have it. Never again rather than twice.
         */
        snprintf(err, errlen, "smtp: %s after the data",
                 curl_easy_strerror(rc));
        result = LC_AGENT_UNKNOWN;

    } else if (code >= 500) {
        snprintf(err, errlen, "smtp: %s (%ld)", curl_easy_strerror(rc), code);
        result = LC_AGENT_FAILED;

    } else {
        snprintf(err, errlen, "smtp: %s (%ld)", curl_easy_strerror(rc), code);
        result = LC_AGENT_RETRY;
    }

    curl_slist_free_all(rcpt);
    curl_easy_cleanup(c);

    return result;
}


static lc_agent_result_e
lc_agent_webhook(lc_agent_conf_t *cf, lc_agent_msg_t *m, char *err,
    size_t errlen)
{
    long                 code;
    CURL                *c;
    CURLcode             rc;
    struct curl_slist   *h;
    lc_agent_buf_t       sig = { NULL, 0, 0, 0 }, id = { NULL, 0, 0, 0 };
    lc_agent_upload_t    u;
    lc_agent_result_e    result;

    lc_agent_buf_str(&sig, "X-Lifecycle-Signature: ");
    lc_agent_signature(cf->webhook_secret, lc_agent_now() / 1000, m->json,
                       m->json_len, &sig);
    lc_agent_buf_printf(&id, "X-Lifecycle-Id: %s", m->ref->id);

    c = curl_easy_init();

    if (c == NULL || sig.failed || id.failed) {
        snprintf(err, errlen, "out of memory");
        lc_agent_buf_free(&sig);
        lc_agent_buf_free(&id);
        if (c) {
            curl_easy_cleanup(c);
        }
        return LC_AGENT_RETRY;
    }

    h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, sig.data);
    h = curl_slist_append(h, id.data);
    h = curl_slist_append(h, "Expect:");

    u.data = m->json;
    u.len = m->json_len;
    u.pos = 0;
    u.msg = m;

    curl_easy_setopt(c, CURLOPT_URL, cf->webhook_url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, lc_agent_upload);
    curl_easy_setopt(c, CURLOPT_READDATA, &u);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t) m->json_len);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "lifecycle-agent/"
                     LC_AGENT_VERSION);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, lc_agent_discard);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long) cf->webhook_timeout);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long) cf->webhook_timeout);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");

    rc = curl_easy_perform(c);

    code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);

    if (rc != CURLE_OK) {
        /*
         * Timeouts and refused connections: worth another try, even a
         * timeout after the body went out (the receiver can tell a
         * second delivery by X-Lifecycle-Id).
         */
        snprintf(err, errlen, "webhook: %s", curl_easy_strerror(rc));
        result = LC_AGENT_RETRY;

    } else if (code >= 200 && code < 300) {
        result = LC_AGENT_SENT;

    } else if (code >= 500) {
        snprintf(err, errlen, "webhook: HTTP %ld", code);
        result = LC_AGENT_RETRY;

    } else {
        snprintf(err, errlen, "webhook: HTTP %ld", code);
        result = LC_AGENT_FAILED;
    }

    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    lc_agent_buf_free(&sig);
    lc_agent_buf_free(&id);

    return result;
}


lc_agent_result_e
lc_agent_deliver(lc_agent_t *ag, lc_agent_msg_t *m, char *err, size_t errlen)
{
    err[0] = '\0';

    switch (ag->conf->channel) {

    case LC_AGENT_SMTP:
        return lc_agent_smtp(ag->conf, m, err, errlen);

    case LC_AGENT_WEBHOOK:
        return lc_agent_webhook(ag->conf, m, err, errlen);

    default:
        return lc_agent_outbox(ag->conf, m, err, errlen);
    }
}
