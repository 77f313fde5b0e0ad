// The sagalog console: one hash-routed page over the JSON API (docs/console.md).
// No framework and no build step: views are functions that build DOM nodes with
// h(), and one refresh loop polls the current view every two seconds.

const STATUSES = [
  "running", "compensating", "parked", "compensation_failed",
  "failed", "compensated", "cancelled", "completed",
];
const TERMINAL = new Set(["completed", "failed", "compensated", "cancelled"]);
const SESSION_STATUSES = ["open", "closed", "expired"];
const REFRESH_MS = 2000;
const TOKEN_KEY = "sagalog.token";
const LIVE_KEY = "sagalog.live";

// ---------------------------------------------------------------- DOM helpers

/** Build an element: h("a", {href: "#/", class: "x", onclick: f}, "text", child, [more]). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "style") el.style.cssText = value;
    else if (key in el && !key.startsWith("aria") && !key.startsWith("data")) el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  el.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

const $ = (id) => document.getElementById(id);

/** Replace an element's children; arrays are flattened and null/false left out, as in h(). */
function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

function badge(status) {
  return h("span", {class: `badge st-${status}`, "data-testid": "status-badge"}, status.replace("_", " "));
}

function fmtTime(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  const sameDay = when.toDateString() === new Date().toDateString();
  return sameDay ? when.toLocaleTimeString() : when.toLocaleString();
}

function timeCell(iso) {
  return h("td", {title: iso || ""}, iso ? h("time", {datetime: iso}, fmtTime(iso)) : "—");
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const minutes = Math.floor(ms / 60_000);
  return minutes < 60 ? `${minutes} min ${Math.round((ms % 60_000) / 1000)} s` : `${(minutes / 60).toFixed(1)} h`;
}

function compact(value, max = 160) {
  const text = value === undefined ? "" : JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

const pretty = (value) => JSON.stringify(value, null, 2);

/** An error as the API gives it ({type, message}, or a plain string) as one line. */
/** An event's metadata cell: who did it (an operator's action) first, then the rest. */
function metaCell(metadata) {
  const actor = metadata && metadata.actor;
  return h("td", {}, actor ? h("span", {class: "actor"}, `by ${actor}`) : null, " ", h("code", {}, compact(metadata)));
}

function errorText(error) {
  if (!error) return "";
  if (typeof error === "string") return error;
  return [error.type, error.message].filter(Boolean).join(": ");
}

// ---------------------------------------------------------------- banner

let bannerTimer = 0;

function showBanner(text, kind = "error") {
  const banner = $("banner");
  banner.textContent = text;
  banner.className = `banner ${kind}`;
  banner.hidden = false;
  clearTimeout(bannerTimer);
  if (kind !== "error") bannerTimer = setTimeout(() => { banner.hidden = true; }, 6000);
}

function clearError() {
  const banner = $("banner");
  if (banner.classList.contains("error")) banner.hidden = true;
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let tokenPrompt = null;

/** Ask for a token once, however many requests are waiting for it. */
function askToken(refused) {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve) => {
    const dialog = $("token-dialog");
    $("token-error").hidden = !refused;
    $("token-error").textContent = refused ? "The server refused that token; try again." : "";
    $("token-input").value = "";
    dialog.addEventListener("close", () => {
      sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
      tokenPrompt = null;
      resolve();
    }, {once: true});
    dialog.showModal();
  });
  return tokenPrompt;
}

/** Call the API; asks for a token on 401 and throws ApiError with the server's message. */
async function api(path, {method = "GET", body} = {}) {
  for (;;) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = {Accept: "application/json"};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
    } catch (err) {
      throw new ApiError(0, "unreachable", `The console server does not answer (${err.message}).`);
    }
    if (response.status === 401) {
      await askToken(Boolean(token));
      continue;
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: reported below */ }
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(response.status, error.code || `http_${response.status}`,
        error.message || `The server answered ${response.status} ${response.statusText}.`);
    }
    return data;
  }
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------- the refresh loop

let live = sessionStorage.getItem(LIVE_KEY) !== "off";
let current = null;  // the mounted view: {refresh(), stale()}
let generation = 0;  // bumped on navigation so late answers for an old view are dropped
let summary = {instances: {}, sessions: {}, metrics: {}};

function setLive(on) {
  live = on;
  sessionStorage.setItem(LIVE_KEY, on ? "on" : "off");
  const button = $("live-toggle");
  button.setAttribute("aria-pressed", String(on));
  button.textContent = on ? "Live" : "Paused";
  button.title = on ? "Refreshing every 2 seconds: click to pause" : "Paused: click to refresh every 2 seconds";
}

