// The ops dashboard reloads itself every data-refresh seconds (0: never), unless the
// operator is typing or the tab is hidden. No inline script: CSP-compatible.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!seconds) { return; }
  window.setInterval(function () {
    var active = document.activeElement;
    if (document.hidden || (active && active.tagName === "INPUT")) { return; }
    window.location.reload();
  }, seconds * 1000);
})();
