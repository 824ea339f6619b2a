// The drawing page's logic: pointer drawing on a canvas, live predictions from POST /predict, and
// corrections sent to POST /feedback when the server collects them (lenet-serve --collect).
// No preprocessing happens here: the server prepares every image and sends back the 28x28 view.
"use strict";

const PAD = 280;  // drawing coordinates: a PAD x PAD square, whatever size the pad has on screen
const GUIDE = (PAD * 20) / 28;  // the dashed box: MNIST's digits fill 20 of its 28 pixels
const MIN_EXTENT = 0.15 * PAD;  // a mark this small is a dot, not a digit: not worth asking the server
const SMALL_EXTENT = 0.5 * GUIDE;  // digits smaller than half the box come out as blobs: say so
const THROTTLE_MS = 100;  // at most one request per 100 ms while the pen is down, then one at its end
const PHOTO_SIDE = 1024;  // drawings over a photo are sent at the photo's size up to this: the server reads no more
const UNSURE_BELOW = 0.5;  // for servers that do not say `unsure` yet: lenet.inference's threshold
const MAX_RETRY_S = 10;
const API = "/predict?preview=true";
const FEEDBACK = "/feedback";

const WORDS = {
  empty: "Draw one digit inside the dashed box.",
  tooSmall: "Too small to read.",
  noDigit: "No digit found.",
  bigger: "Draw bigger, to fill the dashed box.",
  oneDigit: "Draw one digit only.",
  clearer: "Try again, bigger and clearer.",
  photo: "Try a photo of one dark digit on light paper.",
  liveOff: "Live is off: press Predict to read your drawing.",
};
// Error codes of the API, in plain words; the server's own detail stays behind "Details".
const ERROR_WORDS = {
  bad_image: "This file can't be read as a picture. Try a PNG or JPEG photo.",
  image_too_large: "This picture is too large. Try a smaller photo.",
  request_too_large: "This picture is too large. Try a smaller photo.",
  bad_request: "The server did not understand the page. Reload the page and try again.",
  unsupported_media_type: "The server did not understand the page. Reload the page and try again.",
  request_timeout: "The picture took too long to arrive. Try again.",
  busy: "The server is busy. Trying again in a moment.",
  offline: "The server can't be reached. Is lenet-serve still running?",
};
// What a correction's answer says (the server's detail, for the rest, goes to the browser's console).
const FEEDBACK_WORDS = {
  corrections_full: "Not kept: the server has all the corrections it can hold.",
  busy: "Not kept: the server is busy. Press the button again in a moment.",
  bad_request: "Not kept: the server did not understand the page. Reload the page and try again.",
  offline: "Not kept: the server can't be reached.",
};

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ink = pad.getContext("2d");
const result = $("result");
const bars = $("bars");
const preview = $("preview");
const penInput = $("pen");
const liveInput = $("live");

// The drawing as data, so it can be drawn again at any resolution: on screen, or at a photo's own size.
const drawing = {
  strokes: [],  // {width, points: [{x, y}]} in pad units
  photo: null,  // {bitmap, x, y, width, height}: an uploaded photo, placed on the pad in pad units
  file: null,  // the uploaded file: sent as it is until drawn over
};
let stroke = null;  // the stroke under the pen
let penId = null;  // the pointer drawing it: a second finger does not draw

// Versions: drawn counts changes to the pad; an answer is for the version it was sent with.
let drawn = 0;
let wanted = 0;  // newest version to predict (live: every change; otherwise the Predict button)
let answered = 0;  // newest version sent and answered (not counting "busy")
let clearedAt = 0;  // answers for versions up to this one arrive too late: the pad was cleared or replaced
let inFlight = false;
let timer = null;
let lastSentAt = 0;
let notBefore = 0;  // after "busy": no request before this time (performance.now)
let answeredImage = null;  // the image whose answer is on show: what a correction sends

// ----------------------------------------------------------------------------- drawing

// Draws the photo and strokes where one pad unit is `scale` pixels and (left, top) is the image's corner.
function paint(context, scale, left = 0, top = 0, paper = true) {
  context.setTransform(1, 0, 0, 1, 0, 0);
  context.clearRect(0, 0, context.canvas.width, context.canvas.height);
  context.setTransform(scale, 0, 0, scale, -left * scale, -top * scale);
  if (paper) {
    context.fillStyle = "#fff";
    context.fillRect(0, 0, PAD, PAD);
  }
  const photo = drawing.photo;
  if (photo) context.drawImage(photo.bitmap, photo.x, photo.y, photo.width, photo.height);
  for (const each of drawing.strokes) drawStroke(context, each, 0);
}

// The pad on screen: transparent paper, so the size guide shows under the ink.
function repaint() {
  paint(ink, pad.width / PAD, 0, 0, false);
}

