#!/usr/bin/perl
# lifecycle_collect and lifecycle_unsubscribe when Redis is down, comes
# back, or hangs: a beacon is answered 204 at once (or within
# lifecycle_timeout) and counted as lost, never a 5xx; an unsubscribe
# that cannot be recorded is a 503 with Retry-After, never a false
# confirmation; service comes back by itself.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(hmac_sha256);
use Time::HiRes qw(time);
use Lifecycle::Test qw(:all);

my $CT = 'application/x-www-form-urlencoded';

sub token {
    my ($t, $pid) = @_;
    return "$pid." . b64url(substr(hmac_sha256("lc-unsubscribe:$pid", $t->secret),
                                   0, 16));
}

my $conf = <<'EOF';
    lifecycle_redis %%REDIS_ADDR%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_timeout 300ms;

    server {
        listen 127.0.0.1:%%PORT%%;
        location = /lifecycle/collect { lifecycle_collect; }
        location = /unsubscribe { lifecycle_unsubscribe; }
        location = /status { lifecycle_status; }
    }
EOF

# --- Redis down, then back -----------------------------------------------------

my $t = Lifecycle::Test->new;
my $redis = $t->redis;
$t->set_var(REDIS_ADDR => $redis->addr);
$t->config($conf);
$t->start;
$t->allow_error(qr/lifecycle: redis/);

my $vid = random_vid();
my @beacon = ('Content-Type' => $CT, Cookie => $t->cookie_for($vid));

my $up = wait_until {
    $t->http_post('/lifecycle/collect', 'e=add_to_cart&id=warm', @beacon);
    $redis->cmd('EXISTS', key_cart($vid));
} timeout => 5;
ok($up, 'warm-up: connected, beacons stored');

$redis->kill9;
wait_until { !$t->metric($t->status_metrics('/status'), 'lifecycle_redis_connected') }
    timeout => 5;

my $lost0 = $t->metric($t->status_metrics('/status'), 'lifecycle_collect_total',
                       result => 'lost');
my $t0 = time();
my $r = $t->http_post('/lifecycle/collect', 'e=add_to_cart&id=p1', @beacon);
my $took = time() - $t0;
is($r->status, 204, 'Redis down: a beacon still gets 204');
ok($took < 0.25, sprintf('... at once (%.3f s), not after lifecycle_timeout', $took));
$r = $t->http_post('/lifecycle/collect', 'e=optin&email=a%40b.example&consent=1',
                   @beacon, Origin => 'http://localhost');
is($r->status, 204, 'Redis down: an opt-in too');
is($t->metric($t->status_metrics('/status'), 'lifecycle_collect_total', result => 'lost'),
   $lost0 + 2, 'both counted as lost');

$r = $t->http_post('/lifecycle/collect', 'e=bogus', @beacon);
is($r->status, 400, 'Redis down: a bad beacon is still refused');

my $pid = random_vid();
$r = $t->http_get('/unsubscribe?t=' . token($t, $pid));
is($r->status, 503, 'Redis down: unsubscribe answers 503');
is($r->header('Retry-After'), 60, 'Retry-After: 60');
like($r->body, qr/Please try again/, 'a page that says to try again');
unlike($r->body, qr/unsubscribed/, 'and does not claim it is done');
is($t->metric($t->status_metrics('/status'), 'lifecycle_unsubscribe_total',
              result => 'failed'), 1, 'lifecycle_unsubscribe_total{result="failed"}');
$r = $t->http_get('/unsubscribe?t=' . substr(token($t, $pid), 0, -1));
is($r->status, 400, 'Redis down: a bad token is still 400');

$redis->start;
my $back = wait_until {
    $t->http_post('/lifecycle/collect', 'e=add_to_cart&id=back', @beacon);
    $redis->cmd('EXISTS', key_cart($vid));
} timeout => 10, interval => 0.1;
ok($back, 'Redis back: beacons are stored again, without a reload');

$redis->cmd('HSET', "lc:{" . vid_shard($pid) . "}:P:$pid", 'email', 'x@y.example');
$r = $t->http_get('/unsubscribe?t=' . token($t, $pid));
is($r->status, 200, 'Redis back: the same link now unsubscribes');
ok($redis->hgetall("lc:{" . vid_shard($pid) . "}:P:$pid")->{unsub}, '... unsub set');

$t->stop;

# --- Redis hung: accepts, never answers ---------------------------------------

my $h = Lifecycle::Test->new(redis => 0);
$h->set_var(REDIS_ADDR => '127.0.0.1:' . $h->hung_listener);
$h->config($conf);
$h->start;
$h->allow_error(qr/lifecycle: redis/);

# the connection counts as up once the socket connects; AUTH-less SCRIPT
# LOAD waits for ever, so the first command waits its budget
@beacon = ('Content-Type' => $CT, Cookie => $h->cookie_for(random_vid()));
$t0 = time();
$r = $h->http_post('/lifecycle/collect', 'e=add_to_cart&id=p1', @beacon);
$took = time() - $t0;
is($r->status, 204, 'Redis hung: 204');
ok($took < 1.5, sprintf('... within about lifecycle_timeout (%.3f s)', $took));

my @times;
for (1 .. 5) {
    $t0 = time();
    $r = $h->http_post('/lifecycle/collect', 'e=add_to_cart&id=p1', @beacon);
    push @times, time() - $t0;
    $r->status == 204 or diag 'status ' . $r->status;
}
ok(!(grep { $_ > 0.25 } @times), 'the next beacons do not wait again: '
   . join(' ', map { sprintf '%.3f', $_ } @times));

$r = $h->http_get('/unsubscribe?t=' . token($h, random_vid()));
is($r->status, 503, 'Redis hung: unsubscribe 503');

my $m = $h->status_metrics('/status');
ok($h->metric($m, 'lifecycle_collect_total', result => 'lost') >= 6,
   'every beacon counted as lost');
is($h->metric($m, 'lifecycle_collect_total', result => 'accepted'), 0, 'none accepted');

$h->stop;
done_testing;
