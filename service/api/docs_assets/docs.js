// Starts Swagger UI on the docs page (service/api/docs.py). A file, not an inline script: the
// page's Content-Security-Policy allows scripts from this origin only.
"use strict";
const root = document.getElementById("swagger-ui");
window.SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  domNode: root,
  deepLinking: true,
  // The public validator is another origin: the page never calls it.
  validatorUrl: null,
});
