// The board's course forms (create, change): their checks, said in the forms' own words. The limits are the
// API's own, read from its OpenAPI document: stating them again here is how they drifted before.

import { $ } from "./page.js";

export const LABELS = { course_id: "Course ID", title: "Title", capacity: "Capacity", opens_at: "Opens at", closes_at: "Closes at" };

let documented = null;

// The body schemas of /openapi.json by name (NewCourse, CoursePatch), read once. Without them the forms check
// nothing themselves: the server checks every field anyway, and its answers are put in the forms' words.
export async function limits(name) {
  documented ??= fetch("/openapi.json")
    .then((response) => (response.ok ? response.json() : null))
    .then((document) => document?.components?.schemas ?? {})
    .catch(() => ({}));
  return (await documented)[name] ?? { properties: {}, required: [] };
}

// Marks the form's inputs as the schema says: required ones, and the longest text each takes.
export function describe(schema, fields) {
  for (const [field, id] of Object.entries(fields)) {
    const rule = ruleOf(schema, field);
    if (!rule) continue;
    $(id).required = (schema.required ?? []).includes(field);
    if (rule.maxLength !== undefined) $(id).maxLength = rule.maxLength;
  }
}

// The form's own checks, before anything is sent.
export function mistake(schema, values) {
  for (const [field, value] of Object.entries(values)) {
    const rule = ruleOf(schema, field);
    const wrong = rule && broken(rule, field, value, (schema.required ?? []).includes(field));
    if (wrong) return [field, wrong];
  }
  if (values.opens_at && values.closes_at && Date.parse(values.closes_at) <= Date.parse(values.opens_at)) {
    return ["closes_at", "Closes at must be after Opens at."];
  }
  return null;
}

// A nullable field's rule is its non-null alternative.
function ruleOf(schema, field) {
  const rule = schema.properties?.[field];
  return rule?.anyOf ? rule.anyOf.find((option) => option.type !== "null") : rule;
}

function broken(rule, field, value, required) {
  const label = LABELS[field] ?? field;
  if (value === undefined || value === null || value === "") return required ? `Give the course a ${label}.` : null;
  if (rule.type === "integer") {
    const least = rule.minimum ?? Number.MIN_SAFE_INTEGER;
    const most = Math.min(rule.maximum ?? Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
    if (Number.isSafeInteger(value) && value >= least && value <= most) return null;
    const range = most === Number.MAX_SAFE_INTEGER ? `from ${least} up` : `from ${least} to ${most.toLocaleString("en-US")}`;
    return `${label} must be a whole number ${range}.`;
  }
  // The API's one pattern says "not blank": a title of spaces names nothing.
  if (rule.type === "string" && rule.pattern !== undefined && !new RegExp(rule.pattern, "u").test(value)) {
    return required ? `Give the course a ${label}.` : `${label} cannot be blank.`;
  }
  if (rule.type === "string" && rule.maxLength !== undefined && value.length > rule.maxLength) {
    return `${label} takes up to ${rule.maxLength} characters.`;
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
