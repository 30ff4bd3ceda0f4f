// meteor.mjs: a StatusNet page that still loads Meteor's client, in a real headless Chromium,
// for tests/tests/e2e/meteor_push.rs.
//
// Usage: node tests/browser/meteor.mjs HERALD_URL TIMELINE MODE
//   HERALD_URL  where Herald serves /meteor.js and /push (http://127.0.0.1:40123)
//   TIMELINE    the Meteor channel the page joins (mysite-public)
//   MODE        Meteor.mode: stream or longpoll
//
// The page is served by a small web server of this script on another loopback port, so Herald is
// another origin, as a site's Meteor server was (and in the same address space: Chromium blocks
// a public page's requests to loopback). It does what StatusNet's Meteor plugin puts in a
// page: it loads /meteor.js from the Meteor server, then runs the flow of the plugin's
// meteorupdater.js: set Meteor.callbacks.process to hand JSON.parse(data) to
// RealtimeUpdate.receive, set Meteor.host, Meteor.port and Meteor.scheme, joinChannel(timeline, 0)
// and connect(). RealtimeUpdate.receive here renders each notice as realtimeupdate.js does in
// spirit: one item per notice id, its text, newest first.
//
// Line protocol, one command per stdin line, one answer per stdout line:
//   node → READY                  the page is loaded and Meteor is receiving (status 5)
//   test → SEE <n> <id> <text>    wait until notice <id> shows <text>            → SEEN <n>
//   test → COUNT                  how many notices the page shows                → COUNT <k>
//   test → DONE                   check the console and close the browser        → BYE
// On failure: `FAIL <reason>`, then `# ` lines with the page's state, and exit status 1.

import { createServer } from "node:http";
import { createInterface } from "node:readline";
import { launch } from "./chromium.mjs";

const READY_TIMEOUT_MS = 30_000;
const SEE_TIMEOUT_MS = 15_000;

const [heraldUrl, timeline, mode] = process.argv.slice(2);
if (!heraldUrl || !timeline || !mode) {
  console.log("FAIL usage: node meteor.mjs HERALD_URL TIMELINE MODE");
  process.exit(2);
}

const herald = new URL(heraldUrl);
const say = (line) => console.log(line);
const consoleErrors = [];
let browser;
let page;

// What the plugin's page carries: Meteor's client from the Meteor server, then the updater.
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>StatusNet</title>
<script src="${herald.origin}/meteor.js"></script>
<script>
var RealtimeUpdate = {
  receive: function (data) {
    var id = "notice-" + data.id;
    if (document.getElementById(id)) return;
    var item = document.createElement("li");
    item.id = id;
    item.className = "notice";
    item.textContent = data.text;
    var list = document.getElementById("notices");
    list.insertBefore(item, list.firstChild);
  }
};
var MeteorUpdater = (function () {
  return {
    init: function (server, port, scheme, timeline) {
      Meteor.callbacks["process"] = function (data) {
        RealtimeUpdate.receive(JSON.parse(data));
      };
      Meteor.host = server;
      Meteor.port = port;
      Meteor.scheme = scheme;
      Meteor.joinChannel(timeline, 0);
      Meteor.connect();
    }
  };
})();
</script></head>
<body><ul id="notices"></ul>
<script>
Meteor.mode = ${JSON.stringify(mode)};
MeteorUpdater.init(${JSON.stringify(herald.hostname)}, ${JSON.stringify(herald.port)},
  ${JSON.stringify(herald.protocol.replace(":", ""))}, ${JSON.stringify(timeline)});
</script></body></html>`;

async function main() {
  browser = await launch();
  const site = createServer((request, response) => {
    response.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    response.end(PAGE);
  });
  await new Promise((resolve) => site.listen(0, "127.0.0.1", resolve));
  page = await browser.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  await page.goto(`http://127.0.0.1:${site.address().port}/`);
  await page.waitForFunction(() => window.Meteor && window.Meteor.status === 5, null, {
    timeout: READY_TIMEOUT_MS,
  });
  say("READY");

  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [command, ...rest] = line.split(" ");
    if (command === "SEE") {
      const [n, id, ...words] = rest;
      const text = words.join(" ");
      await page.waitForFunction(
        ([id, text]) => document.getElementById("notice-" + id)?.textContent === text,
        [id, text],
        { timeout: SEE_TIMEOUT_MS },
      );
      say(`SEEN ${n}`);
    } else if (command === "COUNT") {
      say(`COUNT ${await page.locator("li.notice").count()}`);
    } else if (command === "DONE") {
      if (consoleErrors.length > 0) throw new Error(`console errors: ${consoleErrors.join(" | ")}`);
      await browser.close();
      site.close();
      say("BYE");
      return;
    } else {
      throw new Error(`unknown command ${line}`);
    }
  }
  await browser.close();
  site.close();
}

main().catch(async (error) => {
  say(`FAIL ${String(error.message || error).split("\n")[0]}`);
  try {
    if (page) {
      say(`# notices: ${JSON.stringify(await page.locator("li.notice").allTextContents())}`);
      say(`# Meteor.status: ${await page.evaluate(() => window.Meteor && window.Meteor.status)}`);
    }
  } catch (dumpError) {
    say(`# could not read the page: ${dumpError}`);
  }
  for (const error of consoleErrors) say(`# console: ${error}`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
});
