
/*
 * lifecycle: the one Redis round trip of a tracked request. A server-side
 * script records the view, keeps the session, sets retention and appends
 * the event, and answers with the visitor's state. Every key it touches
 * carries the visitor's shard as hash tag (lifecycle_keys.h).
 */


#include "ngx_http_lifecycle_module.h"

#include <ngx_sha1.h>

#include <hiredis/hiredis.h>


#define NGX_HTTP_LIFECYCLE_STR(x)   NGX_HTTP_LIFECYCLE_STR2(x)
#define NGX_HTTP_LIFECYCLE_STR2(x)  #x

/* one request in this many per worker also trims the shard's idle set */
#define NGX_HTTP_LIFECYCLE_TRIM_EVERY  128


enum {
    NGX_HTTP_LIFECYCLE_ARG_CMD = 0,
    NGX_HTTP_LIFECYCLE_ARG_SCRIPT,
    NGX_HTTP_LIFECYCLE_ARG_NKEYS,
    NGX_HTTP_LIFECYCLE_ARG_KEY,
    NGX_HTTP_LIFECYCLE_ARG_NOW,
    NGX_HTTP_LIFECYCLE_ARG_SESSION_TIMEOUT,
    NGX_HTTP_LIFECYCLE_ARG_TTL,
    NGX_HTTP_LIFECYCLE_ARG_FIRST,
    NGX_HTTP_LIFECYCLE_ARG_TYPE,
    NGX_HTTP_LIFECYCLE_ARG_ID,
    NGX_HTTP_LIFECYCLE_ARG_CATEGORY,
    NGX_HTTP_LIFECYCLE_ARG_URI,
    NGX_HTTP_LIFECYCLE_ARG_PREFIX,
    NGX_HTTP_LIFECYCLE_ARG_VID,
    NGX_HTTP_LIFECYCLE_ARG_TRIM,
    NGX_HTTP_LIFECYCLE_ARG_CONTENT,
    NGX_HTTP_LIFECYCLE_ARG_GROUP,
    NGX_HTTP_LIFECYCLE_ARG_COUNTRY,
    NGX_HTTP_LIFECYCLE_ARG_CITY,
    NGX_HTTP_LIFECYCLE_NARGS
};


/*
 * KEYS[1] the profile "lc:{hh}:v:VID"; the other keys are named from
 * ARGV (prefix "lc:{hh}:" and VID) and share its slot.
 * ARGV: now(ms) session_timeout(ms) ttl(s) first(0|1) type id category
 *       uri prefix vid trim_before(ms|0) cart(0|1) group country city
 *       and then the profile fields the module wants back.
 * Answer: { visits, session, new_session, previous_activity(ms|0),
 *           { field, value, ... } of the wanted fields that are set },
 *           and when cart is 1 (a template shows the cart) also the
 *           HGETALL of the cart.
 *
 * A view is one HMGET and one HSET of the profile, which also holds the
 * current session ("s." fields), and one XADD. A session is copied to
 * its own hash when the next one starts; the idle index, the TTLs and
 * that copy are written at session starts (and TTLs once a day).
 */
