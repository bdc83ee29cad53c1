
/*
 * lifecycle-agent: a message from its record. The data the templates
 * see is read from Redis (profile, session, cart) and the catalog, the
 * templates render the subject and the parts, and the result becomes
 * an RFC 5322 message (multipart/alternative) and a JSON document.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "lc_agent.h"


/* products a message lists at most */
#define LC_AGENT_LIST_MAX    6

/* bytes of UTF-8 in one encoded word: 60 base64 characters */
#define LC_AGENT_WORD_BYTES  45


/* what the templates of one message are built from */
typedef struct {
    lc_agent_msg_ref_t         *ref;
    redisReply                 *profile;      /* HGETALL lc:{hh}:v:VID */
    redisReply                 *cart;         /* HGETALL ...:cart */
    redisReply                 *session;      /* HMGET p c start of N */
    const char                 *email;
    lc_agent_buf_t              recent;       /* ids, "\n" between */
    lc_agent_buf_t              products;     /* this session's */
    lc_agent_buf_t              categories;
    const char                 *top_category;
    size_t                      top_len;
    long long                   session_views;
} lc_agent_data_t;


static const char  lc_agent_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


/*
 * Whatever goes into a header passes this: no control character at
 * all (CR and LF above all, tab too), no DEL. Addresses were checked by
 * lc_email_normalize() already; this is the second lock.
 */

int
lc_agent_header_safe(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) {
            return 0;
        }
    }

    return 1;
}


static int
lc_agent_ascii(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if ((unsigned char) s[i] >= 0x80) {
            return 0;
        }
    }

    return 1;
}


static void
lc_agent_base64(lc_agent_buf_t *b, const unsigned char *s, size_t len)
{
    size_t  i;
    char    q[4];

    for (i = 0; i < len; i += 3) {
        q[0] = lc_agent_b64[s[i] >> 2];
        q[1] = lc_agent_b64[((s[i] & 3) << 4)
                            | (i + 1 < len ? s[i + 1] >> 4 : 0)];
        q[2] = i + 1 < len
               ? lc_agent_b64[((s[i + 1] & 0xf) << 2)
                              | (i + 2 < len ? s[i + 2] >> 6 : 0)]
               : '=';
        q[3] = i + 2 < len ? lc_agent_b64[s[i + 2] & 0x3f] : '=';
        lc_agent_buf_add(b, q, 4);
    }
}


/*
 * "Name: value" and CRLF. A value that is not plain ASCII goes as RFC
 * 2047 encoded words (UTF-8, base64), each on its own folded line and
 * never splitting a character. The caller checked lc_agent_header_safe().
 */

void
lc_agent_header_encode(lc_agent_buf_t *b, const char *name, const char *value)
{
    size_t                len, i, n;
    const unsigned char  *s;

    lc_agent_buf_str(b, name);
    lc_agent_buf_add(b, ": ", 2);

    len = strlen(value);

    if (lc_agent_ascii(value, len)) {
        lc_agent_buf_add(b, value, len);
        lc_agent_buf_add(b, "\r\n", 2);
        return;
    }

    s = (const unsigned char *) value;

    for (i = 0; i < len; i += n) {
        n = len - i < LC_AGENT_WORD_BYTES ? len - i : LC_AGENT_WORD_BYTES;

        /* back to the start of a character: never a continuation byte */
        while (i + n < len && n > 1 && (s[i + n] & 0xc0) == 0x80) {
            n--;
        }

        if (i) {
            lc_agent_buf_add(b, "\r\n ", 3);
        }

        lc_agent_buf_add(b, "=?UTF-8?B?", 10);
        lc_agent_base64(b, s + i, n);
        lc_agent_buf_add(b, "?=", 2);
    }

    lc_agent_buf_add(b, "\r\n", 2);
}


/*
 * Quoted-printable (RFC 2045): lines of 76 characters at most, "\n" and
 * "\r\n" become CRLF, "=", bytes outside printable ASCII and blanks at
 * a line's end are encoded. No "=" is left unencoded, so a boundary
 * that starts with "=_" can never appear in an encoded part.
 */

void
lc_agent_qp(lc_agent_buf_t *b, const char *s, size_t len)
{
    size_t          i, col;
    char            enc[4];
    unsigned char   c;
    int             last;
    static const char  hex[] = "0123456789ABCDEF";

    col = 0;

    for (i = 0; i < len; i++) {
        c = (unsigned char) s[i];

        if (c == '\r' && i + 1 < len && s[i + 1] == '\n') {
            continue;
        }

        if (c == '\n') {
            lc_agent_buf_add(b, "\r\n", 2);
            col = 0;
            continue;
        }

        last = (i + 1 == len || s[i + 1] == '\n'
                || (s[i + 1] == '\r' && i + 2 < len && s[i + 2] == '\n'));

        if ((c >= 33 && c <= 126 && c != '=')
            || ((c == ' ' || c == '\t') && !last))
        {
            if (col + 1 > 75) {
                lc_agent_buf_add(b, "=\r\n", 3);
                col = 0;
            }

            lc_agent_buf_add(b, (char *) &c, 1);
            col++;
            continue;
        }

        if (col + 3 > 75) {
            lc_agent_buf_add(b, "=\r\n", 3);
            col = 0;
        }

        enc[0] = '=';
        enc[1] = hex[c >> 4];
        enc[2] = hex[c & 0xf];
        lc_agent_buf_add(b, enc, 3);
        col += 3;
    }
}


