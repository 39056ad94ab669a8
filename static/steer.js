// The /steer page: feature rows, a streamed run (POST /api/steer/stream, server-sent events) and sharing.
(() => {
  const init = JSON.parse(document.getElementById("steer-init").textContent);
  const form = document.getElementById("steerform");
  const list = document.getElementById("features");
  const status = document.getElementById("status");
  const shareBtn = document.getElementById("share");
  const output = document.getElementById("steerout"); // data-run: what a click on a token attributes (attribute.js)
  let runToken = null;

  const el = (tag, attrs = {}, text = "") => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text) e.textContent = text;
    return e;
  };

  function addFeature(f) {
    const row = el("div", { class: "frow" });
    const sae = el("select", { name: "sae_id", "aria-label": "SAE" });
    for (const s of init.saes[form.model_id.value] || []) sae.append(el("option", s === f.sae_id ? { selected: "" } : {}, s));
    const feat = el("input", { type: "number", name: "feature", min: "0", value: f.feature ?? 0, "aria-label": "feature" });
    const mode = el("select", { name: "mode", "aria-label": "mode" });
    for (const m of ["add", "clamp", "multiply", "ablate"]) mode.append(el("option", m === f.mode ? { selected: "" } : {}, m));
    const strength = el("input", { type: "number", name: "strength", step: "0.5", value: f.strength ?? 4, "aria-label": "strength" });
    const rm = el("button", { type: "button", class: "btn" }, "✕");
    rm.onclick = () => row.remove();
    row.append(sae, feat, mode, strength, rm);
    list.append(row);
  }

  function spec() {
    const num = (n) => Number(form[n].value);
    return {
      model_id: form.model_id.value, prompt: form.prompt.value, where: form.where.value,
      max_new_tokens: num("max_new_tokens"), temperature: num("temperature"), top_p: num("top_p"),
      frequency_penalty: num("frequency_penalty"), seed: num("seed"),
      features: [...list.querySelectorAll(".frow")].map((r) => ({
        sae_id: r.querySelector("[name=sae_id]").value, feature: Number(r.querySelector("[name=feature]").value),
        mode: r.querySelector("[name=mode]").value, strength: Number(r.querySelector("[name=strength]").value),
      })),
    };
  }

  function token(t) {
    const s = el("span", { class: "st", "data-i": t.i, title: `${JSON.stringify(t.text)} p=${t.prob.toFixed(3)}` }, t.text);
    s.style.setProperty("--p", t.prob.toFixed(2));
    return s;
  }

  async function run() {
    for (const name of ["default", "steered"]) {
      document.getElementById(`out-${name}`).replaceChildren();
      document.getElementById(`stop-${name}`).textContent = "";
    }
    shareBtn.disabled = true;
    runToken = null;
    output.dataset.run = "";
    status.textContent = "running…";
    await qscopeStream("/api/steer/stream", spec(), status, (kind, data) => {
      if (kind === "token") document.getElementById(`out-${data.row}`).append(token(data));
      else if (kind === "done") {
        for (const name of ["default", "steered"]) document.getElementById(`stop-${name}`).textContent = data[name].stopped;
        runToken = data.run;
        output.dataset.run = data.run;
        shareBtn.disabled = false;
        status.textContent = "done";
      } else if (kind === "error") status.textContent = `error: ${data}`;
    });
  }

  async function share() {
    if (!runToken) return;
    const resp = await fetch("/api/steer/share", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ run: runToken }),
    });
    const body = await resp.json();
    if (!resp.ok) { status.textContent = `${resp.status}: ${body.error}`; return; }
    status.replaceChildren(el("a", { href: body.url }, location.origin + body.url));
    history.replaceState(null, "", body.url);
  }

  let timer;
  document.getElementById("fsearch").addEventListener("input", (e) => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const q = e.target.value.trim();
      const found = document.getElementById("found");
      found.replaceChildren();
      if (!q) return;
      const r = await fetch(`/search.json?q=${encodeURIComponent(q)}&limit=8`);
      if (!r.ok) return;
      for (const hit of (await r.json()).hits) {
        const li = el("li", {}, `${hit.row.sae_id} #${hit.row.feature} ${hit.row.label || ""}`);
        li.onclick = () => addFeature({ sae_id: hit.row.sae_id, feature: hit.row.feature, mode: "add", strength: 4 });
        found.append(li);
      }
    }, 250);
  });
  form.addEventListener("submit", (e) => e.preventDefault()); // Run and Share are buttons; Enter runs nothing
  document.getElementById("fadd").onclick = () => addFeature({ mode: "add", strength: 4 });
  document.getElementById("run").onclick = () => run().catch((e) => { status.textContent = String(e); });
  shareBtn.onclick = () => share();
  // the same spec, swept over a prompt set against controls (/steer-eval reads it from its query)
  document.getElementById("evaluate").onclick = () => {
    location.href = `/steer-eval?spec=${encodeURIComponent(JSON.stringify({ ...spec(), prompt: "" }))}`;
  };
  if (shareBtn.disabled === false && !runToken) shareBtn.disabled = true; // a saved run is already shared
  for (const f of init.spec.features) addFeature(f);
})();
