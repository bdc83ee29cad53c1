
/*
 * lifecycle: segments and stages. "lifecycle_segment" conditions are
 * parsed at configuration time into (field, operator, value) triples and
 * matched against the profile: declarative comparisons, never expressions.
 */


#include "ngx_http_lifecycle_module.h"


#define NGX_HTTP_LIFECYCLE_DAY_MS  (86400 * 1000)


typedef enum {
    NGX_HTTP_LIFECYCLE_F_VISITS = 0,
    NGX_HTTP_LIFECYCLE_F_VIEWS,
    NGX_HTTP_LIFECYCLE_F_PRODUCT_VIEWS,
    NGX_HTTP_LIFECYCLE_F_CATEGORY_VIEWS,
    NGX_HTTP_LIFECYCLE_F_CART,
    NGX_HTTP_LIFECYCLE_F_PURCHASES,
    NGX_HTTP_LIFECYCLE_F_DAYS_SINCE_VISIT,
    NGX_HTTP_LIFECYCLE_F_CATEGORY,          /* category:NAME */
    NGX_HTTP_LIFECYCLE_F_PRODUCT,           /* product:ID */
    NGX_HTTP_LIFECYCLE_F_STAGE,
    NGX_HTTP_LIFECYCLE_F_COUNTRY,
    NGX_HTTP_LIFECYCLE_F_OPTIN,
    NGX_HTTP_LIFECYCLE_F_VARIABLE           /* $name */
} ngx_http_lifecycle_field_e;


typedef enum {
    NGX_HTTP_LIFECYCLE_OP_EQ = 0,
    NGX_HTTP_LIFECYCLE_OP_NE,
    NGX_HTTP_LIFECYCLE_OP_GE,
    NGX_HTTP_LIFECYCLE_OP_LE,
    NGX_HTTP_LIFECYCLE_OP_GT,
    NGX_HTTP_LIFECYCLE_OP_LT,
    NGX_HTTP_LIFECYCLE_OP_MATCH
} ngx_http_lifecycle_op_e;


typedef struct {
    ngx_uint_t                  field;
    ngx_uint_t                  op;
    ngx_uint_t                  negate;
    ngx_str_t                   key;       /* category or product id */
    ngx_str_t                   value;
    ngx_uint_t                  number;
    ngx_int_t                   variable;  /* index of $name */
    ngx_regex_t                *regex;
} ngx_http_lifecycle_cond_t;


typedef struct {
    char                       *name;
    ngx_uint_t                  field;
    ngx_uint_t                  numeric;
} ngx_http_lifecycle_field_t;


static ngx_http_lifecycle_field_t  ngx_http_lifecycle_fields[] = {
    { "visits", NGX_HTTP_LIFECYCLE_F_VISITS, 1 },
    { "views", NGX_HTTP_LIFECYCLE_F_VIEWS, 1 },
    { "product_views", NGX_HTTP_LIFECYCLE_F_PRODUCT_VIEWS, 1 },
    { "category_views", NGX_HTTP_LIFECYCLE_F_CATEGORY_VIEWS, 1 },
    { "cart", NGX_HTTP_LIFECYCLE_F_CART, 1 },
    { "purchases", NGX_HTTP_LIFECYCLE_F_PURCHASES, 1 },
    { "days_since_visit", NGX_HTTP_LIFECYCLE_F_DAYS_SINCE_VISIT, 1 },
    { "category:", NGX_HTTP_LIFECYCLE_F_CATEGORY, 1 },
    { "product:", NGX_HTTP_LIFECYCLE_F_PRODUCT, 1 },
    { "stage", NGX_HTTP_LIFECYCLE_F_STAGE, 0 },
    { "country", NGX_HTTP_LIFECYCLE_F_COUNTRY, 0 },
    { "optin", NGX_HTTP_LIFECYCLE_F_OPTIN, 0 },
    { NULL, 0, 0 }
};


