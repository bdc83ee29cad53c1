
/*
 * lifecycle-agent: the daemon beside nginx that reads the module's event
 * streams, finds abandoned sessions, links visitors to the people who
 * opted in, and sends them messages. Plain C99 with hiredis, libcurl,
 * jansson and OpenSSL; the templates, the catalog, the identities and
 * the key layout are the module's own code (ngx_lifecycle_module/).
 */

#ifndef _LC_AGENT_H_INCLUDED_
#define _LC_AGENT_H_INCLUDED_


#include <signal.h>
#include <stdarg.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "lifecycle_catalog.h"
#include "lifecycle_identity.h"
#include "lifecycle_keys.h"
#include "lifecycle_template.h"


#define LC_AGENT_VERSION         "1.0"
#define LC_AGENT_CONF_DEFAULT    "/etc/lifecycle/lifecycle-agent.conf"
#define LC_AGENT_TEMPLATES_DEFAULT  "/usr/share/lifecycle/templates"
#define LC_AGENT_OUTBOX_DEFAULT  "/var/spool/lifecycle/outbox"
#define LC_AGENT_FROM_DEFAULT    "lifecycle-agent <lifecycle@localhost>"

#define LC_AGENT_FOLLOWUPS_MAX   8

/* a message id: 64 random bits as hex */
#define LC_AGENT_ID_LEN          16

/* "consumer/run": who holds a claim */
#define LC_AGENT_OWNER_MAX       128

/*
 * How long a claim on a message being delivered holds before another
 * agent may take it over: longer than the slowest delivery (SMTP and
 * webhook calls are bounded by their timeouts, 30 s at most).
 */
#define LC_AGENT_LEASE           (120 * 1000LL)

/* a welcome is sent for opt-ins younger than this (a first start that
 * reads an old backlog does not greet people of last month) */
#define LC_AGENT_WELCOME_MAX_AGE (24 * 3600 * 1000LL)


typedef enum {
    LC_AGENT_LOG_ERROR = 0,
    LC_AGENT_LOG_WARN,
    LC_AGENT_LOG_INFO,
    LC_AGENT_LOG_DEBUG
} lc_agent_log_level_e;


typedef enum {
    LC_AGENT_OUTBOX = 0,
    LC_AGENT_SMTP,
    LC_AGENT_WEBHOOK
} lc_agent_channel_e;


/* the messages, each with its templates */
typedef enum {
    LC_AGENT_WELCOME = 0,
    LC_AGENT_BROWSE,
    LC_AGENT_CART,
    LC_AGENT_KINDS
} lc_agent_kind_e;


typedef enum {
    LC_AGENT_PART_SUBJECT = 0,
    LC_AGENT_PART_TEXT,
    LC_AGENT_PART_HTML,
    LC_AGENT_PARTS
} lc_agent_part_e;


/* an arena: what a template, a catalog or a message is built in */
typedef struct lc_agent_block_s  lc_agent_block_t;

typedef struct {
    lc_agent_block_t           *head;
    lc_alloc_t                  alloc;
} lc_agent_arena_t;


/* a growing byte string, always NUL-terminated */
typedef struct {
    char                       *data;
    size_t                      len;
    size_t                      size;
    int                         failed;   /* an allocation failed */
} lc_agent_buf_t;


typedef struct {
    char                       *file;

    char                       *redis;
    char                       *redis_password;
    int                         redis_db;

    char                       *secret_file;
    unsigned char              *secret;
    size_t                      secret_len;

    char                       *catalog_file;
    char                       *templates;

    long long                   abandon_after;    /* all times in ms */
    long long                   cooldown;
    long long                   link_window;
    long long                   scan_interval;
    long long                   claim_after;
    long long                   retention;
    long long                   followups[LC_AGENT_FOLLOWUPS_MAX];
    size_t                      nfollowups;
    int                         welcome;

    lc_agent_channel_e          channel;
    char                       *outbox;
    char                       *smtp_url;
    char                       *smtp_from;
    char                       *smtp_user;
    char                       *smtp_password;
    int                         smtp_starttls;    /* 0 no, 1 try, 2 must */
    char                       *webhook_url;
    char                       *webhook_secret;
    int                         webhook_retries;
    long long                   webhook_timeout;
    long long                   retry_delay;

    char                       *unsubscribe_url;
    char                       *site_url;
    char                       *consumer;
    lc_agent_log_level_e        log_level;

    /* loaded from the files named above */
    lc_agent_arena_t            arena;
    lc_catalog_t               *catalog;
    lc_tpl_t                   *tpl[LC_AGENT_KINDS][LC_AGENT_PARTS];
} lc_agent_conf_t;


