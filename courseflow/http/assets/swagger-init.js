// Starts Swagger UI on /docs. A file of ours rather than an inline script, so the page's CSP needs no 'unsafe-inline'.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  // null, or Swagger UI sends the document to validator.swagger.io for a badge.
  validatorUrl: null,
  // A token given to "Authorize" lives in this page's memory only, never in localStorage.
  persistAuthorization: false,
  deepLinking: true,
  displayRequestDuration: true,
  // The plain layout: no top bar inviting other documents' URLs (connect-src 'self' refuses them anyway).
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
