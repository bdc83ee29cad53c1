
/*
 * lifecycle: the output filter. Hands a new visitor its cookie, and
 * streams a page through, filling its slots
 * (<!--lc:slot NAME-->default<!--/lc:slot-->) with the chosen blocks and
 * placing a popup before </body>. Nothing is buffered but a possible
 * marker cut by a buffer edge and, while a slot is being filled, its
 * default content (bounded), kept in case the slot never closes.
 * Upstream gzip is inflated when the page will be changed.
 */


#include "ngx_http_lifecycle_module.h"

#include <zlib.h>

#if (__SSE2__)
#include <emmintrin.h>
#endif


/* "<!--lc:slot " + a name of up to 64 + "-->" */
#define NGX_HTTP_LIFECYCLE_MARKER_MAX  (12 + 64 + 3)

/* a slot's default content longer than this is left as it is */
#define NGX_HTTP_LIFECYCLE_DEFAULT_MAX  16384

#define NGX_HTTP_LIFECYCLE_ZBUF_SIZE    8192
#define NGX_HTTP_LIFECYCLE_ZBUFS        16

#define NGX_HTTP_LIFECYCLE_BUFFERED     0x08


typedef enum {
    NGX_HTTP_LIFECYCLE_M_PARTIAL = 0,
    NGX_HTTP_LIFECYCLE_M_NONE,
    NGX_HTTP_LIFECYCLE_M_OPEN,
    NGX_HTTP_LIFECYCLE_M_CLOSE,
    NGX_HTTP_LIFECYCLE_M_BODY
} ngx_http_lifecycle_marker_e;


#define NGX_HTTP_LIFECYCLE_CAN_OPEN    1
#define NGX_HTTP_LIFECYCLE_CAN_CLOSE   2
#define NGX_HTTP_LIFECYCLE_CAN_BODY    4


typedef struct {
    ngx_http_lifecycle_ctx_t   *lctx;
    ngx_array_t                *fills;         /* of ..._fill_t */
    ngx_http_lifecycle_rule_t  *popup;

    ngx_chain_t                *in;            /* not parsed yet */
    ngx_chain_t                *out;
    ngx_chain_t               **last_out;
    ngx_chain_t                *free;
    ngx_chain_t                *busy;

    /* the marker being matched; "saved" are its bytes from earlier bufs */
    ngx_uint_t                  m_len;
    ngx_uint_t                  m_can;
    u_char                      name[NGX_HTTP_LIFECYCLE_MARKER_MAX];
    size_t                      name_len;
    u_char                      saved[NGX_HTTP_LIFECYCLE_MARKER_MAX];
    size_t                      saved_len;

    /* a slot being filled: its default, kept until the slot closes */
    ngx_http_lifecycle_fill_t  *fill;
    u_char                     *held;
    size_t                      held_len;

    /* upstream gzip */
    z_stream                   *zstream;
    ngx_chain_t                *zin;           /* compressed, not inflated */
    ngx_array_t                 zbufs;         /* of ngx_buf_t * */

    /* a static page that may come as a file: from the page cache */
    off_t                       page_size;
    time_t                      page_mtime;

    unsigned                    popup_done:1;
    unsigned                    zdone:1;
} ngx_http_lifecycle_filter_ctx_t;


static ngx_int_t ngx_http_lifecycle_filter_start(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *lctx);
static ngx_int_t ngx_http_lifecycle_private(ngx_http_request_t *r);
static ngx_int_t ngx_http_lifecycle_parse(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, ngx_buf_t *buf);
static u_char *ngx_http_lifecycle_next_marker(u_char *p, u_char *last);
static ngx_uint_t ngx_http_lifecycle_marker_byte(
    ngx_http_lifecycle_filter_ctx_t *ctx, u_char c);
static ngx_int_t ngx_http_lifecycle_marker(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, ngx_uint_t marker, ngx_buf_t *buf,
    u_char **start, u_char *mark, u_char *end);
static ngx_int_t ngx_http_lifecycle_emit_run(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, ngx_buf_t *buf, u_char *start,
    u_char *end);
static ngx_int_t ngx_http_lifecycle_emit_copy(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, u_char *data, size_t len);
static ngx_int_t ngx_http_lifecycle_emit_mem(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, u_char *data, size_t len);
static ngx_int_t ngx_http_lifecycle_hold(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, u_char *data, size_t len);
static ngx_int_t ngx_http_lifecycle_end(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, ngx_buf_t *buf, ngx_chain_t **tail,
    ngx_buf_t *shadow);
static ngx_int_t ngx_http_lifecycle_file_input(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, ngx_chain_t **in);
static ngx_int_t ngx_http_lifecycle_replay(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, ngx_http_lifecycle_page_t *page,
    ngx_buf_t *in);
static ngx_int_t ngx_http_lifecycle_output(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx);
static ngx_int_t ngx_http_lifecycle_inflate(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx);
static void ngx_http_lifecycle_inflate_end(void *data);
static ngx_int_t ngx_http_lifecycle_filter_init(ngx_conf_t *cf);


