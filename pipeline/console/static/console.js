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

  // Live updates must never move keyboard focus: when the focused element is inside a part being
  // replaced, focus its counterpart in the new content (same id, or same link / control in the
  // same keyed row) without scrolling.
  function counterpart(section, old) {
    if (old.id) return document.getElementById(old.id);
    const row = old.closest("[data-plate], [data-case], [data-dead-letter], [id]");
    const key = row && row !== section ? ["data-plate", "data-case", "data-dead-letter", "id"].find(function (a) { return row.hasAttribute(a); }) : null;
    const scope = key ? section.querySelector("[" + key + "='" + CSS.escape(row.getAttribute(key)) + "']") : section;
    if (!scope) return null;
    if (old.matches("a[href]")) return scope.querySelector("a[href='" + CSS.escape(old.getAttribute("href")) + "']");
    if (old.name) return scope.querySelector(old.tagName.toLowerCase() + "[name='" + CSS.escape(old.name) + "']");
    return null;
  }

  function replaceKeepingFocus(el, html) {
    const active = document.activeElement;
    const had = active && active !== document.body && el.contains(active);
    el.innerHTML = html;
    if (had) {
      const again = counterpart(el, active);
      if (again) again.focus({preventScroll: true});
    }
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
        replaceKeepingFocus(el, message.sections[id]);
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
