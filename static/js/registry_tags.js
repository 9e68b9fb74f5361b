// App form: the image field suggests its repository's tags, newest first, from the registry.
// The lookup runs in the background with a short timeout; without an answer the field works
// as before and the line under it says why there are no suggestions.
(function () {
  "use strict";

  var input = document.getElementById("id_image");
  var list = document.getElementById("image-suggestions");
  var status = document.getElementById("image-tags-status");
  if (!input || !list || !status) return;
  var TIMEOUT_MS = 5000;
  var shown = 30;
  var asked = "";
  var pending = null;
  var timer = null;

  function repository(image) {
    var name = image.split("@")[0];
    var slash = name.lastIndexOf("/");
    var colon = name.lastIndexOf(":");
    return colon > slash ? name.slice(0, colon) : name;
  }

  function say(text) {
    status.textContent = text;
  }

  function show(repo, tags) {
    list.querySelectorAll("option[data-registry]").forEach(function (option) { option.remove(); });
    var first = list.firstChild;
    tags.slice(0, shown).forEach(function (tag) {
      var option = document.createElement("option");
      option.value = repo + ":" + tag;
      option.dataset.registry = "1";
      list.insertBefore(option, first);
    });
  }

  function lookup() {
    var image = input.value.trim();
    var repo = repository(image);
    if (!repo || repo === asked) return;
    asked = repo;
    if (pending) pending.abort();
    var controller = new AbortController();
    pending = controller;
    var timeout = setTimeout(function () { controller.abort("timeout"); }, TIMEOUT_MS);
    say("Asking the registry for tags of " + repo + "…");
    fetch(status.dataset.url + "?image=" + encodeURIComponent(image), {
      signal: controller.signal,
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    })
      .then(function (response) { return response.json(); })
      .then(function (body) {
        if (controller !== pending) return;
        if (body.error) {
          show(repo, []);
          say("No tag suggestions: " + body.error);
        } else if (!body.tags.length) {
          show(repo, []);
          say("The registry has no tags for " + body.repository + ".");
        } else {
          show(repo, body.tags);
          say(body.tags.length + " tags of " + body.repository + " from the registry, newest first.");
        }
      })
      .catch(function () {
        if (controller !== pending) return;
        asked = "";
        say("No tag suggestions: the registry lookup did not finish within " + TIMEOUT_MS / 1000 + " s.");
      })
      .finally(function () { clearTimeout(timeout); });
  }

  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(lookup, 400);
  });
  input.addEventListener("focus", lookup);
  if (input.value.trim()) lookup();
})();
