// The order page: places orders through POST /order and polls GET /orders/board every half second
// (while the tab is in sight) with If-None-Match, so an unchanged board costs an empty 304. No
// framework, no build step.
"use strict";

const POLL_MS = 500;
const JITTER = 0.25;  // each wait is POLL_MS ± 25%, so pages answered together drift apart again
const ROWS = 20;
const FIELDS = ["user_id", "item", "quantity"];

const board = { etag: null, user: "", timer: null, busy: false };
const me = { user: null, staff: true };  // who GET /me says is signed in (nobody: sign-in is off)

function byId(id) { return document.getElementById(id); }

function showErrors(errors) {
  const leftover = [];
  for (const field of FIELDS) {
    const message = errors[field] || "";
    byId(field + "-error").textContent = message ? field.replace("_", " ") + " " + message : "";
    byId(field).setAttribute("aria-invalid", message ? "true" : "false");
  }
  for (const [field, problem] of Object.entries(errors)) {
    if (!FIELDS.includes(field)) leftover.push(field + " " + problem);
  }
  byId("form-error").textContent = leftover.join("; ");
  const first = FIELDS.find((field) => errors[field]);
  if (first) byId(first).focus();
}

function quantityValue(raw) {
  // A whole number goes as a number; anything else as typed, so the API names the problem.
  return /^\s*-?\d+\s*$/.test(raw) ? Number(raw) : raw;
}

// Every order goes with an Idempotency-Key: a fresh one for a new order, the same one for each
// retry of it (the page's own, after a lost answer, a 409 or a 5xx, and the user pressing the
// button again for the same order), so a retry is never a second order. It is forgotten once the
// order is answered for good.
const RETRY_DELAYS_MS = [500, 1000, 2000];
let unanswered = null; // { body, key } of the order sent last, until it is answered for good

function newKey() {
  // A UUID v4 from getRandomValues, which works on plain HTTP too (randomUUID needs HTTPS).
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
}

function retried(status) { return status === 409 || status >= 500; }

async function send(order) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      const response = await fetch("/order", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json",
                   "Idempotency-Key": order.key },
        body: order.body,
      });
      const body = await response.json();
      if (!retried(response.status) || attempt >= RETRY_DELAYS_MS.length) return { response, body };
    } catch (error) {
      if (attempt >= RETRY_DELAYS_MS.length) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS_MS[attempt]));
  }
}

async function placeOrder(event) {
  event.preventDefault();
  const form = event.target;
  const body = JSON.stringify({
    user_id: form.user_id.value,
    item: form.item.value,
    quantity: quantityValue(form.quantity.value),
  });
  if (unanswered === null || unanswered.body !== body) unanswered = { body, key: newKey() };
  byId("placed").textContent = "Placing the order…";
  let answer;
  try {
    answer = await send(unanswered);
  } catch (error) {
    byId("placed").textContent = "";
    showErrors({ request: "could not reach OrderService: " + error.message });
    return;
  }
  const { response, body: answered } = answer;
  if (!retried(response.status)) unanswered = null;
  if (response.status === 202) {
    showErrors({});
    const placed = byId("placed");
    placed.dataset.orderId = answered.order_id;
    placed.textContent = "Order " + shortId(answered.order_id) + " accepted (202): it waits for " +
      "InventoryService to reserve it.";
    poll();
  } else {
    byId("placed").textContent = "";
    showErrors(answered.errors || { request: answered.error || "failed with HTTP " + response.status });
  }
}

function shortId(orderId) { return orderId.slice(0, 8); }

function cell(text, label) {
  const td = document.createElement("td");
  td.textContent = text;
  td.dataset.label = label;
  return td;
}

function statusCell(order) {
  const td = cell("", "Status");
  const badge = document.createElement("span");
  badge.className = "status status-" + order.status;
  badge.textContent = order.status;
  td.appendChild(badge);
  if (order.reason) {
    const reason = document.createElement("span");
    reason.className = "reason";
    reason.textContent = order.reason;
    td.appendChild(reason);
  }
  return td;
}

