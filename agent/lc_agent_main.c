
/*
 * lifecycle-agent: the command line and the daemon's loop.
 *
 *   lifecycle-agent [-c FILE] [run]        the daemon (the default)
 *   lifecycle-agent [-c FILE] -t           check the configuration
 *   lifecycle-agent [-c FILE] status       counters and lag
 *   lifecycle-agent [-c FILE] forget EMAIL erase a person
 *   lifecycle-agent [-c FILE] export EMAIL all about a person, as JSON
 *
 * The loop, single-threaded: read the streams, judge idle sessions
 * every scan_interval and at the deadlines the events and the indexes
 * show, deliver what is due, sleep a little when there was nothing to
 * do. SIGTERM and SIGINT end it after the work in hand
 * (a delivery in flight finishes and is recorded); SIGHUP loads the
 * configuration again and keeps the old one if the new one is wrong.
 */


#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "lc_agent.h"


/* the nap between two rounds that found nothing to do */
#define LC_AGENT_IDLE_NAP_MS  200

/*
 * Scans at deadlines come no closer together than this: a shop with
 * many sessions ending would have one every few milliseconds.
 */
#define LC_AGENT_SCAN_GAP_MS  250


volatile sig_atomic_t  lc_agent_stop;
volatile sig_atomic_t  lc_agent_reload;


static void
lc_agent_signal(int signo)
{
    if (signo == SIGHUP) {
        lc_agent_reload = 1;

    } else {
        lc_agent_stop = 1;
    }
}


static void
lc_agent_signals(void)
{
    struct sigaction  sa;

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);

    /* no SA_RESTART: a signal cuts the nap short */
    sa.sa_handler = lc_agent_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}


static void
lc_agent_set_owner(lc_agent_t *ag)
{
    snprintf(ag->owner, sizeof(ag->owner), "%s/%s", ag->conf->consumer,
             ag->run);
}


static void
lc_agent_nap(long long ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000;

    /* EINTR: a signal came, the loop looks at it at once */
    (void) nanosleep(&ts, NULL);
}


static void
lc_agent_reconfigure(lc_agent_t *ag)
{
    char              err[512];
    lc_agent_conf_t  *cf;

    lc_agent_reload = 0;

    cf = lc_agent_conf_load(ag->conf->file, err, sizeof(err));
    if (cf == NULL) {
        lc_agent_log(LC_AGENT_LOG_ERROR, "reload: %s; the configuration in "
                     "use stays", err);
        return;
    }

    if (strcmp(cf->consumer, ag->conf->consumer) != 0) {
        /* what the old name holds is read by the new one */
        ag->recovered = 0;
    }

    lc_agent_conf_free(ag->conf);
    ag->conf = cf;
    lc_agent_set_owner(ag);
    lc_agent_log_set(cf->log_level);

    /* the Redis settings may have changed */
    lc_agent_redis_close(ag);
    ag->redis_retry = 0;

    lc_agent_log(LC_AGENT_LOG_INFO, "reload: %s loaded (channel %s)",
                 cf->file, lc_agent_channel_names[cf->channel]);
}


static int
lc_agent_run(lc_agent_t *ag)
{
    int        did, queue_recovered;
    long long  now, next, last_scan;

    lc_agent_signals();

    lc_agent_log(LC_AGENT_LOG_INFO, "lifecycle-agent " LC_AGENT_VERSION
                 " started: consumer %s, redis %s, channel %s, "
                 "abandon_after %llds, scan every %lldms",
                 ag->owner, ag->conf->redis,
                 lc_agent_channel_names[ag->conf->channel],
                 ag->conf->abandon_after / 1000, ag->conf->scan_interval);

    queue_recovered = 0;
    last_scan = 0;

    while (!lc_agent_stop) {
        if (lc_agent_reload) {
            lc_agent_reconfigure(ag);
        }

        did = lc_agent_consume(ag);

        /* a deadline the events show, if it comes before the scan */
        if (ag->wake < ag->next_scan) {
            ag->next_scan = ag->wake > last_scan + LC_AGENT_SCAN_GAP_MS
                            ? ag->wake : last_scan + LC_AGENT_SCAN_GAP_MS;
        }

        ag->wake = LLONG_MAX;

        if (ag->recovered && !queue_recovered) {
            lc_agent_queue_recover(ag);
            queue_recovered = 1;
        }

        now = lc_agent_now();

        if (now >= ag->next_scan && !lc_agent_stop) {
            lc_agent_scan(ag, &next);
            last_scan = now;

            /* the next deadline, if it comes before scan_interval */
            ag->next_scan = now + ag->conf->scan_interval;

            if (next < ag->next_scan) {
                ag->next_scan = next > now + LC_AGENT_SCAN_GAP_MS
                                ? next : now + LC_AGENT_SCAN_GAP_MS;
            }
        }

        if (!lc_agent_stop) {
            did += lc_agent_deliver_due(ag);
        }

        if (!did && !lc_agent_stop) {
            /* short of the next scan if it comes sooner */
            now = lc_agent_now();
            lc_agent_nap(ag->next_scan - now < LC_AGENT_IDLE_NAP_MS
                         ? (ag->next_scan > now ? ag->next_scan - now : 1)
                         : LC_AGENT_IDLE_NAP_MS);
        }
    }

    lc_agent_log(LC_AGENT_LOG_INFO, "stopped (consumer %s)", ag->owner);

    return 0;
}


