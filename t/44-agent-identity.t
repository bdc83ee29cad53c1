#!/usr/bin/perl
# lifecycle-agent's identities: an opt-in links the visitor (and its
# earlier sessions) to the person of the normalised address; the same
# address from a second device joins the same person; two persons that
# meet merge into the one known first; an address with CRLF is refused;
# export prints what is held; forget leaves no key of the person.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use Lifecycle::Test qw(:all);
use Lifecycle::Agent;

my $t = Lifecycle::Test->new(workers => 1);
my $a = Lifecycle::Agent->new($t);
# sessions of 1 s, so that a visitor has earlier sessions to link
$a->shop(session_timeout => '1s');

$a->start('i1', abandon_after => '60s', link_window => '1h');

my $r = $t->redis;
sub person_key { 'lc:{' . vid_shard($_[0]) . "}:P:$_[0]" . ($_[1] // '') }
sub email_key  { 'lc:{' . vid_shard($_[0]) . "}:E:$_[0]" }

###########################################################################
# one visitor, two sessions, then the opt-in

my $v1 = random_vid();
$a->visit($v1, '/product/p1.html', '/category/shoes.html');
sleep 1.2;
$a->visit($v1, '/product/p3.html', '/product/p2.html');
is($r->hgetall(key_profile($v1))->{visits}, 2, 'two sessions recorded');

$a->optin($v1, ' Jane.Doe@Example.COM ');
my $pid = $a->person_id('jane.doe@example.com');

ok((wait_until { ($r->hgetall(key_profile($v1))->{person} // '') eq $pid }
    timeout => 10), 'the profile names its person') or diag($a->log('i1'));

is($r->cmd('GET', email_key($pid)), $pid,
   'the address key (EHASH of the normalised address) points at the person');
my $p = $r->hgetall(person_key($pid));
is($p->{email}, 'jane.doe@example.com', 'person: the normalised address');
ok($p->{optin} && $p->{created}, 'person: opt-in and creation times');
is_deeply([sort @{ $r->cmd('SMEMBERS', person_key($pid, ':v')) }], [$v1],
          'person: its visitor');
is_deeply([sort @{ $r->cmd('ZRANGE', person_key($pid, ':s'), 0, -1) }],
          [sort "$v1:1", "$v1:2"], 'person: both sessions linked');

# the welcome: the products of both sessions, the top category
ok((wait_until { scalar($a->outbox_messages) >= 1 } timeout => 10),
   'a welcome') or diag($a->log('i1'));
my ($w) = $a->outbox_messages;
is($w->{headers}{'x-lifecycle-kind'}, 'welcome', 'it is the welcome');
is($w->{headers}{to}, '<jane.doe@example.com>', 'to the normalised address');
like($w->{text}, qr/City Sneaker.*Leather Boot.*Trail Runner/s,
     'welcome: what was browsed before, newest first, from the catalog');
like($w->{headers}{subject}, qr/shoes/, 'welcome: the top category');
my $j = decode_json($w->{json});
is($j->{data}{top_category}, 'shoes', '.json: the template data');

###########################################################################
# the same address from a second device: the same person, one welcome

my $v2 = random_vid();
$a->visit($v2, '/product/p4.html', '/product/p4.html');
$a->optin($v2, 'jane.doe@example.com');

ok((wait_until { ($r->hgetall(key_profile($v2))->{person} // '') eq $pid }
    timeout => 10), 'second device: the same person');
is_deeply([sort @{ $r->cmd('SMEMBERS', person_key($pid, ':v')) }],
          [sort $v1, $v2], 'person: both devices');
sleep 1;
is(scalar(grep { $_->{headers}{'x-lifecycle-kind'} eq 'welcome' }
          $a->outbox_messages), 1, 'one welcome per person');

###########################################################################
# a third device opts in with another address, then with Jane's: the
# two persons merge into the one known first

my $v3 = random_vid();
$a->visit($v3, '/product/p2.html', '/product/p2.html');
$a->optin($v3, 'other@example.org');
my $pid3 = $a->person_id('other@example.org');
ok((wait_until { ($r->hgetall(key_profile($v3))->{person} // '') eq $pid3 }
    timeout => 10), 'another address: another person');

$a->optin($v3, 'jane.doe@example.com');
ok((wait_until { ($r->hgetall(key_profile($v3))->{person} // '') eq $pid }
    timeout => 10), 'the merge: the visitor joins the person known first')
    or diag($a->log('i1'));
is($r->cmd('EXISTS', person_key($pid3)), 0, 'the later person is gone');
is($r->cmd('GET', email_key($pid3)), $pid,
   'its address now leads to the person kept');
is_deeply([sort @{ $r->cmd('SMEMBERS', person_key($pid, ':v')) }],
          [sort $v1, $v2, $v3], 'the person kept has all three devices');
is_deeply([sort keys %{ $r->hgetall(person_key($pid, ':e')) }],
          [sort $pid, $pid3], 'and both addresses');
like($a->log('i1'), qr/merge person=$pid3 into person=$pid/, 'merge logged');

###########################################################################
# an address that would inject headers is refused

my $v4 = random_vid();
my $evil = "evil\@example.com\r\nBcc: victim\@example.net";
$a->visit($v4, '/product/p1.html', '/product/p1.html');
my $res = $a->optin($v4, $evil, status => 400);
like($res->body, qr/"error"/, 'CRLF in the address: refused at the opt-in');
is($r->hgetall(key_profile($v4))->{email}, undef, 'nothing recorded');

# and were it in the stream, the agent refuses it all the same
$a->optin_event($v4, $evil);
ok($a->wait_log('i1', qr/optin visitor=$v4 decision=refuse/, 10),
   'CRLF in the address of an event: refused by the agent')
    or diag($a->log('i1'));
is($r->hgetall(key_profile($v4))->{person}, undef, 'no person for it');
my @hits = grep { /victim/ } map { $_->{raw} } $a->outbox_messages;
is(scalar @hits, 0, 'it reached no message');
for my $bad ('a@b@example.com', 'a b@example.com', 'x@localhost', '<x@y.z>',
             "x\@y.z\nTo: w\@v.u") {
    my $v = random_vid();
    $a->optin_event($v, $bad);
    ok($a->wait_log('i1', qr/optin visitor=$v decision=refuse/, 10),
       "refused by the agent: \Q$bad\E");
}

# an event without the address: the profile's is taken
my $v5 = random_vid();
$a->visit($v5, '/product/p3.html', '/product/p3.html');
$r->cmd('HSET', key_profile($v5), 'email', 'profile.only@example.com',
        'optin', int(time() * 1000));
$r->cmd('XADD', key_events($v5), '*', 'type', 'optin', 'vid', $v5, 'sess', 1);
# (no endpoint writes such an event: the agent copes all the same)
my $pid5 = $a->person_id('profile.only@example.com');
ok((wait_until { ($r->hgetall(key_profile($v5))->{person} // '') eq $pid5 }
    timeout => 10), 'an optin event without the address: the profile has it')
    or diag($a->log('i1'));

###########################################################################
# export: everything held about the person, as recorded

my ($rc, $out) = $a->cmd('export', 'Jane.Doe@example.com', conf => 'i1');
is($rc, 0, 'export exits 0');
my $x = eval { decode_json($out) } // {};
is($x->{id}, $pid, 'export: the person');
is($x->{email}, 'jane.doe@example.com', 'export: the address');
is_deeply([sort map { $_->{id} } @{ $x->{visitors} }], [sort $v1, $v2, $v3],
          'export: every visitor');
my ($e1) = grep { $_->{id} eq $v1 } @{ $x->{visitors} };
is_deeply($e1->{profile}, $r->hgetall(key_profile($v1)),
          'export: the profile as stored');
is($e1->{profile}{'p:p1'}, 1, 'export: product views');
is(scalar @{ $e1->{sessions} }, 1, 'export: the ended session');
is_deeply([grep { length } split /\n/, $e1->{sessions}[0]{p}], ['p1'],
          'export: its products');
ok(scalar(@{ $x->{messages} }) >= 1, 'export: the messages');
is($x->{messages}[0]{kind}, 'welcome', 'export: the welcome');
is_deeply([sort @{ $x->{linked_sessions} }],
          [sort "$v1:1", "$v1:2", "$v2:1", "$v3:1"],
          'export: the linked sessions');

($rc, $out) = $a->cmd('export', 'nobody@example.com', conf => 'i1');
is($rc, 1, 'export of an unknown address: exit 1');

###########################################################################
# forget: no key of the person remains

is($a->stop('i1'), 0, 'agent stopped');

($rc, $out) = $a->cmd('forget', 'JANE.DOE@example.com', conf => 'i1');
is($rc, 0, 'forget exits 0') or diag($out);
like($out, qr/forgot person $pid: 3 visitor/, 'forget says what it did');

my @keys = @{ $r->cmd('KEYS', '*') };
my @left = grep { /$pid|$pid3|$v1|$v2|$v3/ } @keys;
is_deeply(\@left, [], 'no key names the person, its addresses or visitors');

my @values;
for my $k (@keys) {
    my $type = $r->cmd('TYPE', $k);
    my $dump = $type eq 'string' ? $r->cmd('GET', $k)
             : $type eq 'hash'   ? join(' ', @{ $r->cmd('HGETALL', $k) })
             : $type eq 'set'    ? join(' ', @{ $r->cmd('SMEMBERS', $k) })
             : $type eq 'zset'   ? join(' ', @{ $r->cmd('ZRANGE', $k, 0, -1) })
             : $type eq 'list'   ? join(' ', @{ $r->cmd('LRANGE', $k, 0, -1) })
             : $type eq 'stream' ? join(' ', map { @{ $_->[1] } }
                                         @{ $r->cmd('XRANGE', $k, '-', '+') })
             : '';
    push @values, $k if $dump =~ /$pid|$pid3|$v1|$v2|$v3|jane\.doe|other\@example/;
}
is_deeply(\@values, [], 'no value holds them either (events, queue, index)');

($rc) = $a->cmd('export', 'jane.doe@example.com', conf => 'i1');
is($rc, 1, 'export after forget: nobody');

$t->stop;
done_testing();
