#!/usr/bin/perl
# Segments and stages: every condition form of lifecycle_segment matched
# against the profile the one round trip returns, negation, declaration
# order in $lifecycle_segments, each stage with default and configured
# thresholds, nothing while Redis does not answer, config errors.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;

$t->html('index.html', "home\n");
$t->html('product/p1', "p1\n");
$t->html('product/p2', "p2\n");
$t->html('category/shoes', "shoes\n");
$t->html('cart/add', "added\n");

$t->config(<<'EOF2');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_timeout 2s;

    lifecycle_segment browser product_views>=2;
    lifecycle_segment shoe_fan category:shoes>=2;
    lifecycle_segment p1_fan product:p1>=1 !cart>=1;
    lifecycle_segment carted cart>=1;
    lifecycle_segment buyer purchases>=1;
    lifecycle_segment returning visits>=2;
    lifecycle_segment in_cart_stage stage=cart;
    lifecycle_segment not_new stage!=new;
    lifecycle_segment vip $cookie_vip=yes;
    lifecycle_segment mobile $http_user_agent~(?i)mobile;
    lifecycle_segment away days_since_visit>=30;
    lifecycle_segment opted optin=yes;
    lifecycle_segment german country=DE;
    lifecycle_segment few_views views<3;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        add_header X-Stage $lifecycle_stage always;
        add_header X-Segments "[$lifecycle_segments]" always;

        lifecycle_view product ^/product/(?<id>[^/]+)$;
        lifecycle_view category ^/category/(?<id>[^/]+)$;
        lifecycle_view cart_add ^/cart/add$ id=$arg_sku;
        lifecycle_view page ^/;
    }

    server {
        listen 127.0.0.1:%%PORT_ENGAGED%%;
        root %%HTML%%;
        lifecycle on;
        lifecycle_stages engaged=2 loyal=2 at_risk=10d lapsed=20d;
        add_header X-Stage $lifecycle_stage always;
        lifecycle_view page ^/;
    }
EOF2

$t->start;

my $vid = random_vid();
my @c = (Cookie => $t->cookie_for($vid));
my $key = key_profile($vid);