/* longest first, so that ">=" is not read as ">" */
static ngx_str_t  ngx_http_lifecycle_ops[] = {
    ngx_string("="),
    ngx_string("!="),
    ngx_string(">="),
    ngx_string("<="),
    ngx_string(">"),
    ngx_string("<"),
    ngx_string("~")
};


ngx_str_t  ngx_http_lifecycle_stages[] = {
    ngx_string("new"),
    ngx_string("engaged"),
    ngx_string("cart"),
    ngx_string("customer"),
    ngx_string("loyal"),
    ngx_string("at_risk"),
    ngx_string("lapsed"),
    ngx_null_string
};


static char *ngx_http_lifecycle_cond_parse(ngx_conf_t *cf, ngx_str_t *text,
    ngx_http_lifecycle_cond_t *cond);
static ngx_uint_t ngx_http_lifecycle_cond_match(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx, ngx_http_lifecycle_cond_t *cond);


char *
ngx_http_lifecycle_segment(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_srv_conf_t  *lscf = conf;

    ngx_str_t                     *value;
    ngx_uint_t                     i;
    ngx_http_lifecycle_segment_t  *seg;

    value = cf->args->elts;

    if (lscf->segments == NGX_CONF_UNSET_PTR) {
        lscf->segments = ngx_array_create(cf->pool, 4,
                                          sizeof(ngx_http_lifecycle_segment_t));
        if (lscf->segments == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    seg = lscf->segments->elts;

    for (i = 0; i < lscf->segments->nelts; i++) {
        if (seg[i].name.len == value[1].len
            && ngx_strncmp(seg[i].name.data, value[1].data, value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate segment \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    for (i = 0; i < value[1].len; i++) {
        if (!((value[1].data[i] >= 'a' && value[1].data[i] <= 'z')
              || (value[1].data[i] >= 'A' && value[1].data[i] <= 'Z')
              || (value[1].data[i] >= '0' && value[1].data[i] <= '9')
              || value[1].data[i] == '_' || value[1].data[i] == '-'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid segment name \"%V\": letters, digits,"
                               " \"_\" and \"-\" only", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    seg = ngx_array_push(lscf->segments);
    if (seg == NULL) {
        return NGX_CONF_ERROR;
    }

    seg->name = value[1];
    seg->conds = ngx_array_create(cf->pool, cf->args->nelts - 2,
                                  sizeof(ngx_http_lifecycle_cond_t));
    if (seg->conds == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {
        ngx_http_lifecycle_cond_t  *cond;

        cond = ngx_array_push(seg->conds);
        if (cond == NULL) {
            return NGX_CONF_ERROR;
        }

        if (ngx_http_lifecycle_cond_parse(cf, &value[i], cond)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_lifecycle_cond_parse(ngx_conf_t *cf, ngx_str_t *text,
    ngx_http_lifecycle_cond_t *cond)
{
    u_char                      *p, *last, *start, errstr[NGX_MAX_CONF_ERRSTR];
    size_t                       len;
    ngx_int_t                    n;
    ngx_str_t                    lhs, name;
    ngx_uint_t                   i, numeric;
    ngx_regex_compile_t          rc;
    ngx_http_lifecycle_field_t  *f;

    ngx_memzero(cond, sizeof(ngx_http_lifecycle_cond_t));

    p = text->data;
    last = p + text->len;

    if (p < last && *p == '!') {
        cond->negate = 1;
        p++;
    }

    /* the left side ends at the first operator character */
    for (start = p; p < last; p++) {
        if (*p == '=' || *p == '!' || *p == '<' || *p == '>' || *p == '~') {
            break;
        }
    }

    lhs.data = start;
    lhs.len = p - start;

    for (i = 0; i < sizeof(ngx_http_lifecycle_ops) / sizeof(ngx_str_t); i++) {
        len = ngx_http_lifecycle_ops[i].len;

        if ((size_t) (last - p) >= len
            && ngx_strncmp(p, ngx_http_lifecycle_ops[i].data, len) == 0
            && !(len == 1 && (size_t) (last - p) > 1 && p[1] == '='))
        {
            break;
        }
    }

    if (lhs.len == 0 || p == last
        || i == sizeof(ngx_http_lifecycle_ops) / sizeof(ngx_str_t))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid condition \"%V\": expected NAME, an "
                           "operator (= != >= <= > < ~) and a value", text);
        return NGX_CONF_ERROR;
    }

    cond->op = i;
    cond->value.data = p + ngx_http_lifecycle_ops[i].len;
    cond->value.len = last - cond->value.data;

    if (lhs.data[0] == '$') {
        name.data = lhs.data + 1;
        name.len = lhs.len - 1;

        cond->field = NGX_HTTP_LIFECYCLE_F_VARIABLE;
        cond->variable = ngx_http_get_variable_index(cf, &name);

        if (cond->variable == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        numeric = 0;

    } else {
        for (f = ngx_http_lifecycle_fields; f->name; f++) {
            len = ngx_strlen(f->name);

            if (f->name[len - 1] == ':') {
                if (lhs.len > len
                    && ngx_strncmp(lhs.data, f->name, len) == 0)
                {
                    cond->key.data = lhs.data + len;
                    cond->key.len = lhs.len - len;
                    break;
                }

            } else if (lhs.len == len
                       && ngx_strncmp(lhs.data, f->name, len) == 0)
            {
                break;
            }
        }

        if (f->name == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown name \"%V\" in condition \"%V\"",
                               &lhs, text);
            return NGX_CONF_ERROR;
        }

        cond->field = f->field;
        numeric = f->numeric;

        if (f->field == NGX_HTTP_LIFECYCLE_F_PRODUCT_VIEWS
            || f->field == NGX_HTTP_LIFECYCLE_F_CATEGORY_VIEWS
            || f->field == NGX_HTTP_LIFECYCLE_F_COUNTRY)
        {
            ngx_str_set(&name, "t:product");

            if (f->field == NGX_HTTP_LIFECYCLE_F_CATEGORY_VIEWS) {
                ngx_str_set(&name, "t:category");

            } else if (f->field == NGX_HTTP_LIFECYCLE_F_COUNTRY) {
                ngx_str_set(&name, "country");
            }

            if (ngx_http_lifecycle_want(cf, &name) != NGX_OK) {
                return NGX_CONF_ERROR;
            }
        }

        /* "category:shoes" is the profile field "c:shoes": ask for it */

        if (cond->key.len) {
            name.len = 2 + cond->key.len;
            name.data = ngx_pnalloc(cf->pool, name.len);
            if (name.data == NULL) {
                return NGX_CONF_ERROR;
            }

            name.data[0] = (f->field == NGX_HTTP_LIFECYCLE_F_CATEGORY)
                           ? 'c' : 'p';
            name.data[1] = ':';
            ngx_memcpy(name.data + 2, cond->key.data, cond->key.len);

            if (ngx_http_lifecycle_want(cf, &name) != NGX_OK) {
                return NGX_CONF_ERROR;
            }
        }
    }

    if (numeric) {
        if (cond->op == NGX_HTTP_LIFECYCLE_OP_MATCH) {
            goto bad_op;
        }

        n = ngx_atoi(cond->value.data, cond->value.len);

        if (n == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" in condition \"%V\" is not a number",
                               &cond->value, text);
            return NGX_CONF_ERROR;
        }

        cond->number = n;
        return NGX_CONF_OK;
    }

    if (cond->op != NGX_HTTP_LIFECYCLE_OP_EQ
        && cond->op != NGX_HTTP_LIFECYCLE_OP_NE
        && cond->op != NGX_HTTP_LIFECYCLE_OP_MATCH)
    {
        goto bad_op;
    }

    if (cond->op == NGX_HTTP_LIFECYCLE_OP_MATCH) {
        ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

        rc.pattern = cond->value;
        rc.pool = cf->pool;
        rc.err.len = NGX_MAX_CONF_ERRSTR;
        rc.err.data = errstr;

        if (ngx_http_lifecycle_regex_compile(cf, &rc) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V in condition \"%V\"",
                               &rc.err, text);
            return NGX_CONF_ERROR;
        }

        cond->regex = rc.regex;
        return NGX_CONF_OK;
    }

    if (cond->field == NGX_HTTP_LIFECYCLE_F_STAGE) {
        for (i = 0; ngx_http_lifecycle_stages[i].len; i++) {
            if (cond->value.len == ngx_http_lifecycle_stages[i].len
                && ngx_strncmp(cond->value.data,
                               ngx_http_lifecycle_stages[i].data,
                               cond->value.len)
                   == 0)
            {
                cond->number = i;
                return NGX_CONF_OK;
            }
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown stage \"%V\" in condition \"%V\": "
                           "expected new, engaged, cart, customer, loyal, "
                           "at_risk or lapsed", &cond->value, text);
        return NGX_CONF_ERROR;
    }

    if (cond->field == NGX_HTTP_LIFECYCLE_F_OPTIN
        && !(cond->value.len == 3
             && ngx_strncmp(cond->value.data, "yes", 3) == 0)
        && !(cond->value.len == 2
             && ngx_strncmp(cond->value.data, "no", 2) == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"optin\" takes \"yes\" or \"no\", not \"%V\"",
                           &cond->value);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

bad_op:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "operator \"%V\" does not apply to \"%V\" in "
                       "condition \"%V\"", &ngx_http_lifecycle_ops[cond->op],
                       &lhs, text);
    return NGX_CONF_ERROR;
}


char *
ngx_http_lifecycle_stages_thresholds(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_lifecycle_srv_conf_t  *lscf = conf;

    time_t      t;
    ngx_int_t   n;
    ngx_str_t  *value, s;
    ngx_uint_t  i;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "engaged=", 8) == 0) {
            n = ngx_atoi(value[i].data + 8, value[i].len - 8);
            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            lscf->engaged_views = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "loyal=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (n == NGX_ERROR || n < 2) {
                goto invalid;
            }

            lscf->loyal_purchases = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "at_risk=", 8) == 0
            || ngx_strncmp(value[i].data, "lapsed=", 7) == 0)
        {
            n = (value[i].data[0] == 'a') ? 8 : 7;
            s.data = value[i].data + n;
            s.len = value[i].len - n;

            t = ngx_parse_time(&s, 1);
            if (t == (time_t) NGX_ERROR || t == 0) {
                goto invalid;
            }

            if (n == 8) {
                lscf->at_risk = t;
            } else {
                lscf->lapsed = t;
            }

            continue;
        }

    invalid:

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * Buyers are customers, loyal past the loyal threshold, and at risk or
 * lapsed when their last visit before this one is that long ago; others
 * are new, engaged (a second visit or enough views) or have a cart.
 */

ngx_int_t
ngx_http_lifecycle_stage(ngx_http_request_t *r, ngx_http_lifecycle_ctx_t *ctx)
{
    uint64_t                        away;
    ngx_http_lifecycle_profile_t   *p;
    ngx_http_lifecycle_srv_conf_t  *lscf;

    p = ctx->profile;

    if (p == NULL) {
        return NGX_DECLINED;
    }

    lscf = ngx_http_get_module_srv_conf(r, ngx_http_lifecycle_module);

    away = ngx_http_lifecycle_days_away(ctx) * 86400;

    if (p->purchases) {
        if (away >= (uint64_t) lscf->lapsed) {
            return NGX_HTTP_LIFECYCLE_STAGE_LAPSED;
        }

        if (away >= (uint64_t) lscf->at_risk) {
            return NGX_HTTP_LIFECYCLE_STAGE_AT_RISK;
        }

        return (p->purchases >= lscf->loyal_purchases)
               ? NGX_HTTP_LIFECYCLE_STAGE_LOYAL
               : NGX_HTTP_LIFECYCLE_STAGE_CUSTOMER;
    }

    if (p->cart) {
        return NGX_HTTP_LIFECYCLE_STAGE_CART;
    }

    if (p->visits >= 2 || p->views >= lscf->engaged_views) {
        return NGX_HTTP_LIFECYCLE_STAGE_ENGAGED;
    }

    return NGX_HTTP_LIFECYCLE_STAGE_NEW;
}


/* whole days between the previous visit's last activity and now */

uint64_t
ngx_http_lifecycle_days_away(ngx_http_lifecycle_ctx_t *ctx)
{
    uint64_t     now;
    ngx_time_t  *tp;

    if (ctx->profile == NULL || ctx->profile->previous == 0) {
        return 0;
    }

    tp = ngx_timeofday();
    now = (uint64_t) tp->sec * 1000 + tp->msec;

    if (now <= ctx->profile->previous) {
        return 0;
    }

    return (now - ctx->profile->previous) / NGX_HTTP_LIFECYCLE_DAY_MS;
}


static ngx_uint_t
ngx_http_lifecycle_count_of(ngx_array_t *a, ngx_str_t *key)
{
    ngx_uint_t                   i;
    ngx_http_lifecycle_count_t  *c;

    c = a->elts;

    for (i = 0; i < a->nelts; i++) {
        if (c[i].key.len == key->len
            && ngx_strncmp(c[i].key.data, key->data, key->len) == 0)
        {
            return c[i].count;
        }
    }

    return 0;
}


static ngx_uint_t
ngx_http_lifecycle_cond_match(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx, ngx_http_lifecycle_cond_t *cond)
{
    ngx_str_t                      s;
    ngx_int_t                      stage, rc;
    ngx_uint_t                     n, match;
    ngx_http_variable_value_t     *vv;
    ngx_http_lifecycle_profile_t  *p;

    p = ctx->profile;

    switch (cond->field) {

    case NGX_HTTP_LIFECYCLE_F_VISITS:
        n = p->visits;
        break;

    case NGX_HTTP_LIFECYCLE_F_VIEWS:
        n = p->views;
        break;

    case NGX_HTTP_LIFECYCLE_F_PRODUCT_VIEWS:
        n = p->type_views[NGX_HTTP_LIFECYCLE_VIEW_PRODUCT];
        break;

    case NGX_HTTP_LIFECYCLE_F_CATEGORY_VIEWS:
        n = p->type_views[NGX_HTTP_LIFECYCLE_VIEW_CATEGORY];
        break;

    case NGX_HTTP_LIFECYCLE_F_CART:
        n = p->cart;
        break;

    case NGX_HTTP_LIFECYCLE_F_PURCHASES:
        n = p->purchases;
        break;

    case NGX_HTTP_LIFECYCLE_F_DAYS_SINCE_VISIT:
        n = (ngx_uint_t) ngx_http_lifecycle_days_away(ctx);
        break;

    case NGX_HTTP_LIFECYCLE_F_CATEGORY:
        n = ngx_http_lifecycle_count_of(&p->categories, &cond->key);
        break;

    case NGX_HTTP_LIFECYCLE_F_PRODUCT:
        n = ngx_http_lifecycle_count_of(&p->products, &cond->key);
        break;

    case NGX_HTTP_LIFECYCLE_F_STAGE:
        stage = ngx_http_lifecycle_stage(r, ctx);
        match = ((ngx_uint_t) stage == cond->number);
        return (cond->op == NGX_HTTP_LIFECYCLE_OP_NE) ? !match : match;

    case NGX_HTTP_LIFECYCLE_F_OPTIN:
        match = (p->optin.len && p->optin.data[0] != '0')
                == (cond->value.data[0] == 'y');
        return (cond->op == NGX_HTTP_LIFECYCLE_OP_NE) ? !match : match;

    default: /* country and $variables: strings */

        if (cond->field == NGX_HTTP_LIFECYCLE_F_COUNTRY) {
            s = p->country;

        } else {
            vv = ngx_http_get_indexed_variable(r, cond->variable);

            if (vv == NULL || vv->not_found) {
                s.len = 0;
                s.data = NULL;

            } else {
                s.len = vv->len;
                s.data = vv->data;
            }
        }

        if (cond->op == NGX_HTTP_LIFECYCLE_OP_MATCH) {
            rc = ngx_regex_exec(cond->regex, &s, NULL, 0);
            return rc >= 0;
        }

        /* country codes and header values compare caselessly */
        match = (s.len == cond->value.len
                 && ngx_strncasecmp(s.data, cond->value.data, s.len) == 0);

        return (cond->op == NGX_HTTP_LIFECYCLE_OP_NE) ? !match : match;
    }

    switch (cond->op) {
    case NGX_HTTP_LIFECYCLE_OP_EQ:
        return n == cond->number;
    case NGX_HTTP_LIFECYCLE_OP_NE:
        return n != cond->number;
    case NGX_HTTP_LIFECYCLE_OP_GE:
        return n >= cond->number;
    case NGX_HTTP_LIFECYCLE_OP_LE:
        return n <= cond->number;
    case NGX_HTTP_LIFECYCLE_OP_GT:
        return n > cond->number;
    default: /* NGX_HTTP_LIFECYCLE_OP_LT */
        return n < cond->number;
    }
}


/* does the visitor belong to the segment? false while no profile is known */

ngx_uint_t
ngx_http_lifecycle_segment_match(ngx_http_request_t *r,
    ngx_http_lifecycle_ctx_t *ctx, ngx_http_lifecycle_segment_t *seg)
{
    ngx_uint_t                  i;
    ngx_http_lifecycle_cond_t  *cond;

    if (ctx->profile == NULL) {
        return 0;
    }

    cond = seg->conds->elts;

    for (i = 0; i < seg->conds->nelts; i++) {
        if (ngx_http_lifecycle_cond_match(r, ctx, &cond[i]) == cond[i].negate)
        {
            return 0;
        }
    }

    return 1;
}


ngx_str_t  ngx_http_lifecycle_groups[] = {
    ngx_string("test"),
    ngx_string("control"),
    ngx_null_string
};


/* "10%", "2.5%": kept in hundredths of a percent */

char *
ngx_http_lifecycle_holdout(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_lifecycle_srv_conf_t  *lscf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (lscf->holdout != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len < 2 || value[1].data[value[1].len - 1] != '%') {
        goto invalid;
    }

    n = ngx_atofp(value[1].data, value[1].len - 1, 2);

    if (n == NGX_ERROR || n > 10000) {
        goto invalid;
    }

    lscf->holdout = n;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid holdout \"%V\": a percentage from 0%% to "
                       "100%%", &value[1]);
    return NGX_CONF_ERROR;
}


/*
 * The visitor id is random: eight of its hex digits (not the two that
 * choose the shard) give a uniform, stable draw. Raising the share keeps
 * every earlier control visitor in control.
 */

ngx_uint_t
ngx_http_lifecycle_group(ngx_http_request_t *r, ngx_http_lifecycle_ctx_t *ctx)
{
    uint32_t                        draw;
    ngx_uint_t                      i;
    ngx_http_lifecycle_srv_conf_t  *lscf;

    lscf = ngx_http_get_module_srv_conf(r, ngx_http_lifecycle_module);

    if (lscf->holdout == 0) {
        return NGX_HTTP_LIFECYCLE_GROUP_TEST;
    }

    draw = 0;

    for (i = 2; i < 10; i++) {
        draw = (draw << 4) | lc_hex_value(ctx->vid[i]);
    }

    return (draw % 10000 < lscf->holdout) ? NGX_HTTP_LIFECYCLE_GROUP_CONTROL
                                          : NGX_HTTP_LIFECYCLE_GROUP_TEST;
}
