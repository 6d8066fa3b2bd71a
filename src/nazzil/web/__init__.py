"""nazzil's blueprints: pages (HTML), api (/api/v1), events (SSE)."""
