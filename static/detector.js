// A detector's page: run it on texts (POST /api/detect) and show, per text, whether it fired and which tokens
// tripped it (outlined; hover for each feature's activation).
(() => {
  "use strict";
  const box = document.getElementById("try");
  if (!box) return;
  const status = document.getElementById("detect-status");
  const out = document.getElementById("detected");
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  };
  const visible = (t) => t.replace(/\n/g, "↵").replace(/\t/g, "⇥");

  function render(result) {
    out.replaceChildren();
    for (const r of result.results) {
      const row = el("div", `detected ${r.fired ? "fired" : "quiet"}`);
      row.append(el("span", `badge ${r.fired ? "fires" : "text"}`, r.fired ? "fired" : "no"), el("span", "muted small", ` score ${r.score.toFixed(3)}${r.truncated ? " (cut)" : ""} `));
      const toks = el("div", "toks");
      for (const t of r.tokens) {
        const span = el("span", `t${t.tripped.length ? " trip" : ""}${t.counted ? "" : " unranked"}`, visible(t.text));
        span.title = `${JSON.stringify(t.text)} ` + t.acts.map((a, i) => `f${i}=${a.toFixed(3)}`).join(" ");
        if (t.tripped.length) span.dataset.tripped = t.tripped.join(",");
        toks.append(span);
      }
      row.append(toks);
      out.append(row);
    }
  }

  document.getElementById("detect").addEventListener("click", async () => {
    status.textContent = "running…";
    const resp = await fetch("/api/detect", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ detector: box.dataset.detector, texts: box.querySelector("textarea").value }) });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({ error: resp.statusText }));
      status.textContent = `${resp.status}: ${body.error}`;
      return;
    }
    const result = await resp.json();
    status.textContent = `${result.results.filter((r) => r.fired).length} of ${result.results.length} fired`;
    render(result);
  });
})();
