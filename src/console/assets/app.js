// The otpd console: sign-in and hash routing, and its four pages (webhooks, the
// delivery log with a delivery's detail, messages, the OTP overview). Every call goes
// through api.js to the public /v1 API; every node is built with dom.js.

import { ApiError, apiKey, call, forget, remember, seg } from "./api.js";
import { badge, bucketByTime, el, facts, gauge, replace, stackedBars, when } from "./dom.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signOutButton = document.getElementById("sign-out");

/** The events each registrable service type offers (SPEC section 5). */
const EVENTS = {
  otp: ["otp.created", "otp.verified", "otp.failed", "otp.expired"],
  sms: ["sms.sent", "sms.delivered", "sms.failed"],
  whatsapp: ["whatsapp.sent", "whatsapp.delivered", "whatsapp.read", "whatsapp.failed"],
  telegram: ["telegram.sent", "telegram.delivered", "telegram.failed"],
};

const DELIVERY_SERIES = [
  { key: "succeeded", label: "succeeded", cls: "s-ok" },
  { key: "failed", label: "failed", cls: "s-bad" },
  { key: "pending", label: "pending", cls: "s-wait" },
];

const OUTCOME_SERIES = [
  { key: "verified", label: "verified", cls: "s-ok" },
  { key: "failed", label: "failed", cls: "s-bad" },
  { key: "expired", label: "expired", cls: "s-warn" },
  { key: "invalidated", label: "invalidated", cls: "s-muted" },
  { key: "pending", label: "pending", cls: "s-wait" },
];

// ----- small shared pieces ---------------------------------------------------

/** A notice line: `kind` is "ok" or "error". */
function notice(kind, ...text) {
  return el("p", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" }, ...text);
}

/** The message to show for a failed call. */
function why(e) {
  return e instanceof ApiError ? `${e.message} (${e.code})` : String(e?.message ?? e);
}

/** A button that runs `action` once per click, disabled while it runs. */
function button(label, action, attrs = {}) {
  const b = el("button", { type: "button", ...attrs }, label);
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await action(b);
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

/** Checkboxes for the events of `serviceType`, with `checked` ticked. */
function eventBoxes(serviceType, checked, name) {
  const all = [...new Set([...(EVENTS[serviceType] ?? []), ...checked])];
  return el("fieldset", { class: "events" }, el("legend", {}, "Events"),
    all.map((ev) => el("label", { class: "check" },
      el("input", { type: "checkbox", name, value: ev, checked: checked.includes(ev) }), ev)));
}

function ticked(container, name) {
  return [...container.querySelectorAll(`input[name="${name}"]:checked`)].map((i) => i.value);
}

/** `#/page/arg?k=v` → {page, arg, query}. */
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, qs] = hash.split("?");
  const [page, ...rest] = path.split("/");
  return { page: page || "webhooks", arg: rest.map(decodeURIComponent).join("/"), query: new URLSearchParams(qs ?? "") };
}

// ----- sign-in ---------------------------------------------------------------

function signIn(reason) {
  nav.hidden = true;
  signOutButton.hidden = true;
  const input = el("input", { id: "api-key", type: "password", autocomplete: "off", spellcheck: "false", placeholder: "otpd_…", required: true });
  const status = el("div", { id: "sign-in-status" }, reason ? notice("error", reason) : null);
  const form = el("form", { id: "sign-in", class: "card narrow" },
    el("h1", {}, "Sign in"),
    el("p", {}, "Use an app's API key. It is kept in this tab's session storage only, and every call the console makes goes to the public /v1 API with it."),
    el("label", { for: "api-key" }, "API key"), input,
    el("button", { type: "submit", id: "sign-in-button" }, "Sign in"), status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    replace(status);
    try {
      await call("GET", "/webhooks", undefined, key);
      remember(key);
      if (!location.hash || location.hash === "#/") location.hash = "#/webhooks";
      render();
    } catch (e) {
      replace(status, notice("error", why(e)));
    }
  });
  replace(main, form);
  input.focus();
}

window.addEventListener("otpd:unauthorized", (ev) => {
  if (!apiKey()) return;
  forget();
  signIn(`The API refused the key: ${ev.detail ?? "unauthorized"}. Sign in again.`);
});

signOutButton.addEventListener("click", () => {
  forget();
  location.hash = "#/";
  render();
});

// ----- webhooks --------------------------------------------------------------

