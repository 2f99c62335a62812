// Prescription form: the quantity follows dose x times per day x days until the doctor types their own.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.querySelector("form.rx-form");
  if (!form) return;
  const quantity = form.querySelector("#quantity");
  const parts = ["#dose_units", "#frequency_per_day", "#duration_days"].map((s) => form.querySelector(s));
  let typed = quantity.value !== "" && quantity.value !== String(suggested());

  function suggested() {
    const [dose, times, days] = parts.map((el) => Number(el.value.replace(",", ".")));
    if (![dose, times, days].every((n) => Number.isFinite(n) && n > 0)) return null;
    return Math.ceil(dose * times * days - 1e-9);
  }

  quantity.addEventListener("input", () => { typed = quantity.value.trim() !== ""; });
  parts.forEach((el) => el.addEventListener("input", () => {
    const value = suggested();
    if (!typed && value !== null) quantity.value = String(value);
  }));
});
