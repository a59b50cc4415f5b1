// otaflow fleet console: polls the console API and renders it. No framework: the page is
// small, and plain DOM keeps it readable and dependency-free. What it polls is small at any
// fleet size: the overview (rollouts and the fleet's counts, every 2 s), the first page of the
// device list (every 10 s, unless the operator paged on), a device's or a rollout's page while
// it is open. Pages have their own URLs: #rollout=ID, #device=NAME.
"use strict";

// Who is signed in: the console asks for a sign-in unless it is open (a development stack).
// Every change carries the session's CSRF token and the console's own header.
let me = null;
let sso = false; // single sign-on offered

const api = (path, opts = {}) => {
  if (opts.method === "POST") {
    opts.headers = { "Content-Type": "application/json", "X-Otaflow-Console": "1", "X-CSRF-Token": (me && me.csrf) || "", ...(opts.headers || {}) };
  }
  return fetch("api/" + path, opts).then(async (r) => {
    const body = await r.json().catch(() => ({}));
    if (r.status === 401 && body.signIn) showSignIn(body.error);
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  });
};

function showSignIn(why) {
  me = null;
  document.getElementById("signin").hidden = false;
  document.getElementById("signin-sso").hidden = !sso;
  document.getElementById("signin-error").textContent = why && why !== "sign in to the console" ? why : "";
  document.getElementById("whoami").textContent = "";
}

function signedIn(s) {
  me = s;
  document.getElementById("signin").hidden = true;
  document.body.classList.toggle("read-only", !s.mayOperate && !s.open);
  document.getElementById("whoami").textContent = s.open ? "" : `${s.user} (${s.role})`;
  document.getElementById("sign-out").hidden = !!s.open;
}

async function signIn(e) {
  e.preventDefault();
  const user = document.getElementById("signin-user").value, password = document.getElementById("signin-password").value;
  try {
    const s = await api("sign-in", { method: "POST", body: JSON.stringify({ user, password }) });
    document.getElementById("signin-password").value = "";
    signedIn(s);
    ticks = 0;
  } catch (err) {
    document.getElementById("signin-error").textContent = err.message;
  }
}

async function signOut() {
  await api("sign-out", { method: "POST" }).catch(() => {});
  showSignIn("");
}

let selected = null;      // rollout ID shown in the detail panel
let selectedStatus = null; // its last status

const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
};

