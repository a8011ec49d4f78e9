// The console's behaviour: plots on demand, and the actions (promote, roll back, label), each
// after a confirmation. Calls go to the console function's own routes with the key the page was
// opened with (x-functions-key). Text from the server is set with textContent, never as HTML.
"use strict";

(function () {
  const body = document.body;
  const base = body.dataset.base;
  const key = body.dataset.key;
  const modal = document.getElementById("confirm");
  const toast = document.getElementById("toast");
  let pending = null;

  function say(text, bad) {
    toast.textContent = text;
    toast.className = bad ? "bad" : "ok";
    toast.hidden = false;
    window.clearTimeout(say.timer);
    say.timer = window.setTimeout(function () { toast.hidden = true; }, 8000);
  }

  function showPlots(row) {
    row.hidden = false;
    row.querySelectorAll("img[data-src]").forEach(function (img) {
      if (!img.getAttribute("src")) { img.setAttribute("src", img.dataset.src); }
    });
  }

  async function post(path, payload) {
    const headers = { "Content-Type": "application/json" };
    if (key) { headers["x-functions-key"] = key; }
    const response = await fetch(base + path, {
      method: "POST", headers: headers, body: JSON.stringify(payload), credentials: "omit", cache: "no-store"
    });
    let answer = null;
    try { answer = await response.json(); } catch (ignored) { answer = null; }
    if (!response.ok) {
      const problems = answer && answer.errors ? answer.errors.map(function (p) { return p.field + ": " + p.message; })
        : [];
      const message = (answer && (answer.message || answer.error)) || ("HTTP " + response.status);
      throw new Error([message].concat(problems).join("; "));
    }
    return answer;
  }

  async function perform(button) {
    const action = button.dataset.action;
    try {
      if (action === "label") {
        const id = button.dataset.transaction;
        const fraud = button.dataset.fraud === "true";
        await post("/labels", { labels: [{ transaction_id: id, is_fraud: fraud }] });
        const row = button.closest("tr");
        if (row) { row.classList.add("labeled"); row.querySelectorAll("button").forEach(function (b) { b.disabled = true; }); }
        say("Labeled " + id + (fraud ? " as fraud" : " as genuine"), false);
      } else if (action === "promote") {
        const answer = await post("/models/promote", { version: button.dataset.version });
        say("Promoted " + answer.version, false);
        window.setTimeout(function () { window.location.reload(); }, 600);
      } else if (action === "rollback") {
        const answer = await post("/models/rollback", {});
        say("Rolled back to " + answer.version, false);
        window.setTimeout(function () { window.location.reload(); }, 600);
      }
    } catch (error) {
      say("Not done: " + error.message, true);
    }
  }

  function ask(button) {
    pending = button;
    document.getElementById("confirm-text").textContent = button.dataset.confirm;
    modal.hidden = false;
    document.getElementById("confirm-ok").focus();
  }

  function close() {
    modal.hidden = true;
    pending = null;
  }

  document.getElementById("confirm-cancel").addEventListener("click", close);
  document.getElementById("confirm-ok").addEventListener("click", function () {
    const button = pending;
    close();
    if (button) { perform(button); }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && !modal.hidden) { close(); }
  });
  document.getElementById("refresh").addEventListener("click", function () { window.location.reload(); });

  document.querySelectorAll("button[data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      if (button.dataset.action === "plots") {
        const row = document.querySelector('tr[data-plots="' + CSS.escape(button.dataset.version) + '"]');
        if (row) { if (row.hidden) { showPlots(row); } else { row.hidden = true; } }
        return;
      }
      ask(button);
    });
  });
  document.querySelectorAll("tr.plots:not([hidden])").forEach(showPlots);
  body.dataset.ready = "true";
})();
