
/*
 * lifecycle-agent: abandonment. The module indexes sessions in each
 * shard's "lc:{hh}:idle" (member "VID:N", scored with the session's
 * start); every scan_interval the agent takes the entries older than
 * abandon_after and asks the profile for the truth: a session still
 * going gets its score moved to its last activity, a session idle for
 * abandon_after is judged once. The next scan comes at the next
 * deadline the indexes or the events show, or after scan_interval,
 * whichever is first. The judgement is claimed in "lc:{hh}:a:VID:N"
 * (owner and time, set only if no one has it) before anything else, so
 * that of several agents one only takes it, and it is a record that
 * survives a crash: a session is never judged, nor its message queued,
 * twice.
 */


#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lc_agent.h"


/* candidates taken per shard and scan */
#define LC_AGENT_SCAN_BATCH  200


/*
 * The claim on a session, and its taking over, in one step: the owner
 * and the time together, and only if the owner is still the one
 * expected (none for a first claim). KEYS: the decision; ARGV: owner,
 * now, the owner expected or "".
 */
static const char  lc_agent_claim_session_lua[] =
    "local cur = redis.call('HGET', KEYS[1], 'owner') "
    "if (ARGV[3] == '' and cur) or (ARGV[3] ~= '' and cur ~= ARGV[3]) "
    "then return 0 end "
    "redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'at', ARGV[2]) "
    "return 1";


/* the profile fields a judgement reads, in this order */
enum {
    LC_AGENT_P_VISITS = 0,
    LC_AGENT_P_LAST,
    LC_AGENT_P_START,
    LC_AGENT_P_PRODUCTS,
    LC_AGENT_P_CATEGORIES,
    LC_AGENT_P_PURCHASE,
    LC_AGENT_P_LAST_PURCHASE,
    LC_AGENT_P_CART,
    LC_AGENT_P_PERSON,
    LC_AGENT_P_EMAIL,
    LC_AGENT_P_OPTIN,
    LC_AGENT_P_FIELDS
};


typedef struct {
    unsigned                    shard;
    char                        vid[LC_VID_LEN + 1];
    long long                   n;
    const char                 *member;
    size_t                      member_len;
    char                        decision[LC_PREFIX_LEN + 64];
    redisReply                 *profile;
} lc_agent_session_t;


/* "VID:N" */

int
lc_agent_session_split(const char *member, size_t len, char *vid,
    long long *n)
{
    size_t     i;
    long long  v;

    if (len < LC_VID_LEN + 2 || len > LC_VID_LEN + 20
        || member[LC_VID_LEN] != ':'
        || !lc_agent_is_hex(member, LC_VID_LEN))
    {
        return -1;
    }

    v = 0;

    for (i = LC_VID_LEN + 1; i < len; i++) {
        if (member[i] < '0' || member[i] > '9') {
            return -1;
        }

        v = v * 10 + (member[i] - '0');
    }

    if (v <= 0) {
        return -1;
    }

    memcpy(vid, member, LC_VID_LEN);
    vid[LC_VID_LEN] = '\0';
    *n = v;

    return 0;
}


static void
lc_agent_idle_drop(lc_agent_t *ag, lc_agent_session_t *s)
{
    redisReply  *r;

    r = lc_agent_cmd(ag, "ZREM " LC_PREFIX_FMT LC_KEY_IDLE " %b", s->shard,
                     s->member, s->member_len);

    if (lc_agent_redis_ok(ag, r, "ZREM idle")) {
        freeReplyObject(r);
    }
}


/* the judgement's state and why; a final one also leaves the index */

static int
lc_agent_decide(lc_agent_t *ag, lc_agent_session_t *s, const char *state,
    const char *kind, const char *reason)
{
    redisReply  *r;

    r = lc_agent_cmd(ag, "HSET %s state %s kind %s reason %s at %lld",
                     s->decision, state, kind, reason, lc_agent_now());

    if (!lc_agent_redis_ok(ag, r, "HSET decision")) {
        return -1;
    }

    freeReplyObject(r);

    lc_agent_idle_drop(ag, s);

    return 0;
}


/* 1 when the session is ours now, 0 when it is somebody's, -1 */