static ngx_str_t  ngx_http_lifecycle_script = ngx_string(
"local v = KEYS[1]\n"
"local now = tonumber(ARGV[1])\n"
"local ttl = ARGV[3]\n"
"local first = ARGV[4] == '1'\n"
"local typ, id, cat = ARGV[5], ARGV[6], ARGV[7]\n"
"local prefix, vid = ARGV[9], ARGV[10]\n"
"local grp, country, city = ARGV[13], ARGV[14], ARGV[15]\n"
"if typ == 'category' and id ~= '' then cat = id end\n"
"local tf = 't:' .. typ\n"
"local pf = (typ == 'product' and id ~= '') and 'p:' .. id or 'views'\n"
"local cf = (typ ~= '' and cat ~= '') and 'c:' .. cat or 'views'\n"
"local names = {'sess', 'sess_last', 'visits', 'exp', 'views', tf, pf,\n"
"               cf, 'r', 'topn', 'cart', 'purchases', 's.start',\n"
"               's.views', 's.p', 's.c', 's.cart_adds', 's.purchase'}\n"
"local base = #names\n"
"for i = 16, #ARGV do names[#names + 1] = ARGV[i] end\n"
"local got = redis.call('HMGET', v, unpack(names))\n"
"local sess = tonumber(got[1]) or 0\n"
"local visits = tonumber(got[3]) or 0\n"
"local ns = 0\n"
"local upd = {sess_last = now, last = now}\n"
"if sess == 0 or now - (tonumber(got[2]) or 0) > tonumber(ARGV[2]) then\n"
"  if sess > 0 then\n"
"    local old = prefix .. 's:' .. vid .. ':' .. sess\n"
"    redis.call('HSET', old, 'start', got[13] or got[2], 'last', got[2],\n"
"               'views', got[14] or 0, 'p', got[15] or '',\n"
"               'c', got[16] or '', 'cart_adds', got[17] or 0,\n"
"               'purchase', got[18] or '')\n"
"    redis.call('EXPIRE', old, ttl)\n"
"  end\n"
"  visits = visits + 1\n"
"  sess = visits\n"
"  ns = 1\n"
"  upd.visits = visits\n"
"  upd.sess = sess\n"
"  if visits == 1 then upd.first = now end\n"
"  upd['s.start'] = now\n"
"  upd['s.views'] = 0\n"
"  upd['s.p'] = ''\n"
"  upd['s.c'] = ''\n"
"  upd['s.cart_adds'] = 0\n"
"  upd['s.purchase'] = ''\n"
"  got[14], got[15], got[16], got[17] = 0, '', '', 0\n"
"end\n"
"local function push(list, x, max)\n"
"  if not list or list == '' or list == x then return x end\n"
"  local l = '\\n' .. list .. '\\n'\n"
"  local i = string.find(l, '\\n' .. x .. '\\n', 1, true)\n"
"  if i then\n"
"    l = string.sub(l, 1, i) .. string.sub(l, i + #x + 2)\n"
"  elseif select(2, string.gsub(l, '\\n', '')) > max then\n"
"    l = string.match(l, '^(.*\\n)[^\\n]+\\n$')\n"
"  end\n"
"  return x .. string.sub(l, 1, -2)\n"
"end\n"
"if typ ~= '' then\n"
"  upd.views = (tonumber(got[5]) or 0) + 1\n"
"  upd[tf] = (tonumber(got[6]) or 0) + 1\n"
"  upd['s.views'] = (tonumber(got[14]) or 0) + 1\n"
"  local cart = v .. '" LC_KEY_CART "'\n"
"  if pf ~= 'views' then\n"
"    upd[pf] = (tonumber(got[7]) or 0) + 1\n"
"    upd.r = push(got[9], id, " NGX_HTTP_LIFECYCLE_STR(LC_RECENT_MAX) ")\n"
"    upd['s.p'] = push(got[15], id, " NGX_HTTP_LIFECYCLE_STR(LC_SESSION_MAX)
                                      ")\n"
"  elseif typ == 'search' and id ~= '' then\n"
"    local q = v .. '" LC_KEY_SEARCHES "'\n"
"    redis.call('LPUSH', q, id)\n"
"    redis.call('LTRIM', q, 0, " NGX_HTTP_LIFECYCLE_STR(LC_SEARCHES_MAX)
                                 " - 1)\n"
"    redis.call('EXPIRE', q, ttl)\n"
"  elseif typ == 'cart_add' and id ~= '' then\n"
"    redis.call('HINCRBY', cart, id, 1)\n"
"    upd.cart = (tonumber(got[11]) or 0) + 1\n"
"    upd['s.cart_adds'] = (tonumber(got[17]) or 0) + 1\n"
"    redis.call('EXPIRE', cart, ttl)\n"
"  elseif typ == 'cart_remove' and id ~= '' then\n"
"    local n = tonumber(redis.call('HGET', cart, id))\n"
"    if n then\n"
"      redis.call('HDEL', cart, id)\n"
"      upd.cart = math.max((tonumber(got[11]) or 0) - n, 0)\n"
"    end\n"
"  elseif typ == 'purchase' then\n"
"    upd.purchases = (tonumber(got[12]) or 0) + 1\n"
"    upd.cart = 0\n"
"    upd.last_purchase = now\n"
"    upd.last_order = id\n"
"    upd['s.purchase'] = id ~= '' and id or '1'\n"
"    redis.call('DEL', cart)\n"
"    if id ~= '' then\n"
"      local o = v .. '" LC_KEY_ORDERS "'\n"
"      redis.call('LPUSH', o, id)\n"
"      redis.call('LTRIM', o, 0, " NGX_HTTP_LIFECYCLE_STR(LC_ORDERS_MAX)
                                   " - 1)\n"
"      redis.call('EXPIRE', o, ttl)\n"
"    end\n"
"  end\n"
"  if cf ~= 'views' then\n"
"    local n = (tonumber(got[8]) or 0) + 1\n"
"    upd[cf] = n\n"
"    upd['s.c'] = push(got[16], cat, " NGX_HTTP_LIFECYCLE_STR(LC_SESSION_MAX)
                                      ")\n"
"    if n > (tonumber(got[10]) or 0) then\n"
"      upd.topc = cat\n"
"      upd.topn = n\n"
"    end\n"
"  end\n"
"  local ev = {'XADD', prefix .. '" LC_KEY_EVENTS "', 'MAXLEN', '~', "
                NGX_HTTP_LIFECYCLE_STR(LC_STREAM_MAXLEN) ", '*',\n"
"              'type', typ, 'vid', vid, 'sess', sess,\n"
"              'uri', ARGV[8]}\n"
"  if id ~= '' then ev[#ev + 1] = 'id'; ev[#ev + 1] = id end\n"
"  if ARGV[7] ~= '' then ev[#ev + 1] = 'cat'; ev[#ev + 1] = ARGV[7] end\n"
"  if first then ev[#ev + 1] = 'new'; ev[#ev + 1] = '1' end\n"
"  if ns == 1 then ev[#ev + 1] = 'ns'; ev[#ev + 1] = '1' end\n"
"  if grp ~= '' then ev[#ev + 1] = 'grp'; ev[#ev + 1] = grp end\n"
"  redis.call(unpack(ev))\n"
"end\n"
"if grp ~= '' then upd.group = grp end\n"
"if country ~= '' then upd.country = country end\n"
"if city ~= '' then upd.city = city end\n"
"local refresh = not first and (ns == 1 or\n"
"                now - (tonumber(got[4]) or 0) > 86400000)\n"
"if refresh then upd.exp = now end\n"
"local cmd = {'HSET', v}\n"
"for f, x in pairs(upd) do cmd[#cmd + 1] = f; cmd[#cmd + 1] = x end\n"
"redis.call(unpack(cmd))\n"
"if first then\n"
"  redis.call('EXPIRE', v, ttl)\n"
"elseif refresh then\n"
"  redis.call('EXPIRE', v, ttl)\n"
"  redis.call('EXPIRE', v .. '" LC_KEY_SEARCHES "', ttl)\n"
"  redis.call('EXPIRE', v .. '" LC_KEY_CART "', ttl)\n"
"  redis.call('EXPIRE', v .. '" LC_KEY_ORDERS "', ttl)\n"
"  redis.call('ZADD', prefix .. '" LC_KEY_IDLE "', now, vid .. ':' .. sess)\n"
"end\n"
"if ARGV[11] ~= '0' then\n"
"  redis.call('ZREMRANGEBYSCORE', prefix .. '" LC_KEY_IDLE "', '-inf',\n"
"             ARGV[11])\n"
"end\n"
"local out = {}\n"
"for i = base + 1, #names do\n"
"  local f = names[i]\n"
"  local x = upd[f]\n"
"  if x == nil then x = got[i] end\n"
"  if x then out[#out + 1] = f; out[#out + 1] = tostring(x) end\n"
"end\n"
"local answer = {visits, sess, ns, tonumber(got[2]) or 0, out}\n"
"if ARGV[12] == '1' then\n"
"  answer[6] = redis.call('HGETALL', v .. '" LC_KEY_CART "')\n"
"end\n"
"return answer\n");


