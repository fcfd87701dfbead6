// taskpulse web UI: renders what /api/v1/stream and the task/agent pages send. It formats
// numbers and lays them out; it computes none (every count, rate and percentile comes from
// the server's ClickHouse queries). Text from events is only ever set as textContent.
"use strict";

const $ = (id) => document.getElementById(id);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// ---------------------------------------------------------------- formatting
function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  if (ms < 3600000) return `${(ms / 60000).toFixed(1)} min`;
  return `${(ms / 3600000).toFixed(1)} h`;
}
const fmtPct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(x >= 0.995 || x === 0 ? 0 : 1)} %`);
const fmtNum = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
function fmtTime(ms, withMs) {
  if (!ms) return "–";
  const d = new Date(ms);
  const t = d.toISOString().slice(11, withMs ? 23 : 19);
  return `${t} UTC`;
}
function fmtDateTime(ms) {
  if (!ms) return "–";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 23) + " UTC";
}

// ---------------------------------------------------------------- auth
async function ensureSession() {
  const probe = await fetch("/api/status", { credentials: "same-origin" });
  if (probe.status !== 401) return;
  const dlg = $("login");
  const form = $("login-form");
  await new Promise((resolve) => {
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const token = $("login-token").value.trim();
      const r = await fetch("/api/v1/session", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
        body: JSON.stringify({ token }),
      });
      $("login-token").value = "";
      if (r.ok) { dlg.close(); resolve(); return; }
      let msg = `the token was refused (${r.status})`;
      try { const b = await r.json(); msg = (b.error && (b.error.message || b.error)) || msg; } catch (e) { /* not JSON */ }
      $("login-error").textContent = msg;
    };
    dlg.showModal();
    $("login-token").focus();
  });
}

// ---------------------------------------------------------------- live stream
let source = null;
let lastSnapshot = null;
let lastAt = 0;

function filterParams() {
  const p = new URLSearchParams();
  for (const k of ["task_type", "agent", "group"]) {
    const v = $(`f-${k}`).value;
    if (v) p.set(k, v);
  }
  return p;
}

function connect() {
  if (source) source.close();
  const qs = filterParams().toString();
  source = new EventSource(`/api/v1/stream${qs ? "?" + qs : ""}`, { withCredentials: true });
  setConn("connecting", "connecting…");
  source.addEventListener("snapshot", (ev) => {
    const snap = JSON.parse(ev.data);
    lastAt = Date.now();
    if (snap.error) { setConn("down", `ClickHouse: ${snap.error}`); return; }
    lastSnapshot = snap;
    render(snap);
    setConn("live", "live");
    $("updated").textContent = `updated ${fmtTime(snap.now_ms)}`;
  });
  source.onerror = async () => {
    setConn("down", "reconnecting…");
    if (source.readyState === EventSource.CLOSED) {
      await ensureSession().catch(() => {});
      setTimeout(connect, 2000);
    }
  };
}

function setConn(state, text) {
  const el = $("conn");
  el.dataset.state = state;
  if (el.textContent !== text) el.textContent = text;  // announced (aria-live) only when it changes
}

setInterval(() => {
  if (lastAt && Date.now() - lastAt > 20000) setConn("stale", `no update for ${Math.round((Date.now() - lastAt) / 1000)} s`);
}, 5000);

// ---------------------------------------------------------------- overview
function render(s) {
  renderFilters(s.options, s.filter);
  renderKpis(s.kpis);
  renderAlerts(s.alerts);
  renderBoard(s.board);
  renderAgents(s.agents);
  renderGroups(s.groups);
  renderCharts(s.series);
  document.body.dataset.ready = "1";
}

function renderKpis(k) {
  $("k-active").textContent = fmtNum(k.active_tasks);
  $("k-done").textContent = fmtNum(k.done_today);
  $("k-done-sub").textContent = `succeeded since 00:00 UTC, of ${fmtNum(k.finished_today)} finished`;
  $("k-rate").textContent = fmtPct(k.success_rate);
  $("k-p95").textContent = fmtMs(k.p95_execution_ms);
  $("k-online").textContent = fmtNum(k.agents_online);
  $("k-busy").textContent = fmtNum(k.agents_busy);
  $("k-offline").textContent = fmtNum(k.agents_offline);
  $("k-agents-sub").textContent = `${fmtNum(k.agents_total)} known · online = up, idle`;
  $("k-alerts").textContent = fmtNum(k.alerts_firing);
  $("k-alerts-sub").textContent = k.alerts_firing ? "see the banner above" : "all quiet";
  document.querySelector('[data-kpi="alerts"]').classList.toggle("bad", k.alerts_firing > 0);
  document.querySelector('[data-kpi="success_rate"]').classList.toggle("warn", k.success_rate !== null && k.success_rate < 0.9);
  document.querySelector('[data-kpi="agents"]').classList.toggle("warn", k.agents_offline > 0);
}

function renderAlerts(alerts) {
  const box = $("alerts");
  box.hidden = alerts.length === 0;
  $("alert-list").replaceChildren(...alerts.map((a) => h("li", {},
    h("span", { class: `sev sev-${a.severity}`, text: a.severity }), " ",
    h("b", { text: a.rule }), " ", a.summary || "",
    h("span", { class: "legend-note", text: ` since ${fmtTime(a.fired_ms)}` }))));
}

function renderFilters(options, current) {
  for (const k of ["task_type", "agent", "group"]) {
    const sel = $(`f-${k}`);
    const want = [...new Set([...(options[k] || []), ...(current[k] ? [current[k]] : [])])];
    const have = [...sel.options].slice(1).map((o) => o.value);
    if (want.join("\u0000") !== have.join("\u0000")) {
      sel.replaceChildren(h("option", { value: "", text: "all" }), ...want.map((v) => h("option", { value: v, text: v })));
    }
    sel.value = current[k] || "";
  }
}

const END_BAD = new Set(["FAILED", "ABANDONED", "CANCELLED", "REJECTED"]);

function renderBoard(board) {
  const cols = board.columns.map((c) => {
    const cls = ["col", c.count === 0 ? "empty" : "", END_BAD.has(c.state) ? "end-bad" : "", c.state === "COMPLETED" ? "end-ok" : ""];
    const list = h("ol", { "aria-label": `${c.state} tasks` }, ...c.tasks.map((t) => h("li", {}, taskButton(t))));
    return h("section", { class: cls.join(" "), "data-state": c.state, "aria-label": `${c.state}: ${c.count} tasks` },
      h("h3", {}, h("span", { text: c.state }), h("span", { class: "n", "data-count": c.count, text: fmtNum(c.count) })),
      list,
      c.count > c.tasks.length ? h("p", { class: "more", text: `+${fmtNum(c.count - c.tasks.length)} more` }) : null);
  });
  $("board").replaceChildren(...cols);
  const f = lastSnapshot ? lastSnapshot.filter : {};
  const parts = Object.entries(f).filter(([, v]) => v).map(([k, v]) => `${k.replace("_", " ")} = ${v}`);
  $("board-note").textContent = parts.length ? `filtered: ${parts.join(", ")}` : "open tasks, and tasks finished in the last hour";
}

function taskButton(t) {
  return h("button", { type: "button", class: "task", "data-task": t.id, onclick: () => openTask(t.id),
    title: `${t.id} · ${t.task_type || "untyped"}${t.agent ? " · " + t.agent : ""}`,
    "aria-label": `Task ${t.id}, ${t.task_type || "untyped"}${t.agent ? ", agent " + t.agent : ""}${t.retries ? ", " + t.retries + " retries" : ""}${t.invalid_transitions ? ", " + t.invalid_transitions + " invalid transitions" : ""}` },
    h("span", { class: "id", text: shortId(t.id, 12) }),
    h("span", { class: "meta" }, `${t.task_type || "–"}${t.agent ? " · " + t.agent : ""}`,
      t.retries ? h("span", { class: "badge retry", text: `↻${t.retries}` }) : null,
      t.invalid_transitions ? h("span", { class: "badge invalid", text: `⚠${t.invalid_transitions}` }) : null),
    t.progress > 0 && t.progress < 100 ? h("span", { class: "bar", "aria-hidden": "true" }, h("span", { style: `width:${t.progress}%` })) : null);
}

// the end of a long id is the part that tells tasks apart: keep it (the full id is in the title)
function shortId(id, keep = 14) { return id.length > keep + 2 ? `…${id.slice(-keep)}` : id; }

function renderAgents(agents) {
  if (!agents.length) { $("agents").replaceChildren(h("p", { class: "none", text: "No agent has reported yet." })); return; }
  $("agents").replaceChildren(...agents.map((a) => h("li", {},
    h("button", { type: "button", class: `agent s-${a.status}`, "data-agent": a.agent, onclick: () => openAgent(a.agent) },
      h("span", { class: "name", text: a.agent }), h("span", { class: `pill s-${a.status}`, text: a.status }),
      h("span", { class: "line" }, a.current_task ? ["on ", h("b", { text: shortId(a.current_task, 11), title: a.current_task })] : (a.active_tasks ? "" : "idle"),
        a.active_tasks ? `${a.current_task ? " · " : ""}${a.active_tasks} active` : ""),
      h("span", { class: "stats" }, h("span", {}, h("b", { text: fmtPct(a.utilization) }), "utilization"),
        h("span", {}, h("b", { text: fmtPct(a.success_rate_today) }), "success today"),
        h("span", {}, h("b", { text: fmtNum(a.finished_today) }), "finished today")),
      h("span", { class: "bar", "aria-hidden": "true" }, h("span", { style: `width:${(a.utilization || 0) * 100}%` }))))));
}

function renderGroups(groups) {
  if (!groups.length) { $("groups").replaceChildren(h("p", { class: "none", text: "No active group." })); return; }
  $("groups").replaceChildren(...groups.map((g) => h("li", { "data-group": g.group },
    h("div", {}, h("span", { class: "gname", text: g.group }), ` ${g.percentage ?? 0} % done`),
    h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": g.percentage ?? 0,
      "aria-label": `${g.group} progress` },
      h("span", { class: "done", style: `width:${(g.completed / g.total) * 100}%` }),
      h("span", { class: "failed", style: `width:${(g.failed / g.total) * 100}%` }),
      h("span", { class: "running", style: `width:${(g.in_progress / g.total) * 100}%` })),
    h("div", { class: "gmeta" }, `${g.completed} completed · ${g.failed} failed · ${g.in_progress} running · ${g.pending} waiting of ${g.total} · `,
      g.eta_ms ? `ETA ${fmtTime(g.eta_ms)}` : (g.pending + g.in_progress ? "ETA: not enough finished yet" : "done")))));
}

// ---------------------------------------------------------------- charts (uPlot)
const charts = {};

function chartWidth(id) { return Math.max(280, $(id).clientWidth || 600); }

const utc = (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");
// the time axis in UTC, 24 h (as every time on the page)
const hhmm = { values: (u, splits) => splits.map((s) => new Date(s * 1000).toISOString().slice(11, 16)) };

function makeChart(id, opts, data) {
  if (typeof uPlot === "undefined") return null;
  const el = $(id);
  el.replaceChildren();
  const u = new uPlot({ width: chartWidth(id), height: 200, tzDate: utc, ...opts }, data, el);
  return u;
}

function renderCharts(series) {
  const tp = [series.t, series.succeeded, series.failed];
  const lat = [series.t, series.p50_ms.map((v) => (v === null ? null : v / 1000)), series.p95_ms.map((v) => (v === null ? null : v / 1000))];
  if (typeof uPlot === "undefined") return;
  const bars = (align) => uPlot.paths.bars({ size: [0.45, 40], align });
  if (!charts.tp) {
    charts.tp = makeChart("chart-throughput", {
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
      axes: [hhmm, { label: "tasks / min" }],
      series: [{}, { label: "succeeded", fill: "rgba(23,105,47,.75)", stroke: "#17692f", paths: bars(-1), points: { show: false } },
        { label: "failed", fill: "rgba(179,38,30,.8)", stroke: "#b3261e", paths: bars(1), points: { show: false } }],
    }, tp);
  } else charts.tp.setData(tp);
  if (!charts.lat) {
    charts.lat = makeChart("chart-latency", {
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
      axes: [hhmm, { label: "seconds", values: (u, vals) => vals.map((v) => v.toFixed(1)) }],
      series: [{}, { label: "p50", stroke: "#0b5cad", width: 2, spanGaps: false },
        { label: "p95", stroke: "#b3261e", width: 2, dash: [6, 3], spanGaps: false }],
    }, lat);
  } else charts.lat.setData(lat);
}

window.addEventListener("resize", () => {
  for (const [k, id] of [["tp", "chart-throughput"], ["lat", "chart-latency"]]) {
    if (charts[k]) charts[k].setSize({ width: chartWidth(id), height: 200 });
  }
});

// ---------------------------------------------------------------- detail pages
function openTask(id) { location.hash = `task=${encodeURIComponent(id)}`; }
function openAgent(id) { location.hash = `agent=${encodeURIComponent(id)}`; }

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && (body.error.message || body.error)) || `HTTP ${r.status}`);
  return body;
}

async function route() {
  const dlg = $("detail");
  const m = /^#(task|agent)=(.+)$/.exec(location.hash);
  if (!m) { if (dlg.open) dlg.close(); return; }
  const [, kind, raw] = m;
  const id = decodeURIComponent(raw);
  $("detail-h").textContent = `${kind === "task" ? "Task" : "Agent"} ${id}`;
  $("detail-body").replaceChildren(h("p", { class: "none", text: "loading…" }));
  if (!dlg.open) dlg.showModal();
  try {
    if (kind === "task") renderTask(await getJSON(`/api/v1/tasks/${encodeURIComponent(id)}/timeline`));
    else renderAgent(await getJSON(`/api/v1/agents/${encodeURIComponent(id)}/activity`));
    dlg.dataset.loaded = `${kind}:${id}`;
  } catch (e) {
    $("detail-body").replaceChildren(h("p", { class: "error", role: "alert", text: String(e.message || e) }));
  }
}

function fact(label, value, bad) {
  return h("div", { class: bad ? "bad" : "" }, h("dt", { text: label }), h("dd", { text: value }));
}

function renderTask(t) {
  const x = t.execution || {};
  const body = [];
  body.push(h("p", {}, h("span", { class: `state ${t.state || ""}`, "data-field": "state", text: t.state || "unknown" }),
    ` ${t.task_type || "untyped"}`, t.agent ? [" · agent ", h("a", { href: `#agent=${encodeURIComponent(t.agent)}`, text: t.agent })] : "",
    t.group ? ` · group ${t.group}` : "", t.priority ? ` · priority ${t.priority}` : "",
    x.outcome ? [" · outcome ", h("span", { class: `outcome-${x.outcome}`, text: x.outcome })] : ""));
  if (x.request) body.push(h("p", {}, h("b", { text: "Request: " }), x.request));
  if (x.error) body.push(h("p", { class: "error" }, h("b", { text: "Error: " }), x.error));
  body.push(h("dl", { class: "facts", "aria-label": "Durations" },
    fact("Queue wait", fmtMs(x.queue_wait_ms)), fact("Execution", fmtMs(x.execution_ms)),
    fact("Review", fmtMs(x.review_ms)), fact("Cycle", fmtMs(x.cycle_ms)),
    fact("Retries", fmtNum(t.retries ?? 0), (t.retries || 0) > 0),
    fact("Invalid transitions", fmtNum(t.invalid_transitions ?? 0), (t.invalid_transitions || 0) > 0),
    fact("Created", fmtTime(t.created_ms)), fact("Finished", t.finished ? fmtTime(t.finished_ms) : "open")));
  if (!t.execution) body.push(h("p", { class: "legend-note", text: "Durations are recorded when the task finishes." }));

  const rows = t.timeline.map((e) => {
    const evals = e.event_type === "task.assigned" ? e.data.evaluations : null;
    const detail = Object.entries(e.data).filter(([k]) => !["evaluations", "task_type"].includes(k))
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join("  ");
    return [h("tr", { class: e.invalid ? "invalid" : "", "data-event": e.id },
      h("td", { class: "when", text: fmtTime(e.time_ms, true) }),
      h("td", {}, h("b", { text: e.event_type }), e.invalid ? h("span", { class: "badge invalid", text: `invalid ${e.invalid.replace("->", " → ")}` }) : null),
      h("td", {}, e.state ? h("span", { class: `state ${e.state}`, text: e.state }) : "–"),
      h("td", { class: "data", text: detail })),
    evals ? h("tr", { class: "assign" }, h("td", {}), h("td", { colspan: 3 }, confidenceTable(evals, e.data.agent_id))) : null];
  });
  body.push(h("h3", { text: `Timeline (${t.timeline.length} events, by event time)` }),
    h("table", { class: "timeline" }, h("thead", {}, h("tr", {}, h("th", { text: "event time" }), h("th", { text: "event" }),
      h("th", { text: "state after" }), h("th", { text: "details" }))), h("tbody", {}, ...rows.flat())));
  $("detail-body").replaceChildren(...body);
}