/*
 * "From: Name <addr>": a display name that is not ASCII is encoded on
 * its own, the address never is.
 */

void
lc_agent_from_encode(lc_agent_buf_t *b, const char *from)
{
    char        *name;
    size_t       n;
    const char  *lt;

    lt = strchr(from, '<');

    if (lt == NULL || lc_agent_ascii(from, strlen(from))) {
        lc_agent_header_encode(b, "From", from);
        return;
    }

    for (n = lt - from; n && from[n - 1] == ' '; n--) { /* void */ }

    name = strndup(from, n);
    if (name == NULL) {
        b->failed = 1;
        return;
    }

    lc_agent_header_encode(b, "From", name);
    free(name);

    if (b->failed) {
        return;
    }

    /* the CRLF the encoder ended with: the address goes on that line */
    b->len -= 2;
    b->data[b->len] = '\0';
    lc_agent_buf_printf(b, " %s\r\n", lt);
}


/* "<url>?t=PID.SIG": the link the module's unsubscribe endpoint honours */

int
lc_agent_unsubscribe_url(lc_agent_conf_t *cf, const char *pid,
    lc_agent_buf_t *b)
{
    unsigned char  token[LC_TOKEN_LEN];

    if (strlen(pid) != LC_PERSON_ID_LEN || !lc_agent_is_hex(pid,
                                                             LC_PERSON_ID_LEN))
    {
        return -1;
    }

    lc_unsubscribe_token(cf->secret, cf->secret_len,
                         (const unsigned char *) pid, token);

    lc_agent_buf_str(b, cf->unsubscribe_url);
    lc_agent_buf_str(b, strchr(cf->unsubscribe_url, '?') ? "&t=" : "?t=");
    lc_agent_buf_add(b, (char *) token, LC_TOKEN_LEN);

    return b->failed ? -1 : 0;
}


/* the address of "Name <addr>" or "addr" */

static void
lc_agent_from_address(const char *from, const char **addr, size_t *len)
{
    const char  *lt, *gt;

    lt = strchr(from, '<');
    gt = lt ? strchr(lt, '>') : NULL;

    if (lt && gt) {
        *addr = lt + 1;
        *len = gt - lt - 1;
        return;
    }

    *addr = from;
    *len = strlen(from);
}


/*
 * The whole message: headers, then a text part and, with an HTML
 * template, an HTML part as alternatives. Every header value is checked
 * again here: a control character anywhere refuses the message.
 */

int
lc_agent_mime(lc_agent_conf_t *cf, lc_agent_msg_t *m, long long now)
{
    char             date[64], *at;
    size_t           alen;
    time_t           sec;
    struct tm        tm;
    const char      *addr;
    lc_agent_buf_t   b = { NULL, 0, 0, 0 };

    if (cf->smtp_from == NULL
        || !lc_agent_header_safe(cf->smtp_from, strlen(cf->smtp_from))
        || !lc_agent_header_safe(m->to, strlen(m->to))
        || !lc_agent_header_safe(m->subject, strlen(m->subject))
        || !lc_agent_header_safe(m->unsubscribe, strlen(m->unsubscribe))
        || strpbrk(m->to, "<>,; \"") != NULL)
    {
        return -1;
    }

    sec = (time_t) (now / 1000);
    gmtime_r(&sec, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);

    lc_agent_from_address(cf->smtp_from, &addr, &alen);
    at = memchr(addr, '@', alen);

    lc_agent_buf_printf(&b, "Date: %s\r\n", date);
    lc_agent_from_encode(&b, cf->smtp_from);
    lc_agent_buf_printf(&b, "To: <%s>\r\n", m->to);
    lc_agent_header_encode(&b, "Subject", m->subject);

    if (at) {
        lc_agent_buf_printf(&b, "Message-ID: <%s@%.*s>\r\n", m->ref->id,
                            (int) (addr + alen - at - 1), at + 1);

    } else {
        lc_agent_buf_printf(&b, "Message-ID: <%s@lifecycle.invalid>\r\n",
                            m->ref->id);
    }

    lc_agent_buf_printf(&b, "List-Unsubscribe: <%s>\r\n"
                        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                        "Auto-Submitted: auto-generated\r\n"
                        "X-Lifecycle-Kind: %s\r\n"
                        "X-Lifecycle-Id: %s\r\n"
                        "MIME-Version: 1.0\r\n",
                        m->unsubscribe, lc_agent_kind_names[m->ref->kind],
                        m->ref->id);

    if (m->html == NULL) {
        lc_agent_buf_str(&b, "Content-Type: text/plain; charset=utf-8\r\n"
                         "Content-Transfer-Encoding: quoted-printable\r\n"
                         "\r\n");
        lc_agent_qp(&b, m->text, strlen(m->text));
        lc_agent_buf_add(&b, "\r\n", 2);

    } else {
        lc_agent_buf_printf(&b,
                        "Content-Type: multipart/alternative; "
                        "boundary=\"=_lc_%s\"\r\n"
                        "\r\n"
                        "--=_lc_%s\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n"
                        "Content-Transfer-Encoding: quoted-printable\r\n"
                        "\r\n", m->ref->id, m->ref->id);
        lc_agent_qp(&b, m->text, strlen(m->text));
        lc_agent_buf_printf(&b,
                        "\r\n--=_lc_%s\r\n"
                        "Content-Type: text/html; charset=utf-8\r\n"
                        "Content-Transfer-Encoding: quoted-printable\r\n"
                        "\r\n", m->ref->id);
        lc_agent_qp(&b, m->html, strlen(m->html));
        lc_agent_buf_printf(&b, "\r\n--=_lc_%s--\r\n", m->ref->id);
    }

    if (b.failed) {
        lc_agent_buf_free(&b);
        return -1;
    }

    m->eml_len = b.len;
    m->eml = lc_agent_buf_take(&b);

    return m->eml ? 0 : -1;
}


