// The portal: a hash-routed single page over the public REST API and the data plane.

import { api, ApiError, auth, describeError, loadDevIdentity, saveDevIdentity, whoAmI } from "./api.js";
import { completeSignIn, detectMode, savedClientId, signIn, signOut } from "./auth.js";
import { McpClient } from "./mcp.js";

const main = document.getElementById("main");
const REFRESH_MS = 3000;
let cleanups = [];
let serversSupported = null;

// ---------- small DOM helpers ----------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function onCleanup(fn) {
  cleanups.push(fn);
}

function every(ms, fn) {
  const t = setInterval(fn, ms);
  onCleanup(() => clearInterval(t));
}

function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.classList.add("show");
  setTimeout(() => el.classList.remove("show"), 3000);
}

function errorBox(err, what) {
  return h("div", { class: "alert", role: "alert" }, h("strong", {}, what ? `${what}: ` : ""), describeError(err));
}

function relTime(iso) {
  if (!iso) return "";
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (Number.isNaN(s)) return iso;
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function timeEl(iso) {
  return iso ? h("time", { datetime: iso, title: new Date(iso).toLocaleString() }, relTime(iso)) : "—";
}

const enc = encodeURIComponent;

// ---------- conditions ----------

function conditionClass(c) {
  const on = c.status === "True";
  if (c.type === "Degraded") return on ? "bad" : "off";
  if (c.type === "Progressing") return on ? "warn" : "off";
  if (c.type === "Ready") return on ? "ok" : "bad";
  return on ? "ok" : "warn";
}

function chip(c) {
  const label = c.status === "True" ? c.type : `not ${c.type}`;
  return h(
    "span",
    { class: `chip ${conditionClass(c)}`, title: `${c.type}=${c.status}: ${c.reason}${c.message ? ` — ${c.message}` : ""}` },
    label,
  );
}

function health(status) {
  if (!status) return "unknown";
  const cond = Object.fromEntries((status.conditions || []).map((c) => [c.type, c.status]));
  if (cond.Degraded === "True") return "degraded";
  if (cond.Ready === "True") return "ready";
  return "not-ready";
}

function lastChange(adapter, status) {
  const times = [(adapter && adapter.lastUpdatedAt) || null, ...((status && status.conditions) || []).map((c) => c.lastTransitionTime)];
  return times.filter(Boolean).sort().pop() || null;
}

/** Any JSON value as readable HTML (for fields the portal does not know, like toolPolicy). */
function renderValue(value) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "none");
  if (Array.isArray(value)) {
    if (!value.length) return h("span", { class: "muted" }, "none");
    return h("ul", { class: "plain" }, value.map((v) => h("li", {}, renderValue(v))));
  }
  if (typeof value === "object") {
    const entries = Object.entries(value);
    if (!entries.length) return h("span", { class: "muted" }, "none");
    return h("dl", { class: "kv" }, entries.map(([k, v]) => [h("dt", {}, k), h("dd", {}, renderValue(v))]));
  }
  return h("span", {}, String(value));
}

async function listAll(path) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < 20; page++) {
    const { data } = await api("GET", cursor ? `${path}?cursor=${enc(cursor)}` : path);
    if (Array.isArray(data)) return data;
    items.push(...(data.items || []));
    cursor = data.nextCursor;
    if (!cursor) break;
  }
  return items;
}

async function statusesOf(adapters) {
  const out = {};
  await Promise.all(
    adapters.map(async (a) => {
      try {
        out[a.name] = (await api("GET", `/adapters/${enc(a.name)}/status`)).data;
      } catch {
        out[a.name] = null;
      }
    }),
  );
  return out;
}

// ---------- adapters list ----------

function viewAdapters() {
  const search = h("input", { type: "search", id: "adapter-search", placeholder: "Search by name, image or description", "aria-label": "Search adapters" });
  const filter = h(
    "select",
    { id: "adapter-filter", "aria-label": "Show" },
    h("option", { value: "all" }, "All"),
    h("option", { value: "ready" }, "Ready"),
    h("option", { value: "not-ready" }, "Not ready"),
    h("option", { value: "degraded" }, "Degraded"),
  );
  const body = h("div", { id: "adapter-list", "aria-live": "polite" }, h("p", { class: "muted" }, "Loading adapters…"));
  main.replaceChildren(
    h(
      "section",
      {},
      h("div", { class: "title-row" }, h("h1", {}, "Adapters"), h("a", { class: "button primary", href: "#/new-adapter" }, "New adapter")),
      h("div", { class: "toolbar" }, search, filter),
      body,
    ),
  );
  let adapters = [];
  let statuses = {};
  let loaded = false;
  let failure = null;

  function draw() {
    if (failure) {
      body.replaceChildren(errorBox(failure, "Could not load adapters"));
      return;
    }
    if (!loaded) return;
    if (!adapters.length) {
      body.replaceChildren(
        h("div", { class: "empty" }, h("p", {}, "No adapters yet, or none you may see."), h("a", { class: "button primary", href: "#/new-adapter" }, "Create your first adapter")),
      );
      return;
    }
    const q = search.value.trim().toLowerCase();
    const want = filter.value;
    const shown = adapters.filter((a) => {
      const text = `${a.name} ${a.imageName}:${a.imageVersion} ${a.description || ""}`.toLowerCase();
      return (!q || text.includes(q)) && (want === "all" || health(statuses[a.name]) === want);
    });
    if (!shown.length) {
      body.replaceChildren(h("p", { class: "empty" }, `No adapter matches “${search.value}”${want !== "all" ? ` among the ${want.replace("-", " ")} ones` : ""}.`));
      return;
    }
    const rows = shown.map((a) => {
      const s = statuses[a.name];
      return h(
        "tr",
        { "data-adapter": a.name, class: `health-${health(s)}` },
        h("td", { "data-label": "Name" }, h("a", { href: `#/adapters/${enc(a.name)}` }, a.name)),
        h("td", { "data-label": "Image" }, h("code", {}, `${a.imageName}:${a.imageVersion}`)),
        h("td", { "data-label": "Ready", class: "num ready-count" }, s ? `${s.readyReplicas}/${s.desiredReplicas}` : "?"),
        h("td", { "data-label": "Conditions" }, s ? h("span", { class: "chips" }, s.conditions.map(chip)) : h("span", { class: "muted" }, "status unavailable")),
        h("td", { "data-label": "Last change" }, timeEl(lastChange(a, s))),
      );
    });
    body.replaceChildren(
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "adapters" },
          h("caption", { class: "sr-only" }, "Adapters and their state"),
          h("thead", {}, h("tr", {}, ["Name", "Image", "Ready", "Conditions", "Last change"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, rows),
        ),
      ),
      h("p", { class: "muted small" }, `${shown.length} of ${adapters.length} adapters · refreshes every ${REFRESH_MS / 1000} s`),
    );
  }

  async function load() {
    try {
      adapters = await listAll("/adapters");
      statuses = await statusesOf(adapters);
      failure = null;
    } catch (err) {
      failure = err;
    }
    loaded = true;
    draw();
  }
  search.addEventListener("input", draw);
  filter.addEventListener("change", draw);
  load();
  every(REFRESH_MS, load);
}

