// The dashboard's pages: the job list, a job, the comparison of loss curves, the submit form.
// Every call goes to this server's /api/..., which forwards it with the user's ID token; the
// page holds only the dashboard's own per-run token (sent as a header the proxy checks, never
// as a cookie).
// Charts are uPlot's; nothing here draws one by hand.
"use strict";

(() => {
  // The run's token arrives in the URL's fragment (never sent to a server) and stays in this
  // origin's sessionStorage: no cookie, which other services on 127.0.0.1 would be sent.
  const TOKEN_KEY = "tuning-dashboard-token";
  const handed = new URLSearchParams(location.hash.slice(1)).get("token");
  if (handed) {
    sessionStorage.setItem(TOKEN_KEY, handed);
    history.replaceState(null, "", location.pathname + location.search);
  }
  const TOKEN = sessionStorage.getItem(TOKEN_KEY);
  const PAGE = document.body.dataset.page;
  const JOB_ID = document.body.dataset.jobId;
  const STATUSES = document.body.dataset.statuses.split(",");
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  const AT_REST = new Set([...TERMINAL, "paused"]);
  const ACTIVE_POLL_MS = 1500;
  const REST_POLL_MS = 10000;
  const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04",
    "#db2777", "#4b5563", "#65a30d"];
  const main = document.getElementById("main");
  // Each chart by name, for a developer's console and the browser tests.
  window.tuningCharts = {};

  // ---- helpers ------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  async function api(method, path, payload) {
    const init = { method, headers: { "X-Dashboard-Token": TOKEN }, credentials: "omit" };
    if (payload !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    let response;
    try {
      response = await fetch(`/api${path}`, init);
    } catch (error) {
      throw new ApiError(`the dashboard server is not answering (${error.message})`, 0, null);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message = (body && body.error && body.error.message) || response.statusText;
      throw new ApiError(message, response.status, body);
    }
    return body;
  }

  // An element with attributes (on* are listeners) and children (strings become text: no HTML
  // from the API is ever parsed).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function replace(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  }

  function qs(params) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") query.set(key, value);
    }
    const text = query.toString();
    return text ? `?${text}` : "";
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const s = Math.round(seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    return h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s % 60}s`;
  }

  function number(value, digits = 4) {
    if (value === null || value === undefined) return "";
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value)) return String(value);
    if (Math.abs(value) >= 1000) return String(Math.round(value));
    return value !== 0 && Math.abs(value) < 0.001 ? value.toExponential(3) : value.toFixed(digits);
  }

  function bytes(size) {
    if (size === null || size === undefined) return "";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let value = size;
    let unit = 0;
    while (value >= 1000 && unit < units.length - 1) {
      value /= 1000;
      unit += 1;
    }
    return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
  }

  function badge(status) {
    return el("span", { class: `badge status-${status}`, dataset: { status } }, status);
  }

  function progressBar(progress) {
    const percent = progress && progress.percent !== null && progress.percent !== undefined
      ? progress.percent : 0;
    return el("progress", { max: 100, value: percent, title: `${number(percent, 1)}%` });
  }

  function section(title, id, ...children) {
    return el("section", { class: "panel", id }, el("h2", {}, title), ...children);
  }

  function errorBox(error) {
    return el("p", { class: "error", role: "alert" }, error.message || String(error));
  }

  async function allEvents(jobId) {
    const events = [];
    let token = null;
    do {
      const page = await api("GET", `/jobs/${jobId}/events${qs({ limit: 1000, page_token: token })}`);
      events.push(...page.events);
      token = page.next_page_token;
    } while (token);
    return events;
  }

  // ---- curves from events -------------------------------------------------------------------

  // Train loss, eval loss and every other numeric figure, each by step. Events are taken in
  // (attempt, seq) order, so a later attempt's point at a step replaces an earlier one (as
  // `tuning plot` does).
  const NOT_CURVES = new Set(["step", "total_steps", "percent", "eta_seconds", "loss", "epoch"]);

  function curves(events) {
    const ordered = [...events].sort((a, b) => a.attempt - b.attempt || a.seq - b.seq);
    const train = new Map();
    const evaluation = new Map();
    const others = new Map(); // name -> Map(step -> value)
    const put = (name, step, value) => {
      if (typeof value !== "number" || !Number.isFinite(value)) return;
      if (!others.has(name)) others.set(name, new Map());
      others.get(name).set(step, value);
    };
    for (const event of ordered) {
      const payload = event.payload || {};
      if (event.type === "progress") {
        const step = payload.step;
        if (typeof payload.loss === "number") train.set(step, payload.loss);
        for (const [name, value] of Object.entries(payload)) {
          if (!NOT_CURVES.has(name)) put(name, step, value);
        }
        for (const [name, value] of Object.entries(payload.metrics || {})) put(name, step, value);
      } else if (event.type === "evaluation") {
        const metrics = payload.metrics || {};
        const step = typeof metrics.step === "number" ? metrics.step : 0;
        if (typeof metrics.eval_loss === "number") evaluation.set(step, metrics.eval_loss);
        for (const [name, value] of Object.entries(metrics)) {
          if (name !== "step" && name !== "eval_loss") put(name, step, value);
        }
      }
    }
    return { train, evaluation, others };
  }

  // uPlot's aligned data: the union of the steps, each series null where it has no point.
  function aligned(maps) {
    const steps = [...new Set(maps.flatMap((map) => [...map.keys()]))].sort((a, b) => a - b);
    return [steps, ...maps.map((map) => steps.map((step) => (map.has(step) ? map.get(step) : null)))];
  }

  // One uPlot chart in `holder`, made again only when its series change; else given new data.
  function chart(holder, name, title, series, maps) {
    const data = aligned(maps);
    const labels = series.map((s) => s.label).join("|");
    const existing = window.tuningCharts[name];
    const width = Math.max(holder.clientWidth - 8, 240);
    if (existing && existing.root.isConnected && existing.tuningLabels === labels) {
      existing.setData(data);
      holder.dataset.points = String(data[0].length);
      return existing;
    }
    if (existing) existing.destroy();
    replace(holder);
    const plot = new uPlot({
      title,
      width,
      height: name === "loss" || name === "compare" ? 300 : 180,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, {}],
      series: [
        { label: "step" },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: s.colour || COLOURS[i % COLOURS.length],
          width: 2,
          dash: s.dash,
          spanGaps: true,
          points: { show: s.points === undefined ? data[0].length < 60 : s.points, size: 6 },
        })),
      ],
    }, data, holder);
    plot.tuningLabels = labels;
    window.tuningCharts[name] = plot;
    holder.dataset.points = String(data[0].length);
    return plot;
  }

  window.addEventListener("resize", () => {
    for (const plot of Object.values(window.tuningCharts)) {
      const holder = plot.root.parentElement;
      if (holder && plot.root.isConnected) {
        plot.setSize({ width: Math.max(holder.clientWidth - 8, 240), height: plot.height });
      }
    }
  });

  // ---- the job list -------------------------------------------------------------------------

  function listPage() {
    const params = new URLSearchParams(location.search);
    const state = { status: params.get("status") || "", tokens: [null], page: 0, selected: new Set() };
    const select = el("select", { id: "status-filter", "aria-label": "status",
      onchange: () => { state.status = select.value; state.tokens = [null]; state.page = 0; load(); } },
    el("option", { value: "" }, "every status"),
    STATUSES.map((s) => el("option", { value: s, selected: s === state.status }, s)));
    const previous = el("button", { id: "previous-page", type: "button",
      onclick: () => { state.page -= 1; load(); } }, "Previous");
    const next = el("button", { id: "next-page", type: "button",
      onclick: () => { state.page += 1; load(); } }, "Next");
    const compare = el("button", { id: "compare-selected", type: "button", onclick: () => {
      location.href = `/compare${qs({ jobs: [...state.selected].join(",") })}`;
    } }, "Compare selected");
    const table = el("div", { class: "table-wrap" });
    const note = el("p", { class: "muted", id: "list-note" });
    replace(main, el("h1", {}, "Jobs"),
      el("div", { class: "toolbar" }, el("label", {}, "Status ", select), previous, next, compare,
        el("a", { class: "button", href: "/submit" }, "Submit a job")),
      note, table);
    let timer = null;

    async function load() {
      clearTimeout(timer);
      const url = new URL(location.href);
      if (state.status) url.searchParams.set("status", state.status);
      else url.searchParams.delete("status");
      history.replaceState(null, "", url);
      let page;
      try {
        page = await api("GET", `/jobs${qs({ limit: 20, status: state.status,
          page_token: state.tokens[state.page] })}`);
      } catch (error) {
        replace(table, errorBox(error));
        timer = setTimeout(load, REST_POLL_MS);
        return;
      }
      state.tokens[state.page + 1] = page.next_page_token || undefined;
      previous.disabled = state.page === 0;
      next.disabled = !page.next_page_token;
      compare.disabled = state.selected.size < 1;
      render(page.jobs);
      const busy = page.jobs.some((job) => !AT_REST.has(job.status));
      timer = setTimeout(load, busy ? 3000 : REST_POLL_MS);
    }

    function render(jobs) {
      replace(note, jobs.length ? `page ${state.page + 1}` : "No jobs here yet.");
      const owners = jobs.some((job) => job.detail && job.detail.owner);
      const head = el("tr", {}, el("th", {}, ""), el("th", {}, "Job"), el("th", {}, "Status"),
        el("th", {}, "Progress"), el("th", {}, "Model"), el("th", {}, "Method"),
        el("th", {}, "Tier"), el("th", {}, "Created"), owners ? el("th", {}, "Owner") : null);
      const rows = jobs.map((job) => {
        const detail = job.detail || {};
        const progress = detail.progress || {};
        const box = el("input", { type: "checkbox", "aria-label": `select ${job.job_id}`,
          checked: state.selected.has(job.job_id), onchange: () => {
            if (box.checked) state.selected.add(job.job_id);
            else state.selected.delete(job.job_id);
            compare.disabled = state.selected.size < 1;
          } });
        return el("tr", { dataset: { jobId: job.job_id } },
          el("td", {}, box),
          el("td", { class: "job-cell" }, el("a", { href: `/jobs/${job.job_id}` }, job.job_name),
            el("div", { class: "muted small" }, job.job_id)),
          el("td", {}, badge(job.status)),
          el("td", { class: "progress-cell" }, progressBar(progress),
            el("span", { class: "small" }, progress.total_steps
              ? ` ${progress.step}/${progress.total_steps}` : "")),
          el("td", {}, job.base_model_id),
          el("td", {}, [detail.method, detail.trainer_type].filter(Boolean).join(" / ")),
          el("td", {}, (detail.placement && detail.placement.tier) || ""),
          el("td", {}, when(job.created_at)),
          owners ? el("td", {}, detail.owner || "") : null);
      });
      replace(table, el("table", { id: "jobs" }, el("thead", {}, head), el("tbody", {}, rows)));
    }

    load();
  }

  // ---- one job ------------------------------------------------------------------------------

  function jobPage() {
    const header = el("div", { id: "job-header" });
    const actions = el("div", { class: "toolbar", id: "actions" });
    const notice = el("div", { id: "notice" });
    const progressPanel = el("div", { id: "progress" });
    const lossHolder = el("div", { class: "chart", id: "loss-chart" });
    const metricCharts = el("div", { class: "chart-grid", id: "metric-charts" });
    const metricsPanel = el("div", { id: "metrics" });
    const artifactsPanel = el("div", { id: "artifacts" });
    const checkpointsPanel = el("div", { id: "checkpoints" });
    const samplesSection = section("Samples", "samples-section", el("div", { id: "samples" }));
    samplesSection.hidden = true;
    const timeline = el("div", { id: "timeline" });
    replace(main, header, actions, notice,
      section("Progress", "progress-section", progressPanel),
      section("Loss", "loss-section", lossHolder),
      section("Other figures over steps", "figures-section", metricCharts),
      el("div", { class: "columns" },
        section("Metrics", "metrics-section", metricsPanel),
        section("Artifacts", "artifacts-section", artifactsPanel)),
      section("Checkpoints", "checkpoints-section", checkpointsPanel),
      samplesSection,
      section("Timeline", "timeline-section", timeline));
    let job = null;
    let seen = "";
    let timer = null;
    let samplesAsked = false;

    const act = (label, id, run, enabled) => el("button", { id, type: "button",
      disabled: !enabled, onclick: run }, label);

    async function action(name, method, path, question) {
      if (question && !window.confirm(question)) return;
      try {
        const answer = await api(method, path);
        if (name === "delete") {
          location.href = "/";
          return;
        }
        replace(notice, el("p", { class: "ok" }, `${name}: ${answer.status || "done"}`));
      } catch (error) {
        replace(notice, errorBox(error));
      }
      refresh();
    }

    function renderHeader() {
      const attempt = `attempt ${job.attempt}` + (job.executions ? `, execution ${job.executions}` : "");
      const pausing = job.status === "training" && job.pause_requested_at;
      replace(header, el("h1", {}, job.job_name),
        el("p", { class: "muted small" }, job.job_id),
        el("p", {}, el("span", { id: "job-status" }, badge(job.status)),
          pausing ? el("span", { class: "badge status-paused" }, "pausing") : null,
          " ", el("span", { id: "job-attempt" }, attempt),
          " · ", [job.method, job.trainer_type, job.modality].filter(Boolean).join(" / "),
          " · ", job.base_model_id,
          job.placement ? ` · tier ${job.placement.tier}` : "",
          job.owner ? ` · ${job.owner}` : ""),
        job.status_reason ? el("p", { class: "muted" }, job.status_reason) : null,
        job.error ? el("p", { class: "error", id: "job-error" },
          `${job.error.type} error${job.error.code ? ` (${job.error.code})` : ""}: ${job.error.message}`)
          : null);
      const s = job.status;
      replace(actions,
        act("Cancel", "cancel", () => action("cancel", "POST", `/jobs/${JOB_ID}/cancel`),
          !TERMINAL.has(s)),
        act("Pause", "pause", () => action("pause", "POST", `/jobs/${JOB_ID}/pause`),
          ["queued", "validating", "preparing", "training"].includes(s) && !job.pause_requested_at),
        act("Resume", "resume", () => action("resume", "POST", `/jobs/${JOB_ID}/resume`),
          s === "paused"),
        act("Delete", "delete", () => action("delete", "DELETE", `/jobs/${JOB_ID}`,
          `Delete ${JOB_ID} and every file of it? This cannot be undone.`), true),
        el("a", { class: "button", href: `/compare${qs({ jobs: JOB_ID })}` }, "Compare"));
    }

    function renderProgress() {
      const p = job.progress || {};
      const parts = [
        p.total_steps ? `step ${p.step}/${p.total_steps}` : `step ${p.step || 0}`,
        p.percent !== null && p.percent !== undefined ? `${number(p.percent, 1)}%` : null,
        p.eta_seconds !== null && p.eta_seconds !== undefined && !AT_REST.has(job.status)
          ? `ETA ${duration(p.eta_seconds)}` : null,
        p.tokens_per_second ? `${number(p.tokens_per_second, 0)} tokens/s` : null,
        p.epoch !== null && p.epoch !== undefined ? `epoch ${number(p.epoch, 2)}` : null,
        p.loss !== null && p.loss !== undefined ? `loss ${number(p.loss)}` : null,
      ].filter(Boolean);
      replace(progressPanel, el("div", { id: "progress-bar" }, progressBar(p)),
        el("p", { id: "progress-text" }, parts.join(" · ")),
        job.resumed_from_step !== null && job.resumed_from_step !== undefined
          ? el("p", { class: "muted" }, `resumed from step ${job.resumed_from_step}`) : null,
        job.last_attempt_end ? el("p", { class: "muted" },
          `previous attempt ${job.last_attempt_end.attempt} ended: ${job.last_attempt_end.reason}`
          + ` at step ${job.last_attempt_end.step}`) : null);
    }

    function renderMetrics() {
      const rows = Object.entries(job.metrics || {})
        .filter(([, value]) => value !== null && typeof value !== "object")
        .map(([name, value]) => el("tr", {}, el("th", {}, name), el("td", {}, number(value))));
      replace(metricsPanel, rows.length ? el("table", { class: "compact" }, el("tbody", {}, rows))
        : el("p", { class: "muted" }, "No evaluation yet."));
    }

    function downloadButton(label, params, target) {
      return el("button", { type: "button", class: "download", onclick: async () => {
        replace(target, el("p", { class: "muted" }, "signing..."));
        try {
          const links = await api("GET", `/download/${JOB_ID}${qs(params)}`);
          const files = links.files && links.files.length ? links.files
            : [{ path: "file", download_url: links.download_url }];
          replace(target, el("p", { class: "muted small" }, `links expire ${when(links.expires_at)}`),
            el("ul", { class: "files" }, files.map((file) => el("li", {},
              el("a", { href: file.download_url, download: file.path.split("/").pop(),
                rel: "noreferrer" }, file.path)))));
        } catch (error) {
          replace(target, errorBox(error));
        }
      } }, label);
    }

    function renderArtifacts() {
      const a = job.artifacts || {};
      const links = el("div", { class: "links" });
      const buttons = [];
      if (job.status === "completed") {
        if (a.adapter_path) buttons.push(downloadButton("Adapter", { artifact: "adapter" }, links));
        if (a.merged_path) buttons.push(downloadButton("Merged model", { artifact: "merged" }, links));
        for (const quantization of Object.keys(a.gguf_files || {})) {
          buttons.push(downloadButton(`GGUF ${quantization}`, { artifact: "gguf", quantization }, links));
        }
      }
      const paths = Object.entries(a).filter(([, v]) => typeof v === "string" && v)
        .map(([name, value]) => el("li", {}, el("span", { class: "muted" }, `${name}: `), value));
      replace(artifactsPanel,
        buttons.length ? el("div", { class: "toolbar" }, buttons)
          : el("p", { class: "muted" }, job.status === "completed" ? "No artifacts."
            : "Downloads appear once the job has completed."),
        paths.length ? el("ul", { class: "paths small" }, paths) : null,
        links);
    }

    async function renderCheckpoints() {
      let page;
      try {
        page = await api("GET", `/jobs/${JOB_ID}/checkpoints${qs({ limit: 20 })}`);
      } catch (error) {
        replace(checkpointsPanel, errorBox(error));
        return;
      }
      if (!page.checkpoints.length) {
        replace(checkpointsPanel, el("p", { class: "muted" }, "No checkpoints."));
        return;
      }
      const links = el("div", { class: "links" });
      const rows = page.checkpoints.map((c) => el("tr", { dataset: { step: c.step } },
        el("td", {}, c.step), el("td", {}, number(c.epoch, 2)), el("td", {}, number(c.train_loss)),
        el("td", {}, number((c.eval_metrics || {}).eval_loss)), el("td", {}, bytes(c.size_bytes)),
        el("td", {}, when(c.created_at)),
        el("td", {}, downloadButton("Download", { checkpoint: c.step }, links))));
      replace(checkpointsPanel, el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, ["step", "epoch", "train loss", "eval loss", "size",
          "created", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows))), links);
    }

    async function renderSamples() {
      samplesAsked = true;
      let answer;
      try {
        answer = await api("GET", `/jobs/${JOB_ID}/samples`);
      } catch (_) {
        return; // no samples (or no such route on this deployment): the section stays hidden
      }
      if (!answer || !answer.samples || !answer.samples.length) return;
      const scoreText = (scores) => Object.entries(scores || {}).map(([name, pair]) =>
        `${name}: ${number(pair.base, 2)} → ${number(pair.tuned, 2)}`).join(", ");
      const rows = answer.samples.map((s) => el("tr", {}, el("td", {}, s.prompt),
        el("td", {}, s.reference || ""), el("td", {}, s.base_answer || ""),
        el("td", {}, s.tuned_answer), el("td", { class: "small" }, scoreText(s.scores))));
      const overall = Object.entries(answer.eval_scores || {}).map(([name, score]) =>
        el("li", {}, `${name}: ${JSON.stringify(score)}`));
      replace(document.getElementById("samples"),
        overall.length ? el("ul", { class: "small" }, overall) : null,
        el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, el("tr", {},
          ["prompt", "reference", "base", "tuned", "scores"].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows))));
      samplesSection.hidden = false;
    }

    function renderCurves(events) {
      const { train, evaluation, others } = curves(events);
      if (!train.size && !evaluation.size) {
        replace(lossHolder, el("p", { class: "muted" }, "No loss points yet."));
        if (window.tuningCharts.loss) {
          window.tuningCharts.loss.destroy();
          delete window.tuningCharts.loss;
        }
      } else {
        chart(lossHolder, "loss", "train and eval loss",
          [{ label: "train loss" }, { label: "eval loss", points: true, dash: [6, 4] }],
          [train, evaluation]);
      }
      lossHolder.dataset.trainPoints = String(train.size);
      lossHolder.dataset.evalPoints = String(evaluation.size);
      const names = [...others.keys()].sort();
      for (const name of names) {
        let holder = metricCharts.querySelector(`[data-metric="${CSS.escape(name)}"]`);
        if (!holder) {
          holder = el("div", { class: "chart small-chart", dataset: { metric: name } });
          metricCharts.append(holder);
        }
        chart(holder, `metric:${name}`, name, [{ label: name }], [others.get(name)]);
      }
      if (!names.length) replace(metricCharts, el("p", { class: "muted" }, "None yet."));
      else metricCharts.querySelectorAll("p.muted").forEach((p) => p.remove());
    }

    function renderTimeline(events) {
      const progress = events.filter((e) => e.type === "progress").length;
      const rows = events.filter((e) => e.type !== "progress").map((e) => {
        const payload = e.payload || {};
        let text = "";
        if (e.type === "message") text = `${payload.level}: ${payload.text}`;
        else if (e.type === "evaluation") text = Object.entries(payload.metrics || {})
          .filter(([, v]) => typeof v === "number").map(([k, v]) => `${k} ${number(v)}`).join(", ");
        else if (e.type === "failed" && payload.error) text = payload.error.message || "";
        else text = Object.entries(payload).filter(([, v]) => v !== null && typeof v !== "object")
          .map(([k, v]) => `${k} ${v}`).join(", ");
        return el("li", { dataset: { type: e.type } }, el("time", {}, when(e.timestamp)), " ",
          el("span", { class: `badge event-${e.type}` }, e.type), ` a${e.attempt} `,
          el("span", { class: "small" }, text));
      });
      replace(timeline, el("p", { class: "muted", id: "progress-count" },
        `${events.length} events, ${progress} progress points`), el("ol", { class: "events" }, rows));
    }

    async function refresh() {
      clearTimeout(timer);
      try {
        job = await api("GET", `/jobs/${JOB_ID}`);
      } catch (error) {
        if (error.status === 404) {
          replace(main, el("h1", {}, "No such job"), errorBox(error),
            el("a", { href: "/" }, "Back to the jobs"));
          return;
        }
        replace(notice, errorBox(error));
        timer = setTimeout(refresh, REST_POLL_MS);
        return;
      }
      document.title = `${job.job_name} - tuning dashboard`;
      renderHeader();
      renderProgress();
      renderMetrics();
      renderArtifacts();
      const p = job.progress || {};
      const key = [job.status, job.attempt, p.step, job.updated_at].join("|");
      if (key !== seen) {
        try {
          const events = await allEvents(JOB_ID);
          renderCurves(events);
          renderTimeline(events);
          seen = key;
        } catch (error) {
          replace(notice, errorBox(error));
        }
        await renderCheckpoints();
      }
      if (job.status === "completed" && !samplesAsked) await renderSamples();
      document.body.dataset.jobStatus = job.status;
      timer = setTimeout(refresh, AT_REST.has(job.status) ? REST_POLL_MS : ACTIVE_POLL_MS);
    }

    refresh();
  }

  // ---- several jobs' loss curves ------------------------------------------------------------

  function comparePage() {
    const params = new URLSearchParams(location.search);
    const chosen = new Set((params.get("jobs") || "").split(",").filter(Boolean));
    const picker = el("div", { class: "picker", id: "compare-picker" });
    const holder = el("div", { class: "chart", id: "compare-chart" });
    const evalToggle = el("input", { type: "checkbox", id: "compare-eval", checked: true,
      onchange: () => draw() });
    replace(main, el("h1", {}, "Compare loss curves"),
      el("p", { class: "muted" }, "Pick jobs: their train loss (and eval loss, dashed) on one chart."),
      el("label", {}, evalToggle, " eval loss too"), picker, holder);
    const cache = new Map(); // job id -> its curves

    async function draw() {
      const url = new URL(location.href);
      url.searchParams.set("jobs", [...chosen].join(","));
      history.replaceState(null, "", url);
      const ids = [...chosen];
      try {
        await Promise.all(ids.filter((id) => !cache.has(id)).map(async (id) => {
          cache.set(id, curves(await allEvents(id)));
        }));
      } catch (error) {
        replace(holder, errorBox(error));
        return;
      }
      const series = [];
      const maps = [];
      ids.forEach((id, i) => {
        const colour = COLOURS[i % COLOURS.length];
        series.push({ label: `${id} train`, colour });
        maps.push(cache.get(id).train);
        if (evalToggle.checked) {
          series.push({ label: `${id} eval`, colour, dash: [6, 4], points: true });
          maps.push(cache.get(id).evaluation);
        }
      });
      if (!series.length) {
        if (window.tuningCharts.compare) window.tuningCharts.compare.destroy();
        delete window.tuningCharts.compare;
        replace(holder, el("p", { class: "muted" }, "No job picked."));
        return;
      }
      chart(holder, "compare", "loss by step", series, maps);
    }

    (async () => {
      let jobs = [];
      try {
        jobs = (await api("GET", `/jobs${qs({ limit: 50 })}`)).jobs;
      } catch (error) {
        replace(picker, errorBox(error));
      }
      const known = new Set(jobs.map((job) => job.job_id));
      const extra = [...chosen].filter((id) => !known.has(id)).map((id) => ({ job_id: id, job_name: id }));
      replace(picker, [...extra, ...jobs].map((job) => el("label", { class: "pick" },
        el("input", { type: "checkbox", value: job.job_id, checked: chosen.has(job.job_id),
          onchange: (event) => {
            if (event.target.checked) chosen.add(job.job_id);
            else chosen.delete(job.job_id);
            draw();
          } }),
        ` ${job.job_name} `, job.status ? badge(job.status) : null)));
      draw();
    })();
  }

  // ---- submit -------------------------------------------------------------------------------

  function submitPage() {
    const text = el("textarea", { id: "job-text", rows: 22, spellcheck: "false",
      "aria-label": "the job, as YAML or JSON",
      placeholder: "processed_dataset_id: my-chats\njob_name: my-job\ntraining_config:\n" +
        "  base_model_id: google/gemma-3-1b-it\n  method: LoRA\n  hyperparameters:\n" +
        "    learning_rate: 0.0001\n    epochs: 1\n" });
    const file = el("input", { type: "file", id: "job-file", accept: ".yaml,.yml,.json",
      onchange: async () => {
        if (file.files.length) text.value = await file.files[0].text();
        key = null;
      } });
    const errors = el("div", { id: "submit-errors", "aria-live": "polite" });
    const button = el("button", { id: "submit-job", type: "submit" }, "Submit");
    const estimateButton = el("button", { id: "estimate-job", type: "button", onclick: async () => {
      estimateButton.disabled = true;
      replace(errors, el("p", { class: "muted" }, "validating the dataset and counting tokens..."));
      try {
        const answer = await api("POST", "/train:estimate", { text: text.value });
        replace(errors, estimateView(answer));
      } catch (error) {
        showErrors(error);
      } finally {
        estimateButton.disabled = false;
      }
    } }, "Estimate");
    let key = null; // one idempotency key per text: a double click submits once
    text.addEventListener("input", () => { key = null; });
    const form = el("form", { id: "submit-form", onsubmit: async (event) => {
      event.preventDefault();
      key = key || crypto.randomUUID();
      button.disabled = true;
      replace(errors, el("p", { class: "muted" }, "submitting..."));
      try {
        const answer = await api("POST", "/train", { text: text.value, idempotency_key: key });
        location.href = `/jobs/${answer.job_id}`;
      } catch (error) {
        showErrors(error);
      } finally {
        button.disabled = false;
      }
    } }, el("label", { class: "block" }, "Job file ", file), text,
    el("div", { class: "toolbar" }, estimateButton, " ", button), errors);
    replace(main, el("h1", {}, "Submit a job"),
      el("p", { class: "muted" }, "Paste or load a YAML or JSON job (as for `tuning submit`)."),
      form);

    function estimateView(answer) {
      // The dry run (POST /train:estimate): what the job would train on, where, how long.
      const v = answer.validation;
      const split = (name) => v[name] ? el("li", {}, `${name}: ${v[name].rows} rows` +
        (v[name].tokens != null ? `, ${v[name].tokens} tokens, ${v[name].truncated_rows} ` +
          `truncated at ${v.token_limit}` : ", tokens not counted")) : null;
      const tiers = (answer.estimate.tiers || []).map((t) => el("li", { class: "tier-estimate" },
        `${t.tier} (${t.gpu_count} x ${t.gpu_type}): ` +
        (t.estimated_seconds != null ? `~${(t.estimated_seconds / 60).toFixed(1)} min` : "time unknown") +
        (t.estimated_cost_usd != null ? `, ~$${t.estimated_cost_usd.toFixed(2)}` : ", no price")));
      return el("div", { id: "estimate" },
        el("h2", {}, "Estimate (nothing was created)"),
        el("ul", {}, split("train"), split("eval"),
          el("li", {}, `steps: ${v.steps_per_epoch} per epoch, ${v.total_steps} in total`),
          el("li", {}, `tier: ${answer.placement.tier}`)),
        v.tokens_note ? el("p", { class: "muted" }, v.tokens_note) : null,
        el("ul", {}, tiers),
        answer.estimate.note ? el("p", { class: "muted" }, answer.estimate.note) : null);
    }

    function showErrors(error) {
      const detail = (error.body && error.body.error) || { message: error.message };
      const problems = detail.details && detail.details.length ? detail.details
        : [{ field: detail.field, message: detail.message, line: detail.line, column: detail.column }];
      const where = (p) => [p.field, p.line ? `line ${p.line}` : null,
        p.column ? `column ${p.column}` : null].filter(Boolean).join(", ");
      const first = problems[0];
      replace(errors, el("p", { class: "error" }, `${error.status || ""} ${detail.code || ""}`.trim()),
        el("ul", { class: "field-errors" }, problems.map((p) => el("li", {
          class: "field-error", dataset: { field: p.field || "", line: p.line || detail.line || "" },
        }, where(p) || where(detail) ? el("strong", {}, `${where(p) || where(detail)}: `) : null,
        p.message))));
      const line = first.line || detail.line;
      if (line) {
        const lines = text.value.split("\n");
        const start = lines.slice(0, line - 1).join("\n").length + (line > 1 ? 1 : 0);
        text.setSelectionRange(start, start + (lines[line - 1] || "").length);
        text.focus();
      }
    }
  }

  const pages = { list: listPage, job: jobPage, compare: comparePage, submit: submitPage };
  if (!TOKEN) {
    replace(main, el("p", { class: "error" },
      "Open the URL `tuning dashboard` printed: it carries this run's token."));
  } else if (typeof uPlot === "undefined") {
    replace(main, el("p", { class: "error" }, "The chart library did not load."));
  } else {
    pages[PAGE]();
  }
})();