function row(order) {
  const tr = document.createElement("tr");
  tr.dataset.orderId = order.order_id;
  tr.dataset.status = order.status;
  const id = cell(shortId(order.order_id), "Order");
  id.title = order.order_id;
  const placed = new Date(order.created_at).toLocaleTimeString();
  tr.append(id, cell(order.user_id, "User"), cell(order.item, "Item"),
    cell(String(order.quantity), "Qty"), statusCell(order), cell(placed, "Placed"));
  return tr;
}

function render(data) {
  const rows = byId("order-rows");
  rows.replaceChildren(...data.orders.map(row));
  rows.dataset.user = data.user_id || "";
  byId("empty").hidden = data.orders.length > 0;
  for (const [status, count] of Object.entries(data.counts)) {
    byId("count-" + status).textContent = String(count);
  }
  const service = byId("service");
  const up = data.broker === "connected";
  service.className = "service " + (up ? "up" : "down");
  service.textContent = "Broker " + data.broker + " · " + data.outbox_backlog + " event" +
    (data.outbox_backlog === 1 ? "" : "s") + " waiting in the outbox";
}

async function poll() {
  clearTimeout(board.timer);
  if (document.hidden) return;  // a tab out of sight asks nothing; visibilitychange resumes
  if (board.busy) { board.again = true; return; }
  board.busy = true;
  const params = new URLSearchParams({ limit: String(ROWS) });
  if (board.user) params.set("user_id", board.user);
  const headers = board.etag ? { "If-None-Match": board.etag } : {};
  try {
    const response = await fetch("/orders/board?" + params, { headers, cache: "no-store" });
    if (response.status === 200) {
      const data = await response.json();
      if ((data.user_id || "") === board.user) {
        board.etag = response.headers.get("ETag");
        render(data);
      }
    } else if (response.status !== 304) {
      throw new Error("HTTP " + response.status);
    }
  } catch (error) {
    const service = byId("service");
    service.className = "service down";
    service.textContent = "OrderService unreachable (" + error.message + "); retrying";
  } finally {
    board.busy = false;
    const wait = POLL_MS * (1 - JITTER + 2 * JITTER * Math.random());
    board.timer = setTimeout(poll, board.again ? 0 : wait);
    board.again = false;
  }
}

function fixUser(field, user) {
  field.value = user;
  field.readOnly = true;
  field.setAttribute("aria-readonly", "true");
}

async function whoAmI() {
  // Behind the sign-in gateway, GET /me names the signed-in user; with AUTH=off it names nobody.
  const shown = byId("signed-in");
  let response;
  try {
    response = await fetch("/me", { headers: { "Accept": "application/json" }, cache: "no-store" });
  } catch (error) {
    return;  // the board's poll says OrderService is unreachable
  }
  if (response.status === 401) {
    shown.textContent = "Not signed in: open this page through the campus sign-in.";
    shown.className = "signed-in down";
    shown.hidden = false;
    return;
  }
  if (response.status !== 200) return;
  const body = await response.json();
  if (body.auth === "off" || !body.user_id) return;
  me.user = body.user_id;
  me.staff = body.staff;
  shown.textContent = "Signed in as " + me.user + (me.staff ? " (staff: you see everyone's orders)" :
    " (you see your own orders)");
  shown.className = "signed-in";
  shown.hidden = false;
  fixUser(byId("user_id"), me.user);
  if (!me.staff) {
    fixUser(byId("filter"), me.user);
    byId("filter-hint").textContent = "You see your own orders.";
    board.user = me.user;
  }
}

function filterChanged(event) {
  board.user = event.target.value.trim();
  board.etag = null;
  poll();
}

document.addEventListener("DOMContentLoaded", () => {
  byId("order-form").addEventListener("submit", placeOrder);
  byId("filter").addEventListener("input", filterChanged);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  whoAmI().finally(poll);
});
