
/*
 * lifecycle: who is visiting. Whether a request may be tracked at all
 * (HEAD, prefetch, bots, GPC/DNT, consent), and the signed visitor cookie.
 */


#include "ngx_http_lifecycle_module.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>


/* base64url of the first 16 bytes of HMAC-SHA256(secret, vid) */
#define NGX_HTTP_LIFECYCLE_SIG_RAW   16
#define NGX_HTTP_LIFECYCLE_SIG_LEN   22
#define NGX_HTTP_LIFECYCLE_COOKIE_LEN                                         \
    (LC_VID_LEN + 1 + NGX_HTTP_LIFECYCLE_SIG_LEN)


static ngx_int_t ngx_http_lifecycle_sign(
    ngx_http_lifecycle_main_conf_t *lmcf, u_char *vid, u_char *sig);
static ngx_int_t ngx_http_lifecycle_cookie_valid(ngx_http_request_t *r,
    ngx_http_lifecycle_main_conf_t *lmcf, ngx_str_t *value);
static void ngx_http_lifecycle_hmac_cleanup(void *data);


ngx_str_t  ngx_http_lifecycle_skip_reasons[] = {
    ngx_string("tracked"),
    ngx_string("head"),
    ngx_string("prefetch"),
    ngx_string("bot"),
    ngx_string("gpc"),
    ngx_string("dnt"),
    ngx_string("consent")
};


/*
 * Crawlers, previewers and audit tools that name themselves. Plain HTTP
 * clients (curl, scripts) and headless browsers are not in the list: shops
 * test with them, and lifecycle_bots replaces the list where they must go.
 */
static ngx_str_t  ngx_http_lifecycle_default_bots = ngx_string(
    "bot|crawl|spider|slurp|archiver|facebookexternalhit|bingpreview"
    "|mediapartners|adsbot|lighthouse|pagespeed|gtmetrix|pingdom"
    "|uptimerobot|scrapy|httrack|feedfetcher|yandex|baiduspider");


static char *
ngx_http_lifecycle_bots_add(ngx_conf_t *cf,
    ngx_http_lifecycle_main_conf_t *lmcf, ngx_str_t *pattern)
{
    u_char               errstr[NGX_MAX_CONF_ERRSTR];
    ngx_regex_elt_t     *re;
    ngx_regex_compile_t  rc;

    ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

    rc.pattern = *pattern;
    rc.pool = cf->pool;
    rc.options = NGX_REGEX_CASELESS;
    rc.err.len = NGX_MAX_CONF_ERRSTR;
    rc.err.data = errstr;

    if (ngx_http_lifecycle_regex_compile(cf, &rc) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V", &rc.err);
        return NGX_CONF_ERROR;
    }

    re = ngx_array_push(lmcf->bots);
    if (re == NULL) {
        return NGX_CONF_ERROR;
    }

    re->regex = rc.regex;
    re->name = pattern->data;

    return NGX_CONF_OK;
}


