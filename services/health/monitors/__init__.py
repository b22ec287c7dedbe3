"""Node monitors: watch one node's GPUs and publish what they see as typed HealthEvents.

One module per job, so each reads on its own:

- ``conditions``: the ``Condition`` a monitor observes and how it becomes a ``HealthEvent`` (with its idempotent
  event id);
- ``opinions``: the monitor's first opinion on an XID or recovery action (the controller's catalogue decides);
- ``counter_rules``: pure rules from two counter readings to the conditions that hold, and the transitions;
- ``entities``: which GPU or MIG device an NVML report is about;
- ``ledger`` and ``reporter``: the node's active conditions, kept on disk, published only on a change;
- ``event_stream``, ``pollers``, ``inventory``: the monitors themselves;
- ``watchdog``: a monitor that crashes or stops answering makes its devices "unmonitored", never silent;
- ``gpu_reset``: the ``ResetGpu`` command, the remediation controller's GPU-reset executor on this node.

``services.health.node_agent`` wires them together.
"""

from services.health.monitors.config import MonitorSettings
from services.health.monitors.counter_rules import Thresholds

__all__ = ["MonitorSettings", "Thresholds"]
