
/*
 * lifecycle: "lifecycle_collect", the endpoint of the beacons lifecycle.js
 * sends (navigator.sendBeacon: a form-encoded POST). Every field is
 * checked against a list of what each event may carry before anything
 * is stored; a beacon that passes is one script call in Redis on the
 * visitor's profile (all its keys share the visitor's slot), which also
 * appends the event to the shard's stream for the agent.
 *
 * The body is read with nginx's request body API and copied, as it
 * arrives, into a buffer of at most max_body bytes by a request body
 * filter: nothing is passed on to nginx's buffering, so no beacon ever
 * goes to a temporary file, whatever its framing (length or chunked).
 */


#include "ngx_http_lifecycle_module.h"
#include "lifecycle_identity.h"


#define NGX_HTTP_LIFECYCLE_STR(x)    NGX_HTTP_LIFECYCLE_STR2(x)
#define NGX_HTTP_LIFECYCLE_STR2(x)   #x

#define NGX_HTTP_LIFECYCLE_FORM            "application/x-www-form-urlencoded"
#define NGX_HTTP_LIFECYCLE_FORM_LEN        (sizeof(NGX_HTTP_LIFECYCLE_FORM) - 1)

#define NGX_HTTP_LIFECYCLE_MAX_BODY        2048
#define NGX_HTTP_LIFECYCLE_MAX_BODY_LIMIT  65536

/* opt-ins a visitor may send in a window, across workers and edges */
#define NGX_HTTP_LIFECYCLE_OPTIN_LIMIT     5
#define NGX_HTTP_LIFECYCLE_OPTIN_PERIOD    (3600 * 1000)

/* the rules lifecycle_view applies to ids (ngx_http_lifecycle_view.c) */
#define NGX_HTTP_LIFECYCLE_MAX_ID          128
#define NGX_HTTP_LIFECYCLE_MAX_NAME        64

/* 999999999.99 at most */
#define NGX_HTTP_LIFECYCLE_MAX_UNITS       9


/* beacon fields, in the order of ngx_http_lifecycle_collect_fields[] */
enum {
    NGX_HTTP_LIFECYCLE_FIELD_E = 0,
    NGX_HTTP_LIFECYCLE_FIELD_ID,
    NGX_HTTP_LIFECYCLE_FIELD_QTY,
    NGX_HTTP_LIFECYCLE_FIELD_VALUE,
    NGX_HTTP_LIFECYCLE_FIELD_CURRENCY,
    NGX_HTTP_LIFECYCLE_FIELD_ORDER,
    NGX_HTTP_LIFECYCLE_FIELD_POPUP,
    NGX_HTTP_LIFECYCLE_FIELD_NAME,
    NGX_HTTP_LIFECYCLE_FIELD_EMAIL,
    NGX_HTTP_LIFECYCLE_FIELD_CONSENT,
    NGX_HTTP_LIFECYCLE_NFIELDS
};

