"""The fault catalogue: which faults exist, what to do about each, and how repeats escalate.

Shipped defaults (``defaults.yaml``, from NVIDIA's XID buckets) with an operator's YAML file merged over them;
``classify`` turns a health event into a ``Fault`` the remediation rules act on.
"""

from services.health.catalogue.classify import ACTION_RANK, Fault, MalformedHealthEvent, classify
from services.health.catalogue.loader import DEFAULTS_FILE, default_catalogue, load_catalogue, parse_catalogue
from services.health.catalogue.model import (
    AUTOMATIC_ACTIONS,
    NODE_ACTIONS,
    XID_CHECK,
    Catalogue,
    CountRule,
    Escalation,
    FaultSpec,
    RepeatRule,
    Scope,
    SpreadRule,
)
from services.health.catalogue.yaml_lines import YamlError, decode_yaml

__all__ = [
    "ACTION_RANK",
    "AUTOMATIC_ACTIONS",
    "DEFAULTS_FILE",
    "NODE_ACTIONS",
    "XID_CHECK",
    "Catalogue",
    "CountRule",
    "Escalation",
    "Fault",
    "FaultSpec",
    "MalformedHealthEvent",
    "RepeatRule",
    "Scope",
    "SpreadRule",
    "YamlError",
    "classify",
    "decode_yaml",
    "default_catalogue",
    "load_catalogue",
    "parse_catalogue",
]