// ---------- adapter detail ----------

function viewAdapter(name) {
  main.replaceChildren(h("p", { class: "muted" }, `Loading ${name}…`));
  const summary = h("div", { id: "adapter-summary" });
  const statusBox = h("div", { id: "adapter-status" });
  const logs = logsPanel(name);
  let adapter = null;

  async function load() {
    try {
      const [{ data: a }, st] = await Promise.all([
        api("GET", `/adapters/${enc(name)}`),
        api("GET", `/adapters/${enc(name)}/status`).catch((err) => ({ error: err })),
      ]);
      const first = adapter === null;
      adapter = a;
      if (first) {
        main.replaceChildren(
          h(
            "section",
            {},
            h(
              "div",
              { class: "title-row" },
              h("h1", {}, a.name),
              h(
                "div",
                { class: "actions" },
                h("a", { class: "button", href: `#/console/adapters/${enc(a.name)}` }, "Open in console"),
                h("a", { class: "button", href: `#/adapters/${enc(a.name)}/edit` }, "Edit"),
                h("button", { class: "danger", type: "button", onclick: () => remove(a.name) }, "Delete"),
              ),
            ),
            a.description ? h("p", {}, a.description) : null,
            summary,
            statusBox,
            logs.element,
          ),
        );
        logs.start();
      }
      drawSummary(a);
      drawStatus(st.error ? null : st.data, st.error);
      if (!st.error) logs.setInstances(st.data.instances || []);
    } catch (err) {
      main.replaceChildren(errorBox(err, `Could not load adapter ${name}`), h("p", {}, h("a", { href: "#/adapters" }, "Back to adapters")));
      cleanups.forEach((f) => f());
      cleanups = [];
    }
  }

  function drawSummary(a) {
    const rows = [
      ["Image", h("code", {}, `${a.imageName}:${a.imageVersion}`)],
      ["Replicas wanted", a.replicaCount],
      ["Required roles", a.requiredRoles && a.requiredRoles.length ? a.requiredRoles.join(", ") : h("span", { class: "muted" }, "none (creator and mcp.admin only)")],
      ["Environment", Object.keys(a.environmentVariables || {}).length ? Object.keys(a.environmentVariables).join(", ") : h("span", { class: "muted" }, "none")],
      ["Workload identity", a.useWorkloadIdentity ? "yes" : "no"],
      ["Created by", a.createdBy || "—"],
      ["Created", timeEl(a.createdAt)],
      ["Last updated", timeEl(a.lastUpdatedAt)],
      ["Generation", a.generation],
    ];
    const extras = [];
    for (const key of ["toolPolicy", "rateLimits"]) {
      if (a[key] !== undefined) extras.push(h("section", { class: "card", id: `adapter-${key}` }, h("h2", {}, key === "toolPolicy" ? "Tool policy" : "Rate limits"), renderValue(a[key])));
    }
    summary.replaceChildren(h("dl", { class: "kv card" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])), ...extras);
  }

  function drawStatus(s, err) {
    if (!s) {
      statusBox.replaceChildren(errorBox(err, "Status unavailable"));
      return;
    }
    statusBox.replaceChildren(
      h(
        "section",
        { class: "card" },
        h("h2", {}, "Conditions ", h("span", { class: "muted small" }, `${s.readyReplicas}/${s.desiredReplicas} ready · observed generation ${s.observedGeneration} of ${s.generation}`)),
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { id: "conditions" },
            h("thead", {}, h("tr", {}, ["Condition", "Reason", "Message", "Since"].map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              {},
              s.conditions.map((c) =>
                h("tr", {}, h("td", { "data-label": "Condition" }, chip(c)), h("td", { "data-label": "Reason" }, c.reason), h("td", { "data-label": "Message" }, c.message || "—"), h("td", { "data-label": "Since" }, timeEl(c.lastTransitionTime))),
              ),
            ),
          ),
        ),
      ),
      h(
        "section",
        { class: "card" },
        h("h2", {}, "Replicas"),
        s.instances && s.instances.length
          ? h(
              "div",
              { class: "table-wrap" },
              h(
                "table",
                { id: "replicas" },
                h("thead", {}, h("tr", {}, ["#", "Replica", "State", "Routes traffic", "Restarts", "Message"].map((t) => h("th", { scope: "col" }, t)))),
                h(
                  "tbody",
                  {},
                  s.instances.map((i) =>
                    h(
                      "tr",
                      {},
                      h("td", { "data-label": "#" }, i.instance),
                      h("td", { "data-label": "Replica" }, i.name),
                      h("td", { "data-label": "State" }, h("span", { class: `chip ${i.ready ? "ok" : "warn"}` }, i.state)),
                      h("td", { "data-label": "Routes traffic" }, i.ready ? "yes" : "no"),
                      h("td", { "data-label": "Restarts", class: i.restarts ? "warn-text" : "" }, i.restarts),
                      h("td", { "data-label": "Message" }, i.message || "—"),
                    ),
                  ),
                ),
              ),
            )
          : h("p", { class: "muted" }, "No replicas (replica count is 0, or they are being created)."),
      ),
    );
  }

  async function remove(n) {
    if (!confirm(`Delete adapter ${n}? Its replicas and sessions go too.`)) return;
    try {
      await api("DELETE", `/adapters/${enc(n)}`);
      toast(`Deleted ${n}`);
      location.hash = "#/adapters";
    } catch (err) {
      statusBox.prepend(errorBox(err, "Could not delete"));
    }
  }

  load();
  every(REFRESH_MS, () => adapter && load());
}

