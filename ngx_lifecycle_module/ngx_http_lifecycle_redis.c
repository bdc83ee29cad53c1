
/*
 * lifecycle: the worker's one asynchronous Redis connection, driven by
 * nginx's event loop. hiredis 0.14 has no timeouts of its own: connect
 * timeout, a watchdog for a server that stopped answering and reconnect
 * with backoff are nginx timers here, all cancelable so that an old worker
 * leaves at once on reload.
 */


#include "ngx_http_lifecycle_module.h"

#include <ngx_sha1.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>


#define NGX_HTTP_LIFECYCLE_CONNECT_TIMEOUT   1000
#define NGX_HTTP_LIFECYCLE_HUNG_AFTER        1000
#define NGX_HTTP_LIFECYCLE_WATCHDOG_PERIOD   250
#define NGX_HTTP_LIFECYCLE_BACKOFF_MIN       100
#define NGX_HTTP_LIFECYCLE_BACKOFF_MAX       2000
#define NGX_HTTP_LIFECYCLE_LOG_EVERY         10000

/* commands in flight beyond this fail fast: Redis is far behind */
#define NGX_HTTP_LIFECYCLE_MAX_OUTSTANDING   4096



typedef struct ngx_http_lifecycle_free_s  ngx_http_lifecycle_free_t;

struct ngx_http_lifecycle_free_s {
    ngx_http_lifecycle_free_t        *next;
};


typedef struct {
    redisAsyncContext                *ac;
    ngx_http_lifecycle_redis_addr_t  *addr;
    ngx_log_t                        *log;

    ngx_event_t                       reconnect;
    ngx_event_t                       watchdog;
    ngx_event_t                       flush;      /* posted: write queued */

    ngx_msec_t                        backoff;
    ngx_msec_t                        connect_start;
    ngx_msec_t                        progress;
    ngx_msec_t                        logged;
    ngx_uint_t                        outstanding;
    ngx_uint_t                        batched;    /* queued, not written */
    ngx_uint_t                        quiet;      /* failures not logged */

    ngx_http_lifecycle_free_t        *free;       /* pending records */
    ngx_array_t                      *scripts;    /* more to load */

    unsigned                          connected:1;
    unsigned                          unusable:1; /* setup failed */
    unsigned                          behind:1;   /* a request timed out */
    unsigned                          exiting:1;
    unsigned                          flushing:1;
} ngx_http_lifecycle_redis_t;


static void ngx_http_lifecycle_redis_connect(void);
static void ngx_http_lifecycle_redis_down(void);
static void ngx_http_lifecycle_redis_drop(const char *why);
static ngx_uint_t ngx_http_lifecycle_redis_log_now(void);
static void ngx_http_lifecycle_redis_connected(const redisAsyncContext *ac,
    int status);
static void ngx_http_lifecycle_redis_disconnected(const redisAsyncContext *ac,
    int status);
