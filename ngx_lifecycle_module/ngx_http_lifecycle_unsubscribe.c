
/*
 * lifecycle: "lifecycle_unsubscribe", the endpoint of the signed links
 * lifecycle-agent puts in e-mails: ?t=PID.SIG (lifecycle_identity.h).
 * A click (GET) and a mail client's one-click unsubscription (RFC 8058:
 * POST, "List-Unsubscribe=One-Click") both unsubscribe: one script call
 * marks the person, if there is one, and tells the agent. The answer
 * says nothing about whether the person exists.
 */


#include "ngx_http_lifecycle_module.h"
#include "lifecycle_identity.h"


#define NGX_HTTP_LIFECYCLE_STR(x)    NGX_HTTP_LIFECYCLE_STR2(x)
#define NGX_HTTP_LIFECYCLE_STR2(x)   #x


#define NGX_HTTP_LIFECYCLE_PAGE(title, text)                                 \
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"       \
    "<meta name=\"robots\" content=\"noindex\">"                              \
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"\
    "<title>" title "</title></head>\n<body><h1>" title "</h1>\n"             \
    "<p>" text "</p></body></html>\n"


static ngx_str_t  ngx_http_lifecycle_unsubscribed_page = ngx_string(
    NGX_HTTP_LIFECYCLE_PAGE("You are unsubscribed",
        "You will not get these e-mails any more."));

static ngx_str_t  ngx_http_lifecycle_invalid_page = ngx_string(
    NGX_HTTP_LIFECYCLE_PAGE("This link does not work",
        "It may have been cut short. Please use the whole link from the "
        "e-mail, or the one in a more recent e-mail."));

static ngx_str_t  ngx_http_lifecycle_failed_page = ngx_string(
    NGX_HTTP_LIFECYCLE_PAGE("Please try again",
        "We could not record your request just now. Please try again in a "
        "few minutes."));


ngx_str_t  ngx_http_lifecycle_unsubscribe_results[] = {
    ngx_string("done"),
    ngx_string("unknown"),
    ngx_string("invalid"),
    ngx_string("failed")
};


/*
 * KEYS[1] the person "lc:{hh}:P:PID", KEYS[2] the stream "lc:{hh}:ev"
 * of the same shard; ARGV: now(ms) PID.
 * Answer: 1 unsubscribed now, 2 already unsubscribed, 0 no such person.
 * The first time is kept; nothing is created for an unknown person.
 */
static ngx_str_t  ngx_http_lifecycle_unsubscribe_script = ngx_string(
"if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
"if redis.call('HSETNX', KEYS[1], 'unsub', ARGV[1]) == 0 then\n"
"  return 2\n"
"end\n"
"redis.call('XADD', KEYS[2], 'MAXLEN', '~', "
            NGX_HTTP_LIFECYCLE_STR(LC_STREAM_MAXLEN) ", '*',\n"
"           'type', 'unsubscribe', 'pid', ARGV[2])\n"
"return 1\n");

static u_char  ngx_http_lifecycle_unsubscribe_sha[40];


enum {
    NGX_HTTP_LIFECYCLE_UARG_NKEYS = 2,
    NGX_HTTP_LIFECYCLE_UARG_PERSON,
    NGX_HTTP_LIFECYCLE_UARG_EVENTS,
    NGX_HTTP_LIFECYCLE_UARG_NOW,
    NGX_HTTP_LIFECYCLE_UARG_PID,
    NGX_HTTP_LIFECYCLE_UARG_END
};


static ngx_int_t ngx_http_lifecycle_unsubscribe_handler(
    ngx_http_request_t *r);
static void ngx_http_lifecycle_unsubscribe_done(
    ngx_http_lifecycle_call_t *call);
static ngx_int_t ngx_http_lifecycle_unsubscribe_send(ngx_http_request_t *r,
    ngx_uint_t result);


