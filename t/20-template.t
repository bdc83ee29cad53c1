#!/usr/bin/perl
# The template engine (ngx_lifecycle_module/lifecycle_template.c) on its
# own, no nginx: t/template/test_template.c is built with AddressSanitizer
# and UBSan when the compiler has them and its TAP is replayed here; then,
# if valgrind is installed, a plain build runs once under valgrind.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::CUnit qw(c_unit);

my $root = "$FindBin::Bin/..";

c_unit(sources => ["$root/t/template/test_template.c",
                   "$root/ngx_lifecycle_module/lifecycle_template.c"],
       cflags => [qw(-std=c99 -Wall -Wextra -Werror -O1 -g),
                  "-I$root/ngx_lifecycle_module"]);

done_testing();
