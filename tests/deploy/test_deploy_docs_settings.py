"""docs/deploy.md lists every setting of every service, with the services that read it and its default, and
the bus's limits that ``gpudra bus bootstrap`` (and ``gpudra up``) read.

The table is written from the settings structs; when a field is added, renamed or its default changes, this
test fails and prints the table as it should be, ready to paste between the markers.
"""

from __future__ import annotations

import re

import msgspec

from libs.bus.topology import BusLimits
from libs.settings import CommonSettings, env_name, flag_name
from tests.deploy.deploy_support import ROOT, bootstrap_env_names, service_settings

DOC = ROOT / "docs" / "deploy.md"
BEGIN, END = "<!-- settings-table:begin -->", "<!-- settings-table:end -->"
HEADER = "| Variable | Flag | Services | Default | Description |\n|---|---|---|---|---|"
# The bus's limits are variables only (no flags), read by the steps that create streams and buckets.
LIMITS_READERS = "`gpudra bus bootstrap`, `gpudra up`"
NO_FLAG = "—"

Row = tuple[str, str, str, str]


def describe(field: msgspec.structs.FieldInfo) -> str:
    """The field's description, with ``<placeholders>`` as code so Markdown does not take them for HTML."""
    info = msgspec.inspect.type_info(field.type)
    text = ""
    if isinstance(info, msgspec.inspect.Metadata):
        text = str((info.extra_json_schema or {}).get("description", ""))
    return re.sub(r"[^\s()]*<[^>]+>[^\s(),]*", lambda match: f"`{match.group()}`", text).replace("|", "\\|")


def render_default(value: object) -> str:
    return '`""`' if value == "" else f"`{value}`"


def expected() -> tuple[list[Row], dict[Row, str]]:
    """Rows (variable, flag, services, default) in field order, and each row's description.

    One row per field and default: ``driver_name`` is ``gpu.gpudra.io`` for some services and
    ``compute-domain.gpudra.io`` for another, so it has two rows.
    """
    services = service_settings()
    groups: dict[tuple[str, str], list[str]] = {}
    descriptions: dict[tuple[str, str], str] = {}
    for service, settings in services.items():
        for field in msgspec.structs.fields(settings):
            group = (field.name, render_default(field.default))
            groups.setdefault(group, []).append(service)
            descriptions.setdefault(group, describe(field))
    common = [field.name for field in msgspec.structs.fields(CommonSettings)]
    order = common + sorted({name for name, _ in groups} - set(common))
    rows: list[Row] = []
    texts: dict[Row, str] = {}
    for index, name in enumerate(order):
        if index == len(common):
            for field in msgspec.structs.fields(BusLimits):
                row = (f"`{env_name(field.name)}`", NO_FLAG, LIMITS_READERS, render_default(field.default))
                rows.append(row)
                texts[row] = describe(field)
        for (field_name, default), users in groups.items():
            if field_name == name:
                missing = sorted(set(services) - set(users))
                who = ", ".join(users)
                if not missing:
                    who = "all"
                elif len(missing) == 1 and len(users) > 1:
                    who = f"all but {missing[0]}"  # the bus's settings: every service but the admission webhook
                row = (f"`{env_name(name)}`", f"`{flag_name(name)}`", who, default)
                rows.append(row)
                texts[row] = descriptions[(field_name, default)]
    return rows, texts


def table() -> str:
    rows, texts = expected()
    return "\n".join([HEADER, *(f"| {' | '.join(row)} | {texts[row]} |" for row in rows)])


def documented() -> list[Row]:
    text = DOC.read_text()
    assert BEGIN in text, f"docs/deploy.md has no {BEGIN} marker"
    assert END in text, f"docs/deploy.md has no {END} marker"
    body = text.split(BEGIN, 1)[1].split(END, 1)[0]
    rows: list[Row] = []
    for line in body.strip().splitlines()[2:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        assert len(cells) == 5, f"not a five-column row: {line}"
        rows.append((cells[0], cells[1], cells[2], cells[3]))
    return rows


def test_every_setting_is_in_the_deploy_doc_with_its_services_and_default() -> None:
    rows, _ = expected()
    assert sorted(documented()) == sorted(rows), (
        "docs/deploy.md's settings table is out of date; between the markers it should read:\n\n" + table()
    )


def test_every_gpudra_name_in_the_deploy_doc_is_a_setting() -> None:
    known = {env_name(f.name) for settings in service_settings().values() for f in msgspec.structs.fields(settings)}
    known |= bootstrap_env_names()
    written = set(re.findall(r"GPUDRA_[A-Z0-9_]*[A-Z0-9]", DOC.read_text()))
    assert written - known == set()