#define NGX_HTTP_LIFECYCLE_F(name)                                            \
    ((ngx_uint_t) 1 << NGX_HTTP_LIFECYCLE_FIELD_##name)


typedef enum {
    NGX_HTTP_LIFECYCLE_EV_ADD_TO_CART = 0,
    NGX_HTTP_LIFECYCLE_EV_REMOVE_FROM_CART,
    NGX_HTTP_LIFECYCLE_EV_PURCHASE,
    NGX_HTTP_LIFECYCLE_EV_POPUP_SHOWN,
    NGX_HTTP_LIFECYCLE_EV_POPUP_DISMISSED,
    NGX_HTTP_LIFECYCLE_EV_OPTIN,
    NGX_HTTP_LIFECYCLE_EV_CUSTOM
} ngx_http_lifecycle_beacon_e;


typedef struct {
    ngx_str_t                   name;
    ngx_uint_t                  required;
    ngx_uint_t                  allowed;
} ngx_http_lifecycle_beacon_t;


typedef struct {
    size_t                      max_body;
    ngx_uint_t                  optin_limit;
    ngx_msec_t                  optin_period;
} ngx_http_lifecycle_collect_conf_t;


/* a popup name and the window its shows are counted in */
typedef struct {
    ngx_str_t                   name;
    ngx_msec_t                  period;
    ngx_uint_t                  capped;
    ngx_uint_t                  warned;
    u_char                     *conf_file;
    ngx_uint_t                  conf_line;
} ngx_http_lifecycle_popup_window_t;


typedef struct {
    ngx_http_request_t         *request;
    u_char                     *body;
    size_t                      len;
    size_t                      size;
    ngx_str_t                   field[NGX_HTTP_LIFECYCLE_NFIELDS];
    ngx_uint_t                  event;
    ngx_msec_t                  window;        /* of the popup, shows */
    u_char                      vid[LC_VID_LEN];

    unsigned                    too_large:1;
} ngx_http_lifecycle_collect_ctx_t;


static ngx_int_t ngx_http_lifecycle_collect_handler(ngx_http_request_t *r);
static void ngx_http_lifecycle_collect_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_lifecycle_collect_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_http_lifecycle_collect_ctx_t *ngx_http_lifecycle_collect_get_ctx(
    ngx_http_request_t *r);
static void ngx_http_lifecycle_collect_cleanup(void *data);
static ngx_uint_t ngx_http_lifecycle_collect_form(ngx_http_request_t *r,
    ngx_http_lifecycle_collect_ctx_t *ctx);
static ngx_int_t ngx_http_lifecycle_collect_decode(u_char *src, u_char *end,
    u_char *dst, size_t *len);
static ngx_uint_t ngx_http_lifecycle_collect_text(u_char *p, size_t len);
static ngx_uint_t ngx_http_lifecycle_collect_word(ngx_str_t *s, char *also);
static ngx_uint_t ngx_http_lifecycle_collect_digits(u_char *p, size_t len,
    size_t max, ngx_uint_t zero);
static ngx_uint_t ngx_http_lifecycle_collect_amount(ngx_str_t *s);
static ngx_uint_t ngx_http_lifecycle_collect_check(ngx_http_request_t *r,
    ngx_http_lifecycle_collect_ctx_t *ctx);
static ngx_uint_t ngx_http_lifecycle_collect_same_origin(
    ngx_http_request_t *r);
static void ngx_http_lifecycle_collect_default_port(ngx_str_t *host,
    ngx_str_t *scheme);
static ngx_int_t ngx_http_lifecycle_collect_store(ngx_http_request_t *r,
    ngx_http_lifecycle_collect_ctx_t *ctx);
static void ngx_http_lifecycle_collect_stored(ngx_http_lifecycle_call_t *call);
static ngx_int_t ngx_http_lifecycle_collect_send(ngx_http_request_t *r,
    ngx_uint_t result, int64_t retry_ms);
static char *ngx_http_lifecycle_collect_popups(ngx_conf_t *cf,
    ngx_array_t *popups);


static ngx_http_request_body_filter_pt   ngx_http_next_request_body_filter;


/* names of the fields, in the order of their bits */
static ngx_str_t  ngx_http_lifecycle_collect_fields[] = {
    ngx_string("e"),
    ngx_string("id"),
    ngx_string("qty"),
    ngx_string("value"),
    ngx_string("currency"),
    ngx_string("order"),
    ngx_string("popup"),
    ngx_string("name"),
    ngx_string("email"),
    ngx_string("consent")
};

#define F_ID        NGX_HTTP_LIFECYCLE_F(ID)
#define F_QTY       NGX_HTTP_LIFECYCLE_F(QTY)
#define F_VALUE     NGX_HTTP_LIFECYCLE_F(VALUE)
#define F_CURRENCY  NGX_HTTP_LIFECYCLE_F(CURRENCY)
#define F_ORDER     NGX_HTTP_LIFECYCLE_F(ORDER)
#define F_POPUP     NGX_HTTP_LIFECYCLE_F(POPUP)
#define F_NAME      NGX_HTTP_LIFECYCLE_F(NAME)
#define F_EMAIL     NGX_HTTP_LIFECYCLE_F(EMAIL)
#define F_CONSENT   NGX_HTTP_LIFECYCLE_F(CONSENT)

/* what each event must and may carry besides "e" */
static ngx_http_lifecycle_beacon_t  ngx_http_lifecycle_beacons[] = {

    { ngx_string("add_to_cart"), F_ID,
      F_ID|F_QTY|F_VALUE|F_CURRENCY },

    { ngx_string("remove_from_cart"), F_ID,
      F_ID|F_QTY },

    { ngx_string("purchase"), 0,
      F_ORDER|F_VALUE|F_CURRENCY },

    { ngx_string("popup_shown"), F_POPUP,
      F_POPUP },

    { ngx_string("popup_dismissed"), F_POPUP,
      F_POPUP },

    { ngx_string("optin"), F_EMAIL|F_CONSENT,
      F_EMAIL|F_CONSENT|F_POPUP },

    { ngx_string("custom"), F_NAME,
      F_NAME|F_ID|F_QTY|F_VALUE|F_CURRENCY|F_ORDER|F_POPUP },

    { ngx_null_string, 0, 0 }
};

#undef F_ID
#undef F_QTY
#undef F_VALUE
#undef F_CURRENCY
#undef F_ORDER
#undef F_POPUP
#undef F_NAME
#undef F_EMAIL
#undef F_CONSENT


/* { result, reason } in the order of ngx_http_lifecycle_collect_result_e */
ngx_str_t  ngx_http_lifecycle_collect_results[][2] = {
    { ngx_string("accepted"), ngx_null_string },
    { ngx_string("rejected"), ngx_string("method_not_allowed") },
    { ngx_string("rejected"), ngx_string("unsupported_media_type") },
    { ngx_string("rejected"), ngx_string("too_large") },
    { ngx_string("rejected"), ngx_string("bad_encoding") },
    { ngx_string("rejected"), ngx_string("unknown_field") },
    { ngx_string("rejected"), ngx_string("duplicate_field") },
    { ngx_string("rejected"), ngx_string("unexpected_field") },
    { ngx_string("rejected"), ngx_string("missing_field") },
    { ngx_string("rejected"), ngx_string("bad_event") },
    { ngx_string("rejected"), ngx_string("bad_id") },
    { ngx_string("rejected"), ngx_string("bad_qty") },
    { ngx_string("rejected"), ngx_string("bad_value") },
    { ngx_string("rejected"), ngx_string("bad_currency") },
    { ngx_string("rejected"), ngx_string("bad_order") },
    { ngx_string("rejected"), ngx_string("bad_popup") },
    { ngx_string("rejected"), ngx_string("bad_name") },
    { ngx_string("rejected"), ngx_string("bad_email") },
    { ngx_string("rejected"), ngx_string("bad_consent") },
    { ngx_string("rejected"), ngx_string("consent_required") },
    { ngx_string("rejected"), ngx_string("cross_origin") },
    { ngx_string("rejected"), ngx_string("rate_limited") },
    { ngx_string("ignored"), ngx_string("no_visitor") },
    { ngx_string("ignored"), ngx_string("not_tracked") },
    { ngx_string("lost"), ngx_null_string }
};


enum {
    NGX_HTTP_LIFECYCLE_CARG_NKEYS = 2,
    NGX_HTTP_LIFECYCLE_CARG_KEY,
    NGX_HTTP_LIFECYCLE_CARG_NOW,
    NGX_HTTP_LIFECYCLE_CARG_TTL,
    NGX_HTTP_LIFECYCLE_CARG_PREFIX,
    NGX_HTTP_LIFECYCLE_CARG_VID,
    NGX_HTTP_LIFECYCLE_CARG_EVENT,
    NGX_HTTP_LIFECYCLE_CARG_FIELDS,            /* id .. email: 8 */
    NGX_HTTP_LIFECYCLE_CARG_WINDOW = NGX_HTTP_LIFECYCLE_CARG_FIELDS + 8,
    NGX_HTTP_LIFECYCLE_CARG_OPTIN_LIMIT,
    NGX_HTTP_LIFECYCLE_CARG_OPTIN_PERIOD,
    NGX_HTTP_LIFECYCLE_CARG_END
};


/*
 * KEYS[1] the profile "lc:{hh}:v:VID"; the other keys are made from
 * ARGV[3] (the prefix "lc:{hh}:") and share its slot.
 * ARGV: now(ms) retention(s) prefix vid event id qty value currency
 *       order popup name email window(ms) optin_limit optin_period(ms),
 *       absent fields empty.
 * Answer: { 1, 0 } stored; { 2, 0 } a purchase of an order already
 * recorded (nothing changed); { 0, ms } an opt-in over the limit, ms
 * until the window ends (nothing changed: the window is fixed, it
 * starts with the first opt-in, in ":rl", and ends with that key).
 * Keys it makes get the profile's TTL (a first visit's hour, or the
 * retention), or the retention when the profile is new or has none.
 */
static ngx_str_t  ngx_http_lifecycle_collect_script = ngx_string(
"local v = KEYS[1]\n"
"local now = tonumber(ARGV[1])\n"
"local prefix, vid, e = ARGV[3], ARGV[4], ARGV[5]\n"
"local id, qty, value, cur = ARGV[6], ARGV[7], ARGV[8], ARGV[9]\n"
"local order, popup, name, email = ARGV[10], ARGV[11], ARGV[12], ARGV[13]\n"
"if e == 'optin' then\n"
"  local rl = v .. '" LC_KEY_OPTINS "'\n"
"  local left = redis.call('PTTL', rl)\n"
"  if left <= 0 then\n"
"    redis.call('SET', rl, 1, 'PX', ARGV[16])\n"
"  elseif (tonumber(redis.call('GET', rl)) or 0) >= tonumber(ARGV[15]) then\n"
"    return {0, left}\n"
"  else\n"
"    redis.call('INCR', rl)\n"
"  end\n"
"end\n"
"local pttl = redis.call('PTTL', v)\n"
"local function fresh(k)\n"
"  if redis.call('PTTL', k) == -1 then\n"
"    if pttl > 0 then redis.call('PEXPIRE', k, pttl)\n"
"    else redis.call('EXPIRE', k, ARGV[2]) end\n"
"  end\n"
"end\n"
"local cart = v .. '" LC_KEY_CART "'\n"
"local pf = 'pop:' .. popup\n"
"local got = redis.call('HMGET', v, 'visits', 'cart', 's.cart_adds',\n"
"                       'purchases', pf)\n"
"local function pop(n, t, d, c)\n"
"  local sn, st, sd, sc = string.match(got[5] or '',\n"
"                                      '^(%d+) (%d+) (%d+) (%d+)$')\n"
"  return string.format('%d %d %d %d', n or tonumber(sn) or 0,\n"
"                       t or tonumber(st) or 0, d or tonumber(sd) or 0,\n"
"                       c or tonumber(sc) or 0)\n"
"end\n"
"local upd = {}\n"
"if e == 'add_to_cart' then\n"
"  local q = tonumber(qty) or 1\n"
"  redis.call('HINCRBY', cart, id, q)\n"
"  fresh(cart)\n"
"  upd.cart = (tonumber(got[2]) or 0) + q\n"
"  upd['s.cart_adds'] = (tonumber(got[3]) or 0) + 1\n"
"elseif e == 'remove_from_cart' then\n"
"  local have = tonumber(redis.call('HGET', cart, id))\n"
"  if have then\n"
"    local q = math.min(tonumber(qty) or have, have)\n"
"    if q >= have then redis.call('HDEL', cart, id)\n"
"    else redis.call('HINCRBY', cart, id, -q) end\n"
"    upd.cart = math.max((tonumber(got[2]) or 0) - q, 0)\n"
"  end\n"
"elseif e == 'purchase' then\n"
"  local o = v .. '" LC_KEY_ORDERS "'\n"
"  if order ~= '' and redis.call('LPOS', o, order) then return {2, 0} end\n"
"  upd.purchases = (tonumber(got[4]) or 0) + 1\n"
"  upd.cart = 0\n"
"  upd.last_purchase = now\n"
"  upd['s.purchase'] = order ~= '' and order or '1'\n"
"  redis.call('DEL', cart)\n"
"  if order ~= '' then\n"
"    upd.last_order = order\n"
"    redis.call('LPUSH', o, order)\n"
"    redis.call('LTRIM', o, 0, " NGX_HTTP_LIFECYCLE_STR(LC_ORDERS_MAX)
                                 " - 1)\n"
"    fresh(o)\n"
"  end\n"
"elseif e == 'popup_shown' then\n"
"  local n, t = string.match(got[5] or '', '^(%d+) (%d+)')\n"
"  t = tonumber(t) or 0\n"
"  if t == 0 or now - t >= tonumber(ARGV[14]) then\n"
"    upd[pf] = pop(1, now)\n"
"  else\n"
"    upd[pf] = pop(tonumber(n) + 1)\n"
"  end\n"
"elseif e == 'popup_dismissed' then\n"
"  upd[pf] = pop(nil, nil, now)\n"
"elseif e == 'optin' then\n"
"  upd.email = email\n"
"  upd.optin = now\n"
"  if popup ~= '' then upd[pf] = pop(nil, nil, nil, now) end\n"
"end\n"
"if next(upd) then\n"
"  local cmd = {'HSET', v}\n"
"  for f, x in pairs(upd) do cmd[#cmd + 1] = f; cmd[#cmd + 1] = x end\n"
"  redis.call(unpack(cmd))\n"
"  fresh(v)\n"
"end\n"
"local ev = {'XADD', prefix .. '" LC_KEY_EVENTS "', 'MAXLEN', '~', "
              NGX_HTTP_LIFECYCLE_STR(LC_STREAM_MAXLEN) ", '*',\n"
"            'type', e, 'vid', vid, 'sess', tonumber(got[1]) or 0}\n"
"local f = {'id', id, 'qty', qty, 'value', value, 'currency', cur,\n"
"           'order', order, 'popup', popup, 'name', name, 'email', email}\n"
"for i = 1, #f, 2 do\n"
"  if f[i + 1] ~= '' then ev[#ev + 1] = f[i]; ev[#ev + 1] = f[i + 1] end\n"
"end\n"
"redis.call(unpack(ev))\n"
"return {1, 0}\n");

static u_char  ngx_http_lifecycle_collect_sha[40];


char *
ngx_http_lifecycle_collect(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_loc_conf_t  *llcf = conf;

    u_char                             *slash;
    time_t                              period;
    ssize_t                             size;
    ngx_int_t                           n;
    ngx_str_t                          *value, s;
    ngx_uint_t                          i;
    ngx_http_core_loc_conf_t           *clcf;
    ngx_http_lifecycle_endpoint_t      *ep;
    ngx_http_lifecycle_main_conf_t     *lmcf;
    ngx_http_lifecycle_collect_conf_t  *cc;

    if (llcf->collect) {
        return "is duplicate";
    }

    cc = ngx_pcalloc(cf->pool, sizeof(ngx_http_lifecycle_collect_conf_t));
    ep = ngx_pcalloc(cf->pool, sizeof(ngx_http_lifecycle_endpoint_t));
    if (cc == NULL || ep == NULL) {
        return NGX_CONF_ERROR;
    }

    cc->max_body = NGX_HTTP_LIFECYCLE_MAX_BODY;
    cc->optin_limit = NGX_HTTP_LIFECYCLE_OPTIN_LIMIT;
    cc->optin_period = NGX_HTTP_LIFECYCLE_OPTIN_PERIOD;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "max_body=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            size = ngx_parse_size(&s);

            if (size == NGX_ERROR || size == 0
                || size > NGX_HTTP_LIFECYCLE_MAX_BODY_LIMIT)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid parameter \"%V\": a size from "
                                   "1 to 64k", &value[i]);
                return NGX_CONF_ERROR;
            }

            cc->max_body = size;
            continue;
        }

        if (ngx_strncmp(value[i].data, "optin_limit=", 12) == 0) {
            s.data = value[i].data + 12;
            s.len = value[i].len - 12;

            slash = ngx_strlchr(s.data, s.data + s.len, '/');

            if (slash) {
                n = ngx_atoi(s.data, slash - s.data);

                s.len -= slash + 1 - s.data;
                s.data = slash + 1;
                period = ngx_parse_time(&s, 1);

                if (n != NGX_ERROR && n > 0
                    && period != (time_t) NGX_ERROR && period > 0)
                {
                    cc->optin_limit = n;
                    cc->optin_period = (ngx_msec_t) period * 1000;
                    continue;
                }
            }

            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\": expected "
                               "optin_limit=N/PERIOD, e.g. 5/1h", &value[i]);
            return NGX_CONF_ERROR;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_lifecycle_redis_script(cf, &ngx_http_lifecycle_collect_script,
                                        ngx_http_lifecycle_collect_sha)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    ep->directive = "lifecycle_collect";
    ep->conf_file = cf->conf_file->file.name.data;
    ep->conf_line = cf->conf_file->line;

    llcf->collect = cc;
    llcf->needs_redis = ep;

    /* a beacon is not a page view */
    llcf->endpoint = 1;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_lifecycle_module);
    lmcf->collect = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_lifecycle_collect_handler;

    return NGX_CONF_OK;
}


