// orgmesh dashboard: a small hash-routed app over the node's public API (INTERFACE.md).
//
// Layout of this file:
// - helpers: element builder (text only, never innerHTML with data), time formatting;
// - http: fetch with the optional bearer token, problem+json errors, the token dialog on 401;
// - sse: an SSE reader over fetch() + ReadableStream (EventSource cannot send Authorization),
//   resuming with Last-Event-ID and reconnecting with back-off, plus the connection indicator;
// - bus: one shared stream of GET /v1/events that every page listens to;
// - pages: mesh, tasks, task detail, events; each returns a cleanup that closes what it opened;
// - router and start-up.
"use strict";
(function () {
  const TOKEN_KEY = "orgmesh.token";
  const THEME_KEY = "orgmesh.theme";
  const PAGE_SIZE = 50;
  const MAX_EVENTS = 500;

  // ---------------------------------------------------------------- helpers

  /** Builds an element. `attrs`: class, text, on<Event> handlers, data-*, aria-* and plain attributes. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function shortId(id) {
    return id && id.length > 12 ? id.slice(0, 6) + "…" + id.slice(-4) : id || "";
  }

  function fmtTime(s) {
    if (!s) return "—";
    const d = new Date(s);
    return isNaN(d) ? s : d.toLocaleString();
  }

  function ago(s) {
    if (!s) return "—";
    const ms = Date.now() - new Date(s).getTime();
    if (isNaN(ms)) return s;
    const sec = Math.max(0, Math.round(ms / 1000));
    if (sec < 60) return sec + " s ago";
    if (sec < 3600) return Math.round(sec / 60) + " min ago";
    if (sec < 86400) return Math.round(sec / 3600) + " h ago";
    return Math.round(sec / 86400) + " d ago";
  }

  function duration(from, to) {
    if (!from || !to) return "—";
    const ms = new Date(to) - new Date(from);
    if (isNaN(ms) || ms < 0) return "—";
    if (ms < 1000) return ms + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
  }

  function timeEl(s, text) {
    return h("time", { datetime: s || null, title: s ? fmtTime(s) : null, text: text || fmtTime(s) });
  }

  function badge(state, text) {
    return h("span", { class: "badge s-" + state, text: text || state });
  }

  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const STATUSES = ["pending", "placing", "placed", "running", "unreachable", "succeeded", "failed", "cancelled"];

  function announce(text) {
    const el = document.getElementById("announcer");
    el.textContent = "";
    setTimeout(() => { el.textContent = text; }, 50);
  }

  function store(key, value) {
    try {
      if (value === null) localStorage.removeItem(key);
      else localStorage.setItem(key, value);
    } catch (e) { /* storage blocked: the choice lasts for this page only */ }
  }

  function load(key) {
    try { return localStorage.getItem(key) || ""; } catch (e) { return ""; }
  }

  function commandText(task) {
    const cmd = (task.spec && task.spec.command) || [];
    return cmd.map((a) => (/[\s'"]/.test(a) ? "'" + a.replace(/'/g, "'\\''") + "'" : a)).join(" ");
  }

  // ---------------------------------------------------------------- http

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    const token = load(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    return headers;
  }

  async function problemText(resp) {
    try {
      const p = await resp.json();
      return p.detail || p.title || resp.statusText;
    } catch (e) {
      return resp.statusText || "HTTP " + resp.status;
    }
  }

  /** Calls the API; JSON or text back, HttpError on 4xx/5xx (and the token dialog on 401). */
  async function api(path, opts) {
    opts = opts || {};
    let resp;
    try {
      resp = await fetch(path, Object.assign({}, opts, { headers: authHeaders(opts.headers), cache: "no-store" }));
    } catch (e) {
      throw new HttpError(0, "the node is not reachable (" + e.message + ")");
    }
    if (resp.status === 401) {
      askToken("The node answered 401 Unauthorized: enter its API token.");
      throw new HttpError(401, "an API token is needed");
    }
    if (!resp.ok) throw new HttpError(resp.status, await problemText(resp));
    const type = resp.headers.get("content-type") || "";
    return type.includes("json") ? resp.json() : resp.text();
  }

  // ---------------------------------------------------------------- token dialog

  let onTokenChange = () => {};

  function askToken(reason) {
    const dialog = document.getElementById("token-dialog");
    document.getElementById("token-reason").textContent = reason ||
      "A node that listens beyond loopback asks for a bearer token. It is kept in this browser only (localStorage).";
    if (dialog.open) return;
    document.getElementById("token-input").value = load(TOKEN_KEY);
    dialog.showModal();
  }

  function setupTokenDialog() {
    const dialog = document.getElementById("token-dialog");
    document.getElementById("token-button").addEventListener("click", () => askToken(null));
    dialog.addEventListener("close", () => {
      const value = document.getElementById("token-input").value.trim();
      if (dialog.returnValue === "save") {
        store(TOKEN_KEY, value || null);
        announce(value ? "Token saved" : "Token cleared");
        onTokenChange();
      } else if (dialog.returnValue === "clear") {
        store(TOKEN_KEY, null);
        document.getElementById("token-input").value = "";
        announce("Token forgotten");
        onTokenChange();
      }
      dialog.returnValue = "";
    });
  }

  // ---------------------------------------------------------------- sse

  // Connection indicator: the worst state of the open streams.
  const streamStates = new Map();
  let lastConn = "";

  function setStreamState(name, state) {
    if (state === null) streamStates.delete(name);
    else streamStates.set(name, state);
    const states = [...streamStates.values()];
    const conn = states.includes("auth") ? "auth"
      : states.includes("reconnecting") ? "reconnecting"
      : states.includes("connecting") ? "connecting" : "live";
    if (conn === lastConn) return;
    lastConn = conn;
    const el = document.getElementById("conn");
    el.dataset.state = conn;
    el.textContent = { auth: "token needed", reconnecting: "reconnecting…", connecting: "connecting…", live: "live" }[conn];
  }

  /**
   * Follows an SSE endpoint with fetch(). Calls `onEvent({id, event, data})` per event. After a
   * dropped connection or an ended stream it reconnects with `Last-Event-ID` (the last id seen),
   * backing off from 0.5 s to 5 s, until `isLast(event)` said the stream is complete or `close()`
   * is called. A 4xx other than 401 stops it and calls `onFatal(error)`.
   */
  function openStream(name, path, { onEvent, lastId = null, isLast = () => false, onFatal = () => {} }) {
    let ctrl = null;
    let closed = false;
    let timer = null;
    let delay = 500;
    setStreamState(name, "connecting");

    function retry() {
      if (closed) return;
      setStreamState(name, "reconnecting");
      timer = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 5000);
    }

    async function connect() {
      if (closed) return;
      ctrl = new AbortController();
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      let resp;
      try {
        resp = await fetch(path, { headers, signal: ctrl.signal, cache: "no-store" });
      } catch (e) {
        return retry();
      }
      if (resp.status === 401) {
        setStreamState(name, "auth");
        askToken("The node answered 401 Unauthorized: enter its API token.");
        timer = setTimeout(connect, 5000);
        return;
      }
      if (resp.status >= 400 && resp.status < 500) {
        closed = true;
        setStreamState(name, null);
        onFatal(new HttpError(resp.status, await problemText(resp)));
        return;
      }
      if (!resp.ok || !resp.body) return retry();
      setStreamState(name, "live");
      delay = 500;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      let ev = { id: null, event: "", data: [] };
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            let line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (line.endsWith("\r")) line = line.slice(0, -1);
            if (line === "") {
              if (ev.data.length || ev.event) {
                if (ev.id !== null) lastId = ev.id;
                const out = { id: ev.id, event: ev.event || "message", data: ev.data.join("\n") };
                onEvent(out);
                if (isLast(out)) {
                  closed = true;
                  setStreamState(name, null);
                  ctrl.abort();
                  return;
                }
              }
              ev = { id: null, event: "", data: [] };
              continue;
            }
            if (line.startsWith(":")) continue; // keep-alive comment
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            let val = colon < 0 ? "" : line.slice(colon + 1);
            if (val.startsWith(" ")) val = val.slice(1);
            if (field === "data") ev.data.push(val);
            else if (field === "event") ev.event = val;
            else if (field === "id") ev.id = val;
          }
        }
      } catch (e) {
        // Dropped mid-stream (node stopped, network): reconnect below.
      }
      retry();
    }

    connect();
    return {
      close() {
        closed = true;
        clearTimeout(timer);
        if (ctrl) ctrl.abort();
        setStreamState(name, null);
      },
      restart() {
        clearTimeout(timer);
        if (ctrl) ctrl.abort();
        closed = false;
        delay = 500;
        connect();
      },
    };
  }

  // ---------------------------------------------------------------- bus

  // One stream of the node's events for the whole app: it starts with the last 100 events
  // (`?tail=`), then resumes by sequence number across reconnects and node restarts.
  const bus = { listeners: new Set(), recent: [], stream: null, lastSeq: -1 };

  function startBus() {
    bus.stream = openStream("events", "/v1/events?tail=100", {
      onEvent(ev) {
        // A reconnect before the first event asks for the tail again: never show one twice.
        const seq = Number(ev.id);
        if (Number.isFinite(seq)) {
          if (seq <= bus.lastSeq) return;
          bus.lastSeq = seq;
        }
        let data = null;
        try { data = JSON.parse(ev.data); } catch (e) { data = ev.data; }
        const item = { seq: ev.id, kind: ev.event, data, raw: ev.data, at: new Date().toISOString() };
        bus.recent.push(item);
        if (bus.recent.length > MAX_EVENTS) bus.recent.shift();
        for (const l of bus.listeners) {
          try { l(item); } catch (e) { console.error(e); }
        }
      },
    });
  }

  function listen(fn) {
    bus.listeners.add(fn);
    return () => bus.listeners.delete(fn);
  }

  // ---------------------------------------------------------------- pages

  function pageHead(title, subtitle, ...actions) {
    return h("div", { class: "page-head" },
      h("div", null, h("h1", { id: "page-title", text: title }), subtitle ? h("p", { class: "muted", text: subtitle }) : null),
      actions.length ? h("div", { class: "actions" }, actions) : null);
  }

  function errorNotice(e) {
    return h("p", { class: "notice error", role: "alert", text: "Could not load: " + (e && e.message ? e.message : e) });
  }

  // ----- Mesh

  function capacityBar(name, free, total, unit, fmt) {
    fmt = fmt || ((v) => String(v));
    const used = Math.max(0, total - free);
    const frac = total > 0 ? used / total : 0;
    const fill = h("span");
    fill.style.width = (frac * 100).toFixed(1) + "%"; // CSSOM: allowed by the CSP, unlike style=""
    const value = total > 0 ? fmt(free) + " / " + fmt(total) + (unit ? " " + unit : "") + " free" : "none";
    return h("div", { class: "bar-row" },
      h("span", { class: "name", text: name }),
      h("div", { class: "bar" + (total > 0 && free === 0 ? " full" : ""), "aria-hidden": "true" }, fill),
      h("span", { class: "value", text: value }));
  }

  function nodeCard(n, self) {
    const c = n.capacity || {};
    const cores = (m) => (m / 1000).toFixed(m % 1000 === 0 ? 0 : 1);
    const gib = (c.memory_mb || 0) >= 1024;
    const mem = (mb) => (gib ? (mb / 1024).toFixed(1) : String(mb));
    const labels = Object.entries(n.labels || {});
    const state = self ? "self" : n.state;
    const facts = [];
    if (!self) {
      facts.push(["discovered by", (n.sources || []).join(", ") || "—"]);
      facts.push(["last seen", n.last_seen ? ago(n.last_seen) : "—"]);
    } else {
      facts.push(["version", n.version || "—"]);
      facts.push(["started", n.started_at ? ago(n.started_at) : "—"]);
    }
    const addrs = self ? n.listen_addrs : n.addrs;
    facts.push(["address", (addrs && addrs[0]) || "—"]);
    facts.push(["running", String(c.running_tasks ?? 0) + " task(s)"]);
    return h("article", { class: "card node", "data-peer-id": n.peer_id, "data-state": state, "aria-label": (n.name || n.org) + ", " + (self ? "this node" : n.state) },
      h("div", { class: "node-head" },
        h("h3", { text: n.name || shortId(n.peer_id) }),
        h("span", null, badge(state, self ? "this node" : n.state), n.draining ? [" ", badge("draining")] : null)),
      h("p", { class: "node-id mono", title: n.peer_id, text: n.peer_id }),
      h("div", { class: "bars" },
        capacityBar("CPU", c.cpu_millis_free || 0, c.cpu_millis || 0, "cores", cores),
        capacityBar("Memory", c.memory_mb_free || 0, c.memory_mb || 0, gib ? "GiB" : "MiB", mem),
        capacityBar("Slots", c.free_slots || 0, c.slots || 0, ""),
        capacityBar("GPUs", c.gpus_free || 0, c.gpus || 0, "")),
      h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })])),
      labels.length
        ? h("ul", { class: "chips", "aria-label": "labels" }, labels.map(([k, v]) => h("li", { class: "chip", text: k + "=" + v })))
        : null);
  }

  function meshView(root) {
    const body = h("div", { "aria-busy": "true" }, h("p", { class: "muted", text: "Loading the mesh…" }));
    root.append(pageHead("Mesh", "This node and every peer it knows, grouped by organization."), body);
    let stopped = false;
    let pending = null;

    async function refresh() {
      try {
        const [node, peers] = await Promise.all([api("/v1/node"), api("/v1/peers")]);
        if (stopped) return;
        const groups = new Map();
        const add = (org, item) => { if (!groups.has(org)) groups.set(org, []); groups.get(org).push(item); };
        add(node.org, { n: node, self: true });
        for (const p of peers.items || []) add(p.org, { n: p, self: false });
        const orgs = [...groups.keys()].sort((a, b) => (a === node.org ? -1 : b === node.org ? 1 : a.localeCompare(b)));
        const alive = (peers.items || []).filter((p) => p.state === "alive").length;
        const summary = h("p", { class: "muted", text: orgs.length + " org(s), " + (peers.items || []).length + " peer(s), " + alive + " alive" });
        const sections = orgs.map((org) => {
          const items = groups.get(org).sort((a, b) => (a.self ? -1 : b.self ? 1 : (a.n.name || "").localeCompare(b.n.name || "")));
          const hid = "org-" + org.replace(/[^A-Za-z0-9_-]/g, "_");
          return h("section", { class: "org", "data-org": org, "aria-labelledby": hid },
            h("div", { class: "org-head" },
              h("h2", { id: hid, text: org }),
              h("span", { class: "muted", text: items.length + (items.length === 1 ? " node" : " nodes") + (org === node.org ? " · this org" : "") })),
            h("div", { class: "nodes" }, items.map((i) => nodeCard(i.n, i.self))));
        });
        body.replaceChildren(summary, h("div", { class: "mesh-grid" }, sections));
      } catch (e) {
        if (!stopped) body.replaceChildren(errorNotice(e));
      }
      body.setAttribute("aria-busy", "false");
    }

    refresh();
    const timer = setInterval(refresh, 5000);
    const unlisten = listen((ev) => {
      if (ev.kind.startsWith("peer.") && !pending) pending = setTimeout(() => { pending = null; refresh(); }, 300);
    });
    return () => { stopped = true; clearInterval(timer); clearTimeout(pending); unlisten(); };
  }

  // ----- Tasks

  const taskFilters = { status: "", org: "", q: "" };

  function taskMatches(t) {
    if (taskFilters.status && t.status !== taskFilters.status) return false;
    const org = t.placement ? t.placement.org : "";
    if (taskFilters.org && org !== taskFilters.org) return false;
    if (taskFilters.q) {
      const hay = [t.id, t.status, org, t.placement ? t.placement.name : "", commandText(t), t.error || ""].join(" ").toLowerCase();
      if (!hay.includes(taskFilters.q.toLowerCase())) return false;
    }
    return true;
  }

  function tasksView(root) {
    let items = [];
    let nextCursor = null;
    let stopped = false;
    const orgsKnown = new Set();

    const status = h("select", { id: "f-status" },
      h("option", { value: "", text: "Any status" }), STATUSES.map((s) => h("option", { value: s, text: s })));
    status.value = taskFilters.status;
    const org = h("select", { id: "f-org" }, h("option", { value: "", text: "Any org" }));
    const search = h("input", { id: "f-q", type: "search", placeholder: "id, command, node… (press / to focus)", autocomplete: "off" });
    search.value = taskFilters.q;
    const filters = h("form", { class: "filters", role: "search", "aria-label": "Filter tasks", onsubmit: (e) => e.preventDefault() },
      h("div", null, h("label", { for: "f-status", text: "Status" }), status),
      h("div", null, h("label", { for: "f-org", text: "Placed at org" }), org),
      h("div", { class: "grow" }, h("label", { for: "f-q", text: "Search" }), search));
    const tbody = h("tbody");
    const caption = h("caption", { "aria-live": "polite" });
    const table = h("table", { id: "tasks-table" },
      caption,
      h("thead", null, h("tr", null, ["Task", "Status", "Org", "Node", "Exit", "Created", "Command"].map((c) => h("th", { scope: "col", text: c })))),
      tbody);
    const more = h("button", { type: "button", text: "Load more", onclick: () => fetchPage(false) });
    const pager = h("div", { class: "pager" });
    const msg = h("div");
    root.append(pageHead("Tasks", "Tasks submitted at this node, newest first. Status changes arrive live."), filters, msg,
      h("div", { class: "table-wrap" }, table), pager);

    function fillOrgs() {
      const current = org.value || taskFilters.org;
      const known = [...orgsKnown].sort();
      org.replaceChildren(h("option", { value: "", text: "Any org" }), known.map((o) => h("option", { value: o, text: o })));
      if (current && !orgsKnown.has(current)) org.append(h("option", { value: current, text: current }));
      org.value = current;
    }

    function row(t) {
      const link = h("a", { href: "#/tasks/" + encodeURIComponent(t.id), class: "mono", title: t.id, text: shortId(t.id), "aria-label": "Task " + t.id });
      return h("tr", { "data-task-id": t.id, "data-status": t.status },
        h("td", null, link),
        h("td", { class: "status" }, badge(t.status)),
        h("td", { class: "org", text: t.placement ? t.placement.org : "—" }),
        h("td", { class: "node", text: t.placement ? t.placement.name : "—" }),
        h("td", { class: "num exit", text: t.exit_code ?? "—" }),
        h("td", null, timeEl(t.created_at, ago(t.created_at))),
        h("td", { class: "cmd mono", title: commandText(t), text: commandText(t) }));
    }

    function render() {
      const shown = items.filter(taskMatches);
      tbody.replaceChildren(...shown.map(row));
      if (!shown.length) {
        tbody.append(h("tr", null, h("td", { colspan: "7", class: "muted", text: items.length ? "No task matches these filters." : "No tasks yet. Submit one with: orgmesh submit -- echo hello" })));
      }
      caption.textContent = "Showing " + shown.length + " of " + items.length + " loaded task(s)" + (nextCursor ? "; more on the node" : "") + ".";
      pager.replaceChildren(...(nextCursor ? [more] : []));
    }

    async function fetchPage(reset) {
      let path = "/v1/tasks?limit=" + PAGE_SIZE;
      if (taskFilters.status) path += "&status=" + encodeURIComponent(taskFilters.status);
      if (!reset && nextCursor) path += "&cursor=" + encodeURIComponent(nextCursor);
      more.disabled = true;
      try {
        const page = await api(path);
        if (stopped) return;
        if (reset) items = [];
        const have = new Set(items.map((t) => t.id));
        for (const t of page.items || []) if (!have.has(t.id)) items.push(t);
        nextCursor = page.next_cursor || null;
        for (const t of items) if (t.placement) orgsKnown.add(t.placement.org);
        fillOrgs();
        msg.replaceChildren();
        render();
      } catch (e) {
        if (!stopped) msg.replaceChildren(errorNotice(e));
      }
      more.disabled = false;
    }

    // Orgs of the mesh, for the org filter, even before a task ran there.
    Promise.all([api("/v1/node"), api("/v1/peers")]).then(([n, p]) => {
      orgsKnown.add(n.org);
      for (const x of p.items || []) orgsKnown.add(x.org);
      if (!stopped) fillOrgs();
    }).catch(() => {});

    status.addEventListener("change", () => { taskFilters.status = status.value; fetchPage(true); });
    org.addEventListener("change", () => { taskFilters.org = org.value; render(); });
    search.addEventListener("input", () => { taskFilters.q = search.value.trim(); render(); });

    // Live: each task event makes the page re-read that task (coalesced per task), so events
    // replayed from the stream's tail can never move a row backwards. A task that ended cannot
    // change, and a task this page has not seen is fetched only when it is new (task.created).
    const refetching = new Map();
    const unlisten = listen((ev) => {
      if (!ev.kind.startsWith("task.") || !ev.data || !ev.data.id) return;
      const id = ev.data.id;
      const known = items.find((x) => x.id === id);
      if (known ? TERMINAL.has(known.status) : ev.kind !== "task.created") return;
      if (refetching.has(id)) return;
      refetching.set(id, setTimeout(async () => {
        refetching.delete(id); // an event during the fetch schedules another one
        let t;
        try { t = await api("/v1/tasks/" + encodeURIComponent(id)); } catch (e) { return; }
        if (stopped) return;
        const i = items.findIndex((x) => x.id === id);
        // Two fetches may answer out of order: never replace a newer view of the task.
        if (i >= 0 && items[i].updated_at > t.updated_at) return;
        const before = i >= 0 ? items[i].status : null;
        if (i >= 0) items[i] = t;
        else items.unshift(t);
        if (t.placement && !orgsKnown.has(t.placement.org)) { orgsKnown.add(t.placement.org); fillOrgs(); }
        render();
        const tr = tbody.querySelector('tr[data-task-id="' + CSS.escape(id) + '"]');
        if (tr && before !== t.status) tr.classList.add("flash");
        if (before !== t.status && TERMINAL.has(t.status)) announce("Task " + shortId(id) + " " + t.status);
      }, 100));
    });

    function slash(e) {
      if (e.key === "/" && !/^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName) && !e.ctrlKey && !e.metaKey) {
        e.preventDefault();
        search.focus();
      }
    }
    document.addEventListener("keydown", slash);
    fetchPage(true);
    return () => {
      stopped = true;
      unlisten();
      for (const t of refetching.values()) clearTimeout(t);
      document.removeEventListener("keydown", slash);
    };
  }

  // ----- Task detail

  function taskView(root, id) {
    let stopped = false;
    let task = null;
    const head = h("div");
    const summary = h("div", { class: "card" });
    const spec = h("pre", { class: "spec", tabindex: "0", "aria-label": "Task spec (JSON)" });
    const history = h("div", { class: "table-wrap" });
    const logStatus = h("span", { class: "muted", role: "status", text: "connecting…" });
    const log = h("pre", { id: "log", class: "log", tabindex: "0", "aria-label": "Task output" });
    const msg = h("div");
    root.append(
      h("a", { class: "back", href: "#/tasks", text: "← All tasks" }),
      head, msg,
      h("div", { class: "detail-grid" },
        h("section", { "aria-labelledby": "h-summary" }, h("h2", { id: "h-summary", text: "Summary" }), summary),
        h("section", { "aria-labelledby": "h-logs" },
          h("div", { class: "log-head" }, h("h2", { id: "h-logs", text: "Logs" }), logStatus),
          log)),
      h("section", { "aria-labelledby": "h-history" }, h("h2", { id: "h-history", text: "Placement history" }), history),
      h("section", { "aria-labelledby": "h-spec" }, h("h2", { id: "h-spec", text: "Spec" }), spec));

    const cancel = h("button", { type: "button", class: "danger", id: "cancel-task", text: "Cancel task", onclick: doCancel });

    function render() {
      const t = task;
      head.replaceChildren(pageHead("Task " + shortId(t.id), null, cancel));
      head.querySelector("h1").append(" ", badge(t.status));
      head.querySelector("h1").setAttribute("title", t.id);
      cancel.disabled = TERMINAL.has(t.status);
      const p = t.placement;
      const rows = [
        ["id", h("span", { class: "mono", text: t.id })],
        ["status", badge(t.status)],
        ["origin", (t.origin && t.origin.org) || "—"],
        ["placed at", p ? p.org + " / " + p.name : "—"],
        ["attempt", String(t.attempt) + " of at most " + ((t.spec && t.spec.max_attempts) || "?")],
        ["exit code", t.exit_code ?? "—"],
        ["error", t.error || "—"],
        ["created", timeEl(t.created_at)],
        ["updated", timeEl(t.updated_at)],
        ["took", TERMINAL.has(t.status) ? duration(t.created_at, t.updated_at) : "still going"],
      ];
      summary.replaceChildren(h("dl", { class: "kv" }, rows.map(([k, v]) => [h("dt", { text: k }), h("dd", null, v)])));
      spec.textContent = JSON.stringify(t.spec, null, 2);
      const attempts = t.history || [];
      if (!attempts.length) {
        history.replaceChildren(h("p", { class: "muted", text: "Not placed yet." }));
      } else {
        history.replaceChildren(h("table", null,
          h("caption", { text: attempts.length + " attempt(s); the current one is marked." }),
          h("thead", null, h("tr", null, ["Attempt", "Host", "Placed", "Ended", "Took", "Outcome"].map((c) => h("th", { scope: "col", text: c })))),
          h("tbody", null, attempts.map((a) => {
            const current = a.attempt === t.attempt;
            return h("tr", { "aria-current": current ? "true" : null },
              h("td", { class: "num" }, String(a.attempt), current ? [" ", badge("running", "current")] : null),
              h("td", { text: a.placement.org + " / " + a.placement.name, title: a.placement.peer_id }),
              h("td", null, timeEl(a.placed_at)),
              h("td", null, a.ended_at ? timeEl(a.ended_at) : "—"),
              h("td", { text: duration(a.placed_at, a.ended_at) }),
              h("td", { text: a.outcome || (current && !TERMINAL.has(t.status) ? "in progress" : "—") }));
          }))));
      }
    }

    async function refresh() {
      try {
        const t = await api("/v1/tasks/" + encodeURIComponent(id));
        if (stopped || (task && task.updated_at > t.updated_at)) return;
        const changed = task && task.status !== t.status;
        task = t;
        msg.replaceChildren();
        render();
        if (changed) announce("Task " + shortId(t.id) + " is " + t.status);
      } catch (e) {
        if (stopped) return;
        head.replaceChildren(pageHead("Task " + shortId(id)));
        msg.replaceChildren(errorNotice(e));
      }
    }

    async function doCancel() {
      if (!confirm("Cancel task " + id + " wherever it runs?")) return;
      cancel.disabled = true;
      try {
        await api("/v1/tasks/" + encodeURIComponent(id) + "/cancel", { method: "POST" });
        announce("Cancel requested");
      } catch (e) {
        msg.replaceChildren(errorNotice(e));
        cancel.disabled = false;
      }
    }

    // Logs: SSE with byte offsets as ids, so a reconnect resumes exactly where it left off.
    const logs = openStream("logs", "/v1/tasks/" + encodeURIComponent(id) + "/logs?follow=true", {
      onEvent(ev) {
        if (ev.event === "log") {
          const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
          log.append(document.createTextNode(ev.data));
          if (atBottom) log.scrollTop = log.scrollHeight;
          logStatus.textContent = "following…";
        } else if (ev.event === "end") {
          let st = "";
          try { st = JSON.parse(ev.data).status; } catch (e) { /* keep it generic */ }
          logStatus.textContent = "ended" + (st ? ": " + st : "");
          log.dataset.ended = "true";
        }
      },
      isLast: (ev) => ev.event === "end",
      onFatal(e) { logStatus.textContent = "unavailable: " + e.message; },
    });
    const unlisten = listen((ev) => {
      if (ev.kind.startsWith("task.") && ev.data && ev.data.id === id) refresh();
    });
    refresh();
    return () => { stopped = true; logs.close(); unlisten(); };
  }

  // ----- Events

  function eventSummary(e) {
    const d = e.data;
    if (d && typeof d === "object") {
      if (e.kind.startsWith("task.") && d.id) {
        const where = d.placement ? " at " + d.placement.org + "/" + d.placement.name : "";
        const exit = d.exit_code !== null && d.exit_code !== undefined ? ", exit " + d.exit_code : "";
        return "task " + d.id + where + exit + (d.error ? " — " + d.error : "");
      }
      if (e.kind.startsWith("peer.") && (d.org || d.name)) {
        return (d.org || "?") + "/" + (d.name || "?") + (d.from ? " (was " + d.from + ")" : "") + " " + shortId(d.peer_id || "");
      }
    }
    return e.raw;
  }

  function eventsView(root) {
    let paused = false;
    let filter = "";
    const list = h("ol", { class: "event-list", id: "event-list", reversed: true });
    const filterInput = h("input", { id: "f-kind", type: "search", placeholder: "task. or peer.dead", autocomplete: "off" });
    const pause = h("button", { type: "button", "aria-pressed": "false", text: "Pause" });
    const count = h("p", { class: "muted", "aria-live": "polite" });
    root.append(
      pageHead("Events", "The node's event log, live. After a reconnect the stream resumes from the last event seen."),
      h("form", { class: "filters", role: "search", "aria-label": "Filter events", onsubmit: (e) => e.preventDefault() },
        h("div", { class: "grow" }, h("label", { for: "f-kind", text: "Kind starts with" }), filterInput),
        h("div", null, pause)),
      count,
      h("div", { class: "table-wrap" }, list));

    function item(e) {
      const kindState = e.kind.split(".")[1] || "";
      return h("li", { "data-seq": e.seq, "data-kind": e.kind },
        h("span", { class: "seq", text: "#" + e.seq }),
        h("span", { class: "time", title: "when this page received it" }, h("time", { datetime: e.at, text: new Date(e.at).toLocaleTimeString() })),
        h("span", { class: "kind" }, badge(kindState, e.kind)),
        h("span", { class: "data mono", text: eventSummary(e) }));
    }

    function render() {
      const shown = bus.recent.filter((e) => !filter || e.kind.startsWith(filter)).slice().reverse();
      list.replaceChildren(...shown.map(item));
      if (!shown.length) list.append(h("li", { class: "muted" }, h("span", { text: "No events yet." })));
      count.textContent = shown.length + " event(s) shown" + (paused ? " (paused)" : "") + "; the newest first.";
    }

    filterInput.addEventListener("input", () => { filter = filterInput.value.trim(); render(); });
    pause.addEventListener("click", () => {
      paused = !paused;
      pause.setAttribute("aria-pressed", String(paused));
      pause.textContent = paused ? "Resume" : "Pause";
      if (!paused) render();
      else count.textContent = "Paused.";
    });
    const unlisten = listen(() => { if (!paused) render(); });
    render();
    return () => unlisten();
  }

  // ---------------------------------------------------------------- router

  const routes = [
    [/^#\/mesh$/, meshView, "Mesh", "mesh"],
    [/^#\/tasks$/, tasksView, "Tasks", "tasks"],
    [/^#\/tasks\/([^/]+)$/, taskView, "Task", "tasks"],
    [/^#\/events$/, eventsView, "Events", "events"],
  ];
  let cleanup = null;
  let firstRoute = true;
  let nodeLabel = "";

  function route() {
    const hash = location.hash || "#/mesh";
    const main = document.getElementById("main");
    if (cleanup) cleanup();
    cleanup = null;
    main.replaceChildren();
    let found = null;
    for (const [re, view, title, nav] of routes) {
      const m = hash.match(re);
      if (m) { found = { view, title, nav, args: m.slice(1).map(decodeURIComponent) }; break; }
    }
    if (!found) {
      location.replace("#/mesh");
      return;
    }
    for (const a of document.querySelectorAll("[data-nav]")) {
      if (a.dataset.nav === found.nav) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    document.title = found.title + " · orgmesh" + (nodeLabel ? " · " + nodeLabel : "");
    cleanup = found.view(main, ...found.args) || null;
    // Move focus to the new page for keyboard and screen-reader users (not on first load).
    if (!firstRoute) main.focus({ preventScroll: false });
    firstRoute = false;
  }

  // ---------------------------------------------------------------- theme

  function effectiveTheme() {
    const set = document.documentElement.dataset.theme;
    if (set) return set;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  function setupTheme() {
    const btn = document.getElementById("theme-toggle");
    const sync = () => {
      const dark = effectiveTheme() === "dark";
      // A toggle button keeps one label; aria-pressed says whether it is on.
      btn.setAttribute("aria-pressed", String(dark));
      btn.title = "Switch to the " + (dark ? "light" : "dark") + " theme";
    };
    btn.addEventListener("click", () => {
      const next = effectiveTheme() === "dark" ? "light" : "dark";
      document.documentElement.dataset.theme = next;
      store(THEME_KEY, next);
      sync();
      announce(next + " theme");
    });
    if (window.matchMedia) window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", sync);
    sync();
  }

  // ---------------------------------------------------------------- start

  function start() {
    setupTheme();
    setupTokenDialog();
    onTokenChange = () => {
      if (bus.stream) bus.stream.restart();
      route();
      loadNodeLabel();
    };
    startBus();
    window.addEventListener("hashchange", route);
    route();
    loadNodeLabel();
  }

  function loadNodeLabel() {
    api("/v1/node").then((n) => {
      nodeLabel = n.org + (n.name && n.name !== n.org ? " / " + n.name : "");
      document.getElementById("node-name").textContent = nodeLabel;
      document.title = document.title.split(" · orgmesh")[0] + " · orgmesh · " + nodeLabel;
    }).catch(() => {});
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
