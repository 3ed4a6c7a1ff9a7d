// The operator's page (SPEC 9): polls /ops.json every second; a table row per node, charts of
// this node's last minutes drawn on canvas, and the live matches. Nothing from another host.
"use strict";

const fmt = (v, digits = 0) =>
  v === null || v === undefined ? "–" : Number(v).toLocaleString("en", { maximumFractionDigits: digits });
const ms = (v) => (v === null || v === undefined ? "–" : v >= 1000 ? fmt(v / 1000, 1) + " s" : fmt(v, 1) + " ms");
const bytes = (v) => (v === null || v === undefined ? "–" : v >= 1 << 20 ? fmt(v / (1 << 20), 1) + " MiB" : v >= 1024 ? fmt(v / 1024, 1) + " KiB" : fmt(v) + " B");

function row(node, sample, me) {
  const tr = document.createElement("tr");
  const v = sample.viewers || {};
  const total = Object.values(v).reduce((a, b) => a + b, 0);
  const cells = [
    node + (me ? " (this node)" : ""), fmt(total), fmt(v.tcp_v1), fmt(v.tcp_v2), fmt(v.ws), fmt(v.sse),
    fmt(sample.events_per_s, 1), fmt(sample.deliveries_per_s), ms(sample.lag_p50_ms), ms(sample.lag_p99_ms),
    fmt(sample.too_slow_total), fmt(sample.accept_errors_total), bytes(sample.rss_per_viewer),
    fmt(sample.open_fds) + " / " + fmt(sample.max_fds),
  ];
  cells.forEach((text, i) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (i === 0 && me) td.className = "me";
    tr.appendChild(td);
  });
  return tr;
}

function chart(id, points) {
  const canvas = document.getElementById(id);
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  const style = getComputedStyle(document.body);
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...points.map((p) => p || 0));
  ctx.strokeStyle = style.getPropertyValue("--line");
  ctx.fillStyle = style.color;
  ctx.font = "11px system-ui";
  for (let i = 0; i <= 2; i++) {
    const y = pad / 2 + ((h - pad) * i) / 2;
    ctx.beginPath(); ctx.moveTo(pad + 20, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(fmt(max * (1 - i / 2), max < 10 ? 1 : 0), 0, y + 4);
  }
  ctx.strokeStyle = style.getPropertyValue("--accent");
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach((p, i) => {
    const x = pad + 20 + ((w - pad - 20) * i) / Math.max(1, points.length - 1);
    const y = pad / 2 + (h - pad) * (1 - (p || 0) / max);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillText(points.length + " s", w - 40, h - 2);
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const res = await fetch("/ops.json", { cache: "no-store" });
    if (!res.ok) throw new Error("HTTP " + res.status);
    const ops = await res.json();
    const body = document.querySelector("#nodes tbody");
    body.replaceChildren();
    if (ops.latest) body.appendChild(row(ops.node, ops.latest, true));
    for (const n of ops.nodes) body.appendChild(row(n.node + " " + n.http, n.sample, false));
    const h = ops.history;
    chart("c-viewers", h.map((s) => Object.values(s.viewers).reduce((a, b) => a + b, 0)));
    chart("c-events", h.map((s) => s.events_per_s));
    chart("c-deliveries", h.map((s) => s.deliveries_per_s));
    chart("c-lag", h.map((s) => s.lag_p99_ms));
    const list = document.getElementById("matches");
    list.replaceChildren(...ops.matches.map((m) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = "/?mid=" + encodeURIComponent(m.id);
      a.textContent = `${m.home} ${m.home_score}–${m.visit_score} ${m.visit}`;
      li.append(a, ` · ${m.period} · seq ${m.seq}`);
      return li;
    }));
    status.textContent = `${1 + ops.nodes.length} node(s) · updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    status.textContent = "cannot reach the node: " + e.message;
  }
}

refresh();
setInterval(refresh, 1000);
