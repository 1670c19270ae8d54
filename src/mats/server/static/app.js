// The MATS page: pick, drop or record a clip; ask the API; show the answer, tags, zero-shot labels,
// the Santa memory's retrieved texts, a per-window timeline or the recording's events (bars on the
// waveform that play their span). Plain browser JavaScript, no build.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, blob: null, name: null, duration: null, previewing: false, recorder: null,
                spanEnd: null };

// ---------------------------------------------------------------------------------------------
// talking to the API

function authHeaders() {
  const key = $("key").value.trim() || localStorage.getItem("mats-key") || "";
  return key ? { Authorization: "Bearer " + key } : {};
}

// A GET, or a POST of ``form``; ``onUpload(sent, total)`` follows the upload of the form (an
// XMLHttpRequest: fetch cannot report how much of a request body has gone out).
function request(method, path, form, onUpload) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, path);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    if (onUpload) {
      xhr.upload.addEventListener("progress", (e) => onUpload(e.loaded, e.lengthComputable ? e.total : 0));
      xhr.upload.addEventListener("load", () => onUpload(1, 1));
    }
    xhr.addEventListener("load", () => resolve({ status: xhr.status, text: xhr.responseText }));
    xhr.addEventListener("error", () => reject(new Error("The server cannot be reached. Is `mats serve` still running?")));
    xhr.send(form || null);
  });
}

async function api(path, form, onUpload) {
  const response = await request(form ? "POST" : "GET", path, form, onUpload);
  let body = null;
  try { body = JSON.parse(response.text); } catch (e) { /* not JSON: described below */ }
  if (response.status < 200 || response.status > 299) {
    const why = body && body.error ? body.error : `the server answered ${response.status}`;
    const err = new Error(explain(response.status, why));
    err.status = response.status;
    throw err;
  }
  return body;
}

