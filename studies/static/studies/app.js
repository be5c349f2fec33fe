/* Small progressive enhancements: uploads, live study status, live training progress. No build step. */
"use strict";

const POLL_MS = 1500;

function csrfToken() {
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  return input ? input.value : "";
}

function errorText(status, body) {
  if (body && typeof body === "object") {
    const parts = [];
    for (const [field, value] of Object.entries(body)) {
      const text = Array.isArray(value) ? value.join(" ") : String(value);
      parts.push(field === "detail" || field === "non_field_errors" ? text : `${field}: ${text}`);
    }
    if (parts.length) return parts.join(" ");
  }
  if (status === 413) return "The file is too large.";
  return `Upload failed (HTTP ${status || "network error"}).`;
}

/* ---- Upload page ---- */

function initUpload(root) {
  const form = root.querySelector("form");
  const zone = root.querySelector(".dropzone");
  const input = zone.querySelector("input[type=file]");
  const list = root.querySelector(".upload-list");
  const submit = root.querySelector("button[type=submit]");
  const detailUrl = (id) => root.dataset.detailUrl.replace(/0\/$/, `${id}/`);
  let pending = [];

  function refreshButton() {
    submit.disabled = pending.length === 0;
    submit.textContent = pending.length ? `Upload ${pending.length} file${pending.length > 1 ? "s" : ""}` : "Upload";
  }

  function addFiles(files) {
    for (const file of files) {
      const row = document.createElement("li");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = file.name;
      name.title = file.name;
      const progress = document.createElement("progress");
      progress.max = 100;
      progress.value = 0;
      const result = document.createElement("span");
      result.className = "muted small";
      result.textContent = "Ready";
      row.append(name, progress, result);
      list.append(row);
      pending.push({ file, progress, result });
    }
    refreshButton();
  }

  function send(item, fields) {
    return new Promise((resolve) => {
      const data = new FormData();
      data.append("image", item.file);
      for (const [key, value] of Object.entries(fields)) if (value) data.append(key, value);
      // XMLHttpRequest rather than fetch: only it reports upload progress.
      const xhr = new XMLHttpRequest();
      xhr.open("POST", root.dataset.apiUrl);
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) item.progress.value = (100 * event.loaded) / event.total;
      };
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch { body = null; }
        item.progress.value = 100;
        item.result.textContent = "";
        if (xhr.status === 201 && body) {
          const link = document.createElement("a");
          link.href = detailUrl(body.id);
          link.textContent = `Study ${body.id} — ${body.status}`;
          item.result.className = "small";
          item.result.append(link);
        } else {
          item.result.className = "error-text small";
          item.result.textContent = errorText(xhr.status, body);
        }
        resolve();
      };
      xhr.onerror = () => {
        item.result.className = "error-text small";
        item.result.textContent = errorText(0, null);
        resolve();
      };
      item.result.textContent = "Uploading…";
      xhr.send(data);
    });
  }

  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => { event.preventDefault(); zone.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, (event) => { event.preventDefault(); zone.classList.remove("over"); });
  }
  zone.addEventListener("drop", (event) => addFiles(event.dataTransfer.files));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = Object.fromEntries(
      ["patient_ref", "view", "source", "notes"].map((key) => [key, form.elements[key].value.trim()]),
    );
    const batch = pending;
    pending = [];
    refreshButton();
    for (const item of batch) await send(item, fields);
  });
  refreshButton();
}

/* ---- Image viewer: zoom, pan, window/level, invert, heatmap opacity ---- */

let viewerCount = 0;

/* Window/level is an SVG component-transfer filter on the image (exact, GPU-drawn, no pixel loop):
   out = (in - level) / width + 0.5 on the 0..1 display scale; inverted, 1 - out. */