static void ngx_http_lifecycle_profile_reply(void *data, void *reply);
static ngx_http_lifecycle_profile_t *ngx_http_lifecycle_profile_parse(
    ngx_http_request_t *r, void *reply);
static ngx_int_t ngx_http_lifecycle_profile_send(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx);
static ngx_int_t ngx_http_lifecycle_profile_popup(ngx_http_request_t *r,
    ngx_array_t *popups, redisReply *field, redisReply *value);
static ngx_int_t ngx_http_lifecycle_profile_recent(ngx_http_request_t *r,
    ngx_http_lifecycle_profile_t *p, redisReply *value);


static u_char      ngx_http_lifecycle_script_sha[40];
static ngx_uint_t  ngx_http_lifecycle_requests;


void
ngx_http_lifecycle_profile_init(void)
{
    u_char      digest[20];
    ngx_sha1_t  sha1;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, ngx_http_lifecycle_script.data,
                    ngx_http_lifecycle_script.len);
    ngx_sha1_final(digest, &sha1);

    ngx_hex_dump(ngx_http_lifecycle_script_sha, digest, sizeof(digest));
}


ngx_str_t *
ngx_http_lifecycle_profile_script(void)
{
    return &ngx_http_lifecycle_script;
}


ngx_int_t
ngx_http_lifecycle_profile_request(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx)
{
    u_char                          *p, *numbers;
    time_t                           ttl;
    ngx_str_t                       *wanted;
    ngx_uint_t                       i, j, recent;
    ngx_msec_t                       now;
    ngx_time_t                      *tp;
    ngx_str_t                       *type, args[NGX_HTTP_LIFECYCLE_NARGS];
    ngx_http_lifecycle_loc_conf_t   *llcf;
    ngx_http_lifecycle_srv_conf_t   *lscf;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lscf = ngx_http_get_module_srv_conf(r, ngx_http_lifecycle_module);
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

    ngx_memzero(args, sizeof(args));

    /* key, then the numbers: one allocation for all the small strings */
    numbers = ngx_pnalloc(r->pool, LC_PREFIX_LEN + sizeof("v:") - 1
                                   + LC_VID_LEN + 5 * NGX_INT64_LEN);
    if (numbers == NULL) {
        return NGX_ERROR;
    }

    tp = ngx_timeofday();
    now = (ngx_msec_t) tp->sec * 1000 + tp->msec;
    ttl = ctx->new_visitor ? LC_FIRST_REQUEST_TTL : lmcf->retention;

    p = numbers;

    args[NGX_HTTP_LIFECYCLE_ARG_PREFIX].data = p;
    args[NGX_HTTP_LIFECYCLE_ARG_PREFIX].len = LC_PREFIX_LEN;
    args[NGX_HTTP_LIFECYCLE_ARG_KEY].data = p;
    p = lc_shard_prefix(p, lc_shard(ctx->vid));
    *p++ = 'v';
    *p++ = ':';
    p = ngx_cpymem(p, ctx->vid, LC_VID_LEN);
    args[NGX_HTTP_LIFECYCLE_ARG_KEY].len = p - numbers;

    args[NGX_HTTP_LIFECYCLE_ARG_NOW].data = p;
    p = ngx_sprintf(p, "%M", now);
    args[NGX_HTTP_LIFECYCLE_ARG_NOW].len =
                                   p - args[NGX_HTTP_LIFECYCLE_ARG_NOW].data;

    args[NGX_HTTP_LIFECYCLE_ARG_SESSION_TIMEOUT].data = p;
    p = ngx_sprintf(p, "%M", lscf->session_timeout);
    args[NGX_HTTP_LIFECYCLE_ARG_SESSION_TIMEOUT].len =
                       p - args[NGX_HTTP_LIFECYCLE_ARG_SESSION_TIMEOUT].data;

    args[NGX_HTTP_LIFECYCLE_ARG_TTL].data = p;
    p = ngx_sprintf(p, "%T", ttl);
    args[NGX_HTTP_LIFECYCLE_ARG_TTL].len =
                                   p - args[NGX_HTTP_LIFECYCLE_ARG_TTL].data;

    args[NGX_HTTP_LIFECYCLE_ARG_TRIM].data = p;

    if (++ngx_http_lifecycle_requests % NGX_HTTP_LIFECYCLE_TRIM_EVERY == 0) {
        p = ngx_sprintf(p, "%M",
                        now - (ngx_msec_t) lmcf->retention * 1000);
    } else {
        *p++ = '0';
    }

    args[NGX_HTTP_LIFECYCLE_ARG_TRIM].len =
                                  p - args[NGX_HTTP_LIFECYCLE_ARG_TRIM].data;

    ngx_str_set(&args[NGX_HTTP_LIFECYCLE_ARG_CMD], "EVALSHA");
    args[NGX_HTTP_LIFECYCLE_ARG_SCRIPT].data = ngx_http_lifecycle_script_sha;
    args[NGX_HTTP_LIFECYCLE_ARG_SCRIPT].len = 40;
    ngx_str_set(&args[NGX_HTTP_LIFECYCLE_ARG_NKEYS], "1");

    if (ctx->new_visitor) {
        ngx_str_set(&args[NGX_HTTP_LIFECYCLE_ARG_FIRST], "1");
    } else {
        ngx_str_set(&args[NGX_HTTP_LIFECYCLE_ARG_FIRST], "0");
    }

    if (ctx->view) {
        type = &ngx_http_lifecycle_view_types[ctx->view->type];
        args[NGX_HTTP_LIFECYCLE_ARG_TYPE] = *type;
        args[NGX_HTTP_LIFECYCLE_ARG_ID] = ctx->view_id;
        args[NGX_HTTP_LIFECYCLE_ARG_CATEGORY] = ctx->view_category;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_lifecycle_module);

    /* the recent products and the cart only for templates that show them */

    recent = 0;

    if (ctx->group != NGX_HTTP_LIFECYCLE_GROUP_CONTROL) {
        recent = (llcf->uses & NGX_HTTP_LIFECYCLE_USES_RECENT) != 0;

        if (llcf->uses & NGX_HTTP_LIFECYCLE_USES_CART) {
            ngx_str_set(&args[NGX_HTTP_LIFECYCLE_ARG_CONTENT], "1");
        }
    }

    if (lscf->holdout) {
        args[NGX_HTTP_LIFECYCLE_ARG_GROUP] =
                                       ngx_http_lifecycle_groups[ctx->group];
    }

    args[NGX_HTTP_LIFECYCLE_ARG_COUNTRY] = ctx->country;
    args[NGX_HTTP_LIFECYCLE_ARG_CITY] = ctx->city;

    args[NGX_HTTP_LIFECYCLE_ARG_URI] = r->uri;
    args[NGX_HTTP_LIFECYCLE_ARG_VID].data = ctx->vid;
    args[NGX_HTTP_LIFECYCLE_ARG_VID].len = LC_VID_LEN;

    /* then the profile fields wanted back, and the recent products */

    wanted = lmcf->wanted->elts;
    ctx->argc = NGX_HTTP_LIFECYCLE_NARGS + lmcf->wanted->nelts + recent;

    ctx->argv = ngx_palloc(r->pool, ctx->argc
                                    * (sizeof(char *) + sizeof(size_t)));
    if (ctx->argv == NULL) {
        return NGX_ERROR;
    }

    ctx->argvlen = (size_t *) (ctx->argv + ctx->argc);

    for (i = 0; i < NGX_HTTP_LIFECYCLE_NARGS; i++) {
        /* hiredis reads argvlen bytes: an empty string needs no buffer */
        ctx->argv[i] = args[i].data ? (const char *) args[i].data : "";
        ctx->argvlen[i] = args[i].len;
    }

    for (j = 0; j < lmcf->wanted->nelts; j++, i++) {
        ctx->argv[i] = (const char *) wanted[j].data;
        ctx->argvlen[i] = wanted[j].len;
    }

    if (recent) {
        ctx->argv[i] = "r";
        ctx->argvlen[i] = 1;
    }

    if (ctx->view) {
        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_VIEWS
                                    + ctx->view->type);

        if (ctx->view->type == NGX_HTTP_LIFECYCLE_VIEW_PURCHASE) {
            ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_CONVERSIONS
                                        + ctx->group);
        }
    }

    return ngx_http_lifecycle_profile_send(r, ctx);
}


