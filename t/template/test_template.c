
/*
 * Unit tests of lifecycle_template.c, printed as TAP for t/20-template.t.
 * Usage: test_template [fuzz-iterations]
 *
 * Templates are always handed to the compiler in a buffer of exactly
 * their length, without a NUL, so that AddressSanitizer and valgrind
 * catch any read past the end.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lifecycle_template.h"


#define ARENA_CHUNK   4096
#define ARENA_ALIGN   16
#define ARENA_HEADER  ((sizeof(arena_chunk_t) + ARENA_ALIGN - 1)              \
                       & ~(size_t) (ARENA_ALIGN - 1))


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
static void buf_write(void *ctx, const char *data, size_t len);
static void ok(int cond, const char *name);
static void diag_str(const char *what, const char *s);
static lc_tpl_t *compile(const char *text, size_t len, char *err);
static char *render(const char *tpl, const char *json, char *err);
static void check(const char *tpl, const char *json, const char *expect,
    const char *name);
static void check_error(const char *tpl, const char *expect,
    const char *name);
static const lc_value_t *parse(const char **pp);
static unsigned fuzz_rand(unsigned n);
static void test_tags(void);
static void test_escaping(void);
static void test_sections(void);
static void test_lookup(void);
static void test_standalone(void);
static void test_errors(void);
static void test_unterminated_text(void);
static void test_api(void);
static void test_uses(void);
static void test_out_of_memory(void);
static void test_compile_once(void);
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

    iterations = (argc > 1) ? strtoul(argv[1], NULL, 10) : 10000;

    test_tags();
    test_escaping();
    test_sections();
    test_lookup();
    test_standalone();
    test_errors();
    test_unterminated_text();
    test_api();
    test_uses();
    test_out_of_memory();
    test_compile_once();
    test_fuzz(iterations);

    arena_free(&arena);

    printf("1..%u\n", tests);

    return failed ? 1 : 0;
}


static void
test_tags(void)
{
    check("plain text, no tags", "{}", "plain text, no tags", "text only");
    check("", "{}", "", "empty template");
    check("Hi {{name}}!", "{\"name\":\"Ann\"}", "Hi Ann!", "{{name}}");
    check("Hi {{ name }}{{\tname\n}}!", "{\"name\":\"Ann\"}", "Hi AnnAnn!",
          "whitespace inside tags");
    check("[{{name}}]", "{}", "[]", "missing name renders empty");
    check("[{{name}}]", "{\"name\":null}", "[]", "null renders empty");
    check("{{t}} {{f}}", "{\"t\":true,\"f\":false}", "true false",
          "booleans render true and false");
    check("[{{l}}{{o}}]", "{\"l\":[\"a\"],\"o\":{\"a\":\"b\"}}", "[]",
          "lists and objects render empty");
    check("{{n}}/{{z}}", "{\"n\":#42,\"z\":#0}", "42/0", "numbers");
    check("{{{html}}}", "{\"html\":!\"<b>x</b>\"}", "<b>x</b>",
          "{{{name}}} trusted is raw");
    check("{{{html}}}", "{\"html\":\"<b>x</b>\"}",
          "&lt;b&gt;x&lt;&#x2F;b&gt;", "{{{name}}} untrusted is escaped");
    check("{{& html}}", "{\"html\":!\"<i>\"}", "<i>",
          "{{& name}} trusted is raw");
    check("{{&html}}", "{\"html\":\"<i>\"}", "&lt;i&gt;",
          "{{& name}} untrusted is escaped");
    check("{{{ html }}}", "{\"html\":!\"<i>\"}", "<i>",
          "{{{ name }}} with blanks");
    check("{{html}}", "{\"html\":!\"<i>\"}", "&lt;i&gt;",
          "{{name}} escapes trusted values too");
    check("a{{! a comment }}b", "{}", "ab", "comment");
    check("a{{! two\nlines {{ }} b }}c", "{}", "a b }}c",
          "comment ends at the first }}");
    check("a{{!}}b", "{}", "ab", "empty comment");
    check("{{#t}}yes{{/t}}{{^t}}no{{/t}}", "{\"t\":true}", "yes",
          "section and inverted on true");
    check("{{#list}}<{{.}}>{{/list}}", "{\"list\":[\"a\",\"b\",\"c\"]}",
          "<a><b><c>", "{{.}} in a list of strings");
    check("{{.}}", "\"top\"", "top", "{{.}} at the root");
    check("{{a}}{{{b}}}", "{\"a\":\"}}\",\"b\":!\"{{c}}\"}", "}}{{c}}",
          "values are not templates");
    check("{ {a} }} {{{a}}}}", "{\"a\":!\"x\"}", "{ {a} }} x}",
          "stray braces");
}


static void
test_escaping(void)
{
    char        buf[64];
    buf_t       out;
    const char  *p;

    check("{{v}}", "{\"v\":\"<script>alert(\\\"x\\\")</script>\"}",
          "&lt;script&gt;alert(&quot;x&quot;)&lt;&#x2F;script&gt;",
          "escapes <script>alert(\"x\")</script>");
    check("{{v}}", "{\"v\":\"it's Tom & Jerry\"}",
          "it&#39;s Tom &amp; Jerry", "escapes ' and &");
    check("{{v}}", "{\"v\":\"a`b=c/d\"}", "a&#x60;b&#x3D;c&#x2F;d",
          "escapes ` = and /");
    check("<a title={{v}}>", "{\"v\":\"x onmouseover=alert(1)\"}",
          "<a title=x onmouseover&#x3D;alert(1)>",
          "unquoted attribute cannot gain an attribute value");
    check("{{v}}", "{\"v\":\"caf\\u00e9 \\u0001\"}", "caf\xc3\xa9 \x01",
          "other bytes pass through");

    memset(&out, 0, sizeof(buf_t));
    strcpy(buf, "<&>\"'`=/ok");

    ok(lc_tpl_escape_html(buf, strlen(buf), buf_write, &out) == out.len
       && out.len == strlen("&lt;&amp;&gt;&quot;&#39;&#x60;&#x3D;&#x2F;ok")
       && memcmp(out.data, "&lt;&amp;&gt;&quot;&#39;&#x60;&#x3D;&#x2F;ok",
                 out.len) == 0,
       "lc_tpl_escape_html() on its own");

    out.len = 0;
    p = "";

    ok(lc_tpl_escape_html(p, 0, buf_write, &out) == 0 && out.len == 0,
       "lc_tpl_escape_html() of nothing");

    free(out.data);
}


static void
test_sections(void)
{
    const char  *recent;

    recent = "{\"recent\":[{\"title\":\"Red <shoes>\",\"link\":\"/p/1\"},"
             "{\"title\":\"Blue hat\",\"link\":\"/p/2?a=1&b=2\"}],"
             "\"visitor\":{\"stage\":\"cart\"},\"empty\":[]}";

    check("{{#recent}}<a href=\"{{link}}\">{{title}}</a>{{/recent}}", recent,
          "<a href=\"&#x2F;p&#x2F;1\">Red &lt;shoes&gt;</a>"
          "<a href=\"&#x2F;p&#x2F;2?a&#x3D;1&amp;b&#x3D;2\">Blue hat</a>",
          "list of objects");
    check("{{#recent}}{{visitor.stage}},{{/recent}}", recent, "cart,cart,",
          "outer scope lookup from a list item");
    check("{{^empty}}none{{/empty}}", recent, "none",
          "inverted on an empty list");
    check("{{^nothing}}none{{/nothing}}", recent, "none",
          "inverted on a missing name");
    check("{{^recent}}none{{/recent}}", recent, "",
          "inverted on a non-empty list");
    check("{{#empty}}x{{/empty}}{{#nothing}}y{{/nothing}}", recent, "",
          "sections on an empty list and a missing name");
    check("{{#visitor}}{{stage}}{{/visitor}}", recent, "cart",
          "section on an object pushes it");
    check("{{#s}}[{{.}}]{{/s}}", "{\"s\":\"text\"}", "[text]",
          "section on a string pushes it");
    check("{{#e}}x{{/e}}{{^e}}empty{{/e}}", "{\"e\":\"\"}", "empty",
          "empty string is falsy");
    check("{{#z}}x{{/z}}{{^z}}zero{{/z}}", "{\"z\":\"0\"}", "x",
          "the string \"0\" is truthy");
    check("{{#z}}x{{/z}}{{^z}}zero{{/z}}", "{\"z\":#0}", "zero",
          "the number 0 is falsy");
    check("{{#z}}{{.}}{{/z}}", "{\"z\":#7}", "7", "other numbers are truthy");
    check("{{#f}}x{{/f}}{{^f}}F{{/f}}{{#n}}x{{/n}}{{^n}}N{{/n}}",
          "{\"f\":false,\"n\":null}", "FN", "false and null are falsy");
    check("{{#o}}x{{/o}}", "{\"o\":{}}", "x", "an empty object is truthy");
    check("{{#rows}}({{#.}}{{.}}{{/.}}){{/rows}}",
          "{\"rows\":[[\"a\",\"b\"],[],[\"c\"]]}", "(ab)()(c)",
          "nested lists");
    check("{{#a}}{{#b}}{{#c}}{{x}}{{/c}}{{/b}}{{/a}}",
          "{\"x\":\"root\",\"a\":{\"b\":[{\"c\":true},{\"c\":false},"
          "{\"c\":true,\"x\":\"inner\"}]}}", "rootinner",
          "three levels, outward lookup at each");
    check("{{#l}}{{#l}}.{{/l}}|{{/l}}", "{\"l\":[\"x\",\"y\"]}", "..|..|",
          "same list nested in itself");
    check("{{#a}}1{{/a}}{{^a}}2{{/a}}{{#b}}3{{/b}}{{^b}}4{{/b}}",
          "{\"a\":true}", "14", "consecutive sections jump right");
    check("{{^a}}{{#b}}{{.}}{{/b}}{{/a}}", "{\"b\":[\"1\",\"2\"]}", "12",
          "section inside an inverted one");
    check("{{#l}}{{^.}}-{{/.}}{{.}}{{/l}}", "{\"l\":[\"a\",\"\",\"b\"]}",
          "a-b", "inverted {{.}} inside a list");
}


static void
test_lookup(void)
{
    const char  *data;

    data = "{\"product\":{\"title\":\"Hat\",\"price\":\"9.90\","
           "\"cat\":{\"name\":\"Hats\"}},\"top\":\"T\","
           "\"recent\":[{\"product\":{}},{\"title\":\"R\"}],"
           "\"s\":\"str\",\"title\":\"root\"}";

    check("{{product.title}} {{product.cat.name}}", data, "Hat Hats",
          "dotted names");
    check("[{{nope.title}}][{{product.nope}}][{{product.title.x}}]"
          "[{{s.x}}][{{product.cat.name.x.y}}]", data, "[][][][][]",
          "dotted names through missing parts");
    check("{{#product.price}}only {{.}}{{/product.price}}", data,
          "only 9.90", "dotted section");
    check("{{#product.cat}}{{name}} {{top}}{{/product.cat}}", data,
          "Hats T", "section on a dotted object, outer lookup");
    check("{{#recent}}[{{product.title}}]{{/recent}}", data, "[][Hat]",
          "first part found inside stops the search outward");
    check("{{#recent}}{{title}},{{/recent}}", data, "root,R,",
          "inner names shadow outer ones");
    check("{{#product}}{{#cat}}{{title}}{{/cat}}{{/product}}", data, "Hat",
          "lookup walks every frame");
    check("{{#recent}}{{.}}{{/recent}}", data, "",
          "{{.}} of an object renders nothing");
    check("{{top}}", "{\"top\":null,\"top\":\"second\"}", "",
          "the first of two equal keys wins");
    check("{{#o}}[{{x}}]{{/o}}", "{\"x\":\"outer\",\"o\":{\"x\":null}}",
          "[]", "an inner null shadows an outer value");
    check("{{x}}", "[\"a\"]", "", "root that is not an object");
}


static void
test_standalone(void)
{
    check("<ul>\n{{#l}}\n  <li>{{.}}</li>\n{{/l}}\n</ul>\n",
          "{\"l\":[\"a\",\"b\"]}", "<ul>\n  <li>a</li>\n  <li>b</li>\n</ul>\n",
          "section lines leave no blank lines");
    check("a\n  {{^l}}  \n\tnone\n\t{{/l}}\t\nb", "{\"l\":[]}",
          "a\n\tnone\nb", "indented inverted section lines");
    check("a\n {{! note }} \nb\n{{!\n  long\n}}\nc", "{}", "a\nb\nc",
          "comment lines");
    check("a\r\n{{#t}}\r\nb\r\n{{/t}}\r\nc", "{\"t\":true}",
          "a\r\nb\r\nc", "CRLF lines");
    check("{{#t}}\nx\n{{/t}}", "{\"t\":true}", "x\n",
          "first and last lines");
    check("a {{#t}}\nb\n{{/t}} c", "{\"t\":true}", "a \nb\n c",
          "tags with text on their line stay");
    check("{{#t}}{{/t}}\nx", "{\"t\":true}", "\nx",
          "two tags on one line are not standalone");
    check("a\n  {{v}}  \nb", "{\"v\":\"V\"}", "a\n  V  \nb",
          "variable tags are not standalone");
    check("a\n{{#t}}\n{{#t}}\nb\n{{/t}}\n{{/t}}\nc", "{\"t\":true}",
          "a\nb\nc", "consecutive standalone lines");
    check("{{#l}}\n{{.}}\n{{/l}}\n", "{\"l\":[\"1\",\"2\"]}", "1\n2\n",
          "standalone lines in a loop");
}


static void
test_errors(void)
{
    int   i;
    char  tpl[512], *p;

    check_error("a\nb\n{{#recent}}\nx", "line 3: unclosed section \"recent\"",
                "unclosed section");
    check_error("{{#a}}\n{{#b}}\n{{/b}}\n", "line 1: unclosed section \"a\"",
                "unclosed outer section");
    check_error("\n\n{{#recent}}\n\n\n\n{{/cart}}",
                "line 7: \"{{/cart}}\" closes \"recent\"", "wrong close");
    check_error("{{#a.b}}{{/a}}", "line 1: \"{{/a}}\" closes \"a.b\"",
                "close must repeat the dotted name");
    check_error("x\n{{/cart}}", "line 2: \"{{/cart}}\" closes no section",
                "close without open");
    check_error("ok\n{{name", "line 2: unterminated tag", "unterminated tag");
    check_error("ok\n{{{name}}", "line 2: unterminated tag",
                "unterminated triple mustache");
    check_error("{{! never\nclosed }", "line 1: unterminated tag",
                "unterminated comment");
    check_error("x{{", "line 1: unterminated tag", "{{ at the end");
    check_error("{{}}", "line 1: empty tag", "empty tag");
    check_error("\n{{  }}", "line 2: empty tag", "blank tag");
    check_error("{{{ }}}", "line 1: empty tag", "empty triple mustache");
    check_error("{{#}}", "line 1: no name after \"#\"",
                "section without name");
    check_error("{{^ }}", "line 1: no name after \"^\"",
                "inverted without name");
    check_error("{{/}}", "line 1: no name after \"/\"", "close without name");
    check_error("{{& }}", "line 1: no name after \"&\"", "raw without name");
    check_error("{{a$b}}", "line 1: invalid name \"a$b\": letters, digits, "
                "\"_\" and \"-\", parts separated by dots",
                "invalid character in a name");
    check_error("{{first name}}", "line 1: invalid name \"first name\": "
                "letters, digits, \"_\" and \"-\", parts separated by dots",
                "blank inside a name");
    check_error("{{a..b}}", "line 1: invalid name \"a..b\": letters, "
                "digits, \"_\" and \"-\", parts separated by dots",
                "empty part in a dotted name");
    check_error("{{#.a}}{{/.a}}", "line 1: invalid name \".a\": letters, "
                "digits, \"_\" and \"-\", parts separated by dots",
                "leading dot");
    check_error("{{{a.}}}", "line 1: invalid name \"a.\": letters, digits, "
                "\"_\" and \"-\", parts separated by dots", "trailing dot");
    check_error("{{\"\x01\n1234567890123456789012345"
                "6789012345678901234567890}}",
                "line 1: invalid name \"???1234567890123456789012345678901"
                "2345678901...\": letters, digits, \"_\" and \"-\", parts "
                "separated by dots", "names in errors are cut and cleaned");
    check_error("{{=<% %>=}}", "line 1: delimiter changes (\"{{=\") are not "
                "supported", "delimiter change");
    check_error("{{> footer}}", "line 1: partials (\"{{>\") are not supported",
                "partial");

    p = tpl;

    for (i = 0; i < LC_TPL_MAX_DEPTH; i++) {
        p += sprintf(p, "{{#%c}}\n", 'a' + i);
    }

    for (i = LC_TPL_MAX_DEPTH; i-- > 0; /* void */) {
        p += sprintf(p, "{{/%c}}", 'a' + i);
    }

    check(tpl, "{\"a\":{\"b\":true},\"c\":true,\"d\":true,\"e\":[true],"
          "\"f\":true,\"g\":true,\"h\":true,\"i\":true,\"j\":true,"
          "\"k\":true,\"l\":true,\"m\":true,\"n\":true,\"o\":true,"
          "\"p\":\"x\"}", "", "16 nested sections compile and render");

    p = tpl;

    for (i = 0; i <= LC_TPL_MAX_DEPTH; i++) {
        p += sprintf(p, "{{%c%c}}\n", (i & 1) ? '^' : '#', 'a' + i);
    }

    for (i = LC_TPL_MAX_DEPTH + 1; i-- > 0; /* void */) {
        p += sprintf(p, "{{/%c}}", 'a' + i);
    }

    check_error(tpl, "line 17: sections nested deeper than 16",
                "17 nested sections");
}


