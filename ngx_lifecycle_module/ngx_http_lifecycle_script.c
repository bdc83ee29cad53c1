
/*
 * lifecycle: "lifecycle_script" serves lifecycle.js from memory. The
 * minified file (js/dist/lifecycle.min.js) is part of the module: the
 * assembler includes it at build time (NGX_HTTP_LIFECYCLE_JS, its path,
 * comes from "config"), so the .so needs no file at run time and a
 * module always serves the script it was built with. Its ETag and a
 * gzip copy are made once, when the configuration is loaded.
 */


#include "ngx_http_lifecycle_module.h"

#include <ngx_sha1.h>

#include <zlib.h>


#ifndef NGX_HTTP_LIFECYCLE_JS
#error "NGX_HTTP_LIFECYCLE_JS (the path of lifecycle.min.js) comes from config"
#endif


/* the file as it was at build time, NUL-terminated, hidden in the .so */
__asm__ (
    "    .pushsection .rodata\n"
    "    .balign 16\n"
    "    .hidden ngx_http_lifecycle_js_start\n"
    "    .hidden ngx_http_lifecycle_js_end\n"
    "ngx_http_lifecycle_js_start:\n"
    "    .incbin \"" NGX_HTTP_LIFECYCLE_JS "\"\n"
    "ngx_http_lifecycle_js_end:\n"
    "    .byte 0\n"
    "    .popsection\n"
);

extern const u_char  ngx_http_lifecycle_js_start[];
extern const u_char  ngx_http_lifecycle_js_end[];


/* a day: a new lifecycle.js reaches every browser within it */
#define NGX_HTTP_LIFECYCLE_SCRIPT_MAX_AGE  86400

/* hex digits of SHA-1 in the ETag */
#define NGX_HTTP_LIFECYCLE_ETAG_LEN        20


typedef struct {
    ngx_str_t                   js;
    ngx_str_t                   gzip;          /* empty: not smaller */
    ngx_str_t                   etag;          /* "..." */
    ngx_str_t                   etag_gzip;     /* "...-gz" */
    ngx_str_t                   cache_control;
} ngx_http_lifecycle_script_conf_t;


typedef struct {
    ngx_pool_t                 *pool;
    ngx_uint_t                  failed;
} ngx_http_lifecycle_zalloc_t;


static ngx_int_t ngx_http_lifecycle_script_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_lifecycle_script_prepare(ngx_conf_t *cf,
    ngx_http_lifecycle_script_conf_t *sc);
static ngx_int_t ngx_http_lifecycle_script_gzip(ngx_conf_t *cf,
    ngx_http_lifecycle_script_conf_t *sc);
static void *ngx_http_lifecycle_zalloc(void *opaque, u_int items,
    u_int size);
static void ngx_http_lifecycle_zfree(void *opaque, void *address);


char *
ngx_http_lifecycle_script_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_lifecycle_loc_conf_t  *llcf = conf;

    u_char                            *p;
    time_t                             max_age;
    ngx_str_t                         *value, s;
    ngx_uint_t                         i;
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_lifecycle_script_conf_t  *sc;

    if (llcf->script) {
        return "is duplicate";
    }

    value = cf->args->elts;
    max_age = NGX_HTTP_LIFECYCLE_SCRIPT_MAX_AGE;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "max_age=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            max_age = ngx_parse_time(&s, 1);

            if (max_age != (time_t) NGX_ERROR) {
                continue;
            }
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    sc = ngx_pcalloc(cf->pool, sizeof(ngx_http_lifecycle_script_conf_t));
    if (sc == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_lifecycle_script_prepare(cf, sc) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(cf->pool, sizeof("public, max-age=") - 1 + NGX_TIME_T_LEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    sc->cache_control.data = p;
    sc->cache_control.len = ngx_sprintf(p, "public, max-age=%T", max_age) - p;

    llcf->script = sc;

    /* fetching the script is not a page view */
    llcf->endpoint = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_lifecycle_script_handler;

    return NGX_CONF_OK;
}


/* the ETag and the gzip copy, made when the configuration is loaded */

static ngx_int_t
ngx_http_lifecycle_script_prepare(ngx_conf_t *cf,
    ngx_http_lifecycle_script_conf_t *sc)
{
    u_char      *p, digest[20], hex[40];
    ngx_sha1_t   sha1;

    sc->js.data = (u_char *) ngx_http_lifecycle_js_start;
    sc->js.len = ngx_http_lifecycle_js_end - ngx_http_lifecycle_js_start;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, sc->js.data, sc->js.len);
    ngx_sha1_final(digest, &sha1);
    ngx_hex_dump(hex, digest, sizeof(digest));

    p = ngx_pnalloc(cf->pool, 2 * (NGX_HTTP_LIFECYCLE_ETAG_LEN + 2) + 3);
    if (p == NULL) {
        return NGX_ERROR;
    }

    sc->etag.data = p;
    sc->etag.len = ngx_sprintf(p, "\"%*s\"",
                               (size_t) NGX_HTTP_LIFECYCLE_ETAG_LEN, hex)
                   - p;
    p += sc->etag.len;

    sc->etag_gzip.data = p;
    sc->etag_gzip.len = ngx_sprintf(p, "\"%*s-gz\"",
                                    (size_t) NGX_HTTP_LIFECYCLE_ETAG_LEN, hex)
                        - p;

    return ngx_http_lifecycle_script_gzip(cf, sc);
}


