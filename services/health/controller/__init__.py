"""The remediation controller: the cluster-wide half of the health service.

It reads every node's health events through one durable consumer (replicas share it), runs them through the
pure rules of ``services.health.remediation`` one node at a time, keeps each node's book in KV with
compare-and-set, and performs the actions the rules ask for through small adapters: device taints (KV, which
discovery turns into ResourceSlice taints), the Node (cordon, taint, label, annotation), evictions, GPU
resets (a request to the node's health service) and reboots (a pluggable hook).

``running_controller(bus, settings)`` (``controller.py``) runs it; ``books.py`` is what it persists.
"""

from services.health.controller.controller import Controller, running_controller

__all__ = ["Controller", "running_controller"]