static void ngx_http_lifecycle_redis_setup_reply(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_lifecycle_redis_reply(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_lifecycle_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_lifecycle_redis_watchdog_handler(ngx_event_t *ev);
static void ngx_http_lifecycle_redis_read_handler(ngx_event_t *ev);
static void ngx_http_lifecycle_redis_write_handler(ngx_event_t *ev);
static void ngx_http_lifecycle_redis_flush_handler(ngx_event_t *ev);
static void ngx_http_lifecycle_redis_add_read(void *privdata);
static void ngx_http_lifecycle_redis_del_read(void *privdata);
static void ngx_http_lifecycle_redis_add_write(void *privdata);
static void ngx_http_lifecycle_redis_del_write(void *privdata);
static void ngx_http_lifecycle_redis_cleanup(void *privdata);
static u_char *ngx_http_lifecycle_redis_format(ngx_log_t *log, int argc,
    const char **argv, const size_t *argvlen, size_t *len);


static void *ngx_http_lifecycle_reply_string(const redisReadTask *task,
    char *str, size_t len);
static void *ngx_http_lifecycle_reply_array(const redisReadTask *task,
    int elements);
static void *ngx_http_lifecycle_reply_integer(const redisReadTask *task,
    long long value);
static void *ngx_http_lifecycle_reply_nil(const redisReadTask *task);
static void ngx_http_lifecycle_reply_free(void *reply);


static ngx_http_lifecycle_redis_t  ngx_http_lifecycle_redis_worker;


/*
 * Replies are built in an arena of the worker's instead of with a
 * malloc() per element: hiredis has one reply at a time, which it frees
 * once its callback returned, and freeing it empties the arena.
 */

#define NGX_HTTP_LIFECYCLE_ARENA_SIZE  16384


typedef struct ngx_http_lifecycle_chunk_s  ngx_http_lifecycle_chunk_t;

struct ngx_http_lifecycle_chunk_s {
    ngx_http_lifecycle_chunk_t       *next;
    u_char                           *pos;
    u_char                           *end;
};


static ngx_http_lifecycle_chunk_t  *ngx_http_lifecycle_arena;

static redisReplyObjectFunctions  ngx_http_lifecycle_reply_functions = {
    ngx_http_lifecycle_reply_string,
    ngx_http_lifecycle_reply_array,
    ngx_http_lifecycle_reply_integer,
    ngx_http_lifecycle_reply_nil,
    ngx_http_lifecycle_reply_free
};


ngx_int_t
ngx_http_lifecycle_redis_init_process(ngx_cycle_t *cycle)
{
    ngx_http_lifecycle_redis_t      *rc = &ngx_http_lifecycle_redis_worker;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_lifecycle_module);

    ngx_memzero(rc, sizeof(ngx_http_lifecycle_redis_t));

    rc->addr = &lmcf->redis;
    rc->scripts = lmcf->scripts;
    rc->log = cycle->log;
    rc->backoff = NGX_HTTP_LIFECYCLE_BACKOFF_MIN;

    rc->reconnect.handler = ngx_http_lifecycle_redis_reconnect_handler;
    rc->reconnect.log = cycle->log;
    rc->reconnect.data = rc;
    rc->reconnect.cancelable = 1;

    rc->watchdog.handler = ngx_http_lifecycle_redis_watchdog_handler;
    rc->watchdog.log = cycle->log;
    rc->watchdog.data = rc;
    rc->watchdog.cancelable = 1;

    rc->flush.handler = ngx_http_lifecycle_redis_flush_handler;
    rc->flush.log = cycle->log;
    rc->flush.data = rc;

    ngx_http_lifecycle_redis_connect();

    return NGX_OK;
}


void
ngx_http_lifecycle_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_lifecycle_redis_t  *rc = &ngx_http_lifecycle_redis_worker;
    ngx_http_lifecycle_free_t   *f;

    rc->exiting = 1;

    if (rc->ac) {
        ngx_http_lifecycle_redis_drop(NULL);
    }

    if (rc->reconnect.timer_set) {
        ngx_del_timer(&rc->reconnect);
    }

    if (rc->watchdog.timer_set) {
        ngx_del_timer(&rc->watchdog);
    }

    if (rc->flush.posted) {
        ngx_delete_posted_event(&rc->flush);
    }

    while (rc->free) {
        f = rc->free;
        rc->free = f->next;
        ngx_free(f);
    }

    ngx_http_lifecycle_reply_free(NULL);
    ngx_free(ngx_http_lifecycle_arena);
    ngx_http_lifecycle_arena = NULL;
}


