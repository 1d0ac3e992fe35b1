// The registrar's board: every course's seats, waitlist, queue and decision rate, once a second, with the last
// minutes as sparklines; dead letters and their reasons; create a course, change its capacity and window.

import { Api, ApiError, explain } from "./api.js";
import { describe, LABELS, limits, mistake, refuse } from "./course-form.js";
import { CourseTable } from "./course-table.js";
import { courseName, fromLocalInput, toLocalInput, wholeNumber } from "./format.js";
import { $, begin, notice, show, signInAgain } from "./page.js";

const SESSION = "courseflow.registrar"; // the registrar's token: this tab only, never a URL
const EVERY_MS = 1000;
const DEAD_LETTERS_EVERY_MS = 5000;

const state = { api: null, auth: "on", editing: null, timers: [] };
const table = new CourseTable($("courses"), (row, button) => edit(row, button));

// ---- signing in (development mode opens at once) ------------------------------------------------------

function askToSignIn(message = "") {
  show("app", false);
  show("who", false);
  show("sign-in");
  $("sign-in-error").textContent = message;
  show("sign-in-error", Boolean(message));
  $("token").focus();
}

async function signIn(token) {
  const me = await new Api(token).get("/api/v1/me");
  state.auth = me.auth;
  if (me.role !== "registrar") {
    throw new ApiError(403, { detail: `this is a ${me.role}'s token; the board needs a registrar's` }, 1);
  }
  sessionStorage.setItem(SESSION, token);
  await open(token, me);
}

async function open(token, me) {
  state.api = new Api(token);
  show("sign-in", false);
  $("who-text").textContent =
    me.auth === "off" ? "Development mode: no sign-in" : me.sub === "registrar" ? "Signed in as a registrar" : `Signed in as ${me.sub} (registrar)`;
  $("sign-out").hidden = me.auth === "off";
  show("who");
  show("app");
  notice("");
  await Promise.all([poll(state.api), deadLetters(), redisMemory()]);
  state.timers.push(setInterval(deadLetters, DEAD_LETTERS_EVERY_MS));
  state.timers.push(setInterval(redisMemory, DEAD_LETTERS_EVERY_MS));
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const field = $("token");
  // A token copied from a curl example comes with its scheme.
  const token = field.value.trim().replace(/^Bearer\s+/i, "");
  const button = event.submitter;
  if (button) button.disabled = true; // one sign-in at a time
  try {
    if (!token) throw new ApiError(400, { detail: "Paste a registrar's token first" }, 1);
    await signIn(token);
    field.value = "";
    field.removeAttribute("aria-invalid");
    $("title").focus();
  } catch (error) {
    $("sign-in-error").textContent = explain(error);
    show("sign-in-error");
    field.setAttribute("aria-invalid", "true");
    field.focus();
  } finally {
    if (button) button.disabled = false;
  }
});

$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(SESSION);
  state.api = null;
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  table.clear();
  askToSignIn();
});

function signedOut(error) {
  if (error instanceof ApiError && error.status === 401 && state.auth === "on") {
    $("sign-out").click();
    askToSignIn(explain(error));
    return true;
  }
  return false;
}

// ---- the table, once a second ------------------------------------------------------------------------

// One loop per sign-in: it carries its own `api`, and ends at its first turn after that sign-in has ended.
async function poll(api) {
  if (state.api !== api) return;
  const started = performance.now();
  try {
    const courses = await api.all("/api/v1/courses", "courses");
    if (state.api !== api) return; // signed out meanwhile: this loop ends here
    const now = Date.now();
    for (const course of courses) table.update(course, now);
    table.totals(now);
    notice("");
  } catch (error) {
    if (state.api !== api || signedOut(error)) return;
    notice(explain(error));
  }
  const wait = Math.max(0, EVERY_MS - (performance.now() - started));
  setTimeout(() => poll(api), wait);
}

// ---- dead letters ------------------------------------------------------------------------------------

async function deadLetters() {
  const api = state.api;
  if (!api) return;
  try {
    const found = await api.get("/api/v1/dead-letters?limit=100");
    if (state.api !== api) return;
    $("dead-count").textContent = String(found.count);
    show("dead-link", found.count > 0);
    const rows = found.dead_letters.map((letter) => {
      const tr = document.createElement("tr");
      const values = [
        letter.id,
        clip(letter.reason),
        letter.course_id ?? "–",
        letter.student_id ?? "–",
        letter.dead_lettered_at ? new Date(letter.dead_lettered_at).toLocaleString() : "–",
      ];
      values.forEach((value, i) => {
        const cell = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) cell.scope = "row";
        if (i === 1 || i === 4) cell.className = "window";
        cell.textContent = String(value);
        tr.append(cell);
      });
      return tr;
    });
    $("dead-rows").replaceChildren(...rows);
    show("dead-table", rows.length > 0);
    show("dead-empty", rows.length === 0);
  } catch (error) {
    if (!signedOut(error)) notice(explain(error));
  }
}

// ---- Redis memory: at 100% new requests are refused (503) until decisions free some --------------------

const FULL_SOON = 0.8; // the README's alert fires here too

