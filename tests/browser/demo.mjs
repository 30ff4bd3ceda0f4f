// demo.mjs: drives Herald's demo page in a real headless Chromium for tests/tests/browser.rs.
//
// Usage: node tests/browser/demo.mjs BASE_URL      (e.g. http://127.0.0.1:40123, or https://…)
//
// It speaks a line protocol with the Rust test, one command per stdin line, one answer per stdout
// line. Every wait has a time-out; on failure it prints `FAIL <reason>`, then `# ` lines with the
// page's panels, status history, console and a screenshot path, and exits with status 1.
//
//   node → READY                  the page is loaded and both panels are `live`
//   test → SEE <n> <text>         wait until <text> is in both timelines      → SEEN <n>
//   test → POST <n> <text>        post <text> with the page's own form, wait  → SEEN <n>
//   test → RESTART                the server is about to restart; from now on connection errors
//                                 in the console are expected               → WATCHING
//                                 then wait until both panels dropped and are live again
//                                                                            → RECONNECTED
//   test → DONE                   check the console and close the browser   → BYE
//
// Lines starting with `# ` are diagnostics. Closing stdin also ends the run.

import { createInterface } from "node:readline";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launch, waitWithin } from "./chromium.mjs";

const READY_TIMEOUT_MS = 30_000;
const SEE_TIMEOUT_MS = 10_000;
// The server tells clients to come back after up to `shutdown.reconnect_jitter_ms` (5 s by
// default); the restart itself and a back-off or two come on top.
const RECONNECT_TIMEOUT_MS = 40_000;

// Console errors that a server restart legitimately causes: the page's WebSocket and EventSource
// fail to connect while the port is closed, and the streams that were open are cut.
const RESTART_NOISE = [
  /ERR_CONNECTION_REFUSED/,
  /ERR_CONNECTION_RESET/,
  /ERR_CONNECTION_CLOSED/,
  /ERR_EMPTY_RESPONSE/,
  /ERR_INCOMPLETE_CHUNKED_ENCODING/,
  /WebSocket connection to '[^']*' failed/,
];

const baseUrl = process.argv[2];
if (!baseUrl) {
  console.log("FAIL usage: node demo.mjs BASE_URL");
  process.exit(2);
}

const say = (line) => console.log(line);
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(2)}s`;

/** Console errors, each with whether it happened while a restart was expected. */
const consoleErrors = [];
/** Status changes of both panels, as the page showed them. */
const statusLog = [];
let restarting = false;
let browser;
let page;

async function main() {
  browser = await launch();
  // Over https:// the server's certificate is the test's own (tests/e2e/tls.rs), issued by an
  // authority Chromium does not know; the test checks the certificate with its own client.
  page = await browser.newPage({
    viewport: { width: 1200, height: 820 },
    ignoreHTTPSErrors: baseUrl.startsWith("https:"),
  });
  page.on("console", (message) => {
    if (message.type() === "error") {
      consoleErrors.push({ text: message.text(), restarting, at: elapsed() });
    }
  });
  page.on("pageerror", (error) => {
    consoleErrors.push({ text: `uncaught: ${error.message}`, restarting: false, at: elapsed() });
  });
  await page.exposeFunction("heraldTestStatus", (panel, state) => {
    statusLog.push(`${elapsed()} ${panel} ${state}`);
  });
  // Watch both status elements from the first moment, so no transition goes unseen.
  await page.addInitScript(() => {
    document.addEventListener("DOMContentLoaded", () => {
      for (const panel of ["public", "user"]) {
        const element = document.getElementById(`${panel}-status`);
        window.heraldTestStatus(panel, element.textContent);
        new MutationObserver(() => window.heraldTestStatus(panel, element.textContent)).observe(
          element,
          { childList: true, characterData: true, subtree: true },
        );
      }
    });
  });

  await page.goto(`${baseUrl}/`, { timeout: READY_TIMEOUT_MS });
  await waitFor("both panels live", READY_TIMEOUT_MS, () => bothLive(0));
  say("READY");

  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [command, n, ...words] = line.trim().split(" ");
    const text = words.join(" ");
    if (command === "SEE") {
      await waitForNotice(n, text);
    } else if (command === "POST") {
      await page.fill("#notice-text", text);
      await page.click("#post-button");
      await waitForNotice(n, text);
    } else if (command === "RESTART") {
      const before = await liveCounts();
      restarting = true;
      say("WATCHING");
      await waitFor("both panels reconnected", RECONNECT_TIMEOUT_MS, () => bothLive(before));
      restarting = false;
      say("RECONNECTED");
    } else if (command === "DONE") {
      await finish();
      return;
    } else if (command) {
      await fail(`unknown command: ${line}`);
    }
  }
  await fail("stdin closed before DONE");
}

/** Live counts of the panels: how many times each became `live` so far. */
function liveCounts() {
  return page.evaluate(() => ({
    public: Number(document.getElementById("public-status").dataset.liveCount || 0),
    user: Number(document.getElementById("user-status").dataset.liveCount || 0),
  }));
}

/** A page predicate: both panels are live, and each became live more often than `before`. */
function bothLive(before) {
  const counts = typeof before === "number" ? { public: before, user: before } : before;
  return page.waitForFunction(
    (after) =>
      ["public", "user"].every((panel) => {
        const status = document.getElementById(`${panel}-status`);
        return (
          status.textContent === "live" && Number(status.dataset.liveCount || 0) > after[panel]
        );
      }),
    counts,
    { timeout: 0, polling: 100 },
  );
}

async function waitForNotice(n, text) {
  await waitFor(`notice ${n} in both panels`, SEE_TIMEOUT_MS, () =>
    page.waitForFunction(
      (wanted) =>
        ["public-timeline", "user-timeline"].every((id) =>
          [...document.querySelectorAll(`#${id} li`)].some((li) => li.textContent.includes(wanted)),
        ),
      text,
      { timeout: 0, polling: 100 },
    ),
  );
  say(`SEEN ${n}`);
}

