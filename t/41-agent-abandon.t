#!/usr/bin/perl
# lifecycle-agent end to end: nginx with the module records the visits,
# the agent finds the abandoned sessions and mails them through a real
# SMTP server (aiosmtpd). Browse abandonment with the products' titles,
# cart abandonment, a purchase that cancels it, a visitor who never
# opted in and gets nothing; each exactly once; the welcome on opt-in
# with what was browsed before; the delay from the idle deadline to the
# message.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use Lifecycle::Test qw(:all);
use Lifecycle::Agent;

my $t = Lifecycle::Test->new(workers => 1);
my $a = Lifecycle::Agent->new($t);

$a->need_smtp;

$a->shop;

my $smtp = $a->smtp_start;
# a long scan_interval: the deadlines come from the events and the index
$a->start('a1', channel => 'smtp', smtp_url => "smtp://127.0.0.1:$smtp",
          abandon_after => '2s', scan_interval => '30s');

sub visit { $a->visit(@_) }

my %v = map { $_ => random_vid() } qw(browse cart bought silent products);
my %email = (browse   => 'Browse.Visitor@Example.com',
             cart     => 'cart.visitor@example.com',
             bought   => 'bought@example.com',
             products => 'products.only@example.com');

visit($v{browse}, '/category/shoes.html', '/product/p1.html',
      '/product/p3.html');
$a->optin($v{browse}, $email{browse});

visit($v{cart}, '/product/p2.html', ['POST', '/cart/add?sku=p2']);
$a->optin($v{cart}, $email{cart});

visit($v{bought}, '/product/p4.html', ['POST', '/cart/add?sku=p4']);
$a->optin($v{bought}, $email{bought});
visit($v{bought}, '/checkout/done?order=T100');

visit($v{silent}, '/product/p1.html', '/product/p2.html');

# products only, no category page: their categories are the catalog's
visit($v{products}, '/product/p1.html', '/product/p3.html');
$a->optin($v{products}, $email{products});

my %last = map {
    $_ => $t->redis->hgetall(key_profile($v{$_}))->{last}
} keys %v;

# 4 welcomes at once, then the three abandonments 2 s after the last view
ok((wait_until { scalar($a->smtp_messages) >= 7 } timeout => 20),
   'seven messages arrived') or diag($a->log('a1'));

# nothing more comes: exactly one of each
sleep 3;
my @m = $a->smtp_messages;
is(scalar @m, 7, 'exactly seven messages: four welcomes, three abandonments')
    or diag(join "\n", map { "$_->{headers}{to}: $_->{headers}{subject}" } @m);