char *
ngx_http_lifecycle_bots(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_main_conf_t  *lmcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (lmcf->bots != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    lmcf->bots = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                  sizeof(ngx_regex_elt_t));
    if (lmcf->bots == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_http_lifecycle_bots_add(cf, lmcf, &value[i])
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


char *
ngx_http_lifecycle_visitor_init_bots(ngx_conf_t *cf,
    ngx_http_lifecycle_main_conf_t *lmcf)
{
    lmcf->bots = ngx_array_create(cf->pool, 1, sizeof(ngx_regex_elt_t));
    if (lmcf->bots == NULL) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_lifecycle_bots_add(cf, lmcf,
                                       &ngx_http_lifecycle_default_bots);
}


static ngx_uint_t
ngx_http_lifecycle_header_is(ngx_table_elt_t *h, char *name, size_t len)
{
    return h->key.len == len
           && ngx_strncasecmp(h->key.data, (u_char *) name, len) == 0;
}


static ngx_uint_t
ngx_http_lifecycle_is_one(ngx_str_t *value)
{
    return value->len >= 1 && value->data[0] == '1'
           && (value->len == 1 || value->data[1] == ' '
               || value->data[1] == ';');
}


/*
 * A few hundred user agents make most of a shop's traffic: the worker
 * remembers what the bot expressions said of the last ones it saw, so
 * most requests compare a string instead of running them.
 */

#define NGX_HTTP_LIFECYCLE_UA_CACHE  256
#define NGX_HTTP_LIFECYCLE_UA_LEN    256


typedef struct {
    ngx_uint_t                  hash;
    size_t                      len;          /* 0: empty */
    ngx_uint_t                  bot;
    u_char                      ua[NGX_HTTP_LIFECYCLE_UA_LEN];
} ngx_http_lifecycle_ua_t;


static ngx_http_lifecycle_ua_t  ngx_http_lifecycle_ua_cache[
                                                NGX_HTTP_LIFECYCLE_UA_CACHE];


static ngx_uint_t
ngx_http_lifecycle_is_bot(ngx_http_request_t *r, ngx_str_t *ua)
{
    ngx_uint_t                       hash, bot;
    ngx_http_lifecycle_ua_t         *e;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    hash = ngx_hash_key(ua->data, ua->len);
    e = &ngx_http_lifecycle_ua_cache[hash % NGX_HTTP_LIFECYCLE_UA_CACHE];

    if (e->len == ua->len && e->hash == hash
        && ngx_memcmp(e->ua, ua->data, ua->len) == 0)
    {
        return e->bot;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

    bot = (ngx_regex_exec_array(lmcf->bots, ua, r->connection->log)
           == NGX_OK);

    if (ua->len > 0 && ua->len <= NGX_HTTP_LIFECYCLE_UA_LEN) {
        e->hash = hash;
        e->len = ua->len;
        e->bot = bot;
        ngx_memcpy(e->ua, ua->data, ua->len);
    }

    return bot;
}


ngx_http_lifecycle_skip_e
ngx_http_lifecycle_visitor_skip(ngx_http_request_t *r)
{
    ngx_str_t                       consent;
    ngx_uint_t                      i, gpc, dnt;
    ngx_list_part_t                *part;
    ngx_table_elt_t                *h;
    ngx_http_lifecycle_srv_conf_t  *lscf;
    ngx_http_lifecycle_loc_conf_t  *llcf;

    if (r->method == NGX_HTTP_HEAD) {
        return NGX_HTTP_LIFECYCLE_SKIP_HEAD;
    }

    gpc = 0;
    dnt = 0;

    /* one pass over the headers for the ones nginx does not index */

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

        switch (h[i].key.len) {

        case 3:
            if (ngx_http_lifecycle_header_is(&h[i], "dnt", 3)) {
                dnt |= ngx_http_lifecycle_is_one(&h[i].value);
            }
            break;

        case 5:
        case 7:
        case 9:
        case 11:
            if (ngx_http_lifecycle_header_is(&h[i], "sec-gpc", 7)) {
                gpc |= ngx_http_lifecycle_is_one(&h[i].value);
                break;
            }

            if (ngx_http_lifecycle_header_is(&h[i], "purpose", 7)
                || ngx_http_lifecycle_header_is(&h[i], "sec-purpose", 11)
                || ngx_http_lifecycle_header_is(&h[i], "x-purpose", 9)
                || ngx_http_lifecycle_header_is(&h[i], "x-moz", 5))
            {
                if (ngx_strlcasestrn(h[i].value.data,
                                     h[i].value.data + h[i].value.len,
                                     (u_char *) "prefetch", 8 - 1)
                    || ngx_strlcasestrn(h[i].value.data,
                                        h[i].value.data + h[i].value.len,
                                        (u_char *) "prerender", 9 - 1)
                    || ngx_strlcasestrn(h[i].value.data,
                                        h[i].value.data + h[i].value.len,
                                        (u_char *) "preview", 7 - 1))
                {
                    return NGX_HTTP_LIFECYCLE_SKIP_PREFETCH;
                }
            }
            break;
        }
    }

    if (r->headers_in.user_agent
        && ngx_http_lifecycle_is_bot(r, &r->headers_in.user_agent->value))
    {
        return NGX_HTTP_LIFECYCLE_SKIP_BOT;
    }

    lscf = ngx_http_get_module_srv_conf(r, ngx_http_lifecycle_module);

    if (gpc && lscf->respect_gpc) {
        return NGX_HTTP_LIFECYCLE_SKIP_GPC;
    }

    if (dnt && lscf->respect_dnt) {
        return NGX_HTTP_LIFECYCLE_SKIP_DNT;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_lifecycle_module);

    if (llcf->consent) {
        if (ngx_http_complex_value(r, llcf->consent, &consent) != NGX_OK) {
            return NGX_HTTP_LIFECYCLE_SKIP_CONSENT;
        }

        if (consent.len == 0 || (consent.len == 1 && consent.data[0] == '0'))
        {
            return NGX_HTTP_LIFECYCLE_SKIP_CONSENT;
        }
    }

    return NGX_HTTP_LIFECYCLE_TRACK;
}


ngx_int_t
ngx_http_lifecycle_visitor_identify(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx)
{
    u_char                           raw[LC_VID_LEN / 2];
    ngx_str_t                        value;
    ngx_http_lifecycle_srv_conf_t   *lscf;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lscf = ngx_http_get_module_srv_conf(r, ngx_http_lifecycle_module);
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

    if (ngx_http_parse_multi_header_lines(&r->headers_in.cookies,
                                          &lscf->cookie_name, &value)
        != NGX_DECLINED)
    {
        if (ngx_http_lifecycle_cookie_valid(r, lmcf, &value)) {
            ngx_memcpy(ctx->vid, value.data, LC_VID_LEN);
            return NGX_OK;
        }

        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_COOKIES_INVALID);
    }

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "lifecycle: RAND_bytes() failed");
        return NGX_ERROR;
    }

    ngx_hex_dump(ctx->vid, raw, sizeof(raw));
    ctx->new_visitor = 1;

    ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_VISITORS_NEW);

    return NGX_OK;
}


