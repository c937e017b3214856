"""Inference-only energy, forces and stress of a :class:`~tdn_calc.nn.model.TDNModel` with a
hand-written backward pass.

On small structures a TDN call is dominated by per-operation overhead, not arithmetic:
the autograd forward records ~250 nodes and the backward engine runs them one by one. Here
the forward runs without autograd and keeps the few intermediates the backward needs; the
backward (``dE/d positions`` and ``dE/d strain``) is written out block by block (energy
head, layer norms, gated feed-forward, attention with its sink softmax and tensor
product, degree embedding, radial MLP, envelope, spherical harmonics) in about as many
operations as the forward. The numbers equal autograd's to round-off (tests compare them
in float64), so :meth:`TDNModel.forward` uses this path for inference whenever it
applies (:func:`supports`): exact tensor product, ``lmax <= 1`` (the shipped models).
Weights are re-laid out once per parameter version (per-component matrices, query and key
in one matrix, the neighbour-sum normalisation folded into the embedding's matrix).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .attention import _LOGIT_BOUND
from .tensor_product import ExactTensorProduct


def supports(model: nn.Module) -> bool:
    """Whether :func:`energy_forces` computes ``model``'s outputs (``lmax <= 1``, exact
    tensor product: where the spherical harmonics have the closed form used here)."""
    config = model.config
    return (
        config.lmax <= 1
        and all(isinstance(block.attention.tp, ExactTensorProduct) for block in model.blocks)
        and not torch.compiler.is_compiling()
    )


@dataclass(frozen=True)
class _Linear:
    """A ``DegreeLinear`` laid out for the fast path: ``[d, C_in, C_out]`` per-component
    matrices, their transposes, and the ``[d, 1, C_out]`` bias row (bias on scalars)."""

    weight: torch.Tensor
    weight_t: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def of(cls, module: nn.Module, scale: float = 1.0) -> _Linear:
        weight = (module.weight[module.degree] * scale).contiguous()
        bias = module.scalar_row * module.bias
        return cls(weight, weight.transpose(1, 2), bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x.transpose(0, 1), self.weight).transpose(0, 1)

    def backward(self, grad: torch.Tensor) -> torch.Tensor:
        return torch.bmm(grad.transpose(0, 1), self.weight_t).transpose(0, 1)


@dataclass(frozen=True)
class _Norm:
    """A ``DegreeLayerNorm``: gain per component, bias row, ``[d, d]`` same-degree average."""

    gain: torch.Tensor
    bias: torch.Tensor
    average: torch.Tensor
    eps: float

    @classmethod
    def of(cls, module: nn.Module) -> _Norm:
        average = module.same_degree / module.count  # mean over a degree's components x C
        bias = module.scalar_row * module.bias
        return cls(module.gain[module.degree], bias, average, module.eps)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        centred = x.clone()
        centred[:, 0].sub_(x[:, 0].mean(dim=1, keepdim=True))
        scale = (centred.square().sum(dim=2) @ self.average).add_(self.eps).rsqrt_()
        normed = centred.mul_(scale.unsqueeze(-1))
        return torch.addcmul(self.bias, normed, self.gain), (normed, scale)

    def backward(self, grad: torch.Tensor, saved: tuple[torch.Tensor, ...]) -> torch.Tensor:
        normed, scale = saved
        g = grad * self.gain
        dot = (g * normed).sum(dim=2) @ self.average  # [n, d]
        g = g.sub_(normed * dot.unsqueeze(-1)).mul_(scale.unsqueeze(-1))
        g[:, 0].sub_(g[:, 0].mean(dim=1, keepdim=True))
        return g


@dataclass(frozen=True)
class _Block:
    norm_attention: _Norm
    query_key: torch.Tensor  # [2C, C]: query and key in one matrix
    value: _Linear
    proj: _Linear
    norm_ffn: _Norm
    up: _Linear
    gates: tuple[torch.Tensor, torch.Tensor] | None
    down: _Linear


@dataclass(frozen=True)
class _Weights:
    """The model's parameters laid out for :func:`energy_forces` (one version of them)."""

    t_j: torch.Tensor
    radial: tuple[torch.Tensor, ...]
    embedding: torch.Tensor
    degree_embedding: _Linear
    blocks: tuple[_Block, ...]
    norm_out: _Norm
    head: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _weights(model: nn.Module) -> _Weights:
    """:class:`_Weights` of ``model``, rebuilt when a parameter, the dtype or the device
    changed since the last call (cached on the model)."""
    params = list(model.parameters())
    key = tuple((id(p), p._version, p.dtype, p.device) for p in params)
    cached = model.__dict__.get("_fast_weights")
    if cached is not None and cached[0] == key:
        return cached[1]
    with torch.no_grad():
        weights = _layout(model)
    model.__dict__["_fast_weights"] = (key, weights)
    return weights