async function webhooksPage() {
  const list = el("div", { id: "webhook-list" });
  const created = el("div", { id: "create-status" });
  replace(main, el("h1", {}, "Webhooks"), createForm(created, list), created, list);
  await loadWebhooks(list);
}

function createForm(status, list) {
  const url = el("input", { id: "new-url", type: "url", required: true, placeholder: "https://example.com/hooks/otp" });
  const type = el("select", { id: "new-service-type" },
    Object.keys(EVENTS).map((t) => el("option", { value: t }, t)));
  const description = el("input", { id: "new-description", type: "text", maxlength: "500", placeholder: "optional" });
  const boxes = el("div", { id: "new-events" }, eventBoxes("otp", EVENTS.otp, "new-event"));
  type.addEventListener("change", () => replace(boxes, eventBoxes(type.value, EVENTS[type.value], "new-event")));
  const form = el("form", { id: "create-webhook", class: "card" },
    el("h2", {}, "New webhook"),
    el("div", { class: "row" },
      el("label", {}, "URL", url), el("label", {}, "Service type", type), el("label", {}, "Description", description)),
    boxes, el("button", { type: "submit", id: "create-button" }, "Create webhook"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    replace(status);
    const body = { url: url.value.trim(), service_type: type.value, events: ticked(boxes, "new-event") };
    if (description.value.trim()) body.description = description.value.trim();
    try {
      const w = await call("POST", "/webhooks", body);
      replace(status, notice("ok", `Created ${w.id}. Its signing secret (shown here once; “Show secret” reads it again): `,
        el("code", { class: "secret" }, w.secret)));
      form.reset();
      replace(boxes, eventBoxes("otp", EVENTS.otp, "new-event"));
      await loadWebhooks(list);
    } catch (e) {
      replace(status, notice("error", why(e)));
    }
  });
  return form;
}

async function loadWebhooks(list) {
  try {
    const hooks = (await call("GET", "/webhooks")).items;
    if (hooks.length === 0) {
      replace(list, el("p", { class: "empty" }, "No webhooks yet."));
      return;
    }
    replace(list, hooks.map((w) => webhookCard(w, list)));
  } catch (e) {
    replace(list, notice("error", why(e)));
  }
}

function webhookCard(w, list) {
  const card = el("article", { class: "card webhook", "data-id": w.id });
  const stats = el("div", { class: "stats" }, "…");
  const out = el("div", { class: "out" });
  const body = el("div", { class: "body" });

  const show = () => replace(body,
    el("header", {},
      el("h3", { class: "url" }, w.url), badge(w.service_type), badge(w.status)),
    el("p", { class: "description" }, w.description ?? ""),
    el("p", { class: "meta" }, el("code", {}, w.id), ` · created ${when(w.created_at)} · events: `,
      el("span", { class: "event-list" }, w.events.join(", "))),
    stats,
    el("div", { class: "actions" },
      button("Send test event", async () => {
        try {
          const t = await call("POST", `/webhooks/${seg(w.id)}/test`, {});
          const outcome = el("span", { class: "test-outcome" }, " — pending");
          replace(out, notice("ok", "Test event queued: ", el("a", { href: `#/delivery/${seg(t.delivery_id)}`, class: "test-delivery" }, t.delivery_id), outcome));
          const d = await settled(t.delivery_id);
          replace(outcome, ` — ${d.status}`, d.last_status_code === null ? "" : ` (HTTP ${d.last_status_code})`);
          await loadStats(w, stats);
        } catch (e) { replace(out, notice("error", why(e))); }
      }, { class: "send-test" }),
      button("Edit", () => edit(), { class: "edit" }),
      button("Show secret", async () => {
        try {
          const s = await call("GET", `/webhooks/${seg(w.id)}/secret`);
          replace(out, notice("ok", "Secret: ", el("code", { class: "secret" }, s.secret)));
        } catch (e) { replace(out, notice("error", why(e))); }
      }, { class: "show-secret" }),
      button("Rotate secret", async () => {
        try {
          const s = await call("POST", `/webhooks/${seg(w.id)}/secret/rotate`, {});
          replace(out, notice("ok", "New secret: ", el("code", { class: "secret" }, s.secret),
            ` — the previous one keeps signing until ${when(s.previous_secret_expires_at)}.`));
        } catch (e) { replace(out, notice("error", why(e))); }
      }, { class: "rotate-secret" }),
      el("a", { href: `#/deliveries?webhook=${seg(w.id)}`, class: "button-link" }, "Deliveries"),
      deleteButton()),
    out);

  const deleteButton = () => {
    const b = button("Delete", async () => {
      if (b.dataset.armed !== "yes") {
        b.dataset.armed = "yes";
        b.textContent = "Confirm delete";
        return;
      }
      try {
        await call("DELETE", `/webhooks/${seg(w.id)}`);
        await loadWebhooks(list);
      } catch (e) { replace(out, notice("error", why(e))); }
    }, { class: "delete danger" });
    return b;
  };

  const edit = () => {
    const url = el("input", { type: "url", class: "edit-url", value: w.url, required: true });
    const status = el("select", { class: "edit-status" },
      ["active", "disabled"].map((s) => el("option", { value: s, selected: s === w.status }, s)));
    status.value = w.status;
    const description = el("input", { type: "text", class: "edit-description", value: w.description ?? "", maxlength: "500" });
    const boxes = eventBoxes(w.service_type, w.events, `edit-event-${w.id}`);
    const form = el("form", { class: "edit-form" },
      el("div", { class: "row" },
        el("label", {}, "URL", url), el("label", {}, "Status", status), el("label", {}, "Description", description)),
      boxes,
      el("div", { class: "actions" },
        el("button", { type: "submit", class: "save" }, "Save"),
        button("Cancel", () => show(), { class: "quiet" })),
      out);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const patch = { url: url.value.trim(), status: status.value, events: ticked(form, `edit-event-${w.id}`), description: description.value };
      try {
        w = await call("PATCH", `/webhooks/${seg(w.id)}`, patch);
        replace(out);
        show();
        await loadStats(w, stats);
      } catch (e) { replace(out, notice("error", why(e))); }
    });
    replace(body, el("h3", {}, "Edit ", el("code", {}, w.id)), form);
  };

  show();
  card.append(body);
  loadStats(w, stats);
  return card;
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls a delivery until its first attempt series is over (at most ~15 s). */
async function settled(deliveryId) {
  let d;
  for (let i = 0; i < 30; i++) {
    d = await call("GET", `/webhooks/deliveries/${seg(deliveryId)}`);
    if (d.status !== "pending") break;
    await pause(500);
  }
  return d;
}

