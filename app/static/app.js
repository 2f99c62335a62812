// Progressive enhancement only: every page works without this file.
"use strict";

// Small screens: the navigation folds behind the Menu button (without script, nojs.css keeps it open).
document.addEventListener("DOMContentLoaded", () => {
  const toggle = document.querySelector(".menu-toggle");
  const menu = document.getElementById("site-menu");
  if (!toggle || !menu) return;
  toggle.addEventListener("click", () => {
    const open = menu.classList.toggle("open");
    toggle.setAttribute("aria-expanded", String(open));
  });
});

// Small screens: every data table reads as a stack of cards; each cell is labelled with its column heading.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.table").forEach((table) => {
    const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    if (!heads.length) return;
    table.classList.add("stack");
    table.querySelectorAll("tbody tr").forEach((row) => {
      [...row.children].forEach((cell, i) => {
        if (!cell.hasAttribute("data-label")) cell.setAttribute("data-label", heads[i] || "");
      });
    });
  });
});

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

// A date field shows the device's own order (12/04/2026 or 04.12.2026); read the date back as the pages show it,
// year-month-day with the weekday and month in words, so a swapped day and month is caught while typing.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll('input[type="date"]').forEach((input) => {
    const echo = document.createElement("div");
    echo.className = "date-echo";
    echo.setAttribute("aria-live", "polite");
    const hint = document.getElementById(input.getAttribute("aria-describedby") || "");
    (hint || input).after(echo);
    const update = () => {
      const d = input.valueAsDate;
      echo.textContent = d ? `${input.value} · ${d.toLocaleDateString(undefined, {
        weekday: "long", day: "numeric", month: "long", year: "numeric", timeZone: "UTC"})}` : "";
    };
    input.addEventListener("input", update);
    input.addEventListener("change", update);
    update();
  });
});

// A booking is confirmed with its button only: Enter in a text field of such a form (the reason) books nothing.
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target.matches("form[data-enter-submits-nothing] input")) {
    event.preventDefault();
  }
});
