// synchub admin console: a page per hash route on top of the REST API (/api/v1).
// No framework and nothing loaded from elsewhere; every value is put in with textContent,
// never as HTML, so record contents cannot inject markup.
"use strict";

const TEXT = {
  en: {
    "nav.review": "Review", "nav.customers": "Customers", "nav.runs": "Runs", "nav.users": "Users",
    logout: "Log out", login: "Log in", name: "User name", password: "Password",
    "review.title": "Review queue", kind: "Kind", field: "Field", source: "Source", "min.score": "Min. score", "max.score": "Max. score",
    "older.than": "Older than (days)", customer: "Customer", filter: "Filter", candidates: "Candidates",
    since: "Since", open: "Open", "any": "any", "possible_duplicate": "possible duplicate", "field.conflict": "field",
    needs_reoptin: "needs re-opt-in",
    merge: "Merge", keep_apart: "Keep apart", dismiss: "Dismiss", pick: "Take this value", "set.value": "Set value",
    "selected.dismiss": "Dismiss selected", "selected.keep_apart": "Keep selected apart",
    "keys": "Keys: j/k move, x select, Enter open, d dismiss selected, m merge, a keep apart",
    "done": "Done", "none": "Nothing here.", "denied": "Your role may not see this page.",
    "search": "Search", "search.hint": "Name, e-mail, phone or source id", "split": "Undo the latest merge",
    "sources": "Source records", "timeline": "Timeline", "history": "History", "value": "Value",
    "why": "Why", "evidence": "Match evidence", "score": "Score", "status": "Status", "started": "Started",
    "connection": "Connection", "rejected": "Rejected rows", "where": "Where", "reason": "Reason",
    "role": "Role", "language": "Language", "disabled": "disabled", "active": "active", "back": "Back",
    "login.failed": "Login failed", "error": "Error", "nav.marketing": "Lists",
    "quality": "Data-quality report", "export.json": "Export their data (JSON)", "export.html": "Export their data (page)",
    "erase": "Erase this person…", "erase.confirm": "Erase this person here and in every connected tool? This cannot be undone.",
    "erased": "Erased; receipts",
    "segments": "Segments", "members": "Members", "reoptin": "Needs re-opt-in", "csv": "Download CSV",
    "quarantined": "Values not used", "run.again": "Run again", "counts": "Counts", "email": "E-mail",
    "destination": "Destination", "note": "Note", "compare": "Side by side",
    "split.out": "Split out", "consent": "Consent", "channel": "Channel", "method": "Method", "at": "When",
    "add.user": "Add user", "disable": "Disable", "enable": "Enable",
  },
  de: {
    "nav.review": "Prüfen", "nav.customers": "Kunden", "nav.runs": "Läufe", "nav.users": "Benutzer",
    logout: "Abmelden", login: "Anmelden", name: "Benutzername", password: "Passwort",
    "review.title": "Prüfliste", kind: "Art", field: "Feld", source: "Quelle", "min.score": "Mindestwert", "max.score": "Höchstwert",
    "older.than": "Älter als (Tage)", customer: "Kunde", filter: "Filtern", candidates: "Kandidaten",
    since: "Seit", open: "Öffnen", "any": "alle", "possible_duplicate": "mögliche Dublette", "field.conflict": "Feld",
    needs_reoptin: "Neu-Einwilligung nötig",
    merge: "Zusammenführen", keep_apart: "Getrennt halten", dismiss: "Verwerfen", pick: "Diesen Wert nehmen",
    "set.value": "Wert setzen", "selected.dismiss": "Auswahl verwerfen", "selected.keep_apart": "Auswahl getrennt halten",
    "keys": "Tasten: j/k bewegen, x auswählen, Enter öffnen, d Auswahl verwerfen, m zusammenführen, a getrennt halten",
    "done": "Erledigt", "none": "Nichts zu tun.", "denied": "Ihre Rolle darf diese Seite nicht sehen.",
    "search": "Suchen", "search.hint": "Name, E-Mail, Telefon oder Quell-ID", "split": "Letzte Zusammenführung rückgängig",
    "sources": "Quelldatensätze", "timeline": "Verlauf", "history": "Historie", "value": "Wert",
    "why": "Warum", "evidence": "Abgleich-Begründung", "score": "Wert", "status": "Status", "started": "Gestartet",
    "connection": "Verbindung", "rejected": "Abgewiesene Zeilen", "where": "Wo", "reason": "Grund",
    "role": "Rolle", "language": "Sprache", "disabled": "gesperrt", "active": "aktiv", "back": "Zurück",
    "login.failed": "Anmeldung fehlgeschlagen", "error": "Fehler", "nav.marketing": "Listen",
    "quality": "Datenqualitätsbericht", "export.json": "Daten der Person exportieren (JSON)", "export.html": "Daten der Person exportieren (Seite)",
    "erase": "Diese Person löschen…", "erase.confirm": "Diese Person hier und in allen verbundenen Tools löschen? Das lässt sich nicht rückgängig machen.",
    "erased": "Gelöscht; Quittungen",
    "segments": "Segmente", "members": "Mitglieder", "reoptin": "Neu-Einwilligung nötig", "csv": "CSV herunterladen",
    "quarantined": "Nicht verwendete Werte", "run.again": "Erneut ausführen", "counts": "Zahlen", "email": "E-Mail",
    "destination": "Ziel", "note": "Hinweis", "compare": "Gegenüberstellung",
    "split.out": "Herauslösen", "consent": "Einwilligung", "channel": "Kanal", "method": "Verfahren", "at": "Wann",
    "add.user": "Benutzer anlegen", "disable": "Sperren", "enable": "Entsperren",
  },
};

