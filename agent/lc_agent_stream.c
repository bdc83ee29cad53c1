
/*
 * lifecycle-agent: the module's event streams, "lc:{hh}:ev", read
 * through the consumer group "lc-agent" (one per stream, made at the
 * first start from the streams' beginning, so that what happened
 * before the agent ever ran is read too). At-least-once: an entry is
 * acknowledged after its effects are in Redis; what this agent left
 * unacknowledged when it stopped is read again first, what a vanished
 * agent left is claimed after claim_after. Every effect can run twice.
 *
 * Each stream is read with its own command (no command names keys of
 * two slots), the 64 reads pipelined in one round trip.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lc_agent.h"


/* entries read per stream and round */
#define LC_AGENT_READ_COUNT  64


typedef struct {
    const char                 *type;
    long long                   n;
} lc_agent_type_count_t;


static const char *
lc_agent_entry_get(const redisReply *fields, const char *name, size_t *len)
{
    size_t  i, n;

    n = strlen(name);

    for (i = 0; fields && fields->type == REDIS_REPLY_ARRAY
                && i + 1 < fields->elements; i += 2)
    {
        if (fields->element[i]->len == n
            && memcmp(fields->element[i]->str, name, n) == 0
            && fields->element[i + 1]->type == REDIS_REPLY_STRING)
        {
            *len = fields->element[i + 1]->len;
            return fields->element[i + 1]->str;
        }
    }

    *len = 0;

    return NULL;
}


/*
 * The welcome of a person who just opted in: once per person (the id
 * is derived from the person, "welcomed" on the person holds it), only
 * for a fresh opt-in, and only to a person messages may go to.
 */

static int
lc_agent_welcome(lc_agent_t *ag, const char *pid, const char *vid,
    long long optin, long long now)
{
    int                  ok;
    redisReply          *r;
    const char          *why;
    lc_agent_msg_ref_t   ref;
    char                 hex[65], in[64];

    if (!ag->conf->welcome || now - optin > LC_AGENT_WELCOME_MAX_AGE) {
        return 0;
    }

    ok = lc_agent_eligible(ag, pid, &why);
    if (ok <= 0) {
        return ok;
    }

    memset(&ref, 0, sizeof(ref));
    ref.kind = LC_AGENT_WELCOME;
    memcpy(ref.pid, pid, LC_PERSON_ID_LEN + 1);
    memcpy(ref.vid, vid, LC_VID_LEN + 1);
    ref.created = optin;

    snprintf(in, sizeof(in), "lc-welcome:%s", pid);
    lc_agent_hmac_hex(ag->conf->secret, ag->conf->secret_len, in, strlen(in),
                      hex);
    memcpy(ref.id, hex, LC_AGENT_ID_LEN);
    ref.id[LC_AGENT_ID_LEN] = '\0';

    /* the first run to get here names the welcome; a later one (an
     * event read again) finds its own id there and queues it again,
     * which changes nothing */
    r = lc_agent_cmd(ag, "HSETNX " LC_PREFIX_FMT LC_KEY_PERSON "%s welcomed "
                     "%s", lc_shard((unsigned char *) pid), pid, ref.id);
    if (!lc_agent_redis_ok(ag, r, "HSETNX welcomed")) {
        return -1;
    }

    freeReplyObject(r);

    r = lc_agent_cmd(ag, "HGET " LC_PREFIX_FMT LC_KEY_PERSON "%s welcomed",
                     lc_shard((unsigned char *) pid), pid);
    if (!lc_agent_redis_ok(ag, r, "HGET welcomed")) {
        return -1;
    }

    ok = r->type == REDIS_REPLY_STRING && strcmp(r->str, ref.id) == 0;
    freeReplyObject(r);

    if (!ok) {
        return 0;
    }

    if (lc_agent_enqueue(ag, &ref, now) != 0) {
        return -1;
    }

    lc_agent_log(LC_AGENT_LOG_INFO, "optin visitor=%s person=%s kind=welcome "
                 "decision=send message=%s", vid, pid, ref.id);

    return 0;
}


/* one entry; 0 when done with it (it is acknowledged), -1 to retry */

