// The monitoring dashboard's charts (templates/routing/monitoring.html), drawn with the
// spend dashboard's vendored Chart.js from the JSON the page embeds as #monitoring-data
// (routing/monitoring.py): latency percentiles per provider, error and fallback rates,
// the cache hit ratio, all per time bucket (null where there was nothing: a gap), and
// the cost per day (Decimal strings, which Chart.js reads as numbers).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const data = JSON.parse(document.getElementById("monitoring-data").textContent);
  const palette = ["#417690", "#e3a008", "#b42318", "#1a7f37", "#6f42c1", "#79aec8"];
  const options = (unit) => ({
    responsive: true,
    maintainAspectRatio: false,
    scales: { y: { beginAtZero: true, ticks: { callback: (v) => `${v}${unit}` } } },
  });
  const line = (label, values, i) => ({
    label,
    data: values,
    borderColor: palette[i % palette.length],
    backgroundColor: palette[i % palette.length],
    pointRadius: 1,
    spanGaps: false,
  });

  document.querySelectorAll("canvas.latency-chart").forEach((canvas) => {
    const provider = data.latency[Number(canvas.dataset.index)];
    new Chart(canvas, {
      type: "line",
      data: {
        labels: data.labels,
        datasets: [line("p50", provider.p50, 0), line("p95", provider.p95, 1), line("p99", provider.p99, 2)],
      },
      options: options(" ms"),
    });
  });
  new Chart(document.getElementById("rates-chart"), {
    type: "line",
    data: {
      labels: data.labels,
      datasets: [line("errors", data.error_rate, 2), line("fallbacks", data.fallback_rate, 1)],
    },
    options: options("%"),
  });
  new Chart(document.getElementById("cache-chart"), {
    type: "line",
    data: { labels: data.labels, datasets: [line("cache hits", data.cache_hit_ratio, 3)] },
    options: options("%"),
  });
  new Chart(document.getElementById("cost-chart"), {
    type: "bar",
    data: {
      labels: data.cost_per_day.map((d) => d.day),
      datasets: [{ label: "cost", data: data.cost_per_day.map((d) => d.cost), backgroundColor: palette[0] }],
    },
    options: options(""),
  });
});