static void
test_unterminated_text(void)
{
    char       err[128], *text, *out;
    buf_t      b;
    lc_tpl_t  *t;

    /* the caller's buffer goes on: "{{a}}", of which only "{{a" is given */
    t = lc_tpl_compile("{{a}}", 3, &alloc, err, sizeof(err));

    ok(t == NULL && strcmp(err, "line 1: unterminated tag") == 0,
       "text ends where len says, not at a NUL");

    text = malloc(7);
    memcpy(text, "x{{a}}y", 7);
    t = lc_tpl_compile(text, 7, &alloc, err, sizeof(err));

    /* the template keeps its own copy */
    memset(text, '#', 7);
    free(text);

    memset(&b, 0, sizeof(buf_t));

    out = NULL;

    if (t) {
        lc_tpl_render(t, parse(&(const char *) { "{\"a\":\"A\"}" }),
                      buf_write, &b);
        buf_write(&b, "", 1);
        out = b.data;
    }

    ok(out && strcmp(out, "xAy") == 0,
       "template without a NUL, freed after compile");

    free(b.data);

    ok(lc_tpl_compile(NULL, 0, &alloc, err, sizeof(err)) != NULL,
       "NULL text of length 0");
}


static void
test_api(void)
{
    char               err[8];
    buf_t              b;
    lc_tpl_t          *t;
    lc_value_t        *obj, *list, *s;
    const char        *p;
    const lc_value_t  *v;

    obj = lc_value_object(&alloc, 2);
    list = lc_value_list(&alloc, 1);
    s = lc_value_string(&alloc, "x", 1, 0);

    ok(lc_value_add(obj, "a", 1, s) == 0
       && lc_value_add(obj, "list", 4, list) == 0
       && lc_value_add(obj, "b", 1, s) == -1
       && lc_value_append(list, s) == 0
       && lc_value_append(list, s) == -1,
       "containers refuse more than their room");

    ok(lc_value_add(NULL, "a", 1, s) == -1
       && lc_value_append(NULL, s) == -1
       && lc_value_add(lc_value_object(&alloc, 1), "a", 1, NULL) == -1
       && lc_value_append(lc_value_list(&alloc, 1), NULL) == -1
       && lc_value_add(list, "a", 1, s) == -1
       && lc_value_append(obj, s) == -1,
       "NULL or mistyped containers and values are refused");

    v = lc_value_get(obj, "list", 4);

    ok(lc_value_get(obj, "a", 1) == s && v == list
       && lc_value_get(obj, "lis", 3) == NULL
       && lc_value_get(s, "a", 1) == NULL
       && lc_value_get(NULL, "a", 1) == NULL,
       "lc_value_get()");

    v = lc_value_uint(&alloc, 18446744073709551615ULL);

    ok(v && v->type == LC_VALUE_STRING && v->len == 20
       && memcmp(v->u.str, "18446744073709551615", 20) == 0
       && lc_value_bool(1)->boolean && !lc_value_bool(0)->boolean,
       "lc_value_uint() of 2^64 - 1, lc_value_bool()");

    p = "{{a}}{{#list}}<{{.}}>{{/list}}{{{a}}}";
    t = lc_tpl_compile(p, strlen(p), &alloc, err, sizeof(err));

    memset(&b, 0, sizeof(buf_t));

    ok(t && lc_tpl_render(t, obj, buf_write, &b) == 5
       && lc_tpl_render_size(t, obj) == 5 && memcmp(b.data, "x<x>x", 5) == 0,
       "tree built with the helpers");

    free(b.data);

    ok(lc_tpl_render_size(t, NULL) == 0, "NULL root");

    ok(lc_tpl_compile("{{#a}}", 6, &alloc, err, sizeof(err)) == NULL
       && strcmp(err, "line 1:") == 0,
       "error message cut to the buffer");

    ok(lc_tpl_compile("{{#a}}", 6, &alloc, NULL, 0) == NULL,
       "no error buffer");
}


