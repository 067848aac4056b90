// danna-sep's page: upload a song, follow its job (server-sent events), then play the stems in step.
// No framework and no build step; everything comes from this server.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null; // /api/info
let upload = null; // the XMLHttpRequest of an upload in progress
let events = null; // the EventSource of the job being followed
let current = null; // that job's id

function clock(seconds) {
  if (seconds == null || !isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function show(part) {
  for (const id of ["choose", "job", "results"]) $(id).hidden = !part.includes(id);
}

async function start() {
  try {
    info = await (await fetch("api/info")).json();
  } catch (e) {
    showError("Cannot reach the danna-sep server. Is `danna serve` still running?");
    return;
  }
  const modes = $("modes");
  Object.entries(info.modes).forEach(([key, label], i) => {
    const row = document.createElement("label");
    const input = Object.assign(document.createElement("input"), { type: "radio", name: "mode", value: key });
    input.checked = i === 0;
    row.append(input, " " + label);
    modes.append(row);
  });
  $("limits").textContent = `${info.supported}; up to ${Math.round(info.max_upload / 2 ** 20)} MB.`;
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", (e) => { if (e.target.files.length) send(e.target.files[0]); });
  $("cancel").addEventListener("click", cancel);
  $("again").addEventListener("click", reset);
  const id = new URLSearchParams(location.hash.slice(1)).get("job");
  if (id) follow(id); // a reload (or a page that went away) finds its job again
}

function reset() {
  stopPlayers();
  if (events) events.close();
  events = current = null;
  history.replaceState(null, "", location.pathname);
  $("file").value = "";
  showError("");
  show(["choose"]);
}

function send(file) {
  showError("");
  if (file.size === 0) return showError(`${file.name} is empty (0 bytes).`);
  if (file.size > info.max_upload) {
    return showError(`${file.name} is larger than this server's limit of ${Math.round(info.max_upload / 2 ** 20)} MB.`);
  }
  const mode = document.querySelector('input[name="mode"]:checked').value;
  show(["job"]);
  $("job-name").textContent = file.name;
  $("bar").value = 0;
  $("times").textContent = "";
  $("status").textContent = "Uploading…";
  const xhr = (upload = new XMLHttpRequest());
  xhr.open("POST", `api/jobs?mode=${encodeURIComponent(mode)}&name=${encodeURIComponent(file.name)}`);
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    $("bar").value = e.loaded / e.total;
    $("status").textContent = `Uploading… ${Math.round((100 * e.loaded) / e.total)}%`;
  };
  xhr.onload = () => {
    upload = null;
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON: say so below */ }
    if (xhr.status !== 201) {
      show(["choose"]);
      return showError(body.error || `The server refused the file (HTTP ${xhr.status}).`);
    }
    follow(body.id, body);
  };
  xhr.onerror = () => {
    upload = null;
    show(["choose"]);
    showError("The upload was interrupted: the server refused it or the connection dropped.");
  };
  xhr.onabort = () => { upload = null; show(["choose"]); showError("Upload cancelled."); };
  xhr.send(file);
}

function follow(id, first) {
  current = id;
  history.replaceState(null, "", `#job=${encodeURIComponent(id)}`);
  show(["job"]);
  if (first) update(first);
  if (events) events.close();
  events = new EventSource(`api/jobs/${encodeURIComponent(id)}/events`);
  events.addEventListener("job", (e) => update(JSON.parse(e.data)));
  events.onerror = async () => {
    if (events.readyState !== EventSource.CLOSED) {
      $("status").textContent = "Lost contact with the server; reconnecting…";
      return;
    }
    // closed for good (the job ended, or is unknown): ask once
    const r = await fetch(`api/jobs/${encodeURIComponent(id)}`).catch(() => null);
    if (!r) return showError("Lost contact with the server. Is `danna serve` still running?");
    const body = await r.json().catch(() => ({}));
    if (r.ok) update(body);
    else { show(["choose"]); showError(body.error || `HTTP ${r.status}`); }
  };
}

function update(job) {
  if (job.id !== current) return;
  $("job-name").textContent = job.name;
  $("bar").value = job.fraction;
  const times = [];
  if (job.state === "queued") {
    $("status").textContent = job.position === 1
      ? "Waiting: yours is next (another song is being separated)."
      : `Waiting: ${job.position - 1} songs ahead of yours.`;
  } else if (job.state === "running") {
    const what = { separating: "Separating", drawing: "Drawing the pictures", "loading models": "Loading the models" };
    $("status").textContent = `${what[job.stage] || "Working"}… ${Math.round(100 * job.fraction)}%`;
    times.push(`elapsed ${clock(job.elapsed)}`);
    if (job.remaining != null) times.push(`about ${clock(job.remaining)} left`);
  }
  if (job.duration) times.push(`song ${clock(job.duration)}`);
  $("times").textContent = times.join(" · ");
  if (job.state === "done" || job.state === "failed" || job.state === "cancelled") {
    if (events) events.close();
    events = null;
  }
  if (job.state === "done") showResults(job);
  else if (job.state === "failed") { show(["choose"]); showError(`${job.name}: ${job.error}`); }
  else if (job.state === "cancelled") { show(["choose"]); showError(`${job.name}: ${job.error || "cancelled"}.`); }
}

