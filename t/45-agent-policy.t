#!/usr/bin/perl
# lifecycle-agent's rules for sending and its configuration: one
# abandonment message per person and cooldown (two devices of one
# person), follow-ups stopped by a purchase, an unsubscribe that stops
# what was queued and what would come, the configuration check with
# file:line errors, SIGHUP reloading (and keeping a good configuration
# when the new one is wrong).

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
$a->shop;

my $r = $t->redis;

sub kinds_to {
    my ($email) = @_;
    return map { $_->{headers}{'x-lifecycle-kind'}
                 . ($_->{headers}{subject} =~ /reminder/ ? '+' : '') }
           grep { $_->{headers}{to} eq "<$email>" } $a->outbox_messages;
}

###########################################################################
# the configuration check

my ($rc, $out) = $a->cmd('-t');
is($rc, 0, '-t: a good configuration') or diag($out);
like($out, qr/configuration ok/, '-t says so');

my $bad = $t->write_file('agent/bad.conf',
                         $a->conf_text() . "abandon_after 30 minutes\n");
($rc, $out) = Lifecycle::Test::run_cmd([$ENV{LIFECYCLE_AGENT}
                                        || "$FindBin::Bin/../build/lifecycle-agent",
                                        '-c', $bad, '-t']);
is($rc, 1, '-t: a bad one exits 1');
my $line = () = $a->conf_text() =~ /\n/g;
$line++;
like($out, qr/\Q$bad\E:$line: "abandon_after 30 minutes": not a time/,
     '-t: the error names file:line and what is wrong');

# the example configuration of the repository, with this test's paths
{
    open my $fh, '<', "$FindBin::Bin/../agent/lifecycle-agent.conf" or die;
    local $/;
    my $ex = <$fh>;
    my $dir = $t->prefix;
    $ex =~ s{^secret .*$}{secret $dir/secret.key}m;
    $ex =~ s{^catalog .*$}{catalog $FindBin::Bin/../conf/demo/catalog.tsv}m;
    $ex =~ s{^templates .*$}{templates $FindBin::Bin/../agent/templates}m;
    my $f = $t->write_file('agent/example.conf', $ex);
    ($rc, $out) = Lifecycle::Test::run_cmd([$ENV{LIFECYCLE_AGENT}
                                            || "$FindBin::Bin/../build/lifecycle-agent",
                                            '-c', $f, '-t']);
    is($rc, 0, 'agent/lifecycle-agent.conf is a valid configuration')
        or diag($out);
}

###########################################################################
# cooldown: one abandonment message per person, whatever the device

$a->start('p1', cooldown => '1h', welcome => 'off');

my ($d1, $d2) = (random_vid(), random_vid());
$a->visit($d1, '/product/p1.html', '/product/p2.html');
$a->optin($d1, 'cool@example.com');
$a->visit($d2, '/product/p3.html', '/product/p3.html');
$a->optin($d2, 'cool@example.com');

ok($a->wait_log('p1', qr/session=$d1:1 .*decision=(send|skip)/, 10)
   && $a->wait_log('p1', qr/session=$d2:1 .*decision=(send|skip)/, 10),
   'both sessions judged') or diag($a->log('p1'));
sleep 1;
is(join(' ', kinds_to('cool@example.com')), 'browse',
   'two abandoned sessions of one person: one message in the cooldown');
like($a->log('p1'), qr/decision=skip reason=cooldown/, 'the other: cooldown');

is($a->stop('p1'), 0, 'agent stopped');

###########################################################################
# follow-ups, and a purchase that stops them

$a->start('p2', followups => '1s,2s', welcome => 'off');

my $f1 = random_vid();
$a->visit($f1, '/product/p2.html', ['POST', '/cart/add?sku=p2']);
$a->optin($f1, 'follow@example.com');

ok((wait_until { scalar(kinds_to('follow@example.com')) >= 3 } timeout => 15),
   'a cart message and its two follow-ups') or diag($a->log('p2'));
