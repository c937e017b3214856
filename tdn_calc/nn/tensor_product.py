"""Path-weight-shared tensor products of node features with edge spherical harmonics.

All backends compute, per edge ``e`` and channel ``c``::

    out[e, k, c] = w[e, c] * sum_ij T[i, j, k] x[e, i, c] y[e, j]

with ``T`` the normalised, parity-respecting CG tensor of :func:`~tdn_calc.nn.cg.cg_tensor`
(one weight per channel shared by every path ``l1 x l2 -> l3``, TDN's "uvu" sharing).

* ``exact``: build ``M(y) = sum_j T[:, j, :] y_j`` (``[E, d, d]``, no channel axis), then
  ``out = w * (M^T x)``: ``~d^3 + 2 d^2 C`` flops per edge, exactly equivariant.
* ``cp``: TDN's CP decomposition ``T ~ sum_r A[:, r] B[:, r] C[:, r]``. Two contraction
  orders give the same numbers: "factor" (``C ((A^T x) * (B^T y))``, ``~4 d r C``) and
  "matrix" (``M = A diag(B^T y) C^T`` then ``M^T x``, ``~2 d^2 r + 2 d^2 C``); the cheaper
  one for the given ``C`` is used. Approximately equivariant (error = the fit error).
* ``e3nn``: e3nn's ``TensorProduct`` with the same paths, path weights and shared
  per-channel weights; the reference for tests and benchmarks.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from .cg import cg_tensor, path_weight
from .cp_fit import fit_cg_cp
from .irreps import allowed_paths, from_e3nn_layout, irreps_string, num_components, to_e3nn_layout


class SharedPathTensorProduct(nn.Module):
    """Interface: ``forward(x [E, d, C], y [E, d], w [E, C]) -> [E, d, C]``.

    Constant tensors (CG tensor, CP factors) are float64 buffers that stay float64 when
    the module is cast (``.float()``, ``.to(dtype)``) and are cast to the input's dtype
    at use, so a float64 model is exact to float64 precision whatever dtype it was
    built in.
    """

    def __init__(self, lmax: int, channels: int) -> None:
        super().__init__()
        self.lmax = lmax
        self.channels = channels
        self.dim = num_components(lmax)
        self._constants: list[str] = []

    def register_constant(self, name: str, value: torch.Tensor) -> None:
        """Register a float64 buffer that module casts leave in float64."""
        self.register_buffer(name, value.to(torch.float64).contiguous())
        self._constants.append(name)

    def _apply(self, fn, recurse=True):
        masters = {name: getattr(self, name) for name in self._constants}
        super()._apply(fn, recurse)
        for name, master in masters.items():
            moved = getattr(self, name)
            setattr(self, name, master.to(device=moved.device))
        self.__dict__.pop("_cast_cache", None)
        return self

    def constant(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The constant ``name`` in ``like``'s dtype (the cast is cached: one copy per dtype,
        dropped when the module moves)."""
        master = getattr(self, name)
        if master.dtype == like.dtype:
            return master
        cache = self.__dict__.setdefault("_cast_cache", {})
        key = (name, like.dtype)
        cast = cache.get(key)
        if cast is None or cast.device != master.device:
            cast = cache[key] = master.to(like.dtype)
        return cast

    def flops_per_edge(self) -> int:
        """Multiply-adds x2 per edge for the forward pass (for benchmark reports)."""
        raise NotImplementedError


def _apply_matrix(
    m: torch.Tensor, x: torch.Tensor, w: torch.Tensor, training: bool
) -> torch.Tensor:
    """``out[e, k, c] = w[e, c] sum_i m[e, i, k] x[e, i, c]``; ``m [E, d, d]``, ``x [E, d, C]``.

    In training mode with autograd on, plain differentiable operations: a force loss
    differentiates the product twice, and their graph is the leaner one for that. Otherwise
    (inference, forces by one backward) the allocation-saving :class:`_ApplyMatrix`; under
    ``torch.compile`` the plain operations too, which the compiler fuses itself.
    """
    if (training and torch.is_grad_enabled()) or torch.compiler.is_compiling():
        return torch.bmm(m.transpose(1, 2), x) * w.unsqueeze(1)
    return _ApplyMatrix.apply(m, x, w)


