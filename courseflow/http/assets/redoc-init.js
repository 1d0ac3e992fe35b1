// Starts ReDoc on /redoc. A file of ours rather than an inline script, so the page's CSP needs no 'unsafe-inline'.
"use strict";
Redoc.init(
  "/openapi.json",
  {
    // ReDoc's default fonts (Roboto, Montserrat) are web fonts nobody loads here: name the reader's own instead.
    theme: {
      typography: {
        fontFamily: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
        headings: { fontFamily: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif" },
        code: { fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" },
      },
    },
  },
  document.getElementById("redoc"),
);
