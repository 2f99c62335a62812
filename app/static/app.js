// Progressive enhancement only: every page works without this file.
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) {
    event.preventDefault();
  }
});

// Send the CSRF token with same-origin fetch() calls made by page scripts.
window.hospitalFetch = (url, options = {}) => {
  const token = document.querySelector('meta[name="csrf-token"]')?.content;
  const headers = new Headers(options.headers || {});
  if (token && !headers.has("X-CSRFToken")) headers.set("X-CSRFToken", token);
  return fetch(url, { credentials: "same-origin", ...options, headers });
};

// Hand-over form: the proxy's name and relation matter only when a proxy collects the medicine.
document.addEventListener("DOMContentLoaded", () => {
  const receiver = document.getElementById("receiver");
  if (!receiver) return;
  const sync = () => {
    const proxy = receiver.value === "proxy";
    document.querySelectorAll(".proxy-only").forEach((el) => el.classList.toggle("hidden", !proxy));
  };
  receiver.addEventListener("change", sync);
  sync();
});