class _ApplyMatrix(torch.autograd.Function):
    """``w * (M^T x)`` with as few ``[E, d, C]`` temporaries as possible.

    Each fresh ``[E, d, C]`` tensor costs about as much as the product itself on a CPU
    (memory traffic and page faults), so the forward scales the ``bmm`` result in place
    (one allocation instead of two) and the first-order backward computes ``h = M g`` once,
    reduces ``grad_w = sum_i h x`` without a temporary and scales ``h`` in place into
    ``grad_x`` (one allocation instead of three, nothing extra saved).
    Under ``create_graph=True`` the backward uses out-of-place differentiable operations,
    so second derivatives (force training) work.
    """

    @staticmethod
    def forward(ctx, m: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(m, x, w)
        return torch.bmm(m.transpose(1, 2), x).mul_(w.unsqueeze(1))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        m, x, w = ctx.saved_tensors
        need_m, need_x, need_w = ctx.needs_input_grad
        w3 = w.unsqueeze(1)
        grad_m = grad_x = grad_w = None
        if need_m:  # grad_m[e, i, k] = sum_c x[e, i, c] w[e, c] g[e, k, c]
            grad_m = torch.bmm(x, (grad * w3).transpose(1, 2))
        if need_x or need_w:
            h = torch.bmm(m, grad)  # [E, i, C]
            if torch.is_grad_enabled():  # double backward: keep the graph intact
                grad_x = h * w3 if need_x else None
                grad_w = (h * x).sum(1) if need_w else None
            else:
                grad_w = _sum_of_products(h, x) if need_w else None
                grad_x = h.mul_(w3) if need_x else None
        return grad_m, grad_x, grad_w


def _sum_of_products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_i a[:, i, :] * b[:, i, :]`` (``[E, d, C] -> [E, C]``) without an ``[E, d, C]``
    temporary: ``d`` fused multiply-adds into one ``[E, C]`` accumulator. Below 2^22
    elements (16 MB in float32) a temporary is cheap and the Python loop would dominate,
    so there it is one product and a sum."""
    if a.numel() < 2**22:
        return (a * b).sum(1)
    out = a[:, 0] * b[:, 0]
    for i in range(1, a.shape[1]):
        out.addcmul_(a[:, i], b[:, i])
    return out


class ExactTensorProduct(SharedPathTensorProduct):
    """Exact CG product through the per-edge matrix ``M(y)`` (see module docstring)."""

    def __init__(self, lmax: int, channels: int) -> None:
        super().__init__(lmax, channels)
        d = self.dim
        # t_j[j, i*d + k] = T[i, j, k]
        self.register_constant("t_j", cg_tensor(lmax).permute(1, 0, 2).reshape(d, d * d))

    def forward(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        m = (y @ self.constant("t_j", y)).view(-1, self.dim, self.dim)  # [E, i, k]
        return _apply_matrix(m, x, w, self.training)

    def flops_per_edge(self) -> int:
        d, c = self.dim, self.channels
        return 2 * d**3 + 2 * d * d * c + d * c


class CPTensorProduct(SharedPathTensorProduct):
    """CP-decomposed product with factors fitted once by ALS (frozen buffers).

    The "matrix" order builds ``M = A diag(B^T y) C^T`` as one GEMM ``(B^T y) K`` with
    ``K[r, i*d + k] = A[i, r] C[k, r]`` (``2 d r + 2 r d^2`` flops per edge), then applies
    it like the exact product.
    """

    def __init__(self, lmax: int, channels: int, rank: int, order: str = "auto") -> None:
        super().__init__(lmax, channels)
        fit = fit_cg_cp(lmax, rank)
        self.rank = rank
        self.fit_error = fit.relative_error
        for name in ("a", "b", "c"):
            self.register_constant(name, torch.from_numpy(getattr(fit, name)))
        a, c = self.a, self.c
        self.register_constant("k", (a.T.unsqueeze(2) * c.T.unsqueeze(1)).reshape(rank, -1))
        if order == "auto":
            order = "matrix" if self._flops("matrix") <= self._flops("factor") else "factor"
        if order not in ("matrix", "factor"):
            raise ValueError(f"order must be 'auto', 'matrix' or 'factor', got {order!r}")
        self.order = order

    def _flops(self, order: str) -> int:
        d, r, c = self.dim, self.rank, self.channels
        if order == "matrix":
            return 2 * d * r + 2 * d * d * r + 2 * d * d * c + d * c
        return 2 * d * r + 4 * d * r * c + r * c + d * c

    def flops_per_edge(self) -> int:
        return self._flops(self.order)

    def forward(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        yb = y @ self.constant("b", x)  # [E, r]
        if self.order == "matrix":
            m = (yb @ self.constant("k", x)).view(-1, self.dim, self.dim)  # [E, i, k]
            return _apply_matrix(m, x, w, self.training)
        a, c = self.constant("a", x), self.constant("c", x)
        if (self.training and torch.is_grad_enabled()) or torch.compiler.is_compiling():
            xa = torch.matmul(a.T, x) * yb.unsqueeze(-1)  # [E, r, C]
            return torch.matmul(c, xa) * w.unsqueeze(1)
        return _FactorProduct.apply(x, yb, w, a, c)


class _FactorProduct(torch.autograd.Function):
    """CP factor order ``out = w * (C diag(yb) (A^T x))`` with few ``[E, r, C]`` temporaries.

    ``x [E, d, C]``, ``yb = B^T y [E, r]``, ``w [E, C]``, constant factors ``a, c [d, r]``.
    The per-edge ``C diag(yb)`` (``[E, d, r]``, small) replaces a scaling pass over
    ``[E, r, C]``; the backward reuses ``s = C^T g`` in place.
    """

    @staticmethod
    def forward(ctx, x, yb, w, a, c):
        xa = torch.matmul(a.T, x)  # [E, r, C]
        cy = c * yb.unsqueeze(1)  # [E, d, r]
        ctx.save_for_backward(x, xa, yb, w, a, c)
        return torch.bmm(cy, xa).mul_(w.unsqueeze(1))

    @staticmethod
    def backward(ctx, grad):
        x, xa, yb, w, a, c = ctx.saved_tensors
        need_x, need_yb, need_w = ctx.needs_input_grad[:3]
        s = torch.matmul(c.T, grad)  # [E, r, C]
        w3, yb3 = w.unsqueeze(1), yb.unsqueeze(-1)
        grad_x = grad_yb = grad_w = None
        if torch.is_grad_enabled():  # double backward: out-of-place, differentiable in x
            xa = torch.matmul(a.T, x)
            sw = s * w3
            grad_w = (s * xa * yb3).sum(1) if need_w else None
            grad_yb = (sw * xa).sum(2) if need_yb else None
            grad_x = torch.matmul(a, sw * yb3) if need_x else None
            return grad_x, grad_yb, grad_w, None, None
        if need_yb:
            t = s * xa  # [E, r, C]
            grad_yb = torch.bmm(t, w.unsqueeze(-1)).squeeze(-1)
            grad_w = torch.bmm(yb.unsqueeze(1), t).squeeze(1) if need_w else None
            s.mul_(yb3)
        else:
            s.mul_(yb3)
            grad_w = _sum_of_products(s, xa) if need_w else None
        grad_x = torch.matmul(a, s.mul_(w3)) if need_x else None
        return grad_x, grad_yb, grad_w, None, None


class E3nnTensorProduct(SharedPathTensorProduct):
    """e3nn's ``TensorProduct`` with the same paths and shared per-channel weights.

    e3nn keeps its Wigner-3j buffers in the default dtype at construction: build under
    ``torch.set_default_dtype(torch.float64)`` for float64-exact reference numbers.
    """

    def __init__(self, lmax: int, channels: int) -> None:
        super().__init__(lmax, channels)
        paths = allowed_paths(lmax)
        fan_in = {l3: sum(1 for p in paths if p[2] == l3) for l3 in range(lmax + 1)}
        self.n_paths = len(paths)
        self.tp = o3.TensorProduct(
            irreps_string(lmax, channels),
            irreps_string(lmax, 1),
            irreps_string(lmax, channels),
            # e3nn multiplies each path by the square root of the factor given here
            [(l1, l2, l3, "uvu", True, path_weight(l3, fan_in[l3]) ** 2) for l1, l2, l3 in paths],
            irrep_normalization="none",
            path_normalization="none",
            internal_weights=False,
            shared_weights=False,
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        weights = w.unsqueeze(1).expand(n, self.n_paths, self.channels).reshape(n, -1)
        out = self.tp(to_e3nn_layout(x, self.lmax), y, weights)
        return from_e3nn_layout(out, self.lmax, self.channels)

    def flops_per_edge(self) -> int:
        total = 0
        for l1, l2, l3 in allowed_paths(self.lmax):
            total += 2 * (2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) * self.channels
        return total


def make_tensor_product(
    backend: str, lmax: int, channels: int, rank: int | None = None
) -> SharedPathTensorProduct:
    """Build the tensor product ``backend`` (``"exact"``, ``"cp"`` or ``"e3nn"``)."""
    if backend == "exact":
        return ExactTensorProduct(lmax, channels)
    if backend == "cp":
        return CPTensorProduct(lmax, channels, rank if rank is not None else max(1, 7 * lmax**2))
    if backend == "e3nn":
        return E3nnTensorProduct(lmax, channels)
    raise ValueError(f"unknown tensor-product backend {backend!r}; use 'exact', 'cp' or 'e3nn'")
