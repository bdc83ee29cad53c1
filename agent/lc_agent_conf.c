
/*
 * lifecycle-agent: the configuration file ("key value" lines), and what
 * it names: the secret, the catalog and the templates.
 */


#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lc_agent.h"


typedef enum {
    LC_AGENT_CONF_STR = 0,
    LC_AGENT_CONF_INT,
    LC_AGENT_CONF_TIME,
    LC_AGENT_CONF_TIMES,
    LC_AGENT_CONF_FLAG,
    LC_AGENT_CONF_CHANNEL,
    LC_AGENT_CONF_LEVEL,
    LC_AGENT_CONF_TLS
} lc_agent_conf_type_e;


typedef struct {
    const char                 *name;
    lc_agent_conf_type_e        type;
    size_t                      offset;
    long long                   min;     /* INT, TIME: the least accepted */
    long long                   max;
} lc_agent_conf_key_t;


#define lc_agent_conf_off(field)  offsetof(lc_agent_conf_t, field)

static const lc_agent_conf_key_t  lc_agent_conf_keys[] = {
    { "redis", LC_AGENT_CONF_STR, lc_agent_conf_off(redis), 0, 0 },
    { "redis_password", LC_AGENT_CONF_STR,
      lc_agent_conf_off(redis_password), 0, 0 },
    { "redis_db", LC_AGENT_CONF_INT, lc_agent_conf_off(redis_db), 0, 1000 },
    { "secret", LC_AGENT_CONF_STR, lc_agent_conf_off(secret_file), 0, 0 },
    { "catalog", LC_AGENT_CONF_STR, lc_agent_conf_off(catalog_file), 0, 0 },
    { "templates", LC_AGENT_CONF_STR, lc_agent_conf_off(templates), 0, 0 },
    { "abandon_after", LC_AGENT_CONF_TIME,
      lc_agent_conf_off(abandon_after), 1000, 0 },
    { "cooldown", LC_AGENT_CONF_TIME, lc_agent_conf_off(cooldown), 0, 0 },
    { "link_window", LC_AGENT_CONF_TIME, lc_agent_conf_off(link_window),
      0, 0 },
    { "scan_interval", LC_AGENT_CONF_TIME, lc_agent_conf_off(scan_interval),
      100, 60000 },
    { "claim_after", LC_AGENT_CONF_TIME, lc_agent_conf_off(claim_after),
      1000, 0 },
    { "retention", LC_AGENT_CONF_TIME, lc_agent_conf_off(retention),
      60000, 0 },
    { "followups", LC_AGENT_CONF_TIMES, lc_agent_conf_off(followups), 0, 0 },
    { "welcome", LC_AGENT_CONF_FLAG, lc_agent_conf_off(welcome), 0, 0 },
    { "channel", LC_AGENT_CONF_CHANNEL, lc_agent_conf_off(channel), 0, 0 },
    { "outbox", LC_AGENT_CONF_STR, lc_agent_conf_off(outbox), 0, 0 },
    { "smtp_url", LC_AGENT_CONF_STR, lc_agent_conf_off(smtp_url), 0, 0 },
    { "smtp_from", LC_AGENT_CONF_STR, lc_agent_conf_off(smtp_from), 0, 0 },
    { "smtp_user", LC_AGENT_CONF_STR, lc_agent_conf_off(smtp_user), 0, 0 },
    { "smtp_password", LC_AGENT_CONF_STR,
      lc_agent_conf_off(smtp_password), 0, 0 },
    { "smtp_starttls", LC_AGENT_CONF_TLS, lc_agent_conf_off(smtp_starttls),
      0, 0 },
    { "webhook_url", LC_AGENT_CONF_STR, lc_agent_conf_off(webhook_url),
      0, 0 },
    { "webhook_secret", LC_AGENT_CONF_STR,
      lc_agent_conf_off(webhook_secret), 0, 0 },
    { "webhook_retries", LC_AGENT_CONF_INT,
      lc_agent_conf_off(webhook_retries), 1, 100 },
    { "webhook_timeout", LC_AGENT_CONF_TIME,
      lc_agent_conf_off(webhook_timeout), 100, 30000 },
    { "retry_delay", LC_AGENT_CONF_TIME, lc_agent_conf_off(retry_delay),
      10, 0 },
    { "unsubscribe_url", LC_AGENT_CONF_STR,
      lc_agent_conf_off(unsubscribe_url), 0, 0 },
    { "site_url", LC_AGENT_CONF_STR, lc_agent_conf_off(site_url), 0, 0 },
    { "consumer", LC_AGENT_CONF_STR, lc_agent_conf_off(consumer), 0, 0 },
    { "log_level", LC_AGENT_CONF_LEVEL, lc_agent_conf_off(log_level), 0, 0 },
    { NULL, 0, 0, 0, 0 }
};


