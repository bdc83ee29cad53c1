
/*
 * Unit tests of lifecycle-agent's own code, no Redis, no network: time
 * and configuration parsing, header safety and encoding,
 * quoted-printable, the RFC 5322 message, the webhook signature, the
 * unsubscribe link, index members. TAP on stdout; t/40-agent-unit.t
 * runs it with sanitizers and under valgrind.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lc_agent.h"


volatile sig_atomic_t  lc_agent_stop;
volatile sig_atomic_t  lc_agent_reload;

static int  tests, failed;


static void
ok(int cond, const char *name)
{
    tests++;

    if (!cond) {
        failed++;
    }

    printf("%sok %d - %s\n", cond ? "" : "not ", tests, name);
}


static long long
parse(const char *s)
{
    long long  ms;

    return lc_agent_parse_time(s, strlen(s), &ms) == 0 ? ms : -1;
}


static void
test_time(void)
{
    ok(parse("90s") == 90000, "time: 90s");
    ok(parse("30m") == 1800000, "time: 30m");
    ok(parse("24h") == 86400000LL, "time: 24h");
    ok(parse("7d") == 7 * 86400000LL, "time: 7d");
    ok(parse("500ms") == 500, "time: 500ms");
    ok(parse("1h30m") == 5400000, "time: 1h30m");
    ok(parse("2w") == 14 * 86400000LL, "time: 2w");
    ok(parse("1M") == 30 * 86400000LL, "time: 1M (30 days)");
    ok(parse("1y") == 365 * 86400000LL, "time: 1y");
    ok(parse("15") == 15000, "time: a bare number is seconds");
    ok(parse("") == -1, "time: empty refused");
    ok(parse("m") == -1, "time: a unit alone refused");
    ok(parse("10x") == -1, "time: unknown unit refused");
    ok(parse("-5s") == -1, "time: negative refused");
    ok(parse("5 s") == -1, "time: blank inside refused");
    ok(parse("99999999999999999999s") == -1, "time: overflow refused");
}


static lc_agent_conf_t *
conf(const char *text, char *err, size_t errlen)
{
    return lc_agent_conf_parse("test.conf", text, strlen(text), err, errlen);
}


#define LC_T_REQUIRED                                                        \
    "secret /k\ntemplates /t\nunsubscribe_url http://x/u\n"                  \
    "smtp_from Shop <shop@example.com>\noutbox /o\n"

static void
test_conf(void)
{
    char              err[512];
    lc_agent_conf_t  *cf;

    cf = conf(LC_T_REQUIRED, err, sizeof(err));
    ok(cf != NULL, "conf: the required keys suffice");

    if (cf) {
        ok(cf->abandon_after == 30 * 60000LL, "conf: abandon_after 30m");
        ok(cf->cooldown == 86400000LL, "conf: cooldown 24h");
        ok(cf->channel == LC_AGENT_OUTBOX, "conf: channel outbox");
        ok(strcmp(cf->redis, "127.0.0.1:6379") == 0,
           "conf: redis 127.0.0.1:6379");
        ok(cf->webhook_retries == 5, "conf: webhook_retries 5");
        ok(cf->nfollowups == 0, "conf: no follow-ups");
        ok(cf->welcome == 1, "conf: welcome on");
        ok(cf->consumer != NULL && cf->consumer[0],
           "conf: consumer from the host name");
        ok(strcmp(cf->smtp_from, "Shop <shop@example.com>") == 0,
           "conf: a value keeps its blanks");
        lc_agent_conf_free(cf);
    }

    cf = conf("# comment\n  \n" LC_T_REQUIRED
              "redis unix:/run/redis.sock\nredis_password p#ss word\n"
              "redis_db 3\nabandon_after 90s\ncooldown 7d\n"
              "link_window 1h\nfollowups 1h, 24h,72h\nchannel webhook\n"
              "webhook_url http://h/w\nwebhook_secret s3\n"
              "webhook_retries 3\nconsumer agent-7\nlog_level debug\r\n"
              "welcome off\nsmtp_starttls on\n", err, sizeof(err));
    ok(cf != NULL, "conf: every key");

    if (cf) {
        ok(strcmp(cf->redis, "unix:/run/redis.sock") == 0, "conf: redis unix");
        ok(strcmp(cf->redis_password, "p#ss word") == 0,
           "conf: '#' inside a value is the value's");
        ok(cf->redis_db == 3, "conf: redis_db");
        ok(cf->abandon_after == 90000, "conf: abandon_after 90s");
        ok(cf->cooldown == 7 * 86400000LL, "conf: cooldown 7d");
        ok(cf->link_window == 3600000, "conf: link_window 1h");
        ok(cf->nfollowups == 3 && cf->followups[0] == 3600000
           && cf->followups[2] == 72 * 3600000LL, "conf: followups");
        ok(cf->channel == LC_AGENT_WEBHOOK, "conf: channel webhook");
        ok(cf->webhook_retries == 3, "conf: webhook_retries");
        ok(strcmp(cf->consumer, "agent-7") == 0, "conf: consumer");
        ok(cf->log_level == LC_AGENT_LOG_DEBUG, "conf: CRLF line ending");
        ok(cf->welcome == 0, "conf: welcome off");
        ok(cf->smtp_starttls == 2, "conf: smtp_starttls on");
        lc_agent_conf_free(cf);
    }

    cf = conf(LC_T_REQUIRED "abandon_afer 30m\n", err, sizeof(err));
    ok(cf == NULL && strstr(err, "test.conf:6: unknown key \"abandon_afer\"")
       != NULL, "conf: unknown key named with file:line");

    cf = conf(LC_T_REQUIRED "cooldown 3 days\n", err, sizeof(err));
    ok(cf == NULL && strstr(err, "test.conf:6:") && strstr(err, "not a time"),
       "conf: bad time named with file:line");

    cf = conf(LC_T_REQUIRED "channel fax\n", err, sizeof(err));
    ok(cf == NULL && strstr(err, "not \"outbox\", \"smtp\" or \"webhook\""),
       "conf: unknown channel");

    cf = conf(LC_T_REQUIRED "followups 24h,1h\n", err, sizeof(err));
    ok(cf == NULL && strstr(err, "growing"), "conf: follow-ups must grow");

    cf = conf(LC_T_REQUIRED "redis_db 1x\n", err, sizeof(err));
    ok(cf == NULL && strstr(err, "not a number"), "conf: bad number");

    cf = conf(LC_T_REQUIRED "cooldown\n", err, sizeof(err));
    ok(cf == NULL && strstr(err, "has no value"), "conf: key without value");

    cf = conf("templates /t\nunsubscribe_url http://x/u\noutbox /o\n"
              "smtp_from a@b.cd\n", err, sizeof(err));
    ok(cf == NULL && strstr(err, "\"secret\" is required"),
       "conf: secret required");

    cf = conf("secret /k\ntemplates /t\n", err, sizeof(err));
    ok(cf == NULL && strstr(err, "\"unsubscribe_url\" is required"),
       "conf: unsubscribe_url required");

    cf = conf("secret /k\nunsubscribe_url http://x/u\n", err, sizeof(err));
    ok(cf != NULL && cf->templates && cf->outbox
       && strcmp(cf->outbox, "/var/spool/lifecycle/outbox") == 0
       && cf->smtp_from, "conf: templates, outbox and From have defaults");
    lc_agent_conf_free(cf);

    cf = conf(LC_T_REQUIRED "channel smtp\n", err, sizeof(err));
    ok(cf == NULL && strstr(err, "smtp_url"), "conf: smtp needs smtp_url");

    cf = conf(LC_T_REQUIRED "channel webhook\nwebhook_url http://h/\n", err,
              sizeof(err));
    ok(cf == NULL && strstr(err, "webhook_secret"),
       "conf: webhook needs its secret");

    cf = conf(LC_T_REQUIRED "unsubscribe_url http://x/u?a=1 b\n", err,
              sizeof(err));
    ok(cf == NULL && strstr(err, "unsubscribe_url"),
       "conf: unsubscribe_url with a blank refused");

    cf = conf(LC_T_REQUIRED "abandon_after 10ms\n", err, sizeof(err));
    ok(cf == NULL && strstr(err, "out of range"),
       "conf: abandon_after below a second refused");

    cf = conf(LC_T_REQUIRED "redis localhost\n", err, sizeof(err));
    ok(cf == NULL && strstr(err, "IP:port"), "conf: redis without a port");
}


static void
test_headers(void)
{
    lc_agent_buf_t  b = { NULL, 0, 0, 0 };

    ok(lc_agent_header_safe("Your cart", 9), "header: plain text safe");
    ok(!lc_agent_header_safe("a\r\nBcc: x@y.z", 13), "header: CRLF unsafe");
    ok(!lc_agent_header_safe("a\nb", 3), "header: LF unsafe");
    ok(!lc_agent_header_safe("a\rb", 3), "header: CR unsafe");
    ok(!lc_agent_header_safe("a\tb", 3), "header: tab unsafe");
    ok(!lc_agent_header_safe("a\0b", 3), "header: NUL unsafe");
    ok(!lc_agent_header_safe("a\x7f", 2), "header: DEL unsafe");
    ok(lc_agent_header_safe("Caf\xc3\xa9", 5), "header: UTF-8 safe");

    lc_agent_header_encode(&b, "Subject", "Your cart is waiting");
    ok(b.data && strcmp(b.data, "Subject: Your cart is waiting\r\n") == 0,
       "header: ASCII as it is");
    lc_agent_buf_free(&b);

    lc_agent_header_encode(&b, "Subject", "Caf\xc3\xa9");
    ok(b.data && strcmp(b.data, "Subject: =?UTF-8?B?Q2Fmw6k=?=\r\n") == 0,
       "header: UTF-8 as an encoded word");
    lc_agent_buf_free(&b);

    lc_agent_from_encode(&b, "Caf\xc3\xa9 Shop <shop@example.com>");
    ok(b.data && strcmp(b.data, "From: =?UTF-8?B?Q2Fmw6kgU2hvcA==?= "
                                "<shop@example.com>\r\n") == 0,
       "header: a UTF-8 display name encoded, the address not");
    lc_agent_buf_free(&b);

    lc_agent_from_encode(&b, "Shop <shop@example.com>");
    ok(b.data && strcmp(b.data, "From: Shop <shop@example.com>\r\n") == 0,
       "header: an ASCII From as it is");
    lc_agent_buf_free(&b);

    /* 30 two-byte characters: 60 bytes, two words, none split */
    {
        char    s[61], *p, *w;
        size_t  i;
        int     words, good;

        for (i = 0; i < 30; i++) {
            s[2 * i] = (char) 0xc3;
            s[2 * i + 1] = (char) 0xa9;
        }

        s[60] = '\0';
        lc_agent_header_encode(&b, "Subject", s);

        words = 0;
        good = 1;

        for (p = b.data; (w = strstr(p, "=?UTF-8?B?")) != NULL; p = w + 1) {
            words++;
            /* 44 bytes (22 characters) is 60 base64 characters at most */
            good &= strstr(w, "?=") - w - 10 <= 60;
        }

        ok(words == 2 && good && strstr(b.data, "\r\n =?UTF-8?B?") != NULL,
           "header: long UTF-8 folded into words of whole characters");
        lc_agent_buf_free(&b);
    }
}


