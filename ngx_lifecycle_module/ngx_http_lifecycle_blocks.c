
/*
 * lifecycle: content blocks and popups. "lifecycle_block" and
 * "lifecycle_popup" compile their templates at configuration time; per
 * request this file chooses what a visitor gets (before the headers go)
 * and renders it from the visitor's profile. The body filter places it.
 */


#include "ngx_http_lifecycle_module.h"


#define NGX_HTTP_LIFECYCLE_NAME_MAX      64
#define NGX_HTTP_LIFECYCLE_DAY_MSEC      ((ngx_msec_t) 86400 * 1000)

/* one popup per page: lifecycle.js finds it by its id */
#define NGX_HTTP_LIFECYCLE_POPUP_OPEN                                         \
    "<div id=\"lc-popup\" class=\"lc-popup\" data-lc-popup=\"%V\""          \
    " data-lc-delay=\"%M\" role=\"dialog\" aria-modal=\"true\" hidden>"

/* how long a dismissed popup stays away when it has no cap */
#define NGX_HTTP_LIFECYCLE_DISMISS_MSEC  (30 * NGX_HTTP_LIFECYCLE_DAY_MSEC)


static char *ngx_http_lifecycle_template(ngx_conf_t *cf, ngx_str_t *file,
    lc_tpl_t **tpl, ngx_uint_t *uses);
static ngx_int_t ngx_http_lifecycle_check_name(ngx_conf_t *cf,
    ngx_str_t *name, char *what, ngx_uint_t any);
static ngx_array_t *ngx_http_lifecycle_resolve(ngx_conf_t *cf,
    ngx_array_t *defs, ngx_uint_t popups);
static ngx_uint_t ngx_http_lifecycle_popup_eligible(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx, ngx_http_lifecycle_rule_t *rule);
static const lc_value_t *ngx_http_lifecycle_data(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx, lc_alloc_t *a, ngx_uint_t uses);
static void *ngx_http_lifecycle_pool_alloc(void *pool, size_t size);
static void ngx_http_lifecycle_tpl_write(void *ctx, const char *data,
    size_t len);


