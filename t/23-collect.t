#!/usr/bin/perl
# lifecycle_collect, the beacon endpoint: what each event stores in Redis
# (profile fields, cart hash, orders, popup history, opt-in, the event
# stream), every refusal with its status and reason and nothing stored,
# same-origin opt-ins, the opt-in rate limit, visitors that are not
# tracked or have no valid cookie, one Redis round trip per beacon,
# NOSCRIPT, no temporary file ever, and the metrics.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time);
use IO::Select;
use IO::Socket::INET;
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new(workers => 2);
my $redis = $t->redis;

$t->html('index.html', "<html><body><p>home</p></body></html>\n");

$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    # generous budget: exact checks must not depend on the machine's load
    lifecycle_timeout 2s;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        lifecycle_view page ^/;

        lifecycle_popup save-visit * 'data:<form>save</form>' cap=2/1d;
        lifecycle_popup plain * 'data:<p>plain</p>';

        location = /lifecycle/collect { lifecycle_collect; }

        # nginx's own buffer smaller than a beacon: still never a file
        location = /tiny-buffer {
            client_body_buffer_size 16;
            lifecycle_collect;
        }

        location = /small { lifecycle_collect max_body=64 optin_limit=2/1h; }

        location = /status { lifecycle off; lifecycle_status; }
    }

    # a consent banner: tracked only with the consent cookie
    server {
        listen 127.0.0.1:%%PORT_CONSENT%%;
        lifecycle_consent $cookie_ok;
        location = /lifecycle/collect { lifecycle_collect; }
    }
EOF
$t->start;

my $CT = 'application/x-www-form-urlencoded';
my %tally;     # result/reason => beacons, checked against the metrics

