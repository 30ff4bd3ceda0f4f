// echo.mjs: Laravel Echo 2.5.0 (broadcaster `reverb`, on pusher-js 8.6.0), unchanged, against
// Herald's Pusher protocol, for tests/tests/e2e/pusher.rs.
//
// Usage: node tests/browser/echo.mjs HOST PORT APP_ID KEY SECRET
//
// Private and presence channels are authorized with the npm `pusher` library's authorizeChannel, as
// a Laravel app's /broadcasting/auth would (presence as user "echo"). Line protocol, one command per stdin line:
//   test → PUBLIC <channel> <event>      echo.channel(channel).listen(".event")  → LISTENING <channel>
//   test → PRIVATE <name> <event>        echo.private(name).listen(".event")     → LISTENING private-<name>
//   test → PRESENCE <name> <event>       echo.join(name) as user "echo", .here(), .listen(".event")
//                                        → HERE presence-<name> <user ids, sorted>; then
//                                        JOINING/LEAVING presence-<name> <user id> as others come and go
//   test → DONE                          echo.disconnect()                       → BYE
//   node → EVENT <channel> <event> <payload as JSON>   each event a listener gets
// Failures print `FAIL <reason>`.

import { createInterface } from "node:readline";
import Echo from "laravel-echo";
import Pusher from "pusher-js";
import PusherServer from "pusher";

const [host, port, appId, key, secret] = process.argv.slice(2);
if (!secret) {
  console.log("FAIL usage: node echo.mjs HOST PORT APP_ID KEY SECRET");
  process.exit(2);
}
const say = (line) => console.log(line);
const server = new PusherServer({ appId, key, secret, host, port, useTLS: false });

const echo = new Echo({
  broadcaster: "reverb",
  Pusher,
  key,
  wsHost: host,
  wsPort: Number(port),
  forceTLS: false,
  enabledTransports: ["ws"],
  channelAuthorization: {
    customHandler: (params, callback) => {
      const member = params.channelName.startsWith("presence-")
        ? { user_id: "echo", user_info: { name: "Echo" } }
        : undefined;
      callback(null, server.authorizeChannel(params.socketId, params.channelName, member));
    },
  },
});

const listen = (channel, name, event) => {
  channel
    .subscribed(() => say(`LISTENING ${name}`))
    .error((error) => say(`FAIL ${name}: ${JSON.stringify(error)}`))
    .listen(`.${event}`, (payload) => say(`EVENT ${name} ${event} ${JSON.stringify(payload)}`));
};

for await (const line of createInterface({ input: process.stdin })) {
  const [command, name, event] = line.split(" ");
  if (command === "PUBLIC") {
    listen(echo.channel(name), name, event);
  } else if (command === "PRIVATE") {
    listen(echo.private(name), `private-${name}`, event);
  } else if (command === "PRESENCE") {
    const channel = echo.join(name);
    channel
      .here((users) => say(`HERE presence-${name} ${users.map((u) => u.name).sort().join(",")}`))
      .joining((user) => say(`JOINING presence-${name} ${JSON.stringify(user)}`))
      .leaving((user) => say(`LEAVING presence-${name} ${JSON.stringify(user)}`))
      .error((error) => say(`FAIL presence-${name}: ${JSON.stringify(error)}`))
      .listen(`.${event}`, (payload) =>
        say(`EVENT presence-${name} ${event} ${JSON.stringify(payload)}`),
      );
  } else if (command === "DONE") {
    echo.disconnect();
    say("BYE");
    process.exit(0);
  } else {
    say(`FAIL unknown command ${line}`);
    process.exit(1);
  }
}
