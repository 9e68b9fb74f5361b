// Scaling run page: the shared live log follower, plus the run's banner and plan outcomes.
(function () {
  "use strict";

  var root = document.getElementById("scaling-run");
  if (!root) return;

  function renderStatus(msg) {
    var status = msg.status;
    var title = status.charAt(0).toUpperCase() + status.slice(1);
    var banner = window.GreenlightLiveLog.renderBanner(status, title, msg.failure_reason);
    banner.querySelector(".banner-wait").hidden = status !== "waiting";
    (msg.result || []).forEach(function (r) {
      var cell = document.querySelector('#plan tr[data-key="' + r.key + '"] .outcome');
      if (!cell) return;
      cell.innerHTML = "";
      var tag = document.createElement("span");
      tag.className = "tag outcome-" + String(r.outcome).replace(/\s+/g, "-");
      tag.textContent = r.outcome;
      cell.appendChild(tag);
    });
  }

  window.GreenlightLiveLog.follow({
    root: root,
    terminal: ["succeeded", "failed"],
    showStep: false,
    onStatus: renderStatus
  });
})();