char *
ngx_http_lifecycle_unsubscribe(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_lifecycle_loc_conf_t  *llcf = conf;

    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_lifecycle_endpoint_t  *ep;

    if (llcf->needs_redis) {
        return "is duplicate";
    }

    ep = ngx_pcalloc(cf->pool, sizeof(ngx_http_lifecycle_endpoint_t));
    if (ep == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_lifecycle_redis_script(cf,
                                        &ngx_http_lifecycle_unsubscribe_script,
                                        ngx_http_lifecycle_unsubscribe_sha)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    ep->directive = "lifecycle_unsubscribe";
    ep->conf_file = cf->conf_file->file.name.data;
    ep->conf_line = cf->conf_file->line;

    llcf->needs_redis = ep;
    llcf->endpoint = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_lifecycle_unsubscribe_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_lifecycle_unsubscribe_handler(ngx_http_request_t *r)
{
    u_char                          *p, *src, *token;
    size_t                           len;
    ngx_int_t                        rc;
    ngx_str_t                        arg;
    ngx_msec_t                       now;
    ngx_time_t                      *tp;
    ngx_http_lifecycle_call_t       *call;
    ngx_http_lifecycle_loc_conf_t   *llcf;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST))) {
        return ngx_http_lifecycle_not_allowed(r, "GET, HEAD, POST");
    }

    /* a one-click POST says "List-Unsubscribe=One-Click": the URL is all */

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

    if (ngx_http_arg(r, (u_char *) "t", 1, &arg) != NGX_OK
        || arg.len > 3 * LC_TOKEN_LEN)
    {
        goto invalid;
    }

    /* the token is plain ASCII; a mail client may still escape the dot */

    token = ngx_pnalloc(r->pool, arg.len);
    if (token == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = token;
    src = arg.data;
    ngx_unescape_uri(&p, &src, arg.len, 0);
    len = p - token;

    if (!lc_unsubscribe_verify(lmcf->secret.data, lmcf->secret.len, token,
                               len))
    {
        goto invalid;
    }

    /* a link checker's HEAD must not unsubscribe anyone */

    if (r->method == NGX_HTTP_HEAD) {
        return ngx_http_lifecycle_unsubscribe_send(r,
                                          NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_DONE);
    }

    call = ngx_http_lifecycle_call_create(r,
                                        &ngx_http_lifecycle_unsubscribe_script,
                                        ngx_http_lifecycle_unsubscribe_sha,
                                        NGX_HTTP_LIFECYCLE_UARG_END - 2);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    call->handler = ngx_http_lifecycle_unsubscribe_done;

    /* "lc:{hh}:P:PID", "lc:{hh}:ev" and the time, in one buffer */

    p = ngx_pnalloc(r->pool, 2 * LC_PREFIX_LEN + sizeof(LC_KEY_PERSON) - 1
                             + LC_PERSON_ID_LEN + sizeof(LC_KEY_EVENTS) - 1
                             + NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    call->argv[NGX_HTTP_LIFECYCLE_UARG_NKEYS] = "2";
    call->argvlen[NGX_HTTP_LIFECYCLE_UARG_NKEYS] = 1;

    call->argv[NGX_HTTP_LIFECYCLE_UARG_PERSON] = (const char *) p;
    p = lc_shard_prefix(p, lc_shard(token));
    p = ngx_cpymem(p, LC_KEY_PERSON, sizeof(LC_KEY_PERSON) - 1);
    p = ngx_cpymem(p, token, LC_PERSON_ID_LEN);
    call->argvlen[NGX_HTTP_LIFECYCLE_UARG_PERSON] =
                     p - (u_char *) call->argv[NGX_HTTP_LIFECYCLE_UARG_PERSON];

    call->argv[NGX_HTTP_LIFECYCLE_UARG_EVENTS] = (const char *) p;
    p = lc_shard_prefix(p, lc_shard(token));
    p = ngx_cpymem(p, LC_KEY_EVENTS, sizeof(LC_KEY_EVENTS) - 1);
    call->argvlen[NGX_HTTP_LIFECYCLE_UARG_EVENTS] =
                     p - (u_char *) call->argv[NGX_HTTP_LIFECYCLE_UARG_EVENTS];

    tp = ngx_timeofday();
    now = (ngx_msec_t) tp->sec * 1000 + tp->msec;

    call->argv[NGX_HTTP_LIFECYCLE_UARG_NOW] = (const char *) p;
    p = ngx_sprintf(p, "%M", now);
    call->argvlen[NGX_HTTP_LIFECYCLE_UARG_NOW] =
                        p - (u_char *) call->argv[NGX_HTTP_LIFECYCLE_UARG_NOW];

    call->argv[NGX_HTTP_LIFECYCLE_UARG_PID] = (const char *) token;
    call->argvlen[NGX_HTTP_LIFECYCLE_UARG_PID] = LC_PERSON_ID_LEN;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_lifecycle_module);

    if (ngx_http_lifecycle_call(call, llcf->timeout) != NGX_AGAIN) {
        return ngx_http_lifecycle_unsubscribe_send(r,
                                        NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_FAILED);
    }

    r->main->count++;

    return NGX_DONE;

invalid:

    return ngx_http_lifecycle_unsubscribe_send(r,
                                       NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_INVALID);
}


static void
ngx_http_lifecycle_unsubscribe_done(ngx_http_lifecycle_call_t *call)
{
    ngx_uint_t  result;

    if (call->outcome != NGX_HTTP_LIFECYCLE_CALL_REPLY) {
        result = NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_FAILED;

    } else if (call->result[0] == 0) {
        result = NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_UNKNOWN;

    } else {
        result = NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_DONE;
    }

    ngx_http_finalize_request(call->request,
                   ngx_http_lifecycle_unsubscribe_send(call->request, result));
}


/*
 * 200 for a valid token, whether its person exists or not; 400 for any
 * other, with no word on what is wrong with it; 503 when it could not
 * be recorded (never "unsubscribed" unless it is).
 */

static ngx_int_t
ngx_http_lifecycle_unsubscribe_send(ngx_http_request_t *r, ngx_uint_t result)
{
    ngx_str_t   *page;
    ngx_uint_t   status;

    if (r->method != NGX_HTTP_HEAD) {
        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_UNSUBSCRIBE
                                    + result);
    }

    switch (result) {

    case NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_INVALID:
        status = NGX_HTTP_BAD_REQUEST;
        page = &ngx_http_lifecycle_invalid_page;
        break;

    case NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_FAILED:
        status = NGX_HTTP_SERVICE_UNAVAILABLE;
        page = &ngx_http_lifecycle_failed_page;
        break;

    default:
        status = NGX_HTTP_OK;
        page = &ngx_http_lifecycle_unsubscribed_page;
    }

    /* the token is in the URL: it goes nowhere else */

    if (ngx_http_lifecycle_add_header(r, "Cache-Control",
                                      (u_char *) "no-store",
                                      sizeof("no-store") - 1)
        == NULL
        || ngx_http_lifecycle_add_header(r, "Referrer-Policy",
                                         (u_char *) "no-referrer",
                                         sizeof("no-referrer") - 1)
           == NULL
        || (result == NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_FAILED
            && ngx_http_lifecycle_add_header(r, "Retry-After",
                                             (u_char *) "60", 2)
               == NULL))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&r->headers_out.charset, "utf-8");

    return ngx_http_lifecycle_send(r, status, "text/html", page->data,
                                   page->len);
}
