
/*
 * lifecycle-agent: people. An opt-in links a visitor id to the person
 * of its normalised address; the same address from another device
 * joins the same person; two persons that meet are merged into the
 * older one, so a person known before is never lost. Every command
 * touches one slot: the visitor's, the person's, the address's or the
 * agent's own.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "lc_agent.h"


/*
 * Sets a field of a hash that must already exist: the module's profile
 * (an HSET on a missing key would make one without its TTL).
 */
static const char  lc_agent_hset_xx[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then "
    "return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end "
    "return -1";


/* entries of a stream read at a time when erasing from it */
#define LC_AGENT_XRANGE_BATCH  1000


typedef struct {
    char                        key[LC_PREFIX_LEN + 64];
} lc_agent_key_t;


/* runs a command whose reply only says it worked */

static int
lc_agent_do(lc_agent_t *ag, const char *what, redisReply *r)
{
    if (!lc_agent_redis_ok(ag, r, what)) {
        return -1;
    }

    freeReplyObject(r);

    return 0;
}


static int
lc_agent_hset_existing(lc_agent_t *ag, const char *key, const char *field,
    const char *value)
{
    return lc_agent_do(ag, "HSET", lc_agent_cmd(ag, "EVAL %s 1 %s %s %s",
                                                lc_agent_hset_xx, key, field,
                                                value));
}


static void
lc_agent_person_key(lc_agent_key_t *k, const char *pid, const char *suffix)
{
    snprintf(k->key, sizeof(k->key), LC_PREFIX_FMT LC_KEY_PERSON "%s%s",
             lc_shard((const unsigned char *) pid), pid, suffix);
}


static void
lc_agent_profile_key(lc_agent_key_t *k, const char *vid, const char *suffix)
{
    snprintf(k->key, sizeof(k->key), LC_PREFIX_FMT LC_KEY_VISITOR "%s%s",
             lc_shard((const unsigned char *) vid), vid, suffix);
}


static void
lc_agent_email_key(lc_agent_key_t *k, const char *ehash)
{
    snprintf(k->key, sizeof(k->key), LC_PREFIX_FMT LC_KEY_EMAIL "%s",
             lc_shard((const unsigned char *) ehash), ehash);
}


static int
lc_agent_valid_id(const char *s, size_t len)
{
    return len == LC_VID_LEN && lc_agent_is_hex(s, len);
}


/*
 * Whether messages may go to a person: an opt-in recorded and no
 * unsubscribe since. "why" says what is missing.
 */

int
lc_agent_eligible(lc_agent_t *ag, const char *pid, const char **why)
{
    int             ok;
    redisReply     *r;
    lc_agent_key_t  k;

    lc_agent_person_key(&k, pid, "");

    r = lc_agent_cmd(ag, "HMGET %s optin unsub email", k.key);
    if (!lc_agent_redis_ok(ag, r, "HMGET person")) {
        *why = "redis";
        return -1;
    }

    ok = 0;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3
        || r->element[2]->type != REDIS_REPLY_STRING)
    {
        *why = "no person";

    } else if (r->element[0]->type != REDIS_REPLY_STRING) {
        *why = "not opted in";

    } else if (r->element[1]->type == REDIS_REPLY_STRING) {
        *why = "unsubscribed";

    } else {
        ok = 1;
    }

    freeReplyObject(r);

    return ok;
}


/* the person of an address, or 0 when there is none */

static int
lc_agent_person_of(lc_agent_t *ag, const char *email, char *pid)
{
    size_t          len;
    redisReply     *r;
    lc_agent_key_t  k;
    unsigned char   norm[LC_EMAIL_MAX];
    char            ehash[LC_PERSON_ID_LEN + 1];

    len = lc_email_normalize((const unsigned char *) email, strlen(email),
                             norm);
    if (len == 0) {
        return -2;
    }

    lc_email_hash(ag->conf->secret, ag->conf->secret_len, norm, len,
                  (unsigned char *) ehash);
    ehash[LC_PERSON_ID_LEN] = '\0';

    lc_agent_email_key(&k, ehash);

    r = lc_agent_cmd(ag, "GET %s", k.key);
    if (!lc_agent_redis_ok(ag, r, "GET email")) {
        return -1;
    }

    if (r->type != REDIS_REPLY_STRING
        || !lc_agent_valid_id(r->str, r->len))
    {
        freeReplyObject(r);
        return 0;
    }

    memcpy(pid, r->str, LC_PERSON_ID_LEN);
    pid[LC_PERSON_ID_LEN] = '\0';
    freeReplyObject(r);

    return 1;
}


/*
 * The person a command (forget, export) names by address: 0 when found,
 * else the command's exit status, the reason said on stderr.
 */