static int
lc_agent_event(lc_agent_t *ag, const char *id, const redisReply *fields,
    long long now)
{
    int          rc;
    size_t       tlen, vlen, elen, plen;
    long long    at;
    redisReply  *r;
    const char  *type, *vid, *email, *pid;
    char         v[LC_VID_LEN + 1], person[LC_PERSON_ID_LEN + 1];

    type = lc_agent_entry_get(fields, "type", &tlen);

    if (type == NULL) {
        return 0;
    }

    /* the entry's time is its id's: "<ms>-<seq>" */
    at = strtoll(id, NULL, 10);

    if (tlen == 5 && memcmp(type, "optin", 5) == 0) {
        vid = lc_agent_entry_get(fields, "vid", &vlen);
        email = lc_agent_entry_get(fields, "email", &elen);

        if (vid == NULL || vlen != LC_VID_LEN || !lc_agent_is_hex(vid, vlen))
        {
            lc_agent_log(LC_AGENT_LOG_WARN, "event %s: optin without a "
                         "visitor, ignored", id);
            return 0;
        }

        memcpy(v, vid, LC_VID_LEN);
        v[LC_VID_LEN] = '\0';

        /* an event without the address: the profile has it */
        r = NULL;

        if (email == NULL) {
            r = lc_agent_cmd(ag, "HGET " LC_PREFIX_FMT LC_KEY_VISITOR
                             "%s email", lc_shard((unsigned char *) v), v);
            if (!lc_agent_redis_ok(ag, r, "HGET profile")) {
                return -1;
            }

            email = r->type == REDIS_REPLY_STRING ? r->str : "";
            elen = r->type == REDIS_REPLY_STRING ? r->len : 0;
        }

        rc = lc_agent_link(ag, v, email, elen, at, person);

        if (r) {
            freeReplyObject(r);
        }

        if (rc == 1) {
            /* what the module let through, the agent still checks */
            lc_agent_log(LC_AGENT_LOG_WARN, "optin visitor=%s "
                         "decision=refuse reason=\"not a plain address\"", v);
            lc_agent_stat(ag, "optins_refused_total");
            return 0;
        }

        if (rc != 0) {
            return -1;
        }

        lc_agent_log(LC_AGENT_LOG_INFO, "optin visitor=%s person=%s linked",
                     v, person);
        lc_agent_stat(ag, "optins_total");

        return lc_agent_welcome(ag, person, v, at, now);
    }

    if (tlen == 11 && memcmp(type, "unsubscribe", 11) == 0) {
        pid = lc_agent_entry_get(fields, "pid", &plen);

        if (pid && plen == LC_PERSON_ID_LEN && lc_agent_is_hex(pid, plen)) {
            memcpy(person, pid, LC_PERSON_ID_LEN);
            person[LC_PERSON_ID_LEN] = '\0';

            lc_agent_log(LC_AGENT_LOG_INFO, "unsubscribe person=%s", person);
            lc_agent_unsubscribed(ag, person);
            lc_agent_stat(ag, "unsubscribes_total");
        }

        return 0;
    }

    return 0;
}


/*
 * The entries of one XREADGROUP or XAUTOCLAIM reply for one stream:
 * each handled, those done acknowledged in one XACK. Returns how many
 * were read.
 */

static int
lc_agent_entries(lc_agent_t *ag, unsigned shard, const redisReply *list,
    long long now)
{
    int           n;
    size_t        i, k;
    long long     at;
    redisReply   *r, *e;
    const char  **argv;
    size_t       *lens;
    char          key[LC_PREFIX_LEN + 8];

    if (list == NULL || list->type != REDIS_REPLY_ARRAY
        || list->elements == 0)
    {
        return 0;
    }

    argv = malloc((list->elements + 3) * (sizeof(char *) + sizeof(size_t)));
    if (argv == NULL) {
        return 0;
    }

    lens = (size_t *) (argv + list->elements + 3);

    snprintf(key, sizeof(key), LC_PREFIX_FMT LC_KEY_EVENTS, shard);

    argv[0] = "XACK";
    argv[1] = key;
    argv[2] = LC_AGENT_GROUP;
    k = 3;
    n = 0;

    for (i = 0; i < list->elements; i++) {
        e = list->element[i];

        /* an entry deleted meanwhile comes back as [id, nil] */
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
            || e->element[0]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        n++;

        /*
         * A view at this time: its session cannot be idle before this
         * plus abandon_after, and may be then; a scan is due at that
         * moment, not only at the next scan_interval.
         */
        at = strtoll(e->element[0]->str, NULL, 10) + ag->conf->abandon_after;
        if (at < ag->wake) {
            ag->wake = at;
        }

        if (e->element[1]->type != REDIS_REPLY_ARRAY
            || lc_agent_event(ag, e->element[0]->str, e->element[1], now)
               == 0)
        {
            argv[k++] = e->element[0]->str;
        }
    }

    if (k > 3) {
        for (i = 0; i < k; i++) {
            lens[i] = strlen(argv[i]);
        }

        r = lc_agent_cmdv(ag, (int) k, argv, lens);
        if (lc_agent_redis_ok(ag, r, "XACK")) {
            freeReplyObject(r);
        }
    }

    free(argv);

    if (n) {
        lc_agent_statn(ag, "events_total", n);
    }

    return n;
}


