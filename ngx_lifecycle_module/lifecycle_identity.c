
/*
 * E-mail addresses, person ids and unsubscribe tokens (see the header).
 */


#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "lifecycle_identity.h"


#define LC_EMAIL_PREFIX        "lc-email:"
#define LC_UNSUBSCRIBE_PREFIX  "lc-unsubscribe:"


static const char  lc_hex[] = "0123456789abcdef";
static const char  lc_b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";


static int
lc_email_atext(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
           || (c != '\0' && strchr("!#$%&'*+/=?^_`{|}~-", c) != NULL);
}


size_t
lc_email_normalize(const unsigned char *in, size_t len, unsigned char *out)
{
    size_t          i, at, label, labels, n;
    unsigned char   c, prev;
    int             alpha_label;

    while (len && (in[0] == ' ' || in[0] == '\t')) {
        in++;
        len--;
    }

    while (len && (in[len - 1] == ' ' || in[len - 1] == '\t')) {
        len--;
    }

    if (len < 3 || len > LC_EMAIL_MAX) {
        return 0;
    }

    at = 0;
    n = 0;

    for (i = 0; i < len; i++) {
        c = in[i];

        if (c >= 'A' && c <= 'Z') {
            c = (unsigned char) (c - 'A' + 'a');
        }

        if (c == '@') {
            if (at) {
                return 0;
            }

            at = i + 1;
        }

        out[n++] = c;
    }

    /* local part: dot-atom, at most 64 bytes */

    if (at < 2 || at - 1 > LC_EMAIL_LOCAL_MAX || at == len) {
        return 0;
    }

    prev = '.';

    for (i = 0; i < at - 1; i++) {
        c = out[i];

        if (c == '.') {
            if (prev == '.') {
                return 0;
            }

        } else if (!lc_email_atext(c)) {
            return 0;
        }

        prev = c;
    }

    if (prev == '.') {
        return 0;
    }

    /* domain: two labels or more, the last of letters only */

    label = 0;
    labels = 0;
    alpha_label = 1;
    prev = '.';

    for (i = at; i <= len; i++) {
        c = (i < len) ? out[i] : '.';

        if (c == '.') {
            if (label == 0 || label > 63 || prev == '-') {
                return 0;
            }

            labels++;

            if (i == len && (!alpha_label || label < 2)) {
                return 0;
            }

            label = 0;
            alpha_label = 1;

        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                   || c == '-')
        {
            if (c == '-' && label == 0) {
                return 0;
            }

            if (!(c >= 'a' && c <= 'z')) {
                alpha_label = 0;
            }

            label++;

        } else {
            return 0;
        }

        prev = c;
    }

    if (labels < 2) {
        return 0;
    }

    return n;
}


/* HMAC-SHA256(secret, prefix data): both parts are short */

static void
lc_identity_mac(const unsigned char *secret, size_t secret_len,
    const char *prefix, const unsigned char *data, size_t len,
    unsigned char *mac)
{
    size_t          plen;
    unsigned int    n;
    unsigned char   msg[sizeof(LC_UNSUBSCRIBE_PREFIX) + LC_EMAIL_MAX];

    plen = strlen(prefix);

    if (len > sizeof(msg) - plen) {
        len = sizeof(msg) - plen;
    }

    memcpy(msg, prefix, plen);
    memcpy(msg + plen, data, len);

    n = 0;
    HMAC(EVP_sha256(), secret, (int) secret_len, msg, plen + len, mac, &n);

    OPENSSL_cleanse(msg, sizeof(msg));
}


void
lc_email_hash(const unsigned char *secret, size_t secret_len,
    const unsigned char *email, size_t len, unsigned char *hex)
{
    size_t         i;
    unsigned char  mac[EVP_MAX_MD_SIZE];

    lc_identity_mac(secret, secret_len, LC_EMAIL_PREFIX, email, len, mac);

    for (i = 0; i < LC_PERSON_ID_LEN / 2; i++) {
        hex[2 * i] = (unsigned char) lc_hex[mac[i] >> 4];
        hex[2 * i + 1] = (unsigned char) lc_hex[mac[i] & 0xf];
    }
}


/* 16 bytes as 22 base64url characters, no padding */

static void
lc_identity_b64url16(const unsigned char *in, unsigned char *out)
{
    size_t        i, o;
    unsigned int  v;

    o = 0;

    for (i = 0; i + 3 <= 15; i += 3) {
        v = ((unsigned int) in[i] << 16) | ((unsigned int) in[i + 1] << 8)
            | in[i + 2];

        out[o++] = (unsigned char) lc_b64url[(v >> 18) & 0x3f];
        out[o++] = (unsigned char) lc_b64url[(v >> 12) & 0x3f];
        out[o++] = (unsigned char) lc_b64url[(v >> 6) & 0x3f];
        out[o++] = (unsigned char) lc_b64url[v & 0x3f];
    }

    /* the 16th byte: two characters */
    out[o++] = (unsigned char) lc_b64url[in[15] >> 2];
    out[o++] = (unsigned char) lc_b64url[(in[15] & 0x03) << 4];
}


void
lc_unsubscribe_token(const unsigned char *secret, size_t secret_len,
    const unsigned char *pid, unsigned char *token)
{
    unsigned char  mac[EVP_MAX_MD_SIZE];

    lc_identity_mac(secret, secret_len, LC_UNSUBSCRIBE_PREFIX, pid,
                    LC_PERSON_ID_LEN, mac);

    memcpy(token, pid, LC_PERSON_ID_LEN);
    token[LC_PERSON_ID_LEN] = '.';
    lc_identity_b64url16(mac, token + LC_PERSON_ID_LEN + 1);
}


int
lc_unsubscribe_verify(const unsigned char *secret, size_t secret_len,
    const unsigned char *token, size_t len)
{
    size_t         i;
    unsigned char  c, expected[LC_TOKEN_LEN];

    if (len != LC_TOKEN_LEN || token[LC_PERSON_ID_LEN] != '.') {
        return 0;
    }

    for (i = 0; i < LC_PERSON_ID_LEN; i++) {
        c = token[i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }

    lc_unsubscribe_token(secret, secret_len, token, expected);

    return CRYPTO_memcmp(expected, token, LC_TOKEN_LEN) == 0;
}
