// The Quality page's charts (templates/routing/quality.html): per group, satisfaction
// (% positive) and the mean automated score, with the satisfaction target as a line.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const data = JSON.parse(document.getElementById("quality-data").textContent);
  const num = (values) => values.map((v) => (v === null ? null : Number(v)));
  const target = Number(data.target_pct);
  for (const section of data.sections) {
    const canvas = document.getElementById(`chart-${section.by}`);
    if (!canvas || !section.labels.length) continue;
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: section.labels,
        datasets: [
          { label: "Satisfaction %", data: num(section.satisfaction), backgroundColor: "#417690" },
          { label: "Automated score", data: num(section.score), backgroundColor: "#e3a008" },
          {
            type: "line", label: `Target ${target}%`, data: section.labels.map(() => target),
            borderColor: "#b42318", borderDash: [6, 4], pointRadius: 0,
          },
        ],
      },
      options: {
        responsive: true, maintainAspectRatio: false,
        scales: { y: { beginAtZero: true, max: 100 } },
      },
    });
  }
});
