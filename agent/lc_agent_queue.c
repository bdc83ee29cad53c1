
/*
 * lifecycle-agent: the delivery queue. A message is a hash
 * "lc:{agent}:m:ID" and its id in the sorted set "lc:{agent}:due",
 * scored with the time it is due. An agent takes a due message by
 * moving its score a lease ahead (a script, so two agents never take
 * the same one), records "sending" before the channel is called,
 * "handed" right before the last bytes go to the server, and "sent", a
 * retry or a dead letter after. After a crash, a message found
 * "sending" cannot have been accepted (an SMTP server needs the final
 * dot, an HTTP server the whole body) and is sent; the outbox can tell
 * by its file; one found "handed" may have arrived, and is
 * dead-lettered, never sent a second time.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lc_agent.h"


/* the longest wait between two tries */
#define LC_AGENT_RETRY_MAX   (3600 * 1000LL)

/* messages taken per pass of the main loop */
#define LC_AGENT_DUE_BATCH   16

#define LC_AGENT_STATE_SENDING  "sending"
#define LC_AGENT_STATE_HANDED   "handed"


/* KEYS: the message, the due set; ARGV: due, id, then field, value... */
static const char  lc_agent_enqueue_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end "
    "redis.call('HSET', KEYS[1], unpack(ARGV, 3)) "
    "redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2]) "
    "return 1";

/* KEYS: the due set, the message; ARGV: now, lease end, owner, id */
static const char  lc_agent_claim_lua[] =
    "local s = redis.call('ZSCORE', KEYS[1], ARGV[4]) "
    "if not s or tonumber(s) > tonumber(ARGV[1]) then return false end "
    "if redis.call('EXISTS', KEYS[2]) == 0 then "
    "  redis.call('ZREM', KEYS[1], ARGV[4]) return false end "
    "redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4]) "
    "local m = redis.call('HGETALL', KEYS[2]) "
    "redis.call('HSET', KEYS[2], 'owner', ARGV[3]) "
    "return m";


static int
lc_agent_kind(const char *s)
{
    int  k;

    for (k = 0; k < LC_AGENT_KINDS; k++) {
        if (strcmp(lc_agent_kind_names[k], s) == 0) {
            return k;
        }
    }

    return -1;
}


static int
lc_agent_ref_parse(const redisReply *r, const char *id,
    lc_agent_msg_ref_t *ref)
{
    int                kind;
    const redisReply  *v;

    memset(ref, 0, sizeof(*ref));
    snprintf(ref->id, sizeof(ref->id), "%s", id);

    v = lc_agent_hash_get(r, "kind");
    kind = v && v->type == REDIS_REPLY_STRING ? lc_agent_kind(v->str) : -1;

    if (kind < 0) {
        return -1;
    }

    ref->kind = kind;

    v = lc_agent_hash_get(r, "pid");
    if (v == NULL || v->type != REDIS_REPLY_STRING
        || v->len != LC_PERSON_ID_LEN || !lc_agent_is_hex(v->str, v->len))
    {
        return -1;
    }

    memcpy(ref->pid, v->str, LC_PERSON_ID_LEN + 1);

    v = lc_agent_hash_get(r, "vid");
    if (v && v->type == REDIS_REPLY_STRING && v->len == LC_VID_LEN
        && lc_agent_is_hex(v->str, v->len))
    {
        memcpy(ref->vid, v->str, LC_VID_LEN + 1);
    }

    ref->step = (int) lc_agent_reply_ll(lc_agent_hash_get(r, "step"));
    ref->sess = lc_agent_reply_ll(lc_agent_hash_get(r, "sess"));
    ref->start = lc_agent_reply_ll(lc_agent_hash_get(r, "start"));
    ref->t0 = lc_agent_reply_ll(lc_agent_hash_get(r, "t0"));
    ref->created = lc_agent_reply_ll(lc_agent_hash_get(r, "created"));

    return 0;
}


/*
 * Queues a message once: a message of that id that exists already is
 * left as it is, so that a decision taken again after a crash queues
 * nothing twice. The person's list of messages learns its id too.
 */