static void
test_out_of_memory(void)
{
    int         good;
    char        err[128];
    size_t      n;
    lc_tpl_t   *t;
    arena_t     failing;
    lc_alloc_t  a;

    a.alloc = arena_alloc;
    a.ctx = &failing;
    good = 1;

    for (n = 1; n <= 3; n++) {
        memset(&failing, 0, sizeof(arena_t));
        failing.fail_after = n;

        t = lc_tpl_compile("a{{b}}c", 7, &a, err, sizeof(err));
        good &= (t == NULL && strcmp(err, "out of memory") == 0);

        arena_free(&failing);
    }

    memset(&failing, 0, sizeof(arena_t));
    failing.fail_after = 4;

    good &= lc_tpl_compile("a{{b}}c", 7, &a, err, sizeof(err)) != NULL;
    good &= lc_value_string(&a, "x", 1, 0) == NULL
            && lc_value_uint(&a, 1) == NULL
            && lc_value_list(&a, 1) == NULL
            && lc_value_object(&a, 1) == NULL
            && lc_value_list(&a, SIZE_MAX / 2) == NULL
            && lc_value_object(&a, SIZE_MAX / 4) == NULL;

    arena_free(&failing);

    ok(good, "allocation failures are reported");
}


static void
test_compile_once(void)
{
    int          i, good;
    char         err[128], json[128];
    size_t       len;
    buf_t        b;
    lc_tpl_t    *t;
    const char  *tpl, *p;

    tpl = "{{#recent}}{{title}};{{/recent}}{{^recent}}none{{/recent}}";
    t = compile(tpl, strlen(tpl), err);
    good = (t != NULL);

    memset(&b, 0, sizeof(buf_t));

    for (i = 0; good && i < 100; i++) {
        sprintf(json, "{\"recent\":[{\"title\":\"%d\"},{\"title\":\"%d\"}]}",
                i, i + 1);
        p = (i % 10 == 0) ? "{\"recent\":[]}" : json;

        b.len = 0;
        len = lc_tpl_render(t, parse(&p), buf_write, &b);
        buf_write(&b, "", 1);

        sprintf(json, "%d;%d;", i, i + 1);

        good = (len == b.len - 1)
               && strcmp(b.data, (i % 10 == 0) ? "none" : json) == 0;
    }

    free(b.data);

    ok(good, "compiled once, rendered 100 times with other data");
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
    char               err[128], *text;
    size_t             len, n, at, size, compiled, rejected, bad;
    buf_t              b;
    lc_tpl_t          *t;
    const char        *p, *json;
    unsigned long      i;
    const lc_value_t  *data;

    static const char  *seeds[] = {
        "<ul>\n{{#recent}}\n  <li><a href=\"{{link}}\">{{title}}</a>"
        "</li>\n{{/recent}}\n</ul>\n{{^recent}}nothing yet{{/recent}}",
        "Hello {{visitor.stage}} from {{ visitor.country }}! {{! note }}"
        "{{{html}}} {{& html}} {{#cart}}{{count}} items{{/cart}}",
        "{{#l}}{{#.}}{{.}}{{/.}}{{/l}}{{^t}}{{#recent}}{{visitor.stage}}"
        "{{/recent}}{{/t}}",
        "{{#a}}{{#b}}{{#c}}{{x}}{{/c}}{{/b}}{{/a}}\r\n  {{! x }}  \r\n"
    };

    static const char  *tokens[] = {
        "{{", "}}", "{{{", "}}}", "{", "}", "#", "^", "/", "!", "&", ".",
        "=", ">", " ", "\n", "\r\n", "\t", "a", "recent", "{{#recent}}",
        "{{/recent}}", "{{^l}}", "{{/l}}", "{{.}}", "{{#.}}", "{{/.}}",
        "{{x}}", "{{{html}}}", "{{!", "visitor.stage", "{{#t}}", "{{/t}}",
        "{{#l}}", "{{#a}}", "{{/a}}", "\0", "\xff"
    };

    json = "{\"recent\":[{\"title\":\"<t>\",\"link\":\"/a&b\"},"
           "{\"title\":\"2\"}],"
           "\"visitor\":{\"stage\":\"cart\",\"country\":\"DE\"},"
           "\"html\":!\"<b>\",\"cart\":{\"count\":#2},\"t\":true,"
           "\"l\":[[\"1\",\"2\"],[],\"s\"],\"a\":{\"b\":[{\"c\":#1}]},"
           "\"x\":\"x\"}";
    p = json;
    data = parse(&p);

    text = malloc(4096);
    memset(&b, 0, sizeof(buf_t));
    compiled = 0;
    rejected = 0;
    bad = 0;

    for (i = 0; i < iterations; i++) {
        p = seeds[fuzz_rand(sizeof(seeds) / sizeof(seeds[0]))];
        len = strlen(p);
        memcpy(text, p, len);

        for (n = 1 + fuzz_rand(6); n; n--) {
            at = fuzz_rand((unsigned) len + 1);

            switch (fuzz_rand(5)) {

            case 0:
                /* insert a token */
                p = tokens[fuzz_rand(sizeof(tokens) / sizeof(tokens[0]))];
                size = p[0] ? strlen(p) : 1;

                if (len + size < 4000) {
                    memmove(text + at + size, text + at, len - at);
                    memcpy(text + at, p, size);
                    len += size;
                }

                break;

            case 1:
                /* delete a span */
                size = fuzz_rand((unsigned) (len - at) + 1);
                memmove(text + at, text + at + size, len - at - size);
                len -= size;
                break;

            case 2:
                /* duplicate a span */
                size = fuzz_rand((unsigned) (len - at) + 1);

                if (len + size < 4000) {
                    memmove(text + at + size, text + at, len - at);
                    len += size;
                }

                break;

            case 3:
                /* one random byte */
                if (at < len) {
                    text[at] = (char) fuzz_rand(256);
                }

                break;

            default:
                len = at;
                break;
            }
        }

        t = compile(text, len, err);

        if (t == NULL) {
            rejected++;

            if (strncmp(err, "line ", 5) != 0) {
                bad++;
                diag_str("error without a line", err);
            }

            continue;
        }

        compiled++;
        b.len = 0;

        if (lc_tpl_render(t, data, buf_write, &b) != b.len
            || lc_tpl_render_size(t, data) != b.len)
        {
            bad++;
        }

        /* the arena would grow for ever: start afresh now and then */
        if (i % 256 == 0) {
            arena_free(&arena);
            p = json;
            data = parse(&p);
        }
    }

    free(text);
    free(b.data);

    printf("# fuzz: %zu compiled, %zu rejected\n", compiled, rejected);

    ok(bad == 0 && compiled > iterations / 20 && rejected > iterations / 20,
       "fuzz: random mutated templates compile or fail cleanly and render");
}


