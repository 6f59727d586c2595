// The sale page and the admin dashboard in headless Chromium (Debian's package), driven by
// playwright-core. Started by crates/flashsale/tests/it/browser.rs, which runs a server and
// passes its address and admin token:
//   FLASHSALE_URL, FLASHSALE_ADMIN_TOKEN, SCREENSHOT_DIR, CHROMIUM (default /usr/bin/chromium)
// Run by hand against `flashsale demo` the same way:
//   FLASHSALE_URL=http://127.0.0.1:8080 FLASHSALE_ADMIN_TOKEN=... node --test-reporter=spec pages.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = need("FLASHSALE_URL");
const ADMIN_TOKEN = need("FLASHSALE_ADMIN_TOKEN");
const SHOTS = process.env.SCREENSHOT_DIR || "screenshots";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
/** Longest wait for anything a page should show. */
const SHOW_MS_MAX = 20_000;

function need(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (crates/flashsale/tests/it/browser.rs sets it)`);
  return value;
}

let browser;
const pageErrors = [];

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  // launch() gives every run a fresh, empty profile (user-data-dir) of its own. The flags keep
  // Chromium from calling out: this machine's network is closed, and tests must not depend on it.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  assert.deepEqual(pageErrors, [], "the pages threw errors");
});

// ----- helpers -----

async function admin(method, path, body) {
  const r = await fetch(BASE + path, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await r.json();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${JSON.stringify(data)}`);
  return data;
}

async function createSale({ name = "Test phone", stock, limit = 1, startsInMs, payWindowSecs = 120, waitingRoom }) {
  const starts = new Date(Date.now() + startsInMs);
  return admin("POST", "/api/admin/sales", {
    name, price_cents: 19_900, stock, per_buyer_limit: limit, payment_window_secs: payWindowSecs,
    starts_at: starts.toISOString(), ends_at: new Date(starts.getTime() + 3_600_000).toISOString(),
    ...(waitingRoom ? { waiting_room: waitingRoom } : {}),
  });
}

async function buyerToken(buyer) {
  const r = await fetch(BASE + "/api/dev/buyer-token", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ buyer_id: buyer }),
  });
  return (await r.json()).token;
}

/** A browser context of its own (own storage: one person) with a page that reports errors. */
async function newPage(options = {}) {
  const context = await browser.newContext({ viewport: { width: 900, height: 820 }, ...options });
  const page = await context.newPage();
  page.on("pageerror", (error) => pageErrors.push(`${page.url()}: ${error.message}`));
  return page;
}

async function waitText(page, id, pattern, timeout = SHOW_MS_MAX) {
  try {
    await page.waitForFunction(
      ([id, source, flags]) => new RegExp(source, flags).test(document.getElementById(id)?.textContent ?? ""),
      [id, pattern.source, pattern.flags],
      { timeout, polling: 50 },
    );
  } catch (error) {
    const now = await page.locator("#" + id).textContent().catch(() => "<none>");
    throw new Error(`#${id} never matched ${pattern} within ${timeout} ms; it says ${JSON.stringify(now)}`);
  }
  return page.locator("#" + id).textContent();
}

async function signIn(page, buyer) {
  await page.fill("#buyer", buyer);
  await page.click("#login");
  await waitText(page, "who", new RegExp(`Signed in as ${buyer}\\.`));
}

/** Seconds shown by a countdown of the form [hh:]mm:ss. */
function countdownSecs(text) {
  return text.trim().split(":").map(Number).reduce((total, part) => total * 60 + part, 0);
}

const shot = (page, name) => page.screenshot({ path: join(SHOTS, name), fullPage: true });

/** The proof-of-work rule, by node's crypto: leading zero bits of SHA-256(challenge ‖ nonce). */
function workBits(challenge, nonce) {
  const hash = createHash("sha256").update(challenge + nonce).digest();
  let bits = 0;
  for (const byte of hash) {
    if (byte) return bits + Math.clz32(byte) - 24;
    bits += 8;
  }
  return bits;
}