/* template data as JSON: what the webhook and the outbox's .json carry */

static json_t *
lc_agent_value_json(const lc_value_t *v)
{
    size_t      i;
    json_t     *j;
    json_int_t  n;

    switch (v->type) {

    case LC_VALUE_BOOL:
        return json_boolean(v->boolean);

    case LC_VALUE_STRING:
        if (v->number) {
            /* the digits of lc_value_uint() are not NUL-terminated */
            n = 0;
            for (i = 0; i < v->len; i++) {
                n = n * 10 + (v->u.str[i] - '0');
            }

            return json_integer(n);
        }

        return json_stringn_nocheck(v->u.str, v->len);

    case LC_VALUE_LIST:
        j = json_array();
        for (i = 0; j && i < v->len; i++) {
            json_array_append_new(j, lc_agent_value_json(v->u.items[i]));
        }
        return j;

    case LC_VALUE_OBJECT:
        j = json_object();
        for (i = 0; j && i < v->len; i++) {
            json_object_setn_new_nocheck(j, v->u.members[i].key,
                                         v->u.members[i].keylen,
                              lc_agent_value_json(v->u.members[i].value));
        }
        return j;

    default:
        return json_null();
    }
}


/* subject, text and HTML from the templates, then the MIME and JSON */

static void
lc_agent_render_part(const lc_tpl_t *t, const lc_value_t *data,
    lc_agent_buf_t *b)
{
    if (t) {
        lc_tpl_render(t, data, lc_agent_buf_write, b);
    }
}


/*
 * The subject and the text part are rendered from "text" (every value
 * trusted: text is not HTML), the HTML part from "html" (only catalog
 * values raw in {{{ }}}).
 */

int
lc_agent_render(lc_agent_t *ag, lc_agent_msg_t *m, const lc_value_t *text,
    const lc_value_t *html)
{
    char             *s, *e;
    json_t           *j;
    lc_agent_conf_t  *cf;
    lc_agent_buf_t    b = { NULL, 0, 0, 0 };

    cf = ag->conf;

    /* the subject: one line, blanks around it dropped */
    lc_agent_render_part(cf->tpl[m->ref->kind][LC_AGENT_PART_SUBJECT], text,
                         &b);
    s = lc_agent_buf_take(&b);
    if (s == NULL) {
        return -1;
    }

    for (e = s + strlen(s); e > s && (e[-1] == '\n' || e[-1] == '\r'
                                      || e[-1] == ' ' || e[-1] == '\t'); )
    {
        *--e = '\0';
    }

    m->subject = s;

    lc_agent_render_part(cf->tpl[m->ref->kind][LC_AGENT_PART_TEXT], text,
                         &b);
    m->text = lc_agent_buf_take(&b);

    if (m->text == NULL) {
        return -1;
    }

    if (cf->tpl[m->ref->kind][LC_AGENT_PART_HTML]) {
        lc_agent_render_part(cf->tpl[m->ref->kind][LC_AGENT_PART_HTML], html,
                             &b);
        m->html = lc_agent_buf_take(&b);

        if (m->html == NULL) {
            return -1;
        }
    }

    if (cf->channel != LC_AGENT_WEBHOOK
        && lc_agent_mime(cf, m, lc_agent_now()) != 0)
    {
        lc_agent_log(LC_AGENT_LOG_ERROR, "message %s: refused: a header "
                     "would hold a control character", m->ref->id);
        return -1;
    }

    j = json_pack("{s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:I}",
                  "id", m->ref->id,
                  "kind", lc_agent_kind_names[m->ref->kind],
                  "step", m->ref->step,
                  "to", m->to,
                  "person", m->ref->pid,
                  "subject", m->subject,
                  "text", m->text,
                  "unsubscribe_url", m->unsubscribe,
                  "created", (json_int_t) m->ref->created);

    if (j == NULL) {
        return -1;
    }

    if (m->ref->vid[0]) {
        json_object_set_new(j, "visitor", json_string(m->ref->vid));
        json_object_set_new(j, "session", json_integer(m->ref->sess));
    }

    json_object_set_new(j, "html", m->html ? json_string(m->html)
                                           : json_null());
    json_object_set_new(j, "data", lc_agent_value_json(html));

    m->json = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);

    if (m->json == NULL) {
        return -1;
    }

    m->json_len = strlen(m->json);

    return 0;
}


