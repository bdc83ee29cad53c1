
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

/* the fields the script reads for itself, before those wanted back */
#define NGX_HTTP_LIFECYCLE_OWN_FIELDS  11


enum {
    NGX_HTTP_LIFECYCLE_ARG_CMD = 0,
    NGX_HTTP_LIFECYCLE_ARG_SCRIPT,
    NGX_HTTP_LIFECYCLE_ARG_NKEYS,
    NGX_HTTP_LIFECYCLE_ARG_KEY,
    NGX_HTTP_LIFECYCLE_ARG_NOW,
    NGX_HTTP_LIFECYCLE_ARG_CUTOFF,
    NGX_HTTP_LIFECYCLE_ARG_TYPE,
    NGX_HTTP_LIFECYCLE_ARG_ID,
    NGX_HTTP_LIFECYCLE_ARG_CATEGORY,
    NGX_HTTP_LIFECYCLE_ARG_OPTIONS,
    NGX_HTTP_LIFECYCLE_ARG_DAY,
    NGX_HTTP_LIFECYCLE_ARG_GROUP,
    NGX_HTTP_LIFECYCLE_ARG_COUNTRY,
    NGX_HTTP_LIFECYCLE_ARG_CITY,
    NGX_HTTP_LIFECYCLE_NARGS
};


/*
 * The script is made when the configuration is loaded: the retention
 * and the profile fields the configuration reads are written into it
 * (@NAME@ below), so a call carries only what the request knows.
 *
 * KEYS[1] the profile "lc:{hh}:v:VID"; the other keys are named from it
 * ("lc:{hh}:" is its first 8 bytes, VID what follows "v:") and share its
 * slot.
 * ARGV: now(ms) session_cutoff(ms) type id category options day(ms)
 *       [group country city]; times are 13 digits, so that they compare
 *       as strings (no tonumber() a call): the session goes on when its
 *       last activity is after the cutoff (now less the session timeout),
 *       the TTLs are renewed at the first request since "day" (the start
 *       of the UTC day); options are letters: n a new visitor
 *       (cookie just issued), r answer the recent products, k answer the
 *       cart, t trim the shard's idle index and event stream (one request
 *       in 128: a shard's stream outgrows its bound by about 128 events).
 * Answer: { session, new_session(0|1), previous_activity(ms|0),
 *           the wanted fields in configuration order (after this
 *           request), [recent list], [HGETALL of the cart] }.
 *
 * The first request of a new visitor stores "visits" as 0: session 1,
 * until the cookie comes back; that request then gives the keys the
 * retention and the session its idle entry.
 *
 * A steady view is one HMGET and one HSET of the profile and one XADD;
 * of the session's lists it reads the one it changes: the products for
 * a product view, the categories (of the category pages seen: those of
 * the products are the catalog's) for a category view.
 * Numbers go to Redis as string.format('%d') strings: a Lua number
 * given to redis.call is printed with "%.17g", which costs far more.
 * Lists ("r", "s.p", "s.c") are "\nid\nid\n", newest first, trimmed back
 * to their bound by one pattern once longer than 8 bytes an entry: the
 * bytes a list carries are what a view costs most, after the commands.
 */
