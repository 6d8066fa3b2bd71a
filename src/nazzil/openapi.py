"""The OpenAPI 3.1 description of the HTTP API."""

from __future__ import annotations

from typing import Any

from . import __version__
from .errors import CODES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_responses(*statuses: int) -> dict[str, Any]:
    """Describe error answers of the given statuses in the one error shape."""
    return {str(s): {"$ref": "#/components/responses/Error"} for s in statuses}


NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_NUM = {"type": ["number", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "request_id"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": list(CODES)},
                    "message": {"type": "string"},
                },
            },
            "request_id": {"type": "string"},
        },
    },
    "Format": {
        "type": "object",
        "required": ["format_id", "kind"],
        "properties": {
            "format_id": {"type": "string"},
            "ext": NULLABLE_STR,
            "kind": {"type": "string", "enum": ["video+audio", "video", "audio"]},
            "width": NULLABLE_INT,
            "height": NULLABLE_INT,
            "fps": NULLABLE_NUM,
            "vcodec": NULLABLE_STR,
            "acodec": NULLABLE_STR,
            "tbr": NULLABLE_NUM,
            "filesize": NULLABLE_INT,
            "protocol": NULLABLE_STR,
        },
    },
    "MediaInfo": {
        "type": "object",
        "required": ["type", "url", "title", "formats"],
        "properties": {
            "type": {"type": "string", "enum": ["video", "playlist"]},
            "url": NULLABLE_STR,
            "webpage_url": NULLABLE_STR,
            "extractor": NULLABLE_STR,
            "id": NULLABLE_STR,
            "title": NULLABLE_STR,
            "duration": NULLABLE_NUM,
            "thumbnail": NULLABLE_STR,
            "uploader": NULLABLE_STR,
            "upload_date": NULLABLE_STR,
            "formats": {"type": "array", "items": _ref("Format")},
            "entries": {"type": ["array", "null"], "items": _ref("MediaInfo")},
        },
    },
    "UrlRequest": {
        "type": "object",
        "required": ["url"],
        "properties": {"url": {"type": "string", "description": "An absolute http(s) URL."}},
    },
}

PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "summary": "Liveness: the process is up.",
            "operationId": "healthz",
            "responses": {"200": _json({"type": "object"}, "Up.")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: database, queue and storage answer.",
            "operationId": "readyz",
            "responses": {"200": _json({"type": "object"}, "Ready."), **error_responses(503)},
        }
    },
    "/api/v1/info": {
        "get": {
            "summary": "Preview a URL.",
            "operationId": "infoGet",
            "parameters": [
                {"name": "url", "in": "query", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": _json(_ref("MediaInfo"), "What is at the URL."),
                **error_responses(400, 403, 422, 429, 502, 504),
            },
        },
        "post": {
            "summary": "Preview a URL.",
            "operationId": "infoPost",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("UrlRequest")}},
            },
            "responses": {
                "200": _json(_ref("MediaInfo"), "What is at the URL."),
                **error_responses(400, 403, 413, 422, 429, 502, 504),
            },
        },
    },
    "/api/v1/stream": {
        "get": {
            "summary": "Download the media as it is fetched; nothing stays on the server.",
            "description": (
                "A single file is passed through (with Content-Length and Range, so a download "
                "can resume); separate video and audio, HLS and audio conversions are made by "
                "ffmpeg on the fly into fragmented MP4 (or WebM, MP3, Ogg Opus), without "
                "Content-Length. Errors found before the first byte answer in the error shape. "
                "A failure after that (the site stops, a size limit is passed on a stream whose "
                "size was not known) ends the connection without finishing the body, so the "
                "client sees an incomplete transfer rather than a short file."
            ),
            "operationId": "stream",
            "parameters": [
                {"name": "url", "in": "query", "required": True, "schema": {"type": "string"}},
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "default": "best"},
                    "description": "best, audio, a height such as 720p, or a format_id.",
                },
                {
                    "name": "audio_format",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["mp3", "m4a", "opus"]},
                    "description": "With format=audio (default m4a).",
                },
                {
                    "name": "Range",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "bytes=start-end; honoured when one file is passed through.",
                },
            ],
            "responses": {
                "200": {
                    "description": "The media, with Content-Disposition: attachment.",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "206": {
                    "description": "The requested byte range of a passed-through file.",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                **error_responses(400, 403, 416, 422, 429, 502, 503, 504),
            },
        }
    },
    "/api/v1/openapi.json": {
        "get": {
            "summary": "This description.",
            "operationId": "openapi",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
        }
    },
}


# ---- download jobs (issue 3)
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}

