
/*
 * lifecycle: "lifecycle_catalog" loads the product feed when the
 * configuration is read, in the master; workers inherit it read-only.
 */


#include "ngx_http_lifecycle_module.h"


static void *ngx_http_lifecycle_catalog_alloc(void *ctx, size_t size);


char *
ngx_http_lifecycle_catalog(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_main_conf_t  *lmcf = conf;

    char         err[NGX_MAX_CONF_ERRSTR];
    ngx_str_t   *value, name, text;
    lc_alloc_t   a;

    if (lmcf->catalog) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_lifecycle_read_file(cf, &name, &text) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    a.alloc = ngx_http_lifecycle_catalog_alloc;
    a.ctx = cf->pool;

    lmcf->catalog = lc_catalog_parse((char *) text.data, text.len, &a, err,
                                     sizeof(err));

    /* the catalog keeps its own copy; a large file goes back now */
    ngx_pfree(cf->pool, text.data);

    if (lmcf->catalog == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "catalog \"%V\": %s",
                           &name, err);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


const lc_product_t *
ngx_http_lifecycle_catalog_find(ngx_http_request_t *r, ngx_str_t *id)
{
    ngx_http_lifecycle_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

    return lc_catalog_find(lmcf->catalog, (const char *) id->data, id->len);
}


static void *
ngx_http_lifecycle_catalog_alloc(void *ctx, size_t size)
{
    return ngx_palloc(ctx, size);
}