static int
lc_agent_claim_session(lc_agent_t *ag, lc_agent_session_t *s,
    const char *expected, long long now)
{
    int          rc;
    redisReply  *r;
    char         at[24];

    snprintf(at, sizeof(at), "%lld", now);

    {
        const char  *argv[] = {
            "EVAL", lc_agent_claim_session_lua, "1", s->decision, ag->owner,
            at, expected
        };
        size_t       lens[7], i;

        for (i = 0; i < 7; i++) {
            lens[i] = strlen(argv[i]);
        }

        r = lc_agent_cmdv(ag, 7, argv, lens);
    }

    if (!lc_agent_redis_ok(ag, r, "EVAL claim session")) {
        return -1;
    }

    rc = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);

    return rc;
}


static const char *
lc_agent_str(redisReply *r, size_t i, size_t *len)
{
    if (r->element[i]->type != REDIS_REPLY_STRING) {
        *len = 0;
        return "";
    }

    *len = r->element[i]->len;

    return r->element[i]->str;
}


/* a "\n" list of the profile with an id in it ("\n" alone has none) */

static int
lc_agent_list_has(redisReply *p, size_t i)
{
    size_t       len;
    const char  *v;

    v = lc_agent_str(p, i, &len);

    return strspn(v, "\n") < len;
}


/*
 * The kind of abandonment of an idle session, NULL for none (and why):
 * a purchase in it, or since it began, is none; a cart that is not
 * empty is a cart abandonment; products or categories read, nothing in
 * the cart, a browse abandonment.
 */

static const char *
lc_agent_kind_of(lc_agent_session_t *s, const char **why)
{
    size_t       len;
    long long    start, bought;
    redisReply  *p;

    p = s->profile;
    start = lc_agent_reply_ll(p->element[LC_AGENT_P_START]);
    bought = lc_agent_reply_ll(p->element[LC_AGENT_P_LAST_PURCHASE]);

    lc_agent_str(p, LC_AGENT_P_PURCHASE, &len);

    if (len || (bought > 0 && bought >= start)) {
        *why = "purchased";
        return NULL;
    }

    if (lc_agent_reply_ll(p->element[LC_AGENT_P_CART]) > 0) {
        return "cart";
    }

    /* "s.pb": the length of the session's products in "r" */
    if (lc_agent_reply_ll(p->element[LC_AGENT_P_PRODUCTS]) > 0
        || lc_agent_list_has(p, LC_AGENT_P_CATEGORIES))
    {
        return "browse";
    }

    *why = "nothing viewed";

    return NULL;
}


/*
 * The person to write to: the profile's, or, when the opt-in's event
 * was not read yet (the profile has the address and the time of
 * consent), linked now. 0 and no person when there is none.
 */

static int
lc_agent_person_for(lc_agent_t *ag, lc_agent_session_t *s, char *pid)
{
    int          rc;
    size_t       len;
    const char  *v, *email;
    redisReply  *p;

    p = s->profile;
    v = lc_agent_str(p, LC_AGENT_P_PERSON, &len);

    if (len == LC_PERSON_ID_LEN && lc_agent_is_hex(v, len)) {
        memcpy(pid, v, LC_PERSON_ID_LEN + 1);
        return 1;
    }

    email = lc_agent_str(p, LC_AGENT_P_EMAIL, &len);

    if (len == 0 || lc_agent_reply_ll(p->element[LC_AGENT_P_OPTIN]) <= 0) {
        return 0;
    }

    rc = lc_agent_link(ag, s->vid, email, len,
                       lc_agent_reply_ll(p->element[LC_AGENT_P_OPTIN]), pid);

    return rc == 0 ? 1 : (rc == 1 ? 0 : -1);
}


/*
 * One claimed session: the kind, the person, the cooldown, and the
 * message queued. The decision records "planned" with the message id
 * before the message is queued, so that a run that takes over after a
 * crash queues the same message (enqueue is idempotent by id).
 */

