// The broker's console: one page, plain JavaScript, talking to the broker's own API with the
// session the sign-in gave (an HttpOnly cookie, and the CSRF token sent as a header).
"use strict";

const state = { session: null, timer: null, csrf: "" };
const REFRESH_MS = 2000;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (state.csrf) headers["X-Broker-Csrf"] = state.csrf;
  const resp = await fetch(path, { method, headers, credentials: "same-origin",
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) {
    const err = new Error((data && (data.message || data.Message)) || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function wildcard(pattern, value) {
  const re = new RegExp("^" + pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$", "i");
  return re.test(value);
}

function may(action) {
  const s = state.session;
  if (!s || s.Auth === "none") return true;
  return (s.Actions || []).some(a => wildcard(a, action));
}

function notice(text, isError = false) {
  const n = document.getElementById("notice");
  n.textContent = text;
  n.className = isError ? "error" : "";
}

function badge(text) {
  const kind = /^(Enabled|processing|ready)$/i.test(text) ? "ok"
    : /^(Disabled|Disabling|Enabling|Creating|Updating|starting|shard_end)$/i.test(text) ? "warn" : "bad";
  return el("span", { class: `badge ${kind}` }, text);
}

function age(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = ms / 1000;
  return s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(0)} min`;
}

function source(arn) {
  const parts = arn.split(":");
  const resource = parts.slice(5).join(":");
  return `${parts[2]}: ${resource.includes("/") ? resource.split("/")[1] : resource}`;
}

function table(caption, headers, rows, numeric = []) {
  return el("table", {},
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", { scope: "col", class: numeric.includes(i) ? "num" : "" }, h)))),
    el("tbody", {}, rows.length ? rows.map(r => el("tr", {}, r.map((c, i) => el("td", { class: numeric.includes(i) ? "num" : "" }, c))))
      : el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, "None"))));
}

function worstAge(m) {
  const ages = (m.Shards || []).map(s => s.IteratorAgeMilliseconds).filter(a => a !== null && a !== undefined);
  return ages.length ? Math.max(...ages) : null;
}

// ------------------------------------------------------------------ pages

async function overview(main) {
  const doc = await api("GET", "/broker/v1/status");
  main.replaceChildren(
    el("h1", {}, "Overview"),
    table("Replicas", ["Replica", "Ready", "Version", "Started", "Problems"], doc.Replicas.map(r => [
      r.ReplicaId, badge(r.Ready ? "ready" : "not ready"), r.Version, new Date(r.StartedAt * 1000).toLocaleString(),
      r.Problems.join("; ") || "–"])),
    el("h2", {}, "Mappings"),
    table("Event source mappings", ["Mapping", "Function", "Source", "State", "Records/s", "Errors/s", "In flight",
                                    "Worst iterator age", "Quarantined"],
      doc.Mappings.map(m => [el("a", { href: `#/mapping/${m.UUID}` }, m.UUID), m.FunctionName, source(m.EventSourceArn),
        badge(m.State), m.RecordsPerSecond, m.ErrorsPerSecond, m.InFlightBatches, age(worstAge(m)),
        m.Quarantined ?? "–"]), [4, 5, 6, 7, 8]),
    el("h2", {}, "Functions"),
    table("Functions", ["Function", "Target", "Concurrency in use", "Async queue", "In flight", "Delayed retries",
                        "Environments (init / idle / busy)"],
      doc.Functions.map(f => [el("a", { href: `#/function/${encodeURIComponent(f.FunctionName)}` }, f.FunctionName),
        f.Target, `${f.InUse} / ${f.ConcurrencyLimit}`, f.AsyncQueue.Depth, f.AsyncQueue.InFlight,
        f.AsyncQueue.DelayedRetries,
        f.Environments ? `${f.Environments.initializing} / ${f.Environments.idle} / ${f.Environments.busy}` : "–"]),
      [2, 3, 4, 5]));
}

