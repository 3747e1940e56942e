// The console's only script (no build step): the live preview of a brief's card, and the
// live progress of sends.
(function () {
  "use strict";
  // The brief editor: a second after typing stops, the form is sent to the card URL and the
  // card (or the problems) shown below; nothing is saved.
  var editor = document.querySelector("form[data-card-url]");
  if (editor) {
    var frame = document.getElementById("card");
    var state = document.getElementById("card-state");
    var problems = document.getElementById("card-problems");
    var timer = null;
    var preview = function () {
      fetch(editor.getAttribute("data-card-url"), {
        method: "POST", body: new FormData(editor), credentials: "same-origin", cache: "no-store"
      }).then(function (response) { return response.ok ? response.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          problems.textContent = "";
          data.problems.forEach(function (text) {
            var item = document.createElement("li");
            item.textContent = text;
            problems.appendChild(item);
          });
          if (data.html !== null) { frame.srcdoc = data.html; }
          state.textContent = data.html !== null ? "Live preview." : "The brief does not check:";
        })
        .catch(function () { /* the next change tries again */ });
    };
    editor.addEventListener("input", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(preview, 1000);
    });
  }

  // Live progress: every element with a data-progress-url (the issue page's delivery panel, a
  // sending row of the issues list) is refreshed each second from that URL. When a send's
  // status changes the page is loaded afresh (new actions, the report), without the last
  // action's notice in its address.
  var panels = document.querySelectorAll("[data-progress-url]");
  if (!panels.length) { return; }
  function refresh(panel) {
    var shown = panel.querySelector('[data-field="status"]') || document.getElementById("status");
    fetch(panel.getAttribute("data-progress-url"), { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        Object.keys(data.states).forEach(function (state) {
          var cell = panel.querySelector('[data-state="' + state + '"]');
          if (cell) { cell.textContent = data.states[state].toLocaleString(); }
        });
        var rate = panel.querySelector('[data-field="rate"]');
        if (rate) { rate.textContent = String(data.rate); }
        if (shown && shown.textContent !== data.status) {
          window.location.replace(window.location.pathname);
        }
      })
      .catch(function () { /* the next tick tries again */ });
  }
  function tick() { Array.prototype.forEach.call(panels, refresh); }
  tick();
  window.setInterval(tick, 1000);
})();