static void
ngx_http_lifecycle_redis_connect(void)
{
    ngx_http_lifecycle_redis_t  *rc = &ngx_http_lifecycle_redis_worker;

    ngx_str_t          *script;
    ngx_uint_t          i;
    ngx_connection_t   *c;
    redisAsyncContext  *ac;

    if (rc->addr->port) {
        ac = redisAsyncConnect((char *) rc->addr->host.data, rc->addr->port);

    } else {
        ac = redisAsyncConnectUnix((char *) rc->addr->host.data);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "lifecycle: redis \"%V\": out of memory",
                      &rc->addr->name);
        goto failed;
    }

    if (ac->err) {
        if (ngx_http_lifecycle_redis_log_now()) {
            ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                          "lifecycle: redis \"%V\": connect failed: %s",
                          &rc->addr->name, ac->errstr);
        }

        redisAsyncFree(ac);
        goto failed;
    }

    c = ngx_get_connection(ac->c.fd, rc->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        goto failed;
    }

    c->read->handler = ngx_http_lifecycle_redis_read_handler;
    c->write->handler = ngx_http_lifecycle_redis_write_handler;
    c->read->log = rc->log;
    c->write->log = rc->log;
    c->data = rc;

    /* hooks before the connect callback: 0.14 arms the write event there */
    ac->c.reader->fn = &ngx_http_lifecycle_reply_functions;

    ac->ev.data = c;
    ac->ev.addRead = ngx_http_lifecycle_redis_add_read;
    ac->ev.delRead = ngx_http_lifecycle_redis_del_read;
    ac->ev.addWrite = ngx_http_lifecycle_redis_add_write;
    ac->ev.delWrite = ngx_http_lifecycle_redis_del_write;
    ac->ev.cleanup = ngx_http_lifecycle_redis_cleanup;

    rc->ac = ac;
    rc->connected = 0;
    rc->unusable = 0;
    rc->behind = 0;
    rc->connect_start = ngx_current_msec;

    redisAsyncSetConnectCallback(ac, ngx_http_lifecycle_redis_connected);
    redisAsyncSetDisconnectCallback(ac, ngx_http_lifecycle_redis_disconnected);

    /* queued now, sent in order as soon as the socket connects */

    if (rc->addr->password.len) {
        redisAsyncCommand(ac, ngx_http_lifecycle_redis_setup_reply, "AUTH",
                          "AUTH %b", rc->addr->password.data,
                          rc->addr->password.len);
    }

    if (rc->addr->db) {
        redisAsyncCommand(ac, ngx_http_lifecycle_redis_setup_reply, "SELECT",
                          "SELECT %d", (int) rc->addr->db);
    }

    script = ngx_http_lifecycle_profile_script();

    redisAsyncCommand(ac, ngx_http_lifecycle_redis_setup_reply, "SCRIPT LOAD",
                      "SCRIPT LOAD %b", script->data, script->len);

    /* and those of ngx_http_lifecycle_redis_script() */

    if (rc->scripts) {
        script = rc->scripts->elts;

        for (i = 0; i < rc->scripts->nelts; i++) {
            redisAsyncCommand(ac, ngx_http_lifecycle_redis_setup_reply,
                              "SCRIPT LOAD", "SCRIPT LOAD %b",
                              script[i].data, script[i].len);
        }
    }

    if (!rc->watchdog.timer_set) {
        ngx_add_timer(&rc->watchdog, NGX_HTTP_LIFECYCLE_WATCHDOG_PERIOD);
    }

    return;

failed:

    ngx_http_lifecycle_redis_down();
}


/*
 * A script loaded (SCRIPT LOAD) on every connection, after the profile
 * script, for a module part that calls it with EVALSHA: registered at
 * configuration time, once per script text; "sha" gets its SHA-1, 40
 * lowercase hex digits. A caller still handles NOSCRIPT (SCRIPT FLUSH
 * while connected), e.g. with ngx_http_lifecycle_call().
 */

ngx_int_t
ngx_http_lifecycle_redis_script(ngx_conf_t *cf, ngx_str_t *script,
    u_char *sha)
{
    u_char                           digest[20];
    ngx_str_t                       *s;
    ngx_uint_t                       i;
    ngx_sha1_t                       sha1;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, script->data, script->len);
    ngx_sha1_final(digest, &sha1);

    ngx_hex_dump(sha, digest, sizeof(digest));

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_lifecycle_module);

    if (lmcf->scripts == NULL) {
        lmcf->scripts = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
        if (lmcf->scripts == NULL) {
            return NGX_ERROR;
        }
    }

    s = lmcf->scripts->elts;

    for (i = 0; i < lmcf->scripts->nelts; i++) {
        if (s[i].data == script->data) {
            return NGX_OK;
        }
    }

    s = ngx_array_push(lmcf->scripts);
    if (s == NULL) {
        return NGX_ERROR;
    }

    *s = *script;

    return NGX_OK;
}


