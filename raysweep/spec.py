"""The sweep spec: one YAML file, validated once and fully before any compute.

A spec names the dataset, the generator, how synthetic data enters training, the training
recipe, Tune's search settings, where results are tracked and stored, and a `sweep:` block
with the product's axes (`synthetic_ratio`, `mask_fraction`, `mask_region`, `augmentation`,
`backbone`, `seed`) and, for inpainting, a `saliency:` block (which classifier and CAM pick the
pixels). Each axis is a fixed value, a grid (a YAML list) or a distribution
(`{choice: [...]}`, `{uniform: [lo, hi]}`, `{loguniform: [lo, hi]}`, `{randint: [lo, hi]}`).

Every problem becomes a `UserError` with one line that names the key, the value and the fix:
bytes that are not UTF-8, duplicate keys, numbers that are not finite or out of range, seeds
outside NumPy's range or repeated, names MLflow cannot filter on.
"""

from __future__ import annotations

import copy
import math
import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raysweep.errors import UserError

AXES = ("synthetic_ratio", "mask_fraction", "mask_region", "strength", "translation",
        "filter_threshold", "augmentation", "backbone", "seed")
# Axes whose values are numbers (the report reads MLflow's string params back as numbers).
NUMERIC_AXES = ("synthetic_ratio", "mask_fraction", "strength", "filter_threshold", "seed")
# Axes that only shape synthetic images: a trial that reads none ignores them.
SYNTHESIS_AXES = ("mask_fraction", "mask_region", "strength", "translation", "filter_threshold")
MASK_REGIONS = ("background", "foreground", "random")  # raysweep.saliency.MASK_REGIONS
# img2img: denoise a real image toward its own class, or toward another one (Diff-Mix).
TRANSLATIONS = ("same", "other")
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
# Seeds seed NumPy (< 2**32) and per-image seeds `(seed * 2654435761 + i) mod 2**32`,
# computed in an int64 (< 2**31).
MAX_SEED = 2**31 - 1
# More synthetic images per real one than any study uses; bigger is a typo (the pool is sized by it).
MAX_SYNTHETIC_RATIO = 100.0
# Upper bounds on the spec's other numbers: far beyond any real sweep, so only a typo (an extra
# zero, a seed pasted into the wrong key) meets them, and it is refused at `validate` instead of
# failing, or running for days, at `run`.
MAX_EPOCHS = 10_000
MAX_INPUT_SIZE = 1024  # pixels; validate runs a forward pass at this size
MAX_ACTORS = 256  # per generator; each holds a whole model
MAX_CPUS = 256  # per actor, per trial, threads: more than one node has
MAX_GPUS_PER_TRIAL = 16  # a trial runs on one node
# The one remote scheme raysweep writes (boto3 for the store, pyarrow for Tune's storage).
# Another (gs://, abfs://, S3://) would pass for shared storage and then become a local folder.
REMOTE_SCHEME = "s3://"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,199}")
# Names that are safe in MLflow filter strings, file names and Ray actor names.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class _Strict(BaseModel):
    # allow_inf_nan=False: `lr: .inf` or `.nan` anywhere is an error, not a silent NaN sweep.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Axis(_Strict):
    """One swept axis: `kind` is fixed, grid or a Tune distribution."""

    kind: Literal["fixed", "grid", "choice", "uniform", "loguniform", "randint"]
    values: list[Any]

    @classmethod
    def parse(cls, name: str, raw: Any) -> "Axis":
        if isinstance(raw, list):
            if not raw:
                raise UserError(f"sweep.{name}: an empty list sweeps nothing; give at least one value")
            _check_unique(f"sweep.{name}", raw)
            return cls(kind="grid", values=raw)
        if isinstance(raw, dict):
            if len(raw) != 1 or next(iter(raw)) not in DISTRIBUTIONS:
                raise UserError(f"sweep.{name}: {raw!r} is not a distribution; use one of "
                                f"{', '.join(f'{{{d}: [...]}}' for d in DISTRIBUTIONS)}")
            kind, values = next(iter(raw.items()))
            if not isinstance(values, list) or not values:
                raise UserError(f"sweep.{name}.{kind}: expected a list, got {values!r}")
            if kind == "choice":
                _check_unique(f"sweep.{name}.choice", values)
            else:
                if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values) \
                        or values[0] > values[1]:
                    raise UserError(f"sweep.{name}.{kind}: expected [low, high] numbers with "
                                    f"low <= high, got {values!r}")
                if kind == "loguniform" and values[0] <= 0:
                    raise UserError(f"sweep.{name}.loguniform: bounds must be > 0, got {values!r}")
            return cls(kind=kind, values=values)
        return cls(kind="fixed", values=[raw])

    def candidates(self) -> list[Any]:
        """The values a trial can take, or the [low, high] bounds of a continuous range."""
        return list(self.values)

    @property
    def is_fixed(self) -> bool:
        return self.kind == "fixed" or (self.kind in ("grid", "choice") and len(self.values) == 1)

    @property
    def max_value(self) -> float:
        return max(float(v) for v in self.values)


