#!/usr/bin/perl
# lifecycle_collect against hostile input: oversized and lying bodies,
# wrong types, broken framing, bad UTF-8, CRLF and NUL, percent-encoding
# garbage, then 10,000 random beacons from a fixed seed. Never a crash or
# a 5xx, every refusal a JSON reason, Redis called exactly for the
# beacons answered 204 (or 429), what is stored is clean, and the same
# workers serve from the first request to the last.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new(workers => 2);
my $redis = $t->redis;

$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_timeout 2s;

    server {
        listen 127.0.0.1:%%PORT%%;
        lifecycle_popup save-visit * 'data:<p>x</p>' cap=1/1d;
        lifecycle_popup plain * 'data:<p>y</p>';
        location = /lifecycle/collect { lifecycle_collect; }
    }
EOF
$t->start;

my @workers = $t->worker_pids;
my $vid = random_vid();
my $cookie = $t->cookie_for($vid);
my $CT = 'application/x-www-form-urlencoded';

# --- a keep-alive client: 10,000 requests without 10,000 connections ------

my $sock;

sub ka_request {
    my ($raw) = @_;
    for my $try (1, 2) {
        $sock ||= IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                        PeerPort => $t->port, Proto => 'tcp',
                                        Timeout => 5)
            or die "connect: $!";
        my $off = 0;
        while ($off < length $raw) {
            my $n = syswrite($sock, $raw, length($raw) - $off, $off);
            last unless defined $n;
            $off += $n;
        }
        my $res = read_response($sock);
        if (!$res) {            # closed under us (keepalive_requests): again
            close $sock;
            undef $sock;
            next;
        }
        if (($res->{headers}{connection} // '') =~ /close/i) {
            close $sock;
            undef $sock;
        }
        return $res;
    }
    return { status => 0 };
}

sub read_response {
    my ($s) = @_;
    my $buf = '';
    my $sel = IO::Select->new($s);
    my $deadline = time() + 10;
    while ($buf !~ /\r\n\r\n/) {
        return undef if time() > $deadline || !$sel->can_read(5);
        my $n = sysread($s, $buf, 65536, length $buf);
        return undef unless $n;
    }
    my ($head, $body) = split /\r\n\r\n/, $buf, 2;
    my ($status_line, @lines) = split /\r\n/, $head;
    my ($status) = $status_line =~ m{^HTTP/1\.\d (\d{3})} or return undef;
    my %h;
    for (@lines) { my ($k, $v) = /^([^:]+):\s*(.*)$/; $h{lc $k} = $v if $k }
    my $len = $h{'content-length'} // 0;
    while (length $body < $len) {
        return undef if time() > $deadline || !$sel->can_read(5);
        my $n = sysread($s, $body, $len - length $body, length $body);
        return undef unless $n;
    }
    return { status => $status, headers => \%h, body => $body };
}