function chart(caption, points, index, format) {
  const w = 600, h = 120, pad = 24;
  const values = points.map(p => p[index] ?? 0);
  const max = Math.max(1, ...values);
  const t0 = points.length ? points[0][0] : 0, t1 = points.length ? points[points.length - 1][0] : 1;
  const x = t => pad + (w - 2 * pad) * (t1 === t0 ? 1 : (t - t0) / (t1 - t0));
  const y = v => h - pad - (h - 2 * pad) * (v / max);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("role", "img");
  const last = values.length ? values[values.length - 1] : null;
  svg.setAttribute("aria-label", `${caption}: ${points.length} points over the last 15 minutes, now ${last === null ? "no data" : format(last)}`);
  svg.innerHTML = `<line class="axis" x1="${pad}" y1="${h - pad}" x2="${w - pad}" y2="${h - pad}"/>` +
    `<text x="${pad}" y="${pad - 8}">max ${format(max)}</text>` +
    `<polyline points="${points.map((p, i) => `${x(p[0])},${y(values[i])}`).join(" ")}"/>` +
    points.map((p, i) => `<circle cx="${x(p[0])}" cy="${y(values[i])}" r="2.5"/>`).join("");
  return el("figure", {}, el("figcaption", {}, caption), svg);
}

async function mappingPage(main, uuid) {
  const doc = await api("GET", "/broker/v1/status?History=true");
  const m = doc.Mappings.find(x => x.UUID === uuid);
  if (!m) { main.replaceChildren(el("h1", {}, "Mapping not found"), el("p", {}, uuid)); return; }
  let settings = null;
  try { settings = await api("GET", `/2015-03-31/event-source-mappings/${uuid}`); } catch (e) { settings = null; }
  const enabled = m.State === "Enabled" || m.State === "Enabling";
  const canUpdate = may("lambda:UpdateEventSourceMapping");
  const toggle = el("button", { type: "button", id: "toggle", disabled: !canUpdate,
                                title: canUpdate ? "" : "Your key may not update mappings",
                                onclick: async () => {
    try {
      await api("PUT", `/2015-03-31/event-source-mappings/${uuid}`, { Enabled: !enabled });
      notice(enabled ? "Pausing…" : "Resuming…");
      render();
    } catch (e) { notice(`Not changed: ${e.message}`, true); }
  } }, enabled ? "Pause" : "Resume");
  const shards = m.Shards || [];
  const history = m.History || [];
  const parts = [
    el("h1", {}, `Mapping ${uuid}`),
    el("div", { class: "actions" }, badge(m.State), toggle,
       el("span", { class: "muted" }, `${m.FunctionName} ← ${source(m.EventSourceArn)} · ${m.Origin}`)),
    el("div", { class: "charts" },
       chart("Records per second", history, 1, v => v.toFixed(1)),
       chart("Worst iterator age", history, 3, v => age(v))),
  ];
  if (shards.length) {
    parts.push(table("Shards", ["Shard", "Owner", "State", "Checkpoint", "Iterator age",
      "In flight", "Retrying since", "Last error", "Parked keys"], shards.map(s => [s.ShardId, s.Owner || "–",
      badge(s.State), s.Checkpoint || "–", age(s.IteratorAgeMilliseconds), s.InFlight,
      s.RetryingSince ? new Date(s.RetryingSince * 1000).toLocaleTimeString() : "–",
      s.LastError ? (s.LastError.errorMessage || s.LastError.errorType || JSON.stringify(s.LastError)) : "–",
      s.ParkedKeys ?? "–"]), [4, 5, 8]));
  } else if ("Pollers" in m) {
    parts.push(el("p", {}, `${m.Pollers} pollers, ${m.InFlightBatches} batches in flight.`));
  }
  if (settings) {
    const keys = ["BatchSize", "MaximumBatchingWindowInSeconds", "StartingPosition", "ParallelizationFactor",
                  "MaximumRetryAttempts", "MaximumRecordAgeInSeconds", "BisectBatchOnFunctionError",
                  "FunctionResponseTypes", "TumblingWindowInSeconds", "IsolateFailingKeys", "LastProcessingResult"];
    parts.push(el("h2", {}, "Settings"), el("dl", { class: "settings" },
      keys.filter(k => settings[k] !== undefined).map(k => [el("dt", {}, k), el("dd", {}, JSON.stringify(settings[k]))])));
  }
  if (!("Pollers" in m)) parts.push(...await quarantine(`/broker/v1/mappings/${uuid}/quarantine`));
  main.replaceChildren(...parts);
}