const SUMMARY_EVERY = 5;  // ticks: the summary folds many instances, so every 10 s is enough
let ticks = 0;

async function refreshSummary() {
  summary = await api("api/summary");
  const counts = summary.instances || {};
  const shown = STATUSES.filter((s) => counts[s]);
  fill($("summary"), shown.map((s) => h("span", {class: `count st-${s}`}, `${counts[s]} ${s.replace("_", " ")}`)));
}

async function refresh({summaryToo = true} = {}) {
  const view = current;
  try {
    if (summaryToo) await refreshSummary();
    if (view) await view.refresh();
    clearError();
  } catch (err) {
    showBanner(err.message);
  }
}

async function loop() {
  if (live && !document.hidden && !$("confirm-dialog").open && !tokenPrompt) {
    ticks += 1;
    await refresh({summaryToo: ticks % SUMMARY_EVERY === 0});
  }
  setTimeout(loop, REFRESH_MS);
}

// ---------------------------------------------------------------- router

function route() {
  generation += 1;
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  const [kind, ...rest] = hash.split("/");
  const id = rest.join("/");
  const main = $("view");
  fill(main);
  if (kind === "instances" && id) current = instanceView(main, id);
  else if (kind === "sessions" && id) current = sessionView(main, id);
  else if (kind === "sessions") current = sessionListView(main);
  else current = instanceListView(main);
  for (const link of document.querySelectorAll("[data-nav]")) {
    const active = link.dataset.nav === (kind === "sessions" ? "sessions" : "instances");
    if (active) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  refresh();
}

/** Wrap a view's loader so answers arriving after navigation are ignored. */
function guarded(load) {
  const mine = generation;
  return async () => {
    if (mine !== generation) return;
    await load(() => mine !== generation);
  };
}

// ---------------------------------------------------------------- instance list

const listFilters = {statuses: new Set(), workflow: ""};

function instanceListView(main) {
  const chips = h("div", {class: "chips", role: "group", "aria-label": "Filter by status"});
  const workflowInput = h("input", {id: "workflow-filter", type: "search", placeholder: "any workflow",
    value: listFilters.workflow, autocomplete: "off"});
  const tbody = h("tbody");
  const empty = h("p", {class: "muted", hidden: true}, "No instances match.");
  const metrics = h("div", {class: "metrics"});
  let lastRows = "";
  let typing = 0;

  workflowInput.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { listFilters.workflow = workflowInput.value.trim(); refresh(); }, 300);
  });

  main.append(
    h("h1", {}, "Instances"),
    h("div", {class: "filters"},
      chips,
      h("label", {for: "workflow-filter"}, "Workflow"), workflowInput),
    h("table", {class: "grid", "data-testid": "instance-table"},
      h("thead", {}, h("tr", {}, ["ID", "Workflow", "Status", "Started", "Last event", "Events", "Session"]
        .map((t) => h("th", {scope: "col"}, t)))),
      tbody),
    empty, metrics);

  let lastChips = "";

  function drawChips() {
    const counts = summary.instances || {};
    const key = JSON.stringify([counts, [...listFilters.statuses]]);
    if (key === lastChips) return;  // redrawing would replace buttons under the pointer
    lastChips = key;
    fill(chips, STATUSES.map((s) => h("button", {
      type: "button", class: `chip st-${s}`, "data-status": s,
      "aria-pressed": String(listFilters.statuses.has(s)),
      onclick: () => {
        if (listFilters.statuses.has(s)) listFilters.statuses.delete(s); else listFilters.statuses.add(s);
        drawChips();
        lastRows = "";
        refresh();
      },
    }, s.replace("_", " "), h("span", {class: "n"}, String(counts[s] || 0)))));
  }

  let lastMetrics = "";

  function drawMetrics() {
    const entries = Object.entries(summary.metrics || {});
    const workers = summary.workers || [];
    const key = JSON.stringify([entries, workers, summary.truncated]);
    if (key === lastMetrics) return;  // keep an opened <details> open
    lastMetrics = key;
    const wasOpen = Boolean(metrics.querySelector("details[open]"));
    fill(metrics,
      summary.truncated
        ? h("p", {class: "muted"}, `Status counts cover the ${summary.scanned} most recent instances.`) : null,
      ...workers.map((w) => h("p", {class: "muted"},
        `Worker ${w.id}: ${w.in_flight} in flight${w.draining ? " (draining)" : ""}`)),
      entries.length ? h("details", {open: wasOpen},
        h("summary", {}, "Worker metrics"),
        h("dl", {class: "kv"}, entries.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]))) : null);
  }

  return {
    refresh: guarded(async (stale) => {
      const params = new URLSearchParams({limit: "200"});
      if (listFilters.statuses.size) params.set("status", [...listFilters.statuses].join(","));
      if (listFilters.workflow) params.set("workflow", listFilters.workflow);
      const data = await api(`api/instances?${params}`);
      if (stale()) return;
      drawChips();
      drawMetrics();
      const rowsKey = JSON.stringify(data.instances);
      if (rowsKey === lastRows) return;  // unchanged: keep the DOM (and any focus) as it is
      lastRows = rowsKey;
      fill(tbody, data.instances.map((i) => h("tr", {"data-testid": "instance-row", "data-id": i.id,
        "data-status": i.status},
        h("td", {}, h("a", {href: `#/instances/${enc(i.id)}`}, i.id)),
        h("td", {}, i.workflow),
        h("td", {}, badge(i.status)),
        timeCell(i.started_at), timeCell(i.updated_at),
        h("td", {class: "num"}, String(i.version)),
        h("td", {}, i.session_id ? h("a", {href: `#/sessions/${enc(i.session_id)}`}, i.session_id) : ""))));
      empty.hidden = data.instances.length > 0;
    }),
  };
}