def _layout(model: nn.Module) -> _Weights:
    blocks = []
    for block in model.blocks:
        attention, ffn = block.attention, block.ffn
        gates = ffn.up.gates
        blocks.append(
            _Block(
                _Norm.of(block.norm_attention),
                torch.cat([attention.query.weight, attention.key.weight]),
                _Linear.of(attention.value),
                _Linear.of(attention.proj),
                _Norm.of(block.norm_ffn),
                _Linear.of(ffn.up.linear),
                None if gates is None else (gates.weight, gates.bias),
                _Linear.of(ffn.down),
            )
        )
    radial = model.radial
    first, second = radial.mlp[0], radial.mlp[2]
    dtype = model.embedding.weight.dtype
    head_in, head_out = model.head[0], model.head[2]
    return _Weights(
        t_j=model.blocks[0].attention.tp.constant("t_j", model.embedding.weight),
        radial=(
            radial.basis.freqs.to(dtype),
            first.weight,
            first.bias,
            second.weight,
            second.bias,
            radial.out.weight,
        ),
        embedding=model.embedding.weight,
        degree_embedding=_Linear.of(model.degree_embedding.linear, model.degree_embedding.norm),
        blocks=tuple(blocks),
        norm_out=_Norm.of(model.norm_out),
        head=(head_in.weight, head_in.bias, head_out.weight[0], head_out.bias),
    )


