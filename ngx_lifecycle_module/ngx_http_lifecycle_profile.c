
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


/* a visitor's arguments, after the call's "now" and "day" */
enum {
    NGX_HTTP_LIFECYCLE_ARG_CUTOFF = 0,
    NGX_HTTP_LIFECYCLE_ARG_TYPE,
    NGX_HTTP_LIFECYCLE_ARG_ID,
    NGX_HTTP_LIFECYCLE_ARG_CATEGORY,
    NGX_HTTP_LIFECYCLE_ARG_OPTIONS,
    NGX_HTTP_LIFECYCLE_NARGS
};


/* a batch's arguments and its argv fit in one block of its pool */
#define NGX_HTTP_LIFECYCLE_BATCH_POOL  4096


/*
 * The views one script call records. Its pool holds copies of the
 * arguments, for a request can go away before the call is sent or
 * answered (its view is recorded all the same), until the answer: on
 * NOSCRIPT the call is sent again with the script's text.
 */
struct ngx_http_lifecycle_batch_s {
    ngx_pool_t                 *pool;
    ngx_uint_t                  n;
    ngx_http_lifecycle_ctx_t   *ctx[NGX_HTTP_LIFECYCLE_BATCH]; /* NULL: gone */
    ngx_str_t                   key[NGX_HTTP_LIFECYCLE_BATCH];
    ngx_str_t                   args[NGX_HTTP_LIFECYCLE_BATCH]
                                    [NGX_HTTP_LIFECYCLE_NARGS];
    const char                **argv;
    size_t                     *argvlen;
    int                         argc;
    unsigned                    retried:1;
};


/*
 * The script is made when the configuration is loaded: the retention
 * and the profile fields the configuration reads are written into it
 * (@NAME@ below), so a call carries only what the request knows.
 *
 * One call records the views of several requests, the ones queued in
 * the same turn of the event loop (up to NGX_HTTP_LIFECYCLE_BATCH): the
 * cost of a call to Redis's Lua, about a fifth of a view's, is paid
 * once for them. Each visitor's part runs in a pcall(), so one that
 * fails (a key of the wrong type, say) fails alone.
 *
 * KEYS: the profiles "lc:{hh}:v:VID", one a visitor; the other keys are
 * named from it ("lc:{hh}:" is its first 8 bytes, VID what follows "v:")
 * and share its slot.
 * ARGV: now(ms) day(ms), then for each visitor: session_cutoff(ms) type
 *       id category options; times are 13 digits, so that they compare
 *       as strings (no tonumber() a call): the session goes on when its
 *       last activity is after the cutoff (now less the session timeout),
 *       the TTLs are renewed at the first request since "day" (the start
 *       of the UTC day); options are letters: n a new visitor
 *       (cookie just issued), r answer the recent products, k answer the
 *       cart, t trim the shard's idle index and event stream (one request
 *       in 128: a shard's stream outgrows its bound by about 128 events),
 *       then "\ngroup\ncountry\ncity" when the request knows one of them.
 * Answer: one string a visitor, its parts separated by "\0" (no value
 *         holds a control character): session, new_session(0|1),
 *         previous_activity(ms|0), the wanted fields in configuration
 *         order (after this request; "" for none), [the recent list],
 *         [the cart's product and quantity pairs]; one string instead of
 *         an array is a fifth of the conversion's cost. An error reply
 *         for a visitor whose part failed.
 *
 * The first request of a new visitor stores "visits" as 0: session 1,
 * until the cookie comes back; that request then gives the keys the
 * retention and the session its idle entry.
 *
 * A steady view is one HMGET and one HSET of the profile and one XADD;
 * of the session's fields it reads the one it changes: the length of
 * its products in "r" for a product view, its categories (of the
 * category pages seen: those of the products are the catalog's) for a
 * category view.
 * Numbers go to Redis, and into the answer, as strings: a Lua number
 * is printed with "%.14g" or "%.17g", which costs far more. A count is
 * incremented as digits (inc) unless it ends in 9: tonumber() and
 * string.format() are most of an increment's cost; counts compare by
 * length, then as strings.
 * The session's products are the first "s.pb" bytes of "r" after its
 * leading "\n": a product viewed moves to the front of "r", so those of
 * the session come first; one list less to read, change and write is
 * about a twelfth of a view's cost.
 * Lists ("r", "s.c") are "\nid\nid\n", newest first, trimmed back
 * to their bound by one pattern once longer than 8 bytes an entry: the
 * bytes a list carries are what a view costs most, after the commands.
 */
