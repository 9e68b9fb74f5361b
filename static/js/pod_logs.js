// A pod's log followed live: lines from the pod log socket, bounded in lines and bytes.
// The options form reloads the page with its query, which the socket reads too.
(function () {
  "use strict";
  var root = document.getElementById("pod-log");
  if (!root) return;
  var maxLines = parseInt(root.dataset.pageLines, 10);
  var maxBytes = parseInt(root.dataset.pageBytes, 10);
  var log = document.getElementById("log");
  var logBox = document.getElementById("log-box");
  var state = document.getElementById("pod-log-state");
  var droppedNote = document.getElementById("log-dropped");
  var liveDot = document.getElementById("live-indicator");
  var bytes = 0;
  var dropped = 0;
  var tail = true;
  var finished = false;

  logBox.addEventListener("scroll", function () {
    tail = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 24;
  });

  function setLive(cls, title) {
    liveDot.className = "live " + cls;
    liveDot.title = title;
  }

  function noteDropped(n) {
    dropped += n;
    droppedNote.hidden = false;
    droppedNote.textContent = dropped + " older line" + (dropped === 1 ? "" : "s") + " dropped.";
  }

  function append(lines) {
    for (var i = 0; i < lines.length; i++) {
      var li = document.createElement("li");
      li.className = "log-line";
      li.dataset.seq = lines[i].seq;
      var msg = document.createElement("span");
      msg.className = "log-msg";
      msg.textContent = lines[i].message;
      li.appendChild(msg);
      log.appendChild(li);
      bytes += lines[i].message.length + 1;
    }
    var cut = 0;
    while (log.firstChild && (log.childNodes.length > maxLines || bytes > maxBytes)) {
      bytes -= log.firstChild.textContent.length + 1;
      log.removeChild(log.firstChild);
      cut += 1;
    }
    if (cut) noteDropped(cut);
    if (tail) logBox.scrollTop = logBox.scrollHeight;
  }

  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var socket = new WebSocket(scheme + location.host + root.dataset.wsPath + location.search);
  socket.onopen = function () {
    setLive("on", "Following live");
    state.textContent = "Following live.";
  };
  socket.onmessage = function (event) {
    var msg = JSON.parse(event.data);
    if (msg.type === "lines") append(msg.lines);
    else if (msg.type === "dropped") noteDropped(msg.count);
    else if (msg.type === "status") {
      finished = true;
      root.dataset.status = msg.status;
      state.textContent = msg.message;
      setLive("off", msg.message);
    }
  };
  socket.onclose = function (event) {
    setLive("off", "Stopped");
    if (finished) return;
    state.textContent = event.code === 4404 ? "This pod is not one of the app's, or it is gone."
      : event.code === 4403 || event.code === 4401 ? "You may not read this pod's log."
      : "The connection closed. Reload the page to follow again.";
    root.dataset.status = "closed";
  };
  window.addEventListener("pagehide", function () { socket.close(1000); });
})();