/** Runs `wait()` (a promise-returning page wait) with a time-out that fails the run. */
function waitFor(what, timeoutMs, wait) {
  return waitWithin(what, timeoutMs, wait, fail);
}

async function finish() {
  const unexpected = consoleErrors.filter(
    (e) => !(e.restarting && RESTART_NOISE.some((pattern) => pattern.test(e.text))),
  );
  if (unexpected.length > 0) {
    await fail(`unexpected console errors: ${unexpected.map((e) => e.text).join(" | ")}`);
  }
  if (process.env.DEMO_SCREENSHOT) {
    await page.screenshot({ path: process.env.DEMO_SCREENSHOT, fullPage: true });
    say(`# screenshot: ${process.env.DEMO_SCREENSHOT}`);
  }
  for (const line of statusLog) say(`# status ${line}`);
  for (const e of consoleErrors) say(`# console error (expected) at ${e.at}: ${e.text}`);
  await browser.close();
  say("BYE");
  process.exit(0);
}

/** Prints the reason and what the page showed, then exits with status 1. */
async function fail(reason) {
  say(`FAIL ${reason}`);
  try {
    if (page) {
      const state = await page.evaluate(() => {
        const text = (id) => document.getElementById(id)?.textContent ?? "(missing)";
        const items = (id) =>
          [...document.querySelectorAll(`#${id} li .text`)].map((li) => li.textContent);
        return {
          publicStatus: text("public-status"),
          userStatus: text("user-status"),
          publicNote: text("public-note"),
          userNote: text("user-note"),
          postResult: text("post-result"),
          publicTimeline: items("public-timeline"),
          userTimeline: items("user-timeline"),
        };
      });
      for (const [key, value] of Object.entries(state)) say(`# ${key}: ${JSON.stringify(value)}`);
      const path = join(tmpdir(), `herald-browser-${process.pid}.png`);
      await page.screenshot({ path, fullPage: true });
      say(`# screenshot: ${path}`);
    }
  } catch (error) {
    say(`# could not read the page: ${error.message}`);
  }
  for (const line of statusLog) say(`# status ${line}`);
  for (const e of consoleErrors) say(`# console error at ${e.at}: ${e.text}`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}

main().catch((error) => fail(`${error.stack || error}`));
