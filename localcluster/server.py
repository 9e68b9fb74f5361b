"""The REST layer: kube-apiserver's URL scheme, verbs and wire format over the Store.

Request handling follows staging/src/k8s.io/apiserver/pkg/endpoints/handlers
(create.go, get.go, update.go, patch.go, delete.go, watch.go): status codes,
Status bodies and watch framing are the real server's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import yaml
from aiohttp import web

from . import discovery, openapi, podapi, protobuf, schema, tables
from .errors import (
    BadRequest,
    Expired,
    InternalError,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
    StatusError,
    UnsupportedMediaType,
)
from .patch import APPLY, PATCH_TYPES, apply_patch, unsupported_media_type
from .resources import BY_PATH, GROUPS, Resource, lookup
from .store import BOOKMARK_INTERVAL, Entry, Store, dumps

log = logging.getLogger("localcluster.server")

MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's MaxRequestBodyBytes
JSON = "application/json"
NOT_FOUND_MSG = "the server could not find the requested resource"


def status_response(err: StatusError) -> web.Response:
    """Render a StatusError as the real server does."""
    return web.Response(status=err.code, body=dumps(err.status()), content_type=JSON)


def success_status(res: Resource, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The Status kube-apiserver answers a DELETE with when it does not return the object."""
    details: dict[str, Any] = {"name": meta.get("name", "")}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.plural
    details["uid"] = meta.get("uid", "")
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _int(q: Mapping[str, str], key: str) -> int | None:
    raw = q.get(key)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f'invalid value for {key}: "{raw}"') from None