void
lc_agent_msg_free(lc_agent_msg_t *m)
{
    free(m->subject);
    free(m->text);
    free(m->html);
    free(m->unsubscribe);
    free(m->eml);
    free(m->json);

    m->subject = m->text = m->html = m->unsubscribe = m->eml = NULL;
    m->json = NULL;
}


/* an absolute URL for a catalog link that is a path on the site */

static const lc_value_t *
lc_agent_absolute(lc_agent_conf_t *cf, lc_agent_arena_t *a, const char *s,
    size_t len)
{
    char    *p;
    size_t   base;

    if (cf->site_url == NULL || len == 0 || s[0] != '/') {
        return lc_value_string(&a->alloc, s, len, 1);
    }

    base = strlen(cf->site_url);
    while (base && cf->site_url[base - 1] == '/') {
        base--;
    }

    p = lc_agent_alloc(a, base + len);
    if (p == NULL) {
        return NULL;
    }

    memcpy(p, cf->site_url, base);
    memcpy(p + base, s, len);

    return lc_value_string(&a->alloc, p, base + len, 1);
}


/*
 * A product as the module's templates see it: every column of its
 * catalog row (trusted: the feed is the shop's) and "category", links
 * made absolute with site_url; unknown to the catalog, only its id,
 * which came from a request.
 */

static const lc_value_t *
lc_agent_product(lc_agent_conf_t *cf, lc_agent_arena_t *a, const char *id,
    size_t len, int trusted_all)
{
    size_t               i, n;
    lc_value_t          *obj;
    const lc_str_t      *names;
    const lc_value_t    *v;
    const lc_product_t  *p;

    p = lc_catalog_find(cf->catalog, id, len);

    if (p == NULL) {
        obj = lc_value_object(&a->alloc, 1);
        v = lc_value_string(&a->alloc, id, len, trusted_all);

        if (obj == NULL || lc_value_add(obj, "id", 2, v) != 0) {
            return NULL;
        }

        return obj;
    }

    n = lc_catalog_columns(cf->catalog, &names);

    obj = lc_value_object(&a->alloc, n + 1);
    v = lc_value_string(&a->alloc, p->category.data, p->category.len, 1);

    if (obj == NULL || lc_value_add(obj, "category", 8, v) != 0) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        if ((names[i].len == 4 && memcmp(names[i].data, "link", 4) == 0)
            || (names[i].len == 10
                && memcmp(names[i].data, "image_link", 10) == 0))
        {
            v = lc_agent_absolute(cf, a, p->values[i].data, p->values[i].len);

        } else {
            v = lc_value_string(&a->alloc, p->values[i].data,
                                p->values[i].len, 1);
        }

        if (v == NULL
            || lc_value_add(obj, names[i].data, names[i].len, v) != 0)
        {
            return NULL;
        }
    }

    return obj;
}


/* a "\n" list of ids (the module's) as a list of products, N at most */

static lc_value_t *
lc_agent_products(lc_agent_conf_t *cf, lc_agent_arena_t *a, const char *s,
    size_t len, size_t max, int trusted_all)
{
    size_t             n, idlen;
    const char        *p, *end, *id;
    lc_value_t        *list;
    const lc_value_t  *v;

    list = lc_value_list(&a->alloc, max);
    if (list == NULL) {
        return NULL;
    }

    p = s;
    end = s + len;

    for (n = 0; n < max && (id = lc_list_next(&p, end, &idlen)); n++) {
        v = lc_agent_product(cf, a, id, idlen, trusted_all);
        if (v == NULL || lc_value_append(list, v) != 0) {
            return NULL;
        }
    }

    return list;
}


