// Live deployment page: stored lines first, then the WebSocket from the last sequence number.
(function () {
  "use strict";

  var root = document.getElementById("deployment");
  if (!root) return;

  var id = root.dataset.id;
  var logsUrl = root.dataset.logsUrl;
  var detailUrl = root.dataset.detailUrl;
  var wsPath = root.dataset.wsPath;
  var lastSeq = parseInt(root.dataset.lastSeq || "0", 10);
  var status = root.dataset.status;
  var terminal = ["succeeded", "failed", "aborted"];
  var log = document.getElementById("log");
  var logBox = document.getElementById("log-box");
  var emptyNote = document.getElementById("log-empty");
  var liveDot = document.getElementById("live-indicator");
  var follow = true;
  var retryDelay = 500;
  var socket = null;
  var received = 0;

  // Follow the tail unless the reader scrolled up to read something.
  logBox.addEventListener("scroll", function () {
    follow = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 24;
  });

  function scrollToEnd() {
    if (follow) logBox.scrollTop = logBox.scrollHeight;
  }

  function pad(n) { return n < 10 ? "0" + n : "" + n; }

  function clock(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "";
    // UTC, like the lines the server rendered into the page.
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) +
      "." + ("00" + d.getUTCMilliseconds()).slice(-3);
  }

  function appendLine(line) {
    if (line.seq <= lastSeq) return false;
    lastSeq = line.seq;
    var li = document.createElement("li");
    li.className = "log-line level-" + line.level;
    li.dataset.seq = line.seq;
    var time = document.createElement("time");
    time.dateTime = line.time;
    time.textContent = clock(line.time);
    var step = document.createElement("span");
    step.className = "log-step";
    step.textContent = line.step || "";
    var msg = document.createElement("span");
    msg.className = "log-msg";
    msg.textContent = line.message;
    li.appendChild(time);
    li.appendChild(step);
    li.appendChild(msg);
    log.appendChild(li);
    if (emptyNote) { emptyNote.remove(); emptyNote = null; }
    return true;
  }

  function appendLines(lines) {
    var added = false;
    for (var i = 0; i < lines.length; i++) added = appendLine(lines[i]) || added;
    if (added) scrollToEnd();
  }

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
    status = msg.status;
    root.dataset.status = status;
    var banner = document.getElementById("status-banner");
    banner.className = "banner " + status;
    banner.querySelector(".banner-title").textContent = document.getElementById("status-text-" + status).textContent;
    var reason = banner.querySelector(".banner-reason");
    reason.textContent = msg.failure_reason || "";
    reason.hidden = !msg.failure_reason;
    var badge = document.getElementById("status-badge");
    badge.className = "badge " + status;
    badge.textContent = status;
    var version = document.getElementById("version");
    if (msg.version) version.textContent = "v" + msg.version;
    var total = document.getElementById("duration");
    if (status === "running" && !total.dataset.started) total.dataset.started = new Date().toISOString();
    version.classList.toggle("plain", status !== "succeeded");
    renderSteps(msg.steps);
    var abort = document.getElementById("abort-form");
    if (abort) abort.hidden = terminal.indexOf(status) >= 0;
    if (terminal.indexOf(status) >= 0) finished();
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
    if (!isNaN(since) && terminal.indexOf(status) < 0) total.textContent = formatSeconds(Math.max(0, (now - since) / 1000));
  }
  var ticker = setInterval(tick, 1000);

  function finished() {
    clearInterval(ticker);
    liveDot.className = "live off";
    liveDot.title = "Finished";
    // Lines published right after the final status still arrive; then the socket is let go.
    setTimeout(function () { if (socket) socket.close(1000); }, 3000);
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

  // Stored lines the server did not render (a long log, or lines written since the page was built).
  function fetchStored() {
    var url = logsUrl + "?after=" + lastSeq;
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : { results: [], has_more: false }; })
      .then(function (data) {
        appendLines(data.results || []);
        if (data.has_more) return fetchStored();
      });
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + wsPath + "?after=" + lastSeq);
    socket.onopen = function () {
      retryDelay = 500;
      liveDot.className = "live on";
      liveDot.title = "Following live";
    };
    socket.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (msg.type === "log") { received += 1; appendLines([msg.line]); }
      else if (msg.type === "lines") { received += msg.lines.length; appendLines(msg.lines); }
      else if (msg.type === "status") renderStatus(msg);
    };
    socket.onclose = function (event) {
      socket = null;
      if (terminal.indexOf(status) >= 0) return;
      liveDot.className = "live off";
      liveDot.title = "Reconnecting…";
      if (event.code === 4403 || event.code === 4404) return;
      // Reconnect from the last line we hold; the server replays anything missed.
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 8000);
    };
  }

  scrollToEnd();
  fetchStored().catch(function () {}).then(function () {
    if (terminal.indexOf(status) >= 0) {
      liveDot.className = "live off";
      liveDot.title = "Finished";
      return;
    }
    connect();
  });
  // For tests and the curious: what arrived over the socket.
  window.greenlightDeployment = {
    id: id,
    lastSeq: function () { return lastSeq; },
    received: function () { return received; }
  };
})();
