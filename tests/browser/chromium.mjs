// Debian's Chromium, launched the one way every browser test here uses it (playwright-core cannot
// download a browser on this network: `npx playwright install` does not work).
//
// The flags keep a headless run quiet and its network to the test's own loopback servers: no
// sandbox (tests run as root), no GPU, no QUIC (every connection is the TCP one the test watches
// or cuts), and none of Chromium's own background traffic (component updates, sync, first-run).

import { chromium } from "playwright-core";

const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A headless Chromium from /usr/bin/chromium. */
export function launch() {
  return chromium.launch({ executablePath: "/usr/bin/chromium", args: ARGS });
}

/**
 * Runs `wait()` (a promise-returning page wait) with a time-out; on time-out or error, calls
 * `fail` with what was awaited and why (each script's own `fail` prints what the page showed).
 */
export async function waitWithin(what, timeoutMs, wait, fail) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([wait(), timeout]);
  } catch (error) {
    await fail(`waiting for ${what}: ${error.message}`);
  } finally {
    clearTimeout(timer);
  }
}
