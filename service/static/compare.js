// The compare view: the original (left) and the result (right) stacked under one split,
// with one zoom and pan for both so that both sides always show the same region.
// Images are laid out at the output's size in CSS pixels; zoom z shows one output pixel
// as z CSS pixels. Zoomed in, both sides draw with nearest-neighbour (honest pixels).

const MIN_ZOOM = 0.02;
const MAX_ZOOM = 32;
const LOUPE_PX = 30; // output pixels across each half of the loupe
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

export class CompareView {
  constructor(root) {
    this.root = root;
    this.viewport = root.querySelector("#viewport");
    this.left = root.querySelector("#left");
    this.right = root.querySelector("#right");
    this.rightLayer = root.querySelector("#layer-right");
    this.divider = root.querySelector("#divider");
    this.loupe = root.querySelector("#loupe");
    this.zoomLabel = root.querySelector("#zoom-level");
    this.size = {width: 0, height: 0};
    this.leftNearest = true; // the left image is the input, stretched: always nearest
    this.view = {z: 1, tx: 0, ty: 0, fit: true};
    this.split = 0.5;
    this.loupeOn = true;
    this._wire();
  }

  /** Show a new pair: `right` is the result (width x height), `left` any image stretched to that size. */
  show(left, right, width, height, leftLabel) {
    this.size = {width, height};
    for (const img of [this.left, this.right]) {
      img.style.width = `${width}px`;
      img.style.height = `${height}px`;
    }
    this.right.src = right;
    this.setLeft(left, leftLabel, true);
    this.root.hidden = false;
    this.setSplit(0.5);
    this.zoomTo("fit");
  }

  setLeft(src, label, nearest) {
    this.left.src = src;
    this.leftNearest = nearest;
    this.root.querySelector("#left-tag").textContent = label;
    this._apply();
  }

  clear() {
    this.root.hidden = true;
    this.left.removeAttribute("src");
    this.right.removeAttribute("src");
    this.loupe.hidden = true;
  }

  setSplit(fraction) {
    this.split = clamp(fraction, 0, 1);
    const pct = Math.round(this.split * 1000) / 10;
    this.divider.style.left = `${pct}%`;
    this.divider.setAttribute("aria-valuenow", String(Math.round(pct)));
    this.divider.setAttribute("aria-valuetext", `${Math.round(pct)} % original`);
    this.rightLayer.style.clipPath = `inset(0 0 0 ${pct}%)`;
  }

  /** "fit", or a zoom factor, about the viewport's centre (or `at`, a point in it). */
  zoomTo(z, at) {
    const box = this.viewport.getBoundingClientRect();
    const {width, height} = this.size;
    if (z === "fit") {
      const fz = Math.min(box.width / width, box.height / height) || 1;
      this.view = {z: fz, tx: (box.width - width * fz) / 2, ty: (box.height - height * fz) / 2, fit: true};
    } else {
      const nz = clamp(z, MIN_ZOOM, MAX_ZOOM);
      const [px, py] = at || [box.width / 2, box.height / 2];
      const {z: oz, tx, ty} = this.view;
      this.view = {z: nz, tx: px - ((px - tx) * nz) / oz, ty: py - ((py - ty) * nz) / oz, fit: false};
    }
    this._apply();
  }

  pan(dx, dy) {
    this.view = {...this.view, tx: this.view.tx + dx, ty: this.view.ty + dy, fit: false};
    this._apply();
  }

  _apply() {
    const {z, tx, ty} = this.view;
    const transform = `translate(${tx}px, ${ty}px) scale(${z})`;
    this.left.style.transform = transform;
    this.right.style.transform = transform;
    this.right.classList.toggle("pixelated", z >= 1);
    this.left.classList.toggle("pixelated", this.leftNearest || z >= 1);
    this.zoomLabel.textContent = `${Math.round(z * 100)} %`;
    this.viewport.dataset.zoom = String(z);
  }