static int
lc_agent_person_named(lc_agent_t *ag, const char *email, char *pid)
{
    int  rc;

    rc = lc_agent_person_of(ag, email, pid);

    if (rc == -2) {
        fprintf(stderr, "lifecycle-agent: not an e-mail address\n");
        return 2;
    }

    if (rc == 0) {
        fprintf(stderr, "lifecycle-agent: no person has this address\n");
        return 1;
    }

    return rc < 0 ? 3 : 0;
}


/* a copy of a sorted set into another slot's: member by member */

static int
lc_agent_zcopy(lc_agent_t *ag, const char *from, const char *to)
{
    size_t       i;
    redisReply  *r;

    r = lc_agent_cmd(ag, "ZRANGE %s 0 -1 WITHSCORES", from);
    if (!lc_agent_redis_ok(ag, r, "ZRANGE")) {
        return -1;
    }

    for (i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        if (lc_agent_do(ag, "ZADD",
                        lc_agent_cmd(ag, "ZADD %s NX %b %b", to,
                                     r->element[i + 1]->str,
                                     r->element[i + 1]->len,
                                     r->element[i]->str, r->element[i]->len))
            != 0)
        {
            freeReplyObject(r);
            return -1;
        }
    }

    freeReplyObject(r);

    return 0;
}


/*
 * "gone" joins "keep": its visitors, addresses, sessions, messages and
 * cooldown move over, the opt-in and the unsubscribe keep the later of
 * the two, and then the keys of "gone" go. Run again after a crash, it
 * does the same: nothing is deleted before it was copied.
 */

