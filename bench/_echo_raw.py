"""The raw nats-py responder the bus benchmark measures the mesh against: no framework at all.

It answers ``bench.echo`` (queue group ``bench``) with the request's own bytes, straight from
the subscription callback, prints ``bench.echo ready`` once the server has the subscription,
drains on SIGTERM or SIGINT, and exits when the server goes away (it never reconnects).

Usage::

    python bench/_echo_raw.py nats://127.0.0.1:4222
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import nats
import nats.errors
from nats.aio.msg import Msg

SUBJECT = "bench.echo"
QUEUE = "bench"
READY = "bench.echo ready"


async def _echo(msg: Msg) -> None:
    await msg.respond(msg.data)


async def serve(url: str) -> None:
    """Answer ``bench.echo`` until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def closed() -> None:
        stop.set()

    client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0, closed_cb=closed)
    try:
        await client.subscribe(SUBJECT, queue=QUEUE, cb=_echo)
        await client.flush(timeout=5)
        print(READY, flush=True)
        await stop.wait()
    finally:
        # The server may be gone already (Ctrl-C reaches it too): then there is nothing to drain.
        if client.is_connected:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                async with asyncio.timeout(1):
                    await client.drain()
        await client.close()


def main() -> int:
    """Entry point; returns the process exit code."""
    if len(sys.argv) != 2:
        print("usage: python bench/_echo_raw.py NATS_URL", file=sys.stderr)
        return 2
    asyncio.run(serve(sys.argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
