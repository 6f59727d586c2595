// The sale page and the admin dashboard in headless Chromium (Debian's package), driven by
// playwright-core. Started by crates/flashsale/tests/it/browser.rs, which runs a server and
// passes its address and admin token:
//   FLASHSALE_URL, FLASHSALE_ADMIN_TOKEN, SCREENSHOT_DIR, CHROMIUM (default /usr/bin/chromium)
// Run by hand against `flashsale demo` the same way:
//   FLASHSALE_URL=http://127.0.0.1:8080 FLASHSALE_ADMIN_TOKEN=... node --test-reporter=spec pages.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
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
