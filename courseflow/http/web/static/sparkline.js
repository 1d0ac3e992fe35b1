// A sparkline: an inline SVG line of the last few minutes' values, its figures said in its accessible name.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 120;
const HEIGHT = 24;

export function sparkline(kind) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", `spark ${kind}`);
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  // The whole span of the last minutes, so a line that has just begun reads as recent, not as the whole story.
  const span = document.createElementNS(SVG, "rect");
  span.setAttribute("width", String(WIDTH));
  span.setAttribute("height", String(HEIGHT));
  svg.append(span, document.createElementNS(SVG, "polyline"));
  return svg;
}

// `values` oldest first, one a second; `slots` is how many fit the width (the last minutes).
export function draw(svg, values, slots, label) {
  const peak = Math.max(1, ...values);
  const step = WIDTH / Math.max(1, slots - 1);
  const offset = slots - values.length;
  const points = values.map((value, i) => {
    const x = (offset + i) * step;
    const y = HEIGHT - 1 - (value / peak) * (HEIGHT - 2);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  svg.lastChild.setAttribute("points", points.join(" "));
  const now = values.length ? values[values.length - 1] : 0;
  svg.setAttribute("aria-label", `${label}: now ${format(now)}, peak ${format(Math.max(0, ...values))}`);
}

function format(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}
