// The review task area: lease countdown and renewal, the undo window, zoom and contrast.
// Every action also works without this file (plain forms); it only adds what needs a clock.
(function () {
  "use strict";
  var HEARTBEAT_MS = 15000;     // renew at most this often while the person is at work
  var URGENT_BEAT_MS = 3000;    // ... and this often in the last minute
  var WARN_SECONDS = 60;
  var TICK_MS = 250;
  var timer = null, lastActivity = 0, lastBeat = 0, beating = false;
  var lease = null;             // {slot, deadline, limit} in performance.now() milliseconds
  var undo = null;              // {deadline, bar}

  function csrfHeaders() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}"); } catch (e) { return {}; }
  }

  function post(url) {
    var headers = csrfHeaders();
    headers["Accept"] = "application/json";
    return fetch(url, {method: "POST", headers: headers, credentials: "same-origin"})
      .then(function (r) { return r.json().catch(function () { return {state: "error"}; }); });
  }

  function clock(seconds) {
    seconds = Math.max(0, Math.ceil(seconds));
    var m = Math.floor(seconds / 60), s = seconds % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function lapse(area, message) {
    if (!lease) return;
    lease = null;
    var box = area.querySelector("#lease-lapsed");
    var line = area.querySelector("#lease");
    if (line) line.classList.add("lapsed");
    area.querySelectorAll(".verdicts button, #release, #reveal").forEach(function (b) {
      b.disabled = true; b.removeAttribute("data-key");
    });
    if (box) {
      if (message) box.firstChild.textContent = message + " ";
      box.hidden = false;
      var next = box.querySelector("button");
      if (next) { next.setAttribute("data-key", "n"); next.focus(); }
    }
  }

  function heartbeat(area, force) {
    if (!lease || beating) return;
    var now = performance.now();
    if (!force && lastActivity <= lastBeat) return;
    beating = true; lastBeat = now;
    post("/review/slots/" + lease.slot + "/heartbeat").then(function (body) {
      beating = false;
      if (!lease) return;
      if (body.state === "held") {
        var t = performance.now();
        lease.deadline = t + body.lease_left * 1000;
        lease.limit = t + body.lease_limit_left * 1000;
      } else if (body.state === "lease_expired" || body.state === "not_found") {
        lapse(area, body.message);
      }
    }, function () { beating = false; });
  }

  function tick(area) {
    var now = performance.now();
    if (lease) {
      var left = (lease.deadline - now) / 1000;
      var line = area.querySelector("#lease");
      var shown = line && line.querySelector(".lease-left");
      if (shown) shown.textContent = clock(left);
      if (left <= 0) { lapse(area); }
      else if (!line) { /* nothing to show */ }
      else if (left <= WARN_SECONDS) {
        line.classList.add("warn");
        var last = lease.limit - lease.deadline < 1000;
        line.setAttribute("data-warning", last ? "final" : "renewable");
        var note = line.querySelector(".muted");
        if (note) note.textContent = last
          ? "(less than a minute left, and this task cannot be held longer: give your verdict or skip it)"
          : "(less than a minute left: keep working on it and the time is renewed)";
        if (now - lastBeat > URGENT_BEAT_MS) heartbeat(area, false);
      } else {
        line.classList.remove("warn");
        if (now - lastBeat > HEARTBEAT_MS) heartbeat(area, false);
      }
    }
    if (undo) {
      var u = (undo.deadline - now) / 1000;
      var count = undo.bar.querySelector(".undo-left");
      if (count) count.textContent = Math.max(0, Math.ceil(u));
      if (u <= 0) {
        var button = undo.bar.querySelector("button");
        if (button) { button.disabled = true; button.removeAttribute("data-key"); }
        undo.bar.querySelector("span").textContent = "Your last verdict counts now.";
        undo = null;
        post("/review/settle");
      }
    }
  }

  function applyView(area) {
    ["zoomed", "enhanced"].forEach(function (name) {
      var on = sessionStorage.getItem("miatari.review." + name) === "1";
      area.classList.toggle(name, on);
    });
    var z = area.querySelector("#zoom"), c = area.querySelector("#contrast");
    if (z) z.setAttribute("aria-pressed", area.classList.contains("zoomed"));
    if (c) c.setAttribute("aria-pressed", area.classList.contains("enhanced"));
  }

  function toggle(area, name) {
    sessionStorage.setItem("miatari.review." + name, area.classList.contains(name) ? "0" : "1");
    applyView(area);
  }

  function init(area) {
    if (!area || area.dataset.ready) return;
    area.dataset.ready = "1";
    var t = performance.now();
    lease = area.dataset.slot ? {
      slot: area.dataset.slot,
      deadline: t + Number(area.dataset.leaseLeft) * 1000,
      limit: t + Number(area.dataset.leaseLimitLeft) * 1000
    } : null;
    lastBeat = t;
    var bar = area.querySelector("#undo-bar");
    undo = bar ? {bar: bar, deadline: t + Number(bar.dataset.undoLeft) * 1000} : null;
    applyView(area);
    var z = area.querySelector("#zoom"), c = area.querySelector("#contrast");
    if (z) z.addEventListener("click", function () { toggle(area, "zoomed"); });
    if (c) c.addEventListener("click", function () { toggle(area, "enhanced"); });
    area.querySelectorAll(".pair img.crop").forEach(function (img) {
      img.addEventListener("click", function () { toggle(area, "zoomed"); });
    });
    if (timer) clearInterval(timer);
    timer = setInterval(function () { tick(area); }, TICK_MS);
    tick(area);
  }

  function activity() { lastActivity = performance.now(); }
  ["keydown", "pointerdown", "pointermove", "wheel", "scroll", "touchstart", "input"].forEach(function (ev) {
    document.addEventListener(ev, activity, {passive: true, capture: true});
  });
  document.addEventListener("visibilitychange", function () {
    var area = document.getElementById("task-area");
    if (document.visibilityState === "visible" && area) heartbeat(area, true);
  });
  document.addEventListener("htmx:load", function (ev) {
    if (ev.detail && ev.detail.elt && ev.detail.elt.id === "task-area") init(ev.detail.elt);
  });
  function start() {
    init(document.getElementById("task-area"));
    var bar = document.getElementById("undo-bar");  // the queue page's undo bar
    if (bar && !undo) undo = {bar: bar, deadline: performance.now() + Number(bar.dataset.undoLeft) * 1000};
    if (bar && !timer) timer = setInterval(function () { tick(document.body); }, TICK_MS);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
