// Today's consults: the table is refreshed in place (no page reload, so focus, scroll and screen readers
// are left alone); only rows that changed are replaced.
"use strict";

(() => {
  const view = document.getElementById("day-view");
  if (!view) return;
  const updated = document.getElementById("day-updated");
  const seconds = Number(view.dataset.refreshSeconds) || 15;

  function rows(container) {
    return new Map([...container.querySelectorAll("tr[data-appointment]")].map((tr) => [tr.dataset.appointment, tr]));
  }

  async function refresh() {
    try {
      const resp = await fetch(view.dataset.refreshUrl, { credentials: "same-origin" });
      if (!resp.ok) throw new Error(String(resp.status));
      const fresh = document.createElement("div");
      fresh.innerHTML = await resp.text();
      const before = rows(view);
      const after = rows(fresh);
      const sameRows = before.size === after.size && [...after.keys()].every((id) => before.has(id));
      if (!sameRows) {
        view.replaceChildren(...fresh.childNodes);
      } else {
        // Compare without the per-request CSRF token, which differs on every copy.
        const text = (tr) => tr.outerHTML.replace(/name="csrf_token" value="[^"]*"/g, "");
        after.forEach((tr, id) => { if (text(tr) !== text(before.get(id))) before.get(id).replaceWith(tr); });
      }
      const now = new Date();
      // In the doctor's zone, named, as the page itself writes times.
      const clock = now.toLocaleTimeString(updated.dataset.lang || undefined, {
        timeZone: updated.dataset.zone || "UTC", hour: "numeric", minute: "2-digit", timeZoneName: "long"});
      updated.textContent = updated.dataset.updated.replace("%(now)s", clock);
    } catch (err) {
      updated.textContent = updated.dataset.failed;
    }
    setTimeout(refresh, seconds * 1000);
  }
  setTimeout(refresh, seconds * 1000);
})();
