#!/usr/bin/perl
# Self-test of t/lib/Lifecycle/Test.pm with a plain nginx (no module):
# config generation, start/reload/stop, the HTTP client, Redis fixtures,
# cookie signing helpers and the error log checks.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new(module => 0, workers => 2);

# --- pure helpers --------------------------------------------------------

# HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog") starts
# f7bc83f430538424b13298e6aa6fb143 (RFC 4231 style well-known vector)
is(b64url(pack('H*', 'f7bc83f430538424b13298e6aa6fb143')),
   '97yD9DBThCSxMpjmqm-xQw', 'base64url without padding');
my $vid = '0123456789abcdef0123456789abcdef';
is(sign_vid('The quick brown fox jumps over the lazy dog', 'key'),
   'The quick brown fox jumps over the lazy dog.97yD9DBThCSxMpjmqm-xQw',
   'sign_vid: first 16 bytes of HMAC-SHA256, base64url');
like(sign_vid($vid, 'k' x 32), qr/^[0-9a-f]{32}\.[A-Za-z0-9_-]{22}$/, 'cookie format');
ok(cookie_valid(sign_vid($vid, 'k' x 32), 'k' x 32), 'cookie_valid accepts own signature');
ok(!cookie_valid(sign_vid($vid, 'k' x 32), 'j' x 32), 'cookie_valid rejects other key');
is(vid_shard('ff' . 'a' x 30), '3f', 'shard of ff.. is 3f');
is(vid_shard('40' . 'a' x 30), '00', 'shard of 40.. is 00');
is(vid_shard('0a' . 'a' x 30), '0a', 'shard of 0a.. is 0a');
is(key_profile($vid), "lc:{01}:v:$vid", 'profile key');
is(key_session($vid, 3), "lc:{01}:s:$vid:3", 'session key');
is(key_events($vid), 'lc:{01}:ev', 'events key');
like(random_vid(), qr/^[0-9a-f]{32}$/, 'random_vid');
my $m = parse_metrics(qq{# HELP x y\nfoo_total 3\nbar{b="2",a="1"} 4.5\nh_bucket{le="+Inf"} 7\n});
is($m->{foo_total}, 3, 'metrics: plain');
is($m->{'bar{a="1",b="2"}'}, 4.5, 'metrics: labels sorted');
is($t->metric($m, 'h_bucket', le => '+Inf'), 7, 'metrics: lookup');

# --- nginx ---------------------------------------------------------------

$t->html('index.html', "hello index\n");
$t->html('big.html', 'x' x 200_000);
$t->config(<<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        location / {
            add_header Set-Cookie "a=1; Path=/";
            add_header Set-Cookie "b=2; Path=/";
            add_header X-Uri $uri;
        }
        location = /echo {
            return 200 "ua=$http_user_agent cookie=$http_cookie\n";
        }
        location = /chunked {
            # no length: HTTP/1.1 chunked
            gzip off;
            add_header X-Chunk yes;
            echo_is_not_loaded_here_so_use_ssi off;
        }
    }
EOF
# the config above has a bogus directive on purpose: nginx -t reports it
my ($rc, $out) = $t->nginx_t;
isnt($rc, 0, 'nginx -t fails on an unknown directive');
my $line = $t->conf_line(qr/echo_is_not_loaded/);
like($out, qr/unknown directive "echo_is_not_loaded_here_so_use_ssi" in \Q${\$t->conf_file}\E:$line/,
     'nginx -t output names file:line');

$t->config(<<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        location / {
            add_header Set-Cookie "a=1; Path=/";
            add_header Set-Cookie "b=2; Path=/";
            add_header X-Uri $uri;
        }
        location = /echo {
            return 200 "ua=$http_user_agent cookie=$http_cookie\n";
        }
        location = /missing { }
    }
EOF
($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t accepts the plain config') or diag $out;

ok($t->start, 'nginx started');
is(scalar($t->worker_pids), 2, 'two workers');

my $r = $t->http_get('/');
is($r->status, 200, 'GET / 200');
is($r->body, "hello index\n", 'index body');
is_deeply([$r->set_cookies], ['a=1; Path=/', 'b=2; Path=/'], 'two Set-Cookie kept apart');
is($r->cookie('b'), '2', 'cookie value');
is_deeply($r->cookie_attrs('a'), { path => '/' }, 'cookie attrs');
is($r->header('x-uri'), '/index.html', 'header lookup is case-insensitive');
ok($r->elapsed > 0 && $r->elapsed < 5, 'elapsed measured');

$r = $t->http_get('/echo', 'User-Agent' => 'harness/1', Cookie => 'lc_vid=x');
is($r->body, "ua=harness/1 cookie=lc_vid=x\n", 'request headers sent');

$r = $t->http_head('/big.html');
is($r->status, 200, 'HEAD 200');
is($r->body, '', 'HEAD has no body');
is($r->header('content-length'), 200_000, 'HEAD content-length');

$r = $t->http_get('/big.html');
is(length $r->body, 200_000, 'large body read fully');

$r = $t->http_request("GET /echo HTTP/1.0\r\n\r\n");
is($r->status, 200, 'raw HTTP/1.0 request');

$r = $t->http_post('/echo', 'a=b');
is($r->status, 200, 'POST to return');

$r = $t->http_get('/missing');
is($r->status, 404, 'missing file 404');
$t->allow_error(qr/open\(\) ".*missing" failed/);

# reload: new worker set, old ones leave
my @before = $t->worker_pids;
ok($t->reload(wait_old => 10), 'reload (nginx -s reload): new workers, old gone');
my @after = $t->worker_pids;
is(scalar @after, 2, 'two workers after reload');
ok(!(grep { my $a = $_; grep { $_ == $a } @before } @after), 'all workers are new');
ok($t->reload(signal => 1, wait_old => 10), 'reload by HUP');
is($t->http_get('/')->status, 200, 'serves after reloads');

# log helpers
ok($t->wait_log(qr/reconfiguring/), 'wait_log finds the reload notice');
my ($fatal, $errors) = $t->log_problems;
is(scalar @$fatal, 0, 'no fatal lines so far');

$t->stop;

# the checks flag problems: append fake lines and look
open my $fh, '>>', $t->error_log or die;
print $fh "2026/01/01 00:00:00 [alert] 1#1: fake alert\n";
print $fh "2026/01/01 00:00:00 [error] 1#1: *1 fake error\n";
print $fh "2026/01/01 00:00:00 [alert] 1#1: *9 open socket #12 left in connection 3\n";
close $fh;
($fatal, $errors) = $t->log_problems;
is(scalar @$fatal, 2, 'log_problems catches [alert] and open socket left');
is(scalar @$errors, 1, 'log_problems catches an unexpected [error]');
($fatal, $errors) = $t->log_problems(allow => [qr/fake error/]);
is(scalar @$errors, 0, 'allowed [error] accepted');
$t->write_file('asan/asan.99999', "==1==ERROR: AddressSanitizer: heap-use-after-free\n");
my $asan;
($fatal, $errors, $asan) = $t->log_problems;
is(scalar @$asan, 1, 'log_problems catches an ASan report file');
unlink $t->prefix . '/asan/asan.99999';

# --- fixtures ------------------------------------------------------------

my $redis = $t->redis;
is($redis->cmd('PING'), 'PONG', 'redis answers');
$redis->cmd('HSET', 'h', 'a', 1, 'b', "x\r\ny");
is_deeply($redis->hgetall('h'), { a => 1, b => "x\r\ny" }, 'HGETALL as hash, binary safe');
is_deeply($t->redis_cmd('HGETALL', 'h'), ['a', 1, 'b', "x\r\ny"], 'redis_cmd returns Perl data');
is($redis->cmd('GET', 'nope'), undef, 'nil');
is($redis->cmd('INCR', 'n'), 1, 'integer');
ok(!eval { $redis->cmd('NOSUCHCOMMAND'); 1 } && $@ =~ /ERR/, 'error reply dies');
$redis->cmd('XADD', 's', '*', 'type', 'page', 'vid', 'v');
is($redis->stream('s')->[0]{type}, 'page', 'stream entries');
ok($redis->commandstats->{hset} >= 1, 'commandstats');

# MONITOR sees other clients' top-level commands, not script internals
$redis->monitor_start;
{
    my $o = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $redis->port)
        or die;
    my $script = 'redis.call("SET", "x", 1); return 1';
    for my $cmd (['SET', 'a', '1'], ['EVAL', $script, '0']) {
        print $o '*' . @$cmd . "\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @$cmd);
        my $line = <$o>;
    }
    $redis->cmd('GET', 'a');     # our own: left out
}
my $seen = $redis->monitor_collect;
is_deeply([ map { $_->{cmd} } @$seen ], ['SET', 'EVAL'],
          'monitor: other clients\' commands, no script internals, not ours');
is($seen->[0]{args}[0], 'a', 'monitor: arguments');

my $rport = $redis->port;
ok($redis->kill9, 'redis kill -9');
ok(!eval { $redis->cmd('PING'); 1 }, 'redis down');
ok($redis->start, 'redis restarted');
is($redis->port, $rport, 'same port');
is($redis->dbsize, 0, 'restarted redis is empty');

my $ur = $t->new_redis(unix => 1, password => 'pw');
ok(-S $ur->unix_path, 'unix socket exists');
is($ur->cmd('PING'), 'PONG', 'AUTH with password');
$ur->select_db(3);
$ur->cmd('SET', 'k', 'v');
$ur->select_db(0);
is($ur->cmd('GET', 'k'), undef, 'db 0 empty');
$ur->select_db(3);
is($ur->cmd('GET', 'k'), 'v', 'db 3 has it');
{
    my $s = IO::Socket::UNIX->new(Peer => $ur->unix_path, Type => Socket::SOCK_STREAM());
    ok($s, 'unix socket connects');
}

my $refuse = $t->refusing_port;
my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $refuse, Proto => 'tcp');
ok(!$c && $!{ECONNREFUSED}, 'refusing port refuses');

my $hung = $t->hung_listener;
my $t0 = time();
$r = http_request_to($hung, "GET / HTTP/1.0\r\n\r\n", timeout => 0.3);
is($r->status, 0, 'hung listener never answers');
like($r->error // '', qr/timeout/, 'client timed out');
ok(time() - $t0 < 2, 'client timeout honoured');

my $child = $t->spawn(sub { sleep 0.1; POSIX::_exit(7) });
is($t->reap($child), 7, 'spawn/reap');

ok(wait_until { 1 }, 'wait_until true');
$t0 = time();
ok(!wait_until(sub { 0 }, timeout => 0.2), 'wait_until times out');
ok(time() - $t0 < 1, 'wait_until deadline');

done_testing;
