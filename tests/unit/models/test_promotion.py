"""The promotion gate's decision table: a pure function of figures, no MLflow."""

from __future__ import annotations

import pytest

from modules.models.promotion import Candidate, Champion, Schema, decide_promotion, needs_champion_score

EEG = Schema.of(["a", "b", "c"], ["NEGATIVE", "NEUTRAL", "POSITIVE"])
OTHER_COLUMNS = Schema.of(["x", "y"], ["NEGATIVE", "NEUTRAL", "POSITIVE"])
OTHER_LABELS = Schema.of(["a", "b", "c"], ["0", "1"])


def candidate(accuracy: float = 0.85, baseline: float = 0.34, *, schema: Schema = EEG, verified: bool = True):
    return Candidate(
        version="2",
        accuracy=accuracy,
        baseline_accuracy=baseline,
        schema=schema,
        data_verified=verified,
        data_check="local: digest recorded at load" if verified else "digest differs from the manifest",
    )


def checks(decision) -> dict[str, bool | None]:
    return {check.name: check.passed for check in decision.checks}


def test_a_first_version_below_the_floor_is_not_promoted():
    decision = decide_promotion(candidate(accuracy=0.40, baseline=0.34), None, min_margin=0.10)
    assert not decision.promote
    assert decision.reason.startswith("not promoted: below baseline")
    assert "margin +0.0600, required 0.10" in decision.reason
    assert checks(decision) == {
        "data_verified": True,
        "beats_baseline": False,
        "same_schema": None,
        "beats_champion": None,
    }


def test_a_first_version_above_the_floor_is_promoted_and_says_why():
    decision = decide_promotion(candidate(accuracy=0.85, baseline=0.34), None, min_margin=0.10)
    assert decision.promote
    assert decision.reason.startswith("first version to pass the gate")
    assert decision.reason != "no champion yet"
    assert all(checks(decision).values())


def test_exactly_the_margin_passes_the_floor():
    assert decide_promotion(candidate(accuracy=0.44, baseline=0.34), None, min_margin=0.10).promote


def test_a_better_champion_is_kept():
    decision = decide_promotion(candidate(0.85), Champion("1", EEG, accuracy=0.90), min_margin=0.10)
    assert not decision.promote
    assert "does not beat the champion" in decision.reason and "champion kept" in decision.reason
    assert checks(decision)["beats_champion"] is False


def test_a_tie_keeps_the_champion():
    assert not decide_promotion(candidate(0.85), Champion("1", EEG, accuracy=0.85), min_margin=0.10).promote


def test_a_better_version_replaces_the_champion():
    decision = decide_promotion(candidate(0.91), Champion("1", EEG, accuracy=0.85), min_margin=0.10)
    assert decision.promote
    assert "beats champion v1" in decision.reason
    assert all(checks(decision).values())


def test_unverified_data_is_never_promoted_however_good():
    decision = decide_promotion(candidate(0.99, verified=False), None, min_margin=0.10)
    assert not decision.promote
    assert "not verified" in decision.reason and "digest differs" in decision.reason


@pytest.mark.parametrize("other", [OTHER_COLUMNS, OTHER_LABELS])
def test_a_champion_of_another_schema_is_kept_unless_a_schema_change_is_allowed(other):
    champion = Champion("1", other)
    assert not needs_champion_score(candidate(0.9), champion)
    kept = decide_promotion(candidate(0.9), champion, min_margin=0.10)
    assert not kept.promote
    assert "schema differs" in kept.reason and "ALLOW_SCHEMA_CHANGE=1" in kept.reason
    # The reason names both schemas.
    assert other.describe() in kept.reason and EEG.describe() in kept.reason

    allowed = decide_promotion(candidate(0.9), champion, min_margin=0.10, allow_schema_change=True)
    assert allowed.promote and "schema change allowed" in allowed.reason


def test_a_schema_change_still_needs_the_floor():
    champion = Champion("1", OTHER_COLUMNS)
    decision = decide_promotion(candidate(0.36), champion, min_margin=0.10, allow_schema_change=True)
    assert not decision.promote and "below baseline" in decision.reason


def test_the_champion_is_scored_only_when_it_could_change_the_decision():
    assert not needs_champion_score(candidate(), None)
    assert needs_champion_score(candidate(), Champion("1", EEG))
    assert needs_champion_score(candidate(), Champion("1", None))  # unknown schema: score it
    assert not needs_champion_score(candidate(), Champion("2", EEG))  # it is this version


def test_an_unscored_champion_of_the_same_schema_is_a_bug_not_a_promotion():
    with pytest.raises(ValueError, match="must be scored"):
        decide_promotion(candidate(0.9), Champion("1", EEG), min_margin=0.10)


def test_labels_unknown_on_an_old_champion_compare_columns_only():
    columns_only = Schema.of(["a", "b", "c"], labels=())
    assert columns_only.matches(EEG) and EEG.matches(columns_only)
    assert not OTHER_COLUMNS.matches(columns_only)


def test_schema_tags_round_trip_and_decision_tags_name_every_check():
    assert Schema.from_tags(EEG.to_tags()) == EEG
    assert Schema.from_tags({}) is None
    tags = decide_promotion(candidate(0.40), None, min_margin=0.10).tags()
    assert tags["gate.promoted"] == "false"
    assert tags["gate.beats_baseline"].startswith("failed: accuracy 0.4000")
    assert tags["gate.beats_champion"] == "not checked: an earlier check already decided"
