
/*
 * lifecycle: directives, configuration, the request's entry point
 * (precontent phase) and the variables.
 */


#include "ngx_http_lifecycle_module.h"

#include <hiredis/hiredis.h>


static ngx_int_t ngx_http_lifecycle_handler(ngx_http_request_t *r);
static void ngx_http_lifecycle_wake_handler(ngx_event_t *ev);
static void ngx_http_lifecycle_cleanup(void *data);
static ngx_int_t ngx_http_lifecycle_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static char *ngx_http_lifecycle_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_lifecycle_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_lifecycle_cookie(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

static ngx_int_t ngx_http_lifecycle_add_variables(ngx_conf_t *cf);
#if (NGX_PCRE2)
static void ngx_http_lifecycle_regex_free(void *data);
#endif
static ngx_int_t ngx_http_lifecycle_init(ngx_conf_t *cf);
static void *ngx_http_lifecycle_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_lifecycle_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_lifecycle_create_srv_conf(ngx_conf_t *cf);
static char *ngx_http_lifecycle_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child);
static void *ngx_http_lifecycle_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_lifecycle_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_lifecycle_init_process(ngx_cycle_t *cycle);
static void ngx_http_lifecycle_exit_process(ngx_cycle_t *cycle);


#define NGX_HTTP_LIFECYCLE_VAR_VISITOR   0
#define NGX_HTTP_LIFECYCLE_VAR_SESSION   1
#define NGX_HTTP_LIFECYCLE_VAR_STAGE     2
#define NGX_HTTP_LIFECYCLE_VAR_SEGMENTS  3
#define NGX_HTTP_LIFECYCLE_VAR_GROUP     4