let lang = (navigator.language || "en").toLowerCase().startsWith("de") ? "de" : "en";
let me = null;

function t(key) { return (TEXT[lang] && TEXT[lang][key]) || TEXT.en[key] || key; }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "on") { for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn); }
    else if (k === "text") node.textContent = v;
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function show(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}

// A message that survives the next page change (an action's result shown on the page it leads to).
let carry = null;

function after(message, kind) { carry = [message, kind]; }

function flash(message, kind) {
  const box = document.getElementById("flash");
  box.textContent = message || "";
  box.className = kind || "";
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && me && me.csrf_token) headers["X-CSRF-Token"] = me.csrf_token;
  const response = await fetch("/api/v1" + path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && path !== "/session") { me = null; location.hash = "#/login"; throw new Error(t("login")); }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const detail = data && data.detail;
    const error = new Error(typeof detail === "string" ? detail : t("error") + " " + response.status);
    error.status = response.status;
    throw error;
  }
  return data;
}

// Each page change gets a number; a page whose data arrives after the next change started is
// not drawn (a slow review list must not replace the page the user went to since).
let active = 0;

function page(mine, title, ...content) {
  if (mine !== active) return;
  const main = document.getElementById("main");
  main.replaceChildren(el("h1", { text: title }), ...content);
}

function translateStatic() {
  document.documentElement.lang = lang;
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
}

// ----- login -----------------------------------------------------------------------------------

function loginPage() {
  const name = el("input", { name: "name", autocomplete: "username", required: true, id: "login-name" });
  const password = el("input", { name: "password", type: "password", autocomplete: "current-password", required: true, id: "login-password" });
  const form = el("form", { on: { submit: async (ev) => {
    ev.preventDefault();
    try {
      me = await api("POST", "/session", { name: name.value, password: password.value });
      lang = me.language || lang;
      flash("");
      location.hash = "#/review";
    } catch (err) { flash(t("login.failed") + ": " + err.message, "error"); }
  } } },
  el("label", {}, t("name"), name), el("label", {}, t("password"), password),
  el("button", { type: "submit", class: "primary", text: t("login") }));
  document.getElementById("main").replaceChildren(el("div", { class: "login card" }, el("h1", { text: "synchub" }), form));
  name.focus();
}

