"""The HTTP machinery every resource shares: the error envelope, request ids and the access log,
authentication and authorization, rate limits, idempotency, JSON and the OpenAPI document."""