  _wire() {
    const vp = this.viewport;
    this.root.querySelectorAll("[data-zoom]").forEach((b) =>
      b.addEventListener("click", () => this.zoomTo(b.dataset.zoom === "fit" ? "fit" : Number(b.dataset.zoom))),
    );
    vp.addEventListener("wheel", (e) => {
      e.preventDefault();
      const box = vp.getBoundingClientRect();
      this.zoomTo(this.view.z * Math.exp(-e.deltaY * 0.0015), [e.clientX - box.left, e.clientY - box.top]);
    }, {passive: false});
    let drag = null; // {kind: "split" | "pan", x, y}
    vp.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      drag = {kind: e.target.closest("#divider") ? "split" : "pan", x: e.clientX, y: e.clientY};
      vp.setPointerCapture(e.pointerId);
      (drag.kind === "split" ? this.divider : vp).focus({preventScroll: true});
      e.preventDefault();
    });
    vp.addEventListener("pointermove", (e) => {
      if (drag && drag.kind === "split") {
        const box = vp.getBoundingClientRect();
        this.setSplit((e.clientX - box.left) / box.width);
      } else if (drag) {
        this.pan(e.clientX - drag.x, e.clientY - drag.y);
        drag.x = e.clientX;
        drag.y = e.clientY;
      }
      this._drawLoupe(e);
    });
    const end = () => { drag = null; };
    vp.addEventListener("pointerup", end);
    vp.addEventListener("pointercancel", end);
    vp.addEventListener("pointerleave", () => { this.loupe.hidden = true; });
    this.divider.addEventListener("keydown", (e) => {
      const step = e.shiftKey ? 0.1 : 0.02;
      const moves = {ArrowLeft: -step, ArrowDown: -step, ArrowRight: step, ArrowUp: step, PageDown: -0.1, PageUp: 0.1};
      if (e.key in moves) this.setSplit(this.split + moves[e.key]);
      else if (e.key === "Home") this.setSplit(0);
      else if (e.key === "End") this.setSplit(1);
      else return;
      e.preventDefault();
      e.stopPropagation();
    });
    vp.addEventListener("keydown", (e) => {
      const pans = {ArrowLeft: [40, 0], ArrowRight: [-40, 0], ArrowUp: [0, 40], ArrowDown: [0, -40]};
      if (e.key === "+" || e.key === "=") this.zoomTo(this.view.z * 2);
      else if (e.key === "-") this.zoomTo(this.view.z / 2);
      else if (e.key === "0") this.zoomTo("fit");
      else if (e.key in pans) this.pan(...pans[e.key]);
      else return;
      e.preventDefault();
    });
    window.addEventListener("resize", () => { if (!this.root.hidden && this.view.fit) this.zoomTo("fit"); });
  }

  /** The same few output pixels under the pointer from both sides, enlarged, side by side. */
  _drawLoupe(e) {
    const box = this.viewport.getBoundingClientRect();
    const px = e.clientX - box.left;
    const py = e.clientY - box.top;
    const {z, tx, ty} = this.view;
    const ix = (px - tx) / z;
    const iy = (py - ty) / z;
    const {width, height} = this.size;
    const inside = ix >= 0 && iy >= 0 && ix < width && iy < height;
    if (!this.loupeOn || !inside || !this.right.complete || !this.left.complete) {
      this.loupe.hidden = true;
      return;
    }
    const ctx = this.loupe.getContext("2d");
    const half = this.loupe.width / 2;
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, this.loupe.width, this.loupe.height);
    const x0 = Math.floor(ix - LOUPE_PX / 2);
    const y0 = Math.floor(iy - LOUPE_PX / 2);
    for (const [img, dx] of [[this.left, 0], [this.right, half]]) {
      const sx = img.naturalWidth / width; // the left image may be the smaller input
      const sy = img.naturalHeight / height;
      ctx.drawImage(img, x0 * sx, y0 * sy, LOUPE_PX * sx, LOUPE_PX * sy, dx, 0, half, this.loupe.height);
    }
    ctx.strokeStyle = "#fff";
    ctx.beginPath();
    ctx.moveTo(half, 0);
    ctx.lineTo(half, this.loupe.height);
    ctx.stroke();
    // Beside the pointer, on the side with more room.
    const lx = px + 24 + this.loupe.width > box.width ? px - 24 - this.loupe.width : px + 24;
    this.loupe.style.left = `${Math.max(0, lx)}px`;
    this.loupe.style.top = `${clamp(py - this.loupe.height / 2, 0, box.height - this.loupe.height)}px`;
    this.loupe.hidden = false;
  }
}
