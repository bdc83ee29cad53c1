
/*
 * lifecycle: "lifecycle_view" classifies a request (page, product, ...)
 * and finds the id it is about, from a named capture or any value.
 */


#include "ngx_http_lifecycle_module.h"


/* ovector room: groups of one rule, plus the whole match */
#define NGX_HTTP_LIFECYCLE_MAX_CAPTURES  20

/* longer ids are not kept: they are ids, not documents */
#define NGX_HTTP_LIFECYCLE_MAX_ID        128


static ngx_int_t ngx_http_lifecycle_view_value(ngx_http_request_t *r,
    ngx_http_complex_value_t *cv, int *captures, ngx_uint_t ncaptures,
    ngx_str_t *value);
static void ngx_http_lifecycle_view_clean(ngx_http_request_t *r,
    ngx_str_t *value, ngx_uint_t unescape);


ngx_str_t  ngx_http_lifecycle_view_types[] = {
    ngx_string("page"),
    ngx_string("product"),
    ngx_string("category"),
    ngx_string("search"),
    ngx_string("cart_add"),
    ngx_string("cart_remove"),
    ngx_string("cart"),
    ngx_string("checkout"),
    ngx_string("purchase"),
    ngx_null_string
};


static ngx_conf_bitmask_t  ngx_http_lifecycle_methods[] = {
    { ngx_string("GET"), NGX_HTTP_GET },
    { ngx_string("POST"), NGX_HTTP_POST },
    { ngx_string("PUT"), NGX_HTTP_PUT },
    { ngx_string("PATCH"), NGX_HTTP_PATCH },
    { ngx_string("DELETE"), NGX_HTTP_DELETE },
    { ngx_null_string, 0 }
};


