// qscope: the little behaviour pages need beyond htmx (copy link, context expansion, /inspect's token panel).
// Event delegation on document, so content swapped in by htmx works without re-binding.
(function () {
  "use strict";

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

  document.addEventListener("keydown", function (e) {
    if (e.key !== "Enter") return;
    var tok = e.target.closest && e.target.closest(".tok[data-pos]");
    if (tok) showToken(tok.getAttribute("data-pos"));
    var ctx = e.target.closest && e.target.closest(".ctx");
    if (ctx) ctx.classList.toggle("open");
  });
})();
