
/*
 * Templates: compile a Mustache subset into a flat array of operations,
 * render it with a loop and a fixed context stack. See
 * lifecycle_template.h for the language.
 */


#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lifecycle_template.h"


typedef enum {
    LC_TPL_TEXT = 0,
    LC_TPL_VAR,
    LC_TPL_RAW,
    LC_TPL_SECTION,
    LC_TPL_INVERTED,
    LC_TPL_END,
    LC_TPL_COMMENT      /* parsed, never emitted */
} lc_tpl_op_type_e;


/*
 * SECTION and INVERTED jump to their END when they are skipped; END
 * jumps back to its SECTION for the next item of a list.
 */
typedef struct {
    lc_tpl_op_type_e            type;
    size_t                      jump;
    const char                 *data;   /* text, or the name of a tag */
    size_t                      len;
} lc_tpl_op_t;


struct lc_tpl_s {
    lc_tpl_op_t                *ops;
    size_t                      nops;
};


/* one per open section: what names are looked up in first */
typedef struct {
    const lc_value_t           *value;
    const lc_value_t           *list;   /* non-NULL while iterating */
    size_t                      index;
} lc_tpl_frame_t;


typedef struct {
    const char                 *data;
    size_t                      len;
} lc_tpl_str_t;


#define lc_tpl_string(s)  { s, sizeof(s) - 1 }

#define lc_tpl_space(c)                                                      \
    ((c) == ' ' || (c) == '\t' || (c) == '\r' || (c) == '\n')

