// Live status over the API's WebSocket (/api/v1/ws): the same messages as its Server-Sent Events, with the token
// offered as the `bearer` subprotocol since a browser cannot set headers on a WebSocket. A dropped socket
// reopens after a pause and resumes after the last message's `id`, so nothing in between is missed.

import { readJson } from "./api.js";

const MAX_PAUSE_S = 30;
// A browser is not told why a handshake failed (a refused token looks like a lost network): after this many
// sockets in a row that brought nothing, the page is asked to look into it instead.
const MOST_SILENT = 3;

export function follow(query, token, { message, ended }) {
  let after = null;
  let socket = null;
  let stopped = false;
  let failures = 0;
  let timer = null;

  function open() {
    const url = new URL("/api/v1/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    for (const [name, value] of Object.entries(query)) url.searchParams.set(name, String(value));
    if (after !== null) url.searchParams.set("after", String(after));
    socket = token ? new WebSocket(url, ["bearer", token]) : new WebSocket(url);
    let refused = null;
    let last = null;
    socket.onmessage = (event) => {
      const received = readJson(event.data);
      if (received.type === "error") {
        refused = received;
        return;
      }
      if (received.type !== "reconnect") failures = 0;
      last = received;
      if (typeof received.id === "number") after = received.id;
      if (received.type !== "reconnect") message(received);
    };
    socket.onclose = () => {
      if (stopped) return;
      // Refused for good (not found, not allowed, a bad token): say so and stop; a full server is worth retrying.
      if (refused && refused.status < 500 && refused.status !== 429) {
        ended({ refused });
        return;
      }
      if (last && last.type === "reconnect" && last.reason === "expired") {
        ended({ expired: true });
        return;
      }
      failures += 1;
      if (failures >= MOST_SILENT) {
        ended({ silent: true });
        return;
      }
      const pause = Math.min(MAX_PAUSE_S, 2 ** Math.min(failures, 5) / 2);
      timer = setTimeout(open, pause * 1000);
    };
  }

  open();
  return {
    close() {
      stopped = true;
      clearTimeout(timer);
      if (socket) socket.close(1000);
    },
  };
}