static char  ngx_http_lifecycle_script_template[] =
"local now, day = ARGV[1], ARGV[2]\n"
"local find, sub, fmt = string.find, string.sub, string.format\n"
"local byte, char = string.byte, string.char\n"
"local function inc(s)\n"
"  if not s then return '1' end\n"
"  local b = byte(s, -1)\n"
"  if b and b >= 48 and b < 57 then return sub(s, 1, -2) .. char(b + 1) end\n"
"  return fmt('%d', (tonumber(s) or 0) + 1)\n"
"end\n"
"local function push(l, x, trim, max, pb)\n"
"  local n = #x + 1\n"
"  if not l or l == '' then return '\\n' .. x .. '\\n', n end\n"
"  local i = find(l, '\\n' .. x .. '\\n', 1, true)\n"
"  if i == 1 then\n"
"    if pb == 0 then pb = n end\n"
"    return l, pb\n"
"  end\n"
"  if i then\n"
"    if pb and i + #x > pb then pb = pb + n end\n"
"    l = '\\n' .. x .. sub(l, 1, i) .. sub(l, i + #x + 2)\n"
"  else\n"
"    if pb then pb = pb + n end\n"
"    l = '\\n' .. x .. l\n"
"  end\n"
"  if #l > max then\n"
"    l = string.match(l, trim) or l\n"
"    if pb and pb >= #l then pb = #l - 1 end\n"
"  end\n"
"  return l, pb\n"
"end\n"
"local function one(v, cut, typ, id, cat, o)\n"
"local grp, country, city, first = '', '', '', false\n"
"if o ~= '' then\n"
"  local x = find(o, '\\n', 1, true)\n"
"  if x then\n"
"    grp, country, city = string.match(o, '^\\n([^\\n]*)\\n([^\\n]*)\\n(.*)',\n"
"      x)\n"
"    o = sub(o, 1, x - 1)\n"
"  end\n"
"  first = find(o, 'n', 1, true)\n"
"end\n"
"if typ == 'category' and id ~= '' then cat = id end\n"
"local tf, pf, cf = 't:' .. typ, 'p:' .. id, 'c:' .. cat\n"
"local sl = typ == 'category' and 's.c' or 's.pb'\n"
"local g\n"
"if first then\n"
"  g = {@FALSES@}\n"
"else\n"
"  g = redis.call('HMGET', v, 'visits', 'last', 'views', tf, pf, cf,\n"
"    'topn', 'r', sl, 'cart', 'purchases'@FIELDS@)\n"
"end\n"
"local ss, last, ns = g[1], g[2] or '0', '0'\n"
"local refresh, topc = false, nil\n"
"local pre, vid = sub(v, 1, 8), sub(v, 11)\n"
"local h = {'HSET', v, 'last', now@SLOTS@}\n"
"local n = 4\n"
"local back = ss == '0'\n"
"if back then ss = '1' end\n"
"if not ss or last < cut then\n"
"  local sn = tonumber(ss) or 0\n"
"  if sn > 0 then\n"
"    local s = redis.call('HMGET', v, 's.start', 's.v0', 's.cart_adds',\n"
"      's.purchase', 's.pb', 's.c')\n"
"    local old = pre .. 's:' .. vid .. ':' .. ss\n"
"    local pb = tonumber(s[5]) or 0\n"
"    redis.call('HSET', old, 'start', s[1] or g[2], 'last', g[2],\n"
"      'views', fmt('%d', (tonumber(g[3]) or 0) - (tonumber(s[2]) or 0)),\n"
"      'p', pb > 0 and sub(g[8] or '', 1, pb + 1) or '', 'c', s[6] or '',\n"
"      'cart_adds', s[3] or '0',\n"
"      'purchase', s[4] or '')\n"
"    redis.call('EXPIRE', old, @TTL@)\n"
"  end\n"
"  sn = sn + 1\n"
"  ss = fmt('%d', sn)\n"
"  ns = '1'\n"
"  g[9] = false\n"
"  h[5], h[6], h[7], h[8] = 'visits', first and '0' or ss, 's.start', now\n"
"  h[9], h[10], h[11], h[12] = 's.v0', g[3] or '0', 's.cart_adds', '0'\n"
"  h[13], h[14], h[15], h[16] = 's.purchase', '', 's.pb', '0'\n"
"  h[17], h[18] = 's.c', ''\n"
"  n = 18\n"
"  if sn == 1 then h[19], h[20] = 'first', now; n = 20 end\n"
"  refresh = not first\n"
"elseif back then\n"
"  h[5], h[6] = 'visits', '1'\n"
"  n = 6\n"
"  refresh = true\n"
"elseif last < day then\n"
"  refresh = true\n"
"end\n"
"if typ ~= '' then\n"
"  g[3] = inc(g[3])\n"
"  g[4] = inc(g[4])\n"
"  h[n + 1], h[n + 2] = 'views', g[3]; n = n + 2\n"
"  h[n + 1], h[n + 2] = tf, g[4]; n = n + 2\n"
"  local ev = {'XADD', pre .. '" LC_KEY_EVENTS "', '*',\n"
"    'type', typ, 'vid', vid, 'sess', ss,\n"
"    false, false, false, false, false, false, false, false, false, false}\n"
"  local e = 9\n"
"  if id ~= '' then ev[e + 1], ev[e + 2] = 'id', id; e = e + 2 end\n"
"  if typ == 'product' and id ~= '' then\n"
"    g[5] = inc(g[5])\n"
"    local pb\n"
"    g[8], pb = push(g[8], id, '@RECENT_TRIM@', @RECENT_BYTES@,\n"
"      tonumber(g[9]) or 0)\n"
"    h[n + 1], h[n + 2] = pf, g[5]; n = n + 2\n"
"    h[n + 1], h[n + 2] = 'r', g[8]; n = n + 2\n"
"    h[n + 1], h[n + 2] = 's.pb', fmt('%d', pb); n = n + 2\n"
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
"    g[10] = inc(g[10])\n"
"    h[n + 1], h[n + 2] = 'cart', g[10]; n = n + 2\n"
"  elseif typ == 'cart_remove' and id ~= '' then\n"
"    local cart = v .. '" LC_KEY_CART "'\n"
"    local q = tonumber(redis.call('HGET', cart, id))\n"
"    if q then\n"
"      redis.call('HDEL', cart, id)\n"
"      g[10] = fmt('%d', math.max((tonumber(g[10]) or 0) - q, 0))\n"
"      h[n + 1], h[n + 2] = 'cart', g[10]; n = n + 2\n"
"    end\n"
"  elseif typ == 'purchase' then\n"
"    g[11] = inc(g[11])\n"
"    g[10] = '0'\n"
"    h[n + 1], h[n + 2] = 'purchases', g[11]; n = n + 2\n"
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
"    g[6] = inc(g[6])\n"
"    h[n + 1], h[n + 2] = cf, g[6]; n = n + 2\n"
"    if typ == 'category' then\n"
"      local sc = push(g[9], cat, '@SESSION_TRIM@', @SESSION_BYTES@)\n"
"      h[n + 1], h[n + 2] = 's.c', sc; n = n + 2\n"
"    end\n"
"    local t = g[7] or ''\n"
"    if #g[6] > #t or (#g[6] == #t and g[6] > t) then\n"
"      topc = cat\n"
"      h[n + 1], h[n + 2] = 'topc', cat; n = n + 2\n"
"      h[n + 1], h[n + 2] = 'topn', g[6]; n = n + 2\n"
"    end\n"
"  end\n"
"  if first then ev[e + 1], ev[e + 2] = 'new', '1'; e = e + 2 end\n"
"  if ns == '1' then ev[e + 1], ev[e + 2] = 'ns', '1'; e = e + 2 end\n"
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
"  redis.call('ZADD', pre .. '" LC_KEY_IDLE "', now, vid .. ':' .. ss)\n"
"end\n"
"local a = ss .. '\\0' .. ns .. '\\0' .. last@ANSWER@\n"
"if o ~= '' then\n"
"  if find(o, 't', 1, true) then\n"
"    redis.call('ZREMRANGEBYSCORE', pre .. '" LC_KEY_IDLE "', '-inf',\n"
"      tonumber(now) - @TTL_MS@)\n"
"    redis.call('XTRIM', pre .. '" LC_KEY_EVENTS "', 'MAXLEN', '~', "
                NGX_HTTP_LIFECYCLE_STR(LC_STREAM_MAXLEN) ")\n"
