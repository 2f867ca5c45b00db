"""Raw HTTP/1.1 over a socket, for requests no polite client will send (a length it never
delivers, undecodable header bytes, headers of 100 KB)."""

from __future__ import annotations

import asyncio
import contextlib


async def raw_request(port: int, head: bytes, body: bytes = b"", *,
                      within: float = 5.0) -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, without the blank line) and ``body``; return
    the status code and the answer's headers+body as received within ``within`` seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.rstrip(b"\r\n") + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), within)
    finally:
        # Wait for the close: a socket still closing when the test's loop ends is reported
        # as unclosed later, in whichever test the garbage collector happens to run.
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    status_line = answer.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), answer
