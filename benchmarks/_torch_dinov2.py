"""A PyTorch reference of the project's ViT (DINOv2 layout) and its gradient methods, by hand.

What ``benchmarks/methods.py --torch`` times the project against: the same weights (the
project's flax variables copied into torch tensors, so a Hugging Face folder, a weight file
or a random init serve both sides), the same forward (patch convolution, class token,
position embedding, pre-LN blocks with layer scale, exact GELU, final LayerNorm, class-token
pooling) and each method written the plain PyTorch way, one ``torch.autograd.grad`` per
backward pass (``methods.base``: the cotangent of f_p is ``u_p / |beta|``; chefer's default
target, the cosine, ``(u_p - s u) / |beta|``):

* ``gradxinput``: gradient x input on the tokens entering block 0;
* ``conservative``: the same with the attention weights, LayerNorm 1/sigma and GELU's gate
  Phi(z) detached (Ali et al. 2022);
* ``chefer``: gradients with respect to every block's softmax weights A_l, then
  ``w (I + A_bar_{L-1}) ... (I + A_bar_0)`` with ``A_bar = mean_h (grad_A * A)^+``;
* ``ig`` and ``gradxinput`` through Captum (``IntegratedGradients`` with
  ``riemann_middle``, the project's midpoint rule, baseline 0; ``InputXGradient``).

Shapes: images [B, H, W, C] (the project's layout; transposed for the convolution), maps
[B, gh, gw] (one pair, each image against the other) or [B, K, gh, gw] (each image
against K partners). Needs torch (and captum for the Captum rows); nothing in the library
imports it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


class TorchViT:
    """The project's ``ViT`` (class token, ``tok`` pooling, layer scale) in plain torch.

    Args:
      params: the flax ``variables["params"]`` of the project's model (any arrays).
      num_heads: heads H.
      eps: the LayerNorms' epsilon.
      attention: ``"eager"`` (softmax, then the product: the weights exist, as the
        methods that read them need) or ``"sdpa"`` (``F.scaled_dot_product_attention``,
        only where no method reads the weights).
    """

    def __init__(self, params, num_heads: int, eps: float = 1e-6, attention: str = "eager"):
        p = params
        k = np.asarray(p["embedding"]["kernel"])  # [ph, pw, C, D]
        self.patch = k.shape[0]
        self.conv_w = _t(k.transpose(3, 2, 0, 1))
        self.conv_b = _t(p["embedding"]["bias"])
        self.cls = _t(p["cls"])  # [1, 1, D]
        tr = p["Transformer"]
        self.pos = _t(tr["posembed_input"]["pos_embedding"])  # [1, N', D]
        self.heads, self.eps, self.attention = num_heads, eps, attention
        self.blocks = []
        i = 0
        while f"encoderblock_{i}" in tr:
            b = tr[f"encoderblock_{i}"]
            att = b["MultiHeadDotProductAttention_1"]
            d = self.pos.shape[-1]
            qkv_w = np.concatenate(
                [np.asarray(att[n]["kernel"]).reshape(d, d) for n in ("query", "key", "value")], 1
            )
            qkv_b = np.concatenate(
                [np.asarray(att[n]["bias"]).reshape(d) for n in ("query", "key", "value")]
            )
            mlp = b["MlpBlock_3"]
            self.blocks.append(
                dict(
                    ln0=(_t(b["LayerNorm_0"]["scale"]), _t(b["LayerNorm_0"]["bias"])),
                    qkv=(_t(qkv_w.T), _t(qkv_b)),  # torch's [out, in]
                    out=(
                        _t(np.asarray(att["out"]["kernel"]).reshape(d, d).T),
                        _t(att["out"]["bias"]),
                    ),
                    ls1=_t(b["ls1"]),
                    ln2=(_t(b["LayerNorm_2"]["scale"]), _t(b["LayerNorm_2"]["bias"])),
                    fc1=(_t(np.asarray(mlp["Dense_0"]["kernel"]).T), _t(mlp["Dense_0"]["bias"])),
                    fc2=(_t(np.asarray(mlp["Dense_1"]["kernel"]).T), _t(mlp["Dense_1"]["bias"])),
                    ls2=_t(b["ls2"]),
                )
            )
            i += 1
        self.norm = (_t(tr["encoder_norm"]["scale"]), _t(tr["encoder_norm"]["bias"]))

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, H, W, C] -> the tokens entering block 0, [B, 1 + gh*gw, D]."""
        x = F.conv2d(images.permute(0, 3, 1, 2), self.conv_w, self.conv_b, stride=self.patch)
        x = x.flatten(2).transpose(1, 2)
        cls = self.cls.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], 1) + self.pos

    def _ln(self, x, wb, detach: bool):
        if not detach:
            return F.layer_norm(x, x.shape[-1:], wb[0], wb[1], self.eps)
        c = x - x.mean(-1, keepdim=True)
        inv = torch.rsqrt((c * c).mean(-1, keepdim=True) + self.eps).detach()
        return c * inv * wb[0] + wb[1]

    def _attention(self, x, blk, detach: bool, keep: list | None):
        b, n, d = x.shape
        h = self.heads
        qkv = F.linear(x, *blk["qkv"]).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, N, Dh]
        if self.attention == "sdpa" and keep is None and not detach:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            a = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(d // h), dim=-1)
            if detach:
                a = a.detach()
            if keep is not None:
                keep.append(a)
            y = a @ v
        return F.linear(y.transpose(1, 2).reshape(b, n, d), *blk["out"])

    def _mlp(self, x, blk, detach: bool):
        z = F.linear(x, *blk["fc1"])
        if detach:  # GELU = z * Phi(z), Phi held
            h = z * (0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))).detach()
        else:
            h = F.gelu(z)
        return F.linear(h, *blk["fc2"])

    def encode(self, x: torch.Tensor, *, detach: bool = False, keep: list | None = None):
        """Tokens entering block 0 [B, N', D] -> the embedding [B, D] (the class token).

        ``detach``: conservative propagation's constants; ``keep``: a list that receives
        every block's softmax weights [B, H, N', N'].
        """
        for blk in self.blocks:
            x = x + blk["ls1"] * self._attention(self._ln(x, blk["ln0"], detach), blk, detach, keep)
            x = x + blk["ls2"] * self._mlp(self._ln(x, blk["ln2"], detach), blk, detach)
        return self._ln(x, self.norm, detach)[:, 0]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(self.tokens(images))


