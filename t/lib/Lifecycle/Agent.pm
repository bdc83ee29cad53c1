package Lifecycle::Agent;

# lifecycle-agent in the tests, beside a Lifecycle::Test harness (its
# Redis, its secret, its temp dir): agents with generated configurations,
# a real SMTP server (t/agent/smtp_sink.py, aiosmtpd), a scripted
# webhook receiver, and helpers for what the module's collect endpoint
# will write at an opt-in.
#
#   my $t = Lifecycle::Test->new;  ...
#   my $a = Lifecycle::Agent->new($t);             # skip_all if missing
#   my $smtp = $a->smtp_start;                     # port
#   $a->start('a1', channel => 'smtp', smtp_url => "smtp://127.0.0.1:$smtp");
#   ...
#   my @m = $a->smtp_messages;                     # parsed, oldest first
#   $a->stop('a1');                                # TERM, exit code
#
# Methods:
#   new($t)  conf_text(%keys) -> the file's text (defaults below, keys
#   given replace them, undef drops one); write_conf($name, %keys) -> path
#   start($name, %keys) -> pid; stop($name, signal => 'TERM') -> exit code;
#   kill9($name); pid($name); log($name); wait_log($name, qr//, timeout);
#   cmd(@args, conf => $name) -> (exit code, output)
#   need_smtp (skip_all without aiosmtpd);
#   smtp_start(delay => S, match => TEXT) -> port; smtp_messages;
#   smtp_dir; outbox_dir; outbox_messages
#   webhook_start(answers => [500, 200]) -> port ("hang" answers nothing
#   for 5 s); webhook_requests -> [ { headers => {lc name => v},
#   body => ..., status => answered } ]
#   shop (nginx with the module and a small shop, started);
#   visit($vid, @paths) (["POST", path] for a POST)
#   optin($vid, $email): the opt-in form POSTed to lifecycle_collect;
#   optin_event($vid, $email): an entry written into the stream directly;
#   unsubscribe($pid): the signed link followed
#   person_id($email) (normalised by the caller) -> PID; token($pid)
# Environment: LIFECYCLE_AGENT (the binary; default build/ of this repo),
# LIFECYCLE_AGENT_VALGRIND=1 (agents and commands under valgrind: a leak
# or an invalid access makes their exit status 99, which the tests see).
# Functions: parse_mail($raw) -> { headers => {lc => v}, text, html, raw }

use strict;
use warnings;

use Cwd qw(abs_path);
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex);
use File::Basename qw(dirname);
use File::Spec;
use IO::Select;
use IO::Socket::INET;
use MIME::Base64 ();
use MIME::QuotedPrint ();
use POSIX qw(:sys_wait_h);
use Test::More ();
use Time::HiRes qw(time sleep stat);

use Lifecycle::Test qw(:all);

my $REPO = abs_path(File::Spec->catdir(dirname(abs_path(__FILE__)),
                                       '..', '..', '..'));

sub new {
    my ($class, $t) = @_;
    my $bin = $ENV{LIFECYCLE_AGENT} || "$REPO/build/lifecycle-agent";
    my @missing;
    push @missing, "$bin (run: make agent)" unless -x $bin;
    if (@missing) {
        Test::More::plan(skip_all => 'missing: ' . join('; ', @missing));
        exit 0;
    }
    my $self = bless {
        t => $t, bin => $bin, agents => {}, dir => $t->prefix . '/agent',
    }, $class;
    mkdir $self->{dir};
    mkdir "$self->{dir}/outbox";
    mkdir "$self->{dir}/smtp";
    mkdir "$self->{dir}/webhook";
    return $self;
}

sub outbox_dir { "$_[0]{dir}/outbox" }
sub smtp_dir   { "$_[0]{dir}/smtp" }

# the configuration: fast timings for tests, the harness's Redis and key
sub conf_text {
    my ($self, %k) = @_;
    my $t = $self->{t};
    my %c = (
        redis           => $t->redis->addr,
        secret          => $t->secret_file,
        catalog         => "$REPO/conf/demo/catalog.tsv",
        templates       => "$REPO/agent/templates",
        abandon_after   => '2s',
        scan_interval   => '250ms',
        claim_after     => '2s',
        retry_delay     => '200ms',
        channel         => 'outbox',
        outbox          => $self->outbox_dir,
        smtp_from       => 'Test Shop <shop@example.com>',
        unsubscribe_url => 'http://127.0.0.1/lifecycle/unsubscribe',
        site_url        => 'http://shop.example',
        log_level       => 'debug',
    );
    for my $key (keys %k) {
        if (defined $k{$key}) { $c{$key} = $k{$key} } else { delete $c{$key} }
    }
    return join '', map { "$_ $c{$_}\n" } sort keys %c;
}