class DatasetSpec(_Strict):
    name: str = "mnist5k"
    options: dict[str, Any] = Field(default_factory=dict)
    per_class: int | None = Field(default=50, ge=1, le=1_000_000)
    val_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    split_seed: int = Field(default=0, ge=0, le=MAX_SEED)


class GeneratorSpec(_Strict):
    name: str = "ddpm"
    options: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    # Options for generators that augmentation values name (`gan+classic` -> dcgan).
    options_by_name: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def options_for(self, name: str) -> dict[str, Any]:
        return self.options if name == self.name else self.options_by_name.get(name, {})


class SynthesisSpec(_Strict):
    mode: Literal["add", "replace", "only"] = "add"
    actors: int = Field(default=1, ge=1, le=MAX_ACTORS)
    cpus_per_actor: float = Field(default=0, ge=0, le=MAX_CPUS)
    gpus_per_actor: float = Field(default=0, ge=0, le=1)
    chunk_size: int = Field(default=250, ge=1, le=10_000)
    # on_demand: trials start when their own images exist and pools grow as far as trials
    # read; staged: every planned pool is filled first, then trials start (to compare).
    schedule: Literal["on_demand", "staged"] = "on_demand"
    # img2img with translation `other`: the target class's share of a variant's soft label is
    # strength ** soft_label_gamma (Diff-Mix), the rest stays on the source's class.
    soft_label_gamma: float = Field(default=0.5, gt=0, le=10)
    # Judge each pool before trials (Fréchet distance, KID, precision/recall, SSIM, CAS) with
    # this many CAS epochs; 0 = off (the reference classifier costs minutes on a laptop CPU).
    quality_epochs: int = Field(default=0, ge=0, le=MAX_EPOCHS)
    # Fréchet distance and KID on Inception v3 features (as published FIDs) instead of the
    # reference classifier's: a local copy of torch-fidelity's FID Inception weights. Never
    # downloaded; needs quality_epochs > 0.
    inception_weights: str | None = None


class TTASpec(_Strict):
    transforms: list[str] = Field(default_factory=lambda: ["identity", "hflip", "shift"])
    reduce: Literal["mean", "max"] = "mean"