static int
lc_agent_merge(lc_agent_t *ag, const char *keep, const char *gone)
{
    size_t          i;
    long long       a, b;
    redisReply     *r, *g, *t;
    lc_agent_key_t  kk, kg, k2;
    static const char  *suffixes[] = {
        "", LC_KEY_PERSON_VISITORS, LC_KEY_PERSON_EMAILS,
        LC_KEY_PERSON_SESSIONS, LC_KEY_PERSON_MESSAGES,
        LC_KEY_PERSON_COOLDOWN, NULL
    };

    lc_agent_log(LC_AGENT_LOG_INFO, "merge person=%s into person=%s", gone,
                 keep);

    /* visitors: their profiles name the person they belong to */

    lc_agent_person_key(&kg, gone, LC_KEY_PERSON_VISITORS);
    lc_agent_person_key(&kk, keep, LC_KEY_PERSON_VISITORS);

    r = lc_agent_cmd(ag, "SMEMBERS %s", kg.key);
    if (!lc_agent_redis_ok(ag, r, "SMEMBERS")) {
        return -1;
    }

    for (i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        if (!lc_agent_valid_id(r->element[i]->str, r->element[i]->len)) {
            continue;
        }

        lc_agent_profile_key(&k2, r->element[i]->str, "");

        if (lc_agent_do(ag, "SADD", lc_agent_cmd(ag, "SADD %s %b", kk.key,
                                                 r->element[i]->str,
                                                 r->element[i]->len)) != 0
            || lc_agent_hset_existing(ag, k2.key, "person", keep) != 0)
        {
            freeReplyObject(r);
            return -1;
        }
    }

    freeReplyObject(r);

    /* addresses: each address key points at the person kept */

    lc_agent_person_key(&kg, gone, LC_KEY_PERSON_EMAILS);
    lc_agent_person_key(&kk, keep, LC_KEY_PERSON_EMAILS);

    r = lc_agent_cmd(ag, "HGETALL %s", kg.key);
    if (!lc_agent_redis_ok(ag, r, "HGETALL")) {
        return -1;
    }

    for (i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        if (!lc_agent_valid_id(r->element[i]->str, r->element[i]->len)) {
            continue;
        }

        lc_agent_email_key(&k2, r->element[i]->str);

        if (lc_agent_do(ag, "HSET", lc_agent_cmd(ag, "HSET %s %b %b", kk.key,
                                     r->element[i]->str, r->element[i]->len,
                                     r->element[i + 1]->str,
                                     r->element[i + 1]->len)) != 0
            || lc_agent_do(ag, "SET", lc_agent_cmd(ag, "SET %s %s", k2.key,
                                                   keep)) != 0)
        {
            freeReplyObject(r);
            return -1;
        }
    }

    freeReplyObject(r);

    /* sessions and messages */

    lc_agent_person_key(&kg, gone, LC_KEY_PERSON_SESSIONS);
    lc_agent_person_key(&kk, keep, LC_KEY_PERSON_SESSIONS);

    if (lc_agent_zcopy(ag, kg.key, kk.key) != 0) {
        return -1;
    }

    lc_agent_person_key(&kg, gone, LC_KEY_PERSON_MESSAGES);
    lc_agent_person_key(&kk, keep, LC_KEY_PERSON_MESSAGES);

    if (lc_agent_zcopy(ag, kg.key, kk.key) != 0) {
        return -1;
    }

    r = lc_agent_cmd(ag, "ZRANGE %s 0 -1", kg.key);
    if (!lc_agent_redis_ok(ag, r, "ZRANGE")) {
        return -1;
    }

    for (i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        snprintf(k2.key, sizeof(k2.key), LC_KEY_AGENT_MESSAGE "%.*s",
                 (int) (r->element[i]->len > 32 ? 32 : r->element[i]->len),
                 r->element[i]->str);

        if (lc_agent_hset_existing(ag, k2.key, "pid", keep) != 0)
        {
            freeReplyObject(r);
            return -1;
        }
    }

    freeReplyObject(r);

    /* the person's own fields: the later opt-in, any unsubscribe */

    lc_agent_person_key(&kg, gone, "");
    lc_agent_person_key(&kk, keep, "");

    g = lc_agent_cmd(ag, "HGETALL %s", kg.key);
    if (!lc_agent_redis_ok(ag, g, "HGETALL")) {
        return -1;
    }

    t = lc_agent_cmd(ag, "HMGET %s optin unsub welcomed", kk.key);
    if (!lc_agent_redis_ok(ag, t, "HMGET")) {
        freeReplyObject(g);
        return -1;
    }

    a = lc_agent_reply_ll(lc_agent_hash_get(g, "optin"));
    b = lc_agent_reply_ll(t->element[0]);

    if (a > b
        && lc_agent_do(ag, "HSET", lc_agent_cmd(ag, "HSET %s optin %lld",
                                                kk.key, a)) != 0)
    {
        goto failed;
    }

    a = lc_agent_reply_ll(lc_agent_hash_get(g, "unsub"));
    b = lc_agent_reply_ll(t->element[1]);

    if (lc_agent_hash_get(g, "unsub") && (t->element[1]->type
                                          != REDIS_REPLY_STRING || a > b)
        && lc_agent_do(ag, "HSET", lc_agent_cmd(ag, "HSET %s unsub %b",
                            kk.key, lc_agent_hash_get(g, "unsub")->str,
                            lc_agent_hash_get(g, "unsub")->len)) != 0)
    {
        goto failed;
    }

    if (lc_agent_hash_get(g, "welcomed")
        && t->element[2]->type != REDIS_REPLY_STRING
        && lc_agent_do(ag, "HSET", lc_agent_cmd(ag, "HSET %s welcomed %b",
                            kk.key, lc_agent_hash_get(g, "welcomed")->str,
                            lc_agent_hash_get(g, "welcomed")->len)) != 0)
    {
        goto failed;
    }

    freeReplyObject(g);
    freeReplyObject(t);

    /* a cooldown running for "gone" runs on for "keep" */

    lc_agent_person_key(&kg, gone, LC_KEY_PERSON_COOLDOWN);
    lc_agent_person_key(&kk, keep, LC_KEY_PERSON_COOLDOWN);

    r = lc_agent_cmd(ag, "GET %s", kg.key);
    t = r ? lc_agent_cmd(ag, "PTTL %s", kg.key) : NULL;

    if (lc_agent_redis_ok(ag, r, "GET") && lc_agent_redis_ok(ag, t, "PTTL")
        && r->type == REDIS_REPLY_STRING && t->integer > 0)
    {
        lc_agent_do(ag, "SET", lc_agent_cmd(ag, "SET %s %b PX %lld NX",
                                            kk.key, r->str, r->len,
                                            t->integer));
    }

    if (r) {
        freeReplyObject(r);
    }

    if (t) {
        freeReplyObject(t);
    }

    for (i = 0; suffixes[i]; i++) {
        lc_agent_person_key(&kg, gone, suffixes[i]);

        if (lc_agent_do(ag, "DEL", lc_agent_cmd(ag, "DEL %s", kg.key)) != 0) {
            return -1;
        }
    }

    lc_agent_stat(ag, "merges_total");

    return 0;

failed:

    freeReplyObject(g);
    freeReplyObject(t);

    return -1;
}


static long long
lc_agent_created(lc_agent_t *ag, const char *pid)
{
    long long       created;
    redisReply     *r;
    lc_agent_key_t  k;

    lc_agent_person_key(&k, pid, "");

    r = lc_agent_cmd(ag, "HGET %s created", k.key);
    if (!lc_agent_redis_ok(ag, r, "HGET")) {
        return -1;
    }

    created = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10)
                                            : 0;
    freeReplyObject(r);

    /* a person without a record is the newest of all */
    return created ? created : 0x7fffffffffffffffLL;
}


/*
 * The visitor's sessions active within link_window before the opt-in
 * are the person's from now on ("VID:N" -> start in its sessions),
 * newest first until one is older.
 */