is(join(' ', kinds_to('follow@example.com')), 'cart cart+ cart+',
   'the follow-ups say they are reminders');

my $f2 = random_vid();
$a->visit($f2, '/product/p4.html', ['POST', '/cart/add?sku=p4']);
$a->optin($f2, 'buyer@example.com');
ok((wait_until { scalar(kinds_to('buyer@example.com')) >= 1 } timeout => 10),
   'the first cart message');
$a->visit($f2, '/checkout/done?order=F200');
ok($a->wait_log('p2', qr/step=1 person=\w+ decision=cancel reason="purchased"/, 10),
   'the purchase cancels the follow-up') or diag($a->log('p2'));
sleep 2.5;
is(join(' ', kinds_to('buyer@example.com')), 'cart', 'no reminder after it');

is($a->stop('p2'), 0, 'agent stopped');

###########################################################################
# an unsubscribe (what the module's endpoint does) stops everything

$a->start('p3', followups => '30s', welcome => 'off', cooldown => '1s');

my $u = random_vid();
$a->visit($u, '/product/p1.html', '/product/p3.html');
$a->optin($u, 'leaver@example.com');
ok((wait_until { scalar(kinds_to('leaver@example.com')) >= 1 } timeout => 10),
   'the browse message');
ok($a->wait_log('p3', qr/step=1 .*decision=follow-up/, 5), 'a follow-up queued');

my $pid = $a->person_id('leaver@example.com');
my $res = $a->unsubscribe($pid);
is($res->status, 200, 'the unsubscribe link of the message: 200');
ok($r->hgetall('lc:{' . vid_shard($pid) . "}:P:$pid")->{unsub},
   'the module marked the person unsubscribed');
ok($a->wait_log('p3', qr/decision=cancel reason=unsubscribed/, 10),
   'the queued follow-up is cancelled') or diag($a->log('p3'));
is($r->cmd('ZCARD', 'lc:{agent}:due'), 0, 'nothing left in the queue');

# the visitor's next session is skipped: the person unsubscribed
my $past = int(time() * 1000) - 31 * 60 * 1000;
$r->cmd('HSET', key_profile($u), 'last', $past, 'sess_last', $past);
$a->visit($u, '/product/p2.html', '/product/p4.html');
is($r->hgetall(key_profile($u))->{visits}, 2, 'a second session');
ok($a->wait_log('p3', qr/session=$u:2 kind=browse person=$pid decision=skip reason="unsubscribed"/, 10),
   'an unsubscribed person gets nothing more') or diag($a->log('p3'));

# a new opt-in (a consent given after the unsubscribe) lifts it
my $u2 = random_vid();
$a->visit($u2, '/product/p2.html', '/product/p2.html');
$a->optin($u2, 'leaver@example.com');
ok($a->wait_log('p3', qr/person=$pid opted in again after unsubscribing/, 10),
   'a new opt-in after the unsubscribe is a new consent');
is($r->hgetall('lc:{' . vid_shard($pid) . "}:P:$pid")->{unsub}, undef,
   'the unsubscribe is lifted');

###########################################################################
# SIGHUP: the configuration again

$a->write_conf('p3', followups => '30s', welcome => 'off', cooldown => '1s',
               log_level => 'info', abandon_after => '5s');
kill 'HUP', $a->pid('p3');
ok($a->wait_log('p3', qr/reload: .*p3\.conf loaded/, 5), 'SIGHUP reloads');

$t->write_file('agent/p3.conf', "redis nowhere\n");
kill 'HUP', $a->pid('p3');
ok($a->wait_log('p3', qr/reload: .*the configuration in use stays/, 5),
   'a bad configuration is refused, the running one stays');
ok(kill(0, $a->pid('p3')), 'and the agent runs on');

is($a->stop('p3'), 0, 'agent stopped');

$t->stop;
done_testing();