// ----- review queue ----------------------------------------------------------------------------

function describe(c) {
  if (c.kind === "possible_duplicate") {
    const first = c.candidates[0] || {};
    return `${c.customer || c.golden_id} ~ ${c.other_customer || c.other_golden_id}` + (first.score !== undefined ? ` (${t("score")} ${first.score})` : "");
  }
  return c.candidates.map((x) => `${"value" in x ? show(x.value) : "…"} (${x.connection || ""})`).join("; ");
}

async function reviewPage(params) {
  const mine = active;
  const filters = {
    kind: el("select", { name: "kind" }, ["", "possible_duplicate", "field", "needs_reoptin"].map((k) =>
      el("option", { value: k, selected: params.get("kind") === k, text: k ? t(k === "field" ? "field.conflict" : k) : t("any") }))),
    field: el("input", { name: "field", value: params.get("field") || "", size: 14 }),
    connection: el("input", { name: "connection", value: params.get("connection") || "", size: 10 }),
    min_score: el("input", { name: "min_score", type: "number", value: params.get("min_score") || "", size: 5 }),
    max_score: el("input", { name: "max_score", type: "number", value: params.get("max_score") || "", size: 5 }),
    older_than_days: el("input", { name: "older_than_days", type: "number", min: 0, value: params.get("older_than_days") || "", size: 5 }),
    customer: el("input", { name: "customer", value: params.get("customer") || "", size: 14 }),
  };
  const query = new URLSearchParams();
  for (const [k, input] of Object.entries(filters)) if (input.value) query.set(k, input.value);
  const apply = el("button", { type: "submit", text: t("filter") });
  const form = el("form", { class: "filters", on: { submit: (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, input] of Object.entries(filters)) if (input.value) q.set(k, input.value);
    location.hash = "#/review?" + q.toString();
  } } },
  el("label", {}, t("kind"), filters.kind), el("label", {}, t("field"), filters.field),
  el("label", {}, t("source"), filters.connection), el("label", {}, t("min.score"), filters.min_score), el("label", {}, t("max.score"), filters.max_score),
  el("label", {}, t("older.than"), filters.older_than_days), el("label", {}, t("customer"), filters.customer), apply);

  let rows;
  try { rows = await api("GET", "/conflicts?" + query.toString()); } catch (err) { return page(mine, t("review.title"), el("p", { text: err.message })); }
  const canDecide = me.permissions.includes("review");
  const boxes = [];
  const body = el("tbody", {}, rows.map((c) => {
    const box = el("input", { type: "checkbox", value: c.id, "aria-label": `#${c.id}`, disabled: !canDecide });
    boxes.push(box);
    return el("tr", { "data-id": c.id },
      el("td", {}, box), el("td", {}, el("a", { href: `#/conflict/${c.id}`, text: `#${c.id}` })),
      el("td", { text: c.kind === "possible_duplicate" ? t("possible_duplicate") : (c.field || c.kind) }),
      el("td", { text: c.customer || c.golden_id }), el("td", { text: describe(c) }),
      el("td", { text: (c.created_at || "").slice(0, 10) }));
  }));
  const selected = () => boxes.filter((b) => b.checked).map((b) => Number(b.value));
  const bulk = (action) => async () => {
    const ids = selected();
    if (!ids.length) return;
    try {
      const results = await api("POST", "/decisions", { ids, action });
      const failed = results.filter((r) => !r.ok);
      after(failed.length ? failed.map((r) => `#${r.id}: ${r.error}`).join("; ") : `${t("done")}: ${ids.length}`, failed.length ? "error" : "ok");
      route();
    } catch (err) { flash(err.message, "error"); }
  };
  const actions = canDecide ? el("div", { class: "actions" },
    el("button", { type: "button", id: "bulk-dismiss", text: t("selected.dismiss"), on: { click: bulk("dismiss") } }),
    el("button", { type: "button", id: "bulk-keep-apart", text: t("selected.keep_apart"), on: { click: bulk("keep_apart") } })) : null;
  const table = el("table", { id: "queue" },
    el("thead", {}, el("tr", {}, el("th", {}), el("th", { text: "#" }), el("th", { text: t("kind") }), el("th", { text: t("customer") }),
      el("th", { text: t("candidates") }), el("th", { text: t("since") }))), body);
  page(mine, t("review.title"), form, actions, rows.length ? table : el("p", { text: t("none") }), el("p", { class: "hint", text: t("keys") }));

  if (mine !== active) return;
  let current = 0;
  const mark = () => body.querySelectorAll("tr").forEach((tr, i) => tr.classList.toggle("current", i === current));
  mark();
  keyHandler = (ev) => {
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
    const trs = body.querySelectorAll("tr");
    if (ev.key === "j") { current = Math.min(current + 1, trs.length - 1); mark(); }
    else if (ev.key === "k") { current = Math.max(current - 1, 0); mark(); }
    else if (ev.key === "x" && boxes[current] && canDecide) { boxes[current].checked = !boxes[current].checked; }
    else if (ev.key === "Enter" && trs[current]) { location.hash = `#/conflict/${trs[current].dataset.id}`; }
    else if (ev.key === "d" && canDecide) { bulk("dismiss")(); }
    else if (ev.key === "a" && canDecide) { bulk("keep_apart")(); }
    else if (ev.key === "m" && canDecide) { bulk("merge")(); }
  };
}

