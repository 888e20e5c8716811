"""The head registry: every signal a reward model predicts is one `HeadSpec` entry.

Why one registry: a head's name, where its labels come from, its likelihood and the name of its output
used to be strings checked in many files. Here each is said once, and the data assembly, the losses,
`RewardModel.score`, `eval-rm` and the refit look them up. The built-in heads (`BUILTIN`) read the
canonical interaction, preference and steer-label records; a dataset (its `head` records, written by
`ingest`) or a config (`TrainRMConfig.heads` as a mapping) declares more, usually over the canonical
`label` records (graded or continuous labels of a (context, reply)):

    heads: {engaging: {column: human_score, kind: ordinal, levels: 5}}

Likelihoods and what an item carries (summed over repeated (context, reply) rows, so counts stay exact):
- bradley_terry: preference pairs (the pointwise score, the RL reward); no item statistics.
- binomial: n trials, k successes (logit link).
- poisson / negative_binomial: n observations, k their total count (log link; NB2 with a learned
  dispersion, the total of n draws being NB with n times the size).
- ordinal: n ratings and c<j> the ratings at level j (cumulative logit with K-1 ordered cut-points;
  the value of level j is `min + j`).
- gaussian: n values, s1 their sum, s2 their sum of squares (identity link on a standardised target;
  the scale is learned unless `scale` fixes it).
- arm_logit: the arms of A/B experiments (`ab_arm` records: the experiment is the context, the arm's
  `text` the reply): n impressions (users), k clicks (engaged users), and a conditional logit over the
  arms of each experiment (`rm_lab.reward.arm_logit`), so it learns which text wins a test, not which
  story is popular; its output is a log rate relative to the other arms of the same experiment.
- arm_mean: past A/B arms as the replies their policies wrote (`arm_reply_set` records): the mean of an arm's
  per-reply scores minus its control's is the predicted log lift of the arm's measured breadth or depth,
  with a Gaussian likelihood weighted by the inverse of its sampling variance (`rm_lab.reward.arm_mean`);
  its output is a reply's share of a log metric, comparable only within one experiment.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from rm_lab.config import ConfigError
from rm_lab.schema import HEAD_LIKELIHOODS, RecordError

LIKELIHOODS = HEAD_LIKELIHOODS
LINKS = {"bradley_terry": "identity", "binomial": "logit", "poisson": "log", "negative_binomial": "log",
         "ordinal": "cumulative_logit", "gaussian": "identity",
         "arm_logit": "log_relative_rate", "arm_mean": "log_relative_mean"}
COUNT_LIKELIHOODS = ("poisson", "negative_binomial")
# record kinds a head may read its labels from (preference pairs only feed the bradley_terry head)
LABEL_RECORDS = ("label", "interaction", "steer_label", "ab_arm", "arm_reply_set")
ARM_RECORD = "ab_arm"  # read only by arm_logit heads: experiment_id is the context, text the reply
SET_RECORD = "arm_reply_set"  # read only by arm_mean heads: an arm's replies and its measured breadth/depth
SOURCE_SEP = "@"  # multi-source: `continue@convai2` is the continue head supervised by convai2 rows only
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
DECLARATION_KEYS = ("kind", "likelihood", "record", "column", "levels", "min", "max", "equals", "scale", "output",
                    "doc")


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}".replace(".", "_").replace("-", "m")


@dataclass(frozen=True)
class HeadSpec:
    """One head: its name, the labels that train it (record kind + column), its likelihood and output."""

    name: str
    likelihood: str
    record: str = "label"  # record kind of its labels
    column: str | None = None  # that record's column (for `label` records: the label `name`); None: the head name
    output: str | None = None  # key in RewardModel.score; None: p_<name> (binomial) or <name>
    levels: int | None = None  # ordinal: K levels
    min: float | None = None  # ordinal: the value of the lowest level (default 1)
    equals: float | None = None  # binomial over a many-valued column: success when value == equals
    scale: float | None = None  # gaussian: a fixed standard deviation (target units); None: learned
    source: str | None = None  # multi-source training: the only source whose rows supervise it
    doc: str = ""

    def __post_init__(self):
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"heads.{self.name}: kind {self.likelihood!r}: expected one of {list(LIKELIHOODS)}")
        if self.likelihood == "ordinal":
            if self.levels is None or self.levels < 2:
                raise ConfigError(f"heads.{self.name}: an ordinal head needs levels >= 2 (got {self.levels})")
            if self.min is None:
                object.__setattr__(self, "min", 1.0)
        elif self.levels is not None:
            raise ConfigError(f"heads.{self.name}: levels is for ordinal heads (kind is {self.likelihood})")
        if self.scale is not None and (self.likelihood != "gaussian" or not self.scale > 0):
            raise ConfigError(f"heads.{self.name}: scale is a gaussian head's fixed standard deviation (> 0)")
        if self.equals is not None and self.likelihood != "binomial":
            raise ConfigError(f"heads.{self.name}: equals is for binomial heads (kind is {self.likelihood})")
        if (self.likelihood == "arm_logit") != (self.record == ARM_RECORD):
            raise ConfigError(f"heads.{self.name}: record {self.record!r} with kind {self.likelihood!r}: an arm_logit "
                              f"head reads {ARM_RECORD} records, and {ARM_RECORD} records train only arm_logit heads")
        if (self.likelihood == "arm_mean") != (self.record == SET_RECORD):
            raise ConfigError(f"heads.{self.name}: record {self.record!r} with kind {self.likelihood!r}: an arm_mean "
                              f"head reads {SET_RECORD} records, and {SET_RECORD} records train only arm_mean heads")

    # -- derived names
    @property
    def col(self) -> str:
        return self.column or self.name

    @property
    def link(self) -> str:
        return LINKS[self.likelihood]

    @property
    def out(self) -> str:
        """The main output of `RewardModel.score`."""
        if self.output:
            return self.output
        return f"p_{self.name}" if self.likelihood == "binomial" else self.name

    @property
    def is_pairwise(self) -> bool:
        return self.likelihood == "bradley_terry"

    @property
    def is_grouped(self) -> bool:
        """Its likelihood is over the items of one context together (the arms of one experiment)."""
        return self.likelihood == "arm_logit"

    @property
    def is_set(self) -> bool:
        """Its likelihood is over the mean score of each A/B arm's reply set (arm_mean): items are batched
        by experiment, never one by one."""
        return self.likelihood == "arm_mean"

    @property
    def max(self) -> float | None:
        return None if self.levels is None else float(self.min) + self.levels - 1

    def level_values(self) -> list[float]:
        return [float(self.min) + j for j in range(self.levels or 0)]

    def stats(self) -> tuple[str, ...]:
        """Suffixes of this head's per-item columns (`<name>_<suffix>`); `n` is always the label count."""
        if self.is_pairwise:
            return ()
        if self.is_set:  # the arm's measures live in RewardData.sets; an item counts its arm memberships
            return ("n",)
        if self.likelihood == "ordinal":
            return ("n", *[f"c{j}" for j in range(self.levels)])
        if self.likelihood == "gaussian":
            return ("n", "mean", "m2")
        return ("n", "k")

    def columns(self) -> list[str]:
        return [f"{self.name}_{s}" for s in self.stats()]

    def sum_columns(self) -> list[str]:
        """The columns of `row_stats`, summed over repeated (context, reply) rows before `finish`."""
        if self.likelihood == "gaussian":
            return [f"{self.name}_{s}" for s in ("n", "s1", "s2")]
        return self.columns()

    def outputs(self) -> list[str]:
        """Every key this head adds to `RewardModel.score` (ordinal: expected level, then P(level >= v))."""
        if self.likelihood == "ordinal":
            return [self.out, *[f"{self.out}_p_ge_{_fmt(v)}" for v in self.level_values()[1:]]]
        return [self.out]

    def describe(self) -> str:
        """Where the labels come from, for messages."""
        if self.is_pairwise:
            return "preference records (chosen/rejected)"
        what = f"label records named '{self.col}'" if self.record == "label" else f"{self.record}.{self.col}"
        if self.record == ARM_RECORD:
            what += " of users, per arm text, within each experiment"
        if self.record == SET_RECORD:
            what += " (measured, with its standard error) of each arm's reply set, relative to its control"
        if self.equals is not None:
            what += f" == {_fmt(self.equals)}"
        return what + (f" of source '{self.source}'" if self.source else "")

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v != ""}

    @classmethod
    def from_json(cls, d: dict) -> "HeadSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    # -- statistics of label values
    def row_stats(self, values: np.ndarray, trials: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per label row (values already checked by `label_values`): its statistic columns (`trials`: an
        arm_logit row's impressions, its `n`)."""
        v = np.asarray(values, float)
        out = {f"{self.name}_n": np.ones(len(v)) if trials is None else np.asarray(trials, float)}
        if self.likelihood == "ordinal":
            lev = np.rint(v - self.min).astype(int)
            for j in range(self.levels):
                out[f"{self.name}_c{j}"] = (lev == j).astype(float)
        elif self.likelihood == "gaussian":  # summed, then turned into mean and m2 by `finish`
            out[f"{self.name}_s1"], out[f"{self.name}_s2"] = v, v * v
        else:
            out[f"{self.name}_k"] = v
        return out

    def finish(self, items: pd.DataFrame) -> None:
        """Summed row statistics -> the item columns (`stats`); gaussian: mean and within-item sum of squares
        (computed in float64 here, so a standardised loss needs no cancelling subtraction later)."""
        if self.likelihood != "gaussian":
            return
        n = items[f"{self.name}_n"].to_numpy(float)
        s1 = items.pop(f"{self.name}_s1").to_numpy(float)
        s2 = items.pop(f"{self.name}_s2").to_numpy(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, s1 / np.where(n > 0, n, 1), 0.0)
        items[f"{self.name}_mean"] = mean
        items[f"{self.name}_m2"] = np.maximum(s2 - n * mean * mean, 0.0)

    # -- outputs from the linear predictor
    def transform(self, eta: np.ndarray, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of `RewardModel.score` from the head's linear predictor (and its extra parameters)."""
        eta = np.asarray(eta, np.float64)
        if self.likelihood in ("bradley_terry", "arm_logit", "arm_mean"):
            return {self.out: eta}
        if self.likelihood == "binomial":
            return {self.out: 1.0 / (1.0 + np.exp(-eta))}
        if self.likelihood in COUNT_LIKELIHOODS:
            return {self.out: np.exp(eta)}
        if self.likelihood == "gaussian":
            return {self.out: params["loc"] + params["spread"] * eta}
        # ordinal: P(Y >= level j) = 1 - sigmoid(cut_{j-1} - eta), j = 1..K-1
        cuts = np.asarray(params["cuts"], np.float64)
        ge = 1.0 / (1.0 + np.exp(cuts[None, :] - eta[:, None]))  # (N, K-1): P(Y >= j+1)
        out = {self.out: float(self.min) + ge.sum(1)}  # E[level] = min + sum_j P(Y >= j)
        for j, name in enumerate(self.outputs()[1:]):
            out[name] = ge[:, j]
        return out


def _spec(name, likelihood, record, column, output, doc, **kw) -> HeadSpec:
    return HeadSpec(name, likelihood, record, column, output, doc=doc, **kw)


BUILTIN: dict[str, HeadSpec] = {s.name: s for s in (
    _spec("preference", "bradley_terry", "preference", "chosen", "score",
          "pointwise Bradley-Terry score of preference pairs: the RL reward"),
    _spec("continue", "binomial", "interaction", "continued", "p_continue", "the user wrote again"),
    _spec("thumb_up", "binomial", "interaction", "thumb", "p_thumb_up", "a thumb up (of the rows with a thumb)",
          equals=1),
    _spec("thumb_down", "binomial", "interaction", "thumb", "p_thumb_down", "a thumb down (of the rows with a thumb)",
          equals=-1),
    _spec("regenerate", "binomial", "interaction", "regenerated", "p_regenerate", "the user asked for another reply"),
    _spec("followed", "binomial", "steer_label", "followed", "p_followed", "the reply kept the instruction"),
    _spec("violation", "binomial", "steer_label", "violation", "p_violation", "the reply is a violation"),
    _spec("depth", "poisson", "interaction", "depth", "depth", "follow-up user turns in the session"),
    _spec("ab_engaged", "arm_logit", ARM_RECORD, "engaged_users", "ab_engaged",
          "engaged users (clicks) of an A/B arm's users (impressions), within its experiment: a log relative rate"),
    _spec("ab_breadth", "arm_mean", SET_RECORD, "breadth", "ab_breadth",
          "measured breadth of a past A/B arm, from the mean over its replies: a reply's share of the log lift"),
    _spec("ab_depth", "arm_mean", SET_RECORD, "depth", "ab_depth",
          "measured depth of a past A/B arm, from the mean over its replies: a reply's share of the log lift"),
)}


def spec_of(name: str, specs: dict[str, HeadSpec] | None = None) -> HeadSpec:
    """The entry of `name` in `specs`, else the built-in one (a clear error for an unknown name)."""
    if specs and name in specs:
        return specs[name]
    if name in BUILTIN:
        return BUILTIN[name]
    raise ConfigError(f"head {name!r}: not a built-in head ({list(BUILTIN)}) and not declared")


# ----------------------------------------------------------------------------------------------
# declarations

def declare(name: str, decl: dict | None, where: str = "heads", base: HeadSpec | None = None) -> HeadSpec:
    """A head from a declaration mapping (config or `head` record); over `base` (a built-in) when it overrides one."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: head name {name!r}: expected letters, digits and _ (starting with a letter)")
    decl = {k: v for k, v in dict(decl or {}).items() if not _null(v)}
    unknown = sorted(set(decl) - set(DECLARATION_KEYS))
    if unknown:
        raise ConfigError(f"{where}.{name}: unknown key(s) {unknown}; known: {list(DECLARATION_KEYS)}")
    if "kind" in decl and "likelihood" in decl and decl["kind"] != decl["likelihood"]:
        raise ConfigError(f"{where}.{name}: kind and likelihood disagree ({decl['kind']!r}, {decl['likelihood']!r})")
    kind = decl.pop("kind", None) or decl.pop("likelihood", None) or (base.likelihood if base else None)
    decl.pop("likelihood", None)
    if kind is None:
        raise ConfigError(f"{where}.{name}: needs a kind, one of {[k for k in LIKELIHOODS if k != 'bradley_terry']}")
    if kind == "bradley_terry" and name != "preference":
        raise ConfigError(f"{where}.{name}: bradley_terry is the preference head's likelihood (preference records)")
    for key, typ in (("levels", int), ("min", float), ("max", float), ("equals", float), ("scale", float)):
        if key in decl:
            v = decl[key]
            ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or (typ is int and float(v) != int(v)):
                raise ConfigError(f"{where}.{name}.{key}: expected {'an integer' if typ is int else 'a number'}, "
                                  f"got {v!r}")
            decl[key] = typ(v)
    for key in ("record", "column", "output", "doc"):
        if key in decl and not isinstance(decl[key], str):
            raise ConfigError(f"{where}.{name}.{key}: expected a string, got {decl[key]!r}")
    if str(decl.get("column", "")).startswith("truth_"):
        raise ConfigError(f"{where}.{name}.column: {decl['column']!r}: the world's hidden truth_* columns never "
                          f"train a head (they judge it in eval-rm)")
    record = decl.get("record", base.record if base else ARM_RECORD if kind == "arm_logit" else
                      SET_RECORD if kind == "arm_mean" else "label")
    if record not in LABEL_RECORDS and not (kind == "bradley_terry" and record == "preference"):
        raise ConfigError(f"{where}.{name}.record: {record!r}: expected one of {list(LABEL_RECORDS)}")
    if (kind == "arm_logit") != (record == ARM_RECORD):
        raise ConfigError(f"{where}.{name}.record: {record!r} with kind {kind!r}: {ARM_RECORD} records train only "
                          f"arm_logit heads, and an arm_logit head reads {ARM_RECORD} records")
    if (kind == "arm_mean") != (record == SET_RECORD):
        raise ConfigError(f"{where}.{name}.record: {record!r} with kind {kind!r}: {SET_RECORD} records train only "
                          f"arm_mean heads, and an arm_mean head reads {SET_RECORD} records")
    hi = decl.pop("max", None)
    if kind == "ordinal":
        lo = decl.get("min", base.min if base and base.likelihood == "ordinal" else 1.0)
        if hi is not None:
            if hi <= lo:
                raise ConfigError(f"{where}.{name}: max ({hi:g}) must be above min ({lo:g})")
            if not float(hi - lo).is_integer():
                raise ConfigError(f"{where}.{name}: max - min ({hi:g} - {lo:g}) must be a whole number of levels")
            if "levels" in decl and decl["levels"] != int(hi - lo) + 1:
                raise ConfigError(f"{where}.{name}: levels={decl['levels']} disagrees with min={lo:g}, max={hi:g} "
                                  f"({int(hi - lo) + 1} levels)")
            decl.setdefault("levels", int(hi - lo) + 1)
        decl["min"] = lo
    elif hi is not None or "min" in decl:
        raise ConfigError(f"{where}.{name}: min/max are the range of an ordinal head (kind is {kind})")
    fields = dict(record=record, column=decl.get("column", base.column if base else None),
                  output=decl.get("output"), levels=decl.get("levels"), min=decl.get("min"),
                  equals=decl.get("equals", base.equals if base and kind == "binomial" else None),
                  scale=decl.get("scale"), doc=decl.get("doc", base.doc if base else ""))
    if base is not None and fields["output"] is None and kind == base.likelihood:
        fields["output"] = base.output
    return HeadSpec(name, kind, **fields)


def _null(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def declarations_from_records(frame: pd.DataFrame, path: str | None) -> dict[str, HeadSpec]:
    """The heads a dataset declares in its `head` records (one row per head)."""
    out: dict[str, HeadSpec] = {}
    for i, row in enumerate(frame.to_dict("records")):
        name = row.get("name")
        decl = {k: row[k] for k in DECLARATION_KEYS if k in row and not _null(row[k])}
        try:
            out[name] = declare(name, decl, "head", BUILTIN.get(name))
        except ConfigError as e:
            raise RecordError(path, i, "name", name, f"a valid head declaration ({e})") from None
    return out


def parse_config_heads(heads) -> tuple[list[str] | None, dict[str, dict | None], list[str]]:
    """`TrainRMConfig.heads` -> (names asked for or None, declarations, names excluded).

    A list names the heads to train (built-in or declared by the data); a mapping declares heads (or
    overrides a built-in's likelihood, e.g. `depth: {kind: negative_binomial}`) on top of every head the
    data has labels for; a mapping value `false` leaves that head out, `{}` or null keeps it as it is."""
    if heads is None:
        return None, {}, []
    if isinstance(heads, (list, tuple)):
        bad = [h for h in heads if not isinstance(h, str)]
        if bad:
            raise ConfigError(f"heads: expected head names, got {bad}")
        return list(heads), {}, []
    if not isinstance(heads, dict):
        raise ConfigError(f"heads: expected a list of names, a mapping of declarations or null, got {heads!r}")
    decls, excluded = {}, []
    for name, d in heads.items():
        if d is False:
            excluded.append(name)
        elif d is None or d is True or isinstance(d, dict):
            decls[name] = d if isinstance(d, dict) else None
        else:
            raise ConfigError(f"heads.{name}: expected a mapping (kind, column, levels, ...), null or false, got {d!r}")
    return None, decls, excluded


# ----------------------------------------------------------------------------------------------
# labels

def label_values(spec: HeadSpec, frame: pd.DataFrame | None, path: str | None,
                 rownum: Callable[[int], int] = lambda i: i) -> pd.DataFrame:
    """(row, context_id, response, value) of the rows of one record frame that train `spec`, checked
    (`row`: the position in the frame; rows with a null value carry no label).

    A value of the wrong type, a binomial value that is not 0/1, a negative count or an ordinal level
    outside the declared range is a RecordError naming the file, row and field."""
    empty = pd.DataFrame({"row": pd.Series(dtype=int), "context_id": pd.Series(dtype=object),
                          "response": pd.Series(dtype=object), "value": pd.Series(dtype=float)})
    if frame is None or len(frame) == 0 or spec.is_pairwise:
        return empty
    if spec.record == ARM_RECORD:
        return arm_values(spec, frame, path, rownum)
    if spec.record == SET_RECORD:
        from rm_lab.reward.arm_mean import set_values

        return set_values(spec, frame, path, rownum)
    field = "value" if spec.record == "label" else spec.col
    if spec.record == "label":
        if "name" not in frame.columns:
            return empty
        pos = np.flatnonzero(frame["name"].astype(str).to_numpy() == spec.col)
    else:
        if spec.col not in frame.columns:
            return empty
        pos = np.arange(len(frame))
    if spec.source is not None and "_source" in frame.columns:
        pos = pos[frame["_source"].to_numpy()[pos] == spec.source]
    what = f"{spec.likelihood} head '{spec.name}'"
    col = frame[field].iloc[pos]
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        vals = col.to_numpy(dtype=float, na_value=np.nan)
        raw = col.to_numpy(object)
        keep = ~np.isnan(vals)
        if np.isinf(vals).any():
            i = int(np.flatnonzero(np.isinf(vals))[0])
            raise RecordError(path, rownum(int(pos[i])), field, raw[i], f"a finite number (label of the {what})")
    else:  # object column: each cell checked, a string or a list is an error
        raw = col.to_numpy(object)
        keep = np.array([not _null(v) for v in raw], bool)
        vals = np.full(len(raw), np.nan)
        for i in np.flatnonzero(keep):
            v = raw[i]
            if isinstance(v, (int, float, bool, np.integer, np.floating, np.bool_)) and math.isfinite(float(v)):
                vals[i] = float(v)
            else:
                raise RecordError(path, rownum(int(pos[i])), field, v, f"a finite number (label of the {what})")
    pos, raw, vals = pos[keep], raw[keep], vals[keep]
    if not len(pos):
        return empty
    if spec.likelihood == "binomial":
        if spec.equals is not None:
            vals = (vals == spec.equals).astype(float)
            bad = np.zeros(len(vals), bool)
        else:
            bad = ~np.isin(vals, (0.0, 1.0))
        expected = f"0/1 or true/false (label of the {what})"
    elif spec.likelihood in COUNT_LIKELIHOODS:
        bad = vals < 0
        expected = f"a count >= 0 (label of the {what})"
    elif spec.likelihood == "ordinal":
        bad = (vals != np.round(vals)) | (vals < spec.min) | (vals > spec.max)
        expected = (f"an integer level in [{_fmt(spec.min)}, {_fmt(spec.max)}] (label of the {what}, "
                    f"{spec.levels} levels)")
    else:
        bad = np.zeros(len(vals), bool)
        expected = ""
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RecordError(path, rownum(int(pos[i])), field, raw[i], expected)
    if spec.record == "label" and spec.likelihood == "ordinal":
        for c, want in (("scale_min", spec.min), ("scale_max", spec.max)):
            if c in frame.columns:
                sc = pd.to_numeric(frame[c], errors="coerce").to_numpy(float)[pos]
                off = ~np.isnan(sc) & (sc != want)
                if off.any():
                    i = int(np.flatnonzero(off)[0])
                    raise RecordError(path, rownum(int(pos[i])), c, sc[i],
                                      f"{_fmt(want)}, the declared range of the {what} "
                                      f"([{_fmt(spec.min)}, {_fmt(spec.max)}])")
    return pd.DataFrame({"row": pos, "context_id": frame["context_id"].to_numpy(object)[pos],
                         "response": frame["response"].to_numpy(object)[pos], "value": vals})


def arm_values(spec: HeadSpec, frame: pd.DataFrame, path: str | None,
               rownum: Callable[[int], int] = lambda i: i) -> pd.DataFrame:
    """(row, context_id = experiment_id, response = the arm's text, value = its `spec.col` count, trials = its
    users) of the whole-test rows of validated ab_arm records that carry a text; per-day rows and arms
    without text (policy arms) carry no label of a text head."""
    cols = ("row", "context_id", "response", "value", "trials")
    empty = pd.DataFrame({c: pd.Series(dtype=object if c in ("context_id", "response") else float) for c in cols})
    if "text" not in frame.columns or spec.col not in frame.columns:
        return empty
    text = frame["text"].to_numpy(object)
    keep = np.array([isinstance(t, str) and bool(t.strip()) for t in text], bool)
    if "day" in frame.columns:
        keep &= frame["day"].isna().to_numpy()
    pos = np.flatnonzero(keep)
    if spec.source is not None and "_source" in frame.columns:
        pos = pos[frame["_source"].to_numpy()[pos] == spec.source]
    if not len(pos):
        return empty
    users = pd.to_numeric(frame["users"], errors="coerce").to_numpy(float)[pos]
    k = pd.to_numeric(frame[spec.col], errors="coerce").to_numpy(float)[pos]
    bad = ~np.isfinite(k) | (k < 0) | (k > users)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RecordError(path, rownum(int(pos[i])), spec.col, frame[spec.col].iloc[pos[i]],
                          f"a count in [0, users] (label of the arm_logit head '{spec.name}')")
    return pd.DataFrame({"row": pos, "context_id": frame["experiment_id"].astype(str).to_numpy(object)[pos],
                         "response": text[pos], "value": k, "trials": users})


def label_names(frame: pd.DataFrame | None) -> list[str]:
    if frame is None or "name" not in frame.columns:
        return []
    return sorted(frame["name"].astype(str).unique())


__all__ = ["ARM_RECORD", "SET_RECORD",
           "BUILTIN", "COUNT_LIKELIHOODS", "HeadSpec", "arm_values", "LIKELIHOODS", "LINKS", "SOURCE_SEP", "declare",
           "declarations_from_records", "label_names", "label_values", "parse_config_heads", "spec_of"]
