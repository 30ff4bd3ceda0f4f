// build.mjs: makes the classic-script build of herald.js (assets/herald.classic.js, which sets
// `window.Herald`) from the ES module, by taking its `export` keywords off and wrapping it.
// `node web/build.mjs` writes it; `node web/build.mjs --check` fails when it is not up to date
// (web/test/herald.test.mjs runs the check too).

import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const assets = join(dirname(fileURLToPath(import.meta.url)), "assets");

/** The classic build of the module's source. */
export function classic(source) {
  const body = source
    .replace(/^export \{[^}]*\};\n/m, "")
    .replace(/^export (class|function|const) /gm, "$1 ");
  return (
    "// herald.classic.js: herald.js as a classic script (window.Herald); made by web/build.mjs" +
    " from herald.js, do not edit.\n(function () {\n" +
    body +
    "\nglobalThis.Herald = Object.assign(Herald, { Herald, HeraldSocket: Herald, backoff });\n})();\n"
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const built = classic(readFileSync(join(assets, "herald.js"), "utf8"));
  const path = join(assets, "herald.classic.js");
  if (process.argv.includes("--check")) {
    if (readFileSync(path, "utf8") !== built) {
      console.error("web/assets/herald.classic.js is out of date: run node web/build.mjs");
      process.exit(1);
    }
  } else {
    writeFileSync(path, built);
  }
}
