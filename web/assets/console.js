// console.js: Herald's operator console (docs/console.md), the browser side of /api/admin/*.
//
// One ES module, no dependencies. It polls `GET /api/admin/stats` every second and draws the last
// two minutes on hand-drawn canvas charts, fills the site and channel tables from the same answer,
// polls `GET /api/admin/traffic` every few seconds for the top users, and sends the operator's
// actions (publish, channel view, disconnect) when their forms are submitted.
//
// The credential is the server's `admin.secret`. It arrives once in the URL fragment
// (`/console#secret=…`, never sent to the server and removed from the address bar at once) or
// through the sign-in form, is kept in this tab's sessionStorage only, and travels as
// `Authorization: Bearer`. A 401 from any call forgets it and shows the sign-in form again.
//
// Everything the server sends (site ids, user ids, channel names, message data) is inserted as
// text, never as HTML. What the page shows is also written to data attributes (`data-state`,
// `data-last`, `data-max`, `data-first-user`, …) so that tests and scripts can read it.

const STATS_EVERY_MS = 1000;
const TRAFFIC_EVERY_MS = 3000;
/** How much the charts show. */
const WINDOW_MS = 120_000;
/** Users listed in the top-users table. */
const TOP_USERS = 10;
const STORAGE_KEY = "herald-console-secret";

const $ = (id) => document.getElementById(id);

// === credential ===

let secret = secretFromHash() ?? storedSecret();

/** The secret from `#secret=…`, which is wiped from the URL and stored; null without one. */
function secretFromHash() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("secret");
  if (fromHash === null) return null;
  history.replaceState(null, "", location.pathname + location.search);
  storeSecret(fromHash);
  return fromHash || null;
}

function storedSecret() {
  try {
    return sessionStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

function storeSecret(value) {
  try {
    if (value) sessionStorage.setItem(STORAGE_KEY, value);
    else sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    // Storage may be disabled; the secret then lives in this page only.
  }
}

// === the admin API ===

/** An answer other than 2xx: its status, the error body's code and message. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls an admin route with the secret; answers the JSON body or throws an ApiError. */
async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${secret}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    throw new ApiError(0, "network", `cannot reach the server: ${error.message}`);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: the message below says what came instead.
  }
  if (!response.ok) {
    const error = json && json.error;
    throw new ApiError(
      response.status,
      (error && error.code) || "http_error",
      (error && error.message) || `${response.status} ${response.statusText || "error"}`,
    );
  }
  return json;
}

// === formatting ===

const integer = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });

function fmtCount(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return Math.abs(n) < 10 && !Number.isInteger(n) ? decimal.format(n) : integer.format(n);
}

