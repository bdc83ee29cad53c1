#!/usr/bin/perl
# lifecycle_redis unix:/path password=P db=N; TCP with password and db;
# a wrong password serves pages and counts errors.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $pw = 'sekret-pw-42';
my $t = Lifecycle::Test->new(redis => { unix => 1, password => $pw });
my $redis = $t->redis;
$t->html('product/p1', "p1\n");

my $conf = <<'EOF';
    lifecycle_redis %%ADDR%%;
    lifecycle_secret %%SECRET%%;
    # generous budget: exact checks must not depend on the machine's load
    lifecycle_timeout 2s;
    lifecycle_view product ^/product/(?<id>[^/]+)$;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        add_header X-Session $lifecycle_session always;
        location = /status { lifecycle off; lifecycle_status; }
    }
EOF

sub connected {
    return wait_until {
        ($t->metric($t->status_metrics, 'lifecycle_redis_connected') // 0) == 1
    } timeout => 5, interval => 0.05;
}

sub in_db {
    my ($db, $key) = @_;
    $redis->select_db($db);
    my $v = $redis->hgetall($key);
    $redis->select_db(0);
    return $v;
}

# --- unix socket, password, db 3 -----------------------------------------

$t->set_var(ADDR => 'unix:' . $redis->unix_path . " password=$pw db=3");
$t->config($conf);
$t->start;
ok(connected(), 'unix socket: connected');

my $r = $t->http_get('/product/p1');
is($r->status, 200, 'unix socket: 200');
my ($vid) = split_cookie($r->cookie('lc_vid') // '');
ok($vid, 'new visitor');
is($r->header('X-Session'), "$vid-1", 'unix socket: $lifecycle_session from Redis');
my $p = in_db(3, key_profile($vid));
is($p->{views}, 1, 'unix socket: profile found in db 3');
is($p->{'p:p1'}, 1, 'unix socket: p:p1 in db 3');
$redis->select_db(0);
is($redis->dbsize, 0, 'nothing in db 0');

my @clients = grep { /\bflags=\w*U/ } split /\n/, $redis->cmd('CLIENT', 'LIST');
ok(@clients >= 1, 'nginx is connected through the unix socket');
$t->stop;

# --- TCP, password, db 5 --------------------------------------------------

$t->set_var(ADDR => $redis->addr . " password=$pw db=5");
$t->config($conf);
$t->start;
ok(connected(), 'tcp + password: connected');
$r = $t->http_get('/product/p1');
($vid) = split_cookie($r->cookie('lc_vid') // '');
is($r->header('X-Session'), "$vid-1", 'tcp + password: $lifecycle_session');
is(in_db(5, key_profile($vid))->{views}, 1, 'tcp + password: profile in db 5');
$t->stop;

# --- wrong password --------------------------------------------------------

$redis->cmd('FLUSHALL');
$t->set_var(ADDR => 'unix:' . $redis->unix_path . ' password=wrong db=3');
$t->config($conf);
$t->start;
$t->allow_error(qr/(?i)redis|lifecycle|auth|WRONGPASS/);
for (1 .. 5) {
    $r = $t->http_get('/product/p1');
    is($r->status, 200, 'wrong password: page served');
    is($r->body, "p1\n", 'wrong password: body');
}
my $errs = wait_until {
    my $m = $t->status_metrics;
    ($t->metric($m, 'lifecycle_redis_errors_total') // 0)
        + ($t->metric($m, 'lifecycle_redis_timeouts_total') // 0)
        + ($t->metric($m, 'lifecycle_profile_timeouts_total') // 0);
} timeout => 3, interval => 0.1;
ok($errs, "wrong password: errors counted ($errs)");
is($t->metric($t->status_metrics, 'lifecycle_redis_connected'), 0,
   'wrong password: not reported as connected');
my $keys = 0;
for my $db (0, 3) { $redis->select_db($db); $keys += $redis->dbsize }
$redis->select_db(0);
is($keys, 0, 'wrong password: nothing written');
ok(scalar($t->log_lines(qr/\[(error|warn)\].*(?i)(auth|password|WRONGPASS)/)),
   'wrong password: the log says why');
$t->stop;

done_testing;