int
lc_agent_enqueue(lc_agent_t *ag, lc_agent_msg_ref_t *ref, long long due)
{
    redisReply  *r;
    char         key[sizeof(LC_KEY_AGENT_MESSAGE) + LC_AGENT_ID_LEN];
    char         step[24], sess[24], start[24], t0[24], created[24], at[24];

    snprintf(key, sizeof(key), LC_KEY_AGENT_MESSAGE "%s", ref->id);
    snprintf(step, sizeof(step), "%d", ref->step);
    snprintf(sess, sizeof(sess), "%lld", ref->sess);
    snprintf(start, sizeof(start), "%lld", ref->start);
    snprintf(t0, sizeof(t0), "%lld", ref->t0);
    snprintf(created, sizeof(created), "%lld", ref->created);
    snprintf(at, sizeof(at), "%lld", due);

    {
        const char  *argv[] = {
            "EVAL", lc_agent_enqueue_lua, "2", key, LC_KEY_AGENT_DUE,
            at, ref->id,
            "kind", lc_agent_kind_names[ref->kind], "step", step,
            "pid", ref->pid, "vid", ref->vid, "sess", sess,
            "start", start, "t0", t0, "created", created,
            "state", "queued", "tries", "0"
        };
        size_t       lens[sizeof(argv) / sizeof(argv[0])];
        size_t       i;

        for (i = 0; i < sizeof(argv) / sizeof(argv[0]); i++) {
            lens[i] = strlen(argv[i]);
        }

        r = lc_agent_cmdv(ag, (int) (sizeof(argv) / sizeof(argv[0])), argv,
                          lens);
    }

    if (!lc_agent_redis_ok(ag, r, "EVAL enqueue")) {
        return -1;
    }

    freeReplyObject(r);

    r = lc_agent_cmd(ag, "ZADD " LC_PREFIX_FMT LC_KEY_PERSON "%s"
                     LC_KEY_PERSON_MESSAGES " NX %lld %s",
                     lc_shard((const unsigned char *) ref->pid), ref->pid,
                     ref->created, ref->id);

    if (!lc_agent_redis_ok(ag, r, "ZADD person messages")) {
        return -1;
    }

    freeReplyObject(r);

    return 0;
}


static void
lc_agent_count(lc_agent_t *ag, const char *result)
{
    char  name[96];

    snprintf(name, sizeof(name),
             "messages_total{channel=\"%s\",result=\"%s\"}",
             lc_agent_channel_names[ag->conf->channel], result);

    lc_agent_stat(ag, name);
}


/* the message leaves the queue with a final state */

static void
lc_agent_finish(lc_agent_t *ag, lc_agent_msg_ref_t *ref, const char *state,
    const char *reason)
{
    redisReply  *r;

    r = lc_agent_cmd(ag, "HSET " LC_KEY_AGENT_MESSAGE "%s state %s "
                     "reason %s done %lld", ref->id, state,
                     reason ? reason : "", lc_agent_now());
    if (lc_agent_redis_ok(ag, r, "HSET message")) {
        freeReplyObject(r);
    }

    r = lc_agent_cmd(ag, "PEXPIRE " LC_KEY_AGENT_MESSAGE "%s %lld", ref->id,
                     ag->conf->retention);
    if (lc_agent_redis_ok(ag, r, "PEXPIRE message")) {
        freeReplyObject(r);
    }

    r = lc_agent_cmd(ag, "ZREM " LC_KEY_AGENT_DUE " %s", ref->id);
    if (lc_agent_redis_ok(ag, r, "ZREM due")) {
        freeReplyObject(r);
    }
}


static void
lc_agent_cancel(lc_agent_t *ag, lc_agent_msg_ref_t *ref, const char *why)
{
    lc_agent_log(LC_AGENT_LOG_INFO, "message=%s kind=%s step=%d person=%s "
                 "decision=cancel reason=\"%s\"", ref->id,
                 lc_agent_kind_names[ref->kind], ref->step, ref->pid, why);

    lc_agent_finish(ag, ref, "cancelled", why);
    lc_agent_count(ag, "cancelled");
}


