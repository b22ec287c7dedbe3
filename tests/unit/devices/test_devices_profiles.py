from pathlib import Path

import pytest

from libs.devices.errors import ProfileError
from libs.devices.simulated import builtin_profiles, load_profile, parse_profile
from libs.devices.simulated.machine import build_hardware
from libs.devices.simulated.ops import initial_state, inventory_of

EXPECTED = {
    "dgx-a100": ("NVIDIA A100-SXM4-40GB", 8),
    "dgx-h100": ("NVIDIA H100 80GB HBM3", 8),
    "dgx-h100-mig": ("NVIDIA H100 80GB HBM3", 8),
    "dgx-h200": ("NVIDIA H200", 8),
    "dgx-b200": ("NVIDIA B200 180GB HBM3e", 8),
    "gb200-nvl72": ("NVIDIA GB200", 4),
    "mixed-mig": ("NVIDIA H100 80GB HBM3", 8),
}


def test_every_profile_a_user_can_type_is_built_in() -> None:
    assert set(builtin_profiles()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_profiles_build_the_machine_they_name(name: str) -> None:
    product, count = EXPECTED[name]
    gpus = build_hardware("node-a", load_profile(name)).gpus
    assert [g.name for g in gpus] == [f"gpu-{i}" for i in range(count)]
    assert {g.product_name for g in gpus} == {product}
    assert len({g.uuid for g in gpus}) == count


def test_uuids_are_deterministic_per_node_and_index() -> None:
    profile = load_profile("dgx-h100")
    first = build_hardware("node-a", profile).gpus
    assert [g.uuid for g in first] == [g.uuid for g in build_hardware("node-a", profile).gpus]
    assert first[0].uuid != build_hardware("node-b", profile).gpus[0].uuid
    assert first[0].uuid.startswith("GPU-")


def test_gb200_trays_share_one_nvlink_clique() -> None:
    profile = load_profile("gb200-nvl72")
    tray1 = build_hardware("rack1-tray1", profile).gpus
    tray2 = build_hardware("rack1-tray2", profile).gpus
    cliques = {g.fabric.clique for g in tray1 + tray2 if g.fabric}
    assert len(cliques) == 1
    assert cliques.pop().endswith(".1")
    assert {g.addressing_mode for g in tray1} == {"ATS"}


def test_mixed_mig_has_static_mig_devices_on_mig_enabled_gpus() -> None:
    hardware = build_hardware("n1", load_profile("mixed-mig"))
    assert [g.mig_enabled for g in hardware.gpus] == [True] * 4 + [False] * 4
    assert {d.parent_minor for d in hardware.mig_devices} == {0, 1, 2}
    assert "gpu-1-mig-3g40gb-9-0" in {d.name for d in hardware.mig_devices}


def test_a_profile_can_be_a_users_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("name: lab\ngpu_model: A30-PCIE-24GB\ngpu_count: 2\nmig_enabled: all\n")
    profile = load_profile(str(path))
    assert (profile.name, profile.gpu_count, profile.mig_enabled) == ("lab", 2, "all")


def test_a_profile_says_what_the_simulated_driver_reports_of_confidential_computing(tmp_path: Path) -> None:
    path = tmp_path / "cc.yaml"
    path.write_text('name: cc\ngpu_model: H100-SXM5-80GB\nconfidential_computing: "devtools"\n')
    assert inventory_of(initial_state("node-a", load_profile(str(path)))).confidential_computing == "devtools"
    assert inventory_of(initial_state("node-a", load_profile("dgx-h100"))).confidential_computing is None


def _error(text: str) -> str:
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, source="my.yaml")
    return str(caught.value)


def test_a_wrong_type_names_the_file_line_and_field() -> None:
    message = _error("name: lab\ngpu_model: H100-SXM5-80GB\ngpu_count: many\n")
    assert "my.yaml" in message
    assert "line 3 ($.gpu_count)" in message
    assert "Expected `int`" in message


def test_an_unknown_field_is_refused_with_its_line() -> None:
    message = _error("name: lab\ngpu_model: H100-SXM5-80GB\ngpu_cuont: 4\n")
    assert "line 3 ($.gpu_cuont)" in message
    assert "unknown field" in message


def test_an_unknown_gpu_model_lists_the_known_ones() -> None:
    message = _error("name: lab\ngpu_model: H900\n")
    assert "line 2 ($.gpu_model)" in message
    assert "H100-SXM5-80GB" in message


def test_out_of_range_values_are_refused() -> None:
    assert "line 3 ($.gpu_count)" in _error("name: lab\ngpu_model: H100-SXM5-80GB\ngpu_count: 0\n")


def test_a_mig_layout_the_gpu_would_refuse_points_at_the_entry() -> None:
    text = (
        "name: lab\n"
        "gpu_model: H100-SXM5-80GB\n"
        "mig_enabled: [0]\n"
        "mig_devices:\n"
        "  - {gpu: 0, profile: 3g.40gb, placement: 0}\n"
        "  - {gpu: 0, profile: 1g.10gb, placement: 2}\n"
    )
    message = _error(text)
    assert "line 6 ($.mig_devices[1])" in message
    assert "held by gpu-0-mig-3g40gb-9-0" in message


def test_mig_devices_need_mig_mode_and_an_existing_gpu() -> None:
    base = "name: lab\ngpu_model: H100-SXM5-80GB\ngpu_count: 2\n"
    assert "MIG mode is disabled" in _error(base + "mig_devices: [{gpu: 1, profile: 1g.10gb, placement: 0}]\n")
    assert "GPU index 5 does not exist" in _error(base + "mig_enabled: [5]\n")


def test_broken_yaml_is_reported_as_such() -> None:
    assert "not valid YAML" in _error("name: [unclosed\n")


def test_an_unknown_name_lists_the_builtin_profiles() -> None:
    with pytest.raises(ProfileError, match="dgx-h100"):
        load_profile("dgx-h1000")


def test_the_profile_example_in_the_docs_fails_where_the_docs_say() -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs/devices.md").read_text()
    example = docs[docs.index("name: lab ") :]
    example = example[: example.index("```")]
    with pytest.raises(ProfileError) as caught:
        parse_profile(example, source="lab.yaml")
    assert f"`{caught.value}`" in docs