static ngx_http_module_t  ngx_http_lifecycle_filter_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_lifecycle_filter_init,        /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_lifecycle_filter_module = {
    NGX_MODULE_V1,
    &ngx_http_lifecycle_filter_module_ctx, /* module context */
    NULL,                                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static u_char  ngx_http_lifecycle_open[] = "<!--lc:slot ";
static u_char  ngx_http_lifecycle_close[] = "<!--/lc:slot-->";
static u_char  ngx_http_lifecycle_body[] = "</body>";


static ngx_int_t
ngx_http_lifecycle_header_filter(ngx_http_request_t *r)
{
    ngx_http_lifecycle_ctx_t  *ctx;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_lifecycle_get_ctx(r);

    if (ctx == NULL || !ctx->tracked) {
        return ngx_http_next_header_filter(r);
    }

    if (ctx->new_visitor) {
        if (ngx_http_lifecycle_visitor_set_cookie(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ctx->profile && r->headers_out.status == NGX_HTTP_OK
        && !r->header_only && r->headers_out.content_length_n != 0)
    {
        if (ngx_http_lifecycle_filter_start(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return ngx_http_next_header_filter(r);
}


/*
 * Everything is decided here, before the headers go: a page nobody
 * changes keeps its validators, its length and sendfile.
 */

static ngx_int_t
ngx_http_lifecycle_filter_start(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *lctx)
{
    ngx_str_t                        *type, *enc;
    ngx_uint_t                        gzip;
    ngx_pool_cleanup_t               *cln;
    ngx_http_lifecycle_filter_ctx_t  *ctx;
    ngx_http_lifecycle_main_conf_t   *lmcf;

    type = &r->headers_out.content_type;

    if (type->len < 9 || ngx_strncasecmp(type->data, (u_char *) "text/html", 9)
                         != 0
        || (type->len > 9 && type->data[9] != ';' && type->data[9] != ' '))
    {
        return NGX_OK;
    }

    gzip = 0;

    if (r->headers_out.content_encoding
        && r->headers_out.content_encoding->value.len)
    {
        enc = &r->headers_out.content_encoding->value;

        if (enc->len == 4
            && ngx_strncasecmp(enc->data, (u_char *) "gzip", 4) == 0)
        {
            gzip = 1;

        } else if (!(enc->len == 8
                     && ngx_strncasecmp(enc->data, (u_char *) "identity", 8)
                        == 0))
        {
            /* br, deflate, ...: bytes we cannot read go out untouched */
            return NGX_OK;
        }
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_lifecycle_filter_ctx_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_lifecycle_choose(r, lctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (lctx->fills->nelts == 0 && lctx->popup == NULL) {
        return NGX_OK;
    }

    ctx->fills = lctx->fills;
    ctx->popup = lctx->popup;

    if (gzip) {
        ctx->zstream = ngx_pcalloc(r->pool, sizeof(z_stream));
        cln = ngx_pool_cleanup_add(r->pool, 0);

        if (ctx->zstream == NULL || cln == NULL
            || ngx_array_init(&ctx->zbufs, r->pool, 2, sizeof(ngx_buf_t *))
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (inflateInit2(ctx->zstream, MAX_WBITS + 16) != Z_OK) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "lifecycle: inflateInit2() failed");
            return NGX_ERROR;
        }

        cln->handler = ngx_http_lifecycle_inflate_end;
        cln->data = ctx->zstream;

        /* the page leaves as identity; gzip further down may compress it */
        r->headers_out.content_encoding->hash = 0;
        r->headers_out.content_encoding = NULL;
    }

    ctx->lctx = lctx;
    ctx->last_out = &ctx->out;

    ngx_http_set_ctx(r, ctx, ngx_http_lifecycle_filter_module);

    /*
     * A static file (no upstream) of a known, small size comes as a file
     * buffer: the page cache has its bytes and markers. Anything else is
     * read into memory for us by the copy filter.
     */

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

    if (lmcf->page_cache && r->upstream == NULL && !gzip
        && r->headers_out.content_length_n > 0
        && r->headers_out.content_length_n <= NGX_HTTP_LIFECYCLE_PAGE_MAX)
    {
        ctx->page_size = r->headers_out.content_length_n;
        ctx->page_mtime = r->headers_out.last_modified_time;

    } else {
        r->filter_need_in_memory = 1;
    }

    ngx_http_clear_content_length(r);
    ngx_http_clear_accept_ranges(r);
    ngx_http_clear_last_modified(r);
    ngx_http_clear_etag(r);

    if (ngx_http_lifecycle_private(r) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_PAGES_PERSONALIZED);

    return NGX_OK;
}


/* a shared cache must not keep one visitor's page for another */

static ngx_int_t
ngx_http_lifecycle_private(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_table_elt_t  *h, **cc;

    cc = r->headers_out.cache_control.elts;

    for (i = 0; i < r->headers_out.cache_control.nelts; i++) {
        if (ngx_strlcasestrn(cc[i]->value.data,
                             cc[i]->value.data + cc[i]->value.len,
                             (u_char *) "no-store", 8 - 1)
            || ngx_strlcasestrn(cc[i]->value.data,
                                cc[i]->value.data + cc[i]->value.len,
                                (u_char *) "private", 7 - 1))
        {
            return NGX_OK;
        }
    }

    for (i = 0; i < r->headers_out.cache_control.nelts; i++) {
        cc[i]->hash = 0;
    }

    r->headers_out.cache_control.nelts = 0;

    /* the list exists only once a module has added to it */
    if (r->headers_out.cache_control.elts == NULL
        && ngx_array_init(&r->headers_out.cache_control, r->pool, 1,
                          sizeof(ngx_table_elt_t *))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "private");

    cc = ngx_array_push(&r->headers_out.cache_control);
    if (cc == NULL) {
        return NGX_ERROR;
    }

    *cc = h;

    return NGX_OK;
}


static ngx_int_t
ngx_http_lifecycle_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t                        *b;
    ngx_chain_t                      *cl;
    ngx_http_lifecycle_filter_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_lifecycle_filter_module);

    if (ctx == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    if (in == NULL && ctx->in == NULL && ctx->zin == NULL
        && ctx->busy == NULL)
    {
        return ngx_http_next_body_filter(r, in);
    }

    if (in && ctx->page_size) {
        if (ngx_http_lifecycle_file_input(r, ctx, &in) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (in) {
        if (ngx_chain_add_copy(r->pool, ctx->zstream ? &ctx->zin : &ctx->in,
                               in)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ctx->zstream) {
        if (ngx_http_lifecycle_inflate(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    while (ctx->in) {
        cl = ctx->in;
        b = cl->buf;
        ctx->in = cl->next;

        if (ngx_http_lifecycle_parse(r, ctx, b) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ctx->out == NULL && ctx->busy == NULL) {
        return NGX_OK;
    }

    return ngx_http_lifecycle_output(r, ctx);
}


/*
 * One input buffer: literal runs go out as buffers pointing into it; the
 * buffer is consumed (pos = last) only when the last of them was sent.
 */

static ngx_int_t
ngx_http_lifecycle_parse(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, ngx_buf_t *buf)
{
    u_char        *p, *last, *start, *mark;
    ngx_uint_t     m;
    ngx_chain_t  **tail;

    tail = ctx->last_out;

    if (ngx_buf_in_memory(buf)) {
        p = buf->pos;
        last = buf->last;

    } else {
        p = NULL;
        last = NULL;
    }

    start = p;
    mark = NULL;

    while (p < last) {

        if (ctx->m_len == 0) {
            p = ngx_http_lifecycle_next_marker(p, last);

            if (p == NULL) {
                p = last;
                break;
            }

            mark = p;
        }

        m = ngx_http_lifecycle_marker_byte(ctx, *p);

        if (m == NGX_HTTP_LIFECYCLE_M_PARTIAL) {
            p++;
            continue;
        }

        if (m == NGX_HTTP_LIFECYCLE_M_NONE) {

            /* what looked like a marker is text */

            /* its bytes from earlier buffers go before this buffer's */

            if (ctx->saved_len
                && ngx_http_lifecycle_emit_copy(r, ctx, ctx->saved,
                                                ctx->saved_len)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            ctx->saved_len = 0;
            ctx->m_len = 0;

            /* only '<' can begin a marker, so only it is looked at again */
            if (*p != '<') {
                p++;
            }

            continue;
        }

        p++;

        if (ngx_http_lifecycle_marker(r, ctx, m, buf, &start,
                                      ctx->saved_len ? NULL : mark, p)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ctx->saved_len = 0;
        ctx->m_len = 0;
    }

    /* the rest of the buffer: text, the default of a slot, or a marker */

    if (p != NULL) {
        if (ctx->m_len && mark == NULL) {
            mark = buf->pos;
        }

        if (ctx->fill) {
            if (ngx_http_lifecycle_hold(r, ctx, start, last - start)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (ctx->m_len) {
            if (ctx->saved_len == 0) {
                if (ngx_http_lifecycle_emit_run(r, ctx, buf, start, mark)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }
            }

            if (ctx->saved_len + (last - mark) > sizeof(ctx->saved)) {
                /* cannot happen: the matcher gives up before */
                return NGX_ERROR;
            }

            ngx_memcpy(ctx->saved + ctx->saved_len, mark, last - mark);
            ctx->saved_len += last - mark;

        } else if (ngx_http_lifecycle_emit_run(r, ctx, buf, start, last)
                   != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_lifecycle_end(r, ctx, buf, tail, buf);
}


/*
 * After the bytes of "buf": at the end of the page, a marker or a slot
 * left open goes out as it was; the buffer's flags go on with the last
 * output buffer made from it, which also shadows it (NULL: it was
 * consumed already), so that it is released once that was sent.
 */

static ngx_int_t
ngx_http_lifecycle_end(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, ngx_buf_t *buf, ngx_chain_t **tail,
    ngx_buf_t *shadow)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (buf->last_buf || buf->last_in_chain) {

        /* the page ended inside a marker or an unclosed slot: as it was */

        if (ctx->fill) {
            if (ngx_http_lifecycle_emit_copy(r, ctx, ctx->held,
                                             ctx->held_len)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            ctx->fill = NULL;
            ctx->held_len = 0;

        } else if (ctx->saved_len) {
            if (ngx_http_lifecycle_emit_copy(r, ctx, ctx->saved,
                                             ctx->saved_len)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        ctx->saved_len = 0;
        ctx->m_len = 0;
    }

    b = NULL;

    for (cl = *tail; cl; cl = cl->next) {
        b = cl->buf;
    }

    if (b == NULL) {
        cl = ngx_chain_get_free_buf(r->pool, &ctx->free);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        b = cl->buf;
        ngx_memzero(b, sizeof(ngx_buf_t));
        b->sync = 1;

        *ctx->last_out = cl;
        ctx->last_out = &cl->next;
    }

    b->last_buf = buf->last_buf;
    b->last_in_chain = buf->last_in_chain;
    b->flush = buf->flush || buf->recycled;
    b->shadow = shadow;

    return NGX_OK;
}


/*
 * File buffers of a static page (the copy filter was not asked to read
 * them): the whole file at once is sent from the page cache; what else
 * comes as a file (a page the cache cannot hold, a part of one) is read
 * here, into memory as big as the page at most.
 */

static ngx_int_t
ngx_http_lifecycle_file_input(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, ngx_chain_t **in)
{
    off_t                       size;
    ssize_t                     n;
    ngx_buf_t                  *b, *m;
    ngx_chain_t                *cl, *mem, **ll;
    ngx_http_lifecycle_page_t  *page;

    b = (*in)->buf;

    if ((*in)->next == NULL && b->in_file && !ngx_buf_in_memory(b)
        && b->file_pos == 0 && b->file_last == ctx->page_size
        && b->last_buf && !b->file->directio
        && ctx->in == NULL && ctx->busy == NULL && ctx->m_len == 0)
    {
        page = ngx_http_lifecycle_page_get(r, b, ctx->page_mtime);

        if (page == NGX_HTTP_LIFECYCLE_PAGE_ERROR) {
            return NGX_ERROR;
        }

        if (page) {
            *in = NULL;
            return ngx_http_lifecycle_replay(r, ctx, page, b);
        }
    }

    mem = NULL;
    ll = &mem;

    for (cl = *in; cl; cl = cl->next) {
        b = cl->buf;
        m = b;

        if (b->in_file && !ngx_buf_in_memory(b)) {
            size = b->file_last - b->file_pos;

            if (size > ctx->page_size) {
                ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                              "lifecycle: file buffer of %O bytes "
                              "in a page of %O", size, ctx->page_size);
                return NGX_ERROR;
            }

            m = ngx_calloc_buf(r->pool);
            if (m == NULL) {
                return NGX_ERROR;
            }

            if (size) {
                m->start = ngx_pnalloc(r->pool, size);
                if (m->start == NULL) {
                    return NGX_ERROR;
                }

                n = ngx_read_file(b->file, m->start, size, b->file_pos);

                if (n == NGX_ERROR) {
                    return NGX_ERROR;
                }

                if (n != size) {
                    ngx_log_error(NGX_LOG_CRIT, r->connection->log, 0,
                                  "lifecycle: \"%V\" changed while read",
                                  &b->file->name);
                    return NGX_ERROR;
                }

                m->pos = m->start;
                m->last = m->start + size;
                m->end = m->last;
                m->temporary = 1;
            }

            m->last_buf = b->last_buf;
            m->last_in_chain = b->last_in_chain;
            m->flush = b->flush;
            m->sync = (size == 0);

            b->file_pos = b->file_last;
        }

        *ll = ngx_alloc_chain_link(r->pool);
        if (*ll == NULL) {
            return NGX_ERROR;
        }

        (*ll)->buf = m;
        ll = &(*ll)->next;
    }

    *ll = NULL;
    *in = mem;

    return NGX_OK;
}


/*
 * A cached page: the markers are known, so the parser's work is only
 * what it does at each of them. Inside a slot being filled only its
 * closing marker counts, as when parsing.
 */

static ngx_int_t
ngx_http_lifecycle_replay(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, ngx_http_lifecycle_page_t *page,
    ngx_buf_t *in)
{
    u_char                     *start, *last;
    ngx_buf_t                   buf;
    ngx_uint_t                  i;
    ngx_chain_t               **tail;
    ngx_http_lifecycle_mark_t  *m;

    ngx_memzero(&buf, sizeof(ngx_buf_t));

    buf.pos = page->data;
    buf.last = page->data + page->len;
    buf.memory = 1;
    buf.last_buf = in->last_buf;
    buf.last_in_chain = in->last_in_chain;
    buf.flush = in->flush;

    tail = ctx->last_out;
    start = buf.pos;
    last = buf.last;

    for (i = 0; i < page->nmarks; i++) {
        m = &page->marks[i];

        if (ctx->fill && m->type != NGX_HTTP_LIFECYCLE_M_CLOSE) {
            continue;
        }

        if (m->type == NGX_HTTP_LIFECYCLE_M_OPEN) {
            ngx_memcpy(ctx->name,
                       page->data + m->start + sizeof(ngx_http_lifecycle_open)
                       - 1, m->name_len);
            ctx->name_len = m->name_len;
        }

        if (ngx_http_lifecycle_marker(r, ctx, m->type, &buf, &start,
                                      page->data + m->start,
                                      page->data + m->end)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ctx->fill) {
        if (ngx_http_lifecycle_hold(r, ctx, start, last - start) != NGX_OK) {
            return NGX_ERROR;
        }

    } else if (ngx_http_lifecycle_emit_run(r, ctx, &buf, start, last)
               != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the file is not needed: its bytes are in the cache, pinned */
    in->file_pos = in->file_last;

    return ngx_http_lifecycle_end(r, ctx, &buf, tail, NULL);
}


/*
 * The markers of a whole page, for the page cache: every place where the
 * parser would see one, whatever the slots filled.
 */

ngx_int_t
ngx_http_lifecycle_filter_scan(u_char *data, size_t len, ngx_array_t *marks)
{
    u_char                           *p, *last, *mark;
    ngx_uint_t                        m;
    ngx_http_lifecycle_mark_t        *mk;
    ngx_http_lifecycle_filter_ctx_t   scan;

    ngx_memzero(&scan, sizeof(ngx_http_lifecycle_filter_ctx_t));

    p = data;
    last = data + len;
    mark = NULL;

    while (p < last) {

        if (scan.m_len == 0) {
            p = ngx_http_lifecycle_next_marker(p, last);

            if (p == NULL) {
                break;
            }

            mark = p;
        }

        m = ngx_http_lifecycle_marker_byte(&scan, *p);

        if (m == NGX_HTTP_LIFECYCLE_M_PARTIAL) {
            p++;
            continue;
        }

        scan.m_len = 0;

        if (m == NGX_HTTP_LIFECYCLE_M_NONE) {
            if (*p != '<') {
                p++;
            }

            continue;
        }

        p++;

        mk = ngx_array_push(marks);
        if (mk == NULL) {
            return NGX_ERROR;
        }

        mk->start = mark - data;
        mk->end = p - data;
        mk->type = m;
        mk->name_len = scan.name_len;
    }

    return NGX_OK;
}


/*
 * The next place a marker or </body> may start: "<!-", "</b" or "</B",
 * or a '<' too near the end to tell. HTML has a '<' every few dozen
 * bytes: 32 bytes are searched for one at a time, and only the few
 * found are looked at closer.
 */

static u_char *
ngx_http_lifecycle_next_marker(u_char *p, u_char *last)
{
#if (__SSE2__)
    u_char        *q;
    unsigned int   mask;
    __m128i        lt;

    lt = _mm_set1_epi8('<');

    while (last - p >= 34) {
        mask = (unsigned int) _mm_movemask_epi8(
                   _mm_cmpeq_epi8(_mm_loadu_si128((__m128i *) p), lt))
               | (unsigned int) _mm_movemask_epi8(
                   _mm_cmpeq_epi8(_mm_loadu_si128((__m128i *) (p + 16)), lt))
                 << 16;

        while (mask) {
            q = p + __builtin_ctz(mask);

            if ((q[1] == '!' && q[2] == '-')
                || (q[1] == '/' && (q[2] | 0x20) == 'b'))
            {
                return q;
            }

            mask &= mask - 1;
        }

        p += 32;
    }
#endif

    for ( /* void */ ; p < last; p++) {
        if (*p == '<'
            && (p + 2 >= last
                || (p[1] == '!' && p[2] == '-')
                || (p[1] == '/' && (p[2] | 0x20) == 'b')))
        {
            return p;
        }
    }

    return NULL;
}


/*
 * Feeds one byte to the marker being matched. Only '<' starts one, and
 * no marker holds another '<', so a failed match never hides a start.
 */

static ngx_uint_t
ngx_http_lifecycle_marker_byte(ngx_http_lifecycle_filter_ctx_t *ctx, u_char c)
{
    ngx_uint_t  i;

    i = ctx->m_len++;

    if (i == 0) {
        ctx->m_can = ctx->fill ? NGX_HTTP_LIFECYCLE_CAN_CLOSE
                               : NGX_HTTP_LIFECYCLE_CAN_OPEN
                                 | NGX_HTTP_LIFECYCLE_CAN_CLOSE
                                 | NGX_HTTP_LIFECYCLE_CAN_BODY;
        ctx->name_len = 0;

        return NGX_HTTP_LIFECYCLE_M_PARTIAL;
    }

    if (ctx->m_can & NGX_HTTP_LIFECYCLE_CAN_BODY) {
        if (ngx_tolower(c) != ngx_http_lifecycle_body[i]) {
            ctx->m_can &= ~NGX_HTTP_LIFECYCLE_CAN_BODY;

        } else if (i == sizeof(ngx_http_lifecycle_body) - 2) {
            return NGX_HTTP_LIFECYCLE_M_BODY;
        }
    }

    if (ctx->m_can & NGX_HTTP_LIFECYCLE_CAN_CLOSE) {
        if (c != ngx_http_lifecycle_close[i]) {
            ctx->m_can &= ~NGX_HTTP_LIFECYCLE_CAN_CLOSE;

        } else if (i == sizeof(ngx_http_lifecycle_close) - 2) {
            return NGX_HTTP_LIFECYCLE_M_CLOSE;
        }
    }

    if (ctx->m_can & NGX_HTTP_LIFECYCLE_CAN_OPEN) {

        if (i < sizeof(ngx_http_lifecycle_open) - 1) {
            if (c != ngx_http_lifecycle_open[i]) {
                ctx->m_can &= ~NGX_HTTP_LIFECYCLE_CAN_OPEN;
            }

        } else if (c == '>' && ctx->name_len > 2
                   && ctx->name[ctx->name_len - 1] == '-'
                   && ctx->name[ctx->name_len - 2] == '-')
        {
            ctx->name_len -= 2;
            return NGX_HTTP_LIFECYCLE_M_OPEN;

        } else if (ctx->name_len < 64 + 2
                   && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                       || (c >= '0' && c <= '9') || c == '_' || c == '-'))
        {
            ctx->name[ctx->name_len++] = c;

        } else {
            ctx->m_can &= ~NGX_HTTP_LIFECYCLE_CAN_OPEN;
        }
    }

    return ctx->m_can ? NGX_HTTP_LIFECYCLE_M_PARTIAL
                      : NGX_HTTP_LIFECYCLE_M_NONE;
}


/*
 * A whole marker ends at "end" in "buf"; it began at "mark" in the same
 * buffer, or (mark == NULL) in an earlier one, its bytes in ctx->saved.
 * "*start" is where the text not yet sent begins.
 */

static ngx_int_t
ngx_http_lifecycle_marker(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, ngx_uint_t marker, ngx_buf_t *buf,
    u_char **start, u_char *mark, u_char *end)
{
    ngx_str_t                   out;
    ngx_uint_t                  i;
    ngx_http_lifecycle_fill_t  *fill;

    if (ctx->fill) {

        /* in a slot only its closing marker counts */

        if (ctx->held_len + (mark ? (size_t) (mark - *start) : 0)
            > NGX_HTTP_LIFECYCLE_DEFAULT_MAX)
        {
            /* the same limit however the page came in buffers */

            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "lifecycle: slot \"%V\" not filled: its default "
                          "content is longer than %d bytes",
                          &ctx->fill->slot, NGX_HTTP_LIFECYCLE_DEFAULT_MAX);

            if (ngx_http_lifecycle_emit_copy(r, ctx, ctx->held,
                                             ctx->held_len)
                != NGX_OK
                || ngx_http_lifecycle_emit_run(r, ctx, buf, *start, end)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            ctx->fill = NULL;
            ctx->held_len = 0;
            *start = end;

            return NGX_OK;
        }

        if (ngx_http_lifecycle_render(r, ctx->lctx, ctx->fill->rule, 0, &out)
            != NGX_OK
            || (out.len
                && ngx_http_lifecycle_emit_mem(r, ctx, out.data, out.len)
                   != NGX_OK)
            || ngx_http_lifecycle_emit_mem(r, ctx, ngx_http_lifecycle_close,
                                           sizeof(ngx_http_lifecycle_close)
                                           - 1)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_SLOTS_FILLED);

        ctx->fill = NULL;
        ctx->held_len = 0;
        *start = end;

        return NGX_OK;
    }

    if (marker == NGX_HTTP_LIFECYCLE_M_OPEN) {
        fill = ctx->fills->elts;

        for (i = 0; i < ctx->fills->nelts; i++) {
            if (fill[i].slot.len == ctx->name_len
                && ngx_strncmp(fill[i].slot.data, ctx->name, ctx->name_len)
                   == 0)
            {
                break;
            }
        }

        if (i == ctx->fills->nelts) {
            goto text;
        }

        /* the marker goes out; the default is held from here on */

        if (mark == NULL) {
            if (ngx_http_lifecycle_emit_copy(r, ctx, ctx->saved,
                                             ctx->saved_len)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        if (ngx_http_lifecycle_emit_run(r, ctx, buf, *start, end) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (ctx->held == NULL) {
            ctx->held = ngx_pnalloc(r->pool, NGX_HTTP_LIFECYCLE_DEFAULT_MAX);
            if (ctx->held == NULL) {
                return NGX_ERROR;
            }
        }

        ctx->fill = &fill[i];
        ctx->held_len = 0;
        *start = end;

        return NGX_OK;
    }

    if (marker == NGX_HTTP_LIFECYCLE_M_BODY && ctx->popup
        && !ctx->popup_done)
    {
        ctx->popup_done = 1;

        if (ngx_http_lifecycle_emit_run(r, ctx, buf, *start,
                                        mark ? mark : *start)
            != NGX_OK
            || ngx_http_lifecycle_render(r, ctx->lctx, ctx->popup, 1, &out)
               != NGX_OK
            || ngx_http_lifecycle_emit_mem(r, ctx, out.data, out.len)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_POPUPS_INJECTED);

        if (mark) {
            *start = mark;
            return NGX_OK;
        }

        goto text;
    }

text:

    /* the marker stays as it was: only its saved part needs a copy */

    if (mark == NULL && ctx->saved_len) {
        if (ngx_http_lifecycle_emit_copy(r, ctx, ctx->saved, ctx->saved_len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* text from the input buffer, not copied; an empty run adds nothing */

static ngx_int_t
ngx_http_lifecycle_emit_run(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, ngx_buf_t *buf, u_char *start,
    u_char *end)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (start == end) {
        return NGX_OK;
    }

    cl = ngx_chain_get_free_buf(r->pool, &ctx->free);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    b = cl->buf;

    ngx_memcpy(b, buf, sizeof(ngx_buf_t));

    b->pos = start;
    b->last = end;
    b->shadow = NULL;
    b->last_buf = 0;
    b->last_in_chain = 0;
    b->recycled = 0;
    b->flush = 0;

    /*
     * The bytes are in memory already: sent from there, the pieces of a
     * page and its blocks go out in one writev(), not in a sendfile()
     * per piece between writes.
     */
    b->in_file = 0;
    b->file = NULL;

    *ctx->last_out = cl;
    ctx->last_out = &cl->next;

    return NGX_OK;
}


/* bytes that do not live in the input buffer any more */

static ngx_int_t
ngx_http_lifecycle_emit_copy(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, u_char *data, size_t len)
{
    u_char  *p;

    if (len == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, data, len);

    return ngx_http_lifecycle_emit_mem(r, ctx, p, len);
}


/* bytes that live as long as the request */

static ngx_int_t
ngx_http_lifecycle_emit_mem(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, u_char *data, size_t len)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    cl = ngx_chain_get_free_buf(r->pool, &ctx->free);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    b = cl->buf;
    ngx_memzero(b, sizeof(ngx_buf_t));

    b->pos = data;
    b->last = data + len;
    b->memory = 1;

    *ctx->last_out = cl;
    ctx->last_out = &cl->next;

    return NGX_OK;
}


/*
 * The default of a slot being filled. Past the limit the slot is given
 * up: what was held goes out as it was, and the page goes on unchanged.
 */

static ngx_int_t
ngx_http_lifecycle_hold(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx, u_char *data, size_t len)
{
    if (ctx->held_len + len <= NGX_HTTP_LIFECYCLE_DEFAULT_MAX) {
        ngx_memcpy(ctx->held + ctx->held_len, data, len);
        ctx->held_len += len;
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "lifecycle: slot \"%V\" not filled: its default content "
                  "is longer than %d bytes or never closed",
                  &ctx->fill->slot, NGX_HTTP_LIFECYCLE_DEFAULT_MAX);

    ctx->fill = NULL;
    ctx->m_len = 0;

    if (ngx_http_lifecycle_emit_copy(r, ctx, ctx->held, ctx->held_len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->held_len = 0;

    return ngx_http_lifecycle_emit_copy(r, ctx, data, len);
}


static ngx_int_t
ngx_http_lifecycle_output(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    rc = ngx_http_next_body_filter(r, ctx->out);

    if (ctx->busy == NULL) {
        ctx->busy = ctx->out;

    } else {
        for (cl = ctx->busy; cl->next; cl = cl->next) { /* void */ }
        cl->next = ctx->out;
    }

    ctx->out = NULL;
    ctx->last_out = &ctx->out;

    /* sent: the input a buffer shadows is consumed with it */

    while (ctx->busy) {
        cl = ctx->busy;
        b = cl->buf;

        if (ngx_buf_size(b) != 0) {
            break;
        }

        if (b->shadow) {
            b->shadow->pos = b->shadow->last;
            b->shadow = NULL;
        }

        ctx->busy = cl->next;

        if (ngx_buf_in_memory(b) || b->in_file) {
            cl->next = ctx->free;
            ctx->free = cl;
        }
    }

    if (ctx->in || ctx->zin || ctx->fill || ctx->saved_len) {
        r->buffered |= NGX_HTTP_LIFECYCLE_BUFFERED;

    } else {
        r->buffered &= ~NGX_HTTP_LIFECYCLE_BUFFERED;
    }

    return rc;
}


/*
 * Upstream gzip, inflated into a few buffers of our own that are used
 * again once sent; with none free, inflating waits for the client.
 */

static ngx_int_t
ngx_http_lifecycle_inflate(ngx_http_request_t *r,
    ngx_http_lifecycle_filter_ctx_t *ctx)
{
    int            rc;
    ngx_buf_t     *in, *b, **zb;
    ngx_uint_t     i;
    ngx_chain_t   *cl, **ll;

    ll = &ctx->in;

    while (*ll) {
        ll = &(*ll)->next;
    }

    while (ctx->zin) {
        in = ctx->zin->buf;

        if (ctx->zdone || !ngx_buf_in_memory(in) || in->pos == in->last) {

            /* trailing bytes after the stream, or a flag-only buffer */

            if (ctx->zdone && ngx_buf_in_memory(in) && in->pos != in->last) {
                ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                              "lifecycle: bytes after the end of the "
                              "upstream's gzip stream ignored");
            }

            in->pos = in->last;

            if (in->last_buf || in->last_in_chain || in->flush) {
                cl = ngx_chain_get_free_buf(r->pool, &ctx->free);
                if (cl == NULL) {
                    return NGX_ERROR;
                }

                b = cl->buf;
                ngx_memzero(b, sizeof(ngx_buf_t));
                b->sync = 1;
                b->last_buf = in->last_buf;
                b->last_in_chain = in->last_in_chain;
                b->flush = in->flush;

                *ll = cl;
                ll = &cl->next;
            }

            ctx->zin = ctx->zin->next;
            continue;
        }

        /* a free buffer of ours: one whose bytes were all sent */

        b = NULL;
        zb = ctx->zbufs.elts;

        for (i = 0; i < ctx->zbufs.nelts; i++) {
            if (zb[i]->pos == zb[i]->last) {
                b = zb[i];
                break;
            }
        }

        if (b == NULL) {
            if (ctx->zbufs.nelts == NGX_HTTP_LIFECYCLE_ZBUFS) {
                return NGX_OK;
            }

            b = ngx_create_temp_buf(r->pool, NGX_HTTP_LIFECYCLE_ZBUF_SIZE);
            zb = ngx_array_push(&ctx->zbufs);

            if (b == NULL || zb == NULL) {
                return NGX_ERROR;
            }

            *zb = b;
        }

        b->pos = b->start;
        b->last = b->start;
        b->last_buf = 0;
        b->last_in_chain = 0;
        b->flush = 0;

        ctx->zstream->next_in = in->pos;
        ctx->zstream->avail_in = in->last - in->pos;
        ctx->zstream->next_out = b->last;
        ctx->zstream->avail_out = b->end - b->last;

        rc = inflate(ctx->zstream, Z_NO_FLUSH);

        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "lifecycle: upstream gzip is corrupt (%d: %s), "
                          "response cut", rc,
                          ctx->zstream->msg ? ctx->zstream->msg : "");
            return NGX_ERROR;
        }

        in->pos = ctx->zstream->next_in;
        b->last = ctx->zstream->next_out;

        if (rc == Z_STREAM_END) {
            ctx->zdone = 1;
        }

        if (in->pos == in->last) {
            b->last_buf = in->last_buf;
            b->last_in_chain = in->last_in_chain;
            b->flush = in->flush || in->recycled;
            ctx->zin = ctx->zin->next;

            if (in->last_buf && !ctx->zdone) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "lifecycle: upstream gzip ended early");
            }
        }

        if (b->last == b->pos) {

            /* nothing inflated: the buffer stays free, its flags go on */

            if (!b->last_buf && !b->last_in_chain && !b->flush) {
                continue;
            }

            cl = ngx_chain_get_free_buf(r->pool, &ctx->free);
            if (cl == NULL) {
                return NGX_ERROR;
            }

            ngx_memzero(cl->buf, sizeof(ngx_buf_t));
            cl->buf->sync = 1;
            cl->buf->last_buf = b->last_buf;
            cl->buf->last_in_chain = b->last_in_chain;
            cl->buf->flush = b->flush;

        } else {
            cl = ngx_alloc_chain_link(r->pool);
            if (cl == NULL) {
                return NGX_ERROR;
            }

            cl->buf = b;
        }

        cl->next = NULL;

        *ll = cl;
        ll = &cl->next;
    }

    return NGX_OK;
}


static void
ngx_http_lifecycle_inflate_end(void *data)
{
    z_stream  *zstream = data;

    (void) inflateEnd(zstream);
}


static ngx_int_t
ngx_http_lifecycle_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_lifecycle_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_lifecycle_body_filter;

    return NGX_OK;
}
