// presence.mjs: one pusher-js 8.6.0 client (Node build) as one user on Herald's presence
// channels, authorized by the npm `pusher` 5.3.4 server library's own authorizeChannel with the
// user's channel data, for tests/tests/e2e/presence.rs.
//
// Usage: node tests/browser/presence.mjs HOST PORT APP_ID KEY SECRET USER_ID
//
// Line protocol, one command per stdin line:
//   node → CONNECTED <socket id>                 pusher-js is connected
//   test → JOIN <channel>                        subscribe → MEMBERS <channel> <count> <ids,sorted> <me>
//   test → JOINFORGED <channel>                  subscribe with a wrong signature
//   test → LIST <channel>                        what pusher-js's Members holds now → MEMBERS …
//   test → LEAVE <channel>                       unsubscribe → LEFT <channel>
//   test → CLIENT <channel> <event> <json>       a client event → SENT
//   test → TRIGGER <channel> <event> <json>      npm pusher trigger() → TRIGGERED <status>
//   test → GET <path> <params as JSON>           npm pusher get() → GOT <status> <body>
//   test → DONE                                  disconnect → BYE
//   node → ADDED <channel> <user id> <info as JSON>   pusher:member_added
//   node → REMOVED <channel> <user id>                 pusher:member_removed
//   node → EVENT <channel> <event> <data as JSON>      any other event
//   node → ERROR <data as JSON>                        each pusher:error
// Failures print `FAIL <reason>`.

import { createInterface } from "node:readline";
import Pusher from "pusher-js";
import PusherServer from "pusher";

const [host, port, appId, key, secret, userId] = process.argv.slice(2);
if (!userId) {
  console.log("FAIL usage: node presence.mjs HOST PORT APP_ID KEY SECRET USER_ID");
  process.exit(2);
}
const say = (line) => console.log(line);
const server = new PusherServer({ appId, key, secret, host, port, useTLS: false });
const forged = new Set();

const client = new Pusher(key, {
  wsHost: host,
  wsPort: Number(port),
  forceTLS: false,
  enabledTransports: ["ws"],
  cluster: "mt1",
  channelAuthorization: {
    customHandler: (params, callback) => {
      const member = { user_id: userId, user_info: { name: `user ${userId}` } };
      const auth = server.authorizeChannel(params.socketId, params.channelName, member);
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

const members = (name) => {
  const channel = client.channel(name);
  const ids = [];
  channel.members.each((member) => ids.push(member.id));
  ids.sort();
  const me = channel.members.me ? channel.members.me.id : "-";
  return `MEMBERS ${name} ${channel.members.count} ${ids.join(",")} ${me}`;
};

const join = (name) => {
  const channel = client.subscribe(name);
  channel.bind("pusher:subscription_succeeded", () => say(members(name)));
  channel.bind("pusher:member_added", (member) =>
    say(`ADDED ${name} ${member.id} ${JSON.stringify(member.info)}`),
  );
  channel.bind("pusher:member_removed", (member) => say(`REMOVED ${name} ${member.id}`));
  channel.bind_global((event, data) => {
    if (event.startsWith("pusher:")) return;
    say(`EVENT ${name} ${event} ${JSON.stringify(data)}`);
  });
};

for await (const line of createInterface({ input: process.stdin })) {
  const [command, ...rest] = line.split(" ");
  try {
    if (command === "JOIN") {
      join(rest[0]);
    } else if (command === "JOINFORGED") {
      forged.add(rest[0]);
      join(rest[0]);
    } else if (command === "LIST") {
      say(members(rest[0]));
    } else if (command === "LEAVE") {
      client.unsubscribe(rest[0]);
      say(`LEFT ${rest[0]}`);
    } else if (command === "CLIENT") {
      const [channel, event, ...json] = rest;
      client.channel(channel).trigger(event, JSON.parse(json.join(" ")));
      say("SENT");
    } else if (command === "TRIGGER") {
      const [channel, event, ...json] = rest;
      const response = await server.trigger(channel, event, JSON.parse(json.join(" ")));
      say(`TRIGGERED ${response.status}`);
    } else if (command === "GET") {
      const [path, ...json] = rest;
      try {
        const response = await server.get({ path, params: JSON.parse(json.join(" ")) });
        say(`GOT ${response.status} ${JSON.stringify(await response.json())}`);
      } catch (error) {
        if (!error || !error.status) throw error;
        say(`GOT ${error.status} ${error.body}`);
      }
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
// stdin closed: the test is done with this client.
process.exit(0);
