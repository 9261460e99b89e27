/* Convergence dashboard. Hand-written, no framework, no network access beyond this server.
 *
 * One EventSource (/api/events) pushes everything: a snapshot first, then readings, alerts,
 * reports, station changes and commands as they happen; the page never polls the server.
 * A one-second local timer only re-renders clocks and "3 s ago" ages.
 * Every value from the server reaches the page through textContent or an attribute,
 * never as HTML.
 */
"use strict";
(() => {
  const LEVELS = ["quiet", "watch", "warning", "converged"];
  const DARK_AFTER_S = 30;      // a station not heard of for this long is shown dark
  const MAX_ROWS = 400;         // station rows drawn at once (filter to narrow)
  const MAX_ALERTS = 200;
  const MIN_WINDOW_S = 120;     // the meter charts show at least two minutes
  const SVG = "http://www.w3.org/2000/svg";
  const KIND = { osint_news: "news", osint_social: "social", market_price: "prices",
                 market_volume: "volumes", sensor: "sensors" };
  const ACTION = { set_thresholds: "thresholds", burst_mode: "burst", set_interval: "interval",
                   quarantine: "quarantine", resume: "resume" };

  const S = {
    regions: new Map(),   // name -> {row, series: [[t, score]...]}
    alerts: [],           // newest first
    reports: new Map(),   // report_id -> latest summary
    stations: new Map(),  // id -> row
    controls: false, historyS: 3600, offset: 0, source: "",
    token: sessionStorage.getItem("convergence-token") || "",
    drawer: null,         // {reportId, revision}
    ended: false,
  };
  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }
  const levelOf = (x) => (LEVELS.includes(x) ? x : "quiet");
  const now = () => Date.now() / 1000 + S.offset;
  const hms = (t) => (t ? new Date(t * 1000).toISOString().slice(11, 19) : "--:--:--");
  function ago(t) {
    if (t === null || t === undefined) return "—";
    const d = Math.max(0, now() - t);
    if (d < 60) return `${Math.round(d)} s`;
    if (d < 3600) return `${Math.round(d / 60)} min`;
    return `${(d / 3600).toFixed(1)} h`;
  }
  function toast(text, ok) {
    const t = $("toast");
    t.textContent = text;
    t.className = ok ? "toast ok" : "toast";
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, ok ? 3500 : 7000);
  }

  /* ---------------- token (control buttons) ---------------- */
  (function tokenFromHash() {
    const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
    if (m) {
      S.token = decodeURIComponent(m[1]);
      sessionStorage.setItem("convergence-token", S.token);
      history.replaceState(null, "", location.pathname + location.search);
    }
  })();
  function renderControl() {
    $("control").hidden = !S.controls;
    const st = $("control-state");
    st.textContent = S.token ? "control unlocked" : "control locked";
    st.className = S.token ? "unlocked" : "locked";
    $("token").hidden = !!S.token;
    $("token-use").textContent = S.token ? "Lock" : "Unlock";
  }
  $("token-use").addEventListener("click", () => {
    if (S.token) { S.token = ""; sessionStorage.removeItem("convergence-token"); }
    else {
      S.token = $("token").value.trim();
      if (S.token) sessionStorage.setItem("convergence-token", S.token);
      $("token").value = "";
    }
    renderControl();
    renderTable();
  });
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") $("token-use").click(); });

  /* ---------------- map ---------------- */
  async function loadWorld() {
    try {
      const r = await fetch("/static/world.json");
      const w = await r.json();
      $("land").setAttribute("d", w.path);
    } catch (e) { /* the map still shows regions and stations without the outline */ }
    const g = $("graticule");
    for (let lon = -150; lon <= 150; lon += 30) {
      const x = (lon + 180) / 360 * 1000;
      g.appendChild(svg("line", { class: "grat", x1: x, x2: x, y1: 0, y2: 500 }));
    }
    for (let lat = -60; lat <= 60; lat += 30) {
      const y = (90 - lat) / 180 * 500;
      g.appendChild(svg("line", { class: "grat", x1: 0, x2: 1000, y1: y, y2: y }));
    }
  }

  const regionEls = new Map();  // name -> {rect, label, score}
  function renderRegion(name) {
    const reg = S.regions.get(name);
    if (!reg) return;
    const r = reg.row, lvl = levelOf(r.level);
    if (!r.box) { renderStrip(); return; }
    let e = regionEls.get(name);
    const global = name.toLowerCase() === "global";
    if (!e) {
      const [x0, y0, x1, y1] = r.box;
      const rect = svg("rect", { x: x0 + 1, y: y0 + 1, width: Math.max(4, x1 - x0 - 2),
                                 height: Math.max(4, y1 - y0 - 2), rx: 6 });
      const title = svg("title");
      rect.appendChild(title);
      const lx = global ? x0 + 12 : x0 + 6, ly = global ? y1 - 12 : y0 + 14;
      const label = svg("text", { x: lx, y: ly, class: "rlabel" });
      const nm = svg("tspan");
      nm.textContent = name.toUpperCase() + " ";
      const sc = svg("tspan", { class: "sc" });
      label.append(nm, sc);
      $("regions").appendChild(rect);
      $("labels").appendChild(label);
      e = { rect, label, sc, title };
      regionEls.set(name, e);
    }
    e.rect.setAttribute("class", `region ${lvl}${global ? " global" : ""}`);
    e.rect.dataset.region = name;
    e.rect.dataset.level = lvl;
    e.label.setAttribute("class", `rlabel ${lvl}`);
    e.sc.textContent = Number(r.score).toFixed(0);
    e.title.textContent = `${name}: ${lvl}, score ${Number(r.score).toFixed(1)}` +
      (r.osint_corroborated ? "" : " (no independent OSINT corroboration)");
  }
  function renderStrip() {
    const off = [...S.regions.values()].filter((g) => !g.row.box);
    $("strip").hidden = off.length === 0;
    const list = $("strip-list");
    list.replaceChildren(...off.map((g) => {
      const c = el("div", `chip ${levelOf(g.row.level)}`);
      c.dataset.region = g.row.region;
      c.append(el("span", "", g.row.region), el("b", "", Number(g.row.score).toFixed(0)));
      return c;
    }));
  }

  const dotEls = new Map();
  function stationShown(s) {
    if (s.state === "stopped") return "stopped";
    if (now() - s.at_s > DARK_AFTER_S) return "dark";
    return s.state;
  }
  function dotClass(s) {
    const st = stationShown(s);
    if (st !== "running") return st;
    if (s.node_state) return s.node_state;
    return inOpenAlert(s.station_id) ? "anomalous" : "normal";
  }
  function inOpenAlert(id) {
    const a = S.alerts[0];
    return !!a && a.stations.includes(id) && now() - a.time_s < 120;
  }
  function renderDot(s) {
    let c = dotEls.get(s.station_id);
    if (!s.xy) { if (c) { c.remove(); dotEls.delete(s.station_id); } return; }
    if (!c) {
      c = svg("circle", { r: 2.7 });
      c.appendChild(svg("title"));
      $("stations").appendChild(c);
      dotEls.set(s.station_id, c);
    }
    c.setAttribute("cx", s.xy[0]);
    c.setAttribute("cy", s.xy[1]);
    c.setAttribute("class", `st ${dotClass(s)}`);
    c.firstChild.textContent = `${s.station_id} · ${KIND[s.source_kind] || s.source_kind} · ` +
      `${stationShown(s).replace("_", " ")}${s.node_state ? " · " + s.node_state : ""}`;
  }

  /* ---------------- meter charts ---------------- */
  const meterEls = new Map();
  function ensureMeter(name) {
    let m = meterEls.get(name);
    if (m) return m;
    const box = $("meters");
    const empty = box.querySelector(".empty");
    if (empty) empty.remove();
    const card = el("div", "meter");
    card.dataset.region = name;
    const head = el("div", "meter-head");
    const nm = el("span", "name", name);
    const badge = el("span", "badge quiet", "quiet");
    const score = el("span", "score", "0");
    head.append(nm, badge, score);
    const canvas = el("canvas");
    const foot = el("div", "meter-foot");
    const from = el("span", "", ""), to = el("span", "", "now");
    foot.append(from, to);
    card.append(head, canvas, foot);
    // keep cards in name order
    const after = [...box.children].find((c) => c.dataset.region > name);
    box.insertBefore(card, after || null);
    m = { card, badge, score, canvas, from };
    meterEls.set(name, m);
    return m;
  }
  const pending = new Set();
  function queueDraw(name) {
    if (pending.size === 0) requestAnimationFrame(flushDraw);
    pending.add(name);
  }
  function flushDraw() {
    for (const n of pending) drawMeter(n);
    pending.clear();
  }
  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function drawMeter(name) {
    const reg = S.regions.get(name);
    if (!reg) return;
    const m = ensureMeter(name), r = reg.row, lvl = levelOf(r.level);
    m.card.className = `meter ${lvl}`;
    m.badge.className = `badge ${lvl}`;
    m.badge.textContent = lvl;
    m.score.textContent = Number(r.score).toFixed(1);
    const cv = m.canvas, dpr = window.devicePixelRatio || 1;
    const w = cv.clientWidth || 240, h = cv.clientHeight || 74;
    if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) {
      cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr);
    }
    const g = cv.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const pts = reg.series;
    const t1 = pts.length ? pts[pts.length - 1][0] : now();
    const first = pts.length ? pts[0][0] : t1;
    const span = Math.min(S.historyS, Math.max(MIN_WINDOW_S, t1 - first));
    const t0 = t1 - span;
    const X = (t) => ((t - t0) / span) * (w - 2) + 1;
    const Y = (s) => h - 2 - (Math.max(0, Math.min(100, s)) / 100) * (h - 6);
    m.from.textContent = `−${span >= 3600 ? "60 min" : span >= 120 ? Math.round(span / 60) + " min" : Math.round(span) + " s"}`;
    // thresholds
    const th = r.thresholds || [30, 55, 75];
    ["--watch", "--warning", "--converged"].forEach((v, i) => {
      g.strokeStyle = cssVar(v);
      g.globalAlpha = 0.75;
      g.setLineDash([4, 4]);
      g.lineWidth = 1;
      g.beginPath();
      g.moveTo(0, Y(th[i]) + 0.5);
      g.lineTo(w, Y(th[i]) + 0.5);
      g.stroke();
    });
    g.setLineDash([]);
    g.globalAlpha = 1;
    if (pts.length < 1) return;
    const color = lvl === "quiet" ? "#7fa6d9" : cssVar(`--${lvl}`);
    g.beginPath();
    let started = false;
    for (const [t, s] of pts) {
      if (t < t0) continue;
      if (!started) { g.moveTo(X(t), Y(s)); started = true; } else g.lineTo(X(t), Y(s));
    }
    g.strokeStyle = color;
    g.lineWidth = 1.6;
    g.stroke();
    if (started) {  // a faint fill under the line
      g.lineTo(X(t1), h);
      g.lineTo(X(Math.max(t0, first)), h);
      g.closePath();
      g.globalAlpha = 0.14;
      g.fillStyle = color;
      g.fill();
      g.globalAlpha = 1;
    }
  }

  /* ---------------- alerts ---------------- */
  function alertRow(a, live) {
    const lvl = levelOf(a.level);
    const li = el("li", `alert ${lvl}${live ? " fresh" : ""}`);
    li.tabIndex = 0;
    li.dataset.alertId = a.alert_id;
    li.dataset.reportId = a.report_id;
    li.dataset.region = a.region;
    li.dataset.level = lvl;
    li.dataset.live = live ? "1" : "0";
    const badge = el("span", `badge ${lvl}`, lvl);
    const kinds = (a.source_kinds || []).map((k) => KIND[k] || k).join(", ");
    li.append(el("span", "t", hms(a.time_s)), badge,
              el("span", "where", a.region), el("span", "sc", Number(a.score).toFixed(1)),
              el("span", "what", `${a.n_stations} stations · ${kinds}` +
                 (a.osint_corroborated ? "" : " · no OSINT corroboration")));
    li.title = `report ${a.report_id} · ${a.time}`;
    li.addEventListener("click", () => openReport(a.report_id, null, a));
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") openReport(a.report_id, null, a); });
    return li;
  }
  function renderAlerts() {
    const list = $("alerts");
    if (!S.alerts.length) list.replaceChildren(el("li", "empty", "no alerts yet"));
    else list.replaceChildren(...S.alerts.map((a) => alertRow(a, false)));
    $("alert-count").textContent = String(S.alerts.length);
  }
  function addAlert(a) {
    S.alerts = [a, ...S.alerts.filter((x) => x.alert_id !== a.alert_id)].slice(0, MAX_ALERTS);
    const list = $("alerts");
    const empty = list.querySelector(".empty");
    if (empty) empty.remove();
    const old = list.querySelector(`[data-alert-id="${CSS.escape(a.alert_id)}"]`);
    if (old) old.remove();
    list.prepend(alertRow(a, true));
    while (list.children.length > MAX_ALERTS) list.lastChild.remove();
    $("alert-count").textContent = String(S.alerts.length);
    for (const id of a.stations || []) { const s = S.stations.get(id); if (s) renderDot(s); }
  }

  /* ---------------- stations ---------------- */
  const rowEls = new Map();
  const ORDER = { quarantined: 0, backing_off: 1, dark: 2, running: 4, stopped: 5 };
  const NODE_ORDER = { anomalous: 0, elevated: 1, cooling: 2 };
  function rank(s) {
    const st = stationShown(s);
    const r = ORDER[st] ?? 3;
    if (st === "running" && s.node_state in NODE_ORDER) return 3 - 0.1 * (3 - NODE_ORDER[s.node_state]);
    return r;
  }
  function lastCommand(s) {
    const c = (s.commands || [])[s.commands.length - 1];
    return c || null;
  }
  function makeRow(s) {
    const tr = el("tr");
    tr.dataset.station = s.station_id;
    const cells = {};
    for (const k of ["id", "region", "state", "last", "rate", "cmd", "act"]) {
      cells[k] = el("td", k === "last" || k === "rate" ? "num" : k);
      tr.appendChild(cells[k]);
    }
    const btn = el("button", "", "Quarantine");
    btn.type = "button";
    btn.addEventListener("click", () => onControl(tr.dataset.station, btn));
    cells.act.appendChild(btn);
    return { tr, cells, btn };
  }
  function fillRow(r, s) {
    const st = stationShown(s);
    r.cells.id.textContent = s.station_id;
    r.cells.region.replaceChildren(s.region, el("span", "dim", ` · ${KIND[s.source_kind] || s.source_kind}`));
    r.cells.state.replaceChildren(el("span", `state ${st}`, st.replace("_", " ")));
    if (s.node_state) {  // the pipeline's verdict: a dot coloured as on the map, named in its title
      const dot = el("i", `dot ${s.node_state}`);
      dot.title = `node ${s.node_state}`;
      r.cells.state.prepend(dot, " ");
    }
    r.cells.state.dataset.state = st;
    r.cells.state.dataset.node = s.node_state || "";
    r.cells.last.textContent = ago(s.last_event_s);
    r.cells.rate.textContent = s.rate_per_s === null || s.rate_per_s === undefined ? "—" : Number(s.rate_per_s).toFixed(1);
    const c = lastCommand(s);
    const cmd = r.cells.cmd;
    cmd.replaceChildren();
    if (c) {
      cmd.append(`${ACTION[c.action] || c.action} `);
      const mark = c.ack ? el("span", c.ack.applied ? "ok" : "no", c.ack.applied ? "✓" : "✗")
                         : el("span", "", "…");
      mark.title = c.ack ? (c.ack.applied ? "acknowledged" : `refused: ${c.ack.detail}`) : "no acknowledgement yet";
      cmd.append(mark);
      cmd.title = (s.commands || []).map((x) => `${hms(x.issued_at_s)} ${x.action} (${x.reason})` +
        (x.ack ? ` → ${x.ack.applied ? "applied" : "refused"}: ${x.ack.detail}` : " → no ack")).join("\n");
      cmd.dataset.command = c.command_id;
      cmd.dataset.ack = c.ack ? (c.ack.applied ? "applied" : "refused") : "none";
    } else { cmd.textContent = "—"; cmd.title = ""; delete cmd.dataset.command; delete cmd.dataset.ack; }
    const act = s.state === "quarantined" ? "resume" : "quarantine";
    r.cells.act.hidden = !S.controls;
    if (!r.btn.classList.contains("confirm") && !r.btn.disabled) {
      r.btn.textContent = act === "resume" ? "Resume" : "Quarantine";
      r.btn.dataset.action = act;
    }
    r.btn.disabled = r.btn.disabled || s.state === "stopped";
  }
  let tableQueued = false;
  function renderTable() {
    if (tableQueued) return;
    tableQueued = true;
    requestAnimationFrame(() => { tableQueued = false; drawTable(); });
  }
  function drawTable() {
    const words = $("filter").value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    let rows = [...S.stations.values()];
    if (words.length) {  // every word must match somewhere in the row
      rows = rows.filter((s) => {
        const hay = `${s.station_id} ${s.region} ${s.source_kind} ${KIND[s.source_kind] || ""} ${stationShown(s)} ${s.node_state || ""}`.toLowerCase();
        return words.every((w) => hay.includes(w));
      });
    }
    rows.sort((a, b) => rank(a) - rank(b) || (a.station_id < b.station_id ? -1 : 1));
    const shown = rows.slice(0, MAX_ROWS);
    const body = $("station-rows");
    const keep = new Set(shown.map((s) => s.station_id));
    for (const [id, r] of rowEls) if (!keep.has(id)) { r.tr.remove(); rowEls.delete(id); }
    let prev = null;
    for (const s of shown) {
      let r = rowEls.get(s.station_id);
      if (!r) { r = makeRow(s); rowEls.set(s.station_id, r); }
      fillRow(r, s);
      const want = prev ? prev.nextSibling : body.firstChild;
      if (want !== r.tr) body.insertBefore(r.tr, want);
      prev = r.tr;
    }
    const more = $("station-more");
    more.hidden = rows.length <= MAX_ROWS;
    more.textContent = `showing ${MAX_ROWS} of ${rows.length} stations; filter to narrow`;
  }
  $("filter").addEventListener("input", renderTable);

  async function onControl(id, btn) {
    if (!S.token) {
      toast("Enter the control token printed when the dashboard started (top right of this panel).");
      $("token").focus();
      return;
    }
    if (!btn.classList.contains("confirm")) {  // two clicks: a stray click sends nothing
      btn.classList.add("confirm");
      btn.textContent = "Confirm?";
      btn.title = `click again within 4 s to ${btn.dataset.action} ${id}`;
      clearTimeout(btn.timer);
      btn.timer = setTimeout(() => { btn.classList.remove("confirm"); renderTable(); }, 4000);
      return;
    }
    clearTimeout(btn.timer);
    btn.classList.remove("confirm");
    btn.disabled = true;
    btn.textContent = "sending…";
    const action = btn.dataset.action;
    try {
      const r = await fetch(`/api/stations/${encodeURIComponent(id)}/${action}`, {
        method: "POST", headers: { "Authorization": `Bearer ${S.token}`, "Content-Type": "application/json" },
        body: "{}",
      });
      const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
      if (r.status === 401) { S.token = ""; sessionStorage.removeItem("convergence-token"); renderControl(); }
      if (!r.ok) toast(body.error || `HTTP ${r.status}`);
      else {
        const ack = body.acks[0];
        toast(`${id}: ${action} ${ack.applied ? "applied" : "refused"} — ${ack.detail}`, ack.applied);
      }
    } catch (e) {
      toast(`${action} for ${id} failed: the dashboard did not answer (${e})`);
    } finally {
      btn.disabled = false;
      renderTable();
    }
  }

  /* ---------------- report drawer ---------------- */
  async function openReport(reportId, revision, alert) {
    let data;
    try {
      const r = await fetch(`/api/reports/${encodeURIComponent(reportId)}` + (revision ? `?revision=${revision}` : ""));
      data = await r.json();
      if (!r.ok) { toast(data.error || `HTTP ${r.status}`); return; }
    } catch (e) { toast(`the report could not be fetched (${e})`); return; }
    const rep = data.report;
    S.drawer = { reportId, revision: rep.revision };
    $("drawer-title").textContent = rep.title;
    const revs = $("drawer-revs");
    revs.replaceChildren(...data.revisions.map((n) => {
      const b = el("button", n === rep.revision ? "on" : "", `r${n}`);
      b.type = "button";
      b.title = `revision ${n}`;
      b.addEventListener("click", () => openReport(reportId, n));
      return b;
    }));
    const url = `/reports/${encodeURIComponent(reportId)}?revision=${rep.revision}`;
    $("drawer-open").href = url;
    $("report-frame").src = url;
    $("drawer").hidden = false;
    $("drawer").dataset.reportId = reportId;
    $("drawer").dataset.revision = String(rep.revision);
  }
  function closeDrawer() { $("drawer").hidden = true; S.drawer = null; }
  $("drawer-close").addEventListener("click", closeDrawer);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDrawer(); });

  /* ---------------- header ---------------- */
  function renderSummary() {
    const by = { converged: 0, warning: 0, watch: 0, quiet: 0 };
    for (const g of S.regions.values()) by[levelOf(g.row.level)]++;
    const st = {};
    for (const s of S.stations.values()) { const k = stationShown(s); st[k] = (st[k] || 0) + 1; }
    const box = $("summary");
    const parts = [];
    const add = (label, n, cls) => { const sp = el("span", cls || ""); sp.append(el("b", "", n), ` ${label}`); parts.push(sp); };
    add("converged", by.converged); add("warning", by.warning); add("watch", by.watch);
    add("stations", S.stations.size);
    if (st.quarantined) add("quarantined", st.quarantined);
    if (st.backing_off) add("backing off", st.backing_off);
    if (st.dark) add("dark", st.dark);
    if (S.rejected && S.rejected.count) {
      const sp = el("span", "warnbox", `${S.rejected.count} malformed input(s) skipped`);
      sp.title = S.rejected.last;
      parts.push(sp);
    }
    box.replaceChildren(...parts);
    $("source").textContent = S.source;
  }
  setInterval(() => {
    $("clock").textContent = `${hms(now())} UTC`;
    renderTable();
    renderSummary();
    for (const s of S.stations.values()) if (now() - s.at_s > DARK_AFTER_S) renderDot(s);
  }, 1000);

  /* ---------------- the event stream ---------------- */
  function applyReading(row) {
    let reg = S.regions.get(row.region);
    const { series, ...rest } = row;
    if (!reg) { reg = { row: rest, series: [] }; S.regions.set(row.region, reg); }
    reg.row = rest;
    if (series) reg.series = series;
    else {
      const last = reg.series[reg.series.length - 1];
      if (!last || row.time_s >= last[0]) reg.series.push([row.time_s, row.score]);
      const horizon = row.time_s - S.historyS;
      while (reg.series.length && reg.series[0][0] < horizon) reg.series.shift();
    }
    renderRegion(row.region);
    ensureMeter(row.region);
    queueDraw(row.region);
  }
  function applyStation(row) {
    // an update after the first carries only what changes: merge it into what is known
    const s = { ...(S.stations.get(row.station_id) || {}), ...row };
    S.stations.set(row.station_id, s);
    renderDot(s);
  }
  function onSnapshot(d) {
    S.source = d.source; S.controls = d.controls; S.historyS = d.history_s;
    if (d.server_time_s) S.offset = d.server_time_s - Date.now() / 1000;
    S.rejected = d.rejected;
    S.regions.clear();
    for (const e of regionEls.values()) { e.rect.remove(); e.label.remove(); }
    regionEls.clear();
    for (const m of meterEls.values()) m.card.remove();
    meterEls.clear();
    for (const r of d.regions) applyReading(r);
    if (!d.regions.length) $("meters").replaceChildren(el("div", "empty", "waiting for the first meter reading…"));
    S.alerts = d.alerts.slice(0, MAX_ALERTS);
    renderAlerts();
    S.reports = new Map(d.reports.map((r) => [r.report_id, r]));
    S.stations.clear();
    for (const c of dotEls.values()) c.remove();
    dotEls.clear();
    for (const s of d.stations) applyStation(s);
    renderStrip();
    renderControl();
    renderTable();
    renderSummary();
  }
  function connect() {
    const es = new EventSource("/api/events");
    const conn = $("conn");
    const on = (kind, fn) => es.addEventListener(kind, (ev) => {
      let d;
      try { d = JSON.parse(ev.data); } catch (e) { return; }
      fn(d);
    });
    es.onopen = () => { conn.dataset.state = "live"; conn.textContent = "live"; };
    es.onerror = () => {
      conn.dataset.state = "reconnecting";
      conn.textContent = S.ended ? "run ended" : "reconnecting";
    };
    on("snapshot", onSnapshot);
    on("ended", (d) => {
      S.ended = true;
      es.close();
      conn.dataset.state = "ended";
      conn.textContent = "ended";
      conn.title = d.reason;
      toast(d.reason, true);
    });
    on("reading", (d) => { applyReading(d); });
    on("alert", (d) => { addAlert(d); renderSummary(); });
    on("report", (d) => {
      S.reports.set(d.report_id, d);
      if (S.drawer && S.drawer.reportId === d.report_id && !$("drawer").hidden) {
        const revs = $("drawer-revs");
        if (!revs.querySelector(`[title="revision ${d.revision}"]`)) {
          const b = el("button", "", `r${d.revision}`);
          b.type = "button";
          b.title = `revision ${d.revision}`;
          b.addEventListener("click", () => openReport(d.report_id, d.revision));
          revs.appendChild(b);
        }
      }
    });
    on("stations", (d) => { for (const s of d.stations) applyStation(s); renderTable(); });
    on("command", (d) => {
      for (const [id, entry] of Object.entries(d.stations)) {
        const s = S.stations.get(id);
        if (!s) continue;
        const cmds = (s.commands || []).filter((c) => c.command_id !== entry.command_id);
        cmds.push(entry);
        s.commands = cmds.slice(-5);
      }
      renderTable();
    });
    window.addEventListener("beforeunload", () => es.close());
  }

  window.addEventListener("resize", () => { for (const n of S.regions.keys()) queueDraw(n); });
  loadWorld().finally(connect);
})();
