// The discover, fix and footprint pages: send two example sets (pasted, or files read here) to the API, follow the
// job's progress (phase, count, rate, ETA), cancel it, open the result; draw an uploaded footprint file; save
// detectors from a discovery's ranked features.
(() => {
  "use strict";

  async function errorOf(resp) {
    const body = await resp.json().catch(() => ({ error: resp.statusText }));
    return `${resp.status}: ${body.error || resp.statusText}`;
  }

  async function post(url, body) {
    const resp = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!resp.ok) throw new Error(await errorOf(resp));
    return resp.json();
  }

  async function fileIn(input) {
    const file = input && input.files && input.files[0];
    return file ? { name: file.name, content: await file.text() } : null;
  }

  async function examples(form) {
    const val = (n) => (form.elements[n] ? form.elements[n].value : "");
    const body = { model_id: val("model_id") || null, a: val("a"), b: val("b"), name_a: val("name_a"), name_b: val("name_b"),
      text_column: val("text_column") || "text" };
    for (const name of ["a_file", "b_file", "labelled_file"]) {
      const f = await fileIn(form.elements[name]);
      if (f) body[name] = f;
    }
    if (form.elements.label_column) body.label_column = val("label_column") || "label";
    if (val("positive_label")) body.positive_label = val("positive_label");
    return body;
  }

  function fmtEta(s) { return s == null ? "" : s < 90 ? `${Math.round(s)} s left` : `${Math.round(s / 60)} min left`; }

  async function follow(job, ui) {
    ui.cancel.hidden = false;
    ui.cancel.onclick = () => post(job.cancel_url, {}).catch(() => {});
    for (;;) {
      ui.bar.max = job.total || 1;
      ui.bar.value = job.done || 0;
      const rate = job.rate ? `, ${Math.round(job.rate).toLocaleString()}/s` : "";
      ui.phase.textContent = job.phase ? `${job.phase}: ${Math.floor(job.done || 0).toLocaleString()} / ${(job.total || 0).toLocaleString()}${rate} ${fmtEta(job.eta_s)}` : job.state;
      if (job.state === "done") { window.location.href = job.result_url; return; }
      if (job.state === "failed" || job.state === "cancelled") {
        ui.status.textContent = job.state === "failed" ? `failed: ${job.error}` : "cancelled";
        ui.cancel.hidden = true;
        ui.run.disabled = false;
        return;
      }
      await new Promise((r) => setTimeout(r, 300));
      const resp = await fetch(job.status_url);
      if (!resp.ok) { ui.status.textContent = await errorOf(resp); ui.run.disabled = false; return; }
      job = await resp.json();
    }
  }

  function fixSettings(form) {
    const num = (n) => Number(form.elements[n].value);
    const fix = { goal: form.elements.goal.value, per_sae: num("per_sae"), max_prompts: num("max_prompts"), seeds: num("seeds"),
      random_controls: num("random_controls"), max_new_tokens: num("max_new_tokens"),
      strengths: form.elements.strengths.value.split(/[\s,]+/).filter((x) => x).map(Number) };
    const prompts = form.elements.prompts.value.split("\n").filter((x) => x.trim());
    if (prompts.length) fix.prompts = prompts;
    return fix;
  }

  function startForm(form) {
    const ui = { run: form.querySelector("#run"), cancel: form.querySelector("#cancel"), box: form.querySelector("#progress"),
      bar: form.querySelector("#bar"), phase: form.querySelector("#phase"), status: form.querySelector("#status") };
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      ui.run.disabled = true;
      ui.box.hidden = false;
      ui.status.textContent = "";
      ui.phase.textContent = "sending…";
      try {
        const body = await examples(form);
        if (form.dataset.kind === "discover") {
          body.options = { test_share: Number(form.elements.test_share.value), seed: Number(form.elements.seed.value),
            top: Number(form.elements.top.value) };
        } else if (form.dataset.kind === "fix") {
          body.options = { test_share: Number(form.elements.test_share.value), seed: Number(form.elements.seed.value) };
          body.fix = fixSettings(form);
        } else {
          body.by = form.elements.by.value;
          body.share = Number(form.elements.share.value);
        }
        await follow(await post(form.dataset.api, body), ui);
      } catch (err) {
        ui.status.textContent = err.message;
        ui.phase.textContent = "";
        ui.run.disabled = false;
      }
    });
  }

  function base64(buffer) {
    const bytes = new Uint8Array(buffer);
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }

  function startUpload(form) {
    const status = document.getElementById("upload-status");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const file = form.elements.file.files[0];
      if (!file) { status.textContent = "choose a .parquet or .duckdb file first"; return; }
      status.textContent = "reading…";
      try {
        const out = await post(form.dataset.api, { name: file.name, data_b64: base64(await file.arrayBuffer()) });
        window.location.href = out.url;
      } catch (err) { status.textContent = err.message; }
    });
  }

  function startSave(box) {
    const status = document.getElementById("save-status");
    const save = async (spec) => {
      status.textContent = "fitting…";
      try {
        const out = await post("/api/detectors", { discovery: box.dataset.discovery, spec });
        window.location.href = out.url;
      } catch (err) { status.textContent = err.message; }
    };
    document.addEventListener("click", (e) => {
      const btn = e.target.closest("[data-save]");
      if (!btn) return;
      const kind = btn.dataset.save;
      if (kind === "logreg") return save({ kind: "logreg" });
      if (kind === "diffmean" || kind === "probe") return save({ kind, site: btn.dataset.site });
      const term = (el) => ({ sae_id: el.dataset.sae, feature: Number(el.dataset.feature) });
      if (kind === "one") return save({ kind: "rule", combine: "any", terms: [term(btn)] });
      const picked = [...document.querySelectorAll("input.pick:checked")].map(term);
      if (picked.length < 1 || picked.length > 5) { status.textContent = `tick 1 to 5 features (${picked.length} ticked)`; return; }
      save({ kind: "rule", combine: btn.dataset.combine, terms: picked });
    });
  }

  function startDemo(box) {
    const status = document.getElementById("demo-status");
    box.addEventListener("click", async (e) => {
      const btn = e.target.closest("[data-demo]");
      if (!btn) return;
      box.querySelectorAll("button").forEach((b) => { b.disabled = true; });
      try {
        status.textContent = "discovering features (the model runs every example)…";
        const d = await post("/api/discover", { model_id: box.dataset.model, demo: btn.dataset.demo, wait: true });
        const top = d.ranking.a_side[0];
        status.textContent = "fitting a rule on the top feature…";
        const out = await post("/api/detectors", { discovery: d.id, spec: { kind: "rule", terms: [{ sae_id: top.sae_id, feature: top.feature }] } });
        window.location.href = out.url;
      } catch (err) {
        status.textContent = err.message;
        box.querySelectorAll("button").forEach((b) => { b.disabled = false; });
      }
    });
  }

  document.querySelectorAll("form.discoverform").forEach(startForm);
  const demo = document.getElementById("demo-detector");
  if (demo) startDemo(demo);
  const upload = document.getElementById("uploadform");
  if (upload) startUpload(upload);
  const saveBox = document.getElementById("save-detector");
  if (saveBox) startSave(saveBox);
})();
