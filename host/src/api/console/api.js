// The console's only way to the daemon: the /v1 API on this origin, with
// the operator's token as a bearer header. The token lives in this tab's
// sessionStorage (gone when the tab closes) and never in a URL's query
// string, where proxies and logs would keep it.

const KEY = "stephost.token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function signIn(value) {
  sessionStorage.setItem(KEY, value);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

// `#token=…` in the address: taken into sessionStorage, then removed from
// the address bar and the history entry, so it is neither bookmarked nor
// shown over the operator's shoulder. Fragments are never sent to a server.
export function takeTokenFromFragment() {
  const match = /^#token=([^&]+)/.exec(location.hash);
  if (!match) return false;
  signIn(decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search + "#/");
  return true;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// One API call: JSON in and out; an error answer becomes an ApiError with
// the API's code and message.
export async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${token() ?? ""}` };
  const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "unreachable", `the daemon did not answer (${e.message})`);
  }
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    const error = data?.error ?? {};
    throw new ApiError(resp.status, error.code ?? "http", error.message ?? `HTTP ${resp.status}`);
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body ?? {});

// A query string from the set values of `params`.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}