async function conflictPage(id) {
  const mine = active;
  let c;
  try { c = await api("GET", `/conflicts/${id}`); } catch (err) { return page(mine, `#${id}`, el("p", { text: err.message })); }
  const canDecide = me.permissions.includes("review") && c.status === "open";
  const decide = (body) => async () => {
    try {
      const [result] = await api("POST", "/decisions", { ids: [c.id], ...body });
      if (!result.ok) return flash(result.error, "error");
      after(`#${c.id}: ${t("done")}`, "ok");
      location.hash = "#/review";
    } catch (err) { flash(err.message, "error"); }
  };
  const parts = [el("p", { class: "muted", text: `${c.status} · ${c.rule || ""} · ${(c.created_at || "").slice(0, 19)}` })];
  if (c.kind === "possible_duplicate") {
    const first = c.candidates[0] || {};
    parts.push(el("div", { class: "side" },
      el("div", { class: "card" }, el("h2", {}, el("a", { href: `#/customer/${c.golden_id}`, text: c.customer || c.golden_id }))),
      el("div", { class: "card" }, el("h2", {}, el("a", { href: `#/customer/${c.other_golden_id}`, text: c.other_customer || c.other_golden_id })))));
    try {
      const [a, b] = await Promise.all([api("GET", `/customers/${c.golden_id}`), api("GET", `/customers/${c.other_golden_id}`)]);
      const byField = (x) => Object.fromEntries(x.fields.map((f) => [f.field, f]));
      const fa = byField(a), fb = byField(b);
      const names = [...new Set([...Object.keys(fa), ...Object.keys(fb)])].sort();
      const cell = (f) => el("td", {}, f ? show(f.value) : "", f && f.connection ? el("div", { class: "muted", text: `${f.connection} · ${(f.observed_at || "").slice(0, 10)}` }) : null);
      parts.push(el("h2", { text: t("compare") }), el("table", { id: "compare" }, el("tbody", {}, names.map((n) => el("tr", {}, el("th", { text: n }), cell(fa[n]), cell(fb[n]))))));
    } catch (err) { parts.push(el("p", { text: err.message })); }
    parts.push(el("h2", { text: t("evidence") }), el("p", { text: `${t("score")}: ${show(first.score)}` }),
      el("ul", {}, (first.reasons || []).map((r) => el("li", { text: r }))));
    if (canDecide) parts.push(el("div", { class: "actions" },
      el("button", { type: "button", class: "primary", id: "merge", text: t("merge"), on: { click: decide({ action: "merge" }) } }),
      el("button", { type: "button", id: "keep-apart", text: t("keep_apart"), on: { click: decide({ action: "keep_apart" }) } }),
      el("button", { type: "button", id: "dismiss", text: t("dismiss"), on: { click: decide({ action: "dismiss" }) } })));
  } else {
    parts.push(el("p", {}, el("a", { href: `#/customer/${c.golden_id}`, text: c.customer || c.golden_id })));
    parts.push(el("table", {}, el("thead", {}, el("tr", {}, ["#", t("value"), t("source"), t("since"), ""].map((h) => el("th", { text: h })))),
      el("tbody", {}, c.candidates.map((x, i) => el("tr", {},
        el("td", { text: String(i + 1) }), el("td", { text: "value" in x ? show(x.value) : "…" }),
        el("td", { text: `${x.connection || ""}/${x.stream || ""}` }), el("td", { text: (x.observed_at || "").slice(0, 19) }),
        el("td", {}, canDecide && "value" in x ? el("button", { type: "button", class: "pick", text: t("pick"), on: { click: decide({ action: "pick", pick: i + 1 }) } }) : null))))));
    if (canDecide) {
      const value = el("input", { id: "set-value", size: 30 });
      parts.push(el("div", { class: "actions" }, el("label", {}, t("value"), value),
        el("button", { type: "button", text: t("set.value"), on: { click: () => decide({ action: "value", value: value.value })() } }),
        el("button", { type: "button", id: "dismiss", text: t("dismiss"), on: { click: decide({ action: "dismiss" }) } })));
    }
  }
  page(mine, `#${c.id} ${c.kind === "possible_duplicate" ? t("possible_duplicate") : c.field || c.kind}`, ...parts);
}

