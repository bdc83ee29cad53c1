package Lifecycle::Test;

# Test harness for the lifecycle nginx module.
#
# Perl core only (Test::More, IO::Socket::*, File::Temp, Time::HiRes, POSIX,
# Digest::SHA, MIME::Base64).  One object = one private nginx (prefix in a
# temp dir, generated nginx.conf, "daemon off" so the master is our child,
# in its own process group) plus, by default, one private redis-server.
# Everything started is killed on exit, also on die or SIGINT/SIGTERM.
#
#   use FindBin; use lib "$FindBin::Bin/lib";
#   use Test::More; use Lifecycle::Test qw(:all);
#
#   my $t = Lifecycle::Test->new(workers => 1);      # skip_all if missing
#   $t->html('index.html', "hello\n");
#   $t->config(<<'EOF');                             # the http{} contents
#       lifecycle_redis %%REDIS%%;
#       lifecycle_secret %%SECRET%%;
#       server { listen 127.0.0.1:%%PORT%%; root %%HTML%%; lifecycle on; }
#   EOF
#   $t->start;
#   my $r = $t->http_get('/', 'User-Agent' => 'test');
#   is($r->status, 200);
#   $t->stop;                 # QUIT + deadline, then error log assertions
#   done_testing;
#
# Object (Lifecycle::Test):
#   new(workers => N, module => 0|1, redis => 0|1|{unix => 1, password => P})
#   config($http, main => '', events => '', workers => N, raw => 1)
#       placeholders: %%PORT%% (main port), %%PORTxxx%% (more free ports,
#       read them with port('PORTxxx') after start), %%REDIS%% (127.0.0.1:p),
#       %%REDIS_PORT%%, %%REDIS_UNIX%%, %%SECRET%% (secret file), %%PREFIX%%,
#       %%HTML%% (docroot), and set_var(NAME => value) for %%NAME%%
#   conf_line(qr//) line number in nginx.conf; conf_file; nginx_t -> (rc, out)
#   start; reload(signal => 1, wait_old => SECONDS); stop(allow => [qr//]);
#   worker_pids; master_pid
#   allow_error(qr//); log_lines(qr//); wait_log(qr//); log_problems;
#   check_logs (run by stop: no [alert]/[crit]/[emerg]/"open socket left",
#   no unexpected [error], no ASan report)
#   http_get($path, Header => v, ..., -port => P, -method => M, -body => B,
#   -timeout => S); http_head; http_post($path, $body, ...);
#   http_request($raw) -> Lifecycle::Test::Response (status, header(),
#   headers(), set_cookies, set_cookie_line(name), cookie(name),
#   cookie_attrs(name), body, elapsed, error)
#   status_metrics($path) -> parsed Prometheus; metric($m, name, label => v)
#   html(rel, content); write_file(rel, content, mode); set_secret(content)
#   secret (the key), secret_file, cookie_for($vid), sign($vid)
#   redis (Lifecycle::Test::Redis), redis_cmd(...), new_redis(%o)
#   refusing_port; hung_listener; spawn(sub {...}); reap($pid)
# Functions (:all): wait_until {...} timeout => S, interval => S;
#   sign_vid($vid, $key); cookie_valid($value, $key); split_cookie;
#   vid_shard; random_vid; b64url; key_profile/searches/cart/orders
#   ($vid), key_session($vid, $n), key_events/key_idle($vid or "hh");
#   parse_metrics; http_request_to($port, $raw); list_to_hash
# Lifecycle::Test::Redis: start, stop, kill9, restart, port, addr,
#   unix_path, cmd(@args) (dies on error replies), cmd_err, hgetall, ttl,
#   dbsize, select_db, info($section), commandstats, stream($key),
#   monitor_start / monitor_collect (top-level commands of other clients)
#
# Environment: LIFECYCLE_MODULE (the .so; default build/ of this repo),
# NGINX (the binary), REDIS_SERVER, LIFECYCLE_ASAN=1 (LD_PRELOAD libasan,
# ASAN_OPTIONS=detect_leaks=0:log_path=PREFIX/asan/asan, reports fail the
# test), LIFECYCLE_KEEP=1 (keep temp dirs), LIFECYCLE_TMP (where they go).

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use Digest::SHA qw(hmac_sha256);
use Errno qw(EINTR ECONNREFUSED);
use Exporter qw(import);
use File::Basename qw(dirname);
use File::Path qw(make_path);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use MIME::Base64 ();
use POSIX qw(:sys_wait_h);
use Socket qw(SOCK_STREAM SOL_SOCKET SO_REUSEADDR);
use Test::More ();
use Time::HiRes qw(time sleep);

our @EXPORT_OK = qw(
    wait_until sign_vid vid_shard random_vid b64url split_cookie
    cookie_valid key_profile key_searches key_cart key_orders
    key_session key_events key_idle http_request_to parse_metrics
    list_to_hash session_products
);
our %EXPORT_TAGS = (all => \@EXPORT_OK);

my $REPO = abs_path(File::Spec->catdir(dirname(abs_path(__FILE__)),
                                       '..', '..', '..'));

our $OWNER = $$;         # only this process cleans up in END
my @CHILDREN;            # { pid => , group => 1|0, what => }
my @OBJECTS;             # live harness objects (for END)

$SIG{INT} = $SIG{TERM} = sub { die "killed by signal $_[0]\n" }
    unless $SIG{INT} && ref $SIG{INT};
$SIG{PIPE} = 'IGNORE';

###########################################################################
# small pure helpers (exported)

# Calls $cond every $interval seconds until it returns true or the
# deadline passes.  Returns the last value of $cond (false on timeout).
sub wait_until(&;@) {
    my ($cond, %o) = @_;
    my $timeout  = $o{timeout}  // 5;
    my $interval = $o{interval} // 0.02;
    my $deadline = time() + $timeout;
    while (1) {
        my $v = $cond->();
        return $v if $v;
        return $v if time() >= $deadline;
        sleep($interval);
    }
}

