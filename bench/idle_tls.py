#!/usr/bin/env python3
"""bench/idle_tls.py — opens N TLS 1.3 client connections to 127.0.0.1:PORT (SNI bench.test,
ALPN http/1.1, certificate not verified: the bench's own self-signed one), sends one HTTP/1.1
request on each, reads its whole response, and then leaves every connection open and idle until
the process is signalled (at most IDLE_FOR).

    python3 bench/idle_tls.py PORT N

Prints `READY <open> <failed>` on stdout once every connection has its answer (or failed), as
bench/idle_conns.py does; `bench/https.sh` uses it. Standard library only; loopback only.
"""

import asyncio
import ssl
import sys

from idle_conns import ANSWER_TIMEOUT, CONNECT_AT_ONCE, IDLE_FOR, h1_exchange


def client_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["http/1.1"])
    return context


async def open_one(port, context, gate, held):
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=context,
                                        server_hostname="bench.test"), ANSWER_TIMEOUT)
        except (OSError, ssl.SSLError, asyncio.TimeoutError):
            return False
        try:
            await asyncio.wait_for(h1_exchange(reader, writer, b"bench.test"), ANSWER_TIMEOUT)
            await writer.drain()
        except (OSError, ValueError, ssl.SSLError, asyncio.IncompleteReadError,
                asyncio.TimeoutError):
            writer.close()
            return False
        held.append(writer)
        return True


async def main(port, count):
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    context = client_context()
    held = []
    results = await asyncio.gather(*(open_one(port, context, gate, held) for _ in range(count)))
    opened = sum(results)
    print("READY %d %d" % (opened, count - opened), flush=True)
    # Idle until the caller signals this process; its sockets close as it exits.
    await asyncio.sleep(IDLE_FOR)
    for writer in held:
        writer.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: idle_tls.py PORT N")
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