static void
lc_agent_usage(FILE *f)
{
    fprintf(f,
        "usage: lifecycle-agent [-c FILE] [-t] [run | status | "
        "forget EMAIL | export EMAIL]\n"
        "  -c FILE        configuration (default " LC_AGENT_CONF_DEFAULT ")\n"
        "  -t             check the configuration and exit\n"
        "  run            the daemon (the default)\n"
        "  status         counters, lag and queue of all agents\n"
        "  forget EMAIL   erase the person of EMAIL and all linked to it\n"
        "  export EMAIL   print all held about the person of EMAIL (JSON)\n");
}


int
main(int argc, char **argv)
{
    int               i, test, rc;
    char              err[512];
    const char       *file, *cmd, *arg;
    lc_agent_t        ag;
    lc_agent_conf_t  *cf;

    file = LC_AGENT_CONF_DEFAULT;
    cmd = "run";
    arg = NULL;
    test = 0;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            file = argv[++i];

        } else if (strcmp(argv[i], "-t") == 0) {
            test = 1;

        } else if (strcmp(argv[i], "-h") == 0
                   || strcmp(argv[i], "--help") == 0)
        {
            lc_agent_usage(stdout);
            return 0;

        } else if (argv[i][0] == '-') {
            lc_agent_usage(stderr);
            return 2;

        } else if (strcmp(cmd, "run") == 0 && arg == NULL
                   && (strcmp(argv[i], "run") == 0
                       || strcmp(argv[i], "status") == 0
                       || strcmp(argv[i], "forget") == 0
                       || strcmp(argv[i], "export") == 0))
        {
            cmd = argv[i];

        } else if (arg == NULL && (strcmp(cmd, "forget") == 0
                                   || strcmp(cmd, "export") == 0))
        {
            arg = argv[i];

        } else {
            lc_agent_usage(stderr);
            return 2;
        }
    }

    if ((strcmp(cmd, "forget") == 0 || strcmp(cmd, "export") == 0)
        && arg == NULL)
    {
        lc_agent_usage(stderr);
        return 2;
    }

    cf = lc_agent_conf_load(file, err, sizeof(err));
    if (cf == NULL) {
        fprintf(stderr, "lifecycle-agent: %s\n", err);
        return 1;
    }

    if (test) {
        printf("lifecycle-agent: %s: configuration ok\n", file);
        lc_agent_conf_free(cf);
        return 0;
    }

    lc_agent_log_set(cf->log_level);

    memset(&ag, 0, sizeof(ag));
    ag.conf = cf;

    if (lc_agent_random_id(ag.run) != 0) {
        fprintf(stderr, "lifecycle-agent: no random bytes\n");
        lc_agent_conf_free(cf);
        return 1;
    }

    lc_agent_set_owner(&ag);
    ag.wake = LLONG_MAX;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "lifecycle-agent: curl_global_init() failed\n");
        lc_agent_conf_free(cf);
        return 1;
    }

    if (strcmp(cmd, "run") == 0) {
        rc = lc_agent_run(&ag);

    } else if (strcmp(cmd, "status") == 0) {
        rc = lc_agent_status(&ag);

    } else if (strcmp(cmd, "forget") == 0) {
        rc = lc_agent_forget(&ag, arg);

    } else {
        rc = lc_agent_export(&ag, arg);
    }

    if (rc == 3) {
        fprintf(stderr, "lifecycle-agent: redis %s: failed\n",
                ag.conf->redis);
    }

    lc_agent_redis_close(&ag);
    lc_agent_conf_free(ag.conf);
    curl_global_cleanup();

    return rc;
}