/* into "lc:{agent}:dead", for an operator to look at or replay */

static void
lc_agent_dead(lc_agent_t *ag, lc_agent_msg_ref_t *ref, const char *state,
    long long tries, const char *error)
{
    redisReply  *r;

    lc_agent_log(LC_AGENT_LOG_WARN, "message=%s kind=%s step=%d person=%s "
                 "channel=%s result=%s tries=%lld error=\"%s\"", ref->id,
                 lc_agent_kind_names[ref->kind], ref->step, ref->pid,
                 lc_agent_channel_names[ag->conf->channel], state, tries,
                 error);

    r = lc_agent_cmd(ag, "XADD " LC_KEY_AGENT_DEAD " MAXLEN ~ %d * "
                     "message %s kind %s step %d person %s visitor %s "
                     "session %lld channel %s state %s tries %lld error %s",
                     LC_STREAM_MAXLEN, ref->id,
                     lc_agent_kind_names[ref->kind], ref->step, ref->pid,
                     ref->vid, ref->sess,
                     lc_agent_channel_names[ag->conf->channel], state, tries,
                     error);

    if (lc_agent_redis_ok(ag, r, "XADD dead")) {
        freeReplyObject(r);
    }

    r = lc_agent_cmd(ag, "HSET " LC_KEY_AGENT_MESSAGE "%s error %s", ref->id,
                     error);
    if (lc_agent_redis_ok(ag, r, "HSET message")) {
        freeReplyObject(r);
    }

    lc_agent_finish(ag, ref, state, error);
    lc_agent_count(ag, state);
    lc_agent_stat(ag, "dead_letters_total");
}


/*
 * Whether an abandonment message still has a reason to go: no purchase
 * since the session began, no later session for a follow-up (the
 * visitor came back: that session is judged by itself), a cart still
 * there for the cart's messages.
 */

static const char *
lc_agent_still_abandoned(lc_agent_t *ag, lc_agent_msg_ref_t *ref)
{
    const char  *why;
    redisReply  *r;

    r = lc_agent_cmd(ag, "HMGET " LC_PREFIX_FMT LC_KEY_VISITOR "%s visits "
                     "last_purchase cart s.purchase",
                     lc_shard((const unsigned char *) ref->vid), ref->vid);

    if (!lc_agent_redis_ok(ag, r, "HMGET profile")) {
        return "redis";
    }

    why = NULL;

    if (r->element[0]->type != REDIS_REPLY_STRING) {
        why = "visitor gone";

    } else if ((lc_agent_reply_ll(r->element[1]) > 0
                && lc_agent_reply_ll(r->element[1]) >= ref->start)
               || (lc_agent_reply_ll(r->element[0]) == ref->sess
                   && r->element[3]->type == REDIS_REPLY_STRING
                   && r->element[3]->len))
    {
        why = "purchased";

    } else if (ref->step > 0 && lc_agent_reply_ll(r->element[0]) > ref->sess)
    {
        why = "returned";

    } else if (ref->kind == LC_AGENT_CART
               && lc_agent_reply_ll(r->element[2]) <= 0)
    {
        why = "cart emptied";
    }

    freeReplyObject(r);

    return why;
}


/*
 * Sent: the message leaves the queue and, when follow-ups are set, the
 * next step comes in, in one transaction of the agent's slot.
 */

static void
lc_agent_sent(lc_agent_t *ag, lc_agent_msg_ref_t *ref, long long now)
{
    int                  i, n;
    redisReply          *r;
    lc_agent_msg_ref_t   next;

    lc_agent_finish(ag, ref, "sent", NULL);
    lc_agent_count(ag, "sent");

    if (ref->kind == LC_AGENT_WELCOME
        || (size_t) ref->step >= ag->conf->nfollowups)
    {
        return;
    }

    next = *ref;
    next.step = ref->step + 1;
    next.t0 = ref->step == 0 ? now : ref->t0;
    next.created = now;

    if (lc_agent_random_id(next.id) != 0) {
        return;
    }

    r = lc_agent_cmd(ag, "HSETNX " LC_KEY_AGENT_MESSAGE "%s next %s",
                     ref->id, next.id);
    if (!lc_agent_redis_ok(ag, r, "HSETNX next")) {
        return;
    }

    /* queued already by an earlier run: that one stands */
    n = (int) r->integer;
    freeReplyObject(r);

    if (n == 0) {
        return;
    }

    i = lc_agent_enqueue(ag, &next,
                         next.t0 + ag->conf->followups[next.step - 1]);

    lc_agent_log(LC_AGENT_LOG_INFO, "message=%s kind=%s step=%d person=%s "
                 "decision=%s due=+%llds", next.id,
                 lc_agent_kind_names[next.kind], next.step, next.pid,
                 i == 0 ? "follow-up" : "lost",
                 (next.t0 + ag->conf->followups[next.step - 1] - now) / 1000);
}


