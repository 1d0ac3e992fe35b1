// A student's requests on the page, for one sign-in: each with its status in a live region, followed over its own
// socket while undecided, with Drop or Leave waitlist once decided.

import { ApiError, explain } from "./api.js";
import { follow } from "./live.js";
import { $, show } from "./page.js";

// A student may hold 10 live streams at once; past 8, the rest are read with each refresh.
const MOST_FOLLOWED = 8;
// Only these still change by themselves; a granted seat changes when its student drops it, here.
const FOLLOWED = new Set(["pending", "waitlisted"]);
// Request ids asked from this tab are kept (50 at most): a request still in the queue is in no read model yet.
const MOST_REMEMBERED = 50;

export class Requests {
  // `nameOf(courseId)` names a course; `signedOut(error)` ends the session if the error says the token no longer
  // counts (true then); `expired()` ends it because the token has expired.
  constructor(api, studentId, { nameOf, signedOut, expired }) {
    this.api = api;
    this.studentId = studentId;
    this.nameOf = nameOf;
    this.signedOut = signedOut;
    this.expired = expired;
    this.byId = new Map();
    this.closed = false;
  }

  // The sign-in ended: sockets close, and answers still on their way are dropped.
  close() {
    this.closed = true;
    for (const request of this.byId.values()) request.live?.close();
    this.byId.clear();
    $("requests").replaceChildren();
    show("requests-empty");
  }

  get #remembered() {
    return `courseflow.requests.${this.studentId}`;
  }

  remember(requestId) {
    const ids = new Set(JSON.parse(sessionStorage.getItem(this.#remembered) || "[]"));
    ids.add(requestId);
    sessionStorage.setItem(this.#remembered, JSON.stringify([...ids].slice(-MOST_REMEMBERED)));
  }

  // The decided requests from the read model, and those asked from this tab that it may not have yet.
  async load() {
    const { enrollments } = await this.api.get(`/api/v1/students/${this.studentId}/enrollments`);
    if (this.closed) return;
    for (const request of enrollments) this.add(request);
    const known = new Set(enrollments.map((request) => request.request_id));
    for (const id of JSON.parse(sessionStorage.getItem(this.#remembered) || "[]")) {
      if (known.has(id)) continue;
      try {
        const found = await this.api.get(`/api/v1/enrollments/${id}`);
        if (this.closed) return;
        this.add(found);
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) throw error;
      }
    }
  }

  // With each refresh of the page: undecided requests without a stream are read, and those asked from another
  // tab or device show up once decided. Known ones keep their status: the live one is ahead of the list's.
  async refresh() {
    for (const request of [...this.byId.values()]) {
      if (request.live || !FOLLOWED.has(request.status)) continue;
      const now = await this.api.get(`/api/v1/enrollments/${request.request_id}`);
      if (this.closed) return;
      this.add(now);
    }
    const { enrollments } = await this.api.get(`/api/v1/students/${this.studentId}/enrollments`);
    if (this.closed) return;
    for (const request of enrollments) if (!this.byId.has(request.request_id)) this.add(request);
  }

  add(found, fresh = false) {
    let request = this.byId.get(found.request_id);
    if (!request) {
      request = { ...found, promoted: false, live: null, item: null };
      this.byId.set(found.request_id, request);
    } else {
      Object.assign(request, found);
    }
    this.#draw(request, fresh);
    this.#followIfLive(request);
  }

  // Course names changed (a new list): every heading again.
  redraw() {
    for (const request of this.byId.values()) this.#draw(request);
  }

  #followIfLive(request) {
    if (!FOLLOWED.has(request.status)) {
      if (request.live) {
        request.live.close();
        request.live = null;
        for (const other of this.byId.values()) if (!other.live) this.#followIfLive(other); // a stream is free
      }
      return;
    }
    const followed = [...this.byId.values()].filter((r) => r.live).length;
    if (request.live || followed >= MOST_FOLLOWED || this.closed) return;
    request.live = follow({ request_id: request.request_id }, this.api.token, {
      message: (received) => {
        // Each message carries the request as it now stands; `promoted` says how it got its seat.
        const { type, id, ...now } = received;
        if (type === "promoted") request.promoted = true;
        Object.assign(request, { queue_position: null, waitlist_position: null }, now);
        this.#draw(request);
        this.#followIfLive(request);
      },
      ended: async (why) => {
        request.live = null;
        if (this.closed) return;
        if (why.expired) {
          this.expired();
          return;
        }
        // Refused or unreachable: is the sign-in still good? The next refresh follows it again.
        try {
          await this.api.get("/api/v1/me");
        } catch (error) {
          this.signedOut(error);
        }
      },
    });
  }

  #draw(request, fresh = false) {
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
    item.querySelector("h3").textContent = this.nameOf(request.course_id);
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
      release.addEventListener("click", () => this.#confirmRelease(request, release));
      actions.replaceChildren(release);
    }
    show("requests-empty", this.byId.size === 0);
    if (fresh) item.querySelector("h3").scrollIntoView({ block: "nearest" });
  }

  #confirmRelease(request, button) {
    if (button.disabled) return;
    const dialog = $("confirm");
    const name = this.nameOf(request.course_id);
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
        await this.#release(request);
        button.disabled = false;
        // The button is gone once released: focus stays with the request, whose status now says what happened.
        request.item.querySelector("h3").focus();
      },
      { once: true },
    );
    dialog.showModal();
  }

  async #release(request) {
    const status = request.item.querySelector("[role=status]");
    try {
      const answer = await this.api.patiently(
        () => this.api.call("DELETE", `/api/v1/enrollments/${request.request_id}`),
        (seconds, error) => (status.textContent = `${explain(error)} Retrying in ${seconds} s…`),
      );
      if (this.closed) return;
      this.add({ ...answer.body, queue_position: null, waitlist_position: null });
    } catch (error) {
      if (!this.signedOut(error)) status.textContent = explain(error);
    }
  }
}

function statusText(request) {
  switch (request.status) {
    case "pending":
      return request.queue_position ? `Pending: number ${request.queue_position} in the queue` : "Pending: in the queue";
    case "granted":
      return request.promoted ? "Promoted from the waitlist: the seat is yours" : "Granted: the seat is yours";
    case "waitlisted":
      return request.waitlist_position ? `Waitlisted: place ${request.waitlist_position} on the waitlist` : "Waitlisted";
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
