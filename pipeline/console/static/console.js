// parkwarden console: live updates by server-sent events, and countdowns. No build step.
// The server sends {"now": ISO time, "sections": {element id: HTML}} for the parts that changed.
(function () {
  "use strict";
  let clockOffset = 0;  // server time - browser time, in ms

  function pad(n) { return String(n).padStart(2, "0"); }

  function tick() {
    const now = Date.now() + clockOffset;
    document.querySelectorAll(".countdown[data-deadline]").forEach(function (el) {
      const left = Math.round((Date.parse(el.dataset.deadline) - now) / 1000);
      if (left <= 0) {
        el.textContent = el.dataset.overdue;
        el.classList.add("overdue");
      } else {
        el.textContent = Math.floor(left / 60) + ":" + pad(left % 60);
        el.classList.toggle("soon", left <= 60);
      }
    });
  }

  // An operator typing a reason must not lose it to an update: say the case changed instead.
  function typing(section) {
    const active = document.activeElement;
    if (active && section.contains(active) && active.matches("textarea, input, select")) return true;
    return Array.prototype.some.call(section.querySelectorAll("textarea, input:not([type=hidden])"),
      function (field) { return field.value.trim() !== ""; });
  }

  function connect(root) {
    const status = document.getElementById("live-status");
    const source = new EventSource(root.dataset.stream);
    source.addEventListener("update", function (event) {
      const message = JSON.parse(event.data);
      clockOffset = Date.parse(message.now) - Date.now();
      Object.keys(message.sections).forEach(function (id) {
        const el = document.getElementById(id);
        if (!el) return;
        if (el.hasAttribute("data-guard") && typing(el)) {
          const note = document.getElementById("case-changed");
          if (note) note.hidden = false;
          return;
        }
        el.innerHTML = message.sections[id];
      });
      tick();
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    });
    source.onopen = function () {
      status.hidden = false;
      status.textContent = status.dataset.ok;
      status.className = "live-status ok";
    };
    source.onerror = function () {
      status.hidden = false;
      status.textContent = status.dataset.lost;
      status.className = "live-status lost";
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    const root = document.querySelector("[data-stream]");
    if (root && window.EventSource) connect(root);
    tick();
    setInterval(tick, 1000);
  });
})();
