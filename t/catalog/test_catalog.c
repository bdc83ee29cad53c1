
/*
 * Unit tests of lifecycle_catalog.c, printed as TAP for t/21-catalog.t.
 * Usage: test_catalog [fuzz-iterations]
 *
 * Feeds are always handed to the parser in a buffer of exactly their
 * length, without a NUL, freed right after parsing: AddressSanitizer and
 * valgrind catch a read past the end or a product pointing into it.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lifecycle_catalog.h"


#define ARENA_CHUNK   65536
#define ARENA_ALIGN   16
#define ARENA_HEADER  ((sizeof(arena_chunk_t) + ARENA_ALIGN - 1)              \
                       & ~(size_t) (ARENA_ALIGN - 1))

#define HEADER  "id\ttitle\tlink\timage_link\tprice\tproduct_type\n"


typedef struct arena_chunk_s  arena_chunk_t;

struct arena_chunk_s {
    arena_chunk_t              *next;
    size_t                      used;
    size_t                      size;
    /* then the memory, from ARENA_HEADER on */
};


/* what the agent does: allocate from chunks, free them all at once */
typedef struct {
    arena_chunk_t              *chunks;
    size_t                      allocs;
    size_t                      fail_after;   /* 0: never fail */
} arena_t;


typedef struct {
    char                       *data;
    size_t                      len;
    size_t                      size;
} buf_t;


static void *arena_alloc(void *ctx, size_t size);
static void arena_free(arena_t *arena);
static void buf_add(buf_t *b, const char *data, size_t len);
static void ok(int cond, const char *name);
static void diag_str(const char *what, const char *s, size_t len);
static int is(lc_str_t s, const char *expect);
static lc_catalog_t *parse(const char *text, size_t len, char *err);
static lc_catalog_t *parse_str(const char *text, char *err);
static void check_error(const char *text, const char *expect,
    const char *name);
static const lc_product_t *find(const lc_catalog_t *c, const char *id);
static unsigned fuzz_rand(unsigned n);
static void test_basic(void);
static void test_header(void);
static void test_rows(void);
static void test_errors(void);
static void test_category(void);
static void test_price(void);
static void test_many(void);
static void test_out_of_memory(void);
static void test_fuzz(unsigned long iterations);


static arena_t     arena;
static lc_alloc_t  alloc = { arena_alloc, &arena };
static unsigned    tests, failed;

/* xorshift64: the fuzz loop is the same on every run */
static uint64_t    fuzz_state = 0x9e3779b97f4a7c15ULL;


int
main(int argc, char **argv)
{
    unsigned long  iterations;

    iterations = (argc > 1) ? strtoul(argv[1], NULL, 10) : 20000;

    test_basic();
    test_header();
    test_rows();
    test_errors();
    test_category();
    test_price();
    test_many();
    test_out_of_memory();
    test_fuzz(iterations);

    arena_free(&arena);

    printf("1..%u\n", tests);

    return failed ? 1 : 0;
}


static void
test_basic(void)
{
    char                 err[256];
    size_t               n;
    lc_catalog_t        *c;
    const lc_str_t      *names;
    const lc_product_t  *p;

    c = parse_str(HEADER
                  "p1\tRed Shoe\thttps://shop/p1\thttps://shop/p1.jpg\t"
                  "49.99 EUR\tApparel & Accessories > Shoes > Running Shoes\n"
                  "p2\tHat\t/p2\t/p2.jpg\t10 EUR\tHats\n", err);

    ok(c != NULL, "a feed of two products parses");
    if (c == NULL) {
        diag_str("error", err, strlen(err));
        return;
    }

    ok(lc_catalog_size(c) == 2, "two products");

    n = lc_catalog_columns(c, &names);
    ok(n == 6 && is(names[0], "id") && is(names[3], "image_link")
       && is(names[5], "product_type"), "six column names, in order");

    p = find(c, "p1");
    ok(p && is(p->id, "p1") && is(p->title, "Red Shoe")
       && is(p->link, "https://shop/p1")
       && is(p->image_link, "https://shop/p1.jpg")
       && is(p->price, "49.99 EUR")
       && is(p->product_type, "Apparel & Accessories > Shoes > Running Shoes")
       && is(p->category, "running-shoes") && p->price_minor == 4999
       && is(p->currency, "EUR") && p->line == 2,
       "every field of p1, read after the input buffer was freed");

    ok(p && is(p->values[0], "p1") && is(p->values[1], "Red Shoe")
       && is(p->values[4], "49.99 EUR"), "values in column order");

    p = find(c, "p2");
    ok(p && is(p->title, "Hat") && is(p->category, "hats")
       && p->price_minor == 1000 && p->line == 3, "p2");

    ok(find(c, "p3") == NULL && find(c, "p") == NULL
       && find(c, "p10") == NULL && find(c, "P1") == NULL,
       "unknown ids miss; ids are case-sensitive");

    ok(lc_catalog_find(c, "p1x", 2) == find(c, "p1")
       && lc_catalog_find(c, NULL, 0) == NULL
       && lc_catalog_find(c, "", 0) == NULL,
       "lookup takes a length, no NUL; empty id misses");

    ok(lc_catalog_find(NULL, "p1", 2) == NULL && lc_catalog_size(NULL) == 0
       && lc_catalog_columns(NULL, &names) == 0 && names == NULL
       && lc_catalog_columns(c, NULL) == 6,
       "a NULL catalog finds nothing; names may be NULL");
}


