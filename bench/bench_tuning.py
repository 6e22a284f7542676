"""Benchmark: the original SVM tuning against ours, on the same data, split and machine.

Baseline (the original method): standardise ALL rows (scaler fitted before the split),
`GridSearchCV` over the original 48 SVC candidates (C x gamma x kernel, linear-with-gamma
included), 5-fold, one fit at a time (n_jobs=1), refit of the best, accuracy on the
held-out rows.

Ours: `tune_svm` (successive halving over the 36 distinct candidates, preprocessing fitted
inside every fold, the split's own CV folds) + the final calibrated SVM fit, then
`tune_dnn` + `fit_dnn` (keras import included), at the budgets from the settings.

Both protocols are run: grouped (whole recordings on one side) and random (rows).
Prints where the time goes, the time ratio and both held-out accuracies.

    python bench/bench_tuning.py                 # full baseline (about 10 min per protocol)
    python bench/bench_tuning.py --quick         # baseline on a subset of candidates, extrapolated

Wall-clock figures depend on the machine's load (printed); compare ratios from one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_IMPORTS_STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.model_selection import GridSearchCV, ParameterGrid  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from modules.data.loading import encode_labels, load_dataset  # noqa: E402
from modules.data.splitting import cv_folds, make_split  # noqa: E402
from modules.errors import ConfigurationError, run_cli  # noqa: E402
from modules.models.preprocessing import build_preprocessor, describe_preprocessor  # noqa: E402
from modules.models.scoring import evaluate  # noqa: E402
from modules.models.svm import fit_svm_model, original_search_space, tune_svm  # noqa: E402
from modules.settings import get_settings  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _IMPORTS_STARTED
QUICK_CANDIDATES_PER_KERNEL = 2


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} on {os.cpu_count()} CPUs"


def _say(line: str) -> None:
    print(line, flush=True)


def run_baseline(
    features: pd.DataFrame, labels: np.ndarray, train: np.ndarray, test: np.ndarray, *, quick: bool, seed: int
) -> dict[str, Any]:
    """The original method; in quick mode on a per-kernel sample of candidates, extrapolated to 48."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    scaled = StandardScaler().fit_transform(features.to_numpy())  # all rows, as the original did
    timings["scale all rows"] = time.perf_counter() - started

    grid = list(ParameterGrid(original_search_space()))
    if quick:
        rng = np.random.default_rng(seed)
        sample = []
        for kernel in ("linear", "rbf", "poly"):
            members = [c for c in grid if c["kernel"] == kernel]
            sample += [
                members[i] for i in rng.choice(len(members), QUICK_CANDIDATES_PER_KERNEL, replace=False)
            ]
        param_grid: Any = [{k: [v] for k, v in c.items()} for c in sample]
        n_run = len(sample)
    else:
        param_grid = original_search_space()
        n_run = len(grid)
    _say(f"baseline: GridSearchCV, {n_run} of {len(grid)} candidates x 5 folds, n_jobs=1, {len(train)} rows")
    started = time.perf_counter()
    search = GridSearchCV(SVC(), param_grid, cv=5, n_jobs=1, scoring="accuracy", refit=False)
    search.fit(scaled[train], labels[train])
    search_seconds = time.perf_counter() - started
    per_candidate = (
        np.asarray(search.cv_results_["mean_fit_time"]) + np.asarray(search.cv_results_["mean_score_time"])
    ) * 5
    kernels = [p["kernel"] for p in search.cv_results_["params"]]
    if quick:
        # Each kernel's mean measured cost times its 16 candidates; overheads scale with the fits.
        measured = sum(per_candidate)
        estimate = sum(
            np.mean([t for t, k in zip(per_candidate, kernels, strict=True) if k == kernel]) * 16
            for kernel in set(kernels)
        )
        timings["grid search (EXTRAPOLATED to 48)"] = search_seconds * estimate / measured
    else:
        timings["grid search (48 x 5 fits)"] = search_seconds
    best = search.best_params_
    started = time.perf_counter()
    model = SVC(**best).fit(scaled[train], labels[train])
    timings["refit best"] = time.perf_counter() - started
    started = time.perf_counter()
    predictions = model.predict(scaled[test])
    timings["predict held-out"] = time.perf_counter() - started
    accuracy = float(np.mean(predictions == labels[test]))
    return {
        "timings": timings,
        "best_params": best,
        "cv_mean": float(search.best_score_),
        "accuracy": accuracy,
        "quick": quick,
        "n_candidates_run": n_run,
    }