function wlFilter(id) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", "0");
  svg.setAttribute("height", "0");
  svg.style.position = "absolute";
  const filter = document.createElementNS(ns, "filter");
  filter.id = id;
  filter.setAttribute("color-interpolation-filters", "sRGB");
  const transfer = document.createElementNS(ns, "feComponentTransfer");
  const funcs = ["feFuncR", "feFuncG", "feFuncB"].map((name) => {
    const f = document.createElementNS(ns, name);
    f.setAttribute("type", "linear");
    transfer.append(f);
    return f;
  });
  filter.append(transfer);
  svg.append(filter);
  document.body.append(svg);
  return (width, level, invert) => {
    let slope = 1 / width;
    let intercept = 0.5 - level / width;
    if (invert) { slope = -slope; intercept = 1 - intercept; }
    for (const f of funcs) { f.setAttribute("slope", slope.toFixed(4)); f.setAttribute("intercept", intercept.toFixed(4)); }
  };
}

function initViewer(root) {
  const box = root.querySelector("[data-role=box]");
  const stage = root.querySelector("[data-role=stage]");
  const image = root.querySelector("[data-role=image]");
  const heat = root.querySelector("[data-role=heatmap]");
  const readout = root.querySelector("[data-role=readout]");
  const preset = root.querySelector("[data-role=preset]");
  const heatTools = root.querySelector("[data-role=heat-tools]");
  const heatToggle = root.querySelector("[data-role=heat-toggle]");
  const opacity = root.querySelector("[data-role=opacity]");
  const invertButton = root.querySelector("[data-act=invert]");
  const wlButton = root.querySelector("[data-act=wl-mode]"); // on a touch screen, drags set window/level
  const id = `xv-wl-${++viewerCount}`;
  const applyWl = wlFilter(id);
  image.style.filter = `url(#${id})`;
  const state = { zoom: 1, x: 0, y: 0, width: 1, level: 0.5, invert: false };
  let loadToken = 0;

  function fit() {
    // The stage keeps the image's aspect ratio and fits the box; zoom and pan transform it.
    const w = image.naturalWidth || 1;
    const h = image.naturalHeight || 1;
    const scale = Math.min(box.clientWidth / w, box.clientHeight / h);
    stage.style.width = `${w * scale}px`;
    stage.style.height = `${h * scale}px`;
  }

  function draw() {
    stage.style.transform = `translate(-50%, -50%) translate(${state.x}px, ${state.y}px) scale(${state.zoom})`;
    applyWl(state.width, state.level, state.invert);
    invertButton.setAttribute("aria-pressed", String(state.invert));
    readout.textContent = `${Math.round(state.zoom * 100)}% · W ${Math.round(state.width * 255)} L ${Math.round(state.level * 255)}`;
  }

  function zoomBy(factor, cx = 0, cy = 0) {
    const zoom = Math.min(16, Math.max(0.5, state.zoom * factor));
    const k = zoom / state.zoom;
    // Keep the point under the cursor (cx, cy from the box centre) where it is.
    state.x = cx - (cx - state.x) * k;
    state.y = cy - (cy - state.y) * k;
    state.zoom = zoom;
    draw();
  }

  function setPreset(value) {
    const [width, level] = value.split(",").map(Number);
    state.width = width;
    state.level = level;
    draw();
  }

  function reset() {
    Object.assign(state, { zoom: 1, x: 0, y: 0, invert: false });
    preset.value = preset.options[0].value;
    setPreset(preset.value);
  }

  function invert() { state.invert = !state.invert; draw(); }

  function showHeatmap(on) {
    if (heatTools.hidden) return false;
    heatToggle.checked = on;
    heat.hidden = !on;
    return true;
  }

  function toggleHeatmap() { return showHeatmap(heat.hidden); }

  function setHeatmap(url) {
    heatTools.hidden = !url;
    if (url) { if (heat.getAttribute("src") !== url) heat.src = url; }
    else { heat.removeAttribute("src"); heat.hidden = true; heatToggle.checked = false; }
  }

  /* A quick rendition first, then a large one (progressive), from the image endpoint's ?size=. */
  function load(url) {
    const token = ++loadToken;
    root.dataset.loaded = "false";
    image.onload = () => {
      if (token !== loadToken) return;
      fit();
      root.dataset.loaded = "true";
      if (!image.src.includes("size=2048")) {
        const large = new Image();
        large.onload = () => { if (token === loadToken) image.src = large.src; };
        large.src = `${url}?size=2048`;
      }
    };
    image.src = `${url}?size=768`;
  }

  /* Pointer: drag pans; right button, Shift or the W/L drag mode drags window (x) and level (y); two fingers
     pinch-zoom. */
  let drag = null;
  const pointers = new Map();
  let pinch = null;
  const spread = () => {
    const [a, b] = [...pointers.values()];
    return Math.hypot(a.x - b.x, a.y - b.y) || 1;
  };
  box.addEventListener("contextmenu", (event) => event.preventDefault());
  box.addEventListener("pointerdown", (event) => {
    pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    box.setPointerCapture(event.pointerId);
    if (pointers.size === 2) { drag = null; pinch = { distance: spread(), zoom: state.zoom }; return; }
    const wl = event.button === 2 || event.shiftKey || wlButton.getAttribute("aria-pressed") === "true";
    drag = { x: event.clientX, y: event.clientY, wl, start: { ...state } };
  });
  box.addEventListener("pointermove", (event) => {
    if (pointers.has(event.pointerId)) pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    if (pinch && pointers.size === 2) { zoomBy((pinch.zoom * spread()) / pinch.distance / state.zoom); return; }
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (drag.wl) {
      state.width = Math.min(2, Math.max(0.02, drag.start.width + dx / 400));
      state.level = Math.min(1, Math.max(0, drag.start.level - dy / 400));
    } else {
      state.x = drag.start.x + dx;
      state.y = drag.start.y + dy;
    }
    draw();
  });
  for (const type of ["pointerup", "pointercancel"]) {
    box.addEventListener(type, (event) => {
      pointers.delete(event.pointerId);
      if (pointers.size < 2) pinch = null;
      drag = null;
    });
  }
  box.addEventListener("wheel", (event) => {
    event.preventDefault();
    const rect = box.getBoundingClientRect();
    zoomBy(event.deltaY < 0 ? 1.15 : 1 / 1.15, event.clientX - rect.left - rect.width / 2, event.clientY - rect.top - rect.height / 2);
  }, { passive: false });

  root.querySelector("[data-act=zoom-in]").addEventListener("click", () => zoomBy(1.25));
  root.querySelector("[data-act=zoom-out]").addEventListener("click", () => zoomBy(1 / 1.25));
  root.querySelector("[data-act=reset]").addEventListener("click", reset);
  invertButton.addEventListener("click", invert);
  wlButton.addEventListener("click", () => {
    wlButton.setAttribute("aria-pressed", String(wlButton.getAttribute("aria-pressed") !== "true"));
  });
  preset.addEventListener("change", () => setPreset(preset.value));
  heatToggle.addEventListener("change", () => showHeatmap(heatToggle.checked));
  opacity.addEventListener("input", () => { heat.style.opacity = String(opacity.value / 100); });
  heat.style.opacity = String(opacity.value / 100);
  window.addEventListener("resize", fit);

  const viewer = { load, setHeatmap, toggleHeatmap, showHeatmap, reset, invert, zoomBy };
  reset();
  if (root.dataset.imageUrl) load(root.dataset.imageUrl);
  setHeatmap(root.dataset.heatmapUrl);
  root.viewer = viewer;
  return viewer;
}

