// The console's only way to the daemon: fetch to the public /v1 API with the app's
// API key in X-API-Key. The key lives in sessionStorage (this tab only; gone when the
// tab closes or on sign-out), never in a cookie or in local storage.

const KEY = "otpd.console.api_key";

/** The /v1 API beside this console: this file is <mount>/console/assets/api.js. */
const API = new URL("../../v1", import.meta.url).pathname;

/** The signed-in key, or null. */
export function apiKey() {
  return sessionStorage.getItem(KEY);
}

/** Keeps `key` for this browser tab. */
export function remember(key) {
  sessionStorage.setItem(KEY, key);
}

/** Forgets the key. */
export function forget() {
  sessionStorage.removeItem(KEY);
}

/** An error envelope (or a transport failure) from the API. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * `method` `<mount>/v1{path}` with the key (or `key` when given); resolves to the envelope's
 * `data` (null for 204) or rejects with an ApiError carrying the API's own message.
 */
export async function call(method, path, body, key) {
  const headers = { "X-API-Key": key ?? apiKey() ?? "" };
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(API + path, init);
  } catch (e) {
    throw new ApiError(0, "network", "The daemon did not answer: " + e.message);
  }
  if (resp.status === 204) return null;
  let envelope;
  try {
    envelope = await resp.json();
  } catch {
    throw new ApiError(resp.status, "bad_response", `HTTP ${resp.status} without a JSON body`);
  }
  if (!resp.ok || envelope.success !== true) {
    const err = envelope.error ?? {};
    // The signed-in key stopped working (revoked): the console asks for one again.
    if (resp.status === 401 && key === undefined) {
      window.dispatchEvent(new CustomEvent("otpd:unauthorized", { detail: err.message }));
    }
    throw new ApiError(resp.status, err.code ?? "error", err.message ?? `HTTP ${resp.status}`);
  }
  return envelope.data;
}

/** `encodeURIComponent` for one path segment. */
export function seg(s) {
  return encodeURIComponent(s);
}
