"""The IMEX files of one domain, the host's hosts block, and this node's clique: pure functions."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from libs.devices.model import FabricInfo, Inventory
from libs.devices.simulated import load_profile
from libs.devices.simulated.ops import initial_state, inventory_of
from services.compute_domain.node.clique import CliqueError, channel_refusal, node_clique
from services.compute_domain.node.imex_config import (
    MAX_NODES,
    SENTINEL_IP,
    ImexConfigError,
    Member,
    daemon_name,
    domain_files,
    install_hosts_block,
    parse_config,
    parse_hosts,
    render_config,
    render_hosts,
    render_nodes,
    replace_hosts_block,
)

UID = "0f6e2a4c-1111-4222-8333-944445555666"
OTHER_UID = "7d0b9c1e-aaaa-4bbb-8ccc-9ddddeeeefff"
CLUSTER = "6c1f6a52-3d0e-4b8a-9a57-1d2f0c9e7b31"  # the gb200-nvl72 profile's


def inventory(profile: str) -> Inventory:
    return inventory_of(initial_state("tray-1", load_profile(profile)))


def test_the_config_has_the_reference_values_with_this_nodes_ip_and_the_domains_files(tmp_path: Path) -> None:
    files = domain_files(tmp_path, UID)
    config = parse_config(render_config(files, "10.0.0.7"))
    assert files.directory == tmp_path / "computedomains" / UID
    assert config["DAEMONIZE"] == "0"
    assert config["SERVER_PORT"] == "50000"
    assert config["IMEX_NODE_CONFIG_FILE"] == str(files.directory / "nodes.cfg")
    assert config["IMEX_WAIT_FOR_QUORUM"] == "RECOVERY"
    assert config["IMEX_CMD_ENABLED"] == "1"
    assert config["IMEX_CMD_PORT"] == "50005"
    assert config["IMEX_CMD_BIND_INTERFACE_IP"] == config["BIND_INTERFACE_IP"] == "10.0.0.7"
    assert config["LOG_FILE_NAME"] == ""


def test_a_config_with_a_bad_bind_address_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImexConfigError, match="'node-7' is not an IP address"):
        render_config(domain_files(tmp_path, UID), "node-7")


def test_the_nodes_file_names_every_slot_with_the_domains_hash() -> None:
    names = render_nodes(UID).split()
    assert len(names) == MAX_NODES == 18
    assert names[0] == daemon_name(UID, 0)
    assert names[17].startswith("compute-domain-daemon-")
    assert names[17].endswith("-0017")
    assert not set(names) & set(render_nodes(OTHER_UID).split()), "two domains must not share a name"


def test_the_hosts_mapping_names_each_member_once_and_sends_unused_slots_to_the_sentinel() -> None:
    members = [
        Member(node="tray-3", index=2, ip_address="10.0.0.3"),
        Member(node="tray-1", index=0, ip_address="10.0.0.1"),
    ]
    text = render_hosts(UID, members)
    mapping = parse_hosts(text)
    assert f"10.0.0.3\t{daemon_name(UID, 2)}" in text.splitlines()
    assert mapping[daemon_name(UID, 0)] == "10.0.0.1"
    assert mapping[daemon_name(UID, 1)] == SENTINEL_IP
    assert len(mapping) == MAX_NODES
    names = [line.split("\t")[1] for line in text.splitlines() if not line.startswith("#")]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (Member(node="tray-9", index=18, ip_address="10.0.0.9"), "node tray-9 has IMEX slot 18, outside 0..17"),
        (Member(node="tray-9", index=-1, ip_address="10.0.0.9"), "slot -1"),
        (Member(node="tray-9", index=3, ip_address="10.0.0.999"), "tray-9's IP '10.0.0.999' is not an IP address"),
    ],
)
def test_a_member_out_of_range_or_without_a_valid_ip_is_refused(member: Member, message: str) -> None:
    with pytest.raises(ImexConfigError, match=message):
        render_hosts(UID, [member])


def test_two_members_in_one_slot_are_refused() -> None:
    members = [
        Member(node="tray-1", index=4, ip_address="10.0.0.1"),
        Member(node="tray-2", index=4, ip_address="10.0.0.2"),
    ]
    with pytest.raises(ImexConfigError, match="nodes tray-1 and tray-2 both hold IMEX slot 4"):
        render_hosts(UID, members)


def test_the_hosts_block_replaces_only_its_own_domains_lines(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n10.1.1.1\tregistry\n")
    hosts.chmod(0o644)
    first = render_hosts(UID, [Member(node="tray-1", index=0, ip_address="10.0.0.1")])
    other = render_hosts(OTHER_UID, [Member(node="tray-5", index=0, ip_address="10.0.0.5")])
    assert install_hosts_block(hosts, UID, first)
    assert install_hosts_block(hosts, OTHER_UID, other)
    assert not install_hosts_block(hosts, UID, first), "an unchanged block is not rewritten"

    moved = render_hosts(UID, [Member(node="tray-1", index=0, ip_address="10.0.0.8")])
    assert install_hosts_block(hosts, UID, moved)
    mapping = parse_hosts(hosts.read_text())
    assert mapping[daemon_name(UID, 0)] == "10.0.0.8"
    assert mapping[daemon_name(OTHER_UID, 0)] == "10.0.0.5"
    assert hosts.read_text().count(daemon_name(UID, 0)) == 1
    assert hosts.stat().st_mode & 0o777 == 0o644

    assert install_hosts_block(hosts, UID, "")
    assert daemon_name(UID, 0) not in hosts.read_text()
    assert hosts.read_text().startswith(
        "127.0.0.1\tlocalhost\n10.1.1.1\tregistry\n# BEGIN gpudra ComputeDomain " + OTHER_UID
    )


def test_a_begin_marker_without_its_end_is_left_for_a_person() -> None:
    text = f"127.0.0.1\tlocalhost\n# BEGIN gpudra ComputeDomain {UID}\n10.0.0.1\tmine\n"
    with pytest.raises(ImexConfigError, match="has no '# END gpudra ComputeDomain"):
        replace_hosts_block(text, UID, "10.0.0.2\tx\n")


def test_a_gb200_tray_is_in_its_racks_clique() -> None:
    assert node_clique(inventory("gb200-nvl72")) == f"{CLUSTER}.1"


def test_a_node_without_nvlink_fabric_has_no_clique_and_refuses_channels() -> None:
    clique = node_clique(inventory("dgx-h100"))
    assert clique == ""
    refusal = channel_refusal(clique, node="tray-1", domain="default/cd")
    assert refusal is not None
    assert "node tray-1 has no multi-node NVLink" in refusal
    assert channel_refusal("c.1", node="tray-1", domain="default/cd") is None


def test_gpus_in_different_cliques_are_an_error_naming_them() -> None:
    inv = inventory("gb200-nvl72")
    stray = msgspec.structs.replace(inv.gpus[3], fabric=FabricInfo(cluster_uuid=CLUSTER, clique_id=2))
    with pytest.raises(CliqueError, match=r"gpu-0, gpu-1, gpu-2 in 6c1f.*\.1; gpu-3 in 6c1f.*\.2"):
        node_clique(msgspec.structs.replace(inv, gpus=(*inv.gpus[:3], stray)))


def test_gpus_with_a_zero_cluster_uuid_do_not_count() -> None:
    inv = inventory("gb200-nvl72")
    zero = FabricInfo(cluster_uuid="00000000-0000-0000-0000-000000000000", clique_id=0)
    unregistered = msgspec.structs.replace(inv.gpus[0], fabric=zero)
    assert node_clique(msgspec.structs.replace(inv, gpus=(unregistered, *inv.gpus[1:]))).endswith(".1")