/** Logs: follows the SSE stream when the gateway has one, else polls the tail. */
function logsPanel(name) {
  const select = h("select", { id: "log-instance", "aria-label": "Replica" }, h("option", { value: "0" }, "replica 0"));
  const follow = h("input", { type: "checkbox", id: "log-follow", checked: true });
  const mode = h("span", { class: "muted small", id: "log-mode" });
  const pre = h("pre", { class: "logs", id: "logs", tabindex: "0", "aria-label": "Replica log" });
  const element = h(
    "section",
    { class: "card" },
    h("div", { class: "title-row" }, h("h2", {}, "Logs"), h("div", { class: "toolbar" }, select, h("label", { class: "inline" }, follow, " Follow"), mode)),
    pre,
  );
  let abort = null;
  let poll = null;
  let known = "";

  function stop() {
    if (abort) abort.abort();
    abort = null;
    if (poll) clearInterval(poll);
    poll = null;
  }
  onCleanup(stop);

  function show(text, append) {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
    if (append) {
      pre.textContent += text;
      if (pre.textContent.length > 400_000) pre.textContent = pre.textContent.slice(-300_000);
    } else {
      pre.textContent = text || "(no output yet)";
    }
    if (atBottom || !append) pre.scrollTop = pre.scrollHeight;
  }

  async function tail() {
    try {
      const { data } = await api("GET", `/adapters/${enc(name)}/logs?instance=${select.value}&tail=500`, undefined, { Accept: "text/plain" });
      if (data !== known) {
        known = data;
        show(data, false);
      }
    } catch (err) {
      show(`Could not read the log: ${describeError(err)}`, false);
    }
  }

  async function followSse() {
    abort = new AbortController();
    const signal = abort.signal;
    const { authHeaders } = await import("./api.js");
    let res;
    try {
      res = await fetch(`/adapters/${enc(name)}/logs?instance=${select.value}&follow=true&tail=200`, {
        headers: { Accept: "text/event-stream", ...authHeaders() },
        credentials: "omit",
        cache: "no-store",
        signal,
      });
    } catch {
      return false;
    }
    const type = res.headers.get("content-type") || "";
    if (!res.ok || !type.startsWith("text/event-stream")) {
      res.body && res.body.cancel().catch(() => {});
      return false; // not on this gateway yet: poll instead
    }
    mode.textContent = "live";
    show("", false);
    pre.textContent = "";
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let ended = null; // the server's `event: end` (the replica is gone): do not reconnect
    (async () => {
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
          let cut;
          let out = "";
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const lines = block.split("\n");
            const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
            const event = (lines.find((l) => l.startsWith("event:")) || "event: message").slice(6).trim();
            if (event === "end") ended = data.join(" ") || "the stream ended";
            else if (data.length) out += data.join("\n") + "\n";
          }
          if (out) show(out, true);
          if (ended) break;
        }
        if (!signal.aborted) mode.textContent = ended ? `stopped: ${ended}` : "stream ended";
      } catch {
        if (!signal.aborted) mode.textContent = "stream interrupted";
      }
    })();
    return true;
  }

  async function start() {
    stop();
    known = "";
    if (follow.checked && (await followSse())) return;
    mode.textContent = follow.checked ? "refreshing every 2 s" : "";
    await tail();
    if (follow.checked) poll = setInterval(tail, 2000);
  }

  select.addEventListener("change", start);
  follow.addEventListener("change", start);

  function setInstances(instances) {
    const want = instances.map((i) => String(i.instance));
    const have = [...select.options].map((o) => o.value);
    if (want.length && want.join() !== have.join()) {
      const current = select.value;
      select.replaceChildren(...instances.map((i) => h("option", { value: String(i.instance) }, `replica ${i.instance} (${i.state})`)));
      if (want.includes(current)) select.value = current;
    }
  }
  return { element, start, setInstances };
}

// ---------- create / edit form ----------

let openapiCache = null;

async function adapterSchema() {
  if (!openapiCache) openapiCache = (await api("GET", "/openapi/openapi.json")).data;
  const schemas = (openapiCache.components && openapiCache.components.schemas) || {};
  const resolve = (s) => (s && s.$ref ? schemas[s.$ref.split("/").pop()] : s);
  const key = Object.keys(schemas).find((k) => k === "AdapterInput") || Object.keys(schemas).find((k) => /AdapterInput/.test(k));
  if (!key) throw new Error("the gateway's OpenAPI document has no AdapterInput schema");
  const schema = resolve(schemas[key]);
  const props = {};
  for (const [k, v] of Object.entries(schema.properties || {})) props[k] = resolve(v);
  return { properties: props, required: new Set(schema.required || []) };
}

