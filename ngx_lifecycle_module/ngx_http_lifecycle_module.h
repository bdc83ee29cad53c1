
/*
 * lifecycle: visitor recognition, view recording and personalization
 * at the edge. Declarations shared by the module's files.
 */

#ifndef _NGX_HTTP_LIFECYCLE_MODULE_H_INCLUDED_
#define _NGX_HTTP_LIFECYCLE_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "lifecycle_keys.h"
#include "lifecycle_template.h"
#include "lifecycle_catalog.h"


/* view types, in the order of ngx_http_lifecycle_view_types[] */
typedef enum {
    NGX_HTTP_LIFECYCLE_VIEW_PAGE = 0,
    NGX_HTTP_LIFECYCLE_VIEW_PRODUCT,
    NGX_HTTP_LIFECYCLE_VIEW_CATEGORY,
    NGX_HTTP_LIFECYCLE_VIEW_SEARCH,
    NGX_HTTP_LIFECYCLE_VIEW_CART_ADD,
    NGX_HTTP_LIFECYCLE_VIEW_CART_REMOVE,
    NGX_HTTP_LIFECYCLE_VIEW_CART,
    NGX_HTTP_LIFECYCLE_VIEW_CHECKOUT,
    NGX_HTTP_LIFECYCLE_VIEW_PURCHASE,
    NGX_HTTP_LIFECYCLE_VIEW_NTYPES
} ngx_http_lifecycle_view_type_e;


/* lifecycle stages, in the order of ngx_http_lifecycle_stages[] */
typedef enum {
    NGX_HTTP_LIFECYCLE_STAGE_NEW = 0,
    NGX_HTTP_LIFECYCLE_STAGE_ENGAGED,
    NGX_HTTP_LIFECYCLE_STAGE_CART,
    NGX_HTTP_LIFECYCLE_STAGE_CUSTOMER,
    NGX_HTTP_LIFECYCLE_STAGE_LOYAL,
    NGX_HTTP_LIFECYCLE_STAGE_AT_RISK,
    NGX_HTTP_LIFECYCLE_STAGE_LAPSED
} ngx_http_lifecycle_stage_e;


/* why a request was not tracked */
typedef enum {
    NGX_HTTP_LIFECYCLE_TRACK = 0,
    NGX_HTTP_LIFECYCLE_SKIP_HEAD,
    NGX_HTTP_LIFECYCLE_SKIP_PREFETCH,
    NGX_HTTP_LIFECYCLE_SKIP_BOT,
    NGX_HTTP_LIFECYCLE_SKIP_GPC,
    NGX_HTTP_LIFECYCLE_SKIP_DNT,
    NGX_HTTP_LIFECYCLE_SKIP_CONSENT,
    NGX_HTTP_LIFECYCLE_NSKIPS
} ngx_http_lifecycle_skip_e;


/* holdout groups, in the order of ngx_http_lifecycle_groups[] */
typedef enum {
    NGX_HTTP_LIFECYCLE_GROUP_TEST = 0,
    NGX_HTTP_LIFECYCLE_GROUP_CONTROL,
    NGX_HTTP_LIFECYCLE_NGROUPS
} ngx_http_lifecycle_group_e;


/*
 * What became of a beacon (lifecycle_collect_total): stored, refused
 * (one reason each, in the order of ngx_http_lifecycle_collect_results[]),
 * ignored, or answered without Redis confirming it.
 */
