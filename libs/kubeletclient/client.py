"""A kubelet-like gRPC client for a DRA plugin: registration, prepare/unprepare, health stream.

It behaves like the kubelet does towards a DRA driver (facts: shared/facts/kubelet-dra-api.md §1-§3),
so end-to-end tests and the ``gpudra kubelet`` CLI exercise the driver the way a real node would:

* registration: ``GetInfo`` on the registration socket, type ``DRAPlugin``, the first entry of the
  plugin's ``supported_versions`` (in the plugin's order) that this client speaks, then
  ``NotifyRegistrationStatus``; a plugin that fails validation is told so, with the reason;
* ``prepare`` / ``unprepare`` over the DRA socket named by ``PluginInfo.endpoint``, with the
  kubelet's 45 s deadline per call, and the kubelet's check that the response holds exactly the
  requested claim UIDs (a per-claim ``error`` is a result, a gRPC error fails the call);
* ``watch_health``: the ``NodeWatchResources`` stream, when the plugin advertises it.

W3C trace context is sent as gRPC metadata when an OpenTelemetry context is active, so one
``prepare`` shows up as one trace through the driver.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Self

import grpc
import grpc.aio
from opentelemetry import propagate

from protos.gen import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    health_v1alpha1_pb2,
    health_v1alpha1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)

if TYPE_CHECKING:
    from protos.gen.health_v1alpha1_pb2_grpc import DRAResourceHealthAsyncStub as HealthStub
    from protos.gen.pluginregistration_pb2_grpc import RegistrationAsyncStub as RegistrationStub

PLUGIN_TYPE = "DRAPlugin"
DRA_V1 = "v1.DRAPlugin"
DRA_V1BETA1 = "v1beta1.DRAPlugin"
HEALTH_V1ALPHA1 = "v1alpha1.DRAResourceHealth"
# What kubelet 1.34-1.36 speaks, in no particular order: the plugin's order decides.
SUPPORTED_DRA_VERSIONS = frozenset({DRA_V1, DRA_V1BETA1})
# The kubelet's deadline for each DRA call.
DEFAULT_CALL_TIMEOUT = 45.0
# Registration calls are quick; the kubelet gives GetInfo one second, we are a little more patient.
DEFAULT_REGISTRATION_TIMEOUT = 5.0
REGISTRATION_SUFFIX = "-reg.sock"


class KubeletClientError(Exception):
    """Base of every error this client raises on its own account."""


class RegistrationError(KubeletClientError):
    """The plugin could not be found or was not accepted (wrong type, no common version, ...)."""


class ClaimMismatchError(KubeletClientError):
    """The plugin's response map does not hold exactly the requested claim UIDs (kubelet rejects it)."""


class PluginCallError(KubeletClientError):
    """A DRA call failed as a whole with a gRPC error (the kubelet fails every claim in the call)."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method} failed: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


class ClaimRef(NamedTuple):
    """What the kubelet sends about a claim; a plain ``(namespace, name, uid)`` tuple works too."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class PluginInfo:
    """``GetInfo``'s answer, with the endpoint resolved like the kubelet does."""

    type: str
    name: str
    endpoint: str
    supported_versions: tuple[str, ...]
    registration_socket: str


@dataclass(frozen=True)
class PreparedDevice:
    """One device of a prepared claim, as the kubelet hands it on to the container runtime."""

    request_names: tuple[str, ...]
    pool_name: str
    device_name: str
    cdi_device_ids: tuple[str, ...]
    # None when not set (always for v1beta1, which has no field 5).
    share_id: str | None = None


@dataclass(frozen=True)
class PrepareResult:
    """Per-claim prepare outcome: devices, or a non-empty ``error`` (then devices are ignored)."""

    devices: tuple[PreparedDevice, ...] = ()
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class UnprepareResult:
    """Per-claim unprepare outcome: a non-empty ``error`` means the kubelet will retry."""

    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


class HealthStatus(enum.StrEnum):
    """Device health as pods see it in ``allocatedResourcesStatus``."""

    UNKNOWN = "Unknown"
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


_HEALTH_FROM_PROTO: Mapping[int, HealthStatus] = {
    health_v1alpha1_pb2.UNKNOWN: HealthStatus.UNKNOWN,
    health_v1alpha1_pb2.HEALTHY: HealthStatus.HEALTHY,
    health_v1alpha1_pb2.UNHEALTHY: HealthStatus.UNHEALTHY,
}


@dataclass(frozen=True)
class DeviceHealth:
    """One entry of a ``NodeWatchResources`` message (each message is the complete device list)."""

    pool_name: str
    device_name: str
    health: HealthStatus
    last_updated_time: int
    health_check_timeout_seconds: int = 0
    message: str = ""


