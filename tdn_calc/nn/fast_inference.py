"""Inference-only energy, forces and stress of a :class:`~tdn_calc.nn.model.TDNModel` with a
hand-written backward pass.

On small structures a TDN call is dominated by per-operation overhead, not arithmetic:
the autograd forward records ~250 nodes and the backward engine runs them one by one. Here
the forward runs without autograd and keeps the few intermediates the backward needs; the
backward (``dE/d positions`` and ``dE/d strain``) is written out block by block (energy
head, layer norms, gated feed-forward, attention with its sink softmax and tensor
product, degree embedding, radial MLP, envelope, spherical harmonics) on component-major
``[d, n, C]`` features, with the ``lmax <= 1`` CG product in closed form. The numbers
equal autograd's to round-off (tests compare them in float64), so
:meth:`TDNModel.forward` uses this path for inference whenever it applies
(:func:`supports`): exact tensor product, ``lmax <= 1`` (the shipped models).
Weights are re-laid out once per parameter version (per-component matrices, query and key
in one matrix, the neighbour-sum normalisation, the logit scale and the CG constants folded
into the matrices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from ..atomic_graph import AtomicGraph
from .attention import _LOGIT_BOUND
from .cg import cg_tensor
from .irreps import num_components
from .tensor_product import ExactTensorProduct


def supports(model: nn.Module) -> bool:
    """Whether :func:`energy_forces` computes ``model``'s outputs: ``lmax <= 1`` and the
    exact tensor product, whose CG tensor then has the four-constant form of
    :func:`_cg_constants` (the spherical harmonics have a closed form, too)."""
    return (
        model.config.lmax <= 1
        and all(isinstance(block.attention.tp, ExactTensorProduct) for block in model.blocks)
        and _cg_constants(model.config.lmax) is not None
        and not torch.compiler.is_compiling()
    )


@lru_cache(maxsize=2)
def _cg_constants(lmax: int) -> tuple[float, float, float, float] | None:
    """``(c000, c011, c101, c110)`` with ``T[0,0,0] = c000``, ``T[0,k,k] = c011``,
    ``T[k,0,k] = c101``, ``T[k,k,0] = c110`` (``k = 1..3``) and every other entry zero: the
    CG tensor of ``lmax <= 1`` (paths 0x0->0, 0x1->1, 1x0->1, 1x1->0), so the product is
    a few whole-array operations instead of per-edge ``4 x 4`` matrices. ``None`` if
    :func:`~tdn_calc.nn.cg.cg_tensor` is not of that form."""
    tensor = cg_tensor(lmax)
    if lmax == 0:
        return (float(tensor[0, 0, 0]), 0.0, 0.0, 0.0)
    values = tuple(
        float(v) for v in (tensor[0, 0, 0], tensor[0, 1, 1], tensor[1, 0, 1], tensor[1, 1, 0])
    )
    rebuilt = torch.zeros_like(tensor)
    rebuilt[0, 0, 0] = values[0]
    for k in range(1, 4):
        rebuilt[0, k, k], rebuilt[k, 0, k], rebuilt[k, k, 0] = values[1:]
    return values if torch.allclose(rebuilt, tensor, rtol=0.0, atol=1e-14) else None


@dataclass(frozen=True)
class _Linear:
    """A ``DegreeLinear`` on component-major features ``[d, n, C_in] -> [d, n, C_out]``:
    per-component matrices ``[d, C_in, C_out]``, their transposes, the ``[d, 1, C_out]``
    bias row (bias on scalars)."""

    weight: torch.Tensor
    weight_t: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def of(cls, module: nn.Module, scale: torch.Tensor | None = None, input_scale: float = 1.0
           ) -> _Linear:  # fmt: skip
        """``module`` with its output scaled by ``scale`` (one number per component) and
        its input by ``input_scale``."""
        weight = module.weight[module.degree] * input_scale
        bias = module.scalar_row * module.bias
        if scale is not None:
            scale = scale.to(weight).reshape(-1, 1, 1)
            weight, bias = weight * scale, bias * scale
        weight = weight.contiguous()
        return cls(weight, weight.transpose(1, 2).contiguous(), bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def backward(self, grad: torch.Tensor) -> torch.Tensor:
        return torch.bmm(grad, self.weight_t)


@dataclass(frozen=True)
class _Norm:
    """A ``DegreeLayerNorm`` on ``[d, n, C]``: gain ``[d, 1, C]`` per component, bias row,
    ``[d, d]`` average over each degree's components (and channels)."""

    gain: torch.Tensor
    bias: torch.Tensor
    average: torch.Tensor
    eps: float

    @classmethod
    def of(cls, module: nn.Module) -> _Norm:
        average = (module.same_degree / module.count).t().contiguous()  # [d_out, d_in]
        bias = (module.scalar_row * module.bias).unsqueeze(1)
        return cls(module.gain[module.degree].unsqueeze(1), bias, average, module.eps)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        centred = x.clone()
        centred[0].sub_(x[0].mean(dim=1, keepdim=True))
        scale = (self.average @ centred.square().sum(dim=2)).add_(self.eps).rsqrt_()
        normed = centred.mul_(scale.unsqueeze(-1))
        return torch.addcmul(self.bias, normed, self.gain), (normed, scale)

    def backward(self, grad: torch.Tensor, saved: tuple[torch.Tensor, ...]) -> torch.Tensor:
        normed, scale = saved
        g = grad * self.gain
        dot = self.average @ (g * normed).sum(dim=2)  # [d, n]
        g = g.sub_(normed * dot.unsqueeze(-1)).mul_(scale.unsqueeze(-1))
        g[0].sub_(g[0].mean(dim=1, keepdim=True))
        return g


