#!/usr/bin/perl
# nginx -s reload twice while a client keeps sending requests: every
# request answered 200, old workers exit, no alert, recording continues.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new(workers => 2);
my $redis = $t->redis;
my $page = "<html><body>reload</body></html>\n";
$t->html('index.html', $page);

$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    # generous budget: exact checks must not depend on the machine's load
    lifecycle_timeout 2s;
    lifecycle_view page ^/;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        add_header X-Session $lifecycle_session always;
        location = /status { lifecycle off; lifecycle_status; }
    }
EOF
$t->start;

my $vid = random_vid();
my $cookie = $t->cookie_for($vid);
my $pk = key_profile($vid);

wait_until { ($t->metric($t->status_metrics, 'lifecycle_redis_connected') // 0) == 2 }
    timeout => 5, interval => 0.05;

my $out = $t->prefix . '/client.out';
my $stop = $t->prefix . '/client.stop';
my $client = $t->spawn(sub {
    open my $fh, '>', $out or die;
    $fh->autoflush(1);
    while (!-e $stop) {
        my $r = $t->http_get('/', Cookie => $cookie, -timeout => 5);
        my $ok = $r->status == 200 && $r->body eq $page ? 1 : 0;
        printf $fh "%d %d %.4f %s\n", $ok, $r->status, $r->elapsed,
            ($r->error // '-') =~ s/\s+/_/gr;
    }
    close $fh;
}, what => 'http client');

sub done_count {
    open my $fh, '<', $out or return 0;
    my @l = <$fh>;
    return scalar @l;
}
sub wait_more {
    my ($n) = @_;
    my $target = done_count() + $n;
    return wait_until { done_count() >= $target } timeout => 10, interval => 0.02;
}

ok(wait_more(20), 'client running');
my $views0 = $redis->hgetall($pk)->{views} // 0;
ok($views0 > 0, 'client requests recorded before reload');

my $t0 = time();
ok($t->reload(wait_old => 10), 'reload 1: new workers up, old workers exited');
diag(sprintf 'reload 1 done in %.2fs', time() - $t0);
ok(wait_more(20), 'client continues after reload 1');

$t0 = time();
ok($t->reload(wait_old => 10), 'reload 2: new workers up, old workers exited');
diag(sprintf 'reload 2 done in %.2fs', time() - $t0);
ok(wait_more(20), 'client continues after reload 2');

# recording continues in the new workers
my $v1 = $redis->hgetall($pk)->{views} // 0;
ok(wait_more(10), 'client still running');
my $v2 = $redis->hgetall($pk)->{views} // 0;
ok($v2 > $v1, "recording continues after the reloads ($v1 -> $v2)");

open my $sfh, '>', $stop; close $sfh;
is($t->reap($client, timeout => 10), 0, 'client finished');

open my $fh, '<', $out or die;
my ($total, $good, @bad) = (0, 0);
while (<$fh>) {
    $total++;
    my ($ok, $status, $el, $err) = split;
    if ($ok) { $good++ } else { push @bad, $_ }
}
is($good, $total, "all $total requests during two reloads answered 200 with the page")
    or diag "failed requests:\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)];

my $views = $redis->hgetall($pk)->{views} // 0;
diag("requests: $total, recorded views: $views");
ok($views >= $total * 0.9, 'at least 90% of the requests recorded across reloads');

my $m = $t->status_metrics;
is($t->metric($m, 'lifecycle_redis_connected'), 2, 'two workers connected after the reloads');

$t->stop;
done_testing;
