// The agent page's live log: "follow live" tails the agent's service log over server-sent events.
(function () {
  "use strict";
  function start() {
    var button = document.getElementById("log-follow");
    var view = document.getElementById("log-lines");
    if (!button || !view) return;
    var source = null;
    var agent = button.getAttribute("data-agent");
    function stop() {
      if (source) { source.close(); source = null; }
      button.setAttribute("aria-pressed", "false");
      button.textContent = "follow live";
    }
    button.addEventListener("click", function () {
      if (source) { stop(); return; }
      var search = (document.querySelector("#log-search input[name=log_search]") || {}).value || "";
      var url = "/api/agents/" + encodeURIComponent(agent) + "/logs/stream?lines=200" +
        (search ? "&search=" + encodeURIComponent(search) : "");
      source = new EventSource(url);
      button.setAttribute("aria-pressed", "true");
      button.textContent = "stop following";
      var first = true;
      source.addEventListener("lines", function (e) {
        var data = JSON.parse(e.data);
        var atEnd = view.scrollTop + view.clientHeight >= view.scrollHeight - 4;
        var text = data.lines.join("\n");
        if (first) { view.textContent = text; first = false; }
        else if (text) { view.textContent += (view.textContent ? "\n" : "") + text; }
        if (atEnd || data.lines.length) view.scrollTop = view.scrollHeight;
      });
      source.addEventListener("error", function () { if (source && source.readyState === 2) stop(); });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
