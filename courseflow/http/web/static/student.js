// The student's page: sign in, see the courses, ask for a seat and watch the request be decided, live.

import { Api, ApiError, explain } from "./api.js";
import { courseName, registration, wholeNumber } from "./format.js";
import { $, begin, notice, show, signInAgain } from "./page.js";
import { Requests } from "./requests.js";

const SESSION = "courseflow.student"; // {token, studentId}: this tab only, never a URL
const COURSES_EVERY_MS = 5000;

// `requests`: the signed-in student's (requests.js), null while nobody is signed in.
const state = { api: null, auth: "on", studentId: null, courses: new Map(), requests: null, timers: [] };

function fieldError(id, text, field = null) {
  $(id).textContent = text || "";
  show(id, Boolean(text));
  if (field) field.setAttribute("aria-invalid", text ? "true" : "false");
}

// An id from 1 up that the page can hold exactly.
function isId(text) {
  const value = wholeNumber(text);
  return typeof value === "number" && value >= 1;
}

// ---- signing in ------------------------------------------------------------------------------------

function askToSignIn(message = "") {
  show("app", false);
  show("who", false);
  show("sign-in");
  show("token-field", state.auth === "on");
  show("student-field", state.auth === "off");
  fieldError("sign-in-error", message);
  (state.auth === "on" ? $("token") : $("student-id")).focus();
}

// Auth on: the token says who the student is. Development mode: the visitor says so, and the server believes it.
async function signIn(token, studentId) {
  endSession();
  const api = new Api(token);
  const me = await api.get("/api/v1/me");
  state.auth = me.auth;
  if (state.auth === "off" && !studentId) throw new ApiError(400, { detail: "the server is in development mode: give a student ID" }, 1);
  if (state.auth === "on") {
    if (me.role !== "student") {
      throw new ApiError(403, { detail: `this is a ${me.role}'s token, and this page needs a student's; the board is at /board` }, 1);
    }
    studentId = me.student_id;
  }
  state.api = api;
  state.studentId = studentId;
  sessionStorage.setItem(SESSION, JSON.stringify({ token, studentId }));
  show("sign-in", false);
  $("who-text").textContent = `Student ${studentId}${state.auth === "off" ? " (development mode)" : ""}`;
  show("who");
  show("app");
  notice("");
  state.requests = new Requests(api, studentId, {
    nameOf: (id) => courseName(state.courses.get(id), id),
    signedOut,
    expired() {
      $("sign-out").click();
      fieldError("sign-in-error", "Your sign-in has expired: sign in again.");
    },
  });
  await Promise.all([loadCourses(), loadRequests()]);
  state.timers.push(setInterval(loadCourses, COURSES_EVERY_MS), setInterval(tick, 1000));
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const field = state.auth === "on" ? $("token") : $("student-id");
  // A token copied from a curl example comes with its scheme.
  const value = field.value.trim().replace(/^Bearer\s+/i, "");
  if (state.auth === "off" && !isId(value)) {
    fieldError("sign-in-error", `Student ID must be a whole number from 1 to ${Number.MAX_SAFE_INTEGER}, e.g. 7.`, field);
    field.focus();
    return;
  }
  if (state.auth === "on" && !value) {
    fieldError("sign-in-error", "Paste your token first.", field);
    field.focus();
    return;
  }
  const button = event.submitter;
  if (button) button.disabled = true; // one sign-in at a time
  try {
    await (state.auth === "on" ? signIn(value, null) : signIn(null, Number(value)));
    field.value = "";
    field.removeAttribute("aria-invalid");
    $("course").focus();
  } catch (error) {
    fieldError("sign-in-error", explain(error), field);
    field.focus();
  } finally {
    if (button) button.disabled = false;
  }
});

// Answers still on their way for the session that ended are dropped: they check `state.api` is still theirs.
function endSession() {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  state.requests?.close();
  state.requests = null;
  state.api = null;
  state.studentId = null;
}

$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(SESSION);
  endSession();
  askToSignIn();
});

// An answer that says the token no longer counts sends the visitor back to sign in.
function signedOut(error) {
  if (error instanceof ApiError && error.status === 401 && state.auth === "on") {
    $("sign-out").click();
    fieldError("sign-in-error", explain(error));
    return true;
  }
  return false;
}

// ---- courses ----------------------------------------------------------------------------------------