static lc_value_t *
lc_agent_strings(lc_agent_arena_t *a, const char *s, size_t len, size_t max,
    int trusted)
{
    size_t       n, ilen;
    const char  *p, *end, *item;
    lc_value_t  *list;

    list = lc_value_list(&a->alloc, max);
    if (list == NULL) {
        return NULL;
    }

    p = s;
    end = s + len;

    for (n = 0; n < max && (item = lc_list_next(&p, end, &ilen)); n++) {
        if (lc_value_append(list, lc_value_string(&a->alloc, item, ilen,
                                                  trusted))
            != 0)
        {
            return NULL;
        }
    }

    return list;
}


static const char *
lc_agent_field(const redisReply *hash, const char *name, size_t *len)
{
    const redisReply  *v;

    v = lc_agent_hash_get(hash, name);

    if (v == NULL || v->type != REDIS_REPLY_STRING) {
        *len = 0;
        return "";
    }

    *len = v->len;

    return v->str;
}


/* the current session's products: the start of "r" (lifecycle_keys.h) */

static const char *
lc_agent_session_products(const redisReply *profile, size_t *len)
{
    size_t       n;
    const char  *r;

    r = lc_agent_field(profile, "r", len);
    *len = lc_session_products(*len,
                               strtoll(lc_agent_field(profile, "s.pb", &n),
                                       NULL, 10));

    return r;
}


static int
lc_agent_add_str(lc_agent_arena_t *a, lc_value_t *obj, const char *key,
    const char *s, size_t len, int trusted)
{
    return lc_value_add(obj, key, strlen(key),
                        lc_value_string(&a->alloc, s, len, trusted));
}


/* "cart": count, value and currency from catalog prices, the items */

static lc_value_t *
lc_agent_cart(lc_agent_conf_t *cf, lc_agent_arena_t *a, redisReply *cart,
    int trusted_all)
{
    char                 value[32];
    size_t               i, k, n;
    long long            qty, count;
    lc_value_t          *obj, *items, *item;
    const lc_value_t    *p;
    unsigned long long   minor;
    const lc_product_t  *prod;
    const lc_str_t      *currency;

    n = (cart && cart->type == REDIS_REPLY_ARRAY) ? cart->elements / 2 : 0;

    obj = lc_value_object(&a->alloc, 4);
    items = lc_value_list(&a->alloc, n);

    if (obj == NULL || items == NULL) {
        return NULL;
    }

    minor = 0;
    count = 0;
    currency = NULL;

    for (i = 0; i < n; i++) {
        qty = lc_agent_reply_ll(cart->element[2 * i + 1]);
        if (qty <= 0) {
            continue;
        }

        count += qty;

        p = lc_agent_product(cf, a, cart->element[2 * i]->str,
                             cart->element[2 * i]->len, trusted_all);
        if (p == NULL) {
            return NULL;
        }

        /* the product with its quantity: a copy with one member more */
        item = lc_value_object(&a->alloc, p->len + 1);
        if (item == NULL
            || lc_value_add(item, "qty", 3, lc_value_uint(&a->alloc, qty))
               != 0)
        {
            return NULL;
        }

        for (k = 0; k < p->len; k++) {
            lc_value_add(item, p->u.members[k].key, p->u.members[k].keylen,
                         p->u.members[k].value);
        }

        if (lc_value_append(items, item) != 0) {
            return NULL;
        }

        prod = lc_catalog_find(cf->catalog, cart->element[2 * i]->str,
                               cart->element[2 * i]->len);

        if (prod && prod->price_minor) {
            minor += prod->price_minor * (unsigned long long) qty;

            if (currency == NULL && prod->currency.len) {
                currency = &prod->currency;
            }
        }
    }

    if (lc_value_add(obj, "count", 5, lc_value_uint(&a->alloc, count)) != 0
        || lc_value_add(obj, "items", 5, items) != 0)
    {
        return NULL;
    }

    if (minor) {
        n = snprintf(value, sizeof(value), "%llu.%02llu", minor / 100,
                     minor % 100);

        if (lc_value_add(obj, "value", 5,
                         lc_value_string(&a->alloc,
                                         lc_agent_strndup(a, value, n), n, 1))
            != 0)
        {
            return NULL;
        }

        if (currency
            && lc_agent_add_str(a, obj, "currency", currency->data,
                                currency->len, 1) != 0)
        {
            return NULL;
        }
    }

    return obj;
}


/*
 * The data of a message (README, "Templates and their data"):
 * kind, step, person.email, visitor (id, visits, views, country,
 * city), recent, recent_count, top_category, session (products,
 * product_count, categories, views), cart (count, value, currency,
 * items), unsubscribe_url, site_url.
 */