static void
test_header(void)
{
    char                 err[256];
    lc_catalog_t        *c;
    const lc_str_t      *names;
    const lc_product_t  *p;

    c = parse_str("id\ttitle\tprice\r\np1\tShoe\t5 EUR\r\n\r\np2\tHat\t6\r\n",
                  err);
    p = find(c, "p2");
    ok(c && lc_catalog_size(c) == 2 && is(find(c, "p1")->price, "5 EUR")
       && p && is(p->price, "6") && p->price_minor == 600 && p->line == 4,
       "CRLF line ends, a blank CRLF line");

    c = parse_str("\xef\xbb\xbfid\ttitle\np1\tShoe", err);
    ok(c && lc_catalog_columns(c, &names) == 2 && is(names[0], "id")
       && is(find(c, "p1")->title, "Shoe"),
       "UTF-8 BOM skipped; last line without a newline");

    c = parse_str("id\tbrand\ttitle\tsale_price\tavailability\n"
                  "p1\tAcme\tShoe\t39.99 EUR\tin_stock\n", err);
    p = find(c, "p1");
    ok(c && p && is(p->title, "Shoe") && is(p->values[1], "Acme")
       && is(p->values[3], "39.99 EUR") && is(p->values[4], "in_stock")
       && p->link.data != NULL && p->link.len == 0
       && p->price.len == 0 && p->price_minor == 0
       && p->category.len == 0 && p->currency.len == 0,
       "extra columns kept in values; absent known columns empty");

    c = parse_str("product_type\tprice\tid\ttitle\n"
                  "Bags > Totes\t12.50 USD\tb1\tTote\n", err);
    p = find(c, "b1");
    ok(p && is(p->title, "Tote") && is(p->category, "totes")
       && p->price_minor == 1250 && is(p->currency, "USD")
       && is(p->values[0], "Bags > Totes"), "reordered columns");

    c = parse_str(" ID \t Title\tIMAGE_LINK \tProduct_Type\n"
                  "p1\tShoe\t/i.jpg\tShoes\n", err);
    p = find(c, "p1");
    ok(c && lc_catalog_columns(c, &names) == 4 && is(names[0], "ID")
       && is(names[1], "Title") && p && is(p->title, "Shoe")
       && is(p->image_link, "/i.jpg") && is(p->category, "shoes"),
       "column names case-insensitive, blanks trimmed");

    c = parse_str("\n  \n\t\t\nid\ttitle\n\np1\tShoe\n", err);
    p = find(c, "p1");
    ok(p && p->line == 6, "blank lines before the header; lines counted");

    c = parse_str("id\ttitle\ttitle\tadditional_image_link\t"
                  "additional_image_link\n"
                  "p1\tFirst\tSecond\t/a.jpg\t/b.jpg\n", err);
    p = find(c, "p1");
    ok(p && is(p->title, "First") && is(p->values[2], "Second")
       && is(p->values[4], "/b.jpg"),
       "a repeated column: the first is the known one, both in values");

    c = parse_str("id\t\ttitle\np1\tx\tShoe\n", err);
    p = find(c, "p1");
    ok(p && lc_catalog_columns(c, &names) == 3 && names[1].len == 0
       && is(p->values[1], "x"), "a column without a name is kept");

    c = parse_str("id\ttitle\n", err);
    ok(c && lc_catalog_size(c) == 0 && find(c, "id") == NULL,
       "a header alone: an empty catalog");

    c = parse_str("id\np1\np2\n", err);
    ok(c && lc_catalog_size(c) == 2 && find(c, "p2")
       && find(c, "p2")->title.len == 0, "an id column alone");

    check_error("title\tprice\np1\t5\n", "line 1: no \"id\" column",
                "no id column");
    check_error("\n\ntitle\tidentifier\n", "line 3: no \"id\" column",
                "no id column, header on line 3");
    check_error("id\ttitle\tID\n", "line 1: two \"id\" columns",
                "two id columns");
    check_error("", "line 1: no header: the first line names the columns "
                "(id, title, ...)", "empty feed");
    check_error("\n \n", "line 2: no header: the first line names the "
                "columns (id, title, ...)", "blank feed");
}


