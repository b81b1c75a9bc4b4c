// corral dashboard: plain JavaScript over the native API (/api/v1). The token is
// kept in sessionStorage and sent as a Bearer header; live events come from the
// Server-Sent Events stream read with fetch (EventSource cannot send headers).
"use strict";

const $ = (sel) => document.querySelector(sel);
let token = sessionStorage.getItem("corral-token") || "";
let lastRevision = 0;
let streamAbort = null;

function size(mib) {
  if (mib >= 1024) return (mib / 1024).toFixed(mib % 1024 ? 1 : 0) + "G";
  return mib + "M";
}

// HTML-escape for text and for attribute values (quotes included: a value
// inside data-name="..." must not be able to end the attribute).
const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

async function api(path, options = {}) {
  const resp = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
  });
  if (resp.status === 401) {
    logout("Your token was refused.");
    throw new Error("unauthorized");
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = body.error || {};
    throw new Error(err.message || `HTTP ${resp.status}`);
  }
  return body;
}

function bar(used, total) {
  const pct = total ? Math.min(100, (100 * used) / total) : 0;
  return `<span class="bar${pct > 90 ? " full" : ""}"><i style="width:${pct.toFixed(0)}%"></i></span>`;
}

function renderStatus(s) {
  $("#cluster-name").textContent = s.cluster || "";
  $("#revision").textContent = `revision ${s.revision}`;
  lastRevision = Math.max(lastRevision, s.revision);
  const byStatus = Object.entries(s.instances.by_status)
    .map(([k, v]) => `${v} ${k}`)
    .join(", ");
  const n1 = s.n_plus_one.failing_nodes.length
    ? `<span class="bad">failing on ${esc(s.n_plus_one.failing_nodes.join(", "))}</span>`
    : `<span class="ok">ok</span>`;
  const health = Object.entries(s.nodes.by_health)
    .map(([k, v]) => `${v.length} ${k}`)
    .join(", ");
  $("#summary").innerHTML = `
    <div class="card">nodes<b>${s.nodes.total}</b>${esc(health)}</div>
    <div class="card">instances<b>${s.instances.total}</b>${esc(byStatus)}</div>
    <div class="card">degraded disks<b class="${s.instances.degraded.length ? "bad" : "ok"}">${s.instances.degraded.length}</b></div>
    <div class="card">N+1<b>${n1}</b></div>`;
  $("#alerts").innerHTML = s.alerts.map((a) => `${esc(a.severity)}: ${esc(a.subject)}: ${esc(a.message)}`).join("<br>");
}

function renderNodes(nodes) {
  $("#nodes tbody").innerHTML = nodes
    .map(
      (n) => `<tr data-node="${esc(n.name)}">
      <td>${esc(n.name)}</td>
      <td class="${n.health === "online" ? "ok" : "bad"}">${esc(n.health)}${n.flags.length ? " (" + esc(n.flags.join(",")) + ")" : ""}</td>
      <td>${bar(n.memory_used_mib, n.memory_mib)}${size(n.memory_used_mib)} / ${size(n.memory_mib)}</td>
      <td>${bar(n.disk_used_mib, n.disk_mib)}${size(n.disk_used_mib)} / ${size(n.disk_mib)}</td>
      <td class="${n.n1_ok ? "ok" : "bad"}">${n.n1_ok ? "ok" : "needs " + size(n.n1_reserve_mib)}</td>
      <td>${n.primaries}</td><td>${n.secondaries}</td></tr>`
    )
    .join("");
}

const ACTIONS = ["start", "stop", "reboot", "migrate", "failover"];

function renderInstances(rows) {
  const text = $("#filter").value.trim().toLowerCase();
  const onlyProblems = $("#only-problems").checked;
  const shown = rows.filter((r) => {
    if (onlyProblems && r.status === "running" && !r.degraded) return false;
    if (!text) return true;
    return [r.name, r.status, r.primary, r.secondary, ...(r.tags || [])].join(" ").toLowerCase().includes(text);
  });
  $("#instances tbody").innerHTML = shown
    .map(
      (r) => `<tr data-instance="${esc(r.name)}">
      <td>${esc(r.name)}</td>
      <td class="status status-${esc(r.status)}">${esc(r.status)}${r.degraded ? ", degraded" : ""}</td>
      <td>${esc(r.primary || "-")}</td><td>${esc(r.secondary || "-")}</td>
      <td>${size(r.memory_mib)}</td><td>${size(r.disk_mib)}</td>
      <td>${ACTIONS.map((a) => `<button data-action="${a}" data-name="${esc(r.name)}">${a}</button>`).join("")}<button data-console="${esc(r.name)}" data-primary="${esc(r.primary || "")}">console</button></td></tr>`
    )
    .join("");
}

function renderJobs(jobs) {
  $("#jobs").innerHTML = jobs
    .slice(-30)
    .reverse()
    .map((j) => `<li>${esc(j.job_id)} ${esc(j.kind)} ${esc((j.targets || []).join(" "))} <b>${esc(j.status)}</b> ${esc(j.error || "")}</li>`)
    .join("");
}

let instanceRows = [];

async function refresh() {
  if (!token) return;
  try {
    const [status, nodes, instances, jobs] = await Promise.all([
      api("/api/v1/status"),
      api("/api/v1/nodes"),
      api("/api/v1/instances"),
      api("/api/v1/jobs"),
    ]);
    renderStatus(status);
    renderNodes(nodes);
    instanceRows = instances;
    renderInstances(instances);
    renderJobs(jobs);
  } catch (e) {
    if (e.message !== "unauthorized") $("#alerts").textContent = e.message;
  }
}