/*
 * Called for every level while nginx merges: the endpoints that need
 * Redis and the secret find them here (they are read after the
 * locations), and every lifecycle_popup in effect anywhere is entered in
 * the table the beacons of popups are checked against.
 */

char *
ngx_http_lifecycle_endpoints_merge(ngx_conf_t *cf,
    ngx_http_lifecycle_loc_conf_t *prev, ngx_http_lifecycle_loc_conf_t *conf)
{
    ngx_http_lifecycle_endpoint_t   *ep;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_lifecycle_module);

    if (conf->popups
        && ngx_http_lifecycle_collect_popups(cf, conf->popups) != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    ep = conf->needs_redis;

    if (ep == NULL) {
        return NGX_CONF_OK;
    }

    if (lmcf->secret.data == NULL || lmcf->redis.name.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"%s\" needs \"lifecycle_redis\" and "
                      "\"lifecycle_secret\" in the http block in %s:%ui",
                      ep->directive, ep->conf_file, ep->conf_line);
        return NGX_CONF_ERROR;
    }

    /* workers connect to Redis */
    lmcf->used = 1;

    return NGX_CONF_OK;
}


/*
 * A popup's shows are counted in the window of its cap (cap=N/PERIOD),
 * as ngx_http_lifecycle_popup_eligible() reads them; without a cap in
 * its 30 days of dismissals. A name declared with two cap periods is
 * counted in the shorter (the longer would let the shorter one show
 * again and again once its own window is over).
 */

