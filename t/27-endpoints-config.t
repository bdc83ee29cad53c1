#!/usr/bin/perl
# Configuration of lifecycle_script, lifecycle_collect and
# lifecycle_unsubscribe: the documented forms pass nginx -t and serve;
# each mistake is refused by nginx -t with "[emerg] ... in FILE:LINE" of
# the directive; two cap periods for one popup name are a warning.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;

my $base = "    lifecycle_redis %%REDIS%%;\n    lifecycle_secret %%SECRET%%;\n";
my $open = "    server {\n        listen 127.0.0.1:%%PORT%%;\n";
my $close = "    }\n";

# --- what is documented works -----------------------------------------------

$t->config($base . $open . <<'EOF' . $close);
        lifecycle on;
        lifecycle_view page ^/;
        location = /lifecycle.js { lifecycle_script; }
        location = /js2 { lifecycle_script max_age=7d; }
        location = /lifecycle/collect { lifecycle_collect; }
        location = /c2 { lifecycle_collect max_body=4k optin_limit=3/30m; }
        location = /c3 { lifecycle_collect optin_limit=1/1d; }
        location = /unsubscribe { lifecycle_unsubscribe; }
EOF
my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t accepts every documented form') or diag $out;
$t->start;
is($t->http_get('/js2')->header('Cache-Control'), 'public, max-age=604800',
   'lifecycle_script max_age=7d');
is($t->http_post('/c2', 'e=custom&name=' . ('n' x 60) . '&id=' . ('x' x 128)
                 . '&order=' . ('o' x 128) . '&qty=1',
                 'Content-Type' => 'application/x-www-form-urlencoded',
                 Cookie => $t->cookie_for(random_vid()))->status,
   204, 'max_body=4k: a beacon over 2k is taken');
$t->stop;

# no lifecycle on anywhere: the endpoints connect to Redis all the same
$t->config($base . $open . <<'EOF' . $close);
        location = /lifecycle/collect { lifecycle_collect; }
EOF
$t->start;
my $vid = random_vid();
my $ok = wait_until {
    $t->http_post('/lifecycle/collect', 'e=add_to_cart&id=p1',
                  'Content-Type' => 'application/x-www-form-urlencoded',
                  Cookie => $t->cookie_for($vid))->status == 204
        && $t->redis->hgetall(key_cart($vid))->{p1}
} timeout => 5;
ok($ok, 'lifecycle_collect without "lifecycle on" anywhere: stored');
$t->stop;

# --- errors ------------------------------------------------------------------

