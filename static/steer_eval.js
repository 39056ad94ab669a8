// Steering evaluations: the form (/steer-eval: builds the request, reads a prompt file, POST /api/steer-eval),
// a job's page (/steer-eval/{id}: progress from server-sent events, cancel, reload when done) and a recipe's
// page (/recipes/{id}: run again).
(() => {
  const el = window.qscopeEl; // qscope.js

  async function post(url, body) {
    const resp = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = { error: `HTTP ${resp.status}` }; }
    return { ok: resp.ok, data };
  }

  function showError(box, message) {
    box.textContent = message;
    box.hidden = !message;
  }

  // ---- the form ----
  function form(f) {
    const init = JSON.parse(document.getElementById("eval-init").textContent);
    const list = document.getElementById("features");
    const error = document.getElementById("error");

    function addFeature(x) {
      const row = el("div", { class: "frow" });
      const sae = el("select", { name: "sae_id", "aria-label": "SAE" });
      for (const s of init.saes[f.model_id.value] || []) sae.append(el("option", s === x.sae_id ? { selected: "" } : {}, s));
      const feat = el("input", { type: "number", name: "feature", min: "0", value: x.feature ?? 0, "aria-label": "feature" });
      const mode = el("select", { name: "mode", "aria-label": "mode" });
      for (const m of ["add", "clamp", "multiply", "ablate", "subtract"]) mode.append(el("option", m === x.mode ? { selected: "" } : {}, m));
      const sign = el("select", { name: "sign", "aria-label": "direction" });
      for (const [v, t] of [["1", "+ (swept up)"], ["-1", "− (swept negative)"]]) {
        sign.append(el("option", (x.strength ?? 1) < 0 === (v === "-1") ? { value: v, selected: "" } : { value: v }, t));
      }
      const rm = el("button", { type: "button", class: "btn", "aria-label": "remove" }, "✕");
      rm.onclick = () => { row.remove(); estimate(); };
      row.append(sae, feat, mode, sign, rm);
      list.append(row);
    }

    function source() { return f.querySelector("input[name=source]:checked").value; }
    f.querySelectorAll("input[name=source]").forEach((r) => r.addEventListener("change", () => {
      f.querySelectorAll("[data-source]").forEach((d) => { d.hidden = d.dataset.source !== source(); });
    }));

    const words = (s) => s.split(",").map((t) => t.trim()).filter(Boolean);

    async function fileBody() {
      const file = f.prompts_file.files[0];
      if (!file) throw new Error("choose a prompt file first");
      const bytes = new Uint8Array(await file.arrayBuffer());
      let bin = "";
      for (let i = 0; i < bytes.length; i += 8192) bin += String.fromCharCode(...bytes.subarray(i, i + 8192));
      return { name: file.name, content_base64: btoa(bin) };
    }

    async function request() {
      const num = (n) => Number(f[n].value);
      const spec = {
        model_id: f.model_id.value, prompt: "", where: f.where.value, max_new_tokens: num("max_new_tokens"),
        temperature: num("temperature"), top_p: num("top_p"), seed: num("seed"),
        features: [...list.querySelectorAll(".frow")].map((r) => ({
          sae_id: r.querySelector("[name=sae_id]").value, feature: Number(r.querySelector("[name=feature]").value),
          mode: r.querySelector("[name=mode]").value, strength: Number(r.querySelector("[name=sign]").value),
        })),
      };
      const body = {
        spec, strengths: words(f.strengths.value).map(Number), seeds: num("seeds"),
        random_controls: num("random_controls"), goal: f.goal.value, max_ppl_ratio: num("max_ppl_ratio"),
        instruction: f.instruction.value,
        metrics: {
          required: words(f.required.value), forbidden: words(f.forbidden.value), regex: f.regex.value || null,
          distinct_n: num("distinct_n"), scripts: [...f.querySelectorAll("input[name=scripts]:checked")].map((c) => c.value),
        },
      };
      if (f.concept_sae.value && f.concept_feature.value !== "") {
        body.concept = { sae_id: f.concept_sae.value, feature: num("concept_feature") };
      }
      const lines = (t) => t.split("\n").filter((l) => l.trim());
      if (f.diffmean_discovery.value.trim()) body.diffmean = { discovery: f.diffmean_discovery.value.trim() };
      else if (f.diffmean_with.value.trim() || f.diffmean_without.value.trim()) {
        body.diffmean = { with_concept: lines(f.diffmean_with.value), without_concept: lines(f.diffmean_without.value) };
      }
      const src = source();
      if (src === "set") body.prompt_set = f.prompt_set.value;
      else if (src === "text") body.prompts_text = f.prompts_text.value;
      else body.prompts_file = await fileBody();
      return body;
    }

    f.addEventListener("submit", async (e) => {
      e.preventDefault();
      showError(error, "");
      let body;
      try { body = await request(); } catch (err) { showError(error, err.message); return; }
      const start = document.getElementById("start");
      start.disabled = true;
      const { ok, data } = await post("/api/steer-eval", body);
      start.disabled = false;
      if (ok) window.location.href = data.url;
      else showError(error, data.error || "the evaluation could not start");
    });
    // rows = prompts x seeds x (arm, strength) points, as the server counts them (controls skip strength 0)
    function estimate() {
      const strengths = [...new Set(words(f.strengths.value).map(Number))];
      const modes = [...list.querySelectorAll("[name=mode]")].map((m) => m.value);
      const off = (m) => m === "ablate" || m === "subtract"; // OFF_MODES: on or off, no strength
      const sweep = modes.length && modes.every(off) ? [0, 1] : strengths;
      const steered = sweep.filter((s) => s !== 0).length;
      const points = 1 + sweep.length + (modes.some((m) => !off(m)) ? steered : 0)
        + Number(f.random_controls.value) * steered + (f.instruction.value ? 1 + steered : 0)
        + (f.diffmean_discovery.value.trim() || f.diffmean_with.value.trim() ? steered : 0);
      const src = source();
      const n = src === "set" ? Number(f.prompt_set.selectedOptions[0].dataset.n)
        : src === "text" ? f.prompts_text.value.split("\n").filter((l) => l.trim()).length : null;
      const seeds = Number(f.temperature.value) === 0 ? 1 : Number(f.seeds.value);
      document.getElementById("estimate").textContent = n == null ? `${points} arm-strength points per prompt and seed`
        : `${(n * seeds * points).toLocaleString()} rows (${n} prompts x ${seeds} seeds x ${points} arm-strength points)`;
    }
    f.addEventListener("input", estimate);
    f.addEventListener("change", estimate);
    f.model_id.addEventListener("change", () => { list.replaceChildren(); addFeature({}); });
    document.getElementById("suggest").onclick = async () => {
      const out = document.getElementById("suggested");
      out.textContent = "finding…";
      const q = new URLSearchParams({ prompt_set: f.prompt_set.value, model_id: f.model_id.value });
      const resp = await fetch(`/api/steer-eval/suggest?${q}`);
      const data = await resp.json();
      if (!resp.ok) { out.textContent = data.error; return; }
      list.replaceChildren();
      addFeature(data.feature);
      out.replaceChildren(el("a", { href: data.url }, `${data.feature.sae_id} #${data.feature.feature}`), ` ${data.label}`);
    };
    document.getElementById("fadd").onclick = () => addFeature({ sae_id: (init.saes[f.model_id.value] || [])[0] });
    const feats = init.request.spec.features;
    if (feats.length) feats.forEach(addFeature); else addFeature({});
    estimate();
  }

  // ---- a job's page ----
  function job(box) {
    const bar = document.getElementById("bar");
    const text = document.getElementById("progress-text");
    const status = document.getElementById("job-status");
    const fmt = (s) => (s == null ? "–" : s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`);
    const events = new EventSource(box.dataset.events);
    events.addEventListener("progress", (e) => {
      const v = JSON.parse(e.data);
      const p = v.progress;
      status.textContent = v.status;
      bar.max = p.total || 1;
      bar.value = p.done || 0;
      const rate = p.rows_per_s ? ` · ${p.rows_per_s.toFixed(1)} rows/s · ETA ${fmt(p.eta_s)}` : "";
      const wait = v.position ? ` · ${v.position} evaluation(s) before this one` : "";
      text.textContent = `${p.phase}: ${Math.floor(p.done || 0)} / ${p.total} rows${rate}${wait}${p.detail ? " · " + p.detail : ""}`;
    });
    events.addEventListener("end", () => { events.close(); window.location.reload(); });
    document.getElementById("cancel").onclick = async () => {
      document.getElementById("cancel").disabled = true;
      await post(box.dataset.cancel, {});
    };
  }

  // ---- a recipe's page ----
  function again(box) {
    document.getElementById("run-again").onclick = async () => {
      const error = document.getElementById("error");
      showError(error, "");
      const { ok, data } = await post(box.dataset.url, { model_id: box.querySelector("select[name=model_id]").value });
      if (ok) window.location.href = data.url;
      else showError(error, data.error || "could not start");
    };
  }

  const f = document.getElementById("evalform");
  if (f) form(f);
  const box = document.getElementById("job");
  if (box) job(box);
  const a = document.getElementById("again");
  if (a) again(a);
})();