// ----- customers -------------------------------------------------------------------------------

async function customersPage(params) {
  const mine = active;
  const q = el("input", { name: "q", id: "search", value: params.get("q") || "", size: 30, placeholder: t("search.hint") });
  const form = el("form", { class: "filters", on: { submit: (ev) => { ev.preventDefault(); location.hash = "#/customers?q=" + encodeURIComponent(q.value); } } },
    el("label", {}, t("search"), q), el("button", { type: "submit", text: t("search") }));
  let hits = [];
  if (q.value) {
    try { hits = await api("GET", "/customers?q=" + encodeURIComponent(q.value)); } catch (err) { flash(err.message, "error"); }
  }
  page(mine, t("nav.customers"), form, el("table", {}, el("tbody", {}, hits.map((h) => el("tr", {},
    el("td", {}, el("a", { href: `#/customer/${h.id}`, text: h.name || h.id })), el("td", { text: h.email || "" }),
    el("td", { text: h.phone || "" }), el("td", { text: h.city || "" }))))));
  q.focus();
}

async function customerPage(id) {
  const mine = active;
  let c;
  try { c = await api("GET", `/customers/${id}`); } catch (err) { return page(mine, id, el("p", { text: err.message })); }
  const fields = el("table", { id: "fields" }, el("thead", {}, el("tr", {}, [t("field"), t("value"), t("source"), t("why")].map((h) => el("th", { text: h })))),
    el("tbody", {}, c.fields.map((f) => el("tr", {}, el("th", { text: f.field }), el("td", { text: show(f.value) }),
      el("td", { class: "muted", text: f.connection ? `${f.connection}/${f.stream || ""} #${f.source_id || ""} · ${(f.observed_at || "").slice(0, 10)}` : "" }),
      el("td", { class: "muted", text: [f.rule || "", ...f.lost.map((x) => `≠ ${show(x.value)} (${x.connection})`)].join("; ") })))));
  const canSplit = me.permissions.includes("review") && c.sources.length > 1;
  const splitOut = (s) => async () => {
    try {
      const r = await api("POST", `/customers/${c.id}/split`, { sources: [`${s.connection}/${s.stream}/${s.source_id}`] });
      after(`${t("done")}: ${r.split_off}`, "ok");
      route();
    } catch (err) { flash(err.message, "error"); }
  };
  const sources = el("table", { id: "sources" }, el("tbody", {}, c.sources.map((s) => el("tr", {},
    el("td", { text: `${s.connection}/${s.stream}` }), el("td", { text: s.source_id || "" }), el("td", { text: (s.observed_at || "").slice(0, 19) }),
    el("td", {}, canSplit && s.source_id ? el("button", { type: "button", class: "split-out", text: t("split.out"), on: { click: splitOut(s) } }) : null)))));
  const consent = Object.entries(c.data.consent || {});
  const consentTable = consent.length ? [el("h2", { text: t("consent") }), el("table", { id: "consent" },
    el("thead", {}, el("tr", {}, [t("channel"), t("status"), t("at"), t("method"), t("source")].map((h) => el("th", { text: h })))),
    el("tbody", {}, consent.map(([channel, v]) => {
      const f = c.fields.find((x) => x.field === `consent.${channel}`) || {};
      return el("tr", {}, el("td", { text: channel }), el("td", { text: (v && v.status) || "" }), el("td", { text: ((v && v.at) || "").slice(0, 19) }),
        el("td", { text: [(v && v.method) || "", (v && v.source) || ""].filter(Boolean).join(", ") }),
        el("td", { class: "muted", text: f.connection ? `${f.connection}/${f.stream || ""} · ${(f.observed_at || "").slice(0, 10)}` : "" }));
    })))] : [];
  const timeline = el("ul", {}, c.timeline.map((e) => el("li", { text: `${(e.occurred_at || "").slice(0, 10)} ${e.kind} ${e.connection}` })));
  const history = el("ul", {}, c.history.map((a) => el("li", { text: `${(a.at || "").slice(0, 19)} ${a.action} ${a.actor}` })));
  const actions = me.permissions.includes("review") && c.history.some((a) => a.action === "merge") ? el("div", { class: "actions" },
    el("button", { type: "button", id: "split", text: t("split"), on: { click: async () => {
      try {
        const r = await api("POST", `/customers/${c.id}/split`, {});
        after(`${t("done")}: ${r.split_off}`, "ok");
        route();
      } catch (err) { flash(err.message, "error"); }
    } } })) : null;
  const privacy = me.permissions.includes("privacy") ? el("div", { class: "actions", id: "privacy" },
    el("a", { href: `/api/v1/customers/${encodeURIComponent(c.id)}/export`, id: "export-json", text: t("export.json") }), " · ",
    el("a", { href: `/api/v1/customers/${encodeURIComponent(c.id)}/export?format=html`, id: "export-html", text: t("export.html") }), " ",
    el("button", { type: "button", id: "erase", class: "danger", text: t("erase"), on: { click: async () => {
      if (!window.confirm(t("erase.confirm"))) return;
      try {
        const r = await api("POST", `/customers/${c.id}/erase`, { confirm: true });
        after(`${t("erased")}: ${r.receipts.map((x) => `${x.connection}/${x.stream} ${x.status}`).join(", ")}`, "ok");
        location.hash = "#/customers";
      } catch (err) { flash(err.message, "error"); }
    } } })) : null;
  const quarantined = c.quarantined.length ? [el("h2", { text: t("quarantined") }), el("table", { id: "quarantined" }, el("tbody", {},
    c.quarantined.map((q) => el("tr", {}, el("td", { text: `${q.connection}/${q.stream} #${q.source_id}` }), el("td", { text: q.field || "" }),
      el("td", { text: show(q.raw) }), el("td", { text: q.reason || "" })))))] : [];
  page(mine, `${c.name || c.id}`, el("p", { class: "muted", text: `${c.kind} · ${c.id} · ${c.status} · v${c.version}` }), actions, privacy, ...consentTable, fields, ...quarantined,
    el("h2", { text: t("sources") }), sources, el("h2", { text: t("timeline") }), timeline, el("h2", { text: t("history") }), history);
}

