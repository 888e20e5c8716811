"""Does a reward model rank policies (the scripted presets and the fixed template) as world v2's truth does?

Usage: python pipelines/rm_world_v2_policies.py <train-rm run> [n_contexts=400]
Fresh v2 user-traffic contexts (seed 777); per policy the mean true engagement, the mean pointwise
score and their within-policy Spearman; then the policy-level Spearman and the template's rank.
"""
import sys
import numpy as np
from scipy.stats import spearmanr
from rm_lab.reward.model import RewardModel
from rm_lab.world.characters import make_characters
from rm_lab.world.contexts import make_contexts
from rm_lab.world.engagement import Population, score_replies
from rm_lab.world.policies import PRESETS, ScriptedPolicy, TemplatePolicy

rm = RewardModel.load(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 400
chars = make_characters(24, seed=0)
ctx = make_contexts(chars, n, traffic_share_user=1.0, seed=777, prefix="fresh", world_version=2)
pop = Population(world_version=2)
rows = []
pols = {p: ScriptedPolicy.preset(p) for p in PRESETS} | {"template": TemplatePolicy()}
for name, pol in pols.items():
    reps = pol.respond(ctx, chars, seed=5)
    truth = score_replies(reps, ctx, chars, pop).true_engagement
    s = rm.score(ctx, reps, chars)["score"]
    rows.append((name, truth.mean(), s.mean(), spearmanr(s, truth)[0]))
    print(f"{name:12s} truth {truth.mean():.3f}  rm score {s.mean():+.3f}  within-policy spearman {rows[-1][3]:.3f}",
          flush=True)
t, s = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
print(f"policy-level spearman(rm mean score, truth mean) over {len(rows)} policies: {spearmanr(s, t)[0]:.3f}")
order = sorted(rows, key=lambda r: -r[2])
print("rm rank of template:", [r[0] for r in order].index("template") + 1, "of", len(rows))
