"""docs/passthrough.md's examples: every Kubernetes object valid against 1.36 strict, and asking for VM GPUs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

DOC = Path(__file__).resolve().parents[2] / "docs/passthrough.md"
BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def examples() -> list[dict[str, Any]]:
    return [obj for block in BLOCK.findall(DOC.read_text()) for obj in yaml.safe_load_all(block) if obj]


def test_the_kubernetes_examples_validate_against_1_36_strict() -> None:
    kinds = []
    for obj in examples():
        if obj["apiVersion"].startswith("kubevirt.io/"):
            continue  # not a Kubernetes built-in
        kubernetes_validate.validate(obj, "1.36.0", strict=True)
        kinds.append(obj["kind"])
    assert kinds == ["ResourceClaimTemplate", "Pod"]


def test_the_template_asks_for_a_vm_gpu_and_both_workloads_use_it() -> None:
    objects = {obj["kind"]: obj for obj in examples()}
    [request] = objects["ResourceClaimTemplate"]["spec"]["spec"]["devices"]["requests"]
    assert request["exactly"]["deviceClassName"] == "vfio.gpudra.io"
    template = objects["ResourceClaimTemplate"]["metadata"]["name"]
    assert objects["Pod"]["spec"]["resourceClaims"][0]["resourceClaimTemplateName"] == template
    vm_claims = objects["VirtualMachine"]["spec"]["template"]["spec"]["resourceClaims"]
    assert vm_claims[0]["resourceClaimTemplateName"] == template