/* the connection is gone: count it, and try again after the backoff */

static void
ngx_http_lifecycle_redis_down(void)
{
    ngx_http_lifecycle_redis_t  *rc = &ngx_http_lifecycle_redis_worker;

    if (rc->connected) {
        rc->connected = 0;
        ngx_http_lifecycle_stat_add(NGX_HTTP_LIFECYCLE_STAT_REDIS_CONNECTED,
                                    -1);
    }

    rc->ac = NULL;
    rc->outstanding = 0;
    rc->batched = 0;

    if (rc->exiting || rc->reconnect.timer_set) {
        return;
    }

    ngx_add_timer(&rc->reconnect, rc->backoff);

    rc->backoff *= 2;

    if (rc->backoff > NGX_HTTP_LIFECYCLE_BACKOFF_MAX) {
        rc->backoff = NGX_HTTP_LIFECYCLE_BACKOFF_MAX;
    }
}


/* closes the connection from our side; every waiting command gets NULL */

static void
ngx_http_lifecycle_redis_drop(const char *why)
{
    ngx_http_lifecycle_redis_t  *rc = &ngx_http_lifecycle_redis_worker;

    if (why && ngx_http_lifecycle_redis_log_now()) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "lifecycle: redis \"%V\": %s, reconnecting",
                      &rc->addr->name, why);
    }

    redisAsyncFree(rc->ac);

    /* the disconnect callback ran only if the socket had connected */
    ngx_http_lifecycle_redis_down();
}


/* failures are logged once, then at most every ten seconds */

static ngx_uint_t
ngx_http_lifecycle_redis_log_now(void)
{
    ngx_http_lifecycle_redis_t  *rc = &ngx_http_lifecycle_redis_worker;

    if (rc->quiet == 0
        || ngx_current_msec - rc->logged >= NGX_HTTP_LIFECYCLE_LOG_EVERY)
    {
        rc->quiet = 1;
        rc->logged = ngx_current_msec;
        return 1;
    }

    return 0;
}


static void
ngx_http_lifecycle_redis_connected(const redisAsyncContext *ac, int status)
{
    ngx_http_lifecycle_redis_t  *rc = &ngx_http_lifecycle_redis_worker;

    if (status != REDIS_OK) {
        /* hiredis frees the context when this returns */

        if (ngx_http_lifecycle_redis_log_now()) {
            ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                          "lifecycle: redis \"%V\": connect failed: %s",
                          &rc->addr->name, ac->errstr);
        }

        ngx_http_lifecycle_redis_down();
        return;
    }

    if (rc->quiet) {
        ngx_log_error(NGX_LOG_NOTICE, rc->log, 0,
                      "lifecycle: redis \"%V\": connected again",
                      &rc->addr->name);
    }

    rc->connected = 1;
    rc->quiet = 0;
    rc->backoff = NGX_HTTP_LIFECYCLE_BACKOFF_MIN;

    ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_REDIS_CONNECTED);
}


static void
ngx_http_lifecycle_redis_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_http_lifecycle_redis_t  *rc = &ngx_http_lifecycle_redis_worker;

    if (status != REDIS_OK && !rc->exiting
        && ngx_http_lifecycle_redis_log_now())
    {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "lifecycle: redis \"%V\": connection lost: %s",
                      &rc->addr->name, ac->errstr);
    }

    ngx_http_lifecycle_redis_down();
}


static void
ngx_http_lifecycle_redis_setup_reply(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    ngx_http_lifecycle_redis_t  *rc = &ngx_http_lifecycle_redis_worker;

    redisReply  *rr = reply;

    if (rr == NULL || rr->type != REDIS_REPLY_ERROR) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                  "lifecycle: redis \"%V\": %s failed: %*s",
                  &rc->addr->name, (char *) privdata, (size_t) rr->len,
                  rr->str);

    /* wrong password or db: commands would fail, start over later */
    if (!rc->unusable) {
        rc->unusable = 1;
        rc->quiet = 1;
        rc->logged = ngx_current_msec;
        redisAsyncDisconnect(ac);
    }
}


