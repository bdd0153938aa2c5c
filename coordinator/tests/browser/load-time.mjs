// Times the dashboard's first load in headless Chromium: from navigation to
// every check row rendered with its region cells. Used by
// benches/dashboard/run.sh (not a test: timings belong in benchmarks).
import { chromium } from "playwright-core";

const url = process.env.VANTAGE_URL;
const token = process.env.VANTAGE_TOKEN;
const rows = Number(process.env.ROWS);
const cells = Number(process.env.CELLS);
const runs = Number(process.env.RUNS || 5);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const times = [];
for (let i = 0; i < runs; i++) {
  // A new context each time: no cache, a fresh sign-in.
  const context = await browser.newContext({ httpCredentials: { username: "bench", password: token } });
  const page = await context.newPage();
  const t0 = Date.now();
  await page.goto(url);
  await page.waitForFunction(([r, c]) =>
    document.body.dataset.loaded === "true" &&
    document.querySelectorAll("#checks tbody tr[data-check]").length === r &&
    document.querySelectorAll("#checks td.region-cell[data-state]").length === c,
  [rows, cells], { timeout: 30000, polling: 10 });
  const ms = Date.now() - t0;
  times.push(ms);
  console.log(`run ${i + 1}: ${ms} ms`);
  await context.close();
}
await browser.close();
times.sort((a, b) => a - b);
console.log(`median ${times[Math.floor(times.length / 2)]} ms, max ${times[times.length - 1]} ms over ${runs} loads`);
