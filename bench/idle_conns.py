#!/usr/bin/env python3
"""bench/idle_conns.py — opens N keep-alive client connections to 127.0.0.1:PORT, sends one
request on each (HTTP/1.1, or h2c with prior knowledge), reads its whole response, and then
leaves every connection open and idle until the process is signalled (at most IDLE_FOR).
`h1-slow` asks for /1m instead and stops reading once the response head is in: a stalled
download the server has to hold.

    python3 bench/idle_conns.py PORT N h1|h2|h1-slow

Prints `READY <open> <failed>` on stdout once every connection has its answer (or failed), so
the caller can measure the server's memory with N idle connections; `bench/proxy.sh` uses it.
Standard library only; loopback only.
"""

import asyncio
import struct
import sys

CONNECT_AT_ONCE = 200  # connections being opened at a time
ANSWER_TIMEOUT = 20.0  # seconds one connection may take to connect and get its answer
IDLE_FOR = 600.0  # seconds the connections stay open unless the process is signalled first

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_SETTINGS = 0x0, 0x1, 0x4
H2_END_STREAM, H2_ACK, H2_END_HEADERS = 0x1, 0x1, 0x4


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def h2_get(authority):
    # HPACK without Huffman: :method GET (2), :scheme http (6), :path / (4) from the static
    # table, then :authority as a literal with an indexed name (1).
    block = b"\x82\x86\x84" + bytes([0x41, len(authority)]) + authority
    return h2_frame(H2_HEADERS, H2_END_STREAM | H2_END_HEADERS, 1, block)


async def h1_slow_exchange(reader, writer, authority):
    writer.write(b"GET /1m HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    writer.transport.pause_reading()


async def h1_exchange(reader, writer, authority):
    writer.write(b"GET / HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)


async def h2_exchange(reader, writer, authority):
    writer.write(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0) + h2_get(authority))
    while True:
        header = await reader.readexactly(9)
        length = int.from_bytes(header[:3], "big")
        kind, flags = header[3], header[4]
        stream = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
        if length:
            await reader.readexactly(length)
        if kind == H2_SETTINGS and not flags & H2_ACK:
            writer.write(h2_frame(H2_SETTINGS, H2_ACK, 0))
        if stream == 1 and kind in (H2_DATA, H2_HEADERS) and flags & H2_END_STREAM:
            return


async def open_one(port, proto, gate, held):
    authority = b"127.0.0.1:%d" % port
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), ANSWER_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            return False
        exchange = {"h1": h1_exchange, "h2": h2_exchange, "h1-slow": h1_slow_exchange}[proto]
        try:
            await asyncio.wait_for(exchange(reader, writer, authority), ANSWER_TIMEOUT)
            await writer.drain()
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            writer.close()
            return False
        held.append(writer)
        return True


async def main(port, count, proto):
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    held = []
    results = await asyncio.gather(*(open_one(port, proto, gate, held) for _ in range(count)))
    opened = sum(results)
    print("READY %d %d" % (opened, count - opened), flush=True)
    # Idle until the caller signals this process; its sockets close as it exits.
    await asyncio.sleep(IDLE_FOR)
    for writer in held:
        writer.close()


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[3] not in ("h1", "h2", "h1-slow"):
        sys.exit("usage: idle_conns.py PORT N h1|h2|h1-slow")
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