"  end\n"
"  if find(o, 'r', 1, true) then a = a .. '\\0' .. (g[8] or '') end\n"
"  if find(o, 'k', 1, true) then\n"
"    local c = redis.call('HGETALL', v .. '" LC_KEY_CART "')\n"
"    if #c > 0 then a = a .. '\\0' .. table.concat(c, '\\0') end\n"
"  end\n"
"end\n"
"return a\n"
"end\n"
"local out, k = {}, 3\n"
"for i = 1, #KEYS do\n"
"  local ok, a = pcall(one, KEYS[i], ARGV[k], ARGV[k + 1], ARGV[k + 2],\n"
"    ARGV[k + 3], ARGV[k + 4])\n"
"  if not ok and type(a) ~= 'table' then a = {err = tostring(a)} end\n"
"  out[i] = a\n"
"  k = k + 5\n"
"end\n"
"return out\n";


static ngx_int_t ngx_http_lifecycle_profile_piece(ngx_conf_t *cf,
    ngx_str_t *name, ngx_http_lifecycle_main_conf_t *lmcf, ngx_str_t *out);
static u_char *ngx_http_lifecycle_lua_string(u_char *p, ngx_str_t *s);
static ngx_str_t *ngx_http_lifecycle_repeat(ngx_conf_t *cf, char *first,
    char *each, ngx_uint_t n, char *last);