static char  ngx_http_lifecycle_script_template[] =
"local v, now, typ, id, cat, o = KEYS[1], ARGV[1], ARGV[3], ARGV[4],\n"
"  ARGV[5], ARGV[6]\n"
"local grp, country, city = ARGV[8] or '', ARGV[9] or '', ARGV[10] or ''\n"
"local find, sub, fmt = string.find, string.sub, string.format\n"
"local first = o ~= '' and find(o, 'n', 1, true)\n"
"if typ == 'category' and id ~= '' then cat = id end\n"
"local tf, pf, cf = 't:' .. typ, 'p:' .. id, 'c:' .. cat\n"
"local sl = typ == 'category' and 's.c' or 's.p'\n"
"local g\n"
"if first then\n"
"  g = {@FALSES@}\n"
"else\n"
"  g = redis.call('HMGET', v, 'visits', 'last', 'views', tf, pf, cf,\n"
"    'topn', 'r', sl, 'cart', 'purchases'@FIELDS@)\n"
"end\n"
"local sess = tonumber(g[1]) or 0\n"
"local last = g[2] or '0'\n"
"local ns, refresh, topc = 0, false, nil\n"
"local pre, vid = sub(v, 1, 8), sub(v, 11)\n"
"local h = {'HSET', v, 'last', now@SLOTS@}\n"
"local n = 4\n"
"local back = g[1] == '0'\n"
"if back then sess = 1 end\n"
"if sess == 0 or last < ARGV[2] then\n"
"  if sess > 0 then\n"
"    local s = redis.call('HMGET', v, 's.start', 's.v0', 's.cart_adds',\n"
"      's.purchase', 's.p', 's.c')\n"
"    local old = pre .. 's:' .. vid .. ':' .. g[1]\n"
"    redis.call('HSET', old, 'start', s[1] or g[2], 'last', g[2],\n"
"      'views', fmt('%d', (tonumber(g[3]) or 0) - (tonumber(s[2]) or 0)),\n"
"      'p', s[5] or '', 'c', s[6] or '', 'cart_adds', s[3] or '0',\n"
"      'purchase', s[4] or '')\n"
"    redis.call('EXPIRE', old, @TTL@)\n"
"  end\n"
"  sess = sess + 1\n"
"  ns = 1\n"
"  g[9] = false\n"
"  h[5], h[6], h[7], h[8] = 'visits', first and '0' or fmt('%d', sess),\n"
"    's.start', now\n"
"  h[9], h[10], h[11], h[12] = 's.v0', g[3] or '0', 's.cart_adds', '0'\n"
"  h[13], h[14], h[15], h[16] = 's.purchase', '', 's.p', ''\n"
"  h[17], h[18] = 's.c', ''\n"
"  n = 18\n"
"  if sess == 1 then h[19], h[20] = 'first', now; n = 20 end\n"
"  refresh = not first\n"
"elseif back then\n"
"  h[5], h[6] = 'visits', '1'\n"
"  n = 6\n"
"  refresh = true\n"
"elseif last < ARGV[7] then\n"
"  refresh = true\n"
"end\n"
"local function push(l, x, trim, max)\n"
"  if not l or l == '' then return '\\n' .. x .. '\\n' end\n"
"  local i = find(l, '\\n' .. x .. '\\n', 1, true)\n"
"  if i == 1 then return l end\n"
"  if i then\n"
"    l = '\\n' .. x .. sub(l, 1, i) .. sub(l, i + #x + 2)\n"
"  else\n"
"    l = '\\n' .. x .. l\n"
"  end\n"
"  if #l > max then l = string.match(l, trim) or l end\n"
"  return l\n"
"end\n"
"if typ ~= '' then\n"
"  g[3] = (tonumber(g[3]) or 0) + 1\n"
"  g[4] = (tonumber(g[4]) or 0) + 1\n"
"  h[n + 1], h[n + 2] = 'views', fmt('%d', g[3]); n = n + 2\n"
"  h[n + 1], h[n + 2] = tf, fmt('%d', g[4]); n = n + 2\n"
"  local ev = {'XADD', pre .. '" LC_KEY_EVENTS "', '*',\n"
"    'type', typ, 'vid', vid, 'sess', ns == 0 and not back and g[1]\n"
"    or fmt('%d', sess),\n"
"    false, false, false, false, false, false, false, false, false, false}\n"
"  local e = 9\n"
"  if id ~= '' then ev[e + 1], ev[e + 2] = 'id', id; e = e + 2 end\n"
"  if typ == 'product' and id ~= '' then\n"
"    g[5] = (tonumber(g[5]) or 0) + 1\n"
"    g[8] = push(g[8], id, '@RECENT_TRIM@', @RECENT_BYTES@)\n"
"    h[n + 1], h[n + 2] = pf, fmt('%d', g[5]); n = n + 2\n"
"    h[n + 1], h[n + 2] = 'r', g[8]; n = n + 2\n"
"    local sp = push(g[9], id, '@SESSION_TRIM@', @SESSION_BYTES@)\n"
"    h[n + 1], h[n + 2] = 's.p', sp; n = n + 2\n"
"  elseif typ == 'search' and id ~= '' then\n"
"    local q = v .. '" LC_KEY_SEARCHES "'\n"
"    redis.call('LPUSH', q, id)\n"
"    redis.call('LTRIM', q, 0, " NGX_HTTP_LIFECYCLE_STR(LC_SEARCHES_MAX)
                                 " - 1)\n"
"    redis.call('EXPIRE', q, first and @FIRST_TTL@ or @TTL@)\n"
"  elseif typ == 'cart_add' and id ~= '' then\n"
"    local cart = v .. '" LC_KEY_CART "'\n"
"    redis.call('HINCRBY', cart, id, 1)\n"
"    redis.call('EXPIRE', cart, first and @FIRST_TTL@ or @TTL@)\n"
"    redis.call('HINCRBY', v, 's.cart_adds', 1)\n"
"    g[10] = (tonumber(g[10]) or 0) + 1\n"
"    h[n + 1], h[n + 2] = 'cart', fmt('%d', g[10]); n = n + 2\n"
"  elseif typ == 'cart_remove' and id ~= '' then\n"
"    local cart = v .. '" LC_KEY_CART "'\n"
"    local q = tonumber(redis.call('HGET', cart, id))\n"
"    if q then\n"
"      redis.call('HDEL', cart, id)\n"
"      g[10] = math.max((tonumber(g[10]) or 0) - q, 0)\n"
"      h[n + 1], h[n + 2] = 'cart', fmt('%d', g[10]); n = n + 2\n"
"    end\n"
"  elseif typ == 'purchase' then\n"
"    g[11] = (tonumber(g[11]) or 0) + 1\n"
"    g[10] = 0\n"
"    h[n + 1], h[n + 2] = 'purchases', fmt('%d', g[11]); n = n + 2\n"
"    h[n + 1], h[n + 2] = 'cart', '0'; n = n + 2\n"
"    h[n + 1], h[n + 2] = 'last_purchase', now; n = n + 2\n"
"    h[n + 1], h[n + 2] = 'last_order', id; n = n + 2\n"
"    h[n + 1], h[n + 2] = 's.purchase', id ~= '' and id or '1'; n = n + 2\n"
"    redis.call('DEL', v .. '" LC_KEY_CART "')\n"
"    if id ~= '' then\n"
"      local q = v .. '" LC_KEY_ORDERS "'\n"
"      redis.call('LPUSH', q, id)\n"
"      redis.call('LTRIM', q, 0, " NGX_HTTP_LIFECYCLE_STR(LC_ORDERS_MAX)
                                   " - 1)\n"
