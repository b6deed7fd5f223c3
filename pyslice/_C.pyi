"""Types of the compiled module pyslice._C (csrc/; built by CMakeLists.txt).

Import it through pyslice._compiled and call it through pyslice._native, which builds the
``Tensor`` views. Every op has ``<op>_cpu(...)`` and ``<op>_cuda(..., stream)``: the same arguments
in the same order, plus the CUDA stream as an int. Arguments are checked in C++ (csrc/bindings.h)
and a bad one raises TypeError or ValueError naming it.
"""

from collections.abc import Sequence

__version__: str

# The order in which energy_* take the tables (pyslice.energy.EnergyTables' tensor fields).
ENERGY_TABLES: tuple[str, ...]

class Tensor:
    """A view of a tensor's memory: address, shape and strides (elements), dtype, device."""

    def __init__(
        self,
        data: int,
        shape: tuple[int, ...],
        strides: tuple[int, ...],
        dtype: str,
        device: str,
        device_index: int | None = None,
    ) -> None: ...
    @property
    def data(self) -> int: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def strides(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def device_index(self) -> int | None: ...

def build_info() -> dict[str, object]: ...
def cuda_compiled() -> bool: ...
def num_threads() -> int: ...
def cuda_device_count() -> int: ...
def workspace_size(op: str, device: str, shape: tuple[int, ...]) -> int: ...
def philox4x32_10(
    c0: int, c1: int, c2: int, c3: int, k0: int, k1: int
) -> tuple[int, int, int, int]: ...

# von Mises mixture sampling: table (6, rows, K) float32 -> out (n,) float32.
def sample_mixture_cpu(
    table: Tensor, out: Tensor, seed: int, offset: int, base: int, pi_periodic: bool
) -> None: ...
def sample_mixture_cuda(
    table: Tensor, out: Tensor, seed: int, offset: int, base: int, pi_periodic: bool, stream: int
) -> None: ...

# Fused Metropolis-Hastings step, in place on the state (chi, energy, log_weight, latent,
# accepted_count); accepted (B,) bool is written for every chain.
def metropolis_step_cpu(
    chi: Tensor,
    chi_new: Tensor,
    energy: Tensor,
    energy_new: Tensor,
    log_weight: Tensor,
    log_weight_new: Tensor,
    latent: Tensor,
    latent_new: Tensor,
    accepted_count: Tensor,
    accepted: Tensor,
    beta: Tensor,
    seed: int,
    step: int,
    chain_offset: int,
) -> None: ...
def metropolis_step_cuda(
    chi: Tensor,
    chi_new: Tensor,
    energy: Tensor,
    energy_new: Tensor,
    log_weight: Tensor,
    log_weight_new: Tensor,
    latent: Tensor,
    latent_new: Tensor,
    accepted_count: Tensor,
    accepted: Tensor,
    beta: Tensor,
    seed: int,
    step: int,
    chain_offset: int,
    stream: int,
) -> None: ...

# Side-chain building: out (B, N, 3) from positions (N, 3) and chi (B, n_chi); level_start is a
# CPU tensor on every device.
def build_sidechains_cpu(
    positions: Tensor,
    chi: Tensor,
    chi_ref: Tensor,
    axis: Tensor,
    move_atom: Tensor,
    move_chi: Tensor,
    level_start: Tensor,
    out: Tensor,
) -> None: ...
def build_sidechains_cuda(
    positions: Tensor,
    chi: Tensor,
    chi_ref: Tensor,
    axis: Tensor,
    move_atom: Tensor,
    move_chi: Tensor,
    level_start: Tensor,
    out: Tensor,
    stream: int,
) -> None: ...

# Force-field energy: out (B, 5) float64 per term; workspace: workspace_size(op, device, shape)
# bytes of uint8.
def energy_cpu(
    tables: Sequence[Tensor],
    positions: Tensor,
    out: Tensor,
    workspace: Tensor,
    cutoff: float,
    krf: float,
    crf: float,
) -> None: ...
def energy_cuda(
    tables: Sequence[Tensor],
    positions: Tensor,
    out: Tensor,
    workspace: Tensor,
    cutoff: float,
    krf: float,
    crf: float,
    stream: int,
) -> None: ...
def energy_delta_cpu(
    tables: Sequence[Tensor],
    positions: Tensor,
    new_positions: Tensor,
    moved: Tensor,
    out: Tensor,
    workspace: Tensor,
    cutoff: float,
    krf: float,
    crf: float,
) -> None: ...
def energy_delta_cuda(
    tables: Sequence[Tensor],
    positions: Tensor,
    new_positions: Tensor,
    moved: Tensor,
    out: Tensor,
    workspace: Tensor,
    cutoff: float,
    krf: float,
    crf: float,
    stream: int,
) -> None: ...