// ---------------------------------------------------------------- one instance

const ACTIONS = [
  {
    path: "cancel", label: "Cancel", confirm: "Cancel instance", danger: true,
    when: (i) => i.status === "running" && !i.cancel_requested,
    title: "Cancel this instance?",
    text: "It stops waiting, compensates the steps it completed (newest first) and ends cancelled.",
    fields: [{name: "reason", label: "Reason", value: "cancelled from the console"}],
    body: (f) => ({reason: f.reason}),
  },
  {
    path: "signal", label: "Send signal", when: (i) => ["running", "parked"].includes(i.status),
    title: "Send a signal?",
    text: "The signal is recorded in the journal; a wait for that name takes it.",
    fields: [
      {name: "name", label: "Signal name", value: "", required: true},
      {name: "payload", label: "Payload (JSON)", value: "null", multiline: true},
    ],
    body: (f) => {
      try { return {name: f.name, payload: JSON.parse(f.payload || "null")}; } catch (err) {
        throw new Error(`The payload is not valid JSON: ${err.message}`);
      }
    },
  },
  {
    path: "retry", label: "Retry", when: (i) => ["parked", "compensation_failed"].includes(i.status),
    title: "Retry this instance?",
    text: "A parked instance runs again (deploy the fix first); a failed compensation is attempted again.",
    fields: [], body: () => ({}),
  },
  {
    path: "skip-compensation", label: "Skip compensation", danger: true,
    when: (i) => i.status === "compensation_failed",
    title: "Skip the failed compensation?",
    text: "Only when you have undone that step by hand: the saga goes on with the next compensation.",
    fields: [{name: "reason", label: "Reason", value: "undone by hand"}],
    body: (f) => ({reason: f.reason}),
  },
];

