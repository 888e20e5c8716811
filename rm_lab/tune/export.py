"""What a study leaves in the tune run folder: the best config as the stage's own YAML, and a summary.

`best.yaml` is the full stage config of the best trial (every key, validated by the stage dataclass), so
`rm_lab train-rm -c best.yaml` trains it as is; `study.json` lists every trial (state, value, params,
its child run, per-epoch values) with the best trial and the parameter importances for the explorer.
Both are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from rm_lab import config as cfgmod, io
from rm_lab.tune.space import SearchSpace

BEST_FILE = "best.yaml"
SUMMARY_FILE = "study.json"


def best_trial(study):
    """The best complete trial, or None when the study has none."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return study.best_trial if done else None


def best_config(study, space: SearchSpace) -> dict | None:
    """The best trial's full stage config (the base with its params), validated by the stage dataclass."""
    t = best_trial(study)
    if t is None:
        return None
    values = space.values_from_params({k: v for k, v in t.params.items() if k in space.dists})
    return cfgmod.to_dict(space.build(values, f"trial {t.number}"))


def write_best(path: Path, study, space: SearchSpace, metric: str, stage: str) -> Path | None:
    data = best_config(study, space)
    if data is None:
        return None
    t = best_trial(study)
    head = (f"# {stage}: the best trial ({t.number}) of study '{study.study_name}', {metric}={t.value:.6g}\n"
            f"# rm_lab {stage} -c {path.name}\n")
    io.write_text(path, head + yaml.safe_dump(data, sort_keys=False))
    return path


def importances(study, seed: int = 0) -> dict[str, float] | None:
    """optuna.importance (fANOVA) over the complete trials; None below two of them or when it cannot fit."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 2:
        return None
    try:
        ev = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=ev).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every trial drew the same values
        return None


def summary(study, metric: str, storage: str, stage: str, seed: int = 0) -> dict:
    import collections

    trials = study.get_trials(deepcopy=False)
    states = collections.Counter(t.state.name for t in trials)
    t = best_trial(study)
    rows = [{"number": x.number, "state": x.state.name, "value": x.value if x.state.name == "COMPLETE" else None, "params": x.params,
             "run": x.user_attrs.get("run"), "run_id": x.user_attrs.get("run_id"),
             "worker": x.user_attrs.get("worker"), "detail": x.user_attrs.get("detail"),
             "intermediate": {str(k): v for k, v in sorted(x.intermediate_values.items())},
             "seconds": x.duration.total_seconds() if x.duration else None} for x in trials]
    return {"study": study.study_name, "stage": stage, "storage": storage, "metric": metric,
            "direction": study.direction.name.lower(), "n_trials": len(trials), "states": dict(states),
            "best": None if t is None else {"number": t.number, "value": t.value, "params": t.params,
                                            "run": t.user_attrs.get("run")},
            "importances": importances(study, seed), "trials": rows}


def write_summary(path: Path, study, metric: str, storage: str, stage: str, seed: int = 0) -> dict:
    s = summary(study, metric, storage, stage, seed)
    io.write_json(path, s)
    return s
