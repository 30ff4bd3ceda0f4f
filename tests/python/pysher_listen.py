"""Listens with pysher 1.0.8 (the Pusher protocol 6 client for Python), unchanged, to one channel
of Herald's Pusher protocol, for tests/tests/e2e/pusher.rs.

Usage: python pysher_listen.py HOST PORT KEY CHANNEL EVENT
Prints `SUBSCRIBED` once the channel is live, then `EVENT <data>` for each EVENT received.
Exits after 60 s at most.
"""
import sys
import time

import pysher

host, port, key, channel, event = sys.argv[1:6]
client = pysher.Pusher(key, custom_host=host, port=int(port), secure=False)


def connected(_data):
    subscription = client.subscribe(channel)
    subscription.bind(
        "pusher_internal:subscription_succeeded", lambda *_: print("SUBSCRIBED", flush=True)
    )
    subscription.bind(event, lambda data, *_: print(f"EVENT {data}", flush=True))


client.connection.bind("pusher:connection_established", connected)
client.connect()
deadline = time.time() + 60
while time.time() < deadline:
    time.sleep(0.1)
client.disconnect()
