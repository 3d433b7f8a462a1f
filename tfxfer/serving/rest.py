"""TF Serving's REST API on aiohttp (tensorflow_serving/model_servers/http_rest_api_handler.cc).

POST /v1/models/<name>[/versions/<v>]:predict   GET /v1/models/<name>[/versions/<v>][/metadata]
Every error is `{"error": "<message>"}` with the HTTP status TF Serving maps its status code to.
"""
from __future__ import annotations

import json
import re

import grpc
from aiohttp import web
from google.protobuf import json_format

from tfxfer.serving.errors import ServingError, invalid
from tfxfer.serving.json_tensors import parse_request, response_json

PREDICT_PATH = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+))?:(classify|regress|predict)", re.IGNORECASE)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+))?(?:/(metadata))?", re.IGNORECASE)
# Past the body limit the rest of an oversize upload is still read (and dropped), up to this many
# times the limit, so the client gets its 413 instead of a connection reset mid-upload.
DRAIN_FACTOR = 16


def make_app(core, max_body_bytes: int) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        try:
            text = await _dispatch(core, request, max_body_bytes)
            return web.Response(text=text, content_type="application/json")
        except ServingError as e:
            return _error(e.http_status, e.message)
        except Exception as e:
            core.log.exception("REST request %s %s failed", request.method, request.path)
            return _error(500, f"Internal error: {type(e).__name__}: {e}")

    # aiohttp's own limit answers with a text page; the body is read and limited in _read_body.
    app = web.Application(client_max_size=2 ** 62)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"error": message}), content_type="application/json")


async def _dispatch(core, request: web.Request, max_body_bytes: int) -> str:
    path, method = request.path, request.method
    if method == "POST" and (m := PREDICT_PATH.fullmatch(path)):
        name, version, verb = m.group(1), _version(m.group(2)), m.group(3).lower()
        body = await _read_body(request, max_body_bytes)
        if verb != "predict":
            raise invalid(f"Only :predict is served here (the request asked for :{verb}); call a signature such as "
                          f"'classify' with :predict and \"signature_name\"")
        servable = core.manager.get(name, version)
        signature, inputs, request_format = parse_request(body, servable.signature)
        outputs = await core.batcher.run(servable, signature, inputs)
        return response_json(outputs, request_format)
    if method == "GET" and (m := STATUS_PATH.fullmatch(path)):
        name, version, metadata = m.group(1), _version(m.group(2)), m.group(3)
        if not name:
            raise invalid("Missing model name in request.")
        if metadata:
            return metadata_json(core.metadata(name, version))
        return json_format.MessageToJson(core.manager.status(name, version),
                                         always_print_fields_with_no_presence=True)
    if path.lower().startswith("/v1/"):
        raise invalid(f"Malformed request: {method} {path}")
    raise ServingError(grpc.StatusCode.NOT_FOUND, f"Not found: {method} {path}; the API is under /v1/models/")


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise invalid(f"Failed to convert version: {text} to numeric.") from None


async def _read_body(request: web.Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > DRAIN_FACTOR * limit:
            break
    if size > limit:
        declared = request.content_length or size
        raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"Request body of {declared} bytes exceeds the limit of {limit} bytes "
                           f"(tfxfer serve --max-body-mb)", http_status=413)
    return b"".join(chunks)


def metadata_json(response) -> str:
    """GetModelMetadataResponse as TF Serving's REST metadata JSON (proto field names kept)."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_defs)
    options = {"always_print_fields_with_no_presence": True, "preserving_proto_field_name": True}
    return json.dumps({
        "model_spec": json_format.MessageToDict(response.model_spec, **options),
        "metadata": {"signature_def": json_format.MessageToDict(signature_defs, **options)},
    }, indent=1)
