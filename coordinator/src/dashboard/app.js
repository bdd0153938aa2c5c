// Vantage dashboard: reads the coordinator's API (same origin; the browser
// sends the credentials it was given at the login prompt) and draws tables
// and SVG charts. No external code, no token in any URL or in storage.
"use strict";

const REFRESH_MS = 5000;
const LIVE_MS = 1000;
const HISTORY_MS = 60000;
const REGION_COLORS = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#65a30d", "#dc2626"];
const SVG = "http://www.w3.org/2000/svg";

const state = {
  checks: [],
  regions: [],
  selected: null,
  window: "1h",
  history24: new Map(), // check -> history JSON
  historyAt: 0,
  live: new Map(), // run id -> {last, rates: []}
};

// ---------- small helpers ----------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

function fill(tbody, rows, cols, empty) {
  tbody.replaceChildren();
  if (rows.length === 0) {
    tbody.append(el("tr", {}, el("td", { colSpan: cols, class: "empty" }, empty)));
  }
  for (const r of rows) tbody.append(r);
}

function ms(v) {
  if (v === null || v === undefined) return "–";
  return v >= 100 ? `${Math.round(v)} ms` : `${v.toFixed(1)} ms`;
}

function ago(unixMs) {
  if (!unixMs) return "–";
  const s = Math.max(0, Math.round((Date.now() - unixMs) / 1000));
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}

function time(unixMs) {
  return new Date(unixMs).toLocaleString();
}

function regionColor(region) {
  const i = state.regions.indexOf(region);
  return REGION_COLORS[(i < 0 ? 0 : i) % REGION_COLORS.length];
}

