#!/usr/bin/perl
# E-mail normalisation, e-mail hashes and unsubscribe tokens
# (ngx_lifecycle_module/lifecycle_identity.c, shared with the agent) on
# their own, no nginx: t/identity/test_identity.c is built with
# AddressSanitizer and UBSan when the compiler has them and its TAP is
# replayed here (accept/refuse table, fuzzed normalisation, hashes and
# tokens against vectors of another HMAC implementation, every tampered
# token refused after a whole constant-time comparison); then, if
# valgrind is installed, a plain build runs once under valgrind.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::CUnit qw(c_unit);

my $root = "$FindBin::Bin/..";

# libcrypto (HMAC); the driver counts the calls of CRYPTO_memcmp
c_unit(sources => ["$root/t/identity/test_identity.c",
                   "$root/ngx_lifecycle_module/lifecycle_identity.c"],
       cflags => [qw(-std=c99 -Wall -Wextra -Werror -O1 -g),
                  "-I$root/ngx_lifecycle_module"],
       libs => ['-lcrypto', '-Wl,--wrap=CRYPTO_memcmp'],
       valgrind_args => [20000]);

done_testing();
