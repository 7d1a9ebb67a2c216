"""RestoreFormer++ face restorer, inference only, loadable from the official checkpoint.

The network is from Wang et al., "RestoreFormer++: Towards Real-World Blind Face Restoration
from Undegraded Key-Value Pairs" (TPAMI 2023), in the configuration of the released
`RestoreFormer++.ckpt` (github.com/wzhouxiff/RestoreFormerPlusPlus, Apache-2.0). It is a
VQGAN-style encoder / codebook / decoder on 512x512 FFHQ-aligned faces:

    encoder   conv_in 3->64; six levels of width 64 x (1, 2, 2, 4, 4, 8), two residual blocks
              each, a stride-2 conv between levels (512 -> 16 px); self-attention after each
              block of the 16 px level; a middle block, attention, block; conv_out -> 256.
    codebook  quant_conv 256->256, nearest of 1024 learned 256-d codes per position,
              post_quant_conv 256->256.
    decoder   conv_in; middle block, attention, block; the levels in reverse with three
              residual blocks each and nearest x2 upsampling between them; conv_out -> RGB.

The decoder's attention layers are cross-attention: queries come from the encoder's features
of the degraded face at the same level, keys and values from the decoder (the "undegraded
key-value pairs" of the title). RestoreFormer++ differs from RestoreFormer (v1, which spandrel
0.4.2 loads) in two ways that spandrel's loader cannot express: 4 attention heads instead of 8
(the tensors have the same shapes either way), and cross-attention in the decoder at 32 px as
well as 16 px (`decoder.up.4.attn.*`, with no matching layers in the encoder; its queries are
the encoder's 32 px level output). So vidrestore has its own module, with the official key
names so that the checkpoint loads unchanged once its `vqvae.` prefix is stripped.

The checkpoint is a PyTorch Lightning file: the network's tensors sit under `state_dict`, each
key prefixed `vqvae.` (the Lightning module's attribute). The official loader strips the prefix
and loads `strict=False`; here every network key must be present and no `vqvae.` key may be
left over, while entries outside the prefix (training-only modules, if any) are ignored.

Input and output are RGB in [-1, 1] (pixels in 0..1, normalised with mean and std 0.5); the
spandrel descriptor `RestoreFormerPlusPlusArch.load` returns maps [0, 1] in and out. Every
layer treats each face on its own (group norms, convolutions, attention within one face), so a
batch gives what its faces give one at a time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from spandrel import Architecture, ImageModelDescriptor, SizeRequirements
from torch import nn

CHECKPOINT_PREFIX = "vqvae."  # the Lightning module's attribute that holds the network
ATTENTION_HEADS = 4  # RestoreFormer++'s; not recoverable from tensor shapes (v1 used 8)
GROUPS = 32  # group norm groups, every norm of the network
NORM_EPS = 1e-6
SIZE_MULTIPLE = 32  # five stride-2 levels: other sizes would not come back to H x W

# Keys every RestoreFormer(++) state dict has; the cross-attention below the top decoder
# level is what only ++ has.
_COMMON_KEYS = ("quantize.embedding.weight", "quant_conv.weight", "post_quant_conv.weight",
                "encoder.conv_in.weight", "encoder.conv_out.weight", "decoder.conv_out.weight",
                "encoder.mid.attn_1.q.weight", "decoder.mid.attn_1.q.weight")
_LEVEL = re.compile(r"(encoder\.down|decoder\.up)\.(\d+)\.(block|attn)\.(\d+)\.")


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels, eps=NORM_EPS)


def _conv3(cin: int, cout: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=padding)


class ResidualBlock(nn.Module):
    """norm, swish, conv3x3, norm, swish, conv3x3, plus the input (1x1-projected when the
    width changes)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), _conv3(cin, cout)
        self.norm2, self.conv2 = _norm(cout), _conv3(cout, cout)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class MultiHeadAttention(nn.Module):
    """Multi-head attention between the positions of one feature map.

    Alone it is self-attention on `norm1(x)`. Given `queries` (a feature map of x's shape, the
    encoder's), the queries come from `norm2(queries)` and keys and values from `norm1(x)`.
    Heads split the channels into consecutive groups. The result is added to x.
    """

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm1, self.norm2 = _norm(channels), _norm(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1)
                                                 for _ in range(4))

    def forward(self, x: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        q = self.q(h if queries is None else self.norm2(queries))
        b, c, height, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, heads, HW, C/heads)
            return t.reshape(b, self.heads, c // self.heads, height * width).transpose(-1, -2)

        out = F.scaled_dot_product_attention(split(q), split(self.k(h)), split(self.v(h)))
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, height, width))


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one pixel on the right and bottom only."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv3(channels, channels, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MiddleBlocks(nn.Module):
    """Residual block, attention, residual block at the coarsest level."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.block_1 = ResidualBlock(channels, channels)
        self.attn_1 = MultiHeadAttention(channels, heads)
        self.block_2 = ResidualBlock(channels, channels)


class Level(nn.Module):
    """One resolution: residual blocks, each followed by attention where the level has it."""

    def __init__(self, cin: int, cout: int, blocks: int, heads: int, attention: bool):
        super().__init__()
        self.block = nn.ModuleList(ResidualBlock(cin if i == 0 else cout, cout)
                                   for i in range(blocks))
        self.attn = nn.ModuleList(MultiHeadAttention(cout, heads)
                                  for _ in range(blocks if attention else 0))

    def forward(self, h: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if self.attn:
                h = self.attn[i](h, queries)
        return h


class Encoder(nn.Module):
    def __init__(self, in_channels: int, width: int, multipliers: tuple[int, ...], blocks: int,
                 attention_levels: frozenset[int], z_channels: int, heads: int):
        super().__init__()
        self.conv_in = _conv3(in_channels, width)
        self.down = nn.ModuleList()
        cin = width
        for level, mult in enumerate(multipliers):
            stage = Level(cin, width * mult, blocks, heads, level in attention_levels)
            cin = width * mult
            if level < len(multipliers) - 1:
                stage.downsample = Downsample(cin)
            self.down.append(stage)
        self.mid = MiddleBlocks(cin, heads)
        self.norm_out, self.conv_out = _norm(cin), _conv3(cin, z_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """The latent, the per-level features the decoder queries with (each level's output
        before downsampling; for the coarsest, the output of the first middle block) and the
        middle features (after the second middle block)."""
        h = self.conv_in(x)
        features = []
        for stage in self.down:
            h = stage(h)
            features.append(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid.block_1(h)
        features[-1] = h
        h = self.mid.block_2(self.mid.attn_1(h))
        middle = h
        return self.conv_out(F.silu(self.norm_out(h))), features, middle


class Decoder(nn.Module):
    def __init__(self, out_channels: int, width: int, multipliers: tuple[int, ...], blocks: int,
                 attention_levels: frozenset[int], z_channels: int, heads: int):
        super().__init__()
        top = width * multipliers[-1]
        self.conv_in = _conv3(z_channels, top)
        self.mid = MiddleBlocks(top, heads)
        stages: dict[int, Level] = {}
        cin = top
        for level in reversed(range(len(multipliers))):
            stages[level] = Level(cin, width * multipliers[level], blocks + 1, heads,
                                  level in attention_levels)
            cin = width * multipliers[level]
            if level > 0:
                stages[level].upsample = Upsample(cin)
        self.up = nn.ModuleList(stages[level] for level in range(len(multipliers)))
        self.norm_out, self.conv_out = _norm(cin), _conv3(cin, out_channels)

    def forward(self, z: torch.Tensor, features: list[torch.Tensor],
                middle: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_1(self.conv_in(z))
        h = self.mid.block_2(self.mid.attn_1(h, middle))
        for level in reversed(range(len(self.up))):
            stage = self.up[level]
            h = stage(h, features[level])
            if level > 0:
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class NearestCode(nn.Module):
    """Replaces each position's vector by the nearest of the learned codes (Euclidean).

    Distances are taken in float32 whatever the network runs in: a code picked differently in
    bf16 would change the face by a whole code, not by rounding.
    """

    def __init__(self, codes: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(codes, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
        codes = self.embedding.weight.float()
        # |z - e|^2 = |z|^2 - 2 z.e + |e|^2; |z|^2 is the same for every code, so it is left
        # out (adding it would only cost precision)
        nearest = (codes.square().sum(1) - 2 * flat @ codes.t()).argmin(1)
        return codes[nearest].to(z.dtype).reshape(b, h, w, c).permute(0, 3, 1, 2)


class RestoreFormerPlusPlus(nn.Module):
    """RestoreFormer++ on (N, C, H, W) faces in [-1, 1]; H and W multiples of 32 (the
    weights were trained at 512). Returns (N, out_channels, H, W) in about [-1, 1]."""

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, width: int = 64,
                 multipliers: tuple[int, ...] = (1, 2, 2, 4, 4, 8), blocks: int = 2,
                 encoder_attention: frozenset[int] = frozenset({5}),
                 decoder_attention: frozenset[int] = frozenset({4, 5}),
                 z_channels: int = 256, codes: int = 1024, code_dim: int = 256,
                 heads: int = ATTENTION_HEADS):
        super().__init__()
        self.encoder = Encoder(in_channels, width, multipliers, blocks,
                               frozenset(encoder_attention), z_channels, heads)
        self.decoder = Decoder(out_channels, width, multipliers, blocks,
                               frozenset(decoder_attention), z_channels, heads)
        self.quantize = NearestCode(codes, code_dim)
        self.quant_conv = nn.Conv2d(z_channels, code_dim, 1)
        self.post_quant_conv = nn.Conv2d(code_dim, z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, features, middle = self.encoder(x)
        codes = self.quantize(self.quant_conv(z))
        return self.decoder(self.post_quant_conv(codes), features, middle)


# --- loading -----------------------------------------------------------------------------------


def network_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's tensors of a (canonicalised) checkpoint state dict: the `vqvae.` entries
    without their prefix when there are any, else the state dict as it is."""
    if any(k.startswith(CHECKPOINT_PREFIX) for k in state):
        return {k[len(CHECKPOINT_PREFIX):]: v for k, v in state.items()
                if k.startswith(CHECKPOINT_PREFIX)}
    return dict(state)