async function loadStats(w, box) {
  try {
    const s = await call("GET", `/webhooks/${seg(w.id)}/stats`);
    const rate = s.success_rate;
    const ms = (v) => (v === null || v === undefined ? "—" : `${v} ms`);
    replace(box,
      el("div", { class: "gauge-row" }, gauge(rate),
        el("strong", { class: "rate" }, rate === null ? "no finished deliveries" : `${(rate * 100).toFixed(1)}% delivered`)),
      el("p", { class: "numbers" },
        `${s.succeeded} succeeded · ${s.failed} failed · ${s.pending} pending · latency p50 ${ms(s.latency_ms.p50)}, p95 ${ms(s.latency_ms.p95)}`,
        s.paused_until ? ` · paused until ${when(s.paused_until)}` : "",
        s.consecutive_failures ? ` · ${s.consecutive_failures} failed in a row` : ""));
  } catch (e) {
    replace(box, notice("error", why(e)));
  }
}

// ----- delivery log ----------------------------------------------------------

async function deliveriesPage(query) {
  const kind = query.get("kind") ?? "";
  const status = query.get("status") ?? "";
  const webhook = query.get("webhook") ?? "";
  const cursor = query.get("cursor") ?? "";
  const select = (id, value, options) => {
    const s = el("select", { id }, options.map(([v, label]) => el("option", { value: v }, label)));
    s.value = value;
    return s;
  };
  const kindSel = select("filter-kind", kind, [["", "every kind"], ["webhook", "webhook"], ["callback", "callback"], ["report", "report"]]);
  const statusSel = select("filter-status", status, [["", "every status"], ["pending", "pending"], ["succeeded", "succeeded"], ["failed", "failed"]]);
  const filters = el("form", { id: "filters", class: "card row" },
    el("label", {}, "Kind", kindSel), el("label", {}, "Status", statusSel),
    el("button", { type: "submit" }, "Filter"));
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (kindSel.value) q.set("kind", kindSel.value);
    if (statusSel.value) q.set("status", statusSel.value);
    if (webhook) q.set("webhook", webhook);
    if (query.get("limit")) q.set("limit", query.get("limit"));
    location.hash = `#/deliveries?${q}`;
  });
  if (webhook) kindSel.disabled = true;

  const chart = el("section", { id: "delivery-chart", class: "card" });
  const table = el("section", { id: "delivery-table", class: "card" });
  const recover = el("div", { id: "recover" });
  replace(main, el("h1", {}, "Delivery log", webhook ? el("small", {}, " · webhook ", el("code", {}, webhook)) : ""),
    filters, chart, table, recover);

  const q = new URLSearchParams();
  if (!webhook && kind) q.set("kind", kind);
  if (status) q.set("status", status);
  if (cursor) q.set("cursor", cursor);
  q.set("limit", /^\d{1,3}$/.test(query.get("limit") ?? "") ? query.get("limit") : "50");
  const path = webhook ? `/webhooks/${seg(webhook)}/deliveries?${q}` : `/deliveries?${q}`;
  try {
    const page = await call("GET", path);
    replace(chart, el("h2", {}, "Deliveries over time (the deliveries on this page)"),
      page.items.length ? stackedBars(bucketByTime(page.items), DELIVERY_SERIES, { title: "deliveries over time" }) : el("p", { class: "empty" }, "Nothing to chart."));
    const next = new URLSearchParams(location.hash.split("?")[1] ?? "");
    const pager = el("p", { class: "pager" },
      cursor ? el("a", { href: `#/deliveries?${withoutCursor(next)}`, id: "first-page" }, "← First page") : "",
      page.next_cursor ? el("a", { href: `#/deliveries?${withCursor(next, page.next_cursor)}`, id: "next-page" }, "Older →") : "");
    replace(table, deliveryTable(page.items), pager);
  } catch (e) {
    replace(table, notice("error", why(e)));
  }
  await recoverForm(recover, webhook);
}

