// Reading: waiting clocks that keep ticking, and key images picked from the viewer beside the report editor.
(() => {
  // The words come from the page, in the reader's language (reading/_text.html); {x} marks a number to fill in.
  const words = JSON.parse(document.getElementById("reading-text")?.textContent || "{}");
  const say = (key, fallback, values) => (words[key] || fallback).replace(/\{(\w)\}/g, (_, k) => String(values[k]));
  const text = (seconds) => {
    const m = Math.max(0, Math.floor(seconds / 60));
    if (m < 60) { return say("minutes", "{m} min", {m}); }
    const h = Math.floor(m / 60);
    if (h < 48) { return say("hoursMinutes", "{h} h {m} min", {h, m: String(m % 60).padStart(2, "0")}); }
    return say("daysHours", "{d} days {h} h", {d: Math.floor(h / 24), h: h % 24});
  };
  const tick = () => {
    document.querySelectorAll(".clock[data-since]:not([data-stopped])").forEach((el) => {
      el.textContent = text((Date.now() - Date.parse(el.dataset.since)) / 1000);
    });
  };
  setInterval(tick, 30000);

  const button = document.getElementById("mark-key-image");
  const field = document.getElementById("key_images");
  if (!button || !field) { return; }
  const list = document.getElementById("key-image-list");
  let keys = [];
  try { keys = JSON.parse(field.value || "[]"); } catch (e) { keys = []; }
  const render = () => {
    field.value = JSON.stringify(keys);
    list.innerHTML = "";
    keys.forEach((k, i) => {
      const li = document.createElement("li");
      li.textContent = `${say("keyImage", "Image {n} (frame {f})", {n: i + 1, f: k.frame})} `;
      const rm = document.createElement("button");
      rm.type = "button"; rm.textContent = say("remove", "Remove", {});
      rm.addEventListener("click", () => { keys.splice(i, 1); render(); });
      li.appendChild(rm);
      list.appendChild(li);
    });
  };
  button.addEventListener("click", () => {
    // The viewer shows .../series/<series>/instances/<instance>/frames/<n>/rendered
    const src = document.getElementById("slice").getAttribute("src") || "";
    const m = src.match(/series\/([0-9.]+)\/instances\/([0-9.]+)(?:\/frames\/(\d+))?/);
    if (!m) { return; }
    const key = {series: m[1], instance: m[2], frame: Number(m[3] || 1)};
    if (!keys.some((k) => k.instance === key.instance && k.frame === key.frame)) { keys.push(key); render(); }
  });
  render();
})();
