#!/usr/bin/perl
# lifecycle.js in node, without a browser (js/test/unit.test.mjs): the
# built js/dist/lifecycle.min.js replays its queue in order, encodes the
# beacon fields, sends nothing under GPC or without consent, reads its
# data-lc-* attributes. "make test" has checked before prove that the
# committed dist file is what js/src/lifecycle.js builds to.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::Node qw(node_or_skip run_node_tap repo_dir);

my $node = node_or_skip(18);
my $js = repo_dir() . '/js';

ok(-s "$js/dist/lifecycle.min.js", 'js/dist/lifecycle.min.js is there')
    or BAIL_OUT('no js/dist/lifecycle.min.js: run make js');

run_node_tap([$node, '--test', '--test-reporter=tap', 'test/unit.test.mjs'],
             dir => $js, timeout => 60);

done_testing;
