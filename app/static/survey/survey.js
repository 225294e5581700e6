/* The pair page, better with JavaScript: keys, waiting for the images, timing, one submission.
   Without this script the page still works: each button submits the form. */
(function () {
  "use strict";
  var form = document.getElementById("vote-form");
  if (!form) { return; }
  var now = function () { return (window.performance && performance.now) ? performance.now() : Date.now(); };
  var started = now();
  var shownAt = null;
  var sent = false;
  var field = function (name) { return form.elements.namedItem(name); };
  var buttons = Array.prototype.slice.call(form.querySelectorAll("button[name=answer]"));
  var status = document.getElementById("status");
  var images = [document.getElementById("img-left"), document.getElementById("img-right")];

  // Until both images are on screen an answer would not count.
  field("loaded").value = "0";
  form.classList.add("waiting");
  buttons.forEach(function (b) { b.disabled = true; });
  status.textContent = "Loading the images\u2026";

  var pending = images.length;
  var failed = false;
  function ready() {
    field("loaded").value = "1";
    field("load_ms").value = String(Math.round(now() - started));
    shownAt = now();
    form.classList.remove("waiting");
    buttons.forEach(function (b) { b.disabled = false; });
    status.textContent = "";
  }
  function onLoad() { pending -= 1; if (pending === 0 && !failed) { ready(); } }
  function onError() {
    failed = true;
    status.className = "status problem";
    status.textContent = "An image could not be loaded. Please reload the page.";
  }
  images.forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { onLoad(); return; }
    img.addEventListener("load", onLoad, { once: true });
    img.addEventListener("error", onError, { once: true });
  });

  function send(answer, how) {
    if (sent || shownAt === null) { return; }
    sent = true;
    field("client_ms").value = String(Math.round(now() - shownAt));
    field("input").value = how;
    var hidden = document.createElement("input");
    hidden.type = "hidden"; hidden.name = "answer"; hidden.value = answer;
    form.appendChild(hidden);
    buttons.forEach(function (b) {
      if (b.value === answer) { b.classList.add("chosen"); }
      b.disabled = true;
    });
    form.submit();
  }

  buttons.forEach(function (b) {
    b.addEventListener("click", function (event) {
      event.preventDefault();
      // A key press on a focused button also fires "click"; it was already sent as a key.
      send(b.value, event.detail === 0 ? "key" : "click");
    });
  });

  var KEYS = { ArrowLeft: "left", "1": "left", ArrowRight: "right", "2": "right", ArrowDown: "same", "0": "same" };
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || event.repeat) { return; }
    if (event.key === "Escape") { closeZoom(); return; }
    var answer = KEYS[event.key];
    if (!answer) { return; }
    event.preventDefault();  // no scrolling on arrow keys
    send(answer, "key");
  });

  // A tap (or click) on an image shows it as large as the screen allows; another tap or Escape closes it.
  var zoomed = null;
  function closeZoom() {
    if (zoomed) { zoomed.parentNode.removeChild(zoomed); zoomed = null; }
  }
  form.classList.add("zoomable");
  images.forEach(function (img) {
    img.addEventListener("click", function () {
      closeZoom();
      zoomed = document.createElement("div");
      zoomed.className = "zoom";
      zoomed.setAttribute("role", "dialog");
      zoomed.setAttribute("aria-label", img.alt + ", enlarged; tap to close");
      var big = document.createElement("img");
      big.src = img.src;
      big.alt = img.alt;
      zoomed.appendChild(big);
      zoomed.addEventListener("click", closeZoom);
      document.body.appendChild(zoomed);
    });
  });

  // Coming back with the browser's Back button shows a cached page whose answer was sent: reload it.
  window.addEventListener("pageshow", function (event) { if (event.persisted) { window.location.reload(); } });
}());
