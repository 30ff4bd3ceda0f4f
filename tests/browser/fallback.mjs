// fallback.mjs: the demo page in a real headless Chromium, behind the test proxy or through a
// restart, for tests/tests/e2e/browser_fallback.rs: which transport herald.js settled on, and
// whether every numbered notice the test published shows up in the page exactly once, in order.
//
// Usage: node tests/browser/fallback.mjs PAGE_URL ARTIFACTS
//   PAGE_URL   the demo page (e.g. http://127.0.0.1:40123/, through the proxy)
//   ARTIFACTS  a path prefix: ARTIFACTS.png (a screenshot) and ARTIFACTS-trace.zip (a Playwright
//              trace) are written when the run ends, whether it passed or failed
//
// Line protocol, one command per stdin line, one answer per stdout line:
//
//   node → READY <transport>          both panels are `live`; the transport the page shows
//   test → NUMBERS <tag> <count>      wait until "<tag> notice <count>" is in both timelines, then
//                                     check that "<tag> notice 1" … "<tag> notice <count>" are
//                                     each there once, oldest to newest, with no "N new
//                                     notices" bar shown
//                                     → NUMBERS <transport> <drops>
//                                     (<drops>: how often the page's status left `live`)
//   test → DONE                       save the artifacts, close the browser  → BYE
//
// Any failure prints `FAIL <reason>`, then `# ` lines with what the page showed, and exits 1.
// Console errors are not failures here (a refused WebSocket and a cut stream log them, as they
// should); uncaught page errors are.

import { createInterface } from "node:readline";
import { launch, waitWithin } from "./chromium.mjs";

const READY_TIMEOUT_MS = 30_000;
/** The last notice is published after the restart or the cuts: a reconnect's back-off is short. */
const NUMBERS_TIMEOUT_MS = 30_000;

const [pageUrl, artifacts] = process.argv.slice(2);
if (!pageUrl || !artifacts) {
  console.log("FAIL usage: node fallback.mjs PAGE_URL ARTIFACTS");
  process.exit(2);
}

const say = (line) => console.log(line);
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(2)}s`;

const consoleErrors = [];
const pageErrors = [];
/** Every status and transport the page showed, with when. */
const history = [];
/** How often the status went from live to reconnecting since READY (before it, a page that is
 * still subscribing may pass through `reconnecting` too). */
let drops = 0;
let ready = false;
let browser;
let context;
let page;

async function main() {
  browser = await launch();
  context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  await context.tracing.start({ screenshots: true, snapshots: true });
  page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(`${elapsed()} ${message.text()}`);
  });
  page.on("pageerror", (error) => pageErrors.push(`${elapsed()} ${error.message}`));
  // Herald's transports as the browser saw them: when each request ended, and how.
  const transportPath = (url) => /\/(ws|sse|poll)\?/.exec(url)?.[1];
  page.on("requestfinished", async (request) => {
    const name = transportPath(request.url());
    const response = name && (await request.response().catch(() => null));
    if (name) history.push(`${elapsed()} ${name} answered ${response?.status()}`);
  });
  page.on("requestfailed", (request) => {
    const name = transportPath(request.url());
    if (name) history.push(`${elapsed()} ${name} failed ${request.failure()?.errorText}`);
  });
  await page.exposeFunction("heraldTestSaw", (what, value) => {
    history.push(`${elapsed()} ${what} ${value}`);
    if (ready && what === "public-status" && value === "reconnecting") drops += 1;
  });
  // Watch the status and the transport from the first moment, so that no change goes unseen.
  await page.addInitScript(() => {
    document.addEventListener("DOMContentLoaded", () => {
      for (const id of ["public-status", "transport"]) {
        const element = document.getElementById(id);
        window.heraldTestSaw(id, element.textContent);
        new MutationObserver(() => window.heraldTestSaw(id, element.textContent)).observe(element, {
          childList: true,
          characterData: true,
          subtree: true,
        });
      }
    });
  });

  await page.goto(pageUrl, { timeout: READY_TIMEOUT_MS });
  await waitFor("both panels live", READY_TIMEOUT_MS, () =>
    page.waitForFunction(
      () =>
        ["public-status", "user-status"].every(
          (id) => document.getElementById(id).textContent === "live",
        ),
      null,
      { timeout: 0, polling: 100 },
    ),
  );
  ready = true;
  say(`READY ${await transport()}`);

  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [command, ...args] = line.trim().split(" ");
    if (command === "NUMBERS") {
      await numbers(args[0], Number(args[1]));
    } else if (command === "DONE") {
      await finish();
      return;
    } else if (command) {
      await fail(`unknown command: ${line}`);
    }
  }
  await fail("stdin closed before DONE");
}

function transport() {
  return page.evaluate(() => document.getElementById("transport").textContent);
}

/** The numbers of `tag`'s notices in each timeline, oldest first (the page shows newest first). */
function shown(tag) {
  return page.evaluate((tag) => {
    const pattern = new RegExp(`^${tag} notice (\\d+)$`);
    const numbers = (id) =>
      [...document.querySelectorAll(`#${id} li .text`)]
        .map((text) => pattern.exec(text.textContent))
        .filter(Boolean)
        .map((match) => Number(match[1]))
        .reverse();
    return { public: numbers("public-timeline"), user: numbers("user-timeline") };
  }, tag);
}

