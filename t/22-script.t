#!/usr/bin/perl
# lifecycle_script: lifecycle.js from memory, byte for byte the file the
# module was built with (js/dist/lifecycle.min.js); content type, strong
# ETag (SHA-1 of the file), 304 on If-None-Match, HEAD, cache headers, a
# gzip copy for clients that take it; never tracked, no Redis command.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(sha1_hex);
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use Lifecycle::Test qw(:all);

my $file = "$FindBin::Bin/../js/dist/lifecycle.min.js";
open(my $fh, '<:raw', $file) or BAIL_OUT("$file: $!");
my $js = do { local $/; <$fh> };
close $fh;
ok(length $js > 0, 'js/dist/lifecycle.min.js is there');

my $t = Lifecycle::Test->new;
my $redis = $t->redis;
$t->html('index.html', "home\n");

$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_view page ^/;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;

        location = /lifecycle.js { lifecycle_script; }
        location = /short.js { lifecycle_script max_age=1h; }
        location = /gz.js { gzip on; gzip_types application/javascript;
                            gzip_min_length 1; lifecycle_script; }
    }
EOF
$t->start;

my $etag = '"' . substr(sha1_hex($js), 0, 20) . '"';
(my $etag_gz = $etag) =~ s/"$/-gz"/;

# --- GET ------------------------------------------------------------------

$redis->monitor_start;

my $r = $t->http_get('/lifecycle.js');
is($r->status, 200, 'GET: 200');
ok($r->body eq $js, 'body is the file, byte for byte')
    or diag 'got ' . length($r->body) . ' bytes, want ' . length($js);
is($r->header('Content-Type'), 'application/javascript; charset=utf-8',
   'Content-Type');
is($r->header('Content-Length'), length $js, 'Content-Length');
is($r->header('ETag'), $etag, 'strong ETag: SHA-1 of the file, 20 hex digits');
is($r->header('Cache-Control'), 'public, max-age=86400',
   'Cache-Control: public, a day by default');
is($r->header('X-Content-Type-Options'), 'nosniff', 'nosniff');
is($r->header('Content-Encoding'), undef, 'no gzip asked for: identity');
is($r->header('Vary'), 'Accept-Encoding', 'Vary: Accept-Encoding');
is(scalar $r->set_cookies, 0, 'no cookie, although "lifecycle on"');

my $again = $t->http_get('/lifecycle.js', Cookie => $t->cookie_for(random_vid()));
is($again->header('ETag'), $etag, 'the same ETag every time');

# --- conditional requests -------------------------------------------------

$r = $t->http_get('/lifecycle.js', 'If-None-Match' => $etag);
is($r->status, 304, 'If-None-Match: the ETag: 304');
is($r->body, '', '304: no body');
is($r->header('ETag'), $etag, '304: ETag');
is($r->header('Cache-Control'), 'public, max-age=86400', '304: Cache-Control');

$r = $t->http_get('/lifecycle.js', 'If-None-Match' => "\"other\", $etag");
is($r->status, 304, 'If-None-Match: a list holding it: 304');

$r = $t->http_get('/lifecycle.js', 'If-None-Match' => "W/$etag");
is($r->status, 304, 'If-None-Match: W/ form (weak comparison): 304');

$r = $t->http_get('/lifecycle.js', 'If-None-Match' => '*');
is($r->status, 304, 'If-None-Match: *: 304');

$r = $t->http_get('/lifecycle.js', 'If-None-Match' => '"0123456789abcdef0123"');
is($r->status, 200, 'If-None-Match: another ETag: 200');
ok($r->body eq $js, '... with the file');

$r = $t->http_get('/lifecycle.js', 'If-Modified-Since' => 'Sat, 01 Jan 2050 00:00:00 GMT');
is($r->status, 200, 'If-Modified-Since alone (no Last-Modified): 200');

# --- HEAD -----------------------------------------------------------------

$r = $t->http_head('/lifecycle.js');
is($r->status, 200, 'HEAD: 200');
is($r->body, '', 'HEAD: no body');
is($r->header('Content-Length'), length $js, 'HEAD: Content-Length of the file');
is($r->header('ETag'), $etag, 'HEAD: ETag');
is($r->header('Content-Type'), 'application/javascript; charset=utf-8',
   'HEAD: Content-Type');

# --- gzip -----------------------------------------------------------------

$r = $t->http_get('/lifecycle.js', 'Accept-Encoding' => 'gzip, deflate, br');
is($r->status, 200, 'Accept-Encoding: gzip: 200');
SKIP: {
    skip 'file too small for a gzip copy', 6 if length $js < 256;
    is($r->header('Content-Encoding'), 'gzip', 'Content-Encoding: gzip');
    is($r->header('ETag'), $etag_gz, 'ETag of the gzip copy: "...-gz"');
    ok(length($r->body) < length($js), 'smaller: '
       . length($r->body) . ' < ' . length($js) . ' bytes');
    is($r->header('Content-Length'), length $r->body, 'Content-Length of the copy');
    my $plain;
    gunzip(\$r->body => \$plain) or diag "gunzip: $GunzipError";
    ok(defined $plain && $plain eq $js, 'gunzipped: the file, byte for byte');

    my $c = $t->http_get('/lifecycle.js', 'Accept-Encoding' => 'gzip',
                         'If-None-Match' => $etag_gz);
    is($c->status, 304, 'If-None-Match of the gzip copy, gzip accepted: 304');
}

$r = $t->http_get('/lifecycle.js', 'Accept-Encoding' => 'gzip;q=0, br');
is($r->header('Content-Encoding'), undef, 'gzip;q=0: identity');
ok($r->body eq $js, '... the file');

$r = $t->http_get('/lifecycle.js', 'If-None-Match' => $etag_gz);
is($r->status, 200, 'the gzip ETag from a client without gzip: 200, identity');

$r = $t->http_get('/gz.js', 'Accept-Encoding' => 'gzip');
my $plain;
gunzip(\$r->body => \$plain);
ok(defined $plain && $plain eq $js,
   'with nginx gzip on as well: compressed once, gunzips to the file');

# --- other methods, other settings ----------------------------------------

$r = $t->http_post('/lifecycle.js', 'x=1',
                   'Content-Type' => 'application/x-www-form-urlencoded');
is($r->status, 405, 'POST: 405');
is($r->header('Allow'), 'GET, HEAD', '405: Allow: GET, HEAD');

$r = $t->http_get('/short.js');
is($r->header('Cache-Control'), 'public, max-age=3600', 'max_age=1h');
ok($r->body eq $js, 'max_age=1h: the same file');

my $cmds = $redis->monitor_collect;
is(scalar(grep { $_->{cmd} ne 'PING' } @$cmds), 0,
   'serving the script sends nothing to Redis')
    or diag join ', ', map { $_->{cmd} } @$cmds;

is($redis->dbsize, 0, 'and nothing was recorded');

$t->stop;
done_testing;