@dataclass(frozen=True)
class _Block:
    norm_attention: _Norm
    query_key: torch.Tensor  # [2C, C]: query (times the logit scale) and key in one matrix
    value: _Linear  # times (c000, c101, c101, c101): the product's constants folded in
    proj: _Linear
    norm_ffn: _Norm
    up: _Linear
    gates: tuple[torch.Tensor, torch.Tensor] | None
    down: _Linear


@dataclass(frozen=True)
class _Weights:
    """The model's parameters laid out for :func:`energy_forces` (one version of them)."""

    radial: tuple[torch.Tensor, ...]
    embedding: torch.Tensor
    degree_embedding: _Linear
    blocks: tuple[_Block, ...]
    norm_out: _Norm
    head: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _weights(model: nn.Module) -> _Weights:
    """:class:`_Weights` of ``model``, rebuilt when a parameter, the dtype or the device
    changed since the last call (cached on the model)."""
    cached = model.__dict__.get("_fast_weights")
    if cached is not None and _unchanged(*cached[0]):
        return cached[1]
    with torch.no_grad():
        weights = _layout(model)
    modules = tuple((parent._modules, name, child) for parent in model.modules()
                    for name, child in parent._modules.items())  # fmt: skip
    slots = [(module._parameters, name, p) for module in model.modules()
             for name, p in module._parameters.items()]  # fmt: skip
    params = tuple((owner, name, p, p._version, p.dtype, p.device)
                   for owner, name, p in slots if p is not None)  # fmt: skip
    modules += tuple((owner, name, None) for owner, name, p in slots if p is None)
    model.__dict__["_fast_weights"] = ((modules, params), weights)
    return weights


def _unchanged(modules: tuple, params: tuple) -> bool:
    """Whether no submodule or parameter was replaced, updated in place or moved since
    ``modules``/``params`` were recorded (identity lookups instead of walking the model;
    ``modules`` also holds the parameters that were ``None``)."""
    return all(owner.get(name) is child for owner, name, child in modules) and all(
        owner.get(name) is p and p._version == version and p.dtype == dtype and p.device == device
        for owner, name, p, version, dtype, device in params
    )


