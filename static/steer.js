// The /steer page: feature rows (with each feature's label and max activation), a feature picker, a streamed run
// (POST /api/steer/stream, server-sent events), sharing, and every error shown next to what caused it.
(() => {
  const init = JSON.parse(document.getElementById("steer-init").textContent);
  const form = document.getElementById("steerform");
  const list = document.getElementById("features");
  const status = document.getElementById("status");
  const shareBtn = document.getElementById("share");
  const errorBox = document.getElementById("steer-error");
  const LABELS = {
    prompt: "Prompt", max_new_tokens: "Tokens", temperature: "Temperature", top_p: "Top-p",
    frequency_penalty: "Freq. penalty", seed: "Seed", where: "Where", model_id: "Model",
  };
  const known = new Map(init.features.map((f) => [`${f.sae_id}/${f.feature}`, f]));
  const output = document.getElementById("steerout"); // data-run: what a click on a token attributes (attribute.js)
  let runToken = null;

  const el = window.qscopeEl; // qscope.js
  const short = (saeId) => saeId.split("__").pop();
  const rows = () => [...list.querySelectorAll(".feature-row")];

  // --- errors, next to what caused them --------------------------------------------------------------------------
  function clearErrors() {
    errorBox.hidden = true;
    errorBox.replaceChildren();
    for (const e of form.querySelectorAll(".fielderr")) e.remove();
    for (const e of form.querySelectorAll("[aria-invalid]")) e.removeAttribute("aria-invalid");
  }

  function plain(message) {
    let text = String(message).replace(/^Bad parameter: /, "");
    for (const [name, label] of Object.entries(LABELS)) if (name.includes("_")) text = text.replaceAll(name, label);
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function culprit(message) {
    const m = String(message).replace(/^Bad parameter: /, "");
    let found = m.match(/^features\.(\d+)/);
    if (found) return rows()[Number(found[1])];
    found = m.match(/feature (\d+)/);
    if (found) return rows().find((r) => r.querySelector("[name=feature]").value === found[1]);
    if (/^(the )?prompt/.test(m)) return form.prompt;
    const name = Object.keys(LABELS).find((n) => m.startsWith(n));
    return name ? form.querySelector(`[data-field=${name}]`) : null;
  }

  function showError(message, where = culprit(message)) {
    const text = plain(message);
    errorBox.replaceChildren(el("b", {}, "Not run: "), document.createTextNode(text));
    errorBox.hidden = false;
    if (!where) return;
    where.setAttribute("aria-invalid", "true");
    const note = el("p", { class: "fielderr", role: "alert" }, text);
    (where.classList.contains("feature-row") ? where.querySelector(".fnote") : where).after(note);
  }

  // --- feature rows ----------------------------------------------------------------------------------------------
  function describe(row, info) {
    const label = row.querySelector(".flabel");
    const note = row.querySelector(".fnote");
    const mode = row.querySelector("[name=mode]");
    label.replaceChildren();
    note.textContent = "";
    note.classList.remove("warn");
    for (const o of mode.options) o.disabled = false;
    if (!info) return;
    if (info.error) {
      note.textContent = info.error;
      note.classList.add("warn");
      return;
    }
    label.append(el("a", { href: info.url, title: "open its dashboard" }, info.label || "(no label)"));
    label.append(el("span", { class: "muted small" }, info.dead ? " · never fired" : ` · max ${info.max_act.toPrecision(3)}`));
    if (info.dead) {
      for (const o of mode.options) o.disabled = o.value === "add" || o.value === "clamp";
      if (mode.value === "add" || mode.value === "clamp") mode.value = "multiply";
      note.textContent = "This feature never fired in the harvest, so its max activation is 0: add and clamp "
        + "(multiples of that max) would change nothing and are not offered. Multiply and ablate act on its "
        + "activation on your text.";
      note.classList.add("warn");
    }
  }

  async function lookup(row) {
    const sae = row.querySelector("[name=sae_id]").value;
    const feature = row.querySelector("[name=feature]").value;
    const key = `${sae}/${feature}`;
    if (!known.has(key)) {
      const r = await fetch(`/api/steer/feature/${encodeURIComponent(sae)}/${encodeURIComponent(feature)}`);
      const body = await r.json().catch(() => ({ error: r.statusText }));
      known.set(key, r.ok ? body : { error: plain(body.error || `${r.status}`) });
    }
    if (row.querySelector("[name=sae_id]").value === sae && row.querySelector("[name=feature]").value === feature) {
      describe(row, known.get(key));
    }
  }

  function addFeature(f) {
    const row = el("div", { class: "feature-row" });
    const line = el("div", { class: "frow" });
    const sae = el("select", { name: "sae_id", "aria-label": "SAE" });
    for (const s of init.saes[form.model_id.value] || []) {
      sae.append(el("option", s === f.sae_id ? { value: s, selected: "" } : { value: s }, short(s)));
    }
    const feat = el("input", { type: "number", name: "feature", min: "0", value: f.feature ?? 0, "aria-label": "feature index" });
    const mode = el("select", { name: "mode", "aria-label": "mode" });
    for (const m of ["add", "clamp", "multiply", "ablate", "subtract"]) mode.append(el("option", m === f.mode ? { value: m, selected: "" } : { value: m }, m));
    const strength = el("input", { type: "number", name: "strength", step: "0.5", value: f.strength ?? 4, "aria-label": "strength" });
    const rm = el("button", { type: "button", class: "btn", title: "remove this feature", "aria-label": "remove" }, "✕");
    rm.onclick = () => { row.remove(); empty(); };
    let timer;
    const changed = () => { clearTimeout(timer); timer = setTimeout(() => lookup(row), 250); };
    sae.onchange = changed;
    feat.oninput = changed;
    line.append(sae, el("span", { class: "hash" }, "#"), feat, mode, strength, rm);
    row.append(line, el("div", { class: "flabel" }), el("p", { class: "fnote small" }));
    list.append(row);
    empty();
    const info = known.get(`${sae.value}/${feat.value}`);
    if (info) describe(row, info);
    else lookup(row);
  }

  function empty() {
    document.getElementById("nofeatures").hidden = rows().length > 0;
  }

  // --- the picker: search results as buttons that add the feature -----------------------------------------------
  const found = document.getElementById("found");
  const fstatus = document.getElementById("fstatus");
  let searchTimer;
  let asked = 0;
  document.getElementById("fsearch").addEventListener("input", (e) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => pick(e.target.value.trim()), 250);
  });

  async function pick(q) {
    const mine = ++asked;
    found.replaceChildren();
    fstatus.textContent = "";
    if (!q) return;
    fstatus.textContent = "searching…";
    const params = new URLSearchParams({ q, limit: "8" });
    for (const kind of ["text", "semantic"]) params.append("kind", kind);
    const r = await fetch(`/search.json?${params}`);
    const body = await r.json().catch(() => ({ error: r.statusText }));
    if (mine !== asked) return;
    if (!r.ok) { fstatus.textContent = plain(body.error || `${r.status}`); return; }
    const hits = body.hits.filter((h) => h.model_id === form.model_id.value);
    fstatus.textContent = hits.length ? "Click a feature to add it." : `No feature found for “${q}”.`;
    if (body.notes.length) fstatus.textContent += ` (${body.notes.join("; ")})`;
    for (const hit of hits) {
      const b = el("button", { type: "button", class: "pick" });
      b.append(el("span", { class: "muted" }, `${short(hit.row.sae_id)} #${hit.row.feature}`), " ",
        el("span", { class: "label" }, hit.row.label || ""), el("span", { class: "add" }, "+ add"));
      b.onclick = () => {
        known.set(`${hit.row.sae_id}/${hit.row.feature}`, {
          sae_id: hit.row.sae_id, feature: hit.row.feature, label: hit.row.label, max_act: hit.row.max_act,
          dead: !(hit.row.max_act > 0), url: `/${encodeURIComponent(hit.model_id)}/${encodeURIComponent(hit.row.sae_id)}/${hit.row.feature}`,
        });
        addFeature({ sae_id: hit.row.sae_id, feature: hit.row.feature, mode: "add", strength: 4 });
        b.replaceChildren(el("span", {}, `added ${short(hit.row.sae_id)} #${hit.row.feature}`));
        b.disabled = true;
      };
      const li = el("li");
      li.append(b);
      found.append(li);
    }
  }

  // --- a run --------------------------------------------------------------------------------------------------------
  function spec() {
    const num = (n) => Number(form[n].value);
    return {
      model_id: form.model_id.value, prompt: form.prompt.value, where: form.where.value,
      max_new_tokens: num("max_new_tokens"), temperature: num("temperature"), top_p: num("top_p"),
      frequency_penalty: num("frequency_penalty"), seed: num("seed"),
      features: rows().map((r) => ({
        sae_id: r.querySelector("[name=sae_id]").value, feature: Number(r.querySelector("[name=feature]").value),
        mode: r.querySelector("[name=mode]").value, strength: Number(r.querySelector("[name=strength]").value),
      })),
    };
  }

  function token(t, i) { // i: the token's place in its completion (a streamed token brings its own)
    const value = t.value || t.text;
    const part = t.text === "" && value;
    const what = part ? `${JSON.stringify(value)}: the first bytes of a character the next tokens complete` : JSON.stringify(value);
    const attrs = { class: part ? "st part" : "st", "data-i": t.i ?? i, title: `${what} p=${t.prob.toFixed(3)}` };
    const s = el("span", attrs, t.text);
    s.style.setProperty("--p", t.prob.toFixed(2));
    return s;
  }

  function finish(data) {
    for (const name of ["default", "steered"]) {
      document.getElementById(`out-${name}`).replaceChildren(...data[name].tokens.map(token));
      document.getElementById(`stop-${name}`).textContent = `stopped: ${data[name].stopped}`;
    }
    runToken = data.run;
    output.dataset.run = data.run || "";
    shareBtn.disabled = !runToken;
    shareBtn.title = "Save this run and get a link to it";
    status.textContent = "done";
  }

  async function run() {
    clearErrors();
    if (!form.prompt.value.trim()) { showError("the prompt is empty: type a prompt to generate from.", form.prompt); return; }
    for (const name of ["default", "steered"]) {
      document.getElementById(`out-${name}`).replaceChildren();
      document.getElementById(`stop-${name}`).textContent = "";
    }
    shareBtn.disabled = true;
    runToken = null;
    output.dataset.run = "";
    status.textContent = "running…";
    const refused = (resp, body) => { // a 4xx/5xx before the stream starts: said next to what caused it
      status.textContent = "";
      const wait = resp.headers.get("Retry-After");
      showError(`${body.error || resp.status}${wait ? ` (try again in ${wait} s)` : ""}`);
    };
    await qscopeStream("/api/steer/stream", spec(), status, (kind, data) => {
      if (kind === "token") document.getElementById(`out-${data.row}`).append(token(data));
      else if (kind === "done") finish(data);
      else if (kind === "error") { status.textContent = ""; showError(`the generation failed: ${data}`, null); }
    }, refused);
  }

  async function share() {
    if (!runToken) return;
    clearErrors();
    const resp = await fetch("/api/steer/share", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ run: runToken }),
    });
    const body = await resp.json().catch(() => ({ error: resp.statusText }));
    if (!resp.ok) { showError(`could not share: ${body.error}`, shareBtn); return; }
    status.replaceChildren(el("a", { href: body.url }, location.origin + body.url));
    history.replaceState(null, "", body.url);
  }

  form.addEventListener("submit", (e) => e.preventDefault()); // Run and Share are buttons; Enter runs nothing
  form.model_id.addEventListener("change", () => {
    for (const r of rows()) r.remove();
    empty();
  });
  document.getElementById("fadd").onclick = () => addFeature({ mode: "add", strength: 4 });
  document.getElementById("run").onclick = () => run().catch((e) => {
    status.textContent = "";
    showError(`the server could not be reached (${e.message || e})`, null);
  });
  shareBtn.onclick = () => share();
  // the same spec, swept over a prompt set against controls (/steer-eval reads it from its query)
  document.getElementById("evaluate").onclick = () => {
    location.href = `/steer-eval?spec=${encodeURIComponent(JSON.stringify({ ...spec(), prompt: "" }))}`;
  };
  if (shareBtn.disabled === false && !runToken) shareBtn.disabled = true; // a saved run is already shared
  for (const f of init.spec.features) addFeature(f);
  empty();
})();
