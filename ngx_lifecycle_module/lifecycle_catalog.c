
/*
 * The product catalog: split a Merchant Center TSV feed into products,
 * index their ids. See lifecycle_catalog.h for the format.
 *
 * Lookups run on every product view, with ids from requests: an open
 * addressing table (linear probing, at most half full) answers a hit in
 * about 1.5 probes and a miss in about 2.5, each probe comparing a
 * stored 32-bit hash before any bytes, where a binary search over
 * 100,000 ids would compare strings 17 times.
 */


#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lifecycle_catalog.h"


/* a column with a field of its own in lc_product_t */
typedef struct {
    lc_str_t                    name;
    size_t                      offset;
} lc_catalog_known_t;


/* index + 1 of a product, 0 when free */
typedef struct {
    uint32_t                    hash;
    uint32_t                    index;
} lc_catalog_slot_t;


struct lc_catalog_s {
    lc_product_t               *products;
    size_t                      nproducts;
    lc_str_t                   *columns;
    size_t                      ncolumns;
    lc_catalog_slot_t          *slots;
    size_t                      mask;
};


#define lc_catalog_string(s)  { s, sizeof(s) - 1 }

#define lc_catalog_slug_char(c)                                              \
    (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z')                \
     || ((c) >= '0' && (c) <= '9') || (unsigned char) (c) >= 0x80)

#define lc_catalog_digit(c)  ((c) >= '0' && (c) <= '9')

#define LC_CATALOG_ID      0
#define LC_CATALOG_NKNOWN                                                    \
    (sizeof(lc_catalog_known) / sizeof(lc_catalog_known[0]))

/* room for an id quoted in an error message */
#define LC_CATALOG_ERR_ID  48


static void lc_catalog_split(const char *p, const char *eol,
    lc_str_t *fields);
static size_t lc_catalog_count(const char *p, const char *end, char ch);
static int lc_catalog_blank(const char *p, const char *end);
static int lc_catalog_header(lc_catalog_t *c, const char *p, const char *eol,
    const lc_alloc_t *a, size_t line, int *known, char *err, size_t errlen);
static int lc_catalog_check_id(const lc_str_t *id, size_t line, char *err,
    size_t errlen);
static int lc_catalog_insert(lc_catalog_t *c, size_t index, char *err,
    size_t errlen);
static int lc_catalog_slug(const lc_alloc_t *a, lc_product_t *pr);
static int lc_catalog_price(const lc_alloc_t *a, lc_product_t *pr);
static uint32_t lc_catalog_hash(const char *s, size_t len);
static const char *lc_catalog_quote(char *buf, const char *s, size_t len);
static void lc_catalog_error(char *err, size_t errlen, const char *fmt, ...);


/* "id" first: LC_CATALOG_ID */
static const lc_catalog_known_t  lc_catalog_known[] = {
    { lc_catalog_string("id"), offsetof(lc_product_t, id) },
    { lc_catalog_string("title"), offsetof(lc_product_t, title) },
    { lc_catalog_string("link"), offsetof(lc_product_t, link) },
    { lc_catalog_string("image_link"), offsetof(lc_product_t, image_link) },
    { lc_catalog_string("price"), offsetof(lc_product_t, price) },
    { lc_catalog_string("product_type"),
      offsetof(lc_product_t, product_type) }
};

static const lc_str_t  lc_catalog_empty = lc_catalog_string("");


lc_catalog_t *
lc_catalog_parse(const char *text, size_t len, const lc_alloc_t *a,
    char *err, size_t errlen)
{
    int            known[LC_CATALOG_NKNOWN];
    char          *copy;
    size_t         line, rows, size, n, i, k;
    lc_str_t      *v;
    const char    *p, *end, *eol, *next;
    lc_catalog_t  *c;
    lc_product_t  *pr;

    if (len == 0) {
        /* no arithmetic on a NULL text */
        text = "";
    }

    c = a->alloc(a->ctx, sizeof(lc_catalog_t));
    if (c == NULL) {
        goto nomem;
    }

    memset(c, 0, sizeof(lc_catalog_t));

    /* products point into a private copy: the caller's text may go away */
    copy = a->alloc(a->ctx, len ? len : 1);
    if (copy == NULL) {
        goto nomem;
    }

    memcpy(copy, text, len);

    p = copy;
    end = copy + len;

    if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) {
        p += 3;
    }

    line = 0;
    v = NULL;   /* values of the next product, once the header is read */

    for ( /* void */ ; p < end; p = next) {
        eol = memchr(p, '\n', end - p);
        next = eol ? eol + 1 : end;
        n = (eol ? eol : end) - p;
        line++;

        if (n && p[n - 1] == '\r') {
            n--;
        }

        eol = p + n;

        /* a value cannot hold CR: old Mac line ends or a broken export */
        if (memchr(p, '\r', n)) {
            lc_catalog_error(err, errlen, "line %zu: carriage return inside "
                             "the line", line);
            return NULL;
        }

        if (lc_catalog_blank(p, eol)) {
            continue;
        }

        if (c->columns == NULL) {
            if (lc_catalog_header(c, p, eol, a, line, known, err, errlen)
                != 0)
            {
                return NULL;
            }

            /* at most one product per line left: arrays are sized once */
            rows = lc_catalog_count(next, end, '\n') + (next < end);

            if (rows >= UINT32_MAX / 2
                || rows > SIZE_MAX / (4 * sizeof(lc_catalog_slot_t))
                || rows > SIZE_MAX / sizeof(lc_product_t)
                || rows > SIZE_MAX / sizeof(lc_str_t) / c->ncolumns)
            {
                lc_catalog_error(err, errlen, "catalog too large");
                return NULL;
            }

            c->products = a->alloc(a->ctx, (rows ? rows : 1)
                                            * sizeof(lc_product_t));
            v = a->alloc(a->ctx, (rows ? rows : 1) * c->ncolumns
                                 * sizeof(lc_str_t));

            for (size = 4; size < 2 * rows; size *= 2) {
                /* void */
            }

            c->slots = a->alloc(a->ctx, size * sizeof(lc_catalog_slot_t));

            if (c->products == NULL || v == NULL || c->slots == NULL) {
                goto nomem;
            }

            memset(c->slots, 0, size * sizeof(lc_catalog_slot_t));
            c->mask = size - 1;

            continue;
        }

        i = lc_catalog_count(p, eol, '\t') + 1;

        if (i != c->ncolumns) {
            lc_catalog_error(err, errlen, "line %zu: %zu field%s, the header "
                             "has %zu", line, i, (i == 1) ? "" : "s",
                             c->ncolumns);
            return NULL;
        }

        pr = &c->products[c->nproducts];
        pr->values = v;
        pr->line = line;

        lc_catalog_split(p, eol, v);
        v += c->ncolumns;

        for (k = 0; k < LC_CATALOG_NKNOWN; k++) {
            *(lc_str_t *) ((char *) pr + lc_catalog_known[k].offset) =
                (known[k] >= 0) ? pr->values[known[k]] : lc_catalog_empty;
        }

        if (lc_catalog_check_id(&pr->id, line, err, errlen) != 0
            || lc_catalog_insert(c, c->nproducts, err, errlen) != 0)
        {
            return NULL;
        }

        if (lc_catalog_slug(a, pr) != 0 || lc_catalog_price(a, pr) != 0) {
            goto nomem;
        }

        c->nproducts++;
    }

    if (c->columns == NULL) {
        lc_catalog_error(err, errlen, "line %zu: no header: the first line "
                         "names the columns (id, title, ...)",
                         line ? line : 1);
        return NULL;
    }

    return c;

nomem:

    lc_catalog_error(err, errlen, "out of memory");
    return NULL;
}