async function numbers(tag, count) {
  // Messages of a channel arrive in order: once the last one is shown, any that was lost or
  // doubled before it would show too.
  await waitFor(`"${tag} notice ${count}" in both timelines`, NUMBERS_TIMEOUT_MS, () =>
    page.waitForFunction(
      (last) =>
        ["public-timeline", "user-timeline"].every((id) =>
          [...document.querySelectorAll(`#${id} li .text`)].some((t) => t.textContent === last),
        ),
      `${tag} notice ${count}`,
      { timeout: 0, polling: 100 },
    ),
  );
  const want = Array.from({ length: count }, (_, i) => i + 1);
  const seen = await shown(tag);
  for (const [panel, got] of Object.entries(seen)) {
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      const missing = want.filter((n) => !got.includes(n));
      const doubled = got.filter((n, i) => got.indexOf(n) !== i);
      await fail(
        `the ${panel} timeline shows ${JSON.stringify(got)}: missing ${JSON.stringify(missing)}, ` +
          `doubled ${JSON.stringify(doubled)}`,
      );
    }
  }
  // Every notice was shown at once (the page is at its top): no "N new notices" bar, empty or not.
  for (const bar of ["#public-new", "#user-new"]) {
    if (await page.isVisible(bar)) await fail(`${bar} is shown: ${await page.textContent(bar)}`);
  }
  diagnostics();
  say(`NUMBERS ${await transport()} ${drops}`);
}

/** Runs `wait()` (a promise-returning page wait) with a time-out that fails the run. */
function waitFor(what, timeoutMs, wait) {
  return waitWithin(what, timeoutMs, wait, fail);
}

/** The screenshot and the trace, whichever way the run ended. */
async function saveArtifacts() {
  try {
    await page.screenshot({ path: `${artifacts}.png`, fullPage: true });
    say(`# screenshot: ${artifacts}.png`);
  } catch (error) {
    say(`# no screenshot: ${error.message}`);
  }
  try {
    await context.tracing.stop({ path: `${artifacts}-trace.zip` });
    say(`# trace: ${artifacts}-trace.zip`);
  } catch (error) {
    say(`# no trace: ${error.message}`);
  }
}

/** Prints what was seen since the last call. */
function diagnostics() {
  for (const line of history.splice(0)) say(`# saw ${line}`);
  for (const line of consoleErrors.splice(0)) say(`# console error ${line}`);
  for (const line of pageErrors) say(`# page error ${line}`);
}

async function finish() {
  if (pageErrors.length > 0) await fail(`uncaught page errors: ${pageErrors.join(" | ")}`);
  await saveArtifacts();
  diagnostics();
  await browser.close();
  say("BYE");
  process.exit(0);
}

/** Prints the reason and what the page showed, saves the artifacts, and exits with status 1. */
async function fail(reason) {
  say(`FAIL ${reason}`);
  try {
    if (page) {
      const state = await page.evaluate(() => {
        const text = (id) => document.getElementById(id)?.textContent ?? "(missing)";
        const items = (id) =>
          [...document.querySelectorAll(`#${id} li .text`)].map((li) => li.textContent);
        return {
          transport: text("transport"),
          publicStatus: text("public-status"),
          userStatus: text("user-status"),
          publicNote: text("public-note"),
          userNote: text("user-note"),
          publicTimeline: items("public-timeline"),
          userTimeline: items("user-timeline"),
        };
      });
      for (const [key, value] of Object.entries(state)) say(`# ${key}: ${JSON.stringify(value)}`);
      await saveArtifacts();
    }
  } catch (error) {
    say(`# could not read the page: ${error.message}`);
  }
  diagnostics();
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}

main().catch((error) => fail(`${error.stack || error}`));
