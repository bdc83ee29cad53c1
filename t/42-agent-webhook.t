#!/usr/bin/perl
# lifecycle-agent's webhook channel against a real HTTP receiver: a JSON
# body signed with X-Lifecycle-Signature (t=<unix>,v1=HMAC-SHA256 of
# "<t>.<body>"); a receiver answering 500 then 200 gets one delivery
# after a retry; one answering 400 gets one attempt, and the message
# goes to the dead-letter stream.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(hmac_sha256_hex);
use JSON::PP;
use Time::HiRes qw(time sleep);
use Lifecycle::Test qw(:all);
use Lifecycle::Agent;

my $t = Lifecycle::Test->new(workers => 1);
my $a = Lifecycle::Agent->new($t);
$a->shop;

my $secret = 'whsec-test-0123456789';

# one abandoned session of an opted-in visitor; the welcome is off here
sub abandon {
    my ($vid, $email) = @_;
    $a->visit($vid, '/product/p1.html', '/product/p2.html');
    $a->optin($vid, $email);
}

###########################################################################
# 500, then 200: one retry, one delivery

my $port = $a->webhook_start(answers => [500, 200]);
$a->start('w1', channel => 'webhook', welcome => 'off',
          webhook_url => "http://127.0.0.1:$port/hook",
          webhook_secret => $secret, webhook_retries => 3,
          retry_delay => '300ms', smtp_from => undef);

my $vid = random_vid();
abandon($vid, 'hook@example.com');

ok((wait_until { scalar($a->webhook_requests) >= 2 } timeout => 15),
   'two requests: the first answered 500, the retry 200')
    or diag($a->log('w1'));
sleep 1.5;

my @r = $a->webhook_requests;
is(scalar @r, 2, 'no third request after the 200');
is($r[0]{status}, 500, 'first answered 500');
is($r[1]{status}, 200, 'second answered 200');
is($r[0]{body}, $r[1]{body}, 'the retry sends the same message');

my $req = $r[1];
like($req->{request_line}, qr{^POST /hook HTTP/1\.1$}, 'POST to webhook_url');
is($req->{headers}{'content-type'}, 'application/json', 'JSON body');

my ($ts, $sig) = ($req->{headers}{'x-lifecycle-signature'} // '')
                 =~ /^t=(\d+),v1=([0-9a-f]{64})$/;
ok(defined $ts, 'X-Lifecycle-Signature: t=<unix>,v1=<hex>');
is($sig, hmac_sha256_hex("$ts.$req->{body}", $secret),
   'v1 is HMAC-SHA256(webhook_secret, "<t>.<body>")');
ok(abs($ts - time()) < 30, 't is the time of sending');

my $j = eval { decode_json($req->{body}) } // {};
is($j->{kind}, 'browse', 'kind browse');
is($j->{to}, 'hook@example.com', 'to');
is($j->{visitor}, $vid, 'visitor');
is($j->{session}, 1, 'session');
is($j->{person}, $a->person_id('hook@example.com'), 'person');
like($j->{subject}, qr/^Your visit summary/, 'subject rendered');
like($j->{text}, qr/City Sneaker.*Trail Runner/s, 'text rendered, newest first');
is_deeply([map { $_->{title} } @{ $j->{data}{session}{products} }],
          ['City Sneaker', 'Trail Runner'],
          'data: the session products, newest first, from the catalog');
is($req->{headers}{'x-lifecycle-id'}, $j->{id}, 'X-Lifecycle-Id is the id');
like($j->{unsubscribe_url}, qr/\?t=[0-9a-f]{32}\.[A-Za-z0-9_-]{22}$/,
     'a signed unsubscribe link');

like($a->log('w1'), qr/result=retry tries=1 .*HTTP 500/, 'the retry is logged');
like($a->log('w1'), qr/result=sent tries=2/, 'the delivery is logged');

is($a->stop('w1'), 0, 'agent stopped');

###########################################################################
# 400: one attempt, then the dead letter

$t->redis_cmd('DEL', 'lc:{agent}:stats');
my $port4 = $a->webhook_start(answers => [400]);
system("rm -f $t->{prefix}/agent/webhook/*.req");

$a->start('w2', channel => 'webhook', welcome => 'off',
          webhook_url => "http://127.0.0.1:$port4/hook",
          webhook_secret => $secret, webhook_retries => 3,
          retry_delay => '300ms', smtp_from => undef);

my $vid2 = random_vid();
abandon($vid2, 'refused@example.com');

ok((wait_until { scalar(@{ $t->redis_cmd('XRANGE', 'lc:{agent}:dead', '-', '+') }) >= 1 }
    timeout => 15), 'a dead letter') or diag($a->log('w2'));
sleep 1.5;

@r = $a->webhook_requests;
is(scalar @r, 1, 'one attempt only on a 4xx');

my $dead = $t->redis->stream('lc:{agent}:dead');
is(scalar @$dead, 1, 'one entry in lc:{agent}:dead');
is($dead->[0]{visitor}, $vid2, 'dead letter: the visitor');
is($dead->[0]{kind}, 'browse', 'dead letter: the kind');
is($dead->[0]{tries}, 1, 'dead letter: one try');
like($dead->[0]{error}, qr/HTTP 400/, 'dead letter: why');

my $m = $t->redis->hgetall("lc:{agent}:m:$dead->[0]{message}");
is($m->{state}, 'dead', 'the message is dead');

my ($rc, $out) = $a->cmd('status', conf => 'w2');
like($out, qr/^lifecycle_agent_dead_letters_total 1$/m, 'status: dead letters');
like($out, qr/^lifecycle_agent_messages_total\{channel="webhook",result="dead"\} 1$/m,
     'status: messages by channel and result');
unlike($out, qr/retries_total/, 'status: no retry on a 4xx');

is($a->stop('w2'), 0, 'agent stopped');

$t->stop;
done_testing();