"      redis.call('EXPIRE', q, first and @FIRST_TTL@ or @TTL@)\n"
"    end\n"
"  end\n"
"  if cat ~= '' then\n"
"    if typ ~= 'category' then\n"
"      ev[e + 1], ev[e + 2] = 'cat', cat; e = e + 2\n"
"    end\n"
"    g[6] = (tonumber(g[6]) or 0) + 1\n"
"    local cn = fmt('%d', g[6])\n"
"    h[n + 1], h[n + 2] = cf, cn; n = n + 2\n"
"    if typ == 'category' then\n"
"      local sc = push(g[9], cat, '@SESSION_TRIM@', @SESSION_BYTES@)\n"
"      h[n + 1], h[n + 2] = 's.c', sc; n = n + 2\n"
"    end\n"
"    if g[6] > (tonumber(g[7]) or 0) then\n"
"      topc = cat\n"
"      h[n + 1], h[n + 2] = 'topc', cat; n = n + 2\n"
"      h[n + 1], h[n + 2] = 'topn', cn; n = n + 2\n"
"    end\n"
"  end\n"
"  if first then ev[e + 1], ev[e + 2] = 'new', '1'; e = e + 2 end\n"
"  if ns == 1 then ev[e + 1], ev[e + 2] = 'ns', '1'; e = e + 2 end\n"
"  if grp ~= '' then ev[e + 1], ev[e + 2] = 'grp', grp; e = e + 2 end\n"
"  redis.call(unpack(ev, 1, e))\n"
"end\n"
"if grp ~= '' then h[n + 1], h[n + 2] = 'group', grp; n = n + 2 end\n"
"if country ~= '' then h[n + 1], h[n + 2] = 'country', country; n = n + 2 end\n"
"if city ~= '' then h[n + 1], h[n + 2] = 'city', city; n = n + 2 end\n"
"redis.call(unpack(h, 1, n))\n"
"if first then\n"
"  redis.call('EXPIRE', v, @FIRST_TTL@)\n"
"elseif refresh then\n"
"  redis.call('EXPIRE', v, @TTL@)\n"
"  redis.call('EXPIRE', v .. '" LC_KEY_SEARCHES "', @TTL@)\n"
"  redis.call('EXPIRE', v .. '" LC_KEY_CART "', @TTL@)\n"
"  redis.call('EXPIRE', v .. '" LC_KEY_ORDERS "', @TTL@)\n"
"  redis.call('ZADD', pre .. '" LC_KEY_IDLE "', now, vid .. ':' .. sess)\n"
"end\n"
"local a = {sess, ns, last@ANSWER@}\n"
"if o ~= '' then\n"
"  if find(o, 't', 1, true) then\n"
"    redis.call('ZREMRANGEBYSCORE', pre .. '" LC_KEY_IDLE "', '-inf',\n"
"      tonumber(now) - @TTL_MS@)\n"
"    redis.call('XTRIM', pre .. '" LC_KEY_EVENTS "', 'MAXLEN', '~', "
                NGX_HTTP_LIFECYCLE_STR(LC_STREAM_MAXLEN) ")\n"
"  end\n"
"  if find(o, 'r', 1, true) then a[#a + 1] = g[8] or '' end\n"
"  if find(o, 'k', 1, true) then\n"
"    a[#a + 1] = redis.call('HGETALL', v .. '" LC_KEY_CART "')\n"
"  end\n"
"end\n"
"return a\n";


static ngx_int_t ngx_http_lifecycle_profile_piece(ngx_conf_t *cf,
    ngx_str_t *name, ngx_http_lifecycle_main_conf_t *lmcf, ngx_str_t *out);
static u_char *ngx_http_lifecycle_lua_string(u_char *p, ngx_str_t *s);
static ngx_str_t *ngx_http_lifecycle_repeat(ngx_conf_t *cf, char *first,
    char *each, ngx_uint_t n, char *last);
static void ngx_http_lifecycle_profile_reply(void *data, void *reply);
static ngx_http_lifecycle_profile_t *ngx_http_lifecycle_profile_parse(
    ngx_http_request_t *r, redisReply *rr);
static ngx_int_t ngx_http_lifecycle_profile_send(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx);
static ngx_int_t ngx_http_lifecycle_profile_field(ngx_http_request_t *r,
    ngx_http_lifecycle_profile_t *p, ngx_str_t *f, redisReply *v);
