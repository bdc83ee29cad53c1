#!/usr/bin/perl
# Exactly one Redis command (EVALSHA) per tracked request, none for the
# others; the requests of one turn share one call; the script is reloaded after SCRIPT FLUSH / FLUSHALL (NOSCRIPT).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;
my $redis = $t->redis;
$t->html('index.html', "home\n");
$t->html('product/p1', "p1\n");

$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    # generous budget: exact checks must not depend on the machine's load
    lifecycle_timeout 2s;
    lifecycle_view product ^/product/(?<id>[^/]+)$;
    lifecycle_view page ^/;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        add_header X-Session $lifecycle_session always;
        location /off/ { lifecycle off; }
        location = /status { lifecycle off; lifecycle_status; }
    }
EOF
$t->start;

wait_until { $t->http_get('/')->header('X-Session') } timeout => 5
    or diag 'warm-up: no session number';

# top-level commands that nginx sent while $code ran (MONITOR; the
# commands scripts run inside Redis are left out)
sub commands_during {
    my ($code) = @_;
    $redis->monitor_start;
    $code->();
    return $redis->monitor_collect;
}
sub summary {
    my ($cmds) = @_;
    my %n;
    $n{ $_->{cmd} }++ for @$cmds;
    return join ', ', map { "$_ x$n{$_}" } sort keys %n;
}

my $vid = random_vid();
my $cookie = $t->cookie_for($vid);
my $n = 30;

my $rt0 = $t->metric($t->status_metrics, 'lifecycle_redis_roundtrips_total') // 0;
my $c0 = $redis->commandstats;
my $cmds = commands_during(sub {
    for my $i (1 .. $n) {
        my $r = $i % 3 == 0 ? $t->http_get('/')                          # new visitor
              : $i % 3 == 1 ? $t->http_get('/product/p1', Cookie => $cookie)
              :               $t->http_get('/', Cookie => $cookie);
        $r->status == 200 or diag "request $i: status " . $r->status;
    }
});
my $c1 = $redis->commandstats;
is($c1->{evalsha} - ($c0->{evalsha} // 0), $n,
   "INFO commandstats: $n tracked requests, evalsha calls +$n");
my @evalsha = grep { $_->{cmd} eq 'EVALSHA' } @$cmds;
my @other = grep { $_->{cmd} ne 'EVALSHA' && $_->{cmd} ne 'PING' } @$cmds;
is(scalar @evalsha, $n, "MONITOR: $n EVALSHA from nginx") or diag summary($cmds);
is(scalar @other, 0, 'MONITOR: no other command per request') or diag summary($cmds);
ok((grep { $_->{cmd} eq 'PING' } @$cmds) < $n / 2, 'no per-request PING');
my %sha = map { ($_->{args}[0] // '') => 1 } @evalsha;
is(scalar keys %sha, 1, 'one script');
is($redis->hgetall(key_profile($vid))->{views}, 2 * $n / 3, 'all of them recorded');

# requests that are not tracked send nothing
$cmds = commands_during(sub {
    $t->http_head('/');
    $t->http_get('/', DNT => '1');
    $t->http_get('/off/x');
    $t->http_get('/status');
});
is(scalar(grep { $_->{cmd} ne 'PING' } @$cmds), 0,
   'untracked requests and the status page send no command') or diag summary($cmds);
$t->allow_error(qr/open\(\) ".*\/off\/x" failed/);

# status agrees
my $m = $t->status_metrics;
is(($t->metric($m, 'lifecycle_redis_roundtrips_total') // 0) - $rt0, $n,
   "lifecycle_redis_roundtrips_total grew by $n");

# --- requests of one turn: their views go in one script call -----------
#
# Seventeen requests of as many visitors read in one turn of the worker's
# event loop (one_turn) make three calls (8 + 8 + 1). One visitor's
# profile key holds a string: its part fails (WRONGTYPE) and its page has
# no session, the others' are right.

sub request_of { "GET /product/p1 HTTP/1.1\r\nHost: localhost\r\n"
                 . "Cookie: $_[0]\r\nConnection: close\r\n\r\n" }

my @vids = map { random_vid() } 1 .. 17;
my $bad = $vids[5];
$redis->cmd('SET', key_profile($bad), 'not a hash');
my $e0 = $redis->commandstats->{evalsha} // 0;
my $rt1 = $t->metric($t->status_metrics, 'lifecycle_redis_roundtrips_total') // 0;

my @res = $t->one_turn(map { request_of($t->cookie_for($_)) } @vids);

is($redis->commandstats->{evalsha} - $e0, 3,
   '17 requests of one turn: three script calls (8 + 8 + 1)');
is(($t->metric($t->status_metrics, 'lifecycle_redis_roundtrips_total') // 0) - $rt1,
   17, 'lifecycle_redis_roundtrips_total: one round trip for each request');
for my $i (0 .. $#vids) {
    my $v = $vids[$i];
    is($res[$i]->status, 200, "batched request $i: 200");
    if ($v eq $bad) {
        is($res[$i]->header('X-Session') // '', '',
           'the visitor whose part failed: no session, default content');
        next;
    }
    is($res[$i]->header('X-Session'), "$v-1", "batched request $i: its own session");
    is($redis->hgetall(key_profile($v))->{views}, 1, "batched request $i: its view recorded");
}
is($redis->cmd('GET', key_profile($bad)), 'not a hash', 'the failed part changed nothing');
ok(scalar(grep { /profile script failed: .*WRONGTYPE/ } $t->log_lines),
   'the failed part is logged with its error');
$t->allow_error(qr/profile script failed: .*WRONGTYPE/);

# --- NOSCRIPT: the script is gone from Redis ------------------------------

$redis->cmd('SCRIPT', 'FLUSH');
my $views = $redis->hgetall(key_profile($vid))->{views};
my $r = $t->http_get('/product/p1', Cookie => $cookie);
is($r->status, 200, 'after SCRIPT FLUSH: 200');
my $ok = wait_until { ($redis->hgetall(key_profile($vid))->{views} // 0) == $views + 1 }
    timeout => 3;
ok($ok, 'after SCRIPT FLUSH: the request is still recorded');
is($r->header('X-Session'), "$vid-1", 'after SCRIPT FLUSH: $lifecycle_session set');
$r = $t->http_get('/product/p1', Cookie => $cookie);
is($redis->hgetall(key_profile($vid))->{views}, $views + 2, 'and the next one too');

$redis->cmd('FLUSHALL');
$redis->cmd('SCRIPT', 'FLUSH');
$r = $t->http_get('/product/p1', Cookie => $cookie);
is($r->status, 200, 'after FLUSHALL + SCRIPT FLUSH: 200');
$ok = wait_until { $redis->hgetall(key_profile($vid))->{views} } timeout => 3;
ok($ok, 'after FLUSHALL + SCRIPT FLUSH: recorded again');
my $p = $redis->hgetall(key_profile($vid));
is($p->{views}, 1, 'profile starts again from 1 view');
is($p->{'p:p1'}, 1, 'p:p1 1');

# one command per request again once the script is back
$cmds = commands_during(sub { $t->http_get('/', Cookie => $cookie) for 1 .. 5 });
is(scalar(grep { $_->{cmd} ne 'PING' } @$cmds), 5, 'back to one command per request')
    or diag summary($cmds);
is(scalar(grep { $_->{cmd} eq 'EVALSHA' } @$cmds), 5, '... all EVALSHA');

$t->stop;
done_testing;
