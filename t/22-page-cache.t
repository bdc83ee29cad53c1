#!/usr/bin/perl
# The page cache: a personalized static page comes from memory after its
# first request, byte for byte what the streaming filter makes of the same
# file (a server with the cache off, a proxy); a changed or replaced file
# is never served stale; a small cache evicts and still serves every page
# right; a page too big for it is read and streamed; sendfile off and a
# slot default over 16 KB behave as without the cache.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time);
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new(workers => 1);

# markers of every kind, near misses, a slot filled, one left, a popup
sub page {
    my ($tag, $pad) = @_;
    return "<html><head><title>$tag</title></head><body>\n"
         . "<p>before $tag</p><!-- c --><!--lc:slot nope--></b>\n"
         . "<!--lc:slot hero-->DEFAULT $tag<!--/lc:slot-->\n"
         . ('x' x ($pad // 100)) . "\n"
         . "<!--lc:slot keep-->KEEP<!--/lc:slot--><!--/lc:slot-->\n"
         . "<p>after $tag</p></BODY></html>\n";
}

$t->html("p$_.html", page("p$_", 3000)) for 1 .. 12;
$t->html('big.html', page('big', 300_000));
$t->html('long.html', "<html><body><!--lc:slot hero-->" . ('d' x 20_000)
                      . "<!--/lc:slot--></body></html>\n");
$t->html('change.html', page('v1'));
$t->html('origin/p1.html', page('p1', 3000));
$t->write_file('hero.html', '<b>{{visitor.views}}</b>');
$t->write_file('popup.html', '<i>popup</i>');

$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_timeout 2s;
    lifecycle_page_cache 128k;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        default_type text/html;
        sendfile on;
        lifecycle on;
        lifecycle_view page ^/;
        lifecycle_block hero * %%PREFIX%%/hero.html;
        lifecycle_popup p * %%PREFIX%%/popup.html;

        location /nosendfile/ {
            sendfile off;
            alias %%HTML%%/;
        }

        location /proxied/ {
            proxy_pass http://127.0.0.1:%%PORT_ORIGIN%%/;
        }

        location = /status {
            lifecycle off;
            lifecycle_status;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_ORIGIN%%;
        root %%HTML%%;
        default_type text/html;
    }
EOF
$t->start;

my $vid = random_vid();
my @c = (Cookie => $t->cookie_for($vid));

sub expected {
    my ($page, $views) = @_;
    (my $e = $page) =~ s{<!--lc:slot hero-->[^<]*<!--/lc:slot-->}
                        {<!--lc:slot hero--><b>$views</b><!--/lc:slot-->};
    my $popup = '<div id="lc-popup"';
    $e =~ s{</BODY>}{__POPUP__</BODY>};
    return $e;
}

sub check {
    my ($path, $page, $name) = @_;
    my $r = $t->http_get($path, @c);
    is($r->status, 200, "$name: 200");
    my $body = $r->body;
    my $views = $t->redis->hgetall(key_profile($vid))->{views};
    $body =~ s{<div id="lc-popup".*?</script>}{__POPUP__}s;
    is($body, expected($page, $views), "$name: the personalized page");
    return $r;
}

sub hits   { $t->metric($t->status_metrics('/status'), 'lifecycle_page_cache_hits_total') // 0 }
sub misses { $t->metric($t->status_metrics('/status'), 'lifecycle_page_cache_misses_total') // 0 }

# --- a hit is the same page the filter made on the miss ---------------------

my ($h0, $m0) = (hits(), misses());
check('/p1.html', page('p1', 3000), 'first request');
is(misses() - $m0, 1, 'first request: a miss');
check('/p1.html', page('p1', 3000), 'second request');
is(hits() - $h0, 1, 'second request: a hit');
my $r = check('/p1.html', page('p1', 3000), 'third request');
ok(!defined $r->header('Content-Length') && !defined $r->header('ETag'),
   'from the cache: still no length, no validators');
like($r->header('Cache-Control') // '', qr/private/, 'from the cache: private');

# the streaming filter, without the cache: the same bytes
$h0 = hits();
check('/nosendfile/p1.html', page('p1', 3000), 'sendfile off (copy filter reads)');
check('/proxied/p1.html', page('p1', 3000), 'proxied (streamed)');
is(hits() - $h0, 0, 'sendfile off and proxied pages do not use the cache');

# --- a changed file is never served stale -------------------------------------

check('/change.html', page('v1'), 'change: v1');
check('/change.html', page('v1'), 'change: v1 from the cache');
my $v2 = page('v2');
is(length $v2, length page('v1'), 'v2 has the size of v1');
my $f = "$t->{prefix}/html/change.html";
open(my $fh, '+<', $f) or die "$f: $!";
print {$fh} $v2;
close $fh;
utime(time() + 5, time() + 5, $f);
check('/change.html', $v2, 'change: rewritten in place, same size');

my $v3 = page('v3 longer');
$t->html('change.new', $v3);
rename("$t->{prefix}/html/change.new", $f) or die "rename: $!";
check('/change.html', $v3, 'change: replaced by rename (new inode)');

# --- a small cache: evictions, every page still right -----------------------

for my $round (1 .. 2) {
    for my $i (1 .. 12) {
        check("/p$i.html", page("p$i", 3000), "round $round p$i");
    }
}
ok(misses() - $m0 >= 12 + 3, 'more pages than the cache holds: misses again');

# --- too big for the cache: read and streamed -------------------------------

$h0 = hits();
my $m1 = misses();
check('/big.html', page('big', 300_000), 'big page, first');
check('/big.html', page('big', 300_000), 'big page, second');
is(hits() - $h0, 0, 'big page: no hit');
is(misses() - $m1, 0, 'big page: not cached');

# --- a default over 16 KB is kept, cached or not ----------------------------

for my $path ('/long.html', '/long.html', '/nosendfile/long.html') {
    $r = $t->http_get($path, @c);
    like($r->body, qr{<!--lc:slot hero-->d{20000}<!--/lc:slot-->},
         "$path: a slot with a default over 16 KB keeps it");
}
$t->allow_error(qr/slot "hero" not filled/);

$t->stop;
done_testing;
