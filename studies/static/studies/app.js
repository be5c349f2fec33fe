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

/* ---- Study detail page ---- */

function initStudy(root) {
  const labels = JSON.parse(document.getElementById("label-names").textContent);
  const badge = root.querySelector("[data-role=status]");
  const heatmapToggle = root.querySelector("[data-role=heatmap-toggle]");
  const image = root.querySelector("[data-role=image]");
  const heatmap = root.querySelector("[data-role=heatmap]");

  heatmapToggle.querySelector("input").addEventListener("change", (event) => {
    heatmap.hidden = !event.target.checked;
    image.hidden = event.target.checked;
  });

  function render(study) {
    badge.textContent = study.status.charAt(0).toUpperCase() + study.status.slice(1);
    badge.className = `badge ${study.status}`;
    const error = root.querySelector("[data-role=error]");
    error.hidden = study.status !== "failed";
    error.querySelector("span").textContent = study.error || "";
    if (study.heatmap_url && !heatmap.getAttribute("src")) {
      heatmap.src = study.heatmap_url;
      heatmapToggle.hidden = false;
    }
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
  const study = document.querySelector("[data-page=study]");
  if (study) initStudy(study);
  for (const el of document.querySelectorAll("[data-run-api][data-run-live]")) initRun(el);
});
