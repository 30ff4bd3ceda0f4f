// herald.js against a real Herald (target/debug/herald, zero-config dev site, a free port), with
// Node's own test runner: `node --test web/test/` (scripts/test runs it). WebSocket and
// EventSource are the `ws` and `eventsource` packages of tests/browser (Node 20 has neither).

import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

import { Herald, backoff } from "../assets/herald.js";
import { classic } from "../build.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(join(root, "tests", "browser", "package.json"));
const WebSocket = require("ws");
const { EventSource } = require("eventsource");

/** How long a test waits for what it expects. */
const WAIT_MS = 15000;

let server;
let base;

before(async () => {
  server = spawn(join(root, "target", "debug", "herald"), ["--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  base = await new Promise((resolve, reject) => {
    let log = "";
    const timer = setTimeout(() => reject(new Error(`herald did not start:\n${log}`)), WAIT_MS);
    server.stderr.on("data", (chunk) => {
      log += chunk;
      const found = /herald started.*?listen\S*?=\S*?(127\.0\.0\.1:\d+)/.exec(
        log.replace(/\x1b\[[0-9;]*m/g, ""),
      );
      if (found) {
        clearTimeout(timer);
        resolve(`http://${found[1]}`);
      }
    });
    server.on("exit", (code) => reject(new Error(`herald exited ${code}:\n${log}`)));
  });
});

after(() => server.kill());

async function publish(channel, data) {
  const response = await fetch(`${base}/api/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  assert.equal(response.status, 200, await response.text());
}

/** Resolves with the first value `listen` hands its callback, or fails after WAIT_MS. */
function next(what, listen) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${what} in time`)), WAIT_MS);
    listen((value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/** A WebSocket constructor whose connections are refused, as behind a proxy that blocks them. */
class RefusedWebSocket extends WebSocket {
  constructor(url) {
    super(url.replace(/\/\/[^/]+\//, "//127.0.0.1:1/"));
  }
}

function client(channel, options = {}) {
  const messages = [];
  const waiting = [];
  const herald = new Herald(base, { WebSocket, EventSource, ...options });
  const live = next("live", (done) => herald.on("status", (s) => s === "live" && done()));
  herald.subscribe(channel, {
    onMessage: (data) => {
      messages.push(data);
      for (const wake of waiting.splice(0)) wake();
    },
    ...options.handlers,
  });
  const received = (count) =>
    next(`${count} messages on ${channel}`, (done) => {
      const check = () => (messages.length >= count ? done(messages) : waiting.push(check));
      check();
    });
  return { herald, messages, live, received };
}

test("WebSocket first: messages arrive in order", async () => {
  const { herald, live, received } = client("ws-order");
  await live;
  assert.equal(herald.transport, "ws");
  for (let n = 1; n <= 3; n += 1) await publish("ws-order", { n });
  assert.deepEqual(await received(3), [{ n: 1 }, { n: 2 }, { n: 3 }]);
  herald.close();
});

test("WebSocket refused: it falls back to SSE, and messages keep arriving", async () => {
  const { herald, live, received } = client("fallback", { WebSocket: RefusedWebSocket });
  await live;
  assert.equal(herald.transport, "sse");
  await publish("fallback", { via: "sse" });
  assert.deepEqual(await received(1), [{ via: "sse" }]);
  herald.close();
});

/** An EventSource behind a proxy that buffers streams: it connects, and nothing ever arrives. */
class BufferedEventSource {
  addEventListener() {}
  close() {}
}

test("WebSocket refused and streams buffered: it falls back to long-poll", async () => {
  const { herald, live, received } = client("buffered", {
    WebSocket: RefusedWebSocket,
    EventSource: BufferedEventSource,
    connectTimeout: 1000,
  });
  await live;
  assert.equal(herald.transport, "poll");
  for (let n = 1; n <= 3; n += 1) await publish("buffered", { n });
  assert.deepEqual(await received(3), [{ n: 1 }, { n: 2 }, { n: 3 }]);
  herald.close();
});

test("streams buffered, channels subscribed only after it connected: it falls back to long-poll", async () => {
  // As the demo page does: the client connects with no channel (an SSE link with no channel has
  // nothing to open and counts as open), and subscribes once the history is loaded; the stream
  // opened then is the one that a buffering proxy holds back.
  const herald = new Herald(base, {
    WebSocket: RefusedWebSocket,
    EventSource: BufferedEventSource,
    connectTimeout: 1000,
  });
  await next("SSE with no channel", (done) => herald.on("transport", (n) => n === "sse" && done()));
  const messages = [];
  let wake = () => {};
  const live = next("live", (done) => herald.on("status", (s) => s === "live" && done()));
  herald.subscribe("late", {
    onMessage: (data) => {
      messages.push(data);
      wake();
    },
  });
  await live;
  assert.equal(herald.transport, "poll");
  await publish("late", { n: 1 });
  await next("the message", (done) => {
    wake = done;
    if (messages.length) done();
  });
  assert.deepEqual(messages, [{ n: 1 }]);
  herald.close();
});

test("a stream that stalls after SSE worked: one new link, then long-poll, no retries", async () => {
  // The first stream gets through; a proxy that starts buffering holds back the next one.
  let made = 0;
  function StallsAfterOne(url, init) {
    made += 1;
    return made === 1 ? new EventSource(url, init) : new BufferedEventSource();
  }
  const { herald, live } = client("stall-a", {
    WebSocket: RefusedWebSocket,
    EventSource: StallsAfterOne,
    connectTimeout: 1000,
  });
  await live;
  assert.equal(herald.transport, "sse");
  const onPoll = next("long-poll", (done) => herald.on("transport", (n) => n === "poll" && done()));
  const messages = [];
  herald.subscribe("stall-b", { onMessage: (data) => messages.push(data) });
  await onPoll;
  // The link whose later stream stalled is reconnected once (docs/client.md); that new link's
  // stream stalls before it ever answered, and SSE is given up without retries.
  assert.equal(made, 3, "streams opened before long-poll");
  await publish("stall-b", { n: 1 });
  await next("the message over long-poll", (done) => {
    const check = () => (messages.length ? done() : setTimeout(check, 20));
    check();
  });
  assert.deepEqual(messages, [{ n: 1 }]);
  herald.close();
});

test("a first channel subscribed once live with none is connecting, never reconnecting", async () => {
  const statuses = [];
  const herald = new Herald(base, { WebSocket, EventSource, onStatus: (s) => statuses.push(s) });
  await next("live with no channel", (done) => herald.on("status", (s) => s === "live" && done()));
  const live = next("live", (done) => herald.on("status", (s) => s === "live" && done()));
  herald.subscribe("first-late", {});
  await live;
  assert.deepEqual(statuses, ["live", "connecting", "live"]);
  herald.close();
});

test("once WebSocket gets through again, a later probe moves back to it", async () => {
  // A proxy that refuses the first WebSocket, then lets them through.
  let refused = 0;
  class RefusedOnce extends WebSocket {
    constructor(url) {
      super(refused++ === 0 ? url.replace(/\/\/[^/]+\//, "//127.0.0.1:1/") : url);
    }
  }
  const transports = [];
  const { herald, live, received } = client("probe", {
    WebSocket: RefusedOnce,
    probeInterval: 300,
    onTransport: (name) => transports.push(name),
  });
  await live;
  await next("the move back to WebSocket", (done) =>
    herald.on("transport", (name) => name === "ws" && done()),
  );
  await publish("probe", { after: "probe" });
  assert.deepEqual(await received(1), [{ after: "probe" }]);
  assert.deepEqual(transports.slice(0, 2), ["sse", "ws"]);
  herald.close();
});

test("a WebSocket that worked, then is refused for a while (a restart), is retried, not given up", async () => {
  // The second and third sockets find nobody listening, as while the server restarts.
  let made = 0;
  class DownForTwo extends WebSocket {
    constructor(url) {
      made += 1;
      super(made === 2 || made === 3 ? url.replace(/\/\/[^/]+\//, "//127.0.0.1:1/") : url);
    }
  }
  const { herald, live, received } = client("restart", { WebSocket: DownForTwo });
  const transports = [];
  herald.on("transport", (name) => transports.push(name));
  await live;
  await publish("restart", { n: 1 });
  await received(1);
  const back = next("live again", (done) =>
    herald.on("status", (s) => s === "live" && made >= 4 && done()),
  );
  herald.link.ws.terminate();
  await back;
  assert.equal(herald.transport, "ws");
  assert.ok(!transports.includes("sse"), `moved to ${transports}`);
  await publish("restart", { n: 2 });
  assert.deepEqual(await received(2), [{ n: 1 }, { n: 2 }]);
  herald.close();
});

test("a cut connection comes back and recovers what was published meanwhile", async () => {
  const recoveries = [];
  const { herald, live, received } = client("cut", {
    handlers: { onRecovered: (recovered) => recoveries.push(recovered) },
  });
  await live;
  await publish("cut", { n: 1 });
  await received(1);
  const reconnected = next("reconnecting", (done) =>
    herald.on("status", (s) => s === "reconnecting" && done()),
  );
  herald.link.ws.terminate();
  await reconnected;
  await publish("cut", { n: 2 });
  assert.deepEqual(await received(2), [{ n: 1 }, { n: 2 }]);
  assert.deepEqual(recoveries, [true]);
  herald.close();
});

test("a presence channel lists its members and hears them come and go", async () => {
  // The dev site takes channel data unsigned.
  const as = (user) => ({
    handlers: {
      authorize: () => ({ signature: "00", channelData: JSON.stringify({ user_id: user }) }),
    },
  });
  const ann = client("presence-room", as("ann"));
  await ann.live;
  const joined = next("member_added", (done) => ann.herald.on("member_added", done));
  const bob = client("presence-room", as("bob"));
  await bob.live;
  assert.deepEqual(
    bob.herald.members("presence-room").map((m) => m.user_id).sort(),
    ["ann", "bob"],
  );
  assert.equal((await joined).member.user_id, "bob");
  const left = next("member_removed", (done) => ann.herald.on("member_removed", done));
  bob.herald.close();
  assert.equal((await left).member.user_id, "bob");
  assert.deepEqual(ann.herald.members("presence-room").map((m) => m.user_id), ["ann"]);
  ann.herald.close();
});

test("close codes 4000-4099 stop for good", async () => {
  const { herald, live } = client("stop");
  await live;
  const stopped = next("closed", (done) => herald.on("status", (s) => s === "closed" && done()));
  herald.link.ws.close(4001, "test");
  // A client-side close with a 4000-range code is what the server would send.
  await stopped;
  assert.equal(herald.transport, null);
});

test("back-off is full jitter, capped", () => {
  for (let attempt = 0; attempt < 40; attempt += 1) {
    const delay = backoff(attempt);
    assert.ok(delay >= 0 && delay < Math.min(30000, 500 * 2 ** attempt), `${attempt}: ${delay}`);
  }
});

test("the size budget holds: 8 KB gzipped, for the module and the classic build", () => {
  const assets = join(root, "web", "assets");
  for (const file of ["herald.js", "herald.classic.js"]) {
    const size = gzipSync(readFileSync(join(assets, file))).length;
    assert.ok(size <= 8192, `${file}: ${size} bytes gzipped`);
  }
});

test("the classic build is up to date and defines window.Herald", () => {
  const assets = join(root, "web", "assets");
  const built = classic(readFileSync(join(assets, "herald.js"), "utf8"));
  assert.equal(readFileSync(join(assets, "herald.classic.js"), "utf8"), built);
  const scope = {};
  new Function("globalThis", built)(scope);
  assert.equal(typeof scope.Herald, "function");
  assert.equal(scope.Herald.HeraldSocket, scope.Herald);
});
