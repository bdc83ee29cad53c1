
/*
 * lifecycle: one script call of a content handler (lifecycle_collect,
 * lifecycle_unsubscribe). EVALSHA of a script that the connection loaded
 * (ngx_http_lifecycle_redis_script), EVAL of its text once on NOSCRIPT,
 * and an end within the location's lifecycle_timeout whatever Redis
 * does: the handler is called exactly once, from an event, with what
 * came of it. The request is never the privdata of a command: a pool
 * cleanup detaches a call whose request goes away.
 */


#include "ngx_http_lifecycle_module.h"

#include <hiredis/hiredis.h>


static ngx_int_t ngx_http_lifecycle_call_send(ngx_http_lifecycle_call_t *call);
static void ngx_http_lifecycle_call_reply(void *data, void *reply);
static void ngx_http_lifecycle_call_wake(ngx_event_t *ev);
static void ngx_http_lifecycle_call_cleanup(void *data);


/*
 * nargs: what follows "EVALSHA sha", i.e. numkeys, the keys and the
 * arguments; the caller fills argv[2] on.
 */

ngx_http_lifecycle_call_t *
ngx_http_lifecycle_call_create(ngx_http_request_t *r, ngx_str_t *script,
    u_char *sha, int nargs)
{
    ngx_pool_cleanup_t         *cln;
    ngx_http_lifecycle_call_t  *call;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_lifecycle_call_t));
    if (cln == NULL) {
        return NULL;
    }

    call = cln->data;
    ngx_memzero(call, sizeof(ngx_http_lifecycle_call_t));

    call->request = r;
    call->script = script;
    call->sha = sha;
    call->argc = nargs + 2;

    call->argv = ngx_pcalloc(r->pool, call->argc
                                      * (sizeof(char *) + sizeof(size_t)));
    if (call->argv == NULL) {
        return NULL;
    }

    call->argvlen = (size_t *) (call->argv + call->argc);

    call->argv[0] = "EVALSHA";
    call->argvlen[0] = sizeof("EVALSHA") - 1;
    call->argv[1] = (const char *) sha;
    call->argvlen[1] = 40;

    call->wake.handler = ngx_http_lifecycle_call_wake;
    call->wake.data = call;
    call->wake.log = r->connection->log;

    cln->handler = ngx_http_lifecycle_call_cleanup;

    return call;
}


/*
 * NGX_AGAIN: sent, the handler will be called; NGX_DECLINED: Redis is
 * not there (or known to be behind: the command went out, nobody waits
 * for it), the handler will not be called.
 */

ngx_int_t
ngx_http_lifecycle_call(ngx_http_lifecycle_call_t *call, ngx_msec_t timeout)
{
    if (ngx_http_lifecycle_call_send(call) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (ngx_http_lifecycle_redis_behind()) {
        call->pending->data = NULL;
        call->pending = NULL;
        return NGX_DECLINED;
    }

    call->waiting = 1;
    ngx_add_timer(&call->wake, timeout);

    return NGX_AGAIN;
}


static ngx_int_t
ngx_http_lifecycle_call_send(ngx_http_lifecycle_call_t *call)
{
    call->pending = ngx_http_lifecycle_redis_command(
                                   call->request->connection->log,
                                   ngx_http_lifecycle_call_reply, call,
                                   call->argc, call->argv, call->argvlen);

    if (call->pending == NULL) {
        return NGX_DECLINED;
    }

    ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_REDIS_ROUNDTRIPS);

    return NGX_OK;
}


static void
ngx_http_lifecycle_call_reply(void *data, void *reply)
{
    ngx_http_lifecycle_call_t  *call = data;

    size_t       i;
    redisReply  *rr = reply, *e;

    call->pending = NULL;
    call->outcome = NGX_HTTP_LIFECYCLE_CALL_FAILED;

    if (rr == NULL) {
        goto done;
    }

    if (rr->type == REDIS_REPLY_ERROR) {

        /* Redis restarted or SCRIPT FLUSH: EVAL sends and caches it */
        if (!call->retried && rr->len >= 8
            && ngx_strncmp(rr->str, "NOSCRIPT", 8) == 0)
        {
            call->retried = 1;
            call->argv[0] = "EVAL";
            call->argvlen[0] = sizeof("EVAL") - 1;
            call->argv[1] = (const char *) call->script->data;
            call->argvlen[1] = call->script->len;

            if (ngx_http_lifecycle_call_send(call) == NGX_OK) {
                return;
            }

            goto done;
        }

        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_REDIS_ERRORS);

        ngx_log_error(NGX_LOG_ERR, call->request->connection->log, 0,
                      "lifecycle: script failed: %*s",
                      (size_t) rr->len, rr->str);
        goto done;
    }

    if (rr->type == REDIS_REPLY_INTEGER) {
        call->result[0] = rr->integer;
        call->outcome = NGX_HTTP_LIFECYCLE_CALL_REPLY;
        goto done;
    }

    if (rr->type == REDIS_REPLY_ARRAY && rr->elements >= 1) {

        for (i = 0; i < rr->elements && i < 2; i++) {
            e = rr->element[i];

            if (e->type != REDIS_REPLY_INTEGER) {
                break;
            }

            call->result[i] = e->integer;
        }

        if (i == rr->elements || i == 2) {
            call->outcome = NGX_HTTP_LIFECYCLE_CALL_REPLY;
            goto done;
        }
    }

    ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_REDIS_ERRORS);

    ngx_log_error(NGX_LOG_ERR, call->request->connection->log, 0,
                  "lifecycle: unexpected reply from a script");

done:

    if (!call->waiting) {
        return;
    }

    if (call->wake.timer_set) {
        ngx_del_timer(&call->wake);
    }

    ngx_post_event(&call->wake, &ngx_posted_events);
}


static void
ngx_http_lifecycle_call_wake(ngx_event_t *ev)
{
    ngx_http_lifecycle_call_t  *call = ev->data;

    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = call->request;
    c = r->connection;

    if (ev->timedout) {
        ev->timedout = 0;

        if (call->pending) {
            call->pending->data = NULL;
            call->pending = NULL;
        }

        call->outcome = NGX_HTTP_LIFECYCLE_CALL_TIMEDOUT;

        /* the next requests send without waiting until Redis answers */
        ngx_http_lifecycle_redis_timed_out();

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "lifecycle: script call timed out");
    }

    if (!call->waiting) {
        return;
    }

    call->waiting = 0;

    ngx_http_set_log_request(c->log, r);

    call->handler(call);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_lifecycle_call_cleanup(void *data)
{
    ngx_http_lifecycle_call_t  *call = data;

    if (call->pending) {
        call->pending->data = NULL;
        call->pending = NULL;
    }

    if (call->wake.timer_set) {
        ngx_del_timer(&call->wake);
    }

    if (call->wake.posted) {
        ngx_delete_posted_event(&call->wake);
    }
}