function explain(status, why) {
  if (status === 401) return "This server needs an API key: type it in the API key field. (" + why + ")";
  if (status === 413) return "The clip is too large for this server: " + why;
  if (status === 400) return "The server could not use the audio: " + why;
  if (status === 422) return "Something in the request was not accepted: " + why;
  if (status === 503) return "The server is busy right now; try again in a moment.";
  if (status === 504 || status === 408) return "The server took too long: " + why;
  return why;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// ---------------------------------------------------------------------------------------------
// model info: tasks and bridges come from the server, so the page follows the task registry

async function loadInfo() {
  try {
    state.info = await api("/v1/info");
  } catch (e) {
    if (e.status === 401) $("key-row").hidden = false;
    $("model").textContent = "";
    showError(e.message);
    return;
  }
  const info = state.info;
  $("model").textContent = `model: ${info.model} · CLAP: ${info.clap.name} · LLM: ${info.llm}`;
  if (info.limits.api_key) $("key-row").hidden = false;
  if (info.retrieval_k > 0) {
    $("why-note").textContent = `The training texts nearest the clip after the bridge, with Santa's weights; ` +
      `the first ${info.retrieval_k} were written into the model's prompt.`;
  }
  const task = $("task");
  task.innerHTML = "";
  for (const t of info.tasks) {
    const o = document.createElement("option");
    o.value = t.endpoint;
    o.textContent = t.endpoint.replace("/v1/", "") + " — " + t.help;
    o.dataset.question = t.needs_question ? "1" : "";
    task.appendChild(o);
  }
  const bridge = $("bridge");
  bridge.innerHTML = "";
  for (const b of info.bridges) {
    const o = document.createElement("option");
    o.value = o.textContent = b;
    if (b === info.default_bridge) o.selected = true;
    bridge.appendChild(o);
  }
  onTaskChange();
  showError("");
  updateRun();
}

function onTaskChange() {
  const opt = $("task").selectedOptions[0];
  $("question-row").hidden = !(opt && opt.dataset.question);
}

function updateRun() {
  // Not while the clip is still being previewed: its duration decides whether to ask for a timeline.
  $("run").disabled = !(state.blob && state.info) || state.previewing;
}

// ---------------------------------------------------------------------------------------------
// the clip: a file, a dropped file or a recording; drawn as a waveform

async function useClip(blob, name) {
  state.blob = blob;
  state.name = name;
  state.duration = null;
  state.audio = null;  // until this clip is decoded, no older waveform is drawn again
  state.previewing = true;
  $("clip-name").textContent = name;
  $("rec-time").textContent = "";  // the last recording's timer says nothing about this clip
  $("player").src = URL.createObjectURL(blob);
  $("player").hidden = false;
  showEventBars([], 0);  // the last clip's events say nothing about this one
  showError("");
  updateRun();
  try {
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    const audio = await ctx.decodeAudioData(await blob.arrayBuffer());
    state.duration = audio.duration;
    drawWave(audio);
    ctx.close();
  } catch (e) {
    clearWave("This browser cannot preview this format; the server may still read it.");
  } finally {
    if (state.blob === blob) {  // a newer clip may have replaced this one meanwhile
      state.previewing = false;
      updateRun();
    }
  }
}

function clearWave(message) {
  const c = $("wave"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (message) {
    g.fillStyle = "#667085";
    g.font = "14px system-ui, sans-serif";
    g.fillText(message, 12, c.height / 2);
  }
}

function drawWave(audio, windows, events) {
  const c = $("wave"), g = c.getContext("2d");
  const w = c.width, h = c.height, mid = h / 2;
  g.clearRect(0, 0, w, h);
  for (const e of events || []) {  // the events' spans behind the waveform, above their bars
    if (e.kind !== "sound") continue;
    const x0 = Math.round((e.start / audio.duration) * w), x1 = Math.round((e.end / audio.duration) * w);
    g.fillStyle = "rgba(47,111,223,.10)";
    g.fillRect(x0, 0, x1 - x0, h);
    g.fillStyle = "rgba(47,111,223,.6)";
    g.fillRect(x0, 0, 1, h);
    g.fillRect(x1 - 1, 0, 1, h);
  }
  const data = audio.getChannelData(0);
  const step = Math.max(1, Math.floor(data.length / w));
  let peak = 1e-9;
  for (let i = 0; i < data.length; i += 1) peak = Math.max(peak, Math.abs(data[i]));
  g.fillStyle = "#2f6fdf";
  for (let x = 0; x < w; x += 1) {
    let lo = 0, hi = 0;
    const start = x * step, end = Math.min(data.length, start + step);
    for (let i = start; i < end; i += 1) { lo = Math.min(lo, data[i]); hi = Math.max(hi, data[i]); }
    g.fillRect(x, mid - (hi / peak) * (mid - 4), 1, Math.max(1, ((hi - lo) / peak) * (mid - 4)));
  }
  state.audio = audio;
  if (windows) {  // the CLAP's windows, where the timeline's answers come from
    g.strokeStyle = "rgba(29,35,48,.35)";
    for (const win of windows) {
      const x = Math.round((win.start / audio.duration) * w);
      g.beginPath(); g.moveTo(x, 0); g.lineTo(x, h); g.stroke();
    }
  }
}

function pickFile(file) {
  if (!file) return;
  useClip(file, file.name);
}

// Recording: MediaRecorder gives webm/ogg; libsndfile on the server reads WAV for certain, so the
// recording is decoded here and sent as 16-bit mono WAV.
async function toggleRecording() {
  if (state.recorder) { state.recorder.stop(); return; }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    showError("The microphone is not available: " + (e.message || e.name) +
              ". (Browsers allow it on https:// or http://127.0.0.1 only.)");
    return;
  }
  const chunks = [];
  const recorder = new MediaRecorder(stream);
  const started = Date.now();
  const timer = setInterval(() => {
    $("rec-time").textContent = ((Date.now() - started) / 1000).toFixed(1) + " s";
  }, 100);
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  recorder.onstop = async () => {
    clearInterval(timer);
    stream.getTracks().forEach((t) => t.stop());
    state.recorder = null;
    $("record").classList.remove("recording");
    $("record").textContent = "● Record";
    try {
      const ctx = new (window.AudioContext || window.webkitAudioContext)();
      const audio = await ctx.decodeAudioData(await new Blob(chunks).arrayBuffer());
      ctx.close();
      useClip(encodeWav(audio), "recording.wav");
    } catch (e) {
      showError("The recording could not be decoded in this browser: " + e.message);
    }
  };
  state.recorder = recorder;
  recorder.start();
  $("record").classList.add("recording");
  $("record").textContent = "■ Stop";
}

function encodeWav(audio) {
  const n = audio.length, rate = audio.sampleRate, channels = audio.numberOfChannels;
  const mono = new Float32Array(n);
  for (let c = 0; c < channels; c += 1) {
    const d = audio.getChannelData(c);
    for (let i = 0; i < n; i += 1) mono[i] += d[i] / channels;
  }
  const buf = new ArrayBuffer(44 + 2 * n), v = new DataView(buf);
  const text = (o, s) => { for (let i = 0; i < s.length; i += 1) v.setUint8(o + i, s.charCodeAt(i)); };
  text(0, "RIFF"); v.setUint32(4, 36 + 2 * n, true); text(8, "WAVE"); text(12, "fmt ");
  v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, rate, true); v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true);
  v.setUint16(34, 16, true); text(36, "data"); v.setUint32(40, 2 * n, true);
  for (let i = 0; i < n; i += 1) {
    const s = Math.max(-1, Math.min(1, mono[i]));
    v.setInt16(44 + 2 * i, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([buf], { type: "audio/wav" });
}

// ---------------------------------------------------------------------------------------------
// asking and showing

function labelList() {
  return $("labels").value.split(",").map((s) => s.trim()).filter((s) => s);
}

function megabytes(n) {
  return (n / 1e6).toFixed(n < 1e7 ? 1 : 0) + " MB";
}

// Upload progress: the bar and the status follow the request body; once it is all sent the server
// is working on it.
function showUpload(sent, total) {
  const bar = $("upload");
  if (total > 0 && sent >= total) {
    bar.value = 1;
    bar.hidden = true;
    $("status").textContent = "listening…";
    return;
  }
  bar.hidden = false;
  if (total > 0) {
    bar.value = sent / total;
    $("status").textContent = `uploading ${Math.floor(100 * sent / total)} % of ${megabytes(total)}…`;
  } else {
    bar.removeAttribute("value");  // no length known: an indeterminate bar
    $("status").textContent = `uploading ${megabytes(sent)}…`;
  }
}

async function run() {
  if (!state.blob) return;
  const opt = $("task").selectedOptions[0];
  const question = $("question").value.trim();
  if (opt.dataset.question && !question) { showError("This task needs a question: type one above."); return; }
  if ($("key").value.trim()) localStorage.setItem("mats-key", $("key").value.trim());
  showError("");
  $("run").disabled = true;
  $("status").textContent = "uploading…";
  $("upload").value = 0;
  const long = state.duration !== null && state.info && state.duration > state.info.limits.clip_seconds;
  const events = $("events").checked;

  const form = new FormData();
  form.append("file", state.blob, state.name);
  form.append("bridge", $("bridge").value);
  // Events answer each event, not the whole clip: no retrieved texts, no per-window timeline.
  form.append("explain", events ? "false" : "true");
  form.append("per_window", long && !events ? "true" : "false");
  if (events) form.append("events", "true");
  if (opt.dataset.question) form.append("question", question);
  const labels = labelList();
  let zeroShot = Promise.resolve(null);
  if (labels.length >= 2) {
    const zform = new FormData();
    zform.append("file", state.blob, state.name);
    zform.append("labels", labels.join(","));
    zform.append("top_k", "5");
    zeroShot = api("/v1/zero-shot", zform).catch((e) => ({ error: e.message }));
  }
  const t0 = performance.now();
  try {
    const answer = await api(opt.value, form, showUpload);
    showAnswer(answer);
    const zs = await zeroShot;
    showZeroShot(zs);
    $("status").textContent = `answered in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
  } catch (e) {
    $("status").textContent = "";
    showError(e.message);
  } finally {
    $("upload").hidden = true;
    updateRun();
  }
}

function bars(list, rows, value, label) {
  list.innerHTML = "";
  const top = Math.max(1e-9, ...rows.map(value));
  for (const r of rows) {
    const li = document.createElement("li");
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = (100 * value(r) / top).toFixed(1) + "%";
    const text = document.createElement("span");
    text.textContent = label(r);
    const num = document.createElement("span");
    num.className = "num";
    num.textContent = value(r).toFixed(3);
    li.append(fill, text, num);
    list.appendChild(li);
  }
}

function showAnswer(a) {
  $("result-card").hidden = false;
  $("answer").textContent = a.text;
  const tags = $("tags");
  tags.innerHTML = "";
  for (const t of a.tags || []) {
    const li = document.createElement("li");
    li.textContent = t;
    tags.appendChild(li);
  }
  $("why-box").hidden = !a.retrieved;
  bars($("why"), a.retrieved || [], (r) => r.weight, (r) => r.text);
  const tl = $("timeline");
  tl.innerHTML = "";
  if (a.events) {
    showEvents(a.events, a.duration || state.duration || 0);
    return;
  }
  const windows = a.windows || [];
  $("timeline-title").textContent = "Timeline";
  $("timeline-note").textContent = "One answer per 10-second window of the clip.";
  $("timeline-box").hidden = windows.length < 2;
  for (const w of windows) {
    const li = document.createElement("li");
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = `${w.start.toFixed(1)}–${w.end.toFixed(1)} s`;
    li.append(when, document.createTextNode(w.text));
    tl.appendChild(li);
  }
  if (state.audio && windows.length > 1) drawWave(state.audio, windows);
}

// ---------------------------------------------------------------------------------------------
// events: bars on the waveform and a list, each playing its own span of the recording

function eventLabel(e) {
  if (e.kind === "silence") return "silence";
  if (e.error) return "no answer: " + e.error;
  return e.tags && e.tags.length ? e.tags.join(", ") : e.text;
}

function span(e) {
  return `${e.start.toFixed(1)}–${e.end.toFixed(1)} s`;
}

function showEvents(events, duration) {
  const sounds = events.filter((e) => e.kind === "sound").length;
  $("timeline-title").textContent = "Events";
  $("timeline-note").textContent = `${sounds} sound event${sounds === 1 ? "" : "s"} in order; ` +
    "choose one (here or on the waveform) to play it.";
  $("timeline-box").hidden = events.length === 0;
  const tl = $("timeline");
  for (const e of events) {
    const li = document.createElement("li");
    li.className = e.kind;
    const play = document.createElement("button");
    play.type = "button";
    play.className = "when";
    play.textContent = "▶ " + span(e);
    play.setAttribute("aria-label", `Play ${span(e)}`);
    play.addEventListener("click", () => playSpan(e.start, e.end));
    li.append(play, document.createTextNode(eventLabel(e)));
    tl.appendChild(li);
  }
  showEventBars(events, duration);
  if (state.audio) drawWave(state.audio, null, events);
}

function showEventBars(events, duration) {
  const box = $("event-bars");
  box.innerHTML = "";
  box.hidden = !(events.length && duration > 0);
  if (box.hidden) return;
  events.forEach((e, i) => {
    const bar = document.createElement("button");
    bar.type = "button";
    bar.className = e.kind;
    bar.dataset.start = e.start;
    bar.dataset.end = e.end;
    bar.style.left = (100 * e.start / duration).toFixed(3) + "%";
    bar.style.width = (100 * Math.max(0, e.end - e.start) / duration).toFixed(3) + "%";
    bar.textContent = eventLabel(e);
    bar.title = `${span(e)}: ${eventLabel(e)}`;
    bar.setAttribute("aria-label", `Event ${i + 1}, ${span(e)}: ${eventLabel(e)}. Play it.`);
    bar.addEventListener("click", () => playSpan(e.start, e.end, bar));
    box.appendChild(bar);
  });
}

// Play [start, end) of the clip: the player stops itself at the end of the span.
function playSpan(start, end, bar) {
  const player = $("player");
  for (const b of $("event-bars").children) b.classList.toggle("playing", b === bar);
  state.spanEnd = end;
  player.currentTime = start;
  player.play().then(() => requestAnimationFrame(followSpan)).catch((e) => {
    state.spanEnd = null;
    showError("This browser cannot play this clip: " + (e.message || e.name));
  });
}

// Checked every frame while a span plays (timeupdate alone comes only about 4 times a second, and
// keeps it going where frames stop, as in a hidden tab).
function stopAtSpanEnd() {
  const player = $("player");
  if (state.spanEnd === null || player.paused) return false;
  if (player.currentTime >= state.spanEnd) {
    player.pause();
    return false;
  }
  return true;  // still inside the span
}

function followSpan() {
  if (stopAtSpanEnd()) requestAnimationFrame(followSpan);
}

function spanOver() {
  if (state.spanEnd === null) return;
  state.spanEnd = null;
  for (const b of $("event-bars").children) b.classList.remove("playing");
}

function showZeroShot(z) {
  const list = $("zeroshot");
  if (!z) { list.innerHTML = "<li>Type two or more labels to see how the CLAP ranks them.</li>"; return; }
  if (z.error) { list.innerHTML = ""; const li = document.createElement("li"); li.textContent = z.error; list.appendChild(li); return; }
  bars(list, z.top_k, (r) => r.score, (r) => r.label);
}

// ---------------------------------------------------------------------------------------------

function wire() {
  $("file").addEventListener("change", (e) => {
    pickFile(e.target.files[0]);
    e.target.value = "";  // so choosing the same file again (after a recording) counts as a choice
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    pickFile(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  $("record").addEventListener("click", toggleRecording);
  if (!window.MediaRecorder || !navigator.mediaDevices) $("record").disabled = true;
  $("task").addEventListener("change", onTaskChange);
  $("player").addEventListener("timeupdate", stopAtSpanEnd);
  $("player").addEventListener("pause", spanOver);
  $("run").addEventListener("click", run);
  $("key").addEventListener("change", loadInfo);
  const saved = localStorage.getItem("mats-key");
  if (saved) $("key").value = saved;
  clearWave("Pick, drop or record a clip.");
  loadInfo();
}

wire();
