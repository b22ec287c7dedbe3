"""The ComputeDomain controller's rules: membership, status, and the objects it owns for a domain.

Plain functions over plain data (``services.compute_domain.api``); the watching and writing around them is the
service's edge.
"""
