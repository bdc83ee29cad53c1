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
use lib "$FindBin::Bin/lib";
use Test::More;
use Lifecycle::CUnit qw(c_unit);

my $root = "$FindBin::Bin/..";

c_unit(sources => ["$root/t/agent/test_agent.c",
                   grep({ !/lc_agent_main\.c$/ } glob("$root/agent/*.c")),
                   map { "$root/ngx_lifecycle_module/lifecycle_$_.c" }
                       qw(template catalog identity)],
       cflags => [qw(-std=gnu11 -Wall -Wextra -Werror -O1 -g),
                  "-I$root/ngx_lifecycle_module", "-I$root/agent"],
       libs => [qw(-lhiredis -lcurl -ljansson -lcrypto)]);

done_testing();