sub write_conf {
    my ($self, $name, %k) = @_;
    $k{consumer} //= $name;
    return $self->{t}->write_file("agent/$name.conf", $self->conf_text(%k));
}

sub start {
    my ($self, $name, %k) = @_;
    my $conf = $self->write_conf($name, %k);
    my $log = "$self->{dir}/$name.log";
    # LIFECYCLE_AGENT_VALGRIND=1: the daemon under valgrind, whose
    # findings make its exit status 99 (stop() returns it)
    my @vg = $self->_valgrind;
    my $pid = Lifecycle::Test::_spawn_exec(
        argv => [@vg, $self->{bin}, '-c', $conf], log => $log,
        what => "lifecycle-agent $name");
    $self->{agents}{$name} = { pid => $pid, log => $log, conf => $conf };
    my $up = $self->wait_log($name, qr/started: consumer/, @vg ? 30 : 5);
    Test::More::diag("agent $name did not start:\n" . $self->log($name))
        unless $up;
    return $pid;
}

sub _valgrind {
    return () unless $ENV{LIFECYCLE_AGENT_VALGRIND};
    return ('valgrind', '-q', '--leak-check=full', '--error-exitcode=99',
            '--errors-for-leak-kinds=definite,indirect');
}

sub pid { $_[0]{agents}{$_[1]}{pid} }

sub log {
    my ($self, $name) = @_;
    open my $fh, '<', $self->{agents}{$name}{log} or return '';
    local $/;
    return <$fh> // '';
}

sub wait_log {
    my ($self, $name, $re, $timeout) = @_;
    return wait_until { $self->log($name) =~ $re } timeout => $timeout // 5,
                                                   interval => 0.05;
}

sub _reap {
    my ($self, $name, $timeout) = @_;
    my $a = $self->{agents}{$name} or return undef;
    my $status;
    my $ok = wait_until {
        my $w = waitpid($a->{pid}, WNOHANG);
        if ($w == $a->{pid}) { $status = $?; return 1 }
        0;
    } timeout => $timeout, interval => 0.02;
    return undef unless $ok;
    Lifecycle::Test::_forget_child($a->{pid});
    delete $a->{pid};
    return $status;
}