static int
lc_agent_judge(lc_agent_t *ag, lc_agent_session_t *s, long long now)
{
    int                  rc;
    redisReply          *r;
    const char          *kind, *why;
    lc_agent_msg_ref_t   ref;
    char                 stat[64], cool[LC_PREFIX_LEN + 64];

    why = "";
    kind = lc_agent_kind_of(s, &why);

    if (kind == NULL) {
        lc_agent_log(LC_AGENT_LOG_DEBUG, "session=%s:%lld decision=none "
                     "reason=\"%s\"", s->vid, s->n, why);
        return lc_agent_decide(ag, s, "none", "", why);
    }

    snprintf(stat, sizeof(stat), "abandonments_total{kind=\"%s\"}", kind);
    lc_agent_stat(ag, stat);

    memset(&ref, 0, sizeof(ref));

    rc = lc_agent_person_for(ag, s, ref.pid);
    if (rc < 0) {
        return -1;
    }

    if (rc == 0) {
        lc_agent_log(LC_AGENT_LOG_INFO, "session=%s:%lld kind=%s "
                     "decision=skip reason=\"not opted in\"", s->vid, s->n,
                     kind);
        lc_agent_stat(ag, "skipped_total{reason=\"not opted in\"}");
        return lc_agent_decide(ag, s, "skipped", kind, "not opted in");
    }

    rc = lc_agent_eligible(ag, ref.pid, &why);
    if (rc < 0) {
        return -1;
    }

    if (rc == 0) {
        lc_agent_log(LC_AGENT_LOG_INFO, "session=%s:%lld kind=%s person=%s "
                     "decision=skip reason=\"%s\"", s->vid, s->n, kind,
                     ref.pid, why);
        snprintf(stat, sizeof(stat), "skipped_total{reason=\"%s\"}", why);
        lc_agent_stat(ag, stat);
        return lc_agent_decide(ag, s, "skipped", kind, why);
    }

    /* one abandonment message per person and cooldown: the first wins */

    snprintf(cool, sizeof(cool), LC_PREFIX_FMT LC_KEY_PERSON "%s"
             LC_KEY_PERSON_COOLDOWN, lc_shard((unsigned char *) ref.pid),
             ref.pid);

    r = lc_agent_cmd(ag, "SET %s %b NX GET PX %lld", cool, s->member,
                     s->member_len,
                     ag->conf->cooldown > 0 ? ag->conf->cooldown : 1);
    if (!lc_agent_redis_ok(ag, r, "SET cooldown")) {
        return -1;
    }

    /* held by this very session: a judgement taken again after a crash */
    rc = r->type != REDIS_REPLY_STRING
         || (r->len == s->member_len
             && memcmp(r->str, s->member, r->len) == 0);
    freeReplyObject(r);

    if (!rc) {
        lc_agent_log(LC_AGENT_LOG_INFO, "session=%s:%lld kind=%s person=%s "
                     "decision=skip reason=cooldown", s->vid, s->n, kind,
                     ref.pid);
        lc_agent_stat(ag, "skipped_total{reason=\"cooldown\"}");
        return lc_agent_decide(ag, s, "skipped", kind, "cooldown");
    }

    if (lc_agent_random_id(ref.id) != 0) {
        return -1;
    }

    ref.kind = strcmp(kind, "cart") == 0 ? LC_AGENT_CART : LC_AGENT_BROWSE;
    memcpy(ref.vid, s->vid, LC_VID_LEN + 1);
    ref.sess = s->n;
    ref.start = lc_agent_reply_ll(s->profile->element[LC_AGENT_P_START]);
    ref.created = now;

    r = lc_agent_cmd(ag, "HSET %s state planned kind %s message %s "
                     "person %s start %lld", s->decision, kind, ref.id,
                     ref.pid, ref.start);
    if (!lc_agent_redis_ok(ag, r, "HSET decision")) {
        return -1;
    }

    freeReplyObject(r);

    if (lc_agent_enqueue(ag, &ref, now) != 0) {
        return -1;
    }

    lc_agent_log(LC_AGENT_LOG_INFO, "session=%s:%lld kind=%s person=%s "
                 "decision=send message=%s idle=%llds", s->vid, s->n, kind,
                 ref.pid, ref.id,
                 (now - lc_agent_reply_ll(s->profile->element[LC_AGENT_P_LAST]))
                 / 1000);

    return lc_agent_decide(ag, s, "queued", kind, "");
}


/*
 * A session whose claim is somebody's already. Judged: only the index
 * entry is left to drop. Claimed but unfinished, by an earlier run of
 * this agent or by one whose lease ran out: taken over, and a planned
 * message is queued (the same id, so once).
 */