static void
lc_agent_retry(lc_agent_t *ag, lc_agent_msg_ref_t *ref, long long tries,
    const char *error, long long now)
{
    int          k;
    long long    delay;
    redisReply  *r;

    if (tries >= ag->conf->webhook_retries) {
        lc_agent_dead(ag, ref, "dead", tries, error);
        return;
    }

    delay = ag->conf->retry_delay;

    for (k = 1; k < tries && delay < LC_AGENT_RETRY_MAX; k++) {
        delay *= 2;
    }

    if (delay > LC_AGENT_RETRY_MAX) {
        delay = LC_AGENT_RETRY_MAX;
    }

    lc_agent_log(LC_AGENT_LOG_WARN, "message=%s kind=%s step=%d person=%s "
                 "channel=%s result=retry tries=%lld in=%lldms error=\"%s\"",
                 ref->id, lc_agent_kind_names[ref->kind], ref->step,
                 ref->pid, lc_agent_channel_names[ag->conf->channel], tries,
                 delay, error);

    r = lc_agent_cmd(ag, "HSET " LC_KEY_AGENT_MESSAGE "%s state retry "
                     "tries %lld error %s", ref->id, tries, error);
    if (lc_agent_redis_ok(ag, r, "HSET message")) {
        freeReplyObject(r);
    }

    r = lc_agent_cmd(ag, "ZADD " LC_KEY_AGENT_DUE " XX %lld %s", now + delay,
                     ref->id);
    if (lc_agent_redis_ok(ag, r, "ZADD due")) {
        freeReplyObject(r);
    }

    lc_agent_count(ag, "retry");
    lc_agent_stat(ag, "retries_total");
}


/*
 * Durable before the last bytes of a message leave for the server; if
 * Redis cannot record it, the delivery goes on all the same (a crash
 * right then would send it a second time: Redis and the agent failing
 * together).
 */

static void
lc_agent_handed(lc_agent_msg_t *m)
{
    lc_agent_t  *ag;
    redisReply  *r;

    ag = m->handed_ctx;

    r = lc_agent_cmd(ag, "HSET " LC_KEY_AGENT_MESSAGE "%s state "
                     LC_AGENT_STATE_HANDED, m->ref->id);

    if (lc_agent_redis_ok(ag, r, "HSET message")) {
        freeReplyObject(r);
    }
}


/* one message taken from the queue: checked, built, delivered */

