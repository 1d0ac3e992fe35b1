// What both pages do alike: show and hide their parts, tell of trouble, and open on the right sign-in.

import { ApiError, authMode, explain } from "./api.js";

export const $ = (id) => document.getElementById(id);

export function show(id, visible = true) {
  $(id).hidden = !visible;
}

export function notice(text) {
  // Written only when it changes: an alert region is read out on every write, and the pages refresh on timers.
  if ($("notice").textContent !== (text || "")) $("notice").textContent = text || "";
  show("notice", Boolean(text));
}

// Open the page: `resume()` signs in again from what this tab kept (false: nothing kept); failing that, `fresh`
// gets the server's mode ({auth, me}) and why the kept sign-in no longer holds. Retries while the API is down.
export async function begin(resume, fresh) {
  try {
    let message = "";
    try {
      if (await resume()) return;
    } catch (error) {
      if (error instanceof ApiError && error.retryable) throw error;
      message = explain(error);
    }
    await fresh(await authMode(), message);
  } catch (error) {
    notice(explain(error));
    if (error instanceof ApiError && error.retryable) setTimeout(() => begin(resume, fresh), error.retryAfterS * 1000);
  } finally {
    show("loading", false);
  }
}

// Sign in again with what this tab kept under `key` (false: nothing kept); what no longer holds is forgotten.
export async function signInAgain(key, signIn) {
  const kept = sessionStorage.getItem(key);
  if (!kept) return false;
  try {
    await signIn(kept);
    return true;
  } catch (error) {
    sessionStorage.removeItem(key);
    throw error;
  }
}