function instanceView(main, id) {
  const head = h("div", {class: "instance-head"});
  const actions = h("div", {class: "actions", role: "group", "aria-label": "Operator actions"});
  const timeline = h("ol", {class: "timeline", "data-testid": "timeline"});
  const axis = h("div", {class: "axis"});
  const details = h("dl", {class: "kv", "data-testid": "details"});
  const slider = h("input", {id: "state-slider", type: "range", min: "1", max: "1", value: "1", step: "1",
    "data-testid": "state-slider"});
  const sliderLabel = h("output", {for: "state-slider", id: "state-version", "data-testid": "state-version"});
  const stateStatus = h("span", {"data-testid": "state-status"});
  const stateJson = h("pre", {class: "json", "data-testid": "state-json"});
  const eventsBody = h("tbody");
  const eventsCount = h("span");
  let info = null;
  let events = [];
  let follow = true;  // the slider tracks the newest version until the user moves it
  let shownVersion = 0;
  let stateSeq = 0;
  let sliderTimer = 0;
  let lastEvents = "";

  main.append(
    h("nav", {class: "crumbs", "aria-label": "Breadcrumb"}, h("a", {href: "#/"}, "Instances"), " / ", id),
    head, actions,
    h("section", {"aria-labelledby": "tl-title"},
      h("h2", {id: "tl-title"}, "Timeline"),
      h("p", {class: "legend"},
        h("span", {class: "key key-step"}), "step ",
        h("span", {class: "key key-compensation"}), "compensation ",
        h("span", {class: "key key-wait"}), "timer / signal / child"),
      axis, timeline),
    h("section", {"aria-labelledby": "dt-title"}, h("h2", {id: "dt-title"}, "Details"), details),
    h("section", {"aria-labelledby": "st-title"},
      h("h2", {id: "st-title"}, "State at version"),
      h("div", {class: "slider"}, h("label", {for: "state-slider"}, "Version"), slider, sliderLabel),
      h("p", {}, "Status at this version: ", stateStatus),
      stateJson),
    h("section", {},
      h("details", {class: "events"},
        h("summary", {}, "Events (", eventsCount, ")"),
        h("table", {class: "grid"},
          h("thead", {}, h("tr", {}, ["Version", "Time", "Type", "Data", "Metadata"]
            .map((t) => h("th", {scope: "col"}, t)))),
          eventsBody))));

  function label(version) {
    const event = events.find((e) => e.version === version);
    return `${version} of ${slider.max}${event ? ` · ${event.type}` : ""}`;
  }

  async function loadState(version) {
    const seq = ++stateSeq;
    const data = await api(`api/instances/${enc(id)}/state?version=${version}`);
    if (seq !== stateSeq) return;
    shownVersion = version;
    fill(stateStatus, badge(data.status));
    stateJson.textContent = pretty(data.state);
  }

  slider.addEventListener("input", () => {
    follow = Number(slider.value) === Number(slider.max);
    sliderLabel.textContent = label(Number(slider.value));
    clearTimeout(sliderTimer);
    sliderTimer = setTimeout(() => loadState(Number(slider.value)).catch((err) => showBanner(err.message)), 120);
  });

  let lastHead = "";

  function drawHead(data) {
    const key = JSON.stringify(data);
    if (key === lastHead) return;  // keep the buttons: one may be under the pointer
    lastHead = key;
    const session = data.session_id || (data.state && data.state.session_id);
    fill(head,
      h("h1", {}, data.id), badge(data.status),
      h("span", {class: "muted"}, ` ${data.workflow} · ${data.version} events`,
        session ? [" · session ", h("a", {href: `#/sessions/${enc(session)}`}, session)] : null));
    fill(actions, ACTIONS.filter((a) => a.when(data)).map((a) => h("button", {
      type: "button", class: a.danger ? "danger" : "", "data-testid": `action-${a.path}`,
      onclick: () => openConfirm(a, data),
    }, a.label)));
    const rows = [["Workflow", data.workflow], ["Input", data.input], ["Result", data.result],
      ["Error", errorText(data.error)], ["Parked because", data.parked_reason],
      ["Cancel requested", data.cancel_requested]];
    fill(details, rows.filter(([, v]) => v !== null && v !== undefined && v !== "")
      .flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "string" ? v : h("code", {}, compact(v, 2000)))]));
  }

  function drawTimeline(steps) {
    const starts = steps.map((s) => Date.parse(s.started_at)).filter(Number.isFinite);
    const ends = steps.map((s) => Date.parse(s.ended_at || s.started_at)).filter(Number.isFinite);
    const open = steps.some((s) => s.started_at && !s.ended_at);
    const t0 = Math.min(...starts);
    const t1 = Math.max(...ends, open ? Date.now() : -Infinity);
    const span = Math.max(t1 - t0, 1);
    fill(axis, (starts.length ? [h("span"), h("div", {class: "axis-scale"},
      h("span", {}, fmtTime(new Date(t0).toISOString())), h("span", {}, `total ${fmtDuration(t1 - t0)}`),
      h("span", {}, fmtTime(new Date(t1).toISOString())))] : []));
    fill(timeline, steps.map((s) => {
      const start = Date.parse(s.started_at);
      const end = s.ended_at ? Date.parse(s.ended_at) : (s.started_at ? Date.now() : NaN);
      const left = Number.isFinite(start) ? ((start - t0) / span) * 100 : 0;
      const width = Number.isFinite(end) ? Math.max(((end - start) / span) * 100, 0.6) : 0;
      const wait = ["timer", "signal", "child"].includes(s.kind);
      const undone = steps.find((o) => o.kind === "step" && o.index === s.undoes);
      const attempts = s.attempts ? `${s.attempts} attempt${s.attempts > 1 ? "s" : ""}` : "";
      const meta = [undone ? `undoes ${undone.name}` : "", s.status, attempts, fmtDuration(s.duration_ms)]
        .filter(Boolean).join(" · ");
      return h("li", {class: `tl-row kind-${s.kind} ${wait ? "kind-wait" : ""} status-${s.status}`,
        "data-testid": "timeline-row", "data-kind": s.kind, "data-name": s.name, "data-status": s.status},
        h("div", {class: "tl-label"},
          h("span", {class: "tl-kind"}, s.kind === "compensation" ? "↶ undo" : s.kind),
          h("strong", {class: "tl-name", title: s.name}, s.name)),
        h("div", {class: "tl-track"},
          width ? h("div", {class: "tl-bar", style: `left:${left}%;width:${width}%`,
            title: `${s.name}: ${s.started_at} → ${s.ended_at || "now"}`}) : null),
        h("div", {class: "tl-meta"}, meta),
        s.error ? h("div", {class: "tl-error"}, errorText(s.error)) : null);
    }));
    if (!steps.length) timeline.append(h("li", {class: "muted"}, "No steps yet."));
  }

  function drawEvents() {
    eventsCount.textContent = String(events.length);
    fill(eventsBody, events.map((e) => h("tr", {},
      h("td", {class: "num"}, String(e.version)), timeCell(e.recorded_at), h("td", {}, e.type),
      h("td", {}, h("code", {}, compact(e.data))), metaCell(e.metadata))));
  }

  return {
    refresh: guarded(async (stale) => {
      if (info && TERMINAL.has(info.status) && !info.dirty) return;  // an ended instance does not change
      const [data, tl] = await Promise.all([api(`api/instances/${enc(id)}`), api(`api/instances/${enc(id)}/timeline`)]);
      if (stale()) return;
      info = data;
      drawHead(data);
      const key = JSON.stringify([tl.steps, tl.events.length, tl.version]);
      const growing = tl.steps.some((s) => s.started_at && !s.ended_at);  // open bars grow until now
      if (key !== lastEvents || growing) {
        events = tl.events;
        drawTimeline(tl.steps);
      }
      if (key !== lastEvents) {
        lastEvents = key;
        drawEvents();
      }
      slider.max = String(data.version);
      if (follow) slider.value = String(data.version);
      sliderLabel.textContent = label(Number(slider.value));
      if (Number(slider.value) !== shownVersion) await loadState(Number(slider.value));
    }),
    invalidate() { if (info) info.dirty = true; },
  };
}

