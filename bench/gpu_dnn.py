"""Benchmark: the project's DNN on Keras 3's JAX backend, CPU against GPU in the same run.

Training and inference samples per second of the network `modules.models.dnn.build_dnn`
builds (default: the search space's largest, 3 x 256 units, batch 128) on synthetic rows
of the dataset's width. Each device is measured in its own subprocess (KERAS_BACKEND=jax;
JAX_PLATFORMS=cpu, then JAX's own choice), so one device's memory and compiled code never help the
other. Both start from the same weights (numpy's generator) on the same rows; the GPU's
predictions after training are compared with the CPU's.

The rows are streamed: a base block of a few thousand rows is repeated batch by batch
(a `keras.utils.PyDataset`), so 500k x 2548 float32 (5.1 GB) never sits in memory. The
first epoch's compilation is kept out of the timings by a short warm-up fit and predict.

    python bench/gpu_dnn.py                                   # 500k x 2548, 2 epochs (about 1.5 min per epoch on 2 cores)
    python bench/gpu_dnn.py --rows 20000 --epochs 1           # a quick look

Without a GPU that JAX can use (no NVIDIA driver, or jax without its CUDA wheels:
docker/requirements-gpu.txt), it prints that the GPU side is unverified and exits 0
after the CPU figures. Wall-clock figures depend on the machine's load (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modules.errors import ConfigurationError, run_cli
from modules.models.dnn import BATCH_SIZE_CHOICES, MAX_LAYERS, UNIT_CHOICES

CLASSES = 3  # NEGATIVE, NEUTRAL, POSITIVE
NO_GPU = 3  # a measuring subprocess's exit code when JAX sees no GPU
# JAX_PLATFORMS per measurement: only the CPU, or JAX's choice (a GPU when it can use one).
PLATFORMS = {"cpu": "cpu", "gpu": None}


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} on {os.cpu_count()} CPUs"


def _say(line: str) -> None:
    print(line, flush=True)


def _hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {
        "layers": args.layers,
        "dropout": args.dropout,
        "learning_rate": 1e-3,
        "batch_size": args.batch_size,
    }
    values.update({f"units_{i}": args.units for i in range(args.layers)})
    return values


def _rows_dataset(base: np.ndarray, labels: np.ndarray, rows: int, batch_size: int) -> Any:
    """`rows` rows in batches, cycling over the base block."""
    import keras

    class RepeatedRows(keras.utils.PyDataset):
        def __len__(self) -> int:
            return rows // batch_size

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            start = (index * batch_size) % len(base)
            if start + batch_size <= len(base):
                return base[start : start + batch_size], labels[start : start + batch_size]
            wrapped = np.arange(start, start + batch_size) % len(base)
            return base[wrapped], labels[wrapped]

    return RepeatedRows()


def _start_weights(model: Any, seed: int) -> None:
    """Glorot-uniform kernels and zero biases from numpy: the same start on every device."""
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        if w.ndim == 2:
            limit = np.sqrt(6.0 / (w.shape[0] + w.shape[1]))
            weights.append(rng.uniform(-limit, limit, size=w.shape).astype("float32"))
        else:
            weights.append(np.zeros(w.shape, dtype="float32"))
    model.set_weights(weights)


def measure(device: str, args: argparse.Namespace, out: Path) -> int:
    """In the subprocess: train and predict on this process's JAX platform; figures into `out`."""
    import jax

    devices = jax.devices()
    if devices[0].platform != device:  # JAX fell back to its CPU: no GPU it can use
        _say(f"{device}: JAX {jax.__version__} sees no {device}, only {devices}")
        return NO_GPU
    import keras

    from modules.models.dnn import build_dnn

    if keras.backend.backend() != "jax":
        raise ConfigurationError(f"expected Keras on the JAX backend, got {keras.backend.backend()!r}")
    _say(f"{device}: JAX {jax.__version__} on {devices}; {_load()}")
    batch = args.batch_size
    base_rows = batch * max(1, min(args.rows, args.base_rows) // batch)
    rng = np.random.default_rng(args.seed)
    labels = np.arange(base_rows) % CLASSES
    base = (rng.normal(size=(base_rows, args.columns)) + 0.1 * labels[:, None]).astype("float32")
    rows = batch * (args.rows // batch)

    keras.utils.set_random_seed(args.seed)
    model = build_dnn(_hyperparameters(args), args.columns, CLASSES)
    _start_weights(model, args.seed)
    warm = min(rows, 10 * batch)
    began = time.perf_counter()
    model.fit(_rows_dataset(base, labels, warm, batch), epochs=1, verbose=0)
    model.predict(_rows_dataset(base, labels, args.predict_batch_size, args.predict_batch_size), verbose=0)
    _say(
        f"{device}: warm-up (compilation, {warm} rows trained, one batch predicted) {time.perf_counter() - began:.1f} s"
    )
    _start_weights(model, args.seed)  # the warm-up trained a little: start again

    epoch_seconds = []
    for epoch in range(args.epochs):
        began = time.perf_counter()
        model.fit(_rows_dataset(base, labels, rows, batch), epochs=1, verbose=0)
        epoch_seconds.append(time.perf_counter() - began)
        _say(
            f"{device}: epoch {epoch + 1}/{args.epochs}: {rows} rows in {epoch_seconds[-1]:.1f} s "
            f"({rows / epoch_seconds[-1]:,.0f} samples/s)"
        )
    predict_rows = args.predict_batch_size * max(1, rows // args.predict_batch_size)
    began = time.perf_counter()
    model.predict(_rows_dataset(base, labels, predict_rows, args.predict_batch_size), verbose=0)
    predict_seconds = time.perf_counter() - began
    _say(
        f"{device}: predict {predict_rows} rows in {predict_seconds:.1f} s "
        f"({predict_rows / predict_seconds:,.0f} samples/s)"
    )
    np.save(out.with_suffix(".npy"), np.asarray(model.predict(base[:1024], verbose=0)))
    figures = {
        "device": str(devices[0]),
        "rows": rows,
        "epoch_seconds": epoch_seconds,
        # The fastest epoch: the least disturbed by other load on a shared machine.
        "train_samples_per_s": rows / min(epoch_seconds),
        "predict_samples_per_s": predict_rows / predict_seconds,
    }
    out.write_text(json.dumps(figures))
    return 0


def _measure_in_subprocess(device: str, argv: list[str], folder: Path) -> dict[str, Any] | None:
    out = folder / f"{device}.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("JAX_PLATFORMS", None)
    if PLATFORMS[device]:
        env["JAX_PLATFORMS"] = PLATFORMS[device]
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--measure", device, "--out", str(out)]
    done = subprocess.run(command, env=env)
    if done.returncode == NO_GPU:
        return None
    if done.returncode != 0:
        raise ConfigurationError(f"the {device} measurement failed (exit {done.returncode}); see above")
    figures = json.loads(out.read_text())
    figures["predictions"] = np.load(out.with_suffix(".npy"))
    return figures


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000, help="rows per epoch (default: %(default)s)")
    parser.add_argument("--columns", type=int, default=2548, help="features per row (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=MAX_LAYERS, help="hidden layers (default: %(default)s)")
    parser.add_argument(
        "--units", type=int, default=max(UNIT_CHOICES), help="units per hidden layer (default: %(default)s)"
    )
    parser.add_argument("--dropout", type=float, default=0.2, help="dropout rate (default: %(default)s)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=max(BATCH_SIZE_CHOICES),
        help="training batch (default: %(default)s)",
    )
    parser.add_argument(
        "--predict-batch-size", type=int, default=4096, help="inference batch (default: %(default)s)"
    )
    parser.add_argument(
        "--base-rows", type=int, default=8192, help="distinct rows, repeated to --rows (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--measure", choices=sorted(PLATFORMS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    for name in ("rows", "columns", "epochs", "layers", "units", "batch_size", "predict_batch_size"):
        if getattr(args, name) < 1:
            raise ConfigurationError(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}"
            )
    if args.rows < args.batch_size:
        raise ConfigurationError(
            f"--rows {args.rows} is less than one batch (--batch-size {args.batch_size})"
        )
    if args.measure:
        return measure(args.measure, args, args.out)

    _say(
        f"DNN {args.layers} x {args.units} units (dropout {args.dropout}), batch {args.batch_size}, "
        f"{args.rows} x {args.columns} rows x columns ({args.rows * args.columns * 4 / 1e9:.1f} GB as float32, "
        f"streamed from {args.base_rows} distinct rows), {args.epochs} epoch(s); {_load()}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-gpu-dnn-") as folder:
        cpu = _measure_in_subprocess("cpu", argv, Path(folder))
        gpu = _measure_in_subprocess("gpu", argv, Path(folder))
    assert cpu is not None
    _say("\n=== summary")
    _say(
        f"  CPU ({cpu['device']}): train {cpu['train_samples_per_s']:,.0f} samples/s, "
        f"predict {cpu['predict_samples_per_s']:,.0f} samples/s"
    )
    if gpu is None:
        _say(
            "  GPU: none that JAX can use here (no NVIDIA driver, or jax without the CUDA wheels of "
            "docker/requirements-gpu.txt): the GPU side is UNVERIFIED."
        )
        return 0
    gap = float(np.abs(gpu["predictions"] - cpu["predictions"]).max())
    _say(
        f"  GPU ({gpu['device']}): train {gpu['train_samples_per_s']:,.0f} samples/s, "
        f"predict {gpu['predict_samples_per_s']:,.0f} samples/s"
    )
    _say(
        f"  GPU / CPU: train {gpu['train_samples_per_s'] / cpu['train_samples_per_s']:.1f}x, "
        f"predict {gpu['predict_samples_per_s'] / cpu['predict_samples_per_s']:.1f}x"
    )
    _say(f"  same start, same rows: largest |GPU - CPU| probability after training {gap:.2e}")
    return 0


if __name__ == "__main__":
    run_cli(main)