function pill(text) {
  const cls = String(text).replace(/\s+/g, "-");
  return el("span", { class: `pill ${cls}` }, text);
}

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (r.status === 401 || r.status === 403) {
    throw new Error(`The API refused the request (${r.status}): reload the page and sign in with a valid API token.`);
  }
  if (!r.ok) {
    let msg = `${r.status}`;
    try { msg += `: ${(await r.json()).error}`; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${msg}`);
  }
  return r.json();
}

function banner(message) {
  const b = document.getElementById("banner");
  b.hidden = !message;
  b.textContent = message || "";
}

// ---------- charts ----------

// Lines over time: series = [{label, color, dash, points: [[t, v|null]]}].
function lineChart(container, series, opts = {}) {
  container.replaceChildren();
  const W = 900, H = 260, L = 56, R = 12, T = 10, B = 26;
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
  if (all.length === 0) {
    container.append(el("p", { class: "muted" }, "No data in this window yet."));
    return;
  }
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const vmax = Math.max(...all.map((p) => p[1])) * 1.1 || 1;
  const x = (t) => L + (t1 === t0 ? 0.5 : (t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / vmax) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.label || "chart" });
  for (let i = 0; i <= 4; i++) {
    const v = (vmax * i) / 4, yy = y(v);
    root.append(svg("line", { x1: L, x2: W - R, y1: yy, y2: yy, class: "grid" }));
    const t = svg("text", { x: L - 6, y: yy + 4, "text-anchor": "end" });
    t.textContent = v >= 100 ? Math.round(v) : v.toFixed(1);
    root.append(t);
  }
  for (let i = 0; i <= 4; i++) {
    const tt = t0 + ((t1 - t0) * i) / 4;
    const t = svg("text", { x: x(tt), y: H - 8, "text-anchor": "middle" });
    t.textContent = new Date(tt).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    root.append(t);
  }
  root.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  for (const s of series) {
    let d = "";
    const pts = s.points;
    const has = (i) => i >= 0 && i < pts.length && pts[i][1] !== null && pts[i][1] !== undefined;
    for (let i = 0; i < pts.length; i++) {
      if (!has(i)) continue;
      const [t, v] = pts[i];
      d += `${has(i - 1) ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      // A point without neighbours would be an invisible line: a dot.
      if (!has(i - 1) && !has(i + 1)) {
        root.append(svg("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 3, fill: s.color }));
      }
    }
    if (!d) continue;
    const path = svg("path", { d, fill: "none", stroke: s.color, "stroke-width": 2, "data-series": s.label });
    if (s.dash) path.setAttribute("stroke-dasharray", s.dash);
    root.append(path);
  }
  container.append(root);
  const legend = el("div", { class: "legend" });
  for (const s of series) {
    const item = el("span", {}, s.label);
    item.style.setProperty("--c", s.color);
    legend.append(item);
  }
  container.append(legend);
}

// Availability bars: buckets = [{start_unix_ms, attempts, availability}].
function uptimeBars(buckets, label) {
  const W = 600, H = 22, gap = 2;
  const n = Math.max(buckets.length, 1);
  const w = (W - gap * (n - 1)) / n;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": label });
  buckets.forEach((b, i) => {
    const a = b.availability;
    const color = a === null || a === undefined ? "var(--nodata)"
      : a >= 99.95 ? "var(--up)" : a >= 99 ? "#65c08a" : a >= 95 ? "var(--degraded)" : "var(--down)";
    const rect = svg("rect", { x: i * (w + gap), y: 0, width: Math.max(w, 1), height: H, rx: 2, fill: color, "data-availability": a === null || a === undefined ? "" : a });
    const title = svg("title");
    title.textContent = `${time(b.start_unix_ms)}: ${a === null || a === undefined ? "no data" : a.toFixed(3) + "%"} (${b.attempts} attempts)`;
    rect.append(title);
    root.append(rect);
  });
  return el("div", { class: "bars" }, root);
}

function overall(buckets) {
  let att = 0, ok = 0;
  for (const b of buckets) { att += b.attempts || 0; ok += b.successes || 0; }
  return att ? `${((ok / att) * 100).toFixed(3)}%` : "–";
}

// ---------- sections ----------

function renderSummary(checks) {
  const counts = { up: 0, degraded: 0, down: 0, late: 0, "no data": 0 };
  for (const c of checks) {
    const states = (c.regions || []).map((r) => r.state);
    const worst = ["down", "degraded", "late", "up"].find((s) => states.includes(s)) || "no data";
    counts[worst] += 1;
  }
  const box = document.getElementById("summary");
  box.replaceChildren();
  for (const [k, v] of Object.entries(counts)) {
    if (v > 0 || k === "up" || k === "down") box.append(el("span", { class: `pill ${k.replace(" ", "-")}`, "data-count": k }, `${v} ${k}`));
  }
}

function renderCards(checks, agents, alerts) {
  const cards = document.getElementById("cards");
  cards.replaceChildren();
  let first = null;
  for (const c of checks) {
    for (const r of c.regions || []) {
      if (r.tls && (first === null || r.tls.not_after_unix < first.tls.not_after_unix)) first = { check: c.name, region: r.region, tls: r.tls };
    }
  }
  const card = (label, value, sub, id) => el("div", { class: "card", id }, el("div", { class: "label" }, label), el("div", { class: "value" }, value), el("div", { class: "sub" }, sub));
  cards.append(card("Certificate expiring first",
    first ? `${first.tls.days_left} days` : "–",
    first ? `${first.check} (${first.region}): ${first.tls.subject || "?"}, ${first.tls.chain_status}` : "no TLS facts yet", "tls-card"));
  const firing = (alerts.alerts || []).filter((a) => a.status === "firing").length;
  cards.append(card("Firing alerts", String(firing), `${(alerts.alerts || []).length - firing} pending, ${(alerts.silences || []).length} silences`, "alerts-card"));
  cards.append(card("Agents", String(agents.length), [...new Set(agents.map((a) => a.region))].join(", ") || "none connected", "agents-card"));
  cards.append(card("Checks", String(checks.length), `${state.regions.length} regions`, "checks-card"));
}

function renderChecks(checks) {
  const head = document.getElementById("checks-head");
  head.replaceChildren(el("th", {}, "Check"), el("th", {}, "Kind"));
  for (const r of state.regions) head.append(el("th", {}, r));
  head.append(el("th", {}, "TLS days"), el("th", {}, "Uptime 24 h"));
  const rows = checks.map((c) => {
    const tr = el("tr", { class: "clickable", "data-check": c.name });
    if (state.selected === c.name) tr.classList.add("selected");
    tr.append(el("td", {}, el("b", {}, c.name), el("div", { class: "muted" }, c.target)), el("td", {}, c.kind));
    for (const region of state.regions) {
      const r = (c.regions || []).find((x) => x.region === region);
      const configured = (c.regions_configured || []).includes(region);
      const td = el("td", { class: "region-cell", "data-region": region });
      if (r) {
        td.append(pill(r.state), el("span", { class: "lat" }, r.latency_ms ? `p95 ${ms(r.latency_ms.p95)}` : ""));
        td.setAttribute("data-state", r.state);
      } else if (configured) {
        td.append(pill("no data"));
        td.setAttribute("data-state", "no data");
      }
      tr.append(td);
    }
    const days = (c.regions || []).map((r) => r.tls && r.tls.days_left).filter((d) => d !== undefined && d !== null);
    tr.append(el("td", {}, days.length ? String(Math.min(...days)) : "–"));
    const h = state.history24.get(c.name);
    const td = el("td", { class: "uptime-cell" });
    if (h) {
      const merged = mergeBuckets(h.regions || []);
      td.append(uptimeBars(merged, `${c.name} uptime 24 h`));
    }
    tr.append(td);
    tr.addEventListener("click", () => select(c.name));
    return tr;
  });
  fill(document.querySelector("#checks tbody"), rows, state.regions.length + 4, "No checks configured.");
}

// One bucket list over every region: attempts and successes added.
function mergeBuckets(regions) {
  const out = [];
  for (const r of regions) {
    r.buckets.forEach((b, i) => {
      const o = out[i] || (out[i] = { start_unix_ms: b.start_unix_ms, attempts: 0, successes: 0 });
      o.attempts += b.attempts || 0;
      o.successes += b.successes || 0;
    });
  }
  for (const o of out) o.availability = o.attempts ? (o.successes / o.attempts) * 100 : null;
  return out;
}

function renderAgents(agents) {
  const rows = agents.map((a) => el("tr", { "data-agent": a.name },
    el("td", {}, a.name), el("td", {}, a.region), el("td", a.version_compatible === false ? { class: "bad", title: "not compatible with this coordinator's version" } : {},
      a.version_compatible === false ? `${a.version} (incompatible)` : a.version),
    el("td", {}, ago(a.last_seen_unix_ms)), el("td", {}, String((a.checks || []).length)),
    el("td", {}, String(a.spool_pending_batches ?? 0))));
  fill(document.querySelector("#agents tbody"), rows, 6, "No agents connected.");
}

function renderAlerts(body) {
  const rows = (body.alerts || []).map((a) => el("tr", { "data-alert": `${a.subject}/${a.rule}` },
    el("td", {}, pill(a.status)), el("td", {}, a.severity), el("td", {}, a.subject), el("td", {}, a.rule),
    el("td", {}, ago(a.since_unix_ms)), el("td", {}, (a.breaching_regions || []).join(", ")), el("td", {}, a.summary)));
  fill(document.querySelector("#alerts tbody"), rows, 7, "No alerts: everything is within its thresholds.");
  const silences = (body.silences || []).map((s) => el("tr", {},
    el("td", {}, s.subject || "any"), el("td", {}, s.rule || "any"), el("td", {}, time(s.ends_unix_ms)), el("td", {}, s.comment)));
  fill(document.querySelector("#silences tbody"), silences, 4, "No active silences.");
  const outbox = (body.outbox || []).slice(-20).reverse().map((o) => el("tr", {},
    el("td", {}, o.channel), el("td", {}, o.title), el("td", {}, o.state), el("td", {}, String(o.attempts)), el("td", {}, o.last_error || "")));
  fill(document.querySelector("#outbox tbody"), outbox, 5, "Nothing waiting to be delivered.");
}

function renderLoadtests(list) {
  const rows = list.map((r) => el("tr", { "data-run": r.id },
    el("td", {}, r.id), el("td", {}, r.state), el("td", {}, r.verdict || "–"),
    el("td", {}, (r.regions || []).join(", ")), el("td", {}, time(r.created_unix_ms))));
  fill(document.querySelector("#loadtests tbody"), rows, 5, "No load runs yet.");
  const running = list.filter((r) => ["starting", "running", "aborting"].includes(r.state)).map((r) => r.id);
  for (const id of [...state.live.keys()]) if (!running.includes(id)) state.live.delete(id);
  for (const id of running) if (!state.live.has(id)) state.live.set(id, { last: null, rates: [] });
  if (running.length === 0) document.getElementById("live-load").replaceChildren();
}

async function refreshLive() {
  const box = document.getElementById("live-load");
  const panels = [];
  for (const [id, live] of state.live) {
    let v;
    try { v = await api(`/api/v1/loadtests/${encodeURIComponent(id)}`); } catch (e) { continue; }
    const m = v.metrics || {};
    const now = Date.now();
    const perRegion = new Map();
    for (const r of v.by_region || []) {
      perRegion.set(r.region, { reqs: r.http_reqs || 0, failed: r.http_req_failed || 0, p95: r.p95 });
    }
    const rates = {};
    if (live.last) {
      const dt = (now - live.last.at) / 1000;
      for (const [region, p] of perRegion) {
        const before = live.last.regions.get(region);
        rates[region] = before !== undefined && dt > 0 ? Math.max(0, (p.reqs - before) / dt) : 0;
      }
    }
    live.last = { at: now, regions: new Map([...perRegion].map(([k, p]) => [k, p.reqs])) };
    live.rates.push([now, rates]);
    if (live.rates.length > 300) live.rates.shift();
    const p95 = m.http_req_duration ? m.http_req_duration.p95 : null;
    const panel = el("div", { class: "live", "data-live-run": id },
      el("b", {}, `Load run ${id}: ${v.state}`),
      el("div", { class: "figures" },
        el("div", {}, "Elapsed", el("b", {}, `${(v.elapsed_s || 0).toFixed(0)} s`)),
        el("div", {}, "Requests", el("b", { "data-figure": "reqs" }, String(m.http_reqs || 0))),
        el("div", {}, "Rate", el("b", { "data-figure": "rate" }, `${(m.http_reqs_rate || 0).toFixed(1)}/s`)),
        el("div", {}, "p95", el("b", { "data-figure": "p95" }, ms(p95))),
        el("div", {}, "Errors", el("b", { "data-figure": "errors" }, String(m.http_req_failed || 0)))));
    const table = el("table", {}, el("thead", {}, el("tr", {},
      el("th", {}, "Region"), el("th", {}, "Requests"), el("th", {}, "Rate now"), el("th", {}, "p95"), el("th", {}, "Errors"))));
    const tb = el("tbody");
    for (const [region, p] of perRegion) {
      tb.append(el("tr", { "data-live-region": region }, el("td", {}, region), el("td", {}, String(p.reqs)),
        el("td", {}, `${(rates[region] || 0).toFixed(1)}/s`), el("td", { "data-figure": "p95" }, ms(p.p95)),
        el("td", { "data-figure": "errors" }, String(p.failed))));
    }
    table.append(tb);
    panel.append(table);
    const chart = el("div", { class: "chart" });
    const series = [...perRegion.keys()].map((region) => ({
      label: `${region} req/s`, color: regionColor(region),
      points: live.rates.map(([t, r]) => [t, r[region] ?? null]),
    }));
    lineChart(chart, series, { label: `request rate of ${id}` });
    panel.append(chart);
    panels.push(panel);
  }
  if (panels.length) box.replaceChildren(...panels);
}

async function select(name) {
  state.selected = name;
  document.querySelectorAll("#checks tbody tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.check === name));
  const section = document.getElementById("detail");
  section.hidden = false;
  document.getElementById("detail-title").textContent = name;
  await renderDetail();
}

async function renderDetail() {
  const name = state.selected;
  if (!name) return;
  const enc = encodeURIComponent(name);
  try {
    const [series, h24, h30] = await Promise.all([
      api(`/api/v1/checks/${enc}/series?window=${state.window}`),
      api(`/api/v1/checks/${enc}/history?range=24h`),
      api(`/api/v1/checks/${enc}/history?range=30d`),
    ]);
    const lines = [];
    for (const r of series.regions || []) {
      const color = regionColor(r.region);
      for (const [q, dash] of [["p50", "2 3"], ["p95", ""], ["p99", "7 3"]]) {
        lines.push({ label: `${r.region} ${q}`, color, dash, points: r.points.map((p) => [p.t_unix_ms, p[q]]) });
      }
    }
    lineChart(document.getElementById("latency-chart"), lines, { label: `latency of ${name}` });
    for (const [id, h] of [["uptime-24h", h24], ["uptime-30d", h30]]) {
      const box = document.getElementById(id);
      box.replaceChildren();
      for (const r of h.regions || []) {
        box.append(el("div", { class: "bars-row", "data-region": r.region },
          el("span", {}, r.region), uptimeBars(r.buckets, `${name} ${r.region} ${id}`), el("span", { class: "muted" }, overall(r.buckets))));
      }
    }
  } catch (e) {
    banner(e.message);
  }
}

async function refreshHistory() {
  const names = state.checks.map((c) => c.name);
  const queue = [...names];
  const worker = async () => {
    while (queue.length) {
      const n = queue.shift();
      try { state.history24.set(n, await api(`/api/v1/checks/${encodeURIComponent(n)}/history?range=24h`)); } catch (_) { /* shown as empty */ }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  state.historyAt = Date.now();
  renderChecks(state.checks);
}

async function refresh() {
  try {
    const [checks, agents, alerts, loads] = await Promise.all([
      api("/api/v1/checks"), api("/api/v1/agents"), api("/api/v1/alerts"), api("/api/v1/loadtests"),
    ]);
    state.checks = checks.checks || [];
    const regions = new Set();
    for (const c of state.checks) {
      for (const r of c.regions_configured || []) regions.add(r);
      for (const r of c.regions || []) regions.add(r.region);
    }
    state.regions = [...regions].sort();
    renderSummary(state.checks);
    renderCards(state.checks, agents.agents || [], alerts);
    renderChecks(state.checks);
    renderAgents(agents.agents || []);
    renderAlerts(alerts);
    renderLoadtests(loads.loadtests || []);
    banner("");
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
    if (Date.now() - state.historyAt > HISTORY_MS) refreshHistory();
    if (state.selected) renderDetail();
  } catch (e) {
    banner(e.message);
  }
}

document.querySelectorAll("#detail .toolbar button").forEach((b) => {
  b.addEventListener("click", () => {
    state.window = b.dataset.window;
    document.querySelectorAll("#detail .toolbar button").forEach((x) => x.classList.toggle("active", x === b));
    renderDetail();
  });
});

refresh();
setInterval(refresh, REFRESH_MS);
setInterval(() => { if (state.live.size) refreshLive(); }, LIVE_MS);