static lc_tpl_t *
compile(const char *text, size_t len, char *err)
{
    char      *copy;
    lc_tpl_t  *t;

    /* exactly len bytes, no NUL after them */
    copy = malloc(len ? len : 1);
    memcpy(copy, text, len);

    err[0] = '\0';
    t = lc_tpl_compile(copy, len, &alloc, err, 128);

    free(copy);

    return t;
}


static char *
render(const char *tpl, const char *json, char *err)
{
    buf_t        b;
    size_t       n;
    lc_tpl_t          *t;
    const lc_value_t  *root;

    t = compile(tpl, strlen(tpl), err);
    if (t == NULL) {
        return NULL;
    }

    root = parse(&json);

    memset(&b, 0, sizeof(buf_t));
    n = lc_tpl_render(t, root, buf_write, &b);

    if (n != b.len || lc_tpl_render_size(t, root) != n) {
        strcpy(err, "rendered length differs from the returned length");
        free(b.data);
        return NULL;
    }

    buf_write(&b, "", 1);

    return b.data;
}


static void
check(const char *tpl, const char *json, const char *expect, const char *name)
{
    int    good;
    char   err[128], msg[160], *out;

    out = render(tpl, json, err);

    if (out == NULL) {
        snprintf(msg, sizeof(msg), "ERROR: %s", err);
        good = (strcmp(msg, expect) == 0);

    } else {
        good = (strcmp(out, expect) == 0);
    }

    ok(good, name);

    if (!good) {
        diag_str("template", tpl);
        diag_str("got", out ? out : msg);
        diag_str("expected", expect);
    }

    free(out);
}


