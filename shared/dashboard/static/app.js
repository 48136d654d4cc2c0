// Fleet dashboard: plain JS plus MSAL.js (msal-browser.min.js, served beside this file). Security model in
// shared/dashboard/__init__.py and docs/api.md: sign-in with authorization code + PKCE, tokens only in MSAL's
// sessionStorage cache, the access token only in the Authorization header of same-origin API requests.
"use strict";

const REFRESH_MS = 5000;
// A brand's cost meter is one query over all its cars (docs/cost.md): asked for once a minute, not every refresh.
const BRAND_COST_MS = 60000;
let brandCostAt = 0;
const API = location.pathname.replace(/\/dashboard\/?.*$/, "");
const PAGE = `${location.origin}${API}/dashboard/`; // the registered redirect URI
const LAT = "Vehicle.CurrentLocation.Latitude";
const LON = "Vehicle.CurrentLocation.Longitude";
let config = null; // config.json: clientId, authority, knownAuthorities, protocolMode, scopes, permissions
let auth = null; // msal.PublicClientApplication
let me = null; // GET /api/me: roles and grants
let vehicles = new Map(); // vehicleId -> summary (brandId, fleetId) from GET /api/vehicles
let selected = null;
let timer = null;

// Remote commands (docs/commands.md): the catalogue, and the panel of the open car.
const COMMAND_POLL_MS = 2000;
const SETTLED = new Set(["succeeded", "confirmed", "failed", "rejected", "expired", "cancelled"]);
const CANCELLABLE = new Set(["accepted", "queued"]);
let catalogue = []; // GET /api/commands/catalogue items: name, title, roles, parameters (JSON Schema), ...
let commandsFor = null; // the car whose send forms are built (rebuilt only when another car opens: input stays)
let commandPoll = null; // the 2 s poll while a command of the open car is not settled
let commandSeq = 0; // order of command list requests: an older answer never overwrites a newer one
let commandShown = 0;
let listFailed = false; // the command message says the list could not be loaded (cleared by the next good load)
let sendBlockedUntil = 0; // after a 429: Date.now() until which the send buttons stay disabled
// `${vehicleId}\n${name}` -> {key, body}: the Idempotency-Key of a send whose answer never came (network error,
// 5xx). Sending the same body again reuses it, so the API returns the command it may have stored, never a second.
const retryKeys = new Map();

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

class SignInNeeded extends Error {}

// The API answered with an error: `problem` is its RFC 7807 body (detail, errors: [{field, message}]), if any.
class ApiError extends Error {
  constructor(status, detail, problem, retryAfter) {
    super(`${status} ${detail}`);
    this.status = status;
    this.detail = detail;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }
}

// No answer at all (offline, connection reset): the request may or may not have reached the API.
class NetworkError extends Error {}

// ---- sign-in ---------------------------------------------------------------------------------------------------

async function loadConfig() {
  const response = await fetch(`${API}/dashboard/config.json`, { cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new Error(`sign-in is not configured (${response.status})`);
  return response.json();
}

function createAuth() {
  return new msal.PublicClientApplication({
    auth: {
      clientId: config.clientId,
      authority: config.authority,
      knownAuthorities: config.knownAuthorities,
      redirectUri: PAGE,
      postLogoutRedirectUri: PAGE,
    },
    cache: { cacheLocation: "sessionStorage" },
    system: { protocolMode: config.protocolMode },
  });
}

// The access token for the API: from MSAL's cache, or redeemed with the refresh token. Never through a hidden
// iframe (the page's CSP allows none): when the refresh token is gone the operator signs in again.
async function accessToken() {
  const account = auth.getActiveAccount();
  if (!account) throw new SignInNeeded("not signed in");
  try {
    const result = await auth.acquireTokenSilent({
      scopes: config.scopes,
      account,
      cacheLookupPolicy: msal.CacheLookupPolicy.AccessTokenAndRefreshToken,
    });
    return result.accessToken;
  } catch (e) {
    throw new SignInNeeded(`sign-in expired (${e.errorCode || e.message})`);
  }
}

function signIn() {
  return auth.loginRedirect({ scopes: config.scopes, prompt: "select_account" });
}

function signOut() {
  clearTimeout(timer);
  stopCommandPoll();
  return auth.logoutRedirect({ account: auth.getActiveAccount(), postLogoutRedirectUri: PAGE });
}

// ---- the API ---------------------------------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${await accessToken()}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(API + path, { ...options, headers, cache: "no-store", credentials: "omit" });
  } catch (e) {
    throw new NetworkError(`no answer from the API (${e.message})`);
  }
  if (response.status === 401) throw new SignInNeeded("the API refused the sign-in");
  if (!response.ok) {
    let problem = null;
    try { problem = await response.json(); } catch (e) { /* not JSON */ }
    const detail = problem && typeof problem.detail === "string" && problem.detail ? problem.detail : response.statusText;
    throw new ApiError(response.status, detail, problem, response.headers.get("Retry-After"));
  }
  return response.status === 204 ? null : response.json();
}