/** The first decimal nonce from `from` with at least `bits` zero bits, as the page should find it. */
function firstSolution(challenge, bits, from = 0) {
  let nonce = from;
  while (workBits(challenge, String(nonce)) < bits) nonce++;
  return String(nonce);
}

// ----- the scenarios -----

test("a buyer watches the countdown reach zero, buys, pays; a second buyer finds it sold out", { timeout: 90_000 }, async () => {
  const sale = await createSale({ name: "Limited phone", stock: 1, startsInMs: 10_000 });
  const alice = await newPage();
  const bob = await newPage();
  await Promise.all([alice.goto(`${BASE}/sales/${sale.id}`), bob.goto(`${BASE}/sales/${sale.id}`)]);
  await Promise.all([signIn(alice, "alice"), signIn(bob, "bob")]);

  // Upcoming: a countdown that goes down, and no buy button yet.
  const first = countdownSecs(await waitText(alice, "countdown", /^\d\d:\d\d$/));
  assert.ok(first > 0 && first <= 10, `countdown starts at ${first} s`);
  assert.equal(await alice.isVisible("#buy"), false, "no buy button before the start");
  await shot(alice, "sale-upcoming.png");
  await alice.waitForTimeout(1_100);
  const second = countdownSecs(await alice.locator("#countdown").textContent());
  assert.ok(second < first, `the countdown moves: ${first} s, then ${second} s`);

  // Zero: the page learns the buy path from the status endpoint and shows the button.
  await alice.locator("#buy").waitFor({ state: "visible", timeout: SHOW_MS_MAX });
  await bob.locator("#buy").waitFor({ state: "visible", timeout: SHOW_MS_MAX });
  assert.equal(await alice.locator("#countdown").textContent(), "Live now");

  // Bob's page has not heard of the sell-out yet: hold its status polls until he clicks.
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  await bob.route("**/api/sales/*/status", async (route) => { await held; await route.continue(); });
  await alice.click("#buy");
  await waitText(alice, "order", /Reserved for you! Pay within \d\d:\d\d to keep it\./);
  const left = countdownSecs((await alice.locator("#order").textContent()).match(/\d\d:\d\d/)[0]);
  // 120 s to pay; the page's clock estimate may lag by the status micro-cache (≤ 100 ms), and
  // the display rounds up, so 02:01 can show for a moment.
  assert.ok(left > 100 && left <= 121, `time left to pay: ${left} s`);
  assert.equal(await alice.isVisible("#pay"), true);
  await shot(alice, "sale-pending-payment.png");

  // The only unit is taken: the second buyer's click is answered in plain words.
  await bob.click("#buy");
  await waitText(bob, "msg", /^Sorry, it's sold out\./);
  release();
  await bob.unroute("**/api/sales/*/status");
  await shot(bob, "sale-sold-out.png");

  await alice.click("#pay");
  await waitText(alice, "order", /^Paid — thank you!/);
  assert.equal(await alice.isVisible("#pay"), false);
  assert.equal(await alice.isVisible("#buy"), false, "one per buyer: no buy button after paying");
  await shot(alice, "sale-paid.png");

  // A fresh visit shows the sale as sold out, and the paid order survives a reload.
  await bob.reload();
  await waitText(bob, "countdown", /^Sold out$/);
  await alice.reload();
  await waitText(alice, "order", /^Paid — thank you!/);
  await alice.context().close();
  await bob.context().close();
});

test("buyers join the line before the start, one is admitted and buys, the other gets the unit back by back-fill", { timeout: 90_000 }, async () => {
  const sale = await createSale({
    name: "Lined-up phone", stock: 1, startsInMs: 8_000, payWindowSecs: 5,
    waitingRoom: { opens_at: new Date(Date.now() - 1_000).toISOString(), admit_per_sec: 10, admission_secs: 30 },
  });
  const [alice, bob] = await Promise.all([newPage(), newPage()]);
  await Promise.all([alice.goto(`${BASE}/sales/${sale.id}`), bob.goto(`${BASE}/sales/${sale.id}`)]);
  await signIn(alice, "line-alice");
  await signIn(bob, "line-bob");
  // Before the start: no buy button, a join button; joining puts each in the pre-queue.
  for (const page of [alice, bob]) {
    await waitText(page, "line", /^The line is open\./);
    assert.equal(await page.locator("#buy").isVisible(), false, "no buy button for a sale with a line");
    await page.click("#join");
    await waitText(page, "line", /^You are in the line\. At the start/);
    await waitText(page, "receipt", /^Your receipt: join #[12], [0-9a-f]{64} /);
  }
  await shot(alice, "line-pre-queue.png");
  // The start draws the line: one of the two is admitted (one unit), the other waits.
  const admitted = /^It's your turn: buy within \d\d:\d\d\.$/;
  let first, second;
  for (let i = 0; i < 200 && !first; i++) {
    for (const [page, other] of [[alice, bob], [bob, alice]]) {
      if (admitted.test((await page.locator("#line").textContent()) ?? "")) { first = page; second = other; }
    }
    if (!first) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(first, "someone was admitted at the start");
  await shot(first, "line-admitted.png");
  // One unit, and the first may take it: the second is out of reach for now.
  await waitText(second, "line", /^Sold out for your place in line/);
  await first.click("#buy");
  await waitText(first, "order", /Pay within/);
  // Bought but not paid: the unit may come back, so the second is within reach again.
  await waitText(second, "line", /^You are in line: 0 ahead of you/);
  await shot(second, "line-waiting.png");
  // The first does not pay: the order expires, the unit comes back, and it goes to the next in line.
  await waitText(second, "line", admitted, 30_000);
  await second.click("#buy");
  await waitText(second, "order", /Pay within/);
  await second.click("#pay");
  await waitText(second, "order", /paid/i);
  await shot(second, "line-backfilled-and-paid.png");
  await Promise.all([alice.context().close(), bob.context().close()]);

  // The dashboard shows the line and pauses it.
  const page = await newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(`${BASE}/admin`);
  await page.fill("#token", ADMIN_TOKEN);
  await page.click("#login");
  await page.locator("#app").waitFor({ state: "visible" });
  await page.click(`#sales tr[data-id="${sale.id}"]`);
  await page.locator("#line-panel").waitFor({ state: "visible" });
  await waitText(page, "l-length", /^2$/);
  await waitText(page, "l-admitted", /^2$/);
  await page.click("#line-pause");
  await waitText(page, "l-rate", /^paused$/);
  await waitText(page, "line-pause", /^Resume the line$/);
  await shot(page, "admin-line.png");
  await page.context().close();
});

test("the sale page's proof-of-work solver agrees with node's SHA-256", { timeout: 60_000 }, async () => {
  const sale = await createSale({ name: "Hashing phone", stock: 1, startsInMs: 3_600_000 });
  const page = await newPage();
  await page.goto(`${BASE}/sales/${sale.id}`);
  // Lengths around the block edges (55, 56, 64 bytes), multi-byte UTF-8, several blocks.
  const texts = ["", "abc", "x".repeat(55), "x".repeat(56), "x".repeat(63), "x".repeat(64), "é".repeat(40), "y".repeat(200)];
  const challenge = randomBytes(33).toString("base64url"); // like the shop's: 44 characters
  const got = await page.evaluate(([texts, challenge]) => {
    // The worker's source, as the page hands it to the worker, run here on the page.
    const { sha256hex, solve } = new Function(document.getElementById("pow-worker").textContent + "\nreturn { sha256hex, solve };")();
    return {
      hashes: texts.map(sha256hex),
      twelve: solve(challenge, 12),
      // Nonces growing from 11 to 12 digits: the tail grows from one block to two.
      rollover: solve(challenge, 6, 99_999_999_990),
      // A challenge of over two blocks: the midstate path.
      long: solve(challenge.repeat(3), 8),
      limited: solve(challenge, 32, 0, 1000),
    };
  }, [texts, challenge]);
  assert.deepEqual(got.hashes, texts.map((t) => createHash("sha256").update(t).digest("hex")));
  assert.ok(workBits(challenge, got.twelve.nonce) >= 12, `${got.twelve.nonce} solves at 12 bits`);
  assert.deepEqual(got.twelve, { nonce: firstSolution(challenge, 12), tries: Number(got.twelve.nonce) + 1 }, "the first solution");
  assert.equal(got.rollover.nonce, firstSolution(challenge, 6, 99_999_999_990));
  assert.equal(got.long.nonce, firstSolution(challenge.repeat(3), 8));
  assert.equal(got.limited, null, "gives up after the limit");
  await page.context().close();
});

test("a sale asking proof of work: the page solves it in a worker, stays responsive, and joins the line", { timeout: 90_000 }, async () => {
  const bits = 14;
  const sale = await createSale({
    name: "Worked-for phone", stock: 1, startsInMs: 20_000,
    waitingRoom: { opens_at: new Date(Date.now() - 1_000).toISOString(), admit_per_sec: 10, admission_secs: 30, pow_difficulty_bits: bits },
  });
  const status = await (await fetch(`${BASE}/api/sales/${sale.id}/status`)).json();
  assert.equal(status.line?.pow_difficulty_bits, bits, JSON.stringify(status));

  // A slow solve: 14 bits take the page milliseconds, too quick to watch, so this page is told
  // 28 (minutes of work; a solution at 28 bits also has the 14 the shop checks). Its join is
  // held, so the indicator stays up even if the solve happens to end at once.
  const slow = await newPage();
  await slow.goto(`${BASE}/sales/${sale.id}`);
  await signIn(slow, "pow-slow");
  await waitText(slow, "line", /^The line is open\./);
  await slow.route("**/line/challenge", async (route) => {
    const response = await route.fetch();
    await route.fulfill({ response, json: { ...(await response.json()), difficulty_bits: 28 } });
  });
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  await slow.route("**/line", async (route) => { await held; await route.continue().catch(() => {}); });
  await slow.evaluate(() => { window.frames_ = 0; const tick = () => { window.frames_++; requestAnimationFrame(tick); }; requestAnimationFrame(tick); });
  await slow.click("#join");
  await waitText(slow, "line", /^Getting your place in line: checking you are not a bot… \d+%$/);
  assert.equal(await slow.locator("#line-progress").isVisible(), true, "a progress bar");
  assert.equal(await slow.isDisabled("#join"), true, "one join at a time");
  await shot(slow, "line-proof-of-work.png");
  // The page answers and draws frames while the worker hashes, and the tries go up.
  const before = await slow.evaluate(() => ({ frames: window.frames_, tries: S.work.tries, done: S.work.done }));
  let slowest = 0;
  for (let i = 0; i < 20; i++) {
    const t0 = Date.now();
    await slow.evaluate(() => 1);
    slowest = Math.max(slowest, Date.now() - t0);
    await slow.waitForTimeout(50);
  }
  const after = await slow.evaluate(() => ({ frames: window.frames_, tries: S.work.tries, done: S.work.done }));
  assert.ok(slowest < 500, `the page answered within ${slowest} ms while solving`);
  assert.ok(after.frames - before.frames >= 10, `frames drawn while solving: ${JSON.stringify([before, after])}`);
  assert.ok(after.done || after.tries > before.tries, `the tries go up: ${JSON.stringify([before, after])}`);
  release();
  await slow.context().close();

  // The real thing: the page gets a challenge, solves it, and joins with it.
  const page = await newPage();
  const joins = [];
  page.on("request", (request) => { if (request.method() === "POST" && request.url().endsWith("/line")) joins.push(request.postDataJSON()); });
  await page.goto(`${BASE}/sales/${sale.id}`);
  await signIn(page, "pow-buyer");
  await waitText(page, "line", /^The line is open\./);
  await page.click("#join");
  await waitText(page, "line", /^You are in the line\. At the start/);
  assert.equal(joins.length, 1, `one join: ${JSON.stringify(joins)}`);
  assert.ok(workBits(joins[0].challenge, joins[0].nonce) >= bits, `the join's nonce solves: ${JSON.stringify(joins[0])}`);
  assert.equal(await page.locator("#line-progress").isVisible(), false);
  await page.context().close();

  // The difficulty rose after the page last looked (its status still says 0): the join's 403
  // asks for proof; a challenge that expired on the way is replaced once.
  const late = await newPage();
  await late.route("**/api/sales/*/status", async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    await route.fulfill({ response, json: { ...body, line: body.line && { ...body.line, pow_difficulty_bits: 0 } } });
  });
  const lateJoins = [];
  let challenges = 0, expireOnce = true;
  late.on("request", (request) => { if (request.url().endsWith("/line/challenge")) challenges++; });
  await late.route("**/line", async (route) => {
    const proof = route.request().postDataJSON();
    lateJoins.push(proof);
    if (proof && expireOnce) {
      expireOnce = false;
      await route.fulfill({ status: 403, json: { error: { code: "challenge_expired", message: "the challenge has expired; GET line/challenge for a new one" } } });
    } else await route.continue();
  });
  await late.goto(`${BASE}/sales/${sale.id}`);
  await signIn(late, "pow-late");
  await waitText(late, "line", /^The line is open\./);
  await late.click("#join");
  await waitText(late, "line", /^You are in the line\. At the start/);
  assert.equal(lateJoins.length, 3, `joins: ${JSON.stringify(lateJoins)}`);
  assert.equal(lateJoins[0], null, "first without proof");
  assert.equal(challenges, 2, "a new challenge after the expired one");
  assert.notEqual(lateJoins[1].challenge, lateJoins[2].challenge);
  assert.ok(workBits(lateJoins[2].challenge, lateJoins[2].nonce) >= bits);
  assert.equal(await late.locator("#msg").textContent(), "");
  await late.context().close();

  // The same rules by hand: no proof, a wrong nonce, and a solved challenge used twice.
  const token = await buyerToken("pow-api");
  const call = async (method, path, body) => {
    const r = await fetch(`${BASE}/api/sales/${sale.id}${path}`, {
      method, body: body && JSON.stringify(body),
      headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    });
    const data = await r.json();
    return [r.status, data.error?.code ?? data.state];
  };
  assert.deepEqual(await call("POST", "/line"), [403, "challenge_required"]);
  const r = await fetch(`${BASE}/api/sales/${sale.id}/line/challenge`, { headers: { Authorization: `Bearer ${token}` } });
  const challenge = await r.json();
  assert.equal(r.status, 200, JSON.stringify(challenge));
  assert.match(challenge.challenge, /^[A-Za-z0-9_-]{44}$/);
  assert.equal(challenge.difficulty_bits, bits);
  let wrong = 0;
  while (workBits(challenge.challenge, String(wrong)) >= bits) wrong++;
  assert.deepEqual(await call("POST", "/line", { challenge: challenge.challenge, nonce: String(wrong) }), [403, "challenge_unsolved"]);
  const solved = { challenge: challenge.challenge, nonce: firstSolution(challenge.challenge, bits) };
  assert.deepEqual(await call("POST", "/line", solved), [200, "pre_queue"]);
  assert.deepEqual(await call("POST", "/line", solved), [409, "challenge_used"]);
  assert.deepEqual(await call("POST", "/line"), [200, "pre_queue"], "a member joins again without proof");
});

test("a visitor whose clock is two minutes off sees the true countdown", { timeout: 60_000 }, async () => {
  const sale = await createSale({ name: "Skew phone", stock: 5, startsInMs: 90_000 });
  const startsAt = Date.parse(sale.starts_at);
  const skewed = async (offsetMs) => {
    const page = await newPage();
    // The visitor's clock is wrong: every Date in the page is offset (before any page script runs).
    await page.addInitScript((offset) => {
      const RealDate = Date;
      class SkewedDate extends RealDate {
        constructor(...args) { if (args.length === 0) super(RealDate.now() + offset); else super(...args); }
        static now() { return RealDate.now() + offset; }
      }
      globalThis.Date = SkewedDate;
    }, offsetMs);
    await page.goto(`${BASE}/sales/${sale.id}`);
    return page;
  };
  const ahead = await skewed(120_000);
  const behind = await skewed(-120_000);
  for (const [page, offset] of [[ahead, 120_000], [behind, -120_000]]) {
    const pageOffset = await page.evaluate(() => Date.now()) - Date.now();
    assert.ok(Math.abs(pageOffset - offset) < 1_000, `the page's clock is off by ${pageOffset} ms`);
    const shown = countdownSecs(await waitText(page, "countdown", /^\d\d:\d\d$/));
    const truth = (startsAt - Date.now()) / 1000;
    // Uncorrected, the page ahead would show 00:00 and the one behind about 03:30.
    assert.ok(Math.abs(shown - truth) <= 2, `clock off by ${offset / 1000} s: shows ${shown} s, true ${truth.toFixed(1)} s`);
  }
  await shot(ahead, "sale-skewed-clock.png");
  await ahead.context().close();
  await behind.context().close();
});

test("refusals are said in plain words and Retry-After is honoured", { timeout: 60_000 }, async () => {
  const sale = await createSale({ name: "Busy phone", stock: 5, startsInMs: 3_600_000 });
  await admin("POST", `/api/admin/sales/${sale.id}/start`);
  const page = await newPage();
  await page.goto(`${BASE}/sales/${sale.id}`);
  await signIn(page, "carol");
  await page.locator("#buy").waitFor({ state: "visible", timeout: SHOW_MS_MAX });

  // The server is busy: 429 with Retry-After. The page waits that long, then retries the
  // same request (the same Idempotency-Key), which the real server accepts.
  const keys = [];
  let busy = true;
  await page.route("**/api/sales/*/buy/*", async (route) => {
    keys.push(route.request().headers()["idempotency-key"]);
    if (busy) {
      busy = false;
      await route.fulfill({
        status: 429, headers: { "Retry-After": "2", "Content-Type": "application/json" },
        body: JSON.stringify({ error: { code: "rate_limited", message: "too many requests; retry after the given delay" } }),
      });
    } else {
      await route.continue();
    }
  });
  await page.click("#buy");
  await waitText(page, "msg", /^Lots of people are buying right now\. Try again in 2 seconds\.$/);
  assert.equal(await page.isDisabled("#buy"), true, "no retry before Retry-After");
  const waitedFrom = Date.now();
  await page.waitForFunction(() => !document.getElementById("buy").disabled, null, { timeout: 5_000 });
  assert.ok(Date.now() - waitedFrom >= 1_000, "the button stays disabled for the Retry-After");
  await waitText(page, "msg", /^You can try again now\.$/);
  await shot(page, "sale-retry-after.png");
  await page.click("#buy");
  await waitText(page, "order", /Reserved for you!/);
  assert.equal(keys.length, 2);
  assert.equal(keys[0], keys[1], "the retry is the same request");

  // The buyer already holds the limit: a second page (another device) is told so.
  const second = await newPage();
  await second.goto(`${BASE}/sales/${sale.id}`);
  await signIn(second, "carol");
  await second.locator("#buy").waitFor({ state: "visible", timeout: SHOW_MS_MAX });
  await second.click("#buy");
  await waitText(second, "msg", /^You already have the most units one buyer may buy in this sale\.$/);
  assert.doesNotMatch(await second.locator("body").innerText(), /limit_reached|error/i, "no raw error");
  await page.context().close();
  await second.context().close();
});

test("an order left unpaid expires, and the page says so", { timeout: 60_000 }, async () => {
  const sale = await createSale({ name: "Quick phone", stock: 3, startsInMs: 3_600_000, payWindowSecs: 5 });
  await admin("POST", `/api/admin/sales/${sale.id}/start`);
  const page = await newPage();
  await page.goto(`${BASE}/sales/${sale.id}`);
  await signIn(page, "dave");
  await page.locator("#buy").waitFor({ state: "visible", timeout: SHOW_MS_MAX });
  await page.click("#buy");
  await waitText(page, "order", /Pay within 00:0[0-5] to keep it\./);
  await waitText(page, "order", /^The time to pay ran out, so the unit went back on sale\.$/);
  assert.equal(await page.isVisible("#pay"), false);
  // The unit is back, and so is the button: the buyer may try again.
  await page.locator("#buy").waitFor({ state: "visible", timeout: SHOW_MS_MAX });
  await page.context().close();
});

test("the admin signs in, creates and starts a sale, and sees the counters move", { timeout: 90_000 }, async () => {
  const page = await newPage({ viewport: { width: 1280, height: 900 } });
  const urls = [];
  page.on("request", (request) => urls.push(request.url()));
  await page.goto(`${BASE}/admin`);

  await page.fill("#token", "not-the-admin-token");
  await page.click("#login");
  await page.waitForFunction(() => /not accepted/.test(document.querySelector("#login-panel p").textContent));
  await page.fill("#token", ADMIN_TOKEN);
  await page.click("#login");
  await page.locator("#app").waitFor({ state: "visible" });

  // Create a sale through the form (it starts in five minutes by default), then start it now.
  await page.click("#new-sale");
  await page.fill("#f-name", "Browser sneakers");
  await page.fill("#f-price", "49.90");
  await page.fill("#f-stock", "20");
  await page.fill("#f-window", "300");
  await page.click("#save-sale");
  await waitText(page, "note", /^Created Browser sneakers\.$/);
  await waitText(page, "live-name", /^Browser sneakers · 49\.90 · 20 units$/);
  await waitText(page, "live-phase", /^upcoming$/);
  await waitText(page, "c-available", /^20$/);
  const sale = (await admin("GET", "/api/admin/sales")).find((s) => s.name === "Browser sneakers");
  assert.equal(sale.price_cents, 4990);
  await page.click("#start");
  await waitText(page, "live-phase", /^live$/);

  // A small crowd: twelve buyers, each clicking twice; five of them pay.
  const status = await (await fetch(`${BASE}/api/sales/${sale.id}/status`)).json();
  assert.ok(status.buy_path, "the started sale is live");
  const buys = await Promise.all(Array.from({ length: 12 }, async (_, i) => {
    const token = await buyerToken(`crowd-${i}`);
    const click = () => fetch(BASE + status.buy_path, { method: "POST", headers: { Authorization: `Bearer ${token}`, "Idempotency-Key": `k-${i}` } });
    const [answer] = await Promise.all([click(), click()]);
    assert.equal(answer.status, 202);
    return { token, order: (await answer.json()).order_id };
  }));
  await waitText(page, "c-available", /^8$/);
  await waitText(page, "c-pending", /^12$/);
  for (const { token, order } of buys.slice(0, 5)) {
    const r = await fetch(`${BASE}/api/orders/${order}/pay`, {
      method: "POST", headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ payment_id: `pay-${order}` }),
    });
    assert.equal(r.status, 200);
  }
  await waitText(page, "c-paid", /^5$/);
  await waitText(page, "c-pending", /^7$/);
  await waitText(page, "c-queued", /^0$/);
  await page.waitForFunction(() => document.querySelectorAll("#orders tr").length === 10);
  await waitText(page, "orders", /paid/);
  // The charts drew the burst: the rates legend names the layers that did something.
  await waitText(page, "rates-legend", /reserved \(202\)/);
  assert.ok(await page.locator("#units polyline").count() >= 5, "a line per unit count");
  assert.ok(await page.locator("#rates polyline").count() >= 1, "a line per active layer");

  // Writers change live.
  await page.fill("#writers", "3");
  await page.click("#writers-apply");
  await waitText(page, "writers-now", /^3 running$/);
  assert.equal((await admin("GET", "/api/admin/writers")).count, 3);

  await page.waitForTimeout(1_500); // one more event so the chart shows the steady state too
  await shot(page, "admin-dashboard.png");
  const leaked = urls.filter((url) => url.includes(ADMIN_TOKEN));
  assert.deepEqual(leaked, [], "the admin token never appears in a URL");
  await page.context().close();
});
