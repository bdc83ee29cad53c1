#!/usr/bin/perl
# The rewrite streams: a page from an upstream cut at every byte offset
# (two buffers), one byte per buffer, gzip'd whole and gzip'd one byte
# at a time; each must come out exactly as the personalized page. And a
# browser holding the default page's ETag gets the personalized page,
# not a 304, while an unpersonalized visitor still gets the 304.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use IO::Compress::Gzip qw(gzip);
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;

my $page = '<html><body>A<!--lc:slot hero-->DEF<!--/lc:slot-->B'
         . '<!--lc:slot x-->X<!--/lc:slot--><!-- c --></b>'
         . '<!--lc:slot other-->O<!--/lc:slot--></body></html>';

# origin: /cut=K sends the page in two writes cut at K; /one... a byte
# per write; /gz... the same with the page gzip'd
my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                              Listen => 64, ReuseAddr => 1) or die;
my $origin = $l->sockport;

$t->spawn(sub {
    while (my $c = $l->accept) {
        my $req = '';
        while ($req !~ /\r\n\r\n/) { sysread($c, $req, 4096, length $req) or last }
        my ($path) = $req =~ m{^GET (\S+)};
        my ($cut) = $path =~ /cut=(\d+)/;
        my $body = $page;
        my $enc = '';
        if ($path =~ /gz/) {
            gzip(\$page => \$body);
            $enc = "Content-Encoding: gzip\r\n";
        }
        setsockopt($c, IPPROTO_TCP, TCP_NODELAY, 1);
        syswrite($c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n$enc"
                     . 'Content-Length: ' . length($body)
                     . "\r\nConnection: close\r\n\r\n");
        my @pieces = $path =~ /one/ ? split(//, $body)
                   : (substr($body, 0, $cut), substr($body, $cut));
        for my $p (@pieces) {
            syswrite($c, $p);
            select(undef, undef, undef, 0.002);
        }
        close $c;
    }
});

$t->html('index.html', "<html><body><!--lc:slot hero-->DEFAULT<!--/lc:slot--></body></html>\n");
$t->write_file('hero.html', '<b>{{segment}}</b>');
$t->write_file('views.html', '<b>{{visitor.views}}</b>');
$t->set_var(ORIGIN => $origin);
$t->config(<<'EOF2');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_timeout 2s;
    lifecycle_segment viewer views>=2;

    server {
        listen 127.0.0.1:%%PORT%%;
        lifecycle on;
        lifecycle_block hero * %%PREFIX%%/hero.html;
        lifecycle_block other * %%PREFIX%%/hero.html;
        lifecycle_popup p * %%PREFIX%%/hero.html;

        location / {
            proxy_pass http://127.0.0.1:%%ORIGIN%%;
            proxy_buffering off;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_STATIC%%;
        root %%HTML%%;
        default_type text/html;
        lifecycle on;
        lifecycle_view page ^/;
        lifecycle_block hero viewer %%PREFIX%%/views.html;
    }
EOF2
$t->start;

my @c = (Cookie => $t->cookie_for(random_vid()));
my $expect = '<html><body>A<!--lc:slot hero--><b>*</b><!--/lc:slot-->B'
           . '<!--lc:slot x-->X<!--/lc:slot--><!-- c --></b>'
           . '<!--lc:slot other--><b>*</b><!--/lc:slot-->'
           . '<div id="lc-popup" class="lc-popup" data-lc-popup="p" '
           . 'data-lc-delay="0" role="dialog" aria-modal="true" hidden>'
           . '<b>*</b></div><script src="/lifecycle.js" defer></script>'
           . '</body></html>';

my @bad;
for my $k (1 .. length($page) - 1) {
    my $r = $t->http_get("/cut=$k", @c);
    push @bad, $k if $r->status != 200 || $r->body ne $expect;
}
is("@bad", '', 'page cut at every offset: each comes out personalized, exactly');

my $r = $t->http_get('/one', @c);
is($r->body, $expect, 'one byte per buffer');

$r = $t->http_get('/gz/cut=20', @c);
is($r->body, $expect, 'gzip upstream: inflated and personalized');
is($r->header('Content-Encoding'), undef, 'gzip upstream: sent as identity');

$r = $t->http_get('/gz/one', @c);
is($r->body, $expect, 'gzip upstream, one byte per buffer');

# conditional requests to a static file

my $p = $t->port('PORT_STATIC');
@c = (Cookie => $t->cookie_for(random_vid()), -port => $p);
$r = $t->http_get('/', @c);
my $etag = $r->header('ETag');
ok($etag, 'first view: default page with its ETag');
like($r->body, qr/DEFAULT/, 'first view: default content');

$r = $t->http_get('/', @c, 'If-None-Match' => $etag);
is($r->status, 200, 'now personalized: 200 despite a matching If-None-Match');
like($r->body, qr{<b>2</b>}, 'now personalized: the block');

$r = $t->http_get('/', Cookie => $t->cookie_for(random_vid()), -port => $p,
                  'If-None-Match' => $etag);
is($r->status, 304, 'unpersonalized visitor: 304 as before');

$t->stop;
done_testing;
