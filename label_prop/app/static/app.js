// The page of label_prop.app: a frame viewer, brushes, a timeline with a reliability strip,
// progress from server-sent events, exports. Plain JS, no build step (docs/app.md).
"use strict";

const $ = (id) => document.getElementById(id);
const app = {
  sid: null, st: null, t: 0, label: 1, pending: {}, drawing: null, version: -1,
  frameImg: new Image(), maskImg: new Image(), maskFor: null, events: null,
  seen: new Set(),  // the statuses that events have reported (a test checks that progress streams)
};
window.hvcApp = app;  // for tests and the console

// The DAVIS / PASCAL VOC palette (label_prop.data.io.davis_palette).
function colour(i) {
  let c = i, r = 0, g = 0, b = 0;
  for (let j = 0; j < 8; j++) {
    r |= ((c >> 0) & 1) << (7 - j); g |= ((c >> 1) & 1) << (7 - j); b |= ((c >> 2) & 1) << (7 - j);
    c >>= 3;
  }
  return i === 0 ? "rgb(255,255,255)" : `rgb(${r},${g},${b})`;
}

function status(text, kind) {
  $("status").textContent = text;
  $("status").className = kind || "";
}

async function api(method, url, body, type) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    if (type) { opts.body = body; opts.headers["Content-Type"] = type; }
    else { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  }
  const r = await fetch(url, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || `${r.status} ${r.statusText}`);
  return data;
}

// ------------------------------------------------------------------ sources
async function loadSources() {
  const info = await api("GET", "/api/info");
  $("model").textContent = `model ${info.model.name}, input size ${info.settings.propagation.input_size}, ` +
    `n-context ${info.settings.propagation.n_context}`;
  const data = await api("GET", "/api/sources");
  const sel = $("source");
  sel.innerHTML = "";
  for (const s of data.sources) {
    const o = document.createElement("option");
    o.value = JSON.stringify({ root: s.root, path: s.path });
    o.textContent = `${data.roots[s.root]}/${s.path}` + (s.frames > 0 ? ` (${s.frames} frames)` : "");
    o.dataset.path = s.path;
    sel.appendChild(o);
  }
  status(`${data.sources.length} videos and frame folders found. Choose one and open it.`);
}

async function openSource() {
  const src = JSON.parse($("source").value);
  const n = parseInt($("first-frames").value, 10);
  if (n > 0) src.frames = n;
  await start(await api("POST", "/api/sessions", src));
}

async function loadSession(file) {
  const text = await file.text();
  await start(await api("POST", "/api/sessions/load", text, "application/json"));
}

async function start(st) {
  if (app.events) app.events.close();
  app.sid = st.id; app.st = st; app.t = 0; app.pending = {}; app.label = 1; app.version = -1;
  $("workspace").hidden = false;
  $("timeline").max = st.num_frames - 1;
  $("timeline").value = 0;
  const [h, w] = st.size;
  $("canvas").width = w; $("canvas").height = h;
  for (const [id, what] of [["export-masks", "masks.zip"], ["export-video", "overlay.mp4"], ["export-session", "session.json"]])
    $(id).href = `/api/sessions/${app.sid}/export/${what}`;
  app.events = new EventSource(`/api/sessions/${app.sid}/events`);
  app.events.onmessage = (e) => update(JSON.parse(e.data));
  app.events.onerror = () => { if (app.sid) status("lost the connection to the server; retrying ...", "error"); };
  update(st);
  showFrame(0);
}

// ------------------------------------------------------------------ state
function update(st) {
  const changed = st.version !== app.version;
  app.st = st;
  app.seen.add(st.status);
  document.body.dataset.status = st.status;
  document.body.dataset.version = st.version;
  const p = st.progress || {};
  const busy = st.status === "loading" || st.status === "busy";
  $("progress").max = p.total || 1;
  $("progress").value = busy ? (p.done || 0) : (p.total || 1);
  if (busy) status(`${p.stage || "working"}: ${p.done || 0} / ${p.total || "?"}`);
  else if (st.status === "error") status(`error: ${st.message}`, "error");
  else if (st.message) status(`refused: ${st.message}`, "error");
  else status(`ready: ${st.annotated_frames.length} annotated frames, ${st.interactions} interactions` +
              (st.recommended !== null ? `; recommended next: frame ${st.recommended}` : ""));
  for (const b of ["apply", "undo", "add-object", "export-masks", "export-video", "export-session"])
    $(b).classList.toggle("disabled", busy);
  $("apply").disabled = busy; $("undo").disabled = busy || !st.can_undo; $("add-object").disabled = busy;
  drawObjects();
  drawStrip();
  if (changed && !busy) { app.version = st.version; loadMask(); }
}