class TrainingSpec(_Strict):
    epochs: int = Field(default=6, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    lr: float = Field(default=3e-3, gt=0, le=10)
    weight_decay: float = Field(default=0.05, ge=0, le=10)
    input_size: int | None = Field(default=32, ge=8, le=MAX_INPUT_SIZE)
    pretrained: bool | str = False
    augmentation_params: dict[str, float] = Field(default_factory=dict)
    warmup_epochs: int = Field(default=0, ge=0, le=MAX_EPOCHS)
    early_stopping_patience: int | None = Field(default=None, ge=1, le=MAX_EPOCHS)
    tta: TTASpec = Field(default_factory=TTASpec)
    # torch threads per trial; null: the CPUs the trial holds (tune.cpus_per_trial, at least 1)
    threads: int | None = Field(default=None, ge=1, le=MAX_CPUS)

    @model_validator(mode="after")
    def _warmup_fits(self) -> "TrainingSpec":
        if self.warmup_epochs >= self.epochs:
            raise UserError(f"training.warmup_epochs: {self.warmup_epochs} leaves no epoch with "
                            f"synthetic data out of {self.epochs}; use fewer than epochs")
        return self


class ASHASpec(_Strict):
    grace_period: int = Field(default=2, ge=1, le=MAX_EPOCHS)
    reduction_factor: float = Field(default=3, gt=1, le=100)


class TuneSpec(_Strict):
    search_alg: Literal["grid", "random", "optuna"] = "grid"
    scheduler: Literal["fifo", "asha"] = "fifo"
    asha: ASHASpec = Field(default_factory=ASHASpec)
    search_seed: int = Field(default=0, ge=0, le=MAX_SEED)
    num_samples: int = Field(default=1, ge=1, le=100_000)
    max_concurrent_trials: int | None = Field(default=None, ge=1, le=100_000)
    cpus_per_trial: float = Field(default=1, gt=0, le=MAX_CPUS)
    gpus_per_trial: float = Field(default=0, ge=0, le=MAX_GPUS_PER_TRIAL)
    metric: Literal["val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_macro_auc",
                    "train_loss"] = "val_balanced_accuracy"
    mode: Literal["max", "min"] = "max"
    storage_path: str = ".raysweep/tune"

    @field_validator("storage_path")
    @classmethod
    def _storage_is_writable(cls, value: str) -> str:
        return check_location("tune.storage_path", value)
    # A trial that fails (a lost node, an OOM) is retried from its last checkpoint this often.
    max_failures: int = Field(default=2, ge=0, le=100)
    # A trial saves a resumable checkpoint (model + optimizer) at most this often, in seconds;
    # a retried or resumed trial redoes at most this much work. 0: after every epoch (every
    # checkpoint is then kept: that costs a model's size per epoch in storage_path).
    checkpoint_interval_s: float = Field(default=60, ge=0, le=86_400)

    @field_validator("gpus_per_trial")
    @classmethod
    def _whole_or_fraction(cls, value: float) -> float:
        # Ray shares a GPU only in fractions below one; 1.5 GPUs cannot be scheduled.
        if value > 1 and not float(value).is_integer():
            raise UserError(f"tune.gpus_per_trial: {value:g} is neither a fraction of one GPU nor "
                            f"a whole number of GPUs; use e.g. 0.5, 1 or 2")
        return value


class SaliencySpec(_Strict):
    """The reference classifier and CAM that choose the pixels inpainting repaints (seed 000)."""

    method: str = "gradcam"
    backbone: str = "resnet10t"
    epochs: int = Field(default=10, ge=1, le=MAX_EPOCHS)
    input_size: int = Field(default=32, ge=8, le=MAX_INPUT_SIZE)
    target_layer: str | None = None
    # Gaussian sigma in pixels; wider than any image is a typo.
    smoothing: float = Field(default=0.0, ge=0, le=MAX_INPUT_SIZE)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)


class TrackingSpec(_Strict):
    tracking_uri: str | None = None
    experiment: str | None = None

    @field_validator("experiment")
    @classmethod
    def _experiment_is_filterable(cls, value: str | None) -> str | None:
        if value is not None:
            _check_name("tracking.experiment", value)
        return value


class StoreSpec(_Strict):
    path: str = ".raysweep/cache"

    @field_validator("path")
    @classmethod
    def _path_is_writable(cls, value: str) -> str:
        return check_location("store.path", value)


class YardstickSpec(_Strict):
    """Real-only trials at larger real training sets: every synthetic arm is then stated as
    "worth N real images per class" (same splits, seeds, backbone and recipe)."""

    per_class: list[int] = Field(min_length=1, max_length=20)

    @field_validator("per_class")
    @classmethod
    def _sizes_are_distinct(cls, sizes: list[int]) -> list[int]:
        if any(size < 1 for size in sizes):
            raise UserError(f"yardstick.per_class: {sizes} has a size below 1; give real "
                            f"images per class, e.g. [100, 200, 400]")
        _check_unique("yardstick.per_class", sizes)
        return sorted(sizes)