/* ---- Study detail page ---- */

function initStudy(root) {
  const labels = JSON.parse(document.getElementById("label-names").textContent);
  const badge = root.querySelector("[data-role=status]");
  const viewer = root.querySelector("[data-viewer]").viewer;
  const reviewForm = root.querySelector("[data-role=review-form]");
  let shownAt = performance.now(); // reading time: from the study (or its prediction, when it arrives) shown

  if (reviewForm) {
    reviewForm.addEventListener("submit", () => {
      reviewForm.elements.reading_ms.value = String(Math.round(performance.now() - shownAt));
    });
  }

  function render(study) {
    badge.textContent = study.status.charAt(0).toUpperCase() + study.status.slice(1);
    badge.className = `badge ${study.status}`;
    const error = root.querySelector("[data-role=error]");
    error.hidden = study.status !== "failed";
    error.querySelector("span").textContent = study.error || "";
    if (study.heatmap_url) viewer.setHeatmap(root.dataset.heatmapUrl);
    const prediction = study.prediction;
    if (!prediction) return;
    root.querySelector("[data-role=prediction]").hidden = false;
    root.querySelector("[data-role=no-prediction]").hidden = true;
    const label = root.querySelector("[data-role=label]");
    label.textContent = labels[prediction.label] || prediction.label;
    label.className = `label-${prediction.label}`;
    root.querySelector("[data-role=confidence]").textContent = `${(100 * prediction.confidence).toFixed(1)}%`;
    root.querySelector("[data-role=model-version]").textContent = prediction.model_version;
    for (const row of root.querySelectorAll("[data-prob]")) {
      const p = prediction.probabilities[row.dataset.prob] || 0;
      row.querySelector(".bar > span").style.width = `${(100 * p).toFixed(1)}%`;
      row.querySelector(".bar").classList.toggle("top", row.dataset.prob === prediction.label);
      row.querySelector("[data-role=p]").textContent = `${(100 * p).toFixed(1)}%`;
    }
    const review = root.querySelector("[data-role=review]");
    if (review) {
      if (review.hidden) shownAt = performance.now();
      review.hidden = false;
      const confirm = review.querySelector("[data-role=confirm]");
      confirm.value = prediction.label;
      confirm.textContent = `Confirm ${labels[prediction.label] || prediction.label}`;
      for (const button of review.querySelectorAll("[data-role=correct]")) button.hidden = button.value === prediction.label;
    }
  }

  async function poll() {
    try {
      const response = await fetch(root.dataset.apiUrl, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const study = await response.json();
        render(study);
        if (study.status !== "queued" && study.status !== "processing") return;
      }
    } catch {
      /* a dropped request: try again on the next tick */
    }
    window.setTimeout(poll, POLL_MS);
  }

  if (root.dataset.status === "queued" || root.dataset.status === "processing") window.setTimeout(poll, POLL_MS);
}

