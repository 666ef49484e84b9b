// The demo page in real headless Chromium (Debian's), driven by playwright-core.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchChromium } from "./chromium.mjs";
import { startServer, startGate } from "./server.mjs";
import { rawClient } from "./clients.mjs";

const PANELS = [
  ["socketio", "odd"],
  ["socketio", "even"],
  ["raw", "odd"],
  ["raw", "even"],
];

let server;
// The page reaches the server through a gate, so a test can keep it away from a restarted
// server for a while.
let gate;
let browser;
let page;
const problems = [];

before(async () => {
  server = await startServer({ intervalMs: 100 });
  gate = await startGate();
  await gate.setTarget(server);
  browser = await launchChromium();
  page = await browser.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("request", (request) => {
    const { protocol, hostname } = new URL(request.url());
    const loopback = hostname === "127.0.0.1" || hostname === "localhost" || hostname === "[::1]";
    if (protocol !== "data:" && !loopback)
      problems.push(`request to a non-loopback host: ${request.url()}`);
  });
});

after(async () => {
  await browser?.close();
  gate?.close();
  await server?.stop();
});

const panel = (protocol, parity) => `.panel[data-protocol="${protocol}"][data-parity="${parity}"]`;

// Waits until every panel has received at least `count` integers more than `since[i]`.
async function waitForIntegers(count, since = [0, 0, 0, 0], timeout = 20000) {
  await page.waitForFunction(
    ({ selectors, count, since }) =>
      selectors.every(
        (selector, i) =>
          Number(document.querySelector(selector).dataset.received ?? 0) >= since[i] + count,
      ),
    { selectors: PANELS.map(([p, q]) => panel(p, q)), count, since },
    { timeout },
  );
}

async function receivedCounts() {
  return Promise.all(
    PANELS.map(([p, q]) => page.$eval(panel(p, q), (el) => Number(el.dataset.received ?? 0))),
  );
}

// Promise: http-demo
test("the page shows both streams over both protocols, live", async () => {
  await page.goto(`${gate.url}/`);
  await waitForIntegers(4);
  for (const [protocol, parity] of PANELS) {
    const selector = panel(protocol, parity);
    assert.match(await page.$eval(`${selector} .state`, (el) => el.textContent), /^connected/);
    const history = await page.$$eval(`${selector} .history li`, (items) =>
      items.map((li) => Number(li.textContent)),
    );
    assert.ok(history.length >= 4, `${protocol}/${parity}: ${history}`);
    for (let i = 1; i < history.length; i++)
      assert.equal(history[i - 1], history[i] + 2, `${protocol}/${parity}: ${history}`);
    assert.equal(history[0] % 2, parity === "odd" ? 1 : 0);
    assert.equal(await page.$eval(`${selector} .gaps`, (el) => el.textContent), "0");
  }
  await page.screenshot({ path: join(tmpdir(), "integers-demo.png") });
  assert.deepEqual(problems, []);
});

// Promise: metric-connections, metric-status-view
test("the status view shows the server's state live", async () => {
  await page.waitForFunction(
    () => {
      const view = document.getElementById("server-status");
      return Number(view.dataset.samples ?? 0) >= 3 && Number(view.dataset.rate) > 0;
    },
    null,
    { timeout: 20000 },
  );
  const cell = (type, what) =>
    page.$eval(`#server-status tr[data-type="${type}"] ${what}`, (el) => el.textContent);
  for (const type of ["odd", "even"]) {
    // This page holds one raw and one socket.io (upgraded to WebSocket) client of each stream.
    assert.equal(await cell(type, 'td[data-protocol="raw"]'), "1");
    assert.equal(await cell(type, 'td[data-protocol="socketio_websocket"]'), "1");
    assert.equal(await cell(type, 'td[data-protocol="socketio_polling"]'), "0");
    assert.equal(await cell(type, ".generator"), "running");
    const shown = Number(await page.$eval(panel("raw", type), (el) => el.dataset.last));
    const last = Number(await cell(type, ".last"));
    assert.ok(Math.abs(last - shown) <= 40, `${type}: status says ${last}, panel shows ${shown}`);
  }
  // Four clients at 10 integers a second each: about 40 messages a second.
  const rate = Number(await page.$eval("#server-status", (el) => el.dataset.rate));
  assert.ok(rate > 10 && rate < 100, `rate ${rate}`);
  const points = await page.$eval(
    "#server-status polyline",
    (el) => el.getAttribute("points").split(" ").length,
  );
  assert.ok(points >= 3, `${points} points drawn`);
  await page.screenshot({ path: join(tmpdir(), "integers-demo-status.png"), fullPage: true });
  assert.deepEqual(problems, []);
});