const char  *lc_agent_kind_names[LC_AGENT_KINDS] = {
    "welcome", "browse", "cart"
};

const char  *lc_agent_channel_names[] = {
    "outbox", "smtp", "webhook", NULL
};

static const char  *lc_agent_part_suffix[LC_AGENT_PARTS] = {
    ".subject", ".txt", ".html"
};

static const char  *lc_agent_level_names[] = {
    "error", "warn", "info", "debug", NULL
};


/*
 * Times as nginx writes them: a number and a unit, several in a row
 * ("1h30m"), a bare number being seconds. Units: ms, s, m, h, d, w,
 * M (30 days), y (365 days).
 */

int
lc_agent_parse_time(const char *s, size_t len, long long *ms)
{
    size_t      i;
    long long   total, n, unit;

    if (len == 0) {
        return -1;
    }

    total = 0;
    i = 0;

    while (i < len) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        n = 0;

        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (n > (LLONG_MAX / 10 - 9) / 1000) {
                return -1;
            }

            n = n * 10 + (s[i++] - '0');
        }

        if (i == len) {
            unit = 1000;

        } else if (s[i] == 'm' && i + 1 < len && s[i + 1] == 's') {
            unit = 1;
            i += 2;

        } else {
            switch (s[i]) {
            case 's': unit = 1000; break;
            case 'm': unit = 60 * 1000LL; break;
            case 'h': unit = 3600 * 1000LL; break;
            case 'd': unit = 86400 * 1000LL; break;
            case 'w': unit = 7 * 86400 * 1000LL; break;
            case 'M': unit = 30 * 86400 * 1000LL; break;
            case 'y': unit = 365 * 86400 * 1000LL; break;
            default: return -1;
            }

            i++;
        }

        if (n > (LLONG_MAX / 4 - total) / unit) {
            return -1;
        }

        total += n * unit;
    }

    *ms = total;

    return 0;
}


static void
lc_agent_conf_defaults(lc_agent_conf_t *cf)
{
    cf->redis_db = 0;
    cf->abandon_after = 30 * 60 * 1000LL;
    cf->cooldown = 24 * 3600 * 1000LL;
    cf->link_window = 30 * 86400 * 1000LL;
    cf->scan_interval = 15 * 1000LL;
    cf->claim_after = 60 * 1000LL;
    cf->retention = 90 * 86400 * 1000LL;
    cf->welcome = 1;
    cf->channel = LC_AGENT_OUTBOX;
    cf->smtp_starttls = 1;
    cf->webhook_retries = 5;
    cf->webhook_timeout = 10 * 1000LL;
    cf->retry_delay = 1000;
    cf->log_level = LC_AGENT_LOG_INFO;
}


static int
lc_agent_conf_set_str(char **field, const char *v, size_t len)
{
    char  *s;

    s = strndup(v, len);
    if (s == NULL) {
        return -1;
    }

    free(*field);
    *field = s;

    return 0;
}


static int
lc_agent_conf_word(const char **names, const char *v, size_t len)
{
    int  i;

    for (i = 0; names[i]; i++) {
        if (strlen(names[i]) == len && memcmp(names[i], v, len) == 0) {
            return i;
        }
    }

    return -1;
}


/* one value; returns NULL or what is wrong with it */

