// console.mjs: drives Herald's operator console (/console) in a real headless Chromium for
// tests/tests/e2e/console.rs.
//
// Usage: node tests/browser/console.mjs
//
// It speaks a line protocol with the Rust test, one command per stdin line, one answer per stdout
// line. Every wait has a time-out; on failure it prints `FAIL <reason>`, then `# ` lines with what
// the page showed, its console and a screenshot path, and exits with status 1. A `<base>` is
// `http://127.0.0.1:PORT`; site ids, channels and users are single words.
//
//   test → OPEN <base> <secret>        open <base>/console#secret=<secret>, wait until it polled
//                                      twice, drew every chart and filled the sites table; checks
//                                      that the secret left the URL       → READY <first site id>
//   test → VALUES                      the charts' latest values and window maxima
//                                      → VALUES connections=<last>/<max> messages=… deliveries=…
//   test → ROSE <connections> <deliveries/s>
//                                      wait until the connections chart's maximum reached
//                                      <connections> and the deliveries/s chart's <deliveries/s>
//                                      → ROSE connections=<max> deliveries=<max> messages=<max>
//   test → TOP <site> <user>           pick <site> and the messages measure in the top-users
//                                      table, wait until <user> is its first row  → TOP <user>
//   test → PUBLISH <site> <channel> <text>
//                                      publish the JSON string <text> with the console's form
//                                      → PUBLISHED <offset>
//   test → CHANNEL <site> <channel> <text>
//                                      show the channel; wait until its history has <text>
//                                      → CHANNEL <subscribers>
//   test → DISCONNECT <site> <user>    the disconnect form                  → DISCONNECTED
//   test → WRONG <base> <secret>       open the console with a wrong secret; wait for the sign-in
//                                      form and its message, the console hidden → REFUSED <message>
//   test → SIGNIN <secret>             sign in with the form; wait until live → SIGNED_IN
//   test → SHOT <path>                 full-page screenshot                 → SHOT <path>
//   test → DONE                        check the console and close the browser → BYE
//
// Lines starting with `# ` are diagnostics. Closing stdin also ends the run.

import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { tmpdir } from "node:os";
import { launch, waitWithin } from "./chromium.mjs";

const LOAD_TIMEOUT_MS = 20_000;
const WAIT_TIMEOUT_MS = 15_000;
const RISE_TIMEOUT_MS = 30_000;

// The one console error a test provokes on purpose: the wrong secret's 401 answers.
const EXPECTED_ERRORS = [/status of 401/];

const say = (line) => console.log(line);
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(2)}s`;

/** Console errors, each with whether a 401 was expected at the time. */
const consoleErrors = [];
let refusing = false;
let browser;
let page;

async function main() {
  browser = await launch();
  page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on("console", (message) => {
    if (message.type() === "error") {
      consoleErrors.push({ text: message.text(), expected: refusing, at: elapsed() });
    }
  });
  page.on("pageerror", (error) => {
    consoleErrors.push({ text: `uncaught: ${error.message}`, expected: false, at: elapsed() });
  });

  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [command, ...args] = line.trim().split(" ");
    if (command === "OPEN") {
      await open(args[0], args[1]);
    } else if (command === "VALUES") {
      const v = await chartValues();
      say(
        `VALUES connections=${v.connections.last}/${v.connections.max} ` +
          `messages=${v.messages.last}/${v.messages.max} deliveries=${v.deliveries.last}/${v.deliveries.max}`,
      );
    } else if (command === "ROSE") {
      await rose(Number(args[0]), Number(args[1]));
    } else if (command === "TOP") {
      await top(args[0], args[1]);
    } else if (command === "PUBLISH") {
      await publish(args[0], args[1], args.slice(2).join(" "));
    } else if (command === "CHANNEL") {
      await channel(args[0], args[1], args.slice(2).join(" "));
    } else if (command === "DISCONNECT") {
      await disconnect(args[0], args[1]);
    } else if (command === "WRONG") {
      await wrong(args[0], args[1]);
    } else if (command === "SIGNIN") {
      await signIn(args[0]);
    } else if (command === "SHOT") {
      mkdirSync(dirname(args[0]), { recursive: true });
      await page.screenshot({ path: args[0], fullPage: true });
      say(`SHOT ${args[0]}`);
    } else if (command === "DONE") {
      await finish();
      return;
    } else if (command) {
      await fail(`unknown command: ${line}`);
    }
  }
  await fail("stdin closed before DONE");
}

async function open(base, secret) {
  await page.goto(`${base}/console#secret=${encodeURIComponent(secret)}`, { timeout: LOAD_TIMEOUT_MS });
  await waitFor("the console to poll, draw its charts and fill the sites table", LOAD_TIMEOUT_MS, () =>
    page.waitForFunction(
      () =>
        document.body.dataset.state === "live" &&
        Number(document.body.dataset.polls || 0) >= 2 &&
        [...document.querySelectorAll("figure.chart")].every(
          (figure) => Number(figure.dataset.samples || 0) >= 2,
        ) &&
        document.querySelectorAll("#sites-table tbody tr[data-site]").length > 0 &&
        !document.getElementById("console").hidden,
      null,
      { timeout: 0, polling: 100 },
    ),
  );
  const state = await page.evaluate(() => ({
    hash: location.hash,
    href: location.href,
    stored: sessionStorage.getItem("herald-console-secret"),
    site: document.querySelector("#sites-table tbody tr[data-site]").dataset.site,
    engine: document.getElementById("engine").textContent,
    charts: [...document.querySelectorAll("figure.chart")].map((f) => `${f.id}=${f.dataset.last}`),
    canvases: [...document.querySelectorAll("figure.chart canvas")].map((c) => c.width * c.height),
  }));
  if (state.href.includes("secret")) await fail(`the secret stayed in the URL: ${state.href}`);
  if (state.stored !== secret) await fail("the secret is not in sessionStorage");
  if (state.canvases.some((area) => !(area > 0))) await fail(`a chart has no canvas: ${state.canvases}`);
  say(`# engine ${state.engine}; ${state.charts.join(" ")}`);
  say(`READY ${state.site}`);
}

