// Small progressive enhancements; every page works without them.
document.addEventListener("keydown", function (ev) {
  if (ev.target.closest("input, textarea, select") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  var el = document.querySelector('[data-key="' + ev.key.toLowerCase() + '"]');
  if (el) { ev.preventDefault(); el.click(); }
});
