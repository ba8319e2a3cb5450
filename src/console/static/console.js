// Tuma console: a little plain JavaScript, no build step. Every page works
// without it: it adds select-all boxes, confirmations, and in-place updates
// for forms marked data-partial (the page is fetched and only the element
// with that id is swapped in). Handlers are delegated from the document,
// so they also work on content swapped in later.
"use strict";

document.addEventListener("change", (event) => {
  const all = event.target.closest("input[data-select-all]");
  if (!all) return;
  const form = all.dataset.selectAll;
  for (const box of document.querySelectorAll(`input[type=checkbox][form="${form}"]`)) {
    box.checked = all.checked;
  }
});

// Forms that change many things ask first.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  } else if (form.dataset.confirmSelected) {
    const count = document.querySelectorAll(`input[type=checkbox][form="${form.id}"]:checked`).length;
    if (!window.confirm(`${form.dataset.confirmSelected} (${count})`)) event.preventDefault();
  }
});

function say(text, isError) {
  const flash = document.getElementById("flash");
  if (!flash) return;
  flash.textContent = text;
  flash.className = isError ? "error" : "done";
}

document.addEventListener("submit", async (event) => {
  const form = event.target;
  const target = form.dataset.partial;
  if (!target || event.defaultPrevented) return;
  event.preventDefault();
  const body = new URLSearchParams(new FormData(form, event.submitter));
  let response;
  try {
    response = await fetch(form.action, { method: "POST", body, credentials: "same-origin" });
  } catch {
    form.submit();
    return;
  }
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  if (!response.ok) {
    const why = page.querySelector(".error");
    say(why ? why.textContent : `The server answered ${response.status}.`, true);
    return;
  }
  const fresh = page.getElementById(target);
  const current = document.getElementById(target);
  if (fresh && current) current.replaceWith(fresh);
  say(form.dataset.done || "Done.", false);
});
