// qscope: owner secrets of the notes and lists this browser made (the server keeps only their hash).
// - A form that made one lands on a page whose fragment holds the secret (#keep=list.ID.SECRET, never sent to a
//   server): it is kept in localStorage ("qscope.owned") and dropped from the address bar and history.
// - [data-owner-kind][data-owner-id] marks what a page shows: inside it, [data-owner-only] shows when this browser
//   holds the secret, [data-owner-not] when it does not, and input[name=owner_secret] gets the secret.
// - form[data-owner-edit] sends a PATCH, button[data-owner-delete] a DELETE, to data-api with X-Owner-Secret.
// - select[data-owned-lists] (a feature page's "add to a list") offers the lists this browser made.
(function () {
  "use strict";
  var KEY = "qscope.owned";

  function owned() {
    try { return JSON.parse(window.localStorage.getItem(KEY) || "{}") || {}; } catch (e) { return {}; }
  }
  function save(all) {
    try { window.localStorage.setItem(KEY, JSON.stringify(all)); } catch (e) { /* storage off: nothing kept */ }
  }
  function keep(kind, id, fields) {
    var all = owned();
    all[kind + ":" + id] = Object.assign(all[kind + ":" + id] || {}, fields);
    save(all);
  }
  function secretOf(kind, id) {
    var one = owned()[kind + ":" + id];
    return one ? one.secret : "";
  }
  function forget(kind, id) {
    var all = owned();
    delete all[kind + ":" + id];
    save(all);
  }

  // #words&keep=note.ID.SECRET -> kept; the address bar keeps #words
  function takeFragment() {
    var hash = window.location.hash.replace(/^#/, "");
    if (hash.indexOf("keep=") < 0) return;
    var rest = [];
    hash.split("&").forEach(function (part) {
      var m = /^keep=(note|list)\.([\w-]+)\.([\w-]+)$/.exec(part);
      if (m) keep(m[1], m[2], { secret: m[3] }); else if (part) rest.push(part);
    });
    var url = window.location.pathname + window.location.search + (rest.length ? "#" + rest.join("&") : "");
    window.history.replaceState(null, "", url);
    var anchor = rest.length && document.getElementById(rest[0]);
    if (anchor) anchor.scrollIntoView();
  }

  function showOwned() {
    document.querySelectorAll("[data-owner-kind][data-owner-id]").forEach(function (box) {
      var kind = box.getAttribute("data-owner-kind"), id = box.getAttribute("data-owner-id");
      var secret = secretOf(kind, id);
      if (secret && box.hasAttribute("data-owner-name")) keep(kind, id, { name: box.getAttribute("data-owner-name") });
      box.querySelectorAll("[data-owner-only]").forEach(function (el) { el.hidden = !secret; });
      box.querySelectorAll("[data-owner-not]").forEach(function (el) { el.hidden = !!secret; });
      box.querySelectorAll("input[name=owner_secret]").forEach(function (el) { el.value = secret; });
    });
  }

  function fillListChoices() {
    document.querySelectorAll("select[data-owned-lists]").forEach(function (select) {
      var all = owned(), any = false;
      Object.keys(all).sort().forEach(function (key) {
        if (key.indexOf("list:") !== 0) return;
        var id = key.slice(5);
        select.appendChild(window.qscopeEl("option", { value: id }, all[key].name || id));
        any = true;
      });
      var form = select.closest("form");
      if (form) form.hidden = !any;
      var none = document.querySelector("[data-owned-lists-none]");
      if (none) none.hidden = any;
    });
  }

  function say(box, text) {
    var out = box.querySelector(".owner-msg");
    if (out) out.textContent = text;
  }

  async function send(el, method, body) {
    var kind = el.getAttribute("data-kind"), id = el.getAttribute("data-id");
    var headers = { "X-Owner-Secret": secretOf(kind, id) };
    if (body) headers["Content-Type"] = "application/json";
    var r = await fetch(el.getAttribute("data-api"), { method: method, headers: headers, body: body });
    if (r.ok) return true;
    var data = await r.json().catch(function () { return {}; });
    say(el.closest("[data-owner-kind]") || document, data.error || "The server answered " + r.status + ".");
    return false;
  }

  document.addEventListener("submit", async function (e) {
    var form = e.target;
    if (form.matches("form[data-owner-edit]")) {
      e.preventDefault();
      var fields = {};
      new FormData(form).forEach(function (v, k) { fields[k] = v; });
      if (await send(form, "PATCH", JSON.stringify(fields))) window.location.reload();
      return;
    }
    var choice = form.querySelector("select[data-owned-lists]");
    var field = form.querySelector("input[name=owner_secret]");
    if (choice && field) field.value = secretOf("list", choice.value);
  });

  document.addEventListener("click", async function (e) {
    var button = e.target.closest("button[data-owner-delete]");
    if (!button || !window.confirm(button.getAttribute("data-confirm") || "Delete it?")) return;
    if (await send(button, "DELETE")) {
      forget(button.getAttribute("data-kind"), button.getAttribute("data-id"));
      window.location.assign(button.getAttribute("data-then"));
    }
  });

  function start() {
    takeFragment();
    showOwned();
    fillListChoices();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
