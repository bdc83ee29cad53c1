#!/usr/bin/perl
# Popups: placed before the first </body> for eligible visitors only, in
# the documented markup; min_views, segment, opt-in, conversion,
# dismissal and cap=N/PERIOD decided from what Redis holds for the
# visitor id, so a visitor who cleared every other cookie and all browser
# storage is still capped; the first eligible popup only; delay and the
# script URL.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time);
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;

$t->html('index.html', "<html><body><p>page</p></BODY></html>\n");
$t->html('x/index.html', "<html><body><p>x</p></body></html>\n");
$t->html('frag.html', "<div>fragment</div>\n");
$t->write_file('join.html', '<form>join {{visitor.views}} {{segment}}</form>');
$t->write_file('other.html', '<form>other</form>');

$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_timeout 2s;
    lifecycle_segment members $cookie_member=1;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        default_type text/html;
        lifecycle on;
        lifecycle_view page ^/;

        lifecycle_popup join members %%PREFIX%%/join.html cap=2/1d delay=3s min_views=2;
        lifecycle_popup other * %%PREFIX%%/other.html;

        location /x/ {
            lifecycle_popup join * %%PREFIX%%/join.html;
            lifecycle_script_url /static/lc.js;
        }

        location = /status { lifecycle off; lifecycle_status; }
    }
EOF
$t->start;

my $script = '<script src="/lifecycle.js" defer></script>';

sub join_markup {
    my ($views, $seg) = @_;
    return '<div id="lc-popup" class="lc-popup" data-lc-popup="join" '
         . 'data-lc-delay="3000" role="dialog" aria-modal="true" hidden>'
         . "<form>join $views $seg</form></div>$script";
}

my $other = '<div id="lc-popup" class="lc-popup" data-lc-popup="other" '
          . 'data-lc-delay="0" role="dialog" aria-modal="true" hidden>'
          . "<form>other</form></div>$script";

my $vid = random_vid();
my $key = key_profile($vid);
my @member = (Cookie => $t->cookie_for($vid) . '; member=1');

my $r = $t->http_get('/', @member);
is($r->body, "<html><body><p>page</p>$other</BODY></html>\n",
   'first view: min_views=2 not reached, the next eligible popup goes in');

$r = $t->http_get('/', @member);
is($r->body, "<html><body><p>page</p>" . join_markup(2, 'members') . "</BODY></html>\n",
   'second view: the first popup, exactly the documented markup, before </BODY>');
is(() = $r->body =~ /<script /g, 1, 'one script tag');

my @plain = (Cookie => $t->cookie_for(random_vid()));
$t->http_get('/', @plain);
$r = $t->http_get('/', @plain);
like($r->body, qr/data-lc-popup="other"/, 'not in the segment: the catch-all popup');
unlike($r->body, qr/data-lc-popup="join"/, 'not in the segment: not the members popup');

$r = $t->http_get('/frag.html', @member);
is($r->body, "<div>fragment</div>\n", 'no </body>: no popup');

$r = $t->http_get('/x/', @member);
like($r->body, qr{<script src="/static/lc.js" defer></script></body>},
     'lifecycle_script_url sets the src');

# --- what Redis holds decides ---------------------------------------------

my $now = int(time() * 1000);

sub popup_of {
    my $r = $t->http_get('/', @_);
    return $r->body =~ /data-lc-popup="([^"]+)"/ ? $1 : '';
}

# a popup's state is one field: "SHOWN WINDOW DISMISSED CONVERTED"
sub pop_state {
    my ($name, %v) = @_;
    $t->redis_cmd('HSET', $key, "pop:$name",
                  join(' ', map { $v{$_} // 0 } qw(n t d c)));
}

pop_state('join', n => 2, t => $now - 1000);
is(popup_of(@member), 'other', 'cap 2/1d reached in this window: not shown');

pop_state('join', n => 1, t => $now - 1000);
is(popup_of(@member), 'join', 'one show in the window: shown again');

pop_state('join', n => 5, t => $now - 86_400_000 - 1000);
is(popup_of(@member), 'join', 'a window older than the period no longer counts');

# the same visitor id with nothing else: no other cookie, no storage
my @bare = (Cookie => $t->cookie_for($vid) . '; member=1');
pop_state('join', n => 5, t => $now);
is(popup_of(@bare), 'other', 'cookie jar cleared, visitor id kept: still capped');

pop_state('join', d => $now - 3_600_000);
is(popup_of(@member), 'other', 'dismissed an hour ago, period 1d: not shown');

pop_state('join', d => $now - 2 * 86_400_000);
is(popup_of(@member), 'join', 'dismissed two days ago: shown');

pop_state('other', d => $now - 10 * 86_400_000);
pop_state('join', c => $now - 5 * 86_400_000);
is(popup_of(@member), '', 'converted on join: never again; other dismissed '
                          . '10 days ago, no cap: 30 days away');

$t->redis_cmd('HSET', $key, 'pop:join', 'garbage');
$t->redis_cmd('HDEL', $key, 'pop:other');
is(popup_of(@member), 'join', 'state unreadable or cleared: shown');

$t->redis_cmd('HSET', $key, 'optin', 'yes');
is(popup_of(@member), '', 'opted in: no popup at all');

$t->redis_cmd('HSET', $key, 'optin', '0');
is(popup_of(@member), 'join', 'optin "0" is not an opt-in');

my $m = $t->status_metrics('/status');
ok(($t->metric($m, 'lifecycle_popups_injected_total') // 0) >= 8,
   'popups counted: ' . ($t->metric($m, 'lifecycle_popups_injected_total') // 0));

$t->stop;
done_testing;
