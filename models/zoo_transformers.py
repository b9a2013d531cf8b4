"""Tiny Hugging Face transformer exports for the zoo: BERT (2 and 3 inputs) and T5, random init.

Imported by `build_zoo.py` (needs torch and transformers). The configs are tiny (hidden 32, 2 layers,
4 heads, vocabulary 300) so each file stays well under 1 MB, but the graphs are what the standard
exports produce: integer `input_ids` into a Gather of the word embeddings, an `attention_mask`
turned into an additive bias, `token_type_ids` into a 2-row table, and T5's relative position buckets.

- bert2: `attn_implementation="eager"`, the classic `(1 - mask) * finfo.min` bias (a mask value of 3
  gives inf, then NaN: the reason the oracle must feed real masks).
- bert3: the default (sdpa) path, whose mask goes through `Where`; plus `token_type_ids`.
- t5enc: the T5 encoder (RMS LayerNorm, relative attention bias, ReLU FFN).
- t5: the whole encoder-decoder (`decoder_input_ids`, causal self-attention, cross-attention).
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 300
SEQ = 16
HIDDEN = 32
FFN = 64
HEADS = 4
LAYERS = 2
MAX_POSITIONS = 128  # above the 64 that onnxprune gives a dynamic sequence dim without --shapes


class EncoderOutput(nn.Module):
    """A Hugging Face model called with keyword inputs, returning `last_hidden_state` only."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    # Named positional parameters, not *inputs: torch.export matches dynamic_shapes to them one by one.
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                third: torch.Tensor | None = None) -> torch.Tensor:
        inputs = (input_ids, attention_mask) if third is None else (input_ids, attention_mask, third)
        return self.model(**dict(zip(self.names, inputs, strict=True))).last_hidden_state


def _perturb_vectors(model: nn.Module) -> nn.Module:
    """Random init leaves every bias 0 and every norm scale 1: identical tensors that exporters share,
    and norms that are the identity. Perturb every 1-D parameter so that neither happens."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def bert(*, token_types: bool, attn: str) -> nn.Module:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                     intermediate_size=FFN, max_position_embeddings=MAX_POSITIONS, type_vocab_size=2,
                     attn_implementation=attn)
    names = ("input_ids", "attention_mask", "token_type_ids") if token_types else ("input_ids", "attention_mask")
    return EncoderOutput(_perturb_vectors(BertModel(cfg, add_pooling_layer=False)), names)


def _t5_config() -> object:
    from transformers import T5Config

    return T5Config(vocab_size=VOCAB, d_model=HIDDEN, d_kv=HIDDEN // HEADS, d_ff=FFN, num_layers=LAYERS,
                    num_heads=HEADS, relative_attention_num_buckets=8, decoder_start_token_id=0)


def t5_encoder() -> nn.Module:
    from transformers import T5EncoderModel

    return EncoderOutput(_perturb_vectors(T5EncoderModel(_t5_config())), ("input_ids", "attention_mask"))


def t5() -> nn.Module:
    from transformers import T5Model

    return EncoderOutput(_perturb_vectors(T5Model(_t5_config())),
                         ("input_ids", "attention_mask", "decoder_input_ids"))


def token_inputs(shapes: dict[str, tuple[int, ...]], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Valid example values: token ids below the vocabulary, token types 0/1, masks of ones with the
    last positions of every row but the first padded (0), as a tokenizer pads a batch."""
    out = []
    for name, shape in shapes.items():
        if name.endswith("input_ids"):
            out.append(torch.randint(0, VOCAB, shape, generator=gen))
        elif name == "token_type_ids":
            out.append(torch.randint(0, 2, shape, generator=gen))
        else:
            mask = torch.ones(shape, dtype=torch.long)
            for row in range(1, shape[0]):
                mask[row, shape[1] - row:] = 0
            out.append(mask)
    return tuple(out)
