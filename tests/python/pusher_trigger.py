"""Triggers one event with the PyPI `pusher` 3.3.4 server library, unchanged, against Herald's
Pusher REST API, for tests/tests/e2e/pusher.rs.

Usage: python pusher_trigger.py HOST PORT APP_ID KEY SECRET CHANNEL EVENT JSON
Prints the library's answer as JSON; a refused request ends with status 3 and the error.
"""
import json
import sys

import pusher

host, port, app_id, key, secret, channel, event, data = sys.argv[1:9]
client = pusher.Pusher(app_id=app_id, key=key, secret=secret, host=host, port=int(port), ssl=False)
try:
    print(json.dumps(client.trigger(channel, event, json.loads(data))), flush=True)
except Exception as error:  # the library raises on any refusal
    print(f"ERROR {error}", flush=True)
    sys.exit(3)
