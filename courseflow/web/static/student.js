// The student's page: sign in, see the courses, ask for a seat and watch the request be decided, live.

import { Api, ApiError, explain } from "./api.js";
import { courseName, registration } from "./format.js";
import { follow } from "./live.js";
import { $, begin, notice, show, signInAgain } from "./page.js";

const SESSION = "courseflow.student"; // {token, studentId}: this tab only, never a URL
const COURSES_EVERY_MS = 5000;
// A student may hold 10 live streams at once; the rest of the list is current as of its last load.
const MOST_FOLLOWED = 8;
// Only these still change by themselves; a granted seat changes when its student drops it, here.
const FOLLOWED = new Set(["pending", "waitlisted"]);

const state = { api: null, auth: "on", studentId: null, courses: new Map(), requests: new Map(), timers: [] };

function fieldError(id, text, field = null) {
  $(id).textContent = text || "";
  show(id, Boolean(text));
  if (field) field.setAttribute("aria-invalid", text ? "true" : "false");
}

// Ids the page can hold exactly: JavaScript numbers are exact up to 2^53 - 1.
function wholeNumber(text) {
  return /^[1-9][0-9]*$/.test(text) && Number.isSafeInteger(Number(text));
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
  await Promise.all([loadCourses(), loadRequests()]);
  state.timers.push(setInterval(loadCourses, COURSES_EVERY_MS), setInterval(tick, 1000));
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const field = state.auth === "on" ? $("token") : $("student-id");
  // A token copied from a curl example comes with its scheme.
  const value = field.value.trim().replace(/^Bearer\s+/i, "");
  if (state.auth === "off" && !wholeNumber(value)) {
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
  for (const request of state.requests.values()) request.live?.close();
  state.requests.clear();
  $("requests").replaceChildren();
  show("requests-empty");
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
    for (const request of state.requests.values()) drawRequest(request);
    await refreshUnfollowed(api);
    await loadDecidedElsewhere(api);
  } catch (error) {
    if (!signedOut(error)) notice(explain(error));
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
  if (!wholeNumber(value)) {
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
    remember(request.request_id);
    track(request, true);
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

// ---- the student's requests ------------------------------------------------------------------------------

// Request ids asked from this tab: a request still in the queue is in no read model yet.
function rememberedKey() {
  return `courseflow.requests.${state.studentId}`;
}

function remember(requestId) {
  const ids = new Set(JSON.parse(sessionStorage.getItem(rememberedKey()) || "[]"));
  ids.add(requestId);
  sessionStorage.setItem(rememberedKey(), JSON.stringify([...ids].slice(-50)));
}

async function loadRequests() {
  const api = state.api;
  try {
    const { enrollments } = await api.get(`/api/v1/students/${state.studentId}/enrollments`);
    if (state.api !== api) return;
    for (const request of enrollments) track(request);
    const known = new Set(enrollments.map((request) => request.request_id));
    for (const id of JSON.parse(sessionStorage.getItem(rememberedKey()) || "[]")) {
      if (known.has(id)) continue;
      try {
        const found = await api.get(`/api/v1/enrollments/${id}`);
        if (state.api !== api) return;
        track(found);
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) throw error;
      }
    }
  } catch (error) {
    if (!signedOut(error)) notice(explain(error));
  }
}

// Requests asked from another tab or device show up once decided (the list knows only decided requests).
// Known ones are left alone: their live status is ahead of the list's.
async function loadDecidedElsewhere(api) {
  const { enrollments } = await api.get(`/api/v1/students/${state.studentId}/enrollments`);
  if (state.api !== api) return;
  for (const request of enrollments) if (!state.requests.has(request.request_id)) track(request);
}

function track(found, fresh = false) {
  let request = state.requests.get(found.request_id);
  if (!request) {
    request = { ...found, promoted: false, live: null, item: null };
    state.requests.set(found.request_id, request);
  } else {
    Object.assign(request, found);
  }
  drawRequest(request, fresh);
  followIfLive(request);
}

function followIfLive(request) {
  if (!FOLLOWED.has(request.status)) {
    if (request.live) {
      request.live.close();
      request.live = null;
      followWaiting(); // a stream is free for another request
    }
    return;
  }
  const followed = [...state.requests.values()].filter((r) => r.live).length;
  if (request.live || followed >= MOST_FOLLOWED || !state.api) return;
  const api = state.api;
  request.live = follow({ request_id: request.request_id }, api.token, {
    message(received) {
      // Each message carries the request as it now stands; `promoted` says how it got its seat.
      const { type, id, ...now } = received;
      if (type === "promoted") request.promoted = true;
      Object.assign(request, { queue_position: null, waitlist_position: null }, now);
      drawRequest(request);
      followIfLive(request);
    },
    async ended(why) {
      request.live = null;
      if (state.api !== api) return;
      if (why.expired && state.auth === "on") {
        $("sign-out").click();
        fieldError("sign-in-error", "Your sign-in has expired: sign in again.");
        return;
      }
      // Refused or unreachable: is the sign-in still good? The course refresh follows it again later.
      try {
        await api.get("/api/v1/me");
      } catch (error) {
        signedOut(error);
      }
    },
  });
}

function followWaiting() {
  for (const request of state.requests.values()) if (!request.live) followIfLive(request);
}

// Requests still undecided beyond the streams a student may hold: their status, read with the course refresh.
async function refreshUnfollowed(api) {
  for (const request of [...state.requests.values()]) {
    if (request.live || !FOLLOWED.has(request.status)) continue;
    const now = await api.get(`/api/v1/enrollments/${request.request_id}`);
    if (state.api !== api) return;
    track(now);
  }
}

function statusText(request) {
  switch (request.status) {
    case "pending":
      return request.queue_position
        ? `Pending: number ${request.queue_position} in the queue`
        : "Pending: in the queue";
    case "granted":
      return request.promoted ? "Promoted from the waitlist: the seat is yours" : "Granted: the seat is yours";
    case "waitlisted":
      return request.waitlist_position
        ? `Waitlisted: place ${request.waitlist_position} on the waitlist`
        : "Waitlisted";
    case "dropped":
      return "Dropped: you gave the seat up";
    case "left":
      return "Left the waitlist";
    case "rejected":
      if (request.reason === "closed") return "Rejected: registration for this course was not open";
      if (request.reason === "duplicate") return "Rejected: you already have a request for this course";
      return `Rejected${request.reason ? `: ${request.reason}` : ""}`;
    case "dead_lettered":
      return "Could not be processed: the registrar has been told";
    default:
      return request.status;
  }
}

function drawRequest(request, fresh = false) {
  if (!request.item) {
    const item = document.createElement("li");
    item.className = "request";
    item.dataset.request = request.request_id;
    const title = document.createElement("h3");
    title.tabIndex = -1;
    const status = document.createElement("p");
    status.setAttribute("role", "status");
    const actions = document.createElement("div");
    actions.className = "actions";
    item.append(title, status, actions);
    $("requests").prepend(item);
    request.item = item;
  }
  const item = request.item;
  item.querySelector("h3").textContent = courseName(state.courses.get(request.course_id), request.course_id);
  const status = item.querySelector("[role=status]");
  const text = statusText(request);
  if (status.textContent !== text) status.textContent = text;
  status.className = `status ${request.promoted && request.status === "granted" ? "promoted" : request.status}`;
  const actions = item.querySelector(".actions");
  const wanted = request.status === "granted" ? "Drop" : request.status === "waitlisted" ? "Leave waitlist" : null;
  const button = actions.querySelector("button");
  if (!wanted) {
    actions.replaceChildren();
  } else if (!button || button.textContent !== wanted) {
    const release = document.createElement("button");
    release.type = "button";
    release.textContent = wanted;
    release.className = "danger";
    release.addEventListener("click", () => confirmRelease(request, release));
    actions.replaceChildren(release);
  }
  show("requests-empty", state.requests.size === 0);
  if (fresh) item.querySelector("h3").scrollIntoView({ block: "nearest" });
}

function confirmRelease(request, button) {
  if (button.disabled) return;
  const dialog = $("confirm");
  const name = courseName(state.courses.get(request.course_id), request.course_id);
  const dropping = request.status === "granted";
  $("confirm-title").textContent = dropping ? `Drop your seat in ${name}?` : `Leave the waitlist of ${name}?`;
  $("confirm-text").textContent = dropping
    ? "The seat goes to the next student on the waitlist at once. To get it back you would have to ask again."
    : "You lose your place; asking again puts you at the end of the line.";
  $("confirm-yes").textContent = dropping ? "Drop seat" : "Leave waitlist";
  dialog.returnValue = "";
  dialog.addEventListener(
    "close",
    async () => {
      if (dialog.returnValue !== "confirm") {
        button.focus();
        return;
      }
      button.disabled = true;
      await release(request);
      button.disabled = false;
      // The button is gone once released: focus stays with the request, whose status now says what happened.
      request.item.querySelector("h3").focus();
    },
    { once: true },
  );
  dialog.showModal();
}

async function release(request) {
  const status = request.item.querySelector("[role=status]");
  const api = state.api;
  try {
    const answer = await api.patiently(
      () => api.call("DELETE", `/api/v1/enrollments/${request.request_id}`),
      (seconds, error) => (status.textContent = `${explain(error)} Retrying in ${seconds} s…`),
    );
    if (state.api !== api) return;
    track({ ...answer.body, queue_position: null, waitlist_position: null });
  } catch (error) {
    if (!signedOut(error)) status.textContent = explain(error);
  }
}

const resume = () =>
  signInAgain(SESSION, (kept) => {
    const { token, studentId } = JSON.parse(kept);
    return signIn(token, studentId);
  });

begin(resume, (mode, message) => {
  state.auth = mode.auth;
  askToSignIn(message);
});