// Whether a grant of the caller's covers `permission` on this car. Only decides what the page offers; the API
// checks every request itself.
function may(permission, vehicle) {
  return mayAs((config.permissions || {})[permission] || [], vehicle);
}

// Whether a grant of one of `roles` covers this car (a command's catalogue entry lists the roles that may send it).
function mayAs(roles, vehicle) {
  return Boolean(me && vehicle) && me.grants.some((g) =>
    roles.includes(g.role)
    && (!g.brandId || g.brandId === vehicle.brandId)
    && (!g.fleetId || g.fleetId === vehicle.fleetId)
    && (!g.vehicleId || g.vehicleId === vehicle.vehicleId));
}

// ---- rendering -------------------------------------------------------------------------------------------------

const fmt = {
  num: (v, unit, digits = 0) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(digits)} ${unit}`),
  time: (t) => (t ? new Date(t).toLocaleString() : "–"),
  ago: (t) => {
    if (!t) return "never";
    const s = Math.max(0, Math.round((Date.now() - new Date(t).getTime()) / 1000));
    return s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : new Date(t).toLocaleString();
  },
};

const usd = (v) => (v === null || v === undefined ? "–" : `$${Number(v).toFixed(v < 1 ? 4 : 2)}`);

// Whether a brand-wide grant of a role with `permission` covers this brand (the brand's cost meter: its admins).
function mayOnBrand(permission, brandId) {
  const roles = (config.permissions || {})[permission] || [];
  return Boolean(me) && me.grants.some((g) =>
    roles.includes(g.role) && (!g.brandId || g.brandId === brandId) && !g.fleetId && !g.vehicleId);
}

function costCells(figures) {
  if (!figures) return [el("td", { colspan: "4", class: "hint", text: "nothing yet" })];
  return [
    el("td", { class: "num ru", text: fmt.num(figures.requestUnits, "RU", 1) }),
    el("td", { class: "num messages", text: fmt.num(figures.messages, "msgs") }),
    el("td", { class: "num hub", text: fmt.num(figures.hubUnits, "units") }),
    el("td", { class: "num cpu", text: fmt.num(figures.cpuMs, "ms", 1) }),
  ];
}

// The car's cost meter (GET /api/vehicles/{id} `cost`): today, the month to date, the month's estimate in USD.
function renderCost(cost) {
  $("cost-box").hidden = !cost;
  if (!cost) return;
  const monthly = $("cost-monthly");
  // The estimate is at this month's rate, at last month's while this month's counts span no time yet, or none (a
  // new car's first batch: one count is no rate); `monthlyUsdFrom` says which (docs/cost.md "The month in USD").
  const month = cost.monthToDate ? cost.monthToDate.period : null;
  const from = cost.monthlyUsdFrom && cost.monthlyUsdFrom !== month ? ` (at ${cost.monthlyUsdFrom}'s rate)` : "";
  monthly.textContent = cost.monthlyUsd === null
    ? "no estimate yet (its messages span no time yet)"
    : `≈ ${usd(cost.monthlyUsd)} a month${from}`;
  monthly.dataset.usd = cost.monthlyUsd === null ? "" : String(cost.monthlyUsd);
  $("cost-estimated").hidden = !cost.estimated;
  $("cost-table").tBodies[0].replaceChildren(
    el("tr", { class: "today" }, [el("th", { text: "today" }), ...costCells(cost.today)]),
    el("tr", { class: "month" }, [el("th", { text: "month to date" }), ...costCells(cost.monthToDate)]),
  );
  const maps = cost.mapsCallsLastHour === null ? "–" : String(cost.mapsCallsLastHour);
  // Graph is free of charge: its calls are shown because they count against Graph's throttling (docs/cost.md).
  const calls = (n) => String(Math.round((n || 0) * 10) / 10);
  const graph = cost.graphCalls === null ? "–" : `${calls(cost.graphCalls)} (today ${calls(cost.graphCallsToday)})`;
  $("cost-extra").textContent = `Azure Maps calls in the last hour: ${maps} · Graph calls this month: ${graph}, free · `
    + `prices: ${cost.prices}, as in a fleet of ${cost.fleetCarsAssumed.toLocaleString()} cars like this one`;
}

