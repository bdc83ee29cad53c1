#!/usr/bin/perl
# Against a Redis Cluster node (one node holding every slot): all the keys
# a request touches share one slot; the views of one turn, which the
# module records in one script call, go one a call once the node answers
# CROSSSLOT, and nothing is lost on the way.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new(redis => {
    args => ['--cluster-enabled', 'yes',
             '--cluster-config-file', 'nodes.conf'],
});
my $redis = $t->redis;
$redis->cmd('CLUSTER', 'ADDSLOTSRANGE', 0, 16383);
wait_until { ($redis->cmd('CLUSTER', 'INFO') // '') =~ /cluster_state:ok/ }
    timeout => 10 or BAIL_OUT('the cluster node did not come up');

$t->html('product/p1', "p1\n");
$t->config(<<'EOF2');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_timeout 2s;
    lifecycle_view product ^/product/(?<id>[^/]+)$ category=shoes;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        add_header X-Session $lifecycle_session always;
        location = /status { lifecycle off; lifecycle_status; }
    }
EOF2
$t->start;

sub request_of { "GET /product/p1 HTTP/1.1\r\nHost: localhost\r\n"
                 . "Cookie: $_[0]\r\nConnection: close\r\n\r\n" }

sub one_turn_of {
    my (@vids) = @_;
    my @res = $t->one_turn(map { request_of($t->cookie_for($_)) } @vids);
    for my $i (0 .. $#vids) {
        is($res[$i]->status, 200, "request $i: 200");
        is($res[$i]->header('X-Session'), "$vids[$i]-1",
           "request $i: its session, so its answer came");
    }
}

my @first = map { random_vid() } 1 .. 6;
one_turn_of(@first);
is($redis->hgetall(key_profile($_))->{views}, 1, "$_: one view recorded")
    for @first;

# every key of a visitor in one slot
my $vid = $first[0];
$t->http_get('/product/p1', Cookie => $t->cookie_for($vid));
my @keys = grep { index($_, $vid) >= 0 } @{ $redis->cmd('KEYS', '*') };
push @keys, key_events($vid), key_idle($vid);
ok(@keys >= 3, 'the visitor has keys: ' . join(' ', @keys));
my %slots = map { $redis->cmd('CLUSTER', 'KEYSLOT', $_) => 1 } @keys;
is(scalar keys %slots, 1, 'all of them in one hash slot');

# from now on one visitor a call: no more CROSSSLOT
my $c0 = $redis->commandstats_full->{evalsha};
my @second = map { random_vid() } 1 .. 5;
one_turn_of(@second);
my $c1 = $redis->commandstats_full->{evalsha};
is($c1->{calls} - $c0->{calls}, 5, 'five views of one turn: five calls');
is($c1->{failed_calls} - $c0->{failed_calls}, 0, 'none of them refused');

$t->stop;
done_testing;
