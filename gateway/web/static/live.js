// Print Gateway web console: refreshes the dashboard's figures every 5 s.
// Written for this project (no library). It sets textContent only, never HTML,
// so a figure holding markup is shown as text. Without JavaScript the page
// shows the same figures as of its loading.
(function () {
  "use strict";
  var PERIOD_MS = 5000; // the dashboard's refresh; docs/web.md "Dashboard"
  var CHART_EVERY = 6; // charts gain a point every 30 s: reload them every 6th refresh
  var ticks = 0;
  function update() {
    var req = new XMLHttpRequest();
    req.open("GET", "/api/status");
    req.onload = function () {
      if (req.status !== 200) { return; }
      var figures;
      try { figures = JSON.parse(req.responseText); } catch (e) { return; }
      var cells = document.querySelectorAll("[data-live]");
      for (var i = 0; i < cells.length; i++) {
        var key = cells[i].getAttribute("data-live");
        if (Object.prototype.hasOwnProperty.call(figures, key)) {
          cells[i].textContent = figures[key];
        }
      }
    };
    ticks += 1;
    if (ticks % CHART_EVERY === 0) {
      var charts = document.querySelectorAll("img[data-chart]");
      for (var j = 0; j < charts.length; j++) {
        charts[j].src = charts[j].getAttribute("data-chart") + "?t=" + Date.now();
      }
    }
    req.send();
  }
  window.setInterval(update, PERIOD_MS);
})();
