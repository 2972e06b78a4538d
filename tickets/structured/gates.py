"""Head and MLP gates on a BERT encoder, installed as forward hooks (transformers 5 has no head_mask).

A head gate multiplies that head's slice of the attention context just before the attention-output dense layer;
an MLP gate multiplies the whole output of the layer's feed-forward block (bias included). Gates at 0/1 give
exactly the masked (and the compacted) model; gates that require grad give d loss / d gate.
"""

from __future__ import annotations

from torch import nn

from ..models import base_model
from .structure import Layout, Structure


class Gates:
    """Context manager: while active, `heads` [layers, heads] and `mlps` [layers] scale the model's structures."""

    def __init__(self, model: nn.Module, structure: Structure, requires_grad: bool = False):
        self.model = model
        self.layout = Layout.of(model)
        structure.check_fits(self.layout)
        reference = next(model.parameters())
        self.heads = structure.heads.to(reference.device, reference.dtype).requires_grad_(requires_grad)
        self.mlps = structure.mlps.to(reference.device, reference.dtype).requires_grad_(requires_grad)
        self._handles: list = []

    def __enter__(self) -> Gates:
        for i, layer in enumerate(base_model(self.model).encoder.layer):
            self._handles.append(layer.attention.output.dense.register_forward_pre_hook(self._head_hook(i)))
            self._handles.append(layer.output.dense.register_forward_hook(self._mlp_hook(i)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _head_hook(self, layer: int):
        heads, head_dim = self.layout.num_heads, self.layout.head_dim

        def hook(module, args):
            context = args[0]
            gated = context.view(*context.shape[:-1], heads, head_dim) * self.heads[layer].view(heads, 1)
            return (gated.view(context.shape), *args[1:])

        return hook

    def _mlp_hook(self, layer: int):
        def hook(module, args, output):
            return output * self.mlps[layer]

        return hook