static int
lc_agent_take_over(lc_agent_t *ag, lc_agent_session_t *s, long long now)
{
    int                  rc;
    size_t               clen;
    redisReply          *r;
    const redisReply    *state, *owner, *at, *msg, *kind, *pid, *start;
    lc_agent_msg_ref_t   ref;

    r = lc_agent_cmd(ag, "HGETALL %s", s->decision);
    if (!lc_agent_redis_ok(ag, r, "HGETALL decision")) {
        return -1;
    }

    state = lc_agent_hash_get(r, "state");
    owner = lc_agent_hash_get(r, "owner");
    at = lc_agent_hash_get(r, "at");

    if (state && strcmp(state->str, "planned") != 0) {
        freeReplyObject(r);
        lc_agent_idle_drop(ag, s);
        return 0;
    }

    clen = strlen(ag->conf->consumer);

    if (owner && strcmp(owner->str, ag->owner) != 0
        && !(owner->len > clen
             && memcmp(owner->str, ag->conf->consumer, clen) == 0
             && owner->str[clen] == '/')
        && now - lc_agent_reply_ll(at) < LC_AGENT_LEASE)
    {
        /* another agent, alive as far as we know, is on it */
        freeReplyObject(r);
        return 0;
    }

    lc_agent_log(owner && strcmp(owner->str, ag->owner) == 0
                 ? LC_AGENT_LOG_DEBUG : LC_AGENT_LOG_INFO,
                 "session=%s:%lld: unfinished judgement of %s taken up",
                 s->vid, s->n, owner ? owner->str : "?");

    if (state == NULL) {
        /* judged again from the start, by one agent only */
        rc = owner ? lc_agent_claim_session(ag, s, owner->str, now) : -1;
        freeReplyObject(r);

        return rc == 1 ? lc_agent_judge(ag, s, now) : rc;
    }

    msg = lc_agent_hash_get(r, "message");
    kind = lc_agent_hash_get(r, "kind");
    pid = lc_agent_hash_get(r, "person");
    start = lc_agent_hash_get(r, "start");

    if (msg == NULL || msg->len != LC_AGENT_ID_LEN || kind == NULL
        || pid == NULL || pid->len != LC_PERSON_ID_LEN)
    {
        freeReplyObject(r);
        return lc_agent_decide(ag, s, "none", "", "unreadable claim");
    }

    memset(&ref, 0, sizeof(ref));
    memcpy(ref.id, msg->str, LC_AGENT_ID_LEN + 1);
    memcpy(ref.pid, pid->str, LC_PERSON_ID_LEN + 1);
    memcpy(ref.vid, s->vid, LC_VID_LEN + 1);
    ref.kind = strcmp(kind->str, "cart") == 0 ? LC_AGENT_CART
                                              : LC_AGENT_BROWSE;
    ref.sess = s->n;
    ref.start = lc_agent_reply_ll(start);
    ref.created = now;

    freeReplyObject(r);

    rc = lc_agent_enqueue(ag, &ref, now);

    return rc == 0 ? lc_agent_decide(ag, s, "queued",
                                     lc_agent_kind_names[ref.kind], "")
                   : -1;
}


