
/*
 * Unit tests of lifecycle_identity.c, printed as TAP for t/26-identity.t.
 * Usage: test_identity [fuzz-iterations]
 *
 * Inputs are handed over in heap buffers of exactly their length, without
 * a NUL, and outputs are written into buffers of exactly the documented
 * size, so that AddressSanitizer and valgrind catch any access past
 * either end. The expected hashes and tokens were computed with another
 * HMAC implementation (Python's hmac module).
 *
 * Linked with -Wl,--wrap=CRYPTO_memcmp: the signature comparison of
 * lc_unsubscribe_verify() is counted, to check that a well-formed token
 * is always compared whole, in constant time.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lifecycle_identity.h"


static int     tests;
static int     failed;
static size_t  memcmp_calls;
static size_t  memcmp_len;


int __real_CRYPTO_memcmp(const volatile void *a, const volatile void *b,
    size_t len);
int __wrap_CRYPTO_memcmp(const volatile void *a, const volatile void *b,
    size_t len);


int
__wrap_CRYPTO_memcmp(const volatile void *a, const volatile void *b,
    size_t len)
{
    memcmp_calls++;
    memcmp_len = len;

    return __real_CRYPTO_memcmp(a, b, len);
}


static void
ok(int cond, const char *name)
{
    tests++;

    if (!cond) {
        failed++;
    }

    printf("%sok %d - %s\n", cond ? "" : "not ", tests, name);
}


/* a copy of len bytes in a buffer of exactly that size */
static unsigned char *
exact(const void *data, size_t len)
{
    unsigned char  *p;

    p = malloc(len ? len : 1);
    if (p == NULL) {
        perror("malloc");
        exit(2);
    }

    memcpy(p, data, len);

    return p;
}


static void
printable(char *out, size_t size, const unsigned char *in, size_t len)
{
    size_t  i, o;

    o = 0;

    for (i = 0; i < len && o + 5 < size; i++) {
        if (in[i] >= 0x20 && in[i] < 0x7f && in[i] != '\\') {
            out[o++] = (char) in[i];

        } else {
            o += (size_t) snprintf(out + o, size - o, "\\x%02x", in[i]);
        }
    }

    out[o] = '\0';
}


/* normalise: "expect" NULL means refused */
static void
normalize(const char *in, size_t len, const char *expect)
{
    char            name[400], shown[300];
    size_t          n;
    unsigned char  *src, *out;

    src = exact(in, len);
    out = malloc(LC_EMAIL_MAX);
    if (out == NULL) {
        exit(2);
    }

    n = lc_email_normalize(src, len, out);

    printable(shown, sizeof(shown), (const unsigned char *) in, len);

    if (expect == NULL) {
        snprintf(name, sizeof(name), "refused: \"%s\"", shown);
        ok(n == 0, name);

    } else {
        snprintf(name, sizeof(name), "accepted: \"%s\" -> \"%s\"", shown,
                 expect);
        ok(n == strlen(expect) && memcmp(out, expect, n) == 0, name);

        if (n) {
            printable(shown, sizeof(shown), out, n);
            printf("# got \"%s\"\n", shown);
        }
    }

    free(src);
    free(out);
}


#define accept(in, out)  normalize(in, sizeof(in) - 1, out)
#define refuse(in)       normalize(in, sizeof(in) - 1, NULL)


