// Scan upload with a progress bar, and the built-in viewer (rendered frames from DICOMweb).
(() => {
  const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

  const form = document.getElementById("scan-upload");
  const words = JSON.parse(document.getElementById("upload-text")?.textContent || "{}");
  const say = (key, fallback, values = {}) =>
    Object.entries(values).reduce((text, [k, v]) => text.replace(`{${k}}`, v), words[key] || fallback);
  if (form) {
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const bar = document.getElementById("upload-progress");
      const status = document.getElementById("upload-status");
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      bar.hidden = false; bar.value = 0; status.textContent = say("uploading", "Uploading…");
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) { bar.value = Math.round((e.loaded / e.total) * 100); }
      });
      xhr.upload.addEventListener("load", () => { status.textContent = say("checking", "Checking and storing…"); });
      xhr.addEventListener("load", () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        if (xhr.status !== 200 || !body || !body.results) {
          status.textContent = (body && (body.detail || body.title)) || say("failed", "Upload failed ({status}).", {status: xhr.status});
          return;
        }
        bar.value = 100; status.textContent = say("done", "Done.");
        const c = body.counts;
        document.getElementById("upload-counts").textContent =
          say("counts", "{stored} stored, {duplicate} already stored, {conflict} in conflict, {rejected} rejected", c);
        document.querySelector("#upload-results tbody").innerHTML = body.results.map((r) =>
          `<tr class="result-${esc(r.status)}"><td>${esc(r.file)}</td><td>${esc(r.status)}</td><td>${esc(r.reason)}</td>` +
          `<td>${r.matched === null ? "" : (r.matched ? `${esc(say("matched", "matched"))} <a href="${esc(r.read_url)}">${esc(say("sendToRead", "Send to be read"))}</a>` : esc(say("unmatched", "unmatched")))}</td></tr>`).join("");
        document.getElementById("upload-summary").hidden = false;
        form.reset();
      });
      xhr.addEventListener("error", () => { status.textContent = say("network", "Network error; nothing after the last stored file was kept."); });
      xhr.send(new FormData(form));
    });
  }

  const viewer = document.getElementById("viewer");
  if (!viewer) { return; }
  const series = JSON.parse(document.getElementById("series-data").textContent);
  const base = viewer.dataset.base;
  const img = document.getElementById("slice");
  const canvas = document.getElementById("canvas");
  const slider = document.getElementById("slice-slider");
  const state = {series: 0, slice: 0, window: null, zoom: 1, panX: 0, panY: 0};
  const slices = () => {
    const s = series[state.series];
    const out = [];
    (s ? s.instances : []).forEach((i) => {
      if (i.kind !== "image") { out.push({uid: i.uid, frame: 0, document: i.document}); return; }
      for (let f = 1; f <= i.frames; f += 1) { out.push({uid: i.uid, frame: f}); }
    });
    return out;
  };
  let pending = false; let again = false;
  const show = () => {
    const list = slices();
    if (!list.length) { return; }
    state.slice = Math.max(0, Math.min(state.slice, list.length - 1));
    const cur = list[state.slice];
    const s = series[state.series];
    // Objects without pixels (PDF, reports, others) are shown by the server's document page in a frame.
    const doc = document.getElementById("document");
    img.hidden = Boolean(cur.document); doc.hidden = !cur.document;
    if (cur.document) {
      if (doc.getAttribute("src") !== cur.document) { doc.src = cur.document; }
      document.getElementById("slice-label").textContent = `${state.slice + 1}/${list.length}`;
      document.getElementById("series-description").textContent = `Series: ${s.description || s.modality}`;
      return;
    }
    let url = `${base}/series/${s.uid}/instances/${cur.uid}/frames/${cur.frame}/rendered`;
    if (state.window) { url += `?window=${Math.round(state.window[0])},${Math.round(state.window[1])},linear`; }
    document.getElementById("slice-label").textContent = `${state.slice + 1}/${list.length}`;
    slider.max = String(list.length); slider.value = String(state.slice + 1);
    document.getElementById("wl-label").textContent = state.window ? `C ${Math.round(state.window[0])} W ${Math.round(state.window[1])}` : "";
    document.getElementById("series-description").textContent = `Series: ${s.description || s.modality}`;
    if (pending) { again = true; return; }
    pending = true;
    img.onload = img.onerror = () => { pending = false; if (again) { again = false; show(); } };
    img.src = url;
    img.dataset.slice = String(state.slice);
  };
  const transform = () => {
    img.style.transform = `translate(${state.panX}px, ${state.panY}px) scale(${state.zoom})`;
  };
  const selectSeries = (i) => {
    state.series = i; state.slice = 0;
    document.querySelectorAll(".series-thumb").forEach((b) => b.classList.toggle("active", Number(b.dataset.index) === i));
    show();
  };
  document.querySelectorAll(".series-thumb").forEach((b) => b.addEventListener("click", () => selectSeries(Number(b.dataset.index))));
  document.querySelectorAll(".wl-preset").forEach((b) => b.addEventListener("click", () => {
    state.window = [Number(b.dataset.center), Number(b.dataset.width)]; show();
  }));
  document.getElementById("wl-reset").addEventListener("click", () => { state.window = null; show(); });
  document.getElementById("zoom-reset").addEventListener("click", () => { state.zoom = 1; state.panX = 0; state.panY = 0; transform(); });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (e.ctrlKey) { state.zoom = Math.max(0.25, Math.min(8, state.zoom * (e.deltaY < 0 ? 1.1 : 0.9))); transform(); return; }
    state.slice += e.deltaY > 0 ? 1 : -1; show();
  }, {passive: false});
  canvas.addEventListener("keydown", (e) => {
    const k = e.key;
    if (k === "ArrowDown" || k === "ArrowRight" || k === "PageDown") { state.slice += 1; show(); e.preventDefault(); }
    else if (k === "ArrowUp" || k === "ArrowLeft" || k === "PageUp") { state.slice -= 1; show(); e.preventDefault(); }
    else if (k === "+" || k === "=") { state.zoom = Math.min(8, state.zoom * 1.2); transform(); }
    else if (k === "-") { state.zoom = Math.max(0.25, state.zoom / 1.2); transform(); }
  });
  slider.addEventListener("input", () => { state.slice = Number(slider.value) - 1; show(); });
  // Touch: one finger adjusts window/level like a mouse drag; two fingers pinch to zoom and move to pan.
  const touches = new Map();
  let pinch = null;
  const spread = () => {
    const [a, b] = [...touches.values()];
    return {d: Math.hypot(a.x - b.x, a.y - b.y) || 1, x: (a.x + b.x) / 2, y: (a.y + b.y) / 2};
  };
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    canvas.setPointerCapture(e.pointerId); canvas.focus();
    touches.set(e.pointerId, {x: e.clientX, y: e.clientY});
    if (touches.size === 2) {
      drag = null;
      pinch = {...spread(), zoom: state.zoom, panX: state.panX, panY: state.panY};
      return;
    }
    drag = {x: e.clientX, y: e.clientY, shift: e.shiftKey, window: state.window || [40, 400], panX: state.panX, panY: state.panY};
  });
  canvas.addEventListener("pointermove", (e) => {
    if (touches.has(e.pointerId)) { touches.set(e.pointerId, {x: e.clientX, y: e.clientY}); }
    if (pinch && touches.size === 2) {
      const now = spread();
      state.zoom = Math.max(0.25, Math.min(8, pinch.zoom * (now.d / pinch.d)));
      state.panX = pinch.panX + now.x - pinch.x; state.panY = pinch.panY + now.y - pinch.y;
      transform(); return;
    }
    if (!drag) { return; }
    const dx = e.clientX - drag.x; const dy = e.clientY - drag.y;
    if (drag.shift) { state.panX = drag.panX + dx; state.panY = drag.panY + dy; transform(); return; }
    state.window = [drag.window[0] + dy * 2, Math.max(1, drag.window[1] + dx * 4)];
    show();
  });
  const lift = (e) => { touches.delete(e.pointerId); drag = null; if (touches.size < 2) { pinch = null; } };
  canvas.addEventListener("pointerup", lift);
  canvas.addEventListener("pointercancel", lift);
  transform();
  if (series.length) { selectSeries(0); }
})();