static void
test_rows(void)
{
    char                 err[256], id[200];
    lc_catalog_t        *c;
    const lc_product_t  *p;

    c = parse_str("id\ttitle\n#p9\tHash\n", err);
    ok(c && find(c, "#p9") && is(find(c, "#p9")->title, "Hash"),
       "no comments: a line starting with # is a product");

    c = parse_str("id\ttitle\tdescription\n"
                  "p1\t\"Quoted\"\ta\\tb \\n<b>&amp;</b>\n", err);
    p = find(c, "p1");
    ok(p && is(p->title, "\"Quoted\"") && is(p->values[2],
                                             "a\\tb \\n<b>&amp;</b>"),
       "values not unescaped, quotes kept");

    c = parse("id\ttitle\np1\ta\0b\xff\n", 16, err);
    p = find(c, "p1");
    ok(p && p->title.len == 4 && memcmp(p->title.data, "a\0b\xff", 4) == 0,
       "a value may hold NUL and any byte but TAB, CR, LF");

    c = parse_str("id\ttitle\n  p1  \t  Shoe  \n", err);
    p = find(c, "p1");
    ok(p && is(p->id, "p1") && is(p->title, "Shoe"),
       "surrounding spaces of values trimmed");

    sprintf(id, "id\n");
    memset(id + 3, 'x', 128);
    id[131] = '\0';
    c = parse_str(id, err);
    ok(c && lc_catalog_size(c) == 1
       && lc_catalog_find(c, id + 3, 128) != NULL,
       "a 128-byte id is accepted and found");

    ok(lc_catalog_find(c, id + 3, 129) == NULL
       && lc_catalog_find(c, id + 3, 127) == NULL,
       "129 and 127 bytes of it miss");
}


static void
test_errors(void)
{
    char  text[300], err[16];

    check_error(HEADER "p1\ta\tb\tc\td\te\np2\ta\tb\tc\td\n",
                "line 3: 5 fields, the header has 6", "a row with 5 fields");
    check_error(HEADER "p1\ta\tb\tc\td\te\tf\n",
                "line 2: 7 fields, the header has 6", "a row with 7 fields");
    check_error("id\ttitle\np1\n", "line 2: 1 field, the header has 2",
                "a row with 1 field");
    check_error("id\ttitle\n\n\n\tShoe\n", "line 4: empty id",
                "empty id, blank lines counted");
    check_error("id\ttitle\n  \tShoe\n", "line 2: empty id",
                "id of spaces only");

    strcpy(text, "id\n");
    memset(text + 3, 'y', 129);
    strcpy(text + 132, "\n");
    check_error(text, "line 2: id of 129 bytes, at most 128",
                "129-byte id");

    check_error("id\np 1\n", "line 2: id \"p 1\" holds byte 0x20: ids are "
                "printable ASCII without blanks", "id with a space");
    check_error("id\n# a comment\n", "line 2: id \"# a comment\" holds byte "
                "0x20: ids are printable ASCII without blanks",
                "a comment line is a row, and a bad id");
    check_error("id\np\xc3\xa9\n", "line 2: id \"p??\" holds byte 0xc3: "
                "ids are printable ASCII without blanks", "UTF-8 id");
    check_error("id\np\x01q\n", "line 2: id \"p?q\" holds byte 0x01: ids "
                "are printable ASCII without blanks", "control byte in id");
    check_error("id\np\x7f\n", "line 2: id \"p?\" holds byte 0x7f: ids are "
                "printable ASCII without blanks", "DEL in id");
    check_error("id\ttitle\np1\ta\np2\tb\n\np1\tc\n",
                "line 5: duplicate id \"p1\", first on line 2",
                "duplicate id names both lines");
    check_error("id\ttitle\np1\ta\rb\n",
                "line 2: carriage return inside the line", "CR in a value");
    check_error("id\ttitle\rp1\tShoe\r",
                "line 1: carriage return inside the line",
                "CR line ends (old Mac)");

    ok(lc_catalog_parse("title\n", 6, &alloc, NULL, 0) == NULL
       && lc_catalog_parse("x\n", 2, &alloc, err, 0) == NULL,
       "no error buffer");

    memset(err, 'z', sizeof(err));
    ok(lc_catalog_parse("id\np 1\n", 7, &alloc, err, 8) == NULL
       && strcmp(err, "line 2:") == 0 && err[8] == 'z',
       "the error is cut to the buffer");
}