class SweepSpec(_Strict):
    synthetic_ratio: Any = 0.0
    mask_fraction: Any = 0.0
    mask_region: Any = "background"
    # img2img: how far each real image is noised before it is denoised, in (0, 1]
    strength: Any = 0.5
    # img2img: `same` class, or `other` (a class-balanced choice of another class, soft label)
    translation: Any = "same"
    # Reference-classifier confidence a synthetic image needs in its own label (0 = keep all).
    filter_threshold: Any = 0.0
    augmentation: Any = "none"
    backbone: Any = "resnet18"
    seed: Any = 0

    def axis(self, name: str) -> Axis:
        return Axis.parse(name, getattr(self, name))


class Spec(_Strict):
    """A whole sweep, as written in `search_spaces/*.yaml`."""

    name: str
    description: str = ""
    # One prefix every node can reach (s3://bucket/prefix): Tune's storage, the store and
    # MLflow artifacts default to folders under it (see raysweep/storage.py).
    storage: str | None = None
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    generator: GeneratorSpec = Field(default_factory=GeneratorSpec)
    synthesis: SynthesisSpec = Field(default_factory=SynthesisSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    tune: TuneSpec = Field(default_factory=TuneSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    store: StoreSpec = Field(default_factory=StoreSpec)
    saliency: SaliencySpec = Field(default_factory=SaliencySpec)
    yardstick: YardstickSpec | None = None
    sweep: SweepSpec = Field(default_factory=SweepSpec)

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        _check_name("name", value)
        return value

    @field_validator("storage")
    @classmethod
    def _storage_is_writable(cls, value: str | None) -> str | None:
        return value if value is None else check_location("storage", value)

    @model_validator(mode="after")
    def _axes_are_sound(self) -> "Spec":
        axes = {name: self.sweep.axis(name) for name in AXES}
        _check_numbers("synthetic_ratio", axes["synthetic_ratio"], low=0.0,
                       high=MAX_SYNTHETIC_RATIO)
        _check_numbers("mask_fraction", axes["mask_fraction"], low=0.0, high=1.0)
        if any(float(v) >= 1.0 for v in axes["mask_fraction"].candidates()):
            raise UserError(f"sweep.mask_fraction: {axes['mask_fraction'].max_value:g} would repaint "
                            f"the whole image; use values in [0, 1)")
        for value in axes["mask_region"].candidates():
            if value not in MASK_REGIONS:
                raise UserError(f"sweep.mask_region: unknown region {value!r}; "
                                f"known: {', '.join(MASK_REGIONS)}")
        _check_numbers("strength", axes["strength"], low=0.0, high=1.0)
        if any(float(v) <= 0.0 for v in axes["strength"].candidates()):
            raise UserError("sweep.strength: 0 would return the real image unchanged; use "
                            "values in (0, 1], e.g. [0.25, 0.5, 0.75]")
        for value in axes["translation"].candidates():
            if value not in TRANSLATIONS:
                raise UserError(f"sweep.translation: unknown translation {value!r}; known: "
                                f"{', '.join(TRANSLATIONS)}")
        for name in ("mask_region", "translation"):
            if axes[name].kind in ("uniform", "loguniform", "randint"):
                raise UserError(f"sweep.{name}: a {name.split('_')[-1]} is a name; give a list "
                                f"or {{choice: [...]}}")
        _check_numbers("filter_threshold", axes["filter_threshold"], low=0.0, high=1.0)
        _check_numbers("seed", axes["seed"], low=0, high=MAX_SEED, integer=True)
        for name in ("augmentation", "backbone", "mask_region", "translation"):
            for value in axes[name].candidates():
                if not isinstance(value, str):
                    raise UserError(f"sweep.{name}: {value!r} is not a name; give a string")
        ratio = axes["synthetic_ratio"]
        if self.synthesis.mode == "replace" and ratio.max_value > 1:
            raise UserError(f"sweep.synthetic_ratio: mode 'replace' swaps a fraction of the real "
                            f"images, so ratios must be <= 1 (got {ratio.max_value:g})")
        if self.synthesis.mode == "only" and min(float(v) for v in ratio.values) <= 0:
            raise UserError("sweep.synthetic_ratio: mode 'only' trains on synthetic images alone, "
                            "so every ratio must be > 0")
        if self.tune.search_alg == "optuna" and all(axis.is_fixed for axis in axes.values()):
            raise UserError("tune.search_alg: optuna needs something to search, but every sweep "
                            "axis is fixed; give a list or a distribution for at least one axis")
        if self.tune.search_alg == "grid" and any(axes[n].kind in ("uniform", "loguniform", "randint")
                                                  for n in AXES) and self.tune.num_samples == 1:
            # Grid search with a distribution samples it num_samples times: say so instead of
            # silently running one sample.
            raise UserError("tune.num_samples: a distribution in `sweep:` is sampled num_samples "
                            "times; set tune.num_samples > 1 or use a list")
        return self

    def axes(self) -> dict[str, Axis]:
        return {name: self.sweep.axis(name) for name in AXES}

    @property
    def needs_synthetic(self) -> bool:
        return self.axes()["synthetic_ratio"].max_value > 0

    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name


def check_location(key: str, value: str) -> str:
    """`value` itself if raysweep can write there: a local path, or `s3://bucket/prefix` whose
    prefix is plain names (nothing that could climb out of a local cache); UserError otherwise."""
    scheme, sep, rest = str(value).partition("://")
    if not sep:
        return value
    if scheme != REMOTE_SCHEME[:-3]:
        if scheme.lower() == "s3":
            raise UserError(f"{key}: {value!r}: write the scheme in lower case, "
                            f"s3://{rest}")
        raise UserError(f"{key}: {value!r}: raysweep writes to local paths and "
                        f"s3://bucket/prefix only, not {scheme}://; use an S3 bucket (or an "
                        f"S3-compatible server through AWS_ENDPOINT_URL) or a local path")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    parts = prefix.split("/") if prefix else []
    if not _BUCKET.fullmatch(bucket) or not all(_PREFIX_PART.fullmatch(p) for p in parts):
        raise UserError(f"{key}: {value!r} is not s3://bucket/prefix with a valid bucket name "
                        f"(3-63 lower-case letters, digits, '.' and '-') and a prefix of plain "
                        f"names (no '.', '..' or empty parts); fix the URL")
    return value


def _check_name(key: str, value: str) -> None:
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        raise UserError(f"{key}: {value!r} must be letters, digits, '.', '_' or '-' (at most "
                        f"100, starting with a letter or digit) so MLflow can filter on it; "
                        f"rename it, e.g. {re.sub(r'[^A-Za-z0-9._-]+', '-', str(value)).strip('-._') or 'sweep'!r}")


def _check_unique(key: str, values: list) -> None:
    seen = []
    for value in values:
        # 1 and 1.0 are one value to Tune and to pools; True is not a number here.
        same = [v for v in seen if v == value and isinstance(v, bool) == isinstance(value, bool)]
        if same:
            raise UserError(f"{key}: {value!r} is listed twice; each value must appear once "
                            f"(repeat a whole sweep with more seeds or tune.num_samples)")
        seen.append(value)


def _check_numbers(name: str, axis: Axis, *, low: float | None, high: float | None,
                   integer: bool = False) -> None:
    for value in axis.candidates():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not math.isfinite(value)):
            raise UserError(f"sweep.{name}: {value!r} is not a finite number")
        if integer and not float(value).is_integer():
            raise UserError(f"sweep.{name}: {value!r} is not an integer")
        if low is not None and value < low:
            raise UserError(f"sweep.{name}: {value!r} is below {low:g}; use values >= {low:g}")
        if high is not None and value > high:
            raise UserError(f"sweep.{name}: {value!r} is above {high:g}; use values <= {high:g}")


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `--set key.sub=value` overrides (values parsed as YAML) to a raw spec dict."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set training.epochs=2")
        try:
            value = yaml.load(text, Loader=_UniqueKeyLoader)
        except _AliasRefused as error:
            raise UserError(f"--set {key}: YAML alias *{error.anchor} is not allowed; write the "
                            f"value out in full") from None
        except yaml.YAMLError:
            value = text
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {key}: {part!r} holds a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def _format_validation_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "spec"
    if first["type"] == "extra_forbidden":
        parent = ".".join(str(p) for p in first["loc"][:-1])
        known = _known_keys(parent)
        return f"{where}: unknown key; known keys here: {', '.join(known)}"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    fix = "; use a value within that bound" if first["type"] in _BOUND_ERRORS else ""
    return f"{where}: {first['msg']}{shown}{fix}"