static ngx_http_lifecycle_batch_t *ngx_http_lifecycle_batch_create(void);
static void ngx_http_lifecycle_batch_handler(ngx_event_t *ev);
static void ngx_http_lifecycle_batch_send(ngx_http_lifecycle_batch_t *b);
static void ngx_http_lifecycle_batch_call(ngx_http_lifecycle_batch_t *b);
static void ngx_http_lifecycle_batch_split(ngx_http_lifecycle_batch_t *b);
static ngx_int_t ngx_http_lifecycle_batch_copy(
    ngx_http_lifecycle_batch_t *to, ngx_http_lifecycle_batch_t *from,
    ngx_uint_t i);
static void ngx_http_lifecycle_batch_done(ngx_http_lifecycle_batch_t *b);
static void ngx_http_lifecycle_profile_wake(ngx_http_lifecycle_ctx_t *ctx);
static void ngx_http_lifecycle_profile_failed(ngx_http_lifecycle_ctx_t *ctx,
    const char *why, size_t len);
static void ngx_http_lifecycle_profile_reply(void *data, void *reply);
static ngx_int_t ngx_http_lifecycle_profile_answer(
    ngx_http_lifecycle_ctx_t *ctx, u_char *s, size_t len);
static ngx_http_lifecycle_profile_t *ngx_http_lifecycle_profile_parse(
    ngx_http_request_t *r, ngx_http_lifecycle_ctx_t *ctx, ngx_str_t *part,
    ngx_uint_t n);
static ngx_int_t ngx_http_lifecycle_profile_field(ngx_http_request_t *r,
    ngx_http_lifecycle_profile_t *p, ngx_str_t *f, ngx_str_t *v);
static ngx_int_t ngx_http_lifecycle_profile_popup(ngx_http_request_t *r,
    ngx_array_t *popups, ngx_str_t *field, ngx_str_t *value);
static ngx_int_t ngx_http_lifecycle_profile_recent(ngx_http_request_t *r,
    ngx_http_lifecycle_profile_t *p, ngx_str_t *value);


static ngx_uint_t  ngx_http_lifecycle_requests;

/* the batch the requests of this turn join, sent at its end if not full */
static ngx_http_lifecycle_batch_t  *ngx_http_lifecycle_open_batch;
static ngx_event_t                  ngx_http_lifecycle_batch_event;