test("the buttons disconnect and reconnect a panel", async () => {
  for (const [protocol, parity] of [
    ["raw", "odd"],
    ["socketio", "even"],
  ]) {
    const selector = panel(protocol, parity);
    await page.click(`${selector} .toggle`);
    await page.waitForFunction(
      (s) => document.querySelector(`${s} .state`).dataset.state === "disconnected",
      selector,
    );
    const stopped = await page.$eval(selector, (el) => Number(el.dataset.received));
    await page.waitForTimeout(400);
    assert.equal(
      await page.$eval(selector, (el) => Number(el.dataset.received)),
      stopped,
      `${protocol}/${parity} kept receiving`,
    );
    await page.click(`${selector} .toggle`);
    await page.waitForFunction(
      ({ s, n }) => Number(document.querySelector(s).dataset.received) >= n + 2,
      { s: selector, n: stopped },
    );
  }
  assert.deepEqual(problems, []);
});

// Promise: http-demo, sio-shutdown, restart-sio-reconnect
test("every panel reconnects by itself after a restart and catches up with no gap", async () => {
  const { stateFile } = server;
  await gate.setTarget(null);
  assert.equal(await server.stop(), 0);
  await page.waitForFunction(
    (selectors) =>
      selectors.every((s) => document.querySelector(`${s} .state`).dataset.state !== "connected"),
    PANELS.map(([p, q]) => panel(p, q)),
    { timeout: 10000 },
  );
  const before = await receivedCounts();
  const lastShown = await Promise.all(
    PANELS.map(([p, q]) => page.$eval(panel(p, q), (el) => Number(el.dataset.last))),
  );
  server = await startServer({ intervalMs: 100, stateFile });
  // While the page is kept away, a client of each stream moves it on: a panel that came back
  // without resuming would show a gap.
  const keepers = ["odd", "even"].map((parity) => rawClient(server.wsUrl, parity));
  try {
    const deadline = Date.now() + 10000;
    while (!keepers.every((k) => k.seen.length >= 5)) {
      assert.ok(
        Date.now() < deadline,
        `the keepers got no integers: ${keepers.map((k) => k.seen)}`,
      );
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    PANELS.forEach(([, parity], i) => {
      const keeper = keepers.find((k) => k.parity === parity);
      assert.ok(
        keeper.seen[0] > lastShown[i],
        `${parity} moved on from ${keeper.seen[0]}, before the page's ${lastShown[i]}`,
      );
    });
    await gate.setTarget(server);
    await waitForIntegers(3, before, 30000);
  } finally {
    for (const keeper of keepers) keeper.close();
  }
  for (const [protocol, parity] of PANELS) {
    const selector = panel(protocol, parity);
    assert.match(await page.$eval(`${selector} .state`, (el) => el.textContent), /^connected/);
    assert.equal(
      await page.$eval(`${selector} .gaps`, (el) => el.textContent),
      "0",
      `${protocol}/${parity} missed integers across the restart`,
    );
  }
  // A dropped connection is not a page error: reconnecting is expected to log nothing red.
  assert.deepEqual(
    problems.filter((p) => !p.includes("WebSocket") && !p.includes("ERR_CONNECTION_REFUSED")),
    [],
  );
});