static const lc_value_t *
lc_agent_tree(lc_agent_conf_t *cf, lc_agent_data_t *d, lc_agent_msg_t *m,
    lc_agent_arena_t *a, int trusted_all)
{
    size_t       len;
    const char  *s;
    lc_value_t  *root, *person, *visitor, *session, *v;

    root = lc_value_object(&a->alloc, 13);
    person = lc_value_object(&a->alloc, 1);
    visitor = lc_value_object(&a->alloc, 5);
    session = lc_value_object(&a->alloc, 4);

    if (root == NULL || person == NULL || visitor == NULL || session == NULL)
    {
        return NULL;
    }

    if (lc_agent_add_str(a, root, "kind", lc_agent_kind_names[d->ref->kind],
                         strlen(lc_agent_kind_names[d->ref->kind]), 1) != 0
        || lc_value_add(root, "step", 4,
                        lc_value_uint(&a->alloc, d->ref->step)) != 0
        || lc_agent_add_str(a, person, "email", d->email, strlen(d->email),
                            trusted_all) != 0
        || lc_value_add(root, "person", 6, person) != 0
        || lc_agent_add_str(a, visitor, "id", d->ref->vid,
                            strlen(d->ref->vid), 1) != 0)
    {
        return NULL;
    }

    s = lc_agent_field(d->profile, "visits", &len);
    if (lc_value_add(visitor, "visits", 6,
                     lc_value_uint(&a->alloc, strtoull(s, NULL, 10))) != 0)
    {
        return NULL;
    }

    s = lc_agent_field(d->profile, "views", &len);
    if (lc_value_add(visitor, "views", 5,
                     lc_value_uint(&a->alloc, strtoull(s, NULL, 10))) != 0)
    {
        return NULL;
    }

    s = lc_agent_field(d->profile, "country", &len);
    if (len && lc_agent_add_str(a, visitor, "country", s, len, trusted_all)
               != 0)
    {
        return NULL;
    }

    s = lc_agent_field(d->profile, "city", &len);
    if (len && lc_agent_add_str(a, visitor, "city", s, len, trusted_all) != 0)
    {
        return NULL;
    }

    if (lc_value_add(root, "visitor", 7, visitor) != 0) {
        return NULL;
    }

    v = lc_agent_products(cf, a, d->recent.data ? d->recent.data : "",
                          d->recent.len, LC_AGENT_LIST_MAX, trusted_all);
    if (v == NULL || lc_value_add(root, "recent", 6, v) != 0
        || lc_value_add(root, "recent_count", 12,
                        lc_value_uint(&a->alloc, v->len)) != 0)
    {
        return NULL;
    }

    if (d->top_len
        && lc_agent_add_str(a, root, "top_category", d->top_category,
                            d->top_len, trusted_all) != 0)
    {
        return NULL;
    }

    v = lc_agent_products(cf, a, d->products.data ? d->products.data : "",
                          d->products.len, LC_AGENT_LIST_MAX, trusted_all);
    if (v == NULL || lc_value_add(session, "products", 8, v) != 0
        || lc_value_add(session, "product_count", 13,
                        lc_value_uint(&a->alloc, v->len)) != 0)
    {
        return NULL;
    }

    v = lc_agent_strings(a, d->categories.data ? d->categories.data : "",
                         d->categories.len, LC_AGENT_LIST_MAX, trusted_all);
    if (v == NULL || lc_value_add(session, "categories", 10, v) != 0
        || lc_value_add(session, "views", 5,
                        lc_value_uint(&a->alloc, d->session_views)) != 0
        || lc_value_add(root, "session", 7, session) != 0)
    {
        return NULL;
    }

    v = lc_agent_cart(cf, a, d->cart, trusted_all);
    if (v == NULL || lc_value_add(root, "cart", 4, v) != 0) {
        return NULL;
    }

    if (lc_agent_add_str(a, root, "unsubscribe_url", m->unsubscribe,
                         strlen(m->unsubscribe), 1) != 0)
    {
        return NULL;
    }

    if (cf->site_url
        && lc_agent_add_str(a, root, "site_url", cf->site_url,
                            strlen(cf->site_url), 1) != 0)
    {
        return NULL;
    }

    return root;
}


/* adds the ids of "s" (a "\n" list) to "b", each once */

static void
lc_agent_list_merge(lc_agent_buf_t *b, const char *s, size_t len)
{
    const char  *p, *end, *hit, *q;
    size_t       n;

    p = s;
    end = s + len;

    while ((s = lc_list_next(&p, end, &n))) {

        /* the id as a whole line of "b" */
        hit = NULL;

        for (q = b->data; q && q + n <= b->data + b->len; q++) {
            if ((q == b->data || q[-1] == '\n') && memcmp(q, s, n) == 0
                && (q + n == b->data + b->len || q[n] == '\n'))
            {
                hit = q;
                break;
            }
        }

        if (hit == NULL) {
            if (b->len) {
                lc_agent_buf_add(b, "\n", 1);
            }

            lc_agent_buf_add(b, s, n);
        }
    }
}