/* ---- Keyboard reading: the queue, one study after another, without page loads ---- */

function initReader(root) {
  const labels = JSON.parse(document.getElementById("label-names").textContent);
  const viewer = root.querySelector("[data-viewer]").viewer;
  const $ = (role) => root.querySelector(`[data-role=${role}]`);
  const url = (name, id) => root.dataset[name].replace(/\/0\//, `/${id}/`);
  const keyLabels = { 1: "covid", 2: "normal", 3: "pneumonia" };
  const reasons = [...root.querySelectorAll("[data-reason]")].map((el) => el.dataset.reason);
  const buffer = [];
  const seen = new Set(); // read, rejected, skipped or waiting in the buffer: never fetched again
  let current = null;
  let shownAt = 0;
  let busy = false;
  let done = 0;
  let remaining = null;
  let exhausted = false;
  root.dataset.busy = "false";

  async function refill() {
    if (exhausted || buffer.length >= 2) return;
    const query = new URLSearchParams(root.dataset.queueUrl.split("?")[1] || "");
    query.set("exclude", [...seen].join(","));
    query.set("limit", "3");
    const response = await fetch(`${root.dataset.queueUrl.split("?")[0]}?${query}`, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`The queue answered HTTP ${response.status}.`);
    const body = await response.json();
    remaining = body.count;
    if (!body.results.length) exhausted = true;
    for (const study of body.results) {
      if (seen.has(study.id)) continue;
      seen.add(study.id);
      buffer.push(study);
      new Image().src = `${url("imageUrl", study.id)}?size=768`; // prefetch: the next study appears at once
    }
  }

  function renderCounts() {
    $("count").textContent = `${done} read`;
    $("remaining").textContent = remaining === null ? "" : `${Math.max(0, remaining - (current ? 1 : 0))} more waiting`;
  }

  function show(study) {
    current = study;
    $("reject").hidden = true;
    $("error").hidden = true;
    $("empty").hidden = !!study;
    $("reading").hidden = !study;
    renderCounts();
    if (!study) { $("study-title").textContent = ""; return; }
    $("study-title").innerHTML = "";
    const link = document.createElement("a");
    link.href = url("detailUrl", study.id);
    link.textContent = `#${study.id}`;
    $("study-title").append(link);
    root.dataset.studyId = String(study.id);
    viewer.reset();
    viewer.load(url("imageUrl", study.id));
    viewer.setHeatmap(study.heatmap_url ? url("heatmapUrl", study.id) : "");
    viewer.showHeatmap(false);
    const prediction = study.prediction;
    $("blinded").hidden = !!prediction;
    $("model").hidden = !prediction;
    $("source").textContent = study.source || "—";
    $("view").textContent = study.view || "—";
    $("confirm-label").textContent = prediction ? labels[prediction.label] : "(blinded)";
    root.querySelector("[data-key=Enter]").disabled = !prediction;
    if (prediction) {
      const label = $("label");
      label.textContent = labels[prediction.label];
      label.className = `label-${prediction.label}`;
      $("confidence").textContent = `${(100 * prediction.confidence).toFixed(1)}%`;
      const probs = $("probs");
      probs.innerHTML = "";
      for (const [value, name] of Object.entries(labels)) {
        const p = prediction.probabilities[value] || 0;
        const row = document.createElement("div");
        row.className = "prob";
        row.innerHTML = `<span></span><div class="bar${value === prediction.label ? " top" : ""}"><span></span></div><span class="num"></span>`;
        row.children[0].textContent = name;
        row.children[1].firstChild.style.width = `${(100 * p).toFixed(1)}%`;
        row.children[2].textContent = `${(100 * p).toFixed(1)}%`;
        probs.append(row);
      }
    }
    shownAt = performance.now();
  }

  async function next() {
    try {
      if (!buffer.length) await refill();
    } catch (error) {
      fail(error.message);
    }
    show(buffer.shift() || null);
    refill().catch(() => {}); // keep two ready behind the one shown
  }

  function fail(text) {
    $("error").textContent = text;
    $("error").hidden = false;
  }

  async function post(path, data) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(data),
    });
    if (response.ok) return true;
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    fail(errorText(response.status, body));
    return false;
  }

  async function act(work) {
    if (busy || !current) return;
    busy = true;
    root.dataset.busy = "true";
    try {
      if (await work()) await next();
    } finally {
      busy = false;
      root.dataset.busy = "false";
    }
  }

  function read(label) {
    return act(async () => {
      const ok = await post(url("reviewUrl", current.id), { label, reading_ms: Math.round(performance.now() - shownAt) });
      if (ok) done += 1;
      return ok;
    });
  }

  function reject(reason) {
    return act(async () => post(url("rejectUrl", current.id), { reason }));
  }

  function skip() { return act(async () => true); }

  function onKey(key) {
    if (!$("reject").hidden) {
      if (key === "Escape") $("reject").hidden = true;
      else if (reasons[Number(key) - 1]) reject(reasons[Number(key) - 1]);
      return true;
    }
    if (key === "?") { $("help").hidden = !$("help").hidden; return true; }
    if (key === "Escape") { $("help").hidden = true; return true; }
    if (!current) return false;
    if (keyLabels[key]) read(keyLabels[key]);
    else if (key === "Enter") { if (current.prediction) read(current.prediction.label); }
    else if (key === "s") skip();
    else if (key === "r") $("reject").hidden = false;
    else if (key === "h") viewer.toggleHeatmap();
    else if (key === "+" || key === "=") viewer.zoomBy(1.25);
    else if (key === "-") viewer.zoomBy(1 / 1.25);
    else if (key === "0") viewer.reset();
    else if (key === "i") viewer.invert();
    else return false;
    return true;
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, textarea, select")) return;
    if (onKey(event.key)) event.preventDefault();
  });
  for (const button of root.querySelectorAll("[data-key]")) {
    button.addEventListener("click", () => { button.blur(); onKey(button.dataset.key); });
  }
  for (const button of root.querySelectorAll("[data-reason]")) {
    button.addEventListener("click", () => reject(button.dataset.reason));
  }
  next();
}

