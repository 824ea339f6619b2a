// The drawing page's logic: pointer drawing on a canvas, live predictions from POST /predict.
// No preprocessing happens here: the server prepares every image and sends back the 28x28 view.
"use strict";

const pad = document.getElementById("pad");
const ink = pad.getContext("2d");
const digitText = document.getElementById("digit");
const confidenceText = document.getElementById("confidence");
const statusText = document.getElementById("status");
const bars = document.getElementById("bars");
const preview = document.getElementById("preview");
const STROKE_WIDTH = 24;  // MNIST strokes are about 2.6 px in a 20 px digit: 24 px suits a 200 px digit

// drawn: version of the pad's content; shown: version whose prediction is on screen (the browser test waits for equality).
let drawn = 0;
let inFlight = false;
let hasInk = false;  // an empty pad is never sent
let clearedAt = 0;  // answers for drawings up to this version arrive too late: the pad was cleared
let lastPoint = null;

function clearPad() {
  hasInk = false;
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
}

function buildBars() {
  for (let digit = 0; digit < 10; digit++) {
    const row = document.createElement("li");
    row.dataset.digit = digit;
    row.innerHTML = `<span>${digit}</span><span><span class="bar" style="display:block;width:0"></span></span><span class="value"></span>`;
    bars.appendChild(row);
  }
}

function showPrediction(result) {
  digitText.textContent = result.digit;
  confidenceText.textContent = `${(100 * result.confidence).toFixed(1)}%`;
  result.probs.forEach((probability, digit) => {
    const row = bars.children[digit];
    row.dataset.prob = probability;
    row.classList.toggle("top", digit === result.digit);
    row.querySelector(".bar").style.width = `${(100 * probability).toFixed(1)}%`;
    row.querySelector(".value").textContent = `${(100 * probability).toFixed(1)}%`;
  });
  preview.src = `data:image/png;base64,${result.preprocessed_png}`;
  setStatus("");
}

function resetPrediction(message, isError = false) {
  digitText.textContent = "?";
  confidenceText.textContent = "";
  for (const row of bars.children) {
    row.dataset.prob = 0;
    row.classList.remove("top");
    row.querySelector(".bar").style.width = "0";
    row.querySelector(".value").textContent = "";
  }
  preview.removeAttribute("src");
  setStatus(message, isError);
}

function setStatus(message, isError = false) {
  statusText.textContent = message;
  statusText.classList.toggle("error", isError);
}

// Sends one image. An answer for an older drawing is still shown, then the newest drawing is sent;
// an answer for a drawing since cleared is dropped.
async function predict(blob, version) {
  inFlight = true;
  const form = new FormData();
  form.append("file", blob, "digit.png");
  let show = () => {};
  try {
    const response = await fetch("/predict", { method: "POST", body: form });
    const result = await response.json();
    if (response.ok) {
      show = () => showPrediction(result);
    } else if (result.error === "no_digit") {
      show = () => resetPrediction("Draw a digit with the mouse, a pen or a finger.");
    } else {
      show = () => resetPrediction(result.detail || `The server answered ${response.status}.`, true);
    }
  } catch (error) {
    show = () => resetPrediction(`The server cannot be reached (${error.message}).`, true);
  }
  inFlight = false;
  if (version > clearedAt) {
    show();
    document.body.dataset.shown = version;
  }
  if (version < drawn) predictPad();
}

function predictPad() {
  if (inFlight || !hasInk) return;  // the answer's handler sends the newest drawing
  inFlight = true;  // now, not when the blob is ready: one request at a time
  const version = drawn;
  pad.toBlob((blob) => predict(blob, version), "image/png");
}

function changed() {
  drawn += 1;
  document.body.dataset.drawn = drawn;
  predictPad();
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * (pad.width / box.width), y: (event.clientY - box.top) * (pad.height / box.height) };
}

pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  hasInk = true;
  lastPoint = point(event);
  ink.beginPath();  // a dot, so a tap leaves a mark too
  ink.arc(lastPoint.x, lastPoint.y, STROKE_WIDTH / 2, 0, 2 * Math.PI);
  ink.fillStyle = "#000";
  ink.fill();
});

pad.addEventListener("pointermove", (event) => {
  if (!lastPoint) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  ink.strokeStyle = "#000";
  ink.lineWidth = STROKE_WIDTH;
  ink.lineCap = "round";
  ink.lineJoin = "round";
  ink.beginPath();
  ink.moveTo(lastPoint.x, lastPoint.y);
  for (const each of events.length ? events : [event]) {
    lastPoint = point(each);
    ink.lineTo(lastPoint.x, lastPoint.y);
  }
  ink.stroke();
  changed();
});

function endStroke() {
  if (!lastPoint) return;
  lastPoint = null;
  changed();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

document.getElementById("clear").addEventListener("click", () => {
  clearPad();
  drawn += 1;
  clearedAt = drawn;
  document.body.dataset.drawn = drawn;
  document.body.dataset.shown = drawn;
  resetPrediction("Draw a digit with the mouse, a pen or a finger.");
});

// An uploaded file is predicted as it is (not as redrawn on the pad) and shown on the pad.
document.getElementById("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  clearPad();
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    const width = bitmap.width * scale, height = bitmap.height * scale;
    ink.drawImage(bitmap, (pad.width - width) / 2, (pad.height - height) / 2, width, height);
  } catch (error) {
    // The browser cannot show it; the server may still read it (e.g. TIFF), or explain why not.
  }
  drawn += 1;
  document.body.dataset.drawn = drawn;
  await predict(file, drawn);
  event.target.value = "";
});

buildBars();
clearPad();
