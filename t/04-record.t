#!/usr/bin/perl
# What a tracked request writes to Redis (docs/redis.md): profile hash,
# recent products, searches, cart, orders, session hash, event stream,
# idle set, TTLs of a first request; sessions; internal redirects record
# once; a request matching no rule touches the visitor only.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;
my $redis = $t->redis;

$t->html('index.html', "home\n");
$t->html('about.html', "about\n");
$t->html('product/p1', "product p1\n");
$t->html('product/p2', "product p2\n");
$t->html("product/q$_", "product q$_\n") for 0 .. 70;
$t->html('category/shoes', "category shoes\n");
$t->html('search', "search\n");
$t->html('checkout/thanks', "thanks\n");
$t->html('dir/index.html', "dir index\n");
$t->html('tf/fallback.html', "fallback\n");
$t->html('404.html', "custom 404\n");
$t->html('ssi/page.html', "before <!--# include virtual=\"/product/p2\" --> after\n");

$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    # generous budget: exact checks must not depend on the machine's load
    lifecycle_timeout 2s;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        index index.html;
        lifecycle on;
        add_header X-Visitor $lifecycle_visitor always;
        add_header X-Session $lifecycle_session always;

        lifecycle_view product ^/product/(?<id>[^/]+)$ category=$arg_cat;
        lifecycle_view category ^/category/(?<id>[^/]+)$;
        lifecycle_view search ^/search$ id=$arg_q;
        lifecycle_view cart_add ^/cart/add$ id=$arg_sku method=POST;
        lifecycle_view cart_remove ^/cart/remove$ id=$arg_sku method=POST;
        lifecycle_view purchase ^/checkout/thanks$ id=$arg_order;
        lifecycle_view page ^/;

        error_page 404 /404.html;
        location /ssi/ { ssi on; }
        location /tf/ { try_files $uri /tf/fallback.html; }
        location /cart/ { proxy_pass http://127.0.0.1:%%PORT_BACKEND%%/ok; }
        location = /status { lifecycle off; lifecycle_status; }
    }

    # backend for POSTs (not tracked)
    server {
        listen 127.0.0.1:%%PORT_BACKEND%%;
        location / { return 200 "ok\n"; }
    }

    # tracked, no view rules
    server {
        listen 127.0.0.1:%%PORT_NOVIEW%%;
        root %%HTML%%;
        lifecycle on;
        add_header X-Visitor $lifecycle_visitor always;
        add_header X-Session $lifecycle_session always;
    }

    # long sessions: a session that goes on across midnight
    server {
        listen 127.0.0.1:%%PORT_LONG%%;
        root %%HTML%%;
        lifecycle on;
        lifecycle_session_timeout 48h;
        lifecycle_view page ^/;
        add_header X-Session $lifecycle_session always;
    }

    # short sessions
    server {
        listen 127.0.0.1:%%PORT_SESS%%;
        root %%HTML%%;
        lifecycle on;
        lifecycle_session_timeout 1s;
        lifecycle_view product ^/product/(?<id>[^/]+)$;
        lifecycle_view page ^/;
        add_header X-Visitor $lifecycle_visitor always;
        add_header X-Session $lifecycle_session always;
    }
EOF
$t->start;
$t->allow_error(qr/open\(\) ".*\/nope" failed/);