static int
lc_agent_link_sessions(lc_agent_t *ag, const char *vid, const char *pid,
    redisReply *profile, long long optin)
{
    unsigned        shard;
    long long       n, visits, since, start, last;
    redisReply     *r;
    lc_agent_key_t  k;

    since = optin - ag->conf->link_window;
    visits = lc_agent_reply_ll(profile->element[1]);
    last = lc_agent_reply_ll(profile->element[2]);
    start = lc_agent_reply_ll(profile->element[3]);
    shard = lc_shard((const unsigned char *) vid);

    lc_agent_person_key(&k, pid, LC_KEY_PERSON_SESSIONS);

    for (n = visits; n >= 1; n--) {
        if (n < visits) {
            r = lc_agent_cmd(ag, "HMGET " LC_PREFIX_FMT LC_KEY_SESSION
                             "%s:%lld start last", shard, vid, n);
            if (!lc_agent_redis_ok(ag, r, "HMGET session")) {
                return -1;
            }

            start = lc_agent_reply_ll(r->element[0]);
            last = lc_agent_reply_ll(r->element[1]);
            freeReplyObject(r);
        }

        if (last == 0 || last < since) {
            break;
        }

        if (lc_agent_do(ag, "ZADD", lc_agent_cmd(ag, "ZADD %s %lld %s:%lld",
                                                 k.key, start, vid, n))
            != 0)
        {
            return -1;
        }
    }

    return 0;
}


/*
 * An opt-in: visitor "vid" gave "email" at "optin" (ms). Returns 0 and
 * the person's id, 1 when the address is refused (it would not pass
 * lc_email_normalize: CR, LF, blanks, anything but a plain address),
 * -1 when Redis failed (the event is then read again later).
 */

int
lc_agent_link(lc_agent_t *ag, const char *vid, const char *email,
    size_t len, long long optin, char *pid)
{
    size_t          nlen;
    long long       a, b, unsub;
    redisReply     *profile, *r;
    const char     *keep, *gone;
    lc_agent_key_t  k, ke;
    unsigned char   norm[LC_EMAIL_MAX];
    char            ehash[LC_PERSON_ID_LEN + 1], cur[LC_PERSON_ID_LEN + 1],
                    pe[LC_PERSON_ID_LEN + 1];

    if (!lc_agent_valid_id(vid, strlen(vid))) {
        return 1;
    }

    nlen = lc_email_normalize((const unsigned char *) email, len, norm);
    if (nlen == 0) {
        return 1;
    }

    lc_email_hash(ag->conf->secret, ag->conf->secret_len, norm, nlen,
                  (unsigned char *) ehash);
    ehash[LC_PERSON_ID_LEN] = '\0';

    lc_agent_profile_key(&k, vid, "");

    profile = lc_agent_cmd(ag, "HMGET %s person visits last s.start", k.key);
    if (!lc_agent_redis_ok(ag, profile, "HMGET profile")) {
        return -1;
    }

    cur[0] = '\0';

    if (profile->element[0]->type == REDIS_REPLY_STRING
        && lc_agent_valid_id(profile->element[0]->str,
                             profile->element[0]->len))
    {
        memcpy(cur, profile->element[0]->str, LC_PERSON_ID_LEN + 1);
    }

    /* the address's person: the first one to claim it keeps it */

    lc_agent_email_key(&ke, ehash);

    r = lc_agent_cmd(ag, "SET %s %s NX GET", ke.key, cur[0] ? cur : ehash);
    if (!lc_agent_redis_ok(ag, r, "SET email")) {
        goto failed;
    }

    if (r->type == REDIS_REPLY_STRING && lc_agent_valid_id(r->str, r->len)) {
        memcpy(pe, r->str, LC_PERSON_ID_LEN);
        pe[LC_PERSON_ID_LEN] = '\0';

    } else {
        memcpy(pe, cur[0] ? cur : ehash, LC_PERSON_ID_LEN + 1);
    }

    freeReplyObject(r);

    keep = pe;

    if (cur[0] && strcmp(cur, pe) != 0) {
        a = lc_agent_created(ag, cur);
        b = lc_agent_created(ag, pe);

        if (a < 0 || b < 0) {
            goto failed;
        }

        keep = (a < b || (a == b && strcmp(cur, pe) < 0)) ? cur : pe;
        gone = keep == cur ? pe : cur;

        if (lc_agent_merge(ag, keep, gone) != 0) {
            goto failed;
        }

        if (lc_agent_do(ag, "SET", lc_agent_cmd(ag, "SET %s %s", ke.key,
                                                keep)) != 0)
        {
            goto failed;
        }
    }

    memcpy(pid, keep, LC_PERSON_ID_LEN + 1);

    /* the person: made once, the latest address and consent on it */

    lc_agent_person_key(&k, pid, "");

    r = lc_agent_cmd(ag, "HMGET %s optin unsub", k.key);
    if (!lc_agent_redis_ok(ag, r, "HMGET person")) {
        goto failed;
    }

    a = lc_agent_reply_ll(r->element[0]);
    unsub = lc_agent_reply_ll(r->element[1]);
    b = r->element[1]->type == REDIS_REPLY_STRING;
    freeReplyObject(r);

    if (lc_agent_do(ag, "HSETNX", lc_agent_cmd(ag, "HSETNX %s created %lld",
                                               k.key, lc_agent_now())) != 0
        || lc_agent_do(ag, "HSET", lc_agent_cmd(ag, "HSET %s email %b", k.key,
                                                norm, nlen)) != 0
        || (optin > a
            && lc_agent_do(ag, "HSET", lc_agent_cmd(ag, "HSET %s optin %lld",
                                                    k.key, optin)) != 0))
    {
        goto failed;
    }

    /*
     * A new consent after an unsubscribe (both are times) lifts it; an
     * opt-in read again from the stream is older and does not.
     */
    if (b && unsub > 0 && optin > unsub) {
        lc_agent_log(LC_AGENT_LOG_INFO, "person=%s opted in again after "
                     "unsubscribing", pid);

        if (lc_agent_do(ag, "HDEL", lc_agent_cmd(ag, "HDEL %s unsub", k.key))
            != 0)
        {
            goto failed;
        }
    }

    lc_agent_person_key(&k, pid, LC_KEY_PERSON_EMAILS);

    if (lc_agent_do(ag, "HSET", lc_agent_cmd(ag, "HSET %s %s %b", k.key,
                                             ehash, norm, nlen)) != 0)
    {
        goto failed;
    }

    lc_agent_person_key(&k, pid, LC_KEY_PERSON_VISITORS);

    if (lc_agent_do(ag, "SADD", lc_agent_cmd(ag, "SADD %s %s", k.key, vid))
        != 0)
    {
        goto failed;
    }

    lc_agent_profile_key(&k, vid, "");

    if (lc_agent_hset_existing(ag, k.key, "person", pid) != 0
        || lc_agent_link_sessions(ag, vid, pid, profile, optin) != 0)
    {
        goto failed;
    }

    freeReplyObject(profile);

    return 0;

failed:

    freeReplyObject(profile);

    return -1;
}