sub b64url { my $s = MIME::Base64::encode_base64url($_[0]); $s =~ s/=+$//; $s }

# "VID.SIG" for a visitor id and key (the key as the module uses it: the
# secret file's content less its trailing newline).
sub sign_vid {
    my ($vid, $key) = @_;
    return $vid . '.' . b64url(substr(hmac_sha256($vid, $key), 0, 16));
}

sub cookie_valid {
    my ($value, $key) = @_;
    return 0 unless defined $value
        && $value =~ /^([0-9a-f]{32})\.([A-Za-z0-9_-]{22})$/;
    return sign_vid($1, $key) eq $value ? 1 : 0;
}

sub split_cookie {
    my ($value) = @_;
    return unless defined $value;
    return split /\./, $value, 2;
}

sub vid_shard { sprintf('%02x', hex(substr($_[0], 0, 2)) & 0x3f) }

sub random_vid {
    my $s = '';
    if (open my $fh, '<:raw', '/dev/urandom') {
        read($fh, my $b, 16) == 16 or die "urandom: $!";
        $s = unpack('H*', $b);
    } else {
        $s .= sprintf('%02x', int(rand(256))) for 1 .. 16;
    }
    return $s;
}

sub _pfx        { 'lc:{' . vid_shard($_[0]) . '}:' }
sub key_profile  { _pfx($_[0]) . "v:$_[0]" }
sub key_searches { key_profile($_[0]) . ':q' }
sub key_cart     { key_profile($_[0]) . ':cart' }
sub key_orders   { key_profile($_[0]) . ':o' }
sub key_session  { _pfx($_[0]) . "s:$_[0]:$_[1]" }
# key_events / key_idle take a vid or a shard ("0a")
sub key_events   { my $h = length $_[0] == 2 ? $_[0] : vid_shard($_[0]); "lc:{$h}:ev" }
sub key_idle     { my $h = length $_[0] == 2 ? $_[0] : vid_shard($_[0]); "lc:{$h}:idle" }

# the current session's products of a profile hash (docs/redis.md): the
# first "s.pb" bytes of "r" after its leading "\n", in r's own form
sub session_products {
    my ($p) = @_;
    my $pb = $p->{'s.pb'} // 0;
    return '' if $pb <= 0 || !defined $p->{r};
    return substr($p->{r}, 0, $pb + 1);
}

sub list_to_hash {
    my ($list) = @_;
    return {} unless ref $list eq 'ARRAY';
    return { @$list };
}

# Prometheus text -> { 'name' => v, 'name{a="x",b="y"}' => v } with label
# pairs sorted, so metric lookups do not depend on the module's order.
sub parse_metrics {
    my ($text) = @_;
    my %m;
    for my $line (split /\r?\n/, $text // '') {
        next if $line =~ /^\s*(#|$)/;
        my ($name, $labels, $value) =
            $line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/
            or next;
        my $key = $name;
        if (defined $labels && length $labels) {
            my @pairs;
            while ($labels =~ /\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?/g) {
                push @pairs, [$1, $2];
            }
            $key .= '{' . join(',', map { qq{$_->[0]="$_->[1]"} }
                                    sort { $a->[0] cmp $b->[0] } @pairs) . '}';
        }
        $value = 9**9**9 if $value eq '+Inf';
        $m{$key} = $value;
    }
    return \%m;
}

sub metric_key {
    my ($name, %labels) = @_;
    return $name unless %labels;
    return $name . '{' . join(',', map { qq{$_="$labels{$_}"} }
                                   sort keys %labels) . '}';
}

###########################################################################
# processes

sub _register_child {
    my ($pid, $what, $group) = @_;
    push @CHILDREN, { pid => $pid, what => $what, group => $group ? 1 : 0 };
}

sub _forget_child {
    my ($pid) = @_;
    @CHILDREN = grep { $_->{pid} != $pid } @CHILDREN;
}

sub _kill_child_hard {
    my ($c) = @_;
    kill('KILL', $c->{group} ? -$c->{pid} : $c->{pid});
    kill('KILL', $c->{pid});
    my $deadline = time() + 5;
    while (time() < $deadline) {
        my $w = waitpid($c->{pid}, WNOHANG);
        last if $w == $c->{pid} || $w == -1;
        sleep 0.01;
    }
}

# fork+exec in a new process group; stdout+stderr to $log (append)
sub _spawn_exec {
    my (%o) = @_;
    my $argv = $o{argv};
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        setpgrp(0, 0);
        $SIG{INT} = $SIG{TERM} = 'DEFAULT';
        $SIG{PIPE} = 'DEFAULT';
        open STDIN, '<', '/dev/null';
        if ($o{log}) {
            open STDOUT, '>>', $o{log} or POSIX::_exit(126);
            open STDERR, '>&', \*STDOUT;
        }
        %ENV = (%ENV, %{ $o{env} || {} });
        { no warnings 'exec'; exec { $argv->[0] } @$argv; }
        print STDERR "exec $argv->[0]: $!\n";
        POSIX::_exit(127);
    }
    _register_child($pid, $o{what} // $argv->[0], 1);
    return $pid;
}

# Runs a command to completion; returns ($exit_code, $output).
sub run_cmd {
    my ($argv, %o) = @_;
    my $out = File::Temp->new(TMPDIR => 1);
    my $pid = _spawn_exec(argv => $argv, log => $out->filename,
                          env => $o{env}, what => "cmd $argv->[0]");
    my $deadline = time() + ($o{timeout} // 30);
    my $rc;
    while (1) {
        my $w = waitpid($pid, WNOHANG);
        if ($w == $pid) { $rc = $? >> 8; $rc = 128 + ($? & 127) if $? & 127; last }
        if (time() > $deadline) {
            kill 'KILL', -$pid; waitpid($pid, 0); $rc = -1; last;
        }
        sleep 0.01;
    }
    _forget_child($pid);
    open my $fh, '<', $out->filename or die;
    local $/; my $text = <$fh> // '';
    return ($rc, $text);
}

# Forks a Perl child (its own process group); the sub runs and the child
# exits with POSIX::_exit (no Test::More END processing).  Returns its pid.
sub spawn {
    my ($self, $code, %o) = @_;
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        setpgrp(0, 0);
        $SIG{INT} = $SIG{TERM} = 'DEFAULT';
        my $rc = eval { $code->(); 0 } // do { print STDERR "child: $@"; 1 };
        POSIX::_exit($rc);
    }
    _register_child($pid, $o{what} // 'perl child', 1);
    return $pid;
}

# Waits (with a deadline) for a child started by spawn(); returns its
# exit code, or undef if it had to be killed.
sub reap {
    my ($self, $pid, %o) = @_;
    my $deadline = time() + ($o{timeout} // 10);
    kill($o{signal}, $pid) if $o{signal};
    while (time() < $deadline) {
        my $w = waitpid($pid, WNOHANG);
        if ($w == $pid) { _forget_child($pid); return $? >> 8 }
        if ($w == -1)   { _forget_child($pid); return undef }
        sleep 0.01;
    }
    kill 'KILL', -$pid; kill 'KILL', $pid; waitpid($pid, 0);
    _forget_child($pid);
    return undef;
}

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1,
                                  ReuseAddr => 1)
        or die "free_port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub _port_answers {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 1);
    return $s ? 1 : 0;
}

END {
    if ($$ == $OWNER) {
        local ($?, $!, $@);
        for my $o (@OBJECTS) { eval { $o->_cleanup_abnormal } if $o }
        _kill_child_hard($_) for reverse @CHILDREN;
        @CHILDREN = ();
    }
}

###########################################################################
# the harness object

sub new {
    my ($class, %o) = @_;

    my $self = bless {
        workers     => $o{workers} // 1,
        use_module  => $o{module} // 1,
        nginx       => $ENV{NGINX} || '/usr/sbin/nginx',
        module      => $ENV{LIFECYCLE_MODULE}
                       || "$REPO/build/ngx_http_lifecycle_module.so",
        asan        => $ENV{LIFECYCLE_ASAN} ? 1 : 0,
        vars        => {},
        ports       => {},
        allowed     => [],
        log_offset  => 0,
        err_offset  => 0,
        fixtures    => [],
        redises     => [],
    }, $class;

    $self->{module} = abs_path($self->{module}) // $self->{module}
        if -e $self->{module};

    my @missing;
    push @missing, "nginx binary $self->{nginx} (apt-get install nginx-core)"
        unless -x $self->{nginx};
    push @missing, "module $self->{module} (run: make module)"
        if $self->{use_module} && !-f $self->{module};
    my $want_redis = $o{redis} // 1;
    my $redis_bin = $ENV{REDIS_SERVER} || '/usr/bin/redis-server';
    push @missing, "$redis_bin (apt-get install redis-server)"
        if $want_redis && !-x $redis_bin;
    if ($self->{asan}) {
        my $lib = `gcc -print-file-name=libasan.so 2>/dev/null`;
        chomp $lib;
        if ($lib && $lib =~ m{/} && -e $lib) { $self->{libasan} = $lib }
        else { push @missing, 'libasan.so (gcc -print-file-name=libasan.so)' }
    }
    if (@missing) {
        Test::More::plan(skip_all => 'missing: ' . join('; ', @missing));
        exit 0;
    }

    my $base = $ENV{LIFECYCLE_TMP} || File::Spec->tmpdir;
    make_path($base) unless -d $base;
    $self->{prefix} = tempdir('lifecycle-t-XXXXXX', DIR => $base,
                              CLEANUP => $ENV{LIFECYCLE_KEEP} ? 0 : 1);
    Test::More::diag("prefix kept: $self->{prefix}") if $ENV{LIFECYCLE_KEEP};
    chmod 0755, $self->{prefix};
    for my $d (qw(html logs tmp)) {
        mkdir "$self->{prefix}/$d"; chmod 0755, "$self->{prefix}/$d";
    }
    mkdir "$self->{prefix}/asan"; chmod 01777, "$self->{prefix}/asan";
    $self->{html} = "$self->{prefix}/html";
    $self->{error_log} = "$self->{prefix}/error.log";
    $self->{stderr_log} = "$self->{prefix}/stderr.log";

    # a 48-byte key (printable: no trailing-newline questions)
    my $key = join '', map { ('a'..'z', 'A'..'Z', '0'..'9')[int rand 62] } 1 .. 48;
    $self->set_secret($key);

    $self->{ports}{PORT} = free_port();

    push @OBJECTS, $self;

    if ($want_redis) {
        my %ro = ref $want_redis eq 'HASH' ? %$want_redis : ();
        $self->{redis} = $self->new_redis(%ro);
    }
    return $self;
}

sub prefix     { $_[0]{prefix} }
sub html_dir   { $_[0]{html} }
sub error_log  { $_[0]{error_log} }
sub secret     { $_[0]{secret} }        # the key as the module should use it
sub secret_file { $_[0]{secret_file} }
sub redis      { $_[0]{redis} }
sub asan       { $_[0]{asan} }
sub workers    { $_[0]{workers} }
sub module_path { $_[0]{module} }

# port('PORT') is the main one (also %%PORT%%); other names allocate new
# free ports, usable in config as %%NAME%%.
sub port {
    my ($self, $name) = @_;
    $name //= 'PORT';
    $self->{ports}{$name} //= free_port();
    return $self->{ports}{$name};
}

sub set_var { my ($self, $k, $v) = @_; $self->{vars}{$k} = $v }

# Writes the secret file (raw content as given); the module key is the
# content less one trailing newline.  Returns the file's path.
sub set_secret {
    my ($self, $content, $name) = @_;
    my $file = $self->write_file($name // 'secret.key', $content, 0644);
    if (!defined $name) {
        $self->{secret_file} = $file;
        (my $k = $content) =~ s/\r?\n\z//;
        $self->{secret} = $k;
    }
    return $file;
}

sub write_file {
    my ($self, $rel, $content, $mode) = @_;
    my $path = $rel =~ m{^/} ? $rel : "$self->{prefix}/$rel";
    my $dir = dirname($path);
    unless (-d $dir) { make_path($dir, { mode => 0755 }) }
    open my $fh, '>:raw', $path or die "write $path: $!";
    print $fh $content;
    close $fh;
    chmod($mode // 0644, $path);
    return $path;
}

# A file in the docroot (%%HTML%%).
sub html {
    my ($self, $rel, $content) = @_;
    $rel =~ s{^/}{};
    return $self->write_file("html/$rel", $content, 0644);
}

sub _subst {
    my ($self, $text) = @_;
    my %v = (
        PREFIX => $self->{prefix},
        HTML   => $self->{html},
        SECRET => $self->{secret_file},
        %{ $self->{ports} },
    );
    if ($self->{redis}) {
        $v{REDIS} = $self->{redis}->addr;
        $v{REDIS_PORT} = $self->{redis}->port;
        $v{REDIS_UNIX} = $self->{redis}->unix_path // '';
    }
    %v = (%v, %{ $self->{vars} });
    $text =~ s{%%([A-Z0-9_]+)%%}{
        my $n = $1;
        if (!exists $v{$n} && $n =~ /^PORT/) { $v{$n} = $self->port($n) }
        exists $v{$n} ? $v{$n} : croak("config: unknown placeholder %%$n%%")
    }ge;
    return $text;
}

# Writes PREFIX/nginx.conf around the http{} contents $http.
#   main => 'text for the main context', events => 'text for events{}',
#   workers => N, raw => 1 ($http is the whole file, only placeholders).
sub config {
    my ($self, $http, %o) = @_;
    $self->{config_args} = [$http, %o];
    $self->{workers} = $o{workers} if defined $o{workers};
    my $p = $self->{prefix};
    my $conf;
    if ($o{raw}) {
        $conf = $http;
    } else {
        my $load = $self->{use_module} ? "load_module $self->{module};\n" : '';
        my $main = $o{main} // '';
        my $events = $o{events} // '';
        $conf = <<"EOF";
${load}daemon off;
master_process on;
worker_processes $self->{workers};
pid $p/nginx.pid;
error_log $p/error.log debug;
$main
events {
    worker_connections 1024;
$events
}

http {
    access_log $p/access.log;
    client_body_temp_path $p/tmp/client_body;
    proxy_temp_path $p/tmp/proxy;
    fastcgi_temp_path $p/tmp/fastcgi;
    uwsgi_temp_path $p/tmp/uwsgi;
    scgi_temp_path $p/tmp/scgi;
    default_type text/html;
    types { text/html html; text/plain txt; text/css css;
            application/javascript js; }

$http
}
EOF
    }
    $conf = $self->_subst($conf);
    $self->{conf_text} = $conf;
    $self->{conf_file} = $self->write_file('nginx.conf', $conf, 0644);
    return $self->{conf_file};
}

sub conf_file { $_[0]{conf_file} }
sub conf_text { $_[0]{conf_text} }

# 1-based line number of the first line of nginx.conf matching $re
sub conf_line {
    my ($self, $re) = @_;
    my $n = 0;
    for my $l (split /\n/, $self->{conf_text}) {
        $n++;
        return $n if $l =~ $re;
    }
    croak "conf_line: no line matches $re";
}

sub _nginx_env {
    my ($self) = @_;
    return {} unless $self->{asan};
    return {
        LD_PRELOAD   => $self->{libasan},
        ASAN_OPTIONS => "detect_leaks=0:log_path=$self->{prefix}/asan/asan",
    };
}

sub _nginx_argv {
    my ($self, @extra) = @_;
    return [$self->{nginx}, '-p', "$self->{prefix}/", '-c', $self->{conf_file},
            '-e', $self->{error_log}, @extra];
}

# nginx -t: returns ($exit_code, $output)
sub nginx_t {
    my ($self) = @_;
    return run_cmd($self->_nginx_argv('-t'), env => $self->_nginx_env);
}

sub _file_size { my $s = -s $_[0]; $s // 0 }

sub _read_from {
    my ($file, $offset) = @_;
    open my $fh, '<', $file or return '';
    seek $fh, $offset // 0, 0;
    local $/; my $t = <$fh>;
    return $t // '';
}

sub master_pid { $_[0]{master} }

# Starts nginx and waits until the port answers and the workers exist.
# Dies (after a failed test) with the error log tail if it cannot.
sub start {
    my ($self, %o) = @_;
    croak 'start: call config() first' unless $self->{conf_file};
    croak 'start: nginx already running' if $self->{master};
    $self->{log_offset} = _file_size($self->{error_log});
    $self->{err_offset} = _file_size($self->{stderr_log});
    $self->{allowed} = [] unless $o{keep_allowed};
    $self->{asan_seen} = { map { $_ => 1 } glob("$self->{prefix}/asan/asan*") };

    my $pid = _spawn_exec(argv => $self->_nginx_argv, log => $self->{stderr_log},
                          env => $self->_nginx_env, what => 'nginx');
    $self->{master} = $pid;
    my $port = $o{port} // $self->{ports}{PORT};
    my $t0 = time();
    my $ok = wait_until {
        return 'dead' if waitpid($pid, WNOHANG) == $pid;
        return 0 unless scalar($self->worker_pids) >= $self->{workers};
        return _port_answers($port);
    } timeout => $o{timeout} // 15, interval => 0.02;
    if (!$ok || $ok eq 'dead') {
        my $st = $?;
        _forget_child($pid) if $ok;
        delete $self->{master} if $ok;
        # a port picked as free was taken meanwhile: new ports, once more
        my $tries = $o{_tries} // 0;
        if ($ok && $tries < 3 && !$o{port} && $self->{config_args}
            && $self->log_lines(qr/bind\(\) to .* failed \(98: Address already in use\)/))
        {
            Test::More::diag('port taken, retrying with new ports');
            $self->{ports}{$_} = free_port() for keys %{ $self->{ports} };
            $self->config(@{ $self->{config_args} });
            return $self->start(%o, _tries => $tries + 1);
        }
        my $why = $ok ? "nginx exited (status $st)" : 'nginx did not answer in time';
        Test::More::fail("nginx started: $why");
        Test::More::diag($self->_log_tail(30));
        Test::More::diag(_read_from($self->{stderr_log}, $self->{err_offset}));
        die "nginx failed to start\n";
    }
    $self->{started_in} = time() - $t0;
    return 1;
}

sub _log_tail {
    my ($self, $n) = @_;
    my @l = split /\n/, _read_from($self->{error_log}, $self->{log_offset});
    @l = grep { !/\[debug\]/ } @l;
    @l = @l[-$n .. -1] if @l > $n;
    return join("\n", @l);
}

# Children of the master whose title is "nginx: worker process" (not the
# "is shutting down" ones unless $all).
sub worker_pids {
    my ($self, $all) = @_;
    my $m = $self->{master} or return;
    my @w;
    opendir my $d, '/proc' or return;
    for my $p (readdir $d) {
        next unless $p =~ /^\d+$/;
        open my $fh, '<', "/proc/$p/stat" or next;
        my $stat = <$fh> // next;
        my ($ppid) = $stat =~ /\)\s+\S+\s+(\d+)/ or next;
        next unless $ppid == $m;
        open my $c, '<', "/proc/$p/cmdline" or next;
        my $cmd = <$c> // '';
        $cmd =~ s/\0+$//;
        next unless $cmd =~ /worker process/;
        next if !$all && $cmd =~ /shutting down/;
        push @w, $p + 0;
    }
    @w = sort { $a <=> $b } @w;
    return wantarray ? @w : scalar @w;
}

# Reload the configuration (nginx -s reload, or signal => 1 for a plain
# HUP) and wait until a new full set of workers is running.  Returns true
# when the new workers are up; with wait_old => SECONDS also waits that
# long at most for the old workers to exit (false otherwise).
sub reload {
    my ($self, %o) = @_;
    my $m = $self->{master} or croak 'reload: not running';
    my %old = map { $_ => 1 } $self->worker_pids(1);
    if ($o{signal}) {
        kill 'HUP', $m;
    } else {
        my ($rc, $out) = run_cmd($self->_nginx_argv('-s', 'reload'),
                                 env => $self->_nginx_env);
        if ($rc != 0) {
            Test::More::diag("nginx -s reload: exit $rc: $out");
            return 0;
        }
    }
    my $ok = wait_until {
        my @new = grep { !$old{$_} } $self->worker_pids;
        @new >= $self->{workers};
    } timeout => $o{timeout} // 10;
    return 0 unless $ok;
    if ($o{wait_old}) {
        my $gone = wait_until {
            !grep { kill 0, $_ } keys %old
        } timeout => $o{wait_old};
        if (!$gone) {
            Test::More::diag('old workers still running: '
                . join(' ', map { "$_ (" . _title($_) . ')' }
                            grep { kill 0, $_ } keys %old));
            return 0;
        }
    }
    return 1;
}

# Graceful stop (QUIT), deadline, then the error log checks (as tests).
#   allow => [qr/.../] : extra [error] lines expected.  no_checks => 1.
sub stop {
    my ($self, %o) = @_;
    my $m = delete $self->{master};
    if (!$m) { return 1 }
    kill 'QUIT', $m;
    my $timeout = $o{timeout} // 10;
    my $t0 = time();
    my $status;
    my $exited = wait_until {
        my $w = waitpid($m, WNOHANG);
        if ($w == $m || $w == -1) { $status = $?; return 1 }
        0;
    } timeout => $timeout, interval => 0.02;
    my $took = time() - $t0;
    if (!$exited) {
        Test::More::diag("workers still running after ${timeout}s: "
                         . join(' ', $self->_worker_titles($m)));
        kill 'KILL', -$m; waitpid($m, 0);
    }
    _forget_child($m);
    kill 'KILL', -$m;     # stray workers of an aborted master, if any
    Test::More::ok($exited, sprintf('nginx stopped with QUIT in %.2fs (limit %ds)',
                                    $took, $timeout));
    Test::More::is($status // -1, 0, 'nginx master exit status 0') if $exited;
    return $self->check_logs(%o) unless $o{no_checks};
    return $exited;
}

sub _worker_titles {
    my ($self, $m) = @_;
    local $self->{master} = $m;
    return map { "$_ (" . _title($_) . ')' } $self->worker_pids(1);
}

sub _title {
    open my $c, '<', "/proc/$_[0]/cmdline" or return '?';
    my $t = <$c> // ''; $t =~ s/\0+$//; $t =~ s/\0/ /g; return $t;
}

# Lines of the error log written since the last start() (or all with
# all => 1) that match $re.
sub log_lines {
    my ($self, $re, %o) = @_;
    my $text = _read_from($self->{error_log}, $o{all} ? 0 : $self->{log_offset});
    my @l = split /\n/, $text;
    return defined $re ? grep { $_ =~ $re } @l : @l;
}

sub stderr_text {
    my ($self) = @_;
    return _read_from($self->{stderr_log}, $self->{err_offset});
}

# Waits until an error log line (since start) matches; returns it.
sub wait_log {
    my ($self, $re, %o) = @_;
    my $found;
    wait_until { ($found) = $self->log_lines($re); defined $found }
        timeout => $o{timeout} // 5, interval => 0.05;
    return $found;
}

# [error] lines matching one of these are expected by the test.
sub allow_error { my ($self, @re) = @_; push @{ $self->{allowed} }, @re }

sub _level_re { qr/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d \[(\w+)\]/ }

# Problem lines since start: (\@fatal, \@unexpected_errors, \@asan)
sub log_problems {
    my ($self, %o) = @_;
    my (@fatal, @errors, @asan);
    my @allow = (@{ $self->{allowed} }, @{ $o{allow} || [] });
    my $lre = _level_re();
    for my $l ($self->log_lines) {
        if ($l =~ /open socket #?\d* ?.*left in connection/) { push @fatal, $l; next }
        if ($l =~ /ERROR: AddressSanitizer|runtime error:/) { push @asan, $l; next }
        my ($lvl) = $l =~ $lre or next;
        if ($lvl =~ /^(alert|crit|emerg)$/) { push @fatal, $l; next }
        if ($lvl eq 'error') {
            push @errors, $l unless grep { $l =~ $_ } @allow;
        }
    }
    for my $l (split /\n/, $self->stderr_text) {
        push @fatal, "stderr: $l" if $l =~ /\[(alert|crit|emerg)\]/;
        push @asan,  "stderr: $l" if $l =~ /ERROR: AddressSanitizer|runtime error:|LeakSanitizer/;
    }
    for my $f (glob("$self->{prefix}/asan/asan*"), glob("$self->{prefix}/asan.*")) {
        next if $self->{asan_seen}{$f};
        next unless -s $f;
        my $text = _read_from($f, 0);
        push @asan, "$f:\n" . substr($text, 0, 4000);
    }
    return (\@fatal, \@errors, \@asan);
}

sub check_logs {
    my ($self, %o) = @_;
    my ($fatal, $errors, $asan) = $self->log_problems(%o);
    my $ok = 1;
    $ok &= Test::More::ok(!@$fatal, 'error log: no [alert]/[crit]/[emerg]/"open socket left"')
        || Test::More::diag(join "\n", @$fatal[0 .. ($#$fatal < 19 ? $#$fatal : 19)]);
    $ok &= Test::More::ok(!@$errors, 'error log: no unexpected [error]')
        || Test::More::diag(join "\n", @$errors[0 .. ($#$errors < 19 ? $#$errors : 19)]);
    if ($self->{asan} || @$asan) {
        $ok &= Test::More::ok(!@$asan, 'no AddressSanitizer reports')
            || Test::More::diag(join "\n", @$asan);
    }
    return $ok;
}

sub _cleanup_abnormal {
    my ($self) = @_;
    if (my $m = delete $self->{master}) {
        # fast shutdown first (the master reaps its workers), then KILL
        kill 'TERM', $m;
        my $gone = wait_until {
            my $w = waitpid($m, WNOHANG); $w == $m || $w == -1
        } timeout => 3, interval => 0.01;
        if (!$gone) { kill 'KILL', -$m; kill 'KILL', $m; waitpid($m, 0) }
        kill 'KILL', -$m;
        _forget_child($m);
    }
    for my $r (@{ $self->{redises} }) { eval { $r->kill9 } }
}

###########################################################################
# HTTP client

# $t->http_get($path, Header => value, ...); option keys start with '-':
#   -port => N, -timeout => seconds, -method => 'HEAD', -body => '...'
sub http_get {
    my ($self, $path, @h) = @_;
    my (%opt, @headers);
    while (@h) {
        my ($k, $v) = splice @h, 0, 2;
        if ($k =~ /^-(\w+)$/) { $opt{$1} = $v } else { push @headers, $k, $v }
    }
    my $method = $opt{method} // 'GET';
    my $body = $opt{body};
    my $req = "$method $path HTTP/1.1\r\n";
    my %has;
    for (my $i = 0; $i < @headers; $i += 2) { $has{ lc $headers[$i] } = 1 }
    $req .= "Host: localhost\r\n" unless $has{host};
    $req .= "Connection: close\r\n" unless $has{connection};
    while (@headers) {
        my ($k, $v) = splice @headers, 0, 2;
        $req .= "$k: $v\r\n";
    }
    if (defined $body) {
        $req .= 'Content-Length: ' . length($body) . "\r\n" unless $has{'content-length'};
        $req .= "\r\n$body";
    } else {
        $req .= "\r\n";
    }
    return http_request_to($opt{port} // $self->{ports}{PORT}, $req,
                           timeout => $opt{timeout}, head => $method eq 'HEAD');
}

# Sends the raw requests (each with "Connection: close") on connections
# that are open and idle, while the (single) worker is stopped, so that
# it reads them all in one turn of its event loop; returns the
# responses in the same order.
sub one_turn {
    my ($self, @raw) = @_;
    my @socks;
    for (@raw) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $self->{ports}{PORT},
                                      Proto => 'tcp', Timeout => 10)
            or die "connect: $!";
        binmode $s;
        # accepted and idle: one untracked request answered first
        syswrite($s, "GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n");
        my $buf = '';
        my $sel = IO::Select->new($s);
        while ($sel->can_read(10)) {
            sysread($s, $buf, 65536, length $buf) or last;
            my $h = index($buf, "\r\n\r\n");
            last if $h >= 0 && $buf =~ /Content-Length: (\d+)/i
                    && length($buf) >= $h + 4 + $1;
        }
        push @socks, $s;
    }
    my ($worker) = $self->worker_pids;
    kill 'STOP', $worker;
    syswrite($socks[$_], $raw[$_]) for 0 .. $#raw;
    kill 'CONT', $worker;
    my @res;
    my $deadline = time() + 10;
    for my $s (@socks) {
        my $res = bless { status => 0, headers => {}, header_list => [],
                          body => '', raw => '' }, 'Lifecycle::Test::Response';
        $res->{raw} = _read_to_close($s, $deadline, $res);
        _parse_response($res, $res->{raw});
        push @res, $res;
    }
    return @res;
}

sub http_head { my ($self, $path, @h) = @_; $self->http_get($path, -method => 'HEAD', @h) }

sub http_post {
    my ($self, $path, $body, @h) = @_;
    $self->http_get($path, -method => 'POST', -body => $body // '', @h);
}

# Raw request to the main port
sub http_request {
    my ($self, $raw, %o) = @_;
    return http_request_to($o{port} // $self->{ports}{PORT}, $raw, %o);
}

# Sends $raw to 127.0.0.1:$port (or a unix:/path) and reads the whole
# response (until close).  Never dies: on failure status is 0 and error
# is set.
sub http_request_to {
    my ($port, $raw, %o) = @_;
    my $timeout = $o{timeout} // 10;
    my $t0 = time();
    my $res = bless { status => 0, headers => {}, header_list => [],
                      body => '', raw => '' }, 'Lifecycle::Test::Response';
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => $timeout);
    if (!$s) {
        $res->{error} = "connect: $!";
        $res->{elapsed} = time() - $t0;
        return $res;
    }
    binmode $s;
    my $off = 0;
    while ($off < length $raw) {
        my $n = syswrite($s, $raw, length($raw) - $off, $off);
        if (!defined $n) {
            next if $! == EINTR;
            $res->{error} = "write: $!"; last;
        }
        $off += $n;
    }
    my $buf = _read_to_close($s, $t0 + $timeout, $res);
    $res->{elapsed} = time() - $t0;
    $res->{raw} = $buf;
    _parse_response($res, $buf, $o{head});
    return $res;
}

# reads until the peer closes (or the deadline: error "timeout"), closes
sub _read_to_close {
    my ($s, $deadline, $res) = @_;
    my $sel = IO::Select->new($s);
    my $buf = '';
    while (1) {
        my $left = $deadline - time();
        if ($left <= 0) { $res->{error} //= 'timeout'; last }
        my @r = $sel->can_read($left);
        next unless @r;
        my $n = sysread($s, $buf, 65536, length $buf);
        if (!defined $n) {
            next if $! == EINTR;
            $res->{error} //= "read: $!"; last;
        }
        last if $n == 0;
    }
    close $s;
    return $buf;
}

sub _parse_response {
    my ($res, $buf, $head) = @_;
    my $i = index($buf, "\r\n\r\n");
    if ($i < 0) { $res->{error} //= 'incomplete response'; return }
    my $hdr = substr($buf, 0, $i);
    my $body = substr($buf, $i + 4);
    my ($status_line, @lines) = split /\r\n/, $hdr;
    if ($status_line =~ m{^HTTP/\d\.\d (\d{3})}) { $res->{status} = $1 + 0 }
    else { $res->{error} //= "bad status line: $status_line"; return }
    $res->{status_line} = $status_line;
    for my $l (@lines) {
        my ($k, $v) = $l =~ /^([^:]+):\s*(.*?)\s*$/ or next;
        push @{ $res->{headers}{lc $k} }, $v;
        push @{ $res->{header_list} }, [$k, $v];
    }
    my $te = $res->{headers}{'transfer-encoding'};
    if (!$head && $te && grep { /chunked/i } @$te) {
        my $out = '';
        while ($body =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $len = hex $1;
            last if $len == 0;
            $out .= substr($body, 0, $len);
            substr($body, 0, $len + 2) = '';
        }
        $body = $out;
    }
    $res->{body} = $head ? '' : $body;
}

sub status_metrics {
    my ($self, $path, @h) = @_;
    my $r = $self->http_get($path // '/status', @h);
    my $m = parse_metrics($r->{body});
    $m->{_response} = $r;
    return $m;
}

# metric($metrics, 'name', label => value) -> value or undef
sub metric {
    my ($self, $m, $name, %l) = @_;
    return $m->{ metric_key($name, %l) };
}

###########################################################################
# fixtures

# A TCP port nothing listens on: a socket bound but not listening (Linux
# answers SYN with RST: ECONNREFUSED).  Kept for the object's lifetime.
sub refusing_port {
    my ($self) = @_;
    return $self->{refusing_port} if $self->{refusing_port};
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp') or die "refusing: $!";
    # IO::Socket::INET without Listen binds only when LocalPort is set
    $self->{refusing_sock} = $s;
    $self->{refusing_port} = $s->sockport;
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $self->{refusing_port},
                                  Proto => 'tcp', Timeout => 1);
    die "refusing port $self->{refusing_port} accepted a connection" if $c;
    return $self->{refusing_port};
}

# A listener (forked child) that accepts TCP connections, keeps them open
# and never sends a byte.  Returns its port.
sub hung_listener {
    my ($self) = @_;
    return $self->{hung_port} if $self->{hung_port};
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 128, ReuseAddr => 1)
        or die "hung listener: $!";
    my $port = $l->sockport;
    my $parent = $$;
    my $pid = $self->spawn(sub {
        my @held;
        my $sel = IO::Select->new($l);
        while (getppid() == $parent) {
            for my $s ($sel->can_read(0.2)) {
                if ($s == $l) {
                    my $c = $l->accept or next;
                    push @held, $c;
                    $sel->add($c);
                } else {
                    # read and discard, never answer
                    my $n = sysread($s, my $junk, 65536);
                    if (!$n) { $sel->remove($s); close $s;
                               @held = grep { $_ != $s } @held }
                }
            }
        }
        return;
    }, what => 'hung listener');
    close $l;
    $self->{hung_pid} = $pid;
    $self->{hung_port} = $port;
    return $port;
}

# Starts another redis-server (options as Lifecycle::Test::Redis->new).
sub new_redis {
    my ($self, %o) = @_;
    my $n = scalar @{ $self->{redises} };
    my $r = Lifecycle::Test::Redis->new(dir => "$self->{prefix}/redis$n", %o);
    push @{ $self->{redises} }, $r;
    return $r;
}

sub redis_cmd { my $self = shift; $self->{redis}->cmd(@_) }

###########################################################################
# cookies

# lc_vid (or $name) value from a response's Set-Cookie headers
sub cookie_from {
    my ($self, $res, $name) = @_;
    return $res->cookie($name // 'lc_vid');
}

# the cookie a known visitor sends back: "lc_vid=VID.SIG"
sub cookie_for {
    my ($self, $vid, $name) = @_;
    return ($name // 'lc_vid') . '=' . sign_vid($vid, $self->{secret});
}

sub sign { my ($self, $vid) = @_; sign_vid($vid, $self->{secret}) }

###########################################################################

package Lifecycle::Test::Response;

use strict;
use warnings;

sub status  { $_[0]{status} }
sub body    { $_[0]{body} }
sub elapsed { $_[0]{elapsed} }
sub error   { $_[0]{error} }
sub raw     { $_[0]{raw} }

# first value of a header (case-insensitive), undef if absent
sub header {
    my ($self, $name) = @_;
    my $v = $self->{headers}{lc $name};
    return $v ? $v->[0] : undef;
}

# all values of a header
sub headers { my ($self, $name) = @_; @{ $self->{headers}{lc $name} || [] } }

sub set_cookies { $_[0]->headers('Set-Cookie') }

# the full Set-Cookie line for cookie $name
sub set_cookie_line {
    my ($self, $name) = @_;
    my @l = grep { /^\Q$name\E=/ } $self->set_cookies;
    return $l[0];
}

# the value of cookie $name as set by this response
sub cookie {
    my ($self, $name) = @_;
    my $l = $self->set_cookie_line($name // 'lc_vid') // return undef;
    my ($v) = $l =~ /^[^=]+=([^;]*)/;
    return $v;
}

# { attribute-lowercased => value-or-1 } of the Set-Cookie for $name
sub cookie_attrs {
    my ($self, $name) = @_;
    my $l = $self->set_cookie_line($name // 'lc_vid') // return undef;
    my (undef, @a) = split /;\s*/, $l;
    my %a;
    for (@a) { my ($k, $v) = split /=/, $_, 2; $a{lc $k} = $v // 1 }
    return \%a;
}

###########################################################################

package Lifecycle::Test::Redis;

# A private redis-server (own port on 127.0.0.1, optional unix socket and
# password) and a minimal RESP client.

use strict;
use warnings;

use Carp qw(croak);
use Errno qw(EINTR);
use File::Path qw(make_path);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);

#   dir => DIR, unix => 1 (also listen on DIR/redis.sock), password => P,
#   args => [extra redis-server arguments], no_start => 1
sub new {
    my ($class, %o) = @_;
    my $self = bless {
        dir      => $o{dir},
        port     => $o{port} // Lifecycle::Test::free_port(),
        password => $o{password},
        args     => $o{args} || [],
        bin      => $ENV{REDIS_SERVER} || '/usr/bin/redis-server',
        db       => 0,
    }, $class;
    make_path($self->{dir}, { mode => 0755 });
    chmod 0755, $self->{dir};
    $self->{unix} = "$self->{dir}/redis.sock" if $o{unix};
    $self->start unless $o{no_start};
    return $self;
}

sub port { $_[0]{port} }
sub addr { "127.0.0.1:$_[0]{port}" }
sub unix_path { $_[0]{unix} }
sub pid { $_[0]{pid} }

sub start {
    my ($self) = @_;
    croak 'redis already running' if $self->{pid};
    my @argv = ($self->{bin}, '--port', $self->{port}, '--bind', '127.0.0.1',
                '--save', '', '--appendonly', 'no', '--dir', $self->{dir},
                '--daemonize', 'no', '--logfile', '',
                '--protected-mode', 'no');
    push @argv, '--unixsocket', $self->{unix}, '--unixsocketperm', '777'
        if $self->{unix};
    push @argv, '--requirepass', $self->{password} if defined $self->{password};
    push @argv, @{ $self->{args} };
    my $pid = Lifecycle::Test::_spawn_exec(argv => \@argv,
                                           log => "$self->{dir}/redis.log",
                                           what => 'redis-server');
    $self->{pid} = $pid;
    delete $self->{sock};
    my $ok = Lifecycle::Test::wait_until(sub {
        return 'dead' if waitpid($pid, WNOHANG) == $pid;
        local $self->{reply_timeout} = 0.5;
        my $r = eval { $self->cmd('PING') };
        return defined $r && $r eq 'PONG';
    }, timeout => 10, interval => 0.02);
    if (!$ok || $ok eq 'dead') {
        my $log = '';
        if (open my $fh, '<', "$self->{dir}/redis.log") { local $/; $log = <$fh> }
        Lifecycle::Test::_forget_child($pid) if $ok;
        delete $self->{pid};
        if (!$ok) { kill 'KILL', $pid; waitpid($pid, 0); Lifecycle::Test::_forget_child($pid) }
        if (!$self->{started_once} && ($self->{port_tries} // 0) < 3
            && $log =~ /Address already in use/)
        {
            $self->{port_tries}++;
            $self->{port} = Lifecycle::Test::free_port();
            unlink "$self->{dir}/redis.log";
            return $self->start;
        }
        die "redis-server did not start on port $self->{port}:\n$log\n";
    }
    $self->{started_once} = 1;
    return 1;
}

sub _reap {
    my ($self, $timeout) = @_;
    my $pid = $self->{pid} or return 1;
    my $ok = Lifecycle::Test::wait_until(sub {
        my $w = waitpid($pid, WNOHANG);
        $w == $pid || $w == -1;
    }, timeout => $timeout // 10, interval => 0.01);
    if ($ok) {
        Lifecycle::Test::_forget_child($pid);
        delete $self->{pid};
        delete $self->{sock};
    }
    return $ok;
}

# graceful stop
sub stop {
    my ($self) = @_;
    my $pid = $self->{pid} or return 1;
    kill 'TERM', $pid;
    return 1 if $self->_reap(10);
    return $self->kill9;
}

sub kill9 {
    my ($self) = @_;
    my $pid = $self->{pid} or return 1;
    kill 'KILL', -$pid;
    kill 'KILL', $pid;
    return $self->_reap(10);
}

# same port (and socket, password, args); data is gone (no persistence)
sub restart {
    my ($self, %o) = @_;
    $o{kill} ? $self->kill9 : $self->stop;
    return $self->start;
}

sub _connect {
    my ($self) = @_;
    return $self->{sock} if $self->{sock};
    my $s;
    if ($self->{via_unix} && $self->{unix}) {
        $s = IO::Socket::UNIX->new(Peer => $self->{unix}, Type => Socket::SOCK_STREAM());
    } else {
        $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port},
                                   Proto => 'tcp', Timeout => 2);
    }
    die "redis connect 127.0.0.1:$self->{port}: $!\n" unless $s;
    binmode $s;
    $self->{sock} = $s;
    $self->{rbuf} = '';
    if (defined $self->{password}) {
        my $r = $self->_roundtrip('AUTH', $self->{password});
    }
    if ($self->{db}) {
        $self->_roundtrip('SELECT', $self->{db});
    }
    return $s;
}

# cmd(@args): Perl data for the reply (string, integer, undef for nil,
# arrayref for arrays).  An error reply dies ("redis: ERR ...") unless
# called as cmd_err, which returns (undef, $error).
sub cmd {
    my ($self, @args) = @_;
    my ($v, $err) = $self->cmd_err(@args);
    die "redis: $err (@args)\n" if defined $err;
    return $v;
}

sub cmd_err {
    my ($self, @args) = @_;
    my $tries = 2;
    while ($tries--) {
        my @r = eval { $self->_connect; $self->_roundtrip(@args) };
        if ($@) {
            delete $self->{sock};
            die $@ unless $tries;
            next;
        }
        if (uc $args[0] eq 'SELECT' && !defined $r[1]) { $self->{db} = $args[1] }
        return @r;
    }
}

sub _roundtrip {
    my ($self, @args) = @_;
    my $req = '*' . scalar(@args) . "\r\n";
    $req .= '$' . length($_) . "\r\n$_\r\n" for map { defined $_ ? "$_" : '' } @args;
    my $s = $self->{sock};
    my $off = 0;
    while ($off < length $req) {
        my $n = syswrite($s, $req, length($req) - $off, $off);
        if (!defined $n) { next if $! == EINTR; die "redis write: $!\n" }
        $off += $n;
    }
    return $self->_read_reply;
}

sub _fill {
    my ($self) = @_;
    my $sel = IO::Select->new($self->{sock});
    die "redis: reply timeout\n" unless $sel->can_read($self->{reply_timeout} // 5);
    my $n = sysread($self->{sock}, $self->{rbuf}, 65536, length $self->{rbuf});
    die "redis: connection closed\n" unless $n;
}

sub _line {
    my ($self) = @_;
    while ((my $i = index($self->{rbuf}, "\r\n")) < 0) { $self->_fill }
    my $i = index($self->{rbuf}, "\r\n");
    my $l = substr($self->{rbuf}, 0, $i);
    substr($self->{rbuf}, 0, $i + 2) = '';
    return $l;
}

# returns ($value, $error)
sub _read_reply {
    my ($self) = @_;
    my $l = $self->_line;
    my $t = substr($l, 0, 1, '');
    if ($t eq '+') { return ($l, undef) }
    if ($t eq '-') { return (undef, $l) }
    if ($t eq ':') { return ($l + 0, undef) }
    if ($t eq '$') {
        return (undef, undef) if $l < 0;
        $self->_fill while length($self->{rbuf}) < $l + 2;
        my $v = substr($self->{rbuf}, 0, $l);
        substr($self->{rbuf}, 0, $l + 2) = '';
        return ($v, undef);
    }
    if ($t eq '*') {
        return (undef, undef) if $l < 0;
        my @a;
        for (1 .. $l) {
            my ($v, $e) = $self->_read_reply;
            push @a, defined $e ? bless(\$e, 'Lifecycle::Test::RedisError') : $v;
        }
        return (\@a, undef);
    }
    die "redis: bad reply type '$t$l'\n";
}

sub select_db { my ($self, $db) = @_; $self->cmd('SELECT', $db); $self->{db} = $db }

sub hgetall { my ($self, $k) = @_; Lifecycle::Test::list_to_hash($self->cmd('HGETALL', $k)) }

sub ttl { my ($self, $k) = @_; $self->cmd('TTL', $k) }

sub dbsize { $_[0]->cmd('DBSIZE') }

sub keys_matching { my ($self, $pat) = @_; sort @{ $self->cmd('KEYS', $pat // '*') } }

# INFO section -> { field => value }
sub info {
    my ($self, $section) = @_;
    my $text = $self->cmd('INFO', $section // 'all');
    my %h;
    for (split /\r?\n/, $text) {
        next if /^#/ || !/:/;
        my ($k, $v) = split /:/, $_, 2;
        $h{$k} = $v;
    }
    return \%h;
}

# { command => calls } from INFO commandstats (lowercase names; subcommands
# as "script|load")
sub commandstats {
    my ($self) = @_;
    my $full = $self->commandstats_full;
    return { map { $_ => $full->{$_}{calls} // 0 } keys %$full };
}

# command => { calls => N, failed_calls => N, rejected_calls => N, ... }
sub commandstats_full {
    my ($self) = @_;
    my $i = $self->info('commandstats');
    my %c;
    for my $k (keys %$i) {
        next unless $k =~ /^cmdstat_(.+)$/;
        $c{$1} = { map { split /=/, $_, 2 } split /,/, $i->{$k} };
    }
    return \%c;
}

# MONITOR on a second connection: monitor_start, then monitor_collect
# returns the top-level commands other clients sent since (script-internal
# "lua" commands and this client's own commands left out), as
# [ { addr => '127.0.0.1:port', cmd => 'EVALSHA', args => [...] }, ... ].
sub monitor_start {
    my ($self) = @_;
    my $m = bless { %$self, sock => undef, rbuf => '' }, ref $self;
    $m->_connect;
    my ($ok, $err) = $m->_roundtrip('MONITOR');
    die "MONITOR: $err\n" if $err;
    $self->{monitor} = $m;
    # our own address, to leave our commands out
    my $me = $self->cmd('CLIENT', 'INFO');
    ($self->{my_addr}) = $me =~ /\baddr=(\S+)/;
    return 1;
}

sub monitor_collect {
    my ($self) = @_;
    my $m = delete $self->{monitor} or croak 'monitor_start first';
    my $marker = 'lifecycle-test-marker-' . int(rand(1e9));
    $self->cmd('ECHO', $marker);
    my @cmds;
    while (1) {
        my $l = $m->_line;
        last if index($l, $marker) >= 0;
        my ($addr, $rest) = $l =~ /^\+\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$/ or next;
        next if $addr eq 'lua';
        next if defined $self->{my_addr} && $addr eq $self->{my_addr};
        my @args;
        while ($rest =~ /"((?:[^"\\]|\\.)*)"/g) { push @args, $1 }
        push @cmds, { addr => $addr, cmd => uc(shift(@args) // ''), args => \@args };
    }
    close $m->{sock};
    return \@cmds;
}

# entries of a stream: [ { _id => ID, field => value, ... }, ... ]
sub stream {
    my ($self, $key) = @_;
    my $r = $self->cmd('XRANGE', $key, '-', '+') || [];
    return [ map { { _id => $_->[0], @{ $_->[1] } } } @$r ];
}

package Lifecycle::Test::RedisError;
use overload '""' => sub { ${ $_[0] } }, fallback => 1;

1;