const LABELS = {
  name: "Name",
  imageName: "Image",
  imageVersion: "Image version",
  environmentVariables: "Environment variables",
  replicaCount: "Replicas",
  description: "Description",
  requiredRoles: "Required roles",
  useWorkloadIdentity: "Use workload identity",
};

/** What the schema's patterns mean, in words (fields not listed show the pattern itself). */
const PATTERN_HINTS = {
  name: "lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen",
  imageName: "lowercase path segments separated by / . _ or -",
  imageVersion: "letters, digits, dots, underscores and hyphens, starting with a letter or digit",
};

function kindOf(schema) {
  const s = schema.anyOf ? schema.anyOf.find((x) => x.type !== "null") || schema : schema;
  if (s.type === "boolean") return "boolean";
  if (s.type === "integer" || s.type === "number") return "number";
  if (s.type === "array" && s.items && s.items.type === "string") return "list";
  if (s.type === "object" && !s.properties && s.additionalProperties && s.additionalProperties.type === "string") return "env";
  if (s.type === "string") return "string";
  return "json";
}

function buildField(key, schema, required, value, locked) {
  const kind = kindOf(schema);
  const id = `f-${key}`;
  const hint = [schema.description, kind === "list" ? "Comma-separated." : "", kind === "env" ? "One KEY=value per line." : ""].filter(Boolean).join(" ");
  const attrs = { id, name: key, "aria-describedby": `hint-${key} err-${key}`, disabled: locked || null };
  let input;
  if (kind === "boolean") {
    input = h("input", { ...attrs, type: "checkbox", checked: !!value });
  } else if (kind === "number") {
    input = h("input", { ...attrs, type: "number", inputmode: "numeric", min: schema.minimum ?? null, max: schema.maximum ?? null, value: value ?? schema.default ?? "" });
  } else if (kind === "env") {
    input = h("textarea", { ...attrs, rows: 3, spellcheck: "false" });
    input.value = Object.entries(value || {})
      .map(([k, v]) => `${k}=${v}`)
      .join("\n");
  } else if (kind === "json") {
    input = h("textarea", { ...attrs, rows: 3, spellcheck: "false" });
    input.value = value === undefined ? "" : JSON.stringify(value, null, 2);
  } else if (key === "description") {
    input = h("textarea", { ...attrs, rows: 2, maxlength: schema.maxLength ?? null });
    input.value = value || "";
  } else {
    input = h("input", {
      ...attrs,
      type: "text",
      autocomplete: "off",
      spellcheck: "false",
      value: kind === "list" ? (value || []).join(", ") : value ?? "",
      maxlength: schema.maxLength ?? null,
    });
  }
  const label = h("label", { for: id }, LABELS[key] || key, required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null);
  return h(
    "div",
    { class: `field field-${kind}`, "data-field": key },
    kind === "boolean" ? h("div", { class: "check" }, input, label) : [label, input],
    h("p", { class: "hint", id: `hint-${key}` }, hint),
    h("p", { class: "error", id: `err-${key}`, role: "alert" }),
  );
}

function readField(form, key, schema) {
  const input = form.querySelector(`#f-${key}`);
  const kind = kindOf(schema);
  if (kind === "boolean") return input.checked;
  const raw = input.value;
  if (kind === "number") return raw.trim() === "" ? undefined : Number(raw);
  if (kind === "list") return raw.split(",").map((s) => s.trim()).filter(Boolean);
  if (kind === "env") {
    const out = {};
    for (const line of raw.split("\n")) {
      if (!line.trim()) continue;
      const at = line.indexOf("=");
      if (at < 0) throw Object.assign(new Error(`“${line.trim()}” is not KEY=value`), { field: key });
      out[line.slice(0, at).trim()] = line.slice(at + 1);
    }
    return out;
  }
  if (kind === "json") {
    if (!raw.trim()) return undefined;
    try {
      return JSON.parse(raw);
    } catch (err) {
      throw Object.assign(new Error(`not valid JSON: ${err.message}`), { field: key });
    }
  }
  return raw.trim();
}

/** The schema's own checks, so most mistakes show before the request. */
function checkAgainstSchema(key, schema, value, required) {
  const s = schema.anyOf ? schema.anyOf.find((x) => x.type !== "null") || schema : schema;
  const label = LABELS[key] || key;
  if (required && (value === undefined || value === "")) return `${label} is required.`;
  if (value === undefined || value === "") return null;
  if (typeof value === "string") {
    if (s.maxLength !== undefined && value.length > s.maxLength) return `${label} is at most ${s.maxLength} characters.`;
    if (s.minLength !== undefined && value.length < s.minLength) return `${label} is at least ${s.minLength} characters.`;
    if (s.pattern) {
      let re = null;
      try {
        re = new RegExp(s.pattern, "u");
      } catch {
        re = null;
      }
      if (re && !re.test(value)) return `${label} “${value}” does not match the allowed form: ${PATTERN_HINTS[key] || s.pattern}.`;
    }
  }
  if (typeof value === "number") {
    if (!Number.isInteger(value) && s.type === "integer") return `${label} must be a whole number.`;
    if (s.minimum !== undefined && value < s.minimum) return `${label} is at least ${s.minimum}.`;
    if (s.maximum !== undefined && value > s.maximum) return `${label} is at most ${s.maximum}.`;
  }
  if (Array.isArray(value) && s.maxItems !== undefined && value.length > s.maxItems) return `${label} has at most ${s.maxItems} entries.`;
  if (value && typeof value === "object" && !Array.isArray(value) && s.propertyNames && s.propertyNames.pattern) {
    let re = null;
    try {
      re = new RegExp(s.propertyNames.pattern, "u");
    } catch {
      re = null;
    }
    const bad = re && Object.keys(value).find((k) => !re.test(k));
    if (bad) return `“${bad}” is not a valid variable name.`;
  }
  return null;
}

