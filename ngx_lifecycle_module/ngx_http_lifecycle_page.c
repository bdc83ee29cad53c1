
/*
 * lifecycle: the page cache. A static page that is personalized is kept
 * in the worker's memory with the places of its markers, so a later
 * request for it neither reads the file nor searches it: the filter
 * sends the pieces between the markers from here. An entry is found by
 * the file's name and is valid while the size and modification time
 * nginx found when it opened the file are the entry's; at most once a
 * second it is also checked with fstat() (inode, nanoseconds), which
 * catches a file rewritten in the same second with the same size. The
 * least recently used entries go when the cache is full. Requests pin
 * the entries they send from until they are done.
 */


#include "ngx_http_lifecycle_module.h"


/* how long an entry is trusted on name, size and mtime alone */
#define NGX_HTTP_LIFECYCLE_PAGE_CHECK  1000


typedef struct ngx_http_lifecycle_entry_s  ngx_http_lifecycle_entry_t;

struct ngx_http_lifecycle_entry_s {
    ngx_rbtree_node_t            node;        /* key: hash of the name */
    ngx_queue_t                  lru;
    ngx_str_t                    name;
    dev_t                        dev;
    ino_t                        ino;
    time_t                       mtime;
    long                         mtime_ns;
    ngx_msec_t                   checked;     /* last fstat() */
    size_t                       size;        /* of the entry, in memory */
    ngx_uint_t                   refs;
    unsigned                     stale:1;     /* out of the tree, pinned */
    ngx_http_lifecycle_page_t    page;
};


typedef struct {
    ngx_rbtree_t                 tree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  lru;         /* most recently used first */
    size_t                       used;
    size_t                       max;
    ngx_uint_t                   ready;
} ngx_http_lifecycle_cache_t;


static ngx_http_lifecycle_entry_t *ngx_http_lifecycle_page_find(
    ngx_http_lifecycle_cache_t *cache, ngx_uint_t hash, ngx_str_t *name);
static ngx_http_lifecycle_entry_t *ngx_http_lifecycle_page_load(
    ngx_http_request_t *r, ngx_http_lifecycle_cache_t *cache, ngx_buf_t *b,
    ngx_uint_t hash);
static void ngx_http_lifecycle_page_drop(ngx_http_lifecycle_cache_t *cache,
    ngx_http_lifecycle_entry_t *e);
static void ngx_http_lifecycle_page_unpin(void *data);


static ngx_http_lifecycle_cache_t  ngx_http_lifecycle_cache;


/*
 * The page of a file buffer holding a whole static file, as nginx found
 * it when it opened it ("mtime"); NULL when it cannot be cached (too big
 * for the cache: the caller reads it), and NGX_HTTP_LIFECYCLE_PAGE_ERROR
 * on an error.
 */