my @cases = (
    ['bad max_body',
     "$base$open        location /c { lifecycle_collect max_body=abc; }\n$close",
     qr/max_body=abc/, qr/invalid parameter "max_body=abc"/],
    ['max_body=0',
     "$base$open        location /c { lifecycle_collect max_body=0; }\n$close",
     qr/max_body=0/, qr/invalid parameter "max_body=0"/],
    ['max_body over 64k',
     "$base$open        location /c { lifecycle_collect max_body=65537; }\n$close",
     qr/max_body=65537/, qr/1 to 64k/],
    ['bad optin_limit',
     "$base$open        location /c { lifecycle_collect optin_limit=five; }\n$close",
     qr/optin_limit=five/, qr/optin_limit=N\/PERIOD/],
    ['optin_limit of 0',
     "$base$open        location /c { lifecycle_collect optin_limit=0/1h; }\n$close",
     qr/optin_limit=0/, qr/invalid parameter "optin_limit=0\/1h"/],
    ['optin_limit with a bad period',
     "$base$open        location /c { lifecycle_collect optin_limit=5/soon; }\n$close",
     qr/optin_limit=5/, qr/optin_limit=5\/soon/],
    ['unknown lifecycle_collect parameter',
     "$base$open        location /c { lifecycle_collect maxbody=1k; }\n$close",
     qr/maxbody/, qr/invalid parameter "maxbody=1k"/],
    ['lifecycle_collect twice',
     "$base$open        location /c {\n            lifecycle_collect;\n"
     . "            lifecycle_collect max_body=1k;\n        }\n$close",
     qr/lifecycle_collect max_body=1k/, qr/is duplicate/],
    ['lifecycle_collect in server context',
     "$base$open        lifecycle_collect;\n$close",
     qr/^\s+lifecycle_collect;/, qr/not allowed here/],
    ['lifecycle_collect without lifecycle_redis',
     "    lifecycle_secret %%SECRET%%;\n$open"
     . "        location /c { lifecycle_collect; }\n$close",
     qr/lifecycle_collect/, qr/"lifecycle_collect" needs "lifecycle_redis"/],
    ['lifecycle_collect without lifecycle_secret',
     "    lifecycle_redis %%REDIS%%;\n$open"
     . "        location /a { }\n        location /c { lifecycle_collect; }\n$close",
     qr/lifecycle_collect/, qr/"lifecycle_secret"/],
    ['lifecycle_unsubscribe without lifecycle_secret',
     "    lifecycle_redis %%REDIS%%;\n$open"
     . "        location /u { lifecycle_unsubscribe; }\n$close",
     qr/lifecycle_unsubscribe/, qr/"lifecycle_unsubscribe" needs/],
    ['lifecycle_unsubscribe with an argument',
     "$base$open        location /u { lifecycle_unsubscribe yes; }\n$close",
     qr/lifecycle_unsubscribe yes/, qr/invalid number of arguments/],
    ['lifecycle_unsubscribe in http context',
     "$base    lifecycle_unsubscribe;\n$open$close",
     qr/^\s+lifecycle_unsubscribe;/, qr/not allowed here/],
    ['bad lifecycle_script max_age',
     "$base$open        location /j { lifecycle_script max_age=long; }\n$close",
     qr/max_age=long/, qr/invalid parameter "max_age=long"/],
    ['unknown lifecycle_script parameter',
     "$base$open        location /j { lifecycle_script gzip=off; }\n$close",
     qr/gzip=off/, qr/invalid parameter "gzip=off"/],
    ['lifecycle_script twice',
     "$base$open        location /j {\n            lifecycle_script;\n"
     . "            lifecycle_script max_age=1h;\n        }\n$close",
     qr/lifecycle_script max_age=1h/, qr/is duplicate/],
);

for my $c (@cases) {
    my ($name, $http, $line_re, $msg_re) = @$c;
    my $file = $t->config($http);
    ($rc, $out) = $t->nginx_t;
    isnt($rc, 0, "$name: nginx -t fails");
    my ($emerg) = grep { /\[emerg\]/ } split /\n/, $out;
    $emerg //= '';
    my $line = $t->conf_line($line_re);
    like($emerg, qr/ in \Q$file\E:$line$/, "$name: reported at nginx.conf:$line")
        or diag "output: $out";
    like($emerg, $msg_re, "$name: message says what is wrong") or diag "output: $out";
}

# --- one popup name, two cap periods: a warning, the shorter counts ---------

my $file = $t->config($base . $open . <<'EOF' . $close);
        lifecycle on;
        location /a/ { lifecycle_popup join * 'data:<p>a</p>' cap=1/1d; }
        location /b/ { lifecycle_popup join * 'data:<p>b</p>' cap=3/7d; }
        location /c/ { lifecycle_popup join * 'data:<p>c</p>'; }
        location = /lifecycle/collect { lifecycle_collect; }
EOF
($rc, $out) = $t->nginx_t;
is($rc, 0, 'two cap periods for one popup: nginx -t passes');
my $l1 = $t->conf_line(qr/cap=1\/1d/);
my $l2 = $t->conf_line(qr/cap=3\/7d/);
like($out, qr/\[warn\] .*lifecycle_popup "join" has a cap period of \d+s in \Q$file\E:\d+ and \d+s in \Q$file\E:\d+: its shows are counted in the shorter/,
     'a warning names both');
like($out, qr/:$l1\b/, '... the first place') and like($out, qr/:$l2\b/, '... and the other');

$t->start;
my $v = random_vid();
my @c = (Cookie => $t->cookie_for($v),
         'Content-Type' => 'application/x-www-form-urlencoded');
$t->http_post('/lifecycle/collect', 'e=popup_shown&popup=join', @c);
$t->redis->cmd('HSET', key_profile($v), 'pop:join',
               join(' ', 1, int(time() * 1000) - 2 * 86400 * 1000, 0, 0));
$t->http_post('/lifecycle/collect', 'e=popup_shown&popup=join', @c);
like($t->redis->hgetall(key_profile($v))->{'pop:join'}, qr/^1 /,
   'the shorter period (1d) restarts the window after 2 days');
$t->stop;

done_testing;
