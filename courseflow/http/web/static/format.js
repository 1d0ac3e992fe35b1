// How times, windows and counts read on the pages: the visitor's own locale and time zone.

const WHEN = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  timeZoneName: "short",
});

export function when(iso) {
  return WHEN.format(new Date(iso));
}

// "2 d 03 h", "1 h 02 min 05 s", "42 s": a countdown that stays short.
export function duration(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  const two = (n) => String(n).padStart(2, "0");
  if (days > 0) return `${days} d ${two(hours)} h`;
  if (hours > 0) return `${hours} h ${two(minutes)} min ${two(seconds)} s`;
  if (minutes > 0) return `${minutes} min ${two(seconds)} s`;
  return `${seconds} s`;
}

// Where a course's registration stands at `now`: open, opening later (with a countdown), or closed.
export function registration(course, now = Date.now()) {
  const opens = course.opens_at ? Date.parse(course.opens_at) : null;
  const closes = course.closes_at ? Date.parse(course.closes_at) : null;
  if (opens !== null && now < opens) {
    return { state: "opens", text: `Opens in ${duration(opens - now)}`, at: when(course.opens_at) };
  }
  if (closes !== null && now >= closes) return { state: "closed", text: "Closed", at: `since ${when(course.closes_at)}` };
  return { state: "open", text: "Open", at: closes !== null ? `until ${when(course.closes_at)}` : "" };
}

// The window as a registrar reads it in a table cell.
export function windowText(course) {
  if (course.opens_at && course.closes_at) return `${when(course.opens_at)} – ${when(course.closes_at)}`;
  if (course.opens_at) return `from ${when(course.opens_at)}`;
  if (course.closes_at) return `until ${when(course.closes_at)}`;
  return "always open";
}

// A datetime-local field's value (the visitor's local time) as RFC 3339, or null when empty.
export function fromLocalInput(value) {
  return value ? new Date(value).toISOString() : null;
}

// RFC 3339 to a datetime-local field's value, in the visitor's local time.
export function toLocalInput(iso) {
  if (!iso) return "";
  const at = new Date(iso);
  const local = new Date(at.getTime() - at.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

export function courseName(course, id) {
  if (!course) return `Course ${id}`;
  return course.title ? `${course.course_id} · ${course.title}` : `Course ${course.course_id}`;
}

// A whole number typed into a field, as a number when the page can hold it exactly (JavaScript numbers are exact
// up to 2^53 - 1), else the text as typed, for the checks to refuse.
export function wholeNumber(value) {
  const text = value.trim();
  return /^[0-9]+$/.test(text) && Number.isSafeInteger(Number(text)) ? Number(text) : text;
}
