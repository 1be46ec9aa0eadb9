"""Peer "aiohttp raw + fsync": aiohttp raw made durable, the ceiling for a durable server.

The same handler as aiohttp_raw.py (the body written as is with plain writes on the
event loop, no parsing, no type check, no hashing), but before answering it fsyncs the
file and then its folder, each in a thread (asyncio.to_thread) so the loop stays free.
That is the least any server must do to promise, as uploadsrv does, that an answered
upload survives a crash; on a machine whose disk is slower than the network, this peer,
not aiohttp raw, bounds every durable server.

Standalone: python3 aiohttp_raw_fsync.py --port P --dir D (binds 127.0.0.1 only).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp_peer import serve
from aiohttp_raw import store_body


async def upload(request: web.Request) -> web.Response:
    return await store_body(request, durable=True)


def main() -> None:
    serve(__doc__.splitlines()[0], upload)


if __name__ == "__main__":
    main()