static const char *
lc_agent_conf_value(lc_agent_conf_t *cf, const lc_agent_conf_key_t *k,
    const char *v, size_t len)
{
    int          n;
    char        *end, num[32];
    void        *field;
    size_t       i, start;
    long long    t, *times;

    static const char  *flags[] = { "off", "on", NULL };
    static const char  *tls[] = { "off", "try", "on", NULL };

    field = (char *) cf + k->offset;

    switch (k->type) {

    case LC_AGENT_CONF_STR:
        return lc_agent_conf_set_str(field, v, len) == 0
               ? NULL : "out of memory";

    case LC_AGENT_CONF_INT:
        if (len == 0 || len >= sizeof(num)) {
            return "not a number";
        }

        memcpy(num, v, len);
        num[len] = '\0';
        errno = 0;
        t = strtoll(num, &end, 10);

        if (*end != '\0' || errno || t < k->min || t > k->max) {
            return "not a number in range";
        }

        *(int *) field = (int) t;
        return NULL;

    case LC_AGENT_CONF_TIME:
        if (lc_agent_parse_time(v, len, &t) != 0) {
            return "not a time (e.g. 90s, 30m, 24h, 7d, 500ms)";
        }

        if (t < k->min || (k->max && t > k->max)) {
            return "time out of range";
        }

        *(long long *) field = t;
        return NULL;

    case LC_AGENT_CONF_TIMES:
        /* "1h,24h,72h" (or "off"): each after the first message */
        times = field;
        cf->nfollowups = 0;

        if (len == 3 && memcmp(v, "off", 3) == 0) {
            return NULL;
        }

        start = 0;

        for (i = 0; i <= len; i++) {
            if (i < len && v[i] != ',') {
                continue;
            }

            if (cf->nfollowups == LC_AGENT_FOLLOWUPS_MAX) {
                return "too many follow-ups";
            }

            while (start < i && v[start] == ' ') {
                start++;
            }

            if (lc_agent_parse_time(v + start, i - start, &t) != 0 || t <= 0
                || (cf->nfollowups && t <= times[cf->nfollowups - 1]))
            {
                return "not a list of growing times (e.g. 1h,24h,72h)";
            }

            times[cf->nfollowups++] = t;
            start = i + 1;
        }

        return NULL;

    case LC_AGENT_CONF_FLAG:
        n = lc_agent_conf_word(flags, v, len);
        if (n < 0) {
            return "not \"on\" or \"off\"";
        }

        *(int *) field = n;
        return NULL;

    case LC_AGENT_CONF_TLS:
        n = lc_agent_conf_word(tls, v, len);
        if (n < 0) {
            return "not \"off\", \"try\" or \"on\"";
        }

        *(int *) field = n;
        return NULL;

    case LC_AGENT_CONF_CHANNEL:
        n = lc_agent_conf_word(lc_agent_channel_names, v, len);
        if (n < 0) {
            return "not \"outbox\", \"smtp\" or \"webhook\"";
        }

        *(lc_agent_channel_e *) field = n;
        return NULL;

    case LC_AGENT_CONF_LEVEL:
        n = lc_agent_conf_word(lc_agent_level_names, v, len);
        if (n < 0) {
            return "not \"error\", \"warn\", \"info\" or \"debug\"";
        }

        *(lc_agent_log_level_e *) field = n;
        return NULL;
    }

    return "unknown type";
}


/*
 * The templates by default: those of the source tree when the binary
 * runs from it (build/lifecycle-agent, agent/templates beside), else
 * where a package would put them.
 */

static int
lc_agent_conf_templates(lc_agent_conf_t *cf)
{
    char     exe[PATH_MAX], dir[PATH_MAX + 32];
    char    *slash;
    ssize_t  n;

    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

    if (n > 0) {
        exe[n] = '\0';
        slash = strrchr(exe, '/');

        if (slash) {
            *slash = '\0';
            snprintf(dir, sizeof(dir), "%s/../agent/templates", exe);

            if (access(dir, F_OK) == 0) {
                return lc_agent_conf_set_str(&cf->templates, dir,
                                             strlen(dir));
            }
        }
    }

    return lc_agent_conf_set_str(&cf->templates, LC_AGENT_TEMPLATES_DEFAULT,
                                 sizeof(LC_AGENT_TEMPLATES_DEFAULT) - 1);
}


/* what the settings need of each other, once all are read */