async function functionPage(main, name) {
  const doc = await api("GET", "/broker/v1/status");
  const f = doc.Functions.find(x => x.FunctionName === name);
  if (!f) { main.replaceChildren(el("h1", {}, "Function not found"), el("p", {}, name)); return; }
  main.replaceChildren(
    el("h1", {}, `Function ${name}`),
    el("p", {}, `${f.Target} target · ${f.InUse} of ${f.ConcurrencyLimit} in use · async queue ${f.AsyncQueue.Depth}` +
       ` waiting, ${f.AsyncQueue.InFlight} in flight, ${f.AsyncQueue.DelayedRetries} delayed`),
    ...await quarantine(`/broker/v1/functions/${encodeURIComponent(name)}/quarantine`));
}

async function quarantine(base) {
  let page;
  try { page = await api("GET", `${base}?MaxItems=50`); } catch (e) {
    return [el("h2", {}, "Quarantine"), el("p", { class: "error" }, e.message)];
  }
  const selected = new Set();
  const act = (what, action) => el("button", { type: "button", class: "secondary", disabled: !may(action),
                                             onclick: async () => {
    const body = selected.size ? { Ids: [...selected] } : { All: true };
    if (!selected.size && !confirm(`${what} every entry of this quarantine?`)) return;
    try {
      const done = await api("POST", `${base}/${what.toLowerCase()}`, body);
      notice(`${what}: ${JSON.stringify(done)}`);
      render();
    } catch (e) { notice(`${what} refused: ${e.message}`, true); }
  } }, `${what} selected (or all)`);
  return [
    el("h2", {}, "Quarantine"),
    el("div", { class: "actions" }, act("Replay", "broker:ReplayQuarantine"), act("Discard", "broker:DiscardQuarantine"),
       el("span", { class: "muted" }, `${page.Records.length} shown${page.NextMarker ? " (more kept)" : ""}`)),
    table("Records given up", ["", "Id", "Reason", "Attempts", "Quarantined", "Last error", "Record"],
      page.Records.map(r => [
        el("input", { type: "checkbox", "aria-label": `Select ${r.Id}`,
                      onchange: e => e.target.checked ? selected.add(r.Id) : selected.delete(r.Id) }),
        r.Id, r.Reason, r.Attempts, new Date(r.QuarantinedAt * 1000).toLocaleString(),
        r.LastError ? (r.LastError.errorMessage || r.LastError.errorType || `HTTP ${r.LastError.status}`) : "–",
        el("pre", { class: "payload" }, JSON.stringify(r.Record, null, 1))]), [3]),
  ];
}

// ------------------------------------------------------------------ sign-in and routing

async function signIn(main) {
  main.replaceChildren(document.getElementById("login-form").content.cloneNode(true));
  document.getElementById("key-id").focus();
  document.getElementById("login").addEventListener("submit", async ev => {
    ev.preventDefault();
    const form = new FormData(ev.target);
    try {
      const s = await api("POST", "/console/login", Object.fromEntries(form.entries()));
      state.session = s;
      state.csrf = s.Csrf || "";
      render();
    } catch (e) {
      document.getElementById("login-error").textContent = e.message;
    }
  });
}

async function render() {
  clearTimeout(state.timer);
  const main = document.getElementById("main");
  if (!state.session) {
    try {
      state.session = await api("GET", "/console/session");
      state.csrf = state.session.Csrf || "";
    } catch (e) {
      if (e.status === 401) { signIn(main); return; }
      notice(`The broker cannot be reached: ${e.message}`, true);
      state.timer = setTimeout(render, REFRESH_MS);
      return;
    }
  }
  const who = document.getElementById("who");
  who.textContent = state.session.Auth === "none" ? "no authentication (loopback)" : `signed in as ${state.session.AccessKeyId}`;
  document.getElementById("logout").hidden = state.session.Auth === "none";
  const route = location.hash.replace(/^#\/?/, "").split("/");
  try {
    if (route[0] === "mapping" && route[1]) await mappingPage(main, route[1]);
    else if (route[0] === "function" && route[1]) await functionPage(main, decodeURIComponent(route[1]));
    else await overview(main);
    notice(`Updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    if (e.status === 401 || (e.status === 403 && /session/i.test(e.message))) { state.session = null; signIn(main); return; }
    notice(e.message, true);
  }
  if (!document.querySelector("input[type=checkbox]:checked")) state.timer = setTimeout(render, REFRESH_MS);
  else state.timer = setTimeout(render, REFRESH_MS * 5);
}

document.getElementById("logout").addEventListener("click", async () => {
  try { await api("POST", "/console/logout"); } catch (e) { /* signed out anyway */ }
  state.session = null; state.csrf = "";
  render();
});
window.addEventListener("hashchange", render);
render();
