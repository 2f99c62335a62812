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