function fmtBytes(n) {
  if (typeof n !== "number") return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit === 0 ? integer.format(value) : decimal.format(value)} ${units[unit]}`;
}

function fmtSeconds(s) {
  if (typeof s !== "number") return "–";
  if (s < 1) return `${integer.format(s * 1000)} ms`;
  if (s < 120) return `${decimal.format(s)} s`;
  const minutes = Math.floor(s / 60);
  if (minutes < 120) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${String(minutes % 60).padStart(2, "0")} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

function fmtShare(x) {
  return typeof x === "number" ? `${decimal.format(x * 100)}%` : "–";
}

const FORMATS = { count: fmtCount, rate: fmtCount, seconds: fmtSeconds };

// === charts ===

const PALETTE = ["#2f6fde", "#1a8a4a", "#b7791f", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"];

/**
 * One live line chart on a canvas: samples of named series over the last WINDOW_MS, drawn by
 * hand. Its figure carries `data-last` (the first series' latest value), `data-max` (that
 * series' largest value in the window) and `data-samples`.
 */
class Chart {
  constructor(id, seriesLabels = {}) {
    this.figure = $(id);
    this.canvas = this.figure.querySelector("canvas");
    this.now = this.figure.querySelector(".now");
    this.legend = this.figure.querySelector(".legend");
    this.format = FORMATS[this.figure.dataset.unit] || fmtCount;
    /** Series keys in the order first seen; the first one is the chart's headline. */
    this.keys = [];
    this.labels = seriesLabels;
    /** `{t, values: {key: number|null}}`, oldest first. */
    this.samples = [];
  }

  push(t, values) {
    for (const key of Object.keys(values)) {
      if (!this.keys.includes(key)) this.keys.push(key);
    }
    this.samples.push({ t, values });
    while (this.samples.length > 0 && this.samples[0].t < t - WINDOW_MS) this.samples.shift();
    const head = this.keys[0];
    const last = values[head];
    let max = null;
    for (const sample of this.samples) {
      const v = sample.values[head];
      if (typeof v === "number" && (max === null || v > max)) max = v;
    }
    this.figure.dataset.last = typeof last === "number" ? String(last) : "";
    this.figure.dataset.max = max === null ? "" : String(max);
    this.figure.dataset.samples = String(this.samples.length);
    this.figure.dataset.values = JSON.stringify(values);
    this.now.textContent = typeof last === "number" ? this.format(last) : "–";
    this.renderLegend(values);
    this.draw();
  }

  clear() {
    this.samples = [];
    this.draw();
  }

  color(key) {
    return PALETTE[this.keys.indexOf(key) % PALETTE.length];
  }

  renderLegend(values) {
    if (this.keys.length < 2) {
      this.legend.replaceChildren();
      return;
    }
    this.legend.replaceChildren(
      ...this.keys.map((key) => {
        const item = document.createElement("li");
        item.dataset.series = key;
        const swatch = document.createElement("i");
        swatch.style.background = this.color(key);
        const value = values[key];
        item.append(swatch, `${this.labels[key] || key} ${typeof value === "number" ? this.format(value) : "–"}`);
        return item;
      }),
    );
  }

  draw() {
    const { canvas } = this;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 360;
    const height = canvas.clientHeight || 140;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);

    const left = 44;
    const right = width - 6;
    const top = 8;
    const bottom = height - 16;
    const end = this.samples.length > 0 ? this.samples[this.samples.length - 1].t : Date.now();
    const start = end - WINDOW_MS;
    let max = 0;
    for (const sample of this.samples) {
      for (const key of this.keys) {
        const v = sample.values[key];
        if (typeof v === "number" && v > max) max = v;
      }
    }
    const axis = yAxis(max, this.figure.dataset.unit);
    const yMax = axis.top;
    const x = (t) => left + ((t - start) / WINDOW_MS) * (right - left);
    const y = (v) => bottom - (v / yMax) * (bottom - top);

    // Grid: a line at each step, labelled on the left, and the time axis below.
    g.font = "10px system-ui, sans-serif";
    g.textBaseline = "middle";
    g.textAlign = "right";
    const steps = Math.round(yMax / axis.step);
    for (let i = 0; i <= steps; i += 1) {
      const v = axis.step * i;
      const lineY = Math.round(y(v)) + 0.5;
      g.strokeStyle = i === 0 ? "#c9ced6" : "#eceef2";
      g.lineWidth = 1;
      g.beginPath();
      g.moveTo(left, lineY);
      g.lineTo(right, lineY);
      g.stroke();
      g.fillStyle = "#6a7282";
      g.fillText(this.format(v), left - 4, lineY);
    }
    g.textAlign = "left";
    g.textBaseline = "alphabetic";
    g.fillText("−2 min", left, height - 3);
    g.textAlign = "right";
    g.fillText("now", right, height - 3);

    if (this.samples.length === 0) return;
    for (const key of [...this.keys].reverse()) {
      g.strokeStyle = this.color(key);
      g.lineWidth = key === this.keys[0] ? 2 : 1.5;
      g.lineJoin = "round";
      g.beginPath();
      let drawing = false;
      for (const sample of this.samples) {
        const v = sample.values[key];
        if (typeof v !== "number") {
          drawing = false;
          continue;
        }
        if (drawing) g.lineTo(x(sample.t), y(v));
        else g.moveTo(x(sample.t), y(v));
        drawing = true;
      }
      g.stroke();
    }
  }
}

/**
 * The y axis for values up to `max`: a round step (1, 2 or 5 times a power of ten) that splits it
 * into at most four parts, and the top as a whole number of steps; never below a small floor, so
 * that an idle chart is not all noise.
 */
function yAxis(max, unit) {
  const floor = unit === "seconds" ? 0.01 : 1;
  const top = Math.max(max, floor);
  const rough = top / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  return { step, top: step * Math.ceil(top / step - 1e-9) };
}

const charts = {
  connections: new Chart("chart-connections"),
  messages: new Chart("chart-messages"),
  deliveries: new Chart("chart-deliveries"),
  lag: new Chart("chart-lag"),
  slow: new Chart("chart-slow"),
  redis: new Chart("chart-redis", {
    reconnects: "reconnects",
    publish_failures: "publish failures",
    gaps_detected: "gaps",
  }),
};

window.addEventListener("resize", () => {
  for (const chart of Object.values(charts)) chart.draw();
});

// === stats ===

/** The previous stats answer's counters, for rates; null after a sign-in. */
let previous = null;
/** Site ids seen last, for the forms' suggestions. */
let knownSites = [];

/** The per-second rate of a counter since the previous answer; null when unknown or reset. */
function rate(now, before, dtSeconds) {
  if (typeof now !== "number" || typeof before !== "number" || !(dtSeconds > 0)) return null;
  if (now < before) return null;
  return (now - before) / dtSeconds;
}

function renderStats(stats) {
  const t = typeof stats.time_ms === "number" ? stats.time_ms : Date.now();
  const totals = stats.totals || {};
  $("engine").textContent = stats.engine || "–";
  $("uptime").textContent = fmtSeconds(stats.uptime_s);
  document.body.dataset.engine = stats.engine || "";

  const connections = stats.connections || {};
  let total = 0;
  const byTransport = {};
  for (const [transport, count] of Object.entries(connections)) {
    if (typeof count !== "number") continue;
    byTransport[transport] = count;
    total += count;
  }
  charts.connections.push(t, { total, ...byTransport });

  const dt = previous ? (t - previous.t) / 1000 : 0;
  const before = previous ? previous.totals : {};
  charts.messages.push(t, { published: rate(totals.published, before.published, dt) });
  charts.deliveries.push(t, { delivered: rate(totals.delivered, before.delivered, dt) });
  charts.slow.push(t, {
    slow_consumers: rate(totals.slow_consumer_disconnects, before.slow_consumer_disconnects, dt),
  });
  charts.lag.push(t, { lag: typeof stats.delivery_lag_seconds === "number" ? stats.delivery_lag_seconds : null });
  previous = { t, totals };

  renderRedis(t, stats.redis);
  renderSites(stats.sites || [], stats.split_share);
  renderChannels(stats.channels || []);
}

function renderRedis(t, redis) {
  const light = $("redis-light");
  const state = $("redis-state");
  if (!redis) {
    light.dataset.state = "off";
    light.title = "no Redis: the memory engine";
    state.textContent = "memory engine";
    charts.redis.push(t, { reconnects: null });
    return;
  }
  light.dataset.state = redis.healthy ? "healthy" : "down";
  light.title = redis.healthy ? "Redis reachable" : "Redis unreachable";
  state.textContent = redis.healthy ? "healthy" : "unreachable";
  charts.redis.push(t, {
    reconnects: redis.reconnects,
    publish_failures: redis.publish_failures,
    gaps_detected: redis.gaps_detected,
  });
}

/** A table cell with `text`, right-aligned when `numeric`. */
function cell(text, numeric = false) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "num";
  return td;
}

function renderSites(sites, splitShare) {
  $("split-share").textContent = fmtShare(splitShare);
  const rows = sites.map((site) => {
    const tr = document.createElement("tr");
    tr.dataset.site = site.id;
    tr.dataset.splitOut = String(Boolean(site.split_out));
    const share = site.share || {};
    const flag = document.createElement("td");
    if (site.split_out) {
      const badge = document.createElement("span");
      badge.className = "badge split";
      badge.textContent = "split out";
      badge.title = "this site's share of the traffic is past split_share: give it a deployment of its own";
      flag.append(badge);
    } else {
      flag.textContent = "no";
      flag.className = "muted";
    }
    tr.append(
      cell(site.id),
      cell(fmtCount(site.connections), true),
      cell(fmtCount(site.messages_produced), true),
      cell(fmtBytes(site.bytes_produced), true),
      cell(fmtCount(site.deliveries_received), true),
      cell(fmtBytes(site.bytes_received), true),
      cell(fmtSeconds(site.connection_seconds), true),
      shareCell(share),
      flag,
    );
    return tr;
  });
  $("sites-table").tBodies[0].replaceChildren(...(rows.length ? rows : [emptyRow(9, "no sites")]));

  const ids = sites.map((site) => site.id);
  if (ids.join("\n") !== knownSites.join("\n")) {
    knownSites = ids;
    $("site-ids").replaceChildren(
      ...ids.map((id) => {
        const option = document.createElement("option");
        option.value = id;
        return option;
      }),
    );
    fillSiteSelect(ids);
  }
  // Each form's site starts as the first site, until the operator types another.
  if (ids.length > 0) {
    for (const input of document.querySelectorAll('.action input[name="site"]')) {
      if (!input.value && !input.dataset.touched) input.value = ids[0];
    }
  }
}

/** The site's shares of the node's traffic, each measure the server reports, the largest first. */
function shareCell(share) {
  const names = { messages: "msgs", bytes: "bytes", deliveries: "deliveries", bytes_received: "bytes recv." };
  const parts = Object.entries(share)
    .filter(([, value]) => typeof value === "number")
    .sort((a, b) => b[1] - a[1])
    .map(([key, value]) => `${names[key] || key} ${fmtShare(value)}`);
  const td = cell(parts.length ? parts[0] : "–", true);
  td.title = parts.join(", ");
  td.dataset.shares = JSON.stringify(share);
  return td;
}

function renderChannels(channels) {
  const rows = channels.map((entry) => {
    const tr = document.createElement("tr");
    tr.dataset.site = entry.site;
    tr.dataset.channel = entry.channel;
    tr.append(cell(entry.site), cell(entry.channel), cell(fmtCount(entry.subscribers), true));
    tr.title = "show this channel";
    tr.className = "clickable";
    tr.addEventListener("click", () => {
      const form = $("channel-form");
      form.elements.site.value = entry.site;
      form.elements.channel.value = entry.channel;
      form.requestSubmit();
    });
    return tr;
  });
  $("channels-table").tBodies[0].replaceChildren(
    ...(rows.length ? rows : [emptyRow(3, "no channel has subscribers")]),
  );
}

function emptyRow(columns, text) {
  const tr = document.createElement("tr");
  const td = cell(text);
  td.colSpan = columns;
  td.className = "muted empty";
  tr.append(td);
  return tr;
}

// === top users ===

function fillSiteSelect(ids) {
  const select = $("top-site");
  const chosen = select.value;
  select.replaceChildren(
    ...ids.map((id) => {
      const option = document.createElement("option");
      option.value = id;
      option.textContent = id;
      return option;
    }),
  );
  if (ids.includes(chosen)) select.value = chosen;
}

/** What the report's measures are called in the select; unknown ones show as they are. */
const MEASURES = {
  messages: "messages",
  bytes: "bytes",
  deliveries_received: "deliveries received",
  bytes_received: "bytes received",
  connection_seconds: "connection time",
};

/** The measure select lists what the report ranks (a newer server may rank more). */
function fillMeasureSelect(keys) {
  const select = $("top-measure");
  if ([...select.options].map((o) => o.value).join("\n") === keys.join("\n")) return;
  const chosen = select.value;
  select.replaceChildren(
    ...keys.map((key) => {
      const option = document.createElement("option");
      option.value = key;
      option.textContent = MEASURES[key] || key;
      return option;
    }),
  );
  select.value = keys.includes(chosen) ? chosen : keys[0];
}

/** The last traffic report, so that changing the measure redraws at once. */
let traffic = null;

function renderTopUsers() {
  const table = $("top-users");
  const note = $("top-note");
  const site = $("top-site").value;
  const report = traffic && traffic.sites ? traffic.sites[site] : null;
  if (report && report.top_users) fillMeasureSelect(Object.keys(report.top_users));
  const measure = $("top-measure").value;
  table.dataset.site = site;
  table.dataset.measure = measure;
  const ranked = report && report.top_users ? report.top_users[measure] : null;
  let rows = [];
  if (!traffic) {
    note.textContent = "";
  } else if (traffic.enabled === false) {
    note.textContent = "Traffic accounting is off (accounting.enabled).";
  } else if (!ranked || !ranked.counted) {
    note.textContent = site ? `Nothing counted for ${site} yet.` : "";
  } else {
    note.textContent =
      `${fmtCount(ranked.counted)} counted; each count is at most ${fmtCount(ranked.error_bound)} ` +
      `over the truth (${fmtCount(ranked.slots)} slots).`;
    const format = measure.startsWith("bytes") ? fmtBytes
      : measure === "connection_seconds" ? fmtSeconds : fmtCount;
    rows = (ranked.top || []).map((entry, i) => {
      const tr = document.createElement("tr");
      tr.dataset.user = entry.user;
      tr.append(
        cell(String(i + 1), true),
        cell(entry.user),
        cell(format(entry.count), true),
        cell(fmtCount(entry.error), true),
      );
      return tr;
    });
  }
  table.dataset.firstUser = rows.length ? rows[0].dataset.user : "";
  table.tBodies[0].replaceChildren(...(rows.length ? rows : [emptyRow(4, "no users yet")]));
}

$("top-site").addEventListener("change", renderTopUsers);
$("top-measure").addEventListener("change", renderTopUsers);

// === polling ===

/** Bumped on every sign-in and sign-out, so that a loop of an earlier session stops. */
let session = 0;
let polls = 0;

function setPollStatus(state, text) {
  const status = $("poll-status");
  status.dataset.state = state;
  status.textContent = text;
}

async function pollStats(mine) {
  if (mine !== session) return;
  try {
    const stats = await api("/api/admin/stats");
    if (mine !== session) return;
    showConsole();
    renderStats(stats);
    polls += 1;
    document.body.dataset.polls = String(polls);
    document.body.dataset.state = "live";
    setPollStatus("live", `live · ${new Date(stats.time_ms || Date.now()).toLocaleTimeString()}`);
  } catch (error) {
    if (mine !== session) return;
    if (!handleAuthError(error)) {
      document.body.dataset.state = "error";
      setPollStatus("error", `${error.message} (retrying)`);
    }
  }
  if (mine === session) setTimeout(() => pollStats(mine), STATS_EVERY_MS);
}

async function pollTraffic(mine) {
  if (mine !== session) return;
  try {
    const report = await api(`/api/admin/traffic?top=${TOP_USERS}`);
    if (mine !== session) return;
    traffic = report;
    const ids = Object.keys((report && report.sites) || {});
    if ($("top-site").options.length === 0 && ids.length > 0) fillSiteSelect(ids);
    renderTopUsers();
  } catch (error) {
    if (mine !== session) return;
    if (!handleAuthError(error)) $("top-note").textContent = `Top users unavailable: ${error.message}`;
  }
  if (mine === session) setTimeout(() => pollTraffic(mine), TRAFFIC_EVERY_MS);
}

/** A 401 ends the session and asks for the secret again; answers whether it was one. */
function handleAuthError(error) {
  if (error.status !== 401) return false;
  signOut(`The server refused the secret: ${error.message}`);
  return true;
}

function start() {
  session += 1;
  previous = null;
  traffic = null;
  for (const chart of Object.values(charts)) chart.clear();
  $("signin").hidden = true;
  $("sign-out").hidden = false;
  document.body.dataset.state = "connecting";
  setPollStatus("starting", "connecting…");
  pollStats(session);
  pollTraffic(session);
}

function showConsole() {
  $("console").hidden = false;
  $("signin").hidden = true;
}

function signOut(message = "") {
  session += 1;
  secret = null;
  storeSecret(null);
  $("console").hidden = true;
  $("sign-out").hidden = true;
  $("signin").hidden = false;
  $("signin-message").textContent = message;
  document.body.dataset.state = "signed-out";
  setPollStatus("signed-out", "signed out");
  $("secret-input").value = "";
  $("secret-input").focus();
}

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("secret-input").value;
  if (!value) return;
  secret = value;
  storeSecret(value);
  $("signin-message").textContent = "";
  start();
});

$("sign-out").addEventListener("click", () => signOut("Signed out."));

// === actions ===

/** Shows an action's outcome in its output element. */
function report(output, state, text) {
  output.dataset.state = state;
  output.textContent = text;
}

/** Runs `action` for a form, showing busy, then its answer or the error's message. */
function onSubmit(formId, outputId, action) {
  const form = $(formId);
  const output = $(outputId);
  for (const input of form.querySelectorAll('input[name="site"]')) {
    input.addEventListener("input", () => {
      input.dataset.touched = "1";
    });
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    report(output, "busy", "…");
    try {
      report(output, "ok", await action(form.elements, output));
    } catch (error) {
      if (!handleAuthError(error)) {
        report(output, "error", error.code && error.code !== "http_error" ? `${error.code}: ${error.message}` : error.message);
      }
    } finally {
      button.disabled = false;
    }
  });
}

/** The data field as JSON when it parses, else as a string. */
function parseData(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

onSubmit("publish-form", "publish-result", async (fields, output) => {
  const answer = await api("/api/admin/publish", {
    method: "POST",
    body: {
      site: fields.site.value.trim(),
      channel: fields.channel.value.trim(),
      data: parseData(fields.data.value),
    },
  });
  output.dataset.offset = String(answer && answer.offset);
  return `Published to ${fields.channel.value.trim()} at offset ${answer && answer.offset}.`;
});

onSubmit("channel-form", "channel-result", async (fields) => {
  const query = new URLSearchParams({
    site: fields.site.value.trim(),
    channel: fields.channel.value.trim(),
    limit: fields.limit.value || "20",
  });
  const view = await api(`/api/admin/channel?${query}`);
  renderChannelView(view);
  return `${view.site} / ${view.channel}`;
});

function renderChannelView(view) {
  $("channel-view").hidden = false;
  $("channel-view").dataset.site = view.site;
  $("channel-view").dataset.channel = view.channel;
  $("channel-subscribers").textContent = fmtCount(view.subscribers);
  $("channel-view").dataset.subscribers = String(view.subscribers);
  const history = (view.history || []).map((entry) => {
    const li = document.createElement("li");
    li.dataset.offset = String(entry.offset);
    const offset = document.createElement("span");
    offset.className = "offset";
    offset.textContent = `#${entry.offset}`;
    const data = document.createElement("code");
    data.textContent = JSON.stringify(entry.data);
    li.append(offset, data);
    return li;
  });
  $("channel-history").replaceChildren(...history);
  if (history.length === 0) $("channel-history").append(emptyItem("no history kept"));
  const members = view.members;
  if (!Array.isArray(members)) {
    $("channel-members").replaceChildren(emptyItem("not a presence channel"));
  } else if (members.length === 0) {
    $("channel-members").replaceChildren(emptyItem("nobody"));
  } else {
    $("channel-members").replaceChildren(
      ...members.map((member) => {
        const li = document.createElement("li");
        li.dataset.user = member.user_id;
        const who = document.createElement("b");
        who.textContent = member.user_id;
        li.append(who);
        if (member.user_info !== undefined && member.user_info !== null) {
          const info = document.createElement("code");
          info.textContent = JSON.stringify(member.user_info);
          li.append(" ", info);
        }
        return li;
      }),
    );
  }
}

function emptyItem(text) {
  const li = document.createElement("li");
  li.className = "muted empty";
  li.textContent = text;
  return li;
}

onSubmit("disconnect-form", "disconnect-result", async (fields) => {
  const user = fields.user.value.trim();
  const site = fields.site.value.trim();
  const answer = await api("/api/admin/disconnect", { method: "POST", body: { site, user } });
  return answer && answer.disconnecting
    ? `Closing ${user}'s connections on ${site} on this node (close code 4011).`
    : `${user} was not disconnected.`;
});

// === start ===

// A link with `#secret=…` opened on a page already showing the console replaces the secret.
window.addEventListener("hashchange", () => {
  const fromHash = secretFromHash();
  if (fromHash) {
    secret = fromHash;
    start();
  }
});

if (secret) start();
else signOut();