/* 1 once Redis turned out to be a cluster node (CROSSSLOT) */
static ngx_uint_t                   ngx_http_lifecycle_batch_max =
                                        NGX_HTTP_LIFECYCLE_BATCH;


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
    { ngx_string("visits"), "ss", 0 },
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
        len += 2 * (2 + 4 * w[i].len) + 96;
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

        /* the answer's parts: strings, "" for none */
        p = ngx_cpymem(p, " .. '\\0' .. (", sizeof(" .. '\\0' .. (") - 1);

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

        p = ngx_cpymem(p, " or '')", sizeof(" or '')") - 1);
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
    u_char                          *p;
    size_t                           len;
    ngx_str_t                       *args, *group;
    ngx_uint_t                       i, behind;
    ngx_msec_t                       now;
    ngx_time_t                      *tp;
    ngx_http_lifecycle_batch_t      *b;
    ngx_http_lifecycle_loc_conf_t   *llcf;
    ngx_http_lifecycle_srv_conf_t   *lscf;

    if (!ngx_http_lifecycle_redis_ready(r->connection->log)) {
        return NGX_DECLINED;
    }

    lscf = ngx_http_get_module_srv_conf(r, ngx_http_lifecycle_module);
    llcf = ngx_http_get_module_loc_conf(r, ngx_http_lifecycle_module);

    b = ngx_http_lifecycle_open_batch;

    if (b == NULL) {
        b = ngx_http_lifecycle_batch_create();
        if (b == NULL) {
            return NGX_ERROR;
        }

        ngx_http_lifecycle_open_batch = b;
        ngx_post_event(&ngx_http_lifecycle_batch_event, &ngx_posted_events);
    }

    i = b->n;
    args = b->args[i];

    group = lscf->holdout ? &ngx_http_lifecycle_groups[ctx->group] : NULL;

    /* the batch keeps its own copies: the request may go first */

    len = LC_PREFIX_LEN + sizeof("v:") - 1 + LC_VID_LEN + NGX_INT64_LEN
          + ctx->view_id.len + ctx->view_category.len + sizeof("nrkt\n\n\n")
          + (group ? group->len : 0) + ctx->country.len + ctx->city.len;

    p = ngx_pnalloc(b->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    b->key[i].data = p;
    p = lc_shard_prefix(p, lc_shard(ctx->vid));
    *p++ = 'v';
    *p++ = ':';
    p = ngx_cpymem(p, ctx->vid, LC_VID_LEN);
    b->key[i].len = p - b->key[i].data;

    /* 13 digits, as "last" is: the script compares them as strings */

    tp = ngx_timeofday();
    now = (ngx_msec_t) tp->sec * 1000 + tp->msec;

    args[NGX_HTTP_LIFECYCLE_ARG_CUTOFF].data = p;
    p = ngx_sprintf(p, "%013M", now - ngx_min(now, lscf->session_timeout));
    args[NGX_HTTP_LIFECYCLE_ARG_CUTOFF].len =
                                p - args[NGX_HTTP_LIFECYCLE_ARG_CUTOFF].data;

    if (ctx->view) {
        args[NGX_HTTP_LIFECYCLE_ARG_TYPE] =
                               ngx_http_lifecycle_view_types[ctx->view->type];

        args[NGX_HTTP_LIFECYCLE_ARG_ID].data = p;
        p = ngx_cpymem(p, ctx->view_id.data, ctx->view_id.len);
        args[NGX_HTTP_LIFECYCLE_ARG_ID].len = ctx->view_id.len;

        args[NGX_HTTP_LIFECYCLE_ARG_CATEGORY].data = p;
        p = ngx_cpymem(p, ctx->view_category.data, ctx->view_category.len);
        args[NGX_HTTP_LIFECYCLE_ARG_CATEGORY].len = ctx->view_category.len;
    }

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

    /* the group, the country and the city only when one is known */

    if (group || ctx->country.len || ctx->city.len) {
        *p++ = '\n';

        if (group) {
            p = ngx_cpymem(p, group->data, group->len);
        }

        *p++ = '\n';
        p = ngx_cpymem(p, ctx->country.data, ctx->country.len);
        *p++ = '\n';
        p = ngx_cpymem(p, ctx->city.data, ctx->city.len);
    }

    args[NGX_HTTP_LIFECYCLE_ARG_OPTIONS].len =
                              p - args[NGX_HTTP_LIFECYCLE_ARG_OPTIONS].data;

    if (ctx->view) {
        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_VIEWS
                                    + ctx->view->type);

        if (ctx->view->type == NGX_HTTP_LIFECYCLE_VIEW_PURCHASE) {
            ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_CONVERSIONS
                                        + ctx->group);
        }
    }

    /* Redis behind: the view is recorded, nobody waits for the answer */

    behind = ngx_http_lifecycle_redis_behind();

    b->ctx[i] = behind ? NULL : ctx;
    b->n++;

    if (!behind) {
        ctx->batch = b;
        ctx->slot = i;
    }

    if (b->n >= ngx_http_lifecycle_batch_max) {
        ngx_http_lifecycle_open_batch = NULL;
        ngx_http_lifecycle_batch_send(b);
        ngx_http_lifecycle_redis_flush();
    }

    if (behind) {
        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_PROFILE_TIMEOUTS);
        return NGX_DECLINED;
    }

    /* not there when the call could not be sent */
    return ctx->batch ? NGX_AGAIN : NGX_DECLINED;
}


/* the request no longer waits: its view is recorded all the same */

void
ngx_http_lifecycle_profile_detach(ngx_http_lifecycle_ctx_t *ctx)
{
    if (ctx->batch) {
        ctx->batch->ctx[ctx->slot] = NULL;
        ctx->batch = NULL;
    }
}