/** problem.field may be `environmentVariables.FOO` or `requiredRoles[0]`: the input is the first segment. */
function fieldKey(field, keys) {
  if (!field) return null;
  const head = field.split(/[.[]/)[0];
  return keys.includes(head) ? head : null;
}

async function viewForm(name) {
  const editing = name !== null;
  main.replaceChildren(h("p", { class: "muted" }, "Loading the form…"));
  let schema;
  let current = null;
  let etag = null;
  try {
    schema = await adapterSchema();
    if (editing) {
      const res = await api("GET", `/adapters/${enc(name)}`);
      current = res.data;
      etag = res.headers.get("etag");
    }
  } catch (err) {
    main.replaceChildren(errorBox(err, "Could not load the form"));
    return;
  }
  const keys = Object.keys(schema.properties);
  const immutable = new Set(editing ? ["name", "useWorkloadIdentity"] : []);
  const formError = h("div", { id: "form-error", role: "alert" });
  const submit = h("button", { class: "primary", type: "submit" }, editing ? "Save changes" : "Create adapter");
  const form = h(
    "form",
    { id: "adapter-form", novalidate: true, class: "card" },
    keys.map((k) => buildField(k, schema.properties[k], schema.required.has(k), current ? current[k] : undefined, immutable.has(k))),
    formError,
    h("div", { class: "actions" }, submit, h("a", { class: "button", href: editing ? `#/adapters/${enc(name)}` : "#/adapters" }, "Cancel")),
  );

  function clearErrors() {
    form.querySelectorAll(".error").forEach((e) => (e.textContent = ""));
    form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
    formError.replaceChildren();
  }
  function fieldError(key, message) {
    const err = form.querySelector(`#err-${key}`);
    const input = form.querySelector(`#f-${key}`);
    err.textContent = message;
    input.setAttribute("aria-invalid", "true");
    return input;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    const body = {};
    let firstBad = null;
    for (const k of keys) {
      let value;
      try {
        value = readField(form, k, schema.properties[k]);
      } catch (err) {
        firstBad = firstBad || fieldError(k, err.message);
        continue;
      }
      const problem = checkAgainstSchema(k, schema.properties[k], value, schema.required.has(k));
      if (problem) firstBad = firstBad || fieldError(k, problem);
      if (value !== undefined) body[k] = value;
    }
    if (firstBad) {
      firstBad.focus();
      return;
    }
    submit.disabled = true;
    try {
      const res = editing
        ? await api("PUT", `/adapters/${enc(name)}`, body, etag ? { "If-Match": etag } : {})
        : await api("POST", "/adapters", body);
      toast(editing ? `Saved ${res.data.name}` : `Created ${res.data.name}`);
      location.hash = `#/adapters/${enc(res.data.name)}`;
    } catch (err) {
      const key = err instanceof ApiError ? fieldKey(err.field, keys) : null;
      if (key) fieldError(key, describeError(err)).focus();
      else formError.replaceChildren(errorBox(err, editing ? "Could not save" : "Could not create"));
    } finally {
      submit.disabled = false;
    }
  });

  main.replaceChildren(
    h(
      "section",
      {},
      h("h1", {}, editing ? `Edit ${name}` : "New adapter"),
      h("p", { class: "muted" }, "Fields and their checks come from the gateway's OpenAPI schema (AdapterInput)."),
      form,
      editing ? null : importPanel(),
    ),
  );
  form.querySelector(editing ? "#f-imageVersion" : "#f-name")?.focus();
}

/** server.json import: drop a file (or pick one) and POST {"serverJson": …}. */
function importPanel() {
  const result = h("div", { id: "import-result", role: "alert" });
  const file = h("input", { type: "file", id: "import-file", accept: ".json,application/json" });
  const zone = h(
    "div",
    { class: "dropzone", id: "import-zone" },
    h("p", {}, "Drop a ", h("code", {}, "server.json"), " here, or "),
    h("label", { for: "import-file", class: "button" }, "choose a file"),
    file,
  );
  async function handle(f) {
    result.replaceChildren(h("p", { class: "muted" }, `Importing ${f.name}…`));
    let doc;
    try {
      doc = JSON.parse(await f.text());
    } catch (err) {
      result.replaceChildren(errorBox(err, `${f.name} is not JSON`));
      return;
    }
    try {
      const res = await api("POST", "/adapters", { serverJson: doc });
      toast(`Imported ${res.data.name}`);
      location.hash = `#/adapters/${enc(res.data.name)}`;
    } catch (err) {
      result.replaceChildren(errorBox(err, "The gateway refused the import"));
    }
  }
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) handle(f);
  });
  file.addEventListener("change", () => file.files[0] && handle(file.files[0]));
  return h("section", { class: "card" }, h("h2", {}, "Import a server.json"), zone, result);
}

// ---------- MCP console ----------

async function targets() {
  const out = [];
  try {
    for (const a of await listAll("/adapters")) out.push({ kind: "adapters", name: a.name });
  } catch {
    /* shown as an empty list */
  }
  if (await hasServers()) {
    try {
      for (const s of await listAll("/servers")) out.push({ kind: "servers", name: s.name });
    } catch {
      /* ignore */
    }
  }
  return out;
}

