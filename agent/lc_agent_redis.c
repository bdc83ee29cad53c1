
/*
 * lifecycle-agent: one synchronous hiredis connection, connected when
 * needed, dropped on any I/O error and connected again with a backoff.
 * Every command names keys of one slot only (lifecycle_keys.h).
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "lc_agent.h"


/* longer than any command's own wait: we never BLOCK */
#define LC_AGENT_REDIS_TIMEOUT   5
#define LC_AGENT_BACKOFF_MIN     100
#define LC_AGENT_BACKOFF_MAX     5000


static redisReply *lc_agent_redis_checked(lc_agent_t *ag, redisReply *r);


static int
lc_agent_redis_connect(lc_agent_t *ag)
{
    long long        now;
    redisReply      *r;
    redisContext    *c;
    struct timeval   tv;
    char             host[256], *colon;
    const char      *addr;

    if (ag->redis) {
        return 0;
    }

    now = lc_agent_now();

    if (now < ag->redis_retry) {
        return -1;
    }

    addr = ag->conf->redis;
    tv.tv_sec = LC_AGENT_REDIS_TIMEOUT;
    tv.tv_usec = 0;

    if (strncmp(addr, "unix:", 5) == 0) {
        c = redisConnectUnixWithTimeout(addr + 5, tv);

    } else {
        snprintf(host, sizeof(host), "%s", addr);
        colon = strrchr(host, ':');
        *colon = '\0';
        c = redisConnectWithTimeout(host, atoi(colon + 1), tv);
    }

    if (c == NULL || c->err) {
        goto failed;
    }

    redisSetTimeout(c, tv);
    ag->redis = c;

    if (ag->conf->redis_password) {
        r = redisCommand(c, "AUTH %s", ag->conf->redis_password);
        if (!lc_agent_redis_ok(ag, lc_agent_redis_checked(ag, r), "AUTH")) {
            goto dropped;
        }
    }

    if (ag->conf->redis_db) {
        r = redisCommand(c, "SELECT %d", ag->conf->redis_db);
        if (!lc_agent_redis_ok(ag, lc_agent_redis_checked(ag, r), "SELECT")) {
            goto dropped;
        }
    }

    if (ag->redis_down_logged) {
        lc_agent_log(LC_AGENT_LOG_WARN, "redis %s: connected again", addr);
    }

    ag->redis_down_logged = 0;
    ag->redis_backoff = 0;

    return 0;

failed:

    if (!ag->redis_down_logged) {
        lc_agent_log(LC_AGENT_LOG_ERROR, "redis %s: %s", addr,
                     c ? c->errstr : "out of memory");
        ag->redis_down_logged = 1;
    }

    if (c) {
        redisFree(c);
    }

dropped:

    lc_agent_redis_close(ag);

    ag->redis_backoff = ag->redis_backoff
                        ? ag->redis_backoff * 2 : LC_AGENT_BACKOFF_MIN;
    if (ag->redis_backoff > LC_AGENT_BACKOFF_MAX) {
        ag->redis_backoff = LC_AGENT_BACKOFF_MAX;
    }

    ag->redis_retry = now + ag->redis_backoff;

    return -1;
}


void
lc_agent_redis_close(lc_agent_t *ag)
{
    if (ag->redis) {
        redisFree(ag->redis);
        ag->redis = NULL;
    }
}


/* NULL (and the connection dropped) when the connection failed */

static redisReply *
lc_agent_redis_checked(lc_agent_t *ag, redisReply *r)
{
    if (r == NULL) {
        if (ag->redis && !ag->redis_down_logged) {
            lc_agent_log(LC_AGENT_LOG_ERROR, "redis %s: %s", ag->conf->redis,
                         ag->redis->errstr);
            ag->redis_down_logged = 1;
        }

        lc_agent_redis_close(ag);
        ag->redis_retry = lc_agent_now() + LC_AGENT_BACKOFF_MIN;
    }

    return r;
}


/* hiredis' format: %s for our own strings, %b for anything from data */

redisReply *
lc_agent_cmd(lc_agent_t *ag, const char *fmt, ...)
{
    void     *r;
    va_list   args;

    va_start(args, fmt);
    r = lc_agent_vcmd(ag, fmt, args);
    va_end(args);

    return r;
}


redisReply *
lc_agent_vcmd(lc_agent_t *ag, const char *fmt, va_list args)
{
    if (lc_agent_redis_connect(ag) != 0) {
        return NULL;
    }

    return lc_agent_redis_checked(ag, redisvCommand(ag->redis, fmt, args));
}


redisReply *
lc_agent_cmdv(lc_agent_t *ag, int argc, const char **argv,
    const size_t *argvlen)
{
    if (lc_agent_redis_connect(ag) != 0) {
        return NULL;
    }

    return lc_agent_redis_checked(ag, redisCommandArgv(ag->redis, argc, argv,
                                                       argvlen));
}


/* pipelining: commands appended, then one reply each */

int
lc_agent_append(lc_agent_t *ag, const char *fmt, ...)
{
    int      rc;
    va_list  args;

    if (lc_agent_redis_connect(ag) != 0) {
        return -1;
    }

    va_start(args, fmt);
    rc = redisvAppendCommand(ag->redis, fmt, args);
    va_end(args);

    return rc == REDIS_OK ? 0 : -1;
}


redisReply *
lc_agent_get_reply(lc_agent_t *ag)
{
    void  *r;

    if (ag->redis == NULL) {
        return NULL;
    }

    r = NULL;

    if (redisGetReply(ag->redis, &r) != REDIS_OK) {
        r = NULL;
    }

    return lc_agent_redis_checked(ag, r);
}


/*
 * 1 when a reply came and is no error; an error reply is logged with
 * "what" and freed, and so is nothing on a NULL. The reply stays the
 * caller's when 1 is returned.
 */

int
lc_agent_redis_ok(lc_agent_t *ag, redisReply *r, const char *what)
{
    (void) ag;

    if (r == NULL) {
        return 0;
    }

    if (r->type == REDIS_REPLY_ERROR) {
        lc_agent_log(LC_AGENT_LOG_ERROR, "redis %s: %s", what, r->str);
        freeReplyObject(r);
        return 0;
    }

    return 1;
}


/* a field of an HGETALL reply (flat array of field, value) */

const redisReply *
lc_agent_hash_get(const redisReply *r, const char *field)
{
    size_t  i, len;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        return NULL;
    }

    len = strlen(field);

    for (i = 0; i + 1 < r->elements; i += 2) {
        if (r->element[i]->type == REDIS_REPLY_STRING
            && r->element[i]->len == len
            && memcmp(r->element[i]->str, field, len) == 0)
        {
            return r->element[i + 1];
        }
    }

    return NULL;
}


/* an integer or a string of digits; 0 for anything else */

long long
lc_agent_reply_ll(const redisReply *r)
{
    if (r == NULL) {
        return 0;
    }

    if (r->type == REDIS_REPLY_INTEGER) {
        return r->integer;
    }

    if (r->type == REDIS_REPLY_STRING) {
        return strtoll(r->str, NULL, 10);
    }

    return 0;
}


/* counters for "lifecycle-agent status", shared by all agents */

void
lc_agent_statn(lc_agent_t *ag, const char *name, long long n)
{
    redisReply  *r;

    r = lc_agent_cmd(ag, "HINCRBY " LC_KEY_AGENT_STATS " %s %lld", name, n);

    if (lc_agent_redis_ok(ag, r, "HINCRBY")) {
        freeReplyObject(r);
    }
}


void
lc_agent_stat(lc_agent_t *ag, const char *name)
{
    lc_agent_statn(ag, name, 1);
}
