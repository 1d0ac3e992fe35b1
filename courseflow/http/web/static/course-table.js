// The board's table: a row per course, its figures, its decision rate from one sample to the next, and the last
// minutes of rate and queue depth as sparklines; the totals above it.

import { courseName, windowText } from "./format.js";
import { $, show } from "./page.js";
import { draw, sparkline } from "./sparkline.js";

const TREND_S = 300; // the sparklines' last 5 minutes, a sample a second
const CELLS = ["name", "capacity", "seats", "waitlist", "queue", "rate", "window", "trend", "change"];

// Requests decided so far: each is granted, waitlisted or rejected once (promotions are not new decisions).
function decided(course) {
  const c = course.counters;
  return c ? c.granted + c.waitlisted + c.rejected : null;
}

function rateText(rate) {
  return rate < 10 ? rate.toFixed(1) : String(Math.round(rate));
}

export class CourseTable {
  // `change(row, button)`: the registrar asks to change the row's course.
  constructor(table, change) {
    this.table = table;
    this.change = change;
    this.rows = new Map();
  }

  clear() {
    this.rows.clear();
    this.table.tBodies[0].replaceChildren();
  }

  // A new sample of a course, taken at `now` (ms).
  update(course, now) {
    const row = this.rows.get(course.course_id) ?? this.#add(course);
    const count = decided(course);
    let rate = 0;
    if (row.last && count !== null && row.last.decided !== null) {
      rate = Math.max(0, (count - row.last.decided) / Math.max(0.001, (now - row.last.at) / 1000));
    }
    row.last = { at: now, decided: count };
    row.course = course;
    row.rate = rate;
    row.rates.push(rate);
    row.queues.push(course.pending ?? 0);
    if (row.rates.length > TREND_S) row.rates.shift();
    if (row.queues.length > TREND_S) row.queues.shift();
    this.#render(row);
  }

  // A change the registrar made (capacity, window): shown at once, not a new sample.
  changed(row, changed) {
    row.course = { ...row.course, ...changed };
    this.#render(row);
  }

  totals(now) {
    const rows = [...this.rows.values()];
    $("total-courses").textContent = String(rows.length);
    $("total-rate").textContent = rateText(rows.reduce((sum, row) => sum + row.rate, 0));
    $("total-queue").textContent = String(rows.reduce((sum, row) => sum + (row.course.pending ?? 0), 0));
    const at = new Date(now);
    $("updated").dateTime = at.toISOString();
    $("updated").textContent = at.toLocaleTimeString();
    show("courses-empty", rows.length === 0);
  }

  #render(row) {
    const { course, cells, rate } = row;
    cells.name.textContent = courseName(course);
    cells.capacity.textContent = String(course.capacity);
    cells.seats.textContent = String(course.seats_taken);
    cells.waitlist.textContent = String(course.waitlist_length);
    cells.queue.textContent = course.pending === null || course.pending === undefined ? "–" : String(course.pending);
    cells.rate.textContent = rateText(rate);
    cells.window.textContent = windowText(course);
    draw(row.decidedLine, row.rates, TREND_S, "Decisions per second, last 5 minutes");
    draw(row.queueLine, row.queues, TREND_S, "Queue depth, last 5 minutes");
  }

  #add(course) {
    const tr = document.createElement("tr");
    const cells = {};
    const headings = [...this.table.tHead.rows[0].cells].map((heading) => heading.textContent.trim());
    CELLS.forEach((name, i) => {
      const cell = document.createElement(name === "name" ? "th" : "td");
      if (name === "name") cell.scope = "row";
      cell.className = name;
      // At phone width each row is a card, and each figure is labelled by its column's heading.
      cell.dataset.label = headings[i];
      cells[name] = cell;
      tr.append(cell);
    });
    const row = { course, tr, cells, rates: [], queues: [], last: null, rate: 0 };
    row.decidedLine = sparkline("decided");
    row.queueLine = sparkline("queue");
    const lines = document.createElement("span");
    lines.className = "sparks";
    lines.append(row.decidedLine, row.queueLine);
    cells.trend.append(lines);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "quiet";
    button.textContent = "Change";
    button.setAttribute("aria-label", `Change course ${course.course_id}`);
    button.addEventListener("click", () => this.change(row, button));
    cells.change.append(button);
    // Rows stay in course order, whatever order courses appear in.
    const next = [...this.rows.values()].find((other) => other.course.course_id > course.course_id);
    this.table.tBodies[0].insertBefore(tr, next ? next.tr : null);
    this.rows.set(course.course_id, row);
    return row;
  }
}
