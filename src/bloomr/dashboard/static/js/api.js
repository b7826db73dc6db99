// The admin API: the admin key (kept for this tab only, in sessionStorage) sent as a
// bearer token; errors thrown as ApiError with the server's code and message.

const KEY = "bloomr.adminKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const adminKey = () => sessionStorage.getItem(KEY);
export const setAdminKey = (key) => sessionStorage.setItem(KEY, key);
export const signOut = () => sessionStorage.removeItem(KEY);

export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${adminKey() ?? ""}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    // the key was changed or the server restarted with another: sign in again
    if (response.status === 401) dispatchEvent(new Event("bloomr:unauthorized"));
    const error = payload?.error ?? {};
    throw new ApiError(response.status, error.code ?? "http_" + response.status,
      error.message ?? response.statusText);
  }
  return payload;
}

// Sign in: keep the key if the server takes it (a wrong key is an ApiError 401).
export async function signIn(key) {
  const response = await fetch("/api/streams", { headers: { Authorization: `Bearer ${key}` } });
  if (!response.ok) {
    throw new ApiError(response.status, "http_" + response.status, response.statusText);
  }
  setAdminKey(key);
}

export const streamPath = (id, rest = "") => `/api/streams/${encodeURIComponent(id)}${rest}`;
