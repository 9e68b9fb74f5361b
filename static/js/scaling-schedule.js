// Schedule editor: show the timing fields of the chosen kind, add action rows, live preview.
(function () {
  "use strict";

  var form = document.getElementById("schedule-form");
  if (!form) return;
  var previewUrl = form.dataset.previewUrl;
  var body = document.getElementById("preview-body");
  var state = document.getElementById("preview-state");
  var zoneLabel = document.getElementById("preview-zone");
  var timer = null;
  var sequence = 0;

  function kind() {
    var checked = form.querySelector('input[name="kind"]:checked');
    return checked ? checked.value : "cron";
  }

  function showTiming() {
    var k = kind();
    form.querySelectorAll(".timing").forEach(function (el) { el.hidden = el.dataset.kind !== k; });
  }

  function cell(text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function render(data) {
    body.innerHTML = "";
    if (!data.ok) {
      var tr = document.createElement("tr");
      var td = document.createElement("td");
      td.colSpan = 2;
      Object.keys(data.errors).forEach(function (field) {
        data.errors[field].forEach(function (message) {
          var p = document.createElement("p");
          p.className = "field-error";
          p.textContent = message;
          td.appendChild(p);
        });
      });
      tr.appendChild(td);
      body.appendChild(tr);
      state.textContent = "";
      return;
    }
    data.runs.forEach(function (run) {
      var tr = document.createElement("tr");
      if (run.note) tr.className = "dst-row";
      var local = cell(run.local);
      if (run.event !== "apply") {
        var sub = document.createElement("div");
        sub.className = "sub";
        sub.textContent = run.event;
        local.appendChild(sub);
      }
      tr.appendChild(local);
      tr.appendChild(cell(run.utc, "sub"));
      body.appendChild(tr);
      if (run.note) {
        var note = document.createElement("tr");
        note.className = "dst-note";
        var td = document.createElement("td");
        td.colSpan = 2;
        var badge = document.createElement("span");
        badge.className = "dst";
        badge.textContent = "DST";
        td.appendChild(badge);
        td.appendChild(document.createTextNode(" " + run.note));
        note.appendChild(td);
        body.appendChild(note);
      }
    });
    state.textContent = "updated";
  }

  function refresh() {
    var params = new URLSearchParams();
    ["name", "kind", "cron", "at_time", "until_time", "timezone"].forEach(function (name) {
      var field = name === "kind" ? null : form.elements[name];
      var value = name === "kind" ? kind() : (field ? field.value : "");
      params.append(name, value);
    });
    form.querySelectorAll('input[name="days"]:checked').forEach(function (box) {
      params.append("days", box.value);
    });
    zoneLabel.textContent = form.elements.timezone.value || "UTC";
    var mine = ++sequence;
    state.textContent = "…";
    fetch(previewUrl + "?" + params.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (data) { if (mine === sequence) render(data); })
      .catch(function () { state.textContent = "preview unavailable"; });
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  }

  function addRow(prefix) {
    var total = form.elements[prefix + "-TOTAL_FORMS"];
    var index = parseInt(total.value, 10);
    var template = document.getElementById(prefix + "-empty");
    var html = template.innerHTML.replace(/__prefix__/g, String(index));
    var table = document.querySelector('table[data-prefix="' + prefix + '"] tbody');
    table.insertAdjacentHTML("beforeend", html);
    total.value = String(index + 1);
  }

  form.querySelectorAll(".add-row").forEach(function (button) {
    button.addEventListener("click", function () { addRow(button.dataset.target); });
  });
  form.addEventListener("change", function (event) {
    if (event.target.name === "kind") showTiming();
    schedule();
  });
  form.addEventListener("input", schedule);
  showTiming();
})();
