
/*
 * Redis key layout shared by the module and lifecycle-agent.
 * Plain C, no nginx types: both programs compile it. docs/redis.md is
 * the reader's version of this file.
 */

#ifndef _LIFECYCLE_KEYS_H_INCLUDED_
#define _LIFECYCLE_KEYS_H_INCLUDED_


#include <string.h>


/* 128-bit visitor id as lowercase hex */
#define LC_VID_LEN            32

/* 64 shards; the shard is the hash tag of every key of a visitor */
#define LC_SHARDS             64
#define LC_SHARD_MASK         0x3f

/* "lc:{hh}:" */
#define LC_PREFIX_LEN         (sizeof("lc:{00}:") - 1)

/* per-shard keys */
#define LC_KEY_EVENTS         "ev"
#define LC_KEY_IDLE           "idle"

/* per-visitor keys: "lc:{hh}:v:VID", "lc:{hh}:s:VID:N" */
#define LC_KEY_VISITOR        "v:"
#define LC_KEY_SESSION        "s:"

/*
 * "lc:{hh}:a:VID:N" (lifecycle-agent): what the agent decided about
 * session N of the visitor, the claim that makes it do so once
 */
#define LC_KEY_DECISION       "a:"

/* "lc:{hh}:P:PID" a person, "lc:{hh}:E:EHASH" the person of an address */
#define LC_KEY_PERSON         "P:"
#define LC_KEY_EMAIL          "E:"

/* suffixes of "lc:{hh}:P:PID" (lifecycle-agent), in the person's slot */
#define LC_KEY_PERSON_VISITORS  ":v"    /* set of visitor ids */
#define LC_KEY_PERSON_EMAILS    ":e"    /* hash EHASH -> address */
#define LC_KEY_PERSON_SESSIONS  ":s"    /* zset "VID:N" -> session start */
#define LC_KEY_PERSON_MESSAGES  ":m"    /* zset message id -> created */
#define LC_KEY_PERSON_COOLDOWN  ":cool" /* string: the session that took it */

/*
 * lifecycle-agent's own keys: one hash tag of their own, so that the
 * delivery queue and its messages are one slot apart from any visitor
 */
#define LC_AGENT_PREFIX       "lc:{agent}:"
#define LC_KEY_AGENT_DUE      LC_AGENT_PREFIX "due"     /* zset id -> due */
#define LC_KEY_AGENT_MESSAGE  LC_AGENT_PREFIX "m:"      /* hash, + id */
#define LC_KEY_AGENT_DEAD     LC_AGENT_PREFIX "dead"    /* stream */
#define LC_KEY_AGENT_STATS    LC_AGENT_PREFIX "stats"   /* hash */

/* the consumer group of lifecycle-agent on every "lc:{hh}:ev" */
#define LC_AGENT_GROUP        "lc-agent"

/* printf format of "lc:{hh}:", the shard as an unsigned int */
#define LC_PREFIX_FMT         "lc:{%02x}:"

/* suffixes of "lc:{hh}:v:VID" */
#define LC_KEY_SEARCHES       ":q"
#define LC_KEY_CART           ":cart"
#define LC_KEY_ORDERS         ":o"
#define LC_KEY_OPTINS         ":rl"   /* opt-ins in the rate-limit window */

/* bounds on what one visitor keeps */
#define LC_RECENT_MAX         20
#define LC_SESSION_MAX        20      /* categories of a session */
#define LC_SEARCHES_MAX       10
#define LC_ORDERS_MAX         50
#define LC_STREAM_MAXLEN      10000

/* what a visitor whose cookie never came back may leave, in seconds */
#define LC_FIRST_REQUEST_TTL  3600


static inline unsigned
lc_hex_value(unsigned char c)
{
    return (c >= 'a') ? (unsigned) (c - 'a' + 10) : (unsigned) (c - '0');
}


/* shard of a visitor id: the low six bits of its first byte */
static inline unsigned
lc_shard(const unsigned char *vid)
{
    return ((lc_hex_value(vid[0]) << 4) | lc_hex_value(vid[1]))
           & LC_SHARD_MASK;
}


/* writes "lc:{hh}:" (LC_PREFIX_LEN bytes, not terminated) */
static inline unsigned char *
lc_shard_prefix(unsigned char *p, unsigned shard)
{
    static const char  hex[] = "0123456789abcdef";

    *p++ = 'l'; *p++ = 'c'; *p++ = ':'; *p++ = '{';
    *p++ = hex[(shard >> 4) & 0xf];
    *p++ = hex[shard & 0xf];
    *p++ = '}'; *p++ = ':';

    return p;
}


/*
 * The lists kept in profile and session fields ("r", "s.p", "s.c", "p",
 * "c"): ids separated by "\n", newest first, possibly with a "\n" at
 * either end. Returns the next id at or after *p and moves *p past it;
 * NULL when there is none before "end".
 */
static inline const char *
lc_list_next(const char **p, const char *end, size_t *len)
{
    const char  *s, *nl;

    while (*p < end) {
        s = *p;
        nl = memchr(s, '\n', end - s);

        if (nl == NULL) {
            nl = end;
        }

        *p = (nl < end) ? nl + 1 : end;

        if (nl > s) {
            *len = nl - s;
            return s;
        }
    }

    return NULL;
}



/*
 * The current session's products, as a list of the same form: the first
 * "s.pb" bytes of the profile's "r" after its leading "\n" (a product
 * viewed moves to the front of "r", so the session's come first; at most
 * LC_RECENT_MAX of them). The length of that start of "r".
 */
static inline size_t
lc_session_products(size_t rlen, long long pb)
{
    if (pb <= 0 || rlen == 0) {
        return 0;
    }

    return ((unsigned long long) pb + 1 < rlen) ? (size_t) pb + 1 : rlen;
}


#endif /* _LIFECYCLE_KEYS_H_INCLUDED_ */
