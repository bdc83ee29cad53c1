#!/usr/bin/perl
# Content blocks: first match per slot, defaults kept, headers changed only
# when the page is, escaping of request data, catalog data in templates,
# what the filter must not touch (HEAD, 304, 404, non-HTML, subrequests),
# a page without </body>, and proxy_cache: one cached page, a different
# block per visitor.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;

my $page = "<html><body>\n<!--lc:slot hero-->HERO<!--/lc:slot-->\n"
         . "<!--lc:slot side-->SIDE<!--/lc:slot-->\n"
         . "<!--lc:slot foot-->FOOT<!--/lc:slot-->\n</body></html>\n";

$t->html('index.html', $page);
$t->html('nobody.html', "<html><!--lc:slot hero-->HERO<!--/lc:slot--></html>\n");
$t->html('plain.txt', "<!--lc:slot hero-->HERO<!--/lc:slot--></body>\n");
$t->html('product.html', "<html><body><!--lc:slot hero-->HERO<!--/lc:slot--></body></html>\n");
$t->html('origin/page.html', $page);

$t->write_file('vip.html', '<b class="vip">VIP {{visitor.views}}</b>');
$t->write_file('any.html', '<i>any {{segment}}</i>');
$t->write_file('side.html', '<s>{{visitor.stage}}</s>');
$t->write_file('product-block.html',
    '<p>[{{product.id}}][{{{product.id}}}][{{product.title}}]'
    . '[{{{product.title}}}][{{product.category}}][{{product.price}}]'
    . '{{#recent}}({{id}}:{{title}}){{/recent}}'
    . '[{{top_category}}][{{cart.count}}][{{cart.value}}][{{cart.currency}}]</p>');

my $catalog = $t->write_file('catalog.tsv',
    "id\ttitle\tlink\timage_link\tprice\tproduct_type\n"
    . "p1\tTrail <Runner>\t/p/p1\t/i/p1.png\t89.00 EUR\tApparel > Shoes\n"
    . "p2\tCity & Sneaker\t/p/p2\t/i/p2.png\t69.50 EUR\tApparel > Shoes\n"
    . "p3\tTote\t/p/p3\t/i/p3.png\t35.00 EUR\tApparel > Bags\n");

$t->set_var(CATALOG => $catalog);
$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_timeout 2s;
    lifecycle_catalog %%CATALOG%%;

    lifecycle_segment vip $cookie_vip=1;
    lifecycle_segment viewer views>=2;

    proxy_cache_path %%PREFIX%%/cache keys_zone=pages:1m;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        default_type text/html;
        lifecycle on;
        lifecycle_view product ^/product/(?<id>.+)$;
        lifecycle_view cart_add ^/add$ id=$arg_sku;
        lifecycle_view page ^/;

        lifecycle_block hero vip %%PREFIX%%/vip.html;
        lifecycle_block hero viewer %%PREFIX%%/any.html;
        lifecycle_block side vip %%PREFIX%%/side.html;

        # a block for everyone, for a slot the page does not have: the
        # choice is made before the body is seen, so the page is private
        location = /elsewhere.html {
            lifecycle_block nowhere * %%PREFIX%%/any.html;
            try_files /index.html =404;
        }

        location /product/ {
            lifecycle_block hero * %%PREFIX%%/product-block.html;
            try_files /product.html =404;
        }

        location = /add {
            try_files /product.html =404;
        }

        location = /inline.html {
            lifecycle_block hero * 'data:<em class="x">{{visitor.views}}</em>';
            try_files /nobody.html =404;
        }

        location /missing/ {
            log_not_found off;
        }

        location /cached/ {
            proxy_pass http://127.0.0.1:%%PORT_ORIGIN%%/;
            proxy_cache pages;
            proxy_cache_valid 200 1h;
            add_header X-Cache $upstream_cache_status always;
        }

        location = /status { lifecycle off; lifecycle_status; }
    }

    server {
        listen 127.0.0.1:%%PORT_ORIGIN%%;
        root %%HTML%%/origin;
        default_type text/html;
        access_log %%PREFIX%%/origin.log;
    }
EOF
$t->start;

