// Recent deploys as SVG bars: height is the duration, colour the outcome. No library, no network.
(function () {
  "use strict";

  var holder = document.getElementById("deploy-chart");
  var source = document.getElementById("deploy-chart-data");
  if (!holder || !source) return;
  var points = JSON.parse(source.textContent);
  if (!points.length) return;

  var NS = "http://www.w3.org/2000/svg";
  var width = 640, height = 160, left = 44, bottom = 24, top = 10, right = 8;
  var plotW = width - left - right, plotH = height - top - bottom;
  // Finished deploys set the scale; a long-running one is drawn clipped at the top.
  var max = 1;
  points.forEach(function (p) {
    if (p.seconds && ["running", "queued", "awaiting_promotion"].indexOf(p.status) < 0 && p.seconds > max) max = p.seconds;
  });
  var niceMax = niceCeiling(max);

  function niceCeiling(v) {
    var steps = [5, 10, 15, 30, 60, 90, 120, 180, 300, 600, 900, 1800, 3600];
    for (var i = 0; i < steps.length; i++) if (v <= steps[i]) return steps[i];
    return Math.ceil(v / 3600) * 3600;
  }

  function el(name, attrs, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  var svg = el("svg", { viewBox: "0 0 " + width + " " + height, role: "img",
    "aria-label": "Duration and outcome of the last " + points.length + " deploys", class: "chart" });

  [0, 0.5, 1].forEach(function (f) {
    var y = top + plotH - f * plotH;
    svg.appendChild(el("line", { x1: left, x2: width - right, y1: y, y2: y, class: "chart-grid" }));
    svg.appendChild(el("text", { x: left - 6, y: y + 4, class: "chart-axis", "text-anchor": "end" },
      Math.round(niceMax * f) + "s"));
  });

  var slot = plotW / Math.max(points.length, 10);
  var barW = Math.max(4, Math.min(28, slot * 0.7));
  points.forEach(function (p, i) {
    var seconds = p.seconds || 0;
    var h = Math.max(2, Math.min(1, seconds / niceMax) * plotH);
    var x = left + i * slot + (slot - barW) / 2;
    var link = el("a", { href: p.url });
    var bar = el("rect", { x: x, y: top + plotH - h, width: barW, height: h, rx: 2,
      class: "chart-bar " + p.status });
    var label = (p.version ? "v" + p.version : "#" + p.id) + " · " + p.status +
      (p.seconds !== null ? " · " + seconds.toFixed(1) + " s" : "");
    bar.appendChild(el("title", {}, label));
    link.appendChild(bar);
    svg.appendChild(link);
    if (slot >= 22 || i % Math.ceil(22 / slot) === 0) {
      svg.appendChild(el("text", { x: x + barW / 2, y: height - 8, class: "chart-axis", "text-anchor": "middle" },
        p.version ? "v" + p.version : "#" + p.id));
    }
  });

  holder.innerHTML = "";
  holder.appendChild(svg);
})();