typedef struct {
    lc_agent_conf_t            *conf;

    redisContext               *redis;
    long long                   redis_retry;      /* next connect, ms */
    long long                   redis_backoff;
    int                         redis_down_logged;

    char                        run[LC_AGENT_ID_LEN + 1];
    char                        owner[LC_AGENT_OWNER_MAX];

    long long                   next_scan;
    long long                   next_claim;
    long long                   wake;             /* a deadline seen, ms */
    int                         recovered;        /* own pending read */
} lc_agent_t;


/* what a message is about: the rows of "lc:{agent}:m:ID" */
typedef struct {
    char                        id[LC_AGENT_ID_LEN + 1];
    lc_agent_kind_e             kind;
    int                         step;             /* 0, then follow-ups */
    char                        pid[LC_PERSON_ID_LEN + 1];
    char                        vid[LC_VID_LEN + 1];
    long long                   sess;             /* 0 for a welcome */
    long long                   start;            /* of the session, ms */
    long long                   t0;               /* first step sent, ms */
    long long                   created;
} lc_agent_msg_ref_t;


/* a message ready for a channel */
typedef struct lc_agent_msg_s  lc_agent_msg_t;

struct lc_agent_msg_s {
    lc_agent_msg_ref_t         *ref;
    char                       *to;               /* in the arena */
    char                       *subject;
    char                       *text;
    char                       *html;             /* NULL: text only */
    char                       *unsubscribe;      /* the signed URL */
    char                       *eml;              /* RFC 5322 message */
    size_t                      eml_len;
    char                       *json;             /* webhook body */
    size_t                      json_len;

    /*
     * Called once, right before the last bytes of the message go to
     * the server: until then the server cannot have accepted it (SMTP
     * needs the final dot, HTTP the whole body).
     */
    void                      (*handed)(lc_agent_msg_t *m);
    void                       *handed_ctx;
    int                         handed_done;
};


/* what a channel says of a delivery */
typedef enum {
    LC_AGENT_SENT = 0,
    LC_AGENT_RETRY,       /* worth another try later */
    LC_AGENT_FAILED,      /* permanent: dead letter */
    LC_AGENT_UNKNOWN      /* may or may not have arrived: never again */
} lc_agent_result_e;


extern volatile sig_atomic_t  lc_agent_stop;
extern volatile sig_atomic_t  lc_agent_reload;
extern const char            *lc_agent_kind_names[LC_AGENT_KINDS];
extern const char            *lc_agent_channel_names[];