// Draws a stroke from its point `from` on (the pen's new points), or all of it.
function drawStroke(context, { width, points }, from) {
  context.fillStyle = context.strokeStyle = "#000";
  if (points.length === 1) {  // a tap leaves a dot
    context.beginPath();
    context.arc(points[0].x, points[0].y, width / 2, 0, 2 * Math.PI);
    context.fill();
    return;
  }
  context.lineWidth = width;
  context.lineCap = context.lineJoin = "round";
  context.beginPath();
  const start = Math.max(from - 1, 0);
  context.moveTo(points[start].x, points[start].y);
  for (const { x, y } of points.slice(start + 1)) context.lineTo(x, y);
  context.stroke();
}

// The canvas keeps the screen's resolution (sharp on phones); drawing coordinates stay in pad units.
function fitPad() {
  const side = Math.round(pad.getBoundingClientRect().width * devicePixelRatio);
  if (side > 0 && side !== pad.width) {
    pad.width = pad.height = side;
    repaint();
  }
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return { x: ((event.clientX - box.left) * PAD) / box.width, y: ((event.clientY - box.top) * PAD) / box.height };
}

// The bounding box of the strokes, pen width included, in pad units.
function inkBox() {
  let left = Infinity, top = Infinity, right = -Infinity, bottom = -Infinity;
  for (const { width, points } of drawing.strokes) {
    for (const { x, y } of points) {
      left = Math.min(left, x - width / 2);
      right = Math.max(right, x + width / 2);
      top = Math.min(top, y - width / 2);
      bottom = Math.max(bottom, y + width / 2);
    }
  }
  return { width: Math.max(right - left, 0), height: Math.max(bottom - top, 0) };
}

// Strokes side by side with a gap between them look like two digits (a 5's or 7's bar overlaps the rest).
function separateGroups() {
  const spans = drawing.strokes.map(({ width, points }) => {
    const xs = points.map((p) => p.x);
    return [Math.min(...xs) - width / 2, Math.max(...xs) + width / 2];
  }).sort((a, b) => a[0] - b[0]);
  let groups = 0, reach = -Infinity;
  for (const [left, right] of spans) {
    if (left > reach) groups += 1;
    reach = Math.max(reach, right);
  }
  return groups;
}

// A hint from the pen's path (not from pixels): what would make the drawing easier to read.
function drawingHint() {
  if (drawing.photo || !drawing.strokes.length) return "";
  if (separateGroups() > 1) return WORDS.oneDigit;
  const box = inkBox();
  return Math.max(box.width, box.height) < SMALL_EXTENT ? WORDS.bigger : "";
}

function sendable() {
  if (drawing.photo || drawing.file) return true;
  const box = inkBox();
  return Math.max(box.width, box.height) >= MIN_EXTENT;
}