const lc_product_t *
lc_catalog_find(const lc_catalog_t *c, const char *id, size_t len)
{
    size_t                    i;
    uint32_t                  hash;
    const lc_product_t       *pr;
    const lc_catalog_slot_t  *s;

    if (c == NULL || len == 0 || len > LC_CATALOG_MAX_ID) {
        return NULL;
    }

    hash = lc_catalog_hash(id, len);

    /* never full: a free slot ends every search */
    for (i = hash & c->mask; /* void */ ; i = (i + 1) & c->mask) {
        s = &c->slots[i];

        if (s->index == 0) {
            return NULL;
        }

        if (s->hash != hash) {
            continue;
        }

        pr = &c->products[s->index - 1];

        if (pr->id.len == len && memcmp(pr->id.data, id, len) == 0) {
            return pr;
        }
    }
}


size_t
lc_catalog_size(const lc_catalog_t *c)
{
    return c ? c->nproducts : 0;
}


size_t
lc_catalog_columns(const lc_catalog_t *c, const lc_str_t **names)
{
    if (names) {
        *names = c ? c->columns : NULL;
    }

    return c ? c->ncolumns : 0;
}


/* fields between tabs, less surrounding spaces */
static void
lc_catalog_split(const char *p, const char *eol, lc_str_t *fields)
{
    const char  *tab, *last;

    for ( ;; ) {
        tab = memchr(p, '\t', eol - p);
        last = tab ? tab : eol;

        while (p < last && *p == ' ') {
            p++;
        }

        while (last > p && last[-1] == ' ') {
            last--;
        }

        fields->data = p;
        fields->len = last - p;
        fields++;

        if (tab == NULL) {
            return;
        }

        p = tab + 1;
    }
}