static ngx_http_lifecycle_batch_t *
ngx_http_lifecycle_batch_create(void)
{
    ngx_pool_t                  *pool;
    ngx_http_lifecycle_batch_t  *b;

    pool = ngx_create_pool(NGX_HTTP_LIFECYCLE_BATCH_POOL, ngx_cycle->log);
    if (pool == NULL) {
        return NULL;
    }

    b = ngx_pcalloc(pool, sizeof(ngx_http_lifecycle_batch_t));
    if (b == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    b->pool = pool;

    if (ngx_http_lifecycle_batch_event.handler == NULL) {
        ngx_http_lifecycle_batch_event.handler =
                                          ngx_http_lifecycle_batch_handler;
        ngx_http_lifecycle_batch_event.log = ngx_cycle->log;
    }

    return b;
}


/* the end of the turn: the views queued in it leave */

static void
ngx_http_lifecycle_batch_handler(ngx_event_t *ev)
{
    ngx_http_lifecycle_batch_t  *b;

    b = ngx_http_lifecycle_open_batch;

    if (b) {
        ngx_http_lifecycle_open_batch = NULL;
        ngx_http_lifecycle_batch_send(b);
    }
}


static void
ngx_http_lifecycle_batch_send(ngx_http_lifecycle_batch_t *b)
{
    u_char                          *p;
    ngx_str_t                       *a;
    ngx_uint_t                       i, j, k;
    ngx_msec_t                       now;
    ngx_time_t                      *tp;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_lifecycle_module);

    /* EVALSHA sha numkeys keys... now day, the visitors' arguments */

    b->argc = 3 + b->n + 2 + b->n * NGX_HTTP_LIFECYCLE_NARGS;

    b->argv = ngx_palloc(b->pool, b->argc * (sizeof(char *) + sizeof(size_t)));
    p = ngx_pnalloc(b->pool, NGX_INT_T_LEN + 2 * NGX_INT64_LEN);

    if (b->argv == NULL || p == NULL) {
        ngx_http_lifecycle_batch_done(b);
        return;
    }

    b->argvlen = (size_t *) (b->argv + b->argc);

    b->argv[0] = "EVALSHA";
    b->argvlen[0] = sizeof("EVALSHA") - 1;
    b->argv[1] = (const char *) lmcf->script_sha;
    b->argvlen[1] = sizeof(lmcf->script_sha);

    k = 2;

    b->argv[k] = (const char *) p;
    p = ngx_sprintf(p, "%ui", b->n);
    b->argvlen[k] = p - (u_char *) b->argv[k];
    k++;

    for (i = 0; i < b->n; i++, k++) {
        b->argv[k] = (const char *) b->key[i].data;
        b->argvlen[k] = b->key[i].len;
    }

    tp = ngx_timeofday();
    now = (ngx_msec_t) tp->sec * 1000 + tp->msec;

    b->argv[k] = (const char *) p;
    p = ngx_sprintf(p, "%M", now);
    b->argvlen[k] = p - (u_char *) b->argv[k];
    k++;

    b->argv[k] = (const char *) p;
    p = ngx_sprintf(p, "%013M", now - now % 86400000);
    b->argvlen[k] = p - (u_char *) b->argv[k];
    k++;

    for (i = 0; i < b->n; i++) {
        a = b->args[i];

        for (j = 0; j < NGX_HTTP_LIFECYCLE_NARGS; j++, k++) {
            /* hiredis reads argvlen bytes: an empty string needs none */
            b->argv[k] = a[j].data ? (const char *) a[j].data : "";
            b->argvlen[k] = a[j].len;
        }
    }

    ngx_http_lifecycle_batch_call(b);
}


static void
ngx_http_lifecycle_batch_call(ngx_http_lifecycle_batch_t *b)
{
    if (ngx_http_lifecycle_redis_command(ngx_cycle->log,
                                         ngx_http_lifecycle_profile_reply,
                                         b, b->argc, b->argv, b->argvlen)
        == NULL)
    {
        /* Redis is not there: the pages go out with their default content */
        ngx_http_lifecycle_batch_done(b);
        return;
    }

    ngx_http_lifecycle_stat_add(NGX_HTTP_LIFECYCLE_STAT_REDIS_ROUNDTRIPS,
                                b->n);
}


/* each view of "b" in a call of its own */

static void
ngx_http_lifecycle_batch_split(ngx_http_lifecycle_batch_t *b)
{
    ngx_uint_t                   i;
    ngx_http_lifecycle_ctx_t    *ctx;
    ngx_http_lifecycle_batch_t  *one;

    for (i = 0; i < b->n; i++) {
        ctx = b->ctx[i];
        b->ctx[i] = NULL;

        one = ngx_http_lifecycle_batch_create();

        if (one == NULL) {
            if (ctx) {
                ctx->batch = NULL;
                ngx_http_lifecycle_profile_wake(ctx);
            }

            continue;
        }

        one->n = 1;
        one->ctx[0] = ctx;
        one->retried = b->retried;

        if (ctx) {
            ctx->batch = one;
            ctx->slot = 0;
        }

        if (ngx_http_lifecycle_batch_copy(one, b, i) == NGX_OK) {
            ngx_http_lifecycle_batch_send(one);

        } else {
            ngx_http_lifecycle_batch_done(one);
        }
    }

    ngx_destroy_pool(b->pool);
    ngx_http_lifecycle_redis_flush();
}


/* view "i" of "from" as the first of "to", in the pool of "to" */