ngx_http_lifecycle_pending_t *
ngx_http_lifecycle_redis_command(ngx_log_t *log,
    ngx_http_lifecycle_reply_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen)
{
    ngx_http_lifecycle_redis_t  *rc = &ngx_http_lifecycle_redis_worker;

    u_char                        *cmd;
    size_t                         len;
    ngx_http_lifecycle_pending_t  *p;

    if (!ngx_http_lifecycle_redis_ready(log)) {
        return NULL;
    }

    if (rc->free) {
        p = (ngx_http_lifecycle_pending_t *) rc->free;
        rc->free = rc->free->next;

    } else {
        p = ngx_alloc(ngx_max(sizeof(ngx_http_lifecycle_pending_t),
                              sizeof(ngx_http_lifecycle_free_t)),
                      log);
        if (p == NULL) {
            return NULL;
        }
    }

    p->handler = handler;
    p->data = data;
    p->sent_us = ngx_http_lifecycle_now_us();

    cmd = ngx_http_lifecycle_redis_format(log, argc, argv, argvlen, &len);

    if (cmd == NULL
        || redisAsyncFormattedCommand(rc->ac, ngx_http_lifecycle_redis_reply,
                                      p, (char *) cmd, len)
           != REDIS_OK)
    {
        ((ngx_http_lifecycle_free_t *) p)->next = rc->free;
        rc->free = (ngx_http_lifecycle_free_t *) p;

        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_REDIS_ERRORS);
        return NULL;
    }

    if (rc->outstanding++ == 0) {
        rc->progress = ngx_current_msec;
    }

    if (++rc->batched >= NGX_HTTP_LIFECYCLE_BATCH) {
        ngx_http_lifecycle_redis_flush();
    }

    return p;
}


/* counted as a failed request when not: a command would not be sent */

ngx_uint_t
ngx_http_lifecycle_redis_ready(ngx_log_t *log)
{
    ngx_http_lifecycle_redis_t  *rc = &ngx_http_lifecycle_redis_worker;

    if (rc->ac == NULL || rc->unusable
        || rc->outstanding >= NGX_HTTP_LIFECYCLE_MAX_OUTSTANDING)
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                       "lifecycle: redis not available");

        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_REDIS_ERRORS);
        return 0;
    }

    return 1;
}


/* what is queued leaves now, not at the end of the turn */

void
ngx_http_lifecycle_redis_flush(void)
{
    ngx_http_lifecycle_redis_t  *rc = &ngx_http_lifecycle_redis_worker;

    if (rc->flush.posted) {
        ngx_delete_posted_event(&rc->flush);
        ngx_http_lifecycle_redis_flush_handler(&rc->flush);
    }
}


/*
 * The command in the protocol's own form, made in one buffer kept by the
 * worker: hiredis' formatter builds it piece by piece in the heap.
 */

static u_char *
ngx_http_lifecycle_redis_format(ngx_log_t *log, int argc, const char **argv,
    const size_t *argvlen, size_t *len)
{
    u_char         *p;
    size_t          size;
    ngx_int_t       i;
    static u_char  *buf;
    static size_t   room;

    size = sizeof("*\r\n") - 1 + NGX_INT_T_LEN;

    for (i = 0; i < argc; i++) {
        size += sizeof("$\r\n\r\n") - 1 + NGX_SIZE_T_LEN + argvlen[i];
    }

    if (size > room) {
        ngx_free(buf);

        room = ngx_max(size, 4096);
        buf = ngx_alloc(room, log);

        if (buf == NULL) {
            room = 0;
            return NULL;
        }
    }

    p = ngx_sprintf(buf, "*%d\r\n", argc);

    for (i = 0; i < argc; i++) {
        p = ngx_sprintf(p, "$%uz\r\n", argvlen[i]);
        p = ngx_cpymem(p, argv[i], argvlen[i]);
        *p++ = CR;
        *p++ = LF;
    }

    *len = p - buf;

    return buf;
}