static ngx_int_t ngx_http_lifecycle_profile_popup(ngx_http_request_t *r,
    ngx_array_t *popups, ngx_str_t *field, redisReply *value);
static ngx_int_t ngx_http_lifecycle_profile_recent(ngx_http_request_t *r,
    ngx_http_lifecycle_profile_t *p, redisReply *value);


static ngx_uint_t  ngx_http_lifecycle_requests;


/*
 * Fields of the answer that the script has in hand after the request:
 * its own counters (not read a second time), and what this request
 * wrote when it knew it (else the value read).
 */
typedef struct {
    ngx_str_t                   name;
    char                       *expr;
    ngx_uint_t                  read;     /* also read as a wanted field */
} ngx_http_lifecycle_answer_t;


static ngx_http_lifecycle_answer_t  ngx_http_lifecycle_answers[] = {
    { ngx_string("views"), "g[3]", 0 },
    { ngx_string("cart"), "g[10]", 0 },
    { ngx_string("purchases"), "g[11]", 0 },
    { ngx_string("visits"), "sess", 0 },
    { ngx_string("topc"), "topc or g[%ui]", 1 },
    { ngx_string("country"), "(country ~= '' and country) or g[%ui]", 1 },
    { ngx_string("city"), "(city ~= '' and city) or g[%ui]", 1 },
    { ngx_string("group"), "(grp ~= '' and grp) or g[%ui]", 1 },
    { ngx_null_string, NULL, 0 }
};


static ngx_http_lifecycle_answer_t *
ngx_http_lifecycle_answer(ngx_str_t *field)
{
    ngx_http_lifecycle_answer_t  *a;

    for (a = ngx_http_lifecycle_answers; a->expr; a++) {
        if (a->name.len == field->len
            && ngx_strncmp(a->name.data, field->data, field->len) == 0)
        {
            return a;
        }
    }

    return NULL;
}


/* makes the configuration's script and its SHA-1 (for EVALSHA) */

ngx_int_t
ngx_http_lifecycle_profile_init(ngx_conf_t *cf,
    ngx_http_lifecycle_main_conf_t *lmcf)
{
    u_char      *p, *t, *end, digest[20];
    size_t       len;
    ngx_str_t    name, value;
    ngx_uint_t   pass;
    ngx_sha1_t   sha1;

    len = 0;
    p = NULL;

    /* first pass measures, the second writes */

    for (pass = 0; pass < 2; pass++) {

        t = (u_char *) ngx_http_lifecycle_script_template;

        for ( ;; ) {
            end = (u_char *) ngx_strchr(t, '@');

            if (end == NULL) {
                end = t + ngx_strlen(t);
            }

            if (pass) {
                p = ngx_cpymem(p, t, end - t);

            } else {
                len += end - t;
            }

            if (*end == '\0') {
                break;
            }

            name.data = end + 1;
            t = (u_char *) ngx_strchr(name.data, '@');
            name.len = t - name.data;
            t++;

            if (ngx_http_lifecycle_profile_piece(cf, &name, lmcf, &value)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (pass) {
                p = ngx_cpymem(p, value.data, value.len);

            } else {
                len += value.len;
            }
        }

        if (pass == 0) {
            lmcf->script.data = ngx_pnalloc(cf->pool, len);
            if (lmcf->script.data == NULL) {
                return NGX_ERROR;
            }

            lmcf->script.len = len;
            p = lmcf->script.data;
        }
    }

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, lmcf->script.data, lmcf->script.len);
    ngx_sha1_final(digest, &sha1);

    ngx_hex_dump(lmcf->script_sha, digest, sizeof(digest));

    return NGX_OK;
}


/* the text of one @NAME@ of the template */

