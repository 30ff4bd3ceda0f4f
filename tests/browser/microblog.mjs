// microblog.mjs: two users of Herald's demo page in a real headless Chromium, for
// tests/tests/e2e/browser.rs. Ann's page runs on the default transports; Bob's page is told to
// use long-poll only (`?transports=poll`: no WebSocket, no stream). Bob follows Ann by clicking her
// name, and her notices then reach his home timeline; clicking a #tag shows the tag live; the
// page title counts notices that arrive while the page is hidden.
//
// Usage: node tests/browser/microblog.mjs BASE_URL
// Prints one line per step reached, then DONE; on failure `FAIL <reason>` and exits 1.

import { launch } from "./chromium.mjs";

const STEP_MS = 15_000;
const base = process.argv[2];
const say = (line) => console.log(line);

async function main() {
  const browser = await launch();
  const open = async (nick, query) => {
    const page = await browser.newPage();
    await page.goto(`${base}/${query}`);
    await page.fill("#user-id", nick);
    await page.waitForFunction(
      (nick) => document.getElementById("user-title").textContent.endsWith(nick),
      nick,
      { timeout: STEP_MS },
    );
    await page.waitForFunction(
      () => document.getElementById("public-status").textContent === "live",
      null,
      { timeout: STEP_MS },
    );
    return page;
  };
  const post = async (page, text) => {
    await page.fill("#notice-text", text);
    await page.click("#post-button");
  };
  const seen = (page, list, text) =>
    page.waitForFunction(
      ([list, text]) =>
        [...document.querySelectorAll(`#${list} li`)].some((li) => li.textContent.includes(text)),
      [list, text],
      { timeout: STEP_MS },
    );

  const ann = await open("ann", "");
  const bob = await open("bob", "?transports=poll");
  const transport = await bob.textContent("#transport");
  if (transport !== "poll") throw new Error(`Bob's page uses ${transport}, not poll`);
  say("OPEN");

  await post(ann, "hello from ann #herald");
  await seen(bob, "public-timeline", "hello from ann");
  say("PUBLIC");

  // Bob opens Ann's notices from her name, and follows her.
  await bob.click("#public-timeline li .who a");
  await bob.waitForSelector("#follow-button:not([hidden])", { timeout: STEP_MS });
  await bob.click("#follow-button");
  await bob.waitForFunction(
    () => document.getElementById("follow-button").textContent === "Unfollow ann",
    null,
    { timeout: STEP_MS },
  );
  await post(ann, "second from ann");
  await seen(bob, "user-timeline", "second from ann");
  await seen(bob, "view-timeline", "second from ann");
  say("HOME");

  // A tag shows live too.
  await bob.click("#public-timeline li .text a");
  await bob.waitForFunction(
    () => document.getElementById("view-title").textContent === "#herald",
    null,
    { timeout: STEP_MS },
  );
  await post(ann, "third #herald");
  await seen(bob, "view-timeline", "third");
  // It reaches Bob's other timelines too, each on a stream of its own (long-poll answers come
  // one by one): all of it must be in before the page is hidden, or a late copy counts as unread.
  await seen(bob, "public-timeline", "third");
  await seen(bob, "user-timeline", "third");
  say("TAG");

  // While Bob's page is hidden, the title counts what arrives.
  await bob.evaluate(() => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
    document.dispatchEvent(new Event("visibilitychange"));
  });
  await post(ann, "unread one");
  await bob.waitForFunction(() => document.title.startsWith("("), null, { timeout: STEP_MS });
  say(`TITLE ${await bob.title()}`);

  await browser.close();
  say("DONE");
}

main().catch((error) => {
  say(`FAIL ${error.message.split("\n")[0]}`);
  process.exit(1);
});