static int
lc_agent_session(lc_agent_t *ag, lc_agent_session_t *s, long long now)
{
    int          rc;
    long long    visits, last;
    redisReply  *r;

    s->profile = lc_agent_cmd(ag, "HMGET " LC_PREFIX_FMT LC_KEY_VISITOR "%s"
                              " visits last s.start s.pb s.c s.purchase"
                              " last_purchase cart person email optin",
                              s->shard, s->vid);

    if (!lc_agent_redis_ok(ag, s->profile, "HMGET profile")) {
        s->profile = NULL;
        return -1;
    }

    if (s->profile->type != REDIS_REPLY_ARRAY
        || s->profile->elements != LC_AGENT_P_FIELDS
        || s->profile->element[LC_AGENT_P_VISITS]->type != REDIS_REPLY_STRING)
    {
        /* the visitor is gone (expired, forgotten) */
        lc_agent_idle_drop(ag, s);
        return 0;
    }

    visits = lc_agent_reply_ll(s->profile->element[LC_AGENT_P_VISITS]);
    last = lc_agent_reply_ll(s->profile->element[LC_AGENT_P_LAST]);

    snprintf(s->decision, sizeof(s->decision), LC_PREFIX_FMT LC_KEY_DECISION
             "%s:%lld", s->shard, s->vid, s->n);

    if (s->n == visits && now - last < ag->conf->abandon_after) {
        /* still going: looked at again abandon_after after its last view */
        r = lc_agent_cmd(ag, "ZADD " LC_PREFIX_FMT LC_KEY_IDLE " XX %lld %b",
                         s->shard, last, s->member, s->member_len);
        if (lc_agent_redis_ok(ag, r, "ZADD idle")) {
            freeReplyObject(r);
        }

        return 0;
    }

    rc = lc_agent_claim_session(ag, s, "", now);

    if (rc < 0) {
        return -1;
    }

    if (rc == 0) {
        return lc_agent_take_over(ag, s, now);
    }

    r = lc_agent_cmd(ag, "PEXPIRE %s %lld", s->decision,
                     ag->conf->retention);
    if (lc_agent_redis_ok(ag, r, "PEXPIRE decision")) {
        freeReplyObject(r);
    }

    if (s->n != visits) {
        /*
         * A later session began: the visitor came back before this one
         * was found idle (the agent was down, or abandon_after is longer
         * than the session timeout). That session is judged by itself.
         */
        return lc_agent_decide(ag, s, "none", "", "returned");
    }

    return lc_agent_judge(ag, s, now);
}


/*
 * The next deadline: the first entry of each index after the cutoff,
 * plus abandon_after. A session still going has its last activity for
 * score, so this is when it becomes idle, to the millisecond; one not
 * seen yet has its start, earlier than that, and is looked at and
 * moved then.
 */

static long long
lc_agent_next_deadline(lc_agent_t *ag, long long cutoff)
{
    unsigned     shard, got;
    long long    next, at;
    redisReply  *r;

    next = LLONG_MAX;

    for (shard = 0; shard < LC_SHARDS; shard++) {
        if (lc_agent_append(ag, "ZRANGEBYSCORE " LC_PREFIX_FMT LC_KEY_IDLE
                            " (%lld +inf WITHSCORES LIMIT 0 1", shard,
                            cutoff)
            != 0)
        {
            return next;
        }
    }

    for (got = 0; got < LC_SHARDS; got++) {
        r = lc_agent_get_reply(ag);
        if (r == NULL) {
            return next;
        }

        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
            at = strtoll(r->element[1]->str, NULL, 10)
                 + ag->conf->abandon_after;

            if (at < next) {
                next = at;
            }
        }

        freeReplyObject(r);
    }

    return next;
}


/*
 * One pass over the 64 idle indexes; returns the sessions judged and
 * in "next" when the next session becomes idle (LLONG_MAX: none known).
 */

int
lc_agent_scan(lc_agent_t *ag, long long *next)
{
    int                  judged;
    size_t               i;
    unsigned             shard;
    long long            now;
    redisReply          *r;
    lc_agent_session_t   s;

    now = lc_agent_now();
    judged = 0;
    *next = LLONG_MAX;

    for (shard = 0; shard < LC_SHARDS && !lc_agent_stop; shard++) {
        r = lc_agent_cmd(ag, "ZRANGEBYSCORE " LC_PREFIX_FMT LC_KEY_IDLE
                         " -inf %lld LIMIT 0 %d", shard,
                         now - ag->conf->abandon_after, LC_AGENT_SCAN_BATCH);

        if (!lc_agent_redis_ok(ag, r, "ZRANGEBYSCORE idle")) {
            return judged;
        }

        for (i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
            memset(&s, 0, sizeof(s));
            s.shard = shard;
            s.member = r->element[i]->str;
            s.member_len = r->element[i]->len;

            if (lc_agent_session_split(s.member, s.member_len, s.vid, &s.n)
                != 0)
            {
                lc_agent_idle_drop(ag, &s);
                continue;
            }

            /* an index entry in the wrong shard is not ours to judge */
            if (lc_shard((unsigned char *) s.vid) != shard) {
                continue;
            }

            lc_agent_session(ag, &s, now);

            if (s.profile) {
                freeReplyObject(s.profile);
            }

            judged++;
        }

        freeReplyObject(r);
    }

    if (!lc_agent_stop) {
        *next = lc_agent_next_deadline(ag, now - ag->conf->abandon_after);
    }

    return judged;
}