static void
lc_agent_deliver_one(lc_agent_t *ag, lc_agent_msg_ref_t *ref,
    const redisReply *fields, long long now)
{
    int                 ok;
    long long           tries;
    redisReply         *r;
    const char         *why;
    lc_agent_msg_t      m;
    lc_agent_arena_t    arena;
    lc_agent_result_e   result;
    const redisReply   *state;
    char                err[256];

    state = lc_agent_hash_get(fields, "state");
    tries = lc_agent_reply_ll(lc_agent_hash_get(fields, "tries"));

    if (state && strcmp(state->str, LC_AGENT_STATE_HANDED) == 0) {
        /* a crash after the server got all of it, before its verdict */
        lc_agent_dead(ag, ref, "interrupted", tries,
                      "interrupted while sending: it may have arrived");
        return;
    }

    if (state && strcmp(state->str, LC_AGENT_STATE_SENDING) == 0) {
        /* a crash before the last byte went: nothing can have arrived */
        if (ag->conf->channel == LC_AGENT_OUTBOX
            && lc_agent_outbox_has(ag->conf, ref->id))
        {
            lc_agent_log(LC_AGENT_LOG_INFO, "message=%s kind=%s step=%d "
                         "person=%s channel=outbox result=sent "
                         "(found after a restart)", ref->id,
                         lc_agent_kind_names[ref->kind], ref->step, ref->pid);
            lc_agent_sent(ag, ref, now);
            return;
        }

        lc_agent_log(LC_AGENT_LOG_INFO, "message=%s: interrupted before the "
                     "server had all of it: sent again", ref->id);
    }

    ok = lc_agent_eligible(ag, ref->pid, &why);

    if (ok < 0) {
        return;     /* Redis: the lease runs out, it is tried again */
    }

    if (ok == 0) {
        lc_agent_cancel(ag, ref, why);
        return;
    }

    if (ref->kind != LC_AGENT_WELCOME && ref->vid[0]) {
        why = lc_agent_still_abandoned(ag, ref);

        if (why && strcmp(why, "redis") == 0) {
            return;
        }

        if (why) {
            lc_agent_cancel(ag, ref, why);
            return;
        }
    }

    memset(&m, 0, sizeof(m));
    m.ref = ref;
    m.handed = lc_agent_handed;
    m.handed_ctx = ag;
    lc_agent_arena_init(&arena);

    if (lc_agent_build(ag, &m, &arena) != 0) {
        lc_agent_msg_free(&m);
        lc_agent_arena_free(&arena);

        if (ag->redis == NULL) {
            return;
        }

        lc_agent_dead(ag, ref, "failed", tries,
                      "the message could not be built");
        return;
    }

    /* durable before the channel is called: a crash now is "sending" */
    r = lc_agent_cmd(ag, "HSET " LC_KEY_AGENT_MESSAGE "%s state "
                     LC_AGENT_STATE_SENDING " channel %s at %lld", ref->id,
                     lc_agent_channel_names[ag->conf->channel],
                     lc_agent_now());

    if (!lc_agent_redis_ok(ag, r, "HSET message")) {
        lc_agent_msg_free(&m);
        lc_agent_arena_free(&arena);
        return;
    }

    freeReplyObject(r);

    result = lc_agent_deliver(ag, &m, err, sizeof(err));
    tries++;
    now = lc_agent_now();

    switch (result) {

    case LC_AGENT_SENT:
        lc_agent_log(LC_AGENT_LOG_INFO, "message=%s kind=%s step=%d "
                     "person=%s to=%s channel=%s result=sent tries=%lld "
                     "latency=%lldms", ref->id,
                     lc_agent_kind_names[ref->kind], ref->step, ref->pid,
                     m.to, lc_agent_channel_names[ag->conf->channel], tries,
                     now - ref->created);

        r = lc_agent_cmd(ag, "HSET " LC_KEY_AGENT_MESSAGE "%s tries %lld "
                         "sent %lld subject %s", ref->id, tries, now,
                         m.subject);
        if (lc_agent_redis_ok(ag, r, "HSET message")) {
            freeReplyObject(r);
        }

        lc_agent_sent(ag, ref, now);
        break;

    case LC_AGENT_RETRY:
        lc_agent_retry(ag, ref, tries, err, now);
        break;

    case LC_AGENT_FAILED:
        lc_agent_dead(ag, ref, "dead", tries, err);
        break;

    case LC_AGENT_UNKNOWN:
        lc_agent_dead(ag, ref, "unknown", tries, err);
        break;
    }

    lc_agent_msg_free(&m);
    lc_agent_arena_free(&arena);
}


/* the messages due now, a batch at a time; returns how many were taken */

