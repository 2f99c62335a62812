// The doctor's participants panel: list, remove, and single-use invite links for an interpreter or family.
(() => {
  const panel = document.getElementById("participants-panel");
  if (!panel) return;
  const list = document.getElementById("participant-list");

  async function refresh() {
    const resp = await fetch(panel.dataset.url, { credentials: "same-origin" }).catch(() => null);
    if (!resp || !resp.ok) return;
    const data = await resp.json();
    list.replaceChildren(...data.participants.map((p) => {
      const li = document.createElement("li");
      li.dataset.userId = p.user_id;
      const state = p.removed ? "removed" : (p.present ? "in the consult" : "not connected");
      li.textContent = `${p.name} (${p.kind}) — ${state} `;
      if (p.can_remove) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "danger small remove-participant";
        button.textContent = panel.dataset.remove;
        button.addEventListener("click", async () => {
          if (!window.confirm(panel.dataset.removeConfirm.replace("%(name)s", p.name))) return;
          await window.hospitalFetch(`${panel.dataset.url}/${p.user_id}/remove`, { method: "POST" });
          refresh();
        });
        li.append(button);
      }
      return li;
    }));
  }

  document.getElementById("invite-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const resp = await window.hospitalFetch(panel.dataset.inviteUrl, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        kind: document.getElementById("invite-kind").value,
        display_name: document.getElementById("invite-name").value,
        minutes: Number(document.getElementById("invite-minutes").value),
      }),
    });
    const body = await resp.json().catch(() => ({}));
    document.getElementById("invite-link").textContent = resp.ok
      ? panel.dataset.linkMade.replace("%(time)s", new Date(body.expires_at).toLocaleTimeString(
        document.documentElement.lang || undefined, { hour: "numeric", minute: "2-digit", timeZoneName: "short"}))
        .replace("%(url)s", body.url)
      : body.detail || `HTTP ${resp.status}`;
    refresh();
  });
  refresh();
  setInterval(refresh, 5000);
})();