ngx_http_lifecycle_page_t *
ngx_http_lifecycle_page_get(ngx_http_request_t *r, ngx_buf_t *b,
    time_t mtime)
{
    struct stat                      st;
    ngx_uint_t                       hash;
    ngx_pool_cleanup_t              *cln;
    ngx_http_lifecycle_entry_t      *e;
    ngx_http_lifecycle_cache_t      *cache;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    cache = &ngx_http_lifecycle_cache;

    if (!cache->ready) {
        lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

        ngx_rbtree_init(&cache->tree, &cache->sentinel,
                        ngx_rbtree_insert_value);
        ngx_queue_init(&cache->lru);
        cache->max = lmcf->page_cache;
        cache->ready = 1;
    }

    if ((size_t) b->file_last > cache->max / 4
        || b->file_last > NGX_HTTP_LIFECYCLE_PAGE_MAX
        || b->file->name.len == 0)
    {
        return NULL;
    }

    hash = ngx_hash_key(b->file->name.data, b->file->name.len);

    e = ngx_http_lifecycle_page_find(cache, hash, &b->file->name);

    if (e && ((off_t) e->page.len != b->file_last || e->mtime != mtime)) {
        ngx_http_lifecycle_page_drop(cache, e);
        e = NULL;
    }

    if (e && ngx_current_msec - e->checked >= NGX_HTTP_LIFECYCLE_PAGE_CHECK) {

        if (fstat(b->file->fd, &st) == -1) {
            ngx_log_error(NGX_LOG_CRIT, r->connection->log, ngx_errno,
                          "lifecycle: fstat(\"%V\") failed", &b->file->name);
            return NGX_HTTP_LIFECYCLE_PAGE_ERROR;
        }

        if (st.st_ino != e->ino || st.st_dev != e->dev
            || st.st_size != b->file_last
            || st.st_mtim.tv_sec != e->mtime
            || st.st_mtim.tv_nsec != e->mtime_ns)
        {
            ngx_http_lifecycle_page_drop(cache, e);
            e = NULL;

        } else {
            e->checked = ngx_current_msec;
        }
    }

    if (e == NULL) {
        e = ngx_http_lifecycle_page_load(r, cache, b, hash);

        if (e == NULL) {
            return NGX_HTTP_LIFECYCLE_PAGE_ERROR;
        }

        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_PAGE_MISSES);

    } else {
        ngx_queue_remove(&e->lru);
        ngx_http_lifecycle_stat_inc(NGX_HTTP_LIFECYCLE_STAT_PAGE_HITS);
    }

    ngx_queue_insert_head(&cache->lru, &e->lru);

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_LIFECYCLE_PAGE_ERROR;
    }

    e->refs++;
    cln->handler = ngx_http_lifecycle_page_unpin;
    cln->data = e;

    return &e->page;
}


static ngx_http_lifecycle_entry_t *
ngx_http_lifecycle_page_find(ngx_http_lifecycle_cache_t *cache,
    ngx_uint_t hash, ngx_str_t *name)
{
    ngx_rbtree_node_t           *node, *sentinel;
    ngx_http_lifecycle_entry_t  *e;

    node = cache->tree.root;
    sentinel = cache->tree.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        e = (ngx_http_lifecycle_entry_t *) node;

        if (e->name.len == name->len
            && ngx_strncmp(e->name.data, name->data, name->len) == 0)
        {
            return e;
        }

        node = node->right;
    }

    return NULL;
}


/* reads the file and finds its markers: a miss costs what a request did */