async function refreshLosses() {
  try {
    const events = await api("/api/v1/events?type=node.health&type=node.fenced&type=node.recovered&limit=200");
    $("#losses").innerHTML = events
      .filter((e) => e.type !== "node.health" || ["lost", "partitioned"].includes(e.health))
      .reverse()
      .map((e) => `<li>${new Date(e.time * 1000).toLocaleString()} ${esc(e.node)} ${esc(e.type === "node.health" ? e.health : e.type.slice(5))} — ${esc(e.reason || e.detail || "")}</li>`)
      .join("");
  } catch (e) {
    /* shown by refresh */
  }
}

function addEvent(ev) {
  const li = document.createElement("li");
  li.dataset.revision = ev.revision;
  li.textContent = `${ev.revision} ${ev.type} ${(ev.objects || []).join(" ")} ${ev.actor} ${ev.reason || ""}`;
  const list = $("#events");
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
}

async function stream() {
  if (streamAbort) streamAbort.abort();
  streamAbort = new AbortController();
  let since = lastRevision + 1;
  for (;;) {
    try {
      const resp = await fetch(`/api/v1/events/stream?since=${since}`, {
        headers: { Authorization: `Bearer ${token}`, "Last-Event-ID": String(since - 1) },
        signal: streamAbort.signal,
      });
      if (!resp.ok || !resp.body) throw new Error(`stream: HTTP ${resp.status}`);
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let pending = false;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let data = "";
          let id = null;
          for (const line of block.split("\n")) {
            if (line.startsWith("data:")) data += line.slice(5).trim();
            else if (line.startsWith("id:")) id = parseInt(line.slice(3).trim(), 10);
          }
          if (!data) continue;
          try {
            addEvent(JSON.parse(data));
          } catch (e) {
            continue;
          }
          if (id) since = id + 1;
          if (!pending) {
            pending = true;
            setTimeout(() => {
              pending = false;
              refresh();
            }, 300);
          }
        }
      }
    } catch (e) {
      if (streamAbort.signal.aborted) return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function logout(message) {
  token = "";
  sessionStorage.removeItem("corral-token");
  if (streamAbort) streamAbort.abort();
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
}

async function start() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  await refresh();
  if (!token) return;
  refreshLosses();
  stream();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  token = $("#token").value.trim();
  try {
    await api("/api/v1/status");
  } catch (e) {
    if (e.message !== "unauthorized") $("#login-error").textContent = e.message;
    return;
  }
  sessionStorage.setItem("corral-token", token);
  start();
});

$("#logout").addEventListener("click", () => logout());
// The node view: clicking a node shows its details and narrows the instance list to it.
$("#nodes").addEventListener("click", async (ev) => {
  const row = ev.target.closest("tr[data-node]");
  if (!row) return;
  const name = row.dataset.node;
  $("#filter").value = name;
  renderInstances(instanceRows);
  try {
    const n = await api(`/api/v1/nodes/${encodeURIComponent(name)}`);
    $("#node-detail").hidden = false;
    $("#node-detail").innerHTML = `<h2>Node ${esc(n.name)}</h2>
      <p>${esc(n.health)}${n.health_detail ? " — " + esc(n.health_detail) : ""};
      address ${esc(n.address)}:${esc(n.port)}, replication ${esc(n.replication_address)};
      fence agent ${esc(n.fence_agent || "none")}${n.fenced_by ? ", fenced by " + esc(n.fenced_by) : ""}</p>
      <p>primaries: ${esc((n.instances_primary || []).join(", ") || "none")}<br>
      secondaries: ${esc((n.instances_secondary || []).join(", ") || "none")}</p>`;
  } catch (e) {
    $("#alerts").textContent = e.message;
  }
});
$("#filter").addEventListener("input", () => renderInstances(instanceRows));
$("#only-problems").addEventListener("change", () => renderInstances(instanceRows));
// How to reach an instance's console: nothing is opened from the browser (the
// serial console is relayed over SSH from the primary node), so the button says how.
function showConsoleHelp(name, primary) {
  const box = $("#console-help");
  box.hidden = false;
  box.innerHTML = primary
    ? `<h3>Console of ${esc(name)}</h3>
      <p>The serial console of ${esc(name)} is on its primary node, <b>${esc(primary)}</b>.
      From a machine holding the cluster's SSH client key and known-hosts file, run:</p>
      <pre>corral instance console ${esc(name)} --known-hosts KNOWN_HOSTS --client-key KEY</pre>
      <p>(or set CORRAL_KNOWN_HOSTS and CORRAL_CLIENT_KEY). Ctrl-] quits. The console follows
      the instance after a migration or failover: run the command again.</p>`
    : `<h3>Console of ${esc(name)}</h3><p>${esc(name)} is not placed yet: it has no console.</p>`;
}

$("#instances").addEventListener("click", (ev) => {
  const button = ev.target.closest("button[data-console]");
  if (button) showConsoleHelp(button.dataset.console, button.dataset.primary);
});
$("#instances").addEventListener("click", async (ev) => {
  const button = ev.target.closest("button[data-action]");
  if (!button) return;
  button.disabled = true;
  try {
    const r = await api(`/api/v1/instances/${encodeURIComponent(button.dataset.name)}/${button.dataset.action}`, {
      method: "POST",
      body: "{}",
    });
    $("#alerts").textContent = `${button.dataset.action} ${button.dataset.name}: job ${r.job_id} accepted`;
  } catch (e) {
    $("#alerts").textContent = `${button.dataset.action} ${button.dataset.name}: ${e.message}`;
  }
  button.disabled = false;
  refresh();
});

setInterval(refresh, 5000);
setInterval(refreshLosses, 15000);
if (token) start();