int
lc_agent_deliver_due(lc_agent_t *ag)
{
    int                  n;
    size_t               i;
    long long            now;
    redisReply          *due, *r;
    lc_agent_msg_ref_t   ref;
    char                 key[sizeof(LC_KEY_AGENT_MESSAGE) + 64];
    char                 snow[24], until[24];

    now = lc_agent_now();

    due = lc_agent_cmd(ag, "ZRANGEBYSCORE " LC_KEY_AGENT_DUE " -inf %lld "
                       "LIMIT 0 %d", now, LC_AGENT_DUE_BATCH);

    if (!lc_agent_redis_ok(ag, due, "ZRANGEBYSCORE due")) {
        return 0;
    }

    n = 0;

    for (i = 0; due->type == REDIS_REPLY_ARRAY && i < due->elements; i++) {
        if (due->element[i]->len != LC_AGENT_ID_LEN) {
            continue;
        }

        snprintf(key, sizeof(key), LC_KEY_AGENT_MESSAGE "%s",
                 due->element[i]->str);
        snprintf(snow, sizeof(snow), "%lld", now);
        snprintf(until, sizeof(until), "%lld", now + LC_AGENT_LEASE);

        {
            const char  *argv[] = {
                "EVAL", lc_agent_claim_lua, "2", LC_KEY_AGENT_DUE, key,
                snow, until, ag->owner, due->element[i]->str
            };
            size_t       lens[9], k;

            for (k = 0; k < 9; k++) {
                lens[k] = strlen(argv[k]);
            }

            r = lc_agent_cmdv(ag, 9, argv, lens);
        }

        if (!lc_agent_redis_ok(ag, r, "EVAL claim")) {
            break;
        }

        if (r->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            continue;   /* another agent took it */
        }

        n++;

        if (lc_agent_ref_parse(r, due->element[i]->str, &ref) != 0) {
            lc_agent_log(LC_AGENT_LOG_ERROR, "message=%s: unreadable record, "
                         "dropped", due->element[i]->str);
            freeReplyObject(r);
            r = lc_agent_cmd(ag, "ZREM " LC_KEY_AGENT_DUE " %s",
                             due->element[i]->str);
            if (lc_agent_redis_ok(ag, r, "ZREM")) {
                freeReplyObject(r);
            }
            continue;
        }

        lc_agent_deliver_one(ag, &ref, r, now);
        freeReplyObject(r);

        if (lc_agent_stop) {
            break;
        }
    }

    freeReplyObject(due);

    return n;
}


/*
 * At start: messages this agent held when it stopped uncleanly (its
 * consumer name, another run) are due at once, not when their lease
 * ends.
 */

void
lc_agent_queue_recover(lc_agent_t *ag)
{
    size_t        i, len;
    long long     now;
    redisReply   *due, *r;

    now = lc_agent_now();
    len = strlen(ag->conf->consumer);

    due = lc_agent_cmd(ag, "ZRANGEBYSCORE " LC_KEY_AGENT_DUE " (%lld +inf",
                       now);
    if (!lc_agent_redis_ok(ag, due, "ZRANGEBYSCORE due")) {
        return;
    }

    for (i = 0; due->type == REDIS_REPLY_ARRAY && i < due->elements; i++) {
        r = lc_agent_cmd(ag, "HMGET " LC_KEY_AGENT_MESSAGE "%b owner state",
                         due->element[i]->str, due->element[i]->len);

        if (!lc_agent_redis_ok(ag, r, "HMGET message")) {
            break;
        }

        if (r->element[0]->type == REDIS_REPLY_STRING
            && r->element[0]->len > len
            && memcmp(r->element[0]->str, ag->conf->consumer, len) == 0
            && r->element[0]->str[len] == '/'
            && strcmp(r->element[0]->str, ag->owner) != 0
            && r->element[1]->type == REDIS_REPLY_STRING
            && strcmp(r->element[1]->str, "retry") != 0)
        {
            lc_agent_log(LC_AGENT_LOG_INFO, "message=%s: held by %s when it "
                         "stopped, taken back", due->element[i]->str,
                         r->element[0]->str);

            freeReplyObject(r);
            r = lc_agent_cmd(ag, "ZADD " LC_KEY_AGENT_DUE " XX %lld %b", now,
                             due->element[i]->str, due->element[i]->len);
            if (!lc_agent_redis_ok(ag, r, "ZADD due")) {
                break;
            }
        }

        freeReplyObject(r);
    }

    freeReplyObject(due);
}
