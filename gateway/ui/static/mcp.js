// A small MCP client over fetch, for the console.
//
// It speaks the 2026-07-28 stateless wire first (no handshake; every POST carries
// MCP-Protocol-Version, Mcp-Method, Mcp-Name and the per-request _meta), and falls back to the
// 2025-era handshake (initialize + Mcp-Session-Id) when the first modern request is refused the way
// a legacy server refuses it (400/404/405 without a modern JSON-RPC error). Responses may be one
// JSON object or an SSE stream that ends with the response; both are handled.

import { authHeaders } from "./api.js";

export const MODERN = "2026-07-28";
export const LEGACY = "2025-11-25";
const CLIENT_INFO = { name: "mcp-gateway-portal", version: "1.0.0" };
const MODERN_ERROR_CODES = new Set([-32020, -32021, -32022, -32601]);

export class McpError extends Error {
  constructor(message, { status = 0, code = null, data = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.data = data;
  }
}

/** A header value: as is when printable ASCII, else the spec's =?base64?…?= form. */
export function headerSafe(value) {
  const s = String(value);
  if (/^[\x20-\x7e]*$/.test(s) && s.trim() === s) return s;
  const bytes = new TextEncoder().encode(s);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `=?base64?${btoa(bin)}?=`;
}

/** Parse an SSE body incrementally; resolve with the JSON-RPC response whose id is `id`. */
async function readSse(res, id) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (value) buffer += decoder.decode(value, { stream: true });
      buffer = buffer.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block
          .split("\n")
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue;
        let msg;
        try {
          msg = JSON.parse(data);
        } catch {
          continue;
        }
        if (msg && msg.id === id && ("result" in msg || "error" in msg)) return msg;
      }
      if (done) break;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  throw new McpError("the stream ended before the response arrived", { status: res.status });
}

export class McpClient {
  /** `url` is a data-plane endpoint such as /adapters/mcp-example/mcp. */
  constructor(url) {
    this.url = url;
    this.era = null; // "modern" | "legacy"
    this.sessionId = null;
    this.protocolVersion = null;
    this.serverInfo = null;
    this.nextId = 1;
    this.tools = [];
  }

