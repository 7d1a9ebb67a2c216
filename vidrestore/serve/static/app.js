// vidrestore serve: the page's logic. Uploads with the chosen options, follows the job list
// over Server-Sent Events (read with fetch, so the bearer token can be sent), and shows each
// finished job: a before/after slider for a photo, input and result side by side and in
// sync for a video, the report's identity plot, download links.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
let token = localStorage.getItem("vidrestore-token") || "";
const cards = new Map(); // job id -> {element, state}

function headers() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function rememberToken(value) {
  token = value;
  localStorage.setItem("vidrestore-token", value);
  // <img>, <video> and download links cannot send a header: GETs may carry it as a cookie.
  document.cookie = `vidrestore_token=${encodeURIComponent(value)}; path=/; SameSite=Strict`;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) {
    askForToken("the token was not accepted");
    throw new Error("token needed");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response.status === 204 ? null : response.json();
}

function askForToken(reason) {
  $("#token-box").hidden = false;
  $("#token-error").textContent = reason || "";
  $("#token").focus();
}

// --- submitting --------------------------------------------------------------------------

const fileInput = $("#file");
const drop = $("#drop");

function chosen() {
  const file = fileInput.files[0];
  $("#chosen").textContent = file ? `${file.name} (${(file.size / 1e6).toFixed(1)} MB)` : "";
  $("#go").disabled = !file;
}

fileInput.addEventListener("change", chosen);
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  if (event.dataTransfer.files.length) {
    fileInput.files = event.dataTransfer.files;
    chosen();
  }
});

const fidelity = $("input[name=fidelity]");
fidelity.addEventListener("input", () => {
  $("#fidelity-value").textContent = Number(fidelity.value).toFixed(2);
});

$("#options").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData();
  form.append("file", fileInput.files[0]);
  for (const element of event.target.elements) {
    if (!element.name) continue;
    if (element.type === "checkbox") {
      if (element.checked) form.append(element.name, "true");
    } else if (element.value !== "") {
      form.append(element.name, element.value);
    }
  }
  $("#go").disabled = true;
  $("#submit-error").textContent = "";
  try {
    const job = await upload(form);
    show([job], false);
    fileInput.value = "";
    chosen();
  } catch (error) {
    $("#submit-error").textContent = error.message;
    chosen(); // the file's name again instead of "uploading"; the button back on
  }
});

function upload(form) {
  // XMLHttpRequest, not fetch: it reports how much of a large video has been sent.
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/api/jobs");
    if (token) request.setRequestHeader("Authorization", `Bearer ${token}`);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) {
        $("#chosen").textContent = `uploading: ${Math.round((100 * event.loaded) / event.total)}%`;
      }
    };
    request.onload = () => {
      let body = null;
      try { body = JSON.parse(request.responseText); } catch (_) { /* not JSON */ }
      if (request.status === 201) resolve(body);
      else {
        if (request.status === 401) askForToken("the token was not accepted");
        reject(new Error((body && body.detail) || `upload failed: HTTP ${request.status}`));
      }
    };
    request.onerror = () => reject(new Error("upload failed: the server cannot be reached"));
    request.send(form);
  });
}

// --- the job list ------------------------------------------------------------------------

