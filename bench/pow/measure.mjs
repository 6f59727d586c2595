// How long the sale page's proof of work takes a buyer: runs the page's own solver (the text
// between POW-WORKER-BEGIN and POW-WORKER-END in crates/http/assets/sale.html, so exactly what
// ships) in headless Chromium at CPU throttling 1x, 4x (Lighthouse's mid-tier phone) and 6x,
// and prints hashes per second and the expected seconds for 16 to 24 bits. Needs no server.
//
//   node bench/pow/measure.mjs [rounds=3] [secs=3]
//
// Uses playwright-core from tests/browser/node_modules (`npm ci --prefix tests/browser`) and
// Debian's Chromium (`apt-get install -y chromium`; CHROMIUM overrides /usr/bin/chromium).
//
// Chromium throttles only a page's main thread: Emulation.setCPUThrottlingRate on a worker's
// target answers "Operation is only supported for pages, not workers", and the page's setting
// slows its workers far less than asked (Chromium 156 on 2 vCPUs: 1.5-2x at 4x and 6x). So
// each round times the solver twice with the same code: in a Web Worker (as the page runs it;
// shown for reference) and on the throttled main thread. A phone's worker runs on a core as slow as its main thread, so the
// worker's rate at Nx is estimated as worker(1x) × main(Nx) / main(1x).

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { randomBytes } from "node:crypto";

const rounds = Number(process.argv[2] || 3);
const secs = Number(process.argv[3] || 3);
const RATES = [1, 4, 6];
const BITS = [16, 18, 20, 22, 24];
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

let chromium;
try {
  ({ chromium } = createRequire(new URL("../../tests/browser/package.json", import.meta.url))("playwright-core"));
} catch (e) {
  console.error("playwright-core is missing: run `npm ci --prefix tests/browser`");
  process.exit(1);
}

const page_ = readFileSync(new URL("../../crates/http/assets/sale.html", import.meta.url), "utf8");
const begin = page_.indexOf("// POW-WORKER-BEGIN"), end = page_.indexOf("// POW-WORKER-END");
if (begin < 0 || end < begin) throw new Error("sale.html has no POW-WORKER-BEGIN … POW-WORKER-END");
const source = page_.slice(begin, end);
/** A difficulty never met: the solver runs until it is stopped. */
const NEVER = 64;
/** Like a real challenge: 44 URL-safe characters. */
const challenge = () => randomBytes(33).toString("base64url");

/** Hashes per second of the solver in a Web Worker, from its progress after a warm-up fifth. */
function inWorker(page, ch) {
  return page.evaluate(([source, ch, bits, secs]) => new Promise((resolve, reject) => {
    const worker = new Worker(URL.createObjectURL(new Blob([source], { type: "text/javascript" })));
    const seen = [];
    const done = () => {
      worker.terminate();
      const from = seen.find((p) => p.ms >= secs * 200) || seen[0], to = seen[seen.length - 1];
      resolve((to.tries - from.tries) / ((to.ms - from.ms) / 1000));
    };
    worker.onmessage = (e) => { seen.push(e.data); if (e.data.type === "solved") done(); };
    worker.onerror = (e) => reject(new Error(e.message));
    worker.postMessage({ challenge: ch, bits });
    setTimeout(done, secs * 1000);
  }), [source, ch, NEVER, secs]);
}

/** Hashes per second of the same solver on the page's main thread, after a warm-up fifth. */
function onMainThread(page, ch) {
  return page.evaluate(([source, ch, bits, secs]) => {
    const { solve } = new Function(source + "\nreturn { solve };")();
    const chunk = 20_000, t0 = performance.now();
    let from = 0, tries = 0, start = 0;
    while (performance.now() - t0 < secs * 200) { solve(ch, bits, from, chunk); from += chunk; }
    start = performance.now();
    while (performance.now() - t0 < secs * 1000) { solve(ch, bits, from, chunk); from += chunk; tries += chunk; }
    return tries / ((performance.now() - start) / 1000);
  }, [source, ch, NEVER, secs]);
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const mega = (x) => (x / 1e6).toFixed(2) + " M/s";
const pad = (text, n) => String(text).padStart(n);

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  await page.goto("about:blank");
  const cdp = await page.context().newCDPSession(page);
  const worker = Object.fromEntries(RATES.map((r) => [r, []]));
  const main = Object.fromEntries(RATES.map((r) => [r, []]));
  for (let round = 1; round <= rounds; round++) {
    for (const rate of RATES) { // interleaved: a noisy moment hits every setting alike
      await cdp.send("Emulation.setCPUThrottlingRate", { rate });
      worker[rate].push(await inWorker(page, challenge()));
      main[rate].push(await onMainThread(page, challenge()));
      process.stderr.write(`round ${round}, ${rate}x: worker ${mega(worker[rate].at(-1))}, main thread ${mega(main[rate].at(-1))}\n`);
    }
  }
  await cdp.send("Emulation.setCPUThrottlingRate", { rate: 1 });

  const est = {};
  console.log(`Chromium ${browser.version()}, ${rounds} interleaved rounds of ${secs} s per measurement, medians.`);
  console.log(`Solver: crates/http/assets/sale.html, POW-WORKER-BEGIN … END (${source.length} chars).\n`);
  console.log("throttling | worker, measured* | main thread | slowdown | worker, estimated");
  console.log("-----------|-------------------|-------------|----------|------------------");
  for (const rate of RATES) {
    const slowdown = median(main[1]) / median(main[rate]);
    est[rate] = median(worker[1]) / slowdown;
    console.log(`${pad(rate + "x", 10)} | ${pad(mega(median(worker[rate])), 17)} | ${pad(mega(median(main[rate])), 11)} | ${pad(slowdown.toFixed(2) + "x", 8)} | ${pad(mega(est[rate]), 17)}`);
  }
  console.log("* Chromium does not throttle workers as asked; the estimate is worker(1x) / the main thread's slowdown.\n");
  console.log("Expected seconds to solve (2^bits tries / estimated worker rate); 1 solve in 20 takes 3x as long:");
  console.log("bits | tries (mean) | " + RATES.map((r) => pad(r + "x", 8)).join(" | "));
  console.log("-----|--------------|-" + RATES.map(() => "--------").join("-|-"));
  for (const bits of BITS) {
    console.log(`${pad(bits, 4)} | ${pad((2 ** bits).toLocaleString("en"), 12)} | ` + RATES.map((r) => pad((2 ** bits / est[r]).toFixed(2), 8)).join(" | "));
  }
} finally {
  await browser.close();
}