/* ---- Dashboard: plain SVG charts drawn from GET /api/stats/ ---- */

const PALETTE = ["#1f6f8b", "#e08e0b", "#6a3e99", "#2f7d4f", "#b3261e", "#3b5ba5", "#8a6d3b", "#5f6c7a"];
const LABEL_COLORS = { covid: "#b3261e", normal: "#2f7d4f", pneumonia: "#e08e0b" };
const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs = {}, text = null) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  if (text !== null) el.textContent = text;
  return el;
}

const CHAR_WIDTH = 6.2; // of an 11px label, in the charts' 520-wide viewBox

function chartFrame(container, series, { max, format, labels }) {
  const width = 520;
  const pad = { left: 40, right: 24, top: 10, bottom: 46 };
  // Labels wider than their slot, or many, are tilted, with room below for the longest one.
  const longest = Math.max(0, ...labels.map((label) => label.length)) * CHAR_WIDTH;
  const tilted = labels.length > 6 || longest > (width - pad.left - pad.right) / labels.length;
  if (tilted) pad.bottom = Math.max(pad.bottom, Math.round(22 + longest / 2));
  const height = 174 + pad.bottom;
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const plot = { x: pad.left, y: pad.top, w: width - pad.left - pad.right, h: height - pad.top - pad.bottom };
  for (let i = 0; i <= 4; i += 1) {
    const y = plot.y + plot.h - (plot.h * i) / 4;
    svg.append(svgEl("line", { x1: plot.x, x2: plot.x + plot.w, y1: y, y2: y, class: "axis", "stroke-opacity": i ? 0.35 : 1 }));
    svg.append(svgEl("text", { x: plot.x - 4, y: y + 4, "text-anchor": "end" }, format((max * i) / 4)));
  }
  container.innerHTML = "";
  container.append(svg);
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = s.color;
    item.append(swatch, s.name);
    legend.append(item);
  }
  if (series.length > 1) container.append(legend);
  return { svg, plot, tilted };
}

