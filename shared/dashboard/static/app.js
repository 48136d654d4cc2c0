// Fleet dashboard: plain JS, no dependencies. Security model in shared/dashboard/__init__.py and docs/api.md.
"use strict";

const REFRESH_MS = 5000;
const KEY_STORE = "fleet.functionKey";
const API = location.pathname.replace(/\/dashboard\/?.*$/, "");
const LAT = "Vehicle.CurrentLocation.Latitude";
const LON = "Vehicle.CurrentLocation.Longitude";
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

function keyFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get("key") || params.get("code");
  if (key) {
    sessionStorage.setItem(KEY_STORE, key);
    history.replaceState(null, "", location.pathname + location.search); // keep it out of history
  }
}

async function api(path, options = {}) {
  const headers = { "x-functions-key": sessionStorage.getItem(KEY_STORE) || "" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, { ...options, headers, cache: "no-store", credentials: "omit" });
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(KEY_STORE);
    showKeyForm("The key was refused.");
    throw new Error("unauthorized");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${response.status} ${detail}`);
  }
  return response.status === 204 ? null : response.json();
}

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

function renderFleet(vehicles) {
  const body = $("vehicles").tBodies[0];
  body.replaceChildren(
    ...vehicles.map((v) => {
      const row = el("tr", { dataset: { vehicle: v.vehicleId } }, [
        el("td", { class: "id", text: v.label ? `${v.vehicleId} (${v.label})` : v.vehicleId }),
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

function renderAlerts(vehicle) {
  $("alerts").replaceChildren(
    ...(vehicle.alerts.length ? vehicle.alerts : [null]).map((a) => {
      if (!a) return el("li", { class: "hint", text: "none" });
      const item = el("li", { dataset: { alert: a.id } }, [`${a.kind || "alert"} ${a.code || a.key || ""} since ${fmt.time(a.raisedAt)}`]);
      if (a.acknowledged) {
        item.classList.add("acked");
        item.append(el("span", { class: "ack-state", text: ` (acknowledged ${fmt.time(a.acknowledgedAt)})` }));
      } else {
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
  if (!selected) return;
  const id = encodeURIComponent(selected);
  const from = new Date(Date.now() - 3600 * 1000).toISOString();
  const [vehicle, history, trips, agenda] = await Promise.all([
    api(`/vehicles/${id}`),
    api(`/vehicles/${id}/telemetry?${new URLSearchParams({ from, limit: "100" })}`),
    api(`/vehicles/${id}/trips?limit=5`),
    api(`/vehicles/${id}/agenda`),
  ]);
  const driver = vehicle.driver ? ` – driver ${vehicle.driver.upn || vehicle.driver.userId}` : "";
  $("detail-title").textContent = `${vehicle.vehicleId}${driver}`;
  renderTrack(history);
  renderAlerts(vehicle);
  renderAgenda(agenda);
  renderTrips(trips);
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function refresh() {
  clearTimeout(timer);
  try {
    const vehicles = await allVehicles();
    if (!selected && vehicles.length) selected = vehicles[0].vehicleId;
    renderFleet(vehicles);
    await renderDetail();
    setStatus(`${vehicles.length} vehicles – updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    if (e.message === "unauthorized") return;
    setStatus(`refresh failed: ${e.message}`, true);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function showKeyForm(message) {
  $("app").hidden = true;
  $("key-form").hidden = false;
  $("forget-key").hidden = true;
  setStatus(message || "a function key is needed", Boolean(message));
}

function start() {
  keyFromFragment();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key").value.trim());
    $("key").value = "";
    open();
  });
  $("forget-key").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); location.reload(); });
  open();
}

function open() {
  if (!sessionStorage.getItem(KEY_STORE)) { showKeyForm(); return; }
  $("key-form").hidden = true;
  $("app").hidden = false;
  $("forget-key").hidden = false;
  refresh();
}

document.addEventListener("DOMContentLoaded", start, { once: true });
