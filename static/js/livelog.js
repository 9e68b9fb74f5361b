// Live log follower shared by the deployment and scaling run pages.
// Stored lines first (those the server did not render), then the WebSocket from the
// last sequence number held; on a dropped socket it reconnects from there, so a
// reload, a late viewer or a network blip loses nothing and shows nothing twice.
(function () {
  "use strict";

  function pad(n) { return n < 10 ? "0" + n : "" + n; }

  // UTC, like the lines the server rendered into the page.
  function clock(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "";
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) +
      "." + ("00" + d.getUTCMilliseconds()).slice(-3);
  }

  // opts: root (element with data-logs-url, data-ws-path, data-last-seq, data-status),
  // terminal (final statuses), showStep (a step column), onStatus(msg) (renders a status
  // message and returns nothing), onFinished() (once the status is final).
  function follow(opts) {
    var root = opts.root;
    var logsUrl = root.dataset.logsUrl;
    var wsPath = root.dataset.wsPath;
    var lastSeq = parseInt(root.dataset.lastSeq || "0", 10);
    var status = root.dataset.status;
    var terminal = opts.terminal;
    var log = document.getElementById("log");
    var logBox = document.getElementById("log-box");
    var emptyNote = document.getElementById("log-empty");
    var liveDot = document.getElementById("live-indicator");
    var tail = true;
    var retryDelay = 500;
    var socket = null;
    var received = 0;

    // Follow the tail unless the reader scrolled up to read something.
    logBox.addEventListener("scroll", function () {
      tail = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 24;
    });

    function isFinal() { return terminal.indexOf(status) >= 0; }

    function setLive(state, title) {
      if (!liveDot) return;
      liveDot.className = "live " + state;
      liveDot.title = title;
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
      li.appendChild(time);
      if (opts.showStep) {
        var step = document.createElement("span");
        step.className = "log-step";
        step.textContent = line.step || "";
        li.appendChild(step);
      }
      var msg = document.createElement("span");
      msg.className = "log-msg";
      msg.textContent = line.message;
      li.appendChild(msg);
      log.appendChild(li);
      if (emptyNote) { emptyNote.remove(); emptyNote = null; }
      return true;
    }

    function appendLines(lines) {
      var added = false;
      for (var i = 0; i < lines.length; i++) added = appendLine(lines[i]) || added;
      if (added && tail) logBox.scrollTop = logBox.scrollHeight;
    }

    function onStatus(msg) {
      // A final status is final: a message computed before it and delivered after it is stale.
      if (isFinal()) return;
      status = msg.status;
      root.dataset.status = status;
      opts.onStatus(msg);
      if (isFinal()) {
        setLive("off", "Finished");
        // Lines published right after the final status still arrive; then the socket is let go.
        setTimeout(function () { if (socket) socket.close(1000); }, 3000);
        if (opts.onFinished) opts.onFinished();
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
      socket = new WebSocket(scheme + location.host + wsPath + "?after=" + lastSeq);
      socket.onopen = function () {
        retryDelay = 500;
        setLive("on", "Following live");
      };
      socket.onmessage = function (event) {
        var msg = JSON.parse(event.data);
        if (msg.type === "log") { received += 1; appendLines([msg.line]); }
        else if (msg.type === "lines") { received += msg.lines.length; appendLines(msg.lines); }
        else if (msg.type === "status") onStatus(msg);
        else if (opts.onMessage) opts.onMessage(msg);
      };
      socket.onclose = function (event) {
        socket = null;
        if (isFinal()) return;
        setLive("off", "Reconnecting…");
        if (event.code === 4401 || event.code === 4403 || event.code === 4404) return;
        // Reconnect from the last line held; the server replays whatever was missed.
        setTimeout(connect, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 8000);
      };
    }

    logBox.scrollTop = logBox.scrollHeight;
    fetchStored().catch(function () {}).then(function () {
      if (isFinal()) { setLive("off", "Finished"); return; }
      connect();
    });

    return {
      lastSeq: function () { return lastSeq; },
      received: function () { return received; },
      status: function () { return status; }
    };
  }

  // The banner (class, title, failure reason) and the status badge both pages share.
  function renderBanner(status, title, failureReason) {
    var banner = document.getElementById("status-banner");
    banner.className = "banner " + status;
    banner.querySelector(".banner-title").textContent = title;
    var reason = banner.querySelector(".banner-reason");
    reason.textContent = failureReason || "";
    reason.hidden = !failureReason;
    var badge = document.getElementById("status-badge");
    badge.className = "badge " + status;
    badge.textContent = status.replace(/_/g, " ");
    return banner;
  }

  window.GreenlightLiveLog = { follow: follow, clock: clock, renderBanner: renderBanner };
})();