// ----- runs and users ----------------------------------------------------------------------------

async function runsPage() {
  const mine = active;
  const runs = await api("GET", "/runs");
  const canRun = me.permissions.includes("run");
  const again = (name) => async () => {
    try { await api("POST", `/connections/${encodeURIComponent(name)}/runs`); after(`${name}: ${t("done")}`, "ok"); setTimeout(route, 800); }
    catch (err) { flash(err.message, "error"); }
  };
  page(mine, t("nav.runs"), el("table", { id: "runs" }, el("thead", {}, el("tr", {}, ["#", t("connection"), t("status"), t("started"), t("counts"), ""].map((h) => el("th", { text: h })))),
    el("tbody", {}, runs.map((r) => el("tr", {}, el("td", {}, el("a", { href: `#/run/${r.id}`, text: `#${r.id}` })),
      el("td", { text: r.connection }), el("td", { text: r.status }), el("td", { text: (r.started_at || "").slice(0, 19) }),
      el("td", { class: "muted", text: Object.entries((r.counts || {}).streams || {}).map(([s, c]) => `${s}: ${Object.entries(c).map(([k, v]) => `${k} ${v}`).join(", ")}`).join(" · ") }),
      el("td", {}, canRun ? el("button", { type: "button", class: "run-again", text: t("run.again"), on: { click: again(r.connection) } }) : null))))));
}