static ngx_int_t
ngx_http_lifecycle_profile_send(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx)
{
    ctx->pending = ngx_http_lifecycle_redis_command(r->connection->log,
                                          ngx_http_lifecycle_profile_reply,
                                          ctx, ctx->argc,
                                          ctx->argv, ctx->argvlen);

    /* Redis is not there: the page goes out with its default content */
    if (ctx->pending == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_http_lifecycle_redis_behind()) {
        ctx->pending->data = NULL;
        ctx->pending = NULL;

        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_PROFILE_TIMEOUTS);
        return NGX_DECLINED;
    }

    return NGX_AGAIN;
}


static void
ngx_http_lifecycle_profile_reply(void *data, void *reply)
{
    ngx_http_lifecycle_ctx_t  *ctx = data;

    redisReply          *rr = reply;
    ngx_http_request_t  *r;

    ctx->pending = NULL;
    r = ctx->request;

    if (rr == NULL) {
        goto wake;
    }

    if (rr->type == REDIS_REPLY_ERROR) {

        /* Redis restarted or SCRIPT FLUSH: EVAL sends and caches it */
        if (!ctx->retried && rr->len >= 8
            && ngx_strncmp(rr->str, "NOSCRIPT", 8) == 0)
        {
            ctx->retried = 1;
            ctx->argv[NGX_HTTP_LIFECYCLE_ARG_CMD] = "EVAL";
            ctx->argvlen[NGX_HTTP_LIFECYCLE_ARG_CMD] = 4;
            ctx->argv[NGX_HTTP_LIFECYCLE_ARG_SCRIPT] =
                                  (const char *) ngx_http_lifecycle_script.data;
            ctx->argvlen[NGX_HTTP_LIFECYCLE_ARG_SCRIPT] =
                                                ngx_http_lifecycle_script.len;

            if (ngx_http_lifecycle_profile_send(r, ctx) == NGX_AGAIN) {
                return;
            }

            goto wake;
        }

        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_REDIS_ERRORS);

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "lifecycle: profile script failed: %*s",
                      (size_t) rr->len, rr->str);
        goto wake;
    }

    if (rr->type != REDIS_REPLY_ARRAY || rr->elements < 5
        || rr->element[0]->type != REDIS_REPLY_INTEGER
        || rr->element[1]->type != REDIS_REPLY_INTEGER
        || rr->element[2]->type != REDIS_REPLY_INTEGER
        || rr->element[3]->type != REDIS_REPLY_INTEGER
        || rr->element[4]->type != REDIS_REPLY_ARRAY)
    {
        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_REDIS_ERRORS);

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "lifecycle: unexpected reply from the profile script");
        goto wake;
    }

    ctx->session = (ngx_uint_t) rr->element[1]->integer;

    if (rr->element[2]->integer) {
        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_SESSIONS_NEW);
        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_GROUP_SESSIONS
                                    + ctx->group);
    }

    /* the reply is freed when this returns: the profile is copied */
    ctx->profile = ngx_http_lifecycle_profile_parse(r, rr);