char *
ngx_http_lifecycle_block(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_loc_conf_t  *llcf = conf;

    ngx_str_t                   *value;
    ngx_http_lifecycle_block_t  *block;

    value = cf->args->elts;

    if (llcf->blocks == NGX_CONF_UNSET_PTR) {
        llcf->blocks = ngx_array_create(cf->pool, 4,
                                        sizeof(ngx_http_lifecycle_block_t));
        if (llcf->blocks == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_lifecycle_check_name(cf, &value[1], "slot", 0) != NGX_OK
        || ngx_http_lifecycle_check_name(cf, &value[2], "segment", 1)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    block = ngx_array_push(llcf->blocks);
    if (block == NULL) {
        return NGX_CONF_ERROR;
    }

    block->slot = value[1];
    block->segment = value[2];
    block->conf_file = cf->conf_file->file.name.data;
    block->conf_line = cf->conf_file->line;

    return ngx_http_lifecycle_template(cf, &value[3], &block->tpl,
                                       &block->uses);
}


char *
ngx_http_lifecycle_popup(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_loc_conf_t  *llcf = conf;

    u_char                      *p, *slash;
    time_t                       period;
    ngx_int_t                    n;
    ngx_str_t                   *value, s;
    ngx_uint_t                   i;
    ngx_http_lifecycle_popup_t  *popup;

    value = cf->args->elts;

    if (cf->args->nelts < 4) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"lifecycle_popup\" needs a name, a segment "
                           "and a template file");
        return NGX_CONF_ERROR;
    }

    if (llcf->popups == NGX_CONF_UNSET_PTR) {
        llcf->popups = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_lifecycle_popup_t));
        if (llcf->popups == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_lifecycle_check_name(cf, &value[1], "popup", 0) != NGX_OK
        || ngx_http_lifecycle_check_name(cf, &value[2], "segment", 1)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    popup = ngx_array_push(llcf->popups);
    if (popup == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(popup, sizeof(ngx_http_lifecycle_popup_t));

    popup->name = value[1];
    popup->segment = value[2];
    popup->period = NGX_HTTP_LIFECYCLE_DISMISS_MSEC;
    popup->conf_file = cf->conf_file->file.name.data;
    popup->conf_line = cf->conf_file->line;

    for (i = 4; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "cap=", 4) == 0) {
            p = value[i].data + 4;
            slash = ngx_strlchr(p, value[i].data + value[i].len, '/');

            if (slash == NULL) {
                goto invalid;
            }

            n = ngx_atoi(p, slash - p);

            s.data = slash + 1;
            s.len = value[i].data + value[i].len - s.data;
            period = ngx_parse_time(&s, 1);

            if (n == NGX_ERROR || n == 0
                || period == (time_t) NGX_ERROR || period == 0)
            {
                goto invalid;
            }

            popup->cap = n;
            popup->period = (ngx_msec_t) period * 1000;
            continue;
        }

        if (ngx_strncmp(value[i].data, "delay=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            popup->delay = ngx_parse_time(&s, 0);

            if (popup->delay == (ngx_msec_t) NGX_ERROR) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "min_views=", 10) == 0) {
            n = ngx_atoi(value[i].data + 10, value[i].len - 10);

            if (n == NGX_ERROR) {
                goto invalid;
            }

            popup->min_views = n;
            continue;
        }

    invalid:

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    /* what the browser reported about it comes back with the profile */

    s.len = sizeof("pop:") - 1 + popup->name.len;
    s.data = ngx_pnalloc(cf->pool, s.len);
    if (s.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(s.data, "pop:%V", &popup->name);

    if (ngx_http_lifecycle_want(cf, &s) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* the markup around the template, made once: names are [A-Za-z0-9_-] */

    p = ngx_pnalloc(cf->pool, sizeof(NGX_HTTP_LIFECYCLE_POPUP_OPEN)
                              + popup->name.len + NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    popup->open.data = p;
    popup->open.len = ngx_sprintf(p, NGX_HTTP_LIFECYCLE_POPUP_OPEN,
                                  &popup->name, popup->delay)
                      - p;

    return ngx_http_lifecycle_template(cf, &value[3], &popup->tpl,
                                       &popup->uses);
}


char *
ngx_http_lifecycle_script_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_loc_conf_t  *llcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (llcf->script_url.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* it goes into an attribute as written */
    for (i = 0; i < value[1].len; i++) {
        if (value[1].data[i] <= ' ' || value[1].data[i] == '"'
            || value[1].data[i] == '<' || value[1].data[i] == '>'
            || value[1].data[i] == '\'' || value[1].data[i] == '`'
            || value[1].data[i] >= 0x7f)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid script URL \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (value[1].len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "empty script URL");
        return NGX_CONF_ERROR;
    }

    llcf->script_url = value[1];

    return NGX_CONF_OK;
}


static struct {
    char        *name;
    ngx_uint_t   bit;
} ngx_http_lifecycle_data_names[] = {
    { "visitor", NGX_HTTP_LIFECYCLE_USES_VISITOR },
    { "product", NGX_HTTP_LIFECYCLE_USES_PRODUCT },
    { "recent", NGX_HTTP_LIFECYCLE_USES_RECENT },
    { "top_category", NGX_HTTP_LIFECYCLE_USES_TOP_CATEGORY },
    { "cart", NGX_HTTP_LIFECYCLE_USES_CART },
    { NULL, 0 }
};


static char *
ngx_http_lifecycle_template(ngx_conf_t *cf, ngx_str_t *file, lc_tpl_t **tpl,
    ngx_uint_t *uses)
{
    char        err[128];
    ngx_str_t   name, text, field;
    ngx_uint_t  i;
    lc_alloc_t  a;

    name = *file;

    /* "data:..." is the template itself, as ssl_certificate takes it */

    if (name.len >= 5 && ngx_strncmp(name.data, "data:", 5) == 0) {
        text.data = name.data + 5;
        text.len = name.len - 5;
        ngx_str_set(&name, "data:");

    } else {
        if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        if (ngx_http_lifecycle_read_file(cf, &name, &text) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    a.alloc = ngx_http_lifecycle_pool_alloc;
    a.ctx = cf->pool;

    *tpl = lc_tpl_compile((char *) text.data, text.len, &a, err, sizeof(err));

    if (*tpl == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "template \"%V\", %s",
                           &name, err);
        return NGX_CONF_ERROR;
    }

    *uses = 0;

    for (i = 0; ngx_http_lifecycle_data_names[i].name; i++) {
        if (lc_tpl_uses(*tpl, ngx_http_lifecycle_data_names[i].name,
                        ngx_strlen(ngx_http_lifecycle_data_names[i].name)))
        {
            *uses |= ngx_http_lifecycle_data_names[i].bit;
        }
    }

    /* the top category and the country are profile fields of their own */

    if (*uses & NGX_HTTP_LIFECYCLE_USES_TOP_CATEGORY) {
        ngx_str_set(&field, "topc");

        if (ngx_http_lifecycle_want(cf, &field) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    if (*uses & NGX_HTTP_LIFECYCLE_USES_VISITOR) {
        ngx_str_set(&field, "country");

        if (ngx_http_lifecycle_want(cf, &field) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_lifecycle_check_name(ngx_conf_t *cf, ngx_str_t *name, char *what,
    ngx_uint_t any)
{
    u_char      c;
    ngx_uint_t  i;

    /* "*": anyone, where a segment is asked for */
    if (any && name->len == 1 && name->data[0] == '*') {
        return NGX_OK;
    }

    for (i = 0; i < name->len; i++) {
        c = name->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_' || c == '-'))
        {
            break;
        }
    }

    if (name->len == 0 || i < name->len
        || name->len > NGX_HTTP_LIFECYCLE_NAME_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %s name \"%V\": 1 to %d letters, digits, "
                           "\"_\" or \"-\"", what, name,
                           NGX_HTTP_LIFECYCLE_NAME_MAX);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Blocks and popups may be written above the server that defines their
 * segments: they are bound to the server's segments while merging.
 */

char *
ngx_http_lifecycle_blocks_merge(ngx_conf_t *cf,
    ngx_http_lifecycle_loc_conf_t *prev, ngx_http_lifecycle_loc_conf_t *conf)
{
    ngx_uint_t                   i;
    ngx_http_lifecycle_popup_t  *popup;
    ngx_http_lifecycle_block_t  *block;

    ngx_conf_merge_ptr_value(conf->blocks, prev->blocks, NULL);
    ngx_conf_merge_ptr_value(conf->popups, prev->popups, NULL);
    ngx_conf_merge_str_value(conf->script_url, prev->script_url,
                             "/lifecycle.js");

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    conf->uses = 0;

    if (conf->blocks) {
        conf->block_rules = ngx_http_lifecycle_resolve(cf, conf->blocks, 0);
        if (conf->block_rules == NULL) {
            return NGX_CONF_ERROR;
        }

        block = conf->blocks->elts;

        for (i = 0; i < conf->blocks->nelts; i++) {
            conf->uses |= block[i].uses;
        }
    }

    if (conf->popups) {
        conf->popup_rules = ngx_http_lifecycle_resolve(cf, conf->popups, 1);
        if (conf->popup_rules == NULL) {
            return NGX_CONF_ERROR;
        }

        popup = conf->popups->elts;

        for (i = 0; i < conf->popups->nelts; i++) {
            conf->uses |= popup[i].uses;
        }
    }

    return NGX_CONF_OK;
}


static ngx_array_t *
ngx_http_lifecycle_resolve(ngx_conf_t *cf, ngx_array_t *defs,
    ngx_uint_t popups)
{
    u_char                         *file;
    ngx_str_t                      *name;
    ngx_uint_t                      i, j, line;
    ngx_array_t                    *rules;
    ngx_http_lifecycle_rule_t      *rule;
    ngx_http_lifecycle_block_t     *block;
    ngx_http_lifecycle_popup_t     *popup;
    ngx_http_lifecycle_segment_t   *seg;
    ngx_http_lifecycle_srv_conf_t  *lscf;

    lscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_lifecycle_module);

    rules = ngx_array_create(cf->pool, defs->nelts,
                             sizeof(ngx_http_lifecycle_rule_t));
    if (rules == NULL) {
        return NULL;
    }

    for (i = 0; i < defs->nelts; i++) {

        if (popups) {
            popup = (ngx_http_lifecycle_popup_t *) defs->elts + i;
            name = &popup->segment;
            file = popup->conf_file;
            line = popup->conf_line;

        } else {
            block = (ngx_http_lifecycle_block_t *) defs->elts + i;
            name = &block->segment;
            file = block->conf_file;
            line = block->conf_line;
        }

        rule = ngx_array_push(rules);
        if (rule == NULL) {
            return NULL;
        }

        rule->def = (u_char *) defs->elts + i * defs->size;
        rule->segment = NULL;

        if (name->len == 1 && name->data[0] == '*') {
            continue;
        }

        seg = lscf->segments ? lscf->segments->elts : NULL;

        for (j = 0; lscf->segments && j < lscf->segments->nelts; j++) {
            if (seg[j].name.len == name->len
                && ngx_strncmp(seg[j].name.data, name->data, name->len) == 0)
            {
                rule->segment = &seg[j];
                break;
            }
        }

        if (rule->segment == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown segment \"%V\": no \"lifecycle_segment "
                          "%V\" in this server or above it in %s:%ui",
                          name, name, file, line);
            return NULL;
        }
    }

    return rules;
}


/*
 * Decides what this visitor gets here: per slot the first block whose
 * segment holds, and the first eligible popup. Known once the profile
 * is (before the headers go), and decided again only if an internal
 * redirect moved the request to a location with other rules.
 */

ngx_int_t
ngx_http_lifecycle_choose(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx)
{
    ngx_uint_t                      i, j, taken;
    ngx_array_t                    *fills;
    ngx_http_lifecycle_fill_t      *fill;
    ngx_http_lifecycle_rule_t      *rule;
    ngx_http_lifecycle_block_t     *block;
    ngx_http_lifecycle_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_lifecycle_module);

    if (ctx->chosen_for == llcf) {
        return NGX_OK;
    }

    if (ctx->fills == NULL) {
        ctx->fills = ngx_array_create(r->pool, 2,
                                      sizeof(ngx_http_lifecycle_fill_t));
        if (ctx->fills == NULL) {
            return NGX_ERROR;
        }
    }

    fills = ctx->fills;
    fills->nelts = 0;
    ctx->popup = NULL;
    ctx->chosen_for = llcf;

    if (ctx->profile == NULL || ctx->group == NGX_HTTP_LIFECYCLE_GROUP_CONTROL)
    {
        return NGX_OK;
    }

    if (llcf->block_rules) {
        rule = llcf->block_rules->elts;

        for (i = 0; i < llcf->block_rules->nelts; i++) {
            block = rule[i].def;
            fill = fills->elts;
            taken = 0;

            for (j = 0; j < fills->nelts; j++) {
                if (fill[j].slot.len == block->slot.len
                    && ngx_strncmp(fill[j].slot.data, block->slot.data,
                                   block->slot.len)
                       == 0)
                {
                    taken = 1;
                    break;
                }
            }

            if (taken
                || (rule[i].segment
                    && !ngx_http_lifecycle_segment_match(r, ctx,
                                                         rule[i].segment)))
            {
                continue;
            }

            fill = ngx_array_push(fills);
            if (fill == NULL) {
                return NGX_ERROR;
            }

            fill->slot = block->slot;
            fill->rule = &rule[i];
        }
    }

    if (llcf->popup_rules) {
        rule = llcf->popup_rules->elts;

        for (i = 0; i < llcf->popup_rules->nelts; i++) {
            if (ngx_http_lifecycle_popup_eligible(r, ctx, &rule[i])) {
                ctx->popup = &rule[i];
                break;
            }
        }
    }

    return NGX_OK;
}


/*
 * Shows, dismissals and conversions are what the browser reported
 * (lifecycle_collect writes them): clearing browser storage resets none.
 */

static ngx_uint_t
ngx_http_lifecycle_popup_eligible(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx, ngx_http_lifecycle_rule_t *rule)
{
    uint64_t                           now;
    ngx_uint_t                         i;
    ngx_time_t                        *tp;
    ngx_http_lifecycle_popup_t        *popup;
    ngx_http_lifecycle_profile_t      *p;
    ngx_http_lifecycle_popup_state_t  *st;

    p = ctx->profile;
    popup = rule->def;

    if (ngx_http_lifecycle_opted_in(p) || p->views < popup->min_views) {
        return 0;
    }

    if (rule->segment && !ngx_http_lifecycle_segment_match(r, ctx,
                                                           rule->segment))
    {
        return 0;
    }

    st = p->popups.elts;

    for (i = 0; i < p->popups.nelts; i++) {
        if (st[i].name.len == popup->name.len
            && ngx_strncmp(st[i].name.data, popup->name.data,
                           popup->name.len)
               == 0)
        {
            break;
        }
    }

    if (i == p->popups.nelts) {
        return 1;
    }

    st = &st[i];

    if (st->converted) {
        return 0;
    }

    tp = ngx_timeofday();
    now = (uint64_t) tp->sec * 1000 + tp->msec;

    if (st->dismissed && now < st->dismissed + popup->period) {
        return 0;
    }

    if (popup->cap && st->shown >= popup->cap
        && now < st->since + popup->period)
    {
        return 0;
    }

    return 1;
}


ngx_uint_t
ngx_http_lifecycle_opted_in(ngx_http_lifecycle_profile_t *p)
{
    return p->optin.len
           && !(p->optin.len == 1 && p->optin.data[0] == '0')
           && !(p->optin.len == 2 && ngx_strncasecmp(p->optin.data,
                                                     (u_char *) "no", 2)
                                     == 0);
}


/*
 * The block's or popup's markup for this visitor: the template rendered
 * into one buffer sized first, so nothing is copied twice.
 */

ngx_int_t
ngx_http_lifecycle_render(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx, ngx_http_lifecycle_rule_t *rule,
    ngx_uint_t is_popup, ngx_str_t *out)
{
    u_char                         *p;
    size_t                          len, i;
    lc_tpl_t                       *tpl;
    ngx_str_t                      *segment;
    ngx_uint_t                      uses;
    lc_value_member_t              *m;
    ngx_http_lifecycle_fill_t      *fill;
    lc_alloc_t                      a;
    lc_value_t                     *root;
    const lc_value_t               *data, *seg;
    ngx_http_lifecycle_popup_t     *popup;
    ngx_http_lifecycle_block_t     *block;
    ngx_http_lifecycle_loc_conf_t  *llcf;

    a.alloc = ngx_http_lifecycle_pool_alloc;
    a.ctx = r->pool;

    if (ctx->data == NULL) {

        /* what the templates chosen for this page refer to, and no more */

        uses = 0;
        fill = ctx->fills->elts;

        for (i = 0; i < ctx->fills->nelts; i++) {
            block = fill[i].rule->def;
            uses |= block->uses;
        }

        if (ctx->popup) {
            popup = ctx->popup->def;
            uses |= popup->uses;
        }

        ctx->data = ngx_http_lifecycle_data(r, ctx, &a, uses);
        if (ctx->data == NULL) {
            return NGX_ERROR;
        }
    }

    data = ctx->data;
    popup = NULL;

    if (is_popup) {
        popup = rule->def;
        tpl = popup->tpl;
        segment = &popup->segment;

    } else {
        block = rule->def;
        tpl = block->tpl;
        segment = &block->segment;
    }

    /* "segment" first: the shared members follow it */
    root = lc_value_object(&a, data->len + 1);
    seg = lc_value_string(&a, (char *) segment->data, segment->len, 0);

    if (root == NULL || seg == NULL
        || lc_value_add(root, "segment", 7, seg) != 0)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < data->len; i++) {
        m = &data->u.members[i];

        if (lc_value_add(root, m->key, m->keylen, m->value) != 0) {
            return NGX_ERROR;
        }
    }

    len = lc_tpl_render_size(tpl, root);

    if (is_popup) {
        llcf = ngx_http_get_module_loc_conf(r, ngx_http_lifecycle_module);

        len += popup->open.len + sizeof("</div><script src=\"\" defer>"
                                        "</script>") - 1
               + llcf->script_url.len;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;

    if (is_popup) {
        p = ngx_cpymem(p, popup->open.data, popup->open.len);
    }

    (void) lc_tpl_render(tpl, root, ngx_http_lifecycle_tpl_write, &p);

    if (is_popup) {
        p = ngx_sprintf(p, "</div><script src=\"%V\" defer></script>",
                        &llcf->script_url);
    }

    out->len = p - out->data;

    return NGX_OK;
}


static void
ngx_http_lifecycle_tpl_write(void *ctx, const char *data, size_t len)
{
    u_char  **p = ctx;

    *p = ngx_cpymem(*p, data, len);
}


static void *
ngx_http_lifecycle_pool_alloc(void *pool, size_t size)
{
    return ngx_palloc(pool, size);
}


/* a string member; "s" must outlive the request (pool or profile) */

static ngx_int_t
ngx_http_lifecycle_add_str(lc_alloc_t *a, lc_value_t *obj, const char *key,
    ngx_str_t *s, int trusted)
{
    lc_value_t  *v;

    v = lc_value_string(a, (char *) s->data, s->len, trusted);

    return (v && lc_value_add(obj, key, ngx_strlen(key), v) == 0)
           ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_lifecycle_add_uint(lc_alloc_t *a, lc_value_t *obj, const char *key,
    ngx_uint_t n)
{
    lc_value_t  *v;

    v = lc_value_uint(a, n);

    return (v && lc_value_add(obj, key, ngx_strlen(key), v) == 0)
           ? NGX_OK : NGX_ERROR;
}


/*
 * A product as templates see it: every column of its catalog row
 * (trusted: the feed is the shop's own), or, unknown to the catalog,
 * only its id, which came from the request and is never trusted.
 */

static const lc_value_t *
ngx_http_lifecycle_product(ngx_http_request_t *r, lc_alloc_t *a,
    ngx_str_t *id)
{
    size_t                           i, n;
    lc_value_t                      *obj, *v;
    const lc_str_t                  *names;
    const lc_product_t              *p;
    ngx_http_lifecycle_main_conf_t  *lmcf;

    p = ngx_http_lifecycle_catalog_find(r, id);

    if (p == NULL) {
        obj = lc_value_object(a, 1);

        if (obj == NULL
            || ngx_http_lifecycle_add_str(a, obj, "id", id, 0) != NGX_OK)
        {
            return NULL;
        }

        return obj;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_lifecycle_module);

    n = lc_catalog_columns(lmcf->catalog, &names);

    /* "category" first: the slug wins over a feed column of that name */
    obj = lc_value_object(a, n + 1);
    v = lc_value_string(a, p->category.data, p->category.len, 1);

    if (obj == NULL || v == NULL || lc_value_add(obj, "category", 8, v) != 0)
    {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        v = lc_value_string(a, p->values[i].data, p->values[i].len, 1);

        if (v == NULL
            || lc_value_add(obj, names[i].data, names[i].len, v) != 0)
        {
            return NULL;
        }
    }

    return obj;
}


/* "cart": units, and their value at catalog prices when all are known */

static const lc_value_t *
ngx_http_lifecycle_cart(ngx_http_request_t *r, lc_alloc_t *a,
    ngx_http_lifecycle_profile_t *profile)
{
    u_char                      *buf;
    ngx_str_t                    value, currency;
    ngx_uint_t                   i, priced;
    lc_value_t                  *cart;
    unsigned long long           minor;
    const lc_product_t          *p;
    ngx_http_lifecycle_count_t  *item;

    cart = lc_value_object(a, 3);

    if (cart == NULL
        || ngx_http_lifecycle_add_uint(a, cart, "count", profile->cart)
           != NGX_OK)
    {
        return NULL;
    }

    item = profile->cart_items.elts;
    minor = 0;
    priced = 0;
    ngx_str_null(&currency);

    for (i = 0; i < profile->cart_items.nelts; i++) {
        p = ngx_http_lifecycle_catalog_find(r, &item[i].key);

        if (p == NULL || p->price_minor == 0) {
            continue;
        }

        minor += p->price_minor * item[i].count;
        priced++;

        if (currency.len == 0) {
            currency.data = (u_char *) p->currency.data;
            currency.len = p->currency.len;
        }
    }

    if (priced == 0) {
        return cart;
    }

    buf = ngx_pnalloc(r->pool, NGX_INT64_LEN + 3);
    if (buf == NULL) {
        return NULL;
    }

    value.data = buf;
    value.len = ngx_sprintf(buf, "%uL.%02uL", minor / 100, minor % 100) - buf;

    if (ngx_http_lifecycle_add_str(a, cart, "value", &value, 1) != NGX_OK
        || (currency.len
            && ngx_http_lifecycle_add_str(a, cart, "currency", &currency, 1)
               != NGX_OK))
    {
        return NULL;
    }

    return cart;
}


/*
 * What every template of the request sees, built once: visitor,
 * product, recent, top_category, cart. The id given to templates is the
 * visitor id, never the signed cookie.
 */

static const lc_value_t *
ngx_http_lifecycle_data(ngx_http_request_t *r, ngx_http_lifecycle_ctx_t *ctx,
    lc_alloc_t *a, ngx_uint_t uses)
{
    ngx_int_t                      stage;
    ngx_str_t                      s, *recent;
    ngx_uint_t                     i, product;
    lc_value_t                    *root, *visitor, *list;
    const lc_value_t              *v;
    ngx_http_lifecycle_profile_t  *p;

    p = ctx->profile;

    root = lc_value_object(a, 5);
    if (root == NULL) {
        return NULL;
    }

    if (uses & NGX_HTTP_LIFECYCLE_USES_VISITOR) {
        visitor = lc_value_object(a, 8);
        if (visitor == NULL) {
            return NULL;
        }

        s.data = ctx->vid;
        s.len = LC_VID_LEN;

        if (ngx_http_lifecycle_add_str(a, visitor, "id", &s, 1) != NGX_OK
            || ngx_http_lifecycle_add_uint(a, visitor, "visits", p->visits)
               != NGX_OK
            || ngx_http_lifecycle_add_uint(a, visitor, "views", p->views)
               != NGX_OK)
        {
            return NULL;
        }

        stage = ngx_http_lifecycle_stage(r, ctx);

        if (stage != NGX_DECLINED
            && ngx_http_lifecycle_add_str(a, visitor, "stage",
                                          &ngx_http_lifecycle_stages[stage],
                                          1)
               != NGX_OK)
        {
            return NULL;
        }

        s = ctx->country.len ? ctx->country : p->country;

        if (s.len
            && ngx_http_lifecycle_add_str(a, visitor, "country", &s, 0)
               != NGX_OK)
        {
            return NULL;
        }

        if (ctx->city.len
            && ngx_http_lifecycle_add_str(a, visitor, "city", &ctx->city, 0)
               != NGX_OK)
        {
            return NULL;
        }

        if (ngx_http_lifecycle_opted_in(p)
            && lc_value_add(visitor, "optin", 5, lc_value_bool(1)) != 0)
        {
            return NULL;
        }

        if (lc_value_add(root, "visitor", 7, visitor) != 0) {
            return NULL;
        }
    }

    product = (ctx->view
               && ctx->view->type == NGX_HTTP_LIFECYCLE_VIEW_PRODUCT
               && ctx->view_id.len);

    if ((uses & NGX_HTTP_LIFECYCLE_USES_PRODUCT) && product) {
        v = ngx_http_lifecycle_product(r, a, &ctx->view_id);

        if (v == NULL || lc_value_add(root, "product", 7, v) != 0) {
            return NULL;
        }
    }

    /* newest first, without the product of this page */

    if (uses & NGX_HTTP_LIFECYCLE_USES_RECENT) {
        recent = p->recent.elts;
        list = lc_value_list(a, p->recent.nelts);

        if (list == NULL) {
            return NULL;
        }

        for (i = 0; i < p->recent.nelts; i++) {
            if (product && recent[i].len == ctx->view_id.len
                && ngx_strncmp(recent[i].data, ctx->view_id.data,
                               recent[i].len)
                   == 0)
            {
                continue;
            }

            v = ngx_http_lifecycle_product(r, a, &recent[i]);

            if (v == NULL || lc_value_append(list, v) != 0) {
                return NULL;
            }
        }

        if (lc_value_add(root, "recent", 6, list) != 0) {
            return NULL;
        }
    }

    /* the most viewed category, kept up to date by the script */

    if ((uses & NGX_HTTP_LIFECYCLE_USES_TOP_CATEGORY)
        && p->top_category.len
        && ngx_http_lifecycle_add_str(a, root, "top_category",
                                      &p->top_category, 0)
           != NGX_OK)
    {
        return NULL;
    }

    if (uses & NGX_HTTP_LIFECYCLE_USES_CART) {
        v = ngx_http_lifecycle_cart(r, a, p);

        if (v == NULL || lc_value_add(root, "cart", 4, v) != 0) {
            return NULL;
        }
    }

    return root;
}


/*
 * A browser holding the page as it was before (with its ETag or date)
 * must get the visitor's version, not a 304: validators of the request
 * are dropped when something will change the page.
 */

ngx_int_t
ngx_http_lifecycle_unconditional(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx)
{
    if (ngx_http_lifecycle_choose(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->fills->nelts || ctx->popup) {
        r->headers_in.if_modified_since = NULL;
        r->headers_in.if_unmodified_since = NULL;
        r->headers_in.if_none_match = NULL;
        r->headers_in.if_match = NULL;
    }

    return NGX_OK;
}