const ago = (iso) => {
  if (!iso || iso.startsWith("0001")) return "never";
  const s = Math.max(0, Math.round((Date.now() - new Date(iso)) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
};

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function progress(live) {
  if (!live) return "";
  const c = live.counts, total = Math.max(live.devices, 1);
  const done = c.succeeded;
  const bar = el("span", { class: "bar" }, el("span"));
  bar.firstChild.style.width = (100 * done / total).toFixed(1) + "%";
  const bad = c.failed + c.rejected + c.timedOut;
  return el("span", {}, bar, ` ${done}/${live.devices} updated` + (bad ? `, ${bad} failed` : "") + (c.inProgress ? `, ${c.inProgress} running` : ""));
}

function renderOverview(o) {
  document.getElementById("updated").textContent = "updated " + new Date(o.at).toLocaleTimeString();
  const link = document.getElementById("temporal-link");
  if (o.temporalUI) { link.href = o.temporalUI; link.hidden = false; }
  const problems = document.getElementById("problems");
  problems.hidden = !(o.problems && o.problems.length);
  problems.textContent = (o.problems || []).join("; ");

  fill(document.querySelector("#rollouts tbody"), (o.rollouts || []).map((r) => {
    const tr = el("tr", { class: "clickable" + (r.rolloutId === selected ? " selected" : ""), "data-rollout": r.rolloutId },
      el("td", {}, r.rolloutId), el("td", {}, r.version),
      el("td", { class: "state " + r.state }, r.state),
      el("td", {}, r.live ? `${r.live.currentWave} of ${(r.live.waves || []).length}` : ""),
      el("td", {}, progress(r.live)), el("td", {}, ago(r.started)));
    tr.addEventListener("click", () => { location.hash = "rollout=" + encodeURIComponent(r.rolloutId); });
    return tr;
  }));

  const versions = document.getElementById("versions");
  versions.replaceChildren(...Object.entries(o.versions || {}).sort().map(([sw, vs]) =>
    el("table", { class: "version-table", "data-software": sw },
      el("thead", {}, el("tr", {}, el("th", {}, sw), el("th", {}, "devices"))),
      el("tbody", {}, ...Object.entries(vs).sort().map(([v, n]) =>
        el("tr", { "data-version": v }, el("td", {}, v), el("td", { class: "count" }, String(n))))))));

  indexed = !!o.indexed;
  if (indexed) {
    const f = o.fleet;
    document.getElementById("fleet-count").textContent = `${f.devices} devices, ${f.connected} connected`;
    document.getElementById("last-jobs").textContent = Object.keys(f.lastJobs || {}).length ?
      "Last job: " + Object.entries(f.lastJobs).sort().map(([st, n]) => `${n} ${st.toUpperCase()}`).join(", ") : "";
    if (!devicesLoaded || (!paged && Date.now() - devicesAt > 10000)) searchDevices(false);
  } else {
    // No fleet index: the inventory of at most a few thousand things, read from their shadows.
    const devices = o.devices || [];
    document.getElementById("fleet-count").textContent = `${devices.length}${o.truncated ? "+" : ""} things (no fleet index: search and filters need it)`;
    fill(document.querySelector("#devices tbody"), devices.map(deviceRow));
  }
}

// deviceRow is one device's row, in the inventory and in search results alike.
function deviceRow(d) {
  const sw = d.software || {}, lj = d.lastJob || {};
  const tr = el("tr", { class: "clickable", "data-thing": d.thing },
    el("td", {}, d.thing), el("td", { class: "v-core" }, sw.core || "—"), el("td", {}, sw.ota_agent || "—"),
    el("td", {}, d.reported ? (d.connected ? "yes" : "no") : "never reported"),
    el("td", {}, d.reported && d.lastSeen ? ago(d.lastSeen) : ""),
    el("td", { class: "state " + (lj.status || "") + (lj.late ? " late" : "") },
      lj.status ? `${lj.status}${lj.late ? ", late" : ""} (${lj.jobId})` : ""),
    el("td", {}, lj.late ? `updated late: the service timed the job out (${lj.recordedAs}) before this device's report; it runs ${lj.version}` : (lj.reason || "")));
  tr.addEventListener("click", () => { location.hash = "device=" + encodeURIComponent(d.thing); });
  return tr;
}

// The device list reads one page at a time from the fleet index, filtered on the server: it
// costs the same whatever the fleet's size.
let indexed = false, devicesLoaded = false, devicesAt = 0, paged = false, searchNext = "";
function deviceParams() {
  const p = new URLSearchParams();
  const add = (k, id) => { const v = document.getElementById(id).value.trim(); if (v) p.set(k, v); };
  add("q", "device-query"); add("software", "f-software"); add("version", "f-version");
  add("status", "f-status"); add("group", "f-group"); add("connected", "f-connected");
  return p;
}
async function searchDevices(more) {
  const body = document.querySelector("#devices tbody");
  const note = document.getElementById("device-search-note");
  const p = deviceParams();
  if (more && searchNext) p.set("next", searchNext);
  devicesLoaded = true; devicesAt = Date.now(); paged = !!more;
  try {
    const r = await api("devices?" + p.toString());
    if (!more) body.replaceChildren();
    body.append(...(r.devices || []).map(deviceRow));
    searchNext = r.next || "";
    document.getElementById("device-more").hidden = !searchNext;
    note.textContent = `${body.children.length}${searchNext ? "+" : ""} devices for ${r.query}`;
  } catch (e) {
    note.textContent = e.message;
  }
}

// A device's page: its versions, groups, job history with reasons, health and inventory.
let device = null;
async function refreshDevice() {
  if (!device) return;
  try {
    const d = await api("devices/" + encodeURIComponent(device));
    document.getElementById("device-page").hidden = false;
    document.getElementById("device-name").textContent = device;
    const sw = d.device.software || {};
    document.getElementById("device-summary").textContent =
      Object.entries(sw).sort().map(([k, v]) => `${k} ${v}`).join(", ") +
      ` · ${d.device.reported ? (d.device.connected ? "connected" : "not connected") : "never reported"}` +
      (d.device.reported ? `, last seen ${ago(d.device.lastSeen)}` : "") +
      ` · groups: ${(d.groups || []).join(", ") || "none"}`;
    fill(document.querySelector("#device-jobs tbody"), (d.jobs || []).map((j) => el("tr", { "data-job": j.jobId },
      el("td", {}, j.jobId), el("td", { class: "state " + j.status }, j.status), el("td", {}, ago(j.updated)),
      el("td", {}, (j.details || {}).reason || ""))));
    document.getElementById("device-health").textContent = d.health ? JSON.stringify(d.health, null, 2) : "no health report";
    document.getElementById("device-inventory").textContent = d.inventory ? JSON.stringify(d.inventory, null, 2) : "no inventory report";
  } catch (e) {
    flash(e.message, true);
  }
}

// Releases (newest first, with how many devices run each) and the v2 deployments, every 10 s.
async function refreshCatalog() {
  try {
    const r = await api("releases");
    fill(document.querySelector("#releases tbody"), (r.releases || []).map((x) => el("tr", { "data-release": `${x.software}/${x.version}` },
      el("td", {}, x.software), el("td", {}, x.version), el("td", { class: "count" }, x.devices < 0 ? "?" : String(x.devices)), el("td", {}, x.bucket))));
    document.getElementById("releases-note").textContent = [r.note, ...(r.problems || [])].filter(Boolean).join("; ") ||
      ((r.releases || []).length ? "" : "nothing published yet: starter release publish");
  } catch (e) { document.getElementById("releases-note").textContent = e.message; }
  try {
    const d = await api("deployments");
    fill(document.querySelector("#deployments tbody"), (d.deployments || []).map((x) => el("tr", { "data-deployment": x.deploymentId },
      el("td", {}, x.deploymentId), el("td", {}, x.thingGroup || ""), el("td", {}, String(x.revision || "")),
      el("td", {}, Object.entries(x.components || {}).sort().map(([k, v]) => `${k} ${v}`).join(", ")),
      el("td", {}, String(x.members || 0)), el("td", {}, String(x.jobs || 0)), el("td", {}, x.lastError || ""))));
  } catch (e) { /* shown on the next try */ }
}

// refreshAudit shows the newest entries of the audit log that match the filters.
async function refreshAudit() {
  const q = new URLSearchParams();
  for (const f of ["who", "action", "resource", "outcome"]) {
    const v = document.getElementById("audit-" + f).value.trim();
    if (v) q.set(f, v);
  }
  try {
    const r = await api("audit?" + q);
    fill(document.querySelector("#audit-log tbody"), (r.entries || []).map((e) => el("tr", { "data-seq": String(e.seq), class: "outcome-" + e.outcome },
      el("td", {}, new Date(e.time).toLocaleString()), el("td", {}, e.who + (e.role ? ` (${e.role})` : "")), el("td", {}, e.via),
      el("td", {}, e.from || ""), el("td", {}, e.action), el("td", {}, e.resource || ""), el("td", {}, e.reason || ""),
      el("td", { title: e.detail || "" }, e.outcome))));
    document.getElementById("audit-note").textContent = r.note || ((r.entries || []).length ? "" : "nothing recorded that matches");
  } catch (e) { document.getElementById("audit-note").textContent = e.message; }
}

// route shows the page the URL names (#rollout=ID, #device=NAME).
function route() {
  const h = new URLSearchParams(location.hash.slice(1));
  selected = h.get("rollout") || selected;
  device = h.get("device");
  document.getElementById("device-page").hidden = !device;
  refreshDetail(); refreshDevice();
}

const allowed = {
  approve: (s) => s.state === "AWAITING_APPROVAL",
  pause: (s) => !s.paused && ["RUNNING", "AWAITING_APPROVAL", "WAITING_FOR_WINDOW"].includes(s.state),
  resume: (s) => !!s.paused,
  cancel: (s) => ["RUNNING", "AWAITING_APPROVAL", "WAITING_FOR_WINDOW", "VALIDATING"].includes(s.state),
  "cancel-rollback": (s) => ["RUNNING", "AWAITING_APPROVAL", "WAITING_FOR_WINDOW"].includes(s.state),
  rollback: (s) => ["SUCCEEDED", "FAILED", "ABORTED", "CANCELED", "TIMED_OUT"].includes(s.state),
  "override-health": (s) => s.state === "OBSERVING_HEALTH" && (s.waves || []).some((w) => w.health && w.health.state === "BREACHED"),
};

// healthCell shows a wave's health gate: its state, the criteria against control, and a
// small chart of the updated (solid) and control (dashed) values over the window.
function healthCell(h) {
  if (!h) return el("td", {}, "");
  const td = el("td", { class: "health" }, el("span", { class: "state " + h.state }, h.state));
  if (h.reason) td.append(el("div", { class: "reason" }, h.reason));
  if (h.override) td.append(el("div", { class: "reason" }, `overridden by ${h.override.by}: ${h.override.reason}`));
  for (const v of h.last || []) {
    td.append(el("div", { class: v.breached ? "criterion breached" : "criterion" },
      `${v.criterion}: ${v.updated} (n=${v.updatedN}) vs control ${v.control} (n=${v.controlN})`));
  }
  const pts = h.history || [];
  if (pts.length > 1) {
    const ns = "http://www.w3.org/2000/svg", W = 160, H = 32;
    const top = Math.max(...pts.map((p) => Math.max(p.updated, p.control)), 1e-9);
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("class", "chart");
    for (const [key, cls] of [["updated", "updated"], ["control", "control"]]) {
      const line = document.createElementNS(ns, "polyline");
      line.setAttribute("points", pts.map((p, i) => `${(i * (W - 2)) / (pts.length - 1) + 1},${H - 1 - (p[key] / top) * (H - 2)}`).join(" "));
      line.setAttribute("class", cls);
      svg.append(line);
    }
    td.append(svg);
  }
  return td;
}

function renderDetail(d) {
  const s = d.status;
  selectedStatus = s;
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-id").textContent = s.rolloutId;
  const st = document.getElementById("detail-state");
  const ended = ["SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELED", "ABORTED", "INVALID"].includes(s.state);
  st.textContent = s.paused && !ended ? s.state + " (paused)" : s.state;
  st.className = "state " + s.state;
  document.getElementById("detail-message").textContent = s.message || "";
  const h = document.getElementById("detail-history");
  h.hidden = !d.history; if (d.history) h.href = d.history;
  const mayOperate = !me || me.open || me.mayOperate;
  for (const b of document.querySelectorAll(".actions button")) {
    b.disabled = !mayOperate || !allowed[b.dataset.action](s);
    b.title = mayOperate ? "" : `${me.user} (${me.role}) may not steer rollouts: it needs the operator or admin role`;
  }
  // A later rollout moved this one's devices on: they would refuse its rollback.
  const moved = d.movedOnBy || [];
  const rb = document.querySelector('button[data-action="rollback"]');
  if (moved.length) rb.disabled = true;
  document.getElementById("moved-on").textContent = moved.length ?
    `Roll back is off: later rollouts (${moved.join(", ")}) target these devices, which no longer run what it would undo` : "";
  fill(document.querySelector("#waves tbody"), (s.waves || []).map((w) => el("tr", { "data-wave": w.wave },
    el("td", {}, String(w.wave)), el("td", { class: "state " + w.state }, w.state), el("td", {}, String(w.devices)),
    el("td", {}, String(w.counts.succeeded)), el("td", {}, String(w.counts.failed + w.counts.rejected + w.counts.timedOut)),
    el("td", {}, String(w.counts.inProgress)), el("td", {}, String(w.counts.queued)), el("td", {}, String(w.counts.canceled)),
    healthCell(w.health))));
  const t = d.downloads || {};
  document.getElementById("downloads").textContent = (t.delta || t.full) ?
    `Downloads: ${t.delta} delta, ${t.full} full; ${bytes(t.bytesFetched)} fetched of ${bytes(t.artifactBytes)} in full ` +
    `(${Math.round((100 * t.bytesFetched) / Math.max(t.artifactBytes, 1))} %)` : "";
  fill(document.querySelector("#results tbody"), (d.devices || []).map((r) => el("tr", { "data-thing": r.thing },
    el("td", {}, r.thing), el("td", {}, r.wave ? String(r.wave) : "rollback"), el("td", { class: "state " + r.status }, r.status),
    el("td", {}, r.installedVersion || ""), el("td", {}, r.previousVersion || ""),
    el("td", { class: "download", title: r.downloadNote || "" }, r.download ? `${r.download}: ${bytes(r.bytesFetched)} of ${bytes(r.artifactBytes)}` : ""),
    el("td", {}, r.reason || ""))));
}

// bytes is n in B, KiB, MiB or GiB.
function bytes(n) {
  n = n || 0;
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(1)} ${units[i]}`;
}

function flash(msg, error) {
  const f = document.getElementById("flash");
  f.textContent = msg; f.hidden = false; f.className = "flash" + (error ? " error" : "");
}

async function act(action) {
  if (!selected) return;
  let reason = "from the console";
  if (action === "override-health") {
    reason = prompt("Why may the rollout go on past its breached health gate? (recorded with the rollout)");
    if (!reason) return;
  } else if (action !== "approve" && action !== "pause" && action !== "resume" &&
      !confirm(`${action} rollout ${selected}?`)) return;
  for (const b of document.querySelectorAll(".actions button")) b.disabled = true;
  try {
    const r = await api(`rollouts/${encodeURIComponent(selected)}/${action}`, {
      method: "POST", body: JSON.stringify({ reason }),
    });
    flash(r.message);
  } catch (e) {
    flash(`${action} refused: ${e.message}`, true);
  }
  refreshDetail();
}

async function refreshDetail() {
  if (!selected) return;
  try { renderDetail(await api("rollouts/" + encodeURIComponent(selected))); } catch (e) { flash(e.message, true); }
}

let ticks = 0;
async function tick() {
  // The overview every 2 s; the open rollout every second, the open device every 5 s. Nothing
  // while the sign-in form is up.
  if (!me) {
    setTimeout(tick, 1000);
    return;
  }
  if (ticks % 2 === 0) {
    try { renderOverview(await api("overview")); } catch (e) { flash("console API: " + e.message, true); }
  }
  await refreshDetail();
  if (ticks % 5 === 0) await refreshDevice();
  if (ticks % 10 === 0) refreshCatalog();
  if (ticks % 5 === 0) refreshAudit();
  ticks++;
  setTimeout(tick, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll(".actions button")) b.addEventListener("click", () => act(b.dataset.action));
  document.getElementById("device-search-form").addEventListener("submit", (e) => { e.preventDefault(); searchDevices(false); });
  document.getElementById("device-more").addEventListener("click", () => searchDevices(true));
  window.addEventListener("hashchange", route);
  document.getElementById("signin-form").addEventListener("submit", signIn);
  document.getElementById("audit-form").addEventListener("submit", (e) => { e.preventDefault(); refreshAudit(); });
  document.getElementById("sign-out").addEventListener("click", signOut);
  api("session").then((s) => {
    sso = !!s.sso;
    if (s.signedIn) signedIn(s); else showSignIn("");
    route();
    tick();
  }).catch((e) => flash("console API: " + e.message, true));
});