static void
test_category(void)
{
    int                  good;
    char                 err[256], text[512];
    size_t               i;
    lc_catalog_t        *c;
    const lc_product_t  *p;

    static const char  *cases[][2] = {
        { "Apparel & Accessories > Shoes > Running Shoes", "running-shoes" },
        { "Shoes", "shoes" },
        { "Home & Garden > Kitchen & Dining", "kitchen-dining" },
        { "Bags >  Travel  Bags", "travel-bags" },
        { "Schuhe > Laufschuhe f\xc3\xbcr Damen",
          "laufschuhe-f\xc3\xbcr-damen" },
        { "TV > \xc3\x89lectronique", "\xc3\x89lectronique" },
        { "Toys > LEGO\xc2\xae Sets", "lego\xc2\xae-sets" },
        { "Shoes >", "shoes" },
        { "Shoes > --- ", "shoes" },
        { "Size 10+ > 3D Printers!!", "3d-printers" },
        { "A/B > C_D--E", "c-d-e" },
        { "> > ", "" },
        { "---", "" },
        { "", "" },
        { "Electronics>Audio>Head-phones (Over-Ear)", "head-phones-over-ear" },
        { "SHOES", "shoes" }
    };

    good = 1;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "id\tproduct_type\np1\t%s\n",
                 cases[i][0]);
        c = parse_str(text, err);
        p = find(c, "p1");

        if (p == NULL || !is(p->category, cases[i][1])) {
            good = 0;
            diag_str("product_type", cases[i][0], strlen(cases[i][0]));
            diag_str("got", p ? p->category.data : err,
                     p ? p->category.len : strlen(err));
            diag_str("expected", cases[i][1], strlen(cases[i][1]));
        }
    }

    ok(good, "category slugs of product_type");

    c = parse_str("id\tproduct_type\np1\tShoes > Sneakers\n", err);
    p = find(c, "p1");
    ok(p && is(p->product_type, "Shoes > Sneakers")
       && is(p->values[1], "Shoes > Sneakers"),
       "product_type itself is kept as written");
}


