// Scaling run page: the shared live log follower, plus the run's banner and plan outcomes.
(function () {
  "use strict";

  var root = document.getElementById("scaling-run");
  if (!root) return;

  function renderStatus(msg) {
    var status = msg.status;
    var banner = document.getElementById("status-banner");
    banner.className = "banner " + status;
    banner.querySelector(".banner-title").textContent = status.charAt(0).toUpperCase() + status.slice(1);
    banner.querySelector(".banner-wait").hidden = status !== "waiting";
    var reason = banner.querySelector(".banner-reason");
    reason.textContent = msg.failure_reason || "";
    reason.hidden = !msg.failure_reason;
    var badge = document.getElementById("status-badge");
    badge.className = "badge " + status;
    badge.textContent = status;
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
