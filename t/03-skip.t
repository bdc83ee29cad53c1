#!/usr/bin/perl
# Requests that are not tracked: no Set-Cookie, empty $lifecycle_visitor,
# nothing sent to Redis, counted by reason.  And their positive controls.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;
my $redis = $t->redis;
$t->html('index.html', "<html><body>home</body></html>\n");

my $conf = <<'EOF';
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    # generous budget: exact checks must not depend on the machine's load
    lifecycle_timeout 2s;
    %%BOTS%%
    lifecycle_view page ^/;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        add_header X-Visitor $lifecycle_visitor always;
        add_header X-Session $lifecycle_session always;
        location = /status { lifecycle off; lifecycle_status; }
        location /off/ { lifecycle off; }
    }

    server {
        listen 127.0.0.1:%%PORT_NODNT%%;
        root %%HTML%%;
        lifecycle on;
        lifecycle_respect_dnt off;
        lifecycle_respect_gpc off;
        add_header X-Visitor $lifecycle_visitor always;
    }

    server {
        listen 127.0.0.1:%%PORT_CONSENT%%;
        root %%HTML%%;
        lifecycle on;
        lifecycle_consent $cookie_consent;
        add_header X-Visitor $lifecycle_visitor always;
    }
EOF

$t->set_var(BOTS => '');
$t->config($conf);
$t->start;
my $nodnt = $t->port('PORT_NODNT');
my $consent = $t->port('PORT_CONSENT');

sub evalsha_calls { $redis->commandstats->{evalsha} // 0 }

# warm up: the worker's connection is up and its script loaded
wait_until { $t->http_get('/')->header('X-Session') } timeout => 5
    or diag 'warm-up request never got a session';

my %skipped;

# a request that must not be tracked
sub not_tracked {
    my ($name, $reason, $path, @h) = @_;
    $redis->cmd('FLUSHALL');
    my $calls = evalsha_calls();
    my $r = $t->http_get($path, @h);
    is($r->status, 200, "$name: 200");
    is(scalar(grep { /^lc_vid=/ } $r->set_cookies), 0, "$name: no Set-Cookie");
    ok(!length($r->header('X-Visitor') // ''), "$name: \$lifecycle_visitor empty");
    is($redis->dbsize, 0, "$name: nothing written to Redis");
    is(evalsha_calls(), $calls, "$name: no EVALSHA");
    $skipped{$reason}++ if $reason;
    return $r;
}

# a request that must be tracked
sub tracked {
    my ($name, $path, @h) = @_;
    $redis->cmd('FLUSHALL');
    my $r = $t->http_get($path, @h);
    is($r->status, 200, "$name: 200");
    my $c = $r->cookie('lc_vid');
    ok(cookie_valid($c, $t->secret), "$name: tracked, gets a cookie");
    my ($vid) = split_cookie($c // '');
    is($r->header('X-Visitor'), $vid, "$name: \$lifecycle_visitor set");
    ok($vid && $redis->cmd('EXISTS', key_profile($vid)), "$name: profile written");
    return $r;
}

my $googlebot = 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)';

not_tracked('HEAD', 'head', '/', -method => 'HEAD');
not_tracked('Purpose: prefetch', 'prefetch', '/', Purpose => 'prefetch');
not_tracked('Sec-Purpose: prefetch', 'prefetch', '/', 'Sec-Purpose' => 'prefetch');
not_tracked('Sec-Purpose: prefetch;prerender', 'prefetch', '/',
            'Sec-Purpose' => 'prefetch;prerender');
not_tracked('Googlebot', 'bot', '/', 'User-Agent' => $googlebot);
not_tracked('bingbot', 'bot', '/',
            'User-Agent' => 'Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)');
not_tracked('Baiduspider', 'bot', '/',
            'User-Agent' => 'Mozilla/5.0 (compatible; Baiduspider/2.0)');
not_tracked('Sec-GPC: 1', 'gpc', '/', 'Sec-GPC' => '1');
not_tracked('DNT: 1', 'dnt', '/', DNT => '1');
# a skipped request that carries a valid cookie writes nothing either
not_tracked('DNT: 1 with a cookie', 'dnt', '/', DNT => '1',
            Cookie => $t->cookie_for(random_vid()));

$t->html('off/index.html', "off\n");
not_tracked('lifecycle off location', undef, '/off/');
tracked('plain browser', '/',
        'User-Agent' => 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0');
tracked('curl is not a bot', '/', 'User-Agent' => 'curl/7.88.1');

# the worker remembers verdicts by user agent: asked again, the same answers
not_tracked('Googlebot again', 'bot', '/', 'User-Agent' => $googlebot);
tracked('curl again', '/', 'User-Agent' => 'curl/7.88.1');
not_tracked('a bot with a user agent too long to remember', 'bot', '/',
            'User-Agent' => 'Mozilla/5.0 ' . ('x' x 300) . ' Googlebot/2.1');
not_tracked('and again', 'bot', '/',
            'User-Agent' => 'Mozilla/5.0 ' . ('x' x 300) . ' Googlebot/2.1');
tracked('a browser with a long user agent', '/',
        'User-Agent' => 'Mozilla/5.0 ' . ('x' x 300));
tracked('DNT: 0', '/', DNT => '0');
tracked('Sec-GPC: 0', '/', 'Sec-GPC' => '0');

# respect_dnt/gpc off
tracked('DNT: 1 with lifecycle_respect_dnt off', '/', -port => $nodnt, DNT => '1');
tracked('Sec-GPC: 1 with lifecycle_respect_gpc off', '/', -port => $nodnt, 'Sec-GPC' => '1');

# consent
not_tracked('no consent cookie', 'consent', '/', -port => $consent);
not_tracked('empty consent cookie', 'consent', '/', -port => $consent, Cookie => 'consent=');
not_tracked('consent=0', 'consent', '/', -port => $consent, Cookie => 'consent=0');
not_tracked('consent=0 with a visitor cookie', 'consent', '/', -port => $consent,
            Cookie => 'consent=0; ' . $t->cookie_for(random_vid()));
tracked('consent=1', '/', -port => $consent, Cookie => 'consent=1');

# counters
my $m = $t->status_metrics;
for my $reason (qw(head prefetch bot gpc dnt consent)) {
    is($t->metric($m, 'lifecycle_requests_skipped_total', reason => $reason),
       $skipped{$reason} // 0, "skipped{reason=\"$reason\"} = " . ($skipped{$reason} // 0));
}
$t->stop;

# --- lifecycle_bots replaces the default list -----------------------------

$t->set_var(BOTS => 'lifecycle_bots MyBot ^Acme-Fetcher;');
$t->config($conf);
$t->start;
%skipped = ();
wait_until { $t->http_get('/')->header('X-Session') } timeout => 5;
not_tracked('custom bot MyBot', 'bot', '/', 'User-Agent' => 'Mozilla/5.0 MyBot/1.0');
not_tracked('custom bot ^Acme-Fetcher', 'bot', '/', 'User-Agent' => 'Acme-Fetcher/2.1');
tracked('Acme-Fetcher not at the start', '/', 'User-Agent' => 'x Acme-Fetcher/2.1');
tracked('Googlebot is tracked once the list is replaced', '/', 'User-Agent' => $googlebot);
$m = $t->status_metrics;
is($t->metric($m, 'lifecycle_requests_skipped_total', reason => 'bot'), 2,
   'custom list: two bot skips');
$t->stop;

done_testing;
