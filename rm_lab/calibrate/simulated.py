"""Past experiments from the simulated world: A/B tests between scripted policies of varying quality.

Each test pits a control preset against a treatment that moves a random share of the way from the
control's style knobs toward another preset's, with each knob then nudged at random, so the tests
span small and large, positive and negative lifts. For each test the reward model makes its offline
predictions from both policies' replies to the same contexts (before the test), the simulator runs
the test (its measured lift and standard error), and the hidden engagement function gives the true
expected lift. The rows are the input of `rm_lab.calibrate.intervals.fit_calibration`.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Callable

import numpy as np
import pandas as pd

from rm_lab.world.policies import PRESETS, PolicyStyle, ScriptedPolicy

# knobs that are probabilities (clipped to [0, 1] after a nudge); the others are Poisson means
_PROBABILITY_KNOBS = {"question", "lists", "persona", "preachy", "refuse_adversarial", "false_refusal", "i_feel",
                      "wall", "forbidden_slip", "opener"}


def vary_style(base: PolicyStyle, target: PolicyStyle, strength: float, jitter: float,
               rng: np.random.Generator) -> PolicyStyle:
    """`base` moved `strength` of the way to `target`, each knob then scaled by exp(N(0, jitter))."""
    a, b = asdict(base), asdict(target)
    out = {}
    for k in a:
        v = a[k] + strength * (b[k] - a[k])
        v *= float(np.exp(rng.normal(0.0, jitter))) if jitter > 0 else 1.0
        out[k] = float(min(max(v, 0.0), 1.0)) if k in _PROBABILITY_KNOBS else float(max(v, 0.0))
    return PolicyStyle(**out)


def design_tests(n_tests: int, controls: list[str], treatments: list[str], strength: tuple[float, float],
                 jitter: float, seed: int) -> list[tuple[ScriptedPolicy, ScriptedPolicy]]:
    """(control, treatment) policies of each test; treatments cycle through the presets."""
    rng = np.random.default_rng(seed)
    tests = []
    for i in range(n_tests):
        c = ScriptedPolicy.preset(controls[i % len(controls)])
        target = treatments[(i // len(controls)) % len(treatments)]
        s = float(rng.uniform(strength[0], strength[1]))
        style = vary_style(c.style, PRESETS[target], s, jitter, rng)
        tests.append((c, ScriptedPolicy(f"{target}~{i:03d}", style)))
    return tests


def run_world_tests(cfg, model, say: Callable[[str], None] = print) -> tuple[pd.DataFrame, dict]:
    """The experiment table of `cfg.n_tests` simulated tests, and the scorer with every policy scored."""
    from rm_lab.calibrate.experiments import lift_se
    from rm_lab.calibrate.offline import OfflineScorer
    from rm_lab.evaluate.ab import analyze
    from rm_lab.world.ab import policy_quality, run_ab, true_lifts
    from rm_lab.world.characters import make_characters
    from rm_lab.world.contexts import make_contexts
    from rm_lab.world.engagement import Population

    pop = Population(spurious_emoji=cfg.spurious_emoji, world_version=cfg.world_version)
    characters = make_characters(cfg.n_characters, seed=cfg.world_seed)
    contexts = make_contexts(characters, cfg.offline_contexts, traffic_share_user=1 - cfg.internal_share,
                             seed=cfg.seed + 31_337, prefix="cal", world_version=cfg.world_version)
    scorer = OfflineScorer(model, contexts, characters)
    tests = design_tests(cfg.n_tests, cfg.controls, cfg.treatments, tuple(cfg.strength), cfg.jitter, cfg.seed)
    quality: dict[str, object] = {}
    policies: dict[str, ScriptedPolicy] = {}

    def prepare(p: ScriptedPolicy, k: int):
        if p.name not in quality:
            quality[p.name] = policy_quality(p, pop, cfg.quality_contexts, seed=cfg.world_seed,
                                             n_characters=cfg.n_characters)
            scorer.score(p.name, p.respond(contexts, characters, seed=cfg.seed + 1000 + k))
            policies[p.name] = p
        return quality[p.name], scorer[p.name]

    rows = []
    rng = np.random.default_rng(cfg.seed + 7)
    for i, (c, t) in enumerate(tests):
        say(f"test {i + 1}/{len(tests)}: {c.name} vs {t.name}")
        qc, sc = prepare(c, 2 * i)
        qt, st = prepare(t, 2 * i + 1)
        eid = f"sim-{i:03d}"
        arms = run_ab(qc, qt, pop, cfg.eligible_users, cfg.arm_share, cfg.days, rng, eid, per_day=False)
        row = analyze(arms).iloc[0]
        truth = true_lifts(qc, qt, pop)
        rows.append({"experiment_id": eid, "control": c.name, "treatment": t.name,
                     **scorer.predictions(st, sc, cfg.lift_output),
                     "observed_lift": float(row[f"{cfg.metric}_lift"]), "observed_se": lift_se(row, cfg.metric),
                     "true_lift": float(truth[f"{cfg.metric}_lift"]),
                     **{f"knob_{f.name}": getattr(t.style, f.name) for f in fields(PolicyStyle)}})
    return pd.DataFrame(rows), {"scorer": scorer, "policies": policies, "contexts": contexts,
                                "characters": characters}


def over_optimised_verdict(cfg, state: dict):
    """The guardrail on the `cfg.over_optimised` preset against the first control (same contexts)."""
    from rm_lab.calibrate.guardrails import check_guardrails, context_keywords, style_drift

    scorer, contexts, characters = state["scorer"], state["contexts"], state["characters"]
    cur = ScriptedPolicy.preset(cfg.controls[0])
    cand = ScriptedPolicy(f"{cfg.over_optimised} (candidate)", PRESETS[cfg.over_optimised])
    sc = scorer[cur.name] if cur.name in scorer else scorer.score(cur.name, cur.respond(contexts, characters, cfg.seed))
    st = scorer.score(cand.name, cand.respond(contexts, characters, seed=cfg.seed + 999_983))
    keys = context_keywords(contexts, characters)
    return check_guardrails(scorer.win_rates(st, sc, cfg.guardrail.z), style_drift(st.replies, sc.replies, keys, keys),
                            cfg.guardrail)
