#!/usr/bin/perl
# worker_processes 4: every worker has its connection; all requests
# recorded; the status counters are summed across workers.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $W = 4;
my $t = Lifecycle::Test->new(workers => $W);
my $redis = $t->redis;
$t->html("product/p$_", "product $_\n") for 1 .. 5;

$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    # generous budget: exact checks must not depend on the machine's load
    lifecycle_timeout 2s;
    lifecycle_view product ^/product/(?<id>[^/]+)$;

    log_format pid '$pid $status $request_uri';

    server {
        # reuseport: the kernel spreads connections over the workers
        listen 127.0.0.1:%%PORT%% reuseport;
        root %%HTML%%;
        lifecycle on;
        access_log %%PREFIX%%/pid.log pid;
        location = /status { lifecycle off; lifecycle_status; }
    }
EOF
$t->start;

my $up = wait_until {
    ($t->metric($t->status_metrics, 'lifecycle_redis_connected') // 0) == $W
} timeout => 10, interval => 0.05;
ok($up, "all $W workers connected to Redis (lifecycle_redis_connected = $W)");

my $clients = 4;
my $each = 50;
my @vids = map { random_vid() } 1 .. $clients;
my @pids;
for my $i (0 .. $clients - 1) {
    my $cookie = $t->cookie_for($vids[$i]);
    push @pids, $t->spawn(sub {
        my $bad = 0;
        for my $k (1 .. $each) {
            my $r = $t->http_get('/product/p' . (1 + $k % 5), Cookie => $cookie);
            $bad++ unless $r->status == 200;
        }
        POSIX::_exit($bad ? 1 : 0);
    }, what => "client $i");
}
my @rc = map { $t->reap($_, timeout => 60) } @pids;
is_deeply(\@rc, [(0) x $clients], "$clients clients x $each requests: all 200");

my $total = $clients * $each;
my $sum = 0;
for my $v (@vids) {
    my $p = $redis->hgetall(key_profile($v));
    is($p->{views}, $each, "visitor $v: $each views");
    $sum += $p->{views} // 0;
}
is($sum, $total, "sum of views = $total");

open my $fh, '<', $t->prefix . '/pid.log' or die;
my %by_pid;
while (<$fh>) {
    my ($pid, $status, $uri) = split;
    $by_pid{$pid}++ if $uri =~ m{^/product/};
}
diag('requests per worker: ' . join(', ', map { "$_=$by_pid{$_}" } sort keys %by_pid));
ok(keys(%by_pid) >= 2, 'requests were served by several workers');

# counters are summed across workers; ask several times (any worker answers)
for my $try (1 .. 4) {
    my $m = $t->status_metrics;
    is($t->metric($m, 'lifecycle_requests_tracked_total'), $total,
       "status ($try): tracked_total = $total");
    is($t->metric($m, 'lifecycle_views_total', type => 'product'), $total,
       "status ($try): views_total{type=product} = $total");
    is($t->metric($m, 'lifecycle_redis_roundtrips_total'), $total,
       "status ($try): roundtrips_total = $total");
}

$t->stop;
done_testing;
