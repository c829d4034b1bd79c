// Sighting upload: camera or files, drag and drop, location from the browser,
// upload progress. The form also works without this script.
(function () {
  "use strict";
  var form = document.getElementById("sighting-form");
  if (!form) return;
  var files = [];
  var maxPhotos = parseInt(form.dataset.maxPhotos || "10", 10);
  var list = document.getElementById("photo-list");
  var errorBox = document.getElementById("upload-error");
  var progress = document.getElementById("upload-progress");
  var sendButton = document.getElementById("send");
  var dropzone = document.getElementById("dropzone");

  form.elements["tz_offset"].value = String(new Date().getTimezoneOffset());

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }

  function render() {
    list.textContent = "";
    files.forEach(function (file, i) {
      var li = document.createElement("li");
      var img = document.createElement("img");
      img.alt = "Photo " + (i + 1) + ": " + file.name;
      img.src = URL.createObjectURL(file);
      img.onload = function () { URL.revokeObjectURL(img.src); };
      var name = document.createElement("span");
      name.textContent = Math.round(file.size / 1024) + " kB";
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "secondary";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", "Remove photo " + (i + 1));
      remove.addEventListener("click", function () { files.splice(i, 1); render(); });
      li.appendChild(img); li.appendChild(name); li.appendChild(remove);
      list.appendChild(li);
    });
    sendButton.textContent = files.length ? "Send sighting (" + files.length + " photo" + (files.length > 1 ? "s" : "") + ")"
                                          : "Send sighting";
  }

  function add(fileList) {
    showError("");
    for (var i = 0; i < fileList.length; i++) {
      if (files.length >= maxPhotos) { showError("At most " + maxPhotos + " photos per sighting."); break; }
      files.push(fileList[i]);
    }
    render();
  }

  form.querySelectorAll("[data-photo-input]").forEach(function (input) {
    input.addEventListener("change", function () { add(input.files); input.value = ""; });
  });

  ["dragenter", "dragover"].forEach(function (name) {
    dropzone.addEventListener(name, function (ev) { ev.preventDefault(); dropzone.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    dropzone.addEventListener(name, function (ev) { ev.preventDefault(); dropzone.classList.remove("over"); });
  });
  dropzone.addEventListener("drop", function (ev) {
    if (ev.dataTransfer && ev.dataTransfer.files) add(ev.dataTransfer.files);
  });

  var locate = document.getElementById("locate");
  var locateStatus = document.getElementById("locate-status");
  if (!("geolocation" in navigator)) {
    locate.hidden = true;
  }
  locate.addEventListener("click", function () {
    locateStatus.textContent = "Finding your location…";
    navigator.geolocation.getCurrentPosition(function (pos) {
      form.elements["latitude"].value = pos.coords.latitude.toFixed(6);
      form.elements["longitude"].value = pos.coords.longitude.toFixed(6);
      locateStatus.textContent = "Location set (±" + Math.round(pos.coords.accuracy) + " m).";
    }, function (err) {
      locateStatus.textContent = "Location not available (" + err.message + "): type the place instead.";
    }, { enableHighAccuracy: true, timeout: 15000, maximumAge: 60000 });
  });

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!files.length) { showError("Add at least one photo."); return; }
    showError("");
    var data = new FormData(form);
    data.delete("photos");
    files.forEach(function (f) { data.append("photos", f, f.name); });
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    // The same key on every retry of this form: the server keeps one sighting.
    xhr.setRequestHeader("Idempotency-Key", form.elements["idempotency_key"].value);
    progress.hidden = false;
    progress.value = 0;
    sendButton.disabled = true;
    sendButton.textContent = "Sending…";
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) progress.value = Math.round(100 * e.loaded / e.total);
    });
    function done(message) {
      sendButton.disabled = false;
      sendButton.textContent = "Send sighting";
      if (message) showError(message);
    }
    xhr.addEventListener("load", function () {
      var body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = {}; }
      if (xhr.status === 202 && body.url) {
        progress.value = 100;
        window.location.assign(body.url + "?sent=1");
      } else if (xhr.status === 401) {
        done("Your session ended: log in again in another tab, then press Send again.");
      } else {
        done(typeof body.detail === "string" ? body.detail : "The sighting was not accepted (" + xhr.status + ").");
      }
    });
    xhr.addEventListener("error", function () {
      done("No connection: nothing is lost, press Send again when you have signal.");
    });
    xhr.send(data);
  });
})();