/* lc_agent_util.c */
void lc_agent_log(lc_agent_log_level_e level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void lc_agent_log_set(lc_agent_log_level_e level);
long long lc_agent_now(void);
int lc_agent_random_id(char *out);
void lc_agent_arena_init(lc_agent_arena_t *a);
void lc_agent_arena_free(lc_agent_arena_t *a);
void *lc_agent_alloc(void *ctx, size_t size);
char *lc_agent_strndup(lc_agent_arena_t *a, const char *s, size_t len);
void lc_agent_buf_add(lc_agent_buf_t *b, const char *s, size_t len);
void lc_agent_buf_str(lc_agent_buf_t *b, const char *s);
void lc_agent_buf_printf(lc_agent_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void lc_agent_buf_write(void *ctx, const char *data, size_t len);
char *lc_agent_buf_take(lc_agent_buf_t *b);
void lc_agent_buf_free(lc_agent_buf_t *b);
int lc_agent_read_file(const char *path, char **data, size_t *len,
    char *err, size_t errlen);
int lc_agent_is_hex(const char *s, size_t len);
void lc_agent_hmac_hex(const void *key, size_t key_len, const void *data,
    size_t len, char *hex);

/* lc_agent_conf.c */
int lc_agent_parse_time(const char *s, size_t len, long long *ms);
lc_agent_conf_t *lc_agent_conf_load(const char *file, char *err,
    size_t errlen);
lc_agent_conf_t *lc_agent_conf_parse(const char *file, const char *text,
    size_t len, char *err, size_t errlen);
int lc_agent_conf_files(lc_agent_conf_t *cf, char *err, size_t errlen);
void lc_agent_conf_free(lc_agent_conf_t *cf);

/* lc_agent_redis.c */
redisReply *lc_agent_cmd(lc_agent_t *ag, const char *fmt, ...);
redisReply *lc_agent_vcmd(lc_agent_t *ag, const char *fmt, va_list args);
redisReply *lc_agent_cmdv(lc_agent_t *ag, int argc, const char **argv,
    const size_t *argvlen);
int lc_agent_redis_ok(lc_agent_t *ag, redisReply *r, const char *what);
int lc_agent_append(lc_agent_t *ag, const char *fmt, ...);
redisReply *lc_agent_get_reply(lc_agent_t *ag);
void lc_agent_redis_close(lc_agent_t *ag);
const redisReply *lc_agent_hash_get(const redisReply *r, const char *field);
long long lc_agent_reply_ll(const redisReply *r);
void lc_agent_stat(lc_agent_t *ag, const char *name);
void lc_agent_statn(lc_agent_t *ag, const char *name, long long n);

/* lc_agent_message.c */
int lc_agent_header_safe(const char *s, size_t len);
void lc_agent_header_encode(lc_agent_buf_t *b, const char *name,
    const char *value);
void lc_agent_from_encode(lc_agent_buf_t *b, const char *from);
void lc_agent_qp(lc_agent_buf_t *b, const char *s, size_t len);
int lc_agent_mime(lc_agent_conf_t *cf, lc_agent_msg_t *m, long long now);
int lc_agent_render(lc_agent_t *ag, lc_agent_msg_t *m,
    const lc_value_t *text, const lc_value_t *html);
void lc_agent_msg_free(lc_agent_msg_t *m);
int lc_agent_build(lc_agent_t *ag, lc_agent_msg_t *m, lc_agent_arena_t *a);
int lc_agent_unsubscribe_url(lc_agent_conf_t *cf, const char *pid,
    lc_agent_buf_t *b);

/* lc_agent_channel.c */
void lc_agent_signature(const char *secret, long long t, const char *body,
    size_t len, lc_agent_buf_t *out);
lc_agent_result_e lc_agent_deliver(lc_agent_t *ag, lc_agent_msg_t *m,
    char *err, size_t errlen);
int lc_agent_outbox_has(lc_agent_conf_t *cf, const char *id);

/* lc_agent_person.c */
int lc_agent_link(lc_agent_t *ag, const char *vid, const char *email,
    size_t len, long long optin, char *pid);
int lc_agent_forget(lc_agent_t *ag, const char *email);
int lc_agent_export(lc_agent_t *ag, const char *email);
void lc_agent_unsubscribed(lc_agent_t *ag, const char *pid);
int lc_agent_eligible(lc_agent_t *ag, const char *pid, const char **why);

/* lc_agent_idle.c */
int lc_agent_scan(lc_agent_t *ag, long long *next);
int lc_agent_session_split(const char *member, size_t len, char *vid,
    long long *n);

/* lc_agent_queue.c */
int lc_agent_enqueue(lc_agent_t *ag, lc_agent_msg_ref_t *ref, long long due);
int lc_agent_deliver_due(lc_agent_t *ag);
void lc_agent_queue_recover(lc_agent_t *ag);

/* lc_agent_stream.c */
int lc_agent_consume(lc_agent_t *ag);
int lc_agent_status(lc_agent_t *ag);

#endif /* _LC_AGENT_H_INCLUDED_ */