#define lc_tpl_name_char(c)                                                  \
    (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z')                \
     || ((c) >= '0' && (c) <= '9') || (c) == '_' || (c) == '-')

/* room for a name quoted in an error message */
#define LC_TPL_ERR_NAME  48


static const char *lc_tpl_find(const char *p, const char *end,
    const char *s, size_t n);
static size_t lc_tpl_count_tags(const char *p, const char *end);
static const char *lc_tpl_standalone(const char *src, const char *start,
    const char *tag, const char *after, const char *end,
    const char **line_end);
static int lc_tpl_valid_name(const char *name, size_t len);
static const char *lc_tpl_quote(char *buf, const char *s, size_t len);
static void lc_tpl_error(char *err, size_t errlen, const char *fmt, ...);
static const lc_value_t *lc_tpl_lookup(const lc_tpl_frame_t *stack,
    size_t top, const char *name, size_t len);
static int lc_tpl_truthy(const lc_value_t *v);
static size_t lc_tpl_render_value(const lc_value_t *v, int raw,
    lc_tpl_write_pt write, void *ctx);
static void lc_tpl_count(void *ctx, const char *data, size_t len);
static lc_value_t *lc_value_alloc(const lc_alloc_t *a, lc_value_type_e type,
    size_t n, size_t size);


/* index into lc_tpl_entities[] of every byte HTML escaping replaces */
static const unsigned char  lc_tpl_escape_class[256] = {
    ['&'] = 1, ['<'] = 2, ['>'] = 3, ['"'] = 4,
    ['\''] = 5, ['`'] = 6, ['='] = 7, ['/'] = 8
};


/*
 * Quotes and "<>&" for elements and quoted attributes; "'", "`", "="
 * and "/" too, so that a value placed in an unquoted attribute can
 * neither start a new attribute nor close the tag.
 */
static const lc_tpl_str_t  lc_tpl_entities[] = {
    lc_tpl_string(""),              /* class 0: bytes left as they are */
    lc_tpl_string("&amp;"),
    lc_tpl_string("&lt;"),
    lc_tpl_string("&gt;"),
    lc_tpl_string("&quot;"),
    lc_tpl_string("&#39;"),
    lc_tpl_string("&#x60;"),
    lc_tpl_string("&#x3D;"),
    lc_tpl_string("&#x2F;")
};


static const lc_value_t  lc_value_true = {
    LC_VALUE_BOOL, 1, 0, 0, 0, 0, { NULL }
};

static const lc_value_t  lc_value_false = {
    LC_VALUE_BOOL, 0, 0, 0, 0, 0, { NULL }
};


lc_tpl_t *
lc_tpl_compile(const char *text, size_t len, const lc_alloc_t *a, char *err,
    size_t errlen)
{
    char              *copy, qname[LC_TPL_ERR_NAME],
                       qopen[LC_TPL_ERR_NAME];
    size_t             n, line, depth, open[LC_TPL_MAX_DEPTH],
                       open_line[LC_TPL_MAX_DEPTH];
    lc_tpl_t          *t;
    const char        *src, *end, *p, *start, *tag, *close, *after, *name,
                      *last, *lp, *text_end;
    lc_tpl_op_t       *op, *begin;
    lc_tpl_op_type_e   type;

    if (len == 0) {
        /* no arithmetic on a NULL text */
        text = "";
    }

    end = text + len;

    /* every op but text comes from a tag, and text lies between tags */
    n = lc_tpl_count_tags(text, end);

    if (n > (SIZE_MAX / sizeof(lc_tpl_op_t) - 1) / 2) {
        lc_tpl_error(err, errlen, "template too large");
        return NULL;
    }

    t = a->alloc(a->ctx, sizeof(lc_tpl_t));
    if (t == NULL) {
        goto nomem;
    }

    t->ops = a->alloc(a->ctx, (2 * n + 1) * sizeof(lc_tpl_op_t));
    if (t->ops == NULL) {
        goto nomem;
    }

    t->nops = 0;

    /* ops point into a private copy: the caller's text may go away */
    src = text;

    if (len) {
        copy = a->alloc(a->ctx, len);
        if (copy == NULL) {
            goto nomem;
        }

        memcpy(copy, text, len);
        src = copy;
    }

    end = src + len;
    start = src;
    lp = src;
    line = 1;
    depth = 0;

    for ( ;; ) {
        tag = lc_tpl_find(start, end, "{{", 2);
        if (tag == NULL) {
            break;
        }

        for ( /* void */ ; lp < tag; lp++) {
            if (*lp == '\n') {
                line++;
            }
        }

        p = tag + 2;

        if (p < end && *p == '{') {
            p++;
            close = lc_tpl_find(p, end, "}}}", 3);
            after = close ? close + 3 : NULL;
            type = LC_TPL_RAW;

        } else {
            close = lc_tpl_find(p, end, "}}", 2);
            after = close ? close + 2 : NULL;
            type = LC_TPL_VAR;
        }

        if (close == NULL) {
            lc_tpl_error(err, errlen, "line %zu: unterminated tag", line);
            return NULL;
        }

        while (p < close && lc_tpl_space(*p)) {
            p++;
        }

        last = close;

        while (last > p && lc_tpl_space(last[-1])) {
            last--;
        }

        if (p == last) {
            lc_tpl_error(err, errlen, "line %zu: empty tag", line);
            return NULL;
        }

        if (type == LC_TPL_VAR) {
            switch (*p) {

            case '!':
                type = LC_TPL_COMMENT;
                break;

            case '#':
                type = LC_TPL_SECTION;
                break;

            case '^':
                type = LC_TPL_INVERTED;
                break;

            case '/':
                type = LC_TPL_END;
                break;

            case '&':
                type = LC_TPL_RAW;
                break;

            case '=':
                lc_tpl_error(err, errlen, "line %zu: delimiter changes "
                             "(\"{{=\") are not supported", line);
                return NULL;

            case '>':
                lc_tpl_error(err, errlen, "line %zu: partials (\"{{>\") "
                             "are not supported", line);
                return NULL;
            }

            if (type != LC_TPL_VAR) {
                for (p++; p < last && lc_tpl_space(*p); p++) {
                    /* void */
                }

                if (p == last && type != LC_TPL_COMMENT) {
                    lc_tpl_error(err, errlen, "line %zu: no name after "
                                 "\"%c\"", line, p[-1]);
                    return NULL;
                }
            }
        }

        name = p;
        n = last - p;

        if (type != LC_TPL_COMMENT && !lc_tpl_valid_name(name, n)) {
            lc_tpl_error(err, errlen, "line %zu: invalid name \"%s\": "
                         "letters, digits, \"_\" and \"-\", parts "
                         "separated by dots", line,
                         lc_tpl_quote(qname, name, n));
            return NULL;
        }

        /*
         * A line holding nothing but one of these tags is dropped whole,
         * so that sections and comments on their own lines leave no
         * blank lines in the output.
         */
        text_end = tag;

        if (type == LC_TPL_SECTION || type == LC_TPL_INVERTED
            || type == LC_TPL_END || type == LC_TPL_COMMENT)
        {
            p = lc_tpl_standalone(src, start, tag, after, end, &after);
            if (p) {
                text_end = p;
            }
        }

        if (text_end > start) {
            op = &t->ops[t->nops++];
            op->type = LC_TPL_TEXT;
            op->data = start;
            op->len = text_end - start;
        }

        start = after;

        if (type == LC_TPL_COMMENT) {
            continue;
        }

        op = &t->ops[t->nops];
        op->type = type;
        op->data = name;
        op->len = n;
        op->jump = 0;

        if (type == LC_TPL_END) {
            if (depth == 0) {
                lc_tpl_error(err, errlen, "line %zu: \"{{/%s}}\" closes no "
                             "section", line, lc_tpl_quote(qname, name, n));
                return NULL;
            }

            begin = &t->ops[open[depth - 1]];

            if (begin->len != n || memcmp(begin->data, name, n) != 0) {
                lc_tpl_error(err, errlen, "line %zu: \"{{/%s}}\" closes "
                             "\"%s\"", line, lc_tpl_quote(qname, name, n),
                             lc_tpl_quote(qopen, begin->data, begin->len));
                return NULL;
            }

            depth--;
            begin->jump = t->nops;
            op->jump = open[depth];
        }

        if (type == LC_TPL_SECTION || type == LC_TPL_INVERTED) {
            if (depth == LC_TPL_MAX_DEPTH) {
                lc_tpl_error(err, errlen, "line %zu: sections nested deeper "
                             "than %d", line, LC_TPL_MAX_DEPTH);
                return NULL;
            }

            open[depth] = t->nops;
            open_line[depth] = line;
            depth++;
        }

        t->nops++;
    }

    if (depth) {
        begin = &t->ops[open[depth - 1]];

        lc_tpl_error(err, errlen, "line %zu: unclosed section \"%s\"",
                     open_line[depth - 1],
                     lc_tpl_quote(qname, begin->data, begin->len));
        return NULL;
    }

    if (end > start) {
        op = &t->ops[t->nops++];
        op->type = LC_TPL_TEXT;
        op->data = start;
        op->len = end - start;
    }

    return t;

nomem:

    lc_tpl_error(err, errlen, "out of memory");
    return NULL;
}


static const char *
lc_tpl_find(const char *p, const char *end, const char *s, size_t n)
{
    while ((size_t) (end - p) >= n) {
        p = memchr(p, s[0], end - p - n + 1);
        if (p == NULL) {
            return NULL;
        }

        if (memcmp(p, s, n) == 0) {
            return p;
        }

        p++;
    }

    return NULL;
}


/*
 * Non-overlapping "{{" from the left: at least as many as the tags the
 * parser will find, whatever the tags turn out to be.
 */
static size_t
lc_tpl_count_tags(const char *p, const char *end)
{
    size_t  n;

    n = 0;

    for ( ;; ) {
        p = lc_tpl_find(p, end, "{{", 2);
        if (p == NULL) {
            return n;
        }

        n++;
        p += 2;
    }
}


/*
 * If the tag from "tag" to "after" is alone on its line with blanks
 * around it, returns where the line starts and sets *line_end past its
 * newline; otherwise returns NULL.
 */
static const char *
lc_tpl_standalone(const char *src, const char *start, const char *tag,
    const char *after, const char *end, const char **line_end)
{
    const char  *p;

    for (p = tag; p > start && (p[-1] == ' ' || p[-1] == '\t'); p--) {
        /* void */
    }

    if (p != src && p[-1] != '\n') {
        return NULL;
    }

    while (after < end && (*after == ' ' || *after == '\t')) {
        after++;
    }

    if (after < end) {
        if (*after == '\r' && end - after > 1 && after[1] == '\n') {
            after++;
        }

        if (*after != '\n') {
            return NULL;
        }

        after++;
    }

    *line_end = after;

    return p;
}


int
lc_tpl_uses(const lc_tpl_t *t, const char *name, size_t len)
{
    size_t              i, part;
    const char         *dot;
    const lc_tpl_op_t  *op;

    for (i = 0; i < t->nops; i++) {
        op = &t->ops[i];

        if (op->type != LC_TPL_VAR && op->type != LC_TPL_RAW
            && op->type != LC_TPL_SECTION && op->type != LC_TPL_INVERTED)
        {
            continue;
        }

        dot = memchr(op->data, '.', op->len);
        part = dot ? (size_t) (dot - op->data) : op->len;

        if (part == len && memcmp(op->data, name, len) == 0) {
            return 1;
        }
    }

    return 0;
}


/* "." alone, or parts of name characters joined by single dots */
static int
lc_tpl_valid_name(const char *name, size_t len)
{
    size_t  i, part;

    if (len == 1 && name[0] == '.') {
        return 1;
    }

    part = 0;

    for (i = 0; i < len; i++) {
        if (name[i] == '.') {
            if (part == 0) {
                return 0;
            }

            part = 0;
            continue;
        }

        if (!lc_tpl_name_char(name[i])) {
            return 0;
        }

        part++;
    }

    return part != 0;
}


/*
 * A name for an error message, cut short and with control bytes
 * replaced: the message ends up in logs, on one line.
 */
static const char *
lc_tpl_quote(char *buf, const char *s, size_t len)
{
    size_t  i, n;

    n = (len < LC_TPL_ERR_NAME - 4) ? len : LC_TPL_ERR_NAME - 4;

    for (i = 0; i < n; i++) {
        buf[i] = ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] >= 0x7f
                  || s[i] == '"') ? '?' : s[i];
    }

    if (n < len) {
        buf[i++] = '.';
        buf[i++] = '.';
        buf[i++] = '.';
    }

    buf[i] = '\0';

    return buf;
}