/*
 * The catalog categories of the products of a list (ids separated by
 * "\n") merged into "cats": a session's own category list has the
 * category pages seen only.
 */

static void
lc_agent_product_categories(lc_agent_conf_t *cf, lc_agent_buf_t *cats,
    const char *s, size_t len)
{
    size_t               n;
    const char          *p, *end;
    const lc_product_t  *prod;

    p = s;
    end = s + len;

    while ((s = lc_list_next(&p, end, &n))) {
        prod = lc_catalog_find(cf->catalog, s, n);

        if (prod && prod->category.len) {
            lc_agent_list_merge(cats, prod->category.data,
                                prod->category.len);
        }
    }
}


/*
 * The top category of the categories in "cats": the one the profile
 * counted most (c:CAT), the first seen on a tie.
 */

static void
lc_agent_top(lc_agent_data_t *d, const char *cats, size_t len)
{
    char         field[LC_CATALOG_MAX_ID + 8];
    size_t       n, flen;
    long long    count, best;
    const char  *p, *end, *c, *s;

    best = -1;
    p = cats;
    end = cats + len;

    while ((c = lc_list_next(&p, end, &n))) {
        if (n > LC_CATALOG_MAX_ID) {
            continue;
        }

        snprintf(field, sizeof(field), "c:%.*s", (int) n, c);
        s = lc_agent_field(d->profile, field, &flen);
        count = strtoll(s, NULL, 10);

        if (count > best) {
            best = count;
            d->top_category = c;
            d->top_len = n;
        }
    }
}


/*
 * The welcome's browsing: the sessions of the visitor that were active
 * within link_window before the opt-in, newest first: the current one
 * from the profile, ended ones from their hashes.
 */

static int
lc_agent_linked_sessions(lc_agent_t *ag, lc_agent_data_t *d,
    lc_agent_buf_t *cats, unsigned shard)
{
    size_t        len;
    long long     n, visits, since, last;
    const char   *s;
    redisReply   *r;

    since = d->ref->created - ag->conf->link_window;

    s = lc_agent_field(d->profile, "visits", &len);
    visits = strtoll(s, NULL, 10);

    s = lc_agent_field(d->profile, "last", &len);
    last = strtoll(s, NULL, 10);

    if (visits == 0 || last < since) {
        return 0;
    }

    s = lc_agent_session_products(d->profile, &len);
    lc_agent_list_merge(&d->recent, s, len);
    lc_agent_product_categories(ag->conf, cats, s, len);
    s = lc_agent_field(d->profile, "s.c", &len);
    lc_agent_list_merge(cats, s, len);

    for (n = visits - 1; n >= 1; n--) {
        r = lc_agent_cmd(ag, "HMGET " LC_PREFIX_FMT LC_KEY_SESSION "%s:%lld"
                         " last p c", shard, d->ref->vid, n);

        if (!lc_agent_redis_ok(ag, r, "HMGET session")) {
            return -1;
        }

        if (r->type != REDIS_REPLY_ARRAY || r->elements != 3
            || lc_agent_reply_ll(r->element[0]) < since)
        {
            freeReplyObject(r);
            break;
        }

        if (r->element[1]->type == REDIS_REPLY_STRING) {
            lc_agent_list_merge(&d->recent, r->element[1]->str,
                                r->element[1]->len);
            lc_agent_product_categories(ag->conf, cats, r->element[1]->str,
                                        r->element[1]->len);
        }

        if (r->element[2]->type == REDIS_REPLY_STRING) {
            lc_agent_list_merge(cats, r->element[2]->str, r->element[2]->len);
        }

        freeReplyObject(r);
    }

    return 0;
}


/*
 * Reads what the message shows and renders it. The caller frees the
 * message's strings (lc_agent_msg_free) and the arena.
 */

