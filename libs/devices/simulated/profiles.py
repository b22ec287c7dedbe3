"""Machine profiles: a built-in name as a user types it (`dgx-h100`) or a path to the user's own YAML.

Built-in profiles are YAML files in builtin/ in the same format a user writes, so each doubles as
an example. Every error names the file, the line and the field, because a person edits these by hand.
"""

import re
from importlib import resources
from pathlib import Path

import msgspec
import yaml

from libs.devices.errors import DeviceError, ProfileError
from libs.devices.simulated.catalogue import gpu_models
from libs.devices.simulated.machine import MachineProfile, build_hardware

_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


_BUILTIN = resources.files("libs.devices.simulated.builtin")


def builtin_profiles() -> list[str]:
    return sorted(entry.name.removesuffix(".yaml") for entry in _BUILTIN.iterdir() if entry.name.endswith(".yaml"))


def load_profile(spec: str) -> MachineProfile:
    """`spec` is a built-in profile name or a path to a YAML file."""
    if spec in builtin_profiles():
        text = _BUILTIN.joinpath(f"{spec}.yaml").read_text()
        return parse_profile(text, source=spec)
    path = Path(spec)
    if not path.is_file():
        raise ProfileError(
            spec, f"no such built-in profile or file; built-in profiles: {', '.join(builtin_profiles())}"
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ProfileError(spec, f"cannot read it as a YAML file: {error}") from None
    return parse_profile(text, source=str(path))


def parse_profile(text: str, source: str) -> MachineProfile:
    try:
        profile = msgspec.yaml.decode(text, type=MachineProfile)
    except msgspec.ValidationError as error:
        raise ProfileError(source, _locate(text, str(error))) from None
    except msgspec.DecodeError as error:
        raise ProfileError(source, f"not valid YAML: {error}") from None
    problems = _semantic_problems(profile)
    if problems:
        raise ProfileError(source, "; ".join(_at(text, path, problem) for path, problem in problems))
    return profile


def _semantic_problems(profile: MachineProfile) -> list[tuple[str, str]]:
    """What the types cannot say; the pre-created MIG layout is checked by building it, as the GPU would."""
    models = gpu_models()
    if profile.gpu_model not in models:
        return [("$.gpu_model", f"unknown GPU model {profile.gpu_model!r}; known: {', '.join(sorted(models))}")]
    problems = _index_problems(profile)
    if problems:
        return problems
    for index in range(len(profile.mig_devices)):
        prefix = msgspec.structs.replace(profile, mig_devices=profile.mig_devices[: index + 1])
        try:
            build_hardware("profile-check", prefix)
        except DeviceError as error:
            return [(f"$.mig_devices[{index}]", error.problem)]
    return []


def _index_problems(profile: MachineProfile) -> list[tuple[str, str]]:
    problems = []
    if profile.minor_numbers and len(profile.minor_numbers) != profile.gpu_count:
        problems.append(("$.minor_numbers", f"needs one minor number per GPU ({profile.gpu_count})"))
    if len(set(profile.minor_numbers)) != len(profile.minor_numbers):
        problems.append(("$.minor_numbers", "minor numbers must be unique"))
    if profile.mig_enabled != "all":
        problems += [
            (f"$.mig_enabled[{i}]", f"GPU index {gpu} does not exist (gpu_count is {profile.gpu_count})")
            for i, gpu in enumerate(profile.mig_enabled)
            if gpu >= profile.gpu_count
        ]
    problems += [
        (
            f"$.mig_devices[{i}].gpu",
            f"GPU index {device.gpu} does not exist (gpu_count is {profile.gpu_count})",
        )
        for i, device in enumerate(profile.mig_devices)
        if device.gpu >= profile.gpu_count
    ]
    return problems


def _locate(text: str, message: str) -> str:
    """msgspec says `... - at `$.a[1].b``; add the line so the user finds it in the file."""
    match = re.search(r" - at `(\$[^`]*)`$", message)
    path = match.group(1) if match else "$"
    unknown = re.search(r"unknown field `([^`]+)`", message)
    if unknown:
        path = f"{path}.{unknown.group(1)}"
    return _at(text, path, message)


def _at(text: str, path: str, problem: str) -> str:
    line = _line_of(text, path)
    return f"line {line} ({path}): {problem}" if line else f"{path}: {problem}"


def _line_of(text: str, path: str) -> int | None:
    """The line ``path`` is on, if PyYAML can say: msgspec reads YAML with libyaml, which accepts text PyYAML's
    composer refuses (a tab after a plain scalar) and nests deeper than PyYAML's recursion can follow."""
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return None
    for key, index in _PATH_PART.findall(path):
        node = _child(node, key, index)
    return node.start_mark.line + 1 if node is not None else None


def _child(node: yaml.Node | None, key: str, index: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and key:
        return next((value for name, value in node.value if name.value == key), None)
    if isinstance(node, yaml.SequenceNode) and index and int(index) < len(node.value):
        child: yaml.Node = node.value[int(index)]
        return child
    return None
