"""The cluster adapter: the Kubernetes port over kubernetes-asyncio, speaking plain JSON.

It uses the library for what it is good at (configuration: in-cluster service account, kubeconfig, token
refresh; the HTTP session) and sends requests with ``ApiClient.call_api`` on resource paths, asking for plain
``object`` answers. That keeps objects as the server sent them (no model classes that drop unknown fields and need
converting back), one code path for every kind including custom resources, and full control of what the generated
API classes get wrong for us:

- merge patches need the ``application/merge-patch+json`` content type (the generated methods send strategic
  merge patches for dict bodies, which custom resources reject);
- ``watch.Watch`` builds a second ``ApiClient`` with the default configuration on every watch (loading the system
  CA bundle, ~30-50 ms, and not our credentials) and silently retries a 410 once; here a watch is a streamed GET
  on the adapter's own client, and 410 becomes ``Expired`` for the caller to relist;
- an ``ApiClient`` builds its SSL context (CA bundle) once: one adapter, hence one client, per process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config

from libs.kube.backoff import Backoff
from libs.kube.errors import TRANSIENT, KubeError, Unavailable, error_for, status_body
from libs.kube.follow import stop_if_cancelled
from libs.kube.port import EventType, ObjectList, WatchEvent
from libs.kube.resources import PODS, Obj, Resource, check_object
from libs.kube.selectors import Selector, selector_string
from libs.kube.tokenreview import TokenReviewStatus, token_review
from libs.version import VERSION

log = logging.getLogger(__name__)

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
_OBJECT_ANSWERS = {200: "object", 201: "object", 202: "object"}
_EVENT_TYPES: dict[str, EventType] = {"ADDED": "ADDED", "MODIFIED": "MODIFIED", "DELETED": "DELETED"}  # not BOOKMARK
Query = list[tuple[str, str]]
_WATCH_BACKOFF = Backoff(base=0.5, cap=30.0)


class KubeConfigError(KubeError):
    """No usable cluster configuration; the message says which setting to fix."""


def resource_path(
    resource: Resource, namespace: str | None = None, name: str | None = None, subresource: str | None = None
) -> str:
    """``/apis/resource.k8s.io/v1/resourceslices/<name>``, ``/api/v1/namespaces/<ns>/pods/<name>/eviction``."""
    path = f"/apis/{resource.group}/{resource.version}" if resource.group else f"/api/{resource.version}"
    if resource.namespaced and namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{resource.plural}"
    if name:
        path += f"/{quote(name, safe='')}"
    if subresource:
        path += f"/{subresource}"
    return path


def selector_query(fields: Selector | None, labels: Selector | None) -> Query:
    query = []
    if fields:
        query.append(("fieldSelector", selector_string(fields)))
    if labels:
        query.append(("labelSelector", selector_string(labels)))
    return query


def with_kind(resource: Resource, obj: Obj) -> Obj:
    """List items come without apiVersion/kind on the wire; the port always returns whole objects."""
    return {"apiVersion": resource.api_version, "kind": resource.kind, **obj}


async def load_configuration(kubeconfig: str = "") -> Configuration:
    """``""``: the pod's service account; ``http(s)://...``: that URL without credentials (``kubectl proxy``,
    a test server); anything else: a kubeconfig file."""
    configuration = Configuration()
    try:
        if kubeconfig.startswith(("http://", "https://")):
            configuration.host = kubeconfig
        elif kubeconfig:
            await load_kube_config(config_file=kubeconfig, client_configuration=configuration, persist_config=False)
        else:
            load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError) as exc:
        source = f"kubeconfig {kubeconfig}" if kubeconfig else "the in-cluster service account"
        raise KubeConfigError(
            "cluster configuration",
            f"cannot load {source}: {exc}; set GPUDRA_KUBECONFIG to a kubeconfig path or API URL, "
            "or GPUDRA_KUBE_MODE=local to run without a cluster",
        ) from exc
    return configuration


class ClusterKube:
    """``KubeApi`` against a real API server, through one kubernetes-asyncio ``ApiClient``."""

    def __init__(
        self,
        client: ApiClient,
        *,
        request_timeout: float = 30.0,
        watch_timeout: int = 290,
        backoff: Backoff = _WATCH_BACKOFF,
        page_size: int = 500,
    ) -> None:
        """``watch_timeout``: seconds the server keeps one watch request open (the adapter then reconnects);
        ``backoff``: pauses between reconnects after failures; ``page_size``: items per list request."""
        self._client = client
        self._client.user_agent = f"gpudra/{VERSION}"
        self._request_timeout = request_timeout
        self._watch_timeout = watch_timeout
        self._backoff = backoff
        self._page_size = page_size

    @classmethod
    async def connect(cls, kubeconfig: str = "", **options: Any) -> ClusterKube:
        return cls(ApiClient(configuration=await load_configuration(kubeconfig)), **options)

    async def close(self) -> None:
        await self._client.close()

    # --- verbs ------------------------------------------------------------------------------------------

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Obj:
        return await self._call("GET", resource_path(resource, namespace, name), resource.describe(name, namespace))

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        fields: Selector | None = None,
        labels: Selector | None = None,
    ) -> ObjectList:
        """All pages; the resourceVersion is the first page's, which the later pages are consistent with."""
        what = f"{resource.kind} list" + (f" in {namespace}" if namespace else "")
        query = [*selector_query(fields, labels), ("limit", str(self._page_size))]
        page = await self._call("GET", resource_path(resource, namespace), what, query=query)
        version = page["metadata"].get("resourceVersion", "")
        items = [with_kind(resource, item) for item in page.get("items") or ()]
        while token := page["metadata"].get("continue"):
            next_query = [*query, ("continue", token)]
            page = await self._call("GET", resource_path(resource, namespace), what, query=next_query)
            items += [with_kind(resource, item) for item in page.get("items") or ()]
        return ObjectList(items=items, resource_version=version)

    async def create(self, resource: Resource, obj: Obj) -> Obj:
        name, namespace = check_object(resource, obj)
        path = resource_path(resource, namespace)
        return await self._call("POST", path, resource.describe(name, namespace), body=obj)

    async def update(self, resource: Resource, obj: Obj) -> Obj:
        name, namespace = check_object(resource, obj)
        path = resource_path(resource, namespace, name)
        return await self._call("PUT", path, resource.describe(name, namespace), body=obj)

    async def update_status(self, resource: Resource, obj: Obj) -> Obj:
        name, namespace = check_object(resource, obj)
        path = resource_path(resource, namespace, name, "status")
        return await self._call("PUT", path, resource.describe(name, namespace), body=obj)

    async def patch(self, resource: Resource, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        path = resource_path(resource, namespace, name)
        return await self._call("PATCH", path, resource.describe(name, namespace), body=patch, content_type=MERGE_PATCH)

    async def delete(
        self, resource: Resource, name: str, namespace: str | None = None, *, resource_version: str | None = None
    ) -> None:
        options: Obj = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if resource_version:
            options["preconditions"] = {"resourceVersion": resource_version}
        path = resource_path(resource, namespace, name)
        await self._call("DELETE", path, resource.describe(name, namespace), body=options)

    async def evict(self, name: str, namespace: str, *, grace_period_seconds: int | None = None) -> None:
        eviction: Obj = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        if grace_period_seconds is not None:
            eviction["deleteOptions"] = {"gracePeriodSeconds": grace_period_seconds}
        path = resource_path(PODS, namespace, name, "eviction")
        await self._call("POST", path, f"eviction of Pod {namespace}/{name}", body=eviction)

    # --- watch ------------------------------------------------------------------------------------------

    async def review_token(self, token: str, audiences: Sequence[str]) -> TokenReviewStatus:
        """What the API server says of ``token`` for these audiences (the caller may create tokenreviews)."""
        answer = await self._call(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "a TokenReview",
            body=token_review(token, list(audiences)),
        )
        return msgspec.convert(answer.get("status") or {}, TokenReviewStatus)

    async def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        fields: Selector | None = None,
        labels: Selector | None = None,
        resource_version: str | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        if resource_version is None:
            listed = await self.list(resource, namespace, fields=fields, labels=labels)
            for item in listed.items:
                yield WatchEvent("ADDED", item)
            resource_version = listed.resource_version
        follow = self._follow(resource, namespace, selector_query(fields, labels), resource_version)
        async with aclosing(follow) as events:
            async for event in events:
                yield event

    async def _follow(
        self, resource: Resource, namespace: str | None, selectors: Query, resource_version: str
    ) -> AsyncGenerator[WatchEvent, None]:
        """Reconnect from the last resourceVersion seen (bookmarks included) whenever a stream ends."""
        cursor, failures = resource_version, 0
        while True:
            try:
                async with aclosing(self._stream(resource, namespace, selectors, cursor)) as lines:
                    async for event_type, obj in lines:
                        failures = 0
                        cursor = obj.get("metadata", {}).get("resourceVersion") or cursor
                        if event_type in _EVENT_TYPES:
                            yield WatchEvent(_EVENT_TYPES[event_type], with_kind(resource, obj))
            except TRANSIENT as exc:
                stop_if_cancelled()
                delay = self._backoff.delay(failures, random.random())
                failures += 1
                log.warning(
                    "watch interrupted; reconnecting",
                    extra={"resource": resource.qualified, "resource_version": cursor, "error": str(exc)},
                )
                await asyncio.sleep(delay)

    async def _stream(
        self, resource: Resource, namespace: str | None, selectors: Query, cursor: str
    ) -> AsyncGenerator[tuple[str, Obj], None]:
        """One watch request: (type, object) lines until the server's timeout ends it."""
        what = f"{resource.kind} watch" + (f" in {namespace}" if namespace else "")
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(self._watch_timeout)),
            ("resourceVersion", cursor),
            *selectors,
        ]
        timeout = aiohttp.ClientTimeout(sock_connect=self._request_timeout, sock_read=self._watch_timeout + 30)
        path = resource_path(resource, namespace)
        response = await self._send("GET", path, what, query=query, timeout=timeout)
        try:
            if response.status != 200:
                raise error_for(response.status, status_body(await response.read()), what)
            while line := await response.content.readline():
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    raise error_for(int(event["object"].get("code") or 500), event["object"], what)
                yield event["type"], event["object"]
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: a line cut off mid-JSON
            raise Unavailable(what, f"the watch stream broke: {exc!r}") from exc
        finally:
            response.release()

    # --- transport --------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Obj | None = None,
        content_type: str = JSON,
    ) -> Obj:
        answer: Obj = await self._send(
            method,
            path,
            what,
            query=query,
            body=body,
            content_type=content_type,
            timeout=self._request_timeout,
            load=True,
        )
        return answer

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        query: Sequence[tuple[str, str]],
        timeout: float | aiohttp.ClientTimeout,
        body: Obj | None = None,
        content_type: str = JSON,
        load: bool = False,
    ) -> Any:
        """One request; with ``load`` the decoded JSON answer, else the open response (for watches)."""
        try:
            return await self._client.call_api(
                path,
                method,
                query_params=list(query),
                header_params={"Accept": JSON, "Content-Type": content_type},
                body=body,
                response_types_map=_OBJECT_ANSWERS,
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=load,
                _request_timeout=timeout,
            )
        except ApiException as exc:
            raise error_for(exc.status or 0, status_body(exc.body), what) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            host = self._client.configuration.host
            raise Unavailable(what, f"the API server at {host} did not answer: {exc!r}") from exc