static void
normalize_table(void)
{
    char  buf[300];

    accept("foo@example.com", "foo@example.com");
    accept("Foo.Bar@Example.COM", "foo.bar@example.com");
    accept("  a@b.co\t", "a@b.co");
    accept("\t \tx@y.example  ", "x@y.example");
    accept("first.last+tag@mail.example.org",
           "first.last+tag@mail.example.org");
    accept("!#$%&'*+/=?^_`{|}~-@x.io", "!#$%&'*+/=?^_`{|}~-@x.io");
    accept("a@xn--bcher-kva.example", "a@xn--bcher-kva.example");
    accept("a@1.example", "a@1.example");
    accept("a@b-c.d-e.example", "a@b-c.d-e.example");
    accept("a@b.co", "a@b.co");

    refuse("");
    refuse(" ");
    refuse("a");
    refuse("@");
    refuse("a@");
    refuse("@b.com");
    refuse("a@b");
    refuse("a@b.c");
    refuse("a@b.c0m");
    refuse("a@b.123");
    refuse("a..b@c.com");
    refuse(".a@c.com");
    refuse("a.@c.com");
    refuse("a@-b.com");
    refuse("a@b-.com");
    refuse("a@b..com");
    refuse("a@.b.com");
    refuse("a@b.com.");
    refuse("a b@c.com");
    refuse("a@b c.com");
    refuse("\"a\"@b.com");
    refuse("\"a b\"@c.com");
    refuse("a@[192.0.2.1]");
    refuse("a@b.com\r\n");
    refuse("a@b.com\n");
    refuse("a@b.com\r\nBcc: x@y.com");
    refuse("a@b.com\nBcc: x@y.com");
    refuse("a\0@b.com");
    refuse("a@b.com\0");
    refuse("\xc3\xa9@b.com");
    refuse("a@b\xc3\xa9.com");
    refuse("a@b.c\xc3\xb6m");
    refuse("a@b@c.com");
    refuse("a,b@c.com");
    refuse("a;b@c.com");
    refuse("a:b@c.com");
    refuse("<a@b.com>");
    refuse("a@b.com>");
    refuse("a(c)@b.com");
    refuse("a\\b@c.com");
    refuse("a@b_c.com");
    refuse("a@b.com,c@d.com");
    accept("=?utf-8?q?a?=@b.com", "=?utf-8?q?a?=@b.com");  /* atext */

    /* the limits: 64 of local part, 63 of label, 254 in all */

    memset(buf, 'l', 64);
    memcpy(buf + 64, "@x.io", 5);
    {
        char  expect[70];

        memcpy(expect, buf, 69);
        expect[69] = '\0';
        normalize(buf, 69, expect);
    }

    memset(buf, 'l', 65);
    memcpy(buf + 65, "@x.io", 5);
    normalize(buf, 70, NULL);

    memcpy(buf, "a@", 2);
    memset(buf + 2, 'd', 63);
    memcpy(buf + 65, ".io", 3);
    {
        char  expect[69];

        memcpy(expect, buf, 68);
        expect[68] = '\0';
        normalize(buf, 68, expect);
    }

    memset(buf + 2, 'd', 64);
    memcpy(buf + 66, ".io", 3);
    normalize(buf, 69, NULL);

    /* 64 + 1 + 63 + 1 + 63 + 1 + 58 + 1 + 2 = 254 */
    memset(buf, 'l', 64);
    buf[64] = '@';
    memset(buf + 65, 'd', 63);
    buf[128] = '.';
    memset(buf + 129, 'd', 63);
    buf[192] = '.';
    memset(buf + 193, 'd', 58);
    buf[251] = '.';
    memcpy(buf + 252, "io", 2);
    {
        char  expect[255];

        memcpy(expect, buf, 254);
        expect[254] = '\0';
        normalize(buf, 254, expect);
    }

    /* 255: one more in the last label but one */
    memset(buf + 193, 'd', 59);
    buf[252] = '.';
    memcpy(buf + 253, "io", 2);
    normalize(buf, 255, NULL);
}


/* what passes is plain: lower case, one "@", allowed bytes, stable */
static void
normalize_fuzz(unsigned long iterations)
{
    static const char  alphabet[] =
        "abcXYZ019.@-_+!#$%&'*/=?^`{|}~ \t\r\n\"(),:;<>[\\]"
        "\x00\x7f\xc3\xa9\xff";

    size_t          i, j, len, n, n2, bad;
    uint32_t        seed;
    unsigned char   in[300], *src, *out, *again;
    unsigned long   it, accepted;

    seed = 20240601;
    accepted = 0;
    bad = 0;

    out = malloc(LC_EMAIL_MAX);
    again = malloc(LC_EMAIL_MAX);
    if (out == NULL || again == NULL) {
        exit(2);
    }

    for (it = 0; it < iterations; it++) {
        seed = seed * 1103515245 + 12345;
        len = (seed >> 16) % 40;

        if (it % 3 == 0) {
            /* mostly a plausible address with noise */
            memcpy(in, "user@mail.example", 17);
            len = 17;
        }

        for (j = 0; j < len; j++) {
            seed = seed * 1103515245 + 12345;

            if (it % 3 == 0 && (seed >> 16) % 5) {
                continue;
            }

            in[j] = (unsigned char) alphabet[(seed >> 16)
                                             % (sizeof(alphabet) - 1)];
        }

        src = exact(in, len);
        n = lc_email_normalize(src, len, out);
        free(src);

        if (n == 0) {
            continue;
        }

        accepted++;

        for (i = 0; i < n; i++) {
            if ((out[i] >= 'A' && out[i] <= 'Z') || out[i] <= ' '
                || out[i] >= 0x7f || strchr("\"(),:;<>[\\]", out[i]))
            {
                bad++;
                break;
            }
        }

        for (i = 0, j = 0; i < n; i++) {
            j += (out[i] == '@');
        }

        if (j != 1) {
            bad++;
        }

        src = exact(out, n);
        n2 = lc_email_normalize(src, n, again);
        free(src);

        if (n2 != n || memcmp(again, out, n) != 0) {
            bad++;
        }
    }

    printf("# fuzz: %lu inputs, %lu accepted\n", iterations, accepted);
    ok(bad == 0, "fuzz: every accepted address is plain ASCII, lower case, "
                 "one @, and normalises to itself");
    ok(accepted > 0, "fuzz: some inputs were accepted");

    free(out);
    free(again);
}


