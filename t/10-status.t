#!/usr/bin/perl
# lifecycle_status: Prometheus text; names and values after a known set of
# requests; histogram consistent with the round trips.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;
$t->html('index.html', "home\n");
$t->html('about.html', "about\n");
$t->html('product/p1', "p1\n");
$t->html('search', "search\n");

$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    # generous budget: exact checks must not depend on the machine's load
    lifecycle_timeout 2s;
    lifecycle_view product ^/product/(?<id>[^/]+)$;
    lifecycle_view search ^/search$ id=$arg_q;
    lifecycle_view page ^/;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        location = /status { lifecycle off; lifecycle_status; }
    }
EOF
$t->start;

# all counters start at zero (before any tracked request)
my $r = $t->http_get('/status');
is($r->status, 200, 'status 200');
like($r->header('Content-Type') // '', qr{^text/plain}, 'Content-Type text/plain');
my @badlines = grep { !/^#/ && length && !/^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.eE+-]+$/ }
               split /\n/, $r->body;
is_deeply(\@badlines, [], 'every line is a comment or "name{labels} value"');
my $m0 = parse_metrics($r->body);
is($m0->{lifecycle_requests_tracked_total}, 0, 'tracked 0 at start');

# wait until the worker is connected: requests below then all get replies
wait_until { ($t->metric($t->status_metrics, 'lifecycle_redis_connected') // 0) == 1 }
    timeout => 5, interval => 0.05;

# --- a known set of requests -------------------------------------------

my $c1 = $t->http_get('/product/p1')->cookie('lc_vid');           # new, product
$t->http_get('/product/p1');                                      # new, product
$t->http_get('/about.html', Cookie => "lc_vid=$c1");              # page
$t->http_get('/search?q=x', Cookie => "lc_vid=$c1");              # search
$t->http_get('/', Cookie => 'lc_vid=0123.bad');                   # invalid, new, page
$t->http_head('/');                                               # skipped head
$t->http_get('/', DNT => '1');                                    # skipped dnt
$t->http_get('/', 'Sec-GPC' => '1');                              # skipped gpc
$t->http_get('/', 'User-Agent' => 'Googlebot/2.1');               # skipped bot
$t->http_get('/', Purpose => 'prefetch');                         # skipped prefetch

my $m = $t->status_metrics;
my %want = (
    lifecycle_requests_tracked_total => 5,
    lifecycle_visitors_new_total     => 3,
    lifecycle_cookies_invalid_total  => 1,
    lifecycle_sessions_new_total     => 3,
    lifecycle_redis_roundtrips_total => 5,
    lifecycle_redis_errors_total     => 0,
    lifecycle_redis_timeouts_total   => 0,
    lifecycle_profile_timeouts_total => 0,
    lifecycle_redis_connected        => 1,
);
for my $k (sort keys %want) {
    is($m->{$k}, $want{$k}, "$k = $want{$k}");
}
ok(defined $m->{lifecycle_redis_reconnects_total}, 'lifecycle_redis_reconnects_total present');

my %views = (page => 2, product => 2, category => 0, search => 1, cart_add => 0,
             cart_remove => 0, cart => 0, checkout => 0, purchase => 0);
for my $type (sort keys %views) {
    is($t->metric($m, 'lifecycle_views_total', type => $type), $views{$type},
       "lifecycle_views_total{type=\"$type\"} = $views{$type}");
}
my %skipped = (head => 1, dnt => 1, gpc => 1, bot => 1, prefetch => 1, consent => 0);
for my $reason (sort keys %skipped) {
    is($t->metric($m, 'lifecycle_requests_skipped_total', reason => $reason), $skipped{$reason},
       "lifecycle_requests_skipped_total{reason=\"$reason\"} = $skipped{$reason}");
}

# histogram
my @buckets = sort { $a->[0] <=> $b->[0] }
              map { /le="([^"]+)"/; [$1 eq '+Inf' ? 9**9**9 : $1, $m->{$_}] }
              grep { /^lifecycle_redis_roundtrip_seconds_bucket\{/ } keys %$m;
ok(@buckets >= 3, scalar(@buckets) . ' histogram buckets');
is($buckets[-1][0], 9**9**9, 'last bucket is le="+Inf"');
my $mono = 1;
for my $i (1 .. $#buckets) { $mono = 0 if $buckets[$i][1] < $buckets[$i - 1][1] }
ok($mono, 'bucket counts are cumulative (non-decreasing)');
my $count = $m->{lifecycle_redis_roundtrip_seconds_count};
is($count, $m->{lifecycle_redis_roundtrips_total}, 'histogram _count = roundtrips');
is($buckets[-1][1], $count, 'le="+Inf" bucket = _count');
my $sum = $m->{lifecycle_redis_roundtrip_seconds_sum};
ok(defined $sum && $sum > 0 && $sum < $count * 1.0, "histogram _sum plausible ($sum s)");

# HELP/TYPE
my $body = $m->{_response}->body;
like($body, qr/^# TYPE lifecycle_requests_tracked_total counter$/m, 'TYPE counter');
like($body, qr/^# TYPE lifecycle_redis_connected gauge$/m, 'TYPE gauge');
like($body, qr/^# TYPE lifecycle_redis_roundtrip_seconds histogram$/m, 'TYPE histogram');

# status requests are not tracked and do not change counters
my $m2 = $t->status_metrics;
is($m2->{lifecycle_requests_tracked_total}, 5, 'reading status does not count');

$t->stop;
done_testing;