sub beacon_req {
    my (%o) = @_;
    my $body = $o{body} // '';
    my $req = ($o{method} // 'POST') . " /lifecycle/collect HTTP/1.1\r\n"
            . "Host: localhost\r\nCookie: $cookie\r\n";
    $req .= "Content-Type: $o{type}\r\n" if defined $o{type};
    $req .= "$_\r\n" for @{ $o{headers} || [] };
    $req .= 'Content-Length: ' . length($body) . "\r\n";
    return $req . "\r\n" . $body;
}

my %status;
my $json_ok = 1;

sub check_answer {
    my ($res, $what) = @_;
    $status{ $res->{status} }++;
    return if $res->{status} == 204;
    if ($res->{body} !~ /^\{"error":"[a-z_]+"\}$/
        || ($res->{headers}{'content-type'} // '') ne 'application/json')
    {
        $json_ok = 0;
        diag "$what: $res->{status} " . ($res->{body} // '');
    }
}

my $c0 = $redis->commandstats->{evalsha} // 0;

# --- the known kinds of trouble --------------------------------------------

my @cases = (
    ['a 100 KB body', body => 'e=custom&name=n&id=' . ('a' x 100000), type => $CT,
     expect => 413],
    ['a NUL, raw', body => "e=custom&name=a\0b", type => $CT, expect => 400],
    ['CRLF, raw', body => "e=custom&name=a\r\nX-Injected: 1", type => $CT,
     expect => 400],
    ['CRLF in an email', body => "e=optin&email=a%40b.example%0D%0ABcc%3Ax%40y.z"
                                . '&consent=1', type => $CT,
     headers => ['Origin: http://localhost'], expect => 400],
    ['a bare %', body => 'e=custom&name=%', type => $CT, expect => 400],
    ['%%%', body => '%%%=%%%', type => $CT, expect => 400],
    ['2048 ampersands', body => '&' x 2048, type => $CT, expect => 400],
    ['unknown names, many', body => join('&', map { "f$_=1" } 1 .. 300), type => $CT,
     expect => 400],
    ['the same field 300 times', body => join('&', ('id=1') x 300), type => $CT,
     expect => 400],
    ['everything escaped', body => join('', map { sprintf '%%%02X', ord }
                                            split //, 'e=custom&name=x')
                                   =~ s/%3D/=/gr =~ s/%26/&/gr,
     type => $CT, expect => 204],
    ['invalid UTF-8, raw', body => "e=custom&name=n&id=\xc3\x28", type => $CT,
     expect => 400],
    ['an overlong slash', body => 'e=custom&name=n&id=%C0%AF', type => $CT,
     expect => 400],
    ['binary', body => join('', map { chr } 0 .. 255), type => $CT, expect => 400],
    ['a JSON body', body => '{"e":"custom","name":"n"}', type => 'application/json',
     expect => 415],
    ['a JSON body said to be a form', body => '{"e":"custom","name":"n"}', type => $CT,
     expect => 400],
    ['no content type', body => 'e=custom&name=n', expect => 415],
    ['two content types: the first counts', body => 'e=custom&name=n',
     headers => ["Content-Type: $CT", "Content-Type: text/plain"], expect => 204],
    ['two content types, the other first', body => 'e=custom&name=n',
     headers => ["Content-Type: text/plain", "Content-Type: $CT"], expect => 415],
    ['a GET with a body', method => 'GET', body => 'e=custom&name=n', type => $CT,
     expect => 405],
    ['OPTIONS', method => 'OPTIONS', type => $CT, expect => 405],
    ['an email of 300 bytes', body => 'e=optin&consent=1&email=' . ('a' x 290)
                                     . '%40b.example', type => $CT,
     headers => ['Origin: http://localhost'], expect => 400],
);

for my $c (@cases) {
    my ($name, %o) = @$c;
    my $res = ka_request(beacon_req(%o));
    is($res->{status}, $o{expect}, "$name: $o{expect}");
    check_answer($res, $name);
}

# broken framing: nginx's own answers, never a crash
{
    my $r = $t->http_request("POST /lifecycle/collect HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Type: $CT\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        . "zz\r\ne=custom\r\n0\r\n\r\n");
    is($r->status, 400, 'invalid chunked framing: 400');

    $r = $t->http_request("POST /lifecycle/collect HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Type: $CT\r\nContent-Length: 2000000\r\nConnection: close\r\n\r\n",
        timeout => 10);
    is($r->status, 413, 'beyond client_max_body_size: 413');

    # a body that stops short: the client goes away, nginx notes it
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port,
                                  Proto => 'tcp') or die;
    print $s "POST /lifecycle/collect HTTP/1.1\r\nHost: localhost\r\n"
           . "Cookie: $cookie\r\nContent-Type: $CT\r\nContent-Length: 50\r\n\r\n"
           . "e=custom";
    close $s;
    my $gone = wait_until { $t->log_lines(qr/client prematurely closed connection/) }
        timeout => 5;
    ok($gone, 'a body cut short: the request ends when the client goes');

    # a slow body, in pieces
    $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port,
                               Proto => 'tcp') or die;
    my $body = 'e=custom&name=slow';
    print $s "POST /lifecycle/collect HTTP/1.1\r\nHost: localhost\r\n"
           . "Cookie: $cookie\r\nContent-Type: $CT\r\nContent-Length: "
           . length($body) . "\r\nConnection: close\r\n\r\n";
    for my $piece ($body =~ /(.{1,6})/g) {
        $s->flush;
        sleep 0.05;             # the point: arriving over several reads
        print $s $piece;
    }
    my $res = read_response($s);
    is($res && $res->{status}, 204, 'a body arriving in pieces: 204');
    $status{204}++ if $res && $res->{status} == 204;
    close $s;
}

# --- 10,000 random beacons ---------------------------------------------------

srand(20240601);

my @events = (qw(add_to_cart remove_from_cart purchase popup_shown
                 popup_dismissed optin custom),
              'add_to_basket', '', 'ADD_TO_CART', 'optin%00', 'custom ');
my @names = (qw(e id qty value currency order popup name email consent),
             'foo', 'E', 'e%20', '%65', 'id[]', '', 'qty%00', 'email%0a');
my %values = (
    id       => ['p1', 'sku-7', 'x' x 128, 'x' x 129, 'a%2Fb', '%E2%82%AC', 'p%0A1'],
    qty      => [qw(1 2 999 0 1000 -1 1.5 abc 01), ''],
    value    => [qw(12.34 0 0.5 1.999 1e3 -2 999999999.99 1234567890)],
    currency => [qw(EUR USD eur EURO E1)],
    order    => ['A-1', 'A-2', 'o' x 129, 'A%0D1'],
    popup    => ['save-visit', 'plain', 'nope', 'bad+name', 'x' x 65],
    name     => ['video.play', 'n', 'bad+name', 'n' x 65],
    email    => ['a%40b.example', 'A%40B.EXAMPLE', '+x%40y.example+', 'bad',
                 'a%40b.example%0D%0ABcc%3Ax%40y.example', '%22q%22%40b.example',
                 '%C3%A9%40b.example', 'a%40b'],
    consent  => [qw(1 0 yes)],
);

sub garbage {
    my $kind = int rand 5;
    my $len = int rand 24;
    return join '', map { chr int rand 256 } 1 .. $len if $kind == 0;
    return join '', map { ('%', '%' . sprintf('%X', int rand 16),
                           sprintf('%%%02X', int rand 256), 'a', '+', '=')
                          [int rand 6] } 1 .. $len if $kind == 1;
    return join '', map { ("\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                           "\xc3", "\xed\xa0\x80", "\xc0\xaf", "\x00", "\r\n")
                          [int rand 8] } 1 .. 1 + int rand 4 if $kind == 2;
    return 'x' x (2000 + int rand 200) if $kind == 3;
    return '';
}

# what each event must and may carry, with values that pass
my %valid = (
    id       => ['p1', 'sku-7', 'x' x 128, 'a%2Fb', '%E2%82%AC', 'caf%C3%A9'],
    qty      => [qw(1 2 999)],
    value    => [qw(12.34 0 0.5 999999999.99)],
    currency => [qw(EUR USD)],
    order    => ['A-1', 'A-2', 'B-' . int rand 1e6],
    popup    => ['save-visit', 'plain'],
    name     => ['video.play', 'n', 'x:y-z_1'],
    email    => ['a%40b.example', 'A%40B.EXAMPLE', '+x%40y.example+'],
    consent  => ['1'],
);
my %shape = (
    add_to_cart      => [[qw(id)], [qw(qty value currency)]],
    remove_from_cart => [[qw(id)], [qw(qty)]],
    purchase         => [[], [qw(order value currency)]],
    popup_shown      => [[qw(popup)], []],
    popup_dismissed  => [[qw(popup)], []],
    optin            => [[qw(email consent)], [qw(popup)]],
    custom           => [[qw(name)], [qw(id qty value currency order popup)]],
);

sub pick { $_[0][int rand @{ $_[0] }] }

sub random_body {
    my @pairs;

    if (rand() < 0.5) {
        # a beacon that should pass, maybe with one thing wrong
        my $e = pick([sort keys %shape]);
        my ($req, $opt) = @{ $shape{$e} };
        push @pairs, "e=$e";
        push @pairs, "$_=" . pick($valid{$_}) for @$req;
        push @pairs, "$_=" . pick($valid{$_}) for grep { rand() < 0.4 } @$opt;
        if (rand() < 0.3) {
            my $name = pick(\@names);
            my $v = $values{$name} ? pick($values{$name}) : garbage();
            splice @pairs, int rand(@pairs + 1), 0, "$name=$v";
        }
        @pairs = sort { rand() <=> 0.5 } @pairs if rand() < 0.2;
        return join '&', @pairs;
    }

    push @pairs, 'e=' . $events[int rand @events] if rand() < 0.8;
    for (1 .. int rand 5) {
        my $name = $names[int rand @names];
        my $v = rand() < 0.85 && $values{$name}
              ? $values{$name}[int rand @{ $values{$name} }]
              : garbage();
        push @pairs, rand() < 0.05 ? $name : "$name=$v";
    }
    @pairs = reverse @pairs if rand() < 0.1;
    return join(rand() < 0.95 ? '&' : ('&&', ';', '=')[int rand 3], @pairs);
}

my $n = $ENV{LIFECYCLE_FUZZ_N} // 10000;
my $lost = 0;

for my $i (1 .. $n) {
    my @headers;
    push @headers, 'Origin: ' . (rand() < 0.8 ? 'http://localhost' : 'http://evil.example')
        if rand() < 0.9;
    push @headers, 'Sec-Fetch-Site: ' . (qw(same-origin cross-site same-site))[int rand 3]
        if rand() < 0.2;
    my $type = rand() < 0.97 ? $CT . (rand() < 0.2 ? '; charset=UTF-8' : '')
             : ('text/plain', 'multipart/form-data', undef)[int rand 3];
    my $method = rand() < 0.99 ? 'POST' : (qw(GET PUT))[int rand 2];
    my $res = ka_request(beacon_req(method => $method, type => $type,
                                    body => random_body(), headers => \@headers));
    if ($res->{status} == 0) { $lost++; next }
    check_answer($res, "random beacon $i");
}

is($lost, 0, "$n random beacons: every one answered");
my @bad = grep { !/^(204|400|403|405|413|415|429)$/ } keys %status;
is_deeply(\@bad, [], 'only 204, 400, 403, 405, 413, 415, 429')
    or diag explain \%status;
ok(!grep({ /^5/ } keys %status), 'no 5xx');
ok($json_ok, 'every refusal: a JSON reason');
ok(($status{204} // 0) > 500 && ($status{400} // 0) > 500,
   "a mix of stored and refused ($status{204} stored, $status{400} refused)");
note(join ', ', map { "$_: $status{$_}" } sort keys %status);

my $calls = ($redis->commandstats->{evalsha} // 0) - $c0;
is($calls, ($status{204} // 0) + ($status{429} // 0),
   "Redis called for the beacons answered 204 or 429 only ($calls times)");

# --- what was stored is clean -----------------------------------------------

my $entries = $redis->stream(key_events($vid));
my %type_ok = map { $_ => 1 } qw(add_to_cart remove_from_cart purchase popup_shown
                                 popup_dismissed optin custom);
sub bad_entry {
    my ($e) = @_;
    return 'type' unless $type_ok{ $e->{type} // '' };
    return 'vid' unless ($e->{vid} // '') eq $vid;
    for my $k (grep { $_ ne '_id' } keys %$e) {
        my $v = $e->{$k};
        return "$k undefined" unless defined $v;
        my $copy = $v;
        return "$k not UTF-8" unless utf8::decode($copy);
        return "$k control" if $v =~ /[\x00-\x1f\x7f]/;
    }
    return 'email' if defined $e->{email}
        && $e->{email} !~ /^[a-z0-9.!#\$%&'*+\/=?^_`{|}~-]+\@[a-z0-9.-]+$/;
    return 'id' if defined $e->{id} && length $e->{id} > 128;
    return 'qty' if defined $e->{qty} && $e->{qty} !~ /^[1-9][0-9]{0,2}$/;
    return '';
}
my ($bad_entry) = grep { bad_entry($_) } @$entries;
ok(@$entries > 500, scalar(@$entries) . ' events stored');
ok(!$bad_entry, 'every stored event: a known type, clean UTF-8, valid fields')
    or diag bad_entry($bad_entry), explain $bad_entry;

my $p = $redis->hgetall(key_profile($vid));
ok(!(grep { /[\x00-\x1f\x7f]/ } %$p), 'the profile: no control character anywhere');
ok(!defined $p->{email} || $p->{email} =~ /^[a-z0-9.+]+\@[a-z0-9.-]+$/,
   'the profile: a normalised email, if any');
ok(($p->{cart} // 0) >= 0, 'the profile: cart not negative');
my $cart = $redis->hgetall(key_cart($vid));
ok(!(grep { $_ !~ /^[1-9][0-9]*$/ } values %$cart), 'the cart: positive quantities');

is_deeply([$t->worker_pids], \@workers, 'the same workers, none crashed');

$t->allow_error(qr/client sent invalid chunked body/);
$t->allow_error(qr/client intended to send too large body/);
$t->stop;
done_testing;
