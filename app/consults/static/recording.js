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
  // The words come from the page, in the reader's language (_recording.html); {name} and {status} are filled in.
  const words = JSON.parse(document.getElementById("recording-text")?.textContent || "{}");
  const t = (key, fallback, values = {}) => (words[key] || fallback).replace(/\{(\w+)\}/g, (_, k) => String(values[k]));

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
      $("rec-consent").textContent = !c
        ? t("selfNone", "This consult is not recorded. It is recorded only if you agree.")
        : c.on_behalf
          ? t("selfAgreedBy", "You agreed to this consult being recorded ({name} recorded your agreement). You can withdraw at any time.", {name: c.given_by})
          : t("selfAgreed", "You agreed to this consult being recorded. You can withdraw at any time.");
    } else {
      $("rec-consent").textContent = !c
        ? t("patientNone", "The patient has not agreed to recording. Nothing is recorded without consent.")
        : c.on_behalf
          ? t("patientAgreedBy", "The patient agreed to recording (recorded by {name} on their behalf).", {name: c.given_by})
          : t("patientAgreed", "The patient agreed to recording.");
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
    say(t("starting", "Starting…"));
    for (let attempt = 0; attempt < 6; attempt += 1) {
      const { resp, body } = await call("/start");
      const wait = Number(resp.headers.get("Retry-After"));
      // Started, or the consult is moving to the relay: the doctor's own page moves too (no signal to itself).
      if (resp.ok || (resp.status === 409 && wait)) {
        document.dispatchEvent(new CustomEvent("hospital:media-mode", { detail: { mode: "relay", reason: "recording" } }));
      }
      if (resp.ok) { say(""); break; }
      say(body.detail || t("couldNotStart", "Could not start (HTTP {status}).", {status: resp.status}));
      if (resp.status !== 409 || !wait) break;
      await new Promise((r) => setTimeout(r, wait * 1000));
    }
    refresh();
  });
  $("rec-stop").addEventListener("click", async () => {
    say(t("saving", "Saving the recording…"));
    const { resp, body } = await call("/stop");
    say(resp.ok ? t("saved", "Recording saved.") : body.detail || `HTTP ${resp.status}`);
    refresh();
  });
  refresh();
  setInterval(refresh, 5000);
})();