/** Every chart's `data-last` and `data-max`, as numbers (NaN when empty). */
function chartValues() {
  return page.evaluate(() => {
    const read = (id) => {
      const figure = document.getElementById(`chart-${id}`);
      return { last: Number(figure.dataset.last), max: Number(figure.dataset.max) };
    };
    return {
      connections: read("connections"),
      messages: read("messages"),
      deliveries: read("deliveries"),
    };
  });
}

async function rose(connections, deliveries) {
  await waitFor(
    `connections ≥ ${connections} and deliveries ≥ ${deliveries}/s in the charts`,
    RISE_TIMEOUT_MS,
    () =>
      page.waitForFunction(
        ([c, d]) =>
          Number(document.getElementById("chart-connections").dataset.max) >= c &&
          Number(document.getElementById("chart-deliveries").dataset.max) >= d,
        [connections, deliveries],
        { timeout: 0, polling: 200 },
      ),
  );
  const v = await chartValues();
  say(`ROSE connections=${v.connections.max} deliveries=${v.deliveries.max} messages=${v.messages.max}`);
}

async function top(site, user) {
  await waitFor(`site ${site} in the top-users select`, WAIT_TIMEOUT_MS, () =>
    page.waitForFunction(
      (s) => [...document.getElementById("top-site").options].some((o) => o.value === s),
      site,
      { timeout: 0, polling: 100 },
    ),
  );
  await page.selectOption("#top-site", site);
  await page.selectOption("#top-measure", "messages");
  // The report is polled every few seconds; wait for one that counted the publishes.
  await waitFor(`${user} first in the top users of ${site}`, WAIT_TIMEOUT_MS, () =>
    page.waitForFunction(
      (u) => document.getElementById("top-users").dataset.firstUser === u,
      user,
      { timeout: 0, polling: 100 },
    ),
  );
  const rows = await page.$$eval("#top-users tbody tr", (trs) =>
    trs.map((tr) => [...tr.cells].map((td) => td.textContent).join(" ")),
  );
  say(`# top users: ${rows.join(" | ")}`);
  const first = await page.$eval("#top-users tbody tr", (tr) => tr.cells[1].textContent);
  say(`TOP ${first}`);
}

async function publish(site, channel, text) {
  await page.fill("#publish-form input[name=site]", site);
  await page.fill("#publish-form input[name=channel]", channel);
  await page.fill("#publish-form textarea[name=data]", JSON.stringify(text));
  await page.click("#publish-form button[type=submit]");
  const result = await outcome("publish-result");
  say(`# publish: ${result.text}`);
  say(`PUBLISHED ${result.offset}`);
}

async function channel(site, name, text) {
  await page.fill("#channel-form input[name=site]", site);
  await page.fill("#channel-form input[name=channel]", name);
  await page.click("#channel-form button[type=submit]");
  await outcome("channel-result");
  await waitFor(`${JSON.stringify(text)} in the channel's history`, WAIT_TIMEOUT_MS, () =>
    page.waitForFunction(
      (t) => [...document.querySelectorAll("#channel-history li")].some((li) => li.textContent.includes(t)),
      text,
      { timeout: 0, polling: 100 },
    ),
  );
  const subscribers = await page.$eval("#channel-view", (view) => view.dataset.subscribers);
  say(`CHANNEL ${subscribers}`);
}