static char *
ngx_http_lifecycle_collect_popups(ngx_conf_t *cf, ngx_array_t *popups)
{
    ngx_uint_t                          i, j;
    ngx_http_lifecycle_popup_t         *popup;
    ngx_http_lifecycle_main_conf_t     *lmcf;
    ngx_http_lifecycle_popup_window_t  *w;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_lifecycle_module);

    if (lmcf->popup_windows == NULL) {
        lmcf->popup_windows = ngx_array_create(cf->pool, 4,
                                   sizeof(ngx_http_lifecycle_popup_window_t));
        if (lmcf->popup_windows == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    popup = popups->elts;

    for (i = 0; i < popups->nelts; i++) {

        w = lmcf->popup_windows->elts;

        for (j = 0; j < lmcf->popup_windows->nelts; j++) {
            if (w[j].name.len == popup[i].name.len
                && ngx_strncmp(w[j].name.data, popup[i].name.data,
                               popup[i].name.len)
                   == 0)
            {
                break;
            }
        }

        if (j == lmcf->popup_windows->nelts) {
            w = ngx_array_push(lmcf->popup_windows);
            if (w == NULL) {
                return NGX_CONF_ERROR;
            }

            w->name = popup[i].name;
            w->period = popup[i].period;
            w->capped = popup[i].cap ? 1 : 0;
            w->warned = 0;
            w->conf_file = popup[i].conf_file;
            w->conf_line = popup[i].conf_line;
            continue;
        }

        w = &w[j];

        if (popup[i].cap == 0 || popup[i].period == w->period) {
            continue;
        }

        if (!w->capped) {
            w->period = popup[i].period;
            w->capped = 1;
            w->conf_file = popup[i].conf_file;
            w->conf_line = popup[i].conf_line;
            continue;
        }

        if (!w->warned) {
            w->warned = 1;

            ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                          "lifecycle_popup \"%V\" has a cap period of %Ms "
                          "in %s:%ui and %Ms in %s:%ui: its shows are "
                          "counted in the shorter",
                          &w->name, popup[i].period / 1000,
                          popup[i].conf_file, popup[i].conf_line,
                          w->period / 1000, w->conf_file, w->conf_line);
        }

        if (popup[i].period < w->period) {
            w->period = popup[i].period;
        }
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_lifecycle_collect_init(ngx_conf_t *cf)
{
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_lifecycle_module);

    if (lmcf->collect) {
        ngx_http_next_request_body_filter = ngx_http_top_request_body_filter;
        ngx_http_top_request_body_filter =
                                     ngx_http_lifecycle_collect_body_filter;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_lifecycle_collect_handler(ngx_http_request_t *r)
{
    u_char                             *p, *last;
    ngx_int_t                           rc;
    ngx_uint_t                          result;
    ngx_table_elt_t                    *ct;
    ngx_pool_cleanup_t                 *cln;
    ngx_http_lifecycle_loc_conf_t      *llcf;
    ngx_http_lifecycle_collect_ctx_t   *ctx;
    ngx_http_lifecycle_collect_conf_t  *cc;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_lifecycle_module);
    cc = llcf->collect;

    result = NGX_HTTP_LIFECYCLE_COLLECT_ACCEPTED;

    if (r->method != NGX_HTTP_POST) {
        result = NGX_HTTP_LIFECYCLE_COLLECT_METHOD;
        goto refused;
    }

    /* application/x-www-form-urlencoded, parameters (charset) allowed */

    ct = r->headers_in.content_type;

    if (ct == NULL || ct->value.len < NGX_HTTP_LIFECYCLE_FORM_LEN
        || ngx_strncasecmp(ct->value.data, (u_char *) NGX_HTTP_LIFECYCLE_FORM,
                           NGX_HTTP_LIFECYCLE_FORM_LEN)
           != 0)
    {
        result = NGX_HTTP_LIFECYCLE_COLLECT_CONTENT_TYPE;
        goto refused;
    }

    p = ct->value.data + NGX_HTTP_LIFECYCLE_FORM_LEN;
    last = ct->value.data + ct->value.len;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    if (p < last && *p != ';') {
        result = NGX_HTTP_LIFECYCLE_COLLECT_CONTENT_TYPE;
        goto refused;
    }

    if (r->headers_in.content_length_n > (off_t) cc->max_body) {
        result = NGX_HTTP_LIFECYCLE_COLLECT_TOO_LARGE;
        goto refused;
    }

    cln = ngx_pool_cleanup_add(r->pool,
                               sizeof(ngx_http_lifecycle_collect_ctx_t));
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = cln->data;
    ngx_memzero(ctx, sizeof(ngx_http_lifecycle_collect_ctx_t));
    cln->handler = ngx_http_lifecycle_collect_cleanup;

    ctx->request = r;
    ctx->size = cc->max_body;

    ctx->body = ngx_pnalloc(r->pool, ctx->size);
    if (ctx->body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_lifecycle_collect_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;

refused:

    /* refused before the body: no "100 Continue" invites it */
    r->expect_tested = 1;

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_lifecycle_collect_send(r, result, 0);
}


/*
 * The request body filter: the beacon's bytes are copied out of nginx's
 * buffer as they come, which lets nginx reuse it; only the end of the
 * body is passed on, so nothing is ever buffered, let alone written to
 * a file. Beyond max_body the rest is read and dropped, and the beacon
 * is refused with 413 once it is all in.
 */

static ngx_int_t
ngx_http_lifecycle_collect_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in)
{
    size_t                             size;
    ngx_buf_t                         *b;
    ngx_chain_t                       *cl, *last;
    ngx_http_lifecycle_collect_ctx_t  *ctx;

    if (r->request_body == NULL
        || r->request_body->post_handler != ngx_http_lifecycle_collect_body)
    {
        return ngx_http_next_request_body_filter(r, in);
    }

    ctx = ngx_http_lifecycle_collect_get_ctx(r);

    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = NULL;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;
        size = b->last - b->pos;

        if (size > ctx->size - ctx->len) {
            ctx->too_large = 1;
        }

        if (!ctx->too_large) {
            ngx_memcpy(ctx->body + ctx->len, b->pos, size);
            ctx->len += size;
        }

        b->pos = b->last;

        if (b->last_buf) {
            last = cl;
        }
    }

    if (last == NULL) {
        return ngx_http_next_request_body_filter(r, NULL);
    }

    /* the end, alone and empty: rb->bufs never holds data */
    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cl->buf = last->buf;
    cl->next = NULL;

    return ngx_http_next_request_body_filter(r, cl);
}


static ngx_http_lifecycle_collect_ctx_t *
ngx_http_lifecycle_collect_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t  *cln;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_lifecycle_collect_cleanup) {
            return cln->data;
        }
    }

    return NULL;
}