async function cancel() {
  if (upload) return upload.abort();
  if (!current) return;
  $("cancel").disabled = true;
  await fetch(`api/jobs/${encodeURIComponent(current)}/cancel`, { method: "POST" }).catch(() => null);
  $("cancel").disabled = false;
}

// ------------------------------------------------------------------------------------------ players in step

let players = []; // {stem, audio, row}
let timer = null;
const solo = new Set();
const mute = new Set(["mixture"]); // the stems add up to the mixture: hear one or the other

function stopPlayers() {
  clearInterval(timer);
  for (const p of players) { p.audio.pause(); p.audio.removeAttribute("src"); p.audio.load(); }
  players = [];
  $("stems").replaceChildren();
}

function showResults(job) {
  stopPlayers();
  solo.clear();
  mute.clear();
  mute.add("mixture");
  show(["results"]);
  $("result-name").textContent = `${job.name} (${clock(job.duration)}, separated in ${clock(job.elapsed)})`;
  $("zip").href = job.zip;
  // the mixture first: it is the clock the others follow
  const stems = [...job.stems].sort((a, b) => (a.name === "mixture" ? -1 : b.name === "mixture" ? 1 : 0));
  for (const stem of stems) {
    const row = document.createElement("div");
    row.className = "stem";
    row.dataset.stem = stem.name;
    row.style.setProperty("--colour", stem.colour);
    const title = Object.assign(document.createElement("h3"), { textContent: stem.name });
    const audio = Object.assign(document.createElement("audio"), { preload: "auto", src: stem.audio });
    const controls = document.createElement("div");
    controls.className = "controls";
    const soloButton = toggle("Solo", stem.name, solo);
    const muteButton = toggle("Mute", stem.name, mute);
    const link = Object.assign(document.createElement("a"), {
      href: stem.download, textContent: "Download", className: "button download",
    });
    link.setAttribute("download", "");
    controls.append(soloButton, muteButton, link);
    row.append(title, controls, audio);
    if (stem.picture) {
      row.append(Object.assign(document.createElement("img"), {
        src: stem.picture, alt: `spectrogram of ${stem.name}`, loading: "lazy",
      }));
    }
    if (stem.clipped) {
      row.append(Object.assign(document.createElement("p"), {
        className: "note", textContent: `${stem.clipped} samples clipped`,
      }));
    }
    $("stems").append(row);
    players.push({ stem: stem.name, audio, row });
  }
  const master = players[0].audio;
  let ready = 0;
  for (const p of players) {
    p.audio.addEventListener("canplaythrough", () => { if (++ready === players.length) $("play").disabled = false; }, { once: true });
    p.audio.addEventListener("error", () => showError(`Cannot play ${p.stem}: the file is gone (jobs are kept ${info.keep_minutes} minutes).`));
  }
  master.addEventListener("loadedmetadata", () => { $("seek").max = master.duration; tick(); });
  master.addEventListener("timeupdate", tick);
  master.addEventListener("ended", () => { for (const p of players) p.audio.pause(); $("play").textContent = "Play"; });
  $("play").onclick = () => (master.paused ? play() : pause());
  $("seek").oninput = () => { for (const p of players) p.audio.currentTime = Number($("seek").value); tick(); };
  applyGains();
  timer = setInterval(keepInStep, 250);
}

function toggle(label, stem, set) {
  const b = Object.assign(document.createElement("button"), { type: "button", textContent: label });
  b.className = label.toLowerCase();
  b.setAttribute("aria-pressed", String(set.has(stem)));
  b.onclick = () => {
    if (set.has(stem)) set.delete(stem); else set.add(stem);
    b.setAttribute("aria-pressed", String(set.has(stem)));
    applyGains();
  };
  return b;
}

function applyGains() {
  for (const p of players) {
    const audible = solo.size ? solo.has(p.stem) : !mute.has(p.stem);
    p.audio.muted = !audible;
    p.row.classList.toggle("silent", !audible);
  }
}

async function play() {
  const t = players[0].audio.currentTime;
  for (const p of players) p.audio.currentTime = t;
  try {
    await Promise.all(players.map((p) => p.audio.play()));
    $("play").textContent = "Pause";
  } catch (e) {
    showError(`The browser would not play: ${e.message}`);
  }
}

function pause() {
  for (const p of players) p.audio.pause();
  $("play").textContent = "Play";
}

function keepInStep() {
  // each <audio> runs its own clock: pull any that drifts more than 40 ms back onto the mixture's
  if (!players.length) return;
  const master = players[0].audio;
  if (master.paused) return;
  for (const p of players.slice(1)) {
    if (Math.abs(p.audio.currentTime - master.currentTime) > 0.04) p.audio.currentTime = master.currentTime;
    if (p.audio.paused && !p.audio.ended) p.audio.play().catch(() => {});
  }
}

function tick() {
  const master = players.length ? players[0].audio : null;
  if (!master) return;
  $("seek").value = master.currentTime;
  $("clock").textContent = `${clock(master.currentTime)} / ${clock(master.duration)}`;
}

start();