static void
lc_tpl_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  args;

    if (err == NULL || errlen == 0) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(err, errlen, fmt, args);
    va_end(args);
}


size_t
lc_tpl_render(const lc_tpl_t *t, const lc_value_t *root,
    lc_tpl_write_pt write, void *ctx)
{
    size_t               pc, top, n;
    lc_tpl_frame_t      *f, stack[LC_TPL_MAX_DEPTH + 1];
    const lc_value_t    *v;
    const lc_tpl_op_t   *op;

    n = 0;
    top = 0;
    stack[0].value = root;
    stack[0].list = NULL;

    for (pc = 0; pc < t->nops; pc++) {
        op = &t->ops[pc];

        switch (op->type) {

        case LC_TPL_TEXT:
            write(ctx, op->data, op->len);
            n += op->len;
            break;

        case LC_TPL_VAR:
        case LC_TPL_RAW:
            v = lc_tpl_lookup(stack, top, op->data, op->len);
            n += lc_tpl_render_value(v, op->type == LC_TPL_RAW, write, ctx);
            break;

        case LC_TPL_SECTION:
            v = lc_tpl_lookup(stack, top, op->data, op->len);

            if (!lc_tpl_truthy(v)) {
                pc = op->jump;
                break;
            }

            f = &stack[++top];

            if (v->type == LC_VALUE_LIST) {
                f->value = v->u.items[0];
                f->list = v;
                f->index = 0;

            } else {
                f->value = v;
                f->list = NULL;
            }

            break;

        case LC_TPL_INVERTED:
            v = lc_tpl_lookup(stack, top, op->data, op->len);

            if (lc_tpl_truthy(v)) {
                pc = op->jump;
            }

            break;

        default: /* LC_TPL_END */

            /* an inverted section pushed nothing */
            if (t->ops[op->jump].type == LC_TPL_INVERTED) {
                break;
            }

            f = &stack[top];

            if (f->list && ++f->index < f->list->len) {
                f->value = f->list->u.items[f->index];
                pc = op->jump;
                break;
            }

            top--;
            break;
        }
    }

    return n;
}