sub post {
    my ($path, $body, @h) = @_;
    my %has = map { lc $_ => 1 } @h[grep { $_ % 2 == 0 } 0 .. $#h];
    unshift @h, 'Content-Type' => $CT unless $has{'content-type'};
    return $t->http_post($path, $body, @h);
}

# every key with its value (DUMP: type and content, not the TTL)
sub snapshot {
    my %s;
    for my $k ($redis->keys_matching('*')) {
        $s{$k} = $redis->cmd('DUMP', $k);
    }
    return \%s;
}

sub now_ms { int(time() * 1000) }

sub entries_of {
    my ($vid) = @_;
    return [ grep { ($_->{vid} // '') eq $vid } @{ $redis->stream(key_events($vid)) } ];
}

sub last_event {
    my ($vid) = @_;
    my $e = entries_of($vid);
    return $e->[-1];
}

# a beacon that must be stored: 204, empty, no cookie
sub stored {
    my ($name, $cookie, $body, @h) = @_;
    my $r = post('/lifecycle/collect', $body, Cookie => $cookie, @h);
    is($r->status, 204, "$name: 204") or diag $r->raw;
    is($r->body, '', "$name: no body");
    is(scalar $r->set_cookies, 0, "$name: no cookie set");
    $tally{accepted}++ if $r->status == 204;
    return $r;
}

# a beacon that must be refused: status, JSON reason, nothing stored
sub refused {
    my ($name, $status, $reason, $body, %o) = @_;
    my $before = snapshot();
    my $r = post($o{path} // '/lifecycle/collect', $body,
                 Cookie => $o{cookie} // $o{default_cookie},
                 @{ $o{headers} || [] });
    is($r->status, $status, "$name: $status") or diag $r->raw;
    is($r->body, qq({"error":"$reason"}), qq($name: {"error":"$reason"}));
    is($r->header('Content-Type'), 'application/json', "$name: application/json");
    is($r->header('Cache-Control'), 'no-store', "$name: Cache-Control: no-store");
    is_deeply(snapshot(), $before, "$name: nothing stored");
    $tally{"rejected/$reason"}++;
    return $r;
}

my $vid = random_vid();
my $cookie = $t->cookie_for($vid);
my $key = key_profile($vid);

# a page view first: the profile exists, with the retention
is($t->http_get('/', Cookie => $cookie)->status, 200, 'a page view');
my $p = $redis->hgetall($key);
is($p->{visits}, 1, 'profile: visit 1');

# --- add_to_cart ----------------------------------------------------------

my $t0 = now_ms();
stored('add_to_cart qty=2', $cookie, 'e=add_to_cart&id=p1&qty=2');
is_deeply($redis->hgetall(key_cart($vid)), { p1 => 2 }, 'cart hash: p1 => 2');
$p = $redis->hgetall($key);
is($p->{cart}, 2, 'profile cart 2');
is($p->{'s.cart_adds'}, 1, 'session cart_adds 1');
my $ev = last_event($vid);
is($ev->{type}, 'add_to_cart', 'event type add_to_cart');
is($ev->{vid}, $vid, 'event vid');
is($ev->{sess}, 1, 'event sess: the visit number');
is($ev->{id}, 'p1', 'event id');
is($ev->{qty}, 2, 'event qty');
ok(!exists $ev->{email} && !exists $ev->{value}, 'no field that was not sent');
my ($ms) = split /-/, $ev->{_id};
ok($ms >= $t0 - 5 && $ms <= now_ms() + 5, 'event time is now (the entry id)');
my $ttl = $redis->ttl(key_cart($vid));
ok($ttl > 86400 && abs($ttl - $redis->ttl($key)) <= 2,
   "a new cart gets the profile's TTL ($ttl s)");

stored('add_to_cart without qty', $cookie, 'e=add_to_cart&id=p1');
is_deeply($redis->hgetall(key_cart($vid)), { p1 => 3 }, 'cart hash: p1 => 3');
is($redis->hgetall($key)->{'s.cart_adds'}, 2, 'session cart_adds 2');

stored('add_to_cart with value', $cookie,
       'e=add_to_cart&id=p2&qty=1&value=19.99&currency=EUR');
$ev = last_event($vid);
is_deeply([@$ev{qw(type id qty value currency)}],
          [qw(add_to_cart p2 1 19.99 EUR)], 'event: value and currency');
$p = $redis->hgetall($key);
is($p->{cart}, 4, 'profile cart 4');

stored('url-encoded id', $cookie, 'e=add_to_cart&id=sku%2F7+red&qty=1');
is($redis->hgetall(key_cart($vid))->{'sku/7 red'}, 1, 'id decoded: "sku/7 red"');
stored('remove it all', $cookie, 'e=remove_from_cart&id=sku%2F7+red');

# --- remove_from_cart -----------------------------------------------------

stored('remove_from_cart qty=1', $cookie, 'e=remove_from_cart&id=p1&qty=1');
is_deeply($redis->hgetall(key_cart($vid)), { p1 => 2, p2 => 1 }, 'cart: p1 => 2');
is($redis->hgetall($key)->{cart}, 3, 'profile cart 3');
is(last_event($vid)->{type}, 'remove_from_cart', 'event remove_from_cart');

stored('remove_from_cart without qty', $cookie, 'e=remove_from_cart&id=p1');
is_deeply($redis->hgetall(key_cart($vid)), { p2 => 1 }, 'no qty: the whole line goes');
is($redis->hgetall($key)->{cart}, 1, 'profile cart 1');

stored('remove_from_cart of what is not there', $cookie,
       'e=remove_from_cart&id=p9&qty=3');
is($redis->hgetall($key)->{cart}, 1, 'cart unchanged');

$redis->cmd('HSET', $key, 'cart', 0);
stored('remove more than counted', $cookie, 'e=remove_from_cart&id=p2&qty=5');
is($redis->hgetall($key)->{cart}, 0, 'cart never below 0');
is($redis->cmd('EXISTS', key_cart($vid)), 0, 'the empty cart hash is gone');

stored('add again', $cookie, 'e=add_to_cart&id=p3&qty=2');

# --- purchase -------------------------------------------------------------

$t0 = now_ms();
stored('purchase', $cookie, 'e=purchase&order=A-1001&value=49.90&currency=EUR');
$p = $redis->hgetall($key);
is($p->{purchases}, 1, 'purchases 1');
is($p->{last_order}, 'A-1001', 'last_order');
ok($p->{last_purchase} >= $t0 && $p->{last_purchase} <= now_ms(), 'last_purchase: now');
is($p->{cart}, 0, 'cart 0');
is($p->{'s.purchase'}, 'A-1001', 'the session has its purchase');
is($redis->cmd('EXISTS', key_cart($vid)), 0, 'cart hash deleted');
is_deeply($redis->cmd('LRANGE', key_orders($vid), 0, -1), ['A-1001'], 'orders list');
$ttl = $redis->ttl(key_orders($vid));
ok($ttl > 86400, "the orders list gets a TTL ($ttl s)");
$ev = last_event($vid);
is_deeply([@$ev{qw(type order value currency)}], [qw(purchase A-1001 49.90 EUR)],
          'event purchase: order, value, currency');

my $n_events = scalar @{ entries_of($vid) };
stored('the same order again', $cookie, 'e=purchase&order=A-1001');
is($redis->hgetall($key)->{purchases}, 1, 'an order already recorded counts once');
is(scalar @{ entries_of($vid) }, $n_events, '... and is no new event');

stored('purchase without an order id', $cookie, 'e=purchase');
$p = $redis->hgetall($key);
is($p->{purchases}, 2, 'purchases 2');
is($p->{'s.purchase'}, '1', 'session purchase "1"');
is_deeply($redis->cmd('LRANGE', key_orders($vid), 0, -1), ['A-1001'],
          'no order id: the list is unchanged');

# --- popups ---------------------------------------------------------------

# a popup's state on the profile: "SHOWN WINDOW DISMISSED CONVERTED"
sub pop_state {
    my ($name) = @_;
    my @v = split / /, $redis->hgetall($key)->{"pop:$name"} // '';
    return { n => $v[0], t => $v[1], d => $v[2], c => $v[3] };
}

sub popup_on_page {
    my $body = $t->http_get('/', Cookie => $cookie)->body;
    my ($name) = $body =~ /data-lc-popup="([^"]+)"/;
    return $name // '';
}

is(popup_on_page(), 'save-visit', 'the page offers save-visit');

$t0 = now_ms();
stored('popup_shown', $cookie, 'e=popup_shown&popup=save-visit');
my $st = pop_state('save-visit');
is($st->{n}, 1, 'pop:save-visit: shown 1');
ok($st->{t} >= $t0 && $st->{t} <= now_ms(), 'pop:save-visit: the window starts now');
my $since = $st->{t};
is(last_event($vid)->{popup}, 'save-visit', 'event popup_shown with its popup');

stored('popup_shown again', $cookie, 'e=popup_shown&popup=save-visit');
$st = pop_state('save-visit');
is($st->{n}, 2, 'shown 2');
is($st->{t}, $since, 'same window');
is(popup_on_page(), 'plain', 'cap=2/1d reached: the page offers the next popup');

# the window began longer ago than the cap period: a new one
$redis->cmd('HSET', $key, 'pop:save-visit', join(' ', 2, now_ms() - 86400 * 1000 - 5000, 0, 0));
is(popup_on_page(), 'save-visit', 'window over: save-visit is offered again');
$t0 = now_ms();
stored('popup_shown after the window', $cookie, 'e=popup_shown&popup=save-visit');
$st = pop_state('save-visit');
is($st->{n}, 1, 'a new window: shown 1');
ok($st->{t} >= $t0, 'a new window: it starts now');

# an uncapped popup counts its shows over 30 days
stored('popup_shown, no cap', $cookie, 'e=popup_shown&popup=plain');
$redis->cmd('HSET', $key, 'pop:plain', join(' ', 1, now_ms() - 29 * 86400 * 1000, 0, 0));
stored('popup_shown, no cap, 29 days on', $cookie, 'e=popup_shown&popup=plain');
is(pop_state('plain')->{n}, 2, 'uncapped: the window is 30 days');

$t0 = now_ms();
stored('popup_dismissed', $cookie, 'e=popup_dismissed&popup=plain');
$st = pop_state('plain');
ok($st->{d} >= $t0 && $st->{d} <= now_ms(), 'pop:plain: dismissed now');
is($st->{n}, 2, 'pop:plain: the dismissal keeps the shows');
is(last_event($vid)->{type}, 'popup_dismissed', 'event popup_dismissed');

# --- optin ----------------------------------------------------------------

my @same = (Origin => 'http://localhost');
my $optins0 = $t->metric($t->status_metrics, 'lifecycle_optins_total');
$t0 = now_ms();
stored('optin', $cookie,
       'e=optin&email=+Foo.Bar%40Example.COM+&consent=1&popup=save-visit', @same);
$p = $redis->hgetall($key);
is($p->{email}, 'foo.bar@example.com', 'email stored normalised');
ok($p->{optin} >= $t0 && $p->{optin} <= now_ms(), 'optin: the time of consent');
ok(pop_state('save-visit')->{c} >= $t0, 'pop:save-visit: converted');
$ev = last_event($vid);
is_deeply([@$ev{qw(type email popup sess)}],
          ['optin', 'foo.bar@example.com', 'save-visit', 1],
          'event optin: normalised email, popup, session');
is($t->metric($t->status_metrics, 'lifecycle_optins_total'), $optins0 + 1,
   'lifecycle_optins_total +1');
is(popup_on_page(), '', 'opted in: no popup any more');

stored('optin, Sec-Fetch-Site', $cookie, 'e=optin&email=a%40b.example&consent=1',
       'Sec-Fetch-Site' => 'same-origin');
is($redis->hgetall($key)->{email}, 'a@b.example', 'Sec-Fetch-Site: same-origin is enough');

# --- custom ---------------------------------------------------------------

my $before = $redis->hgetall($key);
stored('custom', $cookie, 'e=custom&name=video.play&id=p1&value=0');
is_deeply($redis->hgetall($key), $before, 'custom: the profile is unchanged');
$ev = last_event($vid);
is_deeply([@$ev{qw(type name id value)}], [qw(custom video.play p1 0)],
          'custom: an event with its name and fields');
my @beacons = grep { $_->{type} ne 'page' } @{ entries_of($vid) };
ok(@beacons > 20 && !(grep { ($_->{sess} // '') ne '1' } @beacons),
   'every beacon event carries vid and sess (' . scalar(@beacons) . ' events)');

# --- refusals: 400 --------------------------------------------------------

my %o = (default_cookie => $cookie);
my $id129 = 'x' x 129;

refused('no e', 400, 'missing_field', 'id=p1', %o);
refused('empty body', 400, 'missing_field', '', %o);
refused('e empty', 400, 'missing_field', 'e=&id=p1', %o);
refused('unknown event', 400, 'bad_event', 'e=add_to_basket&id=p1', %o);
refused('event in upper case', 400, 'bad_event', 'e=ADD_TO_CART&id=p1', %o);
refused('add_to_cart without id', 400, 'missing_field', 'e=add_to_cart&qty=1', %o);
refused('popup_shown without popup', 400, 'missing_field', 'e=popup_shown', %o);
refused('custom without name', 400, 'missing_field', 'e=custom&id=p1', %o);
refused('optin without email', 400, 'missing_field', 'e=optin&consent=1', %o,
        headers => \@same);
refused('optin without consent', 400, 'consent_required',
        'e=optin&email=a%40b.example', %o, headers => \@same);
refused('optin consent=0', 400, 'bad_consent',
        'e=optin&email=a%40b.example&consent=0', %o, headers => \@same);
refused('optin consent=yes', 400, 'bad_consent',
        'e=optin&email=a%40b.example&consent=yes', %o, headers => \@same);
for my $q (qw(0 1000 -1 1.5 01 abc), '1 ', '+1') {
    (my $enc = $q) =~ s/([^A-Za-z0-9.-])/sprintf('%%%02X', ord $1)/ge;
    refused("qty=$q", 400, 'bad_qty', "e=add_to_cart&id=p1&qty=$enc", %o);
}
for my $v ('1.999', 'abc', '-1', '1e5', '1234567890', '1.', '.5', '01.5', '1,5') {
    refused("value=$v", 400, 'bad_value', "e=purchase&value=$v", %o);
}
for my $c (qw(eur EURO E1R EU)) {
    refused("currency=$c", 400, 'bad_currency', "e=purchase&currency=$c", %o);
}
refused('id of 129 bytes', 400, 'bad_id', "e=add_to_cart&id=$id129", %o);
refused('order of 129 bytes', 400, 'bad_order', "e=purchase&order=$id129", %o);
refused('popup not configured', 400, 'bad_popup', 'e=popup_shown&popup=nope', %o);
refused('popup name with a space', 400, 'bad_popup',
        'e=popup_dismissed&popup=save+visit', %o);
refused('custom name with a space', 400, 'bad_name', 'e=custom&name=a+b', %o);
refused('custom name too long', 400, 'bad_name', 'e=custom&name=' . ('n' x 65), %o);
refused('email not an address', 400, 'bad_email',
        'e=optin&email=not-an-address&consent=1', %o, headers => \@same);
refused('email quoted', 400, 'bad_email',
        'e=optin&email=%22a%22%40b.example&consent=1', %o, headers => \@same);
refused('email with a space inside', 400, 'bad_email',
        'e=optin&email=a+b%40c.example&consent=1', %o, headers => \@same);
refused('email non-ASCII', 400, 'bad_email',
        'e=optin&email=j%C3%B6rg%40b.example&consent=1', %o, headers => \@same);
refused('email with CRLF', 400, 'bad_encoding',
        'e=optin&email=a%40b.example%0D%0ABcc%3A+x%40y.example&consent=1', %o,
        headers => \@same);
refused('unknown field', 400, 'unknown_field', 'e=custom&name=x&foo=1', %o);
refused('unknown field, encoded name', 400, 'unknown_field',
        'e=custom&name=x&%69%64x=1', %o);
refused('field twice', 400, 'duplicate_field', 'e=add_to_cart&id=p1&id=p2', %o);
refused('field twice, once empty', 400, 'duplicate_field', 'e=add_to_cart&id=&id=p2', %o);
refused('e twice', 400, 'duplicate_field', 'e=custom&name=x&e=custom', %o);
refused('email on add_to_cart', 400, 'unexpected_field',
        'e=add_to_cart&id=p1&email=a%40b.example', %o);
refused('qty on a popup', 400, 'unexpected_field', 'e=popup_shown&popup=plain&qty=1', %o);
refused('consent on a purchase', 400, 'unexpected_field', 'e=purchase&consent=1', %o);
for my $bad ('%zz', '%4', '%', '%00', '%0A', '%7F', '%FF', '%C3%28', '%ED%A0%80',
             '%C0%AF', '%C2%85', '%F4%90%80%80', "\x01", "p\x7f", '%E2%82') {
    (my $shown = $bad) =~ s/([^ -~])/sprintf('\\x%02x', ord $1)/ge;
    refused("id=$shown", 400, 'bad_encoding', "e=add_to_cart&id=p$bad", %o);
}
refused('bad escape in a name', 400, 'bad_encoding', 'e=custom&name=x&%zz=1', %o);

# valid edge values
stored('value 0, 0.5 and 12.34', $cookie, 'e=custom&name=n&value=0');
stored('value 0.5', $cookie, 'e=custom&name=n&value=0.5');
stored('value 999999999.99', $cookie, 'e=custom&name=n&value=999999999.99&qty=999');
stored('id of 128 bytes, UTF-8', $cookie, 'e=custom&name=n&id=' . ('%C3%A9' x 64));
stored('empty fields count as absent', $cookie, 'e=add_to_cart&id=p1&qty=&value=');
stored('empty pairs are skipped', $cookie, '&e=custom&&name=n&');
stored('charset parameter', $cookie, 'e=custom&name=n',
       'Content-Type' => 'application/x-www-form-urlencoded; charset=UTF-8');
stored('content type in upper case', $cookie, 'e=custom&name=n',
       'Content-Type' => 'Application/X-WWW-Form-URLEncoded');

# --- 405, 415, 413 ---------------------------------------------------------

for my $m (qw(GET PUT DELETE)) {
    my $r = $t->http_get('/lifecycle/collect', -method => $m, Cookie => $cookie);
    is($r->status, 405, "$m: 405");
    is($r->header('Allow'), 'POST', "$m: Allow: POST");
    is($r->body, '{"error":"method_not_allowed"}', "$m: reason");
    is($r->header('Content-Type'), 'application/json', "$m: JSON");
    is($r->header('Cache-Control'), 'no-store', "$m: no-store");
    $tally{'rejected/method_not_allowed'}++;
}
my $r = $t->http_head('/lifecycle/collect', Cookie => $cookie);
is($r->status, 405, 'HEAD: 405');
is($r->header('Allow'), 'POST', 'HEAD: Allow: POST');
$tally{'rejected/method_not_allowed'}++;

refused('text/plain', 415, 'unsupported_media_type', 'e=custom&name=n', %o,
        headers => ['Content-Type' => 'text/plain;charset=UTF-8']);
refused('multipart', 415, 'unsupported_media_type', 'e=custom&name=n', %o,
        headers => ['Content-Type' => 'multipart/form-data; boundary=x']);
refused('a longer type', 415, 'unsupported_media_type', 'e=custom&name=n', %o,
        headers => ['Content-Type' => 'application/x-www-form-urlencodedx']);
{
    my $before = snapshot();
    my $r = $t->http_request("POST /lifecycle/collect HTTP/1.1\r\nHost: localhost\r\n"
        . "Cookie: $cookie\r\nContent-Length: 15\r\nConnection: close\r\n\r\n"
        . "e=custom&name=n");
    is($r->status, 415, 'no Content-Type: 415');
    is($r->body, '{"error":"unsupported_media_type"}', 'no Content-Type: reason');
    is_deeply(snapshot(), $before, 'no Content-Type: nothing stored');
    $tally{'rejected/unsupported_media_type'}++;
}

my $b64 = 'e=custom&name=n&id=' . ('a' x (64 - 19));
is(length $b64, 64, 'a beacon of 64 bytes');
$r = post('/small', $b64, Cookie => $cookie);
is($r->status, 204, 'max_body=64: 64 bytes: 204');
$tally{accepted}++;
refused('max_body=64: 65 bytes', 413, 'too_large', $b64 . 'a', %o, path => '/small');
refused('default max_body: 2049 bytes', 413, 'too_large',
        'e=custom&name=n&id=' . ('a' x 2030), %o);

sub chunked {
    my ($path, $body, $size) = @_;
    my $req = "POST $path HTTP/1.1\r\nHost: localhost\r\nCookie: $cookie\r\n"
            . "Content-Type: $CT\r\nTransfer-Encoding: chunked\r\n"
            . "Connection: close\r\n\r\n";
    for (my $i = 0; $i < length $body; $i += $size) {
        my $piece = substr($body, $i, $size);
        $req .= sprintf("%x\r\n%s\r\n", length $piece, $piece);
    }
    return $t->http_request($req . "0\r\n\r\n");
}

$r = chunked('/small', $b64, 5);
is($r->status, 204, 'chunked, 64 bytes in 5-byte chunks: 204');
$tally{accepted}++;
{
    my $before = snapshot();
    $r = chunked('/small', $b64 . 'a', 5);
    is($r->status, 413, 'chunked, 65 bytes: 413');
    is($r->body, '{"error":"too_large"}', 'chunked, 65 bytes: reason');
    is_deeply(snapshot(), $before, 'chunked, too large: nothing stored');
    $tally{'rejected/too_large'}++;
    $r = chunked('/lifecycle/collect', 'e=custom&name=n&id=' . ('b' x 20000), 1000);
    is($r->status, 413, 'chunked, 20 KB: 413');
    is($r->body, '{"error":"too_large"}', 'chunked, 20 KB: JSON reason');
    $tally{'rejected/too_large'}++;
}

{
    # a Content-Length beyond the limit is answered before the body comes
    # (nginx then waits a little for it, lingering close, before closing)
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port,
                                  Proto => 'tcp', Timeout => 5) or die "connect: $!";
    my $t1 = time();
    print $s "POST /lifecycle/collect HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Type: $CT\r\nContent-Length: 100000\r\n\r\ne=custom";
    my $head = '';
    my $sel = IO::Select->new($s);
    while ($head !~ /\r\n\r\n.*"\}/s && time() - $t1 < 5) {
        $sel->can_read(0.5) or next;
        sysread($s, $head, 4096, length $head) or last;
    }
    like($head, qr{^HTTP/1\.1 413 .*\{"error":"too_large"\}}s,
         'Content-Length 100000, body not sent: 413 and its reason');
    ok(time() - $t1 < 2, '... at once, without waiting for the body');
    close $s;
    $tally{'rejected/too_large'}++;
}

# nginx's buffer of 16 bytes: the body comes through it in pieces
my $long_id = '%41' x 128;
$r = post('/tiny-buffer', "e=add_to_cart&id=$long_id&qty=1", Cookie => $cookie);
is($r->status, 204, 'a 400-byte beacon through a 16-byte client_body_buffer_size');
$tally{accepted}++;
is($redis->hgetall(key_cart($vid))->{'A' x 128}, 1, '... stored whole');
$r = chunked('/tiny-buffer', "e=remove_from_cart&id=$long_id", 1);
is($r->status, 204, '... and chunked one byte at a time');
$tally{accepted}++;
ok(!exists $redis->hgetall(key_cart($vid))->{'A' x 128}, '... stored whole');

my @temp = glob($t->prefix . '/tmp/client_body/*');
is(scalar @temp, 0, 'no request body ever went to a temporary file');
is(scalar($t->log_lines(qr/buffered to a temporary file/)), 0,
   'error log: no "buffered to a temporary file"');

# --- 403: opt-in from another origin ---------------------------------------

my $optin = 'e=optin&email=x%40y.example&consent=1';
for my $case (['Origin: another site', [Origin => 'http://evil.example']],
              ['Origin: null', [Origin => 'null']],
              ['Origin: https, page on http', [Origin => 'https://localhost']],
              ['Origin: another port', [Origin => 'http://localhost:8081']],
              ['Origin and Sec-Fetch-Site missing', []],
              ['Sec-Fetch-Site: cross-site', ['Sec-Fetch-Site' => 'cross-site',
                                              Origin => 'http://localhost']],
              ['Sec-Fetch-Site: same-site', ['Sec-Fetch-Site' => 'same-site']],
              ['Sec-Fetch-Site: none', ['Sec-Fetch-Site' => 'none']])
{
    refused($case->[0], 403, 'cross_origin', $optin, %o, headers => $case->[1]);
}
stored('Origin with the default port', $cookie, $optin, Origin => 'http://localhost:80');
stored('Host and Origin with a port', $cookie, $optin,
       Host => 'localhost:8080', Origin => 'http://LOCALHOST:8080');
refused('Host with a port, Origin without', 403, 'cross_origin', $optin, %o,
        headers => [Host => 'localhost:8080', Origin => 'http://localhost']);
stored('other events need no Origin', $cookie, 'e=custom&name=n',
       Origin => 'http://evil.example');

# --- 429: the opt-in rate limit -------------------------------------------

my $rl = random_vid();
my $rl_cookie = $t->cookie_for($rl);
for my $i (1 .. 5) {
    stored("opt-in $i of 5", $rl_cookie, "e=optin&email=u$i%40rl.example&consent=1",
           @same);
}
$r = refused('opt-in 6: over the limit', 429, 'rate_limited',
             'e=optin&email=u6%40rl.example&consent=1', %o, cookie => $rl_cookie,
             headers => \@same);
my $retry = $r->header('Retry-After') // 0;
ok($retry >= 3590 && $retry <= 3600, "Retry-After: the rest of the hour ($retry s)");
is($redis->hgetall(key_profile($rl))->{email}, 'u5@rl.example',
   'the refused opt-in changed nothing');
stored('another visitor is not limited', $t->cookie_for(random_vid()),
       'e=optin&email=v%40rl.example&consent=1', @same);
stored('other events are not limited', $rl_cookie, 'e=custom&name=n');
my $left = $redis->cmd('PTTL', key_profile($rl) . ':rl');
ok($left > 0 && $left <= 3600 * 1000, 'the counter expires with its window');

# optin_limit=2/1h
my $rl2 = $t->cookie_for(random_vid());
for my $i (1 .. 2) {
    is(post('/small', "e=optin&email=w$i%40rl.example&consent=1", Cookie => $rl2,
            @same)->status, 204, "optin_limit=2/1h: opt-in $i");
    $tally{accepted}++;
}
is(post('/small', 'e=optin&email=w3%40rl.example&consent=1', Cookie => $rl2,
        @same)->status, 429, 'optin_limit=2/1h: the third is refused');
$tally{'rejected/rate_limited'}++;

# --- visitors the module does not track ------------------------------------

sub ignored {
    my ($name, $port, @h) = @_;
    my $before = snapshot();
    my $r = $t->http_post('/lifecycle/collect', 'e=add_to_cart&id=p1&qty=1',
                          'Content-Type' => $CT, -port => $port, @h);
    is($r->status, 204, "$name: 204");
    is(scalar $r->set_cookies, 0, "$name: no cookie set");
    is_deeply(snapshot(), $before, "$name: nothing stored");
    return $r;
}

my $fresh = random_vid();
my (undef, $sig) = split_cookie(sign_vid($fresh, $t->secret));
my $port = $t->port;
ignored('no cookie', $port);
$tally{'ignored/no_visitor'}++;
ignored('forged signature', $port, Cookie => "lc_vid=$fresh." . ('A' x 22));
$tally{'ignored/no_visitor'}++;
ignored('signed with another secret', $port,
        Cookie => 'lc_vid=' . sign_vid($fresh, 'another secret of 32 bytes or more!'));
$tally{'ignored/no_visitor'}++;
ignored('cookie cut short', $port, Cookie => "lc_vid=$fresh." . substr($sig, 0, 21));
$tally{'ignored/no_visitor'}++;
ignored('Sec-GPC: 1', $port, Cookie => $t->cookie_for($fresh), 'Sec-GPC' => '1');
$tally{'ignored/not_tracked'}++;
ignored('DNT: 1', $port, Cookie => $t->cookie_for($fresh), DNT => '1');
$tally{'ignored/not_tracked'}++;
ignored('a bot', $port, Cookie => $t->cookie_for($fresh),
        'User-Agent' => 'Mozilla/5.0 (compatible; Googlebot/2.1)');
$tally{'ignored/not_tracked'}++;
ignored('lifecycle_consent empty', $t->port('PORT_CONSENT'),
        Cookie => $t->cookie_for($fresh));
$tally{'ignored/not_tracked'}++;
ignored('lifecycle_consent 0', $t->port('PORT_CONSENT'),
        Cookie => $t->cookie_for($fresh) . '; ok=0');
$tally{'ignored/not_tracked'}++;
$r = $t->http_post('/lifecycle/collect', 'e=add_to_cart&id=p1&qty=1',
                   'Content-Type' => $CT, -port => $t->port('PORT_CONSENT'),
                   Cookie => $t->cookie_for($fresh) . '; ok=1');
is($r->status, 204, 'lifecycle_consent 1: 204');
is($redis->hgetall(key_cart($fresh))->{p1}, 1, 'lifecycle_consent 1: stored');
$tally{accepted}++;
is($redis->ttl(key_profile($fresh)), 90 * 86400,
   'a profile a beacon makes gets lifecycle_retention');

# --- one round trip per beacon, none for the others ------------------------

my $c0 = $redis->commandstats;
$redis->monitor_start;
my $n = 12;
for my $i (1 .. $n) {
    my $body = $i % 3 == 0 ? "e=add_to_cart&id=m$i"
             : $i % 3 == 1 ? 'e=popup_shown&popup=plain'
             :               "e=custom&name=n$i";
    post('/lifecycle/collect', $body, Cookie => $cookie)->status == 204
        or diag "beacon $i not stored";
    $tally{accepted}++;
}
post('/lifecycle/collect', 'e=bogus', Cookie => $cookie);
$tally{'rejected/bad_event'}++;
post('/lifecycle/collect', 'e=custom&name=n');
$tally{'ignored/no_visitor'}++;
post('/lifecycle/collect', 'e=custom&name=n', Cookie => $cookie, DNT => '1');
$tally{'ignored/not_tracked'}++;
my $cmds = $redis->monitor_collect;
my $c1 = $redis->commandstats;
my @evalsha = grep { $_->{cmd} eq 'EVALSHA' } @$cmds;
is(scalar @evalsha, $n, "MONITOR: $n beacons, $n EVALSHA")
    or diag join ', ', map { $_->{cmd} } @$cmds;
is(scalar(grep { $_->{cmd} !~ /^(EVALSHA|PING)$/ } @$cmds), 0,
   'MONITOR: no other command');
my %sha = map { $_->{args}[0] => 1 } @evalsha;
is(scalar keys %sha, 1, 'one script');
is(($c1->{evalsha} // 0) - ($c0->{evalsha} // 0), $n, 'commandstats: evalsha +' . $n);
is_deeply([map { $_->{args}[1] } @evalsha], [(1) x $n], 'one key each');
is_deeply([map { $_->{args}[2] } @evalsha], [($key) x $n], 'KEYS[1]: the profile key');

# --- NOSCRIPT ---------------------------------------------------------------

$redis->cmd('SCRIPT', 'FLUSH');
stored('after SCRIPT FLUSH', $cookie, 'e=add_to_cart&id=after-flush');
is($redis->hgetall(key_cart($vid))->{'after-flush'}, 1, 'after SCRIPT FLUSH: stored');
stored('and again', $cookie, 'e=add_to_cart&id=after-flush');
is($redis->hgetall(key_cart($vid))->{'after-flush'}, 2, 'and the next one too');

# --- metrics ----------------------------------------------------------------

my $m = $t->status_metrics;
for my $k (sort keys %tally) {
    my ($result, $reason) = split m{/}, $k;
    is($t->metric($m, 'lifecycle_collect_total', result => $result,
                  $reason ? (reason => $reason) : ()),
       $tally{$k}, "lifecycle_collect_total{result=\"$result\""
                   . ($reason ? ",reason=\"$reason\"" : '') . "} $tally{$k}");
}
is($t->metric($m, 'lifecycle_collect_total', result => 'rejected',
              reason => 'bad_name'), $tally{'rejected/bad_name'},
   'one counter per reason');
is($t->metric($m, 'lifecycle_collect_total', result => 'lost'), 0, 'nothing lost');

$t->stop;
done_testing;
