#!/usr/bin/perl
# Holdout: over 10,000 random visitor ids the control share is within
# tolerance of lifecycle_holdout; the group follows the id; control
# visitors get the page's defaults and no popup but are recorded with
# their group; conversions and sessions are counted per group; without
# a holdout everyone is "test".

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;

my $page = "<html><body><!--lc:slot hero-->HERO<!--/lc:slot--></body></html>\n";
$t->html('index.html', $page);
$t->html('thanks', "<html><body>thanks</body></html>\n");
$t->html('ping.txt', "p\n");
$t->write_file('hero.html', '<b>block</b>');
$t->write_file('pop.html', '<form>pop</form>');

$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_timeout 2s;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        default_type text/html;
        lifecycle on;
        lifecycle_holdout 10%;
        lifecycle_view purchase ^/thanks$ id=$arg_order;
        lifecycle_view page ^/;
        lifecycle_block hero * %%PREFIX%%/hero.html;
        lifecycle_popup pop * %%PREFIX%%/pop.html;
        add_header X-Group $lifecycle_group always;

        location = /status { lifecycle off; lifecycle_status; }
    }

    server {
        listen 127.0.0.1:%%PORT_NONE%%;
        root %%HTML%%;
        lifecycle on;
        add_header X-Group $lifecycle_group always;
    }
EOF
$t->start;

# --- the share ------------------------------------------------------------

my $n = 10_000;
my (%group, $control, $other);
my $start = time;
for (1 .. $n) {
    my $vid = random_vid();
    my $r = $t->http_get('/ping.txt', Cookie => $t->cookie_for($vid));
    my $g = $r->header('X-Group') // '';
    $group{$vid} = $g;
    $g eq 'control' ? $control++ : $g eq 'test' ? 1 : $other++;
}
$control //= 0;
my $share = 100 * $control / $n;
diag(sprintf 'holdout 10%%: %d of %d ids in control (%.2f%%), %d s',
             $control, $n, $share, time - $start);
ok(!$other, 'every tracked visitor is "control" or "test"');
ok(abs($share - 10) <= 1.2, sprintf 'control share %.2f%% within 10%% +- 1.2', $share);

# --- stable per id, and what control gets ---------------------------------

my @ids = keys %group;
my ($c) = grep { $group{$_} eq 'control' } @ids;
my ($s) = grep { $group{$_} eq 'test' } @ids;

for my $vid ($c, $s) {
    my $r = $t->http_get('/', Cookie => $t->cookie_for($vid));
    is($r->header('X-Group'), $group{$vid}, "$group{$vid}: same group on the next request");
}

my @cc = (Cookie => $t->cookie_for($c));
my $r = $t->http_get('/', @cc);
is($r->body, $page, 'control: the page as written, no block, no popup');
ok($r->header('ETag'), 'control: headers kept');
my %p = %{ $t->redis->hgetall(key_profile($c)) };
ok(($p{views} // 0) >= 3, "control: still recorded ($p{views} views)");
is($p{group}, 'control', 'control: the group is on the profile');

my @sc = (Cookie => $t->cookie_for($s));
$r = $t->http_get('/', @sc);
like($r->body, qr{<b>block</b>}, 'test: the block');
like($r->body, qr{data-lc-popup="pop"}, 'test: the popup');
%p = %{ $t->redis->hgetall(key_profile($s)) };
is($p{group}, 'test', 'test: the group is on the profile');

my @ev = @{ $t->redis->stream(key_events($c)) };
ok((grep { ($_->{vid} // '') eq $c && ($_->{grp} // '') eq 'control' } @ev),
   'control: its events carry grp=control');

# --- conversions per group ------------------------------------------------

my $m0 = $t->status_metrics('/status');
$t->http_get('/thanks?order=o1', @cc);
$t->http_get('/thanks?order=o2', @sc);
$t->http_get('/thanks?order=o3', @sc);
my $m1 = $t->status_metrics('/status');
for ([control => 1], [test => 2]) {
    my ($g, $d) = @$_;
    is(($t->metric($m1, 'lifecycle_conversions_total', group => $g) // 0)
       - ($t->metric($m0, 'lifecycle_conversions_total', group => $g) // 0),
       $d, "conversions{group=$g} +$d");
}
my $sess = ($t->metric($m1, 'lifecycle_group_sessions_total', group => 'control') // 0)
         + ($t->metric($m1, 'lifecycle_group_sessions_total', group => 'test') // 0);
ok($sess >= $n, "sessions counted per group ($sess)");

# --- no holdout -----------------------------------------------------------

my $none = 0;
for my $vid (@ids[0 .. 199]) {
    $r = $t->http_get('/', Cookie => $t->cookie_for($vid), -port => $t->port('PORT_NONE'));
    $none++ if ($r->header('X-Group') // '') eq 'test';
}
is($none, 200, 'without lifecycle_holdout every visitor is "test"');

$t->stop;
done_testing;
