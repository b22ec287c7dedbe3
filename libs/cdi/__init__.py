"""Container Device Interface specs: the model, the lowest covering ``cdiVersion``, atomic writes, validation.

``libs.cdi.nvidia`` holds the GPU-specific edits (device nodes, MIG capability nodes, MPS), ``libs.cdi.driver``
the driver's files (libraries, tools, firmware, sockets, hooks) found under a driver root; ``libs.cdi.schema``
validates against the CDI JSON Schema (development dependency ``jsonschema``).
"""

from libs.cdi.errors import CdiError
from libs.cdi.names import claim_kind, claim_spec_name, claim_spec_prefix, qualified_name, transient_spec_name
from libs.cdi.spec import ContainerEdits, Device, DeviceNode, Hook, Mount, Spec, decode, encode
from libs.cdi.version import minimum_version
from libs.cdi.writer import SpecDir, spec_problems

__all__ = [
    "CdiError",
    "ContainerEdits",
    "Device",
    "DeviceNode",
    "Hook",
    "Mount",
    "Spec",
    "SpecDir",
    "claim_kind",
    "claim_spec_name",
    "claim_spec_prefix",
    "decode",
    "encode",
    "minimum_version",
    "qualified_name",
    "spec_problems",
    "transient_spec_name",
]