sub of {
    my ($kind, $to) = @_;
    return grep { ($_->{headers}{'x-lifecycle-kind'} // '') eq $kind
                  && $_->{headers}{to} eq "<$to>" } @m;
}

# a session of products only: the top category from the catalog
my @pb = of('browse', $email{products});
is(scalar @pb, 1, 'one browse abandonment for the products-only visitor');
like(($pb[0] // {headers => {}})->{headers}{subject} // '', qr/: shoes$/,
     'its subject names the category of the products read (the catalog\'s)');

# the browse abandonment: the products read, their catalog names

my @b = of('browse', lc $email{browse});
is(scalar @b, 1, 'one browse abandonment for the browser');
my $b = $b[0] // { headers => {}, text => '', html => '' };
like($b->{headers}{subject}, qr/^Your visit summary/, 'subject: visit summary');
like($b->{text}, qr/Trail Runner/, 'text: the first product viewed');
like($b->{text}, qr/Leather Boot/, 'text: the second product viewed');
like($b->{text}, qr{http://shop\.example/product/p3\.html},
     'text: links made absolute with site_url');
like($b->{html}, qr{<img src="http://shop\.example/static/shoes\.svg"},
     'html: the catalog images');
like($b->{html}, qr/129\.00 EUR/, 'html: the catalog prices');
is_deeply($b->{envelope}{to}, [lc $email{browse}],
          'envelope: to the normalised address');
like($b->{headers}{from}, qr/shop\@example\.com/, 'From: smtp_from');
like($b->{headers}{date}, qr/^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000$/,
     'Date header');
like($b->{headers}{'message-id'}, qr/^<[0-9a-f]{16}\@example\.com>$/,
     'Message-ID');

my $pid = $a->person_id(lc $email{browse});
my $token = $a->token($pid);
is($b->{headers}{'list-unsubscribe'},
   "<http://127.0.0.1/lifecycle/unsubscribe?t=$token>",
   'List-Unsubscribe: the signed token of the person');
is($b->{headers}{'list-unsubscribe-post'}, 'List-Unsubscribe=One-Click',
   'List-Unsubscribe-Post: one click');
like($b->{text}, qr/\Q$token\E/, 'the unsubscribe link in the text');

# the cart abandonment

my @c = of('cart', $email{cart});
is(scalar @c, 1, 'one cart abandonment for the visitor with a cart');
my $c = $c[0] // { headers => {}, text => '' };
like($c->{headers}{subject}, qr/^Your cart is waiting/, 'subject: cart');
like($c->{text}, qr/1 x City Sneaker, 69\.00 EUR/, 'text: the cart items');
like($c->{text}, qr/69\.00 EUR in all/, 'text: the cart value');

# the purchase cancelled it; the silent visitor got nothing

is(scalar(of('cart', $email{bought})) + scalar(of('browse', $email{bought})),
   0, 'a purchase before the deadline: no abandonment message');
is(scalar(grep { $_->{raw} =~ /$v{silent}/ } @m), 0,
   'a visitor who never opted in: nothing');
like($a->log('a1'), qr/session=$v{silent}:1 kind=browse decision=skip reason="not opted in"/,
     'the skip is logged');

# the welcome shows what was browsed before the opt-in

my @w = of('welcome', lc $email{browse});
is(scalar @w, 1, 'one welcome');
like($w[0]{text} // '', qr/You were looking at:.*Trail Runner/s,
     'welcome: recently viewed products from the catalog');
like($w[0]{headers}{subject} // '', qr/shoes/,
     'welcome: the top category');

# how long after the idle deadline the messages came

for my $k (qw(browse cart)) {
    my ($msg) = $k eq 'browse' ? @b : @c;
    next unless $msg;
    my $deadline = ($last{$k} + 2000) / 1000;
    my $late = $msg->{mtime} - $deadline;
    ok($late < 60, "$k: within a minute of the deadline");
    ok($late < 2, "$k: in fact within 2 s, with a scan_interval of 30 s");
    diag(sprintf('%s abandonment: message %.2f s after the idle deadline',
                 $k, $late));
}
my @lat = $a->log('a1') =~ /kind=(?:browse|cart) step=0 .* result=sent .*latency=(\d+)ms/g;
diag("decision to delivery: @lat ms") if @lat;

# the records the agent left

my $d = $t->redis->hgetall('lc:{' . vid_shard($v{browse}) . "}:a:$v{browse}:1");
is($d->{state}, 'queued', 'decision recorded on the session');
is($d->{kind}, 'browse', 'decision kind');
is($t->redis_cmd('ZSCORE', key_idle($v{browse}), "$v{browse}:1"), undef,
   'the judged session left the idle index');

my ($rc, $out) = $a->cmd('status', conf => 'a1');
is($rc, 0, 'status exits 0');
like($out, qr/^lifecycle_agent_abandonments_total\{kind="browse"\} 3$/m,
     'status: browse abandonments found (the silent visitor counts)');
like($out, qr/^lifecycle_agent_abandonments_total\{kind="cart"\} 1$/m,
     'status: cart abandonments found');
like($out, qr/^lifecycle_agent_messages_total\{channel="smtp",result="sent"\} 7$/m,
     'status: messages by channel and result');
like($out, qr/^lifecycle_agent_events_total \d+$/m, 'status: events consumed');
like($out, qr/^lifecycle_agent_lag 0$/m, 'status: no lag');

is($a->stop('a1'), 0, 'SIGTERM: exit 0');
like($a->log('a1'), qr/stopped \(consumer a1\//, 'logged its stop');

$t->stop;
done_testing();