typedef enum {
    NGX_HTTP_LIFECYCLE_COLLECT_ACCEPTED = 0,
    NGX_HTTP_LIFECYCLE_COLLECT_METHOD,
    NGX_HTTP_LIFECYCLE_COLLECT_CONTENT_TYPE,
    NGX_HTTP_LIFECYCLE_COLLECT_TOO_LARGE,
    NGX_HTTP_LIFECYCLE_COLLECT_BAD_ENCODING,
    NGX_HTTP_LIFECYCLE_COLLECT_UNKNOWN_FIELD,
    NGX_HTTP_LIFECYCLE_COLLECT_DUPLICATE_FIELD,
    NGX_HTTP_LIFECYCLE_COLLECT_UNEXPECTED_FIELD,
    NGX_HTTP_LIFECYCLE_COLLECT_MISSING_FIELD,
    NGX_HTTP_LIFECYCLE_COLLECT_BAD_EVENT,
    NGX_HTTP_LIFECYCLE_COLLECT_BAD_ID,
    NGX_HTTP_LIFECYCLE_COLLECT_BAD_QTY,
    NGX_HTTP_LIFECYCLE_COLLECT_BAD_VALUE,
    NGX_HTTP_LIFECYCLE_COLLECT_BAD_CURRENCY,
    NGX_HTTP_LIFECYCLE_COLLECT_BAD_ORDER,
    NGX_HTTP_LIFECYCLE_COLLECT_BAD_POPUP,
    NGX_HTTP_LIFECYCLE_COLLECT_BAD_NAME,
    NGX_HTTP_LIFECYCLE_COLLECT_BAD_EMAIL,
    NGX_HTTP_LIFECYCLE_COLLECT_BAD_CONSENT,
    NGX_HTTP_LIFECYCLE_COLLECT_CONSENT_REQUIRED,
    NGX_HTTP_LIFECYCLE_COLLECT_CROSS_ORIGIN,
    NGX_HTTP_LIFECYCLE_COLLECT_RATE_LIMITED,
    NGX_HTTP_LIFECYCLE_COLLECT_NO_VISITOR,
    NGX_HTTP_LIFECYCLE_COLLECT_NOT_TRACKED,
    NGX_HTTP_LIFECYCLE_COLLECT_LOST,
    NGX_HTTP_LIFECYCLE_COLLECT_NRESULTS
} ngx_http_lifecycle_collect_result_e;


/* lifecycle_unsubscribe_total{result} */
typedef enum {
    NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_DONE = 0,
    NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_UNKNOWN,
    NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_INVALID,
    NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_FAILED,
    NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_NRESULTS
} ngx_http_lifecycle_unsubscribe_result_e;


/* counters in shared memory, one slot each; see ..._status.c */
typedef enum {
    NGX_HTTP_LIFECYCLE_STAT_TRACKED = 0,
    NGX_HTTP_LIFECYCLE_STAT_VISITORS_NEW,
    NGX_HTTP_LIFECYCLE_STAT_COOKIES_INVALID,
    NGX_HTTP_LIFECYCLE_STAT_SESSIONS_NEW,
    NGX_HTTP_LIFECYCLE_STAT_REDIS_ROUNDTRIPS,
    NGX_HTTP_LIFECYCLE_STAT_REDIS_ERRORS,
    NGX_HTTP_LIFECYCLE_STAT_REDIS_TIMEOUTS,
    NGX_HTTP_LIFECYCLE_STAT_REDIS_RECONNECTS,
    NGX_HTTP_LIFECYCLE_STAT_REDIS_CONNECTED,
    NGX_HTTP_LIFECYCLE_STAT_RTT_SUM_US,
    NGX_HTTP_LIFECYCLE_STAT_PROFILE_TIMEOUTS,
    NGX_HTTP_LIFECYCLE_STAT_SLOTS_FILLED,
    NGX_HTTP_LIFECYCLE_STAT_POPUPS_INJECTED,
    NGX_HTTP_LIFECYCLE_STAT_PAGES_PERSONALIZED,
    NGX_HTTP_LIFECYCLE_STAT_PAGE_HITS,
    NGX_HTTP_LIFECYCLE_STAT_PAGE_MISSES,
    NGX_HTTP_LIFECYCLE_STAT_CONVERSIONS,             /* one per group */
    NGX_HTTP_LIFECYCLE_STAT_GROUP_SESSIONS =
        NGX_HTTP_LIFECYCLE_STAT_CONVERSIONS + NGX_HTTP_LIFECYCLE_NGROUPS,
    NGX_HTTP_LIFECYCLE_STAT_SKIPPED =
        NGX_HTTP_LIFECYCLE_STAT_GROUP_SESSIONS + NGX_HTTP_LIFECYCLE_NGROUPS,
    NGX_HTTP_LIFECYCLE_STAT_VIEWS = NGX_HTTP_LIFECYCLE_STAT_SKIPPED
                                    + NGX_HTTP_LIFECYCLE_NSKIPS,
    NGX_HTTP_LIFECYCLE_STAT_RTT_BUCKETS = NGX_HTTP_LIFECYCLE_STAT_VIEWS
                                          + NGX_HTTP_LIFECYCLE_VIEW_NTYPES,
    NGX_HTTP_LIFECYCLE_STAT_RTT_END = NGX_HTTP_LIFECYCLE_STAT_RTT_BUCKETS + 11,
    NGX_HTTP_LIFECYCLE_STAT_COLLECT = NGX_HTTP_LIFECYCLE_STAT_RTT_END,
    NGX_HTTP_LIFECYCLE_STAT_OPTINS = NGX_HTTP_LIFECYCLE_STAT_COLLECT
                                     + NGX_HTTP_LIFECYCLE_COLLECT_NRESULTS,
    NGX_HTTP_LIFECYCLE_STAT_UNSUBSCRIBE,                /* one per result */
    NGX_HTTP_LIFECYCLE_STAT_ENDPOINTS_END =
        NGX_HTTP_LIFECYCLE_STAT_UNSUBSCRIBE
        + NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_NRESULTS,
    NGX_HTTP_LIFECYCLE_NSTATS = NGX_HTTP_LIFECYCLE_STAT_ENDPOINTS_END
} ngx_http_lifecycle_stat_e;