char *
ngx_http_lifecycle_view(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_loc_conf_t  *llcf = conf;

    u_char                            *p, *last, *start;
    u_char                             errstr[NGX_MAX_CONF_ERRSTR];
    ngx_str_t                         *value, s, name;
    ngx_uint_t                         i, j, n;
    ngx_regex_compile_t                rc;
    ngx_http_complex_value_t         **cvp;
    ngx_http_lifecycle_view_t         *view;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (llcf->views == NGX_CONF_UNSET_PTR) {
        llcf->views = ngx_array_create(cf->pool, 4,
                                       sizeof(ngx_http_lifecycle_view_t));
        if (llcf->views == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    view = ngx_array_push(llcf->views);
    if (view == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(view, sizeof(ngx_http_lifecycle_view_t));

    for (i = 0; ngx_http_lifecycle_view_types[i].len; i++) {
        if (value[1].len == ngx_http_lifecycle_view_types[i].len
            && ngx_strncmp(value[1].data, ngx_http_lifecycle_view_types[i].data,
                           value[1].len)
               == 0)
        {
            break;
        }
    }

    if (ngx_http_lifecycle_view_types[i].len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown view type \"%V\": expected page, product, "
                           "category, search, cart_add, cart_remove, cart, "
                           "checkout or purchase", &value[1]);
        return NGX_CONF_ERROR;
    }

    view->type = i;
    view->id_capture = -1;
    view->methods = (ngx_uint_t) -1;  /* any, unless method= says */

    ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

    rc.pattern = value[2];
    rc.pool = cf->pool;
    rc.err.len = NGX_MAX_CONF_ERRSTR;
    rc.err.data = errstr;

    if (ngx_http_lifecycle_regex_compile(cf, &rc) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V", &rc.err);
        return NGX_CONF_ERROR;
    }

    if (rc.captures > NGX_HTTP_LIFECYCLE_MAX_CAPTURES) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "regex \"%V\" has %d groups, at most %d are "
                           "supported", &value[2], rc.captures,
                           NGX_HTTP_LIFECYCLE_MAX_CAPTURES);
        return NGX_CONF_ERROR;
    }

    view->regex = rc.regex;
    view->captures = rc.captures;

    /* the name table: a 2-byte group number, then the NUL-ended name */
    p = rc.names;

    for (j = 0; j < (ngx_uint_t) rc.named_captures; j++, p += rc.name_size) {
        if (ngx_strcmp(&p[2], "id") == 0) {
            view->id_capture = 2 * ((p[0] << 8) + p[1]);
        }
    }

    for (i = 3; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "id=", 3) == 0) {
            cvp = &view->id;
            n = 3;

        } else if (ngx_strncmp(value[i].data, "category=", 9) == 0) {
            cvp = &view->category;
            n = 9;

        } else if (ngx_strncmp(value[i].data, "method=", 7) == 0) {
            view->methods = 0;
            start = value[i].data + 7;
            last = value[i].data + value[i].len;

            while (start < last) {
                for (p = start; p < last && *p != '|' && *p != ','; p++) {
                    /* void */
                }

                name.data = start;
                name.len = p - start;

                for (j = 0; ngx_http_lifecycle_methods[j].name.len; j++) {
                    if (name.len == ngx_http_lifecycle_methods[j].name.len
                        && ngx_strncasecmp(name.data,
                                   ngx_http_lifecycle_methods[j].name.data,
                                   name.len)
                           == 0)
                    {
                        view->methods |= ngx_http_lifecycle_methods[j].mask;
                        break;
                    }
                }

                if (ngx_http_lifecycle_methods[j].name.len == 0) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "unknown method \"%V\" in \"%V\"",
                                       &name, &value[i]);
                    return NGX_CONF_ERROR;
                }

                start = p + 1;
            }

            if (view->methods == 0) {
                goto invalid;
            }

            continue;

        } else {
            goto invalid;
        }

        if (*cvp != NULL || value[i].len == n) {
            goto invalid;
        }

        s.data = value[i].data + n;
        s.len = value[i].len - n;

        *cvp = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
        if (*cvp == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

        ccv.cf = cf;
        ccv.value = &s;
        ccv.complex_value = *cvp;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


ngx_int_t
ngx_http_lifecycle_view_match(ngx_http_request_t *r,
    ngx_http_lifecycle_loc_conf_t *llcf, ngx_http_lifecycle_ctx_t *ctx)
{
    int                         captures[(NGX_HTTP_LIFECYCLE_MAX_CAPTURES + 1)
                                         * 3];
    ngx_int_t                   rc;
    ngx_uint_t                  i;
    const lc_product_t         *product;
    ngx_http_lifecycle_view_t  *view;

    if (llcf->views == NULL) {
        return NGX_OK;
    }

    view = llcf->views->elts;

    for (i = 0; i < llcf->views->nelts; i++, view++) {

        if (!(r->method & view->methods)) {
            continue;
        }

        rc = ngx_regex_exec(view->regex, &r->uri, captures,
                            (view->captures + 1) * 3);

        if (rc == NGX_REGEX_NO_MATCHED) {
            continue;
        }

        if (rc < 0) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          ngx_regex_exec_n " failed: %i on \"%V\"",
                          rc, &r->uri);
            continue;
        }

        ctx->view = view;

        if (view->id) {
            if (ngx_http_lifecycle_view_value(r, view->id, captures,
                                              view->captures + 1,
                                              &ctx->view_id)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (view->id_capture >= 0
                   && captures[view->id_capture] >= 0)
        {
            ctx->view_id.data = r->uri.data + captures[view->id_capture];
            ctx->view_id.len = captures[view->id_capture + 1]
                               - captures[view->id_capture];
            ngx_http_lifecycle_view_clean(r, &ctx->view_id, 0);
        }

        if (view->category) {
            if (ngx_http_lifecycle_view_value(r, view->category, captures,
                                              view->captures + 1,
                                              &ctx->view_category)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (view->type == NGX_HTTP_LIFECYCLE_VIEW_PRODUCT
                   && ctx->view_id.len)
        {
            /* a product view counts toward its category in the catalog */
            product = ngx_http_lifecycle_catalog_find(r, &ctx->view_id);

            if (product) {
                ctx->view_category.data = (u_char *) product->category.data;
                ctx->view_category.len = product->category.len;
            }
        }

        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "lifecycle: %V view, id \"%V\", category \"%V\"",
                       &ngx_http_lifecycle_view_types[view->type],
                       &ctx->view_id, &ctx->view_category);

        return NGX_OK;
    }

    return NGX_OK;
}


/* evaluates VALUE with $1..$n meaning this rule's groups */

static ngx_int_t
ngx_http_lifecycle_view_value(ngx_http_request_t *r,
    ngx_http_complex_value_t *cv, int *captures, ngx_uint_t ncaptures,
    ngx_str_t *value)
{
    int         *saved_captures;
    u_char      *saved_data;
    ngx_int_t    rc;
    ngx_uint_t   saved_n;

    saved_captures = r->captures;
    saved_n = r->ncaptures;
    saved_data = r->captures_data;

    r->captures = captures;
    r->ncaptures = ncaptures * 2;
    r->captures_data = r->uri.data;

    rc = ngx_http_complex_value(r, cv, value);

    r->captures = saved_captures;
    r->ncaptures = saved_n;
    r->captures_data = saved_data;

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_lifecycle_view_clean(r, value, 1);

    return NGX_OK;
}


/*
 * Values from the query string arrive escaped ("red+shoes", "a%2Fb"):
 * they are stored as people read them. Control characters and oversized
 * values are dropped, the view itself still counts.
 */

static void
ngx_http_lifecycle_view_clean(ngx_http_request_t *r, ngx_str_t *value,
    ngx_uint_t unescape)
{
    u_char      *src, *dst, *p;
    ngx_uint_t   i;

    if (unescape && (ngx_strlchr(value->data, value->data + value->len, '%')
                     || ngx_strlchr(value->data, value->data + value->len,
                                    '+')))
    {
        p = ngx_pnalloc(r->pool, value->len);
        if (p == NULL) {
            value->len = 0;
            return;
        }

        for (i = 0; i < value->len; i++) {
            p[i] = (value->data[i] == '+') ? ' ' : value->data[i];
        }

        src = p;
        dst = p;
        ngx_unescape_uri(&dst, &src, value->len, 0);

        value->data = p;
        value->len = dst - p;
    }

    if (value->len > NGX_HTTP_LIFECYCLE_MAX_ID) {
        goto drop;
    }

    for (i = 0; i < value->len; i++) {
        if (value->data[i] < 0x20 || value->data[i] == 0x7f) {
            goto drop;
        }
    }

    return;

drop:

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "lifecycle: view id of %uz bytes dropped: too long or "
                  "with control characters", value->len);

    value->len = 0;
}
