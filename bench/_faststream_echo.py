"""The FastStream responder the benchmark measures FastStream's NATS RPC with.

A `NatsBroker` subscriber (queue group) whose handler returns the body it got: FastStream sends
the return value to the request's reply subject, the framework's own RPC. Its per-message
logging is off (``logger=None``), as the mesh node logs nothing per message either. Prints
``bench.faststream ready`` once subscribed, stops on SIGTERM or SIGINT.

Usage::

    python bench/_faststream_echo.py nats://127.0.0.1:4222
"""

from __future__ import annotations

import asyncio
import signal
import sys

from faststream.nats import NatsBroker
from peers import FASTSTREAM_QUEUE, FASTSTREAM_READY, FASTSTREAM_SUBJECT  # beside this script


async def serve(url: str) -> None:
    """Answer `FASTSTREAM_SUBJECT` until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    broker = NatsBroker(url, logger=None, max_reconnect_attempts=0)

    @broker.subscriber(FASTSTREAM_SUBJECT, queue=FASTSTREAM_QUEUE)
    async def echo(body: str) -> str:
        return body

    await broker.start()
    try:
        print(FASTSTREAM_READY, flush=True)
        await stop.wait()
    finally:
        await broker.stop()


def main() -> int:
    """Entry point; returns the process exit code."""
    if len(sys.argv) != 2:
        print("usage: python bench/_faststream_echo.py NATS_URL", file=sys.stderr)
        return 2
    asyncio.run(serve(sys.argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