static void
check_error(const char *tpl, const char *expect, const char *name)
{
    char       err[128];
    lc_tpl_t  *t;

    t = compile(tpl, strlen(tpl), err);

    ok(t == NULL && strcmp(err, expect) == 0, name);

    if (t || strcmp(err, expect) != 0) {
        diag_str("template", tpl);
        diag_str("got", t ? "(compiled)" : err);
        diag_str("expected", expect);
    }
}


/*
 * Test data in a JSON-like notation: "..." strings (with \" \\ \n \uXXXX
 * below 0x800), !"..." trusted strings, #N numbers from lc_value_uint(),
 * true, false, null, [..] and {..}.
 */
static const lc_value_t *
parse(const char **pp)
{
    int                object, trusted;
    char              *s, *q;
    size_t             i, n, len, keylens[64];
    unsigned           u;
    lc_value_t        *v;
    const char        *p, *keys[64];
    const lc_value_t  *items[64];

    p = *pp;

    if (*p == '{' || *p == '[') {
        object = (*p == '{');
        n = 0;

        for (p++; *p != '}' && *p != ']'; /* void */) {
            if (*p == ',') {
                p++;
            }

            if (object) {
                len = strcspn(p + 1, "\"");
                keys[n] = p + 1;
                keylens[n] = len;
                p += len + 3;
            }

            items[n++] = parse(&p);
        }

        *pp = p + 1;

        v = object ? lc_value_object(&alloc, n) : lc_value_list(&alloc, n);

        for (i = 0; i < n; i++) {
            if (object) {
                lc_value_add(v, keys[i], keylens[i], items[i]);

            } else {
                lc_value_append(v, items[i]);
            }
        }

        return v;
    }

    if (*p == '#') {
        v = lc_value_uint(&alloc, strtoull(p + 1, (char **) &p, 10));
        *pp = p;
        return v;
    }

    if (strncmp(p, "true", 4) == 0 || strncmp(p, "false", 5) == 0) {
        *pp = p + (p[0] == 't' ? 4 : 5);
        return lc_value_bool(p[0] == 't');
    }

    if (strncmp(p, "null", 4) == 0) {
        *pp = p + 4;
        v = arena_alloc(&arena, sizeof(lc_value_t));
        memset(v, 0, sizeof(lc_value_t));
        return v;
    }

    trusted = (*p == '!');
    p += trusted + 1;

    s = arena_alloc(&arena, strlen(p) + 1);
    q = s;

    while (*p != '"') {
        if (*p != '\\') {
            *q++ = *p++;
            continue;
        }

        p++;

        switch (*p++) {

        case 'n':
            *q++ = '\n';
            break;

        case 'u':
            sscanf(p, "%4x", &u);
            p += 4;

            if (u < 0x80) {
                *q++ = (char) u;

            } else {
                *q++ = (char) (0xc0 | (u >> 6));
                *q++ = (char) (0x80 | (u & 0x3f));
            }

            break;

        default:
            *q++ = p[-1];
            break;
        }
    }

    *pp = p + 1;

    return lc_value_string(&alloc, s, q - s, trusted);
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
buf_write(void *ctx, const char *data, size_t len)
{
    buf_t  *b;

    b = ctx;

    if (b->len + len > b->size) {
        b->size = (b->len + len) * 2 + 64;
        b->data = realloc(b->data, b->size);

        if (b->data == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
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


/* one "# what: ..." line, with newlines and control bytes made visible */
static void
diag_str(const char *what, const char *s)
{
    printf("# %s: \"", what);

    for ( /* void */ ; *s; s++) {
        if (*s == '\n') {
            printf("\\n");

        } else if ((unsigned char) *s < 0x20) {
            printf("\\x%02x", (unsigned char) *s);

        } else {
            putchar(*s);
        }
    }

    printf("\"\n");
}


/* lc_tpl_uses(): the first part of any tag's name, at any depth */

static void
test_uses(void)
{
    char       err[128];
    lc_tpl_t  *t;

    static const char  text[] = "{{! recent }}<p>{{visitor.stage}}</p>"
                                "{{#cart}}{{count}}{{/cart}}"
                                "{{^product}}x{{/product}}{{{raw.x}}}";

    t = lc_tpl_compile(text, sizeof(text) - 1, &alloc, err, sizeof(err));

    ok(t != NULL, "uses: compiles");

    if (t == NULL) {
        return;
    }

    ok(lc_tpl_uses(t, "visitor", 7),
       "uses: a dotted name counts by its first part");
    ok(lc_tpl_uses(t, "cart", 4), "uses: a section");
    ok(lc_tpl_uses(t, "count", 5), "uses: a name inside a section");
    ok(lc_tpl_uses(t, "product", 7), "uses: an inverted section");
    ok(lc_tpl_uses(t, "raw", 3), "uses: a raw tag");
    ok(!lc_tpl_uses(t, "recent", 6), "uses: not a comment");
    ok(!lc_tpl_uses(t, "stage", 5), "uses: not a later part of a name");
    ok(!lc_tpl_uses(t, "vis", 3), "uses: not a prefix");
}
