
/*
 * lifecycle: country and city of the client from a MaxMind DB
 * (libmaxminddb). The database is mapped once, at configuration time;
 * lookups are memory reads, never a blocking call in a worker.
 */


#include "ngx_http_lifecycle_module.h"

#include <maxminddb.h>


#define NGX_HTTP_LIFECYCLE_GEO_LOG_EVERY  10000


static ngx_int_t ngx_http_lifecycle_geo_string(ngx_http_request_t *r,
    MMDB_entry_s *entry, const char *const *path, ngx_str_t *out);
static ngx_uint_t ngx_http_lifecycle_geo_log_now(void);
static void ngx_http_lifecycle_geo_cleanup(void *data);


static const char  *ngx_http_lifecycle_geo_country[] = {
    "country", "iso_code", NULL
};

static const char  *ngx_http_lifecycle_geo_registered[] = {
    "registered_country", "iso_code", NULL
};

static const char  *ngx_http_lifecycle_geo_city[] = {
    "city", "names", "en", NULL
};


char *
ngx_http_lifecycle_geoip2(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_main_conf_t  *lmcf = conf;

    int                  status;
    MMDB_s              *mmdb;
    ngx_err_t            err;
    ngx_str_t           *value, name, field;
    ngx_pool_cleanup_t  *cln;

    if (lmcf->geoip2) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, sizeof(MMDB_s));
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    mmdb = cln->data;

    /* on failure MMDB_open has freed what it allocated: no cleanup */
    status = MMDB_open((char *) name.data, MMDB_MODE_MMAP, mmdb);

    if (status != MMDB_SUCCESS) {
        /* errno is kept for these two: open() or mmap() failed */
        err = (status == MMDB_FILE_OPEN_ERROR || status == MMDB_IO_ERROR)
              ? ngx_errno : 0;

        ngx_conf_log_error(NGX_LOG_EMERG, cf, err,
                           "MMDB_open(\"%V\") failed: %s",
                           &name, MMDB_strerror(status));
        return NGX_CONF_ERROR;
    }

    /* the old cycle's pool goes on reload: so does its mapping */
    cln->handler = ngx_http_lifecycle_geo_cleanup;

    lmcf->geoip2 = mmdb;

    /* a visitor whose address the database does not know keeps the last */
    ngx_str_set(&field, "country");

    if (ngx_http_lifecycle_want(cf, &field) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void
ngx_http_lifecycle_geo_cleanup(void *data)
{
    MMDB_s  *mmdb = data;

    MMDB_close(mmdb);
}


/*
 * r->connection->sockaddr is the client as the realip module set it,
 * when realip is configured. Not found, no database, a unix socket or
 * a bad record: empty strings and NGX_OK; NGX_ERROR only without memory.
 */

ngx_int_t
ngx_http_lifecycle_geo_lookup(ngx_http_request_t *r, ngx_str_t *country,
    ngx_str_t *city)
{
    int                              mmdb_error;
    ngx_uint_t                       i;
    struct sockaddr                 *sa;
    MMDB_lookup_result_s             res;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    ngx_str_null(country);
    ngx_str_null(city);

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

    if (lmcf->geoip2 == NULL) {
        return NGX_OK;
    }

    sa = r->connection->sockaddr;

    /* MMDB_lookup_sockaddr() takes anything else for AF_INET */
    switch (sa->sa_family) {

    case AF_INET:
#if (NGX_HAVE_INET6)
    case AF_INET6:
#endif
        break;

    default:
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "lifecycle geo: address family %d, no lookup",
                       (int) sa->sa_family);
        return NGX_OK;
    }

    res = MMDB_lookup_sockaddr(lmcf->geoip2, sa, &mmdb_error);

    if (mmdb_error == MMDB_IPV6_LOOKUP_IN_IPV4_DATABASE_ERROR) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "lifecycle geo: %s", MMDB_strerror(mmdb_error));
        return NGX_OK;
    }

    if (mmdb_error != MMDB_SUCCESS) {
        if (ngx_http_lifecycle_geo_log_now()) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "lifecycle geo: lookup of %V failed: %s",
                          &r->connection->addr_text,
                          MMDB_strerror(mmdb_error));
        }

        return NGX_OK;
    }

    if (!res.found_entry) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "lifecycle geo: %V not in the database",
                       &r->connection->addr_text);
        return NGX_OK;
    }

    if (ngx_http_lifecycle_geo_string(r, &res.entry,
                                      ngx_http_lifecycle_geo_country,
                                      country)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (country->len == 0
        && ngx_http_lifecycle_geo_string(r, &res.entry,
                                         ngx_http_lifecycle_geo_registered,
                                         country)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* segments compare "country=DE": two capital letters or nothing */
    for (i = 0; i < country->len; i++) {
        country->data[i] = ngx_toupper(country->data[i]);

        if (country->len != 2
            || country->data[i] < 'A' || country->data[i] > 'Z')
        {
            ngx_str_null(country);
            break;
        }
    }

    if (ngx_http_lifecycle_geo_string(r, &res.entry,
                                      ngx_http_lifecycle_geo_city, city)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the name may end up in a header: no control characters */
    for (i = 0; i < city->len; i++) {
        if (city->data[i] < 0x20 || city->data[i] == 0x7f) {
            ngx_str_null(city);
            break;
        }
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "lifecycle geo: %V: country \"%V\" city \"%V\"",
                   &r->connection->addr_text, country, city);

    return NGX_OK;
}


/* a UTF-8 string at path, copied into r->pool; empty when absent */

static ngx_int_t
ngx_http_lifecycle_geo_string(ngx_http_request_t *r, MMDB_entry_s *entry,
    const char *const *path, ngx_str_t *out)
{
    int                status;
    MMDB_entry_data_s  data;

    status = MMDB_aget_value(entry, &data, path);

    if (status != MMDB_SUCCESS) {
        /* a record shaped differently is not an error in the database */
        if (status != MMDB_LOOKUP_PATH_DOES_NOT_MATCH_DATA_ERROR
            && ngx_http_lifecycle_geo_log_now())
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "lifecycle geo: reading \"%s.%s\" of %V "
                          "failed: %s", path[0], path[1],
                          &r->connection->addr_text, MMDB_strerror(status));
        }

        return NGX_OK;
    }

    if (!data.has_data || data.type != MMDB_DATA_TYPE_UTF8_STRING
        || data.data_size == 0)
    {
        return NGX_OK;
    }

    out->data = ngx_pnalloc(r->pool, data.data_size);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, data.utf8_string, data.data_size);
    out->len = data.data_size;

    return NGX_OK;
}


/* a broken database fails every lookup: log once, then every 10s */

static ngx_uint_t
ngx_http_lifecycle_geo_log_now(void)
{
    static ngx_uint_t  logged;
    static ngx_msec_t  last;

    if (logged
        && ngx_current_msec - last < NGX_HTTP_LIFECYCLE_GEO_LOG_EVERY)
    {
        return 0;
    }

    logged = 1;
    last = ngx_current_msec;

    return 1;
}


ngx_int_t
ngx_http_lifecycle_geo_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                  country, city, *value;
    ngx_http_lifecycle_ctx_t  *ctx;

    /* a tracked request looked its client up once, before Redis */

    ctx = ngx_http_lifecycle_get_ctx(r->main);

    if (ctx && ctx->geo_done) {
        country = ctx->country;
        city = ctx->city;

    } else if (ngx_http_lifecycle_geo_lookup(r, &country, &city) != NGX_OK) {
        return NGX_ERROR;
    }

    /* no database, or an address it does not know: what Redis recorded */

    if (country.len == 0 && ctx && ctx->profile) {
        country = ctx->profile->country;
    }

    value = (data == NGX_HTTP_LIFECYCLE_GEO_CITY) ? &city : &country;

    if (value->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = value->data;
    v->len = value->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}
