// Virtual waiting room: live status, the camera warmed up once checked in, the echo device test, and on
// admission the page turns into the consult in place (consult.js) without loading another page.
"use strict";

(() => {
  const root = document.getElementById("waiting");
  if (!root) return;
  const statusText = document.getElementById("status-text");
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
    document.getElementById("page-title").textContent = "Video consult";
    statusText.textContent = "You are in the consult with the doctor.";
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
        statusText.textContent = "We cannot reach the hospital right now; retrying…";
      }
    } catch (err) {
      statusText.textContent = "Your connection dropped; retrying…";
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
    if (!video && !audio) return "Checking… your picture and sound have not come back yet.";
    const problems = [];
    if (!video) problems.push("your camera's picture did not come back: check that the camera is not covered or used by another program");
    if (!audio) problems.push("no sound came back from your microphone: check that it is not muted");
    if (rtt !== null && (rtt > 0.4 || loss > 5)) problems.push("your connection is slow, so the picture may freeze: move closer to your Wi-Fi or close other programs");
    else if (rtt !== null && (rtt > 0.15 || loss > 1)) problems.push("your connection is a little slow, but the consult should work");
    if (!problems.length) return "Everything works: the doctor will see and hear you clearly.";
    const text = problems.join("; and ");
    return text.charAt(0).toUpperCase() + text.slice(1) + ".";
  }

  start?.addEventListener("click", async () => {
    if (consult) document.getElementById("camera-ready").classList.remove("hidden");
    start.classList.add("hidden");
    stop.classList.remove("hidden");
    result.textContent = "Starting your camera and microphone…";
    try {
      stream = await (consult ? consult.camera() : navigator.mediaDevices.getUserMedia({ video: true, audio: true }));
    } catch (err) {
      stopTest("We could not use your camera or microphone. Allow access in your browser and try again.");
      return;
    }
    document.getElementById("echo-local").srcObject = stream;
    pc = new RTCPeerConnection({ iceServers: JSON.parse(root.dataset.ice || "[]") });
    stream.getTracks().forEach((t) => pc.addTrack(t, stream));
    const remote = new MediaStream();
    document.getElementById("echo-remote").srcObject = remote;
    pc.addEventListener("track", (e) => remote.addTrack(e.track));
    pc.addEventListener("connectionstatechange", () => {
      if (pc && pc.connectionState === "failed") stopTest("The connection test failed: your network may block video calls.");
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringDone(pc);
    result.textContent = "Connecting to the test service…";
    const resp = await window.hospitalFetch(root.dataset.echoUrl, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
    });
    if (!resp.ok) {
      const problem = await resp.json().catch(() => ({}));
      stopTest(problem.detail || "The test service is not available right now.");
      return;
    }
    await pc.setRemoteDescription(await resp.json());
    timer = setInterval(measure, 1000);
    setTimeout(() => { if (pc) stopTest(result.textContent + " The test has finished."); }, 30000);
  });
  stop?.addEventListener("click", () => stopTest(result.textContent + " You stopped the test."));
})();