typedef struct {
    ngx_uint_t                  type;
    ngx_regex_t                *regex;
    ngx_int_t                   id_capture;    /* "id" group or -1 */
    ngx_uint_t                  captures;
    ngx_http_complex_value_t   *id;
    ngx_http_complex_value_t   *category;
    ngx_uint_t                  methods;       /* NGX_HTTP_GET|...; all */
} ngx_http_lifecycle_view_t;


typedef struct {
    ngx_str_t                   host;          /* IP, or a unix path */
    in_port_t                   port;          /* 0: unix socket */
    ngx_str_t                   password;
    ngx_int_t                   db;
    ngx_str_t                   name;          /* as written, for logs */
} ngx_http_lifecycle_redis_addr_t;


struct MMDB_s;


typedef struct {
    ngx_http_lifecycle_redis_addr_t  redis;
    ngx_str_t                   secret;
    void                       *hmac[2];       /* keyed SHA-256 states */
    time_t                      retention;
    ngx_array_t                *bots;          /* of ngx_regex_elt_t */
    ngx_flag_t                  used;          /* "lifecycle on" somewhere */
    struct MMDB_s              *geoip2;        /* NULL: no database */
    lc_catalog_t               *catalog;
    ngx_array_t                *wanted;        /* profile fields, ngx_str_t */
    size_t                      page_cache;    /* per worker; 0: off */
    ngx_str_t                   script;        /* the profile script */
    u_char                      script_sha[40];
    ngx_array_t                *scripts;       /* SCRIPT LOAD at connect */
    ngx_array_t                *popup_windows; /* of every lifecycle_popup */
    ngx_flag_t                  collect;       /* lifecycle_collect used */
} ngx_http_lifecycle_main_conf_t;


typedef struct {
    ngx_str_t                   name;
    ngx_array_t                *conds;         /* all must hold */
} ngx_http_lifecycle_segment_t;


/* the template data a template refers to, so only that is built */
#define NGX_HTTP_LIFECYCLE_USES_VISITOR       0x01
#define NGX_HTTP_LIFECYCLE_USES_PRODUCT       0x02
#define NGX_HTTP_LIFECYCLE_USES_RECENT        0x04
#define NGX_HTTP_LIFECYCLE_USES_TOP_CATEGORY  0x08
#define NGX_HTTP_LIFECYCLE_USES_CART          0x10


/* lifecycle_block: a template for a slot, for a segment or anyone */
typedef struct {
    ngx_str_t                   slot;
    ngx_str_t                   segment;       /* "*": anyone */
    lc_tpl_t                   *tpl;
    ngx_uint_t                  uses;
    u_char                     *conf_file;     /* for late errors */
    ngx_uint_t                  conf_line;
} ngx_http_lifecycle_block_t;


