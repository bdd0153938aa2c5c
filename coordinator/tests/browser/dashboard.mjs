// Drives Debian's headless Chromium through the dashboard of a coordinator
// started by coordinator/tests/it/dashboard.rs. Steps that need the Rust
// side (a target going down, a load run) are announced on stdout as
// "WAIT <what>" and continue when a line arrives on stdin. Exits 0 when
// every assertion held, 1 with "FAIL: ..." otherwise.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const url = process.env.VANTAGE_URL;
const token = process.env.VANTAGE_TOKEN;
const shots = process.env.SCREENSHOTS;
const downWithinMs = Number(process.env.DOWN_WITHIN_MS || 15000);
mkdirSync(shots, { recursive: true });

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function waitFor(what) {
  console.log(`WAIT ${what}`);
  const next = await lines.next();
  if (next.done) throw new Error(`stdin closed while waiting for ${what}`);
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  // Without credentials: 401, and the browser is offered Basic.
  {
    // (A page would show the browser's sign-in prompt; headless, the
    // context's request API shows the answer itself.)
    const anon = await browser.newContext();
    const response = await anon.request.get(url);
    check(response.status() === 401, `anonymous: status ${response.status()}`);
    const challenge = response.headersArray()
      .filter((h) => h.name.toLowerCase() === "www-authenticate").map((h) => h.value).join(", ");
    check(/basic/i.test(challenge), `anonymous: challenge ${challenge}`);
    await anon.close();
  }

  const context = await browser.newContext({
    httpCredentials: { username: "dashboard", password: token },
    viewport: { width: 1400, height: 1000 },
  });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  const started = Date.now();
  const response = await page.goto(url);
  check(response.status() === 200, `signed in: status ${response.status()}`);
  const csp = (await response.allHeaders())["content-security-policy"] || "";
  check(csp.includes("script-src 'self'"), `CSP: ${csp}`);
  await page.waitForSelector("body[data-loaded=true]", { timeout: 15000 });
  console.log(`LOADED ${Date.now() - started} ms`);

  // Two regions, each with data for both checks.
  const regions = await page.$$eval("#checks-head th", (ths) => ths.map((t) => t.textContent));
  check(regions.includes("eu") && regions.includes("us"), `region columns: ${regions}`);
  await page.waitForFunction(() => {
    const cells = [...document.querySelectorAll("#checks td.region-cell")];
    return cells.length >= 4 && cells.every((c) => c.dataset.state === "up");
  }, null, { timeout: 30000 }).catch(() => { throw new Error("not every check was up in both regions within 30 s"); });
  const tls = await page.textContent("#tls-card");
  check(/\d+ days/.test(tls), `TLS card: ${tls}`);

  // The detail view: latency lines for both regions and uptime bars.
  await page.click("tr[data-check=site]");
  await page.waitForFunction(() => {
    const paths = [...document.querySelectorAll("#latency-chart path[data-series]")].map((p) => p.dataset.series);
    return paths.some((s) => s.startsWith("eu ")) && paths.some((s) => s.startsWith("us "));
  }, null, { timeout: 30000 });
  const bars = await page.$$eval("#uptime-24h rect", (r) => r.length);
  check(bars >= 24 * 2, `24 h uptime bars: ${bars}`);
  const bars30 = await page.$$eval("#uptime-30d rect", (r) => r.length);
  check(bars30 >= 30 * 2, `30 d uptime bars: ${bars30}`);
  const filled = await page.$$eval("#uptime-24h rect", (r) => r.filter((x) => x.dataset.availability !== "").length);
  check(filled >= 2, `24 h bars with data: ${filled}`);
  await page.screenshot({ path: join(shots, "dashboard-up.png"), fullPage: true });

  // A target going down from eu shows without a reload.
  await waitFor("down");
  const downAt = Date.now();
  await page.waitForSelector("tr[data-check=api] td[data-region=eu][data-state=down]", { timeout: downWithinMs });
  console.log(`DOWN_SHOWN ${Date.now() - downAt} ms`);
  const us = await page.getAttribute("tr[data-check=api] td[data-region=us]", "data-state");
  check(us === "up", `api from us: ${us}`);
  await page.screenshot({ path: join(shots, "dashboard-down.png"), fullPage: true });

  // A load run updates live.
  await waitFor("load");
  await page.waitForSelector("[data-live-run]", { timeout: 15000 });
  const reqs = async () => Number(await page.textContent("[data-live-run] [data-figure=reqs]"));
  await page.waitForFunction(() => Number(document.querySelector("[data-live-run] [data-figure=reqs]")?.textContent) > 0, null, { timeout: 15000 });
  const first = await reqs();
  await page.waitForTimeout(2500);
  const second = await reqs();
  check(second > first, `live requests did not grow: ${first} then ${second}`);
  const liveRegions = await page.$$eval("[data-live-region]", (r) => r.map((x) => x.dataset.liveRegion));
  check(liveRegions.includes("eu") && liveRegions.includes("us"), `live regions: ${liveRegions}`);
  const regionP95 = await page.$$eval("[data-live-region] [data-figure=p95]", (c) => c.map((x) => x.textContent));
  check(regionP95.length === 2 && regionP95.every((t) => / ms$/.test(t)), `p95 per region: ${regionP95}`);
  await page.screenshot({ path: join(shots, "dashboard-load.png"), fullPage: true });

  // The token is in no URL and in no storage.
  check(!page.url().includes(token), "token in the page URL");
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
  check(!stored.includes(token), "token in web storage");
  check(errors.length === 0, `page errors: ${errors.join(" | ")}`);
  console.log("DONE");
} catch (e) {
  console.log(`FAIL: ${e.message.split("\n")[0]}`);
  for (const p of browser.contexts().flatMap((c) => c.pages())) {
    await p.screenshot({ path: join(shots, "dashboard-failure.png"), fullPage: true }).catch(() => {});
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
process.exit(process.exitCode || 0);
