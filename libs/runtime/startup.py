"""Start-up errors: a setting that cannot work ends the process with one line and an exit code of its own.

A broken profile file, NVML on a machine without the driver, a kubeconfig that does not load: retrying in a
loop would not help. The service raises ``StartupError`` naming the setting to change; ``service_main`` logs it
(no traceback) and exits with its code, and the supervisor (``gpudra up``, or the kubelet's CrashLoopBackOff)
restarts it with a growing delay. Exit codes: 1 bus, 2 settings (``service.py``), 3 device backend, 4
Kubernetes API, 5 a service's own configuration files, 6 a permission the NATS server refused.
"""

from __future__ import annotations

EXIT_DEVICES = 3
EXIT_KUBE = 4
EXIT_CONFIG = 5
EXIT_PERMISSION = 6


class StartupError(Exception):
    """The service cannot start with these settings; ``exit_code`` says which part is at fault."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
