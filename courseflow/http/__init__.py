"""The API process: routes, authentication, limits, request bodies, problem details and the web pages."""