function xLabel(svg, plot, x, text, tilted, anchor = "middle") {
  const y = plot.y + plot.h + 14;
  svg.append(svgEl("text", { x, y, "text-anchor": tilted ? "end" : anchor,
    transform: tilted ? `rotate(-30 ${x} ${y})` : "" }, text));
}

function emptyChart(container, text) {
  container.innerHTML = "";
  const p = document.createElement("p");
  p.className = "muted";
  p.textContent = text;
  container.append(p);
}

/* Bars: labels along x, one bar per series (grouped) or stacked. */
function barChart(container, { labels, series, stacked = false, max = null, format = (v) => String(Math.round(v)) }) {
  if (!labels.length) return emptyChart(container, "No data yet.");
  const totals = labels.map((_, i) => (stacked ? series.reduce((sum, s) => sum + (s.values[i] || 0), 0)
    : Math.max(...series.map((s) => s.values[i] || 0))));
  const top = max ?? 4 * Math.ceil(Math.max(1, ...totals) / 4); // whole numbers on the 4 gridlines
  const { svg, plot, tilted } = chartFrame(container, series, { max: top, format, labels });
  const slot = plot.w / labels.length;
  const barW = Math.min(48, (slot * 0.75) / (stacked ? 1 : series.length));
  labels.forEach((label, i) => {
    const x0 = plot.x + slot * i + (slot - barW * (stacked ? 1 : series.length)) / 2;
    let base = 0;
    series.forEach((s, k) => {
      const value = s.values[i] || 0;
      const h = (plot.h * Math.max(0, value)) / top;
      const x = stacked ? x0 : x0 + k * barW;
      const y = plot.y + plot.h - h - (stacked ? (plot.h * base) / top : 0);
      const rect = svgEl("rect", { x, y, width: Math.max(1, barW - 2), height: h, fill: s.color, rx: 2 });
      rect.append(svgEl("title", {}, `${label} · ${s.name}: ${format(value)}`));
      svg.append(rect);
      if (stacked) base += Math.max(0, value);
    });
    xLabel(svg, plot, plot.x + slot * i + slot / 2, label, tilted);
  });
}

