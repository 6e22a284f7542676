"""step_resources: what a step asks of Kubernetes, from the environment, the profile and defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modules.errors import ConfigurationError
from modules.kubernetes import (
    GPU_NODE_SELECTOR_KEY,
    kubernetes_step,
    on_kubernetes,
    profile_config,
    resources_arguments,
    step_resources,
)

REPO = Path(__file__).resolve().parents[2]
GKE_PROFILE = {"METAFLOW_PROFILE": "gke", "METAFLOW_HOME": str(REPO / "infra" / "metaflow")}


def a_profile(tmp_path: Path, **values: str) -> dict[str, str]:
    """An environment selecting a profile file with these values."""
    (tmp_path / "config_test.json").write_text(json.dumps(values), encoding="utf-8")
    return {"METAFLOW_PROFILE": "test", "METAFLOW_HOME": str(tmp_path)}


def test_cpu_steps_get_the_defaults_and_no_gpu() -> None:
    assert step_resources("cpu", {}) == {"cpu": "2", "memory": "4096"}


def test_gpu_steps_get_a_gpu_the_gke_node_selector_and_the_toleration() -> None:
    resources = step_resources("gpu", {})
    assert resources == {
        "cpu": "4",
        "memory": "16384",
        "gpu": 1,
        "node_selector": {GPU_NODE_SELECTOR_KEY: "nvidia-l4"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    assert GPU_NODE_SELECTOR_KEY == "cloud.google.com/gke-accelerator"


def test_gpu_steps_0_keeps_the_size_and_drops_the_gpu_and_its_placement() -> None:
    assert step_resources("gpu", {"GPU_STEPS": "0"}) == {"cpu": "4", "memory": "16384"}
    assert step_resources("gpu", {"GPU_STEPS": "off"}) == {"cpu": "4", "memory": "16384"}


def test_environment_overrides_the_profile_which_overrides_the_defaults(tmp_path: Path) -> None:
    env = a_profile(tmp_path, GPU_ACCELERATOR="nvidia-tesla-t4", GPU_COUNT="2", STEP_CPU="0.5")
    assert step_resources("gpu", env)["node_selector"] == {GPU_NODE_SELECTOR_KEY: "nvidia-tesla-t4"}
    assert step_resources("gpu", env)["gpu"] == 2
    assert step_resources("cpu", env) == {"cpu": "0.5", "memory": "4096"}
    env |= {"GPU_ACCELERATOR": "nvidia-a100-80gb", "STEP_MEMORY_MB": "2048", "GPU_STEPS": "0"}
    assert step_resources("cpu", env) == {"cpu": "0.5", "memory": "2048"}
    assert "gpu" not in step_resources("gpu", env)


def test_the_gke_profile_turns_gpu_steps_on_with_the_gpu_image() -> None:
    assert profile_config(GKE_PROFILE)["GPU_STEPS"] == "1"
    resources = step_resources("gpu", GKE_PROFILE)
    assert resources["gpu"] == 1
    assert resources["image"] == profile_config(GKE_PROFILE)["GPU_STEP_IMAGE"]
    assert "/pipeline-gpu@sha256:" in resources["image"]
    assert "image" not in step_resources("cpu", GKE_PROFILE), "CPU steps keep the profile's image"
    assert "image" not in step_resources("gpu", {**GKE_PROFILE, "GPU_STEPS": "0"})
    assert "image" not in resources_arguments("gpu", GKE_PROFILE), "@resources takes no image"


def test_resources_arguments_leave_out_the_placement() -> None:
    assert resources_arguments("gpu", {}) == {"cpu": "4", "memory": "16384", "gpu": 1}
    assert resources_arguments("cpu", {}) == {"cpu": "2", "memory": "4096"}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STEP_CPU": "0"}, "STEP_CPU='0'"),
        ({"STEP_CPU": "two"}, "STEP_CPU='two'"),
        ({"STEP_MEMORY_MB": "4.5"}, "STEP_MEMORY_MB='4.5'"),
        ({"GPU_STEP_MEMORY_MB": "-1"}, "GPU_STEP_MEMORY_MB='-1'"),
        ({"GPU_COUNT": "0"}, "GPU_COUNT='0'"),
        ({"GPU_STEPS": "maybe"}, "GPU_STEPS='maybe'"),
        ({"GPU_ACCELERATOR": "NVIDIA L4"}, "GPU_ACCELERATOR='NVIDIA L4'"),
        ({"GPU_STEP_IMAGE": "registry/pipeline-gpu:latest"}, "GPU_STEP_IMAGE='registry/pipeline-gpu:latest'"),
    ],
)
def test_unusable_values_are_one_line_errors_naming_the_setting(env: dict, named: str) -> None:
    kind = "cpu" if env.keys() <= {"STEP_CPU", "STEP_MEMORY_MB"} else "gpu"
    with pytest.raises(ConfigurationError) as caught:
        step_resources(kind, env)
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_an_unknown_kind_and_a_missing_profile_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="'tpu'"):
        step_resources("tpu", {})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"config_nowhere\.json does not exist"):
        step_resources("cpu", {"METAFLOW_PROFILE": "nowhere", "METAFLOW_HOME": str(tmp_path)})


def test_placement_follows_the_profile_or_the_pod(tmp_path: Path) -> None:
    assert not on_kubernetes({})
    assert not on_kubernetes(a_profile(tmp_path, METAFLOW_DEFAULT_DATASTORE="gs"))
    assert on_kubernetes(GKE_PROFILE)
    assert on_kubernetes({"METAFLOW_KUBERNETES_WORKLOAD": "1"})


def a_step():
    """A fresh Metaflow step function to decorate."""
    from metaflow import step

    def train_dnn(self):
        pass

    return step(train_dnn)


def test_kubernetes_step_is_kubernetes_on_a_cluster_and_resources_locally() -> None:
    from metaflow.plugins.kubernetes.kubernetes_decorator import KubernetesDecorator
    from metaflow.plugins.resources_decorator import ResourcesDecorator

    (decorator,) = kubernetes_step("gpu", GKE_PROFILE)(a_step()).decorators
    assert isinstance(decorator, KubernetesDecorator)
    assert decorator.attributes["gpu"] == 1
    assert decorator.attributes["node_selector"] == {GPU_NODE_SELECTOR_KEY: "nvidia-l4"}

    (decorator,) = kubernetes_step("gpu", {})(a_step()).decorators
    assert isinstance(decorator, ResourcesDecorator)
    assert decorator.attributes["gpu"] == 1 and decorator.attributes["memory"] == "16384"