static const char *
lc_agent_conf_check(lc_agent_conf_t *cf)
{
    char  host[256];

    if (cf->redis == NULL
        && lc_agent_conf_set_str(&cf->redis, "127.0.0.1:6379", 14) != 0)
    {
        return "out of memory";
    }

    if (strncmp(cf->redis, "unix:", 5) != 0
        && strrchr(cf->redis, ':') == NULL)
    {
        return "\"redis\" is not IP:port or unix:/path";
    }

    if (cf->secret_file == NULL) {
        return "\"secret\" is required (the module's lifecycle_secret file)";
    }

    if (cf->templates == NULL && lc_agent_conf_templates(cf) != 0) {
        return "out of memory";
    }

    if (cf->unsubscribe_url == NULL) {
        return "\"unsubscribe_url\" is required (the URL of the module's "
               "lifecycle_unsubscribe location)";
    }

    if (!lc_agent_header_safe(cf->unsubscribe_url,
                              strlen(cf->unsubscribe_url))
        || strchr(cf->unsubscribe_url, ' ') || strchr(cf->unsubscribe_url, '>'))
    {
        return "\"unsubscribe_url\" holds a blank, \">\" or a control "
               "character";
    }

    switch (cf->channel) {

    case LC_AGENT_OUTBOX:
        if (cf->outbox == NULL
            && lc_agent_conf_set_str(&cf->outbox, LC_AGENT_OUTBOX_DEFAULT,
                                     sizeof(LC_AGENT_OUTBOX_DEFAULT) - 1)
               != 0)
        {
            return "out of memory";
        }
        break;

    case LC_AGENT_SMTP:
        if (cf->smtp_url == NULL) {
            return "channel smtp needs \"smtp_url\" (smtp://host:port)";
        }
        break;

    case LC_AGENT_WEBHOOK:
        if (cf->webhook_url == NULL || cf->webhook_secret == NULL) {
            return "channel webhook needs \"webhook_url\" and "
                   "\"webhook_secret\"";
        }
        break;
    }

    if (cf->smtp_from == NULL
        && lc_agent_conf_set_str(&cf->smtp_from, LC_AGENT_FROM_DEFAULT,
                                 sizeof(LC_AGENT_FROM_DEFAULT) - 1) != 0)
    {
        return "out of memory";
    }

    if (cf->smtp_from && !lc_agent_header_safe(cf->smtp_from,
                                               strlen(cf->smtp_from)))
    {
        return "\"smtp_from\" holds a control character";
    }

    if (cf->consumer == NULL) {
        if (gethostname(host, sizeof(host)) != 0) {
            strcpy(host, "agent");
        }

        host[sizeof(host) - 1] = '\0';

        if (lc_agent_conf_set_str(&cf->consumer, host, strlen(host)) != 0) {
            return "out of memory";
        }
    }

    if (strchr(cf->consumer, '/') || strchr(cf->consumer, ' ')) {
        return "\"consumer\" holds \"/\" or a blank";
    }

    return NULL;
}


/*
 * "key value" lines; blanks around both are dropped, the value is the
 * rest of the line (it may hold blanks: "Shop <shop@example.com>").
 * A line whose first non-blank is "#" is a comment; a "#" elsewhere is
 * part of the value (passwords may have one).
 */

lc_agent_conf_t *
lc_agent_conf_parse(const char *file, const char *text, size_t len,
    char *err, size_t errlen)
{
    size_t                      line, klen, vlen;
    const char                 *p, *end, *eol, *key, *v, *e;
    lc_agent_conf_t            *cf;
    const lc_agent_conf_key_t  *k;

    cf = calloc(1, sizeof(lc_agent_conf_t));
    if (cf == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    lc_agent_arena_init(&cf->arena);
    lc_agent_conf_defaults(cf);

    if (lc_agent_conf_set_str(&cf->file, file, strlen(file)) != 0) {
        goto nomem;
    }

    p = text;
    end = text + len;
    line = 0;

    while (p < end) {
        line++;
        eol = memchr(p, '\n', end - p);
        if (eol == NULL) {
            eol = end;
        }

        while (p < eol && (*p == ' ' || *p == '\t')) {
            p++;
        }

        e = eol;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) {
            e--;
        }

        if (p == e || *p == '#') {
            p = eol + 1;
            continue;
        }

        key = p;
        while (p < e && *p != ' ' && *p != '\t') {
            p++;
        }

        klen = p - key;

        while (p < e && (*p == ' ' || *p == '\t')) {
            p++;
        }

        v = p;
        vlen = e - p;

        for (k = lc_agent_conf_keys; k->name; k++) {
            if (strlen(k->name) == klen && memcmp(k->name, key, klen) == 0) {
                break;
            }
        }

        if (k->name == NULL) {
            snprintf(err, errlen, "%s:%zu: unknown key \"%.*s\"", file, line,
                     (int) (klen > 64 ? 64 : klen), key);
            goto failed;
        }

        if (vlen == 0) {
            snprintf(err, errlen, "%s:%zu: \"%s\" has no value", file, line,
                     k->name);
            goto failed;
        }

        if (memchr(v, '\0', vlen) || memchr(v, '\r', vlen)) {
            snprintf(err, errlen, "%s:%zu: \"%s\": control character", file,
                     line, k->name);
            goto failed;
        }

        e = lc_agent_conf_value(cf, k, v, vlen);
        if (e) {
            snprintf(err, errlen, "%s:%zu: \"%s %.*s\": %s", file, line,
                     k->name, (int) (vlen > 64 ? 64 : vlen), v, e);
            goto failed;
        }

        p = eol + 1;
    }

    e = lc_agent_conf_check(cf);
    if (e) {
        snprintf(err, errlen, "%s: %s", file, e);
        goto failed;
    }

    return cf;

nomem:

    snprintf(err, errlen, "out of memory");

failed:

    lc_agent_conf_free(cf);
    return NULL;
}


