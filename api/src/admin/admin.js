// The admin dashboard: talks to /graphql with the admin's token. Whatever
// comes from the server is written with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "chorus-admin-token";
const REFRESH_MS = 5000;
const POLL_MS = 500;

let refreshTimer = null;

function $(id) {
  return document.getElementById(id);
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// A GraphQL request as the signed-in admin. Resolves to `data`; rejects
// with an Error carrying the first error's code (`error.code`).
async function graphql(query, variables) {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "Authorization": "Bearer " + token(),
    },
    body: JSON.stringify({ query: query, variables: variables || {} }),
  });
  let body;
  try {
    body = await response.json();
  } catch (_) {
    throw Object.assign(new Error("HTTP " + response.status), { code: "HTTP" });
  }
  if (body.errors && body.errors.length > 0) {
    const first = body.errors[0];
    const code = (first.extensions && first.extensions.code) || "ERROR";
    throw Object.assign(new Error(first.message), { code: code });
  }
  return body.data;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) {
    td.className = className;
  }
  row.appendChild(td);
  return td;
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function showError(id, error) {
  $(id).textContent = error ? error.message : "";
}

function describeRebuild(rebuild) {
  if (!rebuild) {
    return "never";
  }
  switch (rebuild.state) {
    case "RUNNING":
      return "running: " + rebuild.eventsDone + " / " + rebuild.eventsTotal + " events";
    case "SWAPPED":
      return "finished: swapped in, " + rebuild.eventsDone + " events";
    default:
      return "failed: " + (rebuild.error || "unknown error");
  }
}

const REBUILD_FIELDS = "id projection state eventsDone eventsTotal error finishedAt";

async function loadProjections() {
  try {
    const data = await graphql(
      "{ projections { name position lagEvents lagSeconds lastRebuild { " + REBUILD_FIELDS + " } } }"
    );
    const rows = data.projections.map((p) => {
      const row = document.createElement("tr");
      row.dataset.projection = p.name;
      cell(row, p.name);
      cell(row, p.position === null ? "never ran" : p.position);
      cell(row, p.lagEvents, "number");
      cell(row, p.lagSeconds.toFixed(1), "number");
      const status = cell(row, describeRebuild(p.lastRebuild), "rebuild-status");
      const actions = cell(row, "");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "rebuild";
      button.textContent = "Rebuild";
      button.disabled = !!(p.lastRebuild && p.lastRebuild.state === "RUNNING");
      button.addEventListener("click", () => rebuild(p.name, button, status));
      actions.appendChild(button);
      return row;
    });
    replaceRows($("projections"), rows);
    showError("projections-error", null);
  } catch (error) {
    showError("projections-error", error);
  }
}

async function rebuild(name, button, status) {
  button.disabled = true;
  // The periodic refresh would replace the row being followed.
  stopRefresh();
  try {
    const data = await graphql(
      "mutation($name: String!) { rebuildProjection(name: $name) { " + REBUILD_FIELDS + " } }",
      { name: name }
    );
    let current = data.rebuildProjection;
    status.textContent = describeRebuild(current);
    while (current && current.state === "RUNNING") {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      const polled = await graphql(
        "query($id: UUID!) { rebuild(id: $id) { " + REBUILD_FIELDS + " } }",
        { id: current.id }
      );
      current = polled.rebuild;
      status.textContent = describeRebuild(current);
    }
    showError("projections-error", null);
  } catch (error) {
    showError("projections-error", error);
  } finally {
    button.disabled = false;
    startRefresh();
  }
}

function time(value) {
  return value ? new Date(value).toLocaleString() : "";
}

async function loadDeliveries() {
  try {
    const data = await graphql(
      "{ deliveries { summary { pending due delivered dead } " +
        "failingHosts { host consecutiveFailures failingSince openUntil pending lastError } } }"
    );
    const summary = data.deliveries.summary;
    const items = [];
    for (const [label, value] of [
      ["Pending", summary.pending],
      ["Due now", summary.due],
      ["Delivered", summary.delivered],
      ["Dead", summary.dead],
    ]) {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      items.push(dt, dd);
    }
    $("delivery-summary").replaceChildren(...items);
    const rows = data.deliveries.failingHosts.map((h) => {
      const row = document.createElement("tr");
      cell(row, h.host);
      cell(row, h.consecutiveFailures, "number");
      cell(row, time(h.failingSince));
      cell(row, time(h.openUntil));
      cell(row, h.pending, "number");
      cell(row, h.lastError);
      return row;
    });
    replaceRows($("failing-hosts"), rows);
    showError("deliveries-error", null);
  } catch (error) {
    showError("deliveries-error", error);
  }
}

async function loadInstances() {
  try {
    const data = await graphql("{ blockedInstances { domain reason blockedAt } }");
    const rows = data.blockedInstances.map((b) => {
      const row = document.createElement("tr");
      cell(row, b.domain);
      cell(row, b.reason);
      cell(row, time(b.blockedAt));
      return row;
    });
    replaceRows($("blocked-instances"), rows);
    showError("instances-error", null);
  } catch (error) {
    showError("instances-error", error);
  }
}

async function loadEvents() {
  try {
    const data = await graphql(
      "{ events(last: 20) { edges { node { position type stream recordedAt } } } }"
    );
    const rows = data.events.edges.map((edge) => {
      const row = document.createElement("tr");
      cell(row, edge.node.position);
      cell(row, edge.node.type);
      cell(row, edge.node.stream);
      cell(row, time(edge.node.recordedAt));
      return row;
    });
    replaceRows($("events"), rows);
    showError("events-error", null);
  } catch (error) {
    replaceRows($("events"), []);
    showError("events-error", new Error("Recent events are unavailable: " + error.message));
  }
}

function loadAll() {
  return Promise.all([loadProjections(), loadDeliveries(), loadInstances(), loadEvents()]);
}

function startRefresh() {
  stopRefresh();
  refreshTimer = setInterval(loadAll, REFRESH_MS);
}

function stopRefresh() {
  if (refreshTimer !== null) {
    clearInterval(refreshTimer);
    refreshTimer = null;
  }
}

function showDashboard(signedIn) {
  $("login").hidden = signedIn;
  $("dashboard").hidden = !signedIn;
  $("logout").hidden = !signedIn;
}

// Checks the token with an admins-only query, then shows the dashboard.
async function signIn() {
  const status = $("login-status");
  status.textContent = "Signing in…";
  try {
    await graphql("{ projections { name } }");
  } catch (error) {
    let message;
    if (error.code === "FORBIDDEN") {
      message = "This token's account is not an admin: the dashboard is for admins only.";
    } else if (error.code === "UNAUTHENTICATED") {
      message = "This token is invalid or revoked.";
    } else {
      message = "Could not sign in: " + error.message;
    }
    sessionStorage.removeItem(TOKEN_KEY);
    status.textContent = message;
    showDashboard(false);
    return;
  }
  status.textContent = "";
  showDashboard(true);
  await loadAll();
  startRefresh();
}

function signOut() {
  stopRefresh();
  sessionStorage.removeItem(TOKEN_KEY);
  $("token").value = "";
  showDashboard(false);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (value === "") {
      $("login-status").textContent = "Paste an admin API token.";
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    signIn();
  });
  $("logout").addEventListener("click", signOut);
  $("refresh").addEventListener("click", loadAll);
  if (token()) {
    signIn();
  }
});