static ngx_http_lifecycle_entry_t *
ngx_http_lifecycle_page_load(ngx_http_request_t *r,
    ngx_http_lifecycle_cache_t *cache, ngx_buf_t *b, ngx_uint_t hash)
{
    u_char                      *data;
    size_t                       size;
    ssize_t                      n;
    struct stat                  st;
    ngx_array_t                  marks;
    ngx_queue_t                 *q;
    ngx_http_lifecycle_entry_t  *e, *old;

    if (fstat(b->file->fd, &st) == -1) {
        ngx_log_error(NGX_LOG_CRIT, r->connection->log, ngx_errno,
                      "lifecycle: fstat(\"%V\") failed", &b->file->name);
        return NULL;
    }

    if (st.st_size != b->file_last) {
        ngx_log_error(NGX_LOG_CRIT, r->connection->log, 0,
                      "lifecycle: \"%V\" changed while read",
                      &b->file->name);
        return NULL;
    }

    data = ngx_pnalloc(r->pool, st.st_size);
    if (data == NULL) {
        return NULL;
    }

    n = ngx_read_file(b->file, data, st.st_size, 0);

    if (n == NGX_ERROR) {
        return NULL;
    }

    if (n != st.st_size) {
        ngx_log_error(NGX_LOG_CRIT, r->connection->log, 0,
                      "lifecycle: \"%V\" changed while read",
                      &b->file->name);
        return NULL;
    }

    if (ngx_array_init(&marks, r->pool, 8, sizeof(ngx_http_lifecycle_mark_t))
        != NGX_OK
        || ngx_http_lifecycle_filter_scan(data, n, &marks) != NGX_OK)
    {
        return NULL;
    }

    size = sizeof(ngx_http_lifecycle_entry_t)
           + marks.nelts * sizeof(ngx_http_lifecycle_mark_t) + n
           + b->file->name.len;

    /* room: the least recently used entries nobody sends from go */

    for (q = ngx_queue_last(&cache->lru);
         cache->used + size > cache->max
         && q != ngx_queue_sentinel(&cache->lru);
         /* void */)
    {
        old = ngx_queue_data(q, ngx_http_lifecycle_entry_t, lru);
        q = ngx_queue_prev(q);

        ngx_http_lifecycle_page_drop(cache, old);
    }

    e = ngx_alloc(size, r->connection->log);
    if (e == NULL) {
        return NULL;
    }

    ngx_memzero(e, sizeof(ngx_http_lifecycle_entry_t));

    e->dev = st.st_dev;
    e->ino = st.st_ino;
    e->mtime = st.st_mtim.tv_sec;
    e->mtime_ns = st.st_mtim.tv_nsec;
    e->checked = ngx_current_msec;
    e->size = size;

    e->page.marks = (ngx_http_lifecycle_mark_t *) (e + 1);
    e->page.nmarks = marks.nelts;
    e->page.data = (u_char *) (e->page.marks + marks.nelts);
    e->page.len = n;
    e->name.data = e->page.data + n;
    e->name.len = b->file->name.len;

    ngx_memcpy(e->page.marks, marks.elts,
               marks.nelts * sizeof(ngx_http_lifecycle_mark_t));
    ngx_memcpy(e->page.data, data, n);
    ngx_memcpy(e->name.data, b->file->name.data, e->name.len);

    e->node.key = hash;
    ngx_rbtree_insert(&cache->tree, &e->node);

    cache->used += size;

    return e;
}


/* out of the cache; freed at once unless a request still sends from it */

static void
ngx_http_lifecycle_page_drop(ngx_http_lifecycle_cache_t *cache,
    ngx_http_lifecycle_entry_t *e)
{
    ngx_rbtree_delete(&cache->tree, &e->node);
    ngx_queue_remove(&e->lru);
    cache->used -= e->size;

    if (e->refs) {
        e->stale = 1;
        return;
    }

    ngx_free(e);
}


static void
ngx_http_lifecycle_page_unpin(void *data)
{
    ngx_http_lifecycle_entry_t  *e = data;

    if (--e->refs == 0 && e->stale) {
        ngx_free(e);
    }
}


void
ngx_http_lifecycle_page_exit_process(void)
{
    ngx_queue_t                 *q;
    ngx_http_lifecycle_entry_t  *e;
    ngx_http_lifecycle_cache_t  *cache;

    cache = &ngx_http_lifecycle_cache;

    if (!cache->ready) {
        return;
    }

    while (!ngx_queue_empty(&cache->lru)) {
        q = ngx_queue_head(&cache->lru);
        e = ngx_queue_data(q, ngx_http_lifecycle_entry_t, lru);

        ngx_queue_remove(q);

        if (e->refs) {
            e->stale = 1;
            continue;
        }

        ngx_free(e);
    }

    cache->ready = 0;
}


/* lifecycle_page_cache SIZE | off */

char *
ngx_http_lifecycle_page_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_main_conf_t  *lmcf = conf;

    ssize_t     size;
    ngx_str_t  *value;

    if (lmcf->page_cache != NGX_CONF_UNSET_SIZE) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        lmcf->page_cache = 0;
        return NGX_CONF_OK;
    }

    size = ngx_parse_size(&value[1]);

    if (size == NGX_ERROR || size == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid page cache size \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    lmcf->page_cache = size;

    return NGX_CONF_OK;
}