SCHEMAS.update(
    {
        "JobRequest": {
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "description": "An absolute http(s) URL."},
                "format": {
                    "type": "string",
                    "default": "best",
                    "description": "best, <height>p (e.g. 720p), audio, or a format_id from "
                    "MediaInfo.formats.",
                },
                "audio_format": {
                    "type": "string",
                    "enum": ["mp3", "m4a", "opus"],
                    "description": "With format audio (default m4a).",
                },
                "start": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 10_000_000,
                    "description": "Cut from (seconds).",
                },
                "end": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 10_000_000,
                    "description": "Cut to (seconds); past the end of the media means to its end.",
                },
            },
        },
        "Job": {
            "type": "object",
            "required": [
                "id",
                "url",
                "status",
                "format",
                "progress",
                "error",
                "file",
                "created_at",
                "updated_at",
                "finished_at",
            ],
            "properties": {
                "id": {"type": "string"},
                "url": {"type": "string"},
                "status": {
                    "type": "string",
                    "enum": ["queued", "running", "finished", "failed", "cancelled"],
                },
                "title": NULLABLE_STR,
                "format": {"type": "string"},
                "progress": {
                    "type": "object",
                    "properties": {
                        "percent": NULLABLE_NUM,
                        "downloaded_bytes": NULLABLE_INT,
                        "total_bytes": NULLABLE_INT,
                        "speed": NULLABLE_NUM,
                        "eta": NULLABLE_NUM,
                    },
                },
                "error": {
                    "type": ["object", "null"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                },
                "file": {
                    "type": ["object", "null"],
                    "properties": {
                        "name": {"type": "string"},
                        "size": {"type": "integer"},
                        "content_type": {"type": "string"},
                        "url": {"type": "string"},
                    },
                },
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "finished_at": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "JobList": {
            "type": "object",
            "required": ["jobs"],
            "properties": {"jobs": {"type": "array", "items": _ref("Job")}},
        },
    }
)

PATHS.update(
    {
        "/api/v1/jobs": {
            "post": {
                "summary": "Queue a download job.",
                "operationId": "createJob",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("JobRequest")}},
                },
                "responses": {
                    "202": {
                        **_json(_ref("Job"), "Queued."),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **error_responses(400, 403, 413, 429, 503, 507),
                },
            },
            "get": {
                "summary": "List this device's jobs, newest first.",
                "operationId": "listJobs",
                "responses": {"200": _json(_ref("JobList"), "The jobs."), **error_responses(503)},
            },
        },
        "/api/v1/jobs/{job_id}": {
            "get": {
                "summary": "Show a job.",
                "operationId": "getJob",
                "parameters": [_JOB_ID],
                "responses": {"200": _json(_ref("Job"), "The job."), **error_responses(404, 503)},
            },
            "delete": {
                "summary": "Delete a job and its file.",
                "operationId": "deleteJob",
                "parameters": [_JOB_ID],
                "responses": {"204": {"description": "Deleted."}, **error_responses(404, 503)},
            },
        },
        "/api/v1/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a queued or running job.",
                "operationId": "cancelJob",
                "parameters": [_JOB_ID],
                "responses": {
                    "200": _json(_ref("Job"), "Cancelled."),
                    **error_responses(404, 409, 503),
                },
            },
        },
        "/api/v1/jobs/{job_id}/retry": {
            "post": {
                "summary": "Queue a failed or cancelled job again.",
                "operationId": "retryJob",
                "parameters": [_JOB_ID],
                "responses": {
                    "202": _json(_ref("Job"), "Queued again."),
                    **error_responses(404, 409, 429, 503, 507),
                },
            },
        },
        "/api/v1/jobs/{job_id}/events": {
            "get": {
                "summary": "Follow a job: server-sent events whose data is the Job JSON; the "
                "stream ends after the final state.",
                "operationId": "jobEvents",
                "parameters": [_JOB_ID],
                "responses": {
                    "200": {
                        "description": "An event stream.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **error_responses(404, 503),
                },
            },
        },
        "/api/v1/jobs/{job_id}/file": {
            "get": {
                "summary": "Download a finished job's file (Range supported).",
                "operationId": "jobFile",
                "parameters": [_JOB_ID],
                "responses": {
                    "200": {
                        "description": "The file, with Content-Disposition.",
                        "content": {"application/octet-stream": {}},
                    },
                    "206": {"description": "Part of the file."},
                    **error_responses(404, 409, 416, 503),
                },
            },
        },
    }
)


def spec() -> dict[str, Any]:
    """Return the whole OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nazzil",
            "version": __version__,
            "description": "Preview and download web videos. Errors share one JSON shape.",
        },
        "paths": PATHS,
        # Open by default; with NAZZIL_ACCESS_TOKENS every path but the health checks needs a
        # token (401 unauthorized otherwise), sent as a Bearer header or set by /login.
        "security": [{}, {"bearer": []}],
        "components": {
            "schemas": SCHEMAS,
            "responses": {"Error": _json(_ref("Error"), "An error in the one JSON shape.")},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An access token from NAZZIL_ACCESS_TOKENS.",
                }
            },
        },
    }
