#!/usr/bin/perl
# lifecycle-agent across crashes and beside another agent: killed with
# SIGKILL in the middle of an SMTP delivery and restarted, it sends no
# duplicate and loses nothing (what happened while it was down is read
# after the restart); the outbox tells a message written before a crash
# from one that was not; two agents on one consumer group judge every
# session once between them; SIGTERM lets the delivery in flight finish.

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

sub abandon {
    my ($vid, $email) = @_;
    $a->visit($vid, '/product/p1.html', '/product/p3.html');
    $a->optin($vid, $email);
}

sub decision {
    my ($vid, $n) = @_;
    return $t->redis->hgetall('lc:{' . vid_shard($vid) . "}:a:$vid:" . ($n // 1));
}

sub message { $t->redis->hgetall("lc:{agent}:m:$_[0]") }

sub browse_to {
    my ($email) = @_;
    return grep { ($_->{headers}{'x-lifecycle-kind'} // '') eq 'browse'
                  && $_->{headers}{to} eq "<$email>" } $a->smtp_messages;
}

###########################################################################
# SIGKILL while the SMTP server holds the message

# the server keeps a browse message, and answers 250 3 s later
my $smtp = $a->smtp_start(delay => 3, match => 'X-Lifecycle-Kind: browse');
my %smtp = (channel => 'smtp', smtp_url => "smtp://127.0.0.1:$smtp",
            welcome => 'off');

$a->start('a1', %smtp);

my $v1 = random_vid();
abandon($v1, 'crash1@example.com');

# killed once the server has all of the message, before its answer:
# the agent cannot know whether it arrived, and must not send it again
my $id;
ok((wait_until {
        $id = decision($v1)->{message};
        $id && (message($id)->{state} // '') eq 'handed';
    } timeout => 15), 'the server has the message, the agent waits for 250')
    or diag($a->log('a1'));

$a->kill9('a1');
pass('agent killed with SIGKILL in the middle of the delivery');

# while it is down: another visitor browses and opts in
my $v2 = random_vid();
abandon($v2, 'crash2@example.com');
sleep 0.5;

$a->start('a1', %smtp);

ok((wait_until { browse_to('crash1@example.com')
                 && browse_to('crash2@example.com') } timeout => 20),
   'both messages arrived') or diag($a->log('a1'));
sleep 3;

is(scalar(browse_to('crash1@example.com')), 1,
   'the interrupted message: once, never sent again');
is(scalar(browse_to('crash2@example.com')), 1,
   'the visitor of the downtime: one message (nothing lost)');

is(message($id)->{state}, 'interrupted',
   'the interrupted message is recorded as such');
my ($dead) = grep { $_->{message} eq $id } @{ $t->redis->stream('lc:{agent}:dead') };
ok($dead, 'and dead-lettered for an operator to look at');
like($dead->{error} // '', qr/may have arrived/, 'with the reason');
like($a->log('a1'), qr/held by a1\/\w+ when it stopped, taken back/,
     'the restarted agent took its message back at once');

# killed before the last byte went: as if an agent had died between
# "sending" and the end of the data, with the agent down meanwhile
$a->kill9('a1');
my $v5 = random_vid();
abandon($v5, 'crash5@example.com');
my $id5 = '5555aaaa5555aaaa';
my $pid5 = $a->person_id('crash5@example.com');
my $ms = int(time() * 1000);
$t->redis_cmd('HSET', 'lc:{' . vid_shard($v5) . "}:a:$v5:1", 'owner',
              'a1/0000000000000000', 'state', 'queued', 'kind', 'browse',
              'message', $id5);
$t->redis_cmd('HSET', "lc:{agent}:m:$id5", 'kind', 'browse', 'step', 0,
              'pid', $pid5, 'vid', $v5, 'sess', 1, 'start', $ms - 5000,
              't0', 0, 'created', $ms, 'tries', 0, 'state', 'sending',
              'owner', 'a1/0000000000000000');
$t->redis_cmd('ZADD', 'lc:{agent}:due', $ms + 100000, $id5);
$a->start('a1', %smtp);
ok((wait_until { scalar(browse_to('crash5@example.com')) >= 1 } timeout => 20),
   'a message interrupted before its last byte is sent after the restart')
    or diag($a->log('a1'));
sleep 4;
is(scalar(browse_to('crash5@example.com')), 1, 'once');
like($a->log('a1'), qr/message=$id5: interrupted before the server had all of it: sent again/,
     'logged');

is($a->stop('a1'), 0, 'agent stopped');

###########################################################################
# the outbox knows: a file written before the crash is not written again

$a->start('o1', channel => 'outbox', welcome => 'off');

my $v3 = random_vid();
abandon($v3, 'outbox@example.com');

ok((wait_until { scalar($a->outbox_messages) == 1 } timeout => 15),
   'outbox: one message') or diag($a->log('o1'));
is($a->stop('o1'), 0, 'agent stopped');

my $oid = decision($v3)->{message};
my @files = glob($a->outbox_dir . '/*');
is_deeply([sort map { s{.*/}{}r } @files], ["$oid.eml", "$oid.json"],
          'outbox: ID.eml and ID.json, no temporary file left');

# as if the agent had died after the rename, before recording "sent"
my $now = int(time() * 1000);
$t->redis_cmd('HSET', "lc:{agent}:m:$oid", 'state', 'sending',
              'owner', 'o1/0000000000000000');
$t->redis_cmd('ZADD', 'lc:{agent}:due', $now, $oid);

my $mtime = (stat "$files[0]")[9];
$a->start('o1', channel => 'outbox', welcome => 'off');
ok($a->wait_log('o1', qr/message=$oid .*result=sent \(found after a restart\)/, 10),
   'outbox: the written message is found, not written again')
    or diag($a->log('o1'));
is(scalar($a->outbox_messages), 1, 'outbox: still one message');
is(message($oid)->{state}, 'sent', 'outbox: recorded as sent');
is($a->stop('o1'), 0, 'agent stopped');

###########################################################################
# two agents on one group: every session judged once

my $smtp2 = $a->smtp_start;
%smtp = (channel => 'smtp', smtp_url => "smtp://127.0.0.1:$smtp2",
         welcome => 'on');
system('rm -f ' . $a->smtp_dir . '/*');

$a->start('g1', %smtp);
$a->start('g2', %smtp);

my @v = map { random_vid() } 1 .. 8;
abandon($v[$_], "group$_\@example.com") for 0 .. $#v;

ok((wait_until { scalar($a->smtp_messages) >= 16 } timeout => 30),
   'sixteen messages: a welcome and a browse abandonment each')
    or diag($a->log('g1') . $a->log('g2'));
sleep 2;

my @m = $a->smtp_messages;
is(scalar @m, 16, 'no message twice');
for my $i (0 .. $#v) {
    my @mine = grep { $_->{headers}{to} eq "<group$i\@example.com>" } @m;
    is(join(' ', sort map { $_->{headers}{'x-lifecycle-kind'} } @mine),
       'browse welcome', "visitor $i: one welcome, one browse abandonment");
}

my %judged;
for my $name (qw(g1 g2)) {
    $judged{$_}{$name}++ for $a->log($name) =~ /session=(\w+:\d+) kind=\w+ person=\w+ decision=send/g;
}
is(scalar(grep { keys %{ $judged{$_} } > 1 } keys %judged), 0,
   'no session judged by both agents');
is(scalar(keys %judged), 8, 'every session judged');

my $consumers = $t->redis_cmd('XINFO', 'CONSUMERS', key_events($v[0]),
                              'lc-agent');
ok(scalar(@$consumers) >= 1, 'the consumer group has its consumers');

###########################################################################
# SIGTERM: the delivery in flight finishes and is recorded

is($a->stop('g2'), 0, 'second agent stopped');
is($a->stop('g1'), 0, 'first agent stopped');

my $smtp3 = $a->smtp_start(delay => 2, match => 'X-Lifecycle-Kind: browse');
$a->start('t1', channel => 'smtp', smtp_url => "smtp://127.0.0.1:$smtp3",
          welcome => 'off');

my $v4 = random_vid();
abandon($v4, 'term@example.com');

my $tid;
ok((wait_until {
        $tid = decision($v4)->{message};
        $tid && (message($tid)->{state} // '') =~ /^(sending|handed)$/;
    } timeout => 15), 'a delivery under way') or diag($a->log('t1'));

my $t0 = time();
is($a->stop('t1'), 0, 'SIGTERM: exit 0');
ok(time() - $t0 > 0.5, 'after the delivery finished');
is(message($tid)->{state}, 'sent', 'the message in flight is recorded sent');
is(scalar(browse_to('term@example.com')), 1, 'and it arrived');

$t->stop;
done_testing();