async function redisMemory() {
  const api = state.api;
  if (!api) return;
  try {
    const memory = (await api.get("/api/v1/metrics")).redis_memory;
    if (state.api !== api) return;
    const shown = $("redis-memory");
    if (!memory) {
      shown.textContent = "not readable";
    } else if (memory.ratio === null) {
      shown.textContent = `${megabytes(memory.used_bytes)} (no maxmemory: unbounded)`;
    } else {
      shown.textContent = `${Math.round(memory.ratio * 100)}% of ${megabytes(memory.max_bytes)}`;
    }
    shown.classList.toggle("error", Boolean(memory) && (memory.ratio === null || memory.ratio >= FULL_SOON));
  } catch (error) {
    if (!signedOut(error)) notice(explain(error));
  }
}

function megabytes(bytes) {
  return `${(bytes / 1048576).toFixed(1)} MB`;
}

// A dead letter's reason may be anything at all: the board shows its start.
function clip(text, most = 300) {
  return text.length > most ? `${text.slice(0, most)}…` : text;
}

// ---- creating and changing courses -----------------------------------------------------------------

const CREATE_FIELDS = { course_id: "new-id", title: "new-title", capacity: "new-capacity", opens_at: "new-opens", closes_at: "new-closes" };
const EDIT_FIELDS = { capacity: "edit-capacity", opens_at: "edit-opens", closes_at: "edit-closes" };
limits("NewCourse").then((schema) => describe(schema, CREATE_FIELDS));
$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = $("create-result");
  for (const id of Object.values(CREATE_FIELDS)) $(id).removeAttribute("aria-invalid");
  const body = {
    course_id: wholeNumber($("new-id").value),
    title: $("new-title").value.trim(),
    capacity: wholeNumber($("new-capacity").value),
  };
  const opens = fromLocalInput($("new-opens").value);
  const closes = fromLocalInput($("new-closes").value);
  if (opens) body.opens_at = opens;
  if (closes) body.closes_at = closes;
  result.className = "error";
  const wrong = mistake(await limits("NewCourse"), body);
  if (wrong) {
    refuse(result, CREATE_FIELDS, ...wrong);
    return;
  }
  try {
    const { body: created } = await state.api.call("POST", "/api/v1/courses", body);
    result.className = "ok";
    result.textContent = `Created ${courseName(created)} with ${seats(created.capacity)}.`;
    $("create-form").reset();
    table.update(created, Date.now());
    table.totals(Date.now());
  } catch (error) {
    if (signedOut(error)) return;
    refuse(result, CREATE_FIELDS, error.field, explain(error, LABELS));
  }
});

function seats(count) {
  return count === 1 ? "1 seat" : `${count} seats`;
}

function edit(row, opener) {
  for (const id of Object.values(EDIT_FIELDS)) $(id).removeAttribute("aria-invalid");
  const course = row.course;
  state.editing = { row, opener };
  $("edit-title").textContent = `Change ${courseName(course)}`;
  $("edit-capacity").value = String(course.capacity);
  $("edit-opens").value = toLocalInput(course.opens_at);
  $("edit-closes").value = toLocalInput(course.closes_at);
  show("edit-error", false);
  $("edit").showModal();
}

$("edit").addEventListener("close", () => state.editing?.opener.focus());

$("edit-cancel").addEventListener("click", () => $("edit").close());

$("edit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const { row } = state.editing;
  const course = row.course;
  const patch = {};
  const capacity = wholeNumber($("edit-capacity").value);
  if (capacity !== course.capacity) patch.capacity = capacity;
  const opens = fromLocalInput($("edit-opens").value);
  const closes = fromLocalInput($("edit-closes").value);
  for (const id of Object.values(EDIT_FIELDS)) $(id).removeAttribute("aria-invalid");
  const wrong = mistake(await limits("CoursePatch"), { capacity, opens_at: opens, closes_at: closes });
  if (wrong) {
    refuse($("edit-error"), EDIT_FIELDS, ...wrong);
    show("edit-error");
    return;
  }
  if ($("edit-opens").value !== toLocalInput(course.opens_at)) patch.opens_at = opens;
  if ($("edit-closes").value !== toLocalInput(course.closes_at)) patch.closes_at = closes;
  if (Object.keys(patch).length === 0) {
    $("edit").close();
    return;
  }
  try {
    const { body: changed } = await state.api.call("PATCH", `/api/v1/courses/${course.course_id}`, patch);
    table.changed(row, changed);
    $("create-result").className = "ok";
    const promoted = changed.promoted.length ? `: ${changed.promoted.length} promoted from the waitlist` : "";
    $("create-result").textContent = `Saved ${courseName(course)}${promoted}.`;
    $("edit").close();
  } catch (error) {
    if (signedOut(error)) return;
    refuse($("edit-error"), EDIT_FIELDS, error.field, explain(error, LABELS));
    show("edit-error");
  }
});

begin(() => signInAgain(SESSION, signIn), async (mode, message) => {
  state.auth = mode.auth;
  if (mode.auth === "off") await open(null, mode.me);
  else askToSignIn(message);
});
