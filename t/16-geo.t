#!/usr/bin/perl
# lifecycle_geoip2: $lifecycle_country and $lifecycle_city from MaxMind
# DBs the test writes itself: the loopback client (IPv4 in an IPv6 tree),
# addresses the realip module took from X-Forwarded-For, the
# registered_country fallback, codes normalised or refused, IPv6, an IPv4
# database; config errors; reloads switch databases and unmap the old one.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Test qw(:all);

# The writer is a Debian package (libmaxmind-db-writer-perl): install it
# with the suite's other packages when it is missing and we may.
my $deps = "$FindBin::Bin/../scripts/deps.sh";
my $have_writer = eval { require MaxMind::DB::Writer::Tree; 1 };
if (!$have_writer && -x $deps) {
    system("$deps test 1>&2");
    $have_writer = eval { require MaxMind::DB::Writer::Tree; 1 };
}
plan skip_all => 'MaxMind::DB::Writer::Tree cannot be loaded or installed '
    . '(apt-get install libmaxmind-db-writer-perl)'
    unless $have_writer;

my %types = (
    country            => 'map',
    registered_country => 'map',
    city               => 'map',
    names              => 'map',
    iso_code           => 'utf8_string',
    en                 => 'utf8_string',
);

sub write_db {
    my ($file, $ip_version, @nets) = @_;
    my $tree = MaxMind::DB::Writer::Tree->new(
        ip_version            => $ip_version,
        record_size           => 24,
        database_type         => 'Lifecycle-Test',
        languages             => ['en'],
        description           => { en => 'lifecycle t/16-geo.t' },
        map_key_type_callback => sub { $types{ $_[0] } },
        # every network below is a reserved (documentation, private) one
        remove_reserved_networks => 0,
    );
    while (my ($net, $data) = splice @nets, 0, 2) {
        $tree->insert_network($net, $data);
    }
    open my $fh, '>:raw', $file or die "$file: $!";
    $tree->write_tree($fh);
    close $fh or die "$file: $!";
    return $file;
}

sub place {
    my ($country, $city) = @_;
    my %d = (country => { iso_code => $country });
    $d{city} = { names => { en => $city } } if defined $city;
    return \%d;
}

my $t = Lifecycle::Test->new(redis => 0);
$t->html('index.html', "home\n");

my $db_a = write_db($t->prefix . '/geo-a.mmdb', 6,
    '127.0.0.0/8'     => place('DE', 'Berlin'),
    '10.1.2.0/24'     => place('FR', 'Paris'),
    '203.0.113.0/24'  => place('JP'),
    '192.0.2.0/24'    => place('se', "Malm\x{f6}"),
    '198.18.0.0/24'   => { registered_country => { iso_code => 'NL' } },
    '198.18.1.0/24'   => place('X1', 'Nowhere'),
    '2001:db8:1::/48' => place('CA', 'Toronto'),
);
my $db_b = write_db($t->prefix . '/geo-b.mmdb', 4,
    '127.0.0.0/8'     => place('AT', 'Vienna'),
    '10.1.2.0/24'     => place('IT', 'Rome'),
);
my $not_db = $t->write_file('not-a-db.mmdb', "country\tDE\n" x 64);

my $servers = <<'EOF';
    # realip: the client is the last address in X-Forwarded-For
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
        add_header X-Country $lifecycle_country always;
        add_header X-City $lifecycle_city always;

        location = /echo {
            return 200 "[$lifecycle_country][$lifecycle_city]\n";
        }
    }

    # no realip: X-Forwarded-For is just a header
    server {
        listen 127.0.0.1:%%PORT_PLAIN%%;
        root %%HTML%%;
        add_header X-Country $lifecycle_country always;
        add_header X-City $lifecycle_city always;
    }
EOF

$t->config("    lifecycle_geoip2 %%PREFIX%%/geo-a.mmdb;\n$servers");
my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t accepts lifecycle_geoip2') or diag $out;

$t->start;