/* lifecycle_popup */
typedef struct {
    ngx_str_t                   name;
    ngx_str_t                   segment;       /* "*": anyone */
    lc_tpl_t                   *tpl;
    ngx_uint_t                  uses;
    ngx_uint_t                  cap;           /* 0: no cap */
    ngx_msec_t                  period;        /* of the cap; of dismissals */
    ngx_msec_t                  delay;
    ngx_uint_t                  min_views;
    ngx_str_t                   open;          /* the <div ...> around it */
    u_char                     *conf_file;
    ngx_uint_t                  conf_line;
} ngx_http_lifecycle_popup_t;


/* a content handler that needs Redis and the secret, where declared */
typedef struct {
    char                       *directive;
    u_char                     *conf_file;
    ngx_uint_t                  conf_line;
} ngx_http_lifecycle_endpoint_t;


/* a block or popup with its segment found in the server's list */
typedef struct {
    void                       *def;           /* block_t or popup_t */
    ngx_http_lifecycle_segment_t  *segment;    /* NULL: anyone */
} ngx_http_lifecycle_rule_t;


/* the block chosen for a slot of this response */
typedef struct {
    ngx_str_t                   slot;
    ngx_http_lifecycle_rule_t  *rule;
} ngx_http_lifecycle_fill_t;


typedef struct {
    ngx_msec_t                  session_timeout;
    ngx_array_t                *segments;      /* of ..._segment_t */
    ngx_uint_t                  holdout;       /* control share, 1/10000 */
    ngx_uint_t                  engaged_views;
    ngx_uint_t                  loyal_purchases;
    time_t                      at_risk;
    time_t                      lapsed;
    ngx_str_t                   cookie_name;
    time_t                      cookie_max_age;
    ngx_str_t                   cookie_domain;
    ngx_flag_t                  respect_dnt;
    ngx_flag_t                  respect_gpc;
} ngx_http_lifecycle_srv_conf_t;


typedef struct {
    ngx_flag_t                  enable;
    ngx_flag_t                  endpoint;  /* one of our content handlers */
    ngx_msec_t                  timeout;
    ngx_http_complex_value_t   *consent;
    ngx_array_t                *views;    /* of ngx_http_lifecycle_view_t */
    ngx_array_t                *blocks;   /* of ..._block_t, as written */
    ngx_array_t                *popups;   /* of ..._popup_t, as written */
    ngx_array_t                *block_rules;  /* of ..._rule_t, resolved */
    ngx_array_t                *popup_rules;
    ngx_uint_t                  uses;     /* of all of them: USES_... */
    ngx_str_t                   script_url;
    ngx_http_lifecycle_endpoint_t  *needs_redis;  /* collect, unsubscribe */
    void                       *collect;  /* ..._collect_conf_t, or NULL */
    void                       *script;   /* ..._script_conf_t, or NULL */
} ngx_http_lifecycle_loc_conf_t;


typedef struct {
    ngx_str_t                   key;           /* product id or category */
    ngx_uint_t                  count;
} ngx_http_lifecycle_count_t;


/* what the browser reported about one popup (fields "pop:NAME:x") */
typedef struct {
    ngx_str_t                   name;
    ngx_uint_t                  shown;         /* in the current window */
    uint64_t                    since;         /* window start, ms */
    uint64_t                    dismissed;     /* ms */
    uint64_t                    converted;     /* ms */
} ngx_http_lifecycle_popup_state_t;


/* the visitor as Redis answered, after this request was recorded */
typedef struct {
    ngx_uint_t                  visits;
    ngx_uint_t                  views;
    ngx_uint_t                  type_views[NGX_HTTP_LIFECYCLE_VIEW_NTYPES];
    ngx_uint_t                  cart;
    ngx_uint_t                  purchases;
    uint64_t                    previous;      /* last activity before, ms */
    ngx_str_t                   country;
    ngx_str_t                   optin;
    ngx_str_t                   top_category;
    ngx_array_t                 products;      /* of ..._count_t */
    ngx_array_t                 categories;    /* of ..._count_t */
    ngx_array_t                 recent;        /* of ngx_str_t, newest first */
    ngx_array_t                 cart_items;    /* of ..._count_t: id, qty */
    ngx_array_t                 popups;        /* of ..._popup_state_t */
} ngx_http_lifecycle_profile_t;