/*
 * Once a request has waited its whole budget, Redis is known to be behind:
 * until the next reply arrives, requests send their command but do not
 * wait for it, so a hung Redis costs one budget, not one per request.
 */

void
ngx_http_lifecycle_redis_timed_out(void)
{
    ngx_http_lifecycle_redis_worker.behind = 1;
}


ngx_uint_t
ngx_http_lifecycle_redis_behind(void)
{
    return ngx_http_lifecycle_redis_worker.behind;
}


static void
ngx_http_lifecycle_redis_reply(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    ngx_http_lifecycle_redis_t    *rc = &ngx_http_lifecycle_redis_worker;
    ngx_http_lifecycle_pending_t  *p = privdata;

    if (rc->outstanding) {
        rc->outstanding--;
    }

    rc->progress = ngx_current_msec;
    rc->behind = 0;

    if (reply == NULL) {
        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_REDIS_ERRORS);

    } else {
        ngx_http_lifecycle_stat_rtt(p->sent_us);
    }

    if (p->data) {
        p->handler(p->data, reply);
    }

    ((ngx_http_lifecycle_free_t *) p)->next = rc->free;
    rc->free = (ngx_http_lifecycle_free_t *) p;
}


static void
ngx_http_lifecycle_redis_reconnect_handler(ngx_event_t *ev)
{
    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_REDIS_RECONNECTS);

    ngx_http_lifecycle_redis_connect();
}


static void
ngx_http_lifecycle_redis_watchdog_handler(ngx_event_t *ev)
{
    ngx_http_lifecycle_redis_t  *rc = ev->data;

    if (rc->ac == NULL) {
        return;
    }

    if (!rc->connected) {
        if (ngx_current_msec - rc->connect_start
            >= NGX_HTTP_LIFECYCLE_CONNECT_TIMEOUT)
        {
            ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_REDIS_TIMEOUTS);
            ngx_http_lifecycle_redis_drop("connect timed out");
            return;
        }

    } else if (rc->outstanding
               && ngx_current_msec - rc->progress
                  >= NGX_HTTP_LIFECYCLE_HUNG_AFTER)
    {
        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_REDIS_TIMEOUTS);
        ngx_http_lifecycle_redis_drop("no reply for 1s");
        return;
    }

    ngx_add_timer(ev, NGX_HTTP_LIFECYCLE_WATCHDOG_PERIOD);
}


static void
ngx_http_lifecycle_redis_read_handler(ngx_event_t *ev)
{
    ngx_http_lifecycle_redis_t  *rc = &ngx_http_lifecycle_redis_worker;

    if (rc->ac) {
        redisAsyncHandleRead(rc->ac);
    }
}


static void
ngx_http_lifecycle_redis_write_handler(ngx_event_t *ev)
{
    ngx_http_lifecycle_redis_t  *rc = &ngx_http_lifecycle_redis_worker;

    if (rc->ac) {
        redisAsyncHandleWrite(rc->ac);
    }
}


/*
 * Level-triggered: hiredis reads at most 16 KiB a call, so with edge
 * triggering a burst of pipelined replies could wait for the next packet.
 */