static void
ngx_http_lifecycle_collect_cleanup(void *data)
{
    /* marks the context; the call's own cleanup detaches the command */
}


/* the whole body is in (or what nginx could read of it) */

static void
ngx_http_lifecycle_collect_body(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_uint_t                         result;
    ngx_http_lifecycle_collect_ctx_t  *ctx;

    ctx = ngx_http_lifecycle_collect_get_ctx(r);

    if (ctx == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (ctx->too_large) {
        result = NGX_HTTP_LIFECYCLE_COLLECT_TOO_LARGE;
        goto answer;
    }

    result = ngx_http_lifecycle_collect_form(r, ctx);

    if (result == NGX_HTTP_LIFECYCLE_COLLECT_ACCEPTED) {
        result = ngx_http_lifecycle_collect_check(r, ctx);
    }

    if (result == NGX_HTTP_LIFECYCLE_COLLECT_ACCEPTED
        && ctx->event == NGX_HTTP_LIFECYCLE_EV_OPTIN
        && !ngx_http_lifecycle_collect_same_origin(r))
    {
        result = NGX_HTTP_LIFECYCLE_COLLECT_CROSS_ORIGIN;
    }

    if (result == NGX_HTTP_LIFECYCLE_COLLECT_NRESULTS) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (result != NGX_HTTP_LIFECYCLE_COLLECT_ACCEPTED) {
        goto answer;
    }

    /* a valid beacon: is its visitor one the module tracks? */

    if (ngx_http_lifecycle_visitor_skip(r) != NGX_HTTP_LIFECYCLE_TRACK) {
        result = NGX_HTTP_LIFECYCLE_COLLECT_NOT_TRACKED;
        goto answer;
    }

    if (ngx_http_lifecycle_visitor_known(r, ctx->vid) != NGX_OK) {
        result = NGX_HTTP_LIFECYCLE_COLLECT_NO_VISITOR;
        goto answer;
    }

    rc = ngx_http_lifecycle_collect_store(r, ctx);

    if (rc == NGX_AGAIN) {
        return;
    }

    if (rc == NGX_ERROR) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* Redis is not there: the browser cannot do better with an error */
    result = NGX_HTTP_LIFECYCLE_COLLECT_LOST;

answer:

    ngx_http_finalize_request(r, ngx_http_lifecycle_collect_send(r, result,
                                                                 0));
}


/*
 * application/x-www-form-urlencoded as browsers write it: "&"-separated
 * name=value pairs, "+" for a space, %XX escapes; empty pairs are
 * skipped, a field with an empty value counts as absent. Names and
 * values must decode to UTF-8 without control characters.
 */

static ngx_uint_t
ngx_http_lifecycle_collect_form(ngx_http_request_t *r,
    ngx_http_lifecycle_collect_ctx_t *ctx)
{
    u_char      *p, *end, *amp, *eq, *out, name[16];
    size_t       len;
    ngx_uint_t   i, seen;

    out = ngx_pnalloc(r->pool, ctx->len + 1);
    if (out == NULL) {
        return NGX_HTTP_LIFECYCLE_COLLECT_NRESULTS;
    }

    seen = 0;
    p = ctx->body;
    end = ctx->body + ctx->len;

    while (p < end) {
        amp = ngx_strlchr(p, end, '&');
        if (amp == NULL) {
            amp = end;
        }

        if (amp == p) {
            p++;
            continue;
        }

        eq = ngx_strlchr(p, amp, '=');
        if (eq == NULL) {
            eq = amp;
        }

        /* the name: the longest known is "currency" */

        if (eq - p > 3 * (ssize_t) sizeof(name)) {
            return NGX_HTTP_LIFECYCLE_COLLECT_UNKNOWN_FIELD;
        }

        if (ngx_http_lifecycle_collect_decode(p, eq, out, &len) != NGX_OK
            || !ngx_http_lifecycle_collect_text(out, len))
        {
            return NGX_HTTP_LIFECYCLE_COLLECT_BAD_ENCODING;
        }

        if (len > sizeof(name)) {
            return NGX_HTTP_LIFECYCLE_COLLECT_UNKNOWN_FIELD;
        }

        ngx_memcpy(name, out, len);

        for (i = 0; i < NGX_HTTP_LIFECYCLE_NFIELDS; i++) {
            if (len == ngx_http_lifecycle_collect_fields[i].len
                && ngx_strncmp(name, ngx_http_lifecycle_collect_fields[i].data,
                               len)
                   == 0)
            {
                break;
            }
        }

        if (i == NGX_HTTP_LIFECYCLE_NFIELDS) {
            return NGX_HTTP_LIFECYCLE_COLLECT_UNKNOWN_FIELD;
        }

        if (seen & ((ngx_uint_t) 1 << i)) {
            return NGX_HTTP_LIFECYCLE_COLLECT_DUPLICATE_FIELD;
        }

        seen |= (ngx_uint_t) 1 << i;

        /* the value */

        len = 0;

        if (eq < amp
            && (ngx_http_lifecycle_collect_decode(eq + 1, amp, out, &len)
                != NGX_OK
                || !ngx_http_lifecycle_collect_text(out, len)))
        {
            return NGX_HTTP_LIFECYCLE_COLLECT_BAD_ENCODING;
        }

        ctx->field[i].data = out;
        ctx->field[i].len = len;
        out += len;

        p = amp + 1;
    }

    return NGX_HTTP_LIFECYCLE_COLLECT_ACCEPTED;
}


static ngx_int_t
ngx_http_lifecycle_collect_decode(u_char *src, u_char *end, u_char *dst,
    size_t *len)
{
    u_char  *d, c, h, l;

    d = dst;

    while (src < end) {
        c = *src++;

        if (c == '+') {
            *d++ = ' ';
            continue;
        }

        if (c != '%') {
            *d++ = c;
            continue;
        }

        if (end - src < 2) {
            return NGX_ERROR;
        }

        h = src[0];
        l = src[1];

        h = (h >= '0' && h <= '9') ? h - '0'
            : ((h | 0x20) >= 'a' && (h | 0x20) <= 'f') ? (h | 0x20) - 'a' + 10
            : 0xff;
        l = (l >= '0' && l <= '9') ? l - '0'
            : ((l | 0x20) >= 'a' && (l | 0x20) <= 'f') ? (l | 0x20) - 'a' + 10
            : 0xff;

        if (h == 0xff || l == 0xff) {
            return NGX_ERROR;
        }

        *d++ = (u_char) ((h << 4) | l);
        src += 2;
    }

    *len = d - dst;

    return NGX_OK;
}


/*
 * Well-formed UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF) without C0 or C1 control characters or DEL.
 */

static ngx_uint_t
ngx_http_lifecycle_collect_text(u_char *p, size_t len)
{
    u_char      c, lo, hi;
    u_char     *last;
    ngx_uint_t  n;

    last = p + len;

    while (p < last) {
        c = *p++;

        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) {
                return 0;
            }

            continue;
        }

        lo = 0x80;
        hi = 0xbf;

        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;

            if (c == 0xc2) {
                lo = 0xa0;                      /* U+0080..U+009F: C1 */
            }

        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;

            if (c == 0xe0) {
                lo = 0xa0;                      /* overlong */

            } else if (c == 0xed) {
                hi = 0x9f;                      /* surrogates */
            }

        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;

            if (c == 0xf0) {
                lo = 0x90;                      /* overlong */

            } else if (c == 0xf4) {
                hi = 0x8f;                      /* past U+10FFFF */
            }

        } else {
            return 0;
        }

        if ((size_t) (last - p) < n || p[0] < lo || p[0] > hi) {
            return 0;
        }

        for (p++, n--; n; p++, n--) {
            if (*p < 0x80 || *p > 0xbf) {
                return 0;
            }
        }
    }

    return 1;
}


