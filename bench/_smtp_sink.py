"""An SMTP sink in its own process for the benchmarks (so it never competes with the process
being measured for the GIL): appends "<unix time> <X-Leadflow-Message> <dkim|->" per message to a
file (dkim: the message starts with a DKIM-Signature header).

    python bench/_smtp_sink.py PORT OUTFILE
"""

from __future__ import annotations

import asyncio
import sys
import time
from email.parser import BytesHeaderParser

from aiosmtpd.controller import Controller

PARSER = BytesHeaderParser()


class Handler:
    def __init__(self, out: str) -> None:
        self.out = open(out, "a", buffering=1)  # noqa: SIM115  line-buffered for the life of the process

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        data = envelope.original_content or b""  # type: ignore[attr-defined]
        headers = PARSER.parsebytes(data)
        signed = "dkim" if data.startswith(b"DKIM-Signature:") else "-"
        self.out.write(f"{time.time():.6f} {headers.get('X-Leadflow-Message', '-')} {signed}\n")
        return "250 OK"


def main() -> None:
    port, out = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Handler(out), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.run(asyncio.sleep(10**9))
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
