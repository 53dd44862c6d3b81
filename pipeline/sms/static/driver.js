// The driver page: the countdown ticks every second (from the server's clock), and the page
// reloads itself when what it says changes (a void, a decision, the deadline passing).
(function () {
  var status = document.getElementById("status");
  if (!status) return;
  var countdown = document.getElementById("countdown");
  if (countdown) {
    var deadline = Number(countdown.dataset.deadline);
    var offset = Number(countdown.dataset.now) - Date.now();
    var tick = function () {
      var left = Math.max(0, Math.floor((deadline - (Date.now() + offset)) / 1000));
      countdown.textContent = Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0");
      if (left === 0) { poll(); return; }
      setTimeout(tick, 1000 - ((Date.now() + offset) % 1000));
    };
    tick();
  }
  var polling = false;
  function poll() {
    if (polling) return;
    polling = true;
    fetch(status.dataset.stateUrl, {cache: "no-store"}).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) { if (s && s.version !== status.dataset.version) location.reload(); })
      .catch(function () {}).then(function () { polling = false; });
  }
  setInterval(poll, 10000);
})();
