#!/usr/bin/python3
"""A real SMTP server for the agent's tests (aiosmtpd, Debian's
python3-aiosmtpd): every message it accepts becomes DIR/N.eml (the data
as received) and DIR/N.env (MAIL FROM, then one RCPT TO a line), each
written under a temporary name and renamed.

    smtp_sink.py HOST PORT DIR [DELAY [MATCH]]

DELAY (seconds): for the messages whose data contains MATCH (all when
MATCH is empty), wait that long between keeping the message and
answering 250, as an MTA that commits to its queue on the final dot and
is slow to say so: a client killed meanwhile leaves a message the
server has and whose outcome it never learnt.
"""

import asyncio
import os
import signal
import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, outdir, delay, match):
        self.outdir = outdir
        self.delay = delay
        self.match = match.encode()
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        self.n += 1
        name = "%d-%04d" % (time.time_ns(), self.n)
        for ext, body in (
            (".env", "\n".join([envelope.mail_from] + envelope.rcpt_tos)
             .encode() + b"\n"),
            (".eml", data),
        ):
            tmp = os.path.join(self.outdir, "." + name + ext)
            with open(tmp, "wb") as f:
                f.write(body)
            os.rename(tmp, os.path.join(self.outdir, name + ext))
        if self.delay and (not self.match or self.match in data):
            await asyncio.sleep(self.delay)
        return "250 OK queued as " + name


def main():
    host, port, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    match = sys.argv[5] if len(sys.argv) > 5 else ""
    controller = Controller(Sink(outdir, delay, match), hostname=host,
                            port=port)
    controller.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
