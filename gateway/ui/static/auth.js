// Sign-in. The gateway's RFC 9728 metadata says which mode it runs in: no document (404) means
// dev auth; otherwise `authorization_servers[0]` is the issuer to sign in with, by the OAuth 2.0
// authorization code flow with PKCE (S256 via WebCrypto). The token stays in memory only.

import { auth } from "./api.js";

const PENDING_KEY = "mcpgw.pending-signin"; // verifier + state across the redirect (sessionStorage, one use)
const CLIENT_KEY = "mcpgw.client-id";

function b64url(bytes) {
  let bin = "";
  for (const b of new Uint8Array(bytes)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(n = 32) {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

export async function pkceChallenge(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return b64url(digest);
}

function redirectUri() {
  return `${location.origin}${location.pathname}`;
}

/** Decode a JWT's claims for display only (the gateway verifies the token, not us). */
function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch {
    return null;
  }
}

/** Learn the auth mode from the metadata document. */
export async function detectMode() {
  let res;
  try {
    res = await fetch("/.well-known/oauth-protected-resource", { credentials: "omit", cache: "no-store" });
  } catch {
    auth.mode = "unknown";
    return auth.mode;
  }
  if (res.status === 404) {
    auth.mode = "dev";
  } else if (res.ok) {
    auth.metadata = await res.json();
    auth.mode = "oidc";
    auth.issuer = (auth.metadata.authorization_servers || [])[0] || null;
  } else {
    auth.mode = "unknown";
  }
  return auth.mode;
}

export function savedClientId() {
  const fromQuery = new URLSearchParams(location.search).get("client_id");
  if (fromQuery) return fromQuery;
  try {
    const saved = localStorage.getItem(CLIENT_KEY);
    if (saved) return saved;
  } catch {
    /* ignore */
  }
  // Entra: the default scope is api://<client id>/.default
  const scope = ((auth.metadata && auth.metadata.scopes_supported) || [])[0] || "";
  const m = /^api:\/\/([^/]+)\//.exec(scope);
  return m ? m[1] : "";
}

async function discover(issuer) {
  const res = await fetch(`${issuer.replace(/\/$/, "")}/.well-known/openid-configuration`, { credentials: "omit" });
  if (!res.ok) throw new Error(`the issuer ${issuer} did not answer its OpenID configuration (HTTP ${res.status})`);
  return res.json();
}

/** Start the code + PKCE flow: leaves the page for the issuer's authorization endpoint. */
export async function signIn(clientId) {
  if (!auth.issuer) throw new Error("the gateway's metadata names no authorization server");
  if (!clientId) throw new Error("enter the portal's client ID (the app registration to sign in with)");
  try {
    localStorage.setItem(CLIENT_KEY, clientId);
  } catch {
    /* ignore */
  }
  const config = await discover(auth.issuer);
  const verifier = randomString(48);
  const state = randomString(16);
  const scopes = ["openid", "profile", ...((auth.metadata && auth.metadata.scopes_supported) || [])];
  sessionStorage.setItem(
    PENDING_KEY,
    JSON.stringify({ verifier, state, clientId, tokenEndpoint: config.token_endpoint, returnTo: location.hash || "#/adapters" }),
  );
  const url = new URL(config.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: clientId,
    redirect_uri: redirectUri(),
    scope: scopes.join(" "),
    state,
    code_challenge: await pkceChallenge(verifier),
    code_challenge_method: "S256",
  }).toString();
  location.assign(url.toString());
}

/** Finish the flow when the issuer sent the browser back with ?code=&state=. Returns true if it did. */
export async function completeSignIn() {
  const params = new URLSearchParams(location.search);
  const code = params.get("code");
  const error = params.get("error");
  if (!code && !error) return false;
  const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || "null");
  sessionStorage.removeItem(PENDING_KEY);
  history.replaceState(null, "", `${location.pathname}${(pending && pending.returnTo) || "#/adapters"}`);
  if (error) throw new Error(`sign-in refused: ${params.get("error_description") || error}`);
  if (!pending || pending.state !== params.get("state")) throw new Error("sign-in answer does not match a sign-in this page started; try again");
  const res = await fetch(pending.tokenEndpoint, {
    method: "POST",
    credentials: "omit",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code,
      redirect_uri: redirectUri(),
      client_id: pending.clientId,
      code_verifier: pending.verifier,
    }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok || !body.access_token) {
    throw new Error(`the issuer refused the code: ${body.error_description || body.error || `HTTP ${res.status}`}`);
  }
  auth.token = body.access_token;
  auth.claims = claimsOf(body.id_token || body.access_token);
  return true;
}

export function signOut() {
  auth.token = null;
  auth.claims = null;
}
