
/*
 * lifecycle: counters shared by all workers (one shared memory zone of
 * atomics, as stub_status does) and the Prometheus text endpoint.
 */


#include "ngx_http_lifecycle_module.h"


#define NGX_HTTP_LIFECYCLE_RTT_BUCKETS  11


static ngx_int_t ngx_http_lifecycle_status_init_shm(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_lifecycle_status_handler(ngx_http_request_t *r);


static ngx_atomic_t  *ngx_http_lifecycle_stats;

static ngx_str_t  ngx_http_lifecycle_zone_name = ngx_string("lifecycle");

/* upper bounds of the round-trip histogram, in microseconds */
static uint64_t  ngx_http_lifecycle_rtt_le[NGX_HTTP_LIFECYCLE_RTT_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
    (uint64_t) -1
};

static char  *ngx_http_lifecycle_rtt_label[NGX_HTTP_LIFECYCLE_RTT_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
    "0.025", "0.05", "0.1", "+Inf"
};


typedef struct {
    ngx_uint_t   stat;
    char        *name;
    char        *type;
    char        *help;
} ngx_http_lifecycle_metric_t;


static ngx_http_lifecycle_metric_t  ngx_http_lifecycle_metrics[] = {
    { NGX_HTTP_LIFECYCLE_STAT_TRACKED, "lifecycle_requests_tracked_total",
      "counter", "Requests of recognised visitors." },
    { NGX_HTTP_LIFECYCLE_STAT_VISITORS_NEW, "lifecycle_visitors_new_total",
      "counter", "Visitor ids issued." },
    { NGX_HTTP_LIFECYCLE_STAT_COOKIES_INVALID,
      "lifecycle_cookies_invalid_total", "counter",
      "Visitor cookies that failed the signature or format check." },
    { NGX_HTTP_LIFECYCLE_STAT_SESSIONS_NEW, "lifecycle_sessions_new_total",
      "counter", "Sessions started." },
    { NGX_HTTP_LIFECYCLE_STAT_REDIS_ROUNDTRIPS,
      "lifecycle_redis_roundtrips_total", "counter",
      "Round trips to Redis made for requests (views recorded by one "
      "script call count one each)." },
    { NGX_HTTP_LIFECYCLE_STAT_REDIS_ERRORS, "lifecycle_redis_errors_total",
      "counter",
      "Requests whose Redis command failed or could not be sent." },
    { NGX_HTTP_LIFECYCLE_STAT_REDIS_TIMEOUTS,
      "lifecycle_redis_timeouts_total", "counter",
      "Connections dropped: connect timed out, or no reply for 1s." },
    { NGX_HTTP_LIFECYCLE_STAT_PROFILE_TIMEOUTS,
      "lifecycle_profile_timeouts_total", "counter",
      "Requests served with default content: no profile within "
      "lifecycle_timeout." },
    { NGX_HTTP_LIFECYCLE_STAT_PAGES_PERSONALIZED,
      "lifecycle_pages_personalized_total", "counter",
      "Responses changed for their visitor (headers made private)." },
    { NGX_HTTP_LIFECYCLE_STAT_PAGE_HITS, "lifecycle_page_cache_hits_total",
      "counter", "Personalized static pages sent from the page cache." },
    { NGX_HTTP_LIFECYCLE_STAT_PAGE_MISSES,
      "lifecycle_page_cache_misses_total", "counter",
      "Personalized static pages read and searched to enter the cache." },
    { NGX_HTTP_LIFECYCLE_STAT_SLOTS_FILLED, "lifecycle_slots_filled_total",
      "counter", "Slots filled with a block." },
    { NGX_HTTP_LIFECYCLE_STAT_POPUPS_INJECTED,
      "lifecycle_popups_injected_total", "counter",
      "Popups placed before </body>." },
    { NGX_HTTP_LIFECYCLE_STAT_REDIS_RECONNECTS,
      "lifecycle_redis_reconnects_total", "counter",
      "Connection attempts after a failure or a lost connection." },
    { NGX_HTTP_LIFECYCLE_STAT_REDIS_CONNECTED, "lifecycle_redis_connected",
      "gauge", "Workers connected to Redis now." },
    { 0, NULL, NULL, NULL }
};


ngx_int_t
ngx_http_lifecycle_status_init_zone(ngx_conf_t *cf)
{
    ngx_shm_zone_t  *shm_zone;

    shm_zone = ngx_shared_memory_add(cf, &ngx_http_lifecycle_zone_name,
                                     8 * ngx_pagesize,
                                     &ngx_http_lifecycle_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    shm_zone->init = ngx_http_lifecycle_status_init_shm;

    return NGX_OK;
}


/* counters survive a reload: the new cycle takes over the old zone */

static ngx_int_t
ngx_http_lifecycle_status_init_shm(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {
        shm_zone->data = data;
        ngx_http_lifecycle_stats = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    ngx_http_lifecycle_stats = ngx_slab_calloc(shpool,
                                               NGX_HTTP_LIFECYCLE_NSTATS
                                               * sizeof(ngx_atomic_t));
    if (ngx_http_lifecycle_stats == NULL) {
        return NGX_ERROR;
    }

    shm_zone->data = (void *) ngx_http_lifecycle_stats;

    return NGX_OK;
}


void
ngx_http_lifecycle_stat_add(ngx_uint_t stat, ngx_atomic_int_t n)
{
    if (ngx_http_lifecycle_stats) {
        (void) ngx_atomic_fetch_add(&ngx_http_lifecycle_stats[stat], n);
    }
}


uint64_t
ngx_http_lifecycle_now_us(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


void
ngx_http_lifecycle_stat_rtt(uint64_t start_us)
{
    uint64_t    us;
    ngx_uint_t  i;

    us = ngx_http_lifecycle_now_us() - start_us;

    for (i = 0; us > ngx_http_lifecycle_rtt_le[i]; i++) {
        /* void */
    }

    ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_RTT_BUCKETS + i);
    ngx_http_lifecycle_stat_add(NGX_HTTP_LIFECYCLE_STAT_RTT_SUM_US,
                                (ngx_atomic_int_t) us);
}


char *
ngx_http_lifecycle_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_loc_conf_t  *llcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_lifecycle_status_handler;

    /* a scrape is not a visit */
    llcf->endpoint = 1;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_lifecycle_status_handler(ngx_http_request_t *r)
{
    size_t                        size;
    ngx_int_t                     rc;
    ngx_buf_t                    *b;
    ngx_uint_t                    i;
    ngx_atomic_t                 *s;
    ngx_atomic_uint_t             cumulative;
    ngx_http_lifecycle_metric_t  *m;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    s = ngx_http_lifecycle_stats;

    if (s == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    size = 16384;

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (m = ngx_http_lifecycle_metrics; m->name; m++) {
        b->last = ngx_slprintf(b->last, b->end,
                               "# HELP %s %s\n# TYPE %s %s\n%s %A\n",
                               m->name, m->help, m->name, m->type, m->name,
                               (ngx_atomic_int_t) s[m->stat]);
    }

    b->last = ngx_slprintf(b->last, b->end,
                 "# HELP lifecycle_requests_skipped_total Requests not "
                 "tracked, by reason.\n"
                 "# TYPE lifecycle_requests_skipped_total counter\n");

    for (i = 1; i < NGX_HTTP_LIFECYCLE_NSKIPS; i++) {
        b->last = ngx_slprintf(b->last, b->end,
                              "lifecycle_requests_skipped_total"
                              "{reason=\"%V\"} %uA\n",
                              &ngx_http_lifecycle_skip_reasons[i],
                              s[NGX_HTTP_LIFECYCLE_STAT_SKIPPED + i]);
    }

    b->last = ngx_slprintf(b->last, b->end,
                 "# HELP lifecycle_conversions_total Purchases, by holdout "
                 "group.\n"
                 "# TYPE lifecycle_conversions_total counter\n");

    for (i = 0; i < NGX_HTTP_LIFECYCLE_NGROUPS; i++) {
        b->last = ngx_slprintf(b->last, b->end,
                              "lifecycle_conversions_total"
                              "{group=\"%V\"} %uA\n",
                              &ngx_http_lifecycle_groups[i],
                              s[NGX_HTTP_LIFECYCLE_STAT_CONVERSIONS + i]);
    }

    b->last = ngx_slprintf(b->last, b->end,
                 "# HELP lifecycle_group_sessions_total Sessions started, "
                 "by holdout group.\n"
                 "# TYPE lifecycle_group_sessions_total counter\n");

    for (i = 0; i < NGX_HTTP_LIFECYCLE_NGROUPS; i++) {
        b->last = ngx_slprintf(b->last, b->end,
                              "lifecycle_group_sessions_total"
                              "{group=\"%V\"} %uA\n",
                              &ngx_http_lifecycle_groups[i],
                              s[NGX_HTTP_LIFECYCLE_STAT_GROUP_SESSIONS + i]);
    }

    b->last = ngx_slprintf(b->last, b->end,
                 "# HELP lifecycle_views_total Views recorded, by type.\n"
                 "# TYPE lifecycle_views_total counter\n");

    for (i = 0; i < NGX_HTTP_LIFECYCLE_VIEW_NTYPES; i++) {
        b->last = ngx_slprintf(b->last, b->end,
                              "lifecycle_views_total{type=\"%V\"} %uA\n",
                              &ngx_http_lifecycle_view_types[i],
                              s[NGX_HTTP_LIFECYCLE_STAT_VIEWS + i]);
    }

    /* lifecycle_collect and lifecycle_unsubscribe */

    b->last = ngx_slprintf(b->last, b->end,
                 "# HELP lifecycle_collect_total Beacons, by what became "
                 "of them.\n"
                 "# TYPE lifecycle_collect_total counter\n");

    for (i = 0; i < NGX_HTTP_LIFECYCLE_COLLECT_NRESULTS; i++) {
        if (ngx_http_lifecycle_collect_results[i][1].len) {
            b->last = ngx_slprintf(b->last, b->end,
                                  "lifecycle_collect_total{result=\"%V\","
                                  "reason=\"%V\"} %uA\n",
                                  &ngx_http_lifecycle_collect_results[i][0],
                                  &ngx_http_lifecycle_collect_results[i][1],
                                  s[NGX_HTTP_LIFECYCLE_STAT_COLLECT + i]);
            continue;
        }

        b->last = ngx_slprintf(b->last, b->end,
                              "lifecycle_collect_total{result=\"%V\"} %uA\n",
                              &ngx_http_lifecycle_collect_results[i][0],
                              s[NGX_HTTP_LIFECYCLE_STAT_COLLECT + i]);
    }

    b->last = ngx_slprintf(b->last, b->end,
                 "# HELP lifecycle_optins_total Opt-ins stored.\n"
                 "# TYPE lifecycle_optins_total counter\n"
                 "lifecycle_optins_total %uA\n",
                 s[NGX_HTTP_LIFECYCLE_STAT_OPTINS]);

    b->last = ngx_slprintf(b->last, b->end,
                 "# HELP lifecycle_unsubscribe_total Unsubscribe links "
                 "followed, by result.\n"
                 "# TYPE lifecycle_unsubscribe_total counter\n");

    for (i = 0; i < NGX_HTTP_LIFECYCLE_UNSUBSCRIBE_NRESULTS; i++) {
        b->last = ngx_slprintf(b->last, b->end,
                              "lifecycle_unsubscribe_total"
                              "{result=\"%V\"} %uA\n",
                              &ngx_http_lifecycle_unsubscribe_results[i],
                              s[NGX_HTTP_LIFECYCLE_STAT_UNSUBSCRIBE + i]);
    }

    b->last = ngx_slprintf(b->last, b->end,
                 "# HELP lifecycle_redis_roundtrip_seconds Time from "
                 "sending a request's command to its reply.\n"
                 "# TYPE lifecycle_redis_roundtrip_seconds histogram\n");

    cumulative = 0;

    for (i = 0; i < NGX_HTTP_LIFECYCLE_RTT_BUCKETS; i++) {
        cumulative += s[NGX_HTTP_LIFECYCLE_STAT_RTT_BUCKETS + i];

        b->last = ngx_slprintf(b->last, b->end,
                              "lifecycle_redis_roundtrip_seconds_bucket"
                              "{le=\"%s\"} %uA\n",
                              ngx_http_lifecycle_rtt_label[i], cumulative);
    }

    b->last = ngx_slprintf(b->last, b->end,
                          "lifecycle_redis_roundtrip_seconds_sum %uA.%06uA\n"
                          "lifecycle_redis_roundtrip_seconds_count %uA\n",
                          s[NGX_HTTP_LIFECYCLE_STAT_RTT_SUM_US] / 1000000,
                          s[NGX_HTTP_LIFECYCLE_STAT_RTT_SUM_US] % 1000000,
                          cumulative);

    return ngx_http_lifecycle_send(r, NGX_HTTP_OK,
                                   "text/plain; version=0.0.4", b->pos,
                                   b->last - b->pos);
}
