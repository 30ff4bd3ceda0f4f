// pusher.mjs: a pusher-js 8.6.0 client (Node build) and the npm `pusher` 5.3.4 server library,
// both unchanged, against Herald's Pusher protocol (/app/<key>) and REST API (/apps/<id>/events),
// for tests/tests/e2e/pusher.rs.
//
// Usage: node tests/browser/pusher.mjs HOST PORT APP_ID KEY SECRET
//
// Private channels are authorized by the server library's own authorizeChannel (pusher-js's
// channelAuthorization.customHandler), as a site's auth endpoint would. Line protocol, one
// command per stdin line:
//   node → CONNECTED <socket id>                     pusher-js is connected
//   test → SUB <channel>                             subscribe     → SUBSCRIBED <channel>
//   test → SUBFORGED <channel>                       subscribe with a wrong signature
//   test → TRIGGER <channel> <event> <json>          npm pusher trigger() → TRIGGERED <status>
//   test → TRIGGEROTHERS <channel> <event> <json>   trigger() with this client's socket_id, so
//                                                    that it skips this client → TRIGGERED <status>
//   test → BATCH <channel> <event> <json>            triggerBatch() of two events to <channel>
//                                                    → TRIGGERED <status>
//   test → SIGNIN <user id>                          pusher.signin(), authenticated by the
//                                                    library's authenticateUser → SIGNEDIN
//   test → TOUSER <user id> <event> <json>           sendToUser()  → TRIGGERED <status>
//   test → DONE                                      disconnect    → BYE
//   node → USEREVENT <event> <data as JSON>          each event to the signed-in user
//   node → EVENT <channel> <event> <data as JSON>    each event a channel gets
//   node → ERROR <data as JSON>                      each pusher:error
// Failures print `FAIL <reason>`.

import { createInterface } from "node:readline";
import Pusher from "pusher-js";
import PusherServer from "pusher";

const [host, port, appId, key, secret] = process.argv.slice(2);
if (!secret) {
  console.log("FAIL usage: node pusher.mjs HOST PORT APP_ID KEY SECRET");
  process.exit(2);
}
const say = (line) => console.log(line);
const server = new PusherServer({ appId, key, secret, host, port, useTLS: false });
let forged = new Set();
let signInAs = "";

const client = new Pusher(key, {
  wsHost: host,
  wsPort: Number(port),
  forceTLS: false,
  enabledTransports: ["ws"],
  cluster: "mt1",
  userAuthentication: {
    customHandler: (params, callback) => {
      callback(null, server.authenticateUser(params.socketId, { id: signInAs, user_info: {} }));
    },
  },
  channelAuthorization: {
    customHandler: (params, callback) => {
      const presence = params.channelName.startsWith("presence-")
        ? { user_id: "42", user_info: { nickname: "evan" } }
        : undefined;
      const auth = server.authorizeChannel(params.socketId, params.channelName, presence);
      if (forged.has(params.channelName)) auth.auth = `${key}:${"0".repeat(64)}`;
      callback(null, auth);
    },
  },
});
client.connection.bind("connected", () => say(`CONNECTED ${client.connection.socket_id}`));
client.connection.bind("error", (error) => {
  const data = error && error.data ? error.data : error;
  say(`ERROR ${JSON.stringify(data)}`);
});

const subscribe = (name) => {
  const channel = client.subscribe(name);
  channel.bind("pusher:subscription_succeeded", () => say(`SUBSCRIBED ${name}`));
  channel.bind_global((event, data) => {
    if (event.startsWith("pusher:")) return;
    say(`EVENT ${name} ${event} ${JSON.stringify(data)}`);
  });
};

for await (const line of createInterface({ input: process.stdin })) {
  const [command, ...rest] = line.split(" ");
  try {
    if (command === "SUB") {
      subscribe(rest[0]);
    } else if (command === "SUBFORGED") {
      forged.add(rest[0]);
      subscribe(rest[0]);
    } else if (command === "TRIGGER") {
      const [channel, event, ...json] = rest;
      const response = await server.trigger(channel, event, JSON.parse(json.join(" ")));
      say(`TRIGGERED ${response.status}`);
    } else if (command === "TRIGGEROTHERS") {
      const [channel, event, ...json] = rest;
      const params = { socket_id: client.connection.socket_id };
      const response = await server.trigger(channel, event, JSON.parse(json.join(" ")), params);
      say(`TRIGGERED ${response.status}`);
    } else if (command === "BATCH") {
      const [channel, event, ...json] = rest;
      const data = JSON.parse(json.join(" "));
      const response = await server.triggerBatch([
        { channel, name: event, data: { ...data, part: 1 } },
        { channel, name: event, data: { ...data, part: 2 } },
      ]);
      say(`TRIGGERED ${response.status}`);
    } else if (command === "SIGNIN") {
      signInAs = rest[0];
      client.user.bind_global((event, data) => {
        if (event.startsWith("pusher")) return;
        say(`USEREVENT ${event} ${JSON.stringify(data)}`);
      });
      client.bind("pusher:signin_success", () => say("SIGNEDIN"));
      client.signin();
    } else if (command === "TOUSER") {
      const [user, event, ...json] = rest;
      const response = await server.sendToUser(user, event, JSON.parse(json.join(" ")));
      say(`TRIGGERED ${response.status}`);
    } else if (command === "DONE") {
      client.disconnect();
      say("BYE");
      process.exit(0);
    } else {
      say(`FAIL unknown command ${line}`);
      process.exit(1);
    }
  } catch (error) {
    say(`FAIL ${command}: ${error && error.status ? `HTTP ${error.status} ${error.body}` : error}`);
    process.exit(1);
  }
}
