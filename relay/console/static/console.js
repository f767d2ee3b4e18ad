// relay console: the only script. It keeps relative times ("5m ago") current; every page
// works without it. It never reads event data into the page as HTML.
"use strict";

(function () {
  function age(seconds) {
    var whole = Math.max(0, Math.floor(seconds));
    var units = [[86400, "d", 3600, "h"], [3600, "h", 60, "m"]];
    for (var i = 0; i < units.length; i++) {
      var size = units[i][0];
      if (whole >= size) {
        var rest = Math.floor((whole % size) / units[i][2]);
        return Math.floor(whole / size) + units[i][1] + (rest ? " " + rest + units[i][3] : "");
      }
    }
    return whole >= 60 ? Math.floor(whole / 60) + "m" : whole + "s";
  }

  function relative(then) {
    var seconds = (Date.now() - then) / 1000;
    if (Math.abs(seconds) < 1) return "just now";
    return seconds > 0 ? age(seconds) + " ago" : "in " + age(-seconds);
  }

  function refresh() {
    var times = document.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var then = Date.parse(times[i].getAttribute("datetime"));
      if (!isNaN(then)) times[i].textContent = relative(then);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    refresh();
    window.setInterval(refresh, 15000);
  });
})();
