// The signed-in token and tenant, kept in sessionStorage (gone with the tab, never in a URL).
// Roles and tenants are read from the token for display only: the API checks every request itself.

const TOKEN_KEY = "scheduler.console.token";
const TENANT_KEY = "scheduler.console.tenant";
const RANK = { "scheduler.viewer": 1, "scheduler.editor": 2, "scheduler.admin": 3 };

let config = { tenantsClaim: "tenants", rolesClaim: "roles", devToken: null };
let current = null;

export function configure(next) {
  config = { ...config, ...next };
}

export function settings() {
  return config;
}

export function decodeToken(token) {
  const parts = token.trim().split(".");
  if (parts.length !== 3) throw new Error("this is not a JWT (expected three dot-separated parts)");
  const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
  const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  const claims = JSON.parse(new TextDecoder().decode(bytes));
  if (typeof claims !== "object" || claims === null) throw new Error("the token's payload is not a JSON object");
  return claims;
}

function claimAt(claims, path) {
  return path.split(".").reduce((value, part) => (value && typeof value === "object" ? value[part] : undefined), claims);
}

function asList(value) {
  if (typeof value === "string") return value.split(/[\s,]+/).filter(Boolean);
  if (Array.isArray(value)) return value.map(String);
  return [];
}

export function describe(token) {
  const claims = decodeToken(token);
  const roles = asList(claimAt(claims, config.rolesClaim));
  const tenants = asList(claimAt(claims, config.tenantsClaim));
  const rank = Math.max(0, ...roles.map((r) => RANK[r] || 0));
  return {
    subject: String(claims.sub ?? ""),
    roles,
    tenants,
    anyTenant: tenants.includes("*"),
    canEdit: rank >= RANK["scheduler.editor"],
    canView: rank >= RANK["scheduler.viewer"],
    expiresAt: typeof claims.exp === "number" ? new Date(claims.exp * 1000) : null,
  };
}

export function signIn(token, tenant) {
  sessionStorage.setItem(TOKEN_KEY, token.trim());
  sessionStorage.setItem(TENANT_KEY, tenant);
  current = null;
  return session();
}

export function setTenant(tenant) {
  sessionStorage.setItem(TENANT_KEY, tenant);
  current = null;
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(TENANT_KEY);
  current = null;
}

export function session() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const tenant = sessionStorage.getItem(TENANT_KEY);
  if (!token || !tenant) return (current = null);
  if (current && current.token === token && current.tenant === tenant) return current;
  try {
    current = { token, tenant, ...describe(token) };
  } catch {
    signOut();
    return null;
  }
  return current;
}
