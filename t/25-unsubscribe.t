#!/usr/bin/perl
# lifecycle_unsubscribe: a signed link (?t=PID.SIG) marks the person
# unsubscribed (unsub = now, once) and tells the agent (an unsubscribe
# event in the person's shard stream), by GET or RFC 8058 one-click POST,
# in one script call; an unknown person gets the same answer and nothing
# is created; forged, truncated, malformed or foreign tokens get 400,
# all alike, and nothing is written.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(hmac_sha256);
use Time::HiRes qw(time);
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;
my $redis = $t->redis;

$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_timeout 2s;

    server {
        listen 127.0.0.1:%%PORT%%;
        lifecycle on;
        lifecycle_view page ^/;
        location = /unsubscribe { lifecycle_unsubscribe; }
        location = /status { lifecycle off; lifecycle_status; }
    }
EOF
$t->start;

sub token {
    my ($pid, $key) = @_;
    return "$pid." . b64url(substr(hmac_sha256("lc-unsubscribe:$pid",
                                               $key // $t->secret), 0, 16));
}

sub key_person { my ($pid) = @_; 'lc:{' . vid_shard($pid) . "}:P:$pid" }
sub now_ms { int(time() * 1000) }

sub snapshot {
    my %s;
    $s{$_} = $redis->cmd('DUMP', $_) for $redis->keys_matching('*');
    return \%s;
}

# a person as lifecycle-agent files it
sub person {
    my $pid = random_vid();
    $redis->cmd('HSET', key_person($pid), 'email', "$pid\@example.com",
                'created', now_ms());
    return $pid;
}

my %count;

# --- a valid link ----------------------------------------------------------

my $pid = person();
my $tok = token($pid);
is(length $tok, 55, 'a token is PID.SIG, 55 characters');

my $t0 = now_ms();
my $r = $t->http_get("/unsubscribe?t=$tok");
is($r->status, 200, 'GET with a valid token: 200');
like($r->header('Content-Type'), qr{^text/html; charset=utf-8$}, 'HTML, UTF-8');
is($r->header('Cache-Control'), 'no-store', 'Cache-Control: no-store');
is($r->header('Referrer-Policy'), 'no-referrer', 'Referrer-Policy: no-referrer');
like($r->body, qr{<h1>You are unsubscribed</h1>}, 'a short confirmation');
is(scalar $r->set_cookies, 0, 'no cookie, although "lifecycle on"');
my $confirmation = $r->body;
$count{done}++;

my $p = $redis->hgetall(key_person($pid));
ok($p->{unsub} >= $t0 && $p->{unsub} <= now_ms(), 'unsub: now');
is($p->{email}, "$pid\@example.com", 'the rest of the person is untouched');
my @ev = grep { ($_->{pid} // '') eq $pid } @{ $redis->stream(key_events($pid)) };
is(scalar @ev, 1, 'one event in the shard stream of the person');
is_deeply({ map { $_ => $ev[0]{$_} } grep { $_ ne '_id' } keys %{ $ev[0] } },
          { type => 'unsubscribe', pid => $pid }, 'type=unsubscribe pid=PID');
my ($ms) = split /-/, $ev[0]{_id};
ok($ms >= $t0 && $ms <= now_ms() + 1, 'its time: now');

# again: the same answer, the first time kept, no second event
my $first = $p->{unsub};
$r = $t->http_get("/unsubscribe?t=$tok&utm_source=mail");
is($r->status, 200, 'again (with more arguments): 200');
is($r->body, $confirmation, 'the same page');
is($redis->hgetall(key_person($pid))->{unsub}, $first, 'unsub keeps the first time');
is(scalar(grep { ($_->{pid} // '') eq $pid } @{ $redis->stream(key_events($pid)) }),
   1, 'no second event');
$count{done}++;

# RFC 8058 one-click: POST, the token in the URL
my $pid2 = person();
$r = $t->http_post('/unsubscribe?t=' . token($pid2), 'List-Unsubscribe=One-Click',
                   'Content-Type' => 'application/x-www-form-urlencoded');
is($r->status, 200, 'one-click POST: 200');
is($r->body, $confirmation, 'one-click POST: the confirmation');
ok($redis->hgetall(key_person($pid2))->{unsub}, 'one-click POST: unsub set');
is(scalar(grep { ($_->{pid} // '') eq $pid2 } @{ $redis->stream(key_events($pid2)) }),
   1, 'one-click POST: the event');
$count{done}++;

# a mail client that escapes the dot
my $pid3 = person();
(my $escaped = token($pid3)) =~ s/\./%2E/;
$r = $t->http_get("/unsubscribe?t=$escaped");
is($r->status, 200, 'the dot escaped as %2E: 200');
ok($redis->hgetall(key_person($pid3))->{unsub}, '... unsubscribed');
$count{done}++;

# a link checker's HEAD changes nothing
my $pid4 = person();
my $before = snapshot();
$r = $t->http_head('/unsubscribe?t=' . token($pid4));
is($r->status, 200, 'HEAD with a valid token: 200');
is($r->body, '', 'HEAD: no body');
is_deeply(snapshot(), $before, 'HEAD: nothing written');

# an unknown person: the same answer, nothing created
my $ghost = random_vid();
$before = snapshot();
$r = $t->http_get('/unsubscribe?t=' . token($ghost));
is($r->status, 200, 'unknown person: 200');
is($r->body, $confirmation, 'unknown person: the same page');
is_deeply(snapshot(), $before, 'unknown person: nothing created, no event');
is($redis->cmd('EXISTS', key_person($ghost)), 0, 'no person hash');
$count{unknown}++;

# --- bad tokens -------------------------------------------------------------

my $good = token($pid4);
(my $upper = $good) =~ s/^([0-9a-f]{32})/\U$1/;
my $other_sig = token($pid, 'another secret of at least 32 bytes!');
my $mixed = substr($good, 0, 33) . substr(token($pid), 33);
my @bad = (
    ['no t', '/unsubscribe'],
    ['empty t', '/unsubscribe?t='],
    ['another argument', '/unsubscribe?token=' . $good],
    ['truncated by one', '/unsubscribe?t=' . substr($good, 0, -1)],
    ['truncated to the id', '/unsubscribe?t=' . substr($good, 0, 32)],
    ['id and dot only', '/unsubscribe?t=' . substr($good, 0, 33)],
    ['one more character', "/unsubscribe?t=${good}A"],
    ['last character changed', '/unsubscribe?t=' . substr($good, 0, -1)
                               . (substr($good, -1) eq 'A' ? 'B' : 'A')],
    ['first id digit changed', '/unsubscribe?t='
                               . (substr($good, 0, 1) eq 'a' ? 'b' : 'a')
                               . substr($good, 1)],
    ['id in upper case', "/unsubscribe?t=$upper"],
    ['not hex', '/unsubscribe?t=g' . substr($good, 1)],
    ['no dot', '/unsubscribe?t=' . substr($good, 0, 32) . '_' . substr($good, 33)],
    ['signed with another secret', "/unsubscribe?t=$other_sig"],
    ['the signature of another person', "/unsubscribe?t=$mixed"],
    ['padding added', "/unsubscribe?t=$good%3D%3D"],
    ['escaped NUL', '/unsubscribe?t=' . substr($good, 0, 32) . '%00' . substr($good, 33)],
    ['a very long t', '/unsubscribe?t=' . ('a' x 8000)],
);

my $c0 = $redis->commandstats;
$before = snapshot();
for my $case (@bad) {
    my ($name, $uri) = @$case;
    my $r = $t->http_get($uri);
    is($r->status, 400, "$name: 400");
    like($r->body, qr{<h1>This link does not work</h1>}, "$name: a short page");
    is($r->header('Cache-Control'), 'no-store', "$name: no-store");
    $count{invalid}++;
}
my %bodies = map { $t->http_get($_->[1])->body => 1 } @bad;
is(scalar keys %bodies, 1, 'every bad token gets the very same page');
$count{invalid} += @bad;
$r = $t->http_post('/unsubscribe?t=' . substr($good, 0, -1), 'List-Unsubscribe=One-Click',
                   'Content-Type' => 'application/x-www-form-urlencoded');
is($r->status, 400, 'one-click POST with a bad token: 400');
$count{invalid}++;
is_deeply(snapshot(), $before, 'bad tokens: nothing written');
is(($redis->commandstats->{evalsha} // 0) - ($c0->{evalsha} // 0), 0,
   'bad tokens: no script call');
is(scalar(grep { $_->{type} eq 'unsubscribe' && $_->{pid} eq $pid4 }
          @{ $redis->stream(key_events($pid4)) }), 0, 'and no event');

$r = $t->http_get('/unsubscribe?t=' . $good, -method => 'PUT');
is($r->status, 405, 'PUT: 405');
is($r->header('Allow'), 'GET, HEAD, POST', 'Allow: GET, HEAD, POST');

# --- one round trip, NOSCRIPT ------------------------------------------------

my $pid5 = person();
$redis->monitor_start;
$t->http_get('/unsubscribe?t=' . token($pid5));
my $cmds = $redis->monitor_collect;
my @calls = grep { $_->{cmd} ne 'PING' } @$cmds;
is(scalar @calls, 1, 'one command') or diag join ', ', map { $_->{cmd} } @$cmds;
is($calls[0]{cmd}, 'EVALSHA', '... EVALSHA');
is_deeply([@{ $calls[0]{args} }[1 .. 3]], [2, key_person($pid5), key_events($pid5)],
          '... of the person and the stream of its shard');
$count{done}++;

$redis->cmd('SCRIPT', 'FLUSH');
my $pid6 = person();
$r = $t->http_get('/unsubscribe?t=' . token($pid6));
is($r->status, 200, 'after SCRIPT FLUSH: 200');
ok($redis->hgetall(key_person($pid6))->{unsub}, 'after SCRIPT FLUSH: unsubscribed');
$count{done}++;

# --- metrics ------------------------------------------------------------------

my $m = $t->status_metrics;
for my $result (qw(done unknown invalid failed)) {
    is($t->metric($m, 'lifecycle_unsubscribe_total', result => $result) // -1,
       $count{$result} // 0, "lifecycle_unsubscribe_total{result=\"$result\"}");
}

$t->stop;
done_testing;