async function marketingPage() {
  const mine = active;
  let segments, people;
  try { [segments, people] = await Promise.all([api("GET", "/segments"), api("GET", "/reoptin")]); } catch (err) {
    return page(mine, t("nav.marketing"), el("p", { id: "denied", text: err.status === 403 ? t("denied") : err.message }));
  }
  page(mine, t("nav.marketing"), el("h2", { text: t("segments") }),
    el("table", { id: "segments" }, el("thead", {}, el("tr", {}, [t("connection"), t("members")].map((h) => el("th", { text: h })))),
      el("tbody", {}, segments.map((g) => el("tr", {}, el("td", { text: `${g.connection}/${g.stream}` }), el("td", { text: String(g.members) }))))),
    el("p", {}, el("a", { href: "/api/v1/segments.csv", id: "segments-csv", text: t("csv") }), " · ",
      el("a", { href: "/api/v1/quality.html", id: "quality", target: "_blank", rel: "noopener", text: t("quality") })),
    el("h2", { text: `${t("reoptin")} (${people.length})` }), el("p", {}, el("a", { href: "/api/v1/reoptin.csv", id: "reoptin-csv", text: t("csv") })),
    el("table", { id: "reoptin" }, el("tbody", {}, people.map((p) => el("tr", {}, el("td", { text: p.email || "" }),
      el("td", {}, el("a", { href: `#/customer/${p.customer_id}`, text: p.name || p.customer_id })), el("td", { text: p.destination }),
      el("td", { text: (p.since || "").slice(0, 10) }))))));
}

async function runPage(id) {
  const mine = active;
  const r = await api("GET", `/runs/${id}`);
  page(mine, `#${r.id} ${r.connection}`, el("p", { class: "muted", text: `${r.status} · ${(r.started_at || "").slice(0, 19)} ${r.error || ""}` }),
    el("h2", { text: `${t("rejected")} (${r.rejected.length})` }),
    el("table", { id: "rejected" }, el("thead", {}, el("tr", {}, [t("where"), t("field"), t("reason")].map((h) => el("th", { text: h })))),
      el("tbody", {}, r.rejected.map((x) => el("tr", {}, el("td", { text: x.ref }), el("td", { text: x.field || "" }), el("td", { text: x.reason }))))));
}

