#!/usr/bin/perl
# Configuration: a full valid config passes nginx -t and serves; each kind
# of mistake is refused by nginx -t with "[emerg] ... in FILE:LINE".

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;
$t->html('index.html', "<html><body>home</body></html>\n");

my $full = <<'EOF';
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_timeout 50ms;
    lifecycle_session_timeout 30m;
    lifecycle_cookie lc_vid max_age=365d domain=example.com;
    lifecycle_retention 90d;
    lifecycle_respect_dnt on;
    lifecycle_respect_gpc off;
    lifecycle_bots (?i)bot (?i)crawler ^Acme-Fetcher;
    lifecycle_view page ^/;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        lifecycle_session_timeout 10m;
        lifecycle_cookie v max_age=1h;
        lifecycle_respect_dnt off;
        lifecycle_consent $cookie_consent;
        lifecycle_view product ^/product/(?<id>[^/]+)$ category=$arg_cat;
        lifecycle_view product "^/p/(?<id>\d{3})$";
        lifecycle_view category ^/category/(?<id>[^/]+)$;
        lifecycle_view search ^/search$ id=$arg_q;
        lifecycle_view cart_add ^/cart/add$ id=$arg_sku method=POST;
        lifecycle_view cart_remove ^/cart/remove/(\w+)$ id=$1 method=GET|POST;
        lifecycle_view cart ^/cart$;
        lifecycle_view checkout ^/checkout$;
        lifecycle_view purchase ^/thanks/(\w+)$ id=$1;
        lifecycle_view page ^/;

        location /x/ {
            lifecycle_timeout 10ms;
            lifecycle_consent 1;
            lifecycle_view page ^/x/;
        }
        location /off/ { lifecycle off; }
        location = /status { lifecycle off; lifecycle_status; }
    }
EOF

$t->config($full);
my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t accepts the full configuration') or diag $out;
like($out, qr/test is successful/, 'nginx -t says successful');

$t->start;
my $r = $t->http_get('/', Cookie => 'consent=1');
is($r->status, 200, 'full configuration serves');
is($r->body, "<html><body>home</body></html>\n", 'page body');
ok(defined $r->cookie('v'), 'server-level cookie name used');
$r = $t->http_get('/status');
is($r->status, 200, 'status location answers');
$t->stop;

# --- errors -------------------------------------------------------------

my $short = $t->write_file('short.key', 'x' x 31);
my $exact = $t->write_file('exact.key', 'x' x 32);
my $conf_re;

# Each case: [ name, http{} contents, regex of the bad line (undef: any
# line), regex the message must match ]
my $base = "    lifecycle_redis %%REDIS%%;\n    lifecycle_secret %%SECRET%%;\n";
my $srv  = "    server { listen 127.0.0.1:%%PORT%%; root %%HTML%%; lifecycle on; }\n";

