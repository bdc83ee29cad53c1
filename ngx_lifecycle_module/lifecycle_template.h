
/*
 * Block and email templates: a Mustache subset, compiled once into a flat
 * list of operations, rendered many times without allocating.
 * Plain C99, no nginx types: the module and lifecycle-agent both compile
 * this file and lifecycle_template.c.
 *
 * Tags: {{name}} (HTML-escaped), {{{name}}} and {{& name}} (raw, but only
 * for values marked trusted: anything else is escaped all the same),
 * {{#name}}..{{/name}}, {{^name}}..{{/name}}, {{! comment }}, {{.}} (the
 * current item) and dotted names (product.title); blanks inside tags are
 * allowed. No partials, lambdas or delimiter changes. Names are letters,
 * digits, "_" and "-".
 *
 * A string renders as itself, a boolean as "true" or "false"; null,
 * lists and objects render nothing, and so does a missing name.
 *
 * A section runs once per item of a non-empty list, with the item as
 * the innermost context, and once for any other truthy value, with the
 * value as the context. Falsy: a missing name, null, false, an empty
 * list, an empty string and the number 0 made by lc_value_uint();
 * anything else is truthy, the string "0" and an empty object included.
 *
 * The first part of a dotted name is looked up from the innermost
 * context outward, the next parts only below what it found.
 *
 * A line holding only blanks and one section, inverted, closing or
 * comment tag is dropped whole, newline included, so that such tags on
 * their own lines leave no blank lines.
 */

#ifndef _LIFECYCLE_TEMPLATE_H_INCLUDED_
#define _LIFECYCLE_TEMPLATE_H_INCLUDED_


#include <stddef.h>


/* sections inside sections, the root not counted */
#define LC_TPL_MAX_DEPTH  16


/*
 * The caller's allocator: nginx pool in the module, an arena in the
 * agent. Nothing is freed one by one: all of a template or a value tree
 * goes when the caller drops its arena. Memory must be aligned for
 * pointers (ngx_palloc(), not ngx_pnalloc()).
 */
typedef struct {
    void                     *(*alloc)(void *ctx, size_t size);
    void                       *ctx;
} lc_alloc_t;


typedef void (*lc_tpl_write_pt)(void *ctx, const char *data, size_t len);


typedef struct lc_tpl_s          lc_tpl_t;
typedef struct lc_value_s        lc_value_t;
typedef struct lc_value_member_s lc_value_member_t;


typedef enum {
    LC_VALUE_NULL = 0,
    LC_VALUE_BOOL,
    LC_VALUE_STRING,
    LC_VALUE_LIST,
    LC_VALUE_OBJECT
} lc_value_type_e;


/*
 * A node of template data. Strings and keys are not copied: they must
 * live as long as the tree. A zeroed lc_value_t is null.
 */
struct lc_value_s {
    lc_value_type_e             type;
    unsigned                    boolean:1;
    unsigned                    trusted:1;  /* {{{ }}} may skip escaping */
    unsigned                    number:1;   /* from lc_value_uint() */
    size_t                      len;        /* bytes, items or members */
    size_t                      size;       /* room for items or members */
    union {
        const char             *str;
        const lc_value_t      **items;
        lc_value_member_t      *members;
    } u;
};


struct lc_value_member_s {
    const char                 *key;
    size_t                      keylen;
    const lc_value_t           *value;
};


/*
 * Compiles "len" bytes of "text" (no NUL needed; the text is copied).
 * On error returns NULL and writes "line N: what" into "err".
 */
lc_tpl_t *lc_tpl_compile(const char *text, size_t len, const lc_alloc_t *a,
    char *err, size_t errlen);

/*
 * Streams the output through "write" and returns its length. "root" may
 * be NULL: every name is then missing. Nothing is allocated, so the
 * module can take lc_tpl_render_size(), allocate once from its pool and
 * render into that buffer.
 */
size_t lc_tpl_render(const lc_tpl_t *t, const lc_value_t *root,
    lc_tpl_write_pt write, void *ctx);
size_t lc_tpl_render_size(const lc_tpl_t *t, const lc_value_t *root);

/*
 * Whether a tag of the template starts with "name" (its first dotted
 * part), at any depth: the caller then knows which data to build.
 */
int lc_tpl_uses(const lc_tpl_t *t, const char *name, size_t len);

/* what {{name}} does: & < > " ' ` = / become entities; returns the length */
size_t lc_tpl_escape_html(const char *s, size_t len, lc_tpl_write_pt write,
    void *ctx);

/*
 * Constructors return NULL when the allocator fails. Lists and objects
 * are made with room for "n" items or members, and filled in order by
 * lc_value_append() and lc_value_add(), which return 0, or -1 when the
 * container is NULL or full or the value is NULL (a failed constructor).
 * Members are searched in order, so the first of two equal keys wins.
 */
lc_value_t *lc_value_string(const lc_alloc_t *a, const char *s, size_t len,
    int trusted);
lc_value_t *lc_value_uint(const lc_alloc_t *a, unsigned long long n);
const lc_value_t *lc_value_bool(int b);
lc_value_t *lc_value_list(const lc_alloc_t *a, size_t n);
lc_value_t *lc_value_object(const lc_alloc_t *a, size_t n);
int lc_value_append(lc_value_t *list, const lc_value_t *item);
int lc_value_add(lc_value_t *obj, const char *key, size_t keylen,
    const lc_value_t *value);

/* a member of an object; NULL if missing or if "obj" is not an object */
const lc_value_t *lc_value_get(const lc_value_t *obj, const char *key,
    size_t keylen);

#endif /* _LIFECYCLE_TEMPLATE_H_INCLUDED_ */