/* a name of 1 to 64 ASCII letters, digits and the characters of "also" */

static ngx_uint_t
ngx_http_lifecycle_collect_word(ngx_str_t *s, char *also)
{
    u_char      c;
    ngx_uint_t  i;

    if (s->len == 0 || s->len > NGX_HTTP_LIFECYCLE_MAX_NAME) {
        return 0;
    }

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || ngx_strchr(also, c)))
        {
            return 0;
        }
    }

    return 1;
}


/* digits, 1 to max of them, no leading zero (but "0" itself if zero) */

static ngx_uint_t
ngx_http_lifecycle_collect_digits(u_char *p, size_t len, size_t max,
    ngx_uint_t zero)
{
    size_t  i;

    if (len == 0 || len > max || (p[0] == '0' && (len > 1 || !zero))) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
    }

    return 1;
}


static ngx_uint_t
ngx_http_lifecycle_collect_amount(ngx_str_t *s)
{
    u_char  *p, *dot, *last;

    last = s->data + s->len;
    dot = ngx_strlchr(s->data, last, '.');

    if (dot == NULL) {
        return ngx_http_lifecycle_collect_digits(s->data, s->len,
                                                 NGX_HTTP_LIFECYCLE_MAX_UNITS,
                                                 1);
    }

    if (!ngx_http_lifecycle_collect_digits(s->data, dot - s->data,
                                           NGX_HTTP_LIFECYCLE_MAX_UNITS, 1)
        || last - dot < 2 || last - dot > 3)
    {
        return 0;
    }

    for (p = dot + 1; p < last; p++) {
        if (*p < '0' || *p > '9') {
            return 0;
        }
    }

    return 1;
}


static ngx_uint_t
ngx_http_lifecycle_collect_check(ngx_http_request_t *r,
    ngx_http_lifecycle_collect_ctx_t *ctx)
{
    u_char                             *p;
    size_t                              len;
    ngx_str_t                          *f;
    ngx_uint_t                          i, given, missing;
    ngx_http_lifecycle_beacon_t        *ev;
    ngx_http_lifecycle_main_conf_t     *lmcf;
    ngx_http_lifecycle_popup_window_t  *w;

    f = ctx->field;

    if (f[NGX_HTTP_LIFECYCLE_FIELD_E].len == 0) {
        return NGX_HTTP_LIFECYCLE_COLLECT_MISSING_FIELD;
    }

    for (ev = ngx_http_lifecycle_beacons; ev->name.len; ev++) {
        if (ev->name.len == f[NGX_HTTP_LIFECYCLE_FIELD_E].len
            && ngx_strncmp(ev->name.data, f[NGX_HTTP_LIFECYCLE_FIELD_E].data,
                           ev->name.len)
               == 0)
        {
            break;
        }
    }

    if (ev->name.len == 0) {
        return NGX_HTTP_LIFECYCLE_COLLECT_BAD_EVENT;
    }

    ctx->event = ev - ngx_http_lifecycle_beacons;

    given = 0;

    for (i = 1; i < NGX_HTTP_LIFECYCLE_NFIELDS; i++) {
        if (f[i].len) {
            given |= (ngx_uint_t) 1 << i;
        }
    }

    if (given & ~ev->allowed) {
        return NGX_HTTP_LIFECYCLE_COLLECT_UNEXPECTED_FIELD;
    }

    missing = ev->required & ~given;

    if (missing == NGX_HTTP_LIFECYCLE_F(CONSENT)) {
        return NGX_HTTP_LIFECYCLE_COLLECT_CONSENT_REQUIRED;
    }

    if (missing) {
        return NGX_HTTP_LIFECYCLE_COLLECT_MISSING_FIELD;
    }

    /* id and order: what lifecycle_view keeps of an id */

    if (f[NGX_HTTP_LIFECYCLE_FIELD_ID].len > NGX_HTTP_LIFECYCLE_MAX_ID) {
        return NGX_HTTP_LIFECYCLE_COLLECT_BAD_ID;
    }

    /* qty: 1..999 */

    if (f[NGX_HTTP_LIFECYCLE_FIELD_QTY].len
        && !ngx_http_lifecycle_collect_digits(
                                     f[NGX_HTTP_LIFECYCLE_FIELD_QTY].data,
                                     f[NGX_HTTP_LIFECYCLE_FIELD_QTY].len, 3, 0))
    {
        return NGX_HTTP_LIFECYCLE_COLLECT_BAD_QTY;
    }

    /* value: 0 to 999999999.99, at most two decimals */

    if (f[NGX_HTTP_LIFECYCLE_FIELD_VALUE].len
        && !ngx_http_lifecycle_collect_amount(
                                           &f[NGX_HTTP_LIFECYCLE_FIELD_VALUE]))
    {
        return NGX_HTTP_LIFECYCLE_COLLECT_BAD_VALUE;
    }

    /* currency: ISO 4217, three upper-case letters */

    p = f[NGX_HTTP_LIFECYCLE_FIELD_CURRENCY].data;
    len = f[NGX_HTTP_LIFECYCLE_FIELD_CURRENCY].len;

    if (len && (len != 3 || p[0] < 'A' || p[0] > 'Z' || p[1] < 'A'
                || p[1] > 'Z' || p[2] < 'A' || p[2] > 'Z'))
    {
        return NGX_HTTP_LIFECYCLE_COLLECT_BAD_CURRENCY;
    }

    if (f[NGX_HTTP_LIFECYCLE_FIELD_ORDER].len > NGX_HTTP_LIFECYCLE_MAX_ID) {
        return NGX_HTTP_LIFECYCLE_COLLECT_BAD_ORDER;
    }

    /* popup: the name of a lifecycle_popup of this configuration */

    if (f[NGX_HTTP_LIFECYCLE_FIELD_POPUP].len) {
        if (!ngx_http_lifecycle_collect_word(
                                          &f[NGX_HTTP_LIFECYCLE_FIELD_POPUP],
                                          "_-"))
        {
            return NGX_HTTP_LIFECYCLE_COLLECT_BAD_POPUP;
        }

        lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

        if (lmcf->popup_windows == NULL) {
            return NGX_HTTP_LIFECYCLE_COLLECT_BAD_POPUP;
        }

        p = f[NGX_HTTP_LIFECYCLE_FIELD_POPUP].data;
        len = f[NGX_HTTP_LIFECYCLE_FIELD_POPUP].len;
        w = lmcf->popup_windows->elts;

        for (i = 0; i < lmcf->popup_windows->nelts; i++) {
            if (w[i].name.len == len
                && ngx_strncmp(w[i].name.data, p, len) == 0)
            {
                break;
            }
        }

        if (i == lmcf->popup_windows->nelts) {
            return NGX_HTTP_LIFECYCLE_COLLECT_BAD_POPUP;
        }

        ctx->window = w[i].period;
    }

    /* name: of a custom event */

    if (f[NGX_HTTP_LIFECYCLE_FIELD_NAME].len
        && !ngx_http_lifecycle_collect_word(&f[NGX_HTTP_LIFECYCLE_FIELD_NAME],
                                            "_-.:"))
    {
        return NGX_HTTP_LIFECYCLE_COLLECT_BAD_NAME;
    }

    /* email: stored normalised, or refused */

    if (f[NGX_HTTP_LIFECYCLE_FIELD_EMAIL].len) {
        p = ngx_pnalloc(r->pool, LC_EMAIL_MAX);
        if (p == NULL) {
            return NGX_HTTP_LIFECYCLE_COLLECT_NRESULTS;
        }

        len = lc_email_normalize(f[NGX_HTTP_LIFECYCLE_FIELD_EMAIL].data,
                                 f[NGX_HTTP_LIFECYCLE_FIELD_EMAIL].len, p);

        if (len == 0) {
            return NGX_HTTP_LIFECYCLE_COLLECT_BAD_EMAIL;
        }

        f[NGX_HTTP_LIFECYCLE_FIELD_EMAIL].data = p;
        f[NGX_HTTP_LIFECYCLE_FIELD_EMAIL].len = len;
    }

    /* consent: "1", the checkbox's value */

    p = f[NGX_HTTP_LIFECYCLE_FIELD_CONSENT].data;
    len = f[NGX_HTTP_LIFECYCLE_FIELD_CONSENT].len;

    if (len && !(len == 1 && p[0] == '1')) {
        return NGX_HTTP_LIFECYCLE_COLLECT_BAD_CONSENT;
    }

    return NGX_HTTP_LIFECYCLE_COLLECT_ACCEPTED;
}


