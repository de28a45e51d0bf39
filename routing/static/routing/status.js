// The provider status page's latency charts (templates/routing/status.html), drawn with
// the spend dashboard's vendored Chart.js from the JSON the page embeds as #health-data:
// per provider, one line per model, the median latency of its successful probes per
// 15 minutes (null where there were none, drawn as a gap).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const data = JSON.parse(document.getElementById("health-data").textContent);
  const palette = ["#417690", "#e3a008", "#1a7f37", "#b42318", "#6f42c1", "#79aec8", "#999999"];
  const ms = (value) => `${value} ms`;

  document.querySelectorAll("canvas.latency-chart").forEach((canvas) => {
    const provider = data.providers[Number(canvas.dataset.index)];
    new Chart(canvas, {
      type: "line",
      data: {
        labels: data.labels,
        datasets: provider.lines.map((line, i) => ({
          label: line.label,
          data: line.data,
          borderColor: palette[i % palette.length],
          backgroundColor: palette[i % palette.length],
          pointRadius: 1,
          spanGaps: false,
        })),
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        scales: { y: { beginAtZero: true, ticks: { callback: ms } } },
        plugins: { tooltip: { callbacks: { label: (item) => `${item.dataset.label}: ${ms(item.raw)}` } } },
      },
    });
  });
});
