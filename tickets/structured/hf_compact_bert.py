"""A BERT whose layers each keep their own number of attention heads and their own feed-forward width.

Self-contained (torch and transformers only) on purpose: `save_pretrained` copies this file next to the weights of
a compacted structured ticket, so the folder loads without the tickets package:

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)

The config is an ordinary BertConfig plus two lists with one entry per layer, `ticket_num_heads` and
`ticket_intermediate_sizes`; the head width stays hidden_size / num_attention_heads as in the original model.
"""

import warnings

from torch import nn
from transformers import BertForMaskedLM, BertForSequenceClassification


def resize_layers(bert, config) -> None:
    """Give every encoder layer the head count and feed-forward width its config entries name (fresh weights)."""
    hidden = config.hidden_size
    head_dim = hidden // config.num_attention_heads
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        for layer, heads, width in zip(bert.encoder.layer, config.ticket_num_heads, config.ticket_intermediate_sizes):
            attention = layer.attention.self
            size = heads * head_dim
            attention.query = nn.Linear(hidden, size)
            attention.key = nn.Linear(hidden, size)
            attention.value = nn.Linear(hidden, size)
            attention.num_attention_heads = heads
            attention.all_head_size = size
            layer.attention.output.dense = nn.Linear(size, hidden)
            layer.intermediate.dense = nn.Linear(hidden, width)
            layer.output.dense = nn.Linear(width, hidden)


class CompactBertForSequenceClassification(BertForSequenceClassification):
    """BertForSequenceClassification with per-layer head counts and feed-forward widths."""

    def __init__(self, config):
        super().__init__(config)
        resize_layers(self.bert, config)


class CompactBertForMaskedLM(BertForMaskedLM):
    """BertForMaskedLM with per-layer head counts and feed-forward widths."""

    def __init__(self, config):
        super().__init__(config)
        resize_layers(self.bert, config)


CompactBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
CompactBertForMaskedLM.register_for_auto_class("AutoModelForMaskedLM")
