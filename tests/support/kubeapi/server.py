"""The HTTP face of the test API server: URL routing, discovery and watch streaming.

It listens on a real socket so the project's kubernetes-asyncio clients run unchanged,
with their own serialisation, query encoding and error handling.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration

from .admission import ValidatingWebhooks
from .errors import ApiError, JsonObj, bad_request, internal, no_such_resource
from .operations import Change, Operations, matcher, present
from .resources import ResourceRegistry, ResourceType
from .selectors import Matcher
from .store import Store, WatchEvent, raise_injected
from .tokens import PATH as TOKEN_REVIEWS
from .tokens import TokenAuthority
from .validation import Validator

_log = logging.getLogger(__name__)
DEFAULT_VERSION = "v1.34.0"
_WATCH_TIMEOUT = 1800.0  # kube-apiserver's --min-request-timeout
# kubernetes-asyncio builds an SSL context for every ApiClient, even for http. Naming a CA file
# spares loading the system bundle (~30-50 ms per client); the certificate itself is never used.
_UNUSED_CA = str(Path(__file__).with_name("unused-ca.pem"))
_VERB_OF = {
    ("POST", False): "create",
    ("PUT", True): "update",
    ("PATCH", True): "patch",
    ("DELETE", True): "delete",
    ("DELETE", False): "deletecollection",
}
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _true(value: str | None) -> bool:
    """Go's strconv.ParseBool, which is what the server applies to query flags ("True" included)."""
    return (value or "").lower() in ("1", "t", "true")