wake:

    if (!ctx->waiting) {
        return;
    }

    if (ctx->wake.timer_set) {
        ngx_del_timer(&ctx->wake);
    }

    ngx_post_event(&ctx->wake, &ngx_posted_events);
}


static ngx_uint_t
ngx_http_lifecycle_profile_number(redisReply *value)
{
    ngx_int_t  n;

    n = ngx_atoi((u_char *) value->str, value->len);

    return (n == NGX_ERROR) ? 0 : (ngx_uint_t) n;
}


static ngx_int_t
ngx_http_lifecycle_profile_count(ngx_http_request_t *r, ngx_array_t *a,
    redisReply *field, redisReply *value)
{
    ngx_http_lifecycle_count_t  *c;

    c = ngx_array_push(a);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->key.len = field->len - 2;
    c->key.data = ngx_pnalloc(r->pool, c->key.len);
    if (c->key.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(c->key.data, field->str + 2, c->key.len);
    c->count = ngx_http_lifecycle_profile_number(value);

    return NGX_OK;
}


static ngx_int_t
ngx_http_lifecycle_profile_string(ngx_http_request_t *r, ngx_str_t *s,
    redisReply *value)
{
    s->len = value->len;
    s->data = ngx_pnalloc(r->pool, s->len);
    if (s->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(s->data, value->str, s->len);

    return NGX_OK;
}


#define ngx_http_lifecycle_field_is(f, name)                                  \
    ((f)->len == sizeof(name) - 1                                             \
     && ngx_strncmp((f)->str, name, sizeof(name) - 1) == 0)


static ngx_http_lifecycle_profile_t *
ngx_http_lifecycle_profile_parse(ngx_http_request_t *r, void *reply)
{
    redisReply                    *rr = reply;

    size_t                         i;
    ngx_int_t                      rc;
    ngx_uint_t                     t;
    ngx_str_t                      type;
    redisReply                    *hash, *f, *v;
    ngx_http_lifecycle_count_t    *item;
    ngx_http_lifecycle_profile_t  *p;

    p = ngx_pcalloc(r->pool, sizeof(ngx_http_lifecycle_profile_t));
    if (p == NULL) {
        return NULL;
    }

    if (ngx_array_init(&p->products, r->pool, 8,
                       sizeof(ngx_http_lifecycle_count_t))
        != NGX_OK
        || ngx_array_init(&p->categories, r->pool, 4,
                          sizeof(ngx_http_lifecycle_count_t))
           != NGX_OK
        || ngx_array_init(&p->popups, r->pool, 1,
                          sizeof(ngx_http_lifecycle_popup_state_t))
           != NGX_OK
        || ngx_array_init(&p->recent, r->pool, 1, sizeof(ngx_str_t))
           != NGX_OK
        || ngx_array_init(&p->cart_items, r->pool, 1,
                          sizeof(ngx_http_lifecycle_count_t))
           != NGX_OK)
    {
        return NULL;
    }

    p->visits = (ngx_uint_t) rr->element[0]->integer;
    p->previous = (uint64_t) rr->element[3]->integer;
    hash = rr->element[4];

    for (i = 0; i + 1 < hash->elements; i += 2) {
        f = hash->element[i];
        v = hash->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        rc = NGX_OK;

        if (f->len > 4 && ngx_strncmp(f->str, "pop:", 4) == 0) {
            rc = ngx_http_lifecycle_profile_popup(r, &p->popups, f, v);

        } else if (f->len > 2 && f->str[1] == ':') {

            switch (f->str[0]) {

            case 'p':
                rc = ngx_http_lifecycle_profile_count(r, &p->products, f, v);
                break;

            case 'c':
                rc = ngx_http_lifecycle_profile_count(r, &p->categories, f,
                                                      v);
                break;

            case 't':
                type.data = (u_char *) f->str + 2;
                type.len = f->len - 2;

                for (t = 0; t < NGX_HTTP_LIFECYCLE_VIEW_NTYPES; t++) {
                    if (type.len == ngx_http_lifecycle_view_types[t].len
                        && ngx_strncmp(type.data,
                                       ngx_http_lifecycle_view_types[t].data,
                                       type.len)
                           == 0)
                    {
                        p->type_views[t] =
                                     ngx_http_lifecycle_profile_number(v);
                        break;
                    }
                }

                break;
            }

        } else if (ngx_http_lifecycle_field_is(f, "views")) {
            p->views = ngx_http_lifecycle_profile_number(v);

        } else if (ngx_http_lifecycle_field_is(f, "cart")) {
            p->cart = ngx_http_lifecycle_profile_number(v);

        } else if (ngx_http_lifecycle_field_is(f, "purchases")) {
            p->purchases = ngx_http_lifecycle_profile_number(v);

        } else if (ngx_http_lifecycle_field_is(f, "country")) {
            rc = ngx_http_lifecycle_profile_string(r, &p->country, v);

        } else if (ngx_http_lifecycle_field_is(f, "optin")) {
            rc = ngx_http_lifecycle_profile_string(r, &p->optin, v);

        } else if (ngx_http_lifecycle_field_is(f, "topc")) {
            rc = ngx_http_lifecycle_profile_string(r, &p->top_category, v);

        } else if (ngx_http_lifecycle_field_is(f, "r")) {
            rc = ngx_http_lifecycle_profile_recent(r, p, v);
        }

        if (rc != NGX_OK) {
            return NULL;
        }
    }

    if (rr->elements < 6 || rr->element[5]->type != REDIS_REPLY_ARRAY) {
        return p;
    }

    hash = rr->element[5];

    for (i = 0; i + 1 < hash->elements; i += 2) {
        f = hash->element[i];
        v = hash->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        item = ngx_array_push(&p->cart_items);
        if (item == NULL
            || ngx_http_lifecycle_profile_string(r, &item->key, f) != NGX_OK)
        {
            return NULL;
        }

        item->count = ngx_http_lifecycle_profile_number(v);
    }

    return p;
}


/* "r": the recent product ids, newest first, one per line */

static ngx_int_t
ngx_http_lifecycle_profile_recent(ngx_http_request_t *r,
    ngx_http_lifecycle_profile_t *p, redisReply *value)
{
    u_char     *s, *last, *nl;
    ngx_str_t  *id, copy;

    if (ngx_http_lifecycle_profile_string(r, &copy, value) != NGX_OK) {
        return NGX_ERROR;
    }

    s = copy.data;
    last = copy.data + copy.len;

    while (s < last) {
        nl = ngx_strlchr(s, last, '\n');
        if (nl == NULL) {
            nl = last;
        }

        if (nl > s) {
            id = ngx_array_push(&p->recent);
            if (id == NULL) {
                return NGX_ERROR;
            }

            id->data = s;
            id->len = nl - s;
        }

        s = nl + 1;
    }

    return NGX_OK;
}


/* "pop:NAME:n" shows, ":t" window start, ":d" dismissed, ":c" converted */

static ngx_int_t
ngx_http_lifecycle_profile_popup(ngx_http_request_t *r, ngx_array_t *popups,
    redisReply *field, redisReply *value)
{
    u_char                            *name, kind;
    size_t                             len;
    uint64_t                           n;
    ngx_uint_t                         i;
    ngx_http_lifecycle_popup_state_t  *st;

    if (field->len < sizeof("pop:x:n") - 1
        || field->str[field->len - 2] != ':')
    {
        return NGX_OK;
    }

    name = (u_char *) field->str + 4;
    len = field->len - 6;
    kind = field->str[field->len - 1];
    n = ngx_http_lifecycle_profile_number(value);

    st = popups->elts;

    for (i = 0; i < popups->nelts; i++) {
        if (st[i].name.len == len
            && ngx_strncmp(st[i].name.data, name, len) == 0)
        {
            break;
        }
    }

    if (i == popups->nelts) {
        st = ngx_array_push(popups);
        if (st == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(st, sizeof(ngx_http_lifecycle_popup_state_t));

        st->name.data = ngx_pnalloc(r->pool, len);
        if (st->name.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(st->name.data, name, len);
        st->name.len = len;

    } else {
        st = &st[i];
    }

    switch (kind) {

    case 'n':
        st->shown = n;
        break;

    case 't':
        st->since = n;
        break;

    case 'd':
        st->dismissed = n;
        break;

    case 'c':
        st->converted = n;
        break;
    }

    return NGX_OK;
}
