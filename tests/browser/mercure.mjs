// mercure.mjs: npm `eventsource` 4.1.1, unchanged, subscribing to Herald's Mercure hub
// (/.well-known/mercure) as a page written for a Mercure hub does, for tests/tests/e2e/mercure.rs.
//
// Usage: node tests/browser/mercure.mjs HUB_URL
//
// Each subscriber reaches the hub through a small TCP relay of its own in this script, so that a
// test can cut its connection the way a network does: the client sees the stream end and
// reconnects by itself (sending `Last-Event-ID`), and the relay holds the reconnect until the test
// lets it through, so updates published meanwhile are missed and must be recovered. Line
// protocol, one command per stdin line:
//   test → SUB <name> <auth> <topic> [<topic>…]  subscribe with `topic=` selectors; <auth> is
//                                                `-` (none), `bearer:<jwt>` or `cookie:<jwt>`
//                                                (the mercureAuthorization cookie)
//                                                → OPEN <name> (again after each reconnect)
//   test → CUT <name>                            end the connection, hold reconnects → CUT <name>
//   test → HEAL <name>                           let the held reconnect through
//   test → DONE                                  close everything → BYE
//   node → EVENT <name> <id> <type> <data as JSON string>   each update received
//   node → ERROR <name> <status or message>      each error the client reports
// Failures print `FAIL <reason>`.

import net from "node:net";
import { createInterface } from "node:readline";
import { EventSource } from "eventsource";

const [hubUrl] = process.argv.slice(2);
if (!hubUrl) {
  console.log("FAIL usage: node mercure.mjs HUB_URL");
  process.exit(2);
}
const hub = new URL(hubUrl);
const say = (line) => console.log(line);
const subscribers = new Map();

/// A relay to the hub that can cut its connections and hold new ones.
async function relay() {
  const state = { cut: false, held: [], live: new Set() };
  const pipe = (client) => {
    const upstream = net.connect(Number(hub.port), hub.hostname);
    const pair = [client, upstream];
    state.live.add(pair);
    const end = () => {
      client.destroy();
      upstream.destroy();
      state.live.delete(pair);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  };
  const server = net.createServer((client) => {
    if (state.cut) {
      client.on("error", () => {});
      state.held.push(client);
    } else {
      pipe(client);
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    cut() {
      state.cut = true;
      for (const [client, upstream] of state.live) {
        client.destroy();
        upstream.destroy();
      }
      state.live.clear();
    },
    heal() {
      state.cut = false;
      for (const client of state.held.splice(0)) pipe(client);
    },
    close() {
      this.cut();
      for (const client of state.held.splice(0)) client.destroy();
      server.close();
    },
  };
}

async function subscribe(name, auth, topics) {
  const through = await relay();
  const url = new URL(`http://127.0.0.1:${through.port}${hub.pathname}${hub.search}`);
  for (const topic of topics) url.searchParams.append("topic", topic);
  const headers = {};
  if (auth.startsWith("bearer:")) headers.Authorization = `Bearer ${auth.slice(7)}`;
  if (auth.startsWith("cookie:")) headers.Cookie = `mercureAuthorization=${auth.slice(7)}`;
  const source = new EventSource(url, {
    fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, ...headers } }),
  });
  const onEvent = (event) =>
    say(`EVENT ${name} ${event.lastEventId} ${event.type} ${JSON.stringify(event.data)}`);
  source.onmessage = onEvent;
  // Typed updates (`type=`) arrive as events of that name.
  for (const type of ["note", "book"]) source.addEventListener(type, onEvent);
  source.onopen = () => say(`OPEN ${name}`);
  source.onerror = (error) => {
    // A dropped stream is reported too (then retried); only the test's cuts drop streams.
    if (error.code !== undefined || error.message) {
      say(`ERROR ${name} ${error.code ?? error.message}`);
    }
  };
  subscribers.set(name, { source, through });
}

const rl = createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  const [command, name, ...rest] = line.trim().split(" ");
  try {
    switch (command) {
      case "SUB": {
        const [auth, ...topics] = rest;
        await subscribe(name, auth, topics);
        break;
      }
      case "CUT":
        subscribers.get(name).through.cut();
        say(`CUT ${name}`);
        break;
      case "HEAL":
        subscribers.get(name).through.heal();
        break;
      case "DONE":
        for (const { source, through } of subscribers.values()) {
          source.close();
          through.close();
        }
        say("BYE");
        process.exit(0);
        break;
      default:
        say(`FAIL unknown command ${line}`);
    }
  } catch (error) {
    say(`FAIL ${command}: ${error}`);
  }
});