static ngx_int_t
ngx_http_lifecycle_profile_piece(ngx_conf_t *cf, ngx_str_t *name,
    ngx_http_lifecycle_main_conf_t *lmcf, ngx_str_t *out)
{
    u_char                       *p;
    size_t                        len;
    ngx_str_t                    *w, *s;
    ngx_uint_t                    i, k, extra;
    ngx_http_lifecycle_answer_t  *a;

    w = lmcf->wanted->elts;

#define ngx_http_lifecycle_piece_is(n)                                        \
    (name->len == sizeof(n) - 1 && ngx_strncmp(name->data, n, name->len) == 0)

    if (ngx_http_lifecycle_piece_is("TTL")
        || ngx_http_lifecycle_piece_is("TTL_MS")
        || ngx_http_lifecycle_piece_is("FIRST_TTL")
        || ngx_http_lifecycle_piece_is("RECENT_BYTES")
        || ngx_http_lifecycle_piece_is("SESSION_BYTES"))
    {
        out->data = ngx_pnalloc(cf->pool, NGX_INT64_LEN);
        if (out->data == NULL) {
            return NGX_ERROR;
        }

        if (ngx_http_lifecycle_piece_is("TTL")) {
            p = ngx_sprintf(out->data, "%T", lmcf->retention);

        } else if (ngx_http_lifecycle_piece_is("TTL_MS")) {
            p = ngx_sprintf(out->data, "%T000", lmcf->retention);

        } else if (ngx_http_lifecycle_piece_is("FIRST_TTL")) {
            p = ngx_sprintf(out->data, "%d", LC_FIRST_REQUEST_TTL);

        } else if (ngx_http_lifecycle_piece_is("RECENT_BYTES")) {
            p = ngx_sprintf(out->data, "%d", LC_RECENT_MAX * 8);

        } else {
            p = ngx_sprintf(out->data, "%d", LC_SESSION_MAX * 8);
        }

        out->len = p - out->data;
        return NGX_OK;
    }

    if (ngx_http_lifecycle_piece_is("RECENT_TRIM")
        || ngx_http_lifecycle_piece_is("SESSION_TRIM"))
    {
        s = ngx_http_lifecycle_repeat(cf, "^", "\\n[^\\n]*",
                                      ngx_http_lifecycle_piece_is(
                                                          "RECENT_TRIM")
                                      ? LC_RECENT_MAX : LC_SESSION_MAX,
                                      "\\n");
        if (s == NULL) {
            return NGX_ERROR;
        }

        *out = *s;
        return NGX_OK;
    }

    if (ngx_http_lifecycle_piece_is("SLOTS")) {
        /*
         * Room for the fields a view in a going session writes (a session
         * start or a purchase grows the table): a table made big enough
         * costs less than one that grows, one made bigger than needed
         * costs its slots.
         */
        s = ngx_http_lifecycle_repeat(cf, "", ", false", 22, "");
        if (s == NULL) {
            return NGX_ERROR;
        }

        *out = *s;
        return NGX_OK;
    }

    /* wanted fields the script has not in hand are read after its own */

    extra = 0;

    for (i = 0; i < lmcf->wanted->nelts; i++) {
        a = ngx_http_lifecycle_answer(&w[i]);

        if (a == NULL || a->read) {
            extra++;
        }
    }

    if (ngx_http_lifecycle_piece_is("FALSES")) {
        s = ngx_http_lifecycle_repeat(cf, "false",  ", false",
                                      NGX_HTTP_LIFECYCLE_OWN_FIELDS - 1
                                      + extra, "");
        if (s == NULL) {
            return NGX_ERROR;
        }

        *out = *s;
        return NGX_OK;
    }

    if (!ngx_http_lifecycle_piece_is("FIELDS")
        && !ngx_http_lifecycle_piece_is("ANSWER"))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "lifecycle: unknown script piece \"%V\"", name);
        return NGX_ERROR;
    }

    /* a field quoted is at most 4 times as long, twice in an expression */

    len = 0;

    for (i = 0; i < lmcf->wanted->nelts; i++) {
        len += 2 * (2 + 4 * w[i].len) + 64;
    }

    out->data = ngx_pnalloc(cf->pool, len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = out->data;
    k = NGX_HTTP_LIFECYCLE_OWN_FIELDS;

    for (i = 0; i < lmcf->wanted->nelts; i++) {
        a = ngx_http_lifecycle_answer(&w[i]);

        if (a == NULL || a->read) {
            k++;

            if (ngx_http_lifecycle_piece_is("FIELDS")) {
                *p++ = ',';
                *p++ = ' ';
                p = ngx_http_lifecycle_lua_string(p, &w[i]);
            }
        }

        if (ngx_http_lifecycle_piece_is("FIELDS")) {
            continue;
        }

        *p++ = ',';
        *p++ = ' ';

        if (a) {
            p = ngx_sprintf(p, a->expr, k);

        } else if (w[i].len > 2 && w[i].data[1] == ':'
                   && ngx_strchr("tpc", w[i].data[0]) != NULL)
        {
            /* "t:X", "p:X", "c:X": this request's own counter, or as read */
            p = ngx_sprintf(p, "(%cf == ", w[i].data[0]);
            p = ngx_http_lifecycle_lua_string(p, &w[i]);
            p = ngx_sprintf(p, ") and g[%d] or g[%ui]",
                            w[i].data[0] == 't' ? 4
                            : w[i].data[0] == 'p' ? 5 : 6,
                            k);

        } else {
            p = ngx_sprintf(p, "g[%ui]", k);
        }
    }

    out->len = p - out->data;

#undef ngx_http_lifecycle_piece_is

    return NGX_OK;
}


/* a Lua string literal: bytes other than [A-Za-z0-9:._-] as \ddd */

static u_char *
ngx_http_lifecycle_lua_string(u_char *p, ngx_str_t *s)
{
    u_char      c;
    ngx_uint_t  i;

    *p++ = '\'';

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == ':' || c == '.' || c == '_'
            || c == '-')
        {
            *p++ = c;

        } else {
            p = ngx_sprintf(p, "\\%03d", (int) c);
        }
    }

    *p++ = '\'';

    return p;
}