/* Lines: labels along x, one line per series; null values leave gaps. */
function lineChart(container, { labels, series, max = 1, min = 0, format = (v) => v.toFixed(2) }) {
  if (!labels.length) return emptyChart(container, "No data yet.");
  const frame = { max, format: (v) => format(min + (v / max) * (max - min)), labels };
  const { svg, plot, tilted } = chartFrame(container, series, frame);
  const step = labels.length > 1 ? plot.w / (labels.length - 1) : 0;
  const xAt = (i) => plot.x + (labels.length > 1 ? step * i : plot.w / 2);
  const yAt = (v) => plot.y + plot.h - (plot.h * (v - min)) / (max - min);
  const anchor = (i) => (labels.length === 1 ? "middle" : i === 0 ? "start" : i === labels.length - 1 ? "end" : "middle");
  labels.forEach((label, i) => xLabel(svg, plot, xAt(i), label, tilted, anchor(i)));
  for (const s of series) {
    let path = "";
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      path += `${path && s.values[i - 1] !== null && s.values[i - 1] !== undefined ? "L" : "M"}${xAt(i)},${yAt(v)}`;
      const dot = svgEl("circle", { cx: xAt(i), cy: yAt(v), r: 3.5, fill: s.color });
      dot.append(svgEl("title", {}, `${labels[i]} · ${s.name}: ${format(v)}`));
      svg.append(dot);
    });
    svg.insertBefore(svgEl("path", { d: path, fill: "none", stroke: s.color, "stroke-width": 2 }), svg.firstChild.nextSibling);
  }
}

function kappaText(value) { return value === null || value === undefined ? "—" : value.toFixed(2); }

function initDashboard(root) {
  const chart = (name) => root.querySelector(`[data-chart=${name}]`);

  function render(stats) {
    const sources = [...new Set(stats.studies_per_day.map((row) => row.source))].sort();
    const days = [...new Set(stats.studies_per_day.map((row) => row.date))].sort();
    barChart(chart("per-day"), {
      labels: days,
      stacked: true,
      series: sources.map((source, k) => ({
        name: source, color: PALETTE[k % PALETTE.length],
        values: days.map((day) => (stats.studies_per_day.find((r) => r.date === day && r.source === source) || {}).count || 0),
      })),
    });
    const backlog = stats.backlog;
    const backlogNames = { queued: "Awaiting model", unread: "Unread", reading: "More reads needed", disagreement: "To adjudicate", failed: "Failed" };
    barChart(chart("backlog"), {
      labels: Object.values(backlogNames),
      series: [{ name: "Studies", color: PALETTE[0], values: Object.keys(backlogNames).map((key) => backlog[key] || 0) }],
    });
    const labelSources = Object.keys(stats.labels_by_source).sort();
    barChart(chart("labels"), {
      labels: labelSources,
      stacked: true,
      series: Object.keys(LABEL_COLORS).map((label) => ({
        name: label, color: LABEL_COLORS[label], values: labelSources.map((s) => stats.labels_by_source[s][label] || 0),
      })),
    });
    const versions = stats.models.filter((v) => Object.keys(v.per_source).length);
    const modelSources = [...new Set(versions.flatMap((v) => Object.keys(v.per_source)))].sort();
    lineChart(chart("models"), {
      labels: versions.map((v) => (v.active ? `${v.version} (active)` : v.version)),
      series: modelSources.map((source, k) => ({
        name: `${source} accuracy`, color: PALETTE[k % PALETTE.length],
        values: versions.map((v) => (v.per_source[source] ? v.per_source[source].accuracy : null)),
      })),
    });
    const agreement = stats.agreement;
    barChart(chart("readers"), {
      labels: agreement.per_reader.map((r) => r.reader),
      max: 1,
      format: (v) => v.toFixed(2),
      series: [
        { name: "κ vs final label", color: PALETTE[0], values: agreement.per_reader.map((r) => r.vs_final.kappa) },
        { name: "κ vs model", color: PALETTE[1], values: agreement.per_reader.map((r) => r.vs_model.kappa) },
      ],
    });
    const sourceReaders = Object.keys(agreement.by_source).sort()
      .flatMap((source) => agreement.by_source[source].per_reader.map((r) => ({ source, ...r })));
    barChart(chart("readers-by-source"), {
      labels: sourceReaders.map((r) => `${r.source} · ${r.reader}`),
      max: 1,
      format: (v) => v.toFixed(2),
      series: [
        { name: "κ vs final label", color: PALETTE[0], values: sourceReaders.map((r) => r.vs_final.kappa) },
        { name: "κ vs model", color: PALETTE[1], values: sourceReaders.map((r) => r.vs_model.kappa) },
      ],
    });
    const fleissSources = Object.keys(agreement.by_source).filter((s) => agreement.by_source[s].fleiss.n);
    barChart(chart("fleiss"), {
      labels: fleissSources,
      max: 1,
      format: (v) => v.toFixed(2),
      series: [{ name: "Fleiss' κ", color: PALETTE[2], values: fleissSources.map((s) => agreement.by_source[s].fleiss.kappa) }],
    });
    const multiWeeks = agreement.by_week.filter((w) => w.n);
    lineChart(chart("over-time"), {
      labels: multiWeeks.map((w) => w.week),
      min: -1,
      max: 1,
      series: [{ name: "Fleiss' κ", color: PALETTE[2], values: multiWeeks.map((w) => w.fleiss) }],
    });
    for (const [name, key] of [["readers-final-weekly", "vs_final"], ["readers-model-weekly", "vs_model"]]) {
      lineChart(chart(name), {
        labels: agreement.by_week.map((w) => w.week),
        format: (v) => `${Math.round(100 * v)}%`,
        series: agreement.readers.map((reader, k) => ({
          name: reader, color: PALETTE[k % PALETTE.length],
          values: agreement.by_week.map((w) => {
            const entry = w.per_reader.find((r) => r.reader === reader);
            return entry ? entry[key].agreement : null;
          }),
        })),
      });
    }
    root.dataset.loaded = "true";
    const table = root.querySelector("[data-table=pairs]");
    if (!agreement.pairs.length) { emptyChart(table, "No study has two readers yet."); return; }
    const rows = agreement.pairs.map((p) => `<tr><td></td><td class="num"></td><td class="num"></td></tr>`).join("");
    table.innerHTML = `<table class="data"><thead><tr><th>Readers</th><th>Studies</th><th>Cohen's κ</th></tr></thead><tbody>${rows}</tbody></table>`;
    table.querySelectorAll("tbody tr").forEach((tr, i) => {
      const pair = agreement.pairs[i];
      tr.children[0].textContent = pair.readers.join(" · ");
      tr.children[1].textContent = String(pair.n);
      tr.children[2].textContent = kappaText(pair.kappa);
    });
  }

  fetch(root.dataset.statsUrl, { headers: { Accept: "application/json" } })
    .then((response) => (response.ok ? response.json() : Promise.reject(new Error(`HTTP ${response.status}`))))
    .then(render)
    .catch((error) => emptyChart(chart("per-day"), `The figures could not be loaded (${error.message}).`));
}