# pydantic's error types for a number outside its Field's ge/gt/le/lt (the message names the bound).
_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _known_keys(dotted: str) -> list[str]:
    model: type[BaseModel] = Spec
    for part in [p for p in dotted.split(".") if p]:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def parse_spec(raw: Any, source: str = "spec") -> Spec:
    """Validate a raw mapping into a Spec, or raise UserError naming the first problem."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a YAML mapping at the top level, got {type(raw).__name__}")
    try:
        return Spec.model_validate(raw)
    except UserError as error:
        raise UserError(f"{source}: {error}") from None
    except ValidationError as error:
        inner = [e for e in error.errors() if isinstance(e.get("ctx", {}).get("error"), UserError)]
        if inner:
            raise UserError(f"{source}: {inner[0]['ctx']['error']}") from None
        raise UserError(f"{source}: {_format_validation_error(error)}") from None


class _AliasRefused(yaml.YAMLError):
    """A YAML alias (`*name`) in a spec or a --set value."""

    def __init__(self, anchor: str, mark):
        self.anchor, self.problem_mark = anchor, mark
        super().__init__(anchor)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    would silently keep the last one) and aliases are refused: a few hundred bytes of nested
    aliases expand to gigabytes when the resolved spec is written out (a "billion laughs"), and
    a spec is short enough to write every value out."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(event.anchor, event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}; give each key once", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def shipped_specs() -> dict[str, Traversable]:
    """The specs raysweep ships as package data, by name (`ratio` is search_spaces/ratio.yaml).

    In a checkout `raysweep/search_spaces` is a link to the top-level folder, so a clone, an
    editable install and a wheel all read them through `importlib.resources`.
    """
    folder = files("raysweep") / "search_spaces"
    return {entry.name.removesuffix(".yaml"): entry
            for entry in sorted(folder.iterdir(), key=lambda entry: entry.name)
            if entry.name.endswith(".yaml")}


def find_spec_file(spec: str | Path) -> Path | Traversable:
    """A spec file's path as given or, when no such file exists, the shipped spec of that name."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = shipped_specs()
    if str(spec) in shipped:
        return shipped[str(spec)]
    raise UserError(f"{spec}: no such spec file, and no shipped spec has that name; pass a path "
                    f"like search_spaces/ratio.yaml or a shipped name: {', '.join(shipped)}")