// The daily rollup's closed days (GET /api/brands/{id}/cost `history`, the last 31 by default), summed. Not named
// `history`: a top-level function of this classic script would replace window.history, which MSAL uses to clear
// the sign-in response from the address bar.
function rolledUpDays(days) {
  if (!days.length) return "–";
  const ru = days.reduce((sum, d) => sum + d.requestUnits, 0);
  const messages = days.reduce((sum, d) => sum + d.messages, 0);
  return `${fmt.num(ru, "RU", 1)} · ${messages} msgs (${days.length} days)`;
}

// The brands this user administers (GET /api/brands/{id}/cost): per-day totals and the month per car.
async function renderBrandCosts(list) {
  const brands = [...new Set(list.map((v) => v.brandId).filter(Boolean))].filter((b) => mayOnBrand("brands.read", b));
  $("brand-cost-box").hidden = !brands.length;
  if (!brands.length || Date.now() - brandCostAt < BRAND_COST_MS) return;
  brandCostAt = Date.now();
  const answers = await Promise.all(brands.map((b) => api(`/brands/${encodeURIComponent(b)}/cost`).catch((e) => e)));
  $("brand-costs").tBodies[0].replaceChildren(...answers.map((answer, i) => {
    if (answer instanceof SignInNeeded) throw answer;
    if (answer instanceof Error) {
      return el("tr", { dataset: { brand: brands[i] } }, [el("td", { text: brands[i] }), el("td", { colspan: "6", class: "hint", text: answer.message })]);
    }
    const day = (answer.days || [])[0];
    const month = (answer.months || [])[0];
    const period = (p) => (p ? `${fmt.num(p.requestUnits, "RU", 1)} · ${p.messages} msgs (${p.period})` : "–");
    // The figures are the brand's snapshot (summed at most COST_SNAPSHOT_MAX_AGE_SECONDS ago): say when.
    const asOf = answer.asOf ? ` · as of ${fmt.time(answer.asOf)}` : "";
    return el("tr", { dataset: { brand: answer.brandId } }, [
      el("td", { class: "brand", text: `${answer.brandId}${answer.estimated ? " (estimated)" : ""}${asOf}` }),
      el("td", { class: "num", text: String(answer.cars) }),
      el("td", { class: "day", text: period(day) }),
      el("td", { class: "month", text: period(month) }),
      el("td", { class: "num per-car", text: usd(answer.monthlyUsdPerCar) }),
      el("td", { class: "num total", text: usd(answer.monthlyUsdTotal) }),
      el("td", { class: "history", text: rolledUpDays(answer.history || []) }),
    ]);
  }));
}

async function allVehicles() {
  const items = [];
  let token = null;
  for (let page = 0; page < 20; page++) {
    const query = new URLSearchParams({ limit: "100" });
    if (token) query.set("continuationToken", token);
    const result = await api(`/vehicles?${query}`);
    items.push(...result.items);
    token = result.continuationToken;
    if (!token) break;
  }
  return items;
}

function renderWho() {
  const where = me.grants.map((g) => [g.role, [g.brandId, g.fleetId, g.vehicleId].filter(Boolean).join("/")].filter(Boolean).join(" "));
  $("who").textContent = `${me.name || me.username || me.objectId} · ${where.join(", ") || "no access granted yet"}`;
  $("who").hidden = false;
}

