// cnntool microscope: the embedding map. The page inlines its data as JSON (#map-data), in columns:
//   x, y           coordinates in the unit square (y grows downwards), one per point
//   atlas, cell    where a point's thumbnail is: cell c of atlases[atlas], row-major
//   label, prediction  indices into `names` (null: unknown); path: shown on hover;
//   href           what a click opens (null: nothing)
//   modes          colourings: {title, colors: [css], of: [colour index per point], legend}
//   order          the drawing order (a shuffle, so that no class always lies on top)
// Dots are written straight into an ImageData, which stays fast at 100k points; when few points
// are in view their thumbnails are drawn instead. A grid over the unit square finds the point
// under the pointer without visiting every point.
(function () {
  "use strict";

  const data = JSON.parse(document.getElementById("map-data").textContent);
  const canvas = document.getElementById("map");
  const context = canvas.getContext("2d");
  const tip = document.getElementById("tip");
  const tipCanvas = document.getElementById("tip-thumb");
  const tipContext = tipCanvas.getContext("2d");
  const tipText = tip.querySelector(".tip-text");
  const colourBy = document.getElementById("colour-by");
  const legend = document.getElementById("legend");

  const count = data.count;
  const xs = Float32Array.from(data.x);
  const ys = Float32Array.from(data.y);
  const atlasOf = Int32Array.from(data.atlas);
  const cellOf = Int32Array.from(data.cell);
  const order = Int32Array.from(data.order);
  const atlases = data.atlases.map((entry) => {
    const image = new Image();
    image.addEventListener("load", () => schedule());
    image.src = entry.image;
    return { image, thumb: entry.thumb, columns: entry.columns };
  });

  const BACKGROUND = 0xff16110f;  // #0f1116 as a little-endian RGBA word
  const THUMBNAILS_BELOW = 700;   // fewer points in view than this: draw thumbnails
  const MIN_ZOOM = 0.5, MAX_ZOOM = 5000;

  let colours = new Uint32Array(count);  // each point's colour, as a pixel word
  let strokes = [];                       // each colour index's CSS colour
  let strokeOf = new Uint16Array(0);
  let ratio = 1, width = 0, height = 0;   // canvas size in CSS pixels
  let frame = null, pixels = null;
  let base = 1, zoom = 1, panX = 0, panY = 0;  // screen = world * base * zoom + pan
  let thumbSize = 0;                      // CSS px of the drawn thumbnails; 0: dots
  let hovered = -1;
  let pending = false;

  // --- the grid index: points bucketed by cell of a GRID × GRID raster of the unit square ----
  const GRID = 256;
  const bucket = (v) => Math.min(GRID - 1, Math.max(0, Math.floor(v * GRID)));
  const cellStart = new Int32Array(GRID * GRID + 1);
  const cellPoints = new Int32Array(count);
  (function buildGrid() {
    const key = new Int32Array(count);
    for (let i = 0; i < count; i++) {
      key[i] = bucket(ys[i]) * GRID + bucket(xs[i]);
      cellStart[key[i] + 1] += 1;
    }
    for (let c = 0; c < GRID * GRID; c++) cellStart[c + 1] += cellStart[c];
    const next = cellStart.slice(0, GRID * GRID);
    for (let i = 0; i < count; i++) cellPoints[next[key[i]]++] = i;
  })();

  // The point nearest to (x, y) in CSS px within `radius` px, or -1.
  function pointAt(x, y, radius) {
    const scale = base * zoom;
    const wx = (x - panX) / scale, wy = (y - panY) / scale, wr = radius / scale;
    let best = -1, bestDistance = wr * wr;
    for (let row = bucket(wy - wr); row <= bucket(wy + wr); row++) {
      for (let col = bucket(wx - wr); col <= bucket(wx + wr); col++) {
        const c = row * GRID + col;
        for (let j = cellStart[c]; j < cellStart[c + 1]; j++) {
          const i = cellPoints[j];
          const dx = xs[i] - wx, dy = ys[i] - wy, d = dx * dx + dy * dy;
          if (d <= bestDistance) { best = i; bestDistance = d; }
        }
      }
    }
    return best;
  }

  // --- colours -----------------------------------------------------------------------------
  function pixelWord(css) {
    const v = parseInt(css.slice(1), 16);
    return (0xff000000 | ((v & 0xff) << 16) | (v & 0xff00) | ((v >> 16) & 0xff)) >>> 0;
  }

  function setMode(index) {
    const mode = data.modes[index];
    const table = mode.colors.map(pixelWord);
    strokes = mode.colors;
    strokeOf = Uint16Array.from(mode.of);
    for (let i = 0; i < count; i++) colours[i] = table[mode.of[i]];
    legend.replaceChildren(...mode.legend.map((entry) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = entry.color || "transparent";
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = entry.name;
      const tally = document.createElement("span");
      tally.className = "count";
      tally.textContent = entry.count.toLocaleString();
      item.append(swatch, name, tally);
      return item;
    }));
    legend.hidden = mode.legend.length === 0;
    schedule();
  }

  // --- drawing -------------------------------------------------------------------------------
  function dotSize() {
    const size = count > 50000 ? 1.6 : count > 5000 ? 2.6 : 3.8;
    return Math.max(1, Math.round(size * Math.sqrt(Math.min(zoom, 9)) * ratio));
  }

  function draw() {
    pending = false;
    const w = canvas.width, h = canvas.height;
    const scale = base * zoom * ratio, offsetX = panX * ratio, offsetY = panY * ratio;
    const size = dotSize(), half = size >> 1;
    pixels.fill(BACKGROUND);
    let visible = 0;
    for (let n = 0; n < count; n++) {
      const i = order[n];
      const left = Math.round(xs[i] * scale + offsetX) - half;
      const top = Math.round(ys[i] * scale + offsetY) - half;
      if (left < 0 || top < 0 || left + size > w || top + size > h) continue;
      visible += 1;
      const colour = colours[i];
      for (let row = top * w + left, dy = 0; dy < size; dy++, row += w) {
        for (let dx = 0; dx < size; dx++) pixels[row + dx] = colour;
      }
    }
    context.putImageData(frame, 0, 0);
    const ready = atlases.length > 0 && atlases.every((a) => a.image.complete && a.image.naturalWidth > 0);
    thumbSize = ready && visible > 0 && visible < THUMBNAILS_BELOW
      ? Math.max(16, Math.min(112, Math.sqrt((width * height) / visible) * 0.75)) : 0;
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    if (thumbSize) drawThumbnails();
    if (hovered >= 0) drawRing(hovered);
    context.setTransform(1, 0, 0, 1, 0, 0);
    return visible;
  }

  function drawThumbnails() {
    const scale = base * zoom, s = thumbSize, margin = s / 2;
    context.lineWidth = 2;
    for (let n = 0; n < count; n++) {
      const i = order[n];
      const x = xs[i] * scale + panX, y = ys[i] * scale + panY;
      if (x < -margin || y < -margin || x > width + margin || y > height + margin) continue;
      drawThumbnail(context, i, x - s / 2, y - s / 2, s);
      context.strokeStyle = strokes[strokeOf[i]];
      context.strokeRect(x - s / 2, y - s / 2, s, s);
    }
  }

  function drawThumbnail(target, i, x, y, size) {
    const atlas = atlases[atlasOf[i]];
    const cell = cellOf[i], t = atlas.thumb;
    target.drawImage(atlas.image, (cell % atlas.columns) * t, Math.floor(cell / atlas.columns) * t, t, t,
      x, y, size, size);
  }

  function drawRing(i) {
    const scale = base * zoom;
    const x = xs[i] * scale + panX, y = ys[i] * scale + panY;
    context.lineWidth = 2;
    context.strokeStyle = "#ffffff";
    if (thumbSize) {
      context.strokeRect(x - thumbSize / 2 - 2, y - thumbSize / 2 - 2, thumbSize + 4, thumbSize + 4);
    } else {
      context.beginPath();
      context.arc(x, y, 7, 0, 2 * Math.PI);
      context.stroke();
    }
  }

  function schedule() {
    if (!pending && frame) {
      pending = true;
      window.requestAnimationFrame(draw);
    }
  }

  // --- view ----------------------------------------------------------------------------------
  function resize() {
    const box = canvas.getBoundingClientRect();
    if (!box.width || !box.height) return;
    const first = width === 0;
    ratio = window.devicePixelRatio || 1;
    width = box.width;
    height = box.height;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    frame = context.createImageData(canvas.width, canvas.height);
    pixels = new Uint32Array(frame.data.buffer);
    base = Math.min(width, height) * 0.94;
    if (first) reset(); else schedule();
  }

  function reset() {
    zoom = 1;
    panX = (width - base) / 2;
    panY = (height - base) / 2;
    schedule();
  }

  function zoomAt(x, y, factor) {
    const target = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, zoom * factor));
    const f = target / zoom;
    panX = x - (x - panX) * f;
    panY = y - (y - panY) * f;
    zoom = target;
    hideTip();
    schedule();
  }

  // --- hover and click -----------------------------------------------------------------------
  function local(event) {
    const box = canvas.getBoundingClientRect();
    return [event.clientX - box.left, event.clientY - box.top];
  }

  function hit(x, y) {
    return pointAt(x, y, thumbSize ? thumbSize / 2 : Math.max(6, dotSize() / ratio));
  }

  function describe(i) {
    const lines = [];
    const name = (c) => (c === null || c === undefined ? null : data.names[c] ?? String(c));
    const label = name(data.label[i]), predicted = name(data.prediction[i]);
    const title = document.createElement("b");
    title.textContent = label ?? predicted ?? `image ${i}`;
    lines.push(title);
    if (predicted !== null && label !== null) {
      const verdict = document.createElement("span");
      const right = data.label[i] === data.prediction[i];
      verdict.className = right ? "right" : "wrong";
      verdict.textContent = right ? `predicted ${predicted} ✓` : `predicted ${predicted} ✗`;
      lines.push(verdict);
    } else if (predicted !== null) {
      const guess = document.createElement("span");
      guess.textContent = `predicted ${predicted}`;
      lines.push(guess);
    }
    const path = document.createElement("span");
    path.className = "path";
    path.textContent = data.path[i];
    lines.push(path);
    return lines;
  }

  function showTip(i, x, y) {
    const atlas = atlases[atlasOf[i]];
    tipContext.imageSmoothingEnabled = atlas.thumb >= 64;
    tipContext.fillStyle = "#000";
    tipContext.fillRect(0, 0, tipCanvas.width, tipCanvas.height);
    if (atlas.image.complete) drawThumbnail(tipContext, i, 0, 0, tipCanvas.width);
    tipText.replaceChildren(...describe(i));
    tip.hidden = false;
    const tipWidth = tip.offsetWidth, tipHeight = tip.offsetHeight;
    const left = x + 18 + tipWidth > width ? x - 18 - tipWidth : x + 18;
    tip.style.left = `${Math.max(4, Math.min(width - tipWidth - 4, left))}px`;  // inside the map
    tip.style.top = `${Math.max(4, Math.min(height - tipHeight - 4, y - tipHeight / 2))}px`;
  }

  function hideTip() {
    tip.hidden = true;
    if (hovered >= 0) { hovered = -1; schedule(); }
  }

  let drag = null;
  canvas.addEventListener("pointerdown", (event) => {
    drag = { x: event.clientX, y: event.clientY, panX, panY, moved: false };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (drag) {
      const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
      if (drag.moved || Math.abs(dx) + Math.abs(dy) > 3) {
        drag.moved = true;
        panX = drag.panX + dx;
        panY = drag.panY + dy;
        canvas.classList.add("dragging");
        hideTip();
        schedule();
        return;
      }
    }
    const [x, y] = local(event);
    const i = hit(x, y);
    if (i < 0) { hideTip(); return; }
    if (i !== hovered) { hovered = i; schedule(); }
    showTip(i, x, y);
  });
  canvas.addEventListener("pointerup", (event) => {
    const clicked = drag && !drag.moved;
    drag = null;
    canvas.classList.remove("dragging");
    if (!clicked) return;
    const [x, y] = local(event);
    const i = hit(x, y);
    // a touch has no hover: the first tap on a point shows its tip, a second tap opens it
    if (event.pointerType !== "mouse" && i !== hovered) {
      if (i < 0) { hideTip(); return; }
      hovered = i;
      schedule();
      showTip(i, x, y);
      return;
    }
    if (i >= 0 && data.href && data.href[i]) window.open(data.href[i], "_blank", "noopener");
  });
  canvas.addEventListener("pointerleave", (event) => { if (!drag && event.pointerType === "mouse") hideTip(); });
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const [x, y] = local(event);
    zoomAt(x, y, Math.exp(-event.deltaY * 0.0015));
  }, { passive: false });
  canvas.addEventListener("dblclick", (event) => {
    const [x, y] = local(event);
    zoomAt(x, y, 2);
  });
  canvas.addEventListener("keydown", (event) => {
    const step = Math.min(width, height) * 0.1;
    const actions = {
      "+": () => zoomAt(width / 2, height / 2, 1.5), "=": () => zoomAt(width / 2, height / 2, 1.5),
      "-": () => zoomAt(width / 2, height / 2, 1 / 1.5), "0": reset,
      ArrowLeft: () => { panX += step; }, ArrowRight: () => { panX -= step; },
      ArrowUp: () => { panY += step; }, ArrowDown: () => { panY -= step; },
    };
    const action = actions[event.key];
    if (!action) return;
    event.preventDefault();
    action();
    schedule();
  });
  document.getElementById("zoom-in").addEventListener("click", () => zoomAt(width / 2, height / 2, 1.5));
  document.getElementById("zoom-out").addEventListener("click", () => zoomAt(width / 2, height / 2, 1 / 1.5));
  document.getElementById("zoom-reset").addEventListener("click", reset);
  colourBy.addEventListener("change", () => setMode(Number(colourBy.value)));

  new ResizeObserver(resize).observe(canvas);
  resize();
  setMode(0);

  // For scripts and tests: draw a frame now; whether the atlases have loaded; where point i is
  // on the screen (client px).
  window.cnntoolMap = {
    count,
    draw,
    zoomAt,
    reset,
    ready: () => atlases.every((a) => a.image.complete && a.image.naturalWidth > 0),
    screenPosition(i) {
      const box = canvas.getBoundingClientRect();
      return [box.left + xs[i] * base * zoom + panX, box.top + ys[i] * base * zoom + panY];
    },
  };
})();
