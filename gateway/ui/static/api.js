// The REST client: every call carries the signed-in user's credentials and nothing else.
// Dev auth: X-Dev-User-Id / X-Dev-Roles headers. OIDC/Entra: a bearer token held in memory only
// (never localStorage, never a cookie), so a page reload signs the user out on purpose.

export const auth = {
  mode: "unknown", // "dev" | "oidc" | "unknown"
  user: "dev",
  roles: "",
  token: null, // bearer token (oidc mode), memory only
  claims: null,
  issuer: null,
  metadata: null,
};

const DEV_KEY = "mcpgw.dev-identity"; // dev identity is not a secret: remember it across reloads

export function loadDevIdentity() {
  try {
    const saved = JSON.parse(localStorage.getItem(DEV_KEY) || "null");
    if (saved && typeof saved.user === "string") {
      auth.user = saved.user;
      auth.roles = typeof saved.roles === "string" ? saved.roles : "";
    }
  } catch {
    /* storage unavailable: keep the default user */
  }
}

export function saveDevIdentity(user, roles) {
  auth.user = user.trim() || "dev";
  auth.roles = roles
    .split(",")
    .map((r) => r.trim())
    .filter(Boolean)
    .join(",");
  try {
    localStorage.setItem(DEV_KEY, JSON.stringify({ user: auth.user, roles: auth.roles }));
  } catch {
    /* ignore */
  }
}

export function authHeaders() {
  if (auth.mode === "dev") {
    const h = { "X-Dev-User-Id": auth.user };
    if (auth.roles) h["X-Dev-Roles"] = auth.roles;
    return h;
  }
  return auth.token ? { Authorization: `Bearer ${auth.token}` } : {};
}

export function whoAmI() {
  if (auth.mode === "dev") return auth.roles ? `${auth.user} (${auth.roles})` : auth.user;
  if (auth.token) return (auth.claims && (auth.claims.preferred_username || auth.claims.name || auth.claims.sub)) || "signed in";
  return null;
}

/** An API error as the UI shows it: problem+json fields, or the status line. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.field = problem.field || null;
  }
}

/** Call the REST API. Resolves to {status, headers, data}; throws ApiError on 4xx/5xx. */
export async function api(method, path, body, extraHeaders = {}) {
  const headers = { Accept: "application/json", ...authHeaders(), ...extraHeaders };
  const init = { method, headers, credentials: "omit", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, { title: "Gateway unreachable", detail: `Could not reach the gateway (${err.message}). Is it running?` });
  }
  const type = res.headers.get("content-type") || "";
  let data = null;
  if (res.status !== 204) {
    const text = await res.text();
    if (type.includes("json") && text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
    } else {
      data = text;
    }
  }
  if (!res.ok) {
    const problem = data && typeof data === "object" ? data : { title: res.statusText, detail: String(data || "").slice(0, 500) };
    if (res.status === 401 && !problem.detail) problem.detail = "Sign in to continue.";
    throw new ApiError(res.status, problem);
  }
  return { status: res.status, headers: res.headers, data };
}

/** A short plain-language sentence for an error. */
export function describeError(err) {
  if (err instanceof ApiError) {
    const hints = {
      401: "You are not signed in, or your sign-in expired.",
      403: "You do not have access to this.",
      404: "It does not exist (or you may not see it).",
    };
    const detail = err.problem.detail || err.problem.title || "";
    return `${hints[err.status] ? hints[err.status] + " " : ""}${detail}`.trim();
  }
  return String(err && err.message ? err.message : err);
}
