"""A flywheel run's folder and its progress: which step of which generation is done, and what it produced.

    <flywheel run>/state.json        {"g1": {"traffic": {...outputs...}, ...}, ...}: finished steps only
    <flywheel run>/report.md|json    the report across generations (rewritten after every generation)
    <flywheel run>/g<g>/report.md|json   one generation's report

Each step runs as a child run in the registry, `<runs>/<kind>/<flywheel id>-g<g>-<step>/` (parent: the
flywheel run), so `rm_lab explore` and every reader of runs/<kind>/ see the flywheel's evaluations,
trainings and reward models like any other. A step's outputs enter state.json only when it finished;
a killed flywheel, resumed, skips the finished steps and reopens the step it was in at the same child
folder, where a resumable stage (train-rm, train-policy, the coupled trainer) continues from its own
checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rm_lab import io

# step -> the kind of its child run (its folder is <runs>/<kind>/<flywheel id>-g<g>-<step>)
STEPS: dict[str, str] = {
    "traffic": "simulate",
    "curate": "curate",
    "reward": "train-rm",
    "rejection": "rejection-sample",
    "sft": "train-policy",
    "rl": "coupled",
    "evaluate": "evaluate",
    "predict": "predict-lift",
    "ab": "ab-test",
    "ship": "ship",
}
CALIBRATE = ("calibrate", "calibrate")  # (step name, kind) of the calibration a flywheel builds once


@dataclass
class FlywheelRun:
    root: Path  # the flywheel's own run folder
    run_id: str
    runs_root: Path

    def __post_init__(self):
        self.root, self.runs_root = Path(self.root), Path(self.runs_root)

    state_file = property(lambda self: self.root / "state.json")
    report_md = property(lambda self: self.root / "report.md")
    report_json = property(lambda self: self.root / "report.json")

    def generation_dir(self, g: int) -> Path:
        return self.root / f"g{g}"

    def child_id(self, g: int | None, step: str) -> str:
        return f"{self.run_id}-{step}" if g is None else f"{self.run_id}-g{g}-{step}"

    def child_path(self, g: int | None, step: str, kind: str) -> Path:
        return self.runs_root / kind / self.child_id(g, step)

    # -- progress
    def state(self) -> dict:
        return io.read_json(self.state_file) if self.state_file.is_file() else {}

    def done(self, g: int | None, step: str) -> dict | None:
        return self.state().get(_key(g), {}).get(step)

    def mark_done(self, g: int | None, step: str, outputs: dict) -> None:
        st = self.state()
        st.setdefault(_key(g), {})[step] = outputs
        io.write_json(self.state_file, st)


def _key(g: int | None) -> str:
    return "setup" if g is None else f"g{g}"
