// Calls to the scheduler API with the session's token and tenant; problem+json answers become ApiError.

import { session } from "./session.js";

// The API root is two levels above this file (/console/lib/api.js), wherever the API is mounted.
const ROOT = new URL("../../", import.meta.url);
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.fieldErrors = Array.isArray(problem?.errors) ? problem.errors : [];
  }
}

export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

export function url(path, query) {
  const target = new URL(path.replace(/^\//, ""), ROOT);
  for (const [key, value] of Object.entries(query || {})) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null && item !== "") target.searchParams.append(key, String(item));
    }
  }
  return target;
}

export async function api(path, { method = "GET", body, query, ifMatch, token, tenant } = {}) {
  const current = session();
  const headers = { Accept: "application/json, application/problem+json" };
  const bearer = token ?? current?.token;
  const scope = tenant ?? current?.tenant;
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (scope) headers["X-Tenant-Id"] = scope;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (ifMatch) headers["If-Match"] = ifMatch;
  let response;
  try {
    response = await fetch(url(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    throw new ApiError(0, { title: "Network error", detail: `the API did not answer (${err.message})` });
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { title: response.statusText, detail: text.slice(0, 300) };
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data || { title: response.statusText, status: response.status });
    if (response.status === 401 && token === undefined) onUnauthorized(error);
    throw error;
  }
  return { data, status: response.status, etag: response.headers.get("ETag") };
}