function toolForm(tool, onCall) {
  const schema = tool.inputSchema || {};
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  const fields = Object.entries(props).map(([key, s]) => {
    const id = `arg-${key}`;
    const type = Array.isArray(s.type) ? s.type.find((t) => t !== "null") : s.type;
    let input;
    if (s.enum) input = h("select", { id, name: key }, s.enum.map((v) => h("option", { value: JSON.stringify(v) }, String(v))));
    else if (type === "boolean") input = h("input", { id, name: key, type: "checkbox" });
    else if (type === "number" || type === "integer") input = h("input", { id, name: key, type: "number", step: type === "integer" ? "1" : "any", required: required.has(key) });
    else if (type === "string") input = h("input", { id, name: key, type: "text", required: required.has(key) });
    else input = h("textarea", { id, name: key, rows: 3, placeholder: "JSON" });
    return {
      key,
      type,
      s,
      input,
      el: h(
        "div",
        { class: "field" },
        h("label", { for: id }, s.title || key, required.has(key) ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null, h("span", { class: "muted small" }, ` ${type || "json"}`)),
        input,
        s.description ? h("p", { class: "hint" }, s.description) : null,
      ),
    };
  });
  const err = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    { id: "tool-form", class: "card", novalidate: true },
    h("h2", {}, tool.name),
    tool.description ? h("p", {}, tool.description) : null,
    fields.length ? fields.map((f) => f.el) : h("p", { class: "muted" }, "This tool takes no arguments."),
    err,
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit", id: "call-tool" }, `Call ${tool.name}`)),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    err.textContent = "";
    const args = {};
    for (const f of fields) {
      const raw = f.input.type === "checkbox" ? f.input.checked : f.input.value;
      if (f.input.type === "checkbox") {
        args[f.key] = raw;
        continue;
      }
      if (raw === "") {
        if (required.has(f.key)) {
          err.textContent = `${f.key} is required.`;
          f.input.focus();
          return;
        }
        continue;
      }
      try {
        if (f.s.enum) args[f.key] = JSON.parse(raw);
        else if (f.type === "number" || f.type === "integer") args[f.key] = Number(raw);
        else if (f.type === "string") args[f.key] = raw;
        else args[f.key] = JSON.parse(raw);
      } catch (e) {
        err.textContent = `${f.key}: not valid JSON (${e.message})`;
        f.input.focus();
        return;
      }
    }
    onCall(args);
  });
  return form;
}

function renderResult(result) {
  const parts = (result.content || []).map((c) => {
    if (c.type === "text") return h("pre", { class: "result-text" }, c.text);
    if (c.type === "image") return h("img", { alt: "tool image", src: `data:${c.mimeType};base64,${c.data}` });
    return h("pre", {}, JSON.stringify(c, null, 2));
  });
  return h(
    "div",
    { class: `card result ${result.isError ? "is-error" : ""}`, id: "tool-result" },
    h("h2", {}, result.isError ? "The tool reported an error" : "Result"),
    parts.length ? parts : h("p", { class: "muted" }, "No content."),
    result.structuredContent !== undefined ? [h("h3", {}, "Structured content"), h("pre", {}, JSON.stringify(result.structuredContent, null, 2))] : null,
    h("details", {}, h("summary", {}, "Raw result"), h("pre", {}, JSON.stringify(result, null, 2))),
  );
}

async function viewConsole(kind, name) {
  const select = h("select", { id: "console-target", "aria-label": "Adapter or virtual server" });
  const connect = h("button", { class: "primary", type: "submit", id: "console-connect" }, "Connect");
  const info = h("div", { id: "console-info", "aria-live": "polite" });
  const tools = h("div", { id: "console-tools" });
  const call = h("div", { id: "console-call" });
  const output = h("div", { id: "console-output", "aria-live": "polite" });
  main.replaceChildren(
    h(
      "section",
      {},
      h("h1", {}, "MCP console"),
      h("p", { class: "muted" }, `Talks to the data plane as ${whoAmI() || "an anonymous user"}, exactly as an MCP client would.`),
      h("form", { class: "toolbar card", id: "console-form" }, h("label", { for: "console-target" }, "Target"), select, connect),
      info,
      h("div", { class: "console-grid" }, tools, h("div", {}, call, output)),
    ),
  );
  const list = await targets();
  if (!list.length) {
    select.disabled = true;
    connect.disabled = true;
    info.replaceChildren(h("p", { class: "empty" }, "There is nothing to connect to yet. ", h("a", { href: "#/new-adapter" }, "Create an adapter"), " first."));
    return;
  }
  select.replaceChildren(...list.map((t) => h("option", { value: `${t.kind}/${t.name}` }, `${t.kind === "servers" ? "server" : "adapter"}: ${t.name}`)));
  if (kind && name) select.value = `${kind}/${name}`;
  let client = null;
  onCleanup(() => client && client.close());

  select.form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (client) await client.close();
    const [k, n] = select.value.split("/");
    history.replaceState(null, "", `#/console/${k}/${enc(n)}`);
    client = new McpClient(`/${k}/${enc(n)}/mcp`);
    tools.replaceChildren();
    call.replaceChildren();
    output.replaceChildren();
    info.replaceChildren(h("p", { class: "muted" }, `Connecting to ${n}…`));
    connect.disabled = true;
    try {
      const found = await client.listTools();
      const server = client.serverInfo ? ` · ${client.serverInfo.name || ""} ${client.serverInfo.version || ""}` : "";
      info.replaceChildren(h("p", { class: "ok-text" }, `Connected to ${n} (MCP ${client.protocolVersion}${client.era === "legacy" ? ", session" : ", stateless"}${server}).`));
      if (!found.length) {
        tools.replaceChildren(h("p", { class: "empty" }, "This server offers no tools you may use."));
        return;
      }
      tools.replaceChildren(
        h(
          "nav",
          { class: "card", "aria-label": "Tools" },
          h("h2", {}, `Tools (${found.length})`),
          h(
            "ul",
            { class: "tool-list" },
            found.map((t) =>
              h(
                "li",
                {},
                h(
                  "button",
                  {
                    type: "button",
                    class: "link",
                    "data-tool": t.name,
                    onclick: () => {
                      output.replaceChildren();
                      call.replaceChildren(
                        toolForm(t, async (args) => {
                          output.replaceChildren(h("p", { class: "muted" }, `Calling ${t.name}…`));
                          try {
                            output.replaceChildren(renderResult(await client.callTool(t.name, args)));
                          } catch (err) {
                            output.replaceChildren(mcpErrorBox(err, `${t.name} failed`));
                          }
                        }),
                      );
                      call.querySelector("input, select, textarea, button")?.focus();
                    },
                  },
                  t.name,
                ),
                t.description ? h("span", { class: "muted small" }, ` — ${t.description}`) : null,
              ),
            ),
          ),
        ),
      );
    } catch (err) {
      info.replaceChildren(mcpErrorBox(err, `Could not connect to ${n}`));
    } finally {
      connect.disabled = false;
    }
  });
  if (kind && name) connect.click();
}

