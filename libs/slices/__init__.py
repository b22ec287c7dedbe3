"""ResourceSlices for a node's GPUs: built by a pure function from an Inventory, diffed against the API."""

from libs.slices.build import API_VERSION, DRIVER_NAME, build_slices, slice_name
from libs.slices.devices import MigMode
from libs.slices.diff import SliceDiff, diff_slices, next_pool_generation
from libs.slices.layout import SliceLayoutError
from libs.slices.rules import pool_problems, slice_problems
from libs.slices.taints import DeviceTaint

__all__ = [
    "API_VERSION",
    "DRIVER_NAME",
    "DeviceTaint",
    "MigMode",
    "SliceDiff",
    "SliceLayoutError",
    "build_slices",
    "diff_slices",
    "next_pool_generation",
    "pool_problems",
    "slice_name",
    "slice_problems",
]
