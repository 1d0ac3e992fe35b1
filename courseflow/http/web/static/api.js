// The one way the pages talk to CourseFlow: the public v1 API, with the visitor's own bearer token.
// Errors arrive as RFC 9457 problem details; `explain` turns each into a sentence for people.

export class ApiError extends Error {
  constructor(status, problem, retryAfterS) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status; // 0: the server could not be reached
    this.problem = problem;
    this.field = problem.field || null;
    this.retryAfterS = retryAfterS;
  }

  get retryable() {
    return this.status === 0 || this.status === 503;
  }
}

// JSON as the pages read it. Ids and log positions are whole numbers up to 2^53 - 1, which JavaScript holds exactly;
// a larger one would arrive rounded (courses 2^53 and 2^53 + 1 read as one), so an answer holding one is refused.
export function readJson(text) {
  return JSON.parse(text, (key, value) => {
    if (typeof value === "number" && Number.isInteger(value) && !Number.isSafeInteger(value)) {
      throw new RangeError(`the server sent ${key || "a number"} beyond ${Number.MAX_SAFE_INTEGER}, which this page cannot hold exactly`);
    }
    return value;
  });
}

function secondsToWait(response) {
  const raw = response.headers.get("Retry-After");
  if (raw === null) return 1;
  const seconds = Number(raw);
  if (Number.isFinite(seconds)) return Math.max(1, Math.ceil(seconds));
  const at = Date.parse(raw);
  return Number.isNaN(at) ? 1 : Math.max(1, Math.ceil((at - Date.now()) / 1000));
}

export class Api {
  // token: a bearer token, or null in development mode (the server then checks nothing).
  constructor(token) {
    this.token = token;
  }

  async call(method, path, body = undefined, headers = {}) {
    const sent = { Accept: "application/json", ...headers };
    if (this.token) sent.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) sent["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: sent,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
      });
    } catch {
      throw new ApiError(0, { title: "Unreachable", detail: "CourseFlow cannot be reached" }, 2);
    }
    if (response.ok) return { status: response.status, body: readJson(await response.text()) };
    let problem = {};
    try {
      problem = await response.json();
    } catch {
      problem = { title: response.statusText };
    }
    throw new ApiError(response.status, problem, secondsToWait(response));
  }

  async get(path) {
    return (await this.call("GET", path)).body;
  }

  // Every page of a paged list (`next_after` names the next one).
  async all(path, key) {
    const items = [];
    let after = 0;
    for (;;) {
      const page = await this.get(`${path}${path.includes("?") ? "&" : "?"}limit=500&after=${after}`);
      items.push(...page[key]);
      if (page.next_after === null || page.next_after === undefined) return items;
      after = page.next_after;
    }
  }

  // The call again while the service is unavailable (503) or unreachable, waiting as the server asks;
  // `waiting(seconds, error)` tells the visitor. Safe for enrollments only because they carry an idempotency key.
  async patiently(attempt, waiting, tries = 5) {
    for (let tried = 1; ; tried++) {
      try {
        return await attempt();
      } catch (error) {
        if (!(error instanceof ApiError) || !error.retryable || tried >= tries) throw error;
        const wait = Math.min(10, error.retryAfterS * tried);
        waiting(wait, error);
        await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      }
    }
  }
}

// Whether authentication is on: the API answers who is asking; without a token, 401 means it is on.
export async function authMode() {
  try {
    const me = await new Api(null).get("/api/v1/me");
    return { auth: me.auth, me };
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return { auth: "on", me: null };
    throw error;
  }
}

// A sentence for people from any answer the API can give; `labels` names fields as the page's form does.
export function explain(error, labels = {}) {
  if (!(error instanceof ApiError)) return `Something went wrong in this page: ${error.message}`;
  const detail = error.problem.detail ? ` (${error.problem.detail})` : "";
  switch (error.status) {
    case 0:
      return "CourseFlow cannot be reached right now; the page keeps trying.";
    case 401:
      return `Your sign-in was not accepted or has expired: sign in again${detail}.`;
    case 403:
      return error.problem.detail ? `Not allowed: ${error.problem.detail}.` : "Not allowed.";
    case 404:
      return `Not found${detail}.`;
    case 409:
      return `That conflicts with what is already recorded${detail}.`;
    case 429:
      return `Too many requests: wait ${error.retryAfterS} s, then try again.`;
    case 503:
      return `CourseFlow is busy or restarting${detail}. Try again in a few seconds.`;
    default:
      if (error.status >= 400 && error.status < 500) {
        return error.field
          ? `Check ${labels[error.field] ?? error.field}: ${error.problem.detail}.`
          : `${error.problem.detail || error.message}.`;
      }
      return `CourseFlow could not do that (${error.status}${detail}). Try again shortly.`;
  }
}
