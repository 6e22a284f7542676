"""The promotion gate: may a new model version become `champion`? A pure function of figures.

A new version takes `champion` only when every check holds, each on the same held-out rows:

1. `data_verified`: the data it was trained on has a verified digest (in production: the one
   pinned in `data/manifest.json`; locally: the digest recorded when the split was made);
2. `beats_baseline`: its accuracy beats the majority-class baseline by at least
   `PROMOTION_MIN_MARGIN` (this applies to the very first version too);
3. `same_schema`: the current champion was trained on the same columns and labels, or the run
   allows a schema change (`ALLOW_SCHEMA_CHANGE=1`);
4. `beats_champion`: it beats the current champion, scored fresh on the same rows (a tie keeps
   the champion).

No MLflow call happens here: the caller gathers the figures (scoring the champion only when
`needs_champion_score` says so) and applies the decision. A failure while scoring the
champion is the caller's to raise: the gate never promotes on an exception.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Schema:
    """The columns and labels a model was trained on, compact enough for a registry tag."""

    columns_digest: str
    n_columns: int
    labels: tuple[str, ...]

    @classmethod
    def of(cls, columns: Sequence[str], labels: Sequence[str]) -> Schema:
        """The schema of a dataset: a digest of its ordered column names, and its sorted labels."""
        digest = hashlib.sha256("\x1f".join(map(str, columns)).encode("utf-8")).hexdigest()
        return cls(columns_digest=digest, n_columns=len(columns), labels=tuple(sorted(map(str, labels))))

    def matches(self, other: Schema) -> bool:
        """Same columns in the same order, and the same labels where both are known."""
        same_labels = not self.labels or not other.labels or self.labels == other.labels
        return self.columns_digest == other.columns_digest and same_labels

    def describe(self) -> str:
        """`2548 columns (3f2a9c1b), labels NEGATIVE/NEUTRAL/POSITIVE`."""
        labels = "/".join(self.labels) if self.labels else "unknown"
        return f"{self.n_columns} columns ({self.columns_digest[:8]}), labels {labels}"

    def to_tags(self) -> dict[str, str]:
        """Registry tags that `from_tags` reads back."""
        return {
            "schema.columns_digest": self.columns_digest,
            "schema.n_columns": str(self.n_columns),
            "schema.labels": ",".join(self.labels),
        }

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Schema | None:
        """The schema recorded on a model version, or None when it has none."""
        try:
            return cls(
                columns_digest=tags["schema.columns_digest"],
                n_columns=int(tags["schema.n_columns"]),
                labels=tuple(tags["schema.labels"].split(",")),
            )
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class Candidate:
    """The new version's figures on the held-out rows."""

    version: str
    accuracy: float
    baseline_accuracy: float
    schema: Schema
    data_verified: bool
    data_check: str  # one line saying what was verified, or why not


@dataclass(frozen=True)
class Champion:
    """The current champion: its schema, and its accuracy scored fresh on the same rows."""

    version: str
    schema: Schema | None
    accuracy: float | None = None


@dataclass(frozen=True)
class Check:
    """One condition of the gate and its figures."""

    name: str
    passed: bool | None  # None: not evaluated (an earlier condition already said no)
    detail: str


@dataclass(frozen=True)
class Decision:
    """What the gate decided, why, and every check with its figures."""

    promote: bool
    reason: str
    checks: list[Check] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def tags(self) -> dict[str, str]:
        """The decision as registry tags of the version (`gate.beats_baseline=passed: ...`)."""
        tags = {"gate.promoted": str(self.promote).lower(), "gate.reason": self.reason}
        for check in self.checks:
            state = {True: "passed", False: "failed", None: "not checked"}[check.passed]
            tags[f"gate.{check.name}"] = f"{state}: {check.detail}"
        return tags


def needs_champion_score(candidate: Candidate, champion: Champion | None) -> bool:
    """Whether the caller must score the champion: only when it could change the decision."""
    return (
        champion is not None
        and champion.version != candidate.version
        and (champion.schema is None or champion.schema.matches(candidate.schema))
    )


def decide_promotion(
    candidate: Candidate,
    champion: Champion | None,
    *,
    min_margin: float,
    allow_schema_change: bool = False,
) -> Decision:
    """Apply the gate's four checks in order; the first that fails is the reason."""
    checks: list[Check] = []

    def verdict(promote: bool, reason: str) -> Decision:
        done = {c.name for c in checks}
        for name in ("data_verified", "beats_baseline", "same_schema", "beats_champion"):
            if name not in done:
                checks.append(Check(name, None, "an earlier check already decided"))
        return Decision(promote=promote, reason=reason, checks=checks)

    checks.append(Check("data_verified", candidate.data_verified, candidate.data_check))
    if not candidate.data_verified:
        return verdict(False, f"not promoted: the training data is not verified ({candidate.data_check})")

    margin = candidate.accuracy - candidate.baseline_accuracy
    floor = (
        f"accuracy {candidate.accuracy:.4f} vs majority-class baseline {candidate.baseline_accuracy:.4f}: "
        f"margin {margin:+.4f}, required {min_margin:.2f}"
    )
    passes_floor = margin >= min_margin - 1e-12
    checks.append(Check("beats_baseline", passes_floor, floor))
    if not passes_floor:
        return verdict(False, f"not promoted: below baseline ({floor})")

    if champion is None:
        checks.append(Check("same_schema", True, "no champion yet"))
        checks.append(Check("beats_champion", True, "no champion yet"))
        return verdict(True, f"first version to pass the gate ({floor})")
    if champion.version == candidate.version:
        return verdict(False, f"not promoted: v{candidate.version} is already the champion")

    if champion.schema is not None and not champion.schema.matches(candidate.schema):
        schemas = (
            f"champion v{champion.version} was trained on {champion.schema.describe()}, "
            f"this version on {candidate.schema.describe()}"
        )
        if not allow_schema_change:
            checks.append(Check("same_schema", False, schemas))
            return verdict(
                False, f"not promoted: schema differs ({schemas}); set ALLOW_SCHEMA_CHANGE=1 to replace it"
            )
        checks.append(Check("same_schema", True, f"schema change allowed: {schemas}"))
        checks.append(Check("beats_champion", None, "not comparable: the schema changed"))
        return verdict(True, f"schema change allowed by ALLOW_SCHEMA_CHANGE ({schemas}); {floor}")
    checks.append(
        Check(
            "same_schema",
            True,
            "same columns and labels" if champion.schema else "champion has no schema tags",
        )
    )

    if champion.accuracy is None:
        raise ValueError(f"champion v{champion.version} must be scored before the gate can compare it")
    comparison = (
        f"accuracy {candidate.accuracy:.4f} vs champion v{champion.version} {champion.accuracy:.4f} "
        "on the same held-out rows"
    )
    better = candidate.accuracy > champion.accuracy
    checks.append(Check("beats_champion", better, comparison))
    if not better:
        return verdict(False, f"not promoted: does not beat the champion ({comparison}); champion kept")
    return verdict(True, f"beats champion v{champion.version} ({comparison}) and the baseline ({floor})")