/*
 * The visitor of a request that must not be given a cookie (a beacon):
 * NGX_OK and the id when the request carries a valid visitor cookie,
 * NGX_DECLINED otherwise.
 */

ngx_int_t
ngx_http_lifecycle_visitor_known(ngx_http_request_t *r, u_char *vid)
{
    ngx_str_t                        value;
    ngx_http_lifecycle_srv_conf_t   *lscf;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lscf = ngx_http_get_module_srv_conf(r, ngx_http_lifecycle_module);
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

    if (ngx_http_parse_multi_header_lines(&r->headers_in.cookies,
                                          &lscf->cookie_name, &value)
        == NGX_DECLINED)
    {
        return NGX_DECLINED;
    }

    if (!ngx_http_lifecycle_cookie_valid(r, lmcf, &value)) {
        return NGX_DECLINED;
    }

    ngx_memcpy(vid, value.data, LC_VID_LEN);

    return NGX_OK;
}


static ngx_int_t
ngx_http_lifecycle_cookie_valid(ngx_http_request_t *r,
    ngx_http_lifecycle_main_conf_t *lmcf, ngx_str_t *value)
{
    u_char      sig[NGX_HTTP_LIFECYCLE_SIG_LEN];
    ngx_uint_t  i;

    if (value->len != NGX_HTTP_LIFECYCLE_COOKIE_LEN
        || value->data[LC_VID_LEN] != '.')
    {
        goto invalid;
    }

    for (i = 0; i < LC_VID_LEN; i++) {
        if (!((value->data[i] >= '0' && value->data[i] <= '9')
              || (value->data[i] >= 'a' && value->data[i] <= 'f')))
        {
            goto invalid;
        }
    }

    if (ngx_http_lifecycle_sign(lmcf, value->data, sig) != NGX_OK) {
        return 0;
    }

    if (CRYPTO_memcmp(sig, value->data + LC_VID_LEN + 1,
                      NGX_HTTP_LIFECYCLE_SIG_LEN)
        == 0)
    {
        return 1;
    }

invalid:

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "lifecycle: client sent an invalid visitor cookie");

    return 0;
}


/*
 * HMAC-SHA256 with the key's inner and outer pads hashed once, at
 * configuration time: a request costs two SHA-256 blocks and copies of
 * the keyed states, not a key schedule (nor OpenSSL's HMAC() setup).
 */

ngx_int_t
ngx_http_lifecycle_visitor_init_secret(ngx_conf_t *cf,
    ngx_http_lifecycle_main_conf_t *lmcf)
{
    u_char               key[64], pad[64];
    ngx_uint_t           i, k;
    unsigned int         n;
    EVP_MD_CTX          *md;
    ngx_pool_cleanup_t  *cln;

    ngx_memzero(key, sizeof(key));

    if (lmcf->secret.len > sizeof(key)) {
        if (EVP_Digest(lmcf->secret.data, lmcf->secret.len, key, &n,
                       EVP_sha256(), NULL)
            != 1)
        {
            return NGX_ERROR;
        }

    } else {
        ngx_memcpy(key, lmcf->secret.data, lmcf->secret.len);
    }

    for (k = 0; k < 2; k++) {
        cln = ngx_pool_cleanup_add(cf->pool, 0);
        md = EVP_MD_CTX_new();

        if (cln == NULL || md == NULL) {
            EVP_MD_CTX_free(md);
            return NGX_ERROR;
        }

        cln->handler = ngx_http_lifecycle_hmac_cleanup;
        cln->data = md;

        for (i = 0; i < sizeof(pad); i++) {
            pad[i] = key[i] ^ (k ? 0x5c : 0x36);
        }

        if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1
            || EVP_DigestUpdate(md, pad, sizeof(pad)) != 1)
        {
            return NGX_ERROR;
        }

        lmcf->hmac[k] = md;
    }

    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(pad, sizeof(pad));

    return NGX_OK;
}