ClaimLike = ClaimRef | tuple[str, str, str]


def _claim_refs(claims: Iterable[ClaimLike]) -> list[ClaimRef]:
    return [ClaimRef(*claim) for claim in claims]


def _unix_target(path: str | os.PathLike[str]) -> str:
    return f"unix://{os.path.abspath(path)}"


def _trace_metadata() -> tuple[tuple[str, str], ...]:
    """W3C trace context (and baggage) of the active OpenTelemetry context, as gRPC metadata.

    Empty when no span is active, so untraced calls carry no extra headers.
    """
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple((key.lower(), value) for key, value in carrier.items())


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


def select_version(supported_versions: Sequence[str], force: str | None = None) -> str:
    """Pick the DRA service version like the kubelet: the first of the plugin's list that we speak.

    ``force`` ("v1", "v1beta1" or the full "v1.DRAPlugin" form) narrows what we speak to one
    version, to test a driver's older face.
    """
    speak = SUPPORTED_DRA_VERSIONS if force is None else frozenset({_check_force(force)})
    for version in supported_versions:
        if version in speak:
            return version
    raise RegistrationError(
        f"none of the versions supported {sorted(speak)} appear in the list of versions "
        f"advertised by the plugin {list(supported_versions)}"
    )


async def get_plugin_info(
    registration_socket: str | os.PathLike[str], *, deadline_s: float = DEFAULT_REGISTRATION_TIMEOUT
) -> PluginInfo:
    """Call ``GetInfo`` on a registration socket (no validation, no notification)."""
    async with grpc.aio.insecure_channel(_unix_target(registration_socket)) as channel:
        return await _get_info(channel, registration_socket, deadline_s)


async def _get_info(
    channel: grpc.aio.Channel, registration_socket: str | os.PathLike[str], deadline_s: float
) -> PluginInfo:
    stub: RegistrationStub = pluginregistration_pb2_grpc.RegistrationStub(channel)
    try:
        info: pluginregistration_pb2.PluginInfo = await stub.GetInfo(
            pluginregistration_pb2.InfoRequest(), timeout=deadline_s
        )
    except grpc.aio.AioRpcError as err:
        raise RegistrationError(f"GetInfo on {registration_socket} failed: {err.code().name}: {err.details()}") from err
    return PluginInfo(
        type=info.type,
        name=info.name,
        # Like the kubelet's plugin watcher: no endpoint means the registration socket serves it all.
        endpoint=info.endpoint or os.fspath(registration_socket),
        supported_versions=tuple(info.supported_versions),
        registration_socket=os.fspath(registration_socket),
    )


async def find_registration_socket(
    registry_dir: str | os.PathLike[str],
    driver_name: str,
    *,
    deadline_s: float = DEFAULT_REGISTRATION_TIMEOUT,
) -> Path:
    """Find the registration socket of ``driver_name`` in a kubelet ``plugins_registry`` directory.

    The conventional ``<driver>-reg.sock`` wins. Otherwise every socket whose name does not start
    with ``.`` (the kubelet ignores those) is asked for its info, newest first, as a rolling update
    leaves ``<driver>-<podUID>-reg.sock`` next to the old one and the kubelet prefers the newest.
    """
    directory = Path(registry_dir)
    conventional = directory / f"{driver_name}{REGISTRATION_SUFFIX}"
    if _is_socket(conventional):
        return conventional
    for candidate in _registration_candidates(directory):
        try:
            info = await get_plugin_info(candidate, deadline_s=deadline_s)
        except RegistrationError:
            continue  # a stale socket left by a dead plugin; the kubelet skips it too
        if info.type == PLUGIN_TYPE and info.name == driver_name:
            return candidate
    raise RegistrationError(f"no registration socket for DRA driver {driver_name!r} in {directory}")