async function loadCourses() {
  const api = state.api;
  if (!api) return;
  try {
    const courses = await api.all("/api/v1/courses", "courses");
    if (state.api !== api) return;
    state.courses = new Map(courses.map((course) => [course.course_id, course]));
    drawCourses();
    state.requests.redraw();
    await state.requests.refresh();
  } catch (error) {
    if (state.api === api && !signedOut(error)) notice(explain(error));
  }
}

async function loadRequests() {
  const api = state.api;
  try {
    await state.requests.load();
  } catch (error) {
    if (state.api === api && !signedOut(error)) notice(explain(error));
  }
}

function drawCourses() {
  const list = $("courses");
  const options = $("course-ids");
  show("courses-empty", state.courses.size === 0);
  const items = [];
  const choices = [];
  for (const course of state.courses.values()) {
    const item = document.createElement("li");
    item.className = "course";
    item.dataset.course = course.course_id;
    const title = document.createElement("h3");
    title.textContent = courseName(course);
    const figures = document.createElement("dl");
    const seatsLeft = Math.max(0, course.capacity - course.seats_taken);
    figures.append(
      figure("Seats left", `${seatsLeft} of ${course.capacity}`),
      figure("Waitlist", String(course.waitlist_length)),
      figure("Registration", "", "registration"),
    );
    item.append(title, figures);
    items.push(item);
    const choice = document.createElement("option");
    choice.value = String(course.course_id);
    choice.label = course.title;
    choices.push(choice);
  }
  list.replaceChildren(...items);
  options.replaceChildren(...choices);
  tick();
}

function figure(name, value, role = "") {
  const pair = document.createElement("div");
  const term = document.createElement("dt");
  term.textContent = name;
  const data = document.createElement("dd");
  data.textContent = value;
  if (role) data.dataset.role = role;
  pair.append(term, data);
  return pair;
}

// Once a second: the countdowns to each opening.
function tick() {
  for (const item of $("courses").children) {
    const course = state.courses.get(Number(item.dataset.course));
    const cell = item.querySelector('[data-role="registration"]');
    if (!course || !cell) continue;
    const now = registration(course);
    const text = document.createElement("span");
    text.textContent = now.text;
    const at = document.createElement("span");
    at.className = "at";
    at.textContent = now.at;
    cell.replaceChildren(text, at);
    cell.className = `registration ${now.state}`;
  }
}

// ---- asking for a seat --------------------------------------------------------------------------------

$("enroll-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const field = $("course");
  const value = field.value.trim();
  if (!isId(value)) {
    fieldError("enroll-error", "Course must be a course number, e.g. 101.", field);
    field.focus();
    return;
  }
  fieldError("enroll-error", "", field);
  const button = $("enroll");
  button.disabled = true;
  // One key for every retry of this click: the server then queues it once, whatever the network did.
  const key = crypto.randomUUID();
  const body = { course_id: Number(value), student_id: state.studentId };
  const api = state.api;
  let cooldownS = 0;
  try {
    const answer = await api.patiently(
      () => api.call("POST", "/api/v1/enrollments", body, { "Idempotency-Key": key }),
      (seconds, error) => fieldError("enroll-error", `${explain(error)} Retrying in ${seconds} s…`),
    );
    if (state.api !== api) return;
    fieldError("enroll-error", "");
    field.value = "";
    const request =
      answer.status === 202
        ? { request_id: answer.body.request_id, course_id: body.course_id, status: "pending", queue_position: answer.body.queue_position }
        : answer.body;
    state.requests.remember(request.request_id);
    state.requests.add(request, true);
    if (!state.courses.has(body.course_id)) loadCourses(); // a course newer than the list: its name, now
  } catch (error) {
    if (signedOut(error)) return;
    fieldError("enroll-error", explain(error), error.field === "course_id" ? field : null);
    if (error instanceof ApiError && error.status === 429) cooldownS = error.retryAfterS;
  } finally {
    // After a 429 the button comes back once the limit has reset, and the message goes with the wait.
    setTimeout(() => {
      button.disabled = false;
      if (cooldownS) fieldError("enroll-error", "", field);
    }, cooldownS * 1000);
  }
});

const resume = () =>
  signInAgain(SESSION, (kept) => {
    const { token, studentId } = JSON.parse(kept);
    return signIn(token, studentId);
  });

begin(resume, (mode, message) => {
  state.auth = mode.auth;
  askToSignIn(message);
});
