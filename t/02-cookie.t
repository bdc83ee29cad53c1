#!/usr/bin/perl
# The visitor cookie: format, attributes, HMAC, recognition, replacement
# of bad cookies, custom name/max_age/domain, key from the secret file.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;
$t->html('index.html', "<html><body>home</body></html>\n");

my $conf = <<'EOF';
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    # generous budget: exact checks must not depend on the machine's load
    lifecycle_timeout 2s;
    lifecycle_view page ^/;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        add_header X-Visitor $lifecycle_visitor always;
        add_header X-Session $lifecycle_session always;
        location = /status { lifecycle off; lifecycle_status; }
    }

    server {
        listen 127.0.0.1:%%PORT2%%;
        root %%HTML%%;
        lifecycle on;
        lifecycle_cookie myvid max_age=1h domain=example.com;
        add_header X-Visitor $lifecycle_visitor always;
    }
EOF
$t->config($conf);
$t->start;
my $key = $t->secret;
my $p2 = $t->port('PORT2');

# --- a first visit --------------------------------------------------------

my $r = $t->http_get('/');
is($r->status, 200, 'first request 200');
is($r->body, "<html><body>home</body></html>\n", 'body untouched');
my @lc = grep { /^lc_vid=/ } $r->set_cookies;
is(scalar @lc, 1, 'exactly one lc_vid Set-Cookie');
my $cookie = $r->cookie('lc_vid') // '';
like($cookie, qr/^[0-9a-f]{32}\.[A-Za-z0-9_-]{22}$/, 'cookie value is VID.SIG');
is($r->set_cookie_line('lc_vid'),
   "lc_vid=$cookie; Max-Age=31536000; Path=/; HttpOnly; SameSite=Lax",
   'Set-Cookie attributes exactly (no Secure on http, no Domain)');
ok(cookie_valid($cookie, $key), 'signature is HMAC-SHA256(secret, vid)[0..16] base64url');
my ($vid) = split_cookie($cookie);
is($r->header('X-Visitor'), $vid, '$lifecycle_visitor is the vid');
is($r->header('X-Session'), "$vid-1", '$lifecycle_session is VID-1');

# --- the cookie comes back ------------------------------------------------

$r = $t->http_get('/', Cookie => "lc_vid=$cookie");
is($r->status, 200, 'returning visitor 200');
ok(!(grep { /^lc_vid=/ } $r->set_cookies), 'no Set-Cookie when the cookie is valid');
is($r->header('X-Visitor'), $vid, 'same $lifecycle_visitor');
is($r->header('X-Session'), "$vid-1", 'same session');

$r = $t->http_get('/', Cookie => "a=1; lc_vid=$cookie; b=2");
ok(!defined $r->cookie('lc_vid'), 'recognised among other cookies');
is($r->header('X-Visitor'), $vid, 'same visitor among other cookies');

$r = $t->http_get('/', Cookie => 'a=1', Cookie => "lc_vid=$cookie");
ok(!defined $r->cookie('lc_vid'), 'recognised in a second Cookie header');
is($r->header('X-Visitor'), $vid, 'same visitor (second Cookie header)');

# a cookie forged here with the right key is accepted: the HMAC is right
my $forged_vid = random_vid();
$r = $t->http_get('/', Cookie => 'lc_vid=' . sign_vid($forged_vid, $key));
ok(!defined $r->cookie('lc_vid'), 'Perl-signed cookie accepted (no Set-Cookie)');
is($r->header('X-Visitor'), $forged_vid, 'Perl-signed cookie: its vid is used');

# --- bad cookies are replaced and counted ---------------------------------

my $status0 = $t->status_metrics;
my $invalid0 = $t->metric($status0, 'lifecycle_cookies_invalid_total') // 0;

