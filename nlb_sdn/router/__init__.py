"""The L7 request router (SPEC §2.3): parsers of the first request, routing rules and the router daemon."""
