import Hummingbird

/// The dashboard: one page, served from the binary, with nothing fetched from elsewhere. It reads
/// the REST API once and follows the event stream from there.
enum Dashboard {
    static func response() -> Response {
        Response(
            status: .ok,
            headers: [
                .contentType: "text/html; charset=utf-8",
                .contentSecurityPolicy: "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ],
            body: ResponseBody(byteBuffer: ByteBuffer(string: page)))
    }

    static let page = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>necro</title>
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <style>
        :root { --bg:#0f1115; --panel:#171a21; --line:#2a2f3a; --text:#d7dae0; --dim:#8a909c;
          --blocked:#5a6070; --ready:#3d7bd9; --running:#e0a42f; --done:#3fa66b; --failed:#d9534f; --cancelled:#8b6bb5; --skipped:#39404d; }
        * { box-sizing: border-box; }
        body { margin:0; font:13px/1.4 system-ui, sans-serif; background:var(--bg); color:var(--text); }
        header { display:flex; gap:16px; align-items:center; padding:8px 14px; border-bottom:1px solid var(--line); }
        header h1 { font-size:15px; margin:0; }
        header select, header input, button { background:var(--panel); color:var(--text); border:1px solid var(--line); border-radius:4px; padding:3px 6px; }
        button { cursor:pointer; } button:disabled { opacity:.4; cursor:default; }
        #counts span { margin-right:10px; } #conn { margin-left:auto; color:var(--dim); }
        main { display:grid; grid-template-columns: 1fr 380px; grid-template-rows: minmax(280px, 55vh) auto; gap:10px; padding:10px; }
        section { background:var(--panel); border:1px solid var(--line); border-radius:6px; padding:8px; overflow:auto; }
        section h2 { font-size:12px; text-transform:uppercase; letter-spacing:.05em; color:var(--dim); margin:0 0 6px; }
        #graph-section { grid-column:1; grid-row:1; } #side { grid-column:2; grid-row:1 / span 2; }
        #timeline-section { grid-column:1; grid-row:2; }
        svg text { fill:var(--text); font-size:11px; pointer-events:none; }
        .task rect { stroke:#0008; stroke-width:1; rx:4; cursor:pointer; }
        .task.selected rect { stroke:#fff; stroke-width:2; }
        .edge { stroke:#4a5060; stroke-width:1; fill:none; }
        [data-state=blocked] rect, .bar.blocked { fill:var(--blocked); } [data-state=ready] rect { fill:var(--ready); }
        [data-state=running] rect, .bar.running { fill:var(--running); } [data-state=done] rect, .bar.done { fill:var(--done); }
        [data-state=failed] rect, .bar.failed { fill:var(--failed); } [data-state=cancelled] rect { fill:var(--cancelled); }
        [data-state=skipped] rect { fill:var(--skipped); stroke-dasharray:3 2; stroke:var(--dim); }
        .pool { margin:4px 0 8px; } .meter { height:8px; background:var(--bg); border-radius:4px; overflow:hidden; }
        .meter div { height:100%; background:var(--running); }
        .span { margin-left:12px; border-left:1px solid var(--line); padding-left:6px; }
        .span-head { color:var(--dim); } .span[data-state=done] > .span-head { color:#3a3; } .span[data-state=failed] > .span-head { color:#d33; }
        .gate-output { color:inherit; background:var(--bg); padding:4px; max-height:160px; overflow:auto; } .gate-output.failed { border-left:2px solid #d33; }
        .ev { cursor:pointer; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; } .ev .t { color:var(--dim); } pre { white-space:pre-wrap; margin:2px 0 6px; color:var(--dim); }
        #log { max-height:220px; overflow:auto; background:var(--bg); padding:6px; font:11px/1.3 monospace; white-space:pre-wrap; }
        .muted { color:var(--dim); }
        </style>
        </head>
        <body>
        <header>
          <h1>necro</h1>
          <select id="spec"></select>
          <div id="counts"></div>
          <span id="cost" class="muted" title="what the agents reported they cost, all tasks of this taskset"></span>
          <span id="conn">connecting…</span>
          <input id="token" type="password" placeholder="token (admin, or necro token --read)" size="22">
        </header>
        <main>
          <section id="graph-section"><h2>Tasks</h2><svg id="graph" width="100" height="100"></svg></section>
          <section id="timeline-section"><h2>Runners by pool</h2><svg id="timeline" width="100" height="40"></svg></section>
          <section id="side">
            <h2>Pools</h2><div id="pools"></div>
            <h2>Task</h2><div id="task" class="muted">click a task</div>
            <h2>Log</h2><div id="log" class="muted"></div>
          </section>
        </main>
        <script>
        "use strict";
        const $ = (id) => document.getElementById(id);
        const NS = "http://www.w3.org/2000/svg";
        const state = { spec: null, tasks: new Map(), runners: new Map(), lastId: 0, selected: null, source: null, started: Date.now() };
        const tokenFromHash = new URLSearchParams(location.hash.slice(1)).get("token");
        if (tokenFromHash) { localStorage.setItem("necro-token", tokenFromHash); history.replaceState(null, "", location.pathname); }
        $("token").value = localStorage.getItem("necro-token") || "";
        $("token").addEventListener("change", () => localStorage.setItem("necro-token", $("token").value));
        const headers = () => { const t = $("token").value; return t ? { Authorization: "Bearer " + t } : {}; };
        async function get(path) { const r = await fetch(path, { headers: headers() }); if (!r.ok) throw new Error(path + ": " + r.status); return r.json(); }
        async function post(path, body) {
          const r = await fetch(path, { method: "POST", headers: { ...headers(), "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
          if (!r.ok) { const e = await r.json().catch(() => ({})); alert((e.error && e.error.message) || r.status); }
        }
        const el = (tag, attrs, text) => { const e = document.createElementNS(NS, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; return e; };
        const key = (spec, id) => spec + "/" + id;

        // Which state an event puts its task in.
        function stateAfter(e, current) {
          const p = e.payload || {};
          switch (e.event_type) {
            case "TaskReady": return "ready";
            case "TaskAssigned": case "RunnerAdopted": return "running";
            case "TaskCompleted": return "done";
            case "TaskFailed": return "failed";
            case "TaskCancelled": return "cancelled";
            case "TaskSkipped": return "skipped";
            case "TaskBlocked": case "recovery_requeued": return "blocked";
            case "TaskRetryScheduled": return p.requested ? "blocked" : "ready";
            case "RunnerFinished": return p.interrupted ? "ready" : current;
            default: return current;
          }
        }

        async function loadSpecs() {
          const sets = await get("/v1/tasksets");
          const select = $("spec");
          const chosen = state.spec || (sets[0] && sets[0].name);
          select.innerHTML = "";
          for (const s of sets) { const o = document.createElement("option"); o.value = o.textContent = s.name; select.appendChild(o); }
          if (chosen) { select.value = chosen; await show(chosen); }
        }
        $("spec").addEventListener("change", () => show($("spec").value));

        async function show(spec) {
          state.spec = spec; state.tasks.clear(); state.runners.clear();
          // The stream resumes from the last event before the state is read: nothing falls in between.
          state.lastId = (await get("/healthz")).last_event_id;
          const set = await get("/v1/tasksets/" + encodeURIComponent(spec));
          for (const t of set.tasks) state.tasks.set(t.id, t);
          state.usage = set.agent_usage || null; drawCost();
          for (const r of await get("/v1/runners")) if (r.spec === spec) state.runners.set(r.id, r);
          drawGraph(); drawTimeline(); drawCounts(); await drawPools();
          follow(spec);
        }

        // The graph: columns by depth (longest path from a task without dependencies), edges from a
        // dependency to what waits on it. Groups are drawn as boxes of their own.
        function drawGraph() {
          const svg = $("graph"); svg.innerHTML = "";
          const tasks = [...state.tasks.values()];
          const depth = new Map();
          const byId = new Map(tasks.map(t => [t.id, t]));
          const deps = (t) => t.dependencies.filter(d => byId.has(d)).concat(t.parent && byId.has(t.parent) ? [] : []);
          const visit = (t, seen) => {
            if (depth.has(t.id)) return depth.get(t.id);
            if (seen.has(t.id)) return 0; seen.add(t.id);
            let d = 0; for (const dep of deps(t)) d = Math.max(d, visit(byId.get(dep), seen) + 1);
            depth.set(t.id, d); return d;
          };
          for (const t of tasks) visit(t, new Set());
          const columns = [];
          for (const t of tasks) { const d = depth.get(t.id); (columns[d] = columns[d] || []).push(t); }
          const W = 120, H = 26, GX = 40, GY = 8, pos = new Map();
          columns.forEach((column, x) => column.forEach((t, y) => pos.set(t.id, { x: 10 + x * (W + GX), y: 10 + y * (H + GY) })));
          const width = 20 + columns.length * (W + GX), height = 20 + Math.max(1, ...columns.map(c => c.length)) * (H + GY);
          svg.setAttribute("width", width); svg.setAttribute("height", height);
          for (const t of tasks) for (const dep of deps(t)) {
            const a = pos.get(dep), b = pos.get(t.id); if (!a || !b) continue;
            svg.appendChild(el("path", { class: "edge", d: `M${a.x + W},${a.y + H / 2} C${a.x + W + GX / 2},${a.y + H / 2} ${b.x - GX / 2},${b.y + H / 2} ${b.x},${b.y + H / 2}` }));
          }
          for (const t of tasks) {
            const p = pos.get(t.id);
            const g = el("g", { class: "task" + (state.selected === t.id ? " selected" : ""), "data-task": key(state.spec, t.id), "data-state": t.state, transform: `translate(${p.x},${p.y})` });
            g.appendChild(el("rect", { width: W, height: H }));
            g.appendChild(el("text", { x: 6, y: 17 }, (t.group ? "▣ " : "") + t.id + " " + t.title.slice(0, 12)));
            const title = el("title", {}, `${t.id} ${t.title}\n${t.state}${t.reason ? ": " + t.reason : ""}`); g.appendChild(title);
            g.addEventListener("click", () => select(t.id));
            svg.appendChild(g);
          }
        }

        function setTaskState(id, next) {
          const t = state.tasks.get(id); if (!t || t.state === next) return;
          t.state = next;
          const node = document.querySelector(`#graph [data-task="${CSS.escape(key(state.spec, id))}"]`);
          if (node) { node.setAttribute("data-state", next); node.querySelector("title").textContent = `${t.id} ${t.title}\n${next}`; }
          drawCounts();
        }

        // What the agents cost: the taskset's total in the header, each task's in its panel.
        function usageText(u) {
          if (!u) return "";
          const tokens = Object.values(u.tokens || {}).reduce((a, b) => a + b, 0);
          if (!(u.cost_usd > 0) && tokens === 0) return "";
          const dollars = "$" + (u.cost_usd < 1 ? u.cost_usd.toFixed(4).replace(/0{1,2}$/, "") : u.cost_usd.toFixed(2));
          return `${dollars} · ${tokens.toLocaleString("en")} tokens`;
        }
        function drawCost() { const text = usageText(state.usage); $("cost").textContent = text ? "agents " + text : ""; }
        function addUsage(u, p) {
          u.cost_usd = (u.cost_usd || 0) + (p.cost_usd || 0); u.turns = (u.turns || 0) + (p.turns || 0); u.tokens = u.tokens || {};
          for (const [k, v] of Object.entries(p.tokens || {})) u.tokens[k] = (u.tokens[k] || 0) + v;
        }

        function drawCounts() {
          const counts = {};
          for (const t of state.tasks.values()) if (!t.group) counts[t.state] = (counts[t.state] || 0) + 1;
          $("counts").innerHTML = ["running", "ready", "blocked", "done", "failed", "cancelled", "skipped"].filter(s => counts[s])
            .map(s => `<span style="color:var(--${s})">${counts[s]} ${s}</span>`).join("");
        }

        async function drawPools() {
          const pools = await get("/v1/pools");
          $("pools").innerHTML = "";
          for (const p of pools) {
            const div = document.createElement("div"); div.className = "pool";
            div.innerHTML = `<div>${p.name} <span class="muted">${p.type}${p.enabled ? "" : ", disabled"}</span> — ${p.running}/${p.max_concurrency}</div><div class="meter"><div style="width:${Math.round(100 * p.utilization)}%"></div></div>`;
            $("pools").appendChild(div);
          }
        }

        // The timeline: one lane per runner slot a pool used, bars from start to end (or now).
        function drawTimeline() {
          const svg = $("timeline"); svg.innerHTML = "";
          const runners = [...state.runners.values()].sort((a, b) => a.started_at.localeCompare(b.started_at));
          if (!runners.length) { svg.setAttribute("height", 20); return; }
          const t0 = Math.min(...runners.map(r => Date.parse(r.started_at)));
          const now = Date.now(), t1 = Math.max(now, ...runners.map(r => r.ended_at ? Date.parse(r.ended_at) : now));
          const width = Math.max(400, $("timeline-section").clientWidth - 20), scale = (width - 100) / Math.max(1, t1 - t0);
          const lanes = new Map(); let y = 4;
          for (const r of runners) {
            const start = Date.parse(r.started_at), end = r.ended_at ? Date.parse(r.ended_at) : now;
            let pool = lanes.get(r.pool);
            if (!pool) { pool = { rows: [], y }; lanes.set(r.pool, pool); svg.appendChild(el("text", { x: 2, y: y + 12 }, r.pool)); }
            let row = pool.rows.findIndex(last => last <= start);
            if (row < 0) { row = pool.rows.length; pool.rows.push(0); }
            pool.rows[row] = end;
            const outcome = r.state === "running" ? "running" : (r.exit === "exit code 0" ? "done" : "failed");
            const bar = el("rect", { class: "bar " + outcome, x: 90 + (start - t0) * scale, y: pool.y + row * 14, width: Math.max(2, (end - start) * scale), height: 11, "data-runner": r.id });
            bar.appendChild(el("title", {}, `${r.task_id} (${r.id})\n${r.exit || "running"}`));
            svg.appendChild(bar);
            y = Math.max(y, pool.y + pool.rows.length * 14 + 6);
          }
          svg.setAttribute("width", width); svg.setAttribute("height", y + 4);
        }

        async function select(id) {
          state.selected = id;
          document.querySelectorAll("#graph .task").forEach(g => g.classList.toggle("selected", g.getAttribute("data-task") === key(state.spec, id)));
          const t = await get(`/v1/tasks/${encodeURIComponent(state.spec)}/${encodeURIComponent(id)}`);
          const div = $("task"); div.className = ""; div.innerHTML = "";
          const head = document.createElement("div");
          head.innerHTML = `<b>${t.id}</b> ${t.title}<div class="muted">${t.state}, ${t.attempts} attempt${t.attempts == 1 ? "" : "s"}${t.reason ? " — " + t.reason : ""}</div>`;
          div.appendChild(head);
          const spent = usageText(t.agent_usage);
          if (spent) {
            const u = t.agent_usage, usage = document.createElement("div"); usage.id = "task-usage"; usage.className = "muted";
            const kinds = Object.entries(u.tokens || {}).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v.toLocaleString("en")}`).join(", ");
            usage.textContent = `agents: ${spent}${kinds ? " (" + kinds + ")" : ""}, ${u.turns} turn${u.turns == 1 ? "" : "s"}`;
            div.appendChild(usage);
          }
          if (t.steps && t.steps.length) {
            const steps = document.createElement("ul"); steps.className = "steps";
            for (const s of t.steps) { const li = document.createElement("li"); li.textContent = (s.done ? "☑ " : "☐ ") + s.title; steps.appendChild(li); }
            div.appendChild(steps);
          }
          const controls = document.createElement("div");
          const button = (label, action) => { const b = document.createElement("button"); b.textContent = label; b.onclick = action; controls.appendChild(b); return b; };
          const base = `/v1/tasks/${encodeURIComponent(state.spec)}/${encodeURIComponent(id)}`;
          button("retry", () => post(base + "/retry")).disabled = !(t.state === "failed" || t.state === "cancelled");
          button("cancel", () => post(base + "/cancel")).disabled = ["done", "failed", "cancelled", "skipped"].includes(t.state);
          const prio = document.createElement("input"); prio.type = "number"; prio.value = t.priority; prio.style.width = "4em"; controls.appendChild(prio);
          button("set priority", () => post(base + "/priority", { priority: parseInt(prio.value, 10) }));
          div.appendChild(controls);
          div.appendChild(spanTree(t.events));
          const runner = t.runners[t.runners.length - 1];
          tailLog(runner ? runner.id : null);
        }

        // Events as a tree of spans: the runner's `main` span with its phases, each work item's
        // span under it with its state, gates with their output, checkpoints; payloads on click.
        function spanTree(events) {
          const root = document.createElement("div"), spans = new Map();
          const spanDiv = (id, parent) => {
            if (spans.has(id)) return spans.get(id);
            const d = document.createElement("div"); d.className = "span"; d.setAttribute("data-span", id);
            const label = document.createElement("div"); label.className = "span-head"; label.textContent = "span " + id; d.appendChild(label);
            spans.set(id, d); (parent ? spanDiv(parent) : root).appendChild(d); return d;
          };
          const p = e => e.payload || {};
          const summary = e => {
            const x = p(e);
            switch (e.event_type) {
              case "phase_enter": return `▶ ${x.phase || e.phase}`;
              case "phase_exit": return `■ ${x.phase || e.phase}`;
              case "work_item_dispatched": return `work item ${x.work_item_id}: ${x.title || ""}`;
              case "work_item_done": return `done${x.files_changed && x.files_changed.length ? " — " + x.files_changed.join(", ") : ""}`;
              case "work_item_failed": return `failed: ${x.error || ""}`;
              case "gate_start": return `gate \`${x.gate_name}\``;
              case "gate_result": return `gate \`${x.gate_name}\` ${x.passed ? "passed" : (x.status || "failed")}${x.exit_code != null ? ", exit " + x.exit_code : ""}${x.duration_seconds != null ? ", " + x.duration_seconds + " s" : ""}`;
              case "checkpoint_commit": return `checkpoint ${x.sequence_number} (${x.evidence_count || 0} file${x.evidence_count == 1 ? "" : "s"})`;
              case "checkpoint_verified": return `checkpoint ${x.checkpoint_id} verified`;
              case "checkpoint_invalid": return `checkpoint ${x.checkpoint_id || ""} invalid: ${x.reason || ""}`;
              case "recovery_resumed_from_checkpoint": return `resumed from checkpoint ${x.sequence_number} (done: ${(x.work_items_done || []).join(", ")})`;
              case "runner_exit": return `runner exit: ${x.exit_reason || ""}`;
              default: return e.event_type;
            }
          };
          for (const e of events) {
            const host = e.span_id ? spanDiv(e.span_id, e.parent_span_id) : root;
            if (e.event_type === "work_item_start") host.firstChild.textContent = `work item ${p(e).work_item_id}`;
            if (["work_item_start", "work_item_done", "work_item_failed"].includes(e.event_type)) {
              host.setAttribute("data-state", e.event_type.slice(10));
              host.firstChild.textContent = `work item ${p(e).work_item_id} — ${e.event_type.slice(10)}`;
            }
            const row = document.createElement("div"); row.className = "ev"; row.setAttribute("data-event", e.event_type);
            row.innerHTML = `<span class="t">${e.timestamp.slice(11, 23)} #${e.seq}</span> `;
            row.appendChild(document.createTextNode(summary(e))); row.title = summary(e);
            const pre = document.createElement("pre"); pre.textContent = JSON.stringify(e.payload, null, 1); pre.hidden = true;
            row.onclick = () => pre.hidden = !pre.hidden;
            host.appendChild(row);
            if (e.event_type === "gate_result" && p(e).output_tail) {
              const out = document.createElement("pre"); out.className = "gate-output" + (p(e).passed ? "" : " failed"); out.textContent = p(e).output_tail;
              host.appendChild(out);
            }
            host.appendChild(pre);
          }
          return root;
        }

        let logTimer = null;
        function tailLog(runnerID) {
          clearTimeout(logTimer);
          const box = $("log");
          if (!runnerID) { box.textContent = "no runner yet"; return; }
          const tick = async () => {
            try {
              const r = await fetch(`/v1/runners/${encodeURIComponent(runnerID)}/log?bytes=8192`, { headers: headers() });
              box.textContent = await r.text() || "(no output yet)"; box.scrollTop = box.scrollHeight;
            } catch (e) { box.textContent = String(e); }
            const runner = state.runners.get(runnerID);
            if (state.selected && runner && runner.state === "running") logTimer = setTimeout(tick, 1000);
          };
          tick();
        }

        // Live: the event stream, resumed from the last id seen if it drops.
        // The stream's token travels in its address (an EventSource sends no header): the
        // read-only one, never the admin token, which a proxy's log or the history could keep.
        async function streamToken() {
          try { return (await get("/v1/tokens/read")).token; } catch (e) { return $("token").value; }
        }
        async function follow(spec) {
          if (state.source) state.source.close();
          const token = await streamToken();
          const source = new EventSource(`/v1/events/stream?spec=${encodeURIComponent(spec)}&after=${state.lastId}&token=${encodeURIComponent(token)}`);
          state.source = source;
          source.onopen = () => $("conn").textContent = "live";
          source.onerror = () => $("conn").textContent = "reconnecting…";
          source.addEventListener("end", () => { $("conn").textContent = "run finished"; source.close(); });
          source.onmessage = (message) => {
            const e = JSON.parse(message.data);
            state.lastId = Math.max(state.lastId, e.id);
            if (e.task_id) setTaskState(e.task_id, stateAfter(e, (state.tasks.get(e.task_id) || {}).state));
            const p = e.payload || {};
            if (e.event_type === "TaskAssigned" || e.event_type === "RunnerAdopted") {
              state.runners.set(p.runner_id, { id: p.runner_id, spec: e.spec, task_id: e.task_id, pool: p.pool_name, state: "running", started_at: e.timestamp, ended_at: null, exit: null });
            }
            if (e.event_type === "agent_usage") {
              state.usage = state.usage || {}; addUsage(state.usage, p);
              const t = state.tasks.get(e.task_id); if (t) { t.agent_usage = t.agent_usage || {}; addUsage(t.agent_usage, p); }
              drawCost();
            }
            if (e.event_type === "RunnerFinished" && state.runners.has(p.runner_id)) {
              const r = state.runners.get(p.runner_id);
              r.state = "exited"; r.ended_at = e.timestamp; r.exit = p.success ? "exit code 0" : (p.failure_reason || "failed");
            }
            scheduleRedraw(e);
          };
        }

        let redraw = null;
        function scheduleRedraw(e) {
          if (redraw) return;
          redraw = setTimeout(() => {
            redraw = null; drawTimeline(); drawPools().catch(() => {});
            if (state.selected) select(state.selected).catch(() => {});
          }, 300);
        }
        setInterval(() => drawTimeline(), 2000);
        loadSpecs().catch(e => $("conn").textContent = String(e));
        </script>
        </body>
        </html>
        """#
}