/* a marker of a cached page: bytes start..end of the page's data */
typedef struct {
    uint32_t                    start;
    uint32_t                    end;
    uint32_t                    type;          /* the filter's marker kind */
    uint32_t                    name_len;      /* of a slot's name */
} ngx_http_lifecycle_mark_t;


/* a static page as the page cache keeps it */
typedef struct {
    u_char                     *data;
    size_t                      len;
    ngx_http_lifecycle_mark_t  *marks;
    ngx_uint_t                  nmarks;
} ngx_http_lifecycle_page_t;


/* pages above this are read for each request, not cached */
#define NGX_HTTP_LIFECYCLE_PAGE_MAX    (1024 * 1024)

#define NGX_HTTP_LIFECYCLE_PAGE_ERROR  ((ngx_http_lifecycle_page_t *) -1)


typedef struct ngx_http_lifecycle_pending_s  ngx_http_lifecycle_pending_t;

/* called once per command: reply is NULL when the connection was lost */
typedef void (*ngx_http_lifecycle_reply_pt)(void *data, void *reply);

struct ngx_http_lifecycle_pending_s {
    ngx_http_lifecycle_reply_pt  handler;
    void                        *data;         /* NULL: nobody waits */
    uint64_t                     sent_us;
};


/*
 * Commands leave at the end of the event loop's turn, or as soon as this
 * many requests wait: Redis starts on them while the worker reads the
 * next requests, instead of the whole turn's at once. The profile
 * script records up to that many views in one call. On the bench's 50
 * connections a call took 5.4 views on average; 8 did a few per cent
 * better than 4, and 12 to 32 no better than 8 beyond the noise.
 */
#define NGX_HTTP_LIFECYCLE_BATCH  8

/* the requests whose views one script call records (profile.c) */
typedef struct ngx_http_lifecycle_batch_s  ngx_http_lifecycle_batch_t;


/* one per tracked request; found again after internal redirects */
typedef struct {
    u_char                      vid[LC_VID_LEN];
    ngx_http_request_t         *request;
    ngx_http_lifecycle_view_t  *view;
    ngx_str_t                   view_id;
    ngx_str_t                   view_category;
    ngx_http_lifecycle_batch_t *batch;         /* NULL: nobody waits */
    ngx_uint_t                  slot;          /* this request's in it */
    ngx_event_t                 wake;          /* budget timer, resumption */
    ngx_uint_t                  session;       /* 0: not known */
    ngx_http_lifecycle_profile_t  *profile;    /* NULL: not known */
    ngx_str_t                   country;
    ngx_str_t                   city;
    const lc_value_t           *data;          /* for templates, once */
    ngx_array_t                *fills;         /* of ..._fill_t */
    ngx_http_lifecycle_rule_t  *popup;
    void                       *chosen_for;    /* loc conf of the choice */

    unsigned                    group:1;       /* ..._GROUP_CONTROL */
    unsigned                    geo_done:1;
    unsigned                    tracked:1;
    unsigned                    new_visitor:1;
    unsigned                    waiting:1;
    unsigned                    recent:1;      /* asked for with the profile */
    unsigned                    cart:1;
} ngx_http_lifecycle_ctx_t;


extern ngx_module_t  ngx_http_lifecycle_module;
extern ngx_module_t  ngx_http_lifecycle_filter_module;

extern ngx_str_t     ngx_http_lifecycle_view_types[];
extern ngx_str_t     ngx_http_lifecycle_skip_reasons[];
extern ngx_str_t     ngx_http_lifecycle_stages[];
extern ngx_str_t     ngx_http_lifecycle_groups[];
extern ngx_str_t     ngx_http_lifecycle_collect_results[][2];
extern ngx_str_t     ngx_http_lifecycle_unsubscribe_results[];