function renderFleet(list) {
  const body = $("vehicles").tBodies[0];
  body.replaceChildren(
    ...list.map((v) => {
      const row = el("tr", { dataset: { vehicle: v.vehicleId } }, [
        el("td", { class: "id", text: v.label ? `${v.vehicleId} (${v.label})` : v.vehicleId }),
        el("td", { class: "fleet", title: v.brandId || "", text: v.fleetId || "–" }),
        el("td", { class: "num speed", text: fmt.num(v.speedKmh, "km/h") }),
        el("td", { class: "num soc", text: fmt.num(v.stateOfChargePercent, "%") }),
        el("td", { class: "moving", text: v.moving === null ? "–" : v.moving ? "yes" : "no" }),
        el("td", { class: "seen", text: fmt.ago(v.lastSeen) }),
        el("td", { class: "num alerts", text: String(v.activeAlerts) }),
      ]);
      if (v.vehicleId === selected) row.classList.add("selected");
      row.addEventListener("click", () => { selected = v.vehicleId; refresh(); });
      return row;
    }),
  );
  if (!list.length) body.append(el("tr", {}, [el("td", { colspan: "7", class: "hint", text: "no cars you may see" })]));
}

function renderTrack(history) {
  const points = [];
  for (const message of history.items) {
    for (const sample of message.samples) {
      const lat = sample.signals[LAT];
      const lon = sample.signals[LON];
      if (typeof lat === "number" && typeof lon === "number") points.push([sample.ts, lat, lon]);
    }
  }
  points.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const svg = $("track");
  svg.replaceChildren();
  $("track-note").textContent = points.length ? `${points.length} positions` : "no positions (none sent, or no location consent)";
  if (!points.length) return;
  const lats = points.map((p) => p[1]);
  const lons = points.map((p) => p[2]);
  const [minLat, maxLat, minLon, maxLon] = [Math.min(...lats), Math.max(...lats), Math.min(...lons), Math.max(...lons)];
  const scale = Math.min(280 / (maxLon - minLon || 1e-4), 180 / (maxLat - minLat || 1e-4));
  const xy = points.map(([, lat, lon]) => [10 + (lon - minLon) * scale, 190 - (lat - minLat) * scale]);
  const ns = "http://www.w3.org/2000/svg";
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "));
  const here = document.createElementNS(ns, "circle");
  const [x, y] = xy[xy.length - 1];
  here.setAttribute("cx", x.toFixed(1));
  here.setAttribute("cy", y.toFixed(1));
  here.setAttribute("r", "4");
  svg.append(line, here);
}

function renderAlerts(vehicle, canAck) {
  $("alerts").replaceChildren(
    ...(vehicle.alerts.length ? vehicle.alerts : [null]).map((a) => {
      if (!a) return el("li", { class: "hint", text: "none" });
      const item = el("li", { dataset: { alert: a.id } }, [`${a.kind || "alert"} ${a.code || a.key || ""} since ${fmt.time(a.raisedAt)}`]);
      if (a.acknowledged) {
        item.classList.add("acked");
        item.append(el("span", { class: "ack-state", text: ` (acknowledged ${fmt.time(a.acknowledgedAt)})` }));
      } else if (canAck) {
        const button = el("button", { type: "button", class: "ack", dataset: { alert: a.id }, text: "Acknowledge" });
        button.addEventListener("click", async () => {
          button.disabled = true;
          try {
            await api(`/vehicles/${encodeURIComponent(vehicle.vehicleId)}/alerts/${encodeURIComponent(a.id)}/ack`, {
              method: "POST", body: "{}",
            });
          } catch (e) { setStatus(`ack failed: ${e.message}`, true); }
          refresh();
        });
        item.append(button);
      }
      return item;
    }),
  );
}

function renderAgenda(agenda) {
  const events = agenda.events.slice(0, 5);
  $("agenda").replaceChildren(
    ...(events.length ? events : [null]).map((e) => {
      if (!e) return el("li", { class: "hint", text: agenda.calendarConsent ? "nothing in the next hours" : "no calendar consent" });
      const item = el("li", {}, [`${fmt.time(e.start)} ${e.subject}`]);
      if (e.joinUrl && e.joinUrl.startsWith("https://")) {
        item.append(" ", el("a", { href: e.joinUrl, target: "_blank", rel: "noopener noreferrer", class: "teams", text: "Join in Teams" }));
      }
      return item;
    }),
  );
}