function seconds(value) {
  if (value == null) return "";
  return value < 60 ? `${Math.round(value)} s` : `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
}

function detail(job) {
  const p = job.progress;
  if (job.state === "running") {
    const frames = p.frames_total ? `${p.frames_done}/${p.frames_total} frames` : "starting";
    return `${frames}${job.eta_s != null ? `, ETA ${seconds(job.eta_s)}` : ""} on ${job.worker}`;
  }
  if (job.state === "done" && job.summary) {
    const s = job.summary;
    const failed = s.failed_frames ? `; ${s.failed_frames} frames written unprocessed` : "";
    return `${s.frames_out} frame${s.frames_out === 1 ? "" : "s"} in ` +
      `${seconds(job.finished_at - job.started_at)}, ${s.size_in.join("x")} → ${s.size_out.join("x")}${failed}`;
  }
  if (job.state === "queued" && job.attempts) return "queued again after a server restart";
  return "";
}

function show(jobs, complete) {
  const list = $("#jobs");
  const seen = new Set();
  for (const job of jobs) {
    seen.add(job.id);
    let card = cards.get(job.id);
    if (!card) {
      const element = $("#job-template").content.firstElementChild.cloneNode(true);
      element.dataset.id = job.id;
      $(".name", element).textContent = job.filename;
      $(".cancel", element).addEventListener("click", () => act(job.id, "cancel"));
      $(".delete", element).addEventListener("click", () => act(job.id, "delete"));
      list.prepend(element); // newest on top
      card = { element, state: null };
      cards.set(job.id, card);
    }
    update(card, job);
  }
  if (complete) {
    for (const [id, card] of cards) {
      if (!seen.has(id)) { card.element.remove(); cards.delete(id); }
    }
  }
  $("#empty").hidden = cards.size > 0;
}

function update(card, job) {
  const element = card.element;
  element.className = `job ${job.state}`;
  element.dataset.state = job.state;
  const badge = $(".state", element);
  badge.textContent = job.state;
  badge.className = `state ${job.state}`;
  $(".detail", element).textContent = detail(job);
  $("progress", element).value = job.progress.fraction;
  $(".error", element).textContent = job.error && job.state !== "cancelled" ? job.error : "";
  $(".cancel", element).hidden = !["queued", "running"].includes(job.state);
  if (job.state === "done" && card.state !== "done") {
    $(".result", element).replaceChildren(result(job));
  }
  card.state = job.state;
}

async function act(id, what) {
  try {
    if (what === "cancel") show([await api(`/api/jobs/${id}/cancel`, { method: "POST" })], false);
    else {
      await api(`/api/jobs/${id}`, { method: "DELETE" });
      const card = cards.get(id);
      if (card) { card.element.remove(); cards.delete(id); }
      $("#empty").hidden = cards.size > 0;
    }
  } catch (error) {
    alert(error.message);
  }
}

// --- a finished job ----------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const element = Object.assign(document.createElement(tag), props);
  element.append(...children);
  return element;
}

function compareSlider(before, after) {
  // The restored image underneath; the input on top, clipped to the slider's left part.
  const afterImg = el("img", { src: after, alt: "restored", className: "after" });
  const beforeImg = el("img", { src: before, alt: "input", className: "before" });
  const handle = el("div", { className: "handle" });
  const range = el("input", { type: "range", min: 0, max: 100, value: 50, ariaLabel: "before/after" });
  const box = el("div", { className: "compare" }, afterImg, beforeImg, handle,
    el("span", { className: "tag left", textContent: "input" }),
    el("span", { className: "tag right", textContent: "restored" }), range);
  const place = () => {
    beforeImg.style.clipPath = `inset(0 ${100 - range.value}% 0 0)`;
    handle.style.left = `${range.value}%`;
  };
  range.addEventListener("input", place);
  place();
  return box;
}

function syncedVideos(input, output) {
  const make = (src, caption) => {
    const video = el("video", { src, muted: true, playsInline: true, preload: "auto", loop: true });
    return [video, el("figure", {}, video, el("figcaption", { textContent: caption }))];
  };
  const [left, leftFigure] = make(input, "input");
  const [right, rightFigure] = make(output, "restored (controls drive both)");
  right.controls = true;
  // The restored video leads; the input follows its play, pause, seek and position.
  right.addEventListener("play", () => { left.currentTime = right.currentTime; left.play(); });
  right.addEventListener("pause", () => left.pause());
  right.addEventListener("seeked", () => { left.currentTime = right.currentTime; });
  right.addEventListener("ratechange", () => { left.playbackRate = right.playbackRate; });
  right.addEventListener("timeupdate", () => {
    if (Math.abs(left.currentTime - right.currentTime) > 0.08) left.currentTime = right.currentTime;
  });
  return el("div", { className: "videos" }, leftFigure, rightFigure);
}

function result(job) {
  const urls = job.urls;
  const view = job.kind === "image" ? compareSlider(urls.input, urls.output)
    : syncedVideos(urls.input, urls.output);
  const row = el("div", { className: "media-row" }, view);
  if (urls.plots.identity) {
    row.append(el("figure", { className: "plots" },
      el("img", { src: urls.plots.identity, alt: "identity per face track" }),
      el("figcaption", { textContent: "identity per face track" })));
  }
  const links = el("div", { className: "downloads" },
    el("a", { href: urls.output, download: "", textContent: "Download result", className: "download-output" }),
    el("a", { href: urls.log, download: "", textContent: "JSON Lines log" }));
  for (const [name, url] of Object.entries(urls.plots)) {
    links.append(el("a", { href: url, download: "", textContent: `${name}.png` }));
  }
  const s = job.summary || {};
  const fallbacks = (s.fallbacks || []).map((f) => (typeof f === "string" ? f : f.what));
  const notes = [...new Set([...(s.warnings || []), ...fallbacks])];
  const summary = el("div", { className: "summary", textContent: notes.join(" · ") });
  return el("div", {}, row, links, summary);
}

// --- following the server ----------------------------------------------------------------

async function follow() {
  // Server-Sent Events read with fetch (EventSource cannot send a header); every event is
  // the whole job list. On any failure: wait, then reconnect.
  for (;;) {
    try {
      const response = await fetch("/api/events", { headers: headers() });
      if (response.status === 401) { askForToken(token ? "the token was not accepted" : ""); return; }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (data) show(JSON.parse(data), true);
        }
      }
    } catch (_) { /* the server went away: retry */ }
    await new Promise((resolve) => setTimeout(resolve, 1500));
  }
}

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  rememberToken($("#token").value);
  $("#token-box").hidden = true;
  follow();
});

(async () => {
  try {
    const health = await (await fetch("/health")).json();
    $("#server").textContent = `vidrestore ${health.version} · ${health.workers.length} worker(s)`;
    if (health.token_required && !token) { askForToken(""); return; }
    if (token) rememberToken(token);
  } catch (_) { /* follow() retries */ }
  follow();
})();