/* an unsubscribe (from the module's endpoint): pending messages go */

void
lc_agent_unsubscribed(lc_agent_t *ag, const char *pid)
{
    size_t          i;
    redisReply     *r, *s;
    lc_agent_key_t  k;
    char            mk[sizeof(LC_KEY_AGENT_MESSAGE) + LC_AGENT_ID_LEN];

    lc_agent_person_key(&k, pid, LC_KEY_PERSON_MESSAGES);

    r = lc_agent_cmd(ag, "ZRANGE %s 0 -1", k.key);
    if (!lc_agent_redis_ok(ag, r, "ZRANGE")) {
        return;
    }

    for (i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        if (r->element[i]->len != LC_AGENT_ID_LEN) {
            continue;
        }

        snprintf(mk, sizeof(mk), LC_KEY_AGENT_MESSAGE "%s",
                 r->element[i]->str);

        s = lc_agent_cmd(ag, "ZREM " LC_KEY_AGENT_DUE " %s",
                         r->element[i]->str);

        if (lc_agent_redis_ok(ag, s, "ZREM")) {
            if (s->integer == 1) {
                lc_agent_log(LC_AGENT_LOG_INFO, "message=%s person=%s "
                             "decision=cancel reason=unsubscribed",
                             r->element[i]->str, pid);
                lc_agent_do(ag, "HSET", lc_agent_cmd(ag,
                            "HSET %s state cancelled reason unsubscribed",
                            mk));
            }

            freeReplyObject(s);
        }
    }

    freeReplyObject(r);
}


/* XDEL of every entry of a stream whose "field" is one of "values" */

static long long
lc_agent_xdel_matching(lc_agent_t *ag, const char *stream, const char *field,
    const redisReply *values, const char *value)
{
    size_t        i, j, f;
    long long     n;
    redisReply   *r, *e, *fields;
    char          start[64];
    int           hit;

    n = 0;
    strcpy(start, "-");

    for ( ;; ) {
        r = lc_agent_cmd(ag, "XRANGE %s %s + COUNT %d", stream, start,
                         LC_AGENT_XRANGE_BATCH);
        if (!lc_agent_redis_ok(ag, r, "XRANGE")) {
            return -1;
        }

        if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
            freeReplyObject(r);
            return n;
        }

        for (i = 0; i < r->elements; i++) {
            e = r->element[i];
            fields = e->element[1];
            hit = 0;

            for (f = 0; fields->type == REDIS_REPLY_ARRAY
                        && f + 1 < fields->elements; f += 2)
            {
                if (strcmp(fields->element[f]->str, field) != 0) {
                    continue;
                }

                if (value && strcmp(fields->element[f + 1]->str, value) == 0)
                {
                    hit = 1;
                }

                for (j = 0; values && j < values->elements; j++) {
                    if (strcmp(fields->element[f + 1]->str,
                               values->element[j]->str) == 0)
                    {
                        hit = 1;
                    }
                }
            }

            if (hit && lc_agent_do(ag, "XDEL", lc_agent_cmd(ag, "XDEL %s %s",
                                                stream, e->element[0]->str))
                       == 0)
            {
                n++;
            }
        }

        snprintf(start, sizeof(start), "(%s",
                 r->element[r->elements - 1]->element[0]->str);
        freeReplyObject(r);
    }
}