/*
 * An opt-in is accepted from pages of this site only. Browsers say so
 * with Sec-Fetch-Site (it decides when present: behind a proxy that
 * ends TLS the scheme nginx sees is not the page's); older ones send
 * Origin, which must then be this request's own scheme, host and port.
 */

static ngx_uint_t
ngx_http_lifecycle_collect_same_origin(ngx_http_request_t *r)
{
    ngx_str_t         scheme, host, origin;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *fetch_site, *orig;

    fetch_site = NULL;
    orig = NULL;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("Sec-Fetch-Site") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Sec-Fetch-Site",
                               sizeof("Sec-Fetch-Site") - 1)
               == 0)
        {
            fetch_site = &h[i];

        } else if (h[i].key.len == sizeof("Origin") - 1
                   && ngx_strncasecmp(h[i].key.data, (u_char *) "Origin",
                                      sizeof("Origin") - 1)
                      == 0)
        {
            if (orig) {
                return 0;
            }

            orig = &h[i];
        }
    }

    if (fetch_site) {
        return fetch_site->value.len == sizeof("same-origin") - 1
               && ngx_strncasecmp(fetch_site->value.data,
                                  (u_char *) "same-origin",
                                  sizeof("same-origin") - 1)
                  == 0;
    }

    if (orig == NULL || r->headers_in.host == NULL) {
        return 0;
    }

#if (NGX_HTTP_SSL)
    if (r->connection->ssl) {
        ngx_str_set(&scheme, "https://");

    } else
#endif
    {
        ngx_str_set(&scheme, "http://");
    }

    origin = orig->value;

    if (origin.len <= scheme.len
        || ngx_strncasecmp(origin.data, scheme.data, scheme.len) != 0)
    {
        return 0;
    }

    origin.data += scheme.len;
    origin.len -= scheme.len;
    host = r->headers_in.host->value;

    /* the default port may be written or not */

    ngx_http_lifecycle_collect_default_port(&origin, &scheme);
    ngx_http_lifecycle_collect_default_port(&host, &scheme);

    return origin.len == host.len
           && ngx_strncasecmp(origin.data, host.data, host.len) == 0;
}


/* "host:80" of http://, "host:443" of https:// are "host" */

static void
ngx_http_lifecycle_collect_default_port(ngx_str_t *host, ngx_str_t *scheme)
{
    ngx_str_t  port;

    if (scheme->len == sizeof("https://") - 1) {
        ngx_str_set(&port, ":443");

    } else {
        ngx_str_set(&port, ":80");
    }

    if (host->len > port.len
        && ngx_strncmp(host->data + host->len - port.len, port.data, port.len)
           == 0)
    {
        host->len -= port.len;
    }
}


static ngx_int_t
ngx_http_lifecycle_collect_store(ngx_http_request_t *r,
    ngx_http_lifecycle_collect_ctx_t *ctx)
{
    u_char                             *p, *buf;
    time_t                              ttl;
    ngx_int_t                           rc;
    ngx_str_t                          *f, *ev;
    ngx_uint_t                          i, n;
    ngx_msec_t                          now;
    ngx_time_t                         *tp;
    ngx_http_lifecycle_call_t          *call;
    ngx_http_lifecycle_loc_conf_t      *llcf;
    ngx_http_lifecycle_main_conf_t     *lmcf;
    ngx_http_lifecycle_collect_conf_t  *cc;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_lifecycle_module);
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);
    cc = llcf->collect;

    call = ngx_http_lifecycle_call_create(r,
                                          &ngx_http_lifecycle_collect_script,
                                          ngx_http_lifecycle_collect_sha,
                                          NGX_HTTP_LIFECYCLE_CARG_END - 2);
    if (call == NULL) {
        return NGX_ERROR;
    }

    call->handler = ngx_http_lifecycle_collect_stored;
    call->data = ctx;

    /* the key and the numbers in one buffer */
    buf = ngx_pnalloc(r->pool, LC_PREFIX_LEN + sizeof("v:") - 1 + LC_VID_LEN
                               + 5 * NGX_INT64_LEN);
    if (buf == NULL) {
        return NGX_ERROR;
    }