static ngx_str_t *
ngx_http_lifecycle_repeat(ngx_conf_t *cf, char *first, char *each,
    ngx_uint_t n, char *last)
{
    u_char      *p;
    ngx_str_t   *s;
    ngx_uint_t   i;

    s = ngx_palloc(cf->pool, sizeof(ngx_str_t));
    if (s == NULL) {
        return NULL;
    }

    s->len = ngx_strlen(first) + n * ngx_strlen(each) + ngx_strlen(last);
    s->data = ngx_pnalloc(cf->pool, s->len);
    if (s->data == NULL) {
        return NULL;
    }

    p = ngx_cpymem(s->data, first, ngx_strlen(first));

    for (i = 0; i < n; i++) {
        p = ngx_cpymem(p, each, ngx_strlen(each));
    }

    ngx_memcpy(p, last, ngx_strlen(last));

    return s;
}


ngx_str_t *
ngx_http_lifecycle_profile_script(void)
{
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_lifecycle_module);

    return &lmcf->script;
}


ngx_int_t
ngx_http_lifecycle_profile_request(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx)
{
    u_char                          *p, *numbers;
    ngx_uint_t                       i, nargs;
    ngx_msec_t                       now;
    ngx_time_t                      *tp;
    ngx_str_t                        args[NGX_HTTP_LIFECYCLE_NARGS];
    ngx_http_lifecycle_loc_conf_t   *llcf;
    ngx_http_lifecycle_srv_conf_t   *lscf;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lscf = ngx_http_get_module_srv_conf(r, ngx_http_lifecycle_module);
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);
    llcf = ngx_http_get_module_loc_conf(r, ngx_http_lifecycle_module);

    ngx_memzero(args, sizeof(args));

    /* key, numbers and options: one allocation for the small strings */
    numbers = ngx_pnalloc(r->pool, LC_PREFIX_LEN + sizeof("v:") - 1
                                   + LC_VID_LEN + 3 * NGX_INT64_LEN + 4);
    if (numbers == NULL) {
        return NGX_ERROR;
    }

    tp = ngx_timeofday();
    now = (ngx_msec_t) tp->sec * 1000 + tp->msec;

    p = numbers;

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

    /* 13 digits, as "last" is: the script compares them as strings */

    args[NGX_HTTP_LIFECYCLE_ARG_CUTOFF].data = p;
    p = ngx_sprintf(p, "%013M", now - ngx_min(now, lscf->session_timeout));
    args[NGX_HTTP_LIFECYCLE_ARG_CUTOFF].len =
                                p - args[NGX_HTTP_LIFECYCLE_ARG_CUTOFF].data;

    args[NGX_HTTP_LIFECYCLE_ARG_DAY].data = p;
    p = ngx_sprintf(p, "%013M", now - now % 86400000);
    args[NGX_HTTP_LIFECYCLE_ARG_DAY].len =
                                   p - args[NGX_HTTP_LIFECYCLE_ARG_DAY].data;

    /* options; the recent products and the cart only for templates */

    args[NGX_HTTP_LIFECYCLE_ARG_OPTIONS].data = p;

    if (ctx->new_visitor) {
        *p++ = 'n';
    }

    ctx->recent = 0;
    ctx->cart = 0;

    if (ctx->group != NGX_HTTP_LIFECYCLE_GROUP_CONTROL) {
        if (llcf->uses & NGX_HTTP_LIFECYCLE_USES_RECENT) {
            ctx->recent = 1;
            *p++ = 'r';
        }

        if (llcf->uses & NGX_HTTP_LIFECYCLE_USES_CART) {
            ctx->cart = 1;
            *p++ = 'k';
        }
    }

    if (++ngx_http_lifecycle_requests % NGX_HTTP_LIFECYCLE_TRIM_EVERY == 0) {
        *p++ = 't';
    }

    args[NGX_HTTP_LIFECYCLE_ARG_OPTIONS].len =
                              p - args[NGX_HTTP_LIFECYCLE_ARG_OPTIONS].data;

    ngx_str_set(&args[NGX_HTTP_LIFECYCLE_ARG_CMD], "EVALSHA");
    args[NGX_HTTP_LIFECYCLE_ARG_SCRIPT].data = lmcf->script_sha;
    args[NGX_HTTP_LIFECYCLE_ARG_SCRIPT].len = sizeof(lmcf->script_sha);
    ngx_str_set(&args[NGX_HTTP_LIFECYCLE_ARG_NKEYS], "1");

    if (ctx->view) {
        args[NGX_HTTP_LIFECYCLE_ARG_TYPE] =
                               ngx_http_lifecycle_view_types[ctx->view->type];
        args[NGX_HTTP_LIFECYCLE_ARG_ID] = ctx->view_id;
        args[NGX_HTTP_LIFECYCLE_ARG_CATEGORY] = ctx->view_category;
    }

    /* the group, the country and the city only when one is known */

    if (lscf->holdout) {
        args[NGX_HTTP_LIFECYCLE_ARG_GROUP] =
                                       ngx_http_lifecycle_groups[ctx->group];
    }

    args[NGX_HTTP_LIFECYCLE_ARG_COUNTRY] = ctx->country;
    args[NGX_HTTP_LIFECYCLE_ARG_CITY] = ctx->city;

    nargs = NGX_HTTP_LIFECYCLE_NARGS;

    if (args[NGX_HTTP_LIFECYCLE_ARG_GROUP].len == 0
        && ctx->country.len == 0 && ctx->city.len == 0)
    {
        nargs = NGX_HTTP_LIFECYCLE_ARG_GROUP;
    }

    ctx->argc = nargs;
    ctx->argv = ngx_palloc(r->pool, nargs * (sizeof(char *) + sizeof(size_t)));
    if (ctx->argv == NULL) {
        return NGX_ERROR;
    }

    ctx->argvlen = (size_t *) (ctx->argv + nargs);

    for (i = 0; i < nargs; i++) {
        /* hiredis reads argvlen bytes: an empty string needs no buffer */
        ctx->argv[i] = args[i].data ? (const char *) args[i].data : "";
        ctx->argvlen[i] = args[i].len;
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

    size_t                           n;
    redisReply                      *rr = reply;
    ngx_str_t                       *script;
    ngx_http_request_t              *r;
    ngx_http_lifecycle_main_conf_t  *lmcf;

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
            script = ngx_http_lifecycle_profile_script();

            ctx->retried = 1;
            ctx->argv[NGX_HTTP_LIFECYCLE_ARG_CMD] = "EVAL";
            ctx->argvlen[NGX_HTTP_LIFECYCLE_ARG_CMD] = 4;
            ctx->argv[NGX_HTTP_LIFECYCLE_ARG_SCRIPT] =
                                                 (const char *) script->data;
            ctx->argvlen[NGX_HTTP_LIFECYCLE_ARG_SCRIPT] = script->len;

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

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

    n = 3 + lmcf->wanted->nelts + ctx->recent + ctx->cart;

    if (rr->type != REDIS_REPLY_ARRAY || rr->elements != n) {
        goto unexpected;
    }

    if (rr->element[0]->type != REDIS_REPLY_INTEGER
        || rr->element[1]->type != REDIS_REPLY_INTEGER
        || rr->element[2]->type != REDIS_REPLY_STRING)
    {
        goto unexpected;
    }

    ctx->session = (ngx_uint_t) rr->element[0]->integer;

    if (rr->element[1]->integer) {
        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_SESSIONS_NEW);
        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_GROUP_SESSIONS
                                    + ctx->group);
    }

    /* the reply is freed when this returns: the profile is copied */
    ctx->profile = ngx_http_lifecycle_profile_parse(r, rr);

    goto wake;

