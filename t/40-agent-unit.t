#!/usr/bin/perl
# lifecycle-agent's own code on its own, no Redis, no network:
# t/agent/test_agent.c (configuration and time parsing, header safety
# and encoding, quoted-printable, the RFC 5322 message, the webhook
# signature, the unsubscribe link) is built with AddressSanitizer and
# UBSan when the compiler has them and its TAP is replayed here; then a
# plain build runs under valgrind --leak-check=full, which must find no
# leak and no invalid access.

use strict;
use warnings;
use FindBin;
use File::Temp qw(tempdir);
use Test::More;

my $root = "$FindBin::Bin/..";
my $cc = $ENV{CC} || 'cc';

plan skip_all => "no C compiler: install gcc, or set CC"
    unless grep { -x "$_/$cc" } split /:/, $ENV{PATH} // ''
        or -x $cc;

my $dir = tempdir(CLEANUP => 1);
my @sources = ("$root/t/agent/test_agent.c",
               grep({ !/lc_agent_main\.c$/ } glob("$root/agent/*.c")),
               map { "$root/ngx_lifecycle_module/lifecycle_$_.c" }
                   qw(template catalog identity));
my @cflags = (qw(-std=gnu11 -Wall -Wextra -Werror -O1 -g),
              "-I$root/ngx_lifecycle_module", "-I$root/agent");
my @libs = qw(-lhiredis -lcurl -ljansson -lcrypto);
my @sanitize = ('-fsanitize=address,undefined', '-fno-sanitize-recover=all',
                '-fno-omit-frame-pointer');

# a leak or an invalid access must fail the run, with a stack to read
local $ENV{ASAN_OPTIONS} = 'detect_leaks=1:abort_on_error=0:exitcode=23';
local $ENV{UBSAN_OPTIONS} = 'print_stacktrace=1:halt_on_error=1';

# runs a command, returns its exit status and what it printed (stdout,
# then stderr)
sub run {
    my @cmd = @_;
    my ($out, $err) = ("$dir/out", "$dir/err");

    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open(STDOUT, '>', $out) or die "$out: $!";
        open(STDERR, '>', $err) or die "$err: $!";
        exec(@cmd) or die "exec $cmd[0]: $!";
    }
    waitpid($pid, 0);
    my $status = $?;

    return ($status, slurp($out), slurp($err));
}

sub slurp {
    my ($file) = @_;
    open(my $fh, '<', $file) or return '';
    local $/;
    return scalar <$fh>;
}

# sanitizers: only when the compiler has them and their runtime works
# here (LeakSanitizer needs ptrace, which some containers forbid)
my $probe = "$dir/probe.c";
open(my $fh, '>', $probe) or die "$probe: $!";
print $fh "int main(void) { return 0; }\n";
close($fh);

my ($status) = run($cc, @sanitize, '-o', "$dir/probe", $probe);
($status) = run("$dir/probe") if $status == 0;
if ($status != 0) {
    note("$cc: no working -fsanitize=address,undefined, plain build");
    @sanitize = ();
}

my ($out, $err);
($status, $out, $err) = run($cc, @cflags, @sanitize, '-o', "$dir/test",
                            @sources, @libs);
is($status, 0, "build with $cc @cflags @sanitize")
    or diag($out . $err);
if ($status != 0) {
    done_testing();
    exit;
}

# the driver's TAP, one Test::More assertion per line
($status, $out, $err) = run("$dir/test");

my ($plan, $count, $failed) = (undef, 0, 0);
for (split /\n/, $out) {
    if (/^(not )?ok (\d+) - (.*)$/) {
        $count++;
        $failed = !!$1;
        ok(!$1, $3);

    } elsif (/^1\.\.(\d+)$/) {
        $plan = $1;

    } elsif (/^# ?(.*)$/) {
        $failed ? diag($1) : note($1);

    } else {
        diag("unexpected output: $_");
    }
}

is($count, $plan, 'driver ran every test of its plan');
is($status, 0, 'driver exited 0' . (@sanitize ? ', sanitizers clean' : ''))
    or diag($err);

SKIP: {
    my $valgrind = grep { -x "$_/valgrind" } split /:/, $ENV{PATH} // '';
    skip 'valgrind is not installed', 2 unless $valgrind;

    # DWARF 4: the valgrind of bookworm cannot read clang's DWARF 5
    ($status, $out, $err) = run($cc, @cflags, '-gdwarf-4', '-o',
                                "$dir/test-plain", @sources, @libs);
    is($status, 0, 'plain build for valgrind') or diag($out . $err);

    ($status, $out, $err) = run('valgrind', '-q', '--error-exitcode=1',
                                '--leak-check=full', "$dir/test-plain");
    is($status, 0, 'valgrind: no invalid access, no leak, all tests ok')
        or diag($err . join("\n", grep { /^not ok|^#/ } split /\n/, $out));
}

done_testing();