// The image sent: the drawing at PAD pixels, the uploaded file as it is, or the photo at its own
// resolution with the strokes on it (the screen copy would lose a photo's thin, faint ink).
function composed() {
  const photo = drawing.photo;
  if (drawing.file && !drawing.strokes.length) return Promise.resolve(drawing.file);
  const canvas = document.createElement("canvas");
  if (photo) {
    const fit = Math.min(1, PHOTO_SIDE / Math.max(photo.bitmap.width, photo.bitmap.height));
    canvas.width = Math.round(photo.bitmap.width * fit);
    canvas.height = Math.round(photo.bitmap.height * fit);
    paint(canvas.getContext("2d"), canvas.width / photo.width, photo.x, photo.y, false);
  } else {
    canvas.width = canvas.height = PAD;
    paint(canvas.getContext("2d"), 1);
  }
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

// ----------------------------------------------------------------------------- showing answers

const percent = (p) => `${Math.round(100 * p)}%`;
const named = (digit) => (digit === 8 ? `an ${digit}` : `a ${digit}`);

function answerView(answer) {
  const { digit, confidence, probs } = answer;
  // Older servers send only digit, confidence and probs: the runner-up and "unsure" follow from them.
  const ranked = probs.map((p, d) => d).sort((a, b) => probs[b] - probs[a]);
  const runnerUp = answer.runner_up ?? ranked[1];
  const runnerUpConfidence = answer.runner_up_confidence ?? probs[runnerUp];
  const unsure = answer.unsure ?? confidence < UNSURE_BELOW;
  const hint = drawingHint();
  const view = { digit, probs, png: answer.preprocessed_png };
  if (unsure) {
    return {
      ...view, state: "unsure", runnerUp, alt: `or ${runnerUp}?`, hint: hint || WORDS.clearer,
      says: `Not sure: maybe ${named(digit)} (${percent(confidence)}), or ${named(runnerUp)} (${percent(runnerUpConfidence)}).`,
    };
  }
  return { ...view, state: "sure", says: `Looks like ${named(digit)} (${percent(confidence)} sure).`, hint };
}

function failureView(code, detail, status) {
  if (code === "no_digit") {
    return { state: "nodigit", says: WORDS.noDigit, hint: drawingHint() || (drawing.file ? WORDS.photo : WORDS.bigger), detail };
  }
  const says = ERROR_WORDS[code] || `The server could not answer (error ${status}). Try again.`;
  return { state: "error", says, detail: [code, detail].filter(Boolean).join(": ") };
}

function buildBars() {
  for (let digit = 0; digit < 10; digit++) {
    const row = document.createElement("li");
    row.dataset.digit = digit;
    const label = document.createElement("span");
    label.textContent = digit;
    const track = document.createElement("span");
    track.className = "track";
    const bar = document.createElement("span");
    bar.className = "bar";
    track.appendChild(bar);
    const value = document.createElement("span");
    value.className = "value";
    row.append(label, track, value);
    bars.appendChild(row);
  }
}

function show(view) {
  document.body.dataset.state = view.state;
  $("digit").textContent = view.digit ?? "?";
  $("alt").textContent = view.alt ?? "";
  $("says").textContent = view.says;
  $("hint").textContent = view.hint ?? "";
  $("detail").textContent = view.detail ?? "";
  $("details").classList.toggle("unused", !view.detail);
  for (const row of bars.children) {
    const probability = view.probs ? view.probs[row.dataset.digit] : 0;
    row.dataset.prob = probability;
    row.classList.toggle("top", view.probs !== undefined && Number(row.dataset.digit) === view.digit);
    row.classList.toggle("second", Number(row.dataset.digit) === view.runnerUp);
    row.querySelector(".bar").style.width = `${(100 * probability).toFixed(1)}%`;
    row.querySelector(".value").textContent = view.probs ? `${(100 * probability).toFixed(1)}%` : "";
  }
  if (view.png) preview.src = `data:image/png;base64,${view.png}`;
  else preview.removeAttribute("src");
  offerCorrection(view.image ?? null);
}

// An answer for the drawing as it stands once the pen is up is final: announced and marked shown.
function present(view, version) {
  const final = !stroke && version === drawn;
  // While the pen is down only predictions are shown: a passing "no digit" or error waits (no flicker).
  if (final || view.probs) show(view);
  if (final) settle(version);
}

function settle(version) {
  document.body.dataset.shown = version;
  result.setAttribute("aria-busy", "false");
}

// ----------------------------------------------------------------------------- corrections

// The "Wrong? It was:" buttons under an answer (their place is kept, empty, when there is none).
function offerCorrection(image) {
  answeredImage = image;
  $("correct").classList.toggle("unused", !image);
  $("correct-says").textContent = "";
  for (const button of $("correct").querySelectorAll("button")) button.disabled = false;
}

// Sends the image of the answer on show with the right label (and the writer's tag, if any).
async function sendCorrection(label) {
  const image = answeredImage;
  const buttons = $("correct").querySelectorAll("button");
  for (const button of buttons) button.disabled = true;  // one correction per answer
  const form = new FormData();
  form.append("file", image, image.name || "digit.png");
  form.append("label", label);
  const writer = $("writer").value.trim();
  if (writer) form.append("writer", writer);
  let says, kept = false;
  try {
    const response = await fetch(FEEDBACK, { method: "POST", body: form });
    const answer = await response.json().catch(() => ({}));
    kept = response.ok;
    if (kept) says = `Thank you: kept as ${label === "not_a_digit" ? "not a digit" : named(Number(label))}.`;
    else {
      says = FEEDBACK_WORDS[answer.error] || `Not kept (error ${response.status}). Try again.`;
      console.warn("POST /feedback:", response.status, answer.detail);
    }
  } catch (error) {
    says = FEEDBACK_WORDS.offline;
  }
  if (answeredImage !== image) return;  // a new answer came meanwhile: its buttons are fresh
  $("correct-says").textContent = says;
  if (!kept) for (const button of buttons) button.disabled = false;
}

// The page offers corrections only when /healthz says the server keeps them.
async function readCollecting() {
  let collecting = false;
  try {
    collecting = Boolean((await (await fetch("/healthz")).json()).collecting);
  } catch (error) {
    // An older server, or none: no corrections offered.
  }
  $("correct").hidden = $("kept").hidden = !collecting;
  document.body.dataset.collecting = collecting ? "on" : "off";
}

// ----------------------------------------------------------------------------- requests

function schedule() {
  if (inFlight || timer || answered >= wanted || !sendable()) return;
  const now = performance.now();
  const wait = Math.max(stroke ? lastSentAt + THROTTLE_MS - now : 0, notBefore - now);
  if (wait > 0) {
    timer = setTimeout(() => {
      timer = null;
      schedule();
    }, wait);
  } else {
    send();
  }
}

// Sends the newest drawing. Its answer is shown even if the pen has moved on since (live), unless
// the pad was cleared or replaced; then the newest drawing is sent if it still needs an answer.
async function send() {
  inFlight = true;
  lastSentAt = performance.now();
  const version = drawn;
  let view, retryAfter = 0;
  try {
    const image = await composed();
    const form = new FormData();
    form.append("file", image, image.name || "digit.png");
    const response = await fetch(API, { method: "POST", body: form });
    const answer = await response.json().catch(() => ({}));
    if (response.ok) view = { ...answerView(answer), image };
    else view = failureView(answer.error, answer.detail, response.status);
    if (response.status === 503) retryAfter = Math.min(Number(response.headers.get("Retry-After")) || 1, MAX_RETRY_S);
  } catch (error) {
    view = failureView("offline", error.message);
  }
  inFlight = false;
  if (retryAfter) notBefore = performance.now() + 1000 * retryAfter;
  else answered = Math.max(answered, version);  // a late answer for a cleared pad must not undo the clear
  if (version > clearedAt) present(view, version);
  schedule();
}

function changed() {
  drawn += 1;
  document.body.dataset.drawn = drawn;
  if (liveInput.checked) wanted = drawn;
  schedule();
}

// Pen up (or Predict): a final answer, or at once the reason none is asked for.
function finish() {
  if (!sendable()) {
    show(drawing.strokes.length ? { state: "nodigit", says: WORDS.tooSmall, hint: WORDS.bigger } : { state: "empty", says: WORDS.empty });
    settle(drawn);
  } else if (wanted < drawn) {
    $("hint").textContent = WORDS.liveOff;
    result.setAttribute("aria-busy", "false");
  } else {
    clearTimeout(timer);  // the stroke's last request goes now, not at the next throttle tick
    timer = null;
    schedule();
  }
}

// ----------------------------------------------------------------------------- events

pad.addEventListener("pointerdown", (event) => {
  if (!event.isPrimary || event.button > 0) return;
  pad.setPointerCapture(event.pointerId);
  penId = event.pointerId;
  if (!drawing.photo) drawing.file = null;  // a photo the browser cannot show is replaced by the drawing
  stroke = { width: Number(penInput.value), points: [point(event)] };
  drawing.strokes.push(stroke);
  drawStroke(ink, stroke, 0);
  lastSentAt = performance.now();  // the first request waits one throttle period: a dot is not worth one
  result.setAttribute("aria-busy", "true");  // screen readers wait for the answer at the stroke's end
  changed();
});

pad.addEventListener("pointermove", (event) => {
  if (!stroke || event.pointerId !== penId) return;
  const from = stroke.points.length;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const each of events.length ? events : [event]) stroke.points.push(point(each));
  drawStroke(ink, stroke, from);
  changed();
});