static size_t
lc_catalog_count(const char *p, const char *end, char ch)
{
    size_t  n;

    for (n = 0; (p = memchr(p, ch, end - p)) != NULL; n++) {
        p++;
    }

    return n;
}


/* spreadsheets export their empty rows as tabs */
static int
lc_catalog_blank(const char *p, const char *end)
{
    for ( /* void */ ; p < end; p++) {
        if (*p != ' ' && *p != '\t') {
            return 0;
        }
    }

    return 1;
}


static int
lc_catalog_header(lc_catalog_t *c, const char *p, const char *eol,
    const lc_alloc_t *a, size_t line, int *known, char *err, size_t errlen)
{
    char       ch;
    size_t     i, k, j;
    lc_str_t  *col;

    c->ncolumns = lc_catalog_count(p, eol, '\t') + 1;

    if (c->ncolumns > INT_MAX
        || c->ncolumns > SIZE_MAX / sizeof(lc_str_t))
    {
        lc_catalog_error(err, errlen, "catalog too large");
        return -1;
    }

    c->columns = a->alloc(a->ctx, c->ncolumns * sizeof(lc_str_t));
    if (c->columns == NULL) {
        lc_catalog_error(err, errlen, "out of memory");
        return -1;
    }

    lc_catalog_split(p, eol, c->columns);

    for (k = 0; k < LC_CATALOG_NKNOWN; k++) {
        known[k] = -1;
    }

    for (i = 0; i < c->ncolumns; i++) {
        col = &c->columns[i];

        for (k = 0; k < LC_CATALOG_NKNOWN; k++) {
            if (col->len != lc_catalog_known[k].name.len) {
                continue;
            }

            for (j = 0; j < col->len; j++) {
                ch = col->data[j];
                ch = (ch >= 'A' && ch <= 'Z') ? (char) (ch | 0x20) : ch;

                if (ch != lc_catalog_known[k].name.data[j]) {
                    break;
                }
            }

            if (j == col->len) {
                break;
            }
        }

        if (k == LC_CATALOG_NKNOWN) {
            continue;
        }

        if (known[k] >= 0) {
            if (k == LC_CATALOG_ID) {
                lc_catalog_error(err, errlen, "line %zu: two \"id\" columns",
                                 line);
                return -1;
            }

            continue;
        }

        known[k] = (int) i;
    }

    if (known[LC_CATALOG_ID] < 0) {
        lc_catalog_error(err, errlen, "line %zu: no \"id\" column", line);
        return -1;
    }

    return 0;
}


/* ids go into Redis keys, logs and URLs: printable ASCII, no blanks */
static int
lc_catalog_check_id(const lc_str_t *id, size_t line, char *err,
    size_t errlen)
{
    char    q[LC_CATALOG_ERR_ID];
    size_t  i;

    if (id->len == 0) {
        lc_catalog_error(err, errlen, "line %zu: empty id", line);
        return -1;
    }

    if (id->len > LC_CATALOG_MAX_ID) {
        lc_catalog_error(err, errlen, "line %zu: id of %zu bytes, at most "
                         "%d", line, id->len, LC_CATALOG_MAX_ID);
        return -1;
    }

    for (i = 0; i < id->len; i++) {
        if ((unsigned char) id->data[i] < 0x21
            || (unsigned char) id->data[i] > 0x7e)
        {
            lc_catalog_error(err, errlen, "line %zu: id \"%s\" holds byte "
                             "0x%02x: ids are printable ASCII without "
                             "blanks", line,
                             lc_catalog_quote(q, id->data, id->len),
                             (unsigned char) id->data[i]);
            return -1;
        }
    }

    return 0;
}


static int
lc_catalog_insert(lc_catalog_t *c, size_t index, char *err, size_t errlen)
{
    char                q[LC_CATALOG_ERR_ID];
    size_t              i;
    uint32_t            hash;
    lc_product_t       *pr, *old;
    lc_catalog_slot_t  *s;

    pr = &c->products[index];
    hash = lc_catalog_hash(pr->id.data, pr->id.len);

    for (i = hash & c->mask; /* void */ ; i = (i + 1) & c->mask) {
        s = &c->slots[i];

        if (s->index == 0) {
            s->hash = hash;
            s->index = (uint32_t) index + 1;
            return 0;
        }

        old = &c->products[s->index - 1];

        if (s->hash == hash && old->id.len == pr->id.len
            && memcmp(old->id.data, pr->id.data, pr->id.len) == 0)
        {
            lc_catalog_error(err, errlen, "line %zu: duplicate id \"%s\", "
                             "first on line %zu", pr->line,
                             lc_catalog_quote(q, pr->id.data, pr->id.len),
                             old->line);
            return -1;
        }
    }
}