static ngx_int_t
ngx_http_lifecycle_script_gzip(ngx_conf_t *cf,
    ngx_http_lifecycle_script_conf_t *sc)
{
    int                          rc;
    u_char                      *out;
    size_t                       size;
    z_stream                     zs;
    ngx_http_lifecycle_zalloc_t  za;

    ngx_memzero(&zs, sizeof(z_stream));

    za.pool = cf->temp_pool;
    za.failed = 0;

    zs.zalloc = ngx_http_lifecycle_zalloc;
    zs.zfree = ngx_http_lifecycle_zfree;
    zs.opaque = &za;

    /* windowBits 15 + 16: a gzip header and trailer */
    if (deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, MAX_WBITS + 16,
                     MAX_MEM_LEVEL, Z_DEFAULT_STRATEGY)
        != Z_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "lifecycle_script: deflateInit2() failed");
        return NGX_ERROR;
    }

    size = deflateBound(&zs, sc->js.len);

    out = ngx_pnalloc(cf->pool, size);
    if (out == NULL) {
        (void) deflateEnd(&zs);
        return NGX_ERROR;
    }

    zs.next_in = sc->js.data;
    zs.avail_in = sc->js.len;
    zs.next_out = out;
    zs.avail_out = size;

    rc = deflate(&zs, Z_FINISH);

    (void) deflateEnd(&zs);

    if (rc != Z_STREAM_END) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "lifecycle_script: deflate() failed: %d", rc);
        return NGX_ERROR;
    }

    /* not worth a second representation when it saves nothing */
    if (zs.total_out < sc->js.len) {
        sc->gzip.data = out;
        sc->gzip.len = zs.total_out;
    }

    return NGX_OK;
}


static void *
ngx_http_lifecycle_zalloc(void *opaque, u_int items, u_int size)
{
    ngx_http_lifecycle_zalloc_t  *za = opaque;

    return ngx_palloc(za->pool, (size_t) items * size);
}


static void
ngx_http_lifecycle_zfree(void *opaque, void *address)
{
    /* the configuration's temporary pool goes as a whole */
}


static ngx_int_t
ngx_http_lifecycle_script_handler(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_str_t                         *body, *etag;
    ngx_table_elt_t                   *h;
    ngx_http_lifecycle_loc_conf_t     *llcf;
    ngx_http_lifecycle_script_conf_t  *sc;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_lifecycle_not_allowed(r, "GET, HEAD");
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_lifecycle_module);
    sc = llcf->script;

    body = &sc->js;
    etag = &sc->etag;

#if (NGX_HTTP_GZIP)
    if (sc->gzip.len && ngx_http_gzip_ok(r) == NGX_OK) {
        body = &sc->gzip;
        etag = &sc->etag_gzip;

        h = ngx_http_lifecycle_add_header(r, "Content-Encoding",
                                          (u_char *) "gzip", 4);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        r->headers_out.content_encoding = h;
    }
#endif

    /* the answer depends on Accept-Encoding: caches must know */
    if (sc->gzip.len
        && ngx_http_lifecycle_add_header(r, "Vary",
                                         (u_char *) "Accept-Encoding",
                                         sizeof("Accept-Encoding") - 1)
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* nginx's not_modified filter answers 304 to a matching If-None-Match */
    h = ngx_http_lifecycle_add_header(r, "ETag", etag->data, etag->len);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.etag = h;

    if (ngx_http_lifecycle_add_header(r, "Cache-Control",
                                      sc->cache_control.data,
                                      sc->cache_control.len)
        == NULL
        || ngx_http_lifecycle_add_header(r, "X-Content-Type-Options",
                                         (u_char *) "nosniff",
                                         sizeof("nosniff") - 1)
           == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&r->headers_out.charset, "utf-8");

    return ngx_http_lifecycle_send(r, NGX_HTTP_OK, "application/javascript",
                                   body->data, body->len);
}
