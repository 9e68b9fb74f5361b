// App page: while a deploy runs, watch its status and refresh the page when it ends.
(function () {
  "use strict";

  var notice = document.getElementById("active-deployment");
  if (!notice) return;
  var url = notice.dataset.statusUrl;
  var terminal = ["succeeded", "failed", "aborted"];
  var delay = 1500;

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        if (d && terminal.indexOf(d.status) >= 0) { location.reload(); return; }
        if (d) {
          notice.querySelector(".active-status").textContent = d.status.replace(/_/g, " ");
          notice.classList.toggle("awaiting_promotion", d.status === "awaiting_promotion");
          var promotion = document.getElementById("active-promotion");
          if (promotion) promotion.hidden = d.status !== "awaiting_promotion";
        }
        setTimeout(poll, delay);
      })
      .catch(function () { setTimeout(poll, delay * 4); });
  }
  setTimeout(poll, delay);
})();
