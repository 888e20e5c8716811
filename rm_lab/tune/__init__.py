"""`rm_lab tune`: Optuna studies over a stage's config keys.

- `spec`: TuneConfig, what a tuning run is (the stage, its base config, the study, the storage);
- `space`: the search space in YAML over the stage dataclass's fields, checked by `rm_lab.config`;
- `objective`: one trial = the stage's library call on the trial's config, a child run in the registry;
- `study`: storage URLs (SQLite by default, PostgreSQL for many workers) and worker processes;
- `export`: the best config as a YAML the stage loads as is, and the study summary for the explorer.
"""
