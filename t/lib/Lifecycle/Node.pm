package Lifecycle::Node;

# Runs the JavaScript tests of lifecycle.js (js/test/) from prove: node is
# found (or the test is skipped with what to install), its TAP output is
# replayed as Test::More results, one per top-level "ok"/"not ok" line,
# with its "#" lines as diagnostics.
#
#   use Lifecycle::Node qw(node_or_skip run_node_tap);
#   my $node = node_or_skip(20);                 # skip_all if missing/old
#   run_node_tap([$node, 'js/test/x.mjs', ...], timeout => 120);

use strict;
use warnings;

use Cwd qw(abs_path);
use Exporter qw(import);
use File::Basename qw(dirname);
use File::Spec;
use IO::Select;
use POSIX qw(:sys_wait_h);
use Test::More ();
use Time::HiRes qw(time);

our @EXPORT_OK = qw(node_or_skip run_node_tap repo_dir);

my $REPO = abs_path(File::Spec->catdir(dirname(abs_path(__FILE__)),
                                       '..', '..', '..'));

sub repo_dir { $REPO }

# The node binary, if it is at least version $min; else skip_all saying
# what to install.
sub node_or_skip {
    my ($min) = @_;
    my $node = $ENV{NODE};
    if (!$node) {
        for my $d (split /:/, $ENV{PATH} // '') {
            if (-x "$d/node") { $node = "$d/node"; last }
        }
    }
    if (!$node) {
        Test::More::plan(skip_all => 'node not found (make test installs it '
                         . 'as root: apt-get install nodejs npm)');
        exit 0;
    }
    my $v = `"$node" --version 2>/dev/null` // '';
    my ($major) = $v =~ /^v(\d+)\./;
    if ($min && (!$major || $major < $min)) {
        chomp $v;
        Test::More::plan(skip_all => "node $v is older than $min");
        exit 0;
    }
    return $node;
}

# Runs $argv (an array ref) and replays its TAP. Options: timeout
# (seconds, default 120), env (hash), dir (working directory). Returns
# the exit code (-1 on timeout). A run that dies, times out or prints no
# test result fails a test of its own.
sub run_node_tap {
    my ($argv, %o) = @_;
    my $timeout = $o{timeout} // 120;
    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        close $r;
        setpgrp(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>&', $w or POSIX::_exit(126);
        open STDERR, '>&', $w or POSIX::_exit(126);
        chdir $o{dir} if $o{dir};
        %ENV = (%ENV, %{ $o{env} || {} });
        { no warnings "exec"; exec { $argv->[0] } @$argv; }
        print STDERR "exec $argv->[0]: $!\n";
        POSIX::_exit(127);
    }
    close $w;

    my ($results, $buf, @tail) = (0, '');
    my $deadline = time() + $timeout;
    my $sel = IO::Select->new($r);
    my $timed_out = 0;
    my $line = sub {
        my ($l) = @_;
        push @tail, $l; shift @tail if @tail > 40;
        if ($l =~ /^(not )?ok\s+\d+\s*(?:-\s*)?(.*?)(?:\s+#\s*(SKIP|TODO)\b\s*(.*))?$/i) {
            my ($not, $name, $dir, $why) = ($1, $2, uc($3 // ''), $4 // '');
            $results++;
            if ($dir eq 'SKIP') {
                Test::More->builder->skip("$name: $why");
            } elsif ($dir eq 'TODO') {
                my $tb = Test::More->builder;
                $tb->todo_start($why);
                Test::More::ok(!$not, $name);
                $tb->todo_end;
            } else {
                Test::More::ok(!$not, $name);
            }
        } elsif ($l =~ /^#\s?(.*)$/) {
            Test::More::note($1);
        } elsif ($l =~ /^\s+#\s?(.*)$/ || $l =~ /^\s+(?:not )?ok\b/
                 || $l =~ /^\s*(1\.\.\d+|TAP version)/) {
            # nested subtest lines and the plan: already summed up
        } elsif (length $l) {
            Test::More::note($l);
        }
    };
    while (1) {
        my $left = $deadline - time();
        if ($left <= 0) { $timed_out = 1; last }
        next unless $sel->can_read($left < 1 ? $left : 1);
        my $n = sysread($r, $buf, 65536, length $buf);
        last unless $n;
        while ((my $i = index($buf, "\n")) >= 0) {
            $line->(substr($buf, 0, $i));
            substr($buf, 0, $i + 1) = '';
        }
    }
    $line->($buf) if length $buf;
    close $r;
    if ($timed_out) {
        kill 'KILL', -$pid;
        kill 'KILL', $pid;
    }
    waitpid($pid, 0);
    my $rc = $timed_out ? -1 : ($? & 127 ? 128 + ($? & 127) : $? >> 8);
    if ($timed_out || $rc != 0 || !$results) {
        Test::More::fail("$argv->[1]: "
            . ($timed_out ? "timed out after ${timeout}s"
               : $rc ? "exited with $rc" : 'no test results'));
        Test::More::diag(join "\n", @tail);
    }
    return $rc;
}

1;