unexpected:

    ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_REDIS_ERRORS);

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "lifecycle: unexpected reply from the profile script");

wake:

    if (!ctx->waiting) {
        return;
    }

    if (ctx->wake.timer_set) {
        ngx_del_timer(&ctx->wake);
    }

    ngx_post_event(&ctx->wake, &ngx_posted_events);
}


/* a count: the script answers numbers it changed, strings it read */

static ngx_uint_t
ngx_http_lifecycle_profile_number(redisReply *value)
{
    ngx_int_t  n;

    if (value->type == REDIS_REPLY_INTEGER) {
        return value->integer > 0 ? (ngx_uint_t) value->integer : 0;
    }

    if (value->type != REDIS_REPLY_STRING) {
        return 0;
    }

    n = ngx_atoi((u_char *) value->str, value->len);

    return (n == NGX_ERROR) ? 0 : (ngx_uint_t) n;
}


static ngx_int_t
ngx_http_lifecycle_profile_count(ngx_http_request_t *r, ngx_array_t *a,
    ngx_str_t *field, redisReply *value)
{
    ngx_http_lifecycle_count_t  *c;

    c = ngx_array_push(a);
    if (c == NULL) {
        return NGX_ERROR;
    }

    /* the name is the configuration's, which outlives the request */
    c->key.len = field->len - 2;
    c->key.data = field->data + 2;
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
     && ngx_strncmp((f)->data, name, sizeof(name) - 1) == 0)


