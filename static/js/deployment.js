// Live deployment page: stored lines first, then the WebSocket from the last sequence number.
(function () {
  "use strict";

  var root = document.getElementById("deployment");
  if (!root) return;

  var id = root.dataset.id;
  var detailUrl = root.dataset.detailUrl;
  var terminal = ["succeeded", "failed", "aborted"];

  function status() { return root.dataset.status; }

  function formatSeconds(s) {
    if (s === null || s === undefined) return "";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 120) return Math.round(s) + " s";
    return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  }

  function renderSteps(steps) {
    if (!steps) return;
    var list = document.getElementById("steps");
    Object.keys(steps).forEach(function (name) {
      var info = steps[name] || {};
      var li = list.querySelector('[data-step="' + CSS.escape(name) + '"]');
      if (!li) {
        li = document.createElement("li");
        li.dataset.step = name;
        li.innerHTML = '<span class="step-icon"></span><span class="step-name"></span><span class="step-time"></span>';
        li.querySelector(".step-name").textContent = name.replace(/_/g, " ");
        list.appendChild(li);
      }
      li.className = "step " + (info.state || "pending");
      li.dataset.started = info.started || "";
      li.querySelector(".step-time").textContent = formatSeconds(info.seconds);
    });
  }

  function renderStatus(msg) {
    var status = msg.status;
    window.GreenlightLiveLog.renderBanner(
      status, document.getElementById("status-text-" + status).textContent, msg.failure_reason);
    var version = document.getElementById("version");
    if (msg.version) version.textContent = "v" + msg.version;
    var total = document.getElementById("duration");
    if (status === "running" && !total.dataset.started) total.dataset.started = new Date().toISOString();
    version.classList.toggle("plain", status !== "succeeded");
    renderSteps(msg.steps);
    var abort = document.getElementById("abort-form");
    if (abort) abort.hidden = terminal.indexOf(status) >= 0;
    renderPromotion(status, msg.promotion_deadline);
  }

  // Promote and Reject only while the run waits for them, with the time it gives up.
  function renderPromotion(status, deadline) {
    var awaiting = status === "awaiting_promotion";
    var actions = document.getElementById("promotion-actions");
    if (actions) actions.hidden = !awaiting;
    var note = document.getElementById("promotion-deadline");
    if (!note) return;
    note.hidden = !(awaiting && deadline);
    if (note.hidden) return;
    var time = document.createElement("time");
    time.dateTime = deadline;
    time.textContent = deadline.slice(0, 19).replace("T", " ");
    note.textContent = "Rejected at ";
    note.appendChild(time);
    note.appendChild(document.createTextNode(" UTC unless promoted first."));
  }

  // Running steps and the whole run show their time so far, once a second.
  function tick() {
    var now = Date.now();
    document.querySelectorAll("#steps li.running").forEach(function (li) {
      var started = Date.parse(li.dataset.started || "");
      if (!isNaN(started)) li.querySelector(".step-time").textContent = formatSeconds(Math.max(0, (now - started) / 1000));
    });
    var total = document.getElementById("duration");
    var since = Date.parse(total.dataset.started || "");
    if (!isNaN(since) && terminal.indexOf(status()) < 0) total.textContent = formatSeconds(Math.max(0, (now - since) / 1000));
  }
  var ticker = setInterval(tick, 1000);

  function finished() {
    clearInterval(ticker);
    // Health results and timings are written with the final status: fetch them once.
    fetch(detailUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) { if (d) renderDetail(d); })
      .catch(function () {});
  }

  function renderDetail(d) {
    if (d.duration_seconds !== null && d.duration_seconds !== undefined) {
      document.getElementById("duration").textContent = formatSeconds(d.duration_seconds);
    }
    var body = document.getElementById("health-body");
    if (!body || !d.health_results || !d.health_results.length) return;
    body.innerHTML = "";
    d.health_results.forEach(function (h) {
      var tr = document.createElement("tr");
      var cells = [h.pod || "", h.ip || "", h.healthy ? "healthy" : "unhealthy",
        (h.detail || "") + (h.version ? " (version " + h.version + ")" : ""),
        h.seconds === undefined || h.seconds === null ? "" : formatSeconds(h.seconds)];
      cells.forEach(function (text, i) {
        var td = document.createElement("td");
        if (i === 2) {
          var b = document.createElement("span");
          b.className = "badge " + (h.healthy ? "succeeded" : "failed");
          b.textContent = text;
          td.appendChild(b);
        } else {
          td.textContent = text;
        }
        if (i < 2) td.className = "mono";
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    document.getElementById("health-card").hidden = false;
  }

  var live = window.GreenlightLiveLog.follow({
    root: root,
    terminal: terminal,
    showStep: true,
    onStatus: renderStatus,
    onFinished: finished
  });
  // For tests and the curious: what arrived over the socket.
  window.greenlightDeployment = {
    id: id,
    lastSeq: live.lastSeq,
    received: live.received
  };
})();
