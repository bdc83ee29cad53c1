
/*
 * lifecycle-agent: logging, time, random ids, arenas, byte strings.
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "lc_agent.h"


/* arena blocks: big enough for a catalog line or a template at once */
#define LC_AGENT_BLOCK_SIZE  (64 * 1024)

struct lc_agent_block_s {
    lc_agent_block_t           *next;
    size_t                      size;
    size_t                      used;
    max_align_t                 data[];
};


static lc_agent_log_level_e  lc_agent_log_level = LC_AGENT_LOG_INFO;

static const char  *lc_agent_log_names[] = {
    "error", "warn", "info", "debug"
};


void
lc_agent_log_set(lc_agent_log_level_e level)
{
    lc_agent_log_level = level;
}


/*
 * One line on stderr (the journal under systemd), with a UTC time to
 * the millisecond so that lines of several agents sort together.
 */

void
lc_agent_log(lc_agent_log_level_e level, const char *fmt, ...)
{
    char             line[2048];
    size_t           n;
    va_list          args;
    time_t           sec;
    struct tm        tm;
    long long        now;

    if (level > lc_agent_log_level) {
        return;
    }

    now = lc_agent_now();
    sec = (time_t) (now / 1000);
    gmtime_r(&sec, &tm);

    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof(line) - n, ".%03dZ [%s] ",
                  (int) (now % 1000), lc_agent_log_names[level]);

    va_start(args, fmt);
    vsnprintf(line + n, sizeof(line) - n, fmt, args);
    va_end(args);

    fprintf(stderr, "%s\n", line);
}


long long
lc_agent_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);

    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


int
lc_agent_random_id(char *out)
{
    size_t          i;
    unsigned char   b[LC_AGENT_ID_LEN / 2];
    static const char  hex[] = "0123456789abcdef";

    if (RAND_bytes(b, sizeof(b)) != 1) {
        return -1;
    }

    for (i = 0; i < sizeof(b); i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 0xf];
    }

    out[LC_AGENT_ID_LEN] = '\0';

    return 0;
}


void
lc_agent_arena_init(lc_agent_arena_t *a)
{
    a->head = NULL;
    a->alloc.alloc = lc_agent_alloc;
    a->alloc.ctx = a;
}


void
lc_agent_arena_free(lc_agent_arena_t *a)
{
    lc_agent_block_t  *b, *next;

    for (b = a->head; b; b = next) {
        next = b->next;
        free(b);
    }

    a->head = NULL;
}


/* lc_alloc_t's allocator: aligned for any type, freed with the arena */

void *
lc_agent_alloc(void *ctx, size_t size)
{
    size_t             room;
    lc_agent_arena_t  *a;
    lc_agent_block_t  *b;

    a = ctx;
    size = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);

    b = a->head;

    if (b == NULL || b->size - b->used < size) {
        room = size > LC_AGENT_BLOCK_SIZE ? size : LC_AGENT_BLOCK_SIZE;

        b = malloc(sizeof(lc_agent_block_t) + room);
        if (b == NULL) {
            return NULL;
        }

        b->size = room;
        b->used = 0;

        /* a big one goes second: the current block keeps its room */
        if (a->head && size > LC_AGENT_BLOCK_SIZE) {
            b->next = a->head->next;
            a->head->next = b;

        } else {
            b->next = a->head;
            a->head = b;
        }
    }

    b->used += size;

    return (char *) b->data + b->used - size;
}


char *
lc_agent_strndup(lc_agent_arena_t *a, const char *s, size_t len)
{
    char  *p;

    p = lc_agent_alloc(a, len + 1);
    if (p == NULL) {
        return NULL;
    }

    memcpy(p, s, len);
    p[len] = '\0';

    return p;
}


static int
lc_agent_buf_room(lc_agent_buf_t *b, size_t more)
{
    char    *p;
    size_t   size;

    if (b->failed) {
        return -1;
    }

    if (b->len + more + 1 <= b->size) {
        return 0;
    }

    size = b->size ? b->size : 256;

    while (size < b->len + more + 1) {
        size *= 2;
    }

    p = realloc(b->data, size);
    if (p == NULL) {
        b->failed = 1;
        return -1;
    }

    b->data = p;
    b->size = size;

    return 0;
}


void
lc_agent_buf_add(lc_agent_buf_t *b, const char *s, size_t len)
{
    if (lc_agent_buf_room(b, len) != 0) {
        return;
    }

    memcpy(b->data + b->len, s, len);
    b->len += len;
    b->data[b->len] = '\0';
}


void
lc_agent_buf_str(lc_agent_buf_t *b, const char *s)
{
    lc_agent_buf_add(b, s, strlen(s));
}


void
lc_agent_buf_printf(lc_agent_buf_t *b, const char *fmt, ...)
{
    int      n;
    va_list  args;

    va_start(args, fmt);
    n = vsnprintf(NULL, 0, fmt, args);
    va_end(args);

    if (n < 0 || lc_agent_buf_room(b, (size_t) n) != 0) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(b->data + b->len, (size_t) n + 1, fmt, args);
    va_end(args);

    b->len += (size_t) n;
}


/* lc_tpl_write_pt into a buffer */

void
lc_agent_buf_write(void *ctx, const char *data, size_t len)
{
    lc_agent_buf_add(ctx, data, len);
}


/* the string, owned by the caller; NULL if an allocation failed */

char *
lc_agent_buf_take(lc_agent_buf_t *b)
{
    char  *s;

    if (b->failed) {
        lc_agent_buf_free(b);
        return NULL;
    }

    if (b->data == NULL) {
        return strdup("");
    }

    s = b->data;
    b->data = NULL;
    b->len = 0;
    b->size = 0;

    return s;
}


void
lc_agent_buf_free(lc_agent_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->size = 0;
    b->failed = 0;
}


/* the whole file, NUL-terminated, in memory from malloc() */

int
lc_agent_read_file(const char *path, char **data, size_t *len, char *err,
    size_t errlen)
{
    FILE            *f;
    size_t           n;
    lc_agent_buf_t   b = { NULL, 0, 0, 0 };
    char             chunk[8192];

    f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }

    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        lc_agent_buf_add(&b, chunk, n);
    }

    if (ferror(f)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        fclose(f);
        lc_agent_buf_free(&b);
        return -1;
    }

    fclose(f);

    *len = b.len;
    *data = lc_agent_buf_take(&b);

    if (*data == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }

    return 0;
}


int
lc_agent_is_hex(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }

    return len > 0;
}


/* HMAC-SHA256 as 64 lowercase hex digits and a NUL */

void
lc_agent_hmac_hex(const void *key, size_t key_len, const void *data,
    size_t len, char *hex)
{
    unsigned int    i, n;
    unsigned char   mac[EVP_MAX_MD_SIZE];
    static const char  digits[] = "0123456789abcdef";

    n = 0;
    HMAC(EVP_sha256(), key, (int) key_len, data, len, mac, &n);

    for (i = 0; i < n; i++) {
        hex[2 * i] = digits[mac[i] >> 4];
        hex[2 * i + 1] = digits[mac[i] & 0xf];
    }

    hex[2 * n] = '\0';
}