static const unsigned char  secret[] = "0123456789abcdef0123456789abcdef";
static const unsigned char  other[] = "0123456789abcdef0123456789abcdeF";

#define SECRET_LEN  (sizeof(secret) - 1)


static void
hashes(void)
{
    unsigned char  *email, *hex, key[100];

    hex = malloc(LC_PERSON_ID_LEN);
    if (hex == NULL) {
        exit(2);
    }

    email = exact("foo@example.com", 15);
    lc_email_hash(secret, SECRET_LEN, email, 15, hex);
    ok(memcmp(hex, "54c5a0c86972130d249b0184e0ef7057", 32) == 0,
       "lc_email_hash: HMAC-SHA256(secret, \"lc-email:\" address), 16 bytes "
       "as hex");
    free(email);

    email = exact("a@b.example", 11);
    lc_email_hash(secret, SECRET_LEN, email, 11, hex);
    ok(memcmp(hex, "91ba3594996347d8d6735807131b2fa1", 32) == 0,
       "lc_email_hash: another address");
    free(email);

    memset(key, 'k', sizeof(key));
    email = exact("foo@example.com", 15);
    lc_email_hash(key, sizeof(key), email, 15, hex);
    ok(memcmp(hex, "cbb1c2f79942ab558e5e25ef357da29c", 32) == 0,
       "lc_email_hash: a key longer than the hash block");
    free(email);

    free(hex);
}


static int
verify(const unsigned char *secret, size_t secret_len, const void *token,
    size_t len)
{
    int             rc;
    unsigned char  *t;

    t = exact(token, len);
    rc = lc_unsubscribe_verify(secret, secret_len, t, len);
    free(t);

    return rc;
}