size_t
lc_tpl_render_size(const lc_tpl_t *t, const lc_value_t *root)
{
    return lc_tpl_render(t, root, lc_tpl_count, NULL);
}


static void
lc_tpl_count(void *ctx, const char *data, size_t len)
{
    /* lc_tpl_render() adds up the lengths itself */
    (void) ctx;
    (void) data;
    (void) len;
}


/*
 * Mustache lookup: the first part of a dotted name is searched from the
 * innermost section outward, the next parts only below what it found.
 */
static const lc_value_t *
lc_tpl_lookup(const lc_tpl_frame_t *stack, size_t top, const char *name,
    size_t len)
{
    size_t             i, part;
    const char        *dot, *end;
    const lc_value_t  *v;

    if (len == 1 && name[0] == '.') {
        return stack[top].value;
    }

    end = name + len;
    dot = memchr(name, '.', len);
    part = (dot ? dot : end) - name;
    v = NULL;

    for (i = top + 1; i-- > 0; /* void */) {
        v = lc_value_get(stack[i].value, name, part);
        if (v) {
            break;
        }
    }

    while (v && dot) {
        name = dot + 1;
        dot = memchr(name, '.', end - name);
        part = (dot ? dot : end) - name;
        v = lc_value_get(v, name, part);
    }

    return v;
}


