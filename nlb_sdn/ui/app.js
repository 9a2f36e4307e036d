// The nlb_sdn dashboard: polls the controller's REST API every second and redraws (docs/dashboard.md).
// Plain JavaScript and inline SVG, no library. With tokens configured the API answers 401 and the page asks for a
// bearer token, kept in sessionStorage (this tab only) and sent as `Authorization: Bearer ...`.
"use strict";

const POLL_MS = 1000;
const TOKEN_KEY = "nlb_sdn_token";
const MAX_EVENTS = 50;
const MAX_SESSIONS = 100;
const EVENT_PAGE = 500;

let eventMarker = null;
let recentEvents = [];
let timer = null;

class Unauthorized extends Error {}

function element(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svgElement(tag, attributes) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
  return node;
}

async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, { headers: headers, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized("a bearer token is required");
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function row(cells) {
  const tr = element("tr");
  for (const cell of cells) {
    const td = element("td");
    if (cell instanceof Node) td.appendChild(cell);
    else td.textContent = cell === null || cell === undefined ? "" : String(cell);
    tr.appendChild(td);
  }
  return tr;
}

function drawFabric(fabric) {
  const svg = document.getElementById("fabric");
  const width = 800;
  const spacing = (count) => width / (count + 1);
  const places = new Map();
  // Switches zigzag, so that a link between two switches never runs through a third.
  fabric.switches.forEach((s, i) =>
    places.set("s:" + s.name, [spacing(fabric.switches.length) * (i + 1), 50 + (i % 2) * 60]),
  );
  fabric.hosts.forEach((h, i) => places.set("h:" + h.name, [spacing(fabric.hosts.length) * (i + 1), 230]));
  const nodes = [];
  for (const link of fabric.links) {
    const [a, b] = [places.get("s:" + link.a), places.get("s:" + link.b)];
    nodes.push(svgElement("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1] }));
  }
  for (const host of fabric.hosts) {
    const [a, b] = [places.get("h:" + host.name), places.get("s:" + host.switch)];
    nodes.push(svgElement("line", { class: "attach", x1: a[0], y1: a[1], x2: b[0], y2: b[1] }));
  }
  for (const s of fabric.switches) {
    const [x, y] = places.get("s:" + s.name);
    const group = svgElement("g", { class: s.connected ? "switch-up" : "switch-down", "data-switch": s.name });
    group.appendChild(svgElement("rect", { x: x - 40, y: y - 14, width: 80, height: 28, rx: 4 }));
    const label = svgElement("text", { x: x, y: y + 4, class: "inside" });
    label.textContent = s.name + (s.master === null ? "" : " (LBU " + s.master + ")");
    group.appendChild(label);
    nodes.push(group);
  }
  for (const h of fabric.hosts) {
    const [x, y] = places.get("h:" + h.name);
    const group = svgElement("g", { class: h.members.length ? "member-host" : "host", "data-host": h.name });
    group.appendChild(svgElement("circle", { cx: x, cy: y, r: 10 }));
    const label = svgElement("text", { x: x, y: y + 25 });
    label.textContent = h.name + " " + h.ip;
    group.appendChild(label);
    const title = svgElement("title");
    title.textContent = h.members.length ? "serves " + h.members.join(", ") : "host";
    group.appendChild(title);
    nodes.push(group);
  }
  svg.replaceChildren(...nodes);
}

function shareBar(percent) {
  const span = element("span");
  span.appendChild(element("span", { class: "share", style: "width:" + Math.round(percent) + "px" }));
  span.appendChild(document.createTextNode(percent.toFixed(1) + " %"));
  return span;
}

function memberRow(vip, member, state, shares, total, counts) {
  const share = total > 0 ? (100 * (shares[member.name] || 0)) / total : 0;
  const current = state ? state.current : member.state;
  const tr = row([
    member.name,
    member.address + ":" + member.port,
    member.weight,
    element("span", { class: "state-" + current }, current),
    state ? state.target : member.state,
    element("span", { class: "health-" + (state ? state.health : "") }, state ? state.health : ""),
    shareBar(share),
    (counts[vip.name] || {})[member.name] || 0,
  ]);
  tr.setAttribute("data-member", vip.name + "/" + member.name);
  tr.setAttribute("data-state", current);
  return tr;
}

async function vipTable(vip, counts) {
  const [allotment, states] = await Promise.all([
    api("/v1/vips/" + encodeURIComponent(vip.name) + "/allotment"),
    Promise.all(
      vip.members.map((m) =>
        api("/v1/vips/" + encodeURIComponent(vip.name) + "/members/" + encodeURIComponent(m.name) + "/state"),
      ),
    ),
  ]);
  const shares = allotment.values || {};
  const total = Object.values(shares).reduce((sum, value) => sum + value, 0);
  const box = element("div", { class: "vip", "data-vip": vip.name });
  const heading = vip.name + " " + vip.address + ":" + vip.port + "/" + vip.protocol + " (" + vip.mode + ")";
  box.appendChild(element("h3", {}, heading));
  const table = element("table");
  const head = element("tr");
  for (const name of ["member", "endpoint", "weight", "state", "target", "health", "allotment", "connections"]) {
    head.appendChild(element("th", {}, name));
  }
  table.appendChild(element("thead")).appendChild(head);
  const body = table.appendChild(element("tbody"));
  vip.members.forEach((m, i) => body.appendChild(memberRow(vip, m, states[i], shares, total, counts)));
  box.appendChild(table);
  return box;
}

async function drawVips(vips, stats) {
  const counts = (stats.connections && stats.connections.per_member) || {};
  const boxes = await Promise.all(vips.map((vip) => vipTable(vip, counts)));
  document.getElementById("vips").replaceChildren(...boxes);
}

function drawSessions(page) {
  const rows = page.sessions.slice(0, MAX_SESSIONS).map((s) => row([s.id, s.vip, s.member, s.client, s.expires_in]));
  document.querySelector("#sessions tbody").replaceChildren(...rows);
  document.getElementById("sessions-count").textContent = "(" + page.count + ")";
}

function eventDetails(event) {
  const details = Object.entries(event).filter(([key]) => !["id", "at", "kind", "vip"].includes(key));
  return details.map(([key, value]) => key + "=" + (typeof value === "object" ? JSON.stringify(value) : value)).join(" ");
}

async function pollEvents() {
  for (let pages = 0; pages < 10; pages += 1) {
    const query = "?limit=" + EVENT_PAGE + (eventMarker === null ? "" : "&marker=" + eventMarker);
    const page = await api("/v1/events" + query);
    if (page.events.length) eventMarker = page.events[page.events.length - 1].id;
    recentEvents = recentEvents.concat(page.events).slice(-MAX_EVENTS);
    if (page.next_marker === null || page.next_marker === undefined) break;
  }
  const rows = recentEvents
    .slice()
    .reverse()
    .map((e) => row([new Date(e.at * 1000).toISOString(), e.kind, e.vip || "", eventDetails(e)]));
  document.querySelector("#events tbody").replaceChildren(...rows);
}

function setStatus(text, failed) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", failed);
}

async function refresh() {
  try {
    const [vips, stats, fabric, sessions] = await Promise.all([
      api("/v1/vips"),
      api("/v1/stats"),
      api("/v1/fabric"),
      api("/v1/sessions?limit=" + MAX_SESSIONS),
    ]);
    drawFabric(fabric);
    await drawVips(vips.vips, stats);
    drawSessions(sessions);
    await pollEvents();
    setStatus("updated " + new Date().toLocaleTimeString(), false);
  } catch (error) {
    if (error instanceof Unauthorized) {
      askForToken(sessionStorage.getItem(TOKEN_KEY) ? "unknown token" : "");
      return;
    }
    setStatus("update failed: " + error.message, true);
  }
  timer = setTimeout(refresh, POLL_MS);
}

function askForToken(reason) {
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  setStatus("a bearer token is required", true);
  document.getElementById("login-error").textContent = reason;
  document.getElementById("login").hidden = false;
}

function start() {
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    document.getElementById("login").hidden = true;
    refresh();
  });
  refresh();
}

document.addEventListener("DOMContentLoaded", start);
