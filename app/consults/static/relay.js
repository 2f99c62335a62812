// Relay mode of the consult page: one peer connection to the hospital's media server, which forwards every
// participant's audio and video to all the others (media/relay.py). Used when three or more people are in
// the consult, when it is recorded, and when peer to peer does not connect in time. The page offers its own
// camera and microphone plus one receive-only audio+video pair per further participant; the answer says
// which m-line carries whom (`tracks`), and a tile per participant shows it. consult.js calls the hooks below.
"use strict";

window.hospitalRelay = (() => {
  // The words come from the page, in the reader's language (the consult-text block of _stage.html).
  const text = JSON.parse(document.getElementById("consult-text")?.textContent || "{}");
  const REASONS = { "p2p-failed": text.relayP2pFailed, recording: text.relayRecording, group: text.relayGroup };
  let ctx = null;  // from consult.js: api, setStatus, finish, closePeer, ended, localStream, iceServers, timeout
  let active = false;
  let removed = false;
  let pc = null;
  let fresh = true;  // the next offer comes from a new peer connection: the relay must drop the old one
  let myId = null;
  const present = new Set();  // user ids (strings) of the others in the consult
  let names = new Map();  // user id → tile label (from the relay answer)
  let pairsWanted = 1;
  let busy = false;
  let again = false;
  let retryTimer = null;
  let retries = 0;
  let p2pTimer = null;
  let lostTimer = null;

  const tiles = () => document.getElementById("tiles");

  function showMode(reason) {
    const label = document.getElementById("media-mode");
    label.dataset.mode = "relay";
    if (!label.dataset.since) label.dataset.since = String(Date.now());
    label.dataset.reason = reason || "";
    label.textContent = REASONS[reason] ? text.relayedWhy.replace("%(reason)s", REASONS[reason]) : text.relayed;
  }

  function play(video) {
    // Autoplay with sound may be blocked on a page the user has not clicked yet: start muted, offer sound.
    video.play().catch(() => {
      video.muted = true;
      video.play().catch(() => {});
      ctx.setStatus(text.relaySound);
    });
  }

  function localTile() {
    const figure = document.createElement("figure");
    figure.className = "tile local";
    const caption = document.createElement("figcaption");
    caption.textContent = text.you;
    figure.append(document.getElementById("local-video"), caption);
    tiles().append(figure);
  }

  function remoteTile(who) {
    let tile = tiles().querySelector(`.tile.remote[data-participant-id="${CSS.escape(who)}"]`);
    if (tile) return tile;
    tile = document.createElement("figure");
    tile.className = "tile remote";
    tile.dataset.participantId = who;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    video.dataset.framesDecoded = "0";
    // Time to first picture (wall clock, ms), as on the peer-to-peer video.
    video.addEventListener("playing", () => { if (!video.dataset.firstFrameAt) video.dataset.firstFrameAt = String(Date.now()); });
    video.addEventListener("click", () => { video.muted = false; video.play().then(() => ctx.setStatus("")).catch(() => {}); });
    tile.append(video, document.createElement("figcaption"));
    tiles().querySelector(".tile.local").before(tile);
    return tile;
  }

  function dropTile(who) {
    tiles().querySelector(`.tile.remote[data-participant-id="${CSS.escape(who)}"]`)?.remove();
    tiles().dataset.count = String(tiles().children.length);
  }

  /** Show the answer's `tracks`: one tile per other participant, fed by the m-lines that carry them. */
  function render(answer) {
    names = new Map((answer.participants || []).map((p) => [String(p.user_id), p.name]));
    const byMid = new Map(pc.getTransceivers().map((t) => [t.mid, t]));
    const carried = new Map();
    for (const t of answer.tracks) {
      const who = t.participant_id;
      if (!who || who === myId || !byMid.has(t.mid)) continue;
      carried.set(who, { ...carried.get(who), [t.kind]: byMid.get(t.mid).receiver.track });
    }
    for (const [who, media] of carried) {
      const tile = remoteTile(who);
      tile.querySelector("figcaption").textContent = names.get(who) || text.participant;
      const tracks = [media.video, media.audio].filter(Boolean);
      const video = tile.querySelector("video");
      video.dataset.track = media.video ? media.video.id : "";
      if (!video.srcObject) {
        video.srcObject = new MediaStream(tracks);
        play(video);
      } else {  // keep the element playing: change the stream's tracks, not the stream
        const stream = video.srcObject;
        stream.getTracks().filter((t) => !tracks.includes(t)).forEach((t) => stream.removeTrack(t));
        tracks.filter((t) => !stream.getTracks().includes(t)).forEach((t) => stream.addTrack(t));
      }
    }
    tiles().querySelectorAll(".tile.remote").forEach((tile) => {
      if (!carried.has(tile.dataset.participantId)) tile.remove();
    });
    tiles().dataset.count = String(tiles().children.length);
    const videoPairs = pc.getTransceivers().filter((t) => t.receiver.track.kind === "video").length;
    const unseen = [...present].filter((who) => !carried.has(who)).length;
    if (answer.missing > 0) {
      pairsWanted = videoPairs + Math.ceil(answer.missing / 2);
      schedule(300);
    } else if (unseen > 0) {
      // Someone is in the consult but their media has not reached the relay yet: ask again shortly.
      schedule(retries < 6 ? 500 : retries < 20 ? 1500 : 10000);
    } else {
      retries = 0;
    }
    if (!carried.size) ctx.setStatus(text.relayWaiting);
    else if (pc.connectionState === "connected") ctx.setStatus("");
  }

  function schedule(delay) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => { retries += 1; negotiate(); }, delay);
  }

  function gathered(peer) {
    // The relay takes complete offers only (no trickled candidates).
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => { if (peer.iceGatheringState === "complete") resolve(); };
      peer.addEventListener("icegatheringstatechange", check);
      setTimeout(resolve, 3000);
    });
  }

  function newPeer() {
    if (pc) pc.close();
    const peer = new RTCPeerConnection({ iceServers: ctx.iceServers(), bundlePolicy: "max-bundle" });
    pc = peer;
    fresh = true;
    const stream = ctx.localStream();
    stream.getTracks().forEach((t) => peer.addTrack(t, stream));
    peer.addEventListener("connectionstatechange", () => {
      if (peer !== pc || !active) return;
      clearTimeout(lostTimer);
      if (peer.connectionState === "connected") {
        if (tiles().querySelector(".tile.remote")) ctx.setStatus("");
      } else if (peer.connectionState === "failed") {
        ctx.setStatus(text.relayLost);
        schedule(500);
      } else if (peer.connectionState === "disconnected") {
        // Say so at once (the picture has stopped); a new connection follows unless this one recovers.
        ctx.setStatus(text.relayLost);
        lostTimer = setTimeout(() => {
          if (peer !== pc || peer.connectionState === "connected") return;
          ctx.setStatus(text.relayLost);
          peer.close();
          negotiate();
        }, 4000);
      }
    });
  }

  /** Offer (again) on the relay connection: first join, someone came or went, or media still missing. */
  async function negotiate() {
    if (!active || ctx.ended()) return;
    if (busy) { again = true; return; }
    busy = true;
    clearTimeout(retryTimer);
    try {
      if (!pc || pc.connectionState === "failed" || pc.connectionState === "closed") newPeer();
      const want = Math.max(1, present.size, pairsWanted);
      let pairs = pc.getTransceivers().filter((t) => t.receiver.track.kind === "video").length;
      for (; pairs < want; pairs += 1) {
        pc.addTransceiver("audio", { direction: "recvonly" });
        pc.addTransceiver("video", { direction: "recvonly" });
      }
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const peer = pc;
      const answer = await ctx.api("POST", "/relay", { sdp: peer.localDescription.sdp, type: "offer", restart: fresh });
      if (peer !== pc || !active) return;
      fresh = false;
      await peer.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      render(answer);
    } catch (err) {
      if (pc && pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
      if (err.status === 403 || err.status === 409) ctx.finish(err.message);
      else if (!ctx.ended()) {
        ctx.setStatus(text.relayUnreachable);
        schedule(2000);
      }
    } finally {
      busy = false;
      if (again) { again = false; negotiate(); }
    }
  }

  /** Move this page to the relay: close peer to peer, show the grid, connect to the media server. */
  function start(reason) {
    if (!ctx || ctx.ended() || !ctx.localStream()) return;
    if (active) { if (reason) showMode(reason); return; }
    active = true;
    clearTimeout(p2pTimer);
    ctx.closePeer();
    document.querySelector("#consult .stage").classList.add("relayed");
    localTile();
    showMode(reason);
    ctx.setStatus(text.relayConnecting);
    negotiate();
  }

  const hooks = {
    init(context) {
      ctx = context;
      // The doctor's own page learns of a recording start from the panel, not from a signal.
      document.addEventListener("hospital:media-mode", (e) => start(e.detail && e.detail.reason));
      // When the recording that moved the consult here stops, the label stops saying so (the media stay relayed).
      const panel = document.getElementById("recording-panel");
      let recorded = false;
      if (panel) {
        new MutationObserver(() => {
          if (panel.dataset.recording === "1") recorded = true;
          else if (recorded) {
            recorded = false;
            if (active && document.getElementById("media-mode").dataset.reason === "recording") showMode("");
          }
        }).observe(panel, { attributes: true, attributeFilter: ["data-recording"] });
      }
      return hooks;
    },
    get active() { return active; },
    pc() { return active ? pc : null; },

    /** After joining: relay if the consult is relayed already or two others are there. True if relayed. */
    afterJoin(info) {
      myId = String(info.user_id);
      present.clear();
      info.participants.filter((p) => p.present).forEach((p) => present.add(String(p.user_id)));
      if (active) negotiate();
      else if (info.media_mode === "relay") start("");
      else if (present.size >= 2) start("group");
      return active;
    },

    /** Watch a new peer-to-peer connection: once offer and answer have crossed (so the other side is there),
     * not connected in time → the consult moves to the relay. An offer nobody answers switches nothing. */
    watchP2P(peer) {
      clearTimeout(p2pTimer);
      if (active) return;
      const arm = () => {
        if (peer.signalingState !== "stable" || !peer.remoteDescription) return;
        peer.removeEventListener("signalingstatechange", arm);
        clearTimeout(p2pTimer);
        p2pTimer = setTimeout(async () => {
          if (active || ctx.ended() || !present.size || ["connected", "closed"].includes(peer.connectionState)) return;
          try {
            await ctx.api("POST", "/relay/switch", { reason: "p2p-failed" });
          } catch (err) {
            if (err.status === 403 || err.status === 409) return;
          }
          start("p2p-failed");
        }, ctx.timeout() * 1000);
      };
      peer.addEventListener("signalingstatechange", arm);
    },

    /** A signal; true if relay mode dealt with it (consult.js then leaves it alone). */
    handle(msg) {
      const who = String(msg.user_id ?? msg.from);
      switch (msg.kind) {
        case "mode":
          if (msg.mode === "relay") start(msg.reason);
          return true;
        case "recording":
          window.hospitalRecordingRefresh?.();
          return true;
        case "removed":
          removed = true;
          ctx.finish(text.relayRemoved);
          return true;
        case "hello":
          present.add(who);
          if (active) { retries = 0; schedule(300); return true; }
          if (present.size >= 2) { start("group"); return true; }
          return false;
        case "bye":
          if (msg.reason === "ended") return false;
          present.delete(who);
          if (!active) return false;
          dropTile(who);
          retries = 0;
          schedule(300);
          return true;
        case "offer": case "answer": case "candidate":
          return active;  // peer-to-peer leftovers
        default:
          return false;
      }
    },

    /** framesDecoded per tile (data-frames-decoded on each tile's video) from the connection's stats. */
    tileStats(report) {
      if (!active) return;
      const videos = [...tiles().querySelectorAll(".tile.remote video")];
      report.forEach((s) => {
        if (s.type !== "inbound-rtp" || s.kind !== "video") return;
        const video = videos.find((v) => v.dataset.track && v.dataset.track === s.trackIdentifier);
        if (video) video.dataset.framesDecoded = String(s.framesDecoded || 0);
      });
    },

    /** The consult is over for this page: leave the relay (unless the doctor removed us: the relay did). */
    stop() {
      clearTimeout(p2pTimer);
      clearTimeout(retryTimer);
      clearTimeout(lostTimer);
      if (!active) return;
      if (!removed) ctx.api("POST", "/relay/leave").catch(() => {});
      if (pc) pc.close();
      active = false;
    },
  };
  return hooks;
})();
