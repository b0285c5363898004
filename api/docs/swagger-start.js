// Starts Swagger UI on the page /schema/swagger renders; kept in a file so the page needs no inline script.
const container = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: container.dataset.specUrl,
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: false,
  displayOperationId: true,
  presets: [SwaggerUIBundle.presets.apis],
});
