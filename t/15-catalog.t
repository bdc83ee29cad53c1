#!/usr/bin/perl
# lifecycle_catalog: product views count toward the category the catalog
# gives them (c:CAT in the profile, cat in the event, category: segment
# conditions); an explicit category= wins; unknown products record no
# category; a reload reads the file again, a broken one keeps the old;
# catalog errors in nginx -t name the file, its line and nginx.conf:line.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;
my $redis = $t->redis;

my $header = "id\ttitle\tlink\timage_link\tprice\tproduct_type\tbrand\n";
my $catalog = $header
    . "r1\tRoad Runner\t/product/r1\t/img/r1.jpg\t89.90 EUR\t"
    . "Apparel & Accessories > Shoes > Running Shoes\tAcme\n"
    . "r2\tTrail Runner\t/product/r2\t/img/r2.jpg\t1,099.00 EUR\t"
    . "Apparel & Accessories > Shoes > Running Shoes\tAcme\n"
    . "h1\tSun Hat\t/product/h1\t/img/h1.jpg\t19 EUR\t"
    . "Apparel & Accessories > Hats\tSol\n"
    # UTF-8 stays in the slug: laufschuhe-f\xc3\xbcr-damen
    . "u1\tLaufschuh\t/product/u1\t/img/u1.jpg\t59.00 EUR\t"
    . "Schuhe > Laufschuhe f\xc3\xbcr Damen\tAcme\n"
    . "n1\tGift Card\t/product/n1\t/img/n1.jpg\t25 EUR\t\t\n";
my $file = $t->write_file('catalog.tsv', $catalog);

$t->html("product/$_", "product $_\n") for qw(r1 r2 h1 u1 n1 x9);
$t->html('explicit/r1', "explicit r1\n");
$t->html('index.html', "home\n");

$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    # generous budget: exact checks must not depend on the machine's load
    lifecycle_timeout 2s;
    lifecycle_catalog catalog.tsv;
    lifecycle_segment runner category:running-shoes>=2;
    lifecycle_segment hats category:hats>=1;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        add_header X-Segments $lifecycle_segments always;

        lifecycle_view product ^/product/(?<id>[^/]+)$;
        lifecycle_view product ^/explicit/(?<id>[^/]+)$ category=$arg_c;
        lifecycle_view page ^/;
    }
EOF

my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t accepts the catalog') or diag $out;
unlike($out, qr/\[(emerg|alert|crit|error|warn|notice)\]|catalog/,
       'nginx -t says nothing about a good catalog') or diag $out;

$t->start;

