#!/usr/bin/perl
# Redis refusing or hung: pages are served normally and quickly, with
# their default content although blocks and a popup apply to everyone,
# errors and timeouts are counted, logging does not flood, no
# [alert]/[crit].

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;
my $page = "<html><body><!--lc:slot hero-->default<!--/lc:slot-->"
         . ('page ' x 200) . "</body></html>\n";
$t->html('index.html', $page);
$t->write_file('block.html', '<b>personal</b>');

my $conf = <<'EOF';
    lifecycle_redis 127.0.0.1:%%BACKEND%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_timeout 50ms;
    lifecycle_view page ^/;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        lifecycle_block hero * %%PREFIX%%/block.html;
        lifecycle_popup p * %%PREFIX%%/block.html;
        add_header X-Visitor $lifecycle_visitor always;
        add_header X-Session $lifecycle_session always;
        location = /status { lifecycle off; lifecycle_status; }
    }
EOF

my $N = 20;
my $redis_log = qr/(?i)redis|lifecycle/;

# sequential requests; returns (all ok, max elapsed, count of no-session)
sub run_requests {
    my ($name, $n) = @_;
    my ($bad, $max, $nosess) = (0, 0, 0);
    for my $i (1 .. $n) {
        my $r = $t->http_get('/', $i % 2 ? (Cookie => $t->cookie_for(random_vid())) : ());
        if ($r->status != 200 || $r->body ne $page) {
            $bad++;
            diag "$name request $i: status " . $r->status . ' ' . ($r->error // '');
        }
        $max = $r->elapsed if $r->elapsed > $max;
        $nosess++ unless length($r->header('X-Session') // '');
    }
    return ($bad, $max, $nosess);
}

# requests from several clients at once: (all ok, max elapsed)
sub run_parallel {
    my ($clients, $each) = @_;
    my $dir = $t->prefix . '/par' . int(rand(1e6));
    mkdir $dir;
    my @pids = map {
        my $k = $_;
        $t->spawn(sub {
            open my $fh, '>', "$dir/$k" or die;
            for (1 .. $each) {
                my $r = $t->http_get('/', -timeout => 5);
                printf $fh "%d %.4f\n", $r->status, $r->elapsed;
            }
            close $fh;
        });
    } 1 .. $clients;
    $t->reap($_, timeout => 20) for @pids;
    my ($bad, $max, $count) = (0, 0, 0);
    for my $k (1 .. $clients) {
        open my $fh, '<', "$dir/$k" or next;
        while (<$fh>) {
            my ($s, $e) = split;
            $count++;
            $bad++ if $s != 200;
            $max = $e if $e > $max;
        }
    }
    $bad += $clients * $each - $count;
    return ($bad, $max);
}

# --- refusing port ---------------------------------------------------------

$t->set_var(BACKEND => $t->refusing_port);
$t->config($conf);
$t->start;
$t->allow_error($redis_log);

my ($bad, $max, $nosess) = run_requests('refusing', $N);
is($bad, 0, "refusing Redis: $N requests, all 200 with the normal body");
diag(sprintf 'refusing Redis: slowest request %.1f ms', $max * 1000);
ok($max < 1, 'refusing Redis: every request under 1s');
is($nosess, $N, 'refusing Redis: $lifecycle_session empty');

($bad, $max) = run_parallel(5, 4);
is($bad, 0, 'refusing Redis: 5 parallel clients, all 200');
ok($max < 1, sprintf('refusing Redis: parallel, slowest %.1f ms < 1s', $max * 1000));

my $m = $t->status_metrics;
my $errs = ($t->metric($m, 'lifecycle_redis_errors_total') // 0)
         + ($t->metric($m, 'lifecycle_redis_timeouts_total') // 0);
ok($errs >= 1, "refusing Redis: errors+timeouts counted ($errs)");
is($t->metric($m, 'lifecycle_redis_connected'), 0, 'refusing Redis: connected 0');
is($t->metric($m, 'lifecycle_redis_roundtrip_seconds_count'), 0,
   'refusing Redis: no reply, no round-trip time observed');
is($t->metric($m, 'lifecycle_requests_tracked_total'), $N + 20,
   'refusing Redis: the requests still count as tracked');

my @lines = $t->log_lines(qr/\[(error|warn)\].*$redis_log/);
diag('refusing Redis: ' . scalar(@lines) . ' [error]/[warn] lines about Redis');
ok(@lines < $N, 'refusing Redis: log not flooded (fewer lines than requests)');
$t->stop;

# --- hung listener ------------------------------------------------------

$t->set_var(BACKEND => $t->hung_listener);
$t->config($conf);
$t->start;
$t->allow_error($redis_log);

my $t0 = time();
($bad, $max, $nosess) = run_requests('hung', $N);
is($bad, 0, "hung Redis: $N requests, all 200 with the normal body");
diag(sprintf 'hung Redis (lifecycle_timeout 50ms): slowest request %.1f ms', $max * 1000);
ok($max < 1, 'hung Redis: every request under 1s (budget 50ms + margin)');
is($nosess, $N, 'hung Redis: $lifecycle_session empty');

($bad, $max) = run_parallel(5, 4);
is($bad, 0, 'hung Redis: 5 parallel clients, all 200');
ok($max < 1, sprintf('hung Redis: parallel, slowest %.1f ms < 1s', $max * 1000));

$m = $t->status_metrics;
$errs = $t->metric($m, 'lifecycle_profile_timeouts_total') // 0;
ok($errs >= 1, "hung Redis: requests past their budget counted ($errs)");
is($t->metric($m, 'lifecycle_redis_roundtrip_seconds_count'), 0,
   'hung Redis: no reply, no round-trip time observed');

# the watchdog drops the silent connection and reconnects (about 1s)
my $rec = wait_until {
    my $m = $t->status_metrics;
    ($t->metric($m, 'lifecycle_redis_reconnects_total') // 0) >= 1;
} timeout => 6, interval => 0.1;
ok($rec, 'hung Redis: the watchdog reconnects (lifecycle_redis_reconnects_total >= 1)');
diag(sprintf 'hung Redis: first reconnect seen %.1fs after the first request', time() - $t0);

# still fast after the reconnects
($bad, $max) = run_requests('hung, later', 5);
is($bad, 0, 'hung Redis, after reconnects: 200');
ok($max < 1, 'hung Redis, after reconnects: under 1s');

@lines = $t->log_lines(qr/\[(error|warn)\].*$redis_log/);
diag('hung Redis: ' . scalar(@lines) . ' [error]/[warn] lines about Redis');
ok(@lines < $N, 'hung Redis: log not flooded');
$t->stop;

done_testing;