async function disconnect(site, user) {
  await page.fill("#disconnect-form input[name=site]", site);
  await page.fill("#disconnect-form input[name=user]", user);
  await page.click("#disconnect-form button[type=submit]");
  const result = await outcome("disconnect-result");
  say(`# disconnect: ${result.text}`);
  say("DISCONNECTED");
}

/** Waits for an action's output to leave `busy`; fails unless it says `ok`. */
async function outcome(id) {
  await waitFor(`#${id} to answer`, WAIT_TIMEOUT_MS, () =>
    page.waitForFunction(
      (i) => ["ok", "error"].includes(document.getElementById(i).dataset.state),
      id,
      { timeout: 0, polling: 100 },
    ),
  );
  const result = await page.$eval(`#${id}`, (output) => ({
    state: output.dataset.state,
    text: output.textContent,
    offset: output.dataset.offset,
  }));
  if (result.state !== "ok") await fail(`#${id} says ${result.text}`);
  // The next action on this form must wait for its own answer.
  await page.$eval(`#${id}`, (output) => {
    output.dataset.state = "idle";
  });
  return result;
}

async function wrong(base, secret) {
  refusing = true;
  // A fresh load, as an operator opening a link would; the page also follows a hash change.
  await page.goto("about:blank");
  await page.goto(`${base}/console#secret=${encodeURIComponent(secret)}`, { timeout: LOAD_TIMEOUT_MS });
  await waitFor("the sign-in form after a 401", WAIT_TIMEOUT_MS, () =>
    page.waitForFunction(
      () =>
        document.body.dataset.state === "signed-out" &&
        !document.getElementById("signin").hidden &&
        document.getElementById("console").hidden &&
        document.getElementById("signin-message").textContent.length > 0,
      null,
      { timeout: 0, polling: 100 },
    ),
  );
  const state = await page.evaluate(() => ({
    message: document.getElementById("signin-message").textContent,
    stored: sessionStorage.getItem("herald-console-secret"),
  }));
  if (state.stored !== null) await fail("a refused secret stayed in sessionStorage");
  refusing = false;
  say(`REFUSED ${state.message}`);
}

async function signIn(secret) {
  await page.fill("#secret-input", secret);
  await page.click("#signin-button");
  await waitFor("the console live after signing in", LOAD_TIMEOUT_MS, () =>
    page.waitForFunction(
      () => document.body.dataset.state === "live" && !document.getElementById("console").hidden,
      null,
      { timeout: 0, polling: 100 },
    ),
  );
  say("SIGNED_IN");
}

/** Runs `wait()` (a promise-returning page wait) with a time-out that fails the run. */
function waitFor(what, timeoutMs, wait) {
  return waitWithin(what, timeoutMs, wait, fail);
}

async function finish() {
  const unexpected = consoleErrors.filter(
    (e) => !(e.expected && EXPECTED_ERRORS.some((pattern) => pattern.test(e.text))),
  );
  if (unexpected.length > 0) {
    await fail(`unexpected console errors: ${unexpected.map((e) => e.text).join(" | ")}`);
  }
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
        return {
          url: location.href,
          bodyState: document.body.dataset.state,
          polls: document.body.dataset.polls,
          pollStatus: text("poll-status"),
          signinMessage: text("signin-message"),
          charts: [...document.querySelectorAll("figure.chart")].map(
            (f) => `${f.id} last=${f.dataset.last} max=${f.dataset.max} samples=${f.dataset.samples}`,
          ),
          sites: [...document.querySelectorAll("#sites-table tbody tr")].map((tr) => tr.textContent),
          topUsers: [...document.querySelectorAll("#top-users tbody tr")].map((tr) => tr.textContent),
          topNote: text("top-note"),
          publish: text("publish-result"),
          channel: text("channel-result"),
          history: [...document.querySelectorAll("#channel-history li")].map((li) => li.textContent),
          disconnect: text("disconnect-result"),
        };
      });
      for (const [key, value] of Object.entries(state)) say(`# ${key}: ${JSON.stringify(value)}`);
      const path = join(tmpdir(), `herald-console-${process.pid}.png`);
      await page.screenshot({ path, fullPage: true });
      say(`# screenshot: ${path}`);
    }
  } catch (error) {
    say(`# could not read the page: ${error.message}`);
  }
  for (const e of consoleErrors) say(`# console error at ${e.at}: ${e.text}`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}

main().catch((error) => fail(`${error.stack || error}`));