/* the secret, the catalog and the templates the configuration names */

int
lc_agent_conf_files(lc_agent_conf_t *cf, char *err, size_t errlen)
{
    int      k, part;
    char    *data, path[PATH_MAX], msg[256];
    size_t   len;

    if (lc_agent_read_file(cf->secret_file, &data, &len, err, errlen) != 0) {
        return -1;
    }

    /* as the module reads it: the whole file less a trailing newline */
    if (len && data[len - 1] == '\n') {
        len--;
    }

    if (len < 32) {
        snprintf(err, errlen, "%s: the secret must be 32 bytes or more",
                 cf->secret_file);
        free(data);
        return -1;
    }

    cf->secret = (unsigned char *) data;
    cf->secret_len = len;

    if (cf->catalog_file) {
        if (lc_agent_read_file(cf->catalog_file, &data, &len, err, errlen)
            != 0)
        {
            return -1;
        }

        cf->catalog = lc_catalog_parse(data, len, &cf->arena.alloc, msg,
                                       sizeof(msg));
        free(data);

        if (cf->catalog == NULL) {
            snprintf(err, errlen, "%s: %s", cf->catalog_file, msg);
            return -1;
        }
    }

    for (k = 0; k < LC_AGENT_KINDS; k++) {
        for (part = 0; part < LC_AGENT_PARTS; part++) {
            snprintf(path, sizeof(path), "%s/%s%s", cf->templates,
                     lc_agent_kind_names[k], lc_agent_part_suffix[part]);

            if (part == LC_AGENT_PART_HTML && access(path, F_OK) != 0) {
                continue;   /* text only */
            }

            if (lc_agent_read_file(path, &data, &len, err, errlen) != 0) {
                return -1;
            }

            cf->tpl[k][part] = lc_tpl_compile(data, len, &cf->arena.alloc,
                                              msg, sizeof(msg));
            free(data);

            if (cf->tpl[k][part] == NULL) {
                snprintf(err, errlen, "%s: %s", path, msg);
                return -1;
            }
        }
    }

    return 0;
}


lc_agent_conf_t *
lc_agent_conf_load(const char *file, char *err, size_t errlen)
{
    char             *text;
    size_t            len;
    lc_agent_conf_t  *cf;

    if (lc_agent_read_file(file, &text, &len, err, errlen) != 0) {
        return NULL;
    }

    cf = lc_agent_conf_parse(file, text, len, err, errlen);
    free(text);

    if (cf == NULL) {
        return NULL;
    }

    if (lc_agent_conf_files(cf, err, errlen) != 0) {
        lc_agent_conf_free(cf);
        return NULL;
    }

    return cf;
}


void
lc_agent_conf_free(lc_agent_conf_t *cf)
{
    const lc_agent_conf_key_t  *k;

    if (cf == NULL) {
        return;
    }

    for (k = lc_agent_conf_keys; k->name; k++) {
        if (k->type == LC_AGENT_CONF_STR) {
            free(*(char **) ((char *) cf + k->offset));
        }
    }

    if (cf->secret) {
        memset(cf->secret, 0, cf->secret_len);
        free(cf->secret);
    }

    free(cf->file);
    lc_agent_arena_free(&cf->arena);
    free(cf);
}
