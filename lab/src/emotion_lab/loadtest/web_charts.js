// Texts per second and accuracy under load, drawn on Locust's Charts tab beside its own charts
// (emotion_lab/loadtest/web_charts.py serves the points and adds this script to the page).
(() => {
  const CHARTS = [
    { key: "texts_per_second", title: "Texts per second", color: "#00ca5a", percent: false },
    { key: "accuracy", title: "Accuracy of the labelled texts", color: "#2196f3", percent: true },
  ];
  const WIDTH = 800, HEIGHT = 200, PAD = 40;
  const SVG = "http://www.w3.org/2000/svg";
  let points = [];

  function section() {
    let charts = document.getElementById("emotion-charts");
    if (!charts) {
      charts = document.createElement("section");
      charts.id = "emotion-charts";
      charts.style.cssText = "margin: 16px 0; font-family: inherit;";
      for (const chart of CHARTS) {
        const figure = document.createElement("figure");
        figure.id = `emotion-chart-${chart.key}`;
        figure.style.cssText = "margin: 0 0 24px 0;";
        const caption = document.createElement("figcaption");
        caption.innerHTML =
          `<strong>${chart.title}</strong>: <span class="emotion-value">no data yet</span>` +
          ` <small class="emotion-scale"></small>`;
        const svg = document.createElementNS(SVG, "svg");
        svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
        svg.setAttribute("preserveAspectRatio", "none"); // the page's width, a fixed height
        svg.setAttribute("width", "100%");
        svg.setAttribute("height", String(HEIGHT));
        figure.append(caption, svg);
        charts.append(figure);
      }
    }
    // Locust's charts are ECharts instances (marked with _echarts_instance_): ours go after the last.
    const theirs = document.querySelectorAll("[_echarts_instance_]");
    const parent = theirs.length ? theirs[theirs.length - 1].parentElement : null;
    if (parent && charts.parentElement !== parent) parent.append(charts);
    if (!parent && charts.parentElement) charts.remove(); // another tab: no charts
    return charts;
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString();
  }

  function format(value, percent) {
    return percent ? `${(100 * value).toFixed(2)}%` : value.toFixed(1);
  }

  function draw() {
    const charts = section();
    for (const chart of CHARTS) {
      const figure = charts.querySelector(`#emotion-chart-${chart.key}`);
      const series = points.filter((point) => point[chart.key] !== null);
      const svg = figure.querySelector("svg");
      svg.replaceChildren();
      if (!series.length) continue;
      const last = series[series.length - 1][chart.key];
      figure.querySelector(".emotion-value").textContent = format(last, chart.percent);
      const top = chart.percent ? 1 : Math.max(...series.map((point) => point[chart.key]), 1e-9) * 1.1;
      const start = series[0].time, span = Math.max(series[series.length - 1].time - start, 1);
      const x = (time) => PAD + ((WIDTH - 2 * PAD) * (time - start)) / span;
      const y = (value) => HEIGHT - PAD / 2 - ((HEIGHT - PAD) * value) / top;
      figure.querySelector(".emotion-scale").textContent =
        `(scale 0 to ${format(top, chart.percent)}, ${clock(start)} to ${clock(start + span)})`;
      const axis = document.createElementNS(SVG, "path");
      axis.setAttribute("d", `M${PAD},${PAD / 2} V${HEIGHT - PAD / 2} H${WIDTH - PAD}`);
      axis.setAttribute("stroke", "#888");
      axis.setAttribute("fill", "none");
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", series.map((point) => `${x(point.time)},${y(point[chart.key])}`).join(" "));
      line.setAttribute("stroke", chart.color);
      line.setAttribute("stroke-width", "2");
      line.setAttribute("fill", "none");
      line.setAttribute("vector-effect", "non-scaling-stroke");
      line.dataset.points = String(series.length);
      axis.setAttribute("vector-effect", "non-scaling-stroke");
      svg.append(axis, line);
    }
  }

  async function poll() {
    try {
      const answer = await fetch("./emotion/charts", { cache: "no-store" });
      if (answer.ok) points = (await answer.json()).points;
    } catch (error) {
      // Locust stopped: keep the last points.
    }
    draw();
  }

  poll();
  setInterval(poll, 2000);
  setInterval(section, 500); // React re-renders the tab: put the charts back beside Locust's
})();
