#!/usr/bin/env python3
"""What half-sent requests cost Herald (issue 11, item 7): starts HERALD_BIN on a free loopback
port, opens N sockets that each send one byte of a request line ("G") and nothing more, and
prints the server's CPU seconds per second (from /proc/<pid>/stat) while they are open and after
they all closed. Bounded: N sockets, two windows of SECONDS, then the server is killed.
Usage: scripts/partial-heads.py target/debug/herald [N=2000] [SECONDS=5]"""
import os, socket, subprocess, sys, time, resource

herald, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000
window = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 100)), hard))
env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
proc = subprocess.Popen([herald, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, env=env, text=True)
line = proc.stdout.readline()
host, port = line.strip().rsplit("//", 1)[1].split(":")
tick = os.sysconf("SC_CLK_TCK")

def cpu():
    fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

def rate(seconds):
    before = cpu(); time.sleep(seconds); return (cpu() - before) / seconds

try:
    time.sleep(1)
    idle = rate(2)
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port))); s.send(b"G"); socks.append(s)
    time.sleep(0.5)
    open_rate = rate(window)
    for s in socks:
        s.close()
    time.sleep(1)
    closed_rate = rate(window)
    print(f"{n} sockets sending 'G': idle {idle:.3f} CPU-s/s; open {open_rate:.3f} CPU-s/s "
          f"over {window:.0f} s; after they closed {closed_rate:.3f} CPU-s/s over {window:.0f} s")
finally:
    proc.kill(); proc.wait()