function renderTrips(trips) {
  $("trips").tBodies[0].replaceChildren(
    ...trips.items.map((t) =>
      el("tr", {}, [
        el("td", { text: fmt.time(t.startTs) }),
        el("td", { text: fmt.time(t.endTs) }),
        el("td", { class: "num", text: fmt.num(t.distanceM === null || t.distanceM === undefined ? null : t.distanceM / 1000, "km", 1) }),
        el("td", { class: "num", text: fmt.num(t.maxSpeedKmh, "km/h") }),
        el("td", { text: t.status }),
      ]),
    ),
  );
}

// ---- remote commands -------------------------------------------------------------------------------------------

const clock = (t) => (t ? new Date(t).toLocaleTimeString([], { hour12: false }) : "–");
const delivery = { method: "method", c2d: "queued" };

function commandMessage(text, error = false) {
  listFailed = false;
  const box = $("command-message");
  box.textContent = text || "";
  box.hidden = !text;
  box.classList.toggle("error", error);
}

// The name people read for a problem's field: "body.params.limit" -> "limit"; the whole body -> none.
function fieldName(field) {
  const parts = String(field || "").split(".").filter((p) => !["body", "params", "request"].includes(p));
  return parts.join(".");
}

// A clear sentence for a failed request, from the problem's own words (never its raw JSON).
function problemText(e, what) {
  if (e instanceof NetworkError) return `${what}: no answer from the API (network error).`;
  if (!(e instanceof ApiError)) return `${what}: ${e.message}`;
  const problem = e.problem || {};
  switch (e.status) {
    case 422: {
      const fields = (Array.isArray(problem.errors) ? problem.errors : []).map((f) => {
        const message = String(f.message || "invalid").replace(/^Value error, /, "");
        const name = fieldName(f.field);
        return name ? `${name}: ${message}` : message;
      });
      return `${what}: invalid input – ${fields.length ? fields.join("; ") : e.detail}.`;
    }
    case 409: return `${what}: refused – ${e.detail}.`;
    case 429: {
      const seconds = Number.parseInt(e.retryAfter, 10);
      return `${what}: too many commands right now – try again in ${Number.isFinite(seconds) ? seconds : "a few"} s.`;
    }
    case 403: return `${what}: you may not do this for this car.`;
    case 404: return `${what}: the car or command is not known (any more).`;
    case 503: return `${what}: the service is busy – try again in a moment.`;
    default: return `${what}: ${e.detail} (${e.status}).`;
  }
}

// The commands this user may send to this car (the catalogue's roles against the grants of GET /api/me).
function sendable(summary) {
  return catalogue.filter((entry) => mayAs(entry.roles || [], summary) && entry.parameters
    && Object.values(entry.parameters.properties || {}).every((p) => ["number", "integer", "boolean", "string"].includes(p.type)));
}

function paramInput(name, schema, required) {
  const props = { name, dataset: { param: name, type: schema.type } };
  if (schema.description) props.title = schema.description;
  if (schema.type === "boolean") {
    const box = el("input", { ...props, type: "checkbox" });
    box.checked = schema.default !== undefined ? Boolean(schema.default) : false;
    return box;
  }
  if (schema.type === "number" || schema.type === "integer") {
    props.type = "number";
    props.step = schema.type === "integer" ? "1" : "any";
    if (schema.minimum !== undefined) props.min = String(schema.minimum);
    if (schema.maximum !== undefined) props.max = String(schema.maximum);
  } else {
    props.type = "text";
    if (schema.maxLength !== undefined) props.maxlength = String(schema.maxLength);
  }
  if (required) props.required = "";
  if (schema.minimum !== undefined && schema.maximum !== undefined) props.placeholder = `${schema.minimum}..${schema.maximum}`;
  const input = el("input", props);
  if (schema.default !== undefined) input.value = String(schema.default);
  return input;
}

// The parameters of a form, checked against the command's JSON Schema; Error with a sentence if one is wrong.
function readParams(entry, form) {
  const schema = entry.parameters || {};
  const required = new Set(schema.required || []);
  const params = {};
  for (const [name, p] of Object.entries(schema.properties || {})) {
    const input = form.querySelector(`input[data-param="${CSS.escape(name)}"]`);
    if (p.type === "boolean") { params[name] = input.checked; continue; }
    const raw = input.value.trim();
    if (raw === "") {
      if (required.has(name)) throw new Error(`${name} is required`);
      continue;
    }
    if (p.type === "string") {
      if (p.minLength !== undefined && raw.length < p.minLength) throw new Error(`${name} needs at least ${p.minLength} characters`);
      if (p.maxLength !== undefined && raw.length > p.maxLength) throw new Error(`${name} may have at most ${p.maxLength} characters`);
      params[name] = raw;
      continue;
    }
    const value = Number(raw);
    if (!Number.isFinite(value) || (p.type === "integer" && !Number.isInteger(value))) {
      throw new Error(`${name} must be ${p.type === "integer" ? "a whole number" : "a number"}`);
    }
    if ((p.minimum !== undefined && value < p.minimum) || (p.maximum !== undefined && value > p.maximum)) {
      throw new Error(`${name} must be between ${p.minimum ?? "−∞"} and ${p.maximum ?? "∞"}`);
    }
    params[name] = value;
  }
  return params;
}

