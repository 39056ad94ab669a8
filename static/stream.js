// POST a JSON body to a server-sent-events endpoint (the steering stream) and hand each event to the page:
// qscopeStream(url, body, status, onEvent) resolves when the stream ends; a refused request (4xx/5xx before the
// stream starts) writes "status: error" into `status` and calls nothing. Used by steer.js and attribute.js.
window.qscopeStream = async (url, body, status, onEvent) => {
  const resp = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!resp.ok) {
    const err = await resp.json().catch(() => ({ error: resp.statusText }));
    status.textContent = `${resp.status}: ${err.error}`;
    return;
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const kind = block.match(/^event: (.*)$/m)?.[1];
      onEvent(kind, JSON.parse(block.match(/^data: (.*)$/m)?.[1] ?? "null"));
    }
  }
};
