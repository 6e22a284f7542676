"""What a step asks of Kubernetes: CPU, memory and, for the DNN, a GPU on GKE.

`step_resources("cpu" | "gpu")` gives the keyword arguments of Metaflow's `@kubernetes` (and, less
the placement keys, of `@resources`), read from environment variables, then from the active
Metaflow profile (`$METAFLOW_HOME/config_$METAFLOW_PROFILE.json`, e.g. infra/metaflow/config_gke.json),
then from the defaults below. `kubernetes_step(kind)` applies them in one line:

    @kubernetes_step("gpu")
    @step
    def tune_dnn(self): ...

Locally it is `@resources`, which local runs ignore, so `make run` is unchanged. With a Kubernetes
profile active (its config names METAFLOW_KUBERNETES_NAMESPACE), or inside a Metaflow pod, it is
`@kubernetes`, so the GPU step lands on a GPU node even when the other steps run locally.

Settings (environment variable, else profile key, else default):
  STEP_CPU=2, STEP_MEMORY_MB=4096          what a "cpu" step requests
  GPU_STEP_CPU=4, GPU_STEP_MEMORY_MB=16384 what a "gpu" step requests besides its GPUs
  GPU_STEPS=1                              0 runs "gpu" steps without a GPU (clusters without GPUs)
  GPU_COUNT=1                              GPUs per "gpu" step
  GPU_ACCELERATOR=nvidia-l4                GKE's accelerator name, the node selector's value
  GPU_STEP_IMAGE=(none)                    image of "gpu" steps (docker/Dockerfile.gpu, by digest);
                                           none: METAFLOW_KUBERNETES_CONTAINER_IMAGE, as the others
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from modules.errors import ConfigurationError

StepKind = Literal["cpu", "gpu"]

# GKE labels GPU nodes with their accelerator; Autopilot provisions the node a pod selects.
GPU_NODE_SELECTOR_KEY = "cloud.google.com/gke-accelerator"
# GKE taints GPU nodes so that only pods that tolerate the taint land there.
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

DEFAULTS: dict[str, str] = {
    "STEP_CPU": "2",
    "STEP_MEMORY_MB": "4096",
    "GPU_STEP_CPU": "4",
    "GPU_STEP_MEMORY_MB": "16384",
    "GPU_STEPS": "1",
    "GPU_COUNT": "1",
    "GPU_ACCELERATOR": "nvidia-l4",
    "GPU_STEP_IMAGE": "",
}
_ACCELERATOR_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


def profile_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The active Metaflow profile's values, {} without a profile (what Metaflow itself reads)."""
    env = os.environ if env is None else env
    profile = env.get("METAFLOW_PROFILE")
    if not profile:
        return {}
    home = Path(env.get("METAFLOW_HOME", "~/.metaflowconfig")).expanduser()
    path = home / f"config_{profile}.json"
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(
            f"METAFLOW_PROFILE={profile}: {path} does not exist (set METAFLOW_HOME to its folder, "
            "e.g. infra/metaflow)"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigurationError(f"{path} must hold one JSON object of settings")
    return values


def setting(name: str, env: Mapping[str, str] | None = None) -> str:
    """A setting from the environment, else the active profile, else DEFAULTS."""
    env = os.environ if env is None else env
    if env.get(name, "") != "":
        return env[name]
    value = profile_config(env).get(name)
    return DEFAULTS[name] if value in (None, "") else str(value)


def _positive_number(name: str, env: Mapping[str, str] | None, *, integer: bool) -> str:
    text = setting(name, env).strip()
    try:
        number = int(text) if integer else float(text)
    except ValueError:
        number = 0
    if number <= 0:
        kind = "a whole number" if integer else "a number"
        raise ConfigurationError(f"{name}={text!r}: expected {kind} above 0")
    return text


def gpu_steps_enabled(env: Mapping[str, str] | None = None) -> bool:
    """GPU_STEPS: 1 (default) gives "gpu" steps their GPUs, 0 runs them on CPU nodes."""
    text = setting("GPU_STEPS", env).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"GPU_STEPS={text!r}: expected 1 or 0")


def step_resources(kind: StepKind, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`@kubernetes` keyword arguments for a "cpu" or a "gpu" step (cpu, memory; gpu and placement)."""
    if kind == "cpu":
        return {
            "cpu": _positive_number("STEP_CPU", env, integer=False),
            "memory": _positive_number("STEP_MEMORY_MB", env, integer=True),
        }
    if kind != "gpu":
        raise ConfigurationError(f"step kind {kind!r}: expected 'cpu' or 'gpu'")
    resources: dict[str, Any] = {
        "cpu": _positive_number("GPU_STEP_CPU", env, integer=False),
        "memory": _positive_number("GPU_STEP_MEMORY_MB", env, integer=True),
    }
    if not gpu_steps_enabled(env):
        return resources
    accelerator = setting("GPU_ACCELERATOR", env).strip()
    if not accelerator or not set(accelerator) <= _ACCELERATOR_CHARS:
        raise ConfigurationError(
            f"GPU_ACCELERATOR={accelerator!r}: expected a GKE accelerator name such as nvidia-l4"
        )
    resources |= {
        "gpu": int(_positive_number("GPU_COUNT", env, integer=True)),
        "node_selector": {GPU_NODE_SELECTOR_KEY: accelerator},
        "tolerations": [dict(GPU_TOLERATION)],
    }
    image = setting("GPU_STEP_IMAGE", env).strip()
    if image:
        # The CUDA build of the runtime; a tag can move, a digest cannot.
        if "@sha256:" not in image:
            raise ConfigurationError(
                f"GPU_STEP_IMAGE={image!r}: expected an image pinned by digest (...@sha256:...)"
            )
        resources["image"] = image
    return resources


def resources_arguments(kind: StepKind, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The subset `@resources` takes (no placement): cpu, memory, gpu."""
    return {key: value for key, value in step_resources(kind, env).items() if key in ("cpu", "memory", "gpu")}


def on_kubernetes(env: Mapping[str, str] | None = None) -> bool:
    """Inside a Metaflow pod, or with a profile that names a Kubernetes namespace."""
    env = os.environ if env is None else env
    if env.get("METAFLOW_KUBERNETES_WORKLOAD"):
        return True
    return bool(
        env.get("METAFLOW_KUBERNETES_NAMESPACE") or profile_config(env).get("METAFLOW_KUBERNETES_NAMESPACE")
    )


def kubernetes_step(kind: StepKind, env: Mapping[str, str] | None = None) -> Callable[[Any], Any]:
    """The step decorator for `kind`: `@kubernetes` on Kubernetes, `@resources` locally."""
    from metaflow import kubernetes, resources

    if on_kubernetes(env):
        return kubernetes(**step_resources(kind, env))
    return resources(**resources_arguments(kind, env))