/* every key of a visitor, the sessions and decisions one by one */

static long long
lc_agent_forget_visitor(lc_agent_t *ag, const char *vid)
{
    long long       n, visits, deleted;
    unsigned        shard;
    redisReply     *r;
    lc_agent_key_t  k;
    static const char  *suffixes[] = {
        "", LC_KEY_SEARCHES, LC_KEY_CART, LC_KEY_ORDERS, LC_KEY_OPTINS, NULL
    };

    shard = lc_shard((const unsigned char *) vid);
    lc_agent_profile_key(&k, vid, "");

    r = lc_agent_cmd(ag, "HGET %s visits", k.key);
    if (!lc_agent_redis_ok(ag, r, "HGET")) {
        return -1;
    }

    visits = lc_agent_reply_ll(r);
    freeReplyObject(r);

    deleted = 0;

    for (n = 0; suffixes[n]; n++) {
        lc_agent_profile_key(&k, vid, suffixes[n]);
        r = lc_agent_cmd(ag, "DEL %s", k.key);
        if (!lc_agent_redis_ok(ag, r, "DEL")) {
            return -1;
        }
        deleted += r->integer;
        freeReplyObject(r);
    }

    for (n = 1; n <= visits; n++) {
        r = lc_agent_cmd(ag, "DEL " LC_PREFIX_FMT LC_KEY_SESSION "%s:%lld "
                         LC_PREFIX_FMT LC_KEY_DECISION "%s:%lld",
                         shard, vid, n, shard, vid, n);
        if (!lc_agent_redis_ok(ag, r, "DEL")) {
            return -1;
        }
        deleted += r->integer;
        freeReplyObject(r);

        if (lc_agent_do(ag, "ZREM", lc_agent_cmd(ag, "ZREM " LC_PREFIX_FMT
                                                 LC_KEY_IDLE " %s:%lld",
                                                 shard, vid, n)) != 0)
        {
            return -1;
        }
    }

    snprintf(k.key, sizeof(k.key), LC_PREFIX_FMT LC_KEY_EVENTS, shard);

    if (lc_agent_xdel_matching(ag, k.key, "vid", NULL, vid) < 0) {
        return -1;
    }

    return deleted;
}


/*
 * "forget EMAIL": the person, every visitor linked to it (profiles,
 * searches, carts, orders, sessions, decisions, their events in the
 * streams), its addresses, its messages pending or sent, its dead
 * letters. Prints what went; 1 when nobody has that address.
 */

