// Poor connections in the consult room. Once a second consult.js hands over the call's getStats() report:
// while the network struggles the video we send steps down (resolution, frame rate, bitrate through
// RTCRtpSender.setParameters); when even the lowest step is too much the page suggests audio only. Audio only
// stops the cameras on both sides (a "media" signal tells the other side, which sees "Camera off, audio only"),
// and when the connection has been good for a while the page offers video again.
"use strict";

(() => {
  // Steps of the video we send, best first. The last one still shows a face; below it, audio only.
  const LEVELS = [
    { scaleResolutionDownBy: 1, maxFramerate: 30, maxBitrate: 1_000_000 },
    { scaleResolutionDownBy: 2, maxFramerate: 15, maxBitrate: 300_000 },
    { scaleResolutionDownBy: 4, maxFramerate: 8, maxBitrate: 100_000 },
  ];
  const POOR_TO_STEP_DOWN = 3;  // seconds of a poor connection before the video steps down
  const POOR_TO_SUGGEST = 4;  // further seconds at the lowest step before audio only is suggested
  const GOOD_TO_STEP_UP = 10;  // seconds of a good connection before the video steps up (or video is offered)
  const LOSS_POOR = 0.05;  // more than 5 % of packets lost in a second, either way
  const BITRATE_POOR = 80_000;  // the path estimates fewer bits per second than this for what we send

  // ``ctx``: peer() the active RTCPeerConnection or null, localStream(), send(kind, extra) a signal,
  // announce(text) to screen readers, and the elements below in ``ui``.
  function init(ctx) {
    const ui = {
      root: document.getElementById("consult"),
      stage: document.querySelector("#consult .stage"),
      remoteNote: document.getElementById("remote-camera-off"),
      suggestion: document.getElementById("quality-suggestion"),
      suggestionText: document.getElementById("quality-suggestion-text"),
      accept: document.getElementById("quality-accept"),
      dismiss: document.getElementById("quality-dismiss"),
      audioOnly: document.getElementById("toggle-audio-only"),
      camera: document.getElementById("toggle-cam"),
    };
    const state = { level: 0, poor: 0, good: 0, camera: true, audioOnly: false, remoteCamera: true,
                    suggested: null, dismissedAt: 0, history: [] };

    function videoSender(peer) {
      return peer ? peer.getSenders().find((s) => s.track && s.track.kind === "video") : null;
    }

    // The sender's encoding as the current step and camera state want it (set only when it differs, one change
    // at a time: a second setParameters before the first settles would be refused).
    let applying = false;
    let again = false;
    async function applyTo(peer) {
      const sender = videoSender(peer);
      if (!sender) return;
      if (applying) { again = true; return; }
      const params = sender.getParameters();
      if (!params.encodings || !params.encodings.length) return;  // not negotiated yet
      const want = { ...LEVELS[state.level], active: state.camera };
      const enc = params.encodings[0];
      if (Object.keys(want).every((k) => enc[k] === want[k])) return;
      Object.assign(enc, want);
      applying = true;
      try {
        await sender.setParameters(params);
      } catch (err) {
        console.warn("setParameters", err);
      } finally {
        applying = false;
        if (again) { again = false; applyTo(ctx.peer()); }
      }
    }

    function render() {
      ui.root.dataset.videoLevel = String(state.level);
      ui.root.dataset.audioOnly = state.audioOnly ? "yes" : "no";
      ui.root.dataset.camera = state.camera ? "on" : "off";
      ui.audioOnly.setAttribute("aria-pressed", String(state.audioOnly));
      ui.audioOnly.textContent = state.audioOnly ? ctx.text.backToVideo : ctx.text.audioOnly;
      ui.camera.setAttribute("aria-pressed", String(!state.camera));
      ui.camera.textContent = state.camera ? ctx.text.cameraOff : ctx.text.cameraOn;
      const remoteOff = state.audioOnly || !state.remoteCamera;
      ui.remoteNote.classList.toggle("hidden", !remoteOff);
      ui.remoteNote.textContent = state.audioOnly ? ctx.text.audioOnlyNote : ctx.text.remoteCameraOff;
      ui.stage.classList.toggle("audio-only", remoteOff);
    }

    function setCamera(on) {
      state.camera = on;
      const track = ctx.localStream()?.getVideoTracks()[0];
      if (track) track.enabled = on;
      applyTo(ctx.peer());
    }

    function tell() {
      return ctx.send("media", { camera: state.camera, audio_only: state.audioOnly }).catch(() => {});
    }

    function suggest(kind) {
      state.suggested = kind;
      if (!kind) { ui.suggestion.classList.add("hidden"); return; }
      ui.suggestionText.textContent = kind === "audio" ? ctx.text.suggestAudio : ctx.text.suggestVideo;
      ui.accept.textContent = kind === "audio" ? ctx.text.audioOnly : ctx.text.backToVideo;
      ui.suggestion.classList.remove("hidden");
      ctx.announce(ui.suggestionText.textContent);
    }

    // Audio only for the whole call: ours (``fromUs``) is told to the other side; theirs we follow.
    function setAudioOnly(on, { fromUs = true } = {}) {
      if (state.audioOnly === on) return;
      state.audioOnly = on;
      state.poor = 0;
      state.good = 0;
      suggest(null);
      setCamera(!on);
      if (!on) state.remoteCamera = true;
      render();
      ctx.announce(on ? ctx.text.announceAudioOnly : ctx.text.announceVideo);
      if (fromUs) tell();
    }

    // Loss in the last seconds, either way: of what we receive (our inbound counters) and of what we send (the
    // other side's receiver reports against our packets sent), and the bitrate the path allows for sending.
    function measure(report) {
      const now = { inLost: 0, inReceived: 0, outLost: 0, outSent: 0, available: null, audioPackets: 0 };
      report.forEach((s) => {
        if (s.type === "inbound-rtp") {
          now.inLost += Math.max(0, s.packetsLost || 0);
          now.inReceived += s.packetsReceived || 0;
          if (s.kind === "audio") now.audioPackets += s.packetsReceived || 0;
        }
        if (s.type === "remote-inbound-rtp") now.outLost += Math.max(0, s.packetsLost || 0);
        if (s.type === "outbound-rtp") now.outSent += s.packetsSent || 0;
        if (s.type === "candidate-pair" && s.nominated && s.availableOutgoingBitrate !== undefined) {
          now.available = s.availableOutgoingBitrate;
        }
      });
      // Against the counters of up to three seconds ago: receiver reports come late and in bursts.
      state.history.push(now);
      if (state.history.length > 4) state.history.shift();
      const last = state.history[0];
      if (last === now) return null;
      const inLost = now.inLost - last.inLost;
      const inTotal = inLost + now.inReceived - last.inReceived;
      const outSent = now.outSent - last.outSent;
      const loss = Math.max(inTotal > 0 ? inLost / inTotal : 0,
                            outSent > 0 ? Math.min(1, (now.outLost - last.outLost) / outSent) : 0);
      return { loss, available: now.available, audioPackets: now.audioPackets };
    }

    function sample(report) {
      const m = measure(report);
      if (!m) return;
      const sendingVideo = state.camera && !state.audioOnly;
      const poor = m.loss > LOSS_POOR || (sendingVideo && m.available !== null && m.available < BITRATE_POOR);
      ui.root.dataset.loss = m.loss.toFixed(3);
      ui.root.dataset.audioPackets = String(m.audioPackets);
      state.poor = poor ? state.poor + 1 : 0;
      state.good = poor ? 0 : state.good + 1;
      if (state.audioOnly) {
        if (state.good >= GOOD_TO_STEP_UP && state.suggested !== "video") suggest("video");
        if (poor && state.suggested === "video") suggest(null);
      } else if (poor && state.level < LEVELS.length - 1 && state.poor >= POOR_TO_STEP_DOWN) {
        state.level += 1;
        state.poor = 0;
        render();
      } else if (poor && state.level === LEVELS.length - 1 && state.poor >= POOR_TO_SUGGEST
                 && !state.suggested && Date.now() - state.dismissedAt > 60_000) {
        suggest("audio");
      } else if (!poor && state.good >= GOOD_TO_STEP_UP && state.level > 0) {
        state.level -= 1;
        state.good = 0;
        if (state.suggested === "audio") suggest(null);
        render();
      }
      applyTo(ctx.peer());
    }

    ui.accept.addEventListener("click", () => setAudioOnly(state.suggested === "audio"));
    ui.dismiss.addEventListener("click", () => { state.dismissedAt = Date.now(); suggest(null); });
    ui.audioOnly.addEventListener("click", () => setAudioOnly(!state.audioOnly));
    ui.camera.addEventListener("click", () => {
      if (state.audioOnly) { setAudioOnly(false); return; }
      setCamera(!state.camera);
      render();
      tell();
    });
    render();

    return {
      sample,
      applyTo,
      // A "media" signal from the other side.
      handle(msg) {
        if (msg.kind !== "media") return false;
        if (msg.audio_only !== state.audioOnly) setAudioOnly(Boolean(msg.audio_only), { fromUs: false });
        if (state.remoteCamera !== Boolean(msg.camera)) {
          state.remoteCamera = Boolean(msg.camera);
          render();
          if (!state.audioOnly) ctx.announce(state.remoteCamera ? ctx.text.remoteCameraOn : ctx.text.remoteCameraOff);
        }
        return true;
      },
      // A new connection (a reconnect): fresh counters, the current step, and the other side hears our camera.
      connected() {
        state.history = [];
        applyTo(ctx.peer());
        if (!state.camera || state.audioOnly) tell();
      },
    };
  }

  window.hospitalQuality = { init, LEVELS };
})();
