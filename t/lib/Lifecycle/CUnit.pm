package Lifecycle::CUnit;

# A C test driver of the project's plain-C code (template engine,
# catalog, identities, the agent), run without nginx: built with
# AddressSanitizer and UBSan when the compiler has them and its TAP
# replayed as Test::More assertions; then, when valgrind is installed,
# a plain build runs under valgrind --leak-check=full, which must find no
# leak and no invalid access.
#
#   use Lifecycle::CUnit qw(c_unit);
#   c_unit(sources => [...], cflags => [...], libs => [...],
#          valgrind_args => [...]);     # then done_testing
#
# Perl core only.

use strict;
use warnings;
use Exporter qw(import);
use File::Temp qw(tempdir);
use Test::More;

our @EXPORT_OK = qw(c_unit);

sub slurp {
    my ($file) = @_;
    open(my $fh, '<', $file) or return '';
    local $/;
    return scalar <$fh>;
}

# runs a command: its exit status and what it printed (stdout, stderr)
sub run {
    my ($dir, @cmd) = @_;
    my ($out, $err) = ("$dir/out", "$dir/err");

    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open(STDOUT, '>', $out) or die "$out: $!";
        open(STDERR, '>', $err) or die "$err: $!";
        exec(@cmd) or die "exec $cmd[0]: $!";
    }
    waitpid($pid, 0);

    return ($?, slurp($out), slurp($err));
}

sub c_unit {
    my (%o) = @_;
    my @sources = @{ $o{sources} };
    my @cflags = @{ $o{cflags} };
    my @libs = @{ $o{libs} // [] };
    my $cc = $ENV{CC} || 'cc';

    plan skip_all => "no C compiler: install gcc, or set CC"
        unless grep { -x "$_/$cc" } split /:/, $ENV{PATH} // ''
            or -x $cc;

    my $dir = tempdir(CLEANUP => 1);
    my @sanitize = ('-fsanitize=address,undefined',
                    '-fno-sanitize-recover=all', '-fno-omit-frame-pointer');

    # a leak or an invalid access must fail the run, with a stack to read
    local $ENV{ASAN_OPTIONS} = 'detect_leaks=1:abort_on_error=0:exitcode=23';
    local $ENV{UBSAN_OPTIONS} = 'print_stacktrace=1:halt_on_error=1';

    # sanitizers: only when the compiler has them and their runtime works
    # here (LeakSanitizer needs ptrace, which some containers forbid)
    my $probe = "$dir/probe.c";
    open(my $fh, '>', $probe) or die "$probe: $!";
    print $fh "int main(void) { return 0; }\n";
    close($fh);

    my ($status) = run($dir, $cc, @sanitize, '-o', "$dir/probe", $probe);
    ($status) = run($dir, "$dir/probe") if $status == 0;
    if ($status != 0) {
        note("$cc: no working -fsanitize=address,undefined, plain build");
        @sanitize = ();
    }

    my ($out, $err);
    ($status, $out, $err) = run($dir, $cc, @cflags, @sanitize, '-o',
                                "$dir/test", @sources, @libs);
    is($status, 0, "build with $cc @cflags @sanitize")
        or diag($out . $err);
    return if $status != 0;

    # the driver's TAP, one Test::More assertion per line
    ($status, $out, $err) = run($dir, "$dir/test");

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
        ($status, $out, $err) = run($dir, $cc, @cflags, '-gdwarf-4', '-o',
                                    "$dir/test-plain", @sources, @libs);
        is($status, 0, 'plain build for valgrind') or diag($out . $err);

        ($status, $out, $err) = run($dir, 'valgrind', '-q',
                                    '--error-exitcode=1', '--leak-check=full',
                                    "$dir/test-plain",
                                    @{ $o{valgrind_args} // [] });
        is($status, 0, 'valgrind: no invalid access, no leak, all tests ok')
            or diag($err . join("\n", grep { /^not ok|^#/ } split /\n/, $out));
    }
}

1;
