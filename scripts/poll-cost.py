#!/usr/bin/env python3
"""What a waiting long-poll client costs Herald, beside an idle SSE stream.

Starts a fresh release `herald` (memory engine, defaults, `poll.timeout_secs`
raised so that polls stay held while measured) for each transport, on a free
loopback port, and opens N clients on one shared channel:
- sse:  N `GET /sse?channel=bench` streams;
- poll: N `GET /poll?channel=bench&cursor=…` requests, held (nothing to answer).
Memory: growth of the server's VmRSS per client, 5 s after the last opened.
Then ROUNDS messages are published one at a time, each once every client has
it (a poller polls again with its new cursor before the next publish, as a
browser would): server CPU (utime + stime) per delivery.

Not `herald-bench`: a small stand-in until `--transport poll` exists there.
Usage: scripts/poll-cost.py [N] [ROUNDS]   (loopback only; N ≤ a few thousand)
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

HERALD = os.environ.get("HERALD_BIN", "target/release/herald")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def request(port, method, path, body=b"", headers=""):
    """One request on a connection of its own; the whole answer's body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}"
    if method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    data = await reader.read()
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1]


async def publish(port, n):
    body = json.dumps({"channel": "bench", "data": {"n": n, "pad": "x" * 80}}).encode()
    await request(port, "POST", "/api/publish", body, "Content-Type: application/json\r\n")


class Poller:
    """A long-poll client on one keep-alive connection."""

    def __init__(self, port, cursor):
        self.port, self.cursor = port, cursor

    async def connect(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def send(self):
        path = f"/poll?channel=bench&cursor={self.cursor}&timeout=600"
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    async def answer(self):
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        answer = json.loads(await self.reader.readexactly(length))
        self.cursor = answer["cursor"]
        return len(answer["events"])


class Streamer:
    """An SSE client: counts message events."""

    def __init__(self, port):
        self.port = port

    async def connect(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(b"GET /sse?channel=bench HTTP/1.1\r\nHost: x\r\n\r\n")
        await self.reader.readuntil(b"\r\n\r\n")
        self.buffer = b""

    async def message(self):
        # Only messages carry the payload's "pad" (not `subscribed`, not pings).
        while b'"pad"' not in self.buffer:
            self.buffer += await self.reader.read(65536)
        self.buffer = self.buffer.split(b'"pad"', 1)[1]


async def measure(transport, n, rounds):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env["HERALD_POLL_TIMEOUT_SECS"] = "600"
    server = subprocess.Popen(
        [HERALD, "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        server.stdout.readline()  # the readiness line
        pid = server.pid
        first = json.loads(await request(port, "GET", "/poll?channel=bench"))
        await asyncio.sleep(1)
        before = rss(pid)
        if transport == "poll":
            clients = [Poller(port, first["cursor"]) for _ in range(n)]
        else:
            clients = [Streamer(port) for _ in range(n)]
        for i in range(0, n, 200):
            await asyncio.gather(*(c.connect() for c in clients[i : i + 200]))
            if transport == "poll":
                for c in clients[i : i + 200]:
                    c.send()
        await asyncio.sleep(5)
        per_client = (rss(pid) - before) / n
        cpu = cpu_secs(pid)
        for r in range(rounds):
            await publish(port, r)
            if transport == "poll":
                got = await asyncio.gather(*(c.answer() for c in clients))
                assert all(g == 1 for g in got), got[:5]
                for c in clients:
                    c.send()
            else:
                await asyncio.gather(*(c.message() for c in clients))
        # The publishes are in the figure for both: one request per round.
        per_delivery = (cpu_secs(pid) - cpu) / (n * rounds)
        return per_client, per_delivery, rss(pid)
    finally:
        server.terminate()
        server.wait()


async def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    print(f"{n} clients on one channel, {rounds} messages; load {os.getloadavg()[0]:.2f}")
    print("| transport | RSS per waiting client | server CPU per delivery | server RSS |")
    print("|---|---|---|---|")
    for transport in ("sse", "poll"):
        per_client, per_delivery, total = await measure(transport, n, rounds)
        print(
            f"| {transport} | {per_client:.0f} B | {per_delivery * 1e6:.1f} µs "
            f"| {total / 1e6:.1f} MB |"
        )


if __name__ == "__main__":
    asyncio.run(main())