static int
lc_tpl_truthy(const lc_value_t *v)
{
    if (v == NULL) {
        return 0;
    }

    switch (v->type) {

    case LC_VALUE_BOOL:
        return v->boolean;

    case LC_VALUE_STRING:
        /* numbers are strings, but 0 is falsy as in Mustache's JSON */
        return v->len != 0
               && !(v->number && v->len == 1 && v->u.str[0] == '0');

    case LC_VALUE_LIST:
        return v->len != 0;

    case LC_VALUE_OBJECT:
        return 1;

    default: /* LC_VALUE_NULL */
        return 0;
    }
}


static size_t
lc_tpl_render_value(const lc_value_t *v, int raw, lc_tpl_write_pt write,
    void *ctx)
{
    if (v == NULL) {
        return 0;
    }

    switch (v->type) {

    case LC_VALUE_STRING:
        if (raw && v->trusted) {
            write(ctx, v->u.str, v->len);
            return v->len;
        }

        return lc_tpl_escape_html(v->u.str, v->len, write, ctx);

    case LC_VALUE_BOOL:
        if (v->boolean) {
            write(ctx, "true", 4);
            return 4;
        }

        write(ctx, "false", 5);
        return 5;

    default:
        /* lists, objects and null have no text */
        return 0;
    }
}


size_t
lc_tpl_escape_html(const char *s, size_t len, lc_tpl_write_pt write,
    void *ctx)
{
    size_t               n;
    const char          *p, *run, *end;
    const lc_tpl_str_t  *e;

    n = 0;
    run = s;
    end = s + len;

    for (p = s; p < end; p++) {
        if (lc_tpl_escape_class[(unsigned char) *p] == 0) {
            continue;
        }

        if (p > run) {
            write(ctx, run, p - run);
            n += p - run;
        }

        e = &lc_tpl_entities[lc_tpl_escape_class[(unsigned char) *p]];
        write(ctx, e->data, e->len);
        n += e->len;
        run = p + 1;
    }

    if (end > run) {
        write(ctx, run, end - run);
        n += end - run;
    }

    return n;
}


