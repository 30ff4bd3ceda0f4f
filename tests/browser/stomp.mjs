// stomp.mjs: a subscriber written for Orbited's STOMP, on the maintained @stomp/stompjs client,
// against Herald's STOMP over WebSocket (/stomp), for tests/tests/e2e/stomp_ws.rs.
//
// Usage: node tests/browser/stomp.mjs WS_URL        (ws://127.0.0.1:40123/stomp?key=blog-key)
//
// It connects with stompjs (subprotocols v12.stomp, v11.stomp, v10.stomp, over the `ws` package,
// since Node 20 has no WebSocket of its own), with heart-beats both ways every second, then speaks
// a line protocol with the Rust test, one command per stdin line:
//   node → CONNECTED <version>                    stompjs is connected
//   test → SUB <id> <destination>                 subscribe, with a receipt    → SUBSCRIBED <id>
//   test → UNSUB <id>                             unsubscribe, with a receipt  → UNSUBSCRIBED <id>
//   test → SEND <destination> <body>              publish (Herald refuses it)
//   test → DONE                                   disconnect                   → BYE <heart-beats>
//   node → MESSAGE <subscription> <destination> <message-id> <body>   each message, as it comes
//   node → ERROR <message header>                 each ERROR frame
// <heart-beats> is how many server heart-beats stompjs saw. Failures print `FAIL <reason>`.

import { createInterface } from "node:readline";
import { Client } from "@stomp/stompjs";
import WebSocket from "ws";

const url = process.argv[2];
if (!url) {
  console.log("FAIL usage: node stomp.mjs WS_URL");
  process.exit(2);
}
const say = (line) => console.log(line);
const subscriptions = new Map();
let serverBeats = 0;

const client = new Client({
  webSocketFactory: () => {
    const socket = new WebSocket(url, ["v12.stomp", "v11.stomp", "v10.stomp"]);
    // A server heart-beat is a message of one line end; stompjs swallows it.
    socket.on("message", (data) => {
      if (String(data) === "\n") serverBeats += 1;
    });
    return socket;
  },
  heartbeatIncoming: 1000,
  heartbeatOutgoing: 1000,
  reconnectDelay: 0,
  onConnect: (frame) => say(`CONNECTED ${frame.headers.version}`),
  onStompError: (frame) => say(`ERROR ${frame.headers.message}`),
  onWebSocketClose: (event) => {
    if (!done) {
      say(`FAIL the WebSocket closed: ${event.code} ${event.reason}`);
      process.exit(1);
    }
  },
});
let done = false;
client.activate();

const receipt = (id, line) => {
  const receiptId = `r-${id}-${Date.now()}`;
  client.watchForReceipt(receiptId, () => say(line));
  return receiptId;
};

for await (const line of createInterface({ input: process.stdin })) {
  const [command, ...rest] = line.split(" ");
  if (command === "SUB") {
    const [id, destination] = rest;
    const subscription = client.subscribe(
      destination,
      (message) => {
        const body = message.body;
        say(`MESSAGE ${message.headers.subscription} ${message.headers.destination} ${message.headers["message-id"]} ${body}`);
      },
      { id, receipt: receipt(id, `SUBSCRIBED ${id}`) },
    );
    subscriptions.set(id, subscription);
  } else if (command === "UNSUB") {
    const [id] = rest;
    subscriptions.get(id).unsubscribe({ receipt: receipt(id, `UNSUBSCRIBED ${id}`) });
  } else if (command === "SEND") {
    const [destination, ...body] = rest;
    client.publish({ destination, body: body.join(" ") });
  } else if (command === "DONE") {
    done = true;
    await client.deactivate();
    say(`BYE ${serverBeats}`);
    process.exit(0);
  } else {
    say(`FAIL unknown command ${line}`);
    process.exit(1);
  }
}