sub visit {
    my ($path, @h) = @_;
    my $r = $t->http_get($path, @c, @h);
    is($r->status, 200, "GET $path");
    return ($r->header('X-Stage') // '', $r->header('X-Segments') // '');
}

my ($stage, $seg) = visit('/product/p1');
is($stage, 'new', 'first view: stage new');
is($seg, '[p1_fan few_views]', 'product:p1>=1 with !cart>=1, views<3');

($stage, $seg) = visit('/product/p2');
is($seg, '[browser p1_fan few_views]', 'product_views>=2, in declaration order');

visit('/category/shoes');
($stage, $seg) = visit('/category/shoes');
like($seg, qr/\bshoe_fan\b/, 'category:shoes>=2');
unlike($seg, qr/\bfew_views\b/, 'views<3 no longer holds');
is($stage, 'new', 'four views in one visit: still new');

($stage, $seg) = visit('/');
is($stage, 'engaged', 'five views: engaged');
like($seg, qr/\bnot_new\b/, 'stage!=new');

($stage, $seg) = visit('/cart/add?sku=p1');
is($stage, 'cart', 'cart_add: stage cart');
like($seg, qr/\bcarted\b.*\bin_cart_stage\b/, 'cart>=1 and stage=cart');
unlike($seg, qr/\bp1_fan\b/, 'negated condition: carted visitor leaves p1_fan');

($stage, $seg) = visit('/', Cookie => $t->cookie_for($vid) . '; vip=yes',
                       'User-Agent' => 'Mozilla/5.0 (iPhone) Mobile Safari');
like($seg, qr/\bvip\b/, '$cookie_vip=yes');
like($seg, qr/\bmobile\b/, '$http_user_agent~(?i)mobile');

$t->redis_cmd('HSET', $key, 'optin', 1, 'country', 'DE');
($stage, $seg) = visit('/');
like($seg, qr/\bopted\b.*\bgerman\b/, 'optin=yes and country=DE');

$t->redis_cmd('HSET', $key, 'purchases', 1, 'cart', 0);
($stage, $seg) = visit('/');
is($stage, 'customer', 'one purchase: customer');
like($seg, qr/\bbuyer\b/, 'purchases>=1');

$t->redis_cmd('HSET', $key, 'purchases', 3);
($stage) = visit('/');
is($stage, 'loyal', 'three purchases: loyal');

my $now = int(time() * 1000);
my $day = 86400 * 1000;
$t->redis_cmd('HSET', $key, 'last', $now - 61 * $day);
($stage, $seg) = visit('/');
is($stage, 'at_risk', 'buyer back after 61 days: at_risk');
like($seg, qr/\baway\b/, 'days_since_visit>=30');
like($seg, qr/\breturning\b/, 'a new session counted: visits>=2');

$t->redis_cmd('HSET', $key, 'last', $now - 181 * $day);
($stage) = visit('/');
is($stage, 'lapsed', 'buyer back after 181 days: lapsed');

($stage, $seg) = visit('/');
is($stage, 'loyal', 'within the session: days since visit 0 again');
unlike($seg, qr/\baway\b/, 'days_since_visit>=30 no longer holds');

# configured thresholds on another server
my $v2 = random_vid();
my @c2 = (Cookie => $t->cookie_for($v2));
my $r = $t->http_get('/', @c2, -port => $t->port('PORT_ENGAGED'));
is($r->header('X-Stage'), 'new', 'engaged=2: first view new');
$r = $t->http_get('/', @c2, -port => $t->port('PORT_ENGAGED'));
is($r->header('X-Stage'), 'engaged', 'engaged=2: second view engaged');
$t->redis_cmd('HSET', key_profile($v2), 'purchases', 2,
              'last', $now - 11 * $day);
$r = $t->http_get('/', @c2, -port => $t->port('PORT_ENGAGED'));
is($r->header('X-Stage'), 'at_risk', 'at_risk=10d');
$t->redis_cmd('HSET', key_profile($v2), 'last', $now - 21 * $day);
$r = $t->http_get('/', @c2, -port => $t->port('PORT_ENGAGED'));
is($r->header('X-Stage'), 'lapsed', 'lapsed=20d');
$r = $t->http_get('/', @c2, -port => $t->port('PORT_ENGAGED'));
is($r->header('X-Stage'), 'loyal', 'loyal=2');

# Redis gone: no profile, no stage, no segment
$t->redis->stop;
$r = $t->http_get('/product/p1', @c);
is($r->status, 200, 'Redis down: page served');
ok(!defined $r->header('X-Stage'), 'Redis down: no stage');
is($r->header('X-Segments'), '[]', 'Redis down: no segment');
$t->allow_error(qr/lifecycle: redis/);
$t->stop;

# configuration errors name file:line and the bad token
my @bad = (
    [ 'unknown name', 'lifecycle_segment s bogus>=1;', qr/unknown name "bogus"/ ],
    [ 'no operator', 'lifecycle_segment s visits;', qr/invalid condition "visits"/ ],
    [ 'not a number', 'lifecycle_segment s visits>=two;', qr/"two" in condition "visits>=two" is not a number/ ],
    [ 'regex on a count', 'lifecycle_segment s visits~1;', qr/operator "~" does not apply to "visits"/ ],
    [ 'order on a stage', 'lifecycle_segment s stage>=cart;', qr/operator ">=" does not apply to "stage"/ ],
    [ 'unknown stage', 'lifecycle_segment s stage=buyer;', qr/unknown stage "buyer"/ ],
    [ 'optin value', 'lifecycle_segment s optin=maybe;', qr/"optin" takes "yes" or "no"/ ],
    [ 'bad regex', 'lifecycle_segment s $uri~(;', qr/in condition "\$uri~\("/ ],
    [ 'double =', 'lifecycle_segment s visits==2;', qr/invalid condition "visits==2"/ ],
    [ 'bad name', 'lifecycle_segment "a b" visits>=1;', qr/invalid segment name "a b"/ ],
    [ 'duplicate', "lifecycle_segment s visits>=1;\n    lifecycle_segment s views>=1;", qr/duplicate segment "s"/ ],
    [ 'stage threshold', 'lifecycle_stages engaged=0;', qr/invalid parameter "engaged=0"/ ],
    [ 'lapsed before at_risk', 'lifecycle_stages at_risk=30d lapsed=10d;', qr/lapsed must not come before at_risk/ ],
);

for my $case (@bad) {
    my ($name, $directive, $re) = @$case;
    my $bt = Lifecycle::Test->new(redis => 0);
    $bt->config(<<"EOF3");
    lifecycle_redis 127.0.0.1:1;
    lifecycle_secret %%SECRET%%;
    $directive
    server {
        listen 127.0.0.1:%%PORT%%;
        lifecycle on;
    }
EOF3
    my ($rc, $out) = $bt->nginx_t;
    isnt($rc, 0, "$name: nginx -t fails");
    like($out, $re, "$name: says what is wrong") or diag $out;
    like($out, qr/\[emerg\].* in \S+nginx\.conf:\d+/, "$name: with file:line");
}

done_testing;
