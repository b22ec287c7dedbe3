"""The node side of ComputeDomains: this node's NVLink clique and the IMEX daemon each domain runs here.

gpudra's node service runs ``nvidia-imex`` itself, one per domain, instead of in a DaemonSet pod as NVIDIA's
reference driver does. The parts, each usable alone:

- ``clique``: the node's clique id from the GPUs' fabric info; empty means no IMEX on this node.
- ``imex_config``: pure rendering of the daemon's config, nodes file and hosts mapping, plus the marker-delimited
  block that puts the mapping into the host's ``/etc/hosts``.
- ``daemon``: ``ImexDaemon``, which starts the daemon, probes its readiness, passes membership changes on with
  SIGUSR1 and restarts it when it exits.
- ``simulated_imex`` and ``simulated_imex_ctl``: stand-ins for ``nvidia-imex`` and ``nvidia-imex-ctl`` on nodes
  without the driver's binaries (tests, laptops).
"""
