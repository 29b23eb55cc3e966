// The dashboard's one script besides htmx: copy buttons, the message after a change, and a
// message when the server cannot be reached. No inline scripts: the page's CSP forbids them.
(function () {
  "use strict";

  function flash(text, kind) {
    var box = document.getElementById("flash");
    if (!box) return;
    box.textContent = "";
    var p = document.createElement("p");
    p.className = "flash " + (kind || "ok");
    p.textContent = text;
    box.appendChild(p);
  }

  // Selecting the text and copying it works where the Clipboard API does not (plain HTTP on a
  // LAN address is not a secure context); if both fail the text stays selected for Ctrl+C.
  function selectAndCopy(source) {
    var range = document.createRange();
    range.selectNodeContents(source);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try {
      return document.execCommand("copy");
    } catch (err) {
      return false;
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.copy");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
    var label = button.textContent;
    function copied() {
      button.textContent = document.body.getAttribute("data-copied") || "Copied";
      button.classList.add("copied");
      window.setTimeout(function () {
        button.textContent = label;
        button.classList.remove("copied");
      }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(source.textContent).then(copied, function () {
        if (selectAndCopy(source)) copied();
      });
    } else if (selectAndCopy(source)) {
      copied();
    }
  });

  // the server names what a change did in an HX-Trigger header: {"sop-flash": "..."}
  document.body.addEventListener("sop-flash", function (event) {
    flash(event.detail.value, "ok");
  });
  document.body.addEventListener("htmx:sendError", function () {
    flash("⚠ " + (document.body.getAttribute("data-offline") || "The server cannot be reached."), "bad");
  });
})();