def _registration_candidates(directory: Path) -> list[Path]:
    """Sockets in ``directory`` the kubelet would consider, newest first.

    A local directory listing is quick, so it stays on the event loop.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError as err:
        raise RegistrationError(f"registration directory {directory} does not exist") from err
    found: list[tuple[int, str, Path]] = []
    for name in names:
        path = directory / name
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not name.startswith(".") and stat.S_ISSOCK(st.st_mode):
            found.append((st.st_mtime_ns, name, path))
    found.sort(reverse=True)
    return [path for _, _, path in found]


async def _notify(channel: grpc.aio.Channel, registered: bool, error: str, deadline_s: float) -> None:
    stub: RegistrationStub = pluginregistration_pb2_grpc.RegistrationStub(channel)
    await stub.NotifyRegistrationStatus(
        pluginregistration_pb2.RegistrationStatus(plugin_registered=registered, error=error),
        timeout=deadline_s,
    )


class KubeletClient:
    """Talks to one registered DRA plugin like the kubelet. Use ``register`` or ``discover``.

    The DRA channel is opened on first use and closed by ``close`` (or ``async with``).
    """

    def __init__(self, info: PluginInfo, version: str, *, call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self.info = info
        self.version = version
        self.call_timeout = call_timeout
        self._channel: grpc.aio.Channel | None = None

    # -- registration ---------------------------------------------------------------------------

    @classmethod
    async def register(
        cls,
        registration_socket: str | os.PathLike[str],
        *,
        driver_name: str | None = None,
        force_version: str | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        registration_timeout: float = DEFAULT_REGISTRATION_TIMEOUT,
    ) -> Self:
        """Register the plugin behind ``registration_socket`` the way the kubelet does.

        GetInfo, validate (type ``DRAPlugin``, expected ``driver_name`` if given, a common DRA
        version), then NotifyRegistrationStatus: registered, or not with the reason before raising
        ``RegistrationError``, so the plugin's own error path is exercised too.
        """
        if force_version is not None:
            _check_force(force_version)  # a misspelt version is our mistake, not the plugin's
        # One connection for GetInfo and NotifyRegistrationStatus, as the kubelet's plugin watcher.
        async with grpc.aio.insecure_channel(_unix_target(registration_socket)) as channel:
            info = await _get_info(channel, registration_socket, registration_timeout)
            if info.type != PLUGIN_TYPE:
                reason = f"no handler registered for plugin type: {info.type} at socket {registration_socket}"
                await _notify(channel, False, f"RegisterPlugin error -- {reason}", registration_timeout)
                raise RegistrationError(reason)
            try:
                if not info.name:
                    raise RegistrationError(f"plugin at {registration_socket} has an empty name")
                if driver_name is not None and info.name != driver_name:
                    raise RegistrationError(
                        f"plugin at {registration_socket} is {info.name!r}, expected {driver_name!r}"
                    )
                version = select_version(info.supported_versions, force_version)
            except RegistrationError as err:
                await _notify(
                    channel,
                    False,
                    f"RegisterPlugin error -- plugin validation failed with err: {err}",
                    registration_timeout,
                )
                raise
            await _notify(channel, True, "", registration_timeout)
        return cls(info, version, call_timeout=call_timeout)

    @classmethod
    async def discover(
        cls,
        registry_dir: str | os.PathLike[str],
        driver_name: str,
        *,
        force_version: str | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        registration_timeout: float = DEFAULT_REGISTRATION_TIMEOUT,
    ) -> Self:
        """Find ``driver_name``'s registration socket in ``registry_dir``, then ``register`` it."""
        socket = await find_registration_socket(registry_dir, driver_name, deadline_s=registration_timeout)
        return await cls.register(
            socket,
            driver_name=driver_name,
            force_version=force_version,
            call_timeout=call_timeout,
            registration_timeout=registration_timeout,
        )

    @property
    def supports_health(self) -> bool:
        """Whether the plugin advertises the resource health stream."""
        return HEALTH_V1ALPHA1 in self.info.supported_versions

    # -- DRA calls ------------------------------------------------------------------------------

    def _dra_channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(_unix_target(self.info.endpoint))
        return self._channel

    async def prepare(self, claims: Iterable[ClaimLike]) -> dict[str, PrepareResult]:
        """NodePrepareResources for ``claims``; returns claim UID -> result.

        Raises ``PluginCallError`` on a gRPC error and ``ClaimMismatchError`` when the answer
        does not cover exactly the requested UIDs, as the kubelet would refuse it.
        """
        refs = _claim_refs(claims)
        response = await self._dra_call("NodePrepareResources", refs)
        results = {uid: _prepare_result(r) for uid, r in response.claims.items()}
        _check_claims("NodePrepareResources", refs, results)
        return results

    async def unprepare(self, claims: Iterable[ClaimLike]) -> dict[str, UnprepareResult]:
        """NodeUnprepareResources for ``claims``; returns claim UID -> result (same checks as prepare)."""
        refs = _claim_refs(claims)
        response = await self._dra_call("NodeUnprepareResources", refs)
        results = {uid: UnprepareResult(error=r.error) for uid, r in response.claims.items()}
        _check_claims("NodeUnprepareResources", refs, results)
        return results

    async def _dra_call(self, method: str, refs: Sequence[ClaimRef]) -> Any:
        """``method`` of the negotiated DRA version. v1 and v1beta1 requests and responses have the same
        fields but for v1's ``share_id``, so one path builds and reads both."""
        pb2, pb2_grpc = (
            (dra_v1_pb2, dra_v1_pb2_grpc) if self.version == DRA_V1 else (dra_v1beta1_pb2, dra_v1beta1_pb2_grpc)
        )
        stub = pb2_grpc.DRAPluginStub(self._dra_channel())
        request = getattr(pb2, f"{method}Request")(
            claims=[pb2.Claim(namespace=c.namespace, name=c.name, uid=c.uid) for c in refs]
        )
        try:
            return await getattr(stub, method)(request, timeout=self.call_timeout, metadata=_trace_metadata())
        except grpc.aio.AioRpcError as err:
            raise PluginCallError(method, err.code(), err.details() or "") from err

    def watch_health(self, *, require_advertised: bool = True) -> AsyncGenerator[list[DeviceHealth], None]:
        """Open ``NodeWatchResources``; yields each message (the plugin's complete device list).

        The kubelet opens this stream only on plugins that advertise ``v1alpha1.DRAResourceHealth``
        (checked here, at once); ``require_advertised=False`` opens it anyway, to test what a plugin
        does then. Closing the generator (``aclose`` or leaving ``async for``) cancels the stream.
        A gRPC error ends it with ``PluginCallError``, except a cancellation we caused ourselves.
        """
        if require_advertised and not self.supports_health:
            raise KubeletClientError(
                f"plugin {self.info.name!r} does not advertise {HEALTH_V1ALPHA1} "
                f"(supported_versions: {list(self.info.supported_versions)})"
            )
        return self._health_stream()

    async def _health_stream(self) -> AsyncGenerator[list[DeviceHealth], None]:
        stub: HealthStub = health_v1alpha1_pb2_grpc.DRAResourceHealthStub(self._dra_channel())
        # No deadline: the stream lives as long as the plugin is registered.
        call = stub.NodeWatchResources(health_v1alpha1_pb2.NodeWatchResourcesRequest(), metadata=_trace_metadata())
        try:
            async for response in call:
                yield [_device_health(d) for d in response.devices]
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                raise PluginCallError("NodeWatchResources", err.code(), err.details() or "") from err
        finally:
            call.cancel()

    # -- lifecycle ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the DRA channel (idempotent); open health streams end with it."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _check_force(force: str) -> str:
    """Normalise a forced version ("v1" -> "v1.DRAPlugin"); ValueError if this client cannot speak it."""
    wanted = force if force.endswith(".DRAPlugin") else f"{force}.DRAPlugin"
    if wanted not in SUPPORTED_DRA_VERSIONS:
        raise ValueError(f"cannot force {force!r}: this client speaks {sorted(SUPPORTED_DRA_VERSIONS)}")
    return wanted


