// The spend dashboard's charts (templates/billing/dashboard.html), drawn with the
// vendored Chart.js from the JSON the page embeds as #spend-data. Amounts arrive as
// decimal strings; they become numbers here, for drawing only.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const data = JSON.parse(document.getElementById("spend-data").textContent);
  const num = (values) => values.map((v) => (v === null ? null : Number(v)));
  const usd = (value) => "$" + Number(value).toLocaleString(undefined, { maximumFractionDigits: 2 });
  const money = {
    y: { beginAtZero: true, ticks: { callback: usd } },
  };
  const tooltip = {
    callbacks: { label: (item) => `${item.dataset.label || item.label}: ${usd(item.raw)}` },
  };
  const base = { responsive: true, maintainAspectRatio: false, plugins: { tooltip } };
  const month = data.month;
  const budgetLines = (values, label) =>
    values.length ? [{ label, data: num(values), borderColor: "#b42318", borderDash: [6, 4], pointRadius: 0 }] : [];

  new Chart(document.getElementById("chart-cumulative"), {
    type: "line",
    data: {
      labels: month.labels,
      datasets: [
        { label: "Spent", data: num(month.cumulative_actual), borderColor: "#417690", backgroundColor: "#417690", pointRadius: 2 },
        { label: "Projected", data: num(month.cumulative_projected), borderColor: "#e3a008", borderDash: [4, 4], pointRadius: 0 },
        ...budgetLines(month.budget_pace, "Budget, spent evenly"),
        ...(data.budget_usd === null ? [] : [
          { label: "Budget", data: month.labels.map(() => Number(data.budget_usd)), borderColor: "#7a1c12", pointRadius: 0 },
        ]),
      ],
    },
    options: { ...base, scales: money },
  });

  new Chart(document.getElementById("chart-daily"), {
    type: "bar",
    data: {
      labels: month.labels,
      datasets: [
        { label: "Spent", data: num(month.actual), backgroundColor: "#417690", stack: "day" },
        { label: "Expected", data: num(month.expected), backgroundColor: "#f3d27a", stack: "day" },
        ...budgetLines(month.allowance, "Daily allowance").map((line) => ({ ...line, type: "line" })),
      ],
    },
    options: { ...base, scales: { x: { stacked: true }, y: { ...money.y, stacked: true } } },
  });

  const palette = ["#417690", "#e3a008", "#1a7f37", "#b42318", "#6f42c1", "#79aec8", "#999999"];
  new Chart(document.getElementById("chart-provider"), {
    type: "doughnut",
    data: {
      labels: data.by_provider.labels,
      datasets: [{ data: num(data.by_provider.spent), backgroundColor: palette }],
    },
    options: base,
  });

  new Chart(document.getElementById("chart-model"), {
    type: "bar",
    data: {
      labels: data.by_model.labels,
      datasets: [{ label: "Spent", data: num(data.by_model.spent), backgroundColor: palette }],
    },
    options: { ...base, indexAxis: "y", plugins: { ...base.plugins, legend: { display: false } }, scales: { x: money.y } },
  });

  new Chart(document.getElementById("chart-savings"), {
    type: "line",
    data: {
      labels: data.savings.labels,
      datasets: [
        { label: "Direct (vendors' list prices)", data: num(data.savings.direct), borderColor: "#999999", backgroundColor: "rgba(153,153,153,0.15)", fill: true, pointRadius: 1 },
        { label: "Paid through Switchboard", data: num(data.savings.actual), borderColor: "#417690", backgroundColor: "rgba(65,118,144,0.25)", fill: true, pointRadius: 1 },
      ],
    },
    options: { ...base, scales: money },
  });
});
