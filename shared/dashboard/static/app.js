// Fleet dashboard: plain JS plus MSAL.js (msal-browser.min.js, served beside this file). Security model in
// shared/dashboard/__init__.py and docs/api.md: sign-in with authorization code + PKCE, tokens only in MSAL's
// sessionStorage cache, the access token only in the Authorization header of same-origin API requests.
"use strict";

const REFRESH_MS = 5000;
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
  return auth.logoutRedirect({ account: auth.getActiveAccount(), postLogoutRedirectUri: PAGE });
}

// ---- the API ---------------------------------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${await accessToken()}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, { ...options, headers, cache: "no-store", credentials: "omit" });
  if (response.status === 401) throw new SignInNeeded("the API refused the sign-in");
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${response.status} ${detail}`);
  }
  return response.status === 204 ? null : response.json();
}

// Whether a grant of the caller's covers `permission` on this car. Only decides what the page offers; the API
// checks every request itself.
function may(permission, vehicle) {
  const roles = (config.permissions || {})[permission] || [];
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

async function renderDetail() {
  const summary = vehicles.get(selected);
  if (!summary) return;
  const id = encodeURIComponent(selected);
  const from = new Date(Date.now() - 3600 * 1000).toISOString();
  // The agenda is the driver's own data: asked for only by the driver of this car.
  const driverView = may("driver.read", summary);
  const [vehicle, history, trips, agenda] = await Promise.all([
    api(`/vehicles/${id}`),
    api(`/vehicles/${id}/telemetry?${new URLSearchParams({ from, limit: "100" })}`),
    api(`/vehicles/${id}/trips?limit=5`),
    driverView ? api(`/vehicles/${id}/agenda`) : Promise.resolve(null),
  ]);
  const driver = vehicle.driver ? ` – driver ${vehicle.driver.upn || vehicle.driver.userId}` : "";
  $("detail-title").textContent = `${vehicle.vehicleId}${driver}`;
  renderTrack(history);
  renderAlerts(vehicle, may("alerts.ack", summary));
  $("agenda-box").hidden = !agenda;
  if (agenda) renderAgenda(agenda);
  renderTrips(trips);
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
    await renderDetail();
    setStatus(`${list.length} vehicles – updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    if (e instanceof SignInNeeded) { showSignIn(e.message); return; }
    setStatus(`refresh failed: ${e.message}`, true);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function showSignIn(message) {
  clearTimeout(timer);
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("who").hidden = true;
  $("sign-in").hidden = false;
  setStatus(message || "not signed in", Boolean(message));
}

async function open() {
  me = await api("/me");
  renderWho();
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
