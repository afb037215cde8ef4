// The mock-chart-img dashboard: polls the admin API once a second and renders with textContent only (nothing from
// the server is ever parsed as HTML). Faults and stubs are added and removed through the admin API itself.
"use strict";

const $ = (s) => document.querySelector(s);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
};

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) {
    let m = r.status + " " + r.statusText;
    try { m = (await r.json()).message || m; } catch (_) {}
    throw new Error(m);
  }
  return r.status === 204 ? null : r.json();
}

// Toggles: each is one fault spec; "on" while an installed fault carries every field of the preset.
const PRESETS = [
  { id: "error-500", label: "500 on every request", spec: { kind: "error_rate", rate: 1, status: 500 } },
  { id: "throttle-429", label: "429 Too Many Requests", spec: { kind: "error_rate", rate: 1, status: 429 } },
  { id: "latency-800", label: "+800 ms latency", spec: { kind: "latency", ms: 800 } },
  { id: "reset", label: "connection reset", spec: { kind: "connection_reset" } },
  { id: "non-image", label: "200 with a non-image body", spec: { kind: "non_image_body" } },
];

const matches = (fault, spec) => Object.entries(spec).every(([k, v]) => JSON.stringify(fault[k]) === JSON.stringify(v));

let state = { faults: [], stubs: [], verify: { expectations: [] }, journal: [], usage: [], thumbs: new Set() };
let busy = false;

function renderHealth(h) {
  $("#health").textContent =
    `v${h.version} · up ${h.uptime_s} s · ${h.keys} keys · ${h.faults} faults · ${h.journal_len} requests journaled · ` +
    `${h.renders} renders, ${h.cache_hits} cache hits`;
}

function gauge(label, value, max, text) {
  const frac = max > 0 ? Math.min(1, value / max) : 0;
  const fill = el("div", { class: "fill" + (frac >= 1 ? " full" : frac >= 0.8 ? " warn" : "") });
  fill.style.width = (frac * 100).toFixed(1) + "%";
  return el("div", { class: "gauge" }, el("div", { class: "label" }, el("span", {}, label), el("span", {}, text)),
    el("div", { class: "bar" }, fill));
}

// Requests per second of `account` over the last `windowS` seconds, from the journal's timestamps.
function rate(account, windowS) {
  const now = Date.now();
  const n = state.journal.filter((e) => e.account === account && now - Date.parse(e.at) <= windowS * 1000).length;
  return n / windowS;
}

function renderAccounts() {
  const box = $("#accounts");
  box.replaceChildren(...state.usage.map((u) => {
    const r = rate(u.account, 10);
    return el("div", { class: "card" + (u.active ? "" : " inactive"), dataset: { account: u.account } },
      el("h3", {}, `${u.account} · ${u.plan}${u.active ? "" : " (inactive)"}`),
      gauge("today (UTC " + u.day + ")", u.used_today, u.limits.daily_limit,
        `${u.used_today} / ${u.limits.daily_limit}`),
      gauge("rate, last 10 s", r, u.limits.rate_per_sec, `${r.toFixed(1)} / ${u.limits.rate_per_sec} per s (burst ${u.limits.burst})`),
      el("div", {}, `${u.requests} requests · ${u.throttled} throttled · ${u.quota_rejected} over quota`));
  }));
}

function describe(f) {
  const skip = new Set(["id", "origin", "fired", "kind", "account", "route"]);
  return Object.entries(f).filter(([k]) => !skip.has(k)).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ");
}

function renderFaults() {
  $("#presets").replaceChildren(...PRESETS.map((p) => {
    const on = state.faults.some((f) => matches(f, p.spec));
    return el("label", { class: "toggle" + (on ? " on" : ""), dataset: { preset: p.id } },
      el("input", { type: "checkbox", ...(on ? { checked: "" } : {}), onchange: (ev) => togglePreset(p, ev.target.checked) }),
      " " + p.label);
  }));
  $("#faults tbody").replaceChildren(...state.faults.map((f) =>
    el("tr", { dataset: { fault: f.id } },
      el("td", {}, f.id), el("td", {}, f.origin), el("td", {}, f.kind),
      el("td", {}, [f.account && "account " + f.account, f.route && "route " + f.route].filter(Boolean).join(", ") || "every request"),
      el("td", {}, el("code", {}, describe(f))), el("td", {}, f.fired),
      el("td", {}, el("button", { class: "remove", onclick: () => removeFault(f.id) }, "remove")))));
}

function renderStubs() {
  $("#stubs tbody").replaceChildren(...state.stubs.map((s) =>
    el("tr", { dataset: { stub: s.id } },
      el("td", {}, s.id), el("td", {}, s.origin), el("td", {}, el("code", {}, JSON.stringify(s.criteria))),
      el("td", {}, el("code", {}, JSON.stringify(s.answer))), el("td", {}, s.gateway ? "after" : "before"),
      el("td", {}, s.priority), el("td", {}, s.matched + (s.times == null ? "" : ` (${s.times} left)`)),
      el("td", {}, el("button", { class: "remove", onclick: () => removeStub(s.id) }, "remove")))));
}