def load_spec(spec: str | Path, overrides: list[str] | None = None) -> Spec:
    """Read, override and validate a spec file, or a shipped spec named without a path (schema
    only; `check_spec` checks names)."""
    path = find_spec_file(spec)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{spec}: not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x}); "
                        f"save the file as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except _AliasRefused as error:
        raise UserError(f"{path}: line {error.problem_mark.line + 1}: YAML alias *{error.anchor} "
                        f"is not allowed in a spec; write the value out in full") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(f"{spec}: YAML syntax error{where}: {problem}; fix the file") from None
    if raw is None:
        raise UserError(f"{spec}: the file is empty; see `raysweep init ratio` for an example")
    return parse_spec(apply_overrides(raw, overrides or []) if isinstance(raw, dict) else raw,
                      source=str(spec))


def spec_to_yaml(spec: Spec) -> str:
    """The resolved spec (defaults filled in), as logged with every sweep; credentials in the
    tracking URI, and in any other URL the spec holds, are redacted."""
    from raysweep.redaction import redact_text, redact_uri

    resolved = spec.model_dump(mode="json")
    uri = resolved["tracking"]["tracking_uri"]
    resolved["tracking"]["tracking_uri"] = redact_uri(uri)
    return redact_text(yaml.safe_dump(resolved, sort_keys=False), [uri])
