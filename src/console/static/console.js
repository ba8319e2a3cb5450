// Tuma console: a little plain JavaScript, no build step. Every page works
// without it; it only adds select-all boxes and confirmations.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // A header checkbox selects every row checkbox that belongs to its form.
  for (const all of document.querySelectorAll("input[data-select-all]")) {
    all.addEventListener("change", () => {
      const form = all.dataset.selectAll;
      for (const box of document.querySelectorAll(`input[type=checkbox][form="${form}"]`)) {
        box.checked = all.checked;
      }
    });
  }
  // Forms that change many things ask first.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  for (const form of document.querySelectorAll("form[data-confirm-selected]")) {
    form.addEventListener("submit", (event) => {
      const count = document.querySelectorAll(`input[type=checkbox][form="${form.id}"]:checked`).length;
      if (!window.confirm(`${form.dataset.confirmSelected} (${count})`)) event.preventDefault();
    });
  }
});