def cotangents(emb: torch.Tensor, partners: torch.Tensor, target: str = "score"):
    """``methods.base.cotangent`` in torch: emb [B, E], partners [B, K, E] -> [B, K, E]."""
    norm = emb.norm(dim=-1)
    u = emb / norm[:, None]
    up = partners / partners.norm(dim=-1, keepdim=True)
    if target == "cosine":
        s = torch.einsum("be,bke->bk", u, up)
        up = up - s[..., None] * u[:, None]
    return up / norm[:, None, None]


def _grid(n: int) -> int:
    return int(round(math.sqrt(n)))


def _patch_map(r: torch.Tensor) -> torch.Tensor:
    """Relevance of every token [..., 1 + P] -> the patch tokens' [..., g, g]."""
    g = _grid(r.shape[-1] - 1)
    return r[..., 1:].reshape(*r.shape[:-1], g, g)


def _forward(model: TorchViT, images, method: str) -> dict:
    """One forward pass of B images that keeps its graph for the method's backward passes."""
    detach = method == "conservative"
    keep = [] if method == "chefer" else None
    x0 = model.tokens(images).detach().requires_grad_(True)
    with torch.set_grad_enabled(True):
        emb = model.encode(x0, detach=detach, keep=keep)
    return dict(x0=x0, emb=emb, keep=keep, detach=detach, method=method)