function retryLabel(vehicleId, entry, button) {
  const pending = retryKeys.has(`${vehicleId}\n${entry.name}`);
  button.textContent = pending ? `Retry ${entry.name}` : entry.name;
  button.classList.toggle("retry", pending);
}

function blockSending(seconds) {
  sendBlockedUntil = Date.now() + seconds * 1000;
  for (const b of document.querySelectorAll("#command-send button.send")) b.disabled = true;
  setTimeout(() => {
    if (Date.now() < sendBlockedUntil) return;
    for (const b of document.querySelectorAll("#command-send button.send")) b.disabled = false;
  }, seconds * 1000 + 50);
}

async function sendCommand(summary, entry, form, button) {
  const vehicleId = summary.vehicleId;
  let params;
  try {
    params = readParams(entry, form);
  } catch (e) {
    commandMessage(`${entry.name} was not sent: ${e.message}.`, true);
    return;
  }
  const body = JSON.stringify({ name: entry.name, params });
  const slot = `${vehicleId}\n${entry.name}`;
  const pending = retryKeys.get(slot);
  // A retry of the very same request keeps its key; anything else is a new command with a new key.
  const key = pending && pending.body === body ? pending.key : crypto.randomUUID();
  retryKeys.set(slot, { key, body });
  button.disabled = true;
  commandMessage(`sending ${entry.name}…`);
  try {
    const command = await api(`/vehicles/${encodeURIComponent(vehicleId)}/commands`, {
      method: "POST", body, headers: { "Idempotency-Key": key },
    });
    retryKeys.delete(slot);
    commandMessage(`${command.name} ${command.status}${command.reason ? ` (${command.reason})` : ""}.`);
  } catch (e) {
    if (e instanceof SignInNeeded) { showSignIn(e.message); return; }
    const unknown = e instanceof NetworkError || (e instanceof ApiError && e.status >= 500);
    if (unknown) {
      // It may have been stored: the retry sends the same key, and the API answers with that command.
      commandMessage(`${problemText(e, `${entry.name} may not have been sent`)} Press “Retry ${entry.name}”: `
        + "it is the same request, so the car gets the command at most once.", true);
    } else {
      retryKeys.delete(slot);
      commandMessage(problemText(e, `${entry.name} was not sent`), true);
      if (e instanceof ApiError && e.status === 429) blockSending(Number.parseInt(e.retryAfter, 10) || 5);
    }
  } finally {
    button.disabled = Date.now() < sendBlockedUntil;
    retryLabel(vehicleId, entry, button);
  }
  if (vehicleId === selected) await pollCommands();
}

async function cancelCommand(vehicleId, command, button) {
  button.disabled = true;
  try {
    const cancelled = await api(
      `/vehicles/${encodeURIComponent(vehicleId)}/commands/${encodeURIComponent(command.commandId)}/cancel`,
      { method: "POST" },
    );
    commandMessage(`${cancelled.name} ${cancelled.status}.`);
  } catch (e) {
    if (e instanceof SignInNeeded) { showSignIn(e.message); return; }
    commandMessage(problemText(e, `${command.name} was not cancelled`), true);
    button.disabled = false;
  }
  if (vehicleId === selected) await pollCommands();
}