sub geo {
    my ($xff, @o) = @_;
    my $r = $t->http_get('/', defined $xff ? ('X-Forwarded-For' => $xff) : (),
                         @o);
    is($r->status, 200, 'GET / from ' . ($xff // 'loopback'));
    return ($r->header('X-Country'), $r->header('X-City'));
}

my ($country, $city) = geo(undef);
is($country, 'DE', 'loopback client (IPv4 in an IPv6 tree): country');
is($city, 'Berlin', 'loopback client: city');

($country, $city) = geo('10.1.2.3');
is($country, 'FR', 'realip 10.1.2.3: country');
is($city, 'Paris', 'realip 10.1.2.3: city');

($country, $city) = geo('192.168.7.7, 10.1.2.200');
is($country, 'FR', 'realip takes the last address of the list');

($country, $city) = geo('203.0.113.9');
is($country, 'JP', 'realip 203.0.113.9: country');
is($city, undef, 'no city in the record: no X-City');

($country, $city) = geo('198.51.100.1');
is($country, undef, 'unmapped address: no country');
is($city, undef, 'unmapped address: no city');

($country, $city) = geo('198.18.0.5');
is($country, 'NL', 'no country: registered_country.iso_code');

($country, $city) = geo('192.0.2.1');
is($country, 'SE', 'lowercase code is upper-cased');
is($city, "Malm\xc3\xb6", 'city name passed as UTF-8');

($country, $city) = geo('198.18.1.1');
is($country, undef, 'a code that is not two letters is dropped');
is($city, 'Nowhere', '... the city stays');

($country, $city) = geo('2001:db8:1::42');
is($country, 'CA', 'IPv6 client: country');
is($city, 'Toronto', 'IPv6 client: city');

($country, $city) = geo('10.1.2.3', -port => $t->port('PORT_PLAIN'));
is($country, 'DE', 'without realip X-Forwarded-For is ignored');

my $r = $t->http_get('/echo', 'X-Forwarded-For' => '10.1.2.3');
is($r->body, "[FR][Paris]\n", 'variables in the rewrite phase (return)');
$r = $t->http_get('/echo', 'X-Forwarded-For' => '198.51.100.1');
is($r->body, "[][]\n", 'not found: empty in the rewrite phase');

# --- reload -------------------------------------------------------------

# lines of the master's memory map naming $file
sub mapped {
    my ($file) = @_;
    open my $fh, '<', '/proc/' . $t->master_pid . '/maps' or return -1;
    return scalar grep { /\Q$file\E$/ } <$fh>;
}

is(mapped($db_a), 1, 'master maps the database once');

$t->config("    lifecycle_geoip2 %%PREFIX%%/geo-b.mmdb;\n$servers");
ok($t->reload(wait_old => 10), 'reload to another database');

($country, $city) = geo(undef);
is($country, 'AT', 'after reload: the new database answers');
is($city, 'Vienna', 'after reload: city from the new database');

($country, $city) = geo('2001:db8:1::42');
is($country, undef, 'IPv6 client, IPv4 database: no country');
is($city, undef, 'IPv6 client, IPv4 database: no city');

is(mapped($db_a), 0, 'old database unmapped by the master');
is(mapped($db_b), 1, 'new database mapped once');

ok($t->reload(wait_old => 10), 'reload with the same database');
is(mapped($db_b), 1, 'still mapped once after a second reload');
($country) = geo('10.1.2.3');
is($country, 'IT', 'after the second reload: answers');

$t->stop;

# --- configuration ------------------------------------------------------

my $srv = "    server { listen 127.0.0.1:%%PORT%%; }\n";

$t->config("    lifecycle_geoip2 geo-a.mmdb;\n$srv");
($rc, $out) = $t->nginx_t;
is($rc, 0, 'a relative path is relative to the configuration') or diag $out;

my $missing = $t->prefix . '/nope.mmdb';
my @bad = (
    ['missing file',
     "    lifecycle_geoip2 $missing;\n",
     qr/lifecycle_geoip2/,
     qr/MMDB_open\("\Q$missing\E"\) failed: .*No such file/],
    ['not a MaxMind DB',
     "    lifecycle_geoip2 $not_db;\n",
     qr/lifecycle_geoip2/, qr/MMDB_open\("\Q$not_db\E"\) failed: \S/],
    ['duplicate',
     "    lifecycle_geoip2 $db_a;\n    lifecycle_geoip2 $db_b;\n",
     qr/geo-b\.mmdb/, qr/"lifecycle_geoip2" directive is duplicate/],
    ['server context',
     "    server { listen 127.0.0.1:%%PORT%%;\n"
     . "        lifecycle_geoip2 $db_a;\n    }\n",
     qr/lifecycle_geoip2/, qr/"lifecycle_geoip2" directive is not allowed here/],
);

for my $case (@bad) {
    my ($name, $http, $line_re, $msg_re) = @$case;
    my $file = $t->config($http . ($http =~ /server/ ? '' : $srv));
    ($rc, $out) = $t->nginx_t;
    isnt($rc, 0, "$name: nginx -t fails");
    my ($emerg) = grep { /\[emerg\]/ } split /\n/, $out;
    $emerg //= '';
    like($emerg, $msg_re, "$name: says what is wrong") or diag $out;
    my $line = $t->conf_line($line_re);
    like($emerg, qr/ in \Q$file\E:$line$/, "$name: at nginx.conf:$line")
        or diag $out;
}

done_testing;