static int
lc_catalog_slug(const lc_alloc_t *a, lc_product_t *pr)
{
    int          dash;
    char        *q, *buf;
    const char  *p, *start, *last;

    /* the last level with something in it: "Shoes > " is "shoes" */
    p = pr->product_type.data;
    last = p + pr->product_type.len;

    while (last > p && !lc_catalog_slug_char(last[-1])) {
        last--;
    }

    for (start = last; start > p && start[-1] != '>'; start--) {
        /* void */
    }

    pr->category = lc_catalog_empty;

    if (start == last) {
        return 0;
    }

    /* a slug is never longer than its level */
    buf = a->alloc(a->ctx, last - start);
    if (buf == NULL) {
        return -1;
    }

    q = buf;
    dash = 0;

    for (p = start; p < last; p++) {
        if (!lc_catalog_slug_char(*p)) {
            dash = 1;
            continue;
        }

        if (dash && q > buf) {
            *q++ = '-';
        }

        dash = 0;
        *q++ = (*p >= 'A' && *p <= 'Z') ? (char) (*p | 0x20) : *p;
    }

    pr->category.data = buf;
    pr->category.len = q - buf;

    return 0;
}


/*
 * Digits, "," only between groups of three (so that a decimal comma,
 * "49,99", is refused rather than read as 4999 units), "." and one or
 * two decimals, then spaces and a currency code, or nothing.
 */
static int
lc_catalog_price(const lc_alloc_t *a, lc_product_t *pr)
{
    char                *cur;
    size_t               digits, group, decimals, i;
    const char          *p, *end;
    unsigned long long   units, cents;

    pr->price_minor = 0;
    pr->currency = lc_catalog_empty;

    p = pr->price.data;
    end = p + pr->price.len;
    units = 0;
    digits = 0;
    group = 0;       /* digits since the last comma, or of the first group */

    for ( /* void */ ; p < end; p++) {
        if (lc_catalog_digit(*p)) {
            /* room left for the cents */
            if (units > ((ULLONG_MAX - 99) / 100 - (*p - '0')) / 10) {
                return 0;
            }

            units = units * 10 + (*p - '0');
            digits++;
            group++;
            continue;
        }

        if (*p == ',' && digits && (group == 3 || (group == digits
                                                   && group <= 3)))
        {
            group = 0;
            continue;
        }

        break;
    }

    if (digits == 0 || (group != digits && group != 3)) {
        return 0;
    }

    cents = 0;

    if (p < end && *p == '.') {
        for (p++, decimals = 0; p < end && lc_catalog_digit(*p); p++) {
            cents = cents * 10 + (*p - '0');

            if (++decimals > 2) {
                return 0;
            }
        }

        if (decimals == 0) {
            return 0;
        }

        cents *= (decimals == 1) ? 10 : 1;
    }

    while (p < end && *p == ' ') {
        p++;
    }

    if (p < end) {
        if (end - p != 3) {
            return 0;
        }

        for (i = 0; i < 3; i++) {
            if (!((p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= 'a' && p[i] <= 'z')))
            {
                return 0;
            }
        }

        pr->currency.data = p;
        pr->currency.len = 3;

        if ((p[0] | p[1] | p[2]) & 0x20) {
            cur = a->alloc(a->ctx, 3);
            if (cur == NULL) {
                return -1;
            }

            for (i = 0; i < 3; i++) {
                cur[i] = (char) (p[i] & ~0x20);
            }

            pr->currency.data = cur;
        }
    }

    pr->price_minor = units * 100 + cents;

    return 0;
}


/*
 * FNV-1a, then the 64-bit finalizer of MurmurHash3: FNV alone mixes
 * its low bits poorly, and the table uses the low bits.
 */
static uint32_t
lc_catalog_hash(const char *s, size_t len)
{
    size_t    i;
    uint64_t  h;

    h = 0xcbf29ce484222325ULL;

    for (i = 0; i < len; i++) {
        h ^= (unsigned char) s[i];
        h *= 0x100000001b3ULL;
    }

    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;

    return (uint32_t) h;
}


/*
 * An id for an error message, cut short and with bytes that are not
 * printable ASCII replaced: the message ends up in logs, on one line.
 */
static const char *
lc_catalog_quote(char *buf, const char *s, size_t len)
{
    size_t  i, n;

    n = (len < LC_CATALOG_ERR_ID - 4) ? len : LC_CATALOG_ERR_ID - 4;

    for (i = 0; i < n; i++) {
        buf[i] = ((unsigned char) s[i] < 0x20
                  || (unsigned char) s[i] >= 0x7f || s[i] == '"')
                 ? '?' : s[i];
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
lc_catalog_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  args;

    if (err == NULL || errlen == 0) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(err, errlen, fmt, args);
    va_end(args);
}