def _backward(model: TorchViT, st: dict, partners, captum: bool = False, free: bool = True):
    """Maps [B, K, g, g] of the forward ``st`` against partners [B, K, E], one backward pass
    per partner (``free``: the graph is released after the last)."""
    method, x0, emb, keep = st["method"], st["x0"], st["emb"], st["keep"]
    target = "cosine" if method == "chefer" else "score"
    cot = cotangents(emb.detach(), partners, target)  # [B, K, E]
    maps = []
    for kk in range(cot.shape[1]):
        retain = not (free and kk == cot.shape[1] - 1)
        if method == "chefer":
            grads = torch.autograd.grad(emb, keep, cot[:, kk], retain_graph=retain)
            r = torch.zeros(emb.shape[0], x0.shape[1])
            r[:, 0] = 1.0  # the class token's row
            for a, g in zip(reversed(keep), reversed(grads), strict=True):
                r = r + torch.einsum("bq,bqn->bn", r, (g * a).clamp(min=0).mean(1))
        elif captum:  # Captum's InputXGradient on the block-0 tokens (its own forward)
            from captum.attr import InputXGradient

            c = cot[:, kk]
            attr = InputXGradient(
                lambda t, c=c: (model.encode(t, detach=st["detach"]) * c).sum(-1)
            ).attribute(x0.detach())
            r = attr.sum(-1)
        else:
            (g,) = torch.autograd.grad(emb, x0, cot[:, kk], retain_graph=retain)
            r = (g * x0).sum(-1)
        maps.append(_patch_map(r.detach()))
    return torch.stack(maps, 1)


def _swap(emb: torch.Tensor) -> torch.Tensor:
    """One pair's partners: image 0 against image 1 and back, [2, 1, E]."""
    return emb.flip(0)[:, None]


@torch.no_grad()
def pair_maps(model: TorchViT, images: torch.Tensor, method: str) -> torch.Tensor:
    """One pair (images [2, H, W, C]): each image's map against the other, [2, g, g].

    ``method``: gradxinput, conservative, chefer, ``captum-gradxinput`` or ``captum-ig``.
    """
    if method == "captum-ig":
        return captum_ig(model, images)
    captum = method.startswith("captum-")
    name = method.removeprefix("captum-")
    if captum:  # Captum runs its own forward pass
        st = dict(_forward_free(model, images), method=name, detach=False, keep=None)
    else:
        st = _forward(model, images, name)
    return _backward(model, st, _swap(st["emb"].detach()), captum)[:, 0]


def _forward_free(model: TorchViT, images) -> dict:
    """The embedding and block-0 tokens without a graph (Captum makes its own)."""
    x0 = model.tokens(images)
    return dict(x0=x0, emb=model.encode(x0))


@torch.no_grad()
def cross_maps(model: TorchViT, queries: torch.Tensor, gallery: torch.Tensor, method: str):
    """Every query x gallery pair, as the project's ``cross_maps``: (maps_q, maps_g).

    Each image runs forward once (both sides' graphs kept), then one backward pass per
    partner: maps_q [Q, G, g, g], maps_g [Q, G, g, g].
    """
    sq, sg = _forward(model, queries, method), _forward(model, gallery, method)
    eq, eg = sq["emb"].detach(), sg["emb"].detach()
    mq = _backward(model, sq, eg.expand(eq.shape[0], -1, -1))
    mg = _backward(model, sg, eq.expand(eg.shape[0], -1, -1))
    return mq, mg.transpose(0, 1)


@torch.no_grad()
def captum_ig(model: TorchViT, images: torch.Tensor, steps: int = 16) -> torch.Tensor:
    """Captum's IntegratedGradients of one pair (midpoint rule, baseline 0), [2, g, g].

    |beta(x)| of the end point is held on the whole path (the cotangent is fixed), as the
    project's ``ig``; the pixel attributions are summed over the channels and each patch.
    """
    from captum.attr import IntegratedGradients

    emb = model.embed(images)
    cot = cotangents(emb, _swap(emb))[:, 0]  # [2, E]
    with torch.set_grad_enabled(True):
        attr = IntegratedGradients(lambda x, c: (model.embed(x) * c).sum(-1)).attribute(
            images,
            baselines=torch.zeros_like(images),
            additional_forward_args=(cot,),
            n_steps=steps,
            method="riemann_middle",
        )
    px = attr.sum(-1)  # [2, H, W]
    p = model.patch
    b, h, w = px.shape
    return px.reshape(b, h // p, p, w // p, p).sum((2, 4))