function drawObjects() {
  const box = $("objects");
  box.innerHTML = "";
  const labels = [...(app.st ? app.st.object_ids : [1]), 0];
  for (const k of labels) {
    const b = document.createElement("button");
    b.id = `label-${k}`;
    b.innerHTML = `<span class="swatch" style="background:${colour(k)}"></span>` + (k ? `object ${k}` : "background");
    b.classList.toggle("active", k === app.label);
    b.onclick = () => { app.label = k; drawObjects(); };
    box.appendChild(b);
  }
}

function drawStrip() {
  const c = $("strip"), g = c.getContext("2d"), st = app.st;
  if (!st) return;
  const T = st.num_frames, w = c.width / T;
  g.clearRect(0, 0, c.width, c.height);
  for (let t = 0; t < T; t++) {
    const r = st.reliability[t];
    g.fillStyle = r === null ? "#444" : `hsl(${Math.round(120 * Math.max(0, Math.min(1, r)))}, 70%, 40%)`;
    g.fillRect(t * w, 4, Math.max(w - 0.5, 1), c.height - 4);
  }
  g.fillStyle = "#fff";
  for (const t of st.annotated_frames) g.fillRect(t * w, 0, Math.max(w, 2), 5);
  if (st.recommended !== null) { g.fillStyle = "#ffd400"; g.fillRect(st.recommended * w, 0, Math.max(w, 3), c.height); }
  g.strokeStyle = "#fff"; g.lineWidth = 2; g.strokeRect(app.t * w, 1, Math.max(w, 2), c.height - 2);
}

// ------------------------------------------------------------------ viewer
function showFrame(t) {
  if (!app.st) return;
  app.t = Math.max(0, Math.min(app.st.num_frames - 1, t));
  $("timeline").value = app.t;
  $("frame-label").textContent = `frame ${app.t} / ${app.st.num_frames - 1}` +
    (app.st.annotated_frames.includes(app.t) ? " (annotated)" : "");
  app.frameImg.onload = redraw;
  app.frameImg.src = `/api/sessions/${app.sid}/frame/${app.t}.jpg`;
  loadMask();
  drawStrip();
}

function loadMask() {
  if (!app.st || app.st.status === "loading" || (app.st.status === "error" && !app.st.annotated_frames)) return;
  const t = app.t, v = app.st.version;
  const img = new Image();
  img.onload = () => { if (t === app.t) { app.maskImg = img; app.maskFor = `${t}@${v}`; redraw(); } };
  img.src = `/api/sessions/${app.sid}/mask/${t}.png?v=${v}`;
}

function redraw() {
  const c = $("canvas"), g = c.getContext("2d");
  g.globalAlpha = 1;
  g.clearRect(0, 0, c.width, c.height);
  if (app.frameImg.complete && app.frameImg.naturalWidth) g.drawImage(app.frameImg, 0, 0);
  if (app.maskFor && app.maskFor.startsWith(`${app.t}@`) && app.maskImg.complete) {
    g.globalAlpha = $("opacity").value / 100;
    g.drawImage(app.maskImg, 0, 0);
    g.globalAlpha = 1;
  }
  const width = +$("brush").value;
  for (const [label, strokes] of Object.entries(app.pending[app.t] || {})) {
    g.strokeStyle = colour(+label); g.fillStyle = colour(+label);
    g.lineWidth = width; g.lineCap = "round"; g.lineJoin = "round";
    for (const s of strokes) {
      g.beginPath();
      g.moveTo(s[0][0], s[0][1]);
      for (const [x, y] of s.slice(1)) g.lineTo(x, y);
      if (s.length === 1) g.arc(s[0][0], s[0][1], width / 2, 0, 2 * Math.PI);
      s.length === 1 ? g.fill() : g.stroke();
    }
  }
}

