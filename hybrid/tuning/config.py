"""Tuning config: one dataclass per concern, each field with a help text, checked in ``__post_init__``.

The YAML preset ``configs/lora.yaml`` mirrors these sections::

    cfg = load_config(TuneConfig, "configs/lora.yaml", ["lora.r=16", "train.max_steps=100"])
    cfg.method, cfg.lora.r  # -> ("lora", 16)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Method = Literal["lora", "prompt_tuning", "prefix_tuning", "ia3", "full"]
METHODS: tuple[str, ...] = ("lora", "prompt_tuning", "prefix_tuning", "ia3", "full")

# The projections of Llama-family decoders (SmolLM2, Llama, Mistral, Qwen2 share these names).
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSection:
    r: int = field(default=16, metadata={"help": "LoRA rank: width of the low-rank update (> 0)"})
    alpha: float = field(default=32.0, metadata={"help": "scale numerator: the update is scaled by alpha/r "
                                                          "(alpha/sqrt(r) with rslora)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input, in [0, 1)"})
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LINEAR), metadata={
        "help": "module name suffixes to adapt; 'all-linear' adapts every linear layer but the head"})
    use_rslora: bool = field(default=False, metadata={"help": "rank-stabilised scaling alpha/sqrt(r)"})
    use_dora: bool = field(default=False, metadata={"help": "weight-decomposed LoRA (slower, sometimes better)"})
    bias: Literal["none", "all", "lora_only"] = field(default="none", metadata={"help": "which biases train"})

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError(f"lora.r (rank) must be > 0, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"lora.alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("lora.target_modules must name at least one module")


@dataclass
class PromptTuningSection:
    num_virtual_tokens: int = field(default=20, metadata={"help": "soft-prompt length in tokens"})
    init_text: str = field(default="", metadata={
        "help": "initialise the soft prompt from this text's embeddings (empty: random)"})

    def __post_init__(self) -> None:
        if self.num_virtual_tokens <= 0:
            raise ValueError(f"num_virtual_tokens must be > 0, got {self.num_virtual_tokens}")


@dataclass
class PrefixTuningSection:
    num_virtual_tokens: int = field(default=20, metadata={"help": "prefix length per layer"})
    prefix_projection: bool = field(default=False, metadata={"help": "reparametrise through an MLP"})

    def __post_init__(self) -> None:
        if self.num_virtual_tokens <= 0:
            raise ValueError(f"num_virtual_tokens must be > 0, got {self.num_virtual_tokens}")


@dataclass
class IA3Section:
    target_modules: list[str] = field(default_factory=lambda: ["k_proj", "v_proj", "down_proj"],
                                      metadata={"help": "modules whose activations get a learned scale"})
    feedforward_modules: list[str] = field(default_factory=lambda: ["down_proj"], metadata={
        "help": "subset of target_modules scaled on their input (feed-forward layers)"})

    def __post_init__(self) -> None:
        extra = [m for m in self.feedforward_modules if m not in self.target_modules]
        if extra:
            raise ValueError(f"ia3.feedforward_modules {extra} must also be in target_modules")


@dataclass
class MixEntry:
    path: str = field(default="", metadata={"help": "a training JSONL file (any row format hybrid tune reads)"})
    weight: float = field(default=1.0, metadata={
        "help": "relative share of training steps drawn from this task (with data.mix_temperature = 0)"})
    name: str = field(default="", metadata={"help": "task name in the card, the tracked run and per-task eval "
                                                     "loss (empty: the file's stem)"})

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("every data.mix entry needs a path")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"data.mix weight of {self.path} must be a number >= 0, got {self.weight}")
        self.name = self.name or Path(self.path).stem


@dataclass
class DataSection:
    format: Literal["auto", "chat", "alpaca", "qa", "text"] = field(default="auto", metadata={
        "help": "chat = {'messages': [...]}, alpaca = {'instruction','input','output'}, qa = {'question', "
                "'answer'} (+ 'context', quoted as a rag source), text = {'text'} (continued pretraining); "
                "auto picks per row"})
    system_prompt: str | None = field(default=None, metadata={
        "help": "system prompt (template) rendered into every chat/alpaca example (null: the project "
                "default from hybrid.chat); use the same one at inference; recorded in the adapter card"})
    app_name: str = field(default="assistant", metadata={
        "help": "value for {app_name} when the system prompt is a template that uses it"})
    max_length: int = field(default=512, metadata={"help": "tokens per example, prompt included"})
    overlong: Literal["truncate", "skip"] = field(default="truncate", metadata={
        "help": "rows longer than max_length: truncate the completion's end, or skip the row"})
    eval_fraction: float = field(default=0.1, metadata={
        "help": "without --eval-data, this share of source documents becomes the eval split (of each "
                "document's rows, stratified, when there are fewer than 5 documents)"})
    train_on_prompt: bool = field(default=False, metadata={
        "help": "also compute the loss on prompt tokens (default: completion only)"})
    mix: list[MixEntry] = field(default_factory=list, metadata={
        "help": "multi-task mix: datasets ({path, weight, name}) sampled per micro-batch by weight; the run's "
                "own --data files join with weight 1. Empty: plain concatenation of --data"})
    mix_temperature: float = field(default=0.0, metadata={
        "help": "0: sample tasks by data.mix weights; T > 0: by size, p ~ rows^(1/T) (1 = proportional, "
                "larger T flattens towards uniform)"})

    def __post_init__(self) -> None:
        if self.system_prompt is not None:
            # the same normalisation as the app config, so a copied prompt hashes like the app's
            from hybrid.chat import normalize_system_prompt

            self.system_prompt = normalize_system_prompt(self.system_prompt)
        if self.max_length < 8:
            raise ValueError(f"data.max_length must be >= 8, got {self.max_length}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"data.eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if not (math.isfinite(self.mix_temperature) and self.mix_temperature >= 0):
            raise ValueError(f"data.mix_temperature must be >= 0, got {self.mix_temperature}")
        if self.mix and self.mix_temperature == 0 and not sum(m.weight for m in self.mix) > 0:
            raise ValueError(f"data.mix weights must sum to a positive number, got "
                             f"{[m.weight for m in self.mix]}")
        names = [m.name for m in self.mix]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"data.mix task names must differ; repeated: {', '.join(dup)} (set name:)")


@dataclass
class TrainSection:
    epochs: float = field(default=1.0, metadata={"help": "passes over the training rows"})
    max_steps: int = field(default=0, metadata={"help": "optimizer steps; 0 = derive from epochs"})
    batch_tokens: int = field(default=2048, metadata={
        "help": "tokens per micro-batch: packed sequences fill this budget (padding-free)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warmup steps (overrides warmup_ratio)"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "warmup as a share of all steps"})
    schedule: Literal["cosine", "linear", "constant"] = field(default="cosine", metadata={
        "help": "learning-rate decay after warmup"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final LR as a share of the peak"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "clip the global grad norm (0 = off)"})
    packing: bool = field(default=True, metadata={
        "help": "pack several examples into one row with per-example positions (no cross-example "
                "attention); off: length-bucketed padded batches. Prompt/prefix tuning always pad"})
    pack_length: int = field(default=0, metadata={
        "help": "tokens per packed row (0 = auto: max(data.max_length, 256), capped at batch_tokens); longer "
                "rows waste less on row ends but pay more for attention (CPU: 2x512 rows run ~20% slower "
                "per token than 4x256)"})
    eval_at_start: bool = field(default=True, metadata={"help": "measure eval loss before the first step"})
    eval_every: int = field(default=50, metadata={"help": "eval loss every N optimizer steps (0 = end only)"})
    early_stopping_patience: int = field(default=0, metadata={
        "help": "stop after this many evals without improvement (0 = never)"})
    early_stopping_delta: float = field(default=0.0, metadata={"help": "minimum eval-loss improvement"})
    save_every: int = field(default=0, metadata={"help": "checkpoint every N steps (0 = only at the end)"})
    log_every: int = field(default=10, metadata={"help": "write a metrics line every N steps"})
    seed: int = field(default=0, metadata={"help": "seeds data order, dropout and initialisation"})
    precision: Literal["auto", "bf16", "fp32"] = field(default="auto", metadata={
        "help": "auto = bf16 autocast where the CPU/GPU multiplies bf16 natively, else fp32"})
    threads: int = field(default=0, metadata={
        "help": "CPU threads for torch (0 = torch's default); 1 is often faster on a machine busy with other jobs"})
    tensorboard: bool = field(default=True, metadata={"help": "also log to TensorBoard when installed"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar with tokens/s"})

    def __post_init__(self) -> None:
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError(f"set train.epochs > 0 or train.max_steps > 0 (got {self.epochs}, {self.max_steps})")
        if self.max_steps < 0:
            raise ValueError(f"train.max_steps must be >= 0, got {self.max_steps}")
        if self.batch_tokens < 8:
            raise ValueError(f"train.batch_tokens must be >= 8, got {self.batch_tokens}")
        if self.grad_accum < 1:
            raise ValueError(f"train.grad_accum must be >= 1, got {self.grad_accum}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("pack_length", "warmup_steps", "eval_every", "save_every", "early_stopping_patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.threads < 0:
            raise ValueError(f"train.threads must be >= 0, got {self.threads}")
        if self.log_every < 1:
            raise ValueError(f"train.log_every must be >= 1, got {self.log_every}")
        if self.max_grad_norm < 0:
            raise ValueError(f"train.max_grad_norm must be >= 0, got {self.max_grad_norm}")


@dataclass
class TrackSection:
    enabled: bool | Literal["auto"] = field(default="auto", metadata={
        "help": "MLflow tracking: auto = when mlflow is installed, true = required (pip install 'hybrid[lab]'), "
                "false = off (hybrid tune --no-track); metrics.jsonl is written either way"})
    uri: str = field(default="", metadata={
        "help": "tracking URI (e.g. http://mlflow.team:5000); empty: $MLFLOW_TRACKING_URI, else a local SQLite "
                "store under $HYBRID_CACHE/mlflow (nothing leaves the machine)"})
    experiment: str = field(default="hybrid-tune", metadata={"help": "MLflow experiment name"})
    run_name: str = field(default="", metadata={"help": "run name (empty: the adapter directory's name)"})
    on_unreachable: Literal["local", "fail"] = field(default="local", metadata={
        "help": "a tracking server that does not answer: local = warn and track into the local store "
                "(the training still counts), fail = stop before training"})
    tags: dict[str, str] = field(default_factory=dict, metadata={"help": "extra run tags"})

    def __post_init__(self) -> None:
        if self.enabled not in (True, False, "auto"):
            raise ValueError(f"track.enabled must be auto, true or false, got {self.enabled!r}")
        if not self.experiment.strip():
            raise ValueError("track.experiment must not be empty")


@dataclass
class TuneConfig:
    """Everything ``hybrid tune`` needs besides the data paths and the output directory.

    Example::

        cfg = TuneConfig(method="lora", lora=LoraSection(r=8))
        cfg.train.lr  # 2e-4
    """

    base_model: str = field(default="default", metadata={
        "help": "'default' (embedded SmolLM2-135M-Instruct) or a local Hugging Face model directory"})
    method: Method = field(default="lora", metadata={"help": "one of " + ", ".join(METHODS)})
    lora: LoraSection = field(default_factory=LoraSection, metadata={"help": "LoRA settings"})
    prompt_tuning: PromptTuningSection = field(default_factory=PromptTuningSection,
                                               metadata={"help": "prompt-tuning settings"})
    prefix_tuning: PrefixTuningSection = field(default_factory=PrefixTuningSection,
                                               metadata={"help": "prefix-tuning settings"})
    ia3: IA3Section = field(default_factory=IA3Section, metadata={"help": "IA3 settings"})
    data: DataSection = field(default_factory=DataSection, metadata={"help": "data reading and validation"})
    train: TrainSection = field(default_factory=TrainSection, metadata={"help": "the optimisation loop"})
    track: TrackSection = field(default_factory=TrackSection, metadata={"help": "experiment tracking (MLflow)"})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.method in ("prompt_tuning", "prefix_tuning"):
            n = getattr(self, self.method).num_virtual_tokens
            if n >= self.data.max_length:
                raise ValueError(f"{self.method}.num_virtual_tokens ({n}) must be < data.max_length "
                                 f"({self.data.max_length})")
        if self.train.packing and self.train.batch_tokens < self.data.max_length:
            raise ValueError(f"train.batch_tokens ({self.train.batch_tokens}) must be >= data.max_length "
                             f"({self.data.max_length}) so the longest example fits a micro-batch")

    def pack_length(self) -> int:
        """Row length for packing: at least one full example, at most one micro-batch."""
        t = self.train
        n = t.pack_length or max(self.data.max_length, 256)
        return max(self.data.max_length, min(n, t.batch_tokens))

    def method_settings(self) -> dict:
        """The hyperparameters of the chosen method only (for the card)."""
        from dataclasses import asdict

        return {} if self.method == "full" else asdict(getattr(self, self.method))