def _silu_grad(z: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
    """``d silu(z) / dz`` from ``z`` and ``sigmoid(z)``."""
    return sig * (1.0 + z * (1.0 - sig))


def _zeros(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(shape, dtype=like.dtype, device=like.device)


@torch.no_grad()
def energy_forces(
    model: nn.Module,
    positions: torch.Tensor,
    cell: torch.Tensor,
    species: torch.Tensor,
    edge_index: torch.Tensor,
    shifts: torch.Tensor,
    system_idx: torch.Tensor,
    n_systems: int,
    periodic: bool,
    compute_stress: bool,
    return_features: bool,
) -> dict[str, torch.Tensor]:
    """``model``'s energy, forces (and stress) as :meth:`TDNModel.forward` returns them with
    ``training=False``, without autograd. The stress is ``dE/d strain / V`` (zero for a
    cell without volume) from the virial ``sum_e r_e (x) dE/dr_e`` over edges."""
    weights = _weights(model)
    config = model.config
    c, heads = config.channels, config.num_heads
    head_dim = c // heads
    n_atoms = positions.shape[0]
    i, j = edge_index[0], edge_index[1]
    n_edges = i.shape[0]

    # ---- forward -------------------------------------------------------------------------
    vectors = positions.index_select(0, j) - positions.index_select(0, i)
    if periodic:
        vectors = vectors + torch.einsum("ek,ekl->el", shifts, cell[system_idx[i]])
    distance = torch.linalg.vector_norm(vectors, dim=-1)
    inv_r = distance.reciprocal()
    unit = vectors * inv_r.unsqueeze(-1)
    d = 1 if config.lmax == 0 else 4
    sh = torch.ones((n_edges, d), dtype=vectors.dtype, device=vectors.device)
    if d > 1:
        torch.mul(unit, math.sqrt(3.0), out=sh[:, 1:])
    # polynomial envelope and its derivative
    cutoff, p = model.cutoff, config.envelope_exponent
    a, b, cc = (p + 1) * (p + 2) / 2, p * (p + 2), p * (p + 1) / 2
    inside = distance < cutoff
    xr = (distance / cutoff).clamp(max=1.0)
    poly = xr * (b - cc * xr) - a
    xp1 = xr.pow(p - 1)
    envelope = torch.where(inside, 1.0 + xp1 * xr * poly, 0.0)
    d_envelope = torch.where(inside, xp1 * (p * poly + xr * (b - 2 * cc * xr)) / cutoff, 0.0)
    # radial MLP
    freqs, w1, b1, w2, b2, w_out = weights.radial
    phase = distance.unsqueeze(-1) * freqs
    prefactor = model.radial.basis.prefactor
    sin = torch.sin(phase)
    basis = sin.mul_(inv_r.unsqueeze(-1) * prefactor)
    z1 = torch.addmm(b1, basis, w1.t())
    s1 = torch.sigmoid(z1)
    h1 = z1 * s1
    z2 = torch.addmm(b2, h1, w2.t())
    s2 = torch.sigmoid(z2)
    h2 = z2 * s2
    hidden = h2 * envelope.unsqueeze(-1)
    radial = hidden @ w_out.t()  # [E, C + layers * 2C]

    h = weights.embedding.index_select(0, species)
    h_j = h.index_select(0, j)
    radial0 = radial[:, :c]
    w0 = radial0 * h_j
    summed = _zeros((n_atoms, d, c), h).index_add_(0, i, sh.unsqueeze(-1) * w0.unsqueeze(1))
    x = weights.degree_embedding(summed)
    x[:, 0].add_(h)

    m = (sh @ weights.t_j).view(n_edges, d, d)  # [E, i, k]
    m_t = m.transpose(1, 2)
    inv_sqrt_head = 1.0 / math.sqrt(head_dim)
    saved_blocks = []
    for layer, block in enumerate(weights.blocks):
        offset = c + 2 * c * layer
        key_filter, tp_weights = radial[:, offset : offset + c], radial[:, offset + c : offset + 2 * c]
        # attention
        a_in, norm1 = block.norm_attention(x)
        qk = a_in[:, 0] @ block.query_key.t()
        q_i, k_j = qk[:, :c].index_select(0, i), qk[:, c:].index_select(0, j)
        qk_e = q_i * k_j
        logits = (qk_e * key_filter).view(n_edges, heads, head_dim).sum(-1) * inv_sqrt_head
        tanh = torch.tanh(logits / _LOGIT_BOUND)
        exp = torch.exp(tanh * _LOGIT_BOUND)
        attn = exp * envelope.unsqueeze(-1)
        denominator = torch.ones((n_atoms, heads), dtype=x.dtype, device=x.device)
        denominator_i = denominator.index_add_(0, i, attn).index_select(0, i)
        alpha = attn / denominator_i
        tp_w = (tp_weights.view(n_edges, heads, head_dim) * alpha.unsqueeze(-1)).view(n_edges, c)
        v_j = block.value(a_in).index_select(0, j)
        mv = torch.bmm(m_t, v_j)  # [E, d, C]
        values = mv * tp_w.unsqueeze(1)
        x = x + block.proj(torch.zeros_like(x).index_add_(0, i, values))
        # feed-forward
        f_in, norm2 = block.norm_ffn(x)
        up = block.up(f_in)  # [n, d, mC]
        s_up0 = torch.sigmoid(up[:, 0])
        gated = torch.empty_like(up)
        torch.mul(up[:, 0], s_up0, out=gated[:, 0])
        s_gate = None
        if d > 1:
            s_gate = torch.sigmoid(torch.addmm(block.gates[1], f_in[:, 0], block.gates[0].t()))
            torch.mul(up[:, 1:], s_gate.unsqueeze(1), out=gated[:, 1:])
        x = x + block.down(gated)
        saved_blocks.append(
            (norm1, qk_e, q_i, k_j, key_filter, tp_weights, tanh, exp, attn, alpha,
             denominator_i, tp_w, v_j, mv, norm2, up, s_up0, s_gate, f_in)
        )  # fmt: skip

    x_out, norm_out = weights.norm_out(x)
    head_w1, head_b1, head_w2, head_b2 = weights.head
    scalars = x_out[:, 0]
    z = torch.addmm(head_b1, scalars, head_w1.t())
    s_head = torch.sigmoid(z)
    raw = torch.mv(z * s_head, head_w2) + head_b2
    learned = (model.scale * raw + model.shift).to(torch.float64)
    energies = model.atomic_energies.index_select(0, species) + learned
    energy = torch.zeros(n_systems, dtype=torch.float64, device=raw.device)
    energy.index_add_(0, system_idx, energies)
    out = {"energy": energy, "energies": energies}
    if return_features:
        out["node_features"] = scalars.clone()

    # ---- backward: dE/dx for every intermediate ------------------------------------------
    g_head = (_silu_grad(z, s_head) * (head_w2 * model.scale)) @ head_w1  # [n, C]
    g_x = _zeros((n_atoms, d, c), x)
    g_x[:, 0] = g_head
    g_x = weights.norm_out.backward(g_x, norm_out)
    g_radial = torch.empty_like(radial)
    g_sh = _zeros((n_edges, d), sh)
    g_envelope = _zeros((n_edges,), sh)
    for layer in reversed(range(len(weights.blocks))):
        block = weights.blocks[layer]
        (norm1, qk_e, q_i, k_j, key_filter, tp_weights, tanh, exp, attn, alpha,
         denominator_i, tp_w, v_j, mv, norm2, up, s_up0, s_gate, f_in) = saved_blocks[layer]  # fmt: skip
        offset = c + 2 * c * layer
        # feed-forward
        g_gated = block.down.backward(g_x)
        g_up = torch.empty_like(up)
        torch.mul(g_gated[:, 0], _silu_grad(up[:, 0], s_up0), out=g_up[:, 0])
        if d > 1:
            torch.mul(g_gated[:, 1:], s_gate.unsqueeze(1), out=g_up[:, 1:])
            g_gate = (g_gated[:, 1:] * up[:, 1:]).sum(1).mul_(s_gate * (1.0 - s_gate))
        g_f = block.up.backward(g_up)
        if d > 1:
            g_f[:, 0].add_(g_gate @ block.gates[0])
        g_x = g_x + block.norm_ffn.backward(g_f, norm2)
        # attention
        g_values = block.proj.backward(g_x).index_select(0, i)  # [E, d, C]
        g_tp_w = (g_values * mv).sum(1)  # [E, C]
        g_mv = g_values.mul_(tp_w.unsqueeze(1))
        g_m = torch.bmm(v_j, g_mv.transpose(1, 2))  # [E, i, k]
        g_sh.addmm_(g_m.view(n_edges, d * d), weights.t_j.t())
        g_v = _zeros((n_atoms, d, c), x).index_add_(0, j, torch.bmm(m, g_mv))
        g_a = block.value.backward(g_v)
        g_tp = g_tp_w.view(n_edges, heads, head_dim)
        torch.mul(g_tp, alpha.unsqueeze(-1), out=g_radial[:, offset + c : offset + 2 * c].view(
            n_edges, heads, head_dim))  # fmt: skip
        g_alpha = (g_tp * tp_weights.view(n_edges, heads, head_dim)).sum(-1)  # [E, H]
        g_sum = _zeros((n_atoms, heads), x).index_add_(0, i, g_alpha * alpha)
        g_attn = (g_alpha - g_sum.index_select(0, i)).div_(denominator_i)
        g_envelope.add_((g_attn * exp).sum(1))
        g_logits = (g_attn * attn).mul_(1.0 - tanh.square()).mul_(inv_sqrt_head)
        g_qk_e = (
            g_logits.unsqueeze(-1).expand(n_edges, heads, head_dim).reshape(n_edges, c)
        )
        torch.mul(g_qk_e, qk_e, out=g_radial[:, offset : offset + c])
        g_qk_e = g_qk_e * key_filter
        g_qk = _zeros((n_atoms, 2 * c), x)
        g_qk[:, :c].index_add_(0, i, g_qk_e * k_j)
        g_qk[:, c:].index_add_(0, j, g_qk_e * q_i)
        g_a[:, 0].add_(g_qk @ block.query_key)
        g_x = g_x + block.norm_attention.backward(g_a, norm1)
    # degree embedding
    g_messages = weights.degree_embedding.backward(g_x).index_select(0, i)  # [E, d, C]
    g_sh.add_(torch.bmm(g_messages, w0.unsqueeze(-1)).squeeze(-1))
    g_w0 = torch.bmm(sh.unsqueeze(1), g_messages).squeeze(1)
    torch.mul(g_w0, h_j, out=g_radial[:, :c])
    # radial MLP
    g_hidden = g_radial @ w_out
    g_envelope.add_((g_hidden * h2).sum(1))
    g_z2 = g_hidden.mul_(envelope.unsqueeze(-1)).mul_(_silu_grad(z2, s2))
    g_z1 = (g_z2 @ w2).mul_(_silu_grad(z1, s1))
    g_basis = g_z1 @ w1
    # d basis / dr = (prefactor * f cos(f r) - basis) / r
    d_basis = torch.cos(phase).mul_(freqs * prefactor).sub_(basis).mul_(inv_r.unsqueeze(-1))
    g_r = (g_basis * d_basis).sum(1) + g_envelope * d_envelope
    g_vectors = unit * g_r.unsqueeze(-1)
    if d > 1:  # sh = sqrt(3) r / |r|: d/dr = sqrt(3) (g - u (u . g)) / |r|
        g_unit = g_sh[:, 1:]
        radial_part = (g_unit * unit).sum(1, keepdim=True)
        g_vectors.add_(g_unit.sub(unit * radial_part).mul_((math.sqrt(3.0) * inv_r).unsqueeze(-1)))
    forces = torch.zeros_like(positions)
    forces.index_add_(0, i, g_vectors)
    forces.index_add_(0, j, g_vectors, alpha=-1.0)
    out["forces"] = forces
    if compute_stress:
        virial = vectors.unsqueeze(-1) * g_vectors.unsqueeze(1)  # [E, 3, 3]
        grad_strain = _zeros((n_systems, 3, 3), virial).index_add_(0, system_idx[i], virial)
        volume = torch.linalg.det(cell).abs()
        safe = torch.where(volume > 1e-8, volume, torch.ones_like(volume))
        stress = grad_strain / safe.view(-1, 1, 1)
        out["stress"] = torch.where((volume > 1e-8).view(-1, 1, 1), stress, 0.0)
    return out