sub events_of {
    my ($vid) = @_;
    return [ grep { ($_->{vid} // '') eq $vid }
             @{ $redis->stream(key_events($vid)) } ];
}

sub categories {
    my ($p) = @_;
    return { map { $_ => $p->{$_} } grep { /^c:/ } keys %$p };
}

my $vid = random_vid();
my @c = (Cookie => $t->cookie_for($vid));
my $pk = key_profile($vid);

my $r = $t->http_get('/product/r1', @c);
is($r->status, 200, 'product r1 200');
is($r->body, "product r1\n", 'product r1 body');
is($r->header('X-Segments') // '', '', 'one running shoe: no segment yet');
my $p = $redis->hgetall($pk);
is($p->{'p:r1'}, 1, 'p:r1 1');
is_deeply(categories($p), { 'c:running-shoes' => 1 },
          'the catalog category of r1 counted: c:running-shoes 1');
my $e = events_of($vid)->[-1] || {};
is($e->{cat}, 'running-shoes', 'event cat from the catalog');
is($e->{id}, 'r1', 'event id');

$r = $t->http_get('/product/h1', @c);
is($r->header('X-Segments'), 'hats', 'category:hats>=1 after one hat');

$r = $t->http_get('/product/r2', @c);
is($r->header('X-Segments'), 'runner hats',
   'category:running-shoes>=2 after two products of that category');
$p = $redis->hgetall($pk);
is_deeply(categories($p), { 'c:running-shoes' => 2, 'c:hats' => 1 },
          'c:running-shoes 2, c:hats 1');
is($p->{'p:r2'}, 1, 'p:r2 1');
ok((grep { $_ eq 'r2' } split /\n/, session_products($p)),
   'the session lists the product (its category is the catalog\'s)');
ok(!(grep { $_ eq 'running-shoes' } split /\n/, $p->{'s.c'} // ''),
   'the session\'s categories are the category pages seen');

$t->http_get('/product/u1', @c);
$p = $redis->hgetall($pk);
is($p->{"c:laufschuhe-f\xc3\xbcr-damen"}, 1, 'UTF-8 category slug');
is(events_of($vid)->[-1]{cat}, "laufschuhe-f\xc3\xbcr-damen",
   'UTF-8 category in the event');

# unknown to the catalog, and known without product_type: no category
my $before = categories($redis->hgetall($pk));
for my $id (qw(x9 n1)) {
    $r = $t->http_get("/product/$id", @c);
    is($r->status, 200, "product $id 200");
    $p = $redis->hgetall($pk);
    is($p->{"p:$id"}, 1, "p:$id counted");
    is_deeply(categories($p), $before, "$id: no category recorded");
    $e = events_of($vid)->[-1] || {};
    is($e->{id}, $id, "$id: event id");
    ok(!defined $e->{cat} || $e->{cat} eq '', "$id: no cat in the event");
}

# an explicit category= on the view wins over the catalog
$r = $t->http_get('/explicit/r1?c=sale', @c);
is($r->body, "explicit r1\n", 'explicit r1 body');
$p = $redis->hgetall($pk);
is($p->{'c:sale'}, 1, 'category=$arg_c: c:sale 1');
is($p->{'c:running-shoes'}, 2, 'the catalog category not counted');
is($p->{'p:r1'}, 2, 'p:r1 2');
is(events_of($vid)->[-1]{cat}, 'sale', 'event cat from category=');

# category= given but empty here: the rule said where the category comes
# from, and the catalog is not asked
$t->http_get('/explicit/r1', @c);
$p = $redis->hgetall($pk);
is_deeply(categories($p), { %$before, 'c:sale' => 1 },
          'category= empty: no category, not the catalog one');

# a reload reads the file again
$t->write_file('catalog.tsv', $header
    . "r2\tTrail Runner\t/product/r2\t/img/r2.jpg\t99 EUR\t"
    . "Shoes > Trail Shoes\tAcme\n");
ok($t->reload(wait_old => 5), 'reload with a changed catalog');

my $vid2 = random_vid();
my @c2 = (Cookie => $t->cookie_for($vid2));
$t->http_get('/product/r2', @c2);
$t->http_get('/product/r1', @c2);
is_deeply(categories($redis->hgetall(key_profile($vid2))),
          { 'c:trail-shoes' => 1 },
          'after the reload: r2 in trail-shoes, r1 no longer in the catalog')
    or diag explain $redis->hgetall(key_profile($vid2));

# a broken catalog on reload: the master keeps the running configuration
$t->write_file('catalog.tsv', $header . "r2\tbroken\n");
kill 'HUP', $t->master_pid;
my $emerg = $t->wait_log(qr/\[emerg\].*catalog/);
like($emerg // '', qr/catalog "\Q$file\E": line 2: 2 fields, the header has 7/,
     'reload with a broken catalog: [emerg] says what and where');
my $vid3 = random_vid();
$t->http_get('/product/r2', Cookie => $t->cookie_for($vid3));
is_deeply(categories($redis->hgetall(key_profile($vid3))),
          { 'c:trail-shoes' => 1 }, 'the last good catalog still serves');

$t->stop(no_checks => 1);
my ($fatal, $errors, $asan) = $t->log_problems;
is_deeply([ grep { !/\[emerg\].*catalog "\Q$file\E": line 2:/ } @$fatal ], [],
          'error log: no [alert]/[crit]/[emerg] but the broken catalog')
    or diag join("\n", @$fatal);
is_deeply($errors, [], 'error log: no [error]');
is_deeply($asan, [], 'no AddressSanitizer reports');

# --- configuration errors ---------------------------------------------------

my $bad_row = $t->write_file('bad-row.tsv', $header
    . "r1\tA\t/a\t/a.jpg\t1 EUR\tShoes\tAcme\n"
    . "\n"
    . "r2\tB\t/b\t/b.jpg\t2 EUR\tShoes\n");
my $no_id = $t->write_file('no-id.tsv', "sku\ttitle\nr1\tA\n");
my $dup = $t->write_file('dup.tsv', "id\ttitle\nr1\tA\nr2\tB\nr1\tC\n");
my $bad_id = $t->write_file('bad-id.tsv', "id\ttitle\nr 1\tA\n");
my $good = $t->write_file('good.tsv', $catalog);
my $missing = $t->prefix . '/nope.tsv';

my $base = "    lifecycle_redis %%REDIS%%;\n    lifecycle_secret %%SECRET%%;\n";
my $srv = "    server { listen 127.0.0.1:%%PORT%%; root %%HTML%%; lifecycle on; }\n";

my @cases = (
    ['missing file', "    lifecycle_catalog $missing;\n",
     qr/open\(\) "\Q$missing\E" failed/],
    ['no id column', "    lifecycle_catalog $no_id;\n",
     qr/catalog "\Q$no_id\E": line 1: no "id" column/],
    ['a row with a field missing', "    lifecycle_catalog $bad_row;\n",
     qr/catalog "\Q$bad_row\E": line 4: 6 fields, the header has 7/],
    ['duplicate id', "    lifecycle_catalog $dup;\n",
     qr/catalog "\Q$dup\E": line 4: duplicate id "r1", first on line 2/],
    ['id with a space', "    lifecycle_catalog $bad_id;\n",
     qr/catalog "\Q$bad_id\E": line 2: id "r 1" holds byte 0x20/],
    ['two lifecycle_catalog', "    lifecycle_catalog $good;\n"
     . "    lifecycle_catalog $good;\n",
     qr/"lifecycle_catalog" directive is duplicate/],
);

for my $case (@cases) {
    my ($name, $directive, $re) = @$case;
    my $conf = $t->config("$base$directive$srv");
    my ($rc, $out) = $t->nginx_t;
    isnt($rc, 0, "$name: nginx -t fails");
    my ($line) = grep { /\[emerg\]/ } split /\n/, $out;
    like($line // '', $re, "$name: says what is wrong") or diag $out;

    # the last lifecycle_catalog line is the one reported
    my $n = 0;
    my $at;
    for (split /\n/, $t->conf_text) {
        $n++;
        $at = $n if /lifecycle_catalog/;
    }
    like($line // '', qr/ in \Q$conf\E:$at$/, "$name: at nginx.conf:$at");
}

my $conf = $t->config("$base    server {\n"
    . "        listen 127.0.0.1:%%PORT%%;\n"
    . "        lifecycle_catalog $file;\n    }\n");
($rc, $out) = $t->nginx_t;
like($out, qr/"lifecycle_catalog" directive is not allowed here in \Q$conf\E:/,
     'lifecycle_catalog in a server block is refused') or diag $out;

(undef, undef, $asan) = $t->log_problems;
is_deeply($asan, [], 'nginx -t runs: no AddressSanitizer reports');

done_testing;