int
lc_agent_forget(lc_agent_t *ag, const char *email)
{
    int             rc;
    size_t          i;
    long long       n, keys;
    redisReply     *v, *r;
    lc_agent_key_t  k;
    char            pid[LC_PERSON_ID_LEN + 1],
                    mk[sizeof(LC_KEY_AGENT_MESSAGE) + 64];
    static const char  *suffixes[] = {
        "", LC_KEY_PERSON_VISITORS, LC_KEY_PERSON_EMAILS,
        LC_KEY_PERSON_SESSIONS, LC_KEY_PERSON_MESSAGES,
        LC_KEY_PERSON_COOLDOWN, NULL
    };

    rc = lc_agent_person_named(ag, email, pid);

    if (rc != 0) {
        return rc;
    }

    keys = 0;

    /* the addresses' keys first: nothing leads to the person any more */

    lc_agent_person_key(&k, pid, LC_KEY_PERSON_EMAILS);

    r = lc_agent_cmd(ag, "HKEYS %s", k.key);
    if (!lc_agent_redis_ok(ag, r, "HKEYS")) {
        return 3;
    }

    for (i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        if (lc_agent_valid_id(r->element[i]->str, r->element[i]->len)) {
            lc_agent_email_key(&k, r->element[i]->str);
            if (lc_agent_do(ag, "DEL", lc_agent_cmd(ag, "DEL %s", k.key))
                == 0)
            {
                keys++;
            }
        }
    }

    freeReplyObject(r);

    lc_agent_person_key(&k, pid, LC_KEY_PERSON_VISITORS);

    v = lc_agent_cmd(ag, "SMEMBERS %s", k.key);
    if (!lc_agent_redis_ok(ag, v, "SMEMBERS")) {
        return 3;
    }

    for (i = 0; v->type == REDIS_REPLY_ARRAY && i < v->elements; i++) {
        if (!lc_agent_valid_id(v->element[i]->str, v->element[i]->len)) {
            continue;
        }

        n = lc_agent_forget_visitor(ag, v->element[i]->str);
        if (n < 0) {
            freeReplyObject(v);
            return 3;
        }

        keys += n;
    }

    /* messages: queued, sent, dead-lettered */

    lc_agent_person_key(&k, pid, LC_KEY_PERSON_MESSAGES);

    r = lc_agent_cmd(ag, "ZRANGE %s 0 -1", k.key);
    if (!lc_agent_redis_ok(ag, r, "ZRANGE")) {
        freeReplyObject(v);
        return 3;
    }

    for (i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        snprintf(mk, sizeof(mk), LC_KEY_AGENT_MESSAGE "%.*s",
                 (int) (r->element[i]->len > 32 ? 32 : r->element[i]->len),
                 r->element[i]->str);

        lc_agent_do(ag, "ZREM", lc_agent_cmd(ag, "ZREM " LC_KEY_AGENT_DUE
                                             " %b", r->element[i]->str,
                                             r->element[i]->len));
        if (lc_agent_do(ag, "DEL", lc_agent_cmd(ag, "DEL %s", mk)) == 0) {
            keys++;
        }
    }

    freeReplyObject(r);

    if (lc_agent_xdel_matching(ag, LC_KEY_AGENT_DEAD, "person", NULL, pid) < 0
        || lc_agent_xdel_matching(ag, LC_KEY_AGENT_DEAD, "visitor", v, NULL)
           < 0)
    {
        freeReplyObject(v);
        return 3;
    }

    for (i = 0; suffixes[i]; i++) {
        lc_agent_person_key(&k, pid, suffixes[i]);
        if (lc_agent_do(ag, "DEL", lc_agent_cmd(ag, "DEL %s", k.key)) != 0) {
            freeReplyObject(v);
            return 3;
        }
    }

    lc_agent_log(LC_AGENT_LOG_INFO, "forget person=%s visitors=%zu",
                 pid, v->type == REDIS_REPLY_ARRAY ? v->elements : 0);
    printf("forgot person %s: %zu visitor(s)\n", pid,
           v->type == REDIS_REPLY_ARRAY ? v->elements : 0);

    freeReplyObject(v);
    lc_agent_stat(ag, "forgets_total");

    return 0;
}


/* a hash reply as a JSON object; numbers stay strings (as stored) */

static json_t *
lc_agent_json_hash(const redisReply *r)
{
    size_t   i;
    json_t  *o;

    o = json_object();

    for (i = 0; o && r && r->type == REDIS_REPLY_ARRAY
                && i + 1 < r->elements; i += 2)
    {
        json_object_setn_new_nocheck(o, r->element[i]->str,
                                     r->element[i]->len,
                                     json_stringn_nocheck(
                                         r->element[i + 1]->str,
                                         r->element[i + 1]->len));
    }

    return o;
}


static json_t *
lc_agent_json_list(const redisReply *r)
{
    size_t   i;
    json_t  *a;

    a = json_array();

    for (i = 0; a && r && r->type == REDIS_REPLY_ARRAY && i < r->elements;
         i++)
    {
        json_array_append_new(a, json_stringn_nocheck(r->element[i]->str,
                                                      r->element[i]->len));
    }

    return a;
}


/* one command's reply as JSON (hash or list), NULL when Redis failed */

static json_t *
lc_agent_json_cmd(lc_agent_t *ag, int hash, const char *fmt, ...)
{
    json_t      *j;
    va_list      args;
    redisReply  *r;

    va_start(args, fmt);
    r = lc_agent_vcmd(ag, fmt, args);
    va_end(args);

    if (!lc_agent_redis_ok(ag, r, "export")) {
        return NULL;
    }

    j = hash ? lc_agent_json_hash(r) : lc_agent_json_list(r);
    freeReplyObject(r);

    return j;
}