static void
test_qp(void)
{
    size_t          i;
    char            line[200];
    lc_agent_buf_t  b = { NULL, 0, 0, 0 };

    lc_agent_qp(&b, "a=b\nCaf\xc3\xa9 \n", 11);
    ok(b.data && strcmp(b.data, "a=3Db\r\nCaf=C3=A9=20\r\n") == 0,
       "qp: '=', UTF-8, a blank before a line end");
    lc_agent_buf_free(&b);

    memset(line, 'x', sizeof(line));
    lc_agent_qp(&b, line, sizeof(line));

    {
        char   *p, *nl;
        int     good;

        good = 1;

        for (p = b.data; p; p = nl ? nl + 2 : NULL) {
            nl = strstr(p, "\r\n");
            i = nl ? (size_t) (nl - p) : strlen(p);
            good &= i <= 76;
        }

        ok(good, "qp: lines of 76 characters at most");
    }

    lc_agent_buf_free(&b);

    lc_agent_qp(&b, "--=_lc_0123\r\n", 13);
    ok(b.data && strstr(b.data, "=_lc") == NULL,
       "qp: a boundary cannot appear in an encoded part");
    lc_agent_buf_free(&b);
}


static lc_agent_conf_t *
mail_conf(void)
{
    char              err[512];
    lc_agent_conf_t  *cf;

    cf = conf(LC_T_REQUIRED, err, sizeof(err));

    if (cf) {
        cf->secret = (unsigned char *) strdup(
                                    "0123456789abcdef0123456789abcdef");
        cf->secret_len = 32;
    }

    return cf;
}


