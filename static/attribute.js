// "Why this token?": open the attribution panel (#why) from a clicked token on the steer page, a shared run or
// /inspect; ask it again with another target; "Suppress and regenerate" streams the same prompt with the ticked
// features turned off by the chosen rule (POST /api/steer/stream) beside the original. Event delegation: panels loaded later work too.
(() => {
  const el = window.qscopeEl; // qscope.js

  // The panel partial into `slot`; an error page gives its message (status and text) instead.
  async function load(url, slot) {
    slot.hidden = false;
    slot.replaceChildren(el("p", { class: "muted small" }, "Attributing…"));
    let resp, html;
    try {
      resp = await fetch(url, { headers: { "HX-Request": "true" } });
      html = await resp.text();
    } catch (e) {
      slot.replaceChildren(el("p", { class: "note" }, `The server did not answer: ${e}`));
      return;
    }
    const doc = new DOMParser().parseFromString(html, "text/html");
    const error = doc.querySelector(".error");
    const nodes = resp.ok ? [...doc.body.childNodes] : [error || el("p", { class: "note" }, `${resp.status} ${resp.statusText}`)];
    slot.replaceChildren(...nodes);
    if (window.htmx) window.htmx.process(slot);
    slot.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  function select(token) {
    document.querySelectorAll(".why-clicked").forEach((t) => t.classList.remove("why-clicked"));
    token.classList.add("why-clicked");
  }

  function fromSteer(st) {
    const out = st.closest(".steerout");
    const slot = document.getElementById("why");
    if (!slot) return;
    select(st);
    if (!out.dataset.run) {
      slot.hidden = false;
      slot.replaceChildren(el("p", { class: "note" }, "Wait for the run to finish, then click a token."));
      return;
    }
    const side = st.closest("[data-side]").dataset.side;
    const q = new URLSearchParams({ run: out.dataset.run, side, pos: st.dataset.i, panel: "true" });
    load(`/attribute?${q}`, slot);
  }

  function fromInspect(tok) {
    const strip = tok.closest("[data-why]");
    const slot = document.getElementById("why");
    if (!slot) return;
    select(tok);
    load(`${strip.dataset.why}&pos=${tok.dataset.pos}&panel=true`, slot);
  }

  function tokenSpan(t, i, explained) {
    const s = el("span", { class: "st", title: `${JSON.stringify(t.text)} p=${t.prob.toFixed(3)}` }, t.text);
    s.style.setProperty("--p", t.prob.toFixed(2));
    s.dataset.id = t.id;
    if (i === explained) s.classList.add("why-explained");
    return s;
  }

  // Marks the first token where the two columns part, and says so.
  function compare(panel, status) {
    const ids = (col) => [...panel.querySelectorAll(`.${col} .st`)].map((s) => s.dataset.id);
    const a = ids("why-original"), b = ids("why-suppressed");
    let k = 0;
    while (k < a.length && k < b.length && a[k] === b[k]) k++;
    if (k === a.length && k === b.length) { status.textContent = "done: the same tokens as the original"; return; }
    for (const col of ["why-original", "why-suppressed"]) panel.querySelectorAll(`.${col} .st`)[k]?.classList.add("why-diverge");
    const first = Number(panel.dataset.firstToken || 0), of = panel.dataset.tokenOf || ""; // the panel's numbering
    status.textContent = `done: the suppressed run parts from the original at token ${first + k}${of}`;
  }

  async function suppress(panel) {
    const data = JSON.parse(panel.querySelector(".why-data").textContent);
    const status = panel.querySelector(".why-status");
    const picks = [...panel.querySelectorAll(".why-pick:checked")].map((c) => ({ sae_id: c.dataset.sae, feature: Number(c.dataset.feature) }));
    if (!picks.length) { status.textContent = "Tick at least one feature to suppress."; return; }
    if (picks.length > data.max_ablate) { status.textContent = `At most ${data.max_ablate} features may be ablated in one request.`; return; }
    const from = panel.querySelector(".why-scope").value === "from" ? data.from_position : 0;
    const mode = panel.querySelector(".why-mode").value; // subtract (what was attributed) or ablate
    const spec = structuredClone(data.suppress);
    spec.features = spec.features.slice(0, spec.features.length - data.ablated)
      .concat(picks.map((p) => ({ ...p, mode, strength: 0, from_position: from })));
    panel.querySelector(".why-ran").textContent = `(${mode}, ${from ? `from ${panel.dataset.fromLabel} on` : "everywhere"})`; // the panel's numbering
    const cols = { default: panel.querySelector(".why-original"), steered: panel.querySelector(".why-suppressed") };
    cols.default.replaceChildren();
    cols.steered.replaceChildren();
    panel.querySelector(".why-out").hidden = false;
    if (data.original) data.original.tokens.forEach((t, i) => cols.default.append(tokenSpan(t, i, data.explained)));
    status.textContent = "running…";
    await qscopeStream("/api/steer/stream", spec, status, (kind, msg) => {
      if (kind === "token" && !(msg.row === "default" && data.original)) cols[msg.row].append(tokenSpan(msg, msg.i, data.explained));
      else if (kind === "done") compare(panel, status);
      else if (kind === "error") status.textContent = `error: ${msg}`;
    });
  }

  document.addEventListener("click", (e) => {
    if (e.target.closest("a")) return;
    const st = e.target.closest(".steerout .st[data-i]");
    if (st && !st.closest(".why")) { fromSteer(st); return; }
    const tok = e.target.closest("[data-why] .tok[data-pos]");
    if (tok) { fromInspect(tok); return; }
    const go = e.target.closest(".why-run");
    if (go) {
      const panel = go.closest(".why");
      suppress(panel).catch((err) => { panel.querySelector(".why-status").textContent = String(err); });
    }
  });

  document.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || !e.target.closest) return;
    const tok = e.target.closest("[data-why] .tok[data-pos]");
    if (tok) fromInspect(tok);
  });

  // Inside a page that holds the panel, asking again with another target reloads the panel alone.
  document.addEventListener("submit", (e) => {
    const form = e.target.closest("form.why-target");
    const slot = form && form.closest("#why");
    if (!slot) return;
    e.preventDefault();
    const q = new URLSearchParams(new FormData(form));
    for (const [k, v] of [...q]) if (v === "") q.delete(k);
    load(`${form.getAttribute("action")}?${q}`, slot);
  });
})();