static ngx_command_t  ngx_http_lifecycle_commands[] = {

    { ngx_string("lifecycle"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_lifecycle_loc_conf_t, enable),
      NULL },

    { ngx_string("lifecycle_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE123,
      ngx_http_lifecycle_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_lifecycle_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_lifecycle_loc_conf_t, timeout),
      NULL },

    { ngx_string("lifecycle_session_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_lifecycle_srv_conf_t, session_timeout),
      NULL },

    { ngx_string("lifecycle_cookie"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE123,
      ngx_http_lifecycle_cookie,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_retention"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_lifecycle_main_conf_t, retention),
      NULL },

    { ngx_string("lifecycle_page_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_lifecycle_page_cache,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_consent"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_lifecycle_loc_conf_t, consent),
      NULL },

    { ngx_string("lifecycle_respect_dnt"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_lifecycle_srv_conf_t, respect_dnt),
      NULL },

    { ngx_string("lifecycle_respect_gpc"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_lifecycle_srv_conf_t, respect_gpc),
      NULL },

    { ngx_string("lifecycle_bots"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_lifecycle_bots,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_view"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_lifecycle_view,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_segment"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_2MORE,
      ngx_http_lifecycle_segment,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_stages"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_1MORE,
      ngx_http_lifecycle_stages_thresholds,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_holdout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_http_lifecycle_holdout,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_block"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE3,
      ngx_http_lifecycle_block,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_popup"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_lifecycle_popup,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_script_url"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_lifecycle_script_url,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_lifecycle_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_script"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_lifecycle_script_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_collect"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE12,
      ngx_http_lifecycle_collect,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_unsubscribe"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_lifecycle_unsubscribe,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_geoip2"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_lifecycle_geoip2,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("lifecycle_catalog"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_lifecycle_catalog,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_lifecycle_module_ctx = {
    ngx_http_lifecycle_add_variables,      /* preconfiguration */
    ngx_http_lifecycle_init,               /* postconfiguration */

    ngx_http_lifecycle_create_main_conf,   /* create main configuration */
    ngx_http_lifecycle_init_main_conf,     /* init main configuration */

    ngx_http_lifecycle_create_srv_conf,    /* create server configuration */
    ngx_http_lifecycle_merge_srv_conf,     /* merge server configuration */

    ngx_http_lifecycle_create_loc_conf,    /* create location configuration */
    ngx_http_lifecycle_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_lifecycle_module = {
    NGX_MODULE_V1,
    &ngx_http_lifecycle_module_ctx,        /* module context */
    ngx_http_lifecycle_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_lifecycle_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_lifecycle_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_lifecycle_vars[] = {

    { ngx_string("lifecycle_visitor"), NULL, ngx_http_lifecycle_variable,
      NGX_HTTP_LIFECYCLE_VAR_VISITOR, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("lifecycle_session"), NULL, ngx_http_lifecycle_variable,
      NGX_HTTP_LIFECYCLE_VAR_SESSION, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("lifecycle_stage"), NULL, ngx_http_lifecycle_variable,
      NGX_HTTP_LIFECYCLE_VAR_STAGE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("lifecycle_segments"), NULL, ngx_http_lifecycle_variable,
      NGX_HTTP_LIFECYCLE_VAR_SEGMENTS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("lifecycle_group"), NULL, ngx_http_lifecycle_variable,
      NGX_HTTP_LIFECYCLE_VAR_GROUP, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("lifecycle_country"), NULL, ngx_http_lifecycle_geo_variable,
      NGX_HTTP_LIFECYCLE_GEO_COUNTRY, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("lifecycle_city"), NULL, ngx_http_lifecycle_geo_variable,
      NGX_HTTP_LIFECYCLE_GEO_CITY, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_lifecycle_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_pool_cleanup_t              *cln;
    ngx_http_lifecycle_ctx_t        *ctx;
    ngx_http_lifecycle_skip_e        skip;
    ngx_http_lifecycle_loc_conf_t   *llcf;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_lifecycle_module);

    ctx = ngx_http_lifecycle_get_ctx(r);

    if (ctx) {
        /* resumed, woken by an unrelated event, or internally redirected */
        if (ctx->waiting) {
            return NGX_AGAIN;
        }

        if (ctx->profile
            && ngx_http_lifecycle_unconditional(r, ctx) != NGX_OK)
        {
            return NGX_ERROR;
        }

        return NGX_DECLINED;
    }

    if (!llcf->enable || llcf->endpoint) {
        return NGX_DECLINED;
    }

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_lifecycle_ctx_t));
    if (cln == NULL) {
        return NGX_ERROR;
    }

    ctx = cln->data;
    ngx_memzero(ctx, sizeof(ngx_http_lifecycle_ctx_t));
    ctx->request = r;

    cln->handler = ngx_http_lifecycle_cleanup;
    ngx_http_set_ctx(r, ctx, ngx_http_lifecycle_module);

    skip = ngx_http_lifecycle_visitor_skip(r);

    if (skip != NGX_HTTP_LIFECYCLE_TRACK) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "lifecycle: not tracked: %V",
                       &ngx_http_lifecycle_skip_reasons[skip]);

        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_SKIPPED + skip);
        return NGX_DECLINED;
    }

    if (ngx_http_lifecycle_visitor_identify(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->tracked = 1;
    ctx->group = ngx_http_lifecycle_group(r, ctx);
    ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_TRACKED);

    if (ngx_http_lifecycle_view_match(r, llcf, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

    if (lmcf->geoip2) {
        if (ngx_http_lifecycle_geo_lookup(r, &ctx->country, &ctx->city)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ctx->geo_done = 1;
    }

    rc = ngx_http_lifecycle_profile_request(r, ctx);

    if (rc != NGX_AGAIN) {
        return NGX_DECLINED;
    }

    ctx->waiting = 1;
    ctx->wake.handler = ngx_http_lifecycle_wake_handler;
    ctx->wake.data = ctx;
    ctx->wake.log = r->connection->log;

    ngx_add_timer(&ctx->wake, llcf->timeout);

    return NGX_AGAIN;
}


/* the profile arrived (posted by the reply) or the budget ran out */

static void
ngx_http_lifecycle_wake_handler(ngx_event_t *ev)
{
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_lifecycle_ctx_t  *ctx;

    ctx = ev->data;
    r = ctx->request;
    c = r->connection;

    if (ev->timedout) {
        ev->timedout = 0;

        ngx_http_lifecycle_profile_detach(ctx);

        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_PROFILE_TIMEOUTS);
        ngx_http_lifecycle_redis_timed_out();

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "lifecycle: profile timed out, default content");
    }

    if (!ctx->waiting) {
        return;
    }

    ctx->waiting = 0;

    ngx_http_set_log_request(c->log, r);

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_lifecycle_cleanup(void *data)
{
    ngx_http_lifecycle_ctx_t  *ctx = data;

    ngx_http_lifecycle_profile_detach(ctx);

    if (ctx->wake.timer_set) {
        ngx_del_timer(&ctx->wake);
    }

    if (ctx->wake.posted) {
        ngx_delete_posted_event(&ctx->wake);
    }
}


/*
 * Internal redirects (index, try_files, error_page) clear r->ctx; the
 * context lives on in the pool cleanup, as realip's does, so a request
 * is recorded once.
 */

ngx_http_lifecycle_ctx_t *
ngx_http_lifecycle_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t        *cln;
    ngx_http_lifecycle_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_lifecycle_module);

    if (ctx || !(r->internal || r->filter_finalize)) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_lifecycle_cleanup) {
            ctx = cln->data;

            if (ctx->request != r) {
                return NULL;
            }

            ngx_http_set_ctx(r, ctx, ngx_http_lifecycle_module);
            return ctx;
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_lifecycle_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                         *p;
    size_t                          len;
    ngx_int_t                       stage;
    ngx_uint_t                      i;
    ngx_http_lifecycle_ctx_t       *ctx;
    ngx_http_lifecycle_segment_t   *seg;
    ngx_http_lifecycle_srv_conf_t  *lscf;

    ctx = ngx_http_lifecycle_get_ctx(r->main);

    if (ctx == NULL || !ctx->tracked) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_HTTP_LIFECYCLE_VAR_VISITOR:
        v->data = ctx->vid;
        v->len = LC_VID_LEN;
        break;

    case NGX_HTTP_LIFECYCLE_VAR_SESSION:
        if (ctx->session == 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        p = ngx_pnalloc(r->pool, LC_VID_LEN + 1 + NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_sprintf(p, "%*s-%ui", (size_t) LC_VID_LEN, ctx->vid,
                             ctx->session)
                 - p;
        break;

    case NGX_HTTP_LIFECYCLE_VAR_GROUP:
        v->data = ngx_http_lifecycle_groups[ctx->group].data;
        v->len = ngx_http_lifecycle_groups[ctx->group].len;
        break;

    case NGX_HTTP_LIFECYCLE_VAR_STAGE:
        stage = ngx_http_lifecycle_stage(r, ctx);

        if (stage == NGX_DECLINED) {
            v->not_found = 1;
            return NGX_OK;
        }

        v->data = ngx_http_lifecycle_stages[stage].data;
        v->len = ngx_http_lifecycle_stages[stage].len;
        break;

    default: /* NGX_HTTP_LIFECYCLE_VAR_SEGMENTS: names, space-separated */

        lscf = ngx_http_get_module_srv_conf(r, ngx_http_lifecycle_module);

        if (lscf->segments == NULL || ctx->profile == NULL) {
            v->not_found = 1;
            return NGX_OK;
        }

        seg = lscf->segments->elts;
        len = 0;

        for (i = 0; i < lscf->segments->nelts; i++) {
            len += seg[i].name.len + 1;
        }

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;

        for (i = 0; i < lscf->segments->nelts; i++) {
            if (ngx_http_lifecycle_segment_match(r, ctx, &seg[i])) {
                if (p != v->data) {
                    *p++ = ' ';
                }

                p = ngx_cpymem(p, seg[i].name.data, seg[i].name.len);
            }
        }

        v->len = p - v->data;
        break;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static char *
ngx_http_lifecycle_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_main_conf_t  *lmcf = conf;

    u_char                           *p;
    ngx_str_t                        *value;
    ngx_int_t                         port;
    ngx_uint_t                        i;
    ngx_addr_t                        parsed;
    ngx_http_lifecycle_redis_addr_t  *addr;

    addr = &lmcf->redis;

    if (addr->name.len) {
        return "is duplicate";
    }

    value = cf->args->elts;
    addr->name = value[1];

    if (ngx_strncmp(value[1].data, "unix:", 5) == 0) {
        if (value[1].len == 5) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "no path in redis address \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }

        /* hiredis wants a C string */
        addr->host.len = value[1].len - 5;
        addr->host.data = ngx_pnalloc(cf->pool, addr->host.len + 1);
        if (addr->host.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_cpystrn(addr->host.data, value[1].data + 5, addr->host.len + 1);
        addr->port = 0;

    } else {
        /*
         * IP:port only: a name would need a blocking resolver in the
         * worker at every reconnect
         */

        p = ngx_strlchr(value[1].data, value[1].data + value[1].len, ':');

        if (p == NULL) {
            goto invalid;
        }

        for (i = 0, p = value[1].data + value[1].len - 1;
             p > value[1].data && *p != ':';
             p--, i++)
        {
            /* void */
        }

        port = ngx_atoi(p + 1, i);

        if (port < 1 || port > 65535) {
            goto invalid;
        }

        addr->port = (in_port_t) port;
        addr->host.len = p - value[1].data;
        p = value[1].data;

        if (addr->host.len > 2 && p[0] == '[' && p[addr->host.len - 1] == ']')
        {
            addr->host.len -= 2;
            p++;
        }

        if (ngx_parse_addr(cf->pool, &parsed, p, addr->host.len) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "redis address \"%V\" is not an IP address "
                               "and port, or unix:/path", &value[1]);
            return NGX_CONF_ERROR;
        }

        addr->host.data = ngx_pnalloc(cf->pool, addr->host.len + 1);
        if (addr->host.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_cpystrn(addr->host.data, p, addr->host.len + 1);
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            addr->password.data = value[i].data + 9;
            addr->password.len = value[i].len - 9;

            if (addr->password.len == 0) {
                goto bad_param;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            addr->db = ngx_atoi(value[i].data + 3, value[i].len - 3);

            if (addr->db == NGX_ERROR) {
                goto bad_param;
            }

            continue;
        }

    bad_param:

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid redis address \"%V\": expected IP:port "
                       "or unix:/path", &value[1]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_lifecycle_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_main_conf_t  *lmcf = conf;

    ngx_str_t  *value, name, key;

    if (lmcf->secret.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_lifecycle_read_file(cf, &name, &key) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* a trailing newline from an editor or "echo" is not part of the key */
    while (key.len && (key.data[key.len - 1] == '\n'
                       || key.data[key.len - 1] == '\r'))
    {
        key.len--;
    }

    if (key.len < 32) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "secret in \"%V\" is %uz bytes, at least 32 "
                           "are needed", &name, key.len);
        return NGX_CONF_ERROR;
    }

    lmcf->secret = key;

    if (ngx_http_lifecycle_visitor_init_secret(cf, lmcf) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cannot prepare the key of \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_lifecycle_cookie(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_srv_conf_t  *lscf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i, j;

    if (lscf->cookie_name.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* RFC 6265 token */
    for (j = 0; j < value[1].len; j++) {
        if (value[1].data[j] <= ' ' || value[1].data[j] >= 0x7f
            || ngx_strchr("()<>@,;:\\\"/[]?={}", value[1].data[j]))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid cookie name \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    lscf->cookie_name = value[1];

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "max_age=", 8) == 0) {
            ngx_str_t  s;

            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            lscf->cookie_max_age = ngx_parse_time(&s, 1);

            if (lscf->cookie_max_age == (time_t) NGX_ERROR
                || lscf->cookie_max_age == 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid max_age \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "domain=", 7) == 0) {
            lscf->cookie_domain.data = value[i].data + 7;
            lscf->cookie_domain.len = value[i].len - 7;

            for (j = 0; j < lscf->cookie_domain.len; j++) {
                u_char  ch = lscf->cookie_domain.data[j];

                ch = ngx_tolower(ch);

                if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
                      || ch == '.' || ch == '-'))
                {
                    lscf->cookie_domain.len = 0;
                    break;
                }
            }

            if (lscf->cookie_domain.len) {
                continue;
            }
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* a response header of a content handler's answer */

ngx_table_elt_t *
ngx_http_lifecycle_add_header(ngx_http_request_t *r, char *name,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.data = value;
    h->value.len = len;

    return h;
}


/* a content handler's 405, with the methods it takes ("GET, HEAD") */

ngx_int_t
ngx_http_lifecycle_not_allowed(ngx_http_request_t *r, char *allow)
{
    if (ngx_http_lifecycle_add_header(r, "Allow", (u_char *) allow,
                                      ngx_strlen(allow))
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_HTTP_NOT_ALLOWED;
}


/* a content handler's answer: a body in memory that outlives the request */

ngx_int_t
ngx_http_lifecycle_send(ngx_http_request_t *r, ngx_uint_t status,
    char *type, u_char *data, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = data;
    b->last = data + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_lifecycle_read_file(ngx_conf_t *cf, ngx_str_t *name, ngx_str_t *out)
{
    ssize_t          n;
    ngx_file_t       file;
    ngx_file_info_t  fi;

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = *name;
    file.log = cf->log;

    file.fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", name);
        return NGX_ERROR;
    }

    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", name);
        goto failed;
    }

    out->len = (size_t) ngx_file_size(&fi);
    out->data = ngx_pnalloc(cf->pool, out->len + 1);
    if (out->data == NULL) {
        goto failed;
    }

    n = ngx_read_file(&file, out->data, out->len, 0);

    if (n == NGX_ERROR) {
        goto failed;
    }

    if ((size_t) n != out->len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           ngx_read_file_n " \"%V\" returned only "
                           "%z bytes instead of %uz", name, n, out->len);
        goto failed;
    }

    out->data[out->len] = '\0';

    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                      ngx_close_file_n " \"%V\" failed", name);
    }

    return NGX_OK;

failed:

    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                      ngx_close_file_n " \"%V\" failed", name);
    }

    return NGX_ERROR;
}


/*
 * nginx JIT-compiles regular expressions only under "pcre_jit on", and
 * its allocator refuses JIT memory outside its own compile calls; ours
 * (bots, view rules, segment patterns) run on every tracked request.
 * So the pattern nginx checked and described is compiled once more with
 * PCRE2's own allocator and JIT, and that code is matched instead. With
 * no JIT at hand, nginx's code stays.
 */

ngx_int_t
ngx_http_lifecycle_regex_compile(ngx_conf_t *cf, ngx_regex_compile_t *rc)
{
#if (NGX_PCRE2)
    int                  errcode;
    size_t               erroff;
    uint32_t             options;
    pcre2_code          *code;
    ngx_pool_cleanup_t  *cln;
#endif

    if (ngx_regex_compile(rc) != NGX_OK) {
        return NGX_ERROR;
    }

#if (NGX_PCRE2)

    options = 0;

    if (rc->options & NGX_REGEX_CASELESS) {
        options |= PCRE2_CASELESS;
    }

    if (rc->options & NGX_REGEX_MULTILINE) {
        options |= PCRE2_MULTILINE;
    }

    code = pcre2_compile(rc->pattern.data, rc->pattern.len, options,
                         &errcode, &erroff, NULL);
    if (code == NULL) {
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        pcre2_code_free(code);
        return NGX_ERROR;
    }

    cln->handler = ngx_http_lifecycle_regex_free;
    cln->data = code;

    if (pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0) {
        rc->regex = code;
    }

#endif

    return NGX_OK;
}


#if (NGX_PCRE2)

static void
ngx_http_lifecycle_regex_free(void *data)
{
    pcre2_code_free(data);
}

#endif


/*
 * The profile fields the script sends back: what segments, stages,
 * popups and templates read, collected while the configuration is
 * parsed, so that a reply carries no more than that.
 */

static char  *ngx_http_lifecycle_always_wanted[] = {
    "views", "cart", "purchases", "optin", NULL
};


ngx_int_t
ngx_http_lifecycle_want(ngx_conf_t *cf, ngx_str_t *field)
{
    ngx_str_t                       *f;
    ngx_uint_t                       i;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_lifecycle_module);

    f = lmcf->wanted->elts;

    for (i = 0; i < lmcf->wanted->nelts; i++) {
        if (f[i].len == field->len
            && ngx_strncmp(f[i].data, field->data, field->len) == 0)
        {
            return NGX_OK;
        }
    }

    f = ngx_array_push(lmcf->wanted);
    if (f == NULL) {
        return NGX_ERROR;
    }

    *f = *field;

    return NGX_OK;
}


static ngx_int_t
ngx_http_lifecycle_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_lifecycle_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_lifecycle_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt             *h;
    ngx_http_core_main_conf_t       *cmcf;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_lifecycle_module);

    if (ngx_http_lifecycle_status_init_zone(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_lifecycle_collect_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (!lmcf->used) {
        return NGX_OK;
    }

    if (ngx_http_lifecycle_profile_init(cf, lmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * Precontent: after access checks, before try_files and the content
     * handler; a dynamic module's handler runs first within the phase.
     */

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_lifecycle_handler;

    return NGX_OK;
}


static void *
ngx_http_lifecycle_create_main_conf(ngx_conf_t *cf)
{
    char                            **name;
    ngx_str_t                        *f;
    ngx_http_lifecycle_main_conf_t   *lmcf;

    lmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_lifecycle_main_conf_t));
    if (lmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     lmcf->redis = { 0 };
     *     lmcf->secret = { 0, NULL };
     *     lmcf->used = 0;
     *     lmcf->catalog = NULL;
     */

    lmcf->retention = NGX_CONF_UNSET;
    lmcf->page_cache = NGX_CONF_UNSET_SIZE;
    lmcf->bots = NGX_CONF_UNSET_PTR;

    lmcf->wanted = ngx_array_create(cf->pool, 16, sizeof(ngx_str_t));
    if (lmcf->wanted == NULL) {
        return NULL;
    }

    for (name = ngx_http_lifecycle_always_wanted; *name; name++) {
        f = ngx_array_push(lmcf->wanted);
        if (f == NULL) {
            return NULL;
        }

        f->data = (u_char *) *name;
        f->len = ngx_strlen(*name);
    }

    return lmcf;
}


static char *
ngx_http_lifecycle_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_lifecycle_main_conf_t  *lmcf = conf;

    ngx_conf_init_value(lmcf->retention, 90 * 86400);
    ngx_conf_init_size_value(lmcf->page_cache, 16 * 1024 * 1024);

    if (lmcf->retention < 3600) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"lifecycle_retention\" must be at least 1h");
        return NGX_CONF_ERROR;
    }

    if (lmcf->bots == NGX_CONF_UNSET_PTR) {
        return ngx_http_lifecycle_visitor_init_bots(cf, lmcf);
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_lifecycle_create_srv_conf(ngx_conf_t *cf)
{
    ngx_http_lifecycle_srv_conf_t  *lscf;

    lscf = ngx_pcalloc(cf->pool, sizeof(ngx_http_lifecycle_srv_conf_t));
    if (lscf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     lscf->cookie_name = { 0, NULL };
     *     lscf->cookie_domain = { 0, NULL };
     */

    lscf->session_timeout = NGX_CONF_UNSET_MSEC;
    lscf->segments = NGX_CONF_UNSET_PTR;
    lscf->holdout = NGX_CONF_UNSET_UINT;
    lscf->engaged_views = NGX_CONF_UNSET_UINT;
    lscf->loyal_purchases = NGX_CONF_UNSET_UINT;
    lscf->at_risk = NGX_CONF_UNSET;
    lscf->lapsed = NGX_CONF_UNSET;
    lscf->cookie_max_age = NGX_CONF_UNSET;
    lscf->respect_dnt = NGX_CONF_UNSET;
    lscf->respect_gpc = NGX_CONF_UNSET;

    return lscf;
}


static char *
ngx_http_lifecycle_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_lifecycle_srv_conf_t  *prev = parent;
    ngx_http_lifecycle_srv_conf_t  *conf = child;

    ngx_conf_merge_msec_value(conf->session_timeout, prev->session_timeout,
                              30 * 60 * 1000);

    if (conf->cookie_name.data == NULL) {
        conf->cookie_name = prev->cookie_name;
        conf->cookie_domain = prev->cookie_domain;

        if (conf->cookie_max_age == NGX_CONF_UNSET) {
            conf->cookie_max_age = prev->cookie_max_age;
        }
    }

    if (conf->cookie_name.data == NULL) {
        ngx_str_set(&conf->cookie_name, "lc_vid");
    }
    ngx_conf_merge_sec_value(conf->cookie_max_age, prev->cookie_max_age,
                             365 * 86400);

    ngx_conf_merge_ptr_value(conf->segments, prev->segments, NULL);
    ngx_conf_merge_uint_value(conf->holdout, prev->holdout, 0);
    ngx_conf_merge_uint_value(conf->engaged_views, prev->engaged_views, 5);
    ngx_conf_merge_uint_value(conf->loyal_purchases, prev->loyal_purchases,
                              3);
    ngx_conf_merge_sec_value(conf->at_risk, prev->at_risk, 60 * 86400);
    ngx_conf_merge_sec_value(conf->lapsed, prev->lapsed, 180 * 86400);

    if (conf->lapsed < conf->at_risk) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"lifecycle_stages\": lapsed must not come "
                           "before at_risk");
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_value(conf->respect_dnt, prev->respect_dnt, 1);
    ngx_conf_merge_value(conf->respect_gpc, prev->respect_gpc, 1);

    return NGX_CONF_OK;
}


static void *
ngx_http_lifecycle_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_lifecycle_loc_conf_t  *llcf;

    llcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_lifecycle_loc_conf_t));
    if (llcf == NULL) {
        return NULL;
    }

    llcf->enable = NGX_CONF_UNSET;
    llcf->timeout = NGX_CONF_UNSET_MSEC;
    llcf->consent = NGX_CONF_UNSET_PTR;
    llcf->views = NGX_CONF_UNSET_PTR;
    llcf->blocks = NGX_CONF_UNSET_PTR;
    llcf->popups = NGX_CONF_UNSET_PTR;

    return llcf;
}


