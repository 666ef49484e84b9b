// The status view: what the server reports about itself, refreshed every second from
// /status (generator state, last integers) and /metrics (connections, delivered messages).
"use strict";

const REFRESH_MS = 1000;
const CHART_POINTS = 60;

// Prometheus text to [{ name, labels, value }].
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const match = /^(\w+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)) labels[key] = value;
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

function statusView(root) {
  const rate = root.querySelector(".rate");
  const error = root.querySelector(".status-error");
  const line = root.querySelector(".chart polyline");
  const rates = [];
  let previous = null;

  function draw() {
    // Headroom, so a steady rate is not drawn on the edge.
    const peak = 1.25 * Math.max(1, ...rates);
    const step = 300 / (CHART_POINTS - 1);
    line.setAttribute(
      "points",
      rates
        .map(
          (value, i) => `${(i + CHART_POINTS - rates.length) * step},${58 - (value / peak) * 56}`,
        )
        .join(" "),
    );
    root.dataset.samples = String(rates.length);
  }

  async function refresh() {
    try {
      const [status, metrics] = await Promise.all([
        fetch("/status", { cache: "no-store" }).then((r) => r.json()),
        fetch("/metrics", { cache: "no-store" })
          .then((r) => r.text())
          .then(parseMetrics),
      ]);
      for (const type of ["odd", "even"]) {
        const row = root.querySelector(`tr[data-type="${type}"]`);
        for (const sample of metrics.filter(
          (s) => s.name === "integers_connections" && s.labels.type === type,
        )) {
          const cell = row.querySelector(`td[data-protocol="${sample.labels.protocol}"]`);
          if (cell) cell.textContent = String(sample.value);
        }
        row.querySelector(".generator").textContent = status[type].running ? "running" : "idle";
        row.querySelector(".last").textContent = status[type].last ?? "–";
      }
      // Cluster mode only: which instance served this page, and whether it leads.
      const cluster = root.querySelector(".cluster");
      cluster.hidden = !status.cluster;
      if (status.cluster) {
        cluster.querySelector(".cluster-name").textContent = status.cluster.name;
        cluster.querySelector(".cluster-instance").textContent = status.cluster.instance;
        cluster.querySelector(".cluster-role").textContent = status.cluster.leader
          ? "leader (ticks)"
          : "follower";
        // With Sentinels, the primary moves on a failover: show the one in use.
        cluster.querySelector(".cluster-redis").textContent = status.cluster.redis_up
          ? `up at ${status.cluster.redis_primary}`
          : "down";
      }
      const delivered = metrics
        .filter((s) => s.name === "integers_delivered_total")
        .reduce((sum, s) => sum + s.value, 0);
      const now = performance.now();
      if (previous) {
        const perSecond = ((delivered - previous.delivered) * 1000) / (now - previous.at);
        rates.push(perSecond);
        if (rates.length > CHART_POINTS) rates.shift();
        rate.textContent = perSecond.toFixed(1);
        root.dataset.rate = String(perSecond);
        draw();
      }
      previous = { delivered, at: now };
      error.textContent = "";
    } catch (failure) {
      // The server is restarting or unreachable: say so, keep the chart, try again.
      error.textContent = `(status unavailable: ${failure.message})`;
    }
  }

  refresh();
  setInterval(refresh, REFRESH_MS);
}

statusView(document.getElementById("server-status"));