// ---------------------------------------------------------------- actions

function openConfirm(action, instance) {
  const dialog = $("confirm-dialog");
  const form = $("confirm-form");
  const fields = action.fields.map((f) => {
    const value = f.name === "name" ? Object.values((instance.state && instance.state.waits) || {})[0] || "" : f.value;
    const input = f.multiline
      ? h("textarea", {id: `confirm-${f.name}`, name: f.name, rows: "3"}, value)
      : h("input", {id: `confirm-${f.name}`, name: f.name, type: "text", value, required: f.required || false});
    return h("div", {class: "field"}, h("label", {for: `confirm-${f.name}`}, f.label), input);
  });
  $("confirm-title").textContent = action.title;
  $("confirm-text").textContent =
    `${action.text} Instance ${instance.id} (${instance.workflow}) is ${instance.status.replace("_", " ")}.`;
  fill($("confirm-fields"), fields);
  $("confirm-error").hidden = true;
  const ok = $("confirm-ok");
  ok.textContent = action.confirm || action.label;
  ok.className = action.danger ? "danger" : "primary";
  ok.disabled = false;
  dialog.dataset.action = action.path;

  form.onsubmit = async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form).entries());
    ok.disabled = true;
    try {
      const body = action.body(values);
      const answer = await api(`api/instances/${enc(instance.id)}/${action.path}`, {method: "POST", body});
      dialog.close();
      showBanner(`${action.label}: done, ${answer.id} is now ${answer.status}.`, "info");
      if (current && current.invalidate) current.invalidate();
      refresh();
    } catch (err) {
      $("confirm-error").textContent = err.message;
      $("confirm-error").hidden = false;
      ok.disabled = false;
    }
  };
  dialog.showModal();
  const first = dialog.querySelector("input, textarea");
  if (first) first.focus();
}