int
lc_agent_build(lc_agent_t *ag, lc_agent_msg_t *m, lc_agent_arena_t *a)
{
    int                rc;
    size_t             len;
    unsigned           shard;
    long long          visits;
    const char        *s;
    redisReply        *person;
    lc_agent_buf_t     cats = { NULL, 0, 0, 0 }, u = { NULL, 0, 0, 0 };
    lc_agent_data_t    d;
    unsigned char      norm[LC_EMAIL_MAX];
    const lc_value_t  *text, *html;

    memset(&d, 0, sizeof(d));
    d.ref = m->ref;
    rc = -1;

    shard = lc_shard((const unsigned char *) m->ref->pid);

    person = lc_agent_cmd(ag, "HGET " LC_PREFIX_FMT LC_KEY_PERSON "%s email",
                          shard, m->ref->pid);

    if (!lc_agent_redis_ok(ag, person, "HGET person")) {
        return -1;
    }

    /* the address as stored must still be what the opt-in accepted */
    if (person->type != REDIS_REPLY_STRING
        || lc_email_normalize((unsigned char *) person->str, person->len,
                              norm)
           != person->len
        || memcmp(norm, person->str, person->len) != 0)
    {
        lc_agent_log(LC_AGENT_LOG_ERROR, "message %s: person %s has no "
                     "valid address", m->ref->id, m->ref->pid);
        goto done;
    }

    m->to = lc_agent_strndup(a, person->str, person->len);
    if (m->to == NULL) {
        goto done;
    }

    d.email = m->to;

    if (lc_agent_unsubscribe_url(ag->conf, m->ref->pid, &u) != 0) {
        goto done;
    }

    m->unsubscribe = lc_agent_buf_take(&u);
    if (m->unsubscribe == NULL) {
        goto done;
    }

    shard = lc_shard((const unsigned char *) m->ref->vid);

    if (m->ref->vid[0]) {
        d.profile = lc_agent_cmd(ag, "HGETALL " LC_PREFIX_FMT LC_KEY_VISITOR
                                 "%s", shard, m->ref->vid);
        if (!lc_agent_redis_ok(ag, d.profile, "HGETALL profile")) {
            d.profile = NULL;
            goto done;
        }

        d.cart = lc_agent_cmd(ag, "HGETALL " LC_PREFIX_FMT LC_KEY_VISITOR
                              "%s" LC_KEY_CART, shard, m->ref->vid);
        if (!lc_agent_redis_ok(ag, d.cart, "HGETALL cart")) {
            d.cart = NULL;
            goto done;
        }
    }

    s = lc_agent_field(d.profile, "visits", &len);
    visits = strtoll(s, NULL, 10);

    if (m->ref->kind == LC_AGENT_WELCOME) {
        if (d.profile && lc_agent_linked_sessions(ag, &d, &cats, shard) != 0)
        {
            goto done;
        }

        lc_agent_top(&d, cats.data ? cats.data : "", cats.len);

    } else if (m->ref->sess == visits) {
        /* the session is the current one: its fields are in the profile */
        s = lc_agent_session_products(d.profile, &len);
        lc_agent_buf_add(&d.products, s, len);
        lc_agent_product_categories(ag->conf, &d.categories, s, len);
        s = lc_agent_field(d.profile, "s.c", &len);
        lc_agent_list_merge(&d.categories, s, len);
        d.session_views = strtoll(lc_agent_field(d.profile, "views", &len),
                                  NULL, 10)
                          - strtoll(lc_agent_field(d.profile, "s.v0", &len),
                                    NULL, 10);

    } else {
        d.session = lc_agent_cmd(ag, "HMGET " LC_PREFIX_FMT LC_KEY_SESSION
                                 "%s:%lld p c views", shard, m->ref->vid,
                                 m->ref->sess);
        if (!lc_agent_redis_ok(ag, d.session, "HMGET session")) {
            d.session = NULL;
            goto done;
        }

        if (d.session->type == REDIS_REPLY_ARRAY
            && d.session->elements == 3)
        {
            if (d.session->element[0]->type == REDIS_REPLY_STRING) {
                lc_agent_buf_add(&d.products, d.session->element[0]->str,
                                 d.session->element[0]->len);
                lc_agent_product_categories(ag->conf, &d.categories,
                                            d.session->element[0]->str,
                                            d.session->element[0]->len);
            }

            if (d.session->element[1]->type == REDIS_REPLY_STRING) {
                lc_agent_list_merge(&d.categories,
                                    d.session->element[1]->str,
                                    d.session->element[1]->len);
            }

            d.session_views = lc_agent_reply_ll(d.session->element[2]);
        }
    }

    if (m->ref->kind != LC_AGENT_WELCOME) {
        s = lc_agent_field(d.profile, "r", &len);
        lc_agent_buf_add(&d.recent, s, len);
        lc_agent_top(&d, d.categories.data ? d.categories.data : "",
                     d.categories.len);

        if (d.top_len == 0) {
            d.top_category = lc_agent_field(d.profile, "topc", &d.top_len);
        }
    }

    if (d.session_views < 0) {
        d.session_views = 0;
    }

    if (d.recent.failed || d.products.failed || d.categories.failed
        || cats.failed)
    {
        goto done;
    }

    /* text parts are not HTML: every value may go raw there */
    text = lc_agent_tree(ag->conf, &d, m, a, 1);
    html = lc_agent_tree(ag->conf, &d, m, a, 0);

    if (text && html) {
        rc = lc_agent_render(ag, m, text, html);
    }

done:

    lc_agent_buf_free(&cats);
    lc_agent_buf_free(&d.recent);
    lc_agent_buf_free(&d.products);
    lc_agent_buf_free(&d.categories);

    if (d.profile) {
        freeReplyObject(d.profile);
    }

    if (d.cart) {
        freeReplyObject(d.cart);
    }

    if (d.session) {
        freeReplyObject(d.session);
    }

    freeReplyObject(person);

    return rc;
}