static json_t *
lc_agent_export_visitor(lc_agent_t *ag, const char *vid)
{
    long long       n, visits;
    unsigned        shard;
    json_t         *o, *profile, *sessions, *decisions, *s;
    lc_agent_key_t  k;

    shard = lc_shard((const unsigned char *) vid);
    lc_agent_profile_key(&k, vid, "");

    profile = lc_agent_json_cmd(ag, 1, "HGETALL %s", k.key);
    if (profile == NULL) {
        return NULL;
    }

    o = json_pack("{s:s, s:o}", "id", vid, "profile", profile);

    lc_agent_profile_key(&k, vid, LC_KEY_SEARCHES);
    json_object_set_new(o, "searches",
                        lc_agent_json_cmd(ag, 0, "LRANGE %s 0 -1", k.key));
    lc_agent_profile_key(&k, vid, LC_KEY_CART);
    json_object_set_new(o, "cart",
                        lc_agent_json_cmd(ag, 1, "HGETALL %s", k.key));
    lc_agent_profile_key(&k, vid, LC_KEY_ORDERS);
    json_object_set_new(o, "orders",
                        lc_agent_json_cmd(ag, 0, "LRANGE %s 0 -1", k.key));

    visits = strtoll(json_string_value(json_object_get(profile, "visits"))
                     ? json_string_value(json_object_get(profile, "visits"))
                     : "0", NULL, 10);

    sessions = json_array();
    decisions = json_array();

    for (n = 1; n <= visits; n++) {
        s = lc_agent_json_cmd(ag, 1, "HGETALL " LC_PREFIX_FMT LC_KEY_SESSION
                              "%s:%lld", shard, vid, n);
        if (s && json_object_size(s)) {
            json_object_set_new(s, "n", json_integer(n));
            json_array_append_new(sessions, s);

        } else {
            json_decref(s);
        }

        s = lc_agent_json_cmd(ag, 1, "HGETALL " LC_PREFIX_FMT LC_KEY_DECISION
                              "%s:%lld", shard, vid, n);
        if (s && json_object_size(s)) {
            json_object_set_new(s, "session", json_integer(n));
            json_array_append_new(decisions, s);

        } else {
            json_decref(s);
        }
    }

    json_object_set_new(o, "sessions", sessions);
    json_object_set_new(o, "decisions", decisions);

    return o;
}


/*
 * "export EMAIL": everything held about the person as one JSON
 * document on stdout: the person, its addresses, its visitors with
 * their profiles, searches, carts, orders, sessions and what the agent
 * decided about each, and its messages.
 */

int
lc_agent_export(lc_agent_t *ag, const char *email)
{
    int             rc;
    size_t          i;
    json_t         *doc, *visitors, *messages, *m, *x;
    redisReply     *v, *r;
    lc_agent_key_t  k;
    char            pid[LC_PERSON_ID_LEN + 1];

    rc = lc_agent_person_named(ag, email, pid);

    if (rc != 0) {
        return rc;
    }

    lc_agent_person_key(&k, pid, "");
    x = lc_agent_json_cmd(ag, 1, "HGETALL %s", k.key);
    if (x == NULL) {
        return 3;
    }

    doc = json_pack("{s:s, s:s, s:o}", "id", pid, "email",
                    json_string_value(json_object_get(x, "email"))
                    ? json_string_value(json_object_get(x, "email")) : "",
                    "person", x);

    lc_agent_person_key(&k, pid, LC_KEY_PERSON_EMAILS);
    x = lc_agent_json_cmd(ag, 1, "HGETALL %s", k.key);
    json_object_set_new(doc, "addresses", x ? x : json_null());

    lc_agent_person_key(&k, pid, LC_KEY_PERSON_SESSIONS);
    x = lc_agent_json_cmd(ag, 0, "ZRANGE %s 0 -1", k.key);
    json_object_set_new(doc, "linked_sessions", x ? x : json_null());

    lc_agent_person_key(&k, pid, LC_KEY_PERSON_VISITORS);
    v = lc_agent_cmd(ag, "SMEMBERS %s", k.key);
    if (!lc_agent_redis_ok(ag, v, "SMEMBERS")) {
        json_decref(doc);
        return 3;
    }

    visitors = json_array();

    for (i = 0; v->type == REDIS_REPLY_ARRAY && i < v->elements; i++) {
        if (!lc_agent_valid_id(v->element[i]->str, v->element[i]->len)) {
            continue;
        }

        x = lc_agent_export_visitor(ag, v->element[i]->str);
        if (x == NULL) {
            freeReplyObject(v);
            json_decref(visitors);
            json_decref(doc);
            return 3;
        }

        json_array_append_new(visitors, x);
    }

    freeReplyObject(v);
    json_object_set_new(doc, "visitors", visitors);

    lc_agent_person_key(&k, pid, LC_KEY_PERSON_MESSAGES);
    r = lc_agent_cmd(ag, "ZRANGE %s 0 -1", k.key);
    if (!lc_agent_redis_ok(ag, r, "ZRANGE")) {
        json_decref(doc);
        return 3;
    }

    messages = json_array();

    for (i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        m = lc_agent_json_cmd(ag, 1, "HGETALL " LC_KEY_AGENT_MESSAGE "%b",
                              r->element[i]->str, r->element[i]->len);
        if (m && json_object_size(m)) {
            json_object_set_new(m, "id", json_stringn(r->element[i]->str,
                                                      r->element[i]->len));
            json_array_append_new(messages, m);

        } else {
            json_decref(m);
        }
    }

    freeReplyObject(r);
    json_object_set_new(doc, "messages", messages);

    json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
    fputc('\n', stdout);
    json_decref(doc);

    return 0;
}