my @cases = (
    ['unknown view type',
     "$base    lifecycle_view bogus ^/x;\n$srv",
     qr/lifecycle_view bogus/, qr/bogus/],
    ['bad regex',
     "$base    lifecycle_view page ^/(unclosed;\n$srv",
     qr/unclosed/, qr/(?i)pcre|regex|compil|parenthes|missing/],
    ['unknown parameter of lifecycle_view',
     "$base    lifecycle_view page ^/ foo=bar;\n$srv",
     qr/foo=bar/, qr/foo/],
    ['unknown method',
     "$base    lifecycle_view cart_add ^/c method=FETCH;\n$srv",
     qr/method=FETCH/, qr/(?i)method|FETCH/],
    # nginx itself finds unknown variables after parsing (no file:line)
    ['unknown variable in id=',
     "$base    lifecycle_view product ^/p/(?<id>.+)\$ id=\$no_such_var_here;\n$srv",
     'none', qr/unknown "no_such_var_here" variable/],
    ['missing lifecycle_secret while lifecycle on',
     "    lifecycle_redis %%REDIS%%;\n$srv",
     undef, qr/lifecycle_secret/],
    ['missing lifecycle_secret, lifecycle on in a location only',
     "    lifecycle_redis %%REDIS%%;\n    server { listen 127.0.0.1:%%PORT%%;\n"
     . "        location /a/ { lifecycle on; }\n    }\n",
     undef, qr/lifecycle_secret/],
    ['short secret file (31 bytes)',
     "    lifecycle_redis %%REDIS%%;\n    lifecycle_secret $short;\n$srv",
     qr/lifecycle_secret/, qr/(?i)32|short/],
    ['missing secret file',
     "    lifecycle_redis %%REDIS%%;\n    lifecycle_secret %%PREFIX%%/nope.key;\n$srv",
     qr/lifecycle_secret/, qr/nope\.key/],
    ['bad lifecycle_redis port',
     "    lifecycle_redis 127.0.0.1:99999;\n    lifecycle_secret %%SECRET%%;\n$srv",
     qr/lifecycle_redis/, qr/99999|(?i)port|invalid/],
    ['bad lifecycle_redis address',
     "    lifecycle_redis 127.0.0.1:abc;\n    lifecycle_secret %%SECRET%%;\n$srv",
     qr/lifecycle_redis/, qr/127\.0\.0\.1:abc|(?i)invalid|address|port/],
    ['bad lifecycle_redis db',
     "    lifecycle_redis %%REDIS%% db=x;\n    lifecycle_secret %%SECRET%%;\n$srv",
     qr/lifecycle_redis/, qr/db/],
    ['unknown lifecycle_redis parameter',
     "    lifecycle_redis %%REDIS%% pasword=x;\n    lifecycle_secret %%SECRET%%;\n$srv",
     qr/lifecycle_redis/, qr/pasword/],
    ['lifecycle_redis in server context',
     "    lifecycle_secret %%SECRET%%;\n    server { listen 127.0.0.1:%%PORT%%;\n"
     . "        lifecycle_redis %%REDIS%%;\n        lifecycle on;\n    }\n",
     qr/lifecycle_redis/, qr/not allowed here/],
    ['bad cookie max_age',
     "$base    lifecycle_cookie lc_vid max_age=forever;\n$srv",
     qr/lifecycle_cookie/, qr/(?i)max_age|forever|invalid/],
    ['unknown lifecycle_cookie parameter',
     "$base    lifecycle_cookie lc_vid secure=yes;\n$srv",
     qr/lifecycle_cookie/, qr/secure/],
    ['bad lifecycle_timeout',
     "$base    lifecycle_timeout soon;\n$srv",
     qr/lifecycle_timeout/, qr/(?i)invalid|soon/],
    ['bad lifecycle on|off',
     "$base    lifecycle maybe;\n$srv",
     qr/lifecycle maybe/, qr/maybe|(?i)invalid/],
    ['lifecycle_status in server context',
     "$base    server { listen 127.0.0.1:%%PORT%%;\n        lifecycle_status;\n    }\n",
     qr/lifecycle_status/, qr/not allowed here/],
    ['bad bot regex',
     "$base    lifecycle_bots (broken;\n$srv",
     qr/lifecycle_bots/, qr/(?i)pcre|regex|compil|parenthes|missing/],
);

for my $c (@cases) {
    my ($name, $http, $line_re, $msg_re) = @$c;
    my $file = $t->config($http);
    my ($rc, $out) = $t->nginx_t;
    isnt($rc, 0, "$name: nginx -t fails");
    my ($emerg) = grep { /\[emerg\]/ } split /\n/, $out;
    $emerg //= '';
    if (defined $line_re && $line_re eq 'none') {
        pass("$name: (nginx reports this one without file:line)");
    } elsif (defined $line_re) {
        my $line = $t->conf_line($line_re);
        like($emerg, qr/ in \Q$file\E:$line$/, "$name: reported at nginx.conf:$line")
            or diag "output: $out";
    } else {
        like($emerg, qr/ in \Q$file\E:\d+$/, "$name: reported with file:line")
            or diag "output: $out";
    }
    like($emerg, $msg_re, "$name: message says what is wrong") or diag "output: $out";
    unlike($out, qr/AddressSanitizer|Segmentation|core dumped/, "$name: no crash");
}

# boundary: exactly 32 bytes is accepted
$t->config("    lifecycle_redis %%REDIS%%;\n    lifecycle_secret $exact;\n$srv");
($rc, $out) = $t->nginx_t;
is($rc, 0, 'a 32-byte secret is accepted') or diag $out;

# lifecycle off everywhere: no secret needed
$t->config("    server { listen 127.0.0.1:%%PORT%%; root %%HTML%%; }\n");
($rc, $out) = $t->nginx_t;
is($rc, 0, 'module loaded, lifecycle never on: no secret needed') or diag $out;

done_testing;