static void
ngx_http_lifecycle_redis_add_read(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (!c->read->active) {
        ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_lifecycle_redis_del_read(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}


/*
 * Commands queued while the event loop turns leave in one write at the
 * end of the turn (a posted event), without registering the socket for
 * writing: that happens only when the socket is full, or for a connect.
 * The write goes first among the posted events, before the requests
 * woken by replies finish: Redis works on the new commands meanwhile,
 * instead of waiting for the pages of the previous ones to be sent.
 */

static void
ngx_http_lifecycle_redis_add_write(void *privdata)
{
    ngx_connection_t            *c = privdata;
    ngx_http_lifecycle_redis_t  *rc = &ngx_http_lifecycle_redis_worker;

    if (rc->connected && !rc->flushing) {
        if (!rc->flush.posted) {
            rc->flush.posted = 1;
            ngx_queue_insert_head(&ngx_posted_events, &rc->flush.queue);
        }

        return;
    }

    if (!c->write->active) {
        ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_lifecycle_redis_flush_handler(ngx_event_t *ev)
{
    ngx_http_lifecycle_redis_t  *rc = ev->data;

    rc->batched = 0;

    if (rc->ac) {
        rc->flushing = 1;
        redisAsyncHandleWrite(rc->ac);
        rc->flushing = 0;
    }
}


static void
ngx_http_lifecycle_redis_del_write(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


/* hiredis is about to close the socket: forget it, never close it twice */

static void
ngx_http_lifecycle_redis_cleanup(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    if (ngx_http_lifecycle_redis_worker.flush.posted) {
        ngx_delete_posted_event(&ngx_http_lifecycle_redis_worker.flush);
    }

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;
}


static void *
ngx_http_lifecycle_arena_alloc(size_t size)
{
    size_t                       room;
    ngx_http_lifecycle_chunk_t  *c;

    size = ngx_align(size, sizeof(void *));
    c = ngx_http_lifecycle_arena;

    if (c == NULL || (size_t) (c->end - c->pos) < size) {
        room = ngx_max(size, NGX_HTTP_LIFECYCLE_ARENA_SIZE);

        c = ngx_alloc(sizeof(ngx_http_lifecycle_chunk_t) + room,
                      ngx_cycle->log);
        if (c == NULL) {
            return NULL;
        }

        c->pos = (u_char *) (c + 1);
        c->end = c->pos + room;
        c->next = ngx_http_lifecycle_arena;
        ngx_http_lifecycle_arena = c;
    }

    c->pos += size;

    return c->pos - size;
}


static redisReply *
ngx_http_lifecycle_reply_object(const redisReadTask *task, int type)
{
    redisReply  *r, *parent;

    r = ngx_http_lifecycle_arena_alloc(sizeof(redisReply));
    if (r == NULL) {
        return NULL;
    }

    ngx_memzero(r, sizeof(redisReply));
    r->type = type;

    if (task->parent) {
        parent = task->parent->obj;
        parent->element[task->idx] = r;
    }

    return r;
}


/* strings, status and error replies */

static void *
ngx_http_lifecycle_reply_string(const redisReadTask *task, char *str,
    size_t len)
{
    redisReply  *r;

    r = ngx_http_lifecycle_reply_object(task, task->type);
    if (r == NULL) {
        return NULL;
    }

    r->str = ngx_http_lifecycle_arena_alloc(len + 1);
    if (r->str == NULL) {
        return NULL;
    }

    ngx_memcpy(r->str, str, len);
    r->str[len] = '\0';
    r->len = len;

    return r;
}


static void *
ngx_http_lifecycle_reply_array(const redisReadTask *task, int elements)
{
    redisReply  *r;

    r = ngx_http_lifecycle_reply_object(task, REDIS_REPLY_ARRAY);
    if (r == NULL) {
        return NULL;
    }

    if (elements > 0) {
        r->element = ngx_http_lifecycle_arena_alloc(elements
                                                    * sizeof(redisReply *));
        if (r->element == NULL) {
            return NULL;
        }

        ngx_memzero(r->element, elements * sizeof(redisReply *));
    }

    r->elements = elements;

    return r;
}


static void *
ngx_http_lifecycle_reply_integer(const redisReadTask *task, long long value)
{
    redisReply  *r;

    r = ngx_http_lifecycle_reply_object(task, REDIS_REPLY_INTEGER);
    if (r == NULL) {
        return NULL;
    }

    r->integer = value;

    return r;
}


static void *
ngx_http_lifecycle_reply_nil(const redisReadTask *task)
{
    return ngx_http_lifecycle_reply_object(task, REDIS_REPLY_NIL);
}


/* the reply is done with: the arena is empty again, its first chunk kept */

static void
ngx_http_lifecycle_reply_free(void *reply)
{
    ngx_http_lifecycle_chunk_t  *c;

    c = ngx_http_lifecycle_arena;

    if (c == NULL) {
        return;
    }

    while (c->next) {
        ngx_http_lifecycle_arena = c->next;
        ngx_free(c);
        c = ngx_http_lifecycle_arena;
    }

    c->pos = (u_char *) (c + 1);
}