/* module */
ngx_http_lifecycle_ctx_t *ngx_http_lifecycle_get_ctx(ngx_http_request_t *r);
ngx_int_t ngx_http_lifecycle_read_file(ngx_conf_t *cf, ngx_str_t *name,
    ngx_str_t *out);
ngx_table_elt_t *ngx_http_lifecycle_add_header(ngx_http_request_t *r,
    char *name, u_char *value, size_t len);
ngx_int_t ngx_http_lifecycle_not_allowed(ngx_http_request_t *r, char *allow);
ngx_int_t ngx_http_lifecycle_send(ngx_http_request_t *r, ngx_uint_t status,
    char *type, u_char *data, size_t len);
ngx_int_t ngx_http_lifecycle_want(ngx_conf_t *cf, ngx_str_t *field);
ngx_int_t ngx_http_lifecycle_regex_compile(ngx_conf_t *cf,
    ngx_regex_compile_t *rc);

/* visitor */
ngx_http_lifecycle_skip_e ngx_http_lifecycle_visitor_skip(
    ngx_http_request_t *r);
ngx_int_t ngx_http_lifecycle_visitor_identify(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx);
ngx_int_t ngx_http_lifecycle_visitor_set_cookie(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx);
ngx_int_t ngx_http_lifecycle_visitor_known(ngx_http_request_t *r,
    u_char *vid);
ngx_int_t ngx_http_lifecycle_visitor_init_secret(ngx_conf_t *cf,
    ngx_http_lifecycle_main_conf_t *lmcf);
char *ngx_http_lifecycle_visitor_init_bots(ngx_conf_t *cf,
    ngx_http_lifecycle_main_conf_t *lmcf);
