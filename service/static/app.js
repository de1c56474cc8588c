// The upload page: every option of POST /v1/upscale, checked against /v1/models before
// anything is sent, and the answer shown in the compare view. URLs are relative so the
// page works behind a path prefix.
import {CompareView} from "./compare.js";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "srserve.apiKey"; // sessionStorage: gone when the tab closes
const RESIZER_SCALES = [2, 3, 4, 1.5, 8];
const compare = new CompareView($("result"));

const state = {
  catalog: [],
  limits: null,
  input: null, // {file, url, width, height} (width/height null when the browser cannot decode it)
  seq: 0, // bumped by each upload: an answer for an older one is dropped
  xhr: null,
  result: null, // {seq, url, width, height, query}
  bicubic: null, // {seq, url}
  lastEdited: "width",
};

function headers() {
  const k = $("apikey").value;
  return k ? {"X-API-Key": k} : {};
}
function say(text) {
  $("status").textContent = text;
}
function mib(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`;
}
const model = () => state.catalog.find((m) => m.name === $("model").value);

/** An error replaces whatever result was on screen. `e`: the server's error object, or a message. */
function showError(e, status) {
  clearResult();
  const box = $("error");
  box.replaceChildren();
  const head = document.createElement("strong");
  head.textContent = status ? `Error ${status}: ` : "Error: ";
  box.append(head, e.message || String(e));
  const extra = [];
  if (e.field) extra.push(`field: ${e.field}`);
  if (e.allowed) extra.push(`allowed: ${e.allowed.join(", ")}`);
  if (e.limits) extra.push(Object.entries(e.limits).map(([k, v]) => `${k} = ${v}`).join(", "));
  if (e.problems) extra.push(...e.problems.map((p) => `${p.field}: ${p.message}`));
  if (e.code) extra.push(`code: ${e.code}`);
  if (extra.length) {
    const p = document.createElement("p");
    p.textContent = extra.join(" · ");
    box.append(p);
  }
  box.hidden = false;
  say("Error");
}

function clearResult() {
  for (const r of [state.result, state.bicubic]) if (r) URL.revokeObjectURL(r.url);
  state.result = state.bicubic = null;
  compare.clear();
  $("download").removeAttribute("href");
  $("timing").replaceChildren();
  $("bicubic").checked = false;
}

// ---- the catalog: models, scales, limits ----
async function loadModels() {
  let r;
  try {
    r = await fetch("v1/models", {headers: headers()});
  } catch (err) {
    showError(`cannot reach the server: ${err}`);
    return;
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    showError(body.error || {message: r.statusText}, r.status);
    return;
  }
  $("error").hidden = true;
  state.catalog = body.models;
  state.limits = body.limits;
  const keep = $("model").value;
  $("model").replaceChildren(...state.catalog.map((m) => new Option(`${m.name} — ${m.task} (${m.kind})`, m.name)));
  const names = state.catalog.map((m) => m.name);
  $("model").value = names.includes(keep) ? keep : names.includes("espcn") ? "espcn" : names[0];
  const restorers = state.catalog.filter((m) => m.task !== "upscale" && m.scales.length);
  $("restore").replaceChildren(new Option("nothing", ""), ...restorers.map((m) => new Option(m.name, m.name)));
  $("format").replaceChildren(...body.limits.formats.map((f) => new Option(f, f)));
  modelChanged();
}

function modelChanged() {
  const m = model();
  if (!m) return;
  const scales = m.any_scale ? RESIZER_SCALES : m.scales;
  const keep = $("scale").value;
  $("scale").replaceChildren(...scales.map((s) => new Option(`x${s}`, String(s))));
  if (scales.map(String).includes(keep)) $("scale").value = keep;
  // PSNR per trained scale from the cards: Y channel for upscalers, RGB for restoration.
  const channel = m.task === "upscale" ? "Y" : "RGB";
  // Set5 where the card has it (the published benchmark), else the held-out validation.
  const psnr = (m.variants || []).flatMap((v) => {
    const [set, db] = Object.entries(v.psnr).sort(([a], [b]) => (b === "set5") - (a === "set5"))[0] || [];
    return set ? [`x${v.scale} ${db.toFixed(2)} dB on ${set}`] : [];
  });
  $("model-info").textContent = m.description + (psnr.length ? ` · PSNR (${channel}): ${psnr.join(", ")}` : "");
}

// ---- input: picker, drop, paste ----
function setInput(file) {
  if (!file) return;
  if (state.input) URL.revokeObjectURL(state.input.url);
  const input = {file, url: URL.createObjectURL(file), width: null, height: null};
  state.input = input;
  $("error").hidden = true;
  const info = $("input-info");
  const name = file.name || "pasted image";
  info.textContent = `${name} · ${mib(file.size)}`;
  // Decoded here for its size: the limits are checked, and the upload waits for this.
  input.ready = new Promise((resolve) => {
    const probe = new Image();
    probe.onload = () => {
      input.width = probe.naturalWidth;
      input.height = probe.naturalHeight;
      resolve();
      if (state.input !== input) return;
      info.textContent = `${name} · ${input.width}x${input.height} px · ${mib(file.size)}`;
      syncSize();
      tooBig(false);
    };
    probe.onerror = () => {
      resolve();
      if (state.input === input) info.textContent += " · no preview in this browser (the server may still read it)";
    };
    probe.src = input.url;
  });
  tooBig(false);
}

/** The server's limits, checked here so an upload that would be refused is never sent. */
function tooBig(withOutput) {
  const {input, limits} = state;
  if (!input || !limits) return false;
  let e = null;
  if (input.file.size > limits.max_upload_bytes) {
    e = {code: "upload_too_large", field: "image", limits: {max_upload_bytes: limits.max_upload_bytes},
      message: `the file is ${mib(input.file.size)}; this server takes at most ${mib(limits.max_upload_bytes)}`};
  } else if (input.width && input.width * input.height > limits.max_input_pixels) {
    e = {code: "input_pixels", field: "image", limits: {max_input_pixels: limits.max_input_pixels},
      message: `the image has ${input.width * input.height} pixels; this server takes at most ${limits.max_input_pixels}`};
  } else if (withOutput && input.width) {
    const [w, h] = outputSize();
    if (w * h > limits.max_output_pixels) {
      e = {code: "output_pixels", field: "scale", limits: {max_output_pixels: limits.max_output_pixels},
        message: `the output would be ${w}x${h} = ${w * h} pixels; this server makes at most ${limits.max_output_pixels}`};
    }
  }
  if (e) showError(e);
  return e !== null;
}

function outputSize() {
  const {width, height} = state.input;
  if (sizeMode() === "scale") {
    const s = Number($("scale").value);
    return [Math.round(width * s), Math.round(height * s)];
  }
  const w = Number($("width").value) || null;
  const h = Number($("height").value) || null;
  return [w || Math.round((width * h) / height), h || Math.round((height * w) / width)];
}

// ---- size by scale, or by width x height with the aspect kept ----
const sizeMode = () => document.querySelector("input[name=size-mode]:checked").value;
function syncSize(edited) {
  if (edited) state.lastEdited = edited;
  const {input} = state;
  if (!input || !input.width || !$("keep-aspect").checked) return;
  const w = $("width");
  const h = $("height");
  if (!w.value && !h.value) w.value = input.width * 2;
  if (state.lastEdited === "width" && w.value) h.value = Math.max(1, Math.round((input.height * w.value) / input.width));
  if (state.lastEdited === "height" && h.value) w.value = Math.max(1, Math.round((input.width * h.value) / input.height));
}

function query() {
  const q = new URLSearchParams({model: $("model").value, format: $("format").value});
  if ($("format").value !== "png") q.set("quality", $("quality").value);
  if ($("restore").value) q.set("restore", $("restore").value);
  if (sizeMode() === "scale") {
    q.set("scale", $("scale").value);
  } else {
    // With the aspect kept, one side is sent and the server derives the other as shown here.
    const sides = $("keep-aspect").checked ? [state.lastEdited] : ["width", "height"];
    for (const side of sides) if ($(side).value) q.set(side, $(side).value);
  }
  return q;
}

// ---- the upload ----
async function upload(ev) {
  ev.preventDefault();
  const {input} = state;
  if (!input) {
    showError({message: "choose, drop or paste an image first", field: "image"});
    return;
  }
  await input.ready;
  if (state.input !== input || tooBig(true)) return;
  if (state.xhr) state.xhr.abort(); // a new upload replaces the one in flight
  clearResult();
  $("error").hidden = true;
  const seq = ++state.seq;
  const q = query();
  const xhr = new XMLHttpRequest();
  state.xhr = xhr;
  const progress = $("progress");
  progress.hidden = false;
  progress.max = 1;
  progress.value = 0;
  say("Uploading…");
  const started = performance.now();
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) progress.value = e.loaded / e.total; };
  xhr.upload.onload = () => {
    if (seq !== state.seq) return;
    progress.removeAttribute("value"); // indeterminate while the server computes
    say("Computing…");
  };
  const done = () => {
    if (seq !== state.seq) return false;
    progress.hidden = true;
    state.xhr = null;
    return true;
  };
  xhr.onload = async () => {
    if (!done()) return;
    if (xhr.status !== 200) {
      const e = await xhr.response.text().then(JSON.parse).catch(() => ({error: {message: xhr.statusText}}));
      if (seq === state.seq) showError(e.error || {message: xhr.statusText}, xhr.status);
      return;
    }
    showResult(seq, q, xhr, input, performance.now() - started);
  };
  xhr.onerror = () => { if (done()) showError({message: "the connection failed (is the server up?)"}); };
  xhr.open("POST", `v1/upscale?${q}`);
  xhr.responseType = "blob";
  for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
  const body = new FormData();
  body.append("image", input.file, input.file.name || "pasted.png");
  xhr.send(body);
}

function showResult(seq, q, xhr, input, roundTripMs) {
  const [width, height] = xhr.getResponseHeader("X-Output-Size").split("x").map(Number);
  const url = URL.createObjectURL(xhr.response);
  state.result = {seq, url, width, height, query: q};
  const stem = (input.file.name || "pasted").replace(/\.[^.]+$/, "");
  $("download").href = url;
  $("download").download = `${stem}_${q.get("model")}_${width}x${height}.${q.get("format")}`;
  if (input.width) {
    compare.show(input.url, url, width, height, "original (nearest)");
  } else { // no preview of the input (a TIFF, say): compare against the server's bicubic
    compare.show(url, url, width, height, "…");
    $("bicubic").checked = true;
    leftSide();
  }
  showTiming(xhr.getResponseHeader("Server-Timing"), roundTripMs);
  say(`Done: ${width}x${height} from ${input.width ? `${input.width}x${input.height}` : "the input"}`);
}

/** Server-Timing (`decode;dur=3.6, queue;dur=0.2, ...`) as a readable list, in ms. */
function showTiming(header, roundTripMs) {
  const rows = (header || "").split(",").map((part) => {
    const [name, ...params] = part.trim().split(";");
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    return [name, dur ? Number(dur.slice(4)) : NaN];
  }).filter(([name, ms]) => name && !Number.isNaN(ms));
  rows.push(["round trip", roundTripMs]);
  $("timing").replaceChildren(...rows.map(([name, ms]) => {
    const row = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = name;
    dd.textContent = `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
    row.append(dt, dd);
    return row;
  }));
}