@dataclass(frozen=True)
class Target:
    """What a resource URL names."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def resource(self) -> str:
        return f"{self.rt.plural}/{self.subresource}" if self.subresource else self.rt.plural


class KubeApiServer:
    """A kube-apiserver stand-in. ``async with KubeApiServer() as api:`` serves on 127.0.0.1.

    ``store`` gives tests direct access; ``version`` (default v1.34.0) is both what ``/version``
    reports and which Kubernetes schemas validate objects.
    """

    def __init__(self, version: str = DEFAULT_VERSION, *, history_limit: int = 10_000) -> None:
        self.registry = ResourceRegistry()
        self.store = Store(self.registry, history_limit)
        self.validator = Validator(version)
        self.ops = Operations(self.store, self.validator)
        self.tokens = TokenAuthority(self.store)
        """ServiceAccount tokens tests issue, and the TokenReviews that check them."""
        self.webhooks = ValidatingWebhooks(self.store)
        """The ValidatingWebhookConfigurations' webhooks, called on writes (admission.py)."""
        self.url = ""
        self._runner: web.AppRunner | None = None

    @property
    def version(self) -> str:
        return self.validator.version

    @version.setter
    def version(self, value: str) -> None:
        self.validator.version = value

    async def __aenter__(self) -> KubeApiServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((host, port))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        self.store.close()  # ends open watches
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def configuration(self) -> Configuration:
        """Client configuration for this server (plain http, no credentials)."""
        return Configuration(host=self.url, ssl_ca_cert=_UNUSED_CA)

    @asynccontextmanager
    async def api_client(self) -> AsyncIterator[ApiClient]:
        """A kubernetes-asyncio ApiClient pointed at this server, closed on exit."""
        async with ApiClient(configuration=self.configuration()) as client:
            yield client

    def kubeconfig(self) -> JsonObj:
        """A kubeconfig for ``config.load_kube_config_from_dict`` in code that loads its own config."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "test-token"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            "current-context": "test",
        }

    # --- routing -------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._route(request)
        except ApiError as err:
            return web.json_response(err.status(), status=err.code)
        except Exception as err:  # a bug here: answer like kube-apiserver's panic handler, loudly
            _log.exception("test API server failed on %s %s", request.method, request.path_qs)
            return web.json_response(internal(repr(err)).status(), status=500)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["version"]:
            return web.json_response(self._version_info())
        if parts == TOKEN_REVIEWS and request.method == "POST":
            self.store.requests[("create", "tokenreviews")] += 1
            return web.json_response(self.tokens.review(await self._body(request), self.validator), status=201)
        if not parts or parts[0] not in ("api", "apis"):
            raise no_such_resource()
        if parts[0] == "api":
            group, rest = "", parts[1:]
            if not rest:
                return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        else:
            if len(parts) == 1:
                return web.json_response(self._group_list())
            group, rest = parts[1], parts[2:]
            if not rest:
                return web.json_response(self._group(group))
        if len(rest) == 1:
            return web.json_response(self._resource_list(group, rest[0]))
        return await self._serve(request, self._target(group, rest[0], rest[1:]))

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            scoped = self.registry.lookup(group, version, rest[2])
            if scoped is not None and scoped.namespaced:
                namespace, rest = rest[1], rest[2:]
        rt = self.registry.lookup(group, version, rest[0])
        if rt is None or len(rest) > 3:
            raise no_such_resource()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        allowed_sub = (sub == "status" and rt.status_subresource) or (sub == "eviction" and rt.qualified == "pods")
        if sub is not None and not allowed_sub:
            raise no_such_resource()
        return Target(rt, namespace, name, sub)

    @staticmethod
    def _verb(method: str, t: Target, query: dict[str, str]) -> str:
        """The request's verb as RBAC (and the request counters) name it; 405 when there is none."""
        verb: str | None
        if t.subresource == "eviction":
            verb = "create" if method == "POST" else None
        elif t.subresource == "status":
            verb = {"GET": "get", "PUT": "update", "PATCH": "patch"}.get(method)
        elif method == "GET":
            verb = "get" if t.name else ("watch" if _true(query.get("watch")) else "list")
        else:
            verb = _VERB_OF.get((method, t.name is not None))
        if verb is None:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if t.rt.namespaced and t.namespace is None and verb not in ("list", "watch"):
            raise no_such_resource()
        return verb

    async def _serve(self, request: web.Request, t: Target) -> web.StreamResponse:
        query = dict(request.query)
        verb = self._verb(request.method, t, query)
        self.store.requests[(verb, t.resource)] += 1
        failure = self.store.take_failure(verb, t.resource, t.namespace, t.name)
        if failure is not None:
            raise_injected(failure, t.rt, t.name)
        if "dryRun" in query:
            raise bad_request("dryRun is not implemented by the test API server")
        if verb == "watch":
            return await self._watch(request, t, query)
        body = await self._body(request)
        result, status = await self._call(verb, t, query, body, request.content_type), 200
        if verb == "create":
            status = 201
        return web.json_response(result, status=status)

    async def _call(self, verb: str, t: Target, query: dict[str, str], body: Any, content_type: str) -> JsonObj:
        ops, name = self.ops, t.name or ""
        if verb == "get":
            return ops.get(t.rt, t.namespace, name)
        if verb == "list":
            return ops.list(t.rt, t.namespace, query)
        if verb == "create" and t.subresource == "eviction":
            return ops.evict(t.rt, t.namespace or "", name, body)
        if verb == "create":
            return await self._write(ops.create(t.rt, t.namespace, body))
        if verb == "update":
            return await self._write(ops.update(t.rt, t.namespace, name, body, t.subresource))
        if verb == "patch":
            patched = ops.patch(t.rt, t.namespace, name, body, content_type=content_type, subresource=t.subresource)
            return await self._write(patched)
        options = _delete_options(query, body)
        if verb == "delete":
            return await self._write(ops.delete(t.rt, t.namespace, name, options))
        listed, deletes = ops.delete_collection(t.rt, t.namespace, query, options)
        for change in deletes:
            await self.webhooks.admit(change)
            try:
                change.commit()
            except ApiError as err:  # collected with an owner deleted before it
                if err.code != 404:
                    raise
        return listed

    async def _write(self, change: Change) -> JsonObj:
        """Admitted by the webhooks, then stored: kube-apiserver's order after validation."""
        await self.webhooks.admit(change)
        return change.commit()

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as err:
            raise bad_request(f"the request body is not valid JSON: {err}") from err

    # --- watch ---------------------------------------------------------------------------------------------

    async def _watch(self, request: web.Request, t: Target, query: dict[str, str]) -> web.StreamResponse:
        """Stream newline-delimited events until timeoutSeconds, the client leaving or server stop."""
        match = matcher(t.rt, query.get("labelSelector"), query.get("fieldSelector"))
        rv = query.get("resourceVersion") or ""
        if rv and not rv.isdigit():
            raise bad_request(f"invalid resource version: {rv}")
        bookmarks = _true(query.get("allowWatchBookmarks"))
        timeout = float(query.get("timeoutSeconds") or 0) or _WATCH_TIMEOUT
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            async with asyncio.timeout(timeout):
                await self._stream(resp, t, match, rv, bookmarks and _true(query.get("sendInitialEvents")))
        except TimeoutError:
            pass
        except ApiError as err:
            await _send(resp, "ERROR", err.status())
            return resp
        if bookmarks and not self.store.closed:
            await _send(resp, "BOOKMARK", self._bookmark(t.rt))
        return resp

    async def _stream(self, resp: web.StreamResponse, t: Target, match: Matcher, rv: str, initial: bool) -> None:
        store = self.store
        cursor = int(rv or 0)
        if rv in ("", "0") or initial:
            cursor = store.resource_version
            for obj in store.objects(t.rt, t.namespace):
                if match(obj):
                    await _send(resp, "ADDED", present(t.rt, obj))
            if initial:
                await _send(resp, "BOOKMARK", self._bookmark(t.rt, {"k8s.io/initial-events-end": "true"}))
        while not store.closed:
            events = store.events_since(cursor)
            for event in events:
                cursor = event.rv
                event_type = self._event_type(event, t, match)
                if event_type:
                    await _send(resp, event_type, present(t.rt, event.obj))
            if not events:
                await store.changed()

    @staticmethod
    def _event_type(event: WatchEvent, t: Target, match: Matcher) -> str | None:
        """A filtered watch sees an object entering its selection as ADDED and leaving it as DELETED."""
        if event.key != t.rt.storage_key:
            return None

        def selected(obj: JsonObj | None) -> bool:
            in_namespace = t.namespace is None or (obj or {}).get("metadata", {}).get("namespace") == t.namespace
            return obj is not None and in_namespace and match(obj)

        now_in = selected(event.obj) and event.type != "DELETED"
        was_in = selected(event.old)
        if event.type == "DELETED":
            return "DELETED" if was_in else None
        if now_in:
            return "MODIFIED" if was_in else "ADDED"
        return "DELETED" if was_in else None

    def _bookmark(self, rt: ResourceType, annotations: dict[str, str] | None = None) -> JsonObj:
        meta: JsonObj = {"resourceVersion": str(self.store.resource_version)}
        if annotations:
            meta["annotations"] = annotations
        return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}

    # --- discovery -----------------------------------------------------------------------------------------

    def _version_info(self) -> JsonObj:
        major, minor = self.version.lstrip("v").split(".")[:2]
        return {
            "major": major,
            "minor": minor,
            "gitVersion": self.version,
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _group(self, group: str) -> JsonObj:
        versions = self.registry.group_versions().get(group)
        if not group or not versions:
            raise no_such_resource()
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": listed,
            "preferredVersion": listed[0],
        }

    def _group_list(self) -> JsonObj:
        groups = [self._group(g) for g in self.registry.group_versions() if g]
        entries = [{k: v for k, v in g.items() if k not in ("kind", "apiVersion")} for g in groups]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": entries}

    def _resource_list(self, group: str, version: str) -> JsonObj:
        rts = self.registry.in_group_version(group, version)
        if not rts:
            raise no_such_resource()
        resources: list[JsonObj] = []
        for rt in rts:
            base = {"singularName": "", "namespaced": rt.namespaced, "kind": rt.kind}
            resources.append({**base, "name": rt.plural, "singularName": rt.kind.lower(), "verbs": _VERBS})
            if rt.status_subresource:
                resources.append({**base, "name": f"{rt.plural}/status", "verbs": ["get", "patch", "update"]})
            if rt.qualified == "pods":
                eviction = {"group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}
                resources.append({**base, "name": "pods/eviction", **eviction})
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": rts[0].api_version,
            "resources": resources,
        }


def _delete_options(query: dict[str, str], body: Any) -> JsonObj:
    """DeleteOptions from the body, completed by the query parameters clients also use for them."""
    options: JsonObj = dict(body) if isinstance(body, dict) else {}
    if "propagationPolicy" in query:
        options.setdefault("propagationPolicy", query["propagationPolicy"])
    if "orphanDependents" in query:
        options.setdefault("orphanDependents", _true(query["orphanDependents"]))
    return options


async def _send(resp: web.StreamResponse, event_type: str, obj: JsonObj) -> None:
    await resp.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")