# SIGTERM (or signal => ...) and wait: the exit status, undef if it hung
sub stop {
    my ($self, $name, %o) = @_;
    my $a = $self->{agents}{$name} or return undef;
    return undef unless $a->{pid};
    kill $o{signal} // 'TERM', $a->{pid};
    my $st = $self->_reap($name, $o{timeout} // 45);
    if (!defined $st) {
        kill 'KILL', $a->{pid};
        $self->_reap($name, 5);
        return undef;
    }
    return $st >> 8;
}

sub kill9 {
    my ($self, $name) = @_;
    my $a = $self->{agents}{$name} or return;
    kill 'KILL', $a->{pid};
    $self->_reap($name, 5);
}

# a command of the agent with an agent's configuration
sub cmd {
    my ($self, @args) = @_;
    my %o;
    if (@args >= 2 && $args[-2] eq 'conf') { (undef, $o{conf}) = splice @args, -2 }
    my $conf = $o{conf} ? $self->{agents}{$o{conf}}{conf}
                        : $self->write_conf('cli');
    return Lifecycle::Test::run_cmd([$self->_valgrind, $self->{bin}, '-c',
                                     $conf, @args], timeout => 60);
}

###########################################################################
# SMTP

# skip_all without Debian's python3-aiosmtpd (Debian's python3: another
# python3 first in PATH may not have it)
sub need_smtp {
    return if system('/usr/bin/python3 -c "import aiosmtpd" 2>/dev/null') == 0;
    Test::More::plan(skip_all => 'python3-aiosmtpd is not installed '
                                 . '(apt-get install python3-aiosmtpd)');
    exit 0;
}

sub smtp_start {
    my ($self, %o) = @_;
    my $port = Lifecycle::Test::free_port();
    my $pid = Lifecycle::Test::_spawn_exec(
        argv => ['/usr/bin/python3', "$REPO/t/agent/smtp_sink.py", '127.0.0.1',
                 $port, $self->smtp_dir, $o{delay} // 0, $o{match} // ''],
        log => "$self->{dir}/smtp.log", what => 'smtp sink');
    $self->{smtp_pid} = $pid;
    my $ok = wait_until {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Timeout => 1);
        $s ? 1 : 0;
    } timeout => 10;
    die "the SMTP sink did not start:\n" . _slurp("$self->{dir}/smtp.log")
        unless $ok;
    return $port;
}

sub _slurp {
    open my $fh, '<:raw', $_[0] or return '';
    local $/;
    return <$fh> // '';
}

# the messages the SMTP server accepted, oldest first
sub smtp_messages {
    my ($self) = @_;
    my @m;
    for my $f (sort glob($self->smtp_dir . '/*.eml')) {
        my $m = parse_mail(_slurp($f));
        (my $env = $f) =~ s/\.eml$/.env/;
        my ($from, @to) = split /\n/, _slurp($env);
        $m->{envelope} = { from => $from, to => \@to };
        $m->{file} = $f;
        $m->{mtime} = (stat $f)[9];
        push @m, $m;
    }
    return @m;
}

# the messages of the outbox, oldest first
sub outbox_messages {
    my ($self) = @_;
    my @m;
    for my $f (sort { (stat $a)[9] <=> (stat $b)[9] }
               glob($self->outbox_dir . '/*.eml'))
    {
        my $m = parse_mail(_slurp($f));
        $m->{file} = $f;
        (my $j = $f) =~ s/\.eml$/.json/;
        $m->{json} = _slurp($j);
        push @m, $m;
    }
    return @m;
}

# headers (unfolded, lower-cased names, encoded words decoded) and the
# text and HTML parts, decoded from quoted-printable
sub parse_mail {
    my ($raw) = @_;
    my ($head, $body) = split /\r?\n\r?\n/, $raw, 2;
    $head =~ s/\r?\n[ \t]+/ /g;
    my %h;
    for my $l (split /\r?\n/, $head) {
        my ($k, $v) = $l =~ /^([^:]+):\s*(.*)$/ or next;
        $v =~ s/=\?UTF-8\?B\?([^?]*)\?=\s*/MIME::Base64::decode_base64($1)/ge;
        $h{lc $k} = $v;
    }
    my %part;
    my ($boundary) = ($h{'content-type'} // '') =~ /boundary="([^"]+)"/;
    my @parts = $boundary ? split(/--\Q$boundary\E(?:--)?\r?\n/, $body // '')
                          : ("Content-Type: $h{'content-type'}\r\n\r\n"
                             . ($body // ''));
    for my $p (@parts) {
        my ($ph, $pb) = split /\r?\n\r?\n/, $p, 2;
        next unless defined $pb && $ph =~ m{Content-Type:\s*text/(plain|html)}i;
        my $type = lc $1;
        $pb = MIME::QuotedPrint::decode_qp($pb) if $ph =~ /quoted-printable/i;
        $pb =~ s/\r\n/\n/g;
        $part{$type eq 'plain' ? 'text' : 'html'} = $pb;
    }
    return { headers => \%h, text => $part{text} // '',
             html => $part{html} // '', raw => $raw };
}

###########################################################################
# webhook receiver: a forked Perl server answering from a script

sub webhook_start {
    my ($self, %o) = @_;
    my @answers = @{ $o{answers} || [200] };
    my $dir = "$self->{dir}/webhook";
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 16, ReuseAddr => 1)
        or die "webhook listener: $!";
    my $port = $l->sockport;
    my $parent = $$;
    $self->{webhook_pid} = $self->{t}->spawn(sub {
        my $n = 0;
        my $sel = IO::Select->new($l);
        while (getppid() == $parent) {
            next unless $sel->can_read(0.2);
            my $c = $l->accept or next;
            my $req = '';
            while ($req !~ /\r\n\r\n/) {
                my $got = sysread($c, $req, 65536, length $req);
                last unless $got;
            }
            my ($head, $body) = split /\r\n\r\n/, $req, 2;
            $body //= '';
            my ($len) = $head =~ /^Content-Length:\s*(\d+)/mi;
            while (defined $len && length($body) < $len) {
                my $got = sysread($c, $body, $len - length $body, length $body);
                last unless $got;
            }
            my $answer = $answers[$n < @answers ? $n : $#answers];
            $n++;
            open my $fh, '>:raw', "$dir/.$n" or die;
            print $fh "$answer\n$head\r\n\r\n$body";
            close $fh;
            rename "$dir/.$n", sprintf("$dir/%04d.req", $n);
            if ($answer eq 'hang') { sleep 5; close $c; next }
            print $c "HTTP/1.1 $answer Scripted\r\nContent-Length: 0\r\n"
                   . "Connection: close\r\n\r\n";
            close $c;
        }
        return;
    }, what => 'webhook receiver');
    close $l;
    return $port;
}

sub webhook_requests {
    my ($self) = @_;
    my @r;
    for my $f (sort glob("$self->{dir}/webhook/*.req")) {
        my $raw = _slurp($f);
        my ($status, $rest) = split /\n/, $raw, 2;
        my ($head, $body) = split /\r\n\r\n/, $rest, 2;
        my ($line, @lines) = split /\r\n/, $head;
        my %h;
        for (@lines) { my ($k, $v) = /^([^:]+):\s*(.*)$/ or next; $h{lc $k} = $v }
        push @r, { status => $status, request_line => $line, headers => \%h,
                   body => $body };
    }
    return @r;
}

###########################################################################
# a small shop in front of the module: products p1..p4 (the demo's
# catalog), a category, add to cart (POST /cart/add?sku=ID), a purchase
# (/checkout/done?order=ID), the opt-in endpoint (/lifecycle/collect) and
# the unsubscribe links' (/unsubscribe)

sub shop {
    my ($self, %o) = @_;
    my $t = $self->{t};
    my $catalog = "$REPO/conf/demo/catalog.tsv";
    $t->html("product/$_.html", "<html><body>$_</body></html>\n")
        for qw(p1 p2 p3 p4);
    $t->html('category/shoes.html', "<html><body>shoes</body></html>\n");
    $t->html('index.html', "<html><body>home</body></html>\n");
    $t->html('cart.html', "<html><body>cart</body></html>\n");
    $t->html('done.html', "<html><body>thanks</body></html>\n");
    my $timeout = $o{session_timeout} // '30m';
    $t->config(<<"CONF");
    lifecycle_redis %%REDIS%%;
    lifecycle_secret %%SECRET%%;
    lifecycle_catalog $catalog;
    lifecycle_session_timeout $timeout;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%HTML%%;
        lifecycle on;
        lifecycle_view product  ^/product/(?<id>[a-z0-9]+)\\.html\$;
        lifecycle_view category ^/category/(?<id>[a-z0-9-]+)\\.html\$;
        lifecycle_view cart_add ^/cart/add\$ id=\$arg_sku method=POST;
        lifecycle_view purchase ^/checkout/done\$ id=\$arg_order;
        lifecycle_view page ^/;
        location = /cart/add { try_files /.none \@added; }
        location \@added { return 303 /cart.html; }
        location = /checkout/done { try_files /done.html =404; }
        location = /lifecycle/collect { lifecycle_collect; }
        location = /unsubscribe { lifecycle_unsubscribe; }
    }
CONF
    $t->start;
}

# a visitor known to the module (a signed cookie) asks for these paths
# (["POST", path] for a POST); each must answer 200 or 303
sub visit {
    my ($self, $vid, @paths) = @_;
    my $t = $self->{t};
    my $cookie = $t->cookie_for($vid);
    for my $p (@paths) {
        my ($method, $path) = ref $p ? @$p : ('GET', $p);
        my $r = $t->http_get($path, Cookie => $cookie, -method => $method,
                             ($method eq 'POST' ? (-body => '') : ()));
        Test::More::ok($r->status == 200 || $r->status == 303,
                       "$method $path")
            or Test::More::diag($r->error // $r->raw);
    }
}

###########################################################################
# identities, as the module and the agent compute them

# an opt-in as the popup's form sends it: a same-origin form POST to
# lifecycle_collect with the visitor's cookie; the answer must be 204 (or
# status => N); returns the response
sub optin {
    my ($self, $vid, $email, %o) = @_;
    my $t = $self->{t};
    (my $enc = $email) =~ s/([^A-Za-z0-9._~-])/sprintf('%%%02X', ord $1)/ge;
    my $r = $t->http_post('/lifecycle/collect',
                          "e=optin&email=$enc&consent=1",
                          Cookie => $t->cookie_for($vid),
                          Origin => 'http://localhost',
                          'Content-Type' => 'application/x-www-form-urlencoded');
    Test::More::is($r->status, $o{status} // 204,
                   'opt-in: ' . ($o{status} // 204))
        or Test::More::diag($r->raw);
    return $r;
}

# an optin entry written straight into the stream, as no endpoint would
# (the agent's own checks behind the module's)
sub optin_event {
    my ($self, $vid, $email) = @_;
    $self->{t}->redis_cmd('XADD', key_events($vid), '*', 'type', 'optin',
                          'vid', $vid, 'sess', 1, 'email', $email);
}

# the person follows the link of an e-mail: GET /unsubscribe?t=TOKEN
sub unsubscribe {
    my ($self, $pid) = @_;
    return $self->{t}->http_get('/unsubscribe?t=' . $self->token($pid));
}

sub person_id {
    my ($self, $email) = @_;
    return substr(hmac_sha256_hex("lc-email:$email", $self->{t}->secret), 0, 32);
}

sub token {
    my ($self, $pid) = @_;
    return "$pid." . b64url(substr(hmac_sha256("lc-unsubscribe:$pid",
                                               $self->{t}->secret), 0, 16));
}

sub DESTROY {}

1;
