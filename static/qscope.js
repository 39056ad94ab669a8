// qscope: the little behaviour pages need beyond htmx (copy link, context expansion, /inspect's token panel, a
// character count on bounded text boxes, and a word on the page when the server cannot be reached).
// Event delegation on document, so content swapped in by htmx works without re-binding.
(function () {
  "use strict";

  // an element with attributes and text, for the page scripts (steer.js, attribute.js, steer_eval.js)
  window.qscopeEl = function (tag, attrs, text) {
    var e = document.createElement(tag);
    Object.entries(attrs || {}).forEach(function (kv) { e.setAttribute(kv[0], kv[1]); });
    if (text) e.textContent = text;
    return e;
  };

  function copyLink(button) {
    var url = new URL(button.getAttribute("data-copy"), window.location.href).href;
    var done = function () {
      var old = button.textContent;
      button.textContent = "Copied!";
      setTimeout(function () { button.textContent = old; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(url).then(done, function () { window.prompt("Copy this link:", url); });
    } else {
      window.prompt("Copy this link:", url);
    }
  }

  function showToken(pos) {
    document.querySelectorAll(".tokpanel").forEach(function (el) { el.hidden = el.id !== "tok-" + pos; });
    document.querySelectorAll(".tok, th.tokh").forEach(function (el) {
      el.classList.toggle("sel", el.getAttribute("data-pos") === String(pos));
    });
    var hint = document.querySelector(".tokhint");
    if (hint) hint.hidden = true;
  }

  document.addEventListener("click", function (e) {
    var copy = e.target.closest("[data-copy]");
    if (copy) { copyLink(copy); return; }
    if (e.target.closest("a")) return;
    var tok = e.target.closest(".tok[data-pos], th.tokh[data-pos]");
    if (tok) { showToken(tok.getAttribute("data-pos")); return; }
    var ctx = e.target.closest(".ctx");
    if (ctx && !window.getSelection().toString()) ctx.classList.toggle("open");
  });

  // textareas with data-max: "n / max characters" beside the form's button, red past the limit (the server
  // refuses longer texts with a message on the page; this says so before Run)
  function countChars() {
    var boxes = document.querySelectorAll("textarea[data-max]");
    var counter = document.querySelector(".charcount");
    if (!counter || !boxes.length) return;
    var over = null, longest = 0, max = Number(boxes[0].getAttribute("data-max"));
    boxes.forEach(function (b) {
      longest = Math.max(longest, b.value.length);
      if (b.value.length > max && !over) over = b;
    });
    counter.textContent = longest.toLocaleString() + " / " + max.toLocaleString() + " characters" +
      (over ? ": too long to run, shorten it" : "");
    counter.classList.toggle("over", !!over);
  }
  document.addEventListener("input", function (e) {
    if (e.target.matches && e.target.matches("textarea[data-max]")) countChars();
  });
  document.addEventListener("DOMContentLoaded", countChars);

  // htmx swaps error answers in place (base.html's htmx-config); a request that never got an answer says so too
  document.addEventListener("htmx:sendError", function (e) {
    var target = e.detail.target;
    if (!target) return;
    var box = document.createElement("div");
    box.className = "errbox";
    box.setAttribute("role", "alert");
    box.textContent = "The server could not be reached. Check that qscope serve is running, then try again.";
    target.replaceChildren(box);
  });

  document.addEventListener("keydown", function (e) {
    if (e.key !== "Enter") return;
    var tok = e.target.closest && e.target.closest(".tok[data-pos]");
    if (tok) showToken(tok.getAttribute("data-pos"));
    var ctx = e.target.closest && e.target.closest(".ctx");
    if (ctx) ctx.classList.toggle("open");
  });

  // a form that puts its state in the URL (hx-push-url): typing in a field adds one history entry, its first
  // keystroke's, and each later one replaces it (history is not flooded, and the address is always the view on
  // the screen); fields left empty stay out of the address, so a copied link is short
  var typingIn = null;
  document.addEventListener("htmx:beforeHistoryUpdate", function (e) {
    var update = e.detail.history, config = e.detail.requestConfig || {};
    if (!update || !update.path || (config.verb || "get") !== "get") return;
    var typed = config.triggeringEvent && config.triggeringEvent.type === "input" ? config.triggeringEvent.target : null;
    if (typed && typed === typingIn) update.type = "replace";
    typingIn = typed;
    var url = new URL(update.path, window.location.href);
    Array.from(url.searchParams.keys()).forEach(function (k) {
      if (url.searchParams.getAll(k).every(function (v) { return v === ""; })) url.searchParams.delete(k);
    });
    update.path = url.pathname + url.search + url.hash;
    // a field left after typing fires change, asking again for the view already shown: no second entry for it
    if (update.path === window.location.pathname + window.location.search + window.location.hash) update.type = "replace";
  });
})();