function confidenceTable(evals, chosen) {
  const entries = Object.entries(evals).sort((a, b) => b[1] - a[1]);
  return h("table", { class: "confidence", "aria-label": "Every agent's confidence for this assignment" },
    h("thead", {}, h("tr", {}, h("th", { text: "agent" }), h("th", { text: "confidence" }))),
    h("tbody", {}, ...entries.map(([agent, c]) => h("tr", { class: agent === chosen ? "chosen" : "" },
      h("td", {}, agent, agent === chosen ? [" ", h("span", { class: "chosen-mark", text: "✔ chosen" })] : null),
      h("td", {}, h("span", { class: "conf" }, h("span", { class: "bar", "aria-hidden": "true" }, h("span", { style: `width:${c * 100}%` })),
        h("span", { text: Number(c).toFixed(2) })))))));
}

function renderAgent(a) {
  const o = a.overview || {};
  const body = [
    h("p", {}, h("span", { class: `pill s-${o.status || "unknown"}`, text: o.status || "unknown" }),
      ` last seen ${fmtTime(o.last_seen_ms)}`, o.current_task ? [" · now on ", h("a", { href: `#task=${encodeURIComponent(o.current_task)}`, text: o.current_task })] : ""),
    h("dl", { class: "facts" }, fact("Utilization", fmtPct(o.utilization)), fact("Success today", fmtPct(o.success_rate_today)),
      fact("Finished today", fmtNum(o.finished_today)), fact("Active tasks", fmtNum(o.active_tasks)),
      fact("CPU", o.cpu_percent === null || o.cpu_percent === undefined ? "–" : `${o.cpu_percent.toFixed(0)} %`),
      fact("Memory", o.memory_mb === null || o.memory_mb === undefined ? "–" : `${fmtNum(Math.round(o.memory_mb))} MB`),
      fact("Up for", o.uptime_s ? fmtMs(o.uptime_s * 1000) : "–")),
    h("h3", { text: "Busy share per minute, last hour" }),
    h("div", { id: "chart-agent", class: "chart", role: "img", "aria-label": "Share of each minute the agent was busy, last hour" }),
    h("h3", { text: `Recent executions (${a.executions.length})` }),
    h("table", { class: "executions" },
      h("thead", {}, h("tr", {}, ...["finished", "task", "type", "outcome", "queue wait", "execution", "retries", "confidence"]
        .map((c, i) => h("th", { class: i >= 4 ? "num" : "", text: c })))),
      h("tbody", {}, ...a.executions.map((e) => h("tr", {},
        h("td", { class: "when", text: fmtTime(e.finished_ms) }),
        h("td", {}, h("a", { href: `#task=${encodeURIComponent(e.task_id)}`, text: e.task_id })),
        h("td", { text: e.task_type }), h("td", { class: `outcome-${e.outcome}`, text: e.outcome, title: e.error || null }),
        h("td", { class: "num", text: fmtMs(e.queue_wait_ms) }), h("td", { class: "num", text: fmtMs(e.execution_ms) }),
        h("td", { class: "num", text: fmtNum(e.retries) }), h("td", { class: "num", text: e.confidence === null ? "–" : e.confidence.toFixed(2) }))))),
  ];
  $("detail-body").replaceChildren(...body);
  if (typeof uPlot !== "undefined") {
    const w = Math.max(260, $("chart-agent").clientWidth - 8);
    new uPlot({ width: w, height: 180, tzDate: utc, scales: { x: { time: true }, y: { range: [0, 100] } },
      axes: [hhmm, { label: "% busy" }],
      series: [{}, { label: "busy %", stroke: "#0b5cad", fill: "rgba(11,92,173,.15)", width: 2, spanGaps: false, points: { show: false } }] },
    [a.utilization.t, a.utilization.busy.map((v) => (v === null ? null : v * 100))], $("chart-agent"));
  }
}

$("detail-close").addEventListener("click", () => { history.pushState(null, "", location.pathname + location.search); route(); });
$("detail").addEventListener("close", () => { if (/^#(task|agent)=/.test(location.hash)) history.pushState(null, "", location.pathname + location.search); });
window.addEventListener("hashchange", route);

$("filters").addEventListener("change", connect);
$("filters").addEventListener("reset", () => setTimeout(connect, 0));

(async () => {
  await ensureSession().catch(() => {});
  connect();
  route();
})();
