"""Data behind the explorer's pages (`apps/landscape.py`, `rm_lab explore`).

One module per page: `runs` (the registry), `landscape` (a reward model over its training records),
`calibration` (a calibrate run), `samples` (best-of-n / rejection-sample runs), `generations`
(evaluate and train-policy runs). Each takes a runs folder or a run folder and returns DataFrames or
dicts; the app only lays them out. Every folder is resolved through `paths.inside`, so the explorer
reads nothing outside its runs folder, and only JSON, CSV, Parquet, PNG and safetensors are read.
"""