static void
test_mime(void)
{
    lc_agent_msg_t       m;
    lc_agent_conf_t     *cf;
    lc_agent_msg_ref_t   ref;
    lc_agent_buf_t       u = { NULL, 0, 0, 0 };
    char                 subject[] = "Your cart is waiting",
                         text[] = "Hello\n",
                         html[] = "<p>Hello</p>\n",
                         to[] = "jane@example.com",
                         evil_to[] = "jane@example.com\r\nBcc: x@evil.example",
                         evil_subject[] = "Hi\r\nBcc: x@evil.example";

    cf = mail_conf();
    ok(cf != NULL, "mime: configuration");

    if (cf == NULL) {
        return;
    }

    memset(&ref, 0, sizeof(ref));
    strcpy(ref.id, "00112233445566aa");
    strcpy(ref.pid, "0123456789abcdef0123456789abcdef");
    ref.kind = LC_AGENT_CART;

    ok(lc_agent_unsubscribe_url(cf, ref.pid, &u) == 0
       && strncmp(u.data, "http://x/u?t=0123456789abcdef0123456789abcdef.",
                  46) == 0
       && strlen(u.data) == 13 + LC_TOKEN_LEN,
       "unsubscribe: <url>?t=PID.SIG");

    ok(lc_unsubscribe_verify(cf->secret, cf->secret_len,
                             (unsigned char *) u.data + 13, LC_TOKEN_LEN),
       "unsubscribe: the token verifies as the module checks it");

    memset(&m, 0, sizeof(m));
    m.ref = &ref;
    m.to = to;
    m.subject = subject;
    m.text = text;
    m.html = html;
    m.unsubscribe = u.data;

    ok(lc_agent_mime(cf, &m, 1700000000000LL) == 0, "mime: built");

    if (m.eml) {
        ok(strstr(m.eml, "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n") != NULL,
           "mime: Date");
        ok(strstr(m.eml, "\r\nFrom: Shop <shop@example.com>\r\n") != NULL,
           "mime: From");
        ok(strstr(m.eml, "\r\nTo: <jane@example.com>\r\n") != NULL, "mime: To");
        ok(strstr(m.eml, "\r\nSubject: Your cart is waiting\r\n") != NULL,
           "mime: Subject");
        ok(strstr(m.eml, "\r\nMessage-ID: <00112233445566aa@example.com>\r\n")
           != NULL, "mime: Message-ID in the sender's domain");
        ok(strstr(m.eml, "\r\nList-Unsubscribe: <http://x/u?t=") != NULL,
           "mime: List-Unsubscribe");
        ok(strstr(m.eml, "\r\nList-Unsubscribe-Post: List-Unsubscribe="
                         "One-Click\r\n") != NULL,
           "mime: List-Unsubscribe-Post one-click");
        ok(strstr(m.eml, "multipart/alternative; boundary=\"=_lc_"
                         "00112233445566aa\"") != NULL,
           "mime: multipart/alternative");
        ok(strstr(m.eml, "text/plain; charset=utf-8") != NULL
           && strstr(m.eml, "text/html; charset=utf-8") != NULL,
           "mime: a text and an HTML part");
        ok(strstr(m.eml, "\r\n--=_lc_00112233445566aa--\r\n") != NULL,
           "mime: closing boundary");
        ok(strstr(m.eml, "\r\n\r\n") < strstr(m.eml, "--=_lc_"),
           "mime: headers end before the first part");
    }

    free(m.eml);
    m.eml = NULL;

    m.html = NULL;
    ok(lc_agent_mime(cf, &m, 1700000000000LL) == 0 && m.eml
       && strstr(m.eml, "multipart") == NULL
       && strstr(m.eml, "Content-Type: text/plain; charset=utf-8\r\n"),
       "mime: text only without an HTML template");
    free(m.eml);
    m.eml = NULL;

    m.to = evil_to;
    ok(lc_agent_mime(cf, &m, 1700000000000LL) != 0 && m.eml == NULL,
       "mime: an address with CRLF refused");

    m.to = to;
    m.subject = evil_subject;
    ok(lc_agent_mime(cf, &m, 1700000000000LL) != 0 && m.eml == NULL,
       "mime: a subject with CRLF refused");

    {
        char  comma[] = "jane@example.com, x@evil.example";

        m.subject = subject;
        m.to = comma;
        ok(lc_agent_mime(cf, &m, 1700000000000LL) != 0,
           "mime: a second recipient refused");
    }

    lc_agent_buf_free(&u);
    lc_agent_conf_free(cf);
}