class Api:
    """The aiohttp request handler for every API path."""

    def __init__(self, store: Store, address: str) -> None:
        self.store = store
        self.address = address

    # ---------------------------------------------------------------- entry

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Dispatch one request; every failure becomes a Status body."""
        try:
            return await self.dispatch(request)
        except StatusError as err:
            return status_response(err)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug must not take the server down
            log.exception("unhandled error on %s %s", request.method, request.path)
            return status_response(InternalError(f"Internal error occurred: {exc!r}"))

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Route by path shape to discovery or a resource verb."""
        path = request.path
        parts = [p for p in path.split("/") if p]
        if not parts:
            return self.json(
                {"paths": ["/api", "/api/v1", "/apis", "/livez", "/readyz", "/version"]}
            )
        head = parts[0]
        if head in ("readyz", "livez", "healthz") and request.method in ("GET", "HEAD"):
            return web.Response(text="ok", content_type="text/plain")
        if head == "version" and len(parts) == 1:
            return self.json(discovery.VERSION_INFO)
        if head == "openapi" and len(parts) >= 2 and parts[1] == "v3" and request.method == "GET":
            if len(parts) == 2:
                return self.json(openapi.index())
            doc = openapi.gv_document("/".join(parts[2:]))
            if doc is None:
                raise NotFound(NOT_FOUND_MSG)
            return self.json(doc)
        if head == "api":
            if len(parts) == 1:
                return self.json(discovery.api_versions(self.address))
            group, version, rest = "", parts[1], parts[2:]
        elif head == "apis":
            if len(parts) == 1:
                return self.json(discovery.group_list())
            if len(parts) == 2:
                doc = discovery.group(parts[1])
                if doc is None:
                    raise NotFound(NOT_FOUND_MSG)
                return self.json(doc)
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise NotFound(NOT_FOUND_MSG)
        if group and version not in GROUPS.get(group, []) or not group and version != "v1":
            raise NotFound(NOT_FOUND_MSG)
        if not rest:
            if request.method != "GET":
                raise MethodNotAllowed(
                    "the server does not allow this method on the requested resource"
                )
            doc = discovery.resource_list(group, version)
            if doc is None:
                raise NotFound(NOT_FOUND_MSG)
            return self.json(doc)
        watch_path = False
        if rest[0] == "watch":
            watch_path = True
            rest = rest[1:]
        namespace: str | None = None
        if (
            (
                len(rest) >= 3
                and rest[0] == "namespaces"
                and group == ""
                and rest[2] not in ("status", "finalize")
            )
            or len(rest) >= 3
            and rest[0] == "namespaces"
            and group
        ):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise NotFound(NOT_FOUND_MSG)
        res = BY_PATH.get((group, version, rest[0]))
        if res is None:
            raise NotFound(NOT_FOUND_MSG)
        if namespace is not None and not res.namespaced:
            raise NotFound(NOT_FOUND_MSG)
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in res.subresources:
            raise NotFound(NOT_FOUND_MSG)
        method = request.method
        q = request.query
        if watch_path or (name is None and method == "GET" and _bool(q.get("watch"))):
            if method != "GET" or sub:
                raise MethodNotAllowed(
                    "the server does not allow this method on the requested resource"
                )
            if name is not None:
                # /watch/namespaces/ns/pods/name is a watch on one object.
                return await self.watch(request, res, namespace, f"metadata.name={name}")
            return await self.watch(request, res, namespace, None)
        if res.namespaced and name is not None and namespace is None:
            raise NotFound(NOT_FOUND_MSG)
        if sub == "log":
            if method != "GET":
                raise MethodNotAllowed(
                    "the server does not allow this method on the requested resource"
                )
            return await podapi.logs(self.store, request, namespace or "", name or "")
        if sub == "eviction":
            if method != "POST":
                raise MethodNotAllowed(
                    "the server does not allow this method on the requested resource"
                )
            body = await self.body(request, None)
            return await podapi.evict(self.store, namespace or "", name or "", body, q)
        if sub == "binding":
            if method != "POST":
                raise MethodNotAllowed(
                    "the server does not allow this method on the requested resource"
                )
            body = await self.body(request, None)
            return podapi.bind(self.store, namespace or "", name or "", body)
        if sub == "scale":
            return await self.scale(request, res, namespace, name or "")
        if name is None:
            if method == "GET":
                return self.list(request, res, namespace)
            if method == "POST":
                if res.namespaced and namespace is None:
                    raise MethodNotAllowed(
                        "the server does not allow this method on the requested resource"
                    )
                return await self.create(request, res, namespace)
            if method == "DELETE":
                return await self.delete_collection(request, res, namespace)
            raise MethodNotAllowed(
                "the server does not allow this method on the requested resource"
            )
        if method == "GET":
            if tables.wants_table(request.headers.get("Accept", "")):
                obj = self.store.peek(res, namespace, name) or _raise_not_found(res, name)
                return self.json(
                    tables.table(
                        res, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]}
                    )
                )
            return self.raw(self.store.get_raw(res, namespace, name))
        if method == "PUT":
            return await self.update(request, res, namespace, name, sub)
        if method == "PATCH":
            return await self.patch(request, res, namespace, name, sub)
        if method == "DELETE" and sub is None:
            return await self.delete(request, res, namespace, name)
        if method == "POST" and sub is None:
            raise MethodNotAllowed(
                "the server does not allow this method on the requested resource"
            )
        raise MethodNotAllowed("the server does not allow this method on the requested resource")

    # ---------------------------------------------------------------- helpers

    @staticmethod
    def json(obj: Any, status: int = 200) -> web.Response:
        """A JSON response."""
        return web.Response(status=status, body=dumps(obj), content_type=JSON)

    @staticmethod
    def raw(
        data: bytes, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        """A response whose body is already-serialized JSON."""
        return web.Response(status=status, body=data, content_type=JSON, headers=headers)

    async def read_bytes(self, request: web.Request) -> bytes:
        """Read the body, refusing more than 3 MiB with 413 as kube-apiserver does."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise RequestEntityTooLarge(f"Request entity too large: limit is {MAX_BODY}")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_BODY:
                raise RequestEntityTooLarge(f"Request entity too large: limit is {MAX_BODY}")
            chunks.append(chunk)
        return b"".join(chunks)

    async def body(self, request: web.Request, res: Resource | None, patch: bool = False) -> Any:
        """Decode a JSON (or YAML) body; 400 if malformed, 415 for formats we cannot read."""
        data = await self.read_bytes(request)
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype == protobuf.CONTENT_TYPE and not patch:
            return protobuf.decode(data)
        if patch:
            if not ctype or ctype not in PATCH_TYPES:
                raise unsupported_media_type(ctype)
            if ctype == APPLY:
                raise UnsupportedMediaType(
                    "the body of the request was in an unknown format - server-side apply is not supported by localcluster"
                )
        elif ctype and ctype not in (
            JSON,
            "application/yaml",
            "*/*",
            "text/plain",
            "application/x-www-form-urlencoded",
        ):
            raise UnsupportedMediaType(
                f"the body of the request was in an unknown format - accepted media types include: {JSON}, application/yaml"
            )
        if not data.strip():
            raise BadRequest("the body of the request was empty" if not patch else "empty patch")
        try:
            if ctype == "application/yaml":
                return yaml.safe_load(data)
            return json.loads(data)
        except (ValueError, yaml.YAMLError) as exc:
            if patch:
                raise BadRequest(f"error decoding patch: {exc}") from None
            raise BadRequest(f"couldn't get version/kind; json parse error: {exc}") from None

    def object_body(
        self, res: Resource, body: Any, strict: bool
    ) -> tuple[dict[str, Any], list[str]]:
        """Check apiVersion/kind against the endpoint and type-check the object."""
        if not isinstance(body, dict):
            raise BadRequest(
                f'couldn\'t get version/kind; json parse error: json: cannot unmarshal {type(body).__name__} into Go value of type struct {{ APIVersion string "json:\\"apiVersion,omitempty\\""; Kind string "json:\\"kind,omitempty\\"" }}'
            )
        api_version = body.get("apiVersion")
        kind = body.get("kind")
        if (
            kind is not None
            and not isinstance(kind, str)
            or api_version is not None
            and not isinstance(api_version, str)
        ):
            raise BadRequest(
                "couldn't get version/kind; json parse error: json: cannot unmarshal non-string into Go struct field .kind of type string"
            )
        if kind and kind != res.kind:
            gv = api_version or res.api_version
            version = gv.split("/")[-1]
            raise BadRequest(
                f'{kind} in version "{version}" cannot be handled as a {res.kind}: converting ({version}.{kind}) to ({res.group or "core"}.{res.kind}): unknown conversion'
            )
        if api_version and api_version != res.api_version:
            raise BadRequest(
                f"the API version in the data ({api_version}) does not match the expected API version ({res.api_version})"
            )
        return schema.decode(res, body, strict)

    @staticmethod
    def warnings(unknown: list[str]) -> dict[str, str]:
        """Warning headers for dropped unknown fields (fieldValidation=Warn, the default)."""
        if not unknown:
            return {}
        return {"Warning": ", ".join(f'299 - "unknown field \\"{u}\\""' for u in unknown)}

    # ---------------------------------------------------------------- verbs

    def list(self, request: web.Request, res: Resource, namespace: str | None) -> web.Response:
        """GET on a collection: a List with metadata.resourceVersion, paginated by limit/continue."""
        q = request.query
        entries, rv, token, remaining = self.store.list_page(
            res,
            namespace,
            q.get("labelSelector"),
            q.get("fieldSelector"),
            _int(q, "limit"),
            q.get("continue") or None,
        )
        meta: dict[str, Any] = {"resourceVersion": rv}
        if token:
            meta["continue"] = token
            meta["remainingItemCount"] = remaining
        if tables.wants_table(request.headers.get("Accept", "")):
            return self.json(tables.table(res, [e.obj for e in entries], meta))
        head = b'{"kind":"%s","apiVersion":"%s","metadata":%s,"items":[' % (
            res.list_kind.encode(),
            res.api_version.encode(),
            dumps(meta),
        )
        return self.raw(head + b",".join(e.raw for e in entries) + b"]}")

    async def create(
        self, request: web.Request, res: Resource, namespace: str | None
    ) -> web.Response:
        """POST: 201 with the stored object."""
        body = await self.body(request, res)
        obj, unknown = self.object_body(res, body, request.query.get("fieldValidation") == "Strict")
        if _dry_run(request):
            return self.json(obj, 201)
        entry = self.store.create_sync(res, namespace, obj)
        return self.raw(entry.raw, 201, self.warnings(unknown))

    async def update(
        self, request: web.Request, res: Resource, namespace: str | None, name: str, sub: str | None
    ) -> web.Response:
        """PUT: replace the object (or its status, or a namespace's finalizers)."""
        if sub not in (None, "status", "finalize"):
            raise MethodNotAllowed(
                "the server does not allow this method on the requested resource"
            )
        body = await self.body(request, res)
        obj, unknown = self.object_body(res, body, request.query.get("fieldValidation") == "Strict")
        if sub == "finalize":
            entry = self.store.update_sync(res, None, name, obj, "finalize")
            return self.raw(entry.raw)
        entry = self.store.update_sync(res, namespace, name, obj, sub)
        return self.raw(entry.raw, 200, self.warnings(unknown))

    async def patch(
        self, request: web.Request, res: Resource, namespace: str | None, name: str, sub: str | None
    ) -> web.Response:
        """PATCH with strategic-merge, merge or JSON patch; 415 for other content types."""
        if sub not in (None, "status"):
            raise MethodNotAllowed(
                "the server does not allow this method on the requested resource"
            )
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        body = await self.body(request, res, patch=True)
        current: Entry = self.store.objects[res.key].get(
            (namespace or "", name) if res.namespaced else ("", name)
        ) or _raise_not_found(res, name)
        new = apply_patch(res, json.loads(current.raw), body, ctype)
        if not isinstance(new.get("metadata"), dict):
            new["metadata"] = {}
        # A patch without resourceVersion applies to the version it was computed on.
        if not (
            isinstance(body, dict)
            and isinstance(body.get("metadata"), dict)
            and body["metadata"].get("resourceVersion")
        ):
            new["metadata"]["resourceVersion"] = current.obj["metadata"]["resourceVersion"]
        obj, unknown = self.object_body(res, new, request.query.get("fieldValidation") == "Strict")
        if _dry_run(request):
            return self.json(obj)
        entry = self.store.update_sync(res, namespace, name, obj, sub)
        return self.raw(entry.raw, 200, self.warnings(unknown))

    async def delete_options(self, request: web.Request) -> dict[str, Any]:
        """DeleteOptions from the body (if any) overridden by query parameters."""
        opts: dict[str, Any] = {}
        data = await self.read_bytes(request)
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if data.strip():
            try:
                body = protobuf.decode(data) if ctype == protobuf.CONTENT_TYPE else json.loads(data)
            except ValueError as exc:
                raise BadRequest(f"couldn't get version/kind; json parse error: {exc}") from None
            if not isinstance(body, dict):
                raise BadRequest("json: cannot unmarshal into Go value of type v1.DeleteOptions")
            opts = schema.decode_model("V1DeleteOptions", body, lookup("pods"))
        q = request.query
        grace = _int(q, "gracePeriodSeconds")
        if grace is not None:
            opts["gracePeriodSeconds"] = grace
        if q.get("propagationPolicy"):
            opts["propagationPolicy"] = q["propagationPolicy"]
        if q.get("orphanDependents"):
            opts["orphanDependents"] = _bool(q["orphanDependents"])
        if q.get("dryRun"):
            opts["dryRun"] = [q["dryRun"]]
        policy = opts.get("propagationPolicy")
        if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
            raise BadRequest(
                f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "{policy}": supported values: "Foreground", "Background", "Orphan", "nil"'
            )
        if opts.get("orphanDependents") is not None and policy is None:
            opts["propagationPolicy"] = "Orphan" if opts["orphanDependents"] else "Background"
        return opts

    async def delete(
        self, request: web.Request, res: Resource, namespace: str | None, name: str
    ) -> web.Response:
        """DELETE: the object (or a Success Status) as kube-apiserver returns for this kind."""
        opts = await self.delete_options(request)
        if opts.get("dryRun"):
            return self.raw(self.store.get_raw(res, namespace, name))
        obj, removed = self.store.delete_sync(
            res,
            namespace,
            name,
            opts.get("gracePeriodSeconds"),
            opts.get("propagationPolicy"),
            opts.get("preconditions"),
        )
        code = 200
        if not removed and opts.get("orphanDependents") is False:
            code = 202
        if removed and not res.returns_deleted_object:
            return self.json(success_status(res, obj["metadata"]), code)
        return self.json(obj, code)

    async def delete_collection(
        self, request: web.Request, res: Resource, namespace: str | None
    ) -> web.Response:
        """DELETE on a collection: delete every match, answer the list of deleted objects."""
        if "deletecollection" not in res.verbs:
            raise MethodNotAllowed(
                "the server does not allow this method on the requested resource"
            )
        opts = await self.delete_options(request)
        q = request.query
        entries = self.store.select(res, namespace, q.get("labelSelector"), q.get("fieldSelector"))
        items: list[dict[str, Any]] = []
        for e in entries:
            meta = e.obj["metadata"]
            try:
                obj, _ = self.store.delete_sync(
                    res,
                    meta.get("namespace"),
                    meta["name"],
                    opts.get("gracePeriodSeconds"),
                    opts.get("propagationPolicy"),
                )
            except NotFound:
                continue
            items.append(obj)
        return self.json(
            {
                "kind": res.list_kind,
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": items,
            }
        )

    async def scale(
        self, request: web.Request, res: Resource, namespace: str | None, name: str
    ) -> web.Response:
        """The autoscaling/v1 Scale subresource of deployments and replicasets."""
        current = self.store.peek(res, namespace, name) or _raise_not_found(res, name)
        if request.method == "GET":
            return self.json(_scale_of(current))
        if request.method not in ("PUT", "PATCH"):
            raise MethodNotAllowed(
                "the server does not allow this method on the requested resource"
            )
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        body = await self.body(request, None, patch=request.method == "PATCH")
        if request.method == "PATCH":
            scale = apply_patch(res, _scale_of(current), body, ctype)
        else:
            scale = body
        if not isinstance(scale, dict):
            raise BadRequest("the body of the request must be a Scale object")
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool):
            raise BadRequest(
                'Scale in version "v1" cannot be handled as a Scale: json: cannot unmarshal into Go struct field ScaleSpec.spec.replicas of type int32'
            )
        rv = (
            (scale.get("metadata") or {}).get("resourceVersion")
            if request.method == "PUT"
            else None
        )

        def set_replicas(obj: dict[str, Any]) -> dict[str, Any]:
            obj["spec"]["replicas"] = replicas
            if rv:
                obj["metadata"]["resourceVersion"] = rv
            return obj

        updated = json.loads(dumps(current))
        entry = self.store.update_sync(res, namespace, name, set_replicas(updated))
        return self.json(_scale_of(entry.obj))

    async def watch(
        self, request: web.Request, res: Resource, namespace: str | None, extra_field: str | None
    ) -> web.StreamResponse:
        """A watch stream: newline-delimited {"type","object"} events, BOOKMARKs when asked."""
        q = request.query
        fs = q.get("fieldSelector")
        if extra_field:
            fs = f"{fs},{extra_field}" if fs else extra_field
        timeout = _int(q, "timeoutSeconds")
        bookmarks = _bool(q.get("allowWatchBookmarks"))
        initial = _bool(q.get("sendInitialEvents"))
        rv = q.get("resourceVersion")
        resp = web.StreamResponse(
            status=200, headers={"Content-Type": JSON, "Cache-Control": "no-cache, private"}
        )
        resp.enable_chunked_encoding()
        try:
            watcher, backlog = self.store.open_watch(
                res, namespace, q.get("labelSelector"), fs, None if initial else rv
            )
        except Expired as err:
            await resp.prepare(request)
            status = err.status()
            status.pop("details", None)
            await resp.write(b'{"type":"ERROR","object":' + dumps(status) + b"}\n")
            await resp.write_eof()
            return resp
        as_table = tables.wants_table(request.headers.get("Accept", ""))
        headers_sent = False

        def line(etype: str, obj: dict[str, Any], raw: bytes) -> bytes:
            nonlocal headers_sent
            if not as_table:
                return _event_line(etype, raw)
            # Column definitions travel with the first Table only, as kube-apiserver does.
            tbl = tables.table(
                res,
                [obj],
                {"resourceVersion": obj["metadata"]["resourceVersion"]},
                not headers_sent,
            )
            headers_sent = True
            return _event_line(etype, dumps(tbl))

        try:
            await resp.prepare(request)
            if backlog:
                await resp.write(b"".join(line(t, o, raw) for t, o, raw in backlog))
            if initial and bookmarks:
                await resp.write(self.bookmark(res, initial_end=True))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            while True:
                wait = BOOKMARK_INTERVAL
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                    if wait <= 0:
                        break
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    if bookmarks and (deadline is None or deadline - loop.time() > 0.1):
                        await resp.write(self.bookmark(res))
                    continue
                if item is None:
                    break
                lines = [line(*item)]
                while not watcher.queue.empty():
                    nxt = watcher.queue.get_nowait()
                    if nxt is None:
                        break
                    lines.append(line(*nxt))
                await resp.write(b"".join(lines))
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.store.close_watch(watcher)
        return resp

    def bookmark(self, res: Resource, initial_end: bool = False) -> bytes:
        """A BOOKMARK event carrying only the current resourceVersion."""
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}
        return b'{"type":"BOOKMARK","object":' + dumps(obj) + b"}\n"


def _event_line(etype: str, raw: bytes) -> bytes:
    return b'{"type":"' + etype.encode() + b'","object":' + raw + b"}\n"


def _dry_run(request: web.Request) -> bool:
    return request.query.get("dryRun") == "All"


def _raise_not_found(res: Resource, name: str) -> Any:
    from .errors import not_found

    raise not_found(res.plural, res.group, name)


def _scale_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    selector = obj.get("spec", {}).get("selector") or {}
    sel = ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items())
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""),
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
        "status": {"replicas": obj.get("status", {}).get("replicas", 0), "selector": sel},
    }


def build_app(store: Store, address: str) -> web.Application:
    """Create the aiohttp application serving the API for ``store``."""
    schema.warm()
    api = Api(store, address)
    # Our own 413 check reads the body; aiohttp's limit only guards against abuse.
    app = web.Application(client_max_size=MAX_BODY * 4)
    app.router.add_route("*", "/{tail:.*}", api.handle)
    app["api"] = api
    return app