def _attention_levels(state: Mapping[str, torch.Tensor], part: str) -> frozenset[int]:
    return frozenset(int(m[2]) for k in state if (m := _LEVEL.match(k))
                     and m[1] == part and m[3] == "attn")


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found = {int(m[1]) for k in state if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def is_restoreformer_plus_plus(state: Mapping[str, torch.Tensor]) -> bool:
    """A RestoreFormer-family state dict (prefixed or not) whose decoder cross-attends at a
    level where the encoder has no attention: RestoreFormer++'s multi-scale decoder."""
    net = network_state(state)
    if not all(k in net for k in _COMMON_KEYS):
        return False
    return bool(_attention_levels(net, "decoder.up") - _attention_levels(net, "encoder.down"))


def hyperparameters(net: Mapping[str, torch.Tensor]) -> dict:
    """Constructor arguments of `RestoreFormerPlusPlus` read off the tensor shapes (all but
    the head count, which shapes do not show)."""
    width, in_channels = net["encoder.conv_in.weight"].shape[:2]
    levels = _count(net, "encoder.down")
    multipliers = tuple(net[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // width
                        for i in range(levels))
    codes, code_dim = net["quantize.embedding.weight"].shape
    return {"in_channels": int(in_channels),
            "out_channels": int(net["decoder.conv_out.weight"].shape[0]),
            "width": int(width), "multipliers": multipliers,
            "blocks": _count(net, "encoder.down.0.block"),
            "encoder_attention": _attention_levels(net, "encoder.down"),
            "decoder_attention": _attention_levels(net, "decoder.up"),
            "z_channels": int(net["encoder.conv_out.weight"].shape[0]),
            "codes": int(codes), "code_dim": int(code_dim)}


def _to_unit_range(model: RestoreFormerPlusPlus, image: torch.Tensor) -> torch.Tensor:
    return (model(image * 2 - 1) + 1) / 2


class RestoreFormerPlusPlusArch(Architecture[RestoreFormerPlusPlus]):
    """spandrel architecture entry, so `ModelLoader` with this added to its registry detects
    and loads RestoreFormer++ checkpoints like any architecture spandrel ships."""

    def __init__(self) -> None:
        super().__init__(id="RestoreFormerPlusPlus", name="RestoreFormer++",
                         detect=is_restoreformer_plus_plus)

    def load(self, state_dict: Mapping[str, torch.Tensor]
             ) -> ImageModelDescriptor[RestoreFormerPlusPlus]:
        """The descriptor loads the network's tensors strictly: a missing or left-over
        network key raises RuntimeError."""
        net = network_state(state_dict)
        params = hyperparameters(net)
        model = RestoreFormerPlusPlus(**params)
        return ImageModelDescriptor(
            model, net, architecture=self, purpose="FaceSR",
            tags=[f"{params['width']}nf", f"{params['codes']}codes"],
            supports_half=False,  # fp16 is untested; bf16 keeps float32's range
            supports_bfloat16=True, scale=1,
            input_channels=params["in_channels"], output_channels=params["out_channels"],
            size_requirements=SizeRequirements(multiple_of=SIZE_MULTIPLE),
            call_fn=_to_unit_range)