static void
test_signature(void)
{
    lc_agent_buf_t  b = { NULL, 0, 0, 0 };

    lc_agent_signature("whsec", 1700000000, "{\"a\":1}", 7, &b);

    /* HMAC-SHA256("whsec", "1700000000.{"a":1}") by another tool */
    ok(b.data && strcmp(b.data, "t=1700000000,v1=8ad37ba156048ae0e0a5533c75cd"
                                "f26fee88b07f93cb57ee4c80adb053012032") == 0,
       "signature: t=<unix>,v1=<hex hmac-sha256(secret, t.body)>");

    lc_agent_buf_free(&b);
}


static void
test_members(void)
{
    long long  n;
    char       vid[LC_VID_LEN + 1];

    ok(lc_agent_session_split("0123456789abcdef0123456789abcdef:12", 35, vid,
                              &n) == 0
       && n == 12 && strcmp(vid, "0123456789abcdef0123456789abcdef") == 0,
       "index member VID:N");
    ok(lc_agent_session_split("0123456789abcdef0123456789abcdeF:1", 34, vid,
                              &n) != 0, "index member: upper case refused");
    ok(lc_agent_session_split("0123456789abcdef0123456789abcdef:", 33, vid,
                              &n) != 0, "index member: no number refused");
    ok(lc_agent_session_split("0123456789abcdef0123456789abcdef:0", 34, vid,
                              &n) != 0, "index member: session 0 refused");
    ok(lc_agent_session_split("0123456789abcdef0123456789abcdef:1x", 35, vid,
                              &n) != 0, "index member: junk refused");
}


static void
test_arena(void)
{
    size_t             i;
    char              *p;
    int                good;
    lc_agent_arena_t   a;

    lc_agent_arena_init(&a);
    good = 1;

    for (i = 0; i < 5000; i++) {
        p = lc_agent_alloc(&a, i % 97 + 1);
        good &= p != NULL && ((size_t) p % sizeof(void *)) == 0;
        memset(p, 'x', i % 97 + 1);
    }

    p = lc_agent_alloc(&a, 200000);
    good &= p != NULL;
    memset(p, 'y', 200000);

    p = lc_agent_strndup(&a, "abcdef", 3);
    good &= p && strcmp(p, "abc") == 0;

    ok(good, "arena: aligned, big blocks, strndup");
    lc_agent_arena_free(&a);
}


int
main(void)
{
    test_time();
    test_conf();
    test_headers();
    test_qp();
    test_mime();
    test_signature();
    test_members();
    test_arena();

    printf("1..%d\n", tests);

    return failed ? 1 : 0;
}