/* a node and, in the same allocation, "size" bytes for what it holds */
static lc_value_t *
lc_value_alloc(const lc_alloc_t *a, lc_value_type_e type, size_t n,
    size_t size)
{
    lc_value_t  *v;

    if (size > SIZE_MAX - sizeof(lc_value_t)) {
        return NULL;
    }

    v = a->alloc(a->ctx, sizeof(lc_value_t) + size);
    if (v == NULL) {
        return NULL;
    }

    memset(v, 0, sizeof(lc_value_t));
    v->type = type;
    v->size = n;

    return v;
}


lc_value_t *
lc_value_string(const lc_alloc_t *a, const char *s, size_t len, int trusted)
{
    lc_value_t  *v;

    v = lc_value_alloc(a, LC_VALUE_STRING, 0, 0);
    if (v == NULL) {
        return NULL;
    }

    v->trusted = trusted ? 1 : 0;
    v->len = len;
    v->u.str = s;

    return v;
}


lc_value_t *
lc_value_uint(const lc_alloc_t *a, unsigned long long n)
{
    char        *p, *last;
    lc_value_t  *v;

    /* 20 digits: 2^64 - 1 */
    v = lc_value_alloc(a, LC_VALUE_STRING, 0, 20);
    if (v == NULL) {
        return NULL;
    }

    last = (char *) (v + 1) + 20;
    p = last;

    do {
        *--p = (char) ('0' + n % 10);
        n /= 10;
    } while (n);

    /* digits never need escaping */
    v->trusted = 1;
    v->number = 1;
    v->len = last - p;
    v->u.str = p;

    return v;
}


const lc_value_t *
lc_value_bool(int b)
{
    return b ? &lc_value_true : &lc_value_false;
}


lc_value_t *
lc_value_list(const lc_alloc_t *a, size_t n)
{
    lc_value_t  *v;

    if (n > SIZE_MAX / sizeof(lc_value_t *)) {
        return NULL;
    }

    v = lc_value_alloc(a, LC_VALUE_LIST, n, n * sizeof(lc_value_t *));
    if (v == NULL) {
        return NULL;
    }

    v->u.items = (const lc_value_t **) (v + 1);

    return v;
}


lc_value_t *
lc_value_object(const lc_alloc_t *a, size_t n)
{
    lc_value_t  *v;

    if (n > SIZE_MAX / sizeof(lc_value_member_t)) {
        return NULL;
    }

    v = lc_value_alloc(a, LC_VALUE_OBJECT, n, n * sizeof(lc_value_member_t));
    if (v == NULL) {
        return NULL;
    }

    v->u.members = (lc_value_member_t *) (v + 1);

    return v;
}


/*
 * A NULL list or item is an error, so that a failed allocation in
 * lc_value_append(list, lc_value_string(...)) is not lost.
 */
int
lc_value_append(lc_value_t *list, const lc_value_t *item)
{
    if (list == NULL || item == NULL || list->type != LC_VALUE_LIST
        || list->len == list->size)
    {
        return -1;
    }

    list->u.items[list->len++] = item;

    return 0;
}


int
lc_value_add(lc_value_t *obj, const char *key, size_t keylen,
    const lc_value_t *value)
{
    lc_value_member_t  *m;

    if (obj == NULL || value == NULL || obj->type != LC_VALUE_OBJECT
        || obj->len == obj->size)
    {
        return -1;
    }

    m = &obj->u.members[obj->len++];
    m->key = key;
    m->keylen = keylen;
    m->value = value;

    return 0;
}


/* a linear scan: objects of template data have a dozen members at most */
const lc_value_t *
lc_value_get(const lc_value_t *obj, const char *key, size_t keylen)
{
    size_t                    i;
    const lc_value_member_t  *m;

    if (obj == NULL || obj->type != LC_VALUE_OBJECT) {
        return NULL;
    }

    for (i = 0; i < obj->len; i++) {
        m = &obj->u.members[i];

        if (m->keylen == keylen && memcmp(m->key, key, keylen) == 0) {
            return m->value;
        }
    }

    return NULL;
}
