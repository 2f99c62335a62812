// The consult room: peer-to-peer video with signaling through the app (HTTP + Server-Sent Events).
// The doctor makes every offer; the patient answers. After a network drop either side rejoins and a
// fresh offer (a new peer connection) restores the call.
"use strict";

(() => {
  const root = document.getElementById("consult");
  if (!root) return;
  const base = root.dataset.base;
  const isDoctor = root.dataset.role === "doctor";
  const localVideo = document.getElementById("local-video");
  const remoteVideo = document.getElementById("remote-video");
  const remoteStatus = document.getElementById("remote-status");
  const quality = document.getElementById("quality");
  const chatLog = document.getElementById("chat-log");
  const announcer = document.getElementById("call-announcer");
  const text = JSON.parse(document.getElementById("consult-text").textContent);
  // Time to first picture (wall clock, ms), read by benchmarks/consults.py.
  remoteVideo.addEventListener("playing", () => {
    if (!remoteVideo.dataset.firstFrameAt) remoteVideo.dataset.firstFrameAt = String(Date.now());
  });

  let localStream = null;
  let pc = null;
  let gen = null;
  let iceServers = [];
  let events = null;
  let pendingCandidates = [];
  let ended = false;
  let joining = false;
  let reconnectTimer = null;
  let offerSinceJoin = false;
  let offerId = 0;  // signal id of our latest offer (the doctor)
  let offerInFlight = Promise.resolve();
  let listeningSince = null;  // in place: the id this page's stream has read from since before it joined
  let joined = Promise.resolve();  // sends wait until the join that precedes them is done
  // Relay mode (relay.js): groups, recordings, and the fallback when peer to peer does not connect.
  const relay = window.hospitalRelay.init({
    api, setStatus, finish: (message) => finish(message), ended: () => ended,
    localStream: () => localStream, iceServers: () => iceServers, timeout: () => Number(root.dataset.p2pTimeout) || 5,
    closePeer: () => { clearTimeout(reconnectTimer); if (pc) pc.close(); pc = null; },
  });
  // Poor connections (quality.js): the video steps down, audio only is suggested, either side can turn it on.
  const network = window.hospitalQuality.init({
    peer: () => relay.pc() || pc, localStream: () => localStream, announce, text,
    send: (kind, extra) => send(kind, extra),
  });

  async function api(method, path, body) {
    const resp = await window.hospitalFetch(base + path, {
      method, headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    if (!resp.ok) {
      const problem = await resp.json().catch(() => ({}));
      const err = new Error(problem.detail || `HTTP ${resp.status}`);
      err.status = resp.status;
      throw err;
    }
    return resp.status === 204 ? null : resp.json();
  }

  let holdCandidates = false;  // the prepared offer's candidates go inside its SDP, not one by one
  let descriptionInFlight = Promise.resolve();
  const send = (kind, extra = {}) => {
    const tagged = { kind, gen, ...extra };  // the connection this belongs to, before any wait
    if (kind === "candidate" && holdCandidates) return Promise.resolve(null);
    // Candidates never overtake their offer or answer: the other side drops candidates of a connection it
    // does not know yet, and an answer queued behind them would come later.
    const before = kind === "candidate" ? descriptionInFlight : Promise.resolve();
    const request = Promise.all([joined, before.catch(() => {})]).then(() => api("POST", "/signals", tagged));
    if (kind === "offer" || kind === "answer") descriptionInFlight = request;
    return request;
  };

  function setStatus(message) {
    remoteStatus.textContent = message;
    remoteStatus.classList.toggle("hidden", !message);
    if (message) announce(message);
  }

  // Screen readers hear each change of the call's state once, through one polite live region.
  function announce(message) {
    if (announcer.textContent !== message) announcer.textContent = message;
  }

  function newPeer(generation) {
    if (pc) pc.close();
    pendingCandidates = [];
    gen = generation;
    pc = new RTCPeerConnection({ iceServers });
    window.hospitalConsultPc = pc;
    relay.watchP2P(pc);
    localStream.getTracks().forEach((t) => pc.addTrack(t, localStream));
    pc.addEventListener("track", (e) => {
      const stream = e.streams[0] || new MediaStream([e.track]);
      if (remoteVideo.srcObject !== stream) remoteVideo.srcObject = stream;
      // Browsers may block autoplay with sound on a page the user has not clicked yet.
      remoteVideo.play().catch(() => setStatus(text.clickToPlay));
    });

    pc.addEventListener("icecandidate", (e) => {
      send("candidate", { candidate: e.candidate ? e.candidate.toJSON() : null }).catch(() => {});
    });
    pc.addEventListener("connectionstatechange", () => {
      if (relay.active || !pc) return;
      const state = pc.connectionState;
      if (state === "connected") {
        setStatus("");
        clearTimeout(reconnectTimer);
        announce(text.connected);
        network.connected();
      }
      if (state === "disconnected" || state === "failed") {
        setStatus(text.connectionLost);
        announce(text.reconnecting);
        scheduleReconnect(state === "failed" ? 0 : 3000);
      }
    });
    return pc;
  }

  async function makeOffer() {
    const peer = newPeer(Math.random().toString(36).slice(2));
    await peer.setLocalDescription(await peer.createOffer());
    await sendOffer(peer);
  }

  function sendOffer(peer) {
    holdCandidates = false;  // from here on candidates follow the offer (those gathered so far are in its SDP)
    offerInFlight = send("offer", { sdp: peer.localDescription.sdp }).then((r) => { offerId = r.id; });
    return offerInFlight;
  }

  async function onOffer(msg) {
    offerSinceJoin = true;
    const peer = newPeer(msg.gen);
    await peer.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    for (const c of pendingCandidates) await peer.addIceCandidate(c).catch(() => {});
    pendingCandidates = [];
    await peer.setLocalDescription(await peer.createAnswer());
    await send("answer", { sdp: peer.localDescription.sdp });
  }

  async function handle(msg) {
    if (network.handle(msg) || relay.handle(msg)) return;
    switch (msg.kind) {
      case "hello":
        if (isDoctor) {
          // A page that has been listening since before our latest offer gets that one: no fresh offer needed.
          await offerInFlight.catch(() => {});
          if (!(msg.since && offerId > msg.since)) { setStatus(text.connecting); await makeOffer(); }
        } else if (listeningSince !== null && !offerSinceJoin) {
          // The doctor came in after our admission and may have missed our hello: say it again (it is idempotent).
          await send("hello", { since: listeningSince });
        }
        break;
      case "offer":
        if (!isDoctor) await onOffer(msg);
        break;
      case "answer":
        if (isDoctor && pc && msg.gen === gen && pc.signalingState === "have-local-offer") {
          await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
          for (const c of pendingCandidates) await pc.addIceCandidate(c).catch(() => {});
          pendingCandidates = [];
        }
        break;
      case "candidate":
        if (pc && msg.gen === gen && msg.candidate) {
          if (pc.remoteDescription) await pc.addIceCandidate(msg.candidate).catch(() => {});
          else pendingCandidates.push(msg.candidate);
        }
        break;
      case "chat":
        addChat(msg.name, msg.body);
        break;
      case "bye":
        if (msg.reason === "ended") finish(text.ended);
        else setStatus(text.otherLeft);
        break;
    }
  }

  function addChat(name, body) {
    const li = document.createElement("li");
    const who = document.createElement("strong");
    who.textContent = name;
    li.append(who, `: ${body}`);
    chatLog.append(li);
    chatLog.scrollTop = chatLog.scrollHeight;
  }

  function openEvents(after) {
    if (events) events.close();
    events = new EventSource(`${base}/events?after=${after}`);
    // Messages are handled one at a time, in order.
    let chain = Promise.resolve();
    events.addEventListener("signal", (e) => {
      const msg = JSON.parse(e.data);
      chain = chain.then(() => handle(msg)).catch((err) => console.warn("signal", msg.kind, err));
    });
  }

  // ``since``: the page has read this consult's signals after that id already (a waiting room admitted in
  // place), so the stream resumes there, before the join, and an offer the doctor sent meanwhile is not lost.
  async function join(since = null) {
    if (joining || ended) return;
    joining = true;
    let joinDone;
    joined = new Promise((resolve) => { joinDone = resolve; });
    try {
      offerSinceJoin = false;
      listeningSince = since;
      if (since !== null) openEvents(since);
      const { token } = await api("POST", "/token");
      const info = await api("POST", "/join", { token, since });
      joinDone();
      iceServers = info.ice_servers;
      if (since === null) openEvents(info.after);
      if (relay.afterJoin(info)) return;
      const other = info.participants.find((p) => p.present);
      if (isDoctor && other) await makeOffer();
      else if (other && since === null) {
        // Joined at the same moment as the doctor, who may not have seen us: ask for an offer if none comes.
        setTimeout(() => { if (!offerSinceJoin && !ended) send("hello").catch(() => {}); }, 1000);
      }
      else if (!other) setStatus(isDoctor ? (admitBar?.isConnected ? "" : text.waitingPatient) : text.waitingDoctor);
      if (isDoctor && admitBar?.isConnected && !other) await prepareOffer();
    } catch (err) {
      if (err.status === 409) finish(err.message);
      else { setStatus(text.unreachable); scheduleReconnect(2000); }
    } finally {
      joinDone();
      joining = false;
    }
  }

  // The doctor's prepared room: before Admit, the peer connection exists with its offer made and its ICE
  // candidates gathered, so Admit sends a complete offer at once.
  const admitBar = document.getElementById("admit-bar");
  let prepared = null;

  async function prepareOffer() {
    const peer = newPeer(Math.random().toString(36).slice(2));
    prepared = peer;
    holdCandidates = true;
    const gathered = () => { if (peer.iceGatheringState === "complete") admitBar.dataset.ready = "yes"; };
    peer.addEventListener("icegatheringstatechange", gathered);
    await peer.setLocalDescription(await peer.createOffer());
    gathered();
  }

  async function admitHere(button) {
    button.disabled = true;
    try {
      await api("POST", "/admit");
    } catch (err) {
      button.disabled = false;
      setStatus(err.message);
      return;
    }
    admitBar.remove();
    setStatus(text.connecting);
    if (prepared && prepared === pc && pc.signalingState === "have-local-offer") {
      await sendOffer(pc);
    } else {
      await makeOffer();
    }
  }
  document.getElementById("admit-now")?.addEventListener("click", (e) => {
    admitHere(e.currentTarget).catch((err) => setStatus(err.message));
  });

  function scheduleReconnect(delay) {
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(async () => {
      if (ended || relay.active || (pc && pc.connectionState === "connected")) return;
      if (isDoctor) {
        try { await makeOffer(); } catch (err) { await join(); }
      } else {
        try { await send("hello"); } catch (err) { await join(); }
      }
      scheduleReconnect(5000);
    }, delay);
  }

  function finish(message) {
    ended = true;
    clearTimeout(reconnectTimer);
    if (events) events.close();
    relay.stop();
    if (pc) pc.close();
    if (localStream) localStream.getTracks().forEach((t) => t.stop());
    setStatus(message);
    // Nothing live is left on the page: no mute, camera, device or leave controls, no chat box.
    root.dataset.ended = "yes";
    document.querySelectorAll(".controls, #chat-form, #local-video, #admit-bar, #quality-suggestion").forEach((el) => el.classList.add("hidden"));
    document.querySelectorAll(".controls button, #chat-form button").forEach((b) => { b.disabled = true; });
    document.getElementById("consult-over")?.classList.remove("hidden");
    document.dispatchEvent(new CustomEvent("hospital:consult-ended", { detail: { message } }));
  }

  async function stats() {
    const peer = relay.pc() || pc;
    if (!peer || ended) return;
    const report = await peer.getStats();
    relay.tileStats(report);
    network.sample(report);
    let rtt = null, lost = 0, received = 0, fps = null, decoded = 0;
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime;
      if (s.type === "inbound-rtp") {
        lost += s.packetsLost || 0;
        received += s.packetsReceived || 0;
        if (s.kind === "video") { fps = s.framesPerSecond ?? fps; decoded += s.framesDecoded || 0; }
      }
    });
    const loss = received + lost > 0 ? (100 * lost) / (received + lost) : 0;
    quality.dataset.framesDecoded = String(decoded);
    quality.textContent = `RTT ${rtt === null ? "–" : Math.round(rtt * 1000)} ms · loss ${loss.toFixed(1)} % · ${fps === null ? "–" : Math.round(fps)} fps`;
    quality.className = "quality " + (rtt === null ? "" : loss > 5 || rtt > 0.4 ? "poor" : loss > 1 || rtt > 0.15 ? "fair" : "good");
  }

  async function listDevices() {
    const devices = await navigator.mediaDevices.enumerateDevices();
    for (const [kind, id] of [["videoinput", "camera-select"], ["audioinput", "mic-select"]]) {
      const select = document.getElementById(id);
      select.replaceChildren();
      const current = localStream.getTracks().find((t) => (t.kind === "video") === (kind === "videoinput"));
      devices.filter((d) => d.kind === kind).forEach((d, i) => {
        const option = new Option(d.label || `${kind === "videoinput" ? "Camera" : "Microphone"} ${i + 1}`, d.deviceId);
        option.selected = current && current.getSettings().deviceId === d.deviceId;
        select.append(option);
      });
      select.addEventListener("change", () => switchDevice(kind === "videoinput" ? "video" : "audio", select.value));
    }
  }

  async function switchDevice(kind, deviceId) {
    const fresh = await navigator.mediaDevices.getUserMedia({ [kind]: { deviceId: { exact: deviceId } } });
    const track = fresh.getTracks()[0];
    const old = localStream.getTracks().find((t) => t.kind === kind);
    if (old) { localStream.removeTrack(old); old.stop(); }
    localStream.addTrack(track);
    const peer = relay.pc() || pc;
    // (A relay connection's track-less senders belong to receive-only m-lines.)
    if (peer) peer.getSenders().filter((s) => s.track && s.track.kind === kind || (!s.track && old && !relay.active))
      .forEach((s) => s.replaceTrack(track));
  }

  remoteVideo.addEventListener("click", () => remoteVideo.play().then(() => setStatus("")).catch(() => {}));
  document.getElementById("toggle-mic").addEventListener("click", (e) => {
    const track = localStream?.getAudioTracks()[0];
    if (!track) return;
    track.enabled = !track.enabled;
    e.currentTarget.textContent = track.enabled ? text.mute : text.unmute;
    e.currentTarget.setAttribute("aria-pressed", String(!track.enabled));
    announce(track.enabled ? text.unmuted : text.muted);
  });
  // The camera button and audio only: quality.js.
  document.getElementById("leave").addEventListener("click", async () => {
    const question = isDoctor ? text.leaveDoctor
      : text.leavePatient;
    if (!window.confirm(question)) return;
    await api("POST", "/leave").catch(() => {});
    finish(text.left);
    window.location.assign(root.dataset.exitUrl);
  });
  document.getElementById("chat-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = document.getElementById("chat-input");
    const body = input.value.trim();
    if (!body) return;
    try {
      const msg = await api("POST", "/chat", { body });
      addChat(msg.sender_name, msg.body);
      input.value = "";
    } catch (err) { addChat(text.notSent, err.message); }
  });
  document.getElementById("save-note")?.addEventListener("click", async () => {
    const status = document.getElementById("note-status");
    try {
      await api("POST", "/note", { notes: document.getElementById("notes").value,
                                   diagnosis: document.getElementById("diagnosis").value });
      status.textContent = text.saved;
    } catch (err) { status.textContent = err.message; }
  });
  window.addEventListener("online", () => { if (!ended) { setStatus(text.backOnline); join(); } });

  // The camera, started once: the waiting room warms it up (check-in, device test) before the consult needs it.
  let camera = null;
  function startCamera() {
    camera = camera || navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    return camera;
  }

  async function start(since = null) {
    try {
      localStream = await startCamera();
    } catch (err) {
      camera = null;
      setStatus(text.noDevices);
      return;
    }
    localVideo.srcObject = localStream;
    // On a phone the call takes the whole screen, its buttons in the bar at the bottom.
    if (window.matchMedia("(max-width: 760px)").matches) root.querySelector(".stage").scrollIntoView({ block: "start" });
    listDevices().catch(() => {});
    await join(since);
    setInterval(stats, 1000);
  }

  // The waiting room starts the consult in place when the doctor admits (see waiting.js).
  window.hospitalConsult = { camera: startCamera, start: (since) => start(since ?? null) };
  if (root.dataset.start !== "on-admit") start();
})();