static char *
ngx_http_lifecycle_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_lifecycle_loc_conf_t  *prev = parent;
    ngx_http_lifecycle_loc_conf_t  *conf = child;

    ngx_http_lifecycle_main_conf_t  *lmcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 50);
    ngx_conf_merge_ptr_value(conf->consent, prev->consent, NULL);
    ngx_conf_merge_ptr_value(conf->views, prev->views, NULL);

    if (ngx_http_lifecycle_blocks_merge(cf, prev, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_lifecycle_endpoints_merge(cf, prev, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_lifecycle_module);

    if (lmcf->secret.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"lifecycle on\" needs \"lifecycle_secret\" "
                           "in the http block");
        return NGX_CONF_ERROR;
    }

    if (lmcf->redis.name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"lifecycle on\" needs \"lifecycle_redis\" "
                           "in the http block");
        return NGX_CONF_ERROR;
    }

    lmcf->used = 1;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_lifecycle_init_process(ngx_cycle_t *cycle)
{
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_lifecycle_module);

    if (lmcf == NULL || !lmcf->used) {
        return NGX_OK;
    }

    return ngx_http_lifecycle_redis_init_process(cycle);
}


static void
ngx_http_lifecycle_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_lifecycle_redis_exit_process(cycle);
    ngx_http_lifecycle_page_exit_process();
}