async function usersPage() {
  const mine = active;
  let users;
  try { users = await api("GET", "/users"); } catch (err) {
    return page(mine, t("nav.users"), el("p", { id: "denied", text: err.status === 403 ? t("denied") : err.message }));
  }
  const change = (u, body) => async () => {
    try { await api("PATCH", `/users/${encodeURIComponent(u.name)}`, body); after(`${u.name}: ${t("done")}`, "ok"); route(); }
    catch (err) { flash(err.message, "error"); }
  };
  const name = el("input", { id: "new-name", size: 14 }), password = el("input", { id: "new-password", type: "password", autocomplete: "new-password", size: 18 });
  const role = el("select", { id: "new-role" }, ["viewer", "marketing", "steward", "admin"].map((r) => el("option", { value: r, text: r })));
  const language = el("select", { id: "new-language" }, ["de", "en"].map((l) => el("option", { value: l, text: l, selected: l === lang })));
  const form = el("form", { class: "filters", on: { submit: async (ev) => {
    ev.preventDefault();
    try {
      await api("POST", "/users", { name: name.value, role: role.value, password: password.value, language: language.value });
      after(`${name.value}: ${t("done")}`, "ok");
      route();
    } catch (err) { flash(err.message, "error"); }
  } } }, el("label", {}, t("name"), name), el("label", {}, t("password"), password), el("label", {}, t("role"), role),
  el("label", {}, t("language"), language), el("button", { type: "submit", id: "add-user", text: t("add.user") }));
  page(mine, t("nav.users"), el("table", { id: "users" }, el("tbody", {}, users.map((u) => el("tr", { "data-name": u.name },
    el("td", { text: u.name }), el("td", { text: u.role }), el("td", { text: u.language || "" }),
    el("td", { text: u.disabled ? t("disabled") : t("active") }),
    el("td", {}, el("button", { type: "button", class: "toggle-user", text: u.disabled ? t("enable") : t("disable"),
      on: { click: change(u, { disabled: !u.disabled }) } })))))), form);
}

// ----- routing -----------------------------------------------------------------------------------

let keyHandler = null;
document.addEventListener("keydown", (ev) => { if (keyHandler) keyHandler(ev); });

async function route() {
  active += 1;
  keyHandler = null;
  const message = carry || [""];
  carry = null;
  flash(...message);
  const [path, query] = (location.hash.slice(1) || "/review").split("?");
  const params = new URLSearchParams(query || "");
  if (!me && path !== "/login") {
    try { me = await api("GET", "/me"); lang = me.language || lang; } catch (err) { return; }
  }
  translateStatic();
  document.getElementById("nav").hidden = !me;
  document.getElementById("logout").hidden = !me;
  document.getElementById("who").textContent = me ? `${me.name} (${me.role})` : "";
  const parts = path.split("/").filter(Boolean);
  try {
    if (parts[0] === "login" || !me) return loginPage();
    if (parts[0] === "conflict") return await conflictPage(parts[1]);
    if (parts[0] === "customers") return await customersPage(params);
    if (parts[0] === "customer") return await customerPage(parts[1]);
    if (parts[0] === "runs") return await runsPage();
    if (parts[0] === "run") return await runPage(parts[1]);
    if (parts[0] === "users") return await usersPage();
    if (parts[0] === "lists") return await marketingPage();
    return await reviewPage(params);
  } catch (err) { flash(err.message, "error"); }
}

document.getElementById("logout").addEventListener("click", async () => {
  try { await api("DELETE", "/session"); } catch (err) { /* already logged out */ }
  me = null;
  location.hash = "#/login";
});
window.addEventListener("hashchange", () => route());
translateStatic();
route();