function mcpErrorBox(err, what) {
  const code = err.code !== null && err.code !== undefined ? ` (JSON-RPC ${err.code})` : "";
  const hint = err.status === 401 ? " Sign in first." : err.status === 403 ? " You do not have access to it." : "";
  return h("div", { class: "alert", role: "alert", id: "console-error" }, h("strong", {}, `${what}: `), `${err.message}${code}.${hint}`);
}

// ---------- virtual servers ----------

async function hasServers() {
  if (serversSupported !== null) return serversSupported;
  try {
    await api("GET", "/servers?limit=1");
    serversSupported = true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return true; // ask again once signed in
    serversSupported = !(err instanceof ApiError && [404, 405].includes(err.status));
  }
  document.getElementById("nav-servers").hidden = !serversSupported;
  return serversSupported;
}

async function viewServers(name) {
  if (!(await hasServers())) {
    main.replaceChildren(h("p", { class: "empty" }, "This gateway has no virtual servers."));
    return;
  }
  if (name) return viewServer(name);
  main.replaceChildren(h("h1", {}, "Virtual servers"), h("p", { class: "muted" }, "Loading…"));
  let servers;
  try {
    servers = await listAll("/servers");
  } catch (err) {
    main.replaceChildren(h("h1", {}, "Virtual servers"), errorBox(err, "Could not load virtual servers"));
    return;
  }
  main.replaceChildren(
    h("h1", {}, "Virtual servers"),
    servers.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Name", "Description", "Members", "Required roles"].map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              {},
              servers.map((s) =>
                h(
                  "tr",
                  {},
                  h("td", { "data-label": "Name" }, h("a", { href: `#/servers/${enc(s.name)}` }, s.name)),
                  h("td", { "data-label": "Description" }, s.description || "—"),
                  h("td", { "data-label": "Members" }, (s.members || []).map((m) => m.adapter).join(", ") || "—"),
                  h("td", { "data-label": "Required roles" }, (s.requiredRoles || []).join(", ") || "—"),
                ),
              ),
            ),
          ),
        )
      : h("p", { class: "empty" }, "No virtual servers yet, or none you may see."),
  );
}

/** Members as the spec names them, joined with GET /servers/{name}/status (present, readable, ready). */
function membersCard(server, status, err) {
  const byAdapter = Object.fromEntries(((status && status.members) || []).map((m) => [m.adapter, m]));
  const summary = status
    ? h("span", { class: "muted small", id: "members-summary" }, `${status.presentMembers} present · ${status.missingMembers} missing`)
    : null;
  const rows = (server.members || []).map((m) => {
    const st = byAdapter[m.adapter];
    let state = h("span", { class: "muted" }, "unknown");
    if (st) {
      const cls = !st.present ? "bad" : !st.readable ? "warn" : st.readyReplicas > 0 ? "ok" : "warn";
      const label = !st.present ? "missing" : !st.readable ? "no access" : st.readyReplicas > 0 ? `${st.readyReplicas} ready` : "not ready";
      state = h("span", { class: `chip ${cls}`, title: st.message || label }, label);
    }
    return h(
      "tr",
      { "data-member": m.adapter },
      h("td", { "data-label": "Adapter" }, h("a", { href: `#/adapters/${enc(m.adapter)}` }, m.adapter)),
      h("td", { "data-label": "State" }, state),
      h("td", { "data-label": "Prefix" }, m.prefix || "—"),
      h("td", { "data-label": "Tools" }, m.tools && m.tools.length ? m.tools.join(", ") : "all"),
      h("td", { "data-label": "Excluded" }, m.exclude && m.exclude.length ? m.exclude.join(", ") : "—"),
      h("td", { "data-label": "Message" }, (st && st.message) || "—"),
    );
  });
  return h(
    "section",
    { class: "card" },
    h("h2", {}, "Members ", summary),
    err ? errorBox(err, "Status unavailable") : null,
    rows.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { id: "members" },
            h("thead", {}, h("tr", {}, ["Adapter", "State", "Prefix", "Tools", "Excluded", "Message"].map((t) => h("th", { scope: "col" }, t)))),
            h("tbody", {}, rows),
          ),
        )
      : h("p", { class: "empty" }, "This virtual server has no members."),
  );
}

