// The page's credentials: a token from the link's fragment (#token=...), which never
// reaches a server or its logs, and for a link that may change jobs a second one
// (&write_token=...) that goes only in Authorization headers, never in a URL: the URLs of
// the stream and of download links carry the first, a read token, so that a URL copied
// from the page, a proxy's log or the history cannot cancel anything. They move to
// sessionStorage (this tab only) and the address bar loses them, so that a screenshot or a
// shared screen does not show them; a reload keeps them.

const STORE = "gateway-dashboard-tokens";

function claimsOf(token) {
  // The payload is read for display and for what to offer (read-only, expiry): the
  // gateway verifies the signature on every request, the page never trusts it for more.
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const text = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(text);
    if (typeof claims !== "object" || claims === null) return null;
    return claims;
  } catch {
    return null;
  }
}

export class Access {
  constructor(token, writeToken = null) {
    this.token = token || null;
    this.writeToken = writeToken || null;
    const claims = this.token ? claimsOf(this.token) : null;
    this.readable = !this.token || claims !== null;
    this.tenant = claims && typeof claims.tenant === "string" ? claims.tenant : null;
    this.scope = claims && claims.scope === "write" ? "write" : (this.token ? "read" : null);
    this.expiresAt = claims && typeof claims.exp === "number" ? claims.exp * 1000 : null;
    this.jobIds = claims && Array.isArray(claims.job_ids) ? claims.job_ids : null;
  }

  static fromPage() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    let tokens = {token: fragment.get("token"), write: fragment.get("write_token")};
    if (tokens.token) {
      try { sessionStorage.setItem(STORE, JSON.stringify(tokens)); } catch { /* in memory */ }
      history.replaceState(null, "", location.pathname + location.search);
    } else {
      try { tokens = JSON.parse(sessionStorage.getItem(STORE)) || {}; } catch { tokens = {}; }
    }
    return new Access(tokens.token, tokens.write);
  }

  // Without a token the gateway decides: with auth off every request may change things.
  get canWrite() {
    return this.token === null || this.writeToken !== null || this.scope === "write";
  }

  get expired() { return this.expiresAt !== null && this.expiresAt <= Date.now(); }

  // JSON requests and changes: a Bearer header (a token in a URL is accepted for reads
  // only).
  headers() {
    const headers = {"Accept": "application/json"};
    const token = this.writeToken || this.token;
    if (token) headers["Authorization"] = `Bearer ${token}`;
    return headers;
  }

  // EventSource and download links cannot send headers: the token goes in the URL.
  withToken(path, params = new URLSearchParams()) {
    if (this.token) params.set("access_token", this.token);
    const query = params.toString();
    return query ? `${path}?${query}` : path;
  }

  // A token limited to some jobs may not open the tenant-wide stream: name its jobs.
  scopeParams() {
    const params = new URLSearchParams();
    for (const id of this.jobIds || []) params.append("job_id", id);
    return params;
  }
}
