// App form: add and remove env rows, and say what is wrong with a field as soon as it is left.
(function () {
  "use strict";

  var rows = document.getElementById("env-rows");
  var template = document.getElementById("env-row-template");
  var total = document.getElementById("id_env-TOTAL_FORMS");
  var add = document.getElementById("env-add");

  function renumber() {
    var all = rows.querySelectorAll(".env-row");
    all.forEach(function (row, index) {
      row.querySelectorAll("input, select").forEach(function (input) {
        input.name = input.name.replace(/env-(\d+|__prefix__)-/, "env-" + index + "-");
        input.id = input.id.replace(/env-(\d+|__prefix__)-/, "env-" + index + "-");
      });
    });
    total.value = all.length;
  }

  if (rows && template && total && add) {
    add.addEventListener("click", function () {
      var fragment = template.content.cloneNode(true);
      rows.appendChild(fragment);
      renumber();
      var inputs = rows.querySelectorAll(".env-row:last-child input");
      if (inputs.length) inputs[0].focus();
    });
    rows.addEventListener("click", function (event) {
      var button = event.target.closest(".env-remove");
      if (!button) return;
      button.closest(".env-row").remove();
      renumber();
    });
  }

  // The browser's constraint check, worded like the server's messages.
  var hints = {
    id_name: "Lowercase letters, digits and '-', starting with a letter, at most 53 characters.",
    id_cpu_request: "Use millicores like 250m or cores like 0.5.",
    id_cpu_limit: "Use millicores like 250m or cores like 0.5.",
    id_memory_request: "Use a number with a unit, like 64Mi or 1Gi.",
    id_memory_limit: "Use a number with a unit, like 64Mi or 1Gi."
  };
  document.querySelectorAll("form.app-form input").forEach(function (input) {
    input.addEventListener("blur", function () { check(input); });
    input.addEventListener("input", function () { if (input.classList.contains("invalid")) check(input); });
  });

  function check(input) {
    var field = input.closest(".field");
    if (!field) return;
    var note = field.querySelector(".client-error");
    var message = "";
    if (!input.validity.valid) {
      message = input.validity.patternMismatch && hints[input.id] ? hints[input.id] : input.validationMessage;
    }
    input.classList.toggle("invalid", !!message);
    if (!message) { if (note) note.remove(); return; }
    if (!note) {
      note = document.createElement("p");
      note.className = "client-error";
      input.insertAdjacentElement("afterend", note);
    }
    note.textContent = message;
  }
})();