// The send forms of the open car: one per command the user may send, inputs from its parameters' JSON Schema.
function renderCommandForms(summary) {
  const box = $("command-send");
  const entries = sendable(summary);
  if (!entries.length) {
    box.replaceChildren(el("p", { class: "hint", text: "You may follow this car's commands but not send any." }));
    return;
  }
  box.replaceChildren(...entries.map((entry) => {
    const schema = entry.parameters || {};
    const required = new Set(schema.required || []);
    const button = el("button", { type: "submit", class: "send", title: entry.title, dataset: { command: entry.name } });
    retryLabel(summary.vehicleId, entry, button);
    button.disabled = Date.now() < sendBlockedUntil;
    const inputs = Object.entries(schema.properties || {}).map(([name, p]) =>
      el("label", { class: "param" }, [`${name}${required.has(name) ? "" : "?"} `, paramInput(name, p, required.has(name))]));
    // novalidate: the page checks the values itself and says what is wrong in words (readParams)
    const form = el("form", { class: "command", novalidate: "", dataset: { command: entry.name } },
      [button, el("span", { class: "params" }, inputs), el("span", { class: "hint", text: entry.title })]);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!button.disabled) sendCommand(summary, entry, form, button);
    });
    return form;
  }));
}

function renderTransitions(command) {
  return el("ol", { class: "transitions" }, command.transitions.map((t) =>
    el("li", { title: `${t.at}${t.reason ? ` – ${t.reason}` : ""}`, dataset: { status: t.status } },
      [`${t.status} ${clock(t.at)}${t.late ? " (late)" : ""}`])));
}

