#!/usr/bin/perl
# Redis killed (-9) and restarted on the same port: pages keep being
# served, recording comes back by itself (no reload), reconnects counted.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new(workers => 2);
my $redis = $t->redis;
my $page = "product page\n";
$t->html('product/p1', $page);

$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    # above the default (load), below the 1s the "Redis down" checks allow
    lifecycle_timeout 300ms;
    lifecycle_view product ^/product/(?<id>[^/]+)$;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        add_header X-Session $lifecycle_session always;
        location = /status { lifecycle off; lifecycle_status; }
    }
EOF
$t->start;
$t->allow_error(qr/(?i)redis|lifecycle/);

my $vid = random_vid();
my $cookie = $t->cookie_for($vid);
my $pk = key_profile($vid);

# both workers connected
my $up = wait_until {
    ($t->metric($t->status_metrics, 'lifecycle_redis_connected') // 0) == 2
} timeout => 5, interval => 0.05;
ok($up, 'both workers connected to Redis');

my $r = $t->http_get('/product/p1', Cookie => $cookie);
is($r->status, 200, 'before: 200');
is($redis->hgetall($pk)->{views}, 1, 'before: recorded');
my $m0 = $t->status_metrics;
my $rec0 = $t->metric($m0, 'lifecycle_redis_reconnects_total') // 0;

# --- Redis dies -----------------------------------------------------------

ok($redis->kill9, 'redis killed with SIGKILL');
my ($bad, $max) = (0, 0);
for (1 .. 10) {
    $r = $t->http_get('/product/p1', Cookie => $cookie);
    $bad++ unless $r->status == 200 && $r->body eq $page;
    $max = $r->elapsed if $r->elapsed > $max;
}
is($bad, 0, 'Redis down: 10 requests, all 200 with the page');
ok($max < 1, sprintf('Redis down: slowest %.1f ms < 1s', $max * 1000));

my $down = wait_until {
    ($t->metric($t->status_metrics, 'lifecycle_redis_connected') // -1) == 0
} timeout => 5, interval => 0.05;
ok($down, 'status: connected drops to 0');

# --- Redis comes back on the same port (empty) ----------------------------

ok($redis->start, 'redis restarted on the same port');
my $t0 = time();
my $n = 0;
my $back = wait_until {
    $n++;
    my $r = $t->http_get('/product/p1', Cookie => $cookie);
    $bad++ unless $r->status == 200;
    $redis->cmd('EXISTS', $pk);
} timeout => 10, interval => 0.1;
my $took = time() - $t0;
ok($back, 'recording resumes by itself after the restart (deadline 10s)');
diag(sprintf 'recovery: first recorded request %.2fs after Redis restart (%d requests)', $took, $n);
is($bad, 0, 'every request answered 200 throughout');

my $all = wait_until {
    ($t->metric($t->status_metrics, 'lifecycle_redis_connected') // 0) == 2
} timeout => 10, interval => 0.1;
ok($all, 'both workers reconnected');

my $m1 = $t->status_metrics;
ok(($t->metric($m1, 'lifecycle_redis_reconnects_total') // 0) > $rec0,
   'lifecycle_redis_reconnects_total grew ('
   . $rec0 . ' -> ' . ($t->metric($m1, 'lifecycle_redis_reconnects_total') // 'undef') . ')');

# the script is loaded again: every request records
my $views = $redis->hgetall($pk)->{views};
for (1 .. 6) { $t->http_get('/product/p1', Cookie => $cookie) }
is($redis->hgetall($pk)->{views}, $views + 6, 'after recovery: every request recorded');
$r = $t->http_get('/product/p1', Cookie => $cookie);
like($r->header('X-Session') // '', qr/^\Q$vid\E-\d+$/, 'after recovery: $lifecycle_session set');

# --- a graceful restart too ----------------------------------------------

ok($redis->restart, 'redis stopped (SIGTERM) and started again');
$t0 = time();
$back = wait_until {
    $t->http_get('/product/p1', Cookie => $cookie);
    $redis->cmd('EXISTS', $pk);
} timeout => 10, interval => 0.1;
ok($back, 'recording resumes after a graceful Redis restart');
diag(sprintf 'recovery after graceful restart: %.2fs', time() - $t0);

$t->stop;
done_testing;