/* the groups, made when missing; again after a stream was deleted */

static int
lc_agent_groups(lc_agent_t *ag)
{
    unsigned     shard;
    redisReply  *r;

    for (shard = 0; shard < LC_SHARDS; shard++) {
        r = lc_agent_cmd(ag, "XGROUP CREATE " LC_PREFIX_FMT LC_KEY_EVENTS
                         " " LC_AGENT_GROUP " 0 MKSTREAM", shard);
        if (r == NULL) {
            return -1;
        }

        if (r->type == REDIS_REPLY_ERROR
            && strncmp(r->str, "BUSYGROUP", 9) != 0)
        {
            lc_agent_log(LC_AGENT_LOG_ERROR, "XGROUP CREATE: %s", r->str);
            freeReplyObject(r);
            return -1;
        }

        freeReplyObject(r);
    }

    return 0;
}


/*
 * What this agent read and did not acknowledge before it stopped
 * (XREADGROUP from 0: its own pending entries), stream by stream.
 */

static int
lc_agent_own_pending(lc_agent_t *ag, long long now)
{
    int          n, total;
    unsigned     shard;
    redisReply  *r;

    total = 0;

    for (shard = 0; shard < LC_SHARDS; shard++) {
        r = lc_agent_cmd(ag, "XREADGROUP GROUP " LC_AGENT_GROUP " %s COUNT %d"
                         " STREAMS " LC_PREFIX_FMT LC_KEY_EVENTS " 0",
                         ag->conf->consumer, LC_AGENT_READ_COUNT, shard);

        if (!lc_agent_redis_ok(ag, r, "XREADGROUP")) {
            return -1;
        }

        n = 0;

        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
            n = lc_agent_entries(ag, shard, r->element[0]->element[1], now);
        }

        freeReplyObject(r);
        total += n;

        /* a full batch: there may be more of it */
        if (n == LC_AGENT_READ_COUNT) {
            shard--;
        }
    }

    if (total) {
        lc_agent_log(LC_AGENT_LOG_INFO, "%d event(s) left pending by the "
                     "last run read again", total);
    }

    return 0;
}


/* entries other consumers (gone, or stuck) have held for claim_after */

static int
lc_agent_claim(lc_agent_t *ag, long long now)
{
    int          total;
    unsigned     shard;
    redisReply  *r;

    total = 0;

    for (shard = 0; shard < LC_SHARDS; shard++) {
        r = lc_agent_cmd(ag, "XAUTOCLAIM " LC_PREFIX_FMT LC_KEY_EVENTS " "
                         LC_AGENT_GROUP " %s %lld 0-0 COUNT %d", shard,
                         ag->conf->consumer, ag->conf->claim_after,
                         LC_AGENT_READ_COUNT);

        if (!lc_agent_redis_ok(ag, r, "XAUTOCLAIM")) {
            return -1;
        }

        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2) {
            total += lc_agent_entries(ag, shard, r->element[1], now);
        }

        freeReplyObject(r);
    }

    if (total) {
        lc_agent_log(LC_AGENT_LOG_INFO, "%d event(s) claimed from other "
                     "consumers", total);
    }

    return total;
}


/* one round: the 64 streams read in one pipeline; returns entries read */