  async _post(message, headers) {
    const res = await fetch(this.url, {
      method: "POST",
      credentials: "omit",
      cache: "no-store",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json, text/event-stream",
        ...authHeaders(),
        ...headers,
      },
      body: JSON.stringify(message),
    });
    return res;
  }

  async _response(res, id) {
    const type = res.headers.get("content-type") || "";
    if (type.startsWith("text/event-stream")) return readSse(res, id);
    const text = await res.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!res.ok) {
      if (body && body.jsonrpc && body.error) return body; // a JSON-RPC error with an HTTP status
      const detail = (body && (body.detail || body.title)) || text.slice(0, 300) || res.statusText;
      throw new McpError(`HTTP ${res.status}: ${detail}`, { status: res.status, data: body });
    }
    if (body === null) throw new McpError(`HTTP ${res.status} without a JSON-RPC response`, { status: res.status });
    return body;
  }

  _modern(method, params) {
    const id = this.nextId++;
    const meta = {
      "io.modelcontextprotocol/protocolVersion": MODERN,
      "io.modelcontextprotocol/clientCapabilities": {},
      "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
    };
    const headers = { "MCP-Protocol-Version": MODERN, "Mcp-Method": method };
    if (params && typeof params.name === "string" && /^(tools\/call|prompts\/get)$/.test(method)) {
      headers["Mcp-Name"] = headerSafe(params.name);
    }
    if (params && typeof params.uri === "string" && method === "resources/read") headers["Mcp-Name"] = headerSafe(params.uri);
    if (method === "tools/call") Object.assign(headers, this._paramHeaders(params));
    const message = { jsonrpc: "2.0", id, method, params: { ...(params || {}), _meta: { ...((params && params._meta) || {}), ...meta } } };
    return { id, message, headers };
  }

  /** Mcp-Param-{Name} headers for arguments whose schema says x-mcp-header. */
  _paramHeaders(params) {
    const out = {};
    const tool = this.tools.find((t) => t.name === params.name);
    const props = (tool && tool.inputSchema && tool.inputSchema.properties) || {};
    for (const [key, schema] of Object.entries(props)) {
      const header = schema && schema["x-mcp-header"];
      if (header && params.arguments && params.arguments[key] !== undefined) {
        const value = params.arguments[key];
        out[`Mcp-Param-${typeof header === "string" ? header : key}`] = headerSafe(typeof value === "string" ? value : JSON.stringify(value));
      }
    }
    return out;
  }

  async _legacyRequest(method, params) {
    const id = this.nextId++;
    const headers = { "MCP-Protocol-Version": this.protocolVersion || LEGACY };
    if (this.sessionId) headers["Mcp-Session-Id"] = this.sessionId;
    const res = await this._post({ jsonrpc: "2.0", id, method, params: params || {} }, headers);
    if (res.status === 404 && this.sessionId) {
      // The session is gone (expired or the replica restarted): start a new one, once.
      this.sessionId = null;
      await this._initialize();
      return this._legacyRequest(method, params);
    }
    return this._response(res, id);
  }

  async _initialize() {
    const id = this.nextId++;
    const res = await this._post(
      {
        jsonrpc: "2.0",
        id,
        method: "initialize",
        params: { protocolVersion: LEGACY, capabilities: {}, clientInfo: CLIENT_INFO },
      },
      { "MCP-Protocol-Version": LEGACY },
    );
    const msg = await this._response(res, id);
    if (msg.error) throw new McpError(`initialize failed: ${msg.error.message}`, { code: msg.error.code, data: msg.error.data });
    this.sessionId = res.headers.get("mcp-session-id");
    this.protocolVersion = msg.result.protocolVersion || LEGACY;
    this.serverInfo = msg.result.serverInfo || null;
    const headers = { "MCP-Protocol-Version": this.protocolVersion };
    if (this.sessionId) headers["Mcp-Session-Id"] = this.sessionId;
    const note = await this._post({ jsonrpc: "2.0", method: "notifications/initialized" }, headers);
    await note.text().catch(() => "");
    this.era = "legacy";
  }

  /** One JSON-RPC request; resolves with `result`, throws McpError for HTTP and JSON-RPC errors. */
  async request(method, params) {
    let msg;
    if (this.era === "legacy") {
      msg = await this._legacyRequest(method, params);
    } else {
      const { id, message, headers } = this._modern(method, params);
      const res = await this._post(message, headers);
      if (this.era === null && [400, 404, 405].includes(res.status)) {
        const probe = await this._response(res, id).catch((err) => ({ httpError: err }));
        const modernError = probe && probe.error && MODERN_ERROR_CODES.has(probe.error.code) && probe.error.code !== -32022;
        if (!modernError) {
          await this._initialize();
          msg = await this._legacyRequest(method, params);
        } else {
          msg = probe;
        }
      } else {
        msg = await this._response(res, id);
        if (this.era === null && !msg.error) {
          this.era = "modern";
          this.protocolVersion = MODERN;
          const meta = (msg.result && msg.result._meta) || {};
          this.serverInfo = meta["io.modelcontextprotocol/serverInfo"] || null;
        }
      }
    }
    if (msg.error) throw new McpError(msg.error.message || "JSON-RPC error", { code: msg.error.code, data: msg.error.data });
    return msg.result;
  }

  /** Every tool, following nextCursor pages. */
  async listTools() {
    const tools = [];
    let cursor;
    for (let page = 0; page < 50; page++) {
      const result = await this.request("tools/list", cursor ? { cursor } : {});
      tools.push(...(result.tools || []));
      cursor = result.nextCursor;
      if (!cursor) break;
    }
    this.tools = tools;
    return tools;
  }

  callTool(name, args) {
    return this.request("tools/call", { name, arguments: args });
  }

  /** End a legacy session (the server may answer 405; that is fine). */
  async close() {
    if (this.era === "legacy" && this.sessionId) {
      const headers = { ...authHeaders(), "Mcp-Session-Id": this.sessionId, "MCP-Protocol-Version": this.protocolVersion };
      await fetch(this.url, { method: "DELETE", headers, credentials: "omit" }).catch(() => {});
    }
    this.sessionId = null;
  }
}
