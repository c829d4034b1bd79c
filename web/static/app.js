// Small progressive enhancements; every page works without them.
document.addEventListener("keydown", function (ev) {
  if (ev.target.closest("input, textarea, select") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  var el = document.querySelector('[data-key="' + ev.key.toLowerCase() + '"]');
  if (el) { ev.preventDefault(); el.click(); }
});
// Times are stored and sent in UTC (<time datetime="…Z">, readable without script): show them in local time.
(function () {
  "use strict";
  var fmt = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric",
                                                 hour: "2-digit", minute: "2-digit", timeZoneName: "short" });
  function localise(root) {
    (root || document).querySelectorAll("time[datetime]:not([data-local])").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      el.title = el.textContent;
      el.textContent = fmt.format(d);
      el.setAttribute("data-local", "");
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { localise(); });
  else localise();
  document.addEventListener("htmx:afterSettle", function () { localise(); });
})();