int
lc_agent_consume(lc_agent_t *ag)
{
    int          n, nogroup;
    unsigned     shard, got;
    long long    now;
    redisReply  *r, *replies[LC_SHARDS];

    now = lc_agent_now();

    if (!ag->recovered) {
        if (lc_agent_groups(ag) != 0 || lc_agent_own_pending(ag, now) != 0) {
            return 0;
        }

        ag->recovered = 1;
        ag->next_claim = now;
    }

    n = 0;

    if (now >= ag->next_claim) {
        n = lc_agent_claim(ag, now);
        ag->next_claim = now + ag->conf->claim_after / 2;
    }

    for (shard = 0; shard < LC_SHARDS; shard++) {
        if (lc_agent_append(ag, "XREADGROUP GROUP " LC_AGENT_GROUP " %s "
                            "COUNT %d STREAMS " LC_PREFIX_FMT LC_KEY_EVENTS
                            " >", ag->conf->consumer, LC_AGENT_READ_COUNT,
                            shard)
            != 0)
        {
            return n;
        }
    }

    /*
     * All the replies first: a command sent while some are unread
     * would get one of them for its answer.
     */
    for (got = 0; got < LC_SHARDS; got++) {
        replies[got] = lc_agent_get_reply(ag);

        if (replies[got] == NULL) {
            break;
        }
    }

    nogroup = 0;

    for (shard = 0; shard < got; shard++) {
        r = replies[shard];

        if (r->type == REDIS_REPLY_ERROR) {
            nogroup |= strncmp(r->str, "NOGROUP", 7) == 0;

            if (!nogroup) {
                lc_agent_log(LC_AGENT_LOG_ERROR, "XREADGROUP: %s", r->str);
            }

        } else if (got == LC_SHARDS && r->type == REDIS_REPLY_ARRAY
                   && r->elements == 1)
        {
            n += lc_agent_entries(ag, shard, r->element[0]->element[1], now);
        }

        freeReplyObject(r);
    }

    if (nogroup) {
        lc_agent_log(LC_AGENT_LOG_WARN, "a stream lost its consumer group "
                     "(deleted?): making the groups again");
        lc_agent_groups(ag);
    }

    return n;
}


/*
 * "status": the counters every agent keeps in "lc:{agent}:stats", then
 * what waits: entries not yet read by the group (lag) or read and not
 * acknowledged (pending), messages queued, dead letters.
 */

int
lc_agent_status(lc_agent_t *ag)
{
    size_t        i;
    unsigned      shard;
    long long     lag, pending, queued, dead;
    redisReply   *r, *g;
    const redisReply  *name, *v;

    r = lc_agent_cmd(ag, "HGETALL " LC_KEY_AGENT_STATS);
    if (!lc_agent_redis_ok(ag, r, "HGETALL stats")) {
        fprintf(stderr, "lifecycle-agent: redis %s: not available\n",
                ag->conf->redis);
        return 3;
    }

    for (i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        printf("lifecycle_agent_%s %s\n", r->element[i]->str,
               r->element[i + 1]->str);
    }

    freeReplyObject(r);

    lag = 0;
    pending = 0;

    for (shard = 0; shard < LC_SHARDS; shard++) {
        r = lc_agent_cmd(ag, "XINFO GROUPS " LC_PREFIX_FMT LC_KEY_EVENTS,
                         shard);
        if (r == NULL) {
            return 3;
        }

        for (i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
            g = r->element[i];
            name = lc_agent_hash_get(g, "name");

            if (name == NULL || strcmp(name->str, LC_AGENT_GROUP) != 0) {
                continue;
            }

            pending += lc_agent_reply_ll(lc_agent_hash_get(g, "pending"));

            /* nil when Redis cannot tell (entries deleted meanwhile) */
            v = lc_agent_hash_get(g, "lag");
            if (v && v->type == REDIS_REPLY_INTEGER) {
                lag += v->integer;
            }
        }

        freeReplyObject(r);
    }

    r = lc_agent_cmd(ag, "ZCARD " LC_KEY_AGENT_DUE);
    queued = lc_agent_reply_ll(r);
    if (r) {
        freeReplyObject(r);
    }

    r = lc_agent_cmd(ag, "XLEN " LC_KEY_AGENT_DEAD);
    dead = lc_agent_reply_ll(r);
    if (r) {
        freeReplyObject(r);
    }

    printf("lifecycle_agent_stream_lag %lld\n"
           "lifecycle_agent_stream_pending %lld\n"
           "lifecycle_agent_lag %lld\n"
           "lifecycle_agent_messages_queued %lld\n"
           "lifecycle_agent_dead_letters %lld\n",
           lag, pending, lag + pending, queued, dead);

    return 0;
}
