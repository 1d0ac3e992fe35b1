// The board's course forms (create, change): their checks, said in the forms' own words.

import { $ } from "./page.js";

export const LABELS = { course_id: "Course ID", title: "Title", capacity: "Capacity", opens_at: "Opens at", closes_at: "Closes at" };
const MOST_TITLE = 200;

// The form's own checks, in the form's words, before anything is sent (the server checks again, and its answers
// are put in the same words).
export function mistake(values) {
  const whole = (value, least) => Number.isSafeInteger(value) && value >= least;
  if ("course_id" in values && !whole(values.course_id, 1)) return ["course_id", "Course ID must be a whole number from 1 up."];
  if ("title" in values && (!values.title || values.title.length > MOST_TITLE)) {
    return ["title", `Give the course a title of up to ${MOST_TITLE} characters.`];
  }
  if ("capacity" in values && !whole(values.capacity, 0)) return ["capacity", "Capacity must be a whole number from 0 up."];
  if (values.opens_at && values.closes_at && Date.parse(values.closes_at) <= Date.parse(values.opens_at)) {
    return ["closes_at", "Closes at must be after Opens at."];
  }
  return null;
}

// Says what is wrong next to the form, marks the field and takes the visitor to it.
export function refuse(where, fields, field, text) {
  where.textContent = text;
  const id = fields[field];
  if (id) {
    $(id).setAttribute("aria-invalid", "true");
    $(id).focus();
  }
}