function withCursor(q, cursor) {
  const c = new URLSearchParams(q);
  c.set("cursor", cursor);
  return c;
}

function withoutCursor(q) {
  const c = new URLSearchParams(q);
  c.delete("cursor");
  return c;
}

function deliveryTable(items) {
  if (items.length === 0) return el("p", { class: "empty" }, "No deliveries match.");
  return el("table", { class: "deliveries" },
    el("thead", {}, el("tr", {}, ["Created", "Event", "Kind", "Status", "Attempts", "Last HTTP", "Delivery"].map((h) => el("th", {}, h)))),
    el("tbody", {}, items.map((d) => el("tr", { "data-id": d.delivery_id, "data-status": d.status },
      el("td", {}, when(d.created_at)), el("td", {}, d.event), el("td", {}, d.kind),
      el("td", {}, badge(d.status)), el("td", { class: "num" }, String(d.attempts)),
      el("td", { class: "num" }, d.last_status_code === null ? (d.last_error ?? "—") : String(d.last_status_code)),
      el("td", {}, el("a", { href: `#/delivery/${seg(d.delivery_id)}` }, d.delivery_id))))));
}

/** `datetime-local` value → RFC 3339 UTC. */
function isoFromLocal(v) {
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? v : d.toISOString();
}

function localInput(date) {
  const p = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${p(date.getMonth() + 1)}-${p(date.getDate())}T${p(date.getHours())}:${p(date.getMinutes())}`;
}

async function recoverForm(box, webhook) {
  let hooks = [];
  try {
    hooks = (await call("GET", "/webhooks")).items;
  } catch (e) {
    replace(box, notice("error", why(e)));
    return;
  }
  const which = el("select", { id: "recover-webhook" }, hooks.map((w) => el("option", { value: w.id }, `${w.service_type} · ${w.url}`)));
  if (webhook) which.value = webhook;
  const now = new Date();
  const since = el("input", { id: "recover-since", type: "datetime-local", value: localInput(new Date(now.getTime() - 3600_000)), required: true });
  const until = el("input", { id: "recover-until", type: "datetime-local", value: localInput(new Date(now.getTime() + 60_000)) });
  const status = el("div", { id: "recover-status" });
  const form = el("form", { class: "card" },
    el("h2", {}, "Recover a window"),
    el("p", {}, "Every failed delivery of the webhook created in the window gets a new attempt series."),
    el("div", { class: "row" },
      el("label", {}, "Webhook", which), el("label", {}, "Since", since), el("label", {}, "Until (optional)", until)),
    el("button", { type: "submit", id: "recover-button", disabled: hooks.length === 0 }, "Recover failed deliveries"), status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { since: isoFromLocal(since.value) };
    if (until.value) body.until = isoFromLocal(until.value);
    try {
      const r = await call("POST", `/webhooks/${seg(which.value)}/recover`, body);
      replace(status, notice("ok", `${r.count} failed ${r.count === 1 ? "delivery" : "deliveries"} queued again.`));
    } catch (e) {
      replace(status, notice("error", why(e)));
    }
  });
  replace(box, form);
}

async function deliveryPage(id) {
  replace(main, el("h1", {}, "Delivery ", el("code", {}, id)), el("p", {}, "…"));
  let d;
  try {
    d = await call("GET", `/webhooks/deliveries/${seg(id)}`);
  } catch (e) {
    replace(main, el("h1", {}, "Delivery"), notice("error", why(e)));
    return;
  }
  const out = el("div", { id: "retry-status" });
  let pretty;
  try {
    pretty = JSON.stringify(JSON.parse(d.payload), null, 2);
  } catch {
    pretty = "(not JSON)";
  }
  replace(main,
    el("p", {}, el("a", { href: "#/deliveries" }, "← Delivery log")),
    el("h1", {}, "Delivery ", el("code", { id: "delivery-id" }, d.delivery_id), " ", badge(d.status)),
    el("section", { class: "card" },
      facts([["Event", d.event], ["Event id", d.event_id], ["Kind", d.kind], ["URL", el("span", { id: "delivery-url" }, d.url)],
        ["Status", d.status], ["Attempts", String(d.attempts)], ["Last HTTP status", d.last_status_code === null ? "—" : String(d.last_status_code)],
        ["Last error", d.last_error], ["Created", when(d.created_at)], ["Updated", when(d.updated_at)], ["Next attempt", when(d.next_attempt_at)]]),
      el("div", { class: "actions" },
        button("Retry now", async () => {
          try {
            await call("POST", `/webhooks/deliveries/${seg(d.delivery_id)}/retry`, {});
            replace(out, notice("ok", "A new attempt series has started."));
            setTimeout(() => { if (route().arg === d.delivery_id) deliveryPage(d.delivery_id); }, 800);
          } catch (e) { replace(out, notice("error", why(e))); }
        }, { id: "retry-button" }),
        button("Refresh", () => deliveryPage(d.delivery_id), { class: "quiet", id: "refresh-button" })),
      out),
    el("section", { class: "card" }, el("h2", {}, "Attempts"),
      el("table", { id: "attempt-log" },
        el("thead", {}, el("tr", {}, ["#", "At", "HTTP", "Error", "Duration"].map((h) => el("th", {}, h)))),
        el("tbody", {}, d.attempt_log.map((a) => el("tr", { "data-attempt": String(a.attempt) },
          el("td", { class: "num" }, String(a.attempt)), el("td", {}, when(a.at)),
          el("td", { class: "num" }, a.status_code === null ? "—" : String(a.status_code)),
          el("td", {}, a.error ?? ""), el("td", { class: "num" }, `${a.duration_ms} ms`)))))),
    el("section", { class: "card" }, el("h2", {}, "Request headers"),
      el("p", { class: "hint" }, "What otpd sends with this delivery; values marked “computed per attempt” are made fresh for each attempt."),
      el("table", { id: "delivery-headers" },
        el("tbody", {}, Object.entries(d.headers ?? {}).map(([k, v]) =>
          el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, el("code", {}, v))))))),
    el("section", { class: "card" }, el("h2", {}, "Payload"),
      el("div", { class: "two" },
        el("div", {}, el("h3", {}, "Pretty-printed"), el("pre", { id: "payload-pretty" }, pretty)),
        el("div", {}, el("h3", {}, "Exact body (as signed)"), el("pre", { id: "payload-exact", class: "wrap" }, d.payload)))));
}

// ----- messages --------------------------------------------------------------

async function messagesPage(id) {
  const input = el("input", { id: "message-id", type: "text", value: id, placeholder: "message id (UUID)", required: true });
  const result = el("div", { id: "message-result" });
  const form = el("form", { class: "card row", id: "message-lookup" },
    el("label", {}, "Message id", input), el("button", { type: "submit" }, "Look up"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.hash = `#/messages/${seg(input.value.trim())}`;
  });
  replace(main, el("h1", {}, "Messages"), form, result);
  if (!id) return;
  try {
    const m = await call("GET", `/messages/${seg(id)}`);
    const history = el("div", { id: "message-history" }, "…");
    replace(result, el("section", { class: "card" },
      el("h2", {}, "Message ", el("code", {}, m.message_id), " ", badge(m.status)),
      facts([["Channel", m.channel], ["To", m.to], ["Status", el("span", { id: "message-status" }, m.status)],
        ["Error code", m.error_code], ["Error message", m.error_message], ["Sender id", m.sender_id],
        ["Created", when(m.created_at)], ["Updated", when(m.updated_at)]])),
    el("section", { class: "card" }, el("h2", {}, "Status history"), history));
    try {
      const h = await call("GET", `/messages/${seg(id)}/history`);
      replace(history, el("ol", { class: "timeline" }, h.history.map((s) => el("li", { "data-status": s.status },
        badge(s.status), " ", el("time", {}, when(s.at)),
        s.error_code || s.error_message ? el("span", { class: "error-text" }, ` ${s.error_code ?? ""} ${s.error_message ?? ""}`) : ""))));
    } catch (e) {
      replace(history, e instanceof ApiError && e.status === 404 && e.code === "not_found"
        ? el("p", { class: "empty" }, `This daemon has no status history route; the current status is ${m.status}.`)
        : notice("error", why(e)));
    }
  } catch (e) {
    replace(result, notice("error", why(e)));
  }
}