static ngx_http_lifecycle_profile_t *
ngx_http_lifecycle_profile_parse(ngx_http_request_t *r, redisReply *rr)
{
    size_t                           i, k;
    ngx_str_t                       *wanted;
    redisReply                      *hash, *f, *v;
    ngx_http_lifecycle_ctx_t        *ctx;
    ngx_http_lifecycle_count_t      *item;
    ngx_http_lifecycle_profile_t    *p;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_lifecycle_module);

    p = ngx_pcalloc(r->pool, sizeof(ngx_http_lifecycle_profile_t));
    if (p == NULL) {
        return NULL;
    }

    if (ngx_array_init(&p->products, r->pool, 2,
                       sizeof(ngx_http_lifecycle_count_t))
        != NGX_OK
        || ngx_array_init(&p->categories, r->pool, 2,
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
    p->previous = ngx_http_lifecycle_profile_number(rr->element[2]);

    wanted = lmcf->wanted->elts;
    k = 3;

    for (i = 0; i < lmcf->wanted->nelts; i++, k++) {
        v = rr->element[k];

        if (v->type != REDIS_REPLY_STRING && v->type != REDIS_REPLY_INTEGER) {
            continue;
        }

        if (ngx_http_lifecycle_profile_field(r, p, &wanted[i], v) != NGX_OK) {
            return NULL;
        }
    }

    if (ctx->recent) {
        v = rr->element[k++];

        if (v->type == REDIS_REPLY_STRING
            && ngx_http_lifecycle_profile_recent(r, p, v) != NGX_OK)
        {
            return NULL;
        }
    }

    if (!ctx->cart || rr->element[k]->type != REDIS_REPLY_ARRAY) {
        return p;
    }

    hash = rr->element[k];

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


/* one wanted field "f" of the answer into the profile */

static ngx_int_t
ngx_http_lifecycle_profile_field(ngx_http_request_t *r,
    ngx_http_lifecycle_profile_t *p, ngx_str_t *f, redisReply *v)
{
    ngx_str_t   type;
    ngx_uint_t  t;

    if (f->len > 4 && ngx_strncmp(f->data, "pop:", 4) == 0) {
        return ngx_http_lifecycle_profile_popup(r, &p->popups, f, v);
    }

    if (f->len > 2 && f->data[1] == ':') {

        switch (f->data[0]) {

        case 'p':
            return ngx_http_lifecycle_profile_count(r, &p->products, f, v);

        case 'c':
            return ngx_http_lifecycle_profile_count(r, &p->categories, f, v);

        case 't':
            type.data = f->data + 2;
            type.len = f->len - 2;

            for (t = 0; t < NGX_HTTP_LIFECYCLE_VIEW_NTYPES; t++) {
                if (type.len == ngx_http_lifecycle_view_types[t].len
                    && ngx_strncmp(type.data,
                                   ngx_http_lifecycle_view_types[t].data,
                                   type.len)
                       == 0)
                {
                    p->type_views[t] = ngx_http_lifecycle_profile_number(v);
                    break;
                }
            }

            return NGX_OK;
        }

        return NGX_OK;
    }

    if (ngx_http_lifecycle_field_is(f, "views")) {
        p->views = ngx_http_lifecycle_profile_number(v);

    } else if (ngx_http_lifecycle_field_is(f, "cart")) {
        p->cart = ngx_http_lifecycle_profile_number(v);

    } else if (ngx_http_lifecycle_field_is(f, "purchases")) {
        p->purchases = ngx_http_lifecycle_profile_number(v);

    } else if (v->type != REDIS_REPLY_STRING) {
        return NGX_OK;

    } else if (ngx_http_lifecycle_field_is(f, "country")) {
        return ngx_http_lifecycle_profile_string(r, &p->country, v);

    } else if (ngx_http_lifecycle_field_is(f, "optin")) {
        return ngx_http_lifecycle_profile_string(r, &p->optin, v);

    } else if (ngx_http_lifecycle_field_is(f, "topc")) {
        return ngx_http_lifecycle_profile_string(r, &p->top_category, v);
    }

    return NGX_OK;
}


/* "r": the recent product ids, newest first, one per line, the first 20 */

static ngx_int_t
ngx_http_lifecycle_profile_recent(ngx_http_request_t *r,
    ngx_http_lifecycle_profile_t *p, redisReply *value)
{
    size_t       len;
    ngx_str_t   *id, copy;
    const char  *s, *last, *item;

    if (ngx_http_lifecycle_profile_string(r, &copy, value) != NGX_OK) {
        return NGX_ERROR;
    }

    s = (const char *) copy.data;
    last = s + copy.len;

    while (p->recent.nelts < LC_RECENT_MAX
           && (item = lc_list_next(&s, last, &len)))
    {
        id = ngx_array_push(&p->recent);
        if (id == NULL) {
            return NGX_ERROR;
        }

        id->data = (u_char *) item;
        id->len = len;
    }

    return NGX_OK;
}


/*
 * "pop:NAME": "SHOWN WINDOW DISMISSED CONVERTED", shows in the current
 * cap window, the window's start, the last dismissal and the conversion
 * (ms, 0: never), as lifecycle_collect writes them.
 */

static ngx_int_t
ngx_http_lifecycle_profile_popup(ngx_http_request_t *r, ngx_array_t *popups,
    ngx_str_t *field, redisReply *value)
{
    u_char                            *p, *last, *q;
    uint64_t                           n[4];
    ngx_uint_t                         i;
    ngx_http_lifecycle_popup_state_t  *st;

    if (value->type != REDIS_REPLY_STRING) {
        return NGX_OK;
    }

    p = (u_char *) value->str;
    last = p + value->len;

    for (i = 0; i < 4; i++) {
        q = p;
        n[i] = 0;

        while (p < last && *p >= '0' && *p <= '9' && p - q < 19) {
            n[i] = n[i] * 10 + (*p++ - '0');
        }

        if (p == q || (p < last && *p++ != ' ') || (i < 3 && p == last)) {
            return NGX_OK;
        }
    }

    st = ngx_array_push(popups);
    if (st == NULL) {
        return NGX_ERROR;
    }

    /* the configuration's name: it outlives the request */
    st->name.data = field->data + 4;
    st->name.len = field->len - 4;
    st->shown = n[0];
    st->since = n[1];
    st->dismissed = n[2];
    st->converted = n[3];

    return NGX_OK;
}