static void
tokens(void)
{
    char            name[200];
    size_t          i, calls;
    uint32_t        seed;
    unsigned char  *pid, *token, copy[LC_TOKEN_LEN + 1], c;
    int             all, whole;

    static const char  b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    token = malloc(LC_TOKEN_LEN);
    if (token == NULL) {
        exit(2);
    }

    pid = exact("00112233445566778899aabbccddeeff", LC_PERSON_ID_LEN);
    lc_unsubscribe_token(secret, SECRET_LEN, pid, token);
    ok(memcmp(token, "00112233445566778899aabbccddeeff.Q-nIcteNb1sRKWccT-asaQ",
              LC_TOKEN_LEN) == 0,
       "lc_unsubscribe_token: PID.SIG, SIG base64url of 16 bytes of "
       "HMAC-SHA256(secret, \"lc-unsubscribe:\" PID)");
    ok(verify(secret, SECRET_LEN, token, LC_TOKEN_LEN) == 1,
       "lc_unsubscribe_verify: the token verifies");
    ok(verify(other, SECRET_LEN, token, LC_TOKEN_LEN) == 0,
       "... not with another secret");
    free(pid);

    pid = exact("ffffffffffffffffffffffffffffffff", LC_PERSON_ID_LEN);
    lc_unsubscribe_token(secret, SECRET_LEN, pid, token);
    ok(memcmp(token, "ffffffffffffffffffffffffffffffff.-VLBqcsCRsI4Y7sme7q_pA",
              LC_TOKEN_LEN) == 0, "lc_unsubscribe_token: another id");
    free(pid);

    /* round trips */

    seed = 7;
    all = 1;
    pid = malloc(LC_PERSON_ID_LEN);
    if (pid == NULL) {
        exit(2);
    }

    for (i = 0; i < 1000; i++) {
        size_t  j;

        for (j = 0; j < LC_PERSON_ID_LEN; j++) {
            seed = seed * 1103515245 + 12345;
            pid[j] = (unsigned char) "0123456789abcdef"[(seed >> 16) & 0xf];
        }

        lc_unsubscribe_token(secret, SECRET_LEN, pid, token);

        if (verify(secret, SECRET_LEN, token, LC_TOKEN_LEN) != 1
            || verify(other, SECRET_LEN, token, LC_TOKEN_LEN) != 0
            || memcmp(token, pid, LC_PERSON_ID_LEN) != 0
            || token[LC_PERSON_ID_LEN] != '.')
        {
            all = 0;
        }
    }

    ok(all, "1000 random ids: token and verify round trip, the id first, "
            "another secret refused");
    free(pid);

    /* tampered: every position, well-formed tokens compared whole */

    pid = exact("00112233445566778899aabbccddeeff", LC_PERSON_ID_LEN);
    lc_unsubscribe_token(secret, SECRET_LEN, pid, token);
    free(pid);

    all = 1;
    whole = 1;

    for (i = 0; i < LC_TOKEN_LEN; i++) {
        const char  *set;
        size_t       k;

        set = (i < LC_PERSON_ID_LEN) ? "0123456789abcdef"
              : (i == LC_PERSON_ID_LEN) ? "_-:x" : b64;

        for (k = 0; set[k]; k++) {
            c = (unsigned char) set[k];

            if (c == token[i]) {
                continue;
            }

            memcpy(copy, token, LC_TOKEN_LEN);
            copy[i] = c;

            calls = memcmp_calls;

            if (verify(secret, SECRET_LEN, copy, LC_TOKEN_LEN) != 0) {
                all = 0;
                snprintf(name, sizeof(name), "# accepted with byte %zu = %c",
                         i, c);
                puts(name);
            }

            /* a well-formed one reaches the comparison, over all of it */
            if (i != LC_PERSON_ID_LEN
                && (memcmp_calls != calls + 1 || memcmp_len != LC_TOKEN_LEN))
            {
                whole = 0;
            }
        }
    }

    ok(all, "any one character changed, anywhere: refused");
    ok(whole, "a tampered well-formed token is compared whole with "
              "CRYPTO_memcmp (constant time), never cut short");

    all = 1;

    for (i = 0; i < LC_TOKEN_LEN; i++) {
        if (verify(secret, SECRET_LEN, token, i) != 0) {
            all = 0;
        }
    }

    ok(all, "every truncation refused, down to the empty token");

    memcpy(copy, token, LC_TOKEN_LEN);
    copy[LC_TOKEN_LEN] = 'A';
    ok(verify(secret, SECRET_LEN, copy, LC_TOKEN_LEN + 1) == 0,
       "one character more: refused");

    memcpy(copy, token, LC_TOKEN_LEN);
    for (i = 0; i < LC_PERSON_ID_LEN; i++) {
        if (copy[i] >= 'a' && copy[i] <= 'f') {
            copy[i] = (unsigned char) (copy[i] - 'a' + 'A');
        }
    }
    ok(verify(secret, SECRET_LEN, copy, LC_TOKEN_LEN) == 0,
       "the id in upper case: refused");

    memcpy(copy, token, LC_TOKEN_LEN);
    copy[0] = 'g';
    ok(verify(secret, SECRET_LEN, copy, LC_TOKEN_LEN) == 0,
       "not hex: refused");

    memcpy(copy, token, LC_TOKEN_LEN);
    copy[5] = '\0';
    ok(verify(secret, SECRET_LEN, copy, LC_TOKEN_LEN) == 0,
       "a NUL inside: refused");

    /* the signature of another id */
    pid = exact("ffffffffffffffffffffffffffffffff", LC_PERSON_ID_LEN);
    lc_unsubscribe_token(secret, SECRET_LEN, pid, copy);
    memcpy(copy, token, LC_PERSON_ID_LEN);
    ok(verify(secret, SECRET_LEN, copy, LC_TOKEN_LEN) == 0,
       "an id with the signature of another: refused");
    free(pid);

    free(token);
}


int
main(int argc, char **argv)
{
    unsigned long  iterations;

    iterations = (argc > 1) ? strtoul(argv[1], NULL, 10) : 200000;

    normalize_table();
    normalize_fuzz(iterations);
    hashes();
    tokens();

    printf("1..%d\n", tests);

    return failed ? 1 : 0;
}
