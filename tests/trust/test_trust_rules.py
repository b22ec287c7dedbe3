"""The rules of trust as plain functions: the role table's shape, provenance, JWTs and credentials files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from libs.bus.provenance import relayed_command, relayed_delivery, relayed_event
from libs.events import COMMANDS, EVENTS, rpc_subject
from libs.events.envelope import event_source, source_node
from libs.trust import creds, jwt, matrix
from libs.trust.authority import Authority
from libs.trust.grants import ANY
from libs.trust.keys import Kind, key_pair, new_seed, public_key
from libs.trust.roles import NODE_ROLES, Role, permissions

NODE = "gpu-7.rack-2"
TOKEN = "gpu-7_rack-2"


def test_node_roles_stay_on_their_node_and_administer_nothing() -> None:
    for role in NODE_ROLES:
        granted = permissions([role], principal="svc", node=NODE)
        for subject in granted.publish | granted.subscribe:
            if subject.startswith("gpudra.v1."):
                assert subject.split(".")[2] == TOKEN, (role, subject)
            if subject.startswith("$KV."):
                assert TOKEN in subject, (role, subject)
        assert not any(
            s.startswith(("$JS.API.STREAM.CREATE", "$JS.API.STREAM.DELETE", "$JS.API.>")) for s in granted.publish
        )
        assert not any(s.startswith("$JS.API.DIRECT.GET") for s in granted.publish), role
        assert ">" not in granted.publish
        assert granted.subscribe >= {f"_INBOX.svc.{TOKEN}.>"}
        assert not any(s.startswith("_INBOX") and s != f"_INBOX.svc.{TOKEN}.>" for s in granted.subscribe)


def test_only_bootstrap_administers_jetstream() -> None:
    for role in Role:
        granted = permissions([role], principal="p", node=NODE)
        assert ("$JS.API.>" in granted.publish) == (role == Role.BOOTSTRAP), role


def test_every_event_has_a_publisher_and_every_command_a_server_and_a_caller() -> None:
    granted = [permissions([role], principal="p", node=NODE) for role in Role]
    published = set().union(*(g.publish for g in granted))
    subscribed = set().union(*(g.subscribe for g in granted))
    for event in EVENTS.values():
        subject = f"gpudra.v1.{TOKEN}.{event.domain}.{event.topic}"
        wild = f"gpudra.v1.{ANY}.{event.domain}.{event.topic}"
        cluster = f"gpudra.v1._cluster.{event.domain}.{event.topic}"
        assert published & {subject, wild, cluster}, f"no role publishes {event.__name__}"
    for command in COMMANDS:
        for node in (NODE, "_cluster"):
            if rpc_subject(node, command.service, command.endpoint) in subscribed:
                break
        else:
            pytest.fail(f"no role serves {command.__name__}")


def test_gpudra_durables_are_off_limits_to_all_but_their_owner() -> None:
    next_msg = "$JS.API.CONSUMER.MSG.NEXT.GPUDRA_HEALTH.health-remediation"
    for role in Role:
        granted = permissions([role], principal="p", node=NODE)
        owner = role in (Role.HEALTH_CONTROLLER, Role.BOOTSTRAP)
        assert (next_msg in granted.publish_deny) != owner, role


@pytest.mark.parametrize(
    ("reply", "refused"),
    [
        ("_INBOX.shim.node-a.abc.1", None),
        (None, "no reply subject"),
        ("", "no reply subject"),
        ("$JS.ACK.GPUDRA_INVENTORY.x.1.1.1.0.0", "is not an inbox"),
        ("gpudra.v1.node-b.health.events", "is not an inbox"),
    ],
)
def test_a_command_needs_a_clients_inbox(reply: str | None, refused: str | None) -> None:
    reason = relayed_command(reply)
    assert (reason is None) if refused is None else (refused in (reason or ""))


def test_stored_messages_returned_by_the_server_are_not_events() -> None:
    assert relayed_event({"ce-id": "1"}) is None
    assert relayed_event(None) is None
    assert "Nats-Stream: KV_gpudra_inventory" in (
        relayed_event({"ce-id": "1", "Nats-Stream": "KV_gpudra_inventory"}) or ""
    )
    assert relayed_delivery("$JS.ACK.S.c.1.1.1.0.0")
    assert not relayed_delivery("_INBOX.x.y")
    assert not relayed_delivery(None)


def test_an_event_source_names_its_node() -> None:
    assert source_node(event_source(NODE, "health")) == NODE
    for bad in ("/test", "/gpudra/", "/gpudra/node-a", "/gpudra//health", "gpudra/node-a/health"):
        assert source_node(bad) is None, bad


def test_a_jwt_verifies_only_with_its_issuer_and_not_after_expiry() -> None:
    account = key_pair(new_seed(Kind.ACCOUNT))
    token = jwt.encode({"sub": "U123", "exp": int(time.time()) + 60}, account)
    assert jwt.decode(token)["iss"] == account.public_key.decode()
    header, _, signature = token.split(".")
    forged = jwt.encode({"sub": "U999"}, key_pair(new_seed(Kind.ACCOUNT))).split(".")[1]
    with pytest.raises(jwt.JwtError, match="does not verify"):
        jwt.decode(f"{header}.{forged}.{signature}")
    with pytest.raises(jwt.JwtError, match="expired"):
        jwt.decode(token, now=time.time() + 120)
    with pytest.raises(jwt.JwtError, match="not a NATS JWT"):
        jwt.decode("not.a-jwt")


def test_credentials_are_owner_only_and_checked_before_use(tmp_path: Path) -> None:
    authority = Authority.open(tmp_path / "trust")
    path = authority.issue(tmp_path / "trust" / "users" / "discovery.creds", "discovery", [Role.DISCOVERY], NODE)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "trust").stat().st_mode & 0o777 == 0o700
    assert all((tmp_path / "trust" / f"{name}.nk").stat().st_mode & 0o777 == 0o600 for name in ("operator", "account"))
    found = creds.check(path)
    assert (found.name, found.expires, found.shared_with_others) == (f"discovery@{NODE}", None, False)

    with pytest.raises(creds.CredentialsError, match="does not exist"):
        creds.check(tmp_path / "missing.creds")
    with pytest.raises(creds.CredentialsError, match="cannot be read"):
        creds.check(tmp_path)
    (tmp_path / "junk.creds").write_text("hello\n")
    with pytest.raises(creds.CredentialsError, match="not a credentials file"):
        creds.check(tmp_path / "junk.creds")
    other = authority.mint("x", permissions([Role.EXTENDER], principal="x", node=NODE)).decode()
    mixed = tmp_path / "mixed.creds"
    mixed.write_text(
        path.read_text().split("-----BEGIN USER NKEY SEED")[0]
        + "-----BEGIN USER NKEY SEED"
        + other.split("-----BEGIN USER NKEY SEED")[1]
    )
    with pytest.raises(creds.CredentialsError, match="seed is not the key the JWT was issued to"):
        creds.check(mixed)
    expired = authority.write(
        tmp_path / "old.creds", "old", permissions([Role.EXTENDER], principal="o", node=NODE), lifetime=-1
    )
    with pytest.raises(creds.CredentialsError, match="expired at"):
        creds.check(expired)


def test_the_authority_keeps_its_account_across_restarts(tmp_path: Path) -> None:
    """JetStream keeps an account's streams under its key: a new key would start an empty bus."""
    first = Authority.open(tmp_path / "trust").account
    assert Authority.open(tmp_path / "trust").account == first
    assert public_key(new_seed(Kind.ACCOUNT)).startswith("A")


def test_the_role_table_in_the_security_doc_is_the_code() -> None:
    assert matrix.main(["--check"]) == 0, "docs/security.md is stale: run `python -m libs.trust.matrix`"