// ----- OTP overview ----------------------------------------------------------

async function otpPage(query) {
  const span = query.get("window") === "day" ? "day" : "hour";
  const toggle = el("p", { class: "toggle" },
    ["hour", "day"].map((w) => el("a", { href: `#/otp?window=${w}`, class: w === span ? "on" : "", id: `window-${w}` }, `Last ${w}`)));
  const body = el("div", { id: "otp-stats" }, "…");
  replace(main, el("h1", {}, "OTP overview"), toggle, body);
  try {
    const s = await call("GET", `/stats/otp?window=${span}`);
    const total = (o) => Object.values(o).reduce((a, b) => a + b, 0);
    const order = (counts, keys) => [...keys.filter((k) => k in counts), ...Object.keys(counts).filter((k) => !keys.includes(k))];
    const tiles = (title, counts, keys, cls) => el("section", { class: "card" }, el("h2", {}, title),
      el("ul", { class: `tiles ${cls}` }, order(counts, keys).map((k) =>
        el("li", { "data-key": k }, el("strong", {}, String(counts[k])), el("span", {}, k)))));
    const label = (iso) => when(iso).slice(11, 16);
    const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
    replace(body,
      el("p", { class: "meta" }, `${when(s.from)} – ${when(s.until)} · ${plural(total(s.sends), "code", "codes")} sent · ${plural(total(s.outcomes), "flake", "flakes")}`),
      el("div", { class: "two" },
        tiles("Outcomes (latest flake per phone)", s.outcomes, OUTCOME_SERIES.map((x) => x.key), "outcomes"),
        tiles("Sends by message status", s.sends, ["queued", "sent", "delivered", "read", "failed"], "sends")),
      el("div", { class: "two" },
        el("section", { class: "card" }, el("h2", {}, "Outcomes over time"),
          stackedBars(s.buckets.map((b) => ({ label: label(b.start), counts: b.outcomes })), OUTCOME_SERIES, { title: "OTP outcomes over time" })),
        el("section", { class: "card" }, el("h2", {}, "Codes sent over time"),
          stackedBars(s.buckets.map((b) => ({ label: label(b.start), counts: { sent: b.sent } })),
            [{ key: "sent", label: "codes sent", cls: "s-info" }], { title: "OTP sends over time" }))));
  } catch (e) {
    replace(body, notice("error", why(e)));
  }
}

// ----- the router ------------------------------------------------------------

async function render() {
  if (!apiKey()) {
    signIn();
    return;
  }
  nav.hidden = false;
  signOutButton.hidden = false;
  const { page, arg, query } = route();
  const current = page === "delivery" ? "deliveries" : page;
  for (const a of nav.querySelectorAll("a")) a.classList.toggle("on", a.dataset.page === current);
  main.dataset.page = page;
  main.dataset.ready = "no";
  try {
    switch (page) {
      case "deliveries": await deliveriesPage(query); break;
      case "delivery": await deliveryPage(arg); break;
      case "messages": await messagesPage(arg); break;
      case "otp": await otpPage(query); break;
      default: await webhooksPage();
    }
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      forget();
      signIn();
      return;
    }
    replace(main, notice("error", why(e)));
  } finally {
    main.dataset.ready = "yes";
  }
}

window.addEventListener("hashchange", render);
render();
