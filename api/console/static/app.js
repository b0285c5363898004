// The console's entry point: configuration, the signed-in header, and a hash router (#/schedules/…) so that
// nothing secret ever appears in a URL.

import { whenUnauthorized } from "./lib/api.js";
import { h } from "./lib/dom.js";
import { configure, session, setTenant, signOut } from "./lib/session.js";
import { detailView } from "./views/detail.js";
import { formView } from "./views/form.js";
import { listView } from "./views/list.js";
import { loginView } from "./views/login.js";

const main = document.getElementById("main");
let view = null;

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function header() {
  const who = document.getElementById("who");
  const nav = document.getElementById("nav");
  const current = session();
  nav.hidden = !current;
  if (!current) {
    who.replaceChildren();
    return;
  }
  const role = current.canEdit ? (current.roles.includes("scheduler.admin") ? "admin" : "editor") : current.canView ? "viewer" : "no role";
  let tenant;
  if (current.anyTenant || current.tenants.length > 1) {
    const choices = current.anyTenant ? [current.tenant] : current.tenants;
    tenant = current.anyTenant
      ? h("input", { value: current.tenant, "aria-label": "Tenant", class: "tenant-input", "data-testid": "tenant-switch" })
      : h("select", { "aria-label": "Tenant", "data-testid": "tenant-switch" }, choices.map((t) => h("option", { value: t, selected: t === current.tenant }, t)));
    tenant.addEventListener("change", () => {
      if (!tenant.value.trim()) return;
      setTenant(tenant.value.trim());
      navigate("#/schedules");
    });
  } else {
    tenant = h("span", { class: "tenant", "data-testid": "tenant-name" }, current.tenant);
  }
  who.replaceChildren(
    h("span", { class: "muted" }, "tenant"),
    tenant,
    h("span", { class: `role role-${role}`, "data-testid": "role", title: current.roles.join(", ") }, role),
    h("span", { class: "muted small", title: "token subject" }, current.subject),
    h(
      "button",
      {
        class: "link",
        "data-testid": "sign-out",
        onclick: () => {
          signOut();
          navigate("#/login");
        },
      },
      "Sign out",
    ),
  );
}

let pendingReason = null;

function route() {
  view?.dispose?.();
  view = null;
  const reason = pendingReason;
  pendingReason = null;
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "login") signOut(); // signing in again starts from no session
  header();
  if (!session() || parts[0] === "login") {
    loginView(main, {
      reason,
      done: () => {
        header();
        navigate("#/schedules");
      },
    });
    return;
  }
  const ctx = { params, navigate };
  if (parts[0] === "new") view = session().canEdit ? formView(main, ctx) : denied();
  else if (parts[0] === "schedules" && parts[1] && parts[2] === "edit") view = session().canEdit ? formView(main, { ...ctx, id: parts[1] }) : denied();
  else if (parts[0] === "schedules" && parts[1]) view = detailView(main, { ...ctx, id: parts[1] });
  else view = listView(main, ctx);
}

function denied() {
  main.replaceChildren(h("div", { class: "alert alert-info" }, "Your token is read-only (scheduler.viewer): editing needs scheduler.editor."));
  return null;
}

whenUnauthorized(() => {
  signOut();
  pendingReason = "Your session ended (the API no longer accepts the token). Sign in again.";
  navigate("#/login");
});

async function start() {
  try {
    const response = await fetch(new URL("../console-config.json", import.meta.url), { cache: "no-store" });
    if (response.ok) configure(await response.json());
  } catch {
    /* defaults: claims "tenants" and "roles" */
  }
  window.addEventListener("hashchange", () => route());
  route();
  document.body.dataset.ready = "true";
}

start();