sub visitor { (Cookie => $t->cookie_for(random_vid()) . ($_[0] // '')) }

# --- which block ---------------------------------------------------------

my @vip = visitor('; vip=1');
my $r = $t->http_get('/', @vip);
is($r->status, 200, 'vip: 200');
is($r->body, "<html><body>\n<!--lc:slot hero--><b class=\"vip\">VIP 1</b><!--/lc:slot-->\n"
           . "<!--lc:slot side--><s>new</s><!--/lc:slot-->\n"
           . "<!--lc:slot foot-->FOOT<!--/lc:slot-->\n</body></html>\n",
   'vip: first matching block in each slot, a slot without block keeps its default');

$r = $t->http_get('/', @vip);
like($r->body, qr{<b class="vip">VIP 2</b>}, 'vip matches before viewer (first match wins)');

my @plain = visitor();
$r = $t->http_get('/', @plain);
is($r->body, $page, 'no segment: the page as written');
ok($r->header('ETag') && $r->header('Last-Modified'), 'unchanged: ETag and Last-Modified kept');
is($r->header('Content-Length'), length $page, 'unchanged: Content-Length kept');
is($r->header('Cache-Control'), undef, 'unchanged: no Cache-Control added');

$r = $t->http_get('/', @plain);
like($r->body, qr{<!--lc:slot hero--><i>any viewer</i><!--/lc:slot-->},
     'second view: the viewer block, {{segment}} names the segment');
like($r->body, qr{<!--lc:slot side-->SIDE<!--/lc:slot-->}, 'side stays default');
is($r->header('ETag'), undef, 'changed: no ETag');
is($r->header('Last-Modified'), undef, 'changed: no Last-Modified');
is($r->header('Content-Length'), undef, 'changed: no Content-Length');
is($r->header('Accept-Ranges'), undef, 'changed: no Accept-Ranges');
is($r->header('Cache-Control'), 'private', 'changed: Cache-Control private');

$r = $t->http_get('/elsewhere.html', visitor());
is($r->body, $page, 'a block for a slot the page lacks: the page as written');
is($r->header('Cache-Control'), 'private',
   '... but it was chosen before the body: made private all the same');

$r = $t->http_get('/inline.html', visitor());
like($r->body, qr{<!--lc:slot hero--><em class="x">1</em><!--/lc:slot-->},
     'a "data:" template is the template itself');

# --- what is never touched -------------------------------------------------

$r = $t->http_head('/', @vip);
is($r->status, 200, 'HEAD: 200');
ok($r->header('ETag'), 'HEAD: not tracked, headers kept');

$r = $t->http_get('/plain.txt', @vip);
is($r->body, "<!--lc:slot hero-->HERO<!--/lc:slot--></body>\n", 'text/plain: untouched');

$r = $t->http_get('/missing/x', @vip);
is($r->status, 404, '404 page');
unlike($r->body, qr/VIP/, '404: untouched');

$r = $t->http_get('/nobody.html', @vip);
is($r->body, "<html><!--lc:slot hero--><b class=\"vip\">VIP 5</b><!--/lc:slot--></html>\n",
   'a page without </body> still gets its blocks');

my @fresh = visitor('; vip=1');
my $first = $t->http_get('/', @fresh);
$r = $t->http_get('/', @fresh, 'If-None-Match' => '"x"', 'Range' => 'bytes=0-3');
is($r->status, 200, 'range request of a personalized page: whole page');
like($r->body, qr/VIP 2/, 'range request: personalized');

# --- request data is escaped, catalog data is not --------------------------

my @shopper = visitor();
$r = $t->http_get('/product/%3Cscript%3Ealert(1)%3C%2Fscript%3E', @shopper);
is($r->status, 200, 'product with a hostile id: 200');
like($r->body, qr{\[&lt;script&gt;alert\(1\)&lt;&#x2F;script&gt;\]\[&lt;script&gt;alert\(1\)&lt;&#x2F;script&gt;\]},
     'an id from the URL is escaped, even in {{{ }}}');
unlike($r->body, qr/<script>/, 'no script tag from the URL');

$r = $t->http_get('/product/p1', @shopper);
like($r->body, qr{\[p1\]\[p1\]\[Trail &lt;Runner&gt;\]\[Trail <Runner>\]\[shoes\]\[89\.00 EUR\]},
     'catalog product: fields, {{ }} escaped, {{{ }}} raw, category slug');

$t->http_get('/product/p3', @shopper);
$r = $t->http_get('/add?sku=p2', @shopper);
$t->http_get('/add?sku=p2', @shopper);
$t->http_get('/add?sku=p3', @shopper);
$r = $t->http_get('/product/p2', @shopper);
like($r->body, qr{\(p3:Tote\)\(p1:Trail &lt;Runner&gt;\)\(&lt;script&gt;alert\(1\)&lt;&#x2F;script&gt;:\)},
     'recent: newest first, the current product left out, unknown ids escaped');
like($r->body, qr{\[shoes\]\[3\]\[174\.00\]\[EUR\]},
     'top category, cart count and value at catalog prices (2 x 69.50 + 35.00)');

# --- proxy_cache: one cached page, each visitor their own block ------------

$r = $t->http_get('/cached/page.html', @vip);
is($r->header('X-Cache'), 'MISS', 'cache: first request is a miss');
like($r->body, qr/VIP/, 'cache miss: vip block');

my @viewer = visitor();
$t->http_get('/', @viewer);
$r = $t->http_get('/cached/page.html', @viewer);
is($r->header('X-Cache'), 'HIT', 'cache: second visitor is a hit');
like($r->body, qr{<i>any viewer</i>}, 'cache hit: the viewer gets the viewer block');
unlike($r->body, qr/VIP/, 'cache hit: not the vip block');

$r = $t->http_get('/cached/page.html', visitor());
is($r->body, $page, 'cache hit: a new visitor gets the page as cached');

open my $log, '<', "$t->{prefix}/origin.log" or die "origin.log: $!";
my @origin = <$log>;
is(scalar(@origin), 1, 'the origin served the page once');

# --- counters -------------------------------------------------------------

my $m = $t->status_metrics('/status');
ok(($t->metric($m, 'lifecycle_slots_filled_total') // 0) >= 12,
   'slots filled counted (' . ($t->metric($m, 'lifecycle_slots_filled_total') // 0) . ')');
ok(($t->metric($m, 'lifecycle_pages_personalized_total') // 0) >= 10,
   'personalized pages counted');

$t->stop;
done_testing;