my ($v, $s) = split_cookie($cookie);
(my $bad_sig = $s) =~ s/^(.)/$1 eq 'A' ? 'B' : 'A'/e;
(my $bad_vid = $v) =~ s/^(.)/$1 eq 'a' ? 'b' : 'a'/e;
my $short_vid = substr(random_vid(), 0, 30);
my @bad = (
    ['tampered signature', "$v.$bad_sig"],
    ['tampered vid',       "$bad_vid.$s"],
    ['garbage',            'hello'],
    ['wrong length vid',   sign_vid($short_vid, $key)],
    ['signed with another key', sign_vid(random_vid(), 'k' x 40)],
    ['signature too long', "$v.${s}AA"],
    ['uppercase vid',      sign_vid(uc random_vid(), $key)],
);
my %seen = ($vid => 1);
for my $b (@bad) {
    my ($name, $value) = @$b;
    $r = $t->http_get('/', Cookie => "lc_vid=$value");
    is($r->status, 200, "$name: 200");
    my $new = $r->cookie('lc_vid');
    ok(defined $new && cookie_valid($new, $key), "$name: replaced by a new valid cookie");
    my ($nv) = split_cookie($new // '');
    ok($nv && !$seen{$nv}++, "$name: a new id");
    is($r->header('X-Visitor'), $nv, "$name: \$lifecycle_visitor is the new id");
}

my $status1 = $t->status_metrics;
is(($t->metric($status1, 'lifecycle_cookies_invalid_total') // -1) - $invalid0,
   scalar @bad, 'lifecycle_cookies_invalid_total counts each bad cookie');

# a cookie without value: replaced too
$r = $t->http_get('/', Cookie => 'lc_vid=');
ok(cookie_valid($r->cookie('lc_vid'), $key), 'empty cookie value: new cookie');

# --- ids are random -------------------------------------------------------

my %ids;
for (1 .. 20) {
    my $c = $t->http_get('/')->cookie('lc_vid');
    my ($i) = split_cookie($c // '');
    $ids{$i // 'none'}++;
}
is(scalar(keys %ids), 20, '20 requests without cookie: 20 different ids');
ok(!$ids{none}, 'each got a cookie');

# --- custom name, max_age, domain -----------------------------------------

$r = $t->http_get('/', -port => $p2);
is($r->status, 200, 'custom cookie server: 200');
ok(!defined $r->cookie('lc_vid'), 'no lc_vid from the custom server');
my $mine = $r->cookie('myvid');
ok(cookie_valid($mine, $key), 'myvid=VID.SIG with a valid signature');
is_deeply($r->cookie_attrs('myvid'),
          { 'max-age' => 3600, path => '/', httponly => 1, samesite => 'Lax',
            domain => 'example.com' },
          'custom cookie attributes: Max-Age=3600, Domain=example.com, no Secure');
my ($mv) = split_cookie($mine);
$r = $t->http_get('/', -port => $p2, Cookie => "myvid=$mine");
ok(!defined $r->cookie('myvid'), 'custom cookie recognised');
is($r->header('X-Visitor'), $mv, 'custom cookie: same visitor');
$r = $t->http_get('/', -port => $p2, Cookie => "lc_vid=$cookie");
ok(defined $r->cookie('myvid'), 'lc_vid is not read where the name is myvid');
isnt($r->header('X-Visitor'), $vid, 'lc_vid ignored there');

$t->stop;

# --- https: Secure ----------------------------------------------------------

SKIP: {
    my $openssl = -x '/usr/bin/openssl' ? '/usr/bin/openssl' : undef;
    my $curl = -x '/usr/bin/curl' ? '/usr/bin/curl' : undef;
    skip 'https check needs openssl and curl', 3 unless $openssl && $curl;
    my $p = $t->prefix;
    my ($rc, $out) = Lifecycle::Test::run_cmd(
        [$openssl, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
         '-subj', '/CN=localhost', '-keyout', "$p/tls.key", '-out', "$p/tls.crt"]);
    skip "openssl req failed: $out", 3 if $rc;
    $t->config($conf . <<'EOF2');
    server {
        listen 127.0.0.1:%%PORT_TLS%% ssl;
        ssl_certificate %%PREFIX%%/tls.crt;
        ssl_certificate_key %%PREFIX%%/tls.key;
        root %%HTML%%;
        lifecycle on;
    }
EOF2
    $t->start;
    my $tls = $t->port('PORT_TLS');
    ($rc, $out) = Lifecycle::Test::run_cmd(
        [$curl, '-sk', '-o', '/dev/null', '-D', '-', "https://127.0.0.1:$tls/"]);
    my ($line) = $out =~ /^Set-Cookie: (lc_vid=[^\r\n]*)/mi;
    like($line // '', qr/^lc_vid=[0-9a-f]{32}\.[A-Za-z0-9_-]{22}; /, 'https: cookie set');
    like($line // '', qr/; Secure(;|$)/, 'https: Secure attribute');
    my ($plain) = $t->http_get('/')->set_cookie_line('lc_vid');
    unlike($plain // '', qr/Secure/, 'http next to it: still no Secure');
    $t->stop;
}

# --- the key is the file content less a trailing newline ------------------

my $k2 = 'n' x 20 . 'K' x 20;
$t->set_secret("$k2\n");
$t->config($conf);
$t->start;
$r = $t->http_get('/');
my $c2 = $r->cookie('lc_vid');
ok(cookie_valid($c2, $k2), 'trailing newline of the secret file is not part of the key');
ok(!cookie_valid($c2, "$k2\n"), '(the newline really is stripped)');
$r = $t->http_get('/', Cookie => "lc_vid=$cookie");
ok(defined $r->cookie('lc_vid'), 'cookie signed with the old key is replaced after a key change');
$t->stop;

# a key longer than SHA-256's block is hashed first, as HMAC says
my $k3 = join '', map { chr(65 + $_ % 26) } 1 .. 100;
$t->set_secret($k3);
$t->config($conf);
$t->start;
$r = $t->http_get('/');
my $c3 = $r->cookie('lc_vid');
ok(cookie_valid($c3, $k3), '100-byte key: the cookie is HMAC-SHA256 with that key');
$r = $t->http_get('/', Cookie => "lc_vid=$c3");
is($r->cookie('lc_vid'), undef, '100-byte key: the module accepts its own cookie');
$t->stop;

done_testing;