// `GET /__admin/verify` answers 417 when an expectation is unmet: a verdict, not an error of the page.
async function verdict() {
  const r = await fetch("/__admin/verify");
  if (r.status !== 200 && r.status !== 417) throw new Error(r.status + " " + r.statusText);
  return r.json();
}

function renderExpectations() {
  const v = state.verify, n = v.expectations.length;
  $("#verdict").textContent = n === 0 ? "(none)" : v.ok ? `(all ${n} hold)` : `(${v.unmet} of ${n} unmet)`;
  $("#expectations tbody").replaceChildren(...v.expectations.map((e) =>
    el("tr", { dataset: { expectation: e.id }, class: e.ok ? "" : "unmet" },
      el("td", {}, e.id), el("td", {}, e.name || ""), el("td", {}, el("code", {}, JSON.stringify(e.criteria))),
      el("td", {}, e.wanted), el("td", {}, e.matched),
      el("td", { class: e.ok ? "s2" : "s5" }, e.ok ? "ok" : "unmet"))));
}

function statusClass(s) {
  return s == null ? "sdrop" : "s" + String(s)[0];
}

function renderJournal() {
  $("#journal-count").textContent = `(newest first, ${state.journal.length} shown)`;
  $("#journal tbody").replaceChildren(...state.journal.map((e) => {
    const thumb = state.thumbs.has(e.seq)
      ? el("img", { src: `/__admin/ui/thumbs/${e.seq}`, alt: `image of request ${e.seq}`, loading: "lazy" })
      : "";
    return el("tr", { dataset: { seq: e.seq } },
      el("td", {}, e.seq), el("td", {}, new Date(e.at).toISOString().slice(11, 23)),
      el("td", {}, `${e.method} ${e.path}`), el("td", {}, e.account || "—"), el("td", {}, e.key_status),
      el("td", { class: "status " + statusClass(e.status) }, e.status == null ? "dropped" : e.status),
      el("td", {}, e.duration_ms),
      el("td", {}, [e.symbol, e.interval].filter(Boolean).join(" "),
        e.symbol_listed === false
          ? el("span", { class: "unlisted", title: "not in the symbol catalogue: the real API may answer Invalid Symbol" }, " unlisted")
          : ""),
      el("td", {}, (e.faults || []).concat(e.stub == null ? [] : ["stub " + e.stub]).join(", ")),
      el("td", { class: "error" }, e.error || ""),
      el("td", { class: "thumb" }, thumb));
  }));
}

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const [health, usage, faults, stubs, verify, journal, thumbs, config] = await Promise.all([
      api("GET", "/__admin/health"), api("GET", "/__admin/usage"), api("GET", "/__admin/faults"),
      api("GET", "/__admin/stubs"), verdict(), api("GET", "/__admin/requests?limit=100"),
      api("GET", "/__admin/ui/thumbs"), api("GET", "/__admin/config"),
    ]);
    state = { faults, stubs, verify, journal, usage, thumbs: new Set(thumbs) };
    renderHealth(health);
    renderAccounts();
    renderFaults();
    renderStubs();
    renderExpectations();
    renderJournal();
    $("#config").textContent = JSON.stringify(config, null, 2);
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  } catch (e) {
    $("#health").textContent = "admin API unreachable: " + e.message;
  } finally {
    busy = false;
  }
}

async function togglePreset(p, on) {
  try {
    if (on) await api("POST", "/__admin/faults", p.spec);
    else for (const f of state.faults.filter((f) => matches(f, p.spec))) await api("DELETE", `/__admin/faults/${f.id}`);
  } catch (e) {
    $("#fault-error").textContent = e.message;
  }
  await refresh();
}

async function removeFault(id) {
  try { await api("DELETE", `/__admin/faults/${id}`); } catch (e) { $("#fault-error").textContent = e.message; }
  await refresh();
}

async function removeStub(id) {
  try { await api("DELETE", `/__admin/stubs/${id}`); } catch (e) { $("#stub-error").textContent = e.message; }
  await refresh();
}

$("#add-stub").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#stub-error").textContent = "";
  try {
    await api("POST", "/__admin/stubs", JSON.parse($("#stub-json").value));
  } catch (e) {
    $("#stub-error").textContent = e.message;
  }
  await refresh();
});

$("#add-fault").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#fault-error").textContent = "";
  try {
    await api("POST", "/__admin/faults", JSON.parse($("#fault-json").value));
  } catch (e) {
    $("#fault-error").textContent = e.message;
  }
  await refresh();
});

refresh();
setInterval(() => { if ($("#live").checked) refresh(); }, 1000);