// ---------------------------------------------------------------- sessions

const sessionFilters = {kind: "", status: ""};

function sessionListView(main) {
  const kind = h("input", {id: "session-kind", type: "search", placeholder: "any kind", value: sessionFilters.kind});
  const status = h("select", {id: "session-status"},
    h("option", {value: ""}, "any"), SESSION_STATUSES.map((s) => h("option", {value: s}, s)));
  status.value = sessionFilters.status;
  const tbody = h("tbody");
  const empty = h("p", {class: "muted", hidden: true}, "No sessions match.");
  let typing = 0;
  kind.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { sessionFilters.kind = kind.value.trim(); refresh(); }, 300);
  });
  status.addEventListener("change", () => { sessionFilters.status = status.value; refresh(); });
  main.append(
    h("h1", {}, "Sessions"),
    h("div", {class: "filters"},
      h("label", {for: "session-kind"}, "Kind"), kind,
      h("label", {for: "session-status"}, "Status"), status),
    h("table", {class: "grid", "data-testid": "session-table"},
      h("thead", {}, h("tr", {}, ["ID", "Kind", "Status", "Opened", "Expires", "Workflows"]
        .map((t) => h("th", {scope: "col"}, t)))),
      tbody),
    empty);
  return {
    refresh: guarded(async (stale) => {
      const params = new URLSearchParams({limit: "200"});
      if (sessionFilters.kind) params.set("kind", sessionFilters.kind);
      if (sessionFilters.status) params.set("status", sessionFilters.status);
      const data = await api(`api/sessions?${params}`);
      if (stale()) return;
      fill(tbody, data.sessions.map((s) => h("tr", {"data-testid": "session-row", "data-id": s.id},
        h("td", {}, h("a", {href: `#/sessions/${enc(s.id)}`}, s.id)),
        h("td", {}, s.kind), h("td", {}, badge(s.status)),
        timeCell(s.opened_at), timeCell(s.expires_at),
        h("td", {class: "num"}, String(s.workflows.length)))));
      empty.hidden = data.sessions.length > 0;
    }),
  };
}

function sessionView(main, id) {
  const head = h("div", {class: "instance-head"});
  const details = h("dl", {class: "kv"});
  const workflows = h("ul", {class: "links"});
  const eventsBody = h("tbody");
  main.append(
    h("nav", {class: "crumbs", "aria-label": "Breadcrumb"}, h("a", {href: "#/sessions"}, "Sessions"), " / ", id),
    head,
    h("section", {}, h("h2", {}, "Details"), details),
    h("section", {}, h("h2", {}, "Bound workflows"), workflows),
    h("section", {}, h("h2", {}, "Events"),
      h("table", {class: "grid"},
        h("thead", {}, h("tr", {}, ["Version", "Time", "Type", "Data", "Metadata"]
          .map((t) => h("th", {scope: "col"}, t)))),
        eventsBody)));
  return {
    refresh: guarded(async (stale) => {
      const s = await api(`api/sessions/${enc(id)}`);
      if (stale()) return;
      fill(head, h("h1", {}, s.id), badge(s.status), h("span", {class: "muted"}, ` ${s.kind}`));
      fill(details,
        h("dt", {}, "Opened"), h("dd", {}, fmtTime(s.opened_at)),
        h("dt", {}, "Expires"), h("dd", {}, s.expires_at ? fmtTime(s.expires_at) : "never"),
        h("dt", {}, "Attributes"), h("dd", {}, h("pre", {class: "json"}, pretty(s.attributes || {}))));
      fill(workflows, (s.workflows.length
        ? s.workflows.map((w) => h("li", {}, h("a", {href: `#/instances/${enc(w)}`}, w)))
        : [h("li", {class: "muted"}, "none")]));
      fill(eventsBody, (s.events || []).map((e) => h("tr", {},
        h("td", {class: "num"}, String(e.version)), timeCell(e.recorded_at), h("td", {}, e.type),
        h("td", {}, h("code", {}, compact(e.data))), metaCell(e.metadata))));
    }),
  };
}

// ---------------------------------------------------------------- start

$("token-dialog").addEventListener("cancel", (event) => event.preventDefault());  // requests wait on it
$("confirm-cancel").addEventListener("click", () => $("confirm-dialog").close());
$("live-toggle").addEventListener("click", () => { setLive(!live); if (live) refresh(); });
window.addEventListener("hashchange", route);
setLive(live);
route();
setTimeout(loop, REFRESH_MS);