def _check_claims(method: str, refs: Sequence[ClaimRef], results: Mapping[str, object]) -> None:
    """The kubelet's response check: no unknown UIDs, none left out."""
    requested = {ref.uid for ref in refs}
    unknown = sorted(set(results) - requested)
    if unknown:
        raise ClaimMismatchError(f"{method} returned result for unknown claim UID {', '.join(unknown)}")
    missing = requested - set(results)
    if missing:
        raise ClaimMismatchError(
            f"{method} left out {len(missing)} claims (missing UIDs: {', '.join(sorted(missing))})"
        )


def _prepare_result(
    resp: dra_v1_pb2.NodePrepareResourceResponse | dra_v1beta1_pb2.NodePrepareResourceResponse,
) -> PrepareResult:
    return PrepareResult(
        devices=tuple(
            PreparedDevice(
                request_names=tuple(d.request_names),
                pool_name=d.pool_name,
                device_name=d.device_name,
                cdi_device_ids=tuple(d.cdi_device_ids),
                share_id=d.share_id if isinstance(d, dra_v1_pb2.Device) and d.HasField("share_id") else None,
            )
            for d in resp.devices
        ),
        error=resp.error,
    )


def _device_health(d: health_v1alpha1_pb2.DeviceHealth) -> DeviceHealth:
    return DeviceHealth(
        pool_name=d.device.pool_name,
        device_name=d.device.device_name,
        health=_HEALTH_FROM_PROTO.get(d.health, HealthStatus.UNKNOWN),
        last_updated_time=d.last_updated_time,
        health_check_timeout_seconds=d.health_check_timeout_seconds,
        message=d.message,
    )