static void
test_price(void)
{
    int                  good;
    char                 err[256], text[512];
    size_t               i;
    lc_catalog_t        *c;
    const lc_product_t  *p;

    static const struct {
        const char          *price;
        unsigned long long   minor;
        const char          *currency;
    } cases[] = {
        { "49.99 EUR", 4999, "EUR" },
        { "49.99EUR", 4999, "EUR" },
        { "49.99", 4999, "" },
        { "1,299.00 USD", 129900, "USD" },
        { "1,234,567.5 JPY", 123456750, "JPY" },
        { "49.9", 4990, "" },
        { "49", 4900, "" },
        { "0.00 EUR", 0, "EUR" },
        { "49.99 eur", 4999, "EUR" },
        { "49.99   Gbp", 4999, "GBP" },
        { "007.05", 705, "" },
        { "999,999", 99999900, "" },
        { "184467440737095515.99 EUR", 18446744073709551599ULL, "EUR" },
        /* unparsable: 0, no currency */
        { "184467440737095516 EUR", 0, "" },
        { "99999999999999999999999", 0, "" },
        { "49,99 EUR", 0, "" },
        { "49.999 EUR", 0, "" },
        { "\xe2\x82\xac" "49.99", 0, "" },
        { "$49.99", 0, "" },
        { "EUR 49.99", 0, "" },
        { "49.", 0, "" },
        { ".99", 0, "" },
        { "-5.00 EUR", 0, "" },
        { "1,29.00", 0, "" },
        { "1234,567.00", 0, "" },
        { "1,", 0, "" },
        { ",100", 0, "" },
        { "49.99 EURO", 0, "" },
        { "49.99 E1R", 0, "" },
        { "49.99 EUR x", 0, "" },
        { "free", 0, "" },
        { "", 0, "" }
    };

    good = 1;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "id\tprice\np1\t%s\n", cases[i].price);
        c = parse_str(text, err);
        p = find(c, "p1");

        if (p == NULL || p->price_minor != cases[i].minor
            || !is(p->currency, cases[i].currency)
            || !is(p->price, cases[i].price))
        {
            good = 0;
            diag_str("price", cases[i].price, strlen(cases[i].price));

            if (p) {
                printf("# got %llu \"%.*s\"\n", p->price_minor,
                       (int) p->currency.len, p->currency.data);
            }
        }
    }

    ok(good, "prices in minor units and currencies; raw price kept");
}


static void
test_many(void)
{
    int                  good;
    char                 err[256], id[32], title[32], cat[32];
    size_t               i;
    buf_t                b;
    lc_catalog_t        *c;
    const lc_product_t  *p;

    memset(&b, 0, sizeof(buf_t));
    buf_add(&b, HEADER, sizeof(HEADER) - 1);

    for (i = 0; i < 10000; i++) {
        char  line[160];

        snprintf(line, sizeof(line), "sku-%05zu\tProduct %zu\t/p/%zu\t"
                 "/i/%zu.jpg\t%zu.%02zu EUR\tCat %zu > Sub %zu\n",
                 i, i, i, i, i, i % 100, i % 7, i % 37);
        buf_add(&b, line, strlen(line));
    }

    c = parse(b.data, b.len, err);
    free(b.data);

    ok(c && lc_catalog_size(c) == 10000, "10,000 products parse");

    good = (c != NULL);

    for (i = 0; good && i < 10000; i++) {
        snprintf(id, sizeof(id), "sku-%05zu", i);
        snprintf(title, sizeof(title), "Product %zu", i);
        snprintf(cat, sizeof(cat), "sub-%zu", i % 37);
        p = find(c, id);

        good = p && is(p->id, id) && is(p->title, title)
               && is(p->category, cat) && p->line == i + 2
               && p->price_minor == i * 100 + i % 100;
    }

    ok(good, "each of 10,000 ids finds its product");

    good = (c != NULL);

    for (i = 10000; good && i < 20000; i++) {
        snprintf(id, sizeof(id), "sku-%05zu", i);
        good = (find(c, id) == NULL);
    }

    ok(good && find(c, "sku-0000") == NULL && find(c, "SKU-00001") == NULL
       && find(c, "sku-00001x") == NULL && find(c, "sku-000010") == NULL,
       "10,000 unknown ids and near misses find nothing");
}


static void
test_out_of_memory(void)
{
    int            good;
    char           err[256];
    size_t         n;
    arena_t        failing;
    lc_alloc_t     a;
    lc_catalog_t  *c;
    const char    *text;

    text = HEADER "p1\tShoe\t/p1\t/p1.jpg\t5 eur\tShoes > Running\n"
                  "p2\tHat\t/p2\t/p2.jpg\t6 EUR\tHats\n";
    a.alloc = arena_alloc;
    a.ctx = &failing;
    good = 1;
    c = NULL;

    for (n = 1; c == NULL && n < 100; n++) {
        memset(&failing, 0, sizeof(arena_t));
        failing.fail_after = n;

        err[0] = '\0';
        c = lc_catalog_parse(text, strlen(text), &a, err, sizeof(err));

        if (c == NULL && strcmp(err, "out of memory") != 0) {
            good = 0;
            diag_str("got", err, strlen(err));
        }

        good &= (c == NULL || (lc_catalog_size(c) == 2
                               && is(lc_catalog_find(c, "p1", 2)->currency,
                                     "EUR")));

        arena_free(&failing);
    }

    printf("# parsed with %zu allocations\n", n - 1);

    ok(good && c != NULL && n > 8, "every allocation failure is reported");
}