static ngx_int_t
ngx_http_lifecycle_batch_copy(ngx_http_lifecycle_batch_t *to,
    ngx_http_lifecycle_batch_t *from, ngx_uint_t i)
{
    ngx_str_t   *s, *d;
    ngx_uint_t   j;

    to->key[0].len = from->key[i].len;
    to->key[0].data = ngx_pstrdup(to->pool, &from->key[i]);

    if (to->key[0].data == NULL) {
        return NGX_ERROR;
    }

    for (j = 0; j < NGX_HTTP_LIFECYCLE_NARGS; j++) {
        s = &from->args[i][j];
        d = &to->args[0][j];

        if (s->len) {
            d->len = s->len;
            d->data = ngx_pstrdup(to->pool, s);

            if (d->data == NULL) {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/* the requests still waiting go on without an answer */

static void
ngx_http_lifecycle_batch_done(ngx_http_lifecycle_batch_t *b)
{
    ngx_uint_t                 i;
    ngx_http_lifecycle_ctx_t  *ctx;

    for (i = 0; i < b->n; i++) {
        ctx = b->ctx[i];

        if (ctx) {
            ctx->batch = NULL;
            ngx_http_lifecycle_profile_wake(ctx);
        }
    }

    ngx_destroy_pool(b->pool);
}


static void
ngx_http_lifecycle_profile_wake(ngx_http_lifecycle_ctx_t *ctx)
{
    if (!ctx->waiting) {
        return;
    }

    if (ctx->wake.timer_set) {
        ngx_del_timer(&ctx->wake);
    }

    ngx_post_event(&ctx->wake, &ngx_posted_events);
}


static void
ngx_http_lifecycle_profile_failed(ngx_http_lifecycle_ctx_t *ctx,
    const char *why, size_t len)
{
    ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_REDIS_ERRORS);

    ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log, 0,
                  "lifecycle: %*s", len, why);
}


static void
ngx_http_lifecycle_profile_reply(void *data, void *reply)
{
    ngx_http_lifecycle_batch_t  *b = data;

    u_char                    *msg, *last;
    ngx_str_t                 *script;
    ngx_uint_t                 i;
    redisReply                *rr = reply, *e;
    ngx_http_lifecycle_ctx_t  *ctx;
    u_char                     buf[NGX_MAX_ERROR_STR];

    if (rr == NULL) {
        goto done;
    }

    if (rr->type == REDIS_REPLY_ERROR) {

        /* Redis restarted or SCRIPT FLUSH: EVAL sends and caches it */
        if (!b->retried && rr->len >= 8
            && ngx_strncmp(rr->str, "NOSCRIPT", 8) == 0)
        {
            script = ngx_http_lifecycle_profile_script();

            b->retried = 1;
            b->argv[0] = "EVAL";
            b->argvlen[0] = sizeof("EVAL") - 1;
            b->argv[1] = (const char *) script->data;
            b->argvlen[1] = script->len;

            ngx_http_lifecycle_batch_call(b);
            return;
        }

        /*
         * A Redis Cluster node takes the keys of one slot a call: each
         * view goes again alone, and from now on every view does.
         */
        if (b->n > 1 && rr->len >= 9
            && ngx_strncmp(rr->str, "CROSSSLOT", 9) == 0)
        {
            ngx_http_lifecycle_batch_max = 1;
            ngx_http_lifecycle_batch_split(b);
            return;
        }

        last = ngx_snprintf(buf, sizeof(buf), "profile script failed: %*s",
                            (size_t) rr->len, rr->str);

        for (i = 0; i < b->n; i++) {
            if (b->ctx[i]) {
                ngx_http_lifecycle_profile_failed(b->ctx[i], (char *) buf,
                                                  last - buf);
            }
        }

        goto done;
    }

    for (i = 0; i < b->n; i++) {
        ctx = b->ctx[i];

        if (ctx == NULL) {
            continue;
        }

        b->ctx[i] = NULL;
        ctx->batch = NULL;

        e = (rr->type == REDIS_REPLY_ARRAY && rr->elements == b->n)
            ? rr->element[i] : NULL;

        if (e && e->type == REDIS_REPLY_ERROR) {
            msg = ngx_snprintf(buf, sizeof(buf),
                               "profile script failed: %*s",
                               (size_t) e->len, e->str);
            ngx_http_lifecycle_profile_failed(ctx, (char *) buf, msg - buf);

        } else if (e == NULL || e->type != REDIS_REPLY_STRING
                   || ngx_http_lifecycle_profile_answer(ctx, (u_char *) e->str,
                                                        e->len)
                      == NGX_DECLINED)
        {
            ngx_http_lifecycle_profile_failed(ctx,
                                "unexpected reply from the profile script",
                                sizeof("unexpected reply from the profile "
                                       "script") - 1);
        }

        ngx_http_lifecycle_profile_wake(ctx);
    }

done:

    ngx_http_lifecycle_batch_done(b);
}


/*
 * A visitor's answer: its "\0"-separated parts. NGX_DECLINED when it
 * does not have the parts asked for, NGX_ERROR when memory ran out (the
 * page goes out with its default content either way).
 */

static ngx_int_t
ngx_http_lifecycle_profile_answer(ngx_http_lifecycle_ctx_t *ctx, u_char *s,
    size_t len)
{
    u_char                          *p, *last, *end;
    ngx_int_t                        session;
    ngx_str_t                       *part;
    ngx_uint_t                       n, base;
    ngx_http_request_t              *r;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    r = ctx->request;
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

    last = s + len;
    n = 1;

    for (p = s; (p = ngx_strlchr(p, last, '\0')) != NULL; p++) {
        n++;
    }

    base = 3 + lmcf->wanted->nelts + ctx->recent;

    if (n < base || (n - base) % 2 || (!ctx->cart && n != base)) {
        return NGX_DECLINED;
    }

    part = ngx_palloc(r->pool, n * sizeof(ngx_str_t));
    if (part == NULL) {
        return NGX_ERROR;
    }

    for (p = s, n = 0; ; n++) {
        end = ngx_strlchr(p, last, '\0');

        part[n].data = p;
        part[n].len = (end ? end : last) - p;

        if (end == NULL) {
            break;
        }

        p = end + 1;
    }

    n++;

    session = ngx_atoi(part[0].data, part[0].len);

    if (session == NGX_ERROR) {
        return NGX_DECLINED;
    }

    ctx->session = session;

    if (part[1].len == 1 && part[1].data[0] == '1') {
        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_SESSIONS_NEW);
        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_GROUP_SESSIONS
                                    + ctx->group);
    }

    /* the answer is freed when the reply's handler returns: copied */
    ctx->profile = ngx_http_lifecycle_profile_parse(r, ctx, part, n);

    return ctx->profile ? NGX_OK : NGX_ERROR;
}


