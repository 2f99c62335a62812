// Recording panel: the patient's consent (give / withdraw), the doctor's start / stop, and a REC indicator.
// State comes from GET <data-url> (polled); the consult page's signal handling may also call
// window.hospitalRecordingRefresh() when a "recording" signal arrives.
(() => {
  const panel = document.getElementById("recording-panel");
  if (!panel) return;
  const url = panel.dataset.url;
  const $ = (id) => document.getElementById(id);
  const show = (id, on) => $(id).classList.toggle("hidden", !on);
  const say = (text) => { $("rec-message").textContent = text || ""; };

  async function call(path) {
    const resp = await window.hospitalFetch(url + path, { method: "POST" });
    const body = await resp.json().catch(() => ({}));
    return { resp, body };
  }

  function render(s) {
    panel.classList.toggle("hidden", !(s.can_consent || s.can_record || s.consent || s.recording
                                       || s.recordings.length));
    const c = s.consent;
    const self = panel.dataset.self === "yes";  // the patient reads about their own consent as "you"
    if (self) {
      $("rec-consent").textContent = c
        ? `You agreed to this consult being recorded${c.on_behalf ? ` (${c.given_by} recorded your agreement)` : ""}. You can withdraw at any time.`
        : "This consult is not recorded. It is recorded only if you agree.";
    } else {
      $("rec-consent").textContent = c
        ? `The patient agreed to recording${c.on_behalf ? ` (recorded by ${c.given_by} on their behalf)` : ""}.`
        : "The patient has not agreed to recording. Nothing is recorded without consent.";
    }
    show("rec-indicator", s.recording);
    show("rec-give", s.can_consent && !c);
    show("rec-revoke", s.can_consent && !!c);
    show("rec-start", s.can_record && !!c && !s.recording);
    show("rec-stop", s.can_record && s.recording);
    show("rec-list", s.recordings.length > 0);
    panel.dataset.recording = s.recording ? "1" : "0";
  }

  async function refresh() {
    const resp = await fetch(url, { credentials: "same-origin" }).catch(() => null);
    if (resp && resp.ok) render(await resp.json());
  }
  window.hospitalRecordingRefresh = refresh;

  $("rec-give").addEventListener("click", async () => { await call("/consent"); say(""); refresh(); });
  $("rec-revoke").addEventListener("click", async () => { await call("/consent/revoke"); say(""); refresh(); });
  $("rec-start").addEventListener("click", async () => {
    say("Starting…");
    for (let attempt = 0; attempt < 6; attempt += 1) {
      const { resp, body } = await call("/start");
      const wait = Number(resp.headers.get("Retry-After"));
      // Started, or the consult is moving to the relay: the doctor's own page moves too (no signal to itself).
      if (resp.ok || (resp.status === 409 && wait)) {
        document.dispatchEvent(new CustomEvent("hospital:media-mode", { detail: { mode: "relay", reason: "recording" } }));
      }
      if (resp.ok) { say(""); break; }
      say(body.detail || `Could not start (HTTP ${resp.status}).`);
      if (resp.status !== 409 || !wait) break;
      await new Promise((r) => setTimeout(r, wait * 1000));
    }
    refresh();
  });
  $("rec-stop").addEventListener("click", async () => {
    say("Saving the recording…");
    const { resp, body } = await call("/stop");
    say(resp.ok ? "Recording saved." : body.detail || `HTTP ${resp.status}`);
    refresh();
  });
  refresh();
  setInterval(refresh, 5000);
})();
