// Health Diary: a SMART on FHIR standalone launch (authorization code + PKCE, public client), then FHIR reads.
"use strict";

(function () {
  const root = document.getElementById("smart-demo");
  if (!root) return;
  const data = root.dataset;
  const redirectUri = window.location.origin + window.location.pathname;
  const status = document.getElementById("demo-status");
  const steps = document.getElementById("demo-steps");
  // The page gives the words in the reader's language; the English here is only a fallback.
  const words = JSON.parse(document.getElementById("smart-demo-text")?.textContent || "{}");
  const say = (key, fallback, values = {}) =>
    (words[key] || fallback).replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
  const statusWord = (code) => (words.statuses && words.statuses[code]) || code;

  function b64url(buffer) {
    return btoa(String.fromCharCode(...new Uint8Array(buffer)))
      .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function randomText() {
    const bytes = new Uint8Array(32);
    crypto.getRandomValues(bytes);
    return b64url(bytes);
  }

  function step(text) {
    const item = document.createElement("li");
    item.textContent = text;
    steps.appendChild(item);
  }

  function listInto(id, texts, empty) {
    const list = document.getElementById(id);
    list.replaceChildren();
    for (const text of texts.length ? texts : [empty]) {
      const item = document.createElement("li");
      item.textContent = text;
      list.appendChild(item);
    }
  }

  async function connect() {
    const verifier = randomText();
    const state = randomText();
    const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
    sessionStorage.setItem("healthDiary", JSON.stringify({ verifier, state }));
    const query = new URLSearchParams({
      response_type: "code", client_id: data.clientId, redirect_uri: redirectUri, scope: data.scope,
      state, nonce: randomText(), code_challenge: challenge, code_challenge_method: "S256", aud: data.fhirBase,
    });
    window.location.assign(data.authorize + "?" + query.toString());
  }

  async function fhir(token, path) {
    const resp = await fetch(data.fhirBase + path, {
      headers: { Authorization: "Bearer " + token, Accept: "application/fhir+json" },
      credentials: "omit",
    });
    const body = await resp.json();
    if (!resp.ok) {
      throw new Error((body.issue && body.issue[0] && body.issue[0].diagnostics) || "HTTP " + resp.status);
    }
    return body;
  }

  async function finish(params) {
    const saved = JSON.parse(sessionStorage.getItem("healthDiary") || "{}");
    sessionStorage.removeItem("healthDiary");
    history.replaceState(null, "", redirectUri);
    if (params.get("error")) {
      status.textContent = say("refused", "Town Health did not let the app in: {reason}",
        { reason: params.get("error_description") || params.get("error") });
      return;
    }
    if (!saved.state || saved.state !== params.get("state")) {
      status.textContent = say("foreignAnswer",
        "This answer does not belong to a request from this page; press Connect again.");
      return;
    }
    step(say("allowed", "You allowed the app in; Town Health sent it back with a one-time code."));
    const resp = await fetch(data.token, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code", code: params.get("code"), redirect_uri: redirectUri,
        client_id: data.clientId, code_verifier: saved.verifier,
      }),
      credentials: "omit",
    });
    const token = await resp.json();
    if (!resp.ok) {
      status.textContent = say("noToken", "The app could not get a token: {reason}",
        { reason: token.error_description || token.error });
      return;
    }
    step(say("exchanged", "The app exchanged the code for an access token (scopes: {scopes}).",
      { scopes: token.scope }));
    const patient = await fhir(token.access_token, "/Patient/" + token.patient);
    const name = patient.name && patient.name[0] ? patient.name[0].text : say("patient", "Patient {id}", { id: patient.id });
    step(say("readPatient", "The app read Patient/{id} with that token.", { id: patient.id }));
    const allergies = await fhir(token.access_token, "/AllergyIntolerance?patient=Patient/" + patient.id);
    const requests = await fhir(token.access_token, "/MedicationRequest?patient=Patient/" + patient.id +
      "&_include=MedicationRequest:medication");
    step(say("searched", "…and searched AllergyIntolerance and MedicationRequest for this patient."));
    document.getElementById("demo-patient").textContent = name;
    const entries = (bundle, type) => (bundle.entry || []).map((e) => e.resource)
      .filter((r) => r.resourceType === type);
    listInto("demo-allergies", entries(allergies, "AllergyIntolerance").map(
      (a) => (a.criticality === "high" ? say("highRisk", "{substance} (high risk)", { substance: a.code.text })
        : a.code.text)), say("noAllergies", "No allergies recorded."));
    listInto("demo-prescriptions", entries(requests, "MedicationRequest").map(
      (r) => say("prescription", "{medication}: {status}",
        { medication: r.medicationReference.display, status: statusWord(r.status) })),
      say("noPrescriptions", "No prescriptions."));
    document.getElementById("demo-record").hidden = false;
    status.textContent = say("done", "Done. Revoke the app at any time under Connected apps.");
  }

  const button = document.getElementById("demo-connect");
  if (button) button.addEventListener("click", () => { connect().catch((e) => { status.textContent = e.message; }); });
  const params = new URLSearchParams(window.location.search);
  if (params.get("code") || params.get("error")) {
    finish(params).catch((e) => { status.textContent = say("readFailed", "The app could not read the record: {reason}", { reason: e.message }); });
  }
})();