/* a count: the script answers numbers as digits, "" for none */

static ngx_uint_t
ngx_http_lifecycle_profile_number(ngx_str_t *value)
{
    ngx_int_t  n;

    n = ngx_atoi(value->data, value->len);

    return (n == NGX_ERROR) ? 0 : (ngx_uint_t) n;
}


static ngx_int_t
ngx_http_lifecycle_profile_count(ngx_http_request_t *r, ngx_array_t *a,
    ngx_str_t *field, ngx_str_t *value)
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
    ngx_str_t *value)
{
    s->len = value->len;
    s->data = ngx_pnalloc(r->pool, s->len);
    if (s->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(s->data, value->data, s->len);

    return NGX_OK;
}


#define ngx_http_lifecycle_field_is(f, name)                                  \
    ((f)->len == sizeof(name) - 1                                             \
     && ngx_strncmp((f)->data, name, sizeof(name) - 1) == 0)


static ngx_http_lifecycle_profile_t *
ngx_http_lifecycle_profile_parse(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx, ngx_str_t *part, ngx_uint_t n)
{
    ngx_uint_t                       i, k;
    ngx_str_t                       *wanted;
    ngx_http_lifecycle_count_t      *item;
    ngx_http_lifecycle_profile_t    *p;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

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

    p->visits = ctx->session;
    p->previous = ngx_http_lifecycle_profile_number(&part[2]);

    wanted = lmcf->wanted->elts;
    k = 3;

    for (i = 0; i < lmcf->wanted->nelts; i++, k++) {
        if (part[k].len == 0) {
            continue;
        }

        if (ngx_http_lifecycle_profile_field(r, p, &wanted[i], &part[k])
            != NGX_OK)
        {
            return NULL;
        }
    }

    if (ctx->recent) {
        if (part[k].len
            && ngx_http_lifecycle_profile_recent(r, p, &part[k]) != NGX_OK)
        {
            return NULL;
        }

        k++;
    }

    /* the cart: product and quantity pairs */

    for ( /* void */ ; k + 1 < n; k += 2) {
        item = ngx_array_push(&p->cart_items);
        if (item == NULL
            || ngx_http_lifecycle_profile_string(r, &item->key, &part[k])
               != NGX_OK)
        {
            return NULL;
        }

        item->count = ngx_http_lifecycle_profile_number(&part[k + 1]);
    }

    return p;
}


/* one wanted field "f" of the answer into the profile */

static ngx_int_t
ngx_http_lifecycle_profile_field(ngx_http_request_t *r,
    ngx_http_lifecycle_profile_t *p, ngx_str_t *f, ngx_str_t *v)
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
    ngx_http_lifecycle_profile_t *p, ngx_str_t *value)
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
    ngx_str_t *field, ngx_str_t *value)
{
    u_char                            *p, *last, *q;
    uint64_t                           n[4];
    ngx_uint_t                         i;
    ngx_http_lifecycle_popup_state_t  *st;

    p = value->data;
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
