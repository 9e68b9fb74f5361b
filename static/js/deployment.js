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
    if (d.guard && d.guard.state) renderGuard(d.guard);
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

  // The guard after the switch: both versions' figures during the bake, then its outcome.
  var guardStates = { baking: "running", passed: "succeeded", swapped_back: "failed" };
  var guardTitles = { baking: "baking", passed: "passed", swapped_back: "swapped back" };

  function formatMs(value) {
    return value === null || value === undefined ? "–" : Math.round(value) + " ms";
  }

  function renderGuard(guard) {
    var card = document.getElementById("guard-card");
    if (!card || !guard || !guard.state) return;
    card.hidden = false;
    card.dataset.state = guard.state;
    var badge = document.getElementById("guard-state");
    badge.className = "badge " + (guardStates[guard.state] || "queued");
    badge.textContent = guardTitles[guard.state] || guard.state;
    var limits = guard.thresholds || {};
    var summary = Math.round(guard.elapsed || 0) + " s of " + guard.bake_seconds + " s baked; swaps back above " +
      limits.max_error_percent + "% 5xx over at least " + limits.min_requests + " requests" +
      (limits.max_response_ms ? " or above " + limits.max_response_ms + " ms on average" : "") +
      (limits.promql ? ", or on a non-zero sample of the PromQL query" : "") + ".";
    if (guard.counted === false) summary += " Per-version counters are not available in traffic mode service.";
    if (guard.traffic === "service") summary += " Traffic mode service: the new version's figures are its backend's, whose one server is the stable Service, which selects only the new version since the switch.";
    var unreadable = Object.keys(guard.unreadable || {});
    if (unreadable.length) summary += " Counters not readable from " + unreadable.join(", ") + ".";
    document.getElementById("guard-summary").textContent = summary;
    var body = document.getElementById("guard-body");
    body.innerHTML = "";
    var labels = { "new": " (new)", previous: " (previous)", previous_before: " before the switch" };
    [["new", guard.new], ["previous", guard.previous], ["previous_before", guard.previous_before]].forEach(function (pair) {
      var figures = pair[1];
      if (!figures) return;
      var tr = document.createElement("tr");
      tr.dataset.role = pair[0];
      if (pair[0] === "previous_before") tr.className = "muted";
      var cells = ["v" + figures.version + labels[pair[0]],
        String(figures.requests), String(figures.errors), figures.error_percent.toFixed(1) + "%",
        formatMs(figures.rtime_ms), formatMs(figures.ttime_ms)];
      cells.forEach(function (text) {
        var td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    var reason = document.getElementById("guard-reason");
    reason.textContent = guard.reason || "";
    reason.hidden = !guard.reason;
  }

  var guardData = document.getElementById("guard-data");
  if (guardData) renderGuard(JSON.parse(guardData.textContent || "{}"));

  var live = window.GreenlightLiveLog.follow({
    root: root,
    terminal: terminal,
    showStep: true,
    onStatus: renderStatus,
    onFinished: finished,
    onMessage: function (msg) { if (msg.type === "guard") renderGuard(msg.guard); }
  });
  // For tests and the curious: what arrived over the socket.
  window.greenlightDeployment = {
    id: id,
    lastSeq: live.lastSeq,
    received: live.received
  };
})();