#define ngx_http_lifecycle_arg(n, start, end)                                \
    call->argv[n] = (const char *) (start);                                  \
    call->argvlen[n] = (end) - (start)

    tp = ngx_timeofday();
    now = (ngx_msec_t) tp->sec * 1000 + tp->msec;
    ttl = lmcf->retention;

    call->argv[NGX_HTTP_LIFECYCLE_CARG_NKEYS] = "1";
    call->argvlen[NGX_HTTP_LIFECYCLE_CARG_NKEYS] = 1;

    p = lc_shard_prefix(buf, lc_shard(ctx->vid));
    ngx_http_lifecycle_arg(NGX_HTTP_LIFECYCLE_CARG_PREFIX, buf, p);
    *p++ = 'v';
    *p++ = ':';
    p = ngx_cpymem(p, ctx->vid, LC_VID_LEN);
    ngx_http_lifecycle_arg(NGX_HTTP_LIFECYCLE_CARG_KEY, buf, p);

    ngx_http_lifecycle_arg(NGX_HTTP_LIFECYCLE_CARG_VID, ctx->vid,
                           ctx->vid + LC_VID_LEN);

    buf = p;
    p = ngx_sprintf(p, "%M", now);
    ngx_http_lifecycle_arg(NGX_HTTP_LIFECYCLE_CARG_NOW, buf, p);

    buf = p;
    p = ngx_sprintf(p, "%T", ttl);
    ngx_http_lifecycle_arg(NGX_HTTP_LIFECYCLE_CARG_TTL, buf, p);

    buf = p;
    p = ngx_sprintf(p, "%M", ctx->window);
    ngx_http_lifecycle_arg(NGX_HTTP_LIFECYCLE_CARG_WINDOW, buf, p);

    buf = p;
    p = ngx_sprintf(p, "%ui", cc->optin_limit);
    ngx_http_lifecycle_arg(NGX_HTTP_LIFECYCLE_CARG_OPTIN_LIMIT, buf, p);

    buf = p;
    p = ngx_sprintf(p, "%M", cc->optin_period);
    ngx_http_lifecycle_arg(NGX_HTTP_LIFECYCLE_CARG_OPTIN_PERIOD, buf, p);

#undef ngx_http_lifecycle_arg

    ev = &ngx_http_lifecycle_beacons[ctx->event].name;
    call->argv[NGX_HTTP_LIFECYCLE_CARG_EVENT] = (const char *) ev->data;
    call->argvlen[NGX_HTTP_LIFECYCLE_CARG_EVENT] = ev->len;

    /* id qty value currency order popup name email, as in the script */

    for (i = NGX_HTTP_LIFECYCLE_FIELD_ID; i <= NGX_HTTP_LIFECYCLE_FIELD_EMAIL;
         i++)
    {
        f = &ctx->field[i];
        n = NGX_HTTP_LIFECYCLE_CARG_FIELDS + i - NGX_HTTP_LIFECYCLE_FIELD_ID;

        /* hiredis reads argvlen bytes: an empty string needs no buffer */
        call->argv[n] = f->len ? (const char *) f->data : "";
        call->argvlen[n] = f->len;
    }

    rc = ngx_http_lifecycle_call(call, llcf->timeout);

    if (rc == NGX_DECLINED) {
        return NGX_DECLINED;
    }

    return NGX_AGAIN;
}


static void
ngx_http_lifecycle_collect_stored(ngx_http_lifecycle_call_t *call)
{
    ngx_http_lifecycle_collect_ctx_t  *ctx = call->data;

    int64_t              retry;
    ngx_uint_t           result;
    ngx_http_request_t  *r;

    r = ctx->request;
    retry = 0;

    if (call->outcome != NGX_HTTP_LIFECYCLE_CALL_REPLY) {
        result = NGX_HTTP_LIFECYCLE_COLLECT_LOST;

    } else if (call->result[0] == 0) {
        result = NGX_HTTP_LIFECYCLE_COLLECT_RATE_LIMITED;
        retry = call->result[1];

    } else {
        result = NGX_HTTP_LIFECYCLE_COLLECT_ACCEPTED;

        if (call->result[0] == 1
            && ctx->event == NGX_HTTP_LIFECYCLE_EV_OPTIN)
        {
            ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_OPTINS);
        }
    }

    ngx_http_finalize_request(r, ngx_http_lifecycle_collect_send(r, result,
                                                                 retry));
}


/*
 * 204 for what was stored, ignored or lost (the browser cannot do
 * better with an error), else the status of the reason and the reason
 * itself: {"error":"..."}. Nothing is cached.
 */

static ngx_int_t
ngx_http_lifecycle_collect_send(ngx_http_request_t *r, ngx_uint_t result,
    int64_t retry_ms)
{
    u_char      *p;
    size_t       len;
    ngx_str_t   *reason;
    ngx_uint_t   status;

    ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_COLLECT + result);

    switch (result) {

    case NGX_HTTP_LIFECYCLE_COLLECT_ACCEPTED:
    case NGX_HTTP_LIFECYCLE_COLLECT_NO_VISITOR:
    case NGX_HTTP_LIFECYCLE_COLLECT_NOT_TRACKED:
    case NGX_HTTP_LIFECYCLE_COLLECT_LOST:
        status = NGX_HTTP_NO_CONTENT;
        break;

    case NGX_HTTP_LIFECYCLE_COLLECT_METHOD:
        status = NGX_HTTP_NOT_ALLOWED;
        break;

    case NGX_HTTP_LIFECYCLE_COLLECT_CONTENT_TYPE:
        status = NGX_HTTP_UNSUPPORTED_MEDIA_TYPE;
        break;

    case NGX_HTTP_LIFECYCLE_COLLECT_TOO_LARGE:
        status = NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
        break;

    case NGX_HTTP_LIFECYCLE_COLLECT_CROSS_ORIGIN:
        status = NGX_HTTP_FORBIDDEN;
        break;

    case NGX_HTTP_LIFECYCLE_COLLECT_RATE_LIMITED:
        status = 429;
        break;

    default:
        status = NGX_HTTP_BAD_REQUEST;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "lifecycle: beacon %V %V",
                   &ngx_http_lifecycle_collect_results[result][0],
                   &ngx_http_lifecycle_collect_results[result][1]);

    if (ngx_http_lifecycle_add_header(r, "Cache-Control",
                                      (u_char *) "no-store",
                                      sizeof("no-store") - 1)
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = status;

    if (status == NGX_HTTP_NO_CONTENT) {
        r->header_only = 1;
        r->headers_out.content_length_n = 0;

        return ngx_http_send_header(r);
    }

    if (status == NGX_HTTP_NOT_ALLOWED
        && ngx_http_lifecycle_add_header(r, "Allow", (u_char *) "POST",
                                         sizeof("POST") - 1)
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (status == 429) {
        p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        len = ngx_sprintf(p, "%L", (retry_ms + 999) / 1000) - p;

        if (ngx_http_lifecycle_add_header(r, "Retry-After", p, len) == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    reason = &ngx_http_lifecycle_collect_results[result][1];

    p = ngx_pnalloc(r->pool, sizeof("{\"error\":\"\"}") - 1 + reason->len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_sprintf(p, "{\"error\":\"%V\"}", reason) - p;

    return ngx_http_lifecycle_send(r, status, "application/json", p, len);
}