my $now_ms = sub { int(time() * 1000) };
sub events_of {
    my ($vid) = @_;
    return [ grep { ($_->{vid} // '') eq $vid } @{ $redis->stream(key_events($vid)) } ];
}
sub evalsha_calls { $redis->commandstats->{evalsha} // 0 }

# wait until the worker is connected (a request gets a session number)
wait_until { $t->http_get('/about.html')->header('X-Session') } timeout => 5
    or diag 'warm-up: no session number';

# --- 1: first request of a new visitor ------------------------------------

# a list kept in a profile field: ids between newlines, newest first
sub list_of { [ grep { length } split /\n/, $_[0] // '' ] }

my $t_before = $now_ms->();
my $r = $t->http_get('/product/p1?cat=shoes');
is($r->status, 200, 'product page 200');
is($r->body, "product p1\n", 'product body');
my $cookie = $r->cookie('lc_vid');
ok(cookie_valid($cookie, $t->secret), 'new visitor cookie');
my ($vid) = split_cookie($cookie // '');
$cookie = "lc_vid=$cookie";
is($r->header('X-Session'), "$vid-1", '$lifecycle_session = VID-1');

my $pk = key_profile($vid);
my $p = $redis->hgetall($pk);
is($p->{views}, 1, 'profile views 1');
is($p->{'t:product'}, 1, 't:product 1');
is($p->{'p:p1'}, 1, 'p:p1 1');
is($p->{'c:shoes'}, 1, 'c:shoes 1 (category of a product view)');
is($p->{visits}, 0, 'visits 0: session 1, until the cookie comes back');
ok($p->{first} && $p->{first} >= $t_before - 5000 && $p->{first} <= $now_ms->() + 5000,
   'first is a time in ms') or diag "first=$p->{first}";
is($p->{last}, $p->{first}, 'last = first');

my $ttl = $redis->ttl($pk);
ok($ttl > 0 && $ttl <= 3600, "first request: profile TTL <= 3600 (got $ttl)");
my $sk1 = key_session($vid, 1);
is($redis->cmd('EXISTS', $sk1), 0, 'first request: the session lives in the profile until it ends');
ok($redis->hgetall($pk)->{'s.start'}, 'first request: session start (s.start)');
is_deeply(list_of($redis->hgetall($pk)->{r}), ['p1'],
          'first request: recent products in the profile (field r)');
is($redis->cmd('ZSCORE', key_idle($vid), "$vid:1"), undef, 'first request: no idle entry');

my $ev = events_of($vid);
is(scalar @$ev, 1, 'one event');
my $e = $ev->[0] || {};
is($e->{type}, 'product', 'event type');
is($e->{sess}, 1, 'event sess');
is($e->{id}, 'p1', 'event id');
is($e->{cat}, 'shoes', 'event cat');
is($e->{new}, 1, 'event new=1');
is($e->{ns}, 1, 'event ns=1');
my ($ev_ms) = ($e->{_id} // '') =~ /^(\d+)-/;
ok($ev_ms && abs($ev_ms - $now_ms->()) < 60_000, 'event time: its stream id (ms)');
ok(!exists $e->{ts}, 'no separate ts field');

# --- 2: the cookie comes back ---------------------------------------------

$r = $t->http_get('/product/p2', Cookie => $cookie);
is($r->header('X-Session'), "$vid-1", 'same session');
is($redis->hgetall($pk)->{visits}, 1, 'cookie returned: visits 1');
$ttl = $redis->ttl($pk);
ok($ttl > 3600 && $ttl <= 90 * 86400, "cookie returned: profile TTL extended to retention (got $ttl)");
my $idle = $redis->cmd('ZSCORE', key_idle($vid), "$vid:1");
ok(defined $idle && abs($idle - $now_ms->()) < 60_000, 'idle entry VID:1 with last activity (ms)');
$p = $redis->hgetall($pk);
is($p->{'p:p2'}, 1, 'p:p2 1');
is($p->{'c:shoes'}, 1, 'product without category: c: unchanged');
ok($p->{last} >= $p->{first}, 'last >= first');
$e = events_of($vid)->[-1] || {};
is($e->{id}, 'p2', 'second event id');
ok(!defined $e->{cat} || $e->{cat} eq '', 'no cat without category');
ok(($e->{new} // '') ne '1', 'second event: new not set');
ok(($e->{ns} // '') ne '1', 'second event: ns not set');

# --- 3..: categories, searches, recent, cart, purchase --------------------

$r = $t->http_get('/category/shoes', Cookie => $cookie);
is($r->status, 200, 'category 200');
$t->http_get('/search?q=boots', Cookie => $cookie);
$t->http_get('/search?q=sandals', Cookie => $cookie);
$t->http_get('/product/p1', Cookie => $cookie);

$r = $t->http_post('/cart/add?sku=p2', '', Cookie => $cookie);
is($r->status, 200, 'POST /cart/add proxied, 200');
is($r->body, "ok\n", 'backend answered');
$t->http_post('/cart/add?sku=p3', '', Cookie => $cookie);
$r = $t->http_get('/cart/add?sku=p9', Cookie => $cookie);
is($r->status, 200, 'GET /cart/add 200');
$r = $t->http_post('/cart/remove?sku=p3', '', Cookie => $cookie);
is($r->status, 200, 'POST /cart/remove 200');
is_deeply($redis->hgetall(key_cart($vid)), { p2 => 1 },
          'cart hash after add p2, add p3, GET add p9, remove p3: p2 => 1');
$p = $redis->hgetall($pk);
is($p->{cart}, 1, 'profile cart = 1 unit');
is($p->{'s.cart_adds'}, 2, 'session cart_adds 2 (s.cart_adds)');

$r = $t->http_get('/checkout/thanks?order=O123', Cookie => $cookie);
is($r->status, 200, 'purchase page 200');
$t->http_get('/about.html', Cookie => $cookie);

$p = $redis->hgetall($pk);
is($p->{'t:category'}, 1, 't:category 1');
is($p->{'c:shoes'}, 2, 'c:shoes 2 (product with cat + category page)');
is($p->{'t:search'}, 2, 't:search 2');
is($p->{'t:product'}, 3, 't:product 3');
is($p->{'p:p1'}, 2, 'p:p1 2');
is($p->{'t:cart_add'}, 2, 't:cart_add 2 (the GET did not match method=POST)');
is($p->{'t:cart_remove'}, 1, 't:cart_remove 1');
is($p->{cart}, 0, 'purchase empties the cart (profile cart 0)');
is($redis->cmd('HLEN', key_cart($vid)), 0, 'purchase empties the cart hash');
is($p->{'t:purchase'}, 1, 't:purchase 1');
is($p->{purchases}, 1, 'purchases 1');
is($p->{last_order}, 'O123', 'last_order');
ok($p->{last_purchase} && abs($p->{last_purchase} - $now_ms->()) < 60_000, 'last_purchase time');
my $sum = 0;
$sum += $p->{$_} for grep { /^t:/ } keys %$p;
is($p->{views}, $sum, "views ($p->{views}) = sum of t:* fields");
is($p->{views}, 12, 'twelve views recorded');

is_deeply(list_of($p->{r}), ['p1', 'p2'],
          'recent products (field r, one per line), newest first, once each');
is($p->{topc}, 'shoes', 'top category');
is($p->{topn}, 2, 'top category count');

# counts are incremented as digits: across 9 -> 10 -> 11 they stay
# right, and the top category is the one counted most, not the one
# whose count sorts last as a string ("9" > "10")
{
    my $v = random_vid();
    my $c = $t->cookie_for($v);
    $t->http_get('/product/p1?cat=hats', Cookie => $c) for 1 .. 9;
    $t->http_get('/product/p2?cat=bags', Cookie => $c) for 1 .. 10;
    my $q = $redis->hgetall(key_profile($v));
    is($q->{'c:hats'}, 9, 'c:hats 9');
    is($q->{'c:bags'}, 10, 'c:bags 10');
    is($q->{views}, 19, 'views 19 (9 -> 10 on the way)');
    is($q->{'p:p2'}, 10, 'p:p2 10');
    is($q->{topc}, 'bags', 'top category: 10 views beat 9');
    is($q->{topn}, 10, 'top category count 10');
    $t->http_get('/product/p1?cat=hats', Cookie => $c) for 1 .. 2;
    $q = $redis->hgetall(key_profile($v));
    is($q->{topc}, 'hats', 'then 11 beat 10');
    is($q->{topn}, 11, 'top category count 11');
}
is_deeply($redis->cmd('LRANGE', key_searches($vid), 0, -1), ['sandals', 'boots'],
          'searches, newest first');
is_deeply($redis->cmd('LRANGE', key_orders($vid), 0, -1), ['O123'], 'orders list');

is($p->{views} - ($p->{'s.v0'} // 0), 12, 'session views 12 (views - s.v0)');
is_deeply(list_of(session_products($p)), ['p1', 'p2'],
          'session products (the start of r, s.pb bytes), newest first');
is_deeply(list_of($p->{'s.c'}), ['shoes'], 'session categories');
is($p->{'s.cart_adds'}, 2, 'session cart_adds');
is($p->{'s.purchase'}, 'O123', 'session purchase');
ok($p->{'s.start'} && $p->{last} >= $p->{'s.start'}, 'session start and last activity');

$ev = events_of($vid);
is(scalar @$ev, 12, 'twelve events in the stream');
is_deeply([ map { $_->{type} } @$ev ],
          [qw(product product category search search product cart_add cart_add page
              cart_remove purchase page)],
          'event types in order');
is_deeply([ map { $_->{id} // '' } @$ev[3, 4, 6, 7, 9, 10] ],
          ['boots', 'sandals', 'p2', 'p3', 'p3', 'O123'],
          'event ids: search terms, skus, order');
is($ev->[2]{id}, 'shoes', 'category event id');
ok(!(grep { !defined $_->{sess} || !defined $_->{vid} } @$ev),
   'every event has vid and sess');

# --- lists stay bounded -----------------------------------------------------

{
    my $lr = $t->http_get('/product/q0');
    my ($lv) = split_cookie($lr->cookie('lc_vid') // '');
    my $lc = 'lc_vid=' . $lr->cookie('lc_vid');
    $t->http_get("/product/q$_", Cookie => $lc) for 1 .. 70;
    my $lp = $redis->hgetall(key_profile($lv));
    is_deeply([ @{ list_of($lp->{r}) }[0 .. 19] ], [ map { "q$_" } reverse 51 .. 70 ],
              'recent products: the newest 20 first');
    ok(length($lp->{r}) <= 20 * 8 + 8, 'recent products: the field stays bounded ('
       . length($lp->{r}) . ' bytes)');
    is_deeply([ @{ list_of(session_products($lp)) }[0 .. 19] ],
              [ map { "q$_" } reverse 51 .. 70 ],
              'session products: the newest 20 first (all of r)');
    is($lp->{'s.pb'}, length($lp->{r}) - 1, 's.pb: no more than r holds');
    ok(!exists $lp->{'s.p'}, 'no separate session product list');
    $t->http_get('/product/q60', Cookie => $lc);
    is_deeply([ @{ list_of($redis->cmd('HGET', key_profile($lv), 'r')) }[0 .. 2] ], ['q60', 'q70', 'q69'],
              'a product seen again moves to the front, once');
}

# --- internal redirects record once ---------------------------------------

for my $case (['index', '/dir/', 200, "dir index\n"],
              ['try_files', '/tf/missing', 200, "fallback\n"],
              ['error_page 404', '/nope', 404, "custom 404\n"]) {
    my ($name, $path, $status, $body) = @$case;
    my $views = $redis->hgetall($pk)->{views};
    my $nev = scalar @{ events_of($vid) };
    my $calls = evalsha_calls();
    $r = $t->http_get($path, Cookie => $cookie);
    is($r->status, $status, "$name: status $status");
    is($r->body, $body, "$name: body");
    is($redis->hgetall($pk)->{views}, $views + 1, "$name: one view recorded");
    is(scalar @{ events_of($vid) }, $nev + 1, "$name: one event");
    is(evalsha_calls() - $calls, 1, "$name: one EVALSHA");
    is($r->header('X-Session'), "$vid-1", "$name: \$lifecycle_session");
}

# --- subrequests are not tracked (SSI include) ------------------------------

{
    my $before = $redis->hgetall($pk);
    my $nev = scalar @{ events_of($vid) };
    my $calls = evalsha_calls();
    $r = $t->http_get('/ssi/page.html', Cookie => $cookie);
    is($r->body, "before product p2\n after\n", 'SSI page includes the product');
    my $after = $redis->hgetall($pk);
    is($after->{views}, $before->{views} + 1, 'SSI: one view (the main request)');
    is($after->{'p:p2'}, $before->{'p:p2'}, 'SSI: the included product is not a view');
    is(scalar @{ events_of($vid) }, $nev + 1, 'SSI: one event');
    is(evalsha_calls() - $calls, 1, 'SSI: one EVALSHA');
}

# --- a tracked request that matches no rule -------------------------------

$r = $t->http_get('/about.html', -port => $t->port('PORT_NOVIEW'));
is($r->status, 200, 'no-rule server 200');
my $c2 = $r->cookie('lc_vid');
ok(cookie_valid($c2, $t->secret), 'no rule: still a visitor cookie');
my ($vid2) = split_cookie($c2 // '');
is($r->header('X-Session'), "$vid2-1", 'no rule: session number');
$p = $redis->hgetall(key_profile($vid2));
is($p->{visits}, 0, 'no rule: profile touched (visits 0, session 1)');
ok(!$p->{views}, 'no rule: no view counted');
is(scalar @{ events_of($vid2) }, 0, 'no rule: no event');

# --- session timeout -------------------------------------------------------

my $sp = $t->port('PORT_SESS');
$r = $t->http_get('/about.html', -port => $sp);
my ($vid3) = split_cookie($r->cookie('lc_vid') // '');
my $c3 = "lc_vid=" . $r->cookie('lc_vid');
is($r->header('X-Session'), "$vid3-1", 'short sessions: session 1');
$r = $t->http_get('/about.html', -port => $sp, Cookie => $c3);
is($r->header('X-Session'), "$vid3-1", 'right away: still session 1');

# idle for more than 1s, then come back (a few tries: clock granularity)
my $got;
my $last = time();
wait_until {
    sleep(0.05) while time() - $last < 1.3;
    $r = $t->http_get('/about.html', -port => $sp, Cookie => $c3);
    $last = time();
    $got = $r->header('X-Session') // '';
    $got ne "$vid3-1";
} timeout => 6, interval => 0;
is($got, "$vid3-2", 'after the session timeout: session 2');
$p = $redis->hgetall(key_profile($vid3));
is($p->{visits}, 2, 'visits 2');
my $s1 = $redis->hgetall(key_session($vid3, 1));
ok($s1->{views} && $s1->{start} && $s1->{last},
   'session 1 copied to its own hash when session 2 started');
ok($redis->ttl(key_session($vid3, 1)) > 0, 'the copy expires');
is($p->{views} - $p->{'s.v0'}, 1, 'session 2 counts from 1 in the profile (views - s.v0)');
$e = events_of($vid3)->[-1] || {};
is($e->{sess}, 2, 'event sess 2');
is($e->{ns}, 1, 'event ns=1 on a new session');
ok(($e->{new} // '') ne '1', 'not a new visitor');
ok(defined $redis->cmd('ZSCORE', key_idle($vid3), "$vid3:2"), 'idle entry for session 2');

# --- the session's products are the start of r ---------------------------

{
    my $r1 = $t->http_get('/product/p1', -port => $sp);
    my ($v) = split_cookie($r1->cookie('lc_vid') // '');
    my $c = 'lc_vid=' . $r1->cookie('lc_vid');
    $t->http_get('/product/p2', -port => $sp, Cookie => $c);
    $t->http_get('/product/p1', -port => $sp, Cookie => $c);
    my $q = $redis->hgetall(key_profile($v));
    is_deeply(list_of(session_products($q)), ['p1', 'p2'],
              'session 1: p1, p2, p1 again: p1 p2');
    my $at = time();
    sleep(0.05) while time() - $at < 1.3;
    my $got = '';
    my $n = 0;
    wait_until {
        my $x = $t->http_get('/product/q1', -port => $sp, Cookie => $c);
        $n++;
        $got = $x->header('X-Session') // '';
        $got eq "$v-2";
    } timeout => 6, interval => 0.3;
    is($got, "$v-2", 'session 2 started');
    $t->http_get('/product/p2', -port => $sp, Cookie => $c);
    $q = $redis->hgetall(key_profile($v));
    is_deeply(list_of($q->{r}), ['p2', 'q1', 'p1'], 'r: p2 q1 p1');
    is_deeply(list_of(session_products($q)), ['p2', 'q1'],
              'session 2: q1 and p2 again, not p1 of session 1');
    is_deeply(list_of($redis->hgetall(key_session($v, 1))->{p}), ['p1', 'p2'],
              'session 1 kept its products when it ended');
}

# --- the first request of a day renews the TTLs, within a session ----------

{
    my $lp = $t->port('PORT_LONG');
    my $r1 = $t->http_get('/about.html', -port => $lp);
    my ($v) = split_cookie($r1->cookie('lc_vid') // '');
    my $c = 'lc_vid=' . $r1->cookie('lc_vid');
    $t->http_get('/about.html', -port => $lp, Cookie => $c);
    my $pk4 = key_profile($v);
    my $day = 86_400_000;
    my $yesterday = $now_ms->() - $now_ms->() % $day - 60_000;

    $redis->cmd('HSET', $pk4, 'last', $yesterday);
    $redis->cmd('EXPIRE', $pk4, 100);
    my $r2 = $t->http_get('/about.html', -port => $lp, Cookie => $c);
    is($r2->header('X-Session'), "$v-1", 'a minute before midnight, 48h sessions: the same session');
    ok($redis->ttl($pk4) > 3600, 'first request of the day: the TTLs renewed (got '
       . $redis->ttl($pk4) . ')');

    $redis->cmd('EXPIRE', $pk4, 100);
    $t->http_get('/about.html', -port => $lp, Cookie => $c);
    ok($redis->ttl($pk4) <= 100, 'the next request the same day: not again');
}

$t->stop;
done_testing;
