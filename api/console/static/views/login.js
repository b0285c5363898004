// Sign in: paste a bearer token (dev mode fills one in), pick the tenant, check both against the API.

import { api, url } from "../lib/api.js";
import { h } from "../lib/dom.js";
import { describe, settings, signIn } from "../lib/session.js";
import { problemText } from "./common.js";

export async function loginView(root, { reason, done }) {
  const token = h("textarea", {
    id: "token",
    name: "token",
    rows: 5,
    required: true,
    spellcheck: "false",
    autocomplete: "off",
    placeholder: "eyJhbGciOi…",
    "data-testid": "token",
  });
  const tenantSlot = h("div", { class: "field" });
  const info = h("div", { class: "token-info muted small", "data-testid": "token-info" });
  const error = h("div", { class: "alert alert-error", hidden: true, "data-testid": "login-error" });
  const submit = h("button", { type: "submit", class: "primary", "data-testid": "sign-in" }, "Sign in");
  let tenantInput = h("input", { id: "tenant", name: "tenant", required: true, "data-testid": "tenant" });

  function renderTenant() {
    let described = null;
    try {
      described = token.value.trim() ? describe(token.value) : null;
      info.textContent = described
        ? `Subject ${described.subject || "(none)"} · roles ${described.roles.join(", ") || "(none)"}` +
          (described.expiresAt ? ` · expires ${described.expiresAt.toLocaleString()}` : "")
        : "";
    } catch (err) {
      info.textContent = `Cannot read this token: ${err.message}`;
    }
    const previous = tenantInput.value;
    const tenants = described && !described.anyTenant ? described.tenants : [];
    if (tenants.length > 1) {
      tenantInput = h(
        "select",
        { id: "tenant", name: "tenant", required: true, "data-testid": "tenant" },
        tenants.map((t) => h("option", { value: t, selected: t === previous }, t)),
      );
    } else {
      tenantInput = h("input", {
        id: "tenant",
        name: "tenant",
        required: true,
        "data-testid": "tenant",
        value: tenants.length === 1 ? tenants[0] : previous,
        placeholder: described?.anyTenant ? "any tenant id (the token grants all)" : "tenant id",
        autocomplete: "off",
      });
    }
    tenantSlot.replaceChildren(h("label", { for: "tenant" }, "Tenant (X-Tenant-Id)"), tenantInput);
  }
  token.addEventListener("input", renderTenant);

  const devNote = h("p", { class: "muted small", hidden: true, "data-testid": "dev-note" });
  const form = h(
    "form",
    {
      class: "card login",
      "data-testid": "login-form",
      onsubmit: async (event) => {
        event.preventDefault();
        error.hidden = true;
        const value = token.value.trim();
        const tenant = tenantInput.value.trim();
        let described;
        try {
          described = describe(value);
        } catch (err) {
          error.textContent = err.message;
          error.hidden = false;
          return;
        }
        if (described.expiresAt && described.expiresAt < new Date()) {
          error.textContent = `This token expired at ${described.expiresAt.toLocaleString()}.`;
          error.hidden = false;
          return;
        }
        submit.disabled = true;
        try {
          // The API decides: one cheap read proves the token and the tenant before anything is stored.
          await api("/schedules", { query: { pageSize: 1 }, token: value, tenant });
          signIn(value, tenant);
          done();
        } catch (err) {
          const why = { 401: "The API rejected this token.", 403: `This token does not grant tenant “${tenant}”.` };
          error.textContent = why[err.status] || problemText(err);
          error.hidden = false;
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("h1", {}, "Sign in"),
    reason ? h("div", { class: "alert alert-info", "data-testid": "login-reason" }, reason) : null,
    h("p", { class: "muted" }, "Paste a bearer token (JWT) from your identity provider. It stays in this browser tab only."),
    devNote,
    h("div", { class: "field" }, h("label", { for: "token" }, "Token"), token, info),
    tenantSlot,
    error,
    h("div", { class: "actions" }, submit),
  );
  root.replaceChildren(form);
  renderTenant();

  const devPath = settings().devToken;
  if (devPath) {
    try {
      const response = await fetch(url(devPath), { cache: "no-store" });
      const body = await response.json();
      if (!token.value) {
        token.value = body.token;
        renderTenant();
        if (tenantInput.value === "") tenantInput.value = body.tenant;
      }
      devNote.textContent = `Dev mode (AUTH_MODE=dev): an admin token for tenant “${body.tenant}” is filled in.`;
      devNote.hidden = false;
    } catch {
      /* no dev token: sign in by hand */
    }
  }
}
