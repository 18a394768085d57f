// The REST client: the API key from session storage as the bearer header, one error shape.

const KEY = "audiences.apiKey";
const PROJECT = "audiences.projectId";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) { value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY); },
  get projectId() { return sessionStorage.getItem(PROJECT); },
  set projectId(value) {
    value ? sessionStorage.setItem(PROJECT, value) : sessionStorage.removeItem(PROJECT);
  },
  clear() { sessionStorage.removeItem(KEY); sessionStorage.removeItem(PROJECT); },
};

let onUnauthorized = () => {};
export function whenUnauthorized(handler) { onUnauthorized = handler; }

function url(path, query) {
  const target = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) target.searchParams.append(name, item);
  }
  return target;
}

async function request(method, path, { query, body, key } = {}) {
  const headers = { Authorization: `Bearer ${key ?? session.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url(path, query), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (data && data.error) || {};
    const failure = new ApiError(
      response.status,
      error.code || `http_${response.status}`,
      error.message || response.statusText,
      error.details,
    );
    if (response.status === 401 && key === undefined) onUnauthorized(failure);
    throw failure;
  }
  return data;
}

// Every project-scoped call names the project: organization keys must, project keys may.
const scoped = (query) => ({ project_id: session.projectId, ...query });

export const api = {
  projects: (key) => request("GET", "/v1/projects", { key }),
  audiences: (query) => request("GET", "/v1/audiences", { query: scoped(query) }),
  audience: (id) => request("GET", `/v1/audiences/${enc(id)}`, { query: scoped() }),
  status: (id) => request("GET", `/v1/audiences/${enc(id)}/status`, { query: scoped() }),
  history: (id) => request("GET", `/v1/audiences/${enc(id)}/history`, { query: scoped() }),
  members: (id, query) =>
    request("GET", `/v1/audiences/${enc(id)}/members`, { query: scoped(query) }),
  explain: (userId, id) =>
    request("GET", `/v1/users/${enc(userId)}/audiences/${enc(id)}/explain`, { query: scoped() }),
  refresh: (id) => request("POST", `/v1/audiences/${enc(id)}/refresh`, { query: scoped() }),
  startExport: (id) =>
    request("POST", `/v1/audiences/${enc(id)}/export`, { query: scoped(), body: { format: "csv" } }),
  exportStatus: (exportId) => request("GET", `/v1/exports/${enc(exportId)}`),
  startSync: (id) =>
    request("POST", `/v1/audiences/${enc(id)}/sync`, { query: scoped(), body: { mode: "full" } }),
  syncRun: (id, runId) =>
    request("GET", `/v1/audiences/${enc(id)}/syncs/${enc(runId)}`, { query: scoped() }),
  pipeline: () => request("GET", "/v1/ops/pipeline"),
  runs: (query) => request("GET", "/v1/ops/runs", { query: scoped(query) }),
  campaigns: () => request("GET", `/v1/projects/${enc(session.projectId)}/campaigns`),
  campaignAudiences: (campaignId) =>
    request("GET", `/v1/projects/${enc(session.projectId)}/campaigns/${enc(campaignId)}/audiences`),
  reorder: (campaignId, order) =>
    request(
      "PUT",
      `/v1/projects/${enc(session.projectId)}/campaigns/${enc(campaignId)}/audiences/reorder`,
      { body: { order } },
    ),
  experimentResults: (experimentId) =>
    request(
      "GET",
      `/v1/projects/${enc(session.projectId)}/experiments/${enc(experimentId)}/results`,
    ),
};

// Downloads need the bearer header too, so they go through fetch and a blob URL.
export async function download(path, filename) {
  const response = await fetch(url(path), { headers: { Authorization: `Bearer ${session.key}` } });
  if (!response.ok) throw new ApiError(response.status, `http_${response.status}`, "Download failed");
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = filename;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

const enc = encodeURIComponent;

// Lists come back as {"items": [...]} or as a bare array depending on the endpoint.
export const itemsOf = (data) => (Array.isArray(data) ? data : (data && data.items) || []);
