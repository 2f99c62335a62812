// Virtual waiting room: live status, the camera warmed up once checked in, the echo device test, and on
// admission the page turns into the consult in place (consult.js) without loading another page.
"use strict";

(() => {
  const root = document.getElementById("waiting");
  if (!root) return;
  const statusText = document.getElementById("status-text");
  const text = JSON.parse(document.getElementById("waiting-text").textContent);
  const consult = window.hospitalConsult && document.getElementById("consult") ? window.hospitalConsult : null;
  let events = null;
  let admittedSeen = false;
  let started = root.dataset.inConsult === "yes";  // admitted already: consult.js started at load

  function warmCamera() {
    if (!consult) return;
    consult.camera().then(() => document.getElementById("camera-ready").classList.remove("hidden"))
      .catch(() => { statusText.textContent += " We could not start your camera: allow access and reload the page."; });
  }

  // ``since``: the event that admitted us; the consult's stream resumes right there (null: a fresh join).
  function enterConsult(since) {
    if (started) return;
    started = true;
    if (events) events.close();
    if (!consult) return;  // clinic staff who checked the patient in: the consult is the patient's
    stopTest("");
    document.getElementById("device-test").classList.add("hidden");
    document.getElementById("camera-ready").classList.add("hidden");
    document.getElementById("page-title").textContent = text.videoConsult;
    statusText.textContent = text.inConsult;
    document.getElementById("consult").classList.remove("hidden");
    consult.start(since);
  }

  // Once checked in, the admission arrives as an event (instant); polling the state stays as a fallback.
  function listen() {
    if (events) return;
    events = new EventSource(root.dataset.eventsUrl);
    events.addEventListener("signal", (e) => {
      if (JSON.parse(e.data).kind === "admit") enterConsult(Number(e.lastEventId));
    });
  }

  async function poll() {
    if (started) return;
    try {
      const resp = await fetch(root.dataset.stateUrl, { credentials: "same-origin" });
      if (resp.ok) {
        const state = await resp.json();
        if (started) return;
        statusText.textContent = state.message;
        // Check-in opens while the page is open: the button appears without a reload.
        document.getElementById("check-in-form")?.classList.toggle("hidden", !state.can_check_in);
        if (state.admitted && !state.ended) {
          // An open stream brings the admit event itself in a moment (and with it where to resume); the poll
          // takes over only if it has not by the next round.
          if (!(events && events.readyState === EventSource.OPEN) || admittedSeen) { enterConsult(null); return; }
          admittedSeen = true;
        }
        if (state.ended) { if (events) events.close(); return; }
        // Checked in elsewhere (by the clinic): load the page once more, now with the consult stage and camera.
        if (state.status === "arrived" && !document.getElementById("consult") && root.dataset.own === "yes") { window.location.reload(); return; }
        if (state.status === "arrived") listen();
      } else {
        statusText.textContent = text.unreachable;
      }
    } catch (err) {
      statusText.textContent = text.dropped;
    }
    setTimeout(poll, 2000);
  }
  if (!started) {
    if (root.dataset.status === "arrived") { listen(); warmCamera(); }
    poll();
  }
  document.addEventListener("hospital:consult-ended", (e) => { statusText.textContent = e.detail.message; });

  // ---- pre-call device and network test (echo through the media service)
  const start = document.getElementById("echo-start");
  const stop = document.getElementById("echo-stop");
  const result = document.getElementById("echo-result");
  let pc = null;
  let stream = null;
  let timer = null;

  function stopTest(message) {
    if (timer) clearInterval(timer);
    timer = null;
    if (pc) pc.close();
    pc = null;
    // The consult's camera stays on for the doctor; a camera of the test's own is switched off.
    if (stream && !consult) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    start.classList.remove("hidden");
    stop.classList.add("hidden");
    if (message) result.textContent = message;
  }

  function gatheringDone(peer) {
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => { if (peer.iceGatheringState === "complete") resolve(); };
      peer.addEventListener("icegatheringstatechange", check);
      setTimeout(resolve, 3000);
    });
  }

  async function measure() {
    if (!pc) return;
    const stats = await pc.getStats();
    let rtt = null, lost = 0, received = 0, fps = null, audio = false;
    stats.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime;
      if (s.type === "inbound-rtp") {
        lost += s.packetsLost || 0;
        received += s.packetsReceived || 0;
        if (s.kind === "video" && s.framesPerSecond !== undefined) fps = s.framesPerSecond;
        if (s.kind === "audio" && (s.packetsReceived || 0) > 0) audio = true;
      }
    });
    const loss = received + lost > 0 ? (100 * lost) / (received + lost) : 0;
    result.dataset.rtt = rtt === null ? "" : String(rtt * 1000);
    result.dataset.loss = String(loss);
    result.dataset.fps = fps === null ? "" : String(fps);
    result.textContent = verdict({ video: received > 0 && fps !== null && fps > 0, audio, rtt, loss });
  }

  // What the test found, in words a patient can act on (the figures stay in data attributes for support).
  function verdict({ video, audio, rtt, loss }) {
    if (!video && !audio) return text.checking;
    const problems = [];
    if (!video) problems.push(text.noVideo);
    if (!audio) problems.push(text.noAudio);
    if (rtt !== null && (rtt > 0.4 || loss > 5)) problems.push(text.slow);
    else if (rtt !== null && (rtt > 0.15 || loss > 1)) problems.push(text.littleSlow);
    if (!problems.length) return text.allGood;
    return problems.join(" ");
  }

  start?.addEventListener("click", async () => {
    if (consult) document.getElementById("camera-ready").classList.remove("hidden");
    start.classList.add("hidden");
    stop.classList.remove("hidden");
    result.textContent = text.starting;
    try {
      stream = await (consult ? consult.camera() : navigator.mediaDevices.getUserMedia({ video: true, audio: true }));
    } catch (err) {
      stopTest(text.noDevices);
      return;
    }
    document.getElementById("echo-local").srcObject = stream;
    pc = new RTCPeerConnection({ iceServers: JSON.parse(root.dataset.ice || "[]") });
    stream.getTracks().forEach((t) => pc.addTrack(t, stream));
    const remote = new MediaStream();
    document.getElementById("echo-remote").srcObject = remote;
    pc.addEventListener("track", (e) => remote.addTrack(e.track));
    pc.addEventListener("connectionstatechange", () => {
      if (pc && pc.connectionState === "failed") stopTest(text.testFailed);
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringDone(pc);
    result.textContent = text.connectingTest;
    const resp = await window.hospitalFetch(root.dataset.echoUrl, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
    });
    if (!resp.ok) {
      const problem = await resp.json().catch(() => ({}));
      stopTest(problem.detail || text.testUnavailable);
      return;
    }
    await pc.setRemoteDescription(await resp.json());
    timer = setInterval(measure, 1000);
    setTimeout(() => { if (pc) stopTest(`${result.textContent} ${text.testFinished}`); }, 30000);
  });
  stop?.addEventListener("click", () => stopTest(result.textContent + " You stopped the test."));
})();