/** The left side: the input with nearest-neighbour, or plain bicubic of it from the server. */
async function leftSide() {
  const {result, input} = state;
  if (!result) return;
  if (!$("bicubic").checked) {
    if (input.width) compare.setLeft(input.url, "original (nearest)", true);
    return;
  }
  if (!state.bicubic || state.bicubic.seq !== result.seq) {
    const q = new URLSearchParams({model: "bicubic", width: result.width, height: result.height, format: "png"});
    const body = new FormData();
    body.append("image", input.file, input.file.name || "pasted.png");
    const r = await fetch(`v1/upscale?${q}`, {method: "POST", body, headers: headers()});
    if (state.result !== result) return; // another upload came meanwhile
    if (!r.ok) {
      const e = await r.json().catch(() => ({}));
      say(`Bicubic failed: ${(e.error && e.error.message) || r.statusText}`);
      $("bicubic").checked = false;
      return;
    }
    state.bicubic = {seq: result.seq, url: URL.createObjectURL(await r.blob())};
  }
  if ($("bicubic").checked) compare.setLeft(state.bicubic.url, "bicubic (server)", false);
}

// ---- wiring ----
$("model").addEventListener("change", modelChanged);
$("format").addEventListener("change", () => { $("quality").disabled = $("format").value === "png"; });
$("image").addEventListener("change", () => setInput($("image").files[0]));
document.querySelectorAll("input[name=size-mode]").forEach((r) => r.addEventListener("change", () => {
  $("by-scale").hidden = sizeMode() !== "scale";
  $("by-size").hidden = sizeMode() === "scale";
  syncSize();
}));
$("width").addEventListener("input", () => syncSize("width"));
$("height").addEventListener("input", () => syncSize("height"));
$("keep-aspect").addEventListener("change", () => syncSize());
$("bicubic").addEventListener("change", leftSide);
$("loupe-on").addEventListener("change", () => { compare.loupeOn = $("loupe-on").checked; });
$("form").addEventListener("submit", upload);
$("apikey").value = sessionStorage.getItem(KEY_STORE) || "";
$("apikey").addEventListener("change", () => {
  sessionStorage.setItem(KEY_STORE, $("apikey").value);
  loadModels();
});

const drop = $("drop");
for (const t of ["dragenter", "dragover"]) {
  drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  setInput(e.dataTransfer.files[0]);
});
document.addEventListener("paste", (e) => {
  const file = [...(e.clipboardData ? e.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
  if (!file) return;
  e.preventDefault();
  setInput(file);
});

loadModels();