async function viewServer(name) {
  main.replaceChildren(h("h1", {}, name), h("p", { class: "muted" }, "Loading…"));
  try {
    const [{ data: s }, st] = await Promise.all([api("GET", `/servers/${enc(name)}`), api("GET", `/servers/${enc(name)}/status`).catch((err) => ({ error: err }))]);
    const toolsBox = h("div", { id: "server-tools" }, h("p", { class: "muted" }, "Listing tools…"));
    main.replaceChildren(
      h("div", { class: "title-row" }, h("h1", {}, s.name), h("a", { class: "button", href: `#/console/servers/${enc(s.name)}` }, "Open in console")),
      s.description ? h("p", {}, s.description) : null,
      membersCard(s, st.error ? null : st.data, st.error),
      h("section", { class: "card" }, h("h2", {}, "Tools you may use"), toolsBox),
    );
    const client = new McpClient(`/servers/${enc(name)}/mcp`);
    onCleanup(() => client.close());
    try {
      const tools = await client.listTools();
      toolsBox.replaceChildren(
        tools.length
          ? h("ul", { class: "tool-list" }, tools.map((t) => h("li", {}, h("code", {}, t.name), t.description ? h("span", { class: "muted small" }, ` — ${t.description}`) : null)))
          : h("p", { class: "empty" }, "No tools you may use."),
      );
    } catch (err) {
      toolsBox.replaceChildren(mcpErrorBox(err, "Could not list tools"));
    }
  } catch (err) {
    main.replaceChildren(h("h1", {}, name), errorBox(err, "Could not load the virtual server"));
  }
}

// ---------- sign-in ----------

function viewSignIn() {
  if (auth.mode === "dev") {
    const user = h("input", { id: "dev-user", type: "text", value: auth.user, autocomplete: "username" });
    const roles = h("input", { id: "dev-roles", type: "text", value: auth.roles, placeholder: "e.g. mcp.admin, team-a" });
    const form = h(
      "form",
      { class: "card", id: "dev-signin" },
      h("p", {}, "This gateway runs with ", h("strong", {}, "dev auth"), ": it trusts the identity the portal sends. Pick who you are."),
      h("div", { class: "field" }, h("label", { for: "dev-user" }, "User"), user),
      h("div", { class: "field" }, h("label", { for: "dev-roles" }, "Roles"), roles, h("p", { class: "hint" }, "Comma-separated. mcp.admin may see and change every adapter.")),
      h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Use this identity")),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      saveDevIdentity(user.value, roles.value);
      updateNav();
      toast(`Now acting as ${whoAmI()}`);
      location.hash = "#/adapters";
    });
    main.replaceChildren(h("h1", {}, "Identity"), form);
    user.focus();
    return;
  }
  if (auth.mode === "oidc") {
    if (auth.token) {
      main.replaceChildren(
        h("h1", {}, "Signed in"),
        h("div", { class: "card" }, h("p", {}, `Signed in as ${whoAmI()} with ${auth.issuer}.`), renderValue(auth.claims), h("button", { type: "button", id: "sign-out", onclick: () => (signOut(), updateNav(), viewSignIn()) }, "Sign out")),
      );
      return;
    }
    const client = h("input", { id: "client-id", type: "text", value: savedClientId(), autocomplete: "off" });
    const err = h("div", { role: "alert" });
    const form = h(
      "form",
      { class: "card", id: "oidc-signin" },
      h("p", {}, "Sign in with ", h("code", {}, auth.issuer || "(no issuer configured)"), " — the issuer this gateway trusts."),
      h("div", { class: "field" }, h("label", { for: "client-id" }, "Client ID"), client, h("p", { class: "hint" }, "The public client (app registration) the portal signs in as. Its redirect URI must be this page.")),
      err,
      h("div", { class: "actions" }, h("button", { class: "primary", type: "submit", id: "sign-in" }, "Sign in")),
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await signIn(client.value.trim());
      } catch (e) {
        err.replaceChildren(errorBox(e, "Could not start sign-in"));
      }
    });
    main.replaceChildren(h("h1", {}, "Sign in"), form);
    return;
  }
  main.replaceChildren(h("h1", {}, "Sign in"), h("p", { class: "alert" }, "Could not tell how this gateway authenticates (its metadata did not answer). Is it running?"));
}

function updateNav() {
  const who = whoAmI();
  const link = document.getElementById("nav-identity");
  link.textContent = who ? `User: ${who}` : "Sign in";
  link.setAttribute("aria-label", who ? `Signed in as ${who}; change` : "Sign in");
}

// ---------- router ----------

function route() {
  cleanups.forEach((f) => f());
  cleanups = [];
  const parts = (location.hash.replace(/^#\/?/, "") || "adapters").split("/").map(decodeURIComponent);
  const [section] = parts;
  const titles = { "new-adapter": "New adapter", adapters: "Adapters", console: "MCP console", servers: "Virtual servers", signin: "Sign in" };
  document.title = `${parts[1] && section !== "console" ? parts[1] : titles[section] || "Adapters"} · MCP Gateway`;
  document.querySelectorAll("[data-nav]").forEach((a) => a.toggleAttribute("aria-current", a.dataset.nav === (section === "new-adapter" ? "adapters" : section)));
  if (auth.mode === "oidc" && !auth.token && section !== "signin") {
    location.hash = "#/signin";
    return;
  }
  if (section === "new-adapter") viewForm(null); // not #/adapters/new: "new" is a valid adapter name
  else if (section === "adapters" && parts[1] && parts[2] === "edit") viewForm(parts[1]);
  else if (section === "adapters" && parts[1]) viewAdapter(parts[1]);
  else if (section === "console") viewConsole(parts[1], parts[2]);
  else if (section === "servers") viewServers(parts[1]);
  else if (section === "signin") viewSignIn();
  else viewAdapters();
  if (document.activeElement === document.body) main.focus({ preventScroll: true });
}

async function boot() {
  await detectMode();
  if (auth.mode === "dev") loadDevIdentity();
  try {
    await completeSignIn();
  } catch (err) {
    toast(describeError(err));
  }
  updateNav();
  window.addEventListener("hashchange", route);
  route();
  hasServers();
}

boot();
