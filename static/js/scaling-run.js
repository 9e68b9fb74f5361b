// Scaling run page: stored lines first, then the WebSocket from the last sequence number.
(function () {
  "use strict";

  var root = document.getElementById("scaling-run");
  if (!root) return;

  var logsUrl = root.dataset.logsUrl;
  var wsPath = root.dataset.wsPath;
  var lastSeq = parseInt(root.dataset.lastSeq || "0", 10);
  var status = root.dataset.status;
  var terminal = ["succeeded", "failed"];
  var log = document.getElementById("log");
  var logBox = document.getElementById("log-box");
  var emptyNote = document.getElementById("log-empty");
  var liveDot = document.getElementById("live-indicator");
  var follow = true;
  var retryDelay = 500;

  logBox.addEventListener("scroll", function () {
    follow = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 24;
  });

  function pad(n) { return n < 10 ? "0" + n : "" + n; }

  function clock(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "";
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) +
      "." + ("00" + d.getMilliseconds()).slice(-3);
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
    var msg = document.createElement("span");
    msg.className = "log-msg";
    msg.textContent = line.message;
    li.appendChild(time);
    li.appendChild(msg);
    log.appendChild(li);
    if (emptyNote) { emptyNote.remove(); emptyNote = null; }
    return true;
  }

  function appendLines(lines) {
    var added = false;
    for (var i = 0; i < lines.length; i++) added = appendLine(lines[i]) || added;
    if (added && follow) logBox.scrollTop = logBox.scrollHeight;
  }

  function renderStatus(msg) {
    status = msg.status;
    root.dataset.status = status;
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
    if (terminal.indexOf(status) >= 0) {
      liveDot.className = "live off";
    }
  }

  function fetchStored() {
    return fetch(logsUrl + "?after=" + lastSeq, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : { results: [], has_more: false }; })
      .then(function (data) {
        appendLines(data.results || []);
        if (data.has_more) return fetchStored();
      });
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + wsPath + "?after=" + lastSeq);
    socket.onopen = function () {
      retryDelay = 500;
      liveDot.className = "live on";
    };
    socket.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (msg.type === "log") appendLines([msg.line]);
      else if (msg.type === "lines") appendLines(msg.lines);
      else if (msg.type === "status") renderStatus(msg);
    };
    socket.onclose = function (event) {
      if (terminal.indexOf(status) >= 0) return;
      liveDot.className = "live connecting";
      if (event.code === 4401 || event.code === 4403 || event.code === 4404) return;
      // Reconnect from the last line held; the server replays whatever was missed.
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 8000);
    };
  }

  logBox.scrollTop = logBox.scrollHeight;
  fetchStored().catch(function () {}).then(function () {
    if (terminal.indexOf(status) >= 0) { liveDot.className = "live off"; return; }
    connect();
  });
})();
