
/*
 * Identities shared by the module and lifecycle-agent: the e-mail
 * address as the opt-in stores it, the person id derived from it, and
 * the signed unsubscribe token of the links in e-mails.
 * Plain C99 and OpenSSL's libcrypto, no nginx types: both programs
 * compile this file and lifecycle_identity.c.
 */

#ifndef _LIFECYCLE_IDENTITY_H_INCLUDED_
#define _LIFECYCLE_IDENTITY_H_INCLUDED_


#include <stddef.h>


/* RFC 5321: 64 bytes of local part, 254 of address in a path */
#define LC_EMAIL_MAX          254
#define LC_EMAIL_LOCAL_MAX    64

/* 128 bits as lowercase hex, like a visitor id */
#define LC_PERSON_ID_LEN      32

/* "PID.SIG": SIG is 16 bytes of HMAC-SHA256, base64url, no padding */
#define LC_TOKEN_SIG_LEN      22
#define LC_TOKEN_LEN          (LC_PERSON_ID_LEN + 1 + LC_TOKEN_SIG_LEN)


/*
 * Checks an address and writes its normalised form into "out" (room for
 * LC_EMAIL_MAX bytes, not terminated): blanks around it dropped, all of
 * it in lower case. What passes is a plain dot-atom address, the form
 * people type into a form: local part of [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]
 * and dots (not first, last or doubled), one "@", a domain of at least
 * two labels of [A-Za-z0-9-] (1..63, no "-" at either end), the last of
 * letters only. Nothing else: no quoted local parts, comments, address
 * literals or non-ASCII, so no CR, LF, NUL, "<", ">", ",", ";" or blank
 * can ever reach a mail header from an address that passed.
 *
 * Returns the length written, or 0 when the address is not acceptable.
 */
size_t lc_email_normalize(const unsigned char *in, size_t len,
    unsigned char *out);


/*
 * The key under which the agent files a normalised address, so that
 * Redis holds no address in a key name: the first 16 bytes of
 * HMAC-SHA256(secret, "lc-email:" address) as 32 lowercase hex digits.
 * The first person of an address takes this as its person id.
 */
void lc_email_hash(const unsigned char *secret, size_t secret_len,
    const unsigned char *email, size_t len, unsigned char *hex);


/*
 * The unsubscribe token of a person: "PID.SIG", SIG the base64url of the
 * first 16 bytes of HMAC-SHA256(secret, "lc-unsubscribe:" PID).
 * Writes LC_TOKEN_LEN bytes, not terminated.
 */
void lc_unsubscribe_token(const unsigned char *secret, size_t secret_len,
    const unsigned char *pid, unsigned char *token);


/*
 * 1 when "token" is a well-formed token whose signature verifies
 * (compared in constant time); its person id is then the first
 * LC_PERSON_ID_LEN bytes of the token. 0 otherwise.
 */
int lc_unsubscribe_verify(const unsigned char *secret, size_t secret_len,
    const unsigned char *token, size_t len);


#endif /* _LIFECYCLE_IDENTITY_H_INCLUDED_ */