static unsigned
fuzz_rand(unsigned n)
{
    fuzz_state ^= fuzz_state << 13;
    fuzz_state ^= fuzz_state >> 7;
    fuzz_state ^= fuzz_state << 17;

    return (unsigned) (fuzz_state % n);
}


static void
test_fuzz(unsigned long iterations)
{
    char                 err[256], *text;
    size_t               len, n, at, size, parsed, rejected, bad, i, sum;
    const char          *p, *q, *end;
    unsigned long        iter;
    lc_catalog_t        *c;
    const lc_product_t  *pr;

    static const char  *seeds[] = {
        HEADER
        "p1\tRed Shoe\t/p1\t/p1.jpg\t49.99 EUR\tApparel > Shoes > Running\n"
        "p2\tHat\t/p2\t/p2.jpg\t1,299.00 USD\tHats\n"
        "p3\tBag\t/p3\t/p3.jpg\t9\t\n",
        "\xef\xbb\xbf" "ID\tTitle\tbrand\r\np1\tA\tB\r\n\r\np2\tC\tD\r\n",
        "product_type\tid\tprice\nA > B\tx1\t5,00 EUR\n\t\t\nC\tx2\t.5\n",
        "id\n#1\nq-2\n",
        "id\ttitle\ttitle\tsale_price\nz\tT\tU\t1 EUR"
    };

    static const char  *tokens[] = {
        "\t", "\n", "\r\n", "\r", " ", "#", ">", ",", ".", "\xef\xbb\xbf",
        "id", "ID", "p1", "\0", "\xff", "EUR", "\xc3\xa9", "1,234.56",
        "price", "product_type", "\t\t\t", " > ", "title\t", "p2\t"
    };

    text = malloc(8192);
    parsed = 0;
    rejected = 0;
    bad = 0;
    sum = 0;

    for (iter = 0; iter < iterations; iter++) {

        if (fuzz_rand(8) == 0) {
            /* random bytes, tabs and newlines often enough to matter */
            len = fuzz_rand(300);

            for (i = 0; i < len; i++) {
                n = fuzz_rand(10);
                text[i] = (n == 0) ? '\t' : (n == 1) ? '\n'
                          : (char) fuzz_rand(256);
            }

        } else {
            p = seeds[fuzz_rand(sizeof(seeds) / sizeof(seeds[0]))];
            len = strlen(p);
            memcpy(text, p, len);

            for (n = 1 + fuzz_rand(4); n; n--) {
                at = fuzz_rand((unsigned) len + 1);

                switch (fuzz_rand(5)) {

                case 0:
                    p = tokens[fuzz_rand(sizeof(tokens) / sizeof(tokens[0]))];
                    size = p[0] ? strlen(p) : 1;

                    if (len + size < 4000) {
                        memmove(text + at + size, text + at, len - at);
                        memcpy(text + at, p, size);
                        len += size;
                    }

                    break;

                case 1:
                    size = fuzz_rand((unsigned) (len - at) + 1);
                    memmove(text + at, text + at + size, len - at - size);
                    len -= size;
                    break;

                case 2:
                    /* duplicate a span: duplicate ids, more lines */
                    size = fuzz_rand((unsigned) (len - at) + 1);

                    if (len + size < 4000) {
                        memmove(text + at + size, text + at, len - at);
                        len += size;
                    }

                    break;

                case 3:
                    if (at < len) {
                        text[at] = (char) fuzz_rand(256);
                    }

                    break;

                default:
                    len = at;
                    break;
                }
            }
        }

        c = parse(text, len, err);

        if (c == NULL) {
            rejected++;

            if (strncmp(err, "line ", 5) != 0) {
                bad++;
                diag_str("error without a line", err, strlen(err));
            }

            continue;
        }

        parsed++;

        /* look up the first field of every line, read what is found */
        for (p = text, end = text + len; p < end; p = q + 1) {
            q = memchr(p, '\n', end - p);
            q = q ? q : end;

            for (n = 0; p + n < q && p[n] != '\t' && p[n] != '\r'; n++) {
                /* void */
            }

            pr = lc_catalog_find(c, p, n);

            if (pr == NULL) {
                continue;
            }

            if (pr->id.len != n || memcmp(pr->id.data, p, n) != 0) {
                bad++;
            }

            for (i = 0; i < lc_catalog_columns(c, NULL); i++) {
                sum += pr->values[i].len
                       + (pr->values[i].len ? pr->values[i].data[0] : 0);
            }

            sum += pr->category.len + pr->currency.len + pr->price_minor
                   + (pr->category.len ? pr->category.data[0] : 0);
        }

        /* the arena would grow for ever: start afresh now and then */
        if (iter % 256 == 0) {
            arena_free(&arena);
        }
    }

    free(text);

    printf("# fuzz: %zu parsed, %zu rejected (checksum %zu)\n", parsed,
           rejected, sum);

    ok(bad == 0 && parsed > iterations / 20 && rejected > iterations / 20,
       "fuzz: random and mutated feeds parse or fail with a line number");
}