function endStroke(event) {
  if (!stroke || event.pointerId !== penId) return;
  stroke = null;
  drawn += 1;  // the stroke's end is sent as its own request, after the throttled ones
  document.body.dataset.drawn = drawn;
  if (liveInput.checked) wanted = drawn;
  finish();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function replaceDrawing(photo, file) {
  clearTimeout(timer);
  timer = null;
  stroke = null;
  Object.assign(drawing, { strokes: [], photo, file });
  document.body.classList.toggle("has-photo", Boolean(photo));
  repaint();
  clearedAt = drawn;
  drawn += 1;
  document.body.dataset.drawn = drawn;
}

$("clear").addEventListener("click", () => {
  replaceDrawing(null, null);
  answered = wanted = clearedAt = drawn;
  show({ state: "empty", says: WORDS.empty });
  settle(drawn);
});

$("predict").addEventListener("click", () => {
  wanted = drawn;
  finish();
});

liveInput.addEventListener("change", () => {
  $("predict").hidden = liveInput.checked;
  if (liveInput.checked && drawing.strokes.length) $("predict").click();
});

penInput.addEventListener("input", () => {
  $("pen-value").textContent = penInput.value;
});

// An uploaded file is predicted as it is, and shown on the pad to draw over.
$("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  let photo = null;
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(PAD / bitmap.width, PAD / bitmap.height);
    const width = bitmap.width * scale, height = bitmap.height * scale;
    photo = { bitmap, x: (PAD - width) / 2, y: (PAD - height) / 2, width, height };
  } catch (error) {
    // The browser cannot show it; the server may still read it (e.g. TIFF), or explain why not.
  }
  event.target.value = "";  // choosing the same file again still counts as a change
  replaceDrawing(photo, file);
  wanted = drawn;  // an upload asks for its answer, live or not
  finish();
});

$("correct").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-label]");
  if (button && answeredImage) sendCorrection(button.dataset.label);
});

buildBars();
new ResizeObserver(fitPad).observe(pad);
fitPad();
readCollecting();