// The number of mask pixels drawn over the current frame (0 = no mask shown); for tests.
app.maskPixelsShown = function () {
  if (!app.maskFor || !app.maskFor.startsWith(`${app.t}@`)) return 0;
  const c = document.createElement("canvas");
  c.width = app.maskImg.naturalWidth; c.height = app.maskImg.naturalHeight;
  const g = c.getContext("2d");
  g.drawImage(app.maskImg, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
  return n;
};

// Whether the current frame's image is drawn (loaded); for tests.
app.frameShown = () => app.frameImg.complete && app.frameImg.naturalWidth > 0 &&
  app.frameImg.src.endsWith(`/frame/${app.t}.jpg`);

function point(e) {
  const c = $("canvas"), r = c.getBoundingClientRect();
  return [Math.round((e.clientX - r.left) * c.width / r.width * 10) / 10,
          Math.round((e.clientY - r.top) * c.height / r.height * 10) / 10];
}

function strokeStart(e) {
  if (!app.st || e.button !== 0) return;
  $("canvas").setPointerCapture(e.pointerId);
  const frame = (app.pending[app.t] = app.pending[app.t] || {});
  app.drawing = [point(e)];
  (frame[app.label] = frame[app.label] || []).push(app.drawing);
  redraw();
}
function strokeMove(e) {
  if (!app.drawing) return;
  const p = point(e), last = app.drawing[app.drawing.length - 1];
  if (Math.hypot(p[0] - last[0], p[1] - last[1]) >= 1) { app.drawing.push(p); redraw(); }
}
function strokeEnd() { app.drawing = null; }

// ------------------------------------------------------------------ actions
async function act(fn) {
  try { await fn(); } catch (err) { status(`refused: ${err.message}`, "error"); }
}

async function applyStrokes() {
  const strokes = app.pending[app.t];
  if (!strokes || !Object.keys(strokes).length) { status("draw a stroke first", "error"); return; }
  await api("POST", `/api/sessions/${app.sid}/annotate`, { frame: app.t, scribbles: strokes, width: +$("brush").value });
  delete app.pending[app.t];
  redraw();
}

async function uploadMask(file) {
  await api("POST", `/api/sessions/${app.sid}/mask/${app.t}`, await file.arrayBuffer(), "image/png");
}

async function addObject() {
  const r = await api("POST", `/api/sessions/${app.sid}/objects`);
  app.label = r.id;
}

async function closeSession() {
  if (app.events) app.events.close();
  await api("DELETE", `/api/sessions/${app.sid}`);
  app.sid = null; app.st = null;
  $("workspace").hidden = true;
  document.body.dataset.status = "none";
  status("session closed");
}

function init() {
  const c = $("canvas");
  c.addEventListener("pointerdown", strokeStart);
  c.addEventListener("pointermove", strokeMove);
  c.addEventListener("pointerup", strokeEnd);
  c.addEventListener("pointercancel", strokeEnd);
  $("timeline").addEventListener("input", (e) => showFrame(+e.target.value));
  $("prev").onclick = () => showFrame(app.t - 1);
  $("next").onclick = () => showFrame(app.t + 1);
  $("goto-recommended").onclick = () => { if (app.st && app.st.recommended !== null) showFrame(app.st.recommended); };
  $("strip").addEventListener("click", (e) => {
    if (!app.st) return;
    const r = e.target.getBoundingClientRect();
    showFrame(Math.floor((e.clientX - r.left) / r.width * app.st.num_frames));
  });
  document.addEventListener("keydown", (e) => {
    if (!app.st || e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    if (e.key === "ArrowLeft") { showFrame(app.t - 1); e.preventDefault(); }
    if (e.key === "ArrowRight") { showFrame(app.t + 1); e.preventDefault(); }
  });
  $("brush").addEventListener("input", (e) => { $("brush-value").textContent = e.target.value; redraw(); });
  $("opacity").addEventListener("input", redraw);
  $("open").onclick = () => act(openSource);
  $("load-file").addEventListener("change", (e) => { if (e.target.files[0]) act(() => loadSession(e.target.files[0])); e.target.value = ""; });
  $("apply").onclick = () => act(applyStrokes);
  $("clear").onclick = () => { delete app.pending[app.t]; redraw(); };
  $("undo").onclick = () => act(() => api("POST", `/api/sessions/${app.sid}/undo`));
  $("add-object").onclick = () => act(addObject);
  $("mask-file").addEventListener("change", (e) => { if (e.target.files[0]) act(() => uploadMask(e.target.files[0])); e.target.value = ""; });
  $("close-session").onclick = () => act(closeSession);
  act(loadSources);
}

init();