static lc_catalog_t *
parse(const char *text, size_t len, char *err)
{
    char          *copy;
    lc_catalog_t  *c;

    /* exactly len bytes, no NUL after them, gone after parsing */
    copy = malloc(len ? len : 1);
    memcpy(copy, text, len);

    err[0] = '\0';
    c = lc_catalog_parse(copy, len, &alloc, err, 256);

    memset(copy, 'X', len);
    free(copy);

    return c;
}


static lc_catalog_t *
parse_str(const char *text, char *err)
{
    lc_catalog_t  *c;

    c = parse(text, strlen(text), err);

    if (c == NULL) {
        diag_str("parse error", err, strlen(err));
    }

    return c;
}


static void
check_error(const char *text, const char *expect, const char *name)
{
    char           err[256];
    lc_catalog_t  *c;

    c = parse(text, strlen(text), err);

    ok(c == NULL && strcmp(err, expect) == 0, name);

    if (c || strcmp(err, expect) != 0) {
        diag_str("feed", text, strlen(text));
        diag_str("got", c ? "(parsed)" : err, c ? 8 : strlen(err));
        diag_str("expected", expect, strlen(expect));
    }
}


static const lc_product_t *
find(const lc_catalog_t *c, const char *id)
{
    return lc_catalog_find(c, id, strlen(id));
}


static int
is(lc_str_t s, const char *expect)
{
    return s.data != NULL && s.len == strlen(expect)
           && memcmp(s.data, expect, s.len) == 0;
}


static void *
arena_alloc(void *ctx, size_t size)
{
    char           *p;
    size_t          room;
    arena_t        *a;
    arena_chunk_t  *c;

    a = ctx;

    if (a->fail_after && ++a->allocs >= a->fail_after) {
        return NULL;
    }

    size = (size + ARENA_ALIGN - 1) & ~(size_t) (ARENA_ALIGN - 1);
    c = a->chunks;

    if (c == NULL || c->size - c->used < size) {
        room = (size > ARENA_CHUNK) ? size : ARENA_CHUNK;

        c = malloc(ARENA_HEADER + room);
        if (c == NULL) {
            return NULL;
        }

        c->size = room;
        c->used = 0;
        c->next = a->chunks;
        a->chunks = c;
    }

    p = (char *) c + ARENA_HEADER + c->used;
    c->used += size;

    return p;
}


static void
arena_free(arena_t *a)
{
    arena_chunk_t  *c, *next;

    for (c = a->chunks; c; c = next) {
        next = c->next;
        free(c);
    }

    a->chunks = NULL;
}


static void
buf_add(buf_t *b, const char *data, size_t len)
{
    if (b->len + len > b->size) {
        b->size = (b->len + len) * 2;
        b->data = realloc(b->data, b->size);
    }

    memcpy(b->data + b->len, data, len);
    b->len += len;
}


static void
ok(int cond, const char *name)
{
    tests++;

    if (!cond) {
        failed++;
    }

    printf("%sok %u - %s\n", cond ? "" : "not ", tests, name);
}


/* a string on one TAP comment line, bytes that would break it escaped */
static void
diag_str(const char *what, const char *s, size_t len)
{
    size_t  i;

    printf("# %s: \"", what);

    for (i = 0; i < len; i++) {
        if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] >= 0x7f
            || s[i] == '"' || s[i] == '\\')
        {
            printf("\\x%02x", (unsigned char) s[i]);

        } else {
            putchar(s[i]);
        }
    }

    printf("\"\n");
}
