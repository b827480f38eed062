// Armor Management Portal: copy buttons and local times. No inline code
// anywhere (the Content-Security-Policy forbids it): everything is wired
// here from data attributes.
(function () {
  "use strict";

  function flash(button, text) {
    var label = button.querySelector("span") || button;
    var before = label.textContent;
    label.textContent = text;
    button.classList.add("copied");
    window.setTimeout(function () {
      label.textContent = before;
      button.classList.remove("copied");
    }, 1600);
  }

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }

  function copy(button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) { return; }
    var text = target.textContent.trim();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { flash(button, "Copied"); },
        function () { flash(button, fallbackCopy(text) ? "Copied" : "Select and copy"); }
      );
    } else {
      flash(button, fallbackCopy(text) ? "Copied" : "Select and copy");
    }
  }

  document.addEventListener("click", function (ev) {
    var button = ev.target.closest && ev.target.closest("button[data-copy]");
    if (button) { ev.preventDefault(); copy(button); }
  });

  // Clicking a secret selects all of it, for manual copying.
  document.addEventListener("click", function (ev) {
    var value = ev.target.closest && ev.target.closest(".copy-value");
    if (value && window.getSelection) {
      var range = document.createRange();
      range.selectNodeContents(value);
      var sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
  });
})();