function renderCommands(vehicleId, page) {
  const summary = vehicles.get(vehicleId);
  const rows = page.items.map((c) => {
    const confirmed = c.transitions.find((t) => t.status === "confirmed");
    const status = el("td", { class: "status" }, [
      el("span", { class: `badge status-${c.status}`, text: c.status === "confirmed" ? "succeeded" : c.status }),
    ]);
    if (confirmed) status.append(" ", el("span", { class: "confirmed", title: `telemetry showed it at ${confirmed.at}`, text: "✓ confirmed" }));
    const params = Object.entries(c.params || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    // the reason code in words ("vehicle_moving" -> "vehicle moving"), the code itself in its tooltip
    const reason = [c.reason && c.reason.replaceAll("_", " "), c.message].filter(Boolean).join(" – ");
    const actions = el("td", { class: "actions" });
    const entry = catalogue.find((e) => e.name === c.name);
    if (CANCELLABLE.has(c.status) && entry && mayAs(entry.roles || [], summary)) {
      const button = el("button", { type: "button", class: "cancel", dataset: { command: c.commandId }, text: "Cancel" });
      button.addEventListener("click", () => cancelCommand(vehicleId, c, button));
      actions.append(button);
    }
    return el("tr", { dataset: { commandId: c.commandId, status: c.status } }, [
      el("td", { class: "name", title: c.commandId, text: params ? `${c.name} (${params})` : c.name }),
      status,
      el("td", { class: "reason", title: c.reason || "", text: reason || "–" }),
      el("td", { class: "delivery", title: c.delivery ? c.delivery.at : "", text: c.delivery ? delivery[c.delivery.via] || c.delivery.via : "–" }),
      el("td", {}, [renderTransitions(c)]),
      actions,
    ]);
  });
  if (!rows.length) rows.push(el("tr", {}, [el("td", { colspan: "6", class: "hint", text: "no commands yet" })]));
  $("commands").tBodies[0].replaceChildren(...rows);
  // Live while anything is under way; quiet (the 5 s refresh only) once every command is settled.
  clearTimeout(commandPoll);
  commandPoll = page.items.some((c) => !SETTLED.has(c.status)) ? setTimeout(pollCommands, COMMAND_POLL_MS) : null;
}

function commandsOf(vehicleId) {
  const seq = ++commandSeq;
  return api(`/vehicles/${encodeURIComponent(vehicleId)}/commands?limit=10`).then((page) => ({ seq, vehicleId, page }));
}

function showCommands(answer) {
  if (answer.vehicleId !== selected || answer.seq < commandShown) return; // another car opened, or a newer answer
  commandShown = answer.seq;
  if (listFailed) { listFailed = false; commandMessage(""); }
  renderCommands(answer.vehicleId, answer.page);
}

async function pollCommands() {
  clearTimeout(commandPoll);
  commandPoll = null;
  const vehicleId = selected;
  if (!vehicleId) return;
  try {
    showCommands(await commandsOf(vehicleId));
  } catch (e) {
    if (e instanceof SignInNeeded) { showSignIn(e.message); return; }
    commandMessage(problemText(e, "commands not updated"), true);
    listFailed = true;
    if (vehicleId === selected && !(e instanceof ApiError && e.status === 404)) commandPoll = setTimeout(pollCommands, COMMAND_POLL_MS);
  }
}

function stopCommandPoll() {
  clearTimeout(commandPoll);
  commandPoll = null;
}

// Another car's view opens (or none): its own forms, list and messages, nothing of the previous car's.
function openCommandPanel(summary) {
  stopCommandPoll();
  commandsFor = summary ? summary.vehicleId : null;
  commandMessage("");
  $("commands").tBodies[0].replaceChildren();
  if (summary) renderCommandForms(summary);
  else $("command-send").replaceChildren();
}

async function renderDetail() {
  const summary = vehicles.get(selected);
  if (!summary) { openCommandPanel(null); return; }
  if (commandsFor !== summary.vehicleId) openCommandPanel(summary);
  const id = encodeURIComponent(selected);
  const from = new Date(Date.now() - 3600 * 1000).toISOString();
  // The agenda is the driver's own data: asked for only by the driver of this car.
  const driverView = may("driver.read", summary);
  const [vehicle, history, trips, agenda, commands] = await Promise.all([
    api(`/vehicles/${id}`),
    api(`/vehicles/${id}/telemetry?${new URLSearchParams({ from, limit: "100" })}`),
    api(`/vehicles/${id}/trips?limit=5`),
    driverView ? api(`/vehicles/${id}/agenda`) : Promise.resolve(null),
    commandsOf(selected).catch((e) => e), // the panel says what failed; the rest of the view still shows
  ]);
  const driver = vehicle.driver ? ` – driver ${vehicle.driver.upn || vehicle.driver.userId}` : "";
  $("detail-title").textContent = `${vehicle.vehicleId}${driver}`;
  renderTrack(history);
  renderAlerts(vehicle, may("alerts.ack", summary));
  $("agenda-box").hidden = !agenda;
  if (agenda) renderAgenda(agenda);
  renderTrips(trips);
  renderCost(vehicle.cost);
  if (commands instanceof SignInNeeded) throw commands;
  if (commands instanceof Error) {
    commandMessage(problemText(commands, "commands not updated"), true);
    listFailed = true;
  } else showCommands(commands);
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function refresh() {
  clearTimeout(timer);
  try {
    const list = await allVehicles();
    vehicles = new Map(list.map((v) => [v.vehicleId, v]));
    if (!vehicles.has(selected)) selected = list.length ? list[0].vehicleId : null;
    renderFleet(list);
    await Promise.all([renderDetail(), renderBrandCosts(list)]);
    setStatus(`${list.length} vehicles – updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    if (e instanceof SignInNeeded) { showSignIn(e.message); return; }
    setStatus(`refresh failed: ${e.message}`, true);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function showSignIn(message) {
  clearTimeout(timer);
  stopCommandPoll();
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("who").hidden = true;
  $("sign-in").hidden = false;
  setStatus(message || "not signed in", Boolean(message));
}

async function open() {
  me = await api("/me");
  renderWho();
  try {
    catalogue = (await api("/commands/catalogue")).items;
  } catch (e) {
    if (e instanceof SignInNeeded) throw e;
    catalogue = [];
    setStatus(`commands unavailable: ${e.message}`, true);
  }
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  await refresh();
}

async function start() {
  try {
    config = await loadConfig();
    auth = createAuth();
    await auth.initialize();
    $("sign-in-button").addEventListener("click", () => signIn().catch((e) => setStatus(`sign-in failed: ${e.message}`, true)));
    $("sign-out").addEventListener("click", () => signOut().catch((e) => setStatus(`sign-out failed: ${e.message}`, true)));
    // Back from the authority: MSAL redeems the code (with the PKCE verifier it kept) and clears the address bar.
    const result = await auth.handleRedirectPromise();
    const account = (result && result.account) || auth.getActiveAccount() || auth.getAllAccounts()[0];
    if (!account) { showSignIn(); return; }
    auth.setActiveAccount(account);
    await open();
  } catch (e) {
    if (e instanceof SignInNeeded) { showSignIn(e.message); return; }
    showSignIn(`sign-in failed: ${e.errorCode || e.message}`);
  }
}

document.addEventListener("DOMContentLoaded", start, { once: true });