def _layout(model: nn.Module) -> _Weights:
    c000, _, c101, _ = _cg_constants(model.config.lmax)
    value_scale = torch.tensor(
        [c000, c101, c101, c101][: num_components(model.config.lmax)], dtype=torch.float64
    )
    # logits / LOGIT_BOUND = (q * k * filter summed over a head) / (sqrt(head_dim) LOGIT_BOUND)
    logit_scale = 1.0 / (math.sqrt(model.config.channels // model.config.num_heads) * _LOGIT_BOUND)
    blocks = []
    for block in model.blocks:
        attention, ffn = block.attention, block.ffn
        gates = ffn.up.gates
        blocks.append(
            _Block(
                _Norm.of(block.norm_attention),
                torch.cat([attention.query.weight * logit_scale, attention.key.weight]),
                _Linear.of(attention.value, value_scale),
                _Linear.of(attention.proj),
                _Norm.of(block.norm_ffn),
                _Linear.of(ffn.up.linear),
                None if gates is None else (gates.weight, gates.bias),
                _Linear.of(ffn.down),
            )
        )
    radial = model.radial
    first, second = radial.mlp[0], radial.mlp[2]
    head_in, head_out = model.head[0], model.head[2]
    return _Weights(
        radial=(
            radial.basis.freqs.to(first.weight.dtype),
            first.weight,
            first.bias,
            second.weight,
            second.bias,
            radial.out.weight,
        ),
        embedding=model.embedding.weight,
        degree_embedding=_Linear.of(
            model.degree_embedding.linear, input_scale=model.degree_embedding.norm
        ),
        blocks=tuple(blocks),
        norm_out=_Norm.of(model.norm_out),
        head=(head_in.weight, head_in.bias, head_out.weight[0], head_out.bias),
    )


def _silu_grad(z: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
    """``d silu(z) / dz`` from ``z`` and ``sigmoid(z)``."""
    return sig * (1.0 + z * torch.rsub(sig, 1.0))  # rsub: 1.0 - sig without Tensor.__rsub__


class _Graph:
    """Gathers and scatters of component-major ``[d, n, C]`` features along edges: the
    ``[d * E]`` flat indices ``k * n + i`` turn both into one row operation on ``[d * n, C]``."""

    def __init__(self, centre: torch.Tensor, neighbour: torch.Tensor, n_atoms: int, d: int):
        self.n_atoms, self.d = n_atoms, d
        offsets = torch.arange(0, d * n_atoms, n_atoms, device=centre.device).unsqueeze(1)
        self.centre = (offsets + centre).view(-1)
        self.neighbour = (offsets + neighbour).view(-1)

    def gather(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``x [d, n, C]`` at ``index`` (``self.centre``/``self.neighbour``): ``[d, E, C]``."""
        return x.view(-1, x.shape[-1]).index_select(0, index).view(self.d, -1, x.shape[-1])

    def scatter(self, values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Sum of ``values [d, E, C]`` over edges into ``[d, n, C]`` at ``index``."""
        c = values.shape[-1]
        out = torch.zeros((self.d * self.n_atoms, c), dtype=values.dtype, device=values.device)
        return out.index_add_(0, index, values.view(-1, c)).view(self.d, self.n_atoms, c)


def _zeros(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(shape, dtype=like.dtype, device=like.device)


@torch.no_grad()
def energy_forces(
    model: nn.Module,
    graph: AtomicGraph,
    species: torch.Tensor,
    compute_stress: bool,
    return_features: bool,
) -> dict[str, torch.Tensor]:
    """``model``'s energy, forces (and stress) of ``graph`` as :meth:`TDNModel.forward`
    returns them with ``training=False``, without autograd; ``species``: the atoms' index
    into the model's elements. Features are component-major ``[d, n, C]`` here (contiguous
    gathers and per-component products). The stress is ``dE/d strain / V`` (zero for a
    cell without volume) from the virial ``sum_e r_e (x) dE/dr_e`` over edges."""
    positions, cell = graph.positions.detach(), graph.cell.detach()
    edge_index, shifts, system_idx = graph.edge_index, graph.shifts, graph.system_idx
    n_systems, periodic = graph.n_systems, bool(graph.pbc.any())
    weights = _weights(model)
    config = model.config
    c, heads = config.channels, config.num_heads
    head_dim = c // heads
    n_atoms = positions.shape[0]
    i, j = edge_index[0], edge_index[1]
    n_edges = i.shape[0]
    d = 1 if config.lmax == 0 else 4
    edges = _Graph(i, j, n_atoms, d)
    c000, c011, c101, c110 = _cg_constants(config.lmax)
    # with the value scaled by (c000, c101, c101, c101): mv_0 = v_0 + sum_k ya_k v_k and
    # mv_k = v_k + yb_k v_0 is the CG product of v with (1, y)
    ya_scale, yb_scale = (c110 / c101, c011 / c000) if d > 1 else (0.0, 0.0)

    # ---- forward -------------------------------------------------------------------------
    vectors = positions.index_select(0, j) - positions.index_select(0, i)
    if periodic:
        vectors = vectors + torch.einsum("ek,ekl->el", shifts, cell[system_idx[i]])
    distance = torch.linalg.vector_norm(vectors, dim=-1)
    inv_r = distance.reciprocal()
    unit_t = (vectors * inv_r.unsqueeze(-1)).t()  # [3, E]
    y = unit_t * math.sqrt(3.0)  # l = 1 spherical harmonics (the l = 0 one is 1)
    # polynomial envelope and its derivative
    cutoff, p = model.cutoff, config.envelope_exponent
    a, b, cc = (p + 1) * (p + 2) / 2, p * (p + 2), p * (p + 1) / 2
    inside = distance < cutoff
    xr = (distance / cutoff).clamp(max=1.0)
    poly = xr * torch.rsub(cc * xr, b) - a
    xp1 = xr.pow(p - 1)
    envelope = torch.where(inside, 1.0 + xp1 * xr * poly, 0.0)
    d_poly = p * poly + xr * torch.rsub(2 * cc * xr, b)
    d_envelope = torch.where(inside, xp1 * d_poly / cutoff, 0.0)
    # radial MLP
    freqs, w1, b1, w2, b2, w_out = weights.radial
    prefactor = model.radial.basis.prefactor
    phase = distance.unsqueeze(-1) * freqs
    basis = torch.sin(phase).mul_(inv_r.unsqueeze(-1) * prefactor)
    z1 = torch.addmm(b1, basis, w1.t())
    s1 = torch.sigmoid(z1)
    z2 = torch.addmm(b2, z1 * s1, w2.t())
    s2 = torch.sigmoid(z2)
    h2 = z2 * s2
    radial = (h2 * envelope.unsqueeze(-1)) @ w_out.t()  # [E, C + layers * 2C]

    h = weights.embedding.index_select(0, species)
    h_j = h.index_select(0, j)
    w0 = radial[:, :c] * h_j
    messages = torch.empty((d, n_edges, c), dtype=h.dtype, device=h.device)
    messages[0] = w0
    if d > 1:
        torch.mul(y.unsqueeze(-1), w0, out=messages[1:])
    x = weights.degree_embedding(edges.scatter(messages, i_flat := edges.centre))
    x[0].add_(h)

    y3 = y.unsqueeze(-1)
    ya, yb = (y * ya_scale).unsqueeze(-1), (y * yb_scale).unsqueeze(-1)
    saved_blocks = []
    for layer, block in enumerate(weights.blocks):
        offset = c + 2 * c * layer
        key_filter, tp_weights = (
            radial[:, offset : offset + c],
            radial[:, offset + c : offset + 2 * c],
        )
        # attention: logits from the scalars, sink softmax, tensor product, sum
        a_in, norm1 = block.norm_attention(x)
        qk = a_in[0] @ block.query_key.t()
        q_i, k_j = qk[:, :c].index_select(0, i), qk[:, c:].index_select(0, j)
        qk_e = q_i * k_j
        tanh = torch.tanh((qk_e * key_filter).view(n_edges, heads, head_dim).sum(-1))
        exp = torch.exp(tanh * _LOGIT_BOUND)
        attn = exp * envelope.unsqueeze(-1)
        denominator = torch.ones((n_atoms, heads), dtype=x.dtype, device=x.device)
        denominator_i = denominator.index_add_(0, i, attn).index_select(0, i)
        alpha = attn.div(denominator_i).unsqueeze(-1)  # [E, H, 1]
        tp_w = (tp_weights.view(n_edges, heads, head_dim) * alpha).view(n_edges, c)
        v_j = edges.gather(block.value(a_in), edges.neighbour)  # [d, E, C]
        mv = torch.empty_like(v_j)  # the CG product of v_j with (1, y)
        mv[0] = v_j[0]
        for k in range(1, d):
            mv[0].addcmul_(ya[k - 1], v_j[k])
        if d > 1:
            torch.addcmul(v_j[1:], yb, v_j[0], out=mv[1:])
        x = x + block.proj(edges.scatter(mv * tp_w, i_flat))
        # gated feed-forward
        f_in, norm2 = block.norm_ffn(x)
        up = block.up(f_in)  # [d, n, mC]
        s_up0 = torch.sigmoid(up[0])
        gated = torch.empty_like(up)
        torch.mul(up[0], s_up0, out=gated[0])
        s_gate = None
        if d > 1:
            s_gate = torch.sigmoid(torch.addmm(block.gates[1], f_in[0], block.gates[0].t()))
            torch.mul(up[1:], s_gate, out=gated[1:])
        x = x + block.down(gated)
        saved_blocks.append(
            (norm1, qk_e, q_i, k_j, key_filter, tp_weights, tanh, exp, attn, alpha,
             denominator_i, tp_w, v_j, mv, norm2, up, s_up0, s_gate)
        )  # fmt: skip

    x_out, norm_out = weights.norm_out(x)
    head_w1, head_b1, head_w2, head_b2 = weights.head
    scalars = x_out[0]
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

    # ---- backward: dE/d(every intermediate), last layer first ----------------------------
    g_x = _zeros((d, n_atoms, c), x)
    torch.mm(_silu_grad(z, s_head).mul_(head_w2 * model.scale), head_w1, out=g_x[0])
    g_x = weights.norm_out.backward(g_x, norm_out)
    g_radial = [None] * (1 + 2 * len(weights.blocks))  # dE/d(radial), block by block
    g_y = _zeros((3, n_edges), vectors) if d > 1 else None
    g_envelope = _zeros((n_edges,), vectors)
    for layer in reversed(range(len(weights.blocks))):
        block = weights.blocks[layer]
        (norm1, qk_e, q_i, k_j, key_filter, tp_weights, tanh, exp, attn, alpha,
         denominator_i, tp_w, v_j, mv, norm2, up, s_up0, s_gate) = saved_blocks[layer]  # fmt: skip
        # gated feed-forward
        g_gated = block.down.backward(g_x)
        g_up = torch.empty_like(up)
        torch.mul(g_gated[0], _silu_grad(up[0], s_up0), out=g_up[0])
        if d > 1:
            torch.mul(g_gated[1:], s_gate, out=g_up[1:])
            g_gate = (g_gated[1:] * up[1:]).sum(0).mul_(s_gate * torch.rsub(s_gate, 1.0))
        g_f = block.up.backward(g_up)
        if d > 1:
            g_f[0].addmm_(g_gate, block.gates[0])
        g_x = g_x + block.norm_ffn.backward(g_f, norm2)
        # attention
        g_values = edges.gather(block.proj.backward(g_x), i_flat)  # [d, E, C]
        g_tp = (g_values * mv).sum(0).view(n_edges, heads, head_dim)
        g_mv = g_values.mul_(tp_w)
        g_v = torch.empty_like(g_mv)
        g_v[0] = g_mv[0]
        for k in range(1, d):
            g_v[0].addcmul_(yb[k - 1], g_mv[k])
        if d > 1:
            torch.addcmul(g_mv[1:], ya, g_mv[0], out=g_v[1:])
            g_y.add_((v_j[1:] * g_mv[0]).sum(2), alpha=ya_scale)
            g_y.add_((g_mv[1:] * v_j[0]).sum(2), alpha=yb_scale)
        g_a = block.value.backward(edges.scatter(g_v, edges.neighbour))
        g_radial[2 + 2 * layer] = (g_tp * alpha).view(n_edges, c)
        g_alpha = (g_tp * tp_weights.view(n_edges, heads, head_dim)).sum(-1)  # [E, H]
        g_sum = _zeros((n_atoms, heads), x).index_add_(0, i, g_alpha * alpha.squeeze(-1))
        g_attn = (g_alpha - g_sum.index_select(0, i)).div_(denominator_i)
        g_envelope.add_((g_attn * exp).sum(1))
        g_logits = (g_attn * attn).mul_(torch.rsub(tanh.square(), 1.0)).mul_(_LOGIT_BOUND)
        g_qk_e = g_logits.unsqueeze(-1).expand(n_edges, heads, head_dim).reshape(n_edges, c)
        g_radial[1 + 2 * layer] = g_qk_e * qk_e
        g_qk_e = g_qk_e * key_filter
        g_q = _zeros((n_atoms, c), x).index_add_(0, i, g_qk_e * k_j)  # contiguous: faster
        g_k = _zeros((n_atoms, c), x).index_add_(0, j, g_qk_e * q_i)
        g_a[0].addmm_(g_q, block.query_key[:c]).addmm_(g_k, block.query_key[c:])
        g_x = g_x + block.norm_attention.backward(g_a, norm1)
    # degree embedding
    g_messages = edges.gather(weights.degree_embedding.backward(g_x), i_flat)  # [d, E, C]
    g_w0 = g_messages[0]
    if d > 1:
        g_y.add_((g_messages[1:] * w0).sum(2))
        g_w0 = g_w0 + (g_messages[1:] * y3).sum(0)
    g_radial[0] = g_w0 * h_j
    # radial MLP, envelope, basis
    g_hidden = torch.cat(g_radial, dim=1) @ w_out
    g_envelope.add_((g_hidden * h2).sum(1))
    g_z2 = g_hidden.mul_(envelope.unsqueeze(-1)).mul_(_silu_grad(z2, s2))
    g_z1 = (g_z2 @ w2).mul_(_silu_grad(z1, s1))
    g_basis = g_z1 @ w1
    # d basis / dr = (prefactor * f cos(f r) - basis) / r
    d_basis = torch.cos(phase).mul_(freqs * prefactor).sub_(basis).mul_(inv_r.unsqueeze(-1))
    g_r = (g_basis * d_basis).sum(1).add_(g_envelope * d_envelope)
    g_vectors_t = unit_t * g_r  # [3, E]
    if d > 1:  # y = sqrt(3) r / |r|: dE/dr = sqrt(3) (g - u (u . g)) / |r|
        radial_part = (g_y * unit_t).sum(0)
        g_vectors_t.add_(g_y.sub_(unit_t * radial_part).mul_(math.sqrt(3.0) * inv_r))
    g_vectors = g_vectors_t.t()
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
