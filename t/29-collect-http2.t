#!/usr/bin/perl
# lifecycle_collect over HTTP/2 (h2c, prior knowledge, with curl): the
# request body filter sees HTTP/2 DATA frames as it sees HTTP/1.1
# bodies: beacons stored whole, also through a 16-byte
# client_body_buffer_size and without a length, refusals as JSON, no
# temporary file.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $curl = (grep { -x "$_/curl" } split /:/, $ENV{PATH} // '')[0];
plan skip_all => 'curl is not installed' unless $curl;
my ($rc, $v) = Lifecycle::Test::run_cmd(["$curl/curl", '-V']);
plan skip_all => 'curl without HTTP/2' unless $v =~ /\bHTTP2\b/;

my $t = Lifecycle::Test->new;
$t->config(<<'EOF');
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_timeout 2s;

    server {
        listen 127.0.0.1:%%PORT%% http2;
        location = /lifecycle/collect {
            client_body_buffer_size 16;
            lifecycle_collect;
        }
    }
EOF
$t->start;

my $vid = random_vid();
my $out = $t->prefix . '/curl.out';

sub h2 {
    my ($body, @extra) = @_;
    unlink $out;
    my ($rc, $text) = Lifecycle::Test::run_cmd(
        ["$curl/curl", '-s', '--http2-prior-knowledge', '-o', $out,
         '-w', '%{http_code} %{http_version}',
         '-H', 'Cookie: ' . $t->cookie_for($vid), @extra,
         '--data-binary', $body,
         'http://127.0.0.1:' . $t->port . '/lifecycle/collect']);
    my $answer = -e $out ? do { local (@ARGV, $/) = $out; <> } : '';
    return ($text, $answer);
}

my $id = 'A' x 128;
my ($st, $body) = h2("e=add_to_cart&id=$id&qty=2");
is($st, '204 2', 'HTTP/2: a 150-byte beacon through a 16-byte buffer: 204');
is($t->redis->hgetall(key_cart($vid))->{$id}, 2, '... stored whole');

($st, $body) = h2('e=add_to_cart&id=nolength', '-H', 'Transfer-Encoding: chunked');
is($st, '204 2', 'HTTP/2 without a length: 204');
is($t->redis->hgetall(key_cart($vid))->{nolength}, 1, '... stored');

($st, $body) = h2('e=bogus');
is($st, '400 2', 'HTTP/2: a bad beacon: 400');
is($body, '{"error":"bad_event"}', '... with its reason');

($st, $body) = h2('e=custom&name=n&id=' . ('b' x 3000), '-H', 'Transfer-Encoding: chunked');
is($st, '413 2', 'HTTP/2, no length, too large: 413 once it is all in');
is($body, '{"error":"too_large"}', '... with its reason');

my @temp = glob($t->prefix . '/tmp/client_body/*');
is(scalar @temp, 0, 'no temporary file');

$t->stop;
done_testing;
