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

from . import (
    auth,
    discovery,
    openapi,
    podapi,
    protobuf,
    rbac,
    scaleapi,
    schema,
    tables,
    validation,
    watchapi,
)
from .errors import (
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
    StatusError,
    UnsupportedMediaType,
    not_found,
)
from .patch import APPLY, PATCH_TYPES, apply_patch, unsupported_media_type
from .query import as_bool, as_int
from .resources import BY_PATH, GROUPS, REVIEWS, Resource, lookup
from .store import Entry, Store, dumps

log = logging.getLogger("localcluster.server")

MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's MaxRequestBodyBytes
JSON = "application/json"
YAML = "application/yaml"
# What kube-apiserver decodes an object body from; anything else (text/plain, a form) is a 415.
BODY_TYPES = (JSON, YAML, protobuf.CONTENT_TYPE)
NOT_FOUND_MSG = "the server could not find the requested resource"


def status_response(err: StatusError) -> web.Response:
    """Render a StatusError as the real server does."""
    return web.Response(status=err.code, body=dumps(err.status()), content_type=JSON)


def not_allowed() -> MethodNotAllowed:
    """The 405 kube-apiserver answers for a verb the path does not serve."""
    return MethodNotAllowed("the server does not allow this method on the requested resource")


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


class Api:
    """The aiohttp request handler for every API path."""

    def __init__(
        self, store: Store, address: str, guard: auth.Guard, authorization: rbac.Authorization
    ) -> None:
        self.store = store
        self.address = address
        self.guard = guard
        self.authorization = authorization

    # ---------------------------------------------------------------- entry

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Dispatch one request; every failure becomes a Status body."""
        try:
            user = self.guard.check(request)
            if user is not None:  # the anonymous user only reaches the public paths
                request["user"] = self.authorization.admit(
                    user, request.method, request.path, request.query, request.headers
                )
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
                raise not_allowed()
            doc = discovery.resource_list(group, version)
            if doc is None:
                raise NotFound(NOT_FOUND_MSG)
            return self.json(doc)
        return await self.resource(request, group, version, rest)

    async def resource(
        self, request: web.Request, group: str, version: str, rest: list[str]
    ) -> web.StreamResponse:
        """Serve /<prefix>/[watch/][namespaces/<ns>/]<plural>[/<name>[/<subresource>]]."""
        watch_path = rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        namespace: str | None = None
        # "namespaces/<name>/status|finalize" are the Namespace's own subresources.
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and (group or rest[2] not in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise NotFound(NOT_FOUND_MSG)
        res = BY_PATH.get((group, version, rest[0]))
        if res is None or (namespace is not None and not res.namespaced):
            raise NotFound(NOT_FOUND_MSG)
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in res.subresources:
            raise NotFound(NOT_FOUND_MSG)
        method = request.method
        if watch_path or (name is None and method == "GET" and as_bool(request.query.get("watch"))):
            if method != "GET" or sub:
                raise not_allowed()
            # /watch/namespaces/ns/pods/name is a watch on one object.
            one = f"metadata.name={name}" if name is not None else None
            return await watchapi.watch(self.store, request, res, namespace, one)
        if res.namespaced and name is not None and namespace is None:
            raise NotFound(NOT_FOUND_MSG)
        if name is None:
            return await self.collection(request, res, namespace)
        if sub in ("log", "eviction", "binding", "scale"):
            return await self.pod_or_scale(request, res, namespace or "", name, sub)
        if method == "GET":
            if tables.wants_table(request.headers.get("Accept", "")):
                obj = self.store.peek(res, namespace, name) or _raise_not_found(res, name)
                meta = {"resourceVersion": obj["metadata"]["resourceVersion"]}
                include = request.query.get("includeObject", "Metadata")
                return self.json(tables.table(res, [obj], meta, include=include))
            return self.raw(self.store.get_raw(res, namespace, name))
        if method == "PUT":
            return await self.update(request, res, namespace, name, sub)
        if method == "PATCH":
            return await self.patch(request, res, namespace, name, sub)
        if method == "DELETE" and sub is None:
            return await self.delete(request, res, namespace, name)
        raise not_allowed()

    async def collection(
        self, request: web.Request, res: Resource, namespace: str | None
    ) -> web.StreamResponse:
        """Verbs on a collection: list, create, deletecollection."""
        if request.method == "GET":
            return self.list(request, res, namespace)
        if request.method == "POST" and res.key in REVIEWS:
            # Asked of the authorizer for the caller, and never stored.
            review, _ = self.object_body(res, await self.body(request, res), False)
            return self.json(self.authorization.review(request["user"], review), 201)
        if request.method == "POST" and not (res.namespaced and namespace is None):
            return await self.create(request, res, namespace)
        if request.method == "DELETE":
            return await self.delete_collection(request, res, namespace)
        raise not_allowed()

    async def pod_or_scale(
        self, request: web.Request, res: Resource, namespace: str, name: str, sub: str
    ) -> web.StreamResponse:
        """The pods/log, pods/eviction, pods/binding and */scale subresources."""
        if sub == "scale":
            return await scaleapi.scale(self, request, res, namespace or None, name)
        expected = "GET" if sub == "log" else "POST"
        if request.method != expected:
            raise not_allowed()
        if sub == "log":
            return await podapi.logs(self.store, request, namespace, name)
        body = await self.body(request, None)
        if sub == "eviction":
            return await podapi.evict(self.store, namespace, name, body, request.query)
        return podapi.bind(self.store, namespace, name, body)

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
        """Decode a body by its Content-Type; 415 before reading a type we do not decode, 400 if malformed."""
        ctype = media_type(request)
        if patch:
            if ctype not in PATCH_TYPES:
                raise unsupported_media_type(ctype)
            if ctype == APPLY:
                raise UnsupportedMediaType(
                    "the body of the request was in an unknown format - server-side apply is not supported by localcluster"
                )
        else:
            check_body_type(ctype)
        data = await self.read_bytes(request)
        if ctype == protobuf.CONTENT_TYPE:
            return protobuf.decode(data)
        if not data.strip():
            raise BadRequest("the body of the request was empty" if not patch else "empty patch")
        try:
            if ctype == YAML:
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
            as_int(q, "limit"),
            q.get("continue") or None,
        )
        meta: dict[str, Any] = {"resourceVersion": rv}
        if token:
            meta["continue"] = token
            meta["remainingItemCount"] = remaining
        if tables.wants_table(request.headers.get("Accept", "")):
            include = q.get("includeObject", "Metadata")
            return self.json(tables.table(res, [e.obj for e in entries], meta, include=include))
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
        if res.has_status and res.kind != "Node":
            # PrepareForCreate resets status (nodes alone may be created with one).
            obj.pop("status", None)
        if res.group == rbac.RBAC_GROUP:
            rbac.validate(res, obj, None)
        entry = self.store.create_sync(res, namespace, obj, dry_run=_dry_run(request))
        return self.raw(entry.raw, 201, self.warnings(unknown))

    async def update(
        self, request: web.Request, res: Resource, namespace: str | None, name: str, sub: str | None
    ) -> web.Response:
        """PUT: replace the object (or its status, or a namespace's finalizers)."""
        if sub not in (None, "status", "finalize"):
            raise not_allowed()
        body = await self.body(request, res)
        obj, unknown = self.object_body(res, body, request.query.get("fieldValidation") == "Strict")
        if sub == "finalize":
            entry = self.store.update_sync(res, None, name, obj, "finalize")
            return self.raw(entry.raw)
        self.check_pod_update(res, namespace, name, obj, sub)
        entry = self.store.update_sync(res, namespace, name, obj, sub, dry_run=_dry_run(request))
        return self.raw(entry.raw, 200, self.warnings(unknown))

    async def patch(
        self, request: web.Request, res: Resource, namespace: str | None, name: str, sub: str | None
    ) -> web.Response:
        """PATCH with strategic-merge, merge or JSON patch; 415 for other content types."""
        if sub not in (None, "status"):
            raise not_allowed()
        ctype = media_type(request)
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
        self.check_pod_update(res, namespace, name, obj, sub)
        entry = self.store.update_sync(res, namespace, name, obj, sub, dry_run=_dry_run(request))
        return self.raw(entry.raw, 200, self.warnings(unknown))

    def check_pod_update(
        self, res: Resource, namespace: str | None, name: str, obj: dict[str, Any], sub: str | None
    ) -> None:
        """Clients may change only a few pod spec fields (binding goes through pods/binding)."""
        if res.group == rbac.RBAC_GROUP:  # and RBAC objects are checked, a roleRef kept
            rbac.validate(res, obj, self.store.peek(res, namespace, name))
        if res.key != "pods" or sub is not None:
            return
        current = self.store.peek(res, namespace, name)
        if current is not None and "spec" in obj:
            validation.validate_pod_update(current, obj)

    async def delete_options(self, request: web.Request) -> dict[str, Any]:
        """DeleteOptions from the body (if any) overridden by query parameters."""
        opts: dict[str, Any] = {}
        data = await self.read_bytes(request)
        ctype = media_type(request)
        if data.strip():
            check_body_type(ctype)
            try:
                if ctype == protobuf.CONTENT_TYPE:
                    body = protobuf.decode(data)
                elif ctype == YAML:
                    body = yaml.safe_load(data)
                else:
                    body = json.loads(data)
            except (ValueError, yaml.YAMLError) as exc:
                raise BadRequest(f"couldn't get version/kind; json parse error: {exc}") from None
            if not isinstance(body, dict):
                raise BadRequest("json: cannot unmarshal into Go value of type v1.DeleteOptions")
            opts = schema.decode_model("V1DeleteOptions", body, lookup("pods"))
        q = request.query
        grace = as_int(q, "gracePeriodSeconds")
        if grace is not None:
            opts["gracePeriodSeconds"] = grace
        if q.get("propagationPolicy"):
            opts["propagationPolicy"] = q["propagationPolicy"]
        if q.get("orphanDependents"):
            opts["orphanDependents"] = as_bool(q["orphanDependents"])
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
            raise not_allowed()
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


def media_type(request: web.Request) -> str:
    """The Content-Type without parameters, lower-cased ("" when absent)."""
    return (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()


def check_body_type(ctype: str) -> None:
    """415 unless an object body is JSON (also when untyped, as kube-apiserver assumes), YAML or protobuf."""
    if ctype and ctype not in BODY_TYPES:
        raise UnsupportedMediaType(
            f"the body of the request was in an unknown format - accepted media types include: {', '.join(BODY_TYPES)}"
        )


def _dry_run(request: web.Request) -> bool:
    return request.query.get("dryRun") == "All"


def _raise_not_found(res: Resource, name: str) -> Any:
    raise not_found(res.plural, res.group, name)


def build_app(
    store: Store, address: str, guard: auth.Guard, authorization_mode: str = "AlwaysAllow"
) -> web.Application:
    """The aiohttp application serving ``store`` to callers ``guard`` admits and ``authorization_mode`` allows."""
    schema.warm()
    api = Api(store, address, guard, rbac.Authorization(authorization_mode, store))
    # Our own 413 check reads the body; aiohttp's limit only guards against abuse.
    app = web.Application(client_max_size=MAX_BODY * 4)
    app.router.add_route("*", "/{tail:.*}", api.handle)
    app["api"] = api
    return app
