// echo.mjs: Laravel Echo 2.5.0 (broadcaster `reverb`, on pusher-js 8.6.0), unchanged, against
// Herald's Pusher protocol, for tests/tests/e2e/pusher.rs.
//
// Usage: node tests/browser/echo.mjs HOST PORT APP_ID KEY SECRET
//
// Private channels are authorized with the npm `pusher` library's authorizeChannel, as a Laravel
// app's /broadcasting/auth would. Line protocol, one command per stdin line:
//   test → PUBLIC <channel> <event>      echo.channel(channel).listen(".event")  → LISTENING <channel>
//   test → PRIVATE <name> <event>        echo.private(name).listen(".event")     → LISTENING private-<name>
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
    customHandler: (params, callback) =>
      callback(null, server.authorizeChannel(params.socketId, params.channelName)),
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
  } else if (command === "DONE") {
    echo.disconnect();
    say("BYE");
    process.exit(0);
  } else {
    say(`FAIL unknown command ${line}`);
    process.exit(1);
  }
}
