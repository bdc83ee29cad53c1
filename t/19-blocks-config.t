#!/usr/bin/perl
# Configuration of blocks, popups and the holdout: a full valid set passes
# nginx -t; each mistake is refused with "[emerg] ... in FILE:LINE", a
# template error also naming the template's own line.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

my $t = Lifecycle::Test->new;
$t->html('index.html', "<html><body><!--lc:slot hero-->d<!--/lc:slot--></body></html>\n");

my $good = $t->write_file('good.html', "{{#recent}}<a>{{title}}</a>{{/recent}}\n");
my $bad  = $t->write_file('bad.html', "line one\n{{#recent}}\nunclosed\n");
my $tag  = $t->write_file('tag.html', "ok\n\n{{ bad name! }}\n");

my $full = <<"CONF";
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_holdout 2.5%;
    lifecycle_segment fans product_views>=2;
    lifecycle_block hero * $good;
    lifecycle_script_url /static/lc.js?v=2;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        lifecycle_holdout 10%;
        lifecycle_segment buyers purchases>=1;
        lifecycle_block hero buyers $good;
        lifecycle_block hero * $good;
        lifecycle_popup join buyers $good cap=2/7d delay=1500ms min_views=3;
        lifecycle_popup any * $good;

        location /x/ {
            lifecycle_block side buyers $good;
            lifecycle_popup p2 buyers $good cap=1/1h;
            lifecycle_script_url https://cdn.example.com/lifecycle.js;
        }
    }
CONF

$t->config($full);
my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t accepts blocks, popups, holdout') or diag $out;

my $base = "    lifecycle_redis %%REDIS%%;\n    lifecycle_secret %%SECRET%%;\n"
         . "    lifecycle_segment fans views>=2;\n";
my $open = "    server { listen 127.0.0.1:%%PORT%%; root %%HTML%%; lifecycle on;\n";
my $close = "    }\n";

my @cases = (
    ['unknown segment in lifecycle_block',
     "$base$open        lifecycle_block hero nobody $good;\n$close",
     qr/lifecycle_block hero nobody/, qr/unknown segment "nobody"/],
    ['unknown segment in lifecycle_popup',
     "$base$open        lifecycle_popup p nobody $good;\n$close",
     qr/lifecycle_popup p nobody/, qr/unknown segment "nobody"/],
    ['segment of another server',
     "$base    server { listen 127.0.0.1:%%PORT%%; lifecycle_segment mine views>=1; }\n"
     . "    server { listen 127.0.0.1:%%PORT2%%; lifecycle on;\n"
     . "        lifecycle_block hero mine $good;\n$close",
     qr/lifecycle_block hero mine/, qr/unknown segment "mine"/],
    ['template with an unclosed section',
     "$base$open        lifecycle_block hero fans $bad;\n$close",
     qr/lifecycle_block hero fans/, qr/\Q$bad\E.*line \d+/],
    ['template with a bad tag, its line',
     "$base$open        lifecycle_popup p fans $tag;\n$close",
     qr/lifecycle_popup p fans/, qr/\Q$tag\E.*line 3/],
    ['inline template with an error',
     "$base$open        lifecycle_block hero fans 'data:<b>{{#x}}</b>';\n$close",
     qr/lifecycle_block hero fans 'data/, qr/template "data:", line 1: unclosed section "x"/],
    ['missing template file',
     "$base$open        lifecycle_block hero fans %%PREFIX%%/none.html;\n$close",
     qr/lifecycle_block hero fans/, qr/none\.html/],
    ['bad slot name',
     "$base$open        lifecycle_block he/ro fans $good;\n$close",
     qr/lifecycle_block he\/ro/, qr/slot name "he\/ro"/],
    ['bad cap',
     "$base$open        lifecycle_popup p fans $good cap=2;\n$close",
     qr/cap=2;/, qr/cap=2/],
    ['zero cap',
     "$base$open        lifecycle_popup p fans $good cap=0/1d;\n$close",
     qr/cap=0/, qr/cap=0\/1d/],
    ['bad delay',
     "$base$open        lifecycle_popup p fans $good delay=soon;\n$close",
     qr/delay=soon/, qr/delay=soon/],
    ['bad min_views',
     "$base$open        lifecycle_popup p fans $good min_views=-1;\n$close",
     qr/min_views/, qr/min_views=-1/],
    ['unknown popup parameter',
     "$base$open        lifecycle_popup p fans $good every=1d;\n$close",
     qr/every=1d/, qr/every=1d/],
    ['popup without a file',
     "$base$open        lifecycle_popup p fans;\n$close",
     qr/lifecycle_popup p fans;/, qr/template file|invalid number/],
    ['holdout over 100%',
     "$base    lifecycle_holdout 101%;\n$open$close",
     qr/lifecycle_holdout/, qr/101%/],
    ['holdout without %',
     "$base    lifecycle_holdout 10;\n$open$close",
     qr/lifecycle_holdout/, qr/holdout "10"/],
    ['holdout in a location',
     "$base$open        location / { lifecycle_holdout 5%; }\n$close",
     qr/lifecycle_holdout/, qr/not allowed here/],
    ['script URL with a quote',
     "$base    lifecycle_script_url /x\"y;\n$open$close",
     qr/lifecycle_script_url/, qr/script URL/],
);

for my $c (@cases) {
    my ($name, $http, $line_re, $msg_re) = @$c;
    my $file = $t->config($http);
    ($rc, $out) = $t->nginx_t;
    isnt($rc, 0, "$name: nginx -t fails");
    my ($emerg) = grep { /\[emerg\]/ } split /\n/, $out;
    $emerg //= '';
    my $line = $t->conf_line($line_re);
    like($emerg, qr/ in \Q$file\E:$line$/, "$name: reported at nginx.conf:$line")
        or diag "output: $out";
    like($emerg, $msg_re, "$name: message says what is wrong") or diag "output: $out";
}

done_testing;