char *ngx_http_lifecycle_bots(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* views */
char *ngx_http_lifecycle_view(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_lifecycle_view_match(ngx_http_request_t *r,
    ngx_http_lifecycle_loc_conf_t *llcf, ngx_http_lifecycle_ctx_t *ctx);

/* segments and stages */
char *ngx_http_lifecycle_segment(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_lifecycle_stages_thresholds(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_lifecycle_stage(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx);
uint64_t ngx_http_lifecycle_days_away(ngx_http_lifecycle_ctx_t *ctx);
ngx_uint_t ngx_http_lifecycle_segment_match(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx, ngx_http_lifecycle_segment_t *seg);
char *ngx_http_lifecycle_holdout(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_uint_t ngx_http_lifecycle_group(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx);

/* blocks and popups */
char *ngx_http_lifecycle_block(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_lifecycle_popup(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_lifecycle_script_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_lifecycle_blocks_merge(ngx_conf_t *cf,
    ngx_http_lifecycle_loc_conf_t *prev, ngx_http_lifecycle_loc_conf_t *conf);
ngx_int_t ngx_http_lifecycle_choose(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx);
ngx_int_t ngx_http_lifecycle_unconditional(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx);
ngx_int_t ngx_http_lifecycle_render(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx, ngx_http_lifecycle_rule_t *rule,
    ngx_uint_t is_popup, ngx_str_t *out);
ngx_uint_t ngx_http_lifecycle_opted_in(ngx_http_lifecycle_profile_t *p);

/* redis connection */
ngx_int_t ngx_http_lifecycle_redis_init_process(ngx_cycle_t *cycle);
void ngx_http_lifecycle_redis_exit_process(ngx_cycle_t *cycle);
ngx_http_lifecycle_pending_t *ngx_http_lifecycle_redis_command(
    ngx_log_t *log, ngx_http_lifecycle_reply_pt handler, void *data,
    int argc, const char **argv, const size_t *argvlen);
ngx_uint_t ngx_http_lifecycle_redis_ready(ngx_log_t *log);
void ngx_http_lifecycle_redis_flush(void);
void ngx_http_lifecycle_redis_timed_out(void);
ngx_uint_t ngx_http_lifecycle_redis_behind(void);
ngx_int_t ngx_http_lifecycle_redis_script(ngx_conf_t *cf, ngx_str_t *script,
    u_char *sha);

/* profile: the one script call of a tracked request */
ngx_int_t ngx_http_lifecycle_profile_init(ngx_conf_t *cf,
    ngx_http_lifecycle_main_conf_t *lmcf);
ngx_str_t *ngx_http_lifecycle_profile_script(void);
ngx_int_t ngx_http_lifecycle_profile_request(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx);
void ngx_http_lifecycle_profile_detach(ngx_http_lifecycle_ctx_t *ctx);

/* the output filter's marker search, for the page cache */
ngx_int_t ngx_http_lifecycle_filter_scan(u_char *data, size_t len,
    ngx_array_t *marks);

/* page cache */
char *ngx_http_lifecycle_page_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_http_lifecycle_page_t *ngx_http_lifecycle_page_get(ngx_http_request_t *r,
    ngx_buf_t *b, time_t mtime);
void ngx_http_lifecycle_page_exit_process(void);

/* endpoints: one script call of a content handler (..._call.c) */
typedef struct ngx_http_lifecycle_call_s  ngx_http_lifecycle_call_t;

typedef void (*ngx_http_lifecycle_call_pt)(ngx_http_lifecycle_call_t *call);

typedef enum {
    NGX_HTTP_LIFECYCLE_CALL_REPLY = 0,         /* result[] holds it */
    NGX_HTTP_LIFECYCLE_CALL_FAILED,            /* error reply, lost */
    NGX_HTTP_LIFECYCLE_CALL_TIMEDOUT           /* not within the budget */
} ngx_http_lifecycle_call_outcome_e;

struct ngx_http_lifecycle_call_s {
    ngx_http_request_t         *request;
    ngx_http_lifecycle_call_pt  handler;       /* once, from an event */
    void                       *data;
    ngx_str_t                  *script;
    u_char                     *sha;           /* 40 hex digits */
    int                         argc;          /* EVALSHA sha n keys.. */
    const char                **argv;
    size_t                     *argvlen;
    ngx_http_lifecycle_pending_t  *pending;
    ngx_event_t                 wake;
    ngx_http_lifecycle_call_outcome_e  outcome;
    int64_t                     result[2];     /* integers of the reply */

    unsigned                    waiting:1;
    unsigned                    retried:1;
};

ngx_http_lifecycle_call_t *ngx_http_lifecycle_call_create(
    ngx_http_request_t *r, ngx_str_t *script, u_char *sha, int nargs);
ngx_int_t ngx_http_lifecycle_call(ngx_http_lifecycle_call_t *call,
    ngx_msec_t timeout);

/* lifecycle_script, lifecycle_collect, lifecycle_unsubscribe */
char *ngx_http_lifecycle_script_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_lifecycle_collect(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_lifecycle_unsubscribe(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_lifecycle_endpoints_merge(ngx_conf_t *cf,
    ngx_http_lifecycle_loc_conf_t *prev, ngx_http_lifecycle_loc_conf_t *conf);
ngx_int_t ngx_http_lifecycle_collect_init(ngx_conf_t *cf);

/* geo */
#define NGX_HTTP_LIFECYCLE_GEO_COUNTRY  0
#define NGX_HTTP_LIFECYCLE_GEO_CITY     1

char *ngx_http_lifecycle_geoip2(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_lifecycle_geo_lookup(ngx_http_request_t *r,
    ngx_str_t *country, ngx_str_t *city);
ngx_int_t ngx_http_lifecycle_geo_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

/* catalog */
char *ngx_http_lifecycle_catalog(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
const lc_product_t *ngx_http_lifecycle_catalog_find(ngx_http_request_t *r,
    ngx_str_t *id);

/* status */
ngx_int_t ngx_http_lifecycle_status_init_zone(ngx_conf_t *cf);
void ngx_http_lifecycle_stat_add(ngx_uint_t stat, ngx_atomic_int_t n);
void ngx_http_lifecycle_stat_rtt(uint64_t start_us);
uint64_t ngx_http_lifecycle_now_us(void);
char *ngx_http_lifecycle_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

#define ngx_http_lifecycle_stat_inc(stat)                                     \
    ngx_http_lifecycle_stat_add(stat, 1)


#endif /* _NGX_HTTP_LIFECYCLE_MODULE_H_INCLUDED_ */