static void
ngx_http_lifecycle_hmac_cleanup(void *data)
{
    EVP_MD_CTX_free(data);
}


static ngx_int_t
ngx_http_lifecycle_sign(ngx_http_lifecycle_main_conf_t *lmcf, u_char *vid,
    u_char *sig)
{
    u_char             inner[EVP_MAX_MD_SIZE], mac[EVP_MAX_MD_SIZE];
    unsigned int       n;
    ngx_str_t          src, dst;
    static EVP_MD_CTX  *md;

    /* one scratch context per worker, made at the first request */

    if (md == NULL) {
        md = EVP_MD_CTX_new();
        if (md == NULL) {
            return NGX_ERROR;
        }
    }

    if (EVP_MD_CTX_copy_ex(md, lmcf->hmac[0]) != 1
        || EVP_DigestUpdate(md, vid, LC_VID_LEN) != 1
        || EVP_DigestFinal_ex(md, inner, &n) != 1
        || EVP_MD_CTX_copy_ex(md, lmcf->hmac[1]) != 1
        || EVP_DigestUpdate(md, inner, n) != 1
        || EVP_DigestFinal_ex(md, mac, &n) != 1)
    {
        return NGX_ERROR;
    }

    src.data = mac;
    src.len = NGX_HTTP_LIFECYCLE_SIG_RAW;
    dst.data = sig;

    ngx_encode_base64url(&dst, &src);

    return NGX_OK;
}


ngx_int_t
ngx_http_lifecycle_visitor_set_cookie(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx)
{
    u_char                          *p;
    size_t                           len;
    ngx_uint_t                       secure;
    ngx_table_elt_t                 *set_cookie;
    ngx_http_lifecycle_srv_conf_t   *lscf;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lscf = ngx_http_get_module_srv_conf(r, ngx_http_lifecycle_module);
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

#if (NGX_HTTP_SSL)
    secure = (r->connection->ssl != NULL);
#else
    secure = 0;
#endif

    len = lscf->cookie_name.len + 1 + NGX_HTTP_LIFECYCLE_COOKIE_LEN
          + sizeof("; Max-Age=") - 1 + NGX_TIME_T_LEN
          + sizeof("; Path=/; HttpOnly; SameSite=Lax") - 1;

    if (lscf->cookie_domain.len) {
        len += sizeof("; Domain=") - 1 + lscf->cookie_domain.len;
    }

    if (secure) {
        len += sizeof("; Secure") - 1;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    set_cookie = ngx_list_push(&r->headers_out.headers);
    if (set_cookie == NULL) {
        return NGX_ERROR;
    }

    set_cookie->hash = 1;
    ngx_str_set(&set_cookie->key, "Set-Cookie");
    set_cookie->value.data = p;

    p = ngx_copy(p, lscf->cookie_name.data, lscf->cookie_name.len);
    *p++ = '=';
    p = ngx_copy(p, ctx->vid, LC_VID_LEN);
    *p++ = '.';

    if (ngx_http_lifecycle_sign(lmcf, ctx->vid, p) != NGX_OK) {
        return NGX_ERROR;
    }

    p += NGX_HTTP_LIFECYCLE_SIG_LEN;
    p = ngx_sprintf(p, "; Max-Age=%T; Path=/", lscf->cookie_max_age);

    if (lscf->cookie_domain.len) {
        p = ngx_sprintf(p, "; Domain=%V", &lscf->cookie_domain);
    }

    p = ngx_cpymem(p, "; HttpOnly; SameSite=Lax",
                   sizeof("; HttpOnly; SameSite=Lax") - 1);

    if (secure) {
        p = ngx_cpymem(p, "; Secure", sizeof("; Secure") - 1);
    }

    set_cookie->value.len = p - set_cookie->value.data;

    return NGX_OK;
}
