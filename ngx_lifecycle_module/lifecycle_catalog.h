
/*
 * The product catalog: a Google Merchant Center feed, tab-separated,
 * parsed once into products with a hash table on their ids.
 * Plain C99, no nginx types: the module and lifecycle-agent both compile
 * this file and lifecycle_catalog.c.
 *
 * The first non-blank line names the columns (case-insensitive,
 * surrounding blanks trimmed, a UTF-8 BOM skipped); "id" is required.
 * id, title, link, image_link, price and product_type have fields of
 * their own; every column, known or not, is in lc_product_t.values, in
 * the header's order. A column name given twice is kept twice in values
 * (Merchant repeats some attributes that way): the first is the known
 * one, and two "id" columns are an error.
 *
 * Lines end with LF or CRLF; lines of blanks only (spaces, tabs) are
 * skipped; there are no comments ("#p1" is a product id) and no quoting:
 * a value is every byte between two tabs, less surrounding spaces.
 *
 * Errors are "line N: what": a row with another number of fields than
 * the header, an empty id, an id longer than LC_CATALOG_MAX_ID or with
 * bytes outside 0x21..0x7e, a duplicate id, a CR inside a line.
 */

#ifndef _LIFECYCLE_CATALOG_H_INCLUDED_
#define _LIFECYCLE_CATALOG_H_INCLUDED_


#include <stddef.h>

#include "lifecycle_template.h"   /* lc_alloc_t */


#define LC_CATALOG_MAX_ID  128


/* never NULL in a product: an absent value is "" with len 0 */
typedef struct {
    const char                 *data;
    size_t                      len;
} lc_str_t;


typedef struct {
    lc_str_t                    id;
    lc_str_t                    title;
    lc_str_t                    link;
    lc_str_t                    image_link;
    lc_str_t                    price;         /* as the feed wrote it */
    lc_str_t                    product_type;

    /*
     * The most specific level of product_type as a slug: "Apparel >
     * Shoes > Running Shoes" is "running-shoes". ASCII is lowercased,
     * every run of other ASCII than [a-z0-9] becomes one "-", bytes
     * above 0x7f (UTF-8) stay; no "-" at either end.
     */
    lc_str_t                    category;

    /*
     * "49.99 EUR", "49.99EUR", "1,299.00 USD", "49.9", "49": 4999,
     * 4999, 129900, 4990, 4900 and the ISO 4217 code, uppercased. A
     * price in another form (a decimal comma, three decimals, a leading
     * symbol) leaves 0 and no currency; "price" still has it.
     */
    unsigned long long          price_minor;
    lc_str_t                    currency;

    lc_str_t                   *values;        /* every column */
    size_t                      line;          /* in the feed */
} lc_product_t;


typedef struct lc_catalog_s  lc_catalog_t;


/*
 * Parses "len" bytes of "text" (no NUL needed; the text is copied, every
 * string of the catalog points into memory from "a"). On error returns
 * NULL and writes "line N: what" into "err".
 */
lc_catalog_t *lc_catalog_parse(const char *text, size_t len,
    const lc_alloc_t *a, char *err, size_t errlen);

/* NULL for an unknown id or a NULL catalog; allocates nothing */
const lc_product_t *lc_catalog_find(const lc_catalog_t *c, const char *id,
    size_t len);

size_t lc_catalog_size(const lc_catalog_t *c);

/* the header's column names, as written less blanks; "names" may be NULL */
size_t lc_catalog_columns(const lc_catalog_t *c, const lc_str_t **names);

#endif /* _LIFECYCLE_CATALOG_H_INCLUDED_ */
