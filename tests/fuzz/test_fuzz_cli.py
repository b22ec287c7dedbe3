"""Command-line arguments that reach the bus (``gpudra claim create``, ``gpudra faults inject``): any words end
in argparse's usage error (exit 2), the command's own error, or a well-formed object or command, never in a
traceback when it is stored or sent."""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Sequence

import msgspec
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cli.claims import UsageError, allocation, claim_object, parse_devices
from cli.endpoints import NotRunning
from cli.faults import command_of, target_node
from cli.main import parse
from cli.shares import whole_devices
from libs.events.catalogue import InjectFault
from libs.events.subjects import rpc_subject
from libs.kube import RESOURCE_CLAIMS, Invalid
from libs.kube.local import object_key
from libs.kube.resources import check_object, is_dns_label
from tests.fuzz.strategies import argv_text, mostly, odd_names

words = argv_text | odd_names | st.sampled_from(["٣", "-1", "--", "gpu-0:", ":gpu-0", "a:b:gpu-0", "Gpu-0"])
names = mostly(st.sampled_from(["c", "default", "train-0", "a.b"]), words)
devices = mostly(st.sampled_from(["gpu-0", "3", "train:gpu-1", "gpu-0-mig-1g10gb-19-0", "mig:gpu-1"]), words)
numbers = mostly(
    st.integers(0, 200).map(str), st.integers().map(str) | st.sampled_from(["1e3", " 5", "9" * 5000]) | words
)


def parsed(argv: Sequence[str]) -> argparse.Namespace | None:
    """The arguments, or None when argparse refused them (exit 2, its message on stderr)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return parse(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2, "argparse refuses with exit code 2"
    return None


def clean_subject(subject: str) -> bool:
    """A subject the server takes and no wildcard or extra token hides in."""
    return all(token and token.isprintable() and not set(token) & set(" *>") for token in subject.split("."))


@settings(max_examples=200, deadline=None)
@given(name=names, namespace=names, devices=st.lists(devices, min_size=1, max_size=3))
@example(name="c", namespace="default", devices=["\udcff"]).via(
    "found: a device that is not UTF-8 (non-UTF-8 argv) was accepted, and writing the claim raised UnicodeEncodeError"
)
@example(name="c", namespace="c", devices=["--"]).via(
    "found: Python 3.11's argparse makes --device=-- the list [], and parse_devices raised AttributeError"
)
@example(name="c", namespace="default\n", devices=["gpu-0"]).via(
    "found: check_object matched the namespace with ^...$, which passes a trailing newline, into the store's key"
)
def test_claim_create_arguments_give_a_well_formed_claim_or_a_usage_error(
    name: str, namespace: str, devices: list[str]
) -> None:
    args = parsed(["claim", "create", name, "-n", namespace, *(f"--device={spec}" for spec in devices)])
    if args is None:
        return
    try:
        pairs = parse_devices(args.device)
        claim = claim_object(args.name, args.namespace, pairs, None, "gpu.gpudra.io")
        check_object(RESOURCE_CLAIMS, claim)
    except (UsageError, Invalid):
        return
    assert all(is_dns_label(request) and is_dns_label(device) for request, device in pairs)
    assert clean_subject(object_key(RESOURCE_CLAIMS, args.namespace, args.name))
    results = whole_devices(pairs, node="node-0", driver="gpu.gpudra.io")
    msgspec.json.encode([claim, allocation(results, None, "node-0", "gpu.gpudra.io")])


@settings(max_examples=200, deadline=None)
@given(gpu=devices, xid=st.none() | numbers, count=numbers, node=st.none() | names)
@example(gpu="\udcff", xid="79", count="1", node="node-a").via(
    "found: a GPU name that is not UTF-8 was sent on, and encoding the command raised UnicodeEncodeError"
)
@example(gpu="--", xid="79", count="1", node="node-a").via("found: --gpu=-- became [], AttributeError in command_of")
@example(gpu="3", xid="79", count="1", node="Node A").via("found: node_token's ValueError escaped as a traceback")
@example(gpu="3", xid="79", count="1", node="node-a\n").via("found: node_token's ^...$ passed a trailing newline")
def test_faults_inject_arguments_give_a_well_formed_command_or_a_usage_error(
    gpu: str, xid: str | None, count: str, node: str | None
) -> None:
    what = ["--xid", xid] if xid is not None else ["--kind", "ecc-double"]
    where = ["--node", node] if node is not None else ["--nats-url", "nats://127.0.0.1:4222"]
    args = parsed(["faults", "inject", f"--gpu={gpu}", *what, f"--count={count}", *where])
    if args is None:
        return
    command = command_of(args)
    try:
        subject = rpc_subject(target_node(args), command.service, command.endpoint)
    except NotRunning:
        return
    assert clean_subject(subject)
    assert is_dns_label(command.device)
    assert command.count >= 1
    assert (command.xid or 0) >= 0
    assert msgspec.json.decode(msgspec.json.encode(command), type=InjectFault) == command
