// Live progress of a send on the issue page: polls the progress URL each second and fills in
// the figures; reloads the page when the send's status changes (new actions, the report).
(function () {
  "use strict";
  var panel = document.querySelector("[data-progress-url]");
  if (!panel) { return; }
  var shown = document.getElementById("status");
  var url = panel.getAttribute("data-progress-url");
  function update() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        Object.keys(data.states).forEach(function (state) {
          var cell = panel.querySelector('[data-state="' + state + '"]');
          if (cell) { cell.textContent = data.states[state].toLocaleString(); }
        });
        panel.querySelector('[data-field="rate"]').textContent = String(data.rate);
        // A fresh page, without the last action's notice in its address.
        if (shown && shown.textContent !== data.status) { window.location.replace(window.location.pathname); }
      })
      .catch(function () { /* the next tick tries again */ });
  }
  update();
  window.setInterval(update, 1000);
})();