/* ---- Training runs (model list and run detail) ---- */

function initRun(el) {
  async function poll() {
    try {
      const response = await fetch(el.dataset.runApi, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const run = await response.json();
        el.querySelector("progress").value = run.progress;
        el.querySelector("[data-role=percent]").textContent = `${Math.round(100 * run.progress)}%`;
        const epoch = el.querySelector("[data-role=epoch]");
        if (epoch) epoch.textContent = `${run.epoch} / ${run.epochs}`;
        const badge = el.querySelector("[data-role=status]");
        if (badge) {
          badge.textContent = run.status.charAt(0).toUpperCase() + run.status.slice(1);
          badge.className = `badge ${run.status}`;
        }
        // Finished: the page has new plots, metrics and maybe a new model version to show.
        if (run.status === "succeeded" || run.status === "failed") { window.location.reload(); return; }
      }
    } catch {
      /* try again on the next tick */
    }
    window.setTimeout(poll, POLL_MS);
  }
  window.setTimeout(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  // Widths set through the CSSOM: the Content-Security-Policy allows no inline style attribute.
  for (const el of document.querySelectorAll("[data-width]")) el.style.width = `${el.dataset.width}%`;
  const upload = document.querySelector("[data-page=upload]");
  if (upload) initUpload(upload);
  for (const el of document.querySelectorAll("[data-viewer]")) initViewer(el);
  const study = document.querySelector("[data-page=study]");
  if (study) initStudy(study);
  const reader = document.querySelector("[data-page=reader]");
  if (reader) initReader(reader);
  const dashboard = document.querySelector("[data-page=dashboard]");
  if (dashboard) initDashboard(dashboard);
  for (const el of document.querySelectorAll("[data-run-api][data-run-live]")) initRun(el);
});
