// Live progress of sends: every element with a data-progress-url (the issue page's delivery
// panel, a sending row of the issues list) is refreshed each second from that URL. When a
// send's status changes the page is loaded afresh (new actions, the report), without the
// last action's notice in its address.
(function () {
  "use strict";
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