def run_ours(
    features: pd.DataFrame,
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    groups: np.ndarray | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """tune_svm + calibrated refit, then tune_dnn + fit_dnn, each step timed."""
    timings: dict[str, float] = {}
    X_train, y_train = features.iloc[train], labels[train]
    X_test, y_test = features.iloc[test], labels[test]

    started = time.perf_counter()
    svm = tune_svm(
        X_train,
        y_train,
        folds,
        pca_variance=args.pca_variance,
        max_candidates=args.max_candidates,
        n_jobs=args.n_jobs,
        seed=args.seed,
        factor=args.factor,
        backend=args.backend,
        progress=_say,
    )
    timings["svm: halving search"] = time.perf_counter() - started
    started = time.perf_counter()
    svm_model = fit_svm_model(
        svm.best_params,
        X_train,
        y_train,
        pca_variance=args.pca_variance,
        seed=args.seed,
        n_jobs=args.n_jobs,
        backend=args.backend,
    )
    timings["svm: final fit (+ calibration)"] = time.perf_counter() - started
    started = time.perf_counter()
    svm_eval = evaluate(
        y_test, svm_model.predict(X_test), svm_model.predict_proba(X_test), labels=svm_model.classes_
    )
    timings["svm: predict held-out"] = time.perf_counter() - started
    preprocessing = describe_preprocessor(svm_model)

    result: dict[str, Any] = {
        "svm": {
            "best_params": svm.best_params,
            "cv_mean": svm.cv_mean,
            "accuracy": svm_eval.accuracy,
            "roc_auc": svm_eval.roc_auc_ovr,
            "n_fits": svm.n_fits,
        },
        "preprocessing": preprocessing,
        "timings": timings,
    }
    if args.skip_dnn:
        return result

    started = time.perf_counter()
    import keras  # noqa: F401  (timed apart: every process that trains a DNN pays it once)

    from modules.models.dnn import best_epoch, fit_dnn, tune_dnn

    timings["dnn: import keras / keras-tuner"] = time.perf_counter() - started
    started = time.perf_counter()
    codes, classes = encode_labels(y_train)
    inner_train, inner_val = folds[0]  # validation rows come from the training part only
    preprocessor = build_preprocessor(args.pca_variance).fit(X_train.iloc[inner_train])
    X_inner = preprocessor.transform(X_train.iloc[inner_train])
    X_val = preprocessor.transform(X_train.iloc[inner_val])
    timings["dnn: preprocess (tuning)"] = time.perf_counter() - started
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-tuner-") as tuner_dir:
        dnn = tune_dnn(
            X_inner,
            codes[inner_train],
            X_val,
            codes[inner_val],
            max_trials=args.dnn_trials,
            max_epochs=args.dnn_epochs,
            seed=args.seed,
            tuner_dir=tuner_dir,
            progress=_say,
        )
    timings["dnn: search"] = time.perf_counter() - started
    started = time.perf_counter()
    final_preprocessor = build_preprocessor(args.pca_variance).fit(X_train)
    if args.dnn_final == "best-epoch":
        # Every training row, for the epoch count at which the best trial peaked.
        fit_options: dict[str, Any] = {"max_epochs": best_epoch(dnn), "validation_fraction": 0.0}
    else:
        # Early stopping on a carved validation part (whole recordings when grouped).
        fit_options = {"max_epochs": args.dnn_epochs, "groups": groups}
    model, history = fit_dnn(
        dnn.best_hyperparameters,
        final_preprocessor.transform(X_train),
        codes,
        seed=args.seed,
        n_classes=len(classes),
        progress=_say,
        **fit_options,
    )
    timings["dnn: final preprocess + fit"] = time.perf_counter() - started
    started = time.perf_counter()
    proba = np.asarray(model.predict(final_preprocessor.transform(X_test).astype("float32"), verbose=0))
    dnn_eval = evaluate(y_test, np.asarray(classes)[proba.argmax(axis=1)], proba, labels=classes)
    timings["dnn: predict held-out"] = time.perf_counter() - started
    result["dnn"] = {
        "best_hyperparameters": dnn.best_hyperparameters,
        "best_val_accuracy": dnn.best_val_accuracy,
        "accuracy": dnn_eval.accuracy,
        "roc_auc": dnn_eval.roc_auc_ovr,
        "epochs": len(history.get("loss", [])),
    }
    return result


def _table(title: str, timings: dict[str, float]) -> float:
    total = sum(timings.values())
    _say(f"  {title}")
    for name, seconds in timings.items():
        _say(f"    {name:<40} {seconds:8.1f} s  {100 * seconds / total:5.1f}%")
    _say(f"    {'total':<40} {total:8.1f} s")
    return total


def bench_protocol(dataset: Any, protocol: str, args: argparse.Namespace) -> dict[str, Any]:
    """One split protocol: baseline, ours, and the comparison."""
    labels = dataset.labels.astype(str).to_numpy()
    split = make_split(dataset.features, dataset.labels, protocol, test_size=args.test_size, seed=args.seed)
    folds = cv_folds(split, dataset.labels, n_splits=args.cv_folds, seed=args.seed)
    train, test = split.train_index, split.test_index
    _say(
        f"\n=== protocol {split.protocol}: {len(train)} training rows, {len(test)} held-out rows, "
        f"{split.n_recordings} recordings; {_load()}"
    )
    baseline = None
    if not args.skip_baseline:
        baseline = run_baseline(dataset.features, labels, train, test, quick=args.quick, seed=args.seed)
    # The final DNN's early-stopping rows: whole recordings under the grouped protocol.
    groups = split.groups[train] if split.protocol == "grouped" and split.groups is not None else None
    ours = run_ours(dataset.features, labels, train, test, folds, groups, args)

    _say(f"\n--- {split.protocol}: where the time goes ({_load()})")
    ours_total = _table("ours", ours["timings"])
    svm_total = sum(v for k, v in ours["timings"].items() if k.startswith("svm"))
    p = ours["preprocessing"]
    _say(
        f"  columns: {p['n_input_columns']} in -> {p['n_after_dedup']} after dropping duplicates/constants"
        + (f" -> {p['n_after_pca']} after PCA({p['pca_variance']})" if p["n_after_pca"] else "")
    )
    _say(
        f"  ours SVM: {ours['svm']['best_params']} cv {ours['svm']['cv_mean']:.3f}, "
        f"held-out accuracy {ours['svm']['accuracy']:.3f}, ROC AUC {ours['svm']['roc_auc']:.3f}"
    )
    if "dnn" in ours:
        _say(
            f"  ours DNN: {ours['dnn']['best_hyperparameters']} val {ours['dnn']['best_val_accuracy']:.3f}, "
            f"held-out accuracy {ours['dnn']['accuracy']:.3f}, ROC AUC {ours['dnn']['roc_auc']:.3f}"
        )
    summary = {"protocol": split.protocol, "ours_total_s": ours_total, "ours_svm_s": svm_total, "ours": ours}
    if baseline is not None:
        label = "original (EXTRAPOLATED from a candidate subset)" if baseline["quick"] else "original"
        baseline_total = _table(label, baseline["timings"])
        accuracy_note = (
            f" (best of the {baseline['n_candidates_run']}-candidate subset, not of all 48)"
            if baseline["quick"]
            else ""
        )
        _say(
            f"  original SVM: {baseline['best_params']} cv {baseline['cv_mean']:.3f}, "
            f"held-out accuracy {baseline['accuracy']:.3f}{accuracy_note}"
        )
        _say(
            f"  time ratio original / ours: SVM only {baseline_total / svm_total:.1f}x, "
            f"SVM + DNN {baseline_total / ours_total:.1f}x"
            + (" (baseline time extrapolated)" if baseline["quick"] else "")
        )
        _say(
            f"  held-out accuracy: original {baseline['accuracy']:.3f} | ours SVM {ours['svm']['accuracy']:.3f}"
            + (f" | ours DNN {ours['dnn']['accuracy']:.3f}" if "dnn" in ours else "")
        )
        summary.update(baseline_total_s=baseline_total, baseline=baseline)
    return summary


def _parser() -> argparse.ArgumentParser:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        description="Time the original SVM grid search against our tuning + training on the same data.",
    )
    parser.add_argument(
        "--data", type=Path, default=settings.data_path, help="feature CSV (default: %(default)s)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"baseline on {3 * QUICK_CANDIDATES_PER_KERNEL} of the 48 candidates, its time extrapolated to 48",
    )
    parser.add_argument("--protocols", default="grouped,random", help="comma-separated split protocols")
    parser.add_argument("--seed", type=int, default=settings.seed)
    parser.add_argument("--test-size", type=float, default=settings.test_size)
    parser.add_argument("--cv-folds", type=int, default=settings.cv_folds)
    parser.add_argument("--n-jobs", type=int, default=settings.svm_n_jobs, help="parallel SVM fits (ours)")
    parser.add_argument("--max-candidates", type=int, default=settings.svm_max_candidates)
    parser.add_argument("--factor", type=int, default=3, help="halving factor (ours)")
    parser.add_argument(
        "--backend", default="threading", help="joblib backend of our SVM fits (threading, loky)"
    )
    parser.add_argument(
        "--pca-variance",
        type=lambda v: None if v.lower() in ("", "0", "none", "off") else float(v),
        default=settings.pca_variance,
        help="PCA explained variance for our preprocessing, or none (default: %(default)s)",
    )
    parser.add_argument("--dnn-trials", type=int, default=settings.dnn_max_trials)
    parser.add_argument("--dnn-epochs", type=int, default=settings.dnn_max_epochs)
    parser.add_argument(
        "--dnn-final",
        choices=("best-epoch", "early-stopping"),
        default="best-epoch",
        help="final DNN fit: all rows for the tuned epoch count, or early stopping on a carved part",
    )
    parser.add_argument("--skip-baseline", action="store_true", help="time our method only")
    parser.add_argument("--skip-dnn", action="store_true", help="leave the DNN out of our method")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = [p for p in protocols if p not in ("grouped", "random")]
    if unknown:
        raise ConfigurationError(f"--protocols: {unknown[0]!r} is not one of grouped, random")
    path = Path(args.data)
    scratch = None
    if not path.is_file():
        from modules.data.sample import build_sample

        scratch = tempfile.TemporaryDirectory(prefix="bench-data-")
        path = Path(scratch.name) / "emotions.csv"
        _say(f"{args.data} does not exist: building the offline sample in {path}")
        build_sample(path, seed=args.seed)
    _say(f"imports (numpy, pandas, scikit-learn, modules): {IMPORT_SECONDS:.1f} s; {_load()}")
    started = time.perf_counter()
    dataset = load_dataset(path)
    _say(
        f"data: {path} ({dataset.source}), {dataset.features.shape[0]} rows x {dataset.features.shape[1]} "
        f"features, loaded in {time.perf_counter() - started:.1f} s"
    )
    summaries = [bench_protocol(dataset, protocol, args) for protocol in protocols]
    _say(
        "\n=== summary"
        + (" (QUICK: baseline times extrapolated from a candidate subset)" if args.quick else "")
    )
    for s in summaries:
        line = f"  {s['protocol']:<8} ours {s['ours_total_s']:6.1f} s (SVM {s['ours_svm_s']:.1f} s)"
        if "baseline_total_s" in s:
            line += (
                f" | original {s['baseline_total_s']:6.1f} s | ratio {s['baseline_total_s'] / s['ours_total_s']:.1f}x"
                f" | held-out accuracy original {s['baseline']['accuracy']:.3f}"
            )
        line += f", ours SVM {s['ours']['svm']['accuracy']:.3f}"
        if "dnn" in s["ours"]:
            line += f", ours DNN {s['ours']['dnn']['accuracy']:.3f}"
        _say(line)
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    run_cli(main)
