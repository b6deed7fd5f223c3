"""Implicit-solvent (generalized Born) parameters read from the CustomGBForce of an OpenMM System.

OpenMM builds amber's GB models as a ``CustomGBForce`` (openmm/app/internal/customgbforces.py):
``ForceField("amber14-all.xml", "implicit/gbn2.xml")`` gives GBn2 (amber igb=8),
``"implicit/obc2.xml"`` OBC2 (igb=5); ``"implicit/gbn.xml"`` (igb=7) and ``"implicit/obc1.xml"``
(igb=2) have the same structure and are read too. :func:`implicit_tables_from_system` reads
everything from the force itself: the per-particle parameters, the neck tables (``getd0``,
``getm0``) and every constant, taken out of the expression strings. Each expression is compared,
token by token, with the forms that pyslice evaluates (numbers may differ; anything else may not):
a force with any other expression, parameter, tabulated function or global parameter is a
ValueError naming the difference, never a silently different energy.

The maths (r = |x_i - x_j| nm; or_i, sr_i the offset and scaled radii; rho_i = or_i + offset):

- descreening integral, every ordered pair i != j (no exclusions), r < cutoff when there is one:
  I_i = sum_j [HCT(r; or_i, sr_j) + neckScale * Neck(r; i, j)], with
  HCT = 0.5 (1/L - 1/U + (r - sr_j^2/r)(1/U^2 - 1/L^2)/4 + log(L/U)/(2r)) where r + sr_j >= or_i,
  else 0; U = r + sr_j, L = max(or_i, |r - sr_j|);
  Neck = m0[k_i, k_j] / (1 + 100 (r - d0[k_i, k_j])^2 + 3e5 (r - d0[k_i, k_j])^6) where
  r <= rho_i + rho_j + neckCut, else 0 (k = radindex; GBn and GBn2 only);
- Born radius: psi = I or, B = 1 / (1/or - tanh(alpha psi - beta psi^2 + gamma psi^3) / rho)
  (GBn2: per-atom alpha, beta, gamma; OBC2: 1, 0.8, 4.85; OBC1: 0.8, 0, 2.909125; GBn: constants);
- polar energy, K the expression's Coulomb constant (138.935485), D(x) = 1/eps_solute -
  exp(-kappa x)/eps_solvent (kappa = 0 without salt):
  self_i = -K/2 D(B_i) q_i^2 / B_i, pair (i < j, r < cutoff) = -K D(f) q_i q_j (1/f - shift),
  f = sqrt(r^2 + B_i B_j exp(-r^2 / (4 B_i B_j))), shift = 1/cutoff with a cutoff, else 0;
- nonpolar (ACE) energy: sum_i tension (rho_i + probe)^2 (rho_i / B_i)^6 (absent with SA=None).

OpenMM's script in implicit/*.xml also sets the NonbondedForce's reaction-field dielectric to 1
(with a cutoff its Coulomb becomes K q_i q_j (1/r - 1/r_c)); :func:`without_implicit_solvent`
gives the System without the CustomGBForce for the vacuum terms.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    import openmm

__all__ = [
    "ImplicitTables",
    "debye_kappa",
    "implicit_tables_from_system",
    "without_implicit_solvent",
]


@dataclass(frozen=True)
class ImplicitTables:
    """Everything about the GB energy that never changes, laid out for the kernels.

    Per atom (N,), in the compute dtype: ``charge`` q (e), ``offset_radius`` or (nm),
    ``scaled_radius`` sr (nm), ``alpha``, ``beta``, ``gamma`` (the Born-radius tanh coefficients,
    per atom even where the model has constants); ``radius_index`` (N,) int64, the row/column of
    the atom's radius in the neck tables. ``neck_d0``, ``neck_m0`` (R, R): d0[k_i, k_j], m0[k_i,
    k_j] as OpenMM's getd0(radindex1, radindex2) (empty (0, 0) for models without a neck).
    Scalars (float64 Python floats): ``offset``, ``neck_scale``, ``neck_cut`` (nm),
    ``coulomb`` K, ``solute_dielectric``, ``solvent_dielectric``, ``kappa`` (1/nm, 0 = no salt),
    ``cutoff`` (nm, 0 = none), ``pair_shift`` (1/nm: the pair term uses 1/f - pair_shift),
    ``surface_tension`` (kJ/mol/nm^2, 0 = no surface-area term), ``probe_radius`` (nm).
    ``model``: "gbn2", "gbn", "obc2", "obc1" (what the forms say), for reports.
    """

    n_atoms: int
    model: str
    charge: torch.Tensor
    offset_radius: torch.Tensor
    scaled_radius: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    gamma: torch.Tensor
    radius_index: torch.Tensor
    neck_d0: torch.Tensor
    neck_m0: torch.Tensor
    offset: float
    neck_scale: float
    neck_cut: float
    coulomb: float
    solute_dielectric: float
    solvent_dielectric: float
    kappa: float
    cutoff: float
    pair_shift: float
    surface_tension: float
    probe_radius: float

    @property
    def dtype(self) -> torch.dtype:
        return self.charge.dtype

    @property
    def device(self) -> torch.device:
        return self.charge.device

    @property
    def has_neck(self) -> bool:
        return self.neck_d0.numel() > 0

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor fields by name (what the compiled paths will receive)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ImplicitTables:
        """A copy on ``device`` with the floating arrays in ``dtype`` (radius_index stays int64)."""
        changes: dict[str, Any] = {}
        for name, tensor in self.tensors().items():
            target = dtype if tensor.is_floating_point() and dtype is not None else tensor.dtype
            changes[name] = tensor.to(device=device, dtype=target).contiguous()
        scalars = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if not isinstance(getattr(self, f.name), torch.Tensor)
        }
        return ImplicitTables(**scalars, **changes)


def debye_kappa(
    salt_molar: float, solvent_dielectric: float = 78.5, temperature: float = 300.0
) -> float:
    """The Debye screening parameter kappa (1/nm) for ``implicitSolventKappa``, as OpenMM's
    AmberPrmtopFile computes it from implicitSolventSaltConc (amber's constant and its 0.73 ion
    exclusion factor): ForceField.createSystem takes kappa only."""
    for name, value, low in (
        ("salt_molar", salt_molar, 0.0),
        ("solvent_dielectric", solvent_dielectric, None),
        ("temperature", temperature, None),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        if not math.isfinite(value) or (value < 0.0 if low is not None else value <= 0.0):
            bound = ">= 0" if low is not None else "> 0"
            raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return 50.33355 * math.sqrt(salt_molar / solvent_dielectric / temperature) * 7.3


def without_implicit_solvent(system: openmm.System) -> openmm.System:
    """A copy of ``system`` without its CustomGBForce(s): the vacuum terms, which
    pyslice.energy.forcefield.tables_from_system reads (the NonbondedForce keeps the
    reaction-field dielectric OpenMM's implicit-solvent script set)."""
    import openmm

    if not isinstance(system, openmm.System):
        raise TypeError(f"system must be an openmm.System, got {type(system).__name__}")
    copy = openmm.XmlSerializer.clone(system)
    for k in reversed(range(copy.getNumForces())):
        if isinstance(copy.getForce(k), openmm.CustomGBForce):
            copy.removeForce(k)
    return copy


# ------------------------------------------------------------------------------------------------
# Expression forms: token by token, {name} is a number slot
# ------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\{\w+\}|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\w+|\S")

_HCT = "select(step(r+sr2-or1), 0.5*(1/L-1/U+0.25*(r-sr2^2/r)*(1/(U^2)-1/(L^2))+0.5*log(L/U)/r), 0)"
_HCT_DEFS = "U=r+sr2; L=max(or1, D); D=abs(r-sr2)"
_NECK = (
    "step(radius1+radius2+neckCut-r)*getm0(radindex1,radindex2)/(1+100*(r-getd0(radindex1,"
    "radindex2))^2+0.3*1000000*(r-getd0(radindex1,radindex2))^6)"
)
_INTEGRAL_FORMS = {
    "neck": f"Ivdw+neckScale*Ineck; Ineck={_NECK}; Ivdw={_HCT}; {_HCT_DEFS}; radius1=or1+offset;"
    " radius2=or2+offset; neckScale={neck_scale}; neckCut={neck_cut}; offset={offset}",
    "hct": f"{_HCT}; {_HCT_DEFS}",
}
_BORN_DEFS = "psi=I*or; radius=or+offset; offset={offset}"
_BORN_FORMS = {  # name: (expression, per-particle alpha/beta/gamma)
    "per-atom": ("1/(1/or-tanh(alpha*psi-beta*psi^2+gamma*psi^3)/radius)", True),
    "obc2": ("1/(1/or-tanh(psi-{beta}*psi^2+{gamma}*psi^3)/radius)", False),
    "gbn": ("1/(1/or-tanh({alpha}*psi-{beta}*psi^2+{gamma}*psi^3)/radius)", False),
    "obc1": ("1/(1/or-tanh({alpha}*psi+{gamma}*psi^3)/radius)", False),
}
_PARAMS = (
    "solventDielectric={solvent_dielectric}; soluteDielectric={solute_dielectric};"
    " kappa={kappa_value}; offset={offset}"
)
_PAIR_F = "f=sqrt(r^2+B1*B2*exp(-r^2/(4*B1*B2)))"


def _term_forms() -> dict[tuple[str, bool | None, bool], str]:
    """Energy-term forms by (kind, salt screening, shifted by 1/cutoff)."""
    forms = {}
    for salt in (False, True):
        screen = "exp(-kappa*{x})/solventDielectric" if salt else "1/solventDielectric"
        dielectric = "(1/soluteDielectric-" + screen + ")"
        forms["self", salt, False] = (
            "-0.5*{coulomb}*" + dielectric.format(x="B") + "*charge^2/B; " + _PARAMS
        )
        pair = "-{coulomb}*" + dielectric.format(x="f") + "*charge1*charge2"
        forms["pair", salt, False] = pair + "/f; " + _PAIR_F + "; " + _PARAMS
        forms["pair", salt, True] = pair + "*(1/f-{shift}); " + _PAIR_F + "; " + _PARAMS
    forms["ace", None, False] = (
        "{surface_tension}*(radius+{probe_radius})^2*(radius/B)^6; radius=or+offset; " + _PARAMS
    )
    return forms


_TERM_FORMS = _term_forms()
# Defined by OpenMM's energy terms with a cutoff and used by none of them.
_UNUSED_DEFS = {"cutoff"}


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _is_number(token: str) -> bool:
    try:
        return math.isfinite(float(token))
    except ValueError:
        return False


def _split(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """(main tokens, {name: tokens}) of 'main; name=value; ...' (Lepton's definitions)."""
    segments: list[list[str]] = [[]]
    for token in _tokens(text):
        if token == ";":
            segments.append([])
        else:
            segments[-1].append(token)
    main, defs = segments[0], {}
    for segment in segments[1:]:
        if not segment:
            continue
        if len(segment) < 3 or segment[1] != "=" or segment[0] in defs:
            raise _Mismatch(f"cannot read the definition {''.join(segment)!r}")
        defs[segment[0]] = segment[2:]
    return main, defs


class _Mismatch(Exception):
    """An expression differs from a form: the message says where."""


def _match_tokens(got: list[str], form: list[str], where: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for k in range(max(len(got), len(form))):
        g = got[k] if k < len(got) else "<end>"
        f = form[k] if k < len(form) else "<end>"
        if f.startswith("{") and f.endswith("}"):
            if _is_number(g):
                values[f[1:-1]] = float(g)
                continue
            f = "a finite number"
        if g != f:
            context = "".join(got[max(0, k - 6) : k])
            raise _Mismatch(f"{where}: expected {f!r} after {context!r}, found {g!r}")
    return values


def _match(text: str, form: str) -> dict[str, float]:
    """The number slots of ``form`` read from ``text``; _Mismatch naming the first difference."""
    main, defs = _split(text)
    form_main, form_defs = _split(form)
    values = _match_tokens(main, form_main, "the expression")
    extra = set(defs) - set(form_defs) - _UNUSED_DEFS
    missing = set(form_defs) - set(defs)
    if extra or missing:
        raise _Mismatch(
            f"definitions differ: unexpected {sorted(extra)}, missing {sorted(missing)}"
        )
    for name, tokens in form_defs.items():
        values.update(_match_tokens(defs[name], tokens, f"the definition of {name}"))
    return values


def _closest(text: str, forms: dict) -> tuple[Any, dict[str, float]]:
    """(key, slots) of the form ``text`` matches; _Mismatch with the closest form's difference."""
    errors = []
    for key, form in forms.items():
        try:
            return key, _match(text, form)
        except _Mismatch as exc:
            errors.append((key, str(exc)))

    # the form sharing the longest token prefix is the one the user most likely edited
    def shared(item):
        form_tokens = _tokens(forms[item[0]])
        got = _tokens(text)
        n = 0
        while n < min(len(got), len(form_tokens)) and (
            got[n] == form_tokens[n] or (form_tokens[n].startswith("{") and _is_number(got[n]))
        ):
            n += 1
        return n

    key, message = max(errors, key=shared)
    raise _Mismatch(message)


# ------------------------------------------------------------------------------------------------
# Reading the force
# ------------------------------------------------------------------------------------------------


def _custom_gb_force(system: openmm.System) -> openmm.CustomGBForce:
    import openmm

    if not isinstance(system, openmm.System):
        raise TypeError(f"system must be an openmm.System, got {type(system).__name__}")
    found = [f for f in system.getForces() if isinstance(f, openmm.CustomGBForce)]
    if len(found) != 1:
        raise ValueError(
            f"system must hold exactly one CustomGBForce (implicit solvent as OpenMM's "
            f"implicit/gbn2.xml or obc2.xml builds it), found {len(found)}"
        )
    return found[0]


def _refuse(what: str, detail: str) -> ValueError:
    return ValueError(
        f"the CustomGBForce differs from the forms pyslice evaluates in its {what} ({detail}); "
        "its energy would differ from OpenMM's. Supported: amber14 implicit/gbn2.xml, obc2.xml, "
        "gbn.xml, obc1.xml as OpenMM builds them"
    )


def _read_expressions(force: openmm.CustomGBForce) -> dict[str, Any]:
    """Forms and constants of the computed values and energy terms (ValueError otherwise)."""
    import openmm

    pair_nx = openmm.CustomGBForce.ParticlePairNoExclusions
    single = openmm.CustomGBForce.SingleParticle
    if force.getNumComputedValues() != 2:
        raise _refuse("computed values", f"expected I and B, found {force.getNumComputedValues()}")
    slots: dict[str, list[tuple[str, float]]] = {}

    def keep(where: str, values: dict[str, float]) -> None:
        for name, value in values.items():
            slots.setdefault(name, []).append((where, value))

    (name_i, expr_i, type_i), (name_b, expr_b, type_b) = (
        force.getComputedValueParameters(k) for k in range(2)
    )
    if (name_i, type_i, name_b, type_b) != ("I", pair_nx, "B", single):
        raise _refuse(
            "computed values",
            f"expected I (ParticlePairNoExclusions) then B (SingleParticle), found {name_i} "
            f"(type {type_i}) then {name_b} (type {type_b})",
        )
    try:
        integral, values = _closest(expr_i, _INTEGRAL_FORMS)
    except _Mismatch as exc:
        raise _refuse("computed value I", str(exc)) from None
    keep("computed value I", values)
    born_forms = {key: form + "; " + _BORN_DEFS for key, (form, _) in _BORN_FORMS.items()}
    try:
        born, values = _closest(expr_b, born_forms)
    except _Mismatch as exc:
        raise _refuse("computed value B", str(exc)) from None
    keep("computed value B", values)

    found: dict[str, tuple[bool | None, bool]] = {}
    types = {"self": single, "ace": single, "pair": pair_nx}
    for k in range(force.getNumEnergyTerms()):
        expr, kind_type = force.getEnergyTermParameters(k)
        try:
            (kind, salt, shifted), values = _closest(expr, _TERM_FORMS)
        except _Mismatch as exc:
            raise _refuse(f"energy term {k}", str(exc)) from None
        if kind in found or kind_type != types[kind]:
            raise _refuse(
                f"energy term {k}",
                f"a second {kind} term or a {kind} term of the wrong type {kind_type}",
            )
        found[kind] = (salt, shifted)
        keep(f"energy term {k}", values)
    for kind in ("self", "pair"):
        if kind not in found:
            raise _refuse("energy terms", f"no {kind} term of the polar energy")
    if found["self"][0] != found["pair"][0]:
        raise _refuse("energy terms", "salt screening in one polar term but not the other")

    constants: dict[str, float] = {}
    for name, seen in slots.items():
        first_where, first = seen[0]
        for where, value in seen[1:]:
            if value != first:
                detail = f"{name} is {first} in the {first_where} but {value} in the {where}"
                raise _refuse("constants", detail)
        constants[name] = first
    return {
        "neck": integral == "neck",
        "born": born,
        "salt": bool(found["self"][0]),
        "shifted": found["pair"][1],
        "ace": "ace" in found,
        "constants": constants,
    }


def _model_name(neck: bool, born: str) -> str:
    names = {(True, "per-atom"): "gbn2", (True, "gbn"): "gbn", (False, "obc2"): "obc2"}
    names[False, "obc1"] = "obc1"
    return names.get((neck, born), f"{'neck' if neck else 'hct'}-{born}")


def implicit_tables_from_system(
    system: openmm.System, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
) -> ImplicitTables:
    """The :class:`ImplicitTables` of the one CustomGBForce in ``system`` (ValueError for any
    expression, parameter, function, global parameter or nonbonded method pyslice does not
    evaluate as OpenMM does)."""
    import openmm
    from openmm import unit

    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    force = _custom_gb_force(system)
    n = system.getNumParticles()
    if force.getNumParticles() != n:
        raise ValueError(
            f"the CustomGBForce has {force.getNumParticles()} particles, the System {n}"
        )
    if force.getNumGlobalParameters():
        names = [force.getGlobalParameterName(k) for k in range(force.getNumGlobalParameters())]
        raise _refuse("global parameters", f"it has {names}; pyslice reads constants only")
    forms = _read_expressions(force)
    c = forms["constants"]
    for name in ("solute_dielectric", "solvent_dielectric"):
        if c[name] <= 0.0:
            raise ValueError(f"the CustomGBForce's {name} must be > 0, got {c[name]}")

    method = force.getNonbondedMethod()
    if method == openmm.CustomGBForce.NoCutoff:
        cutoff = 0.0
    elif method == openmm.CustomGBForce.CutoffNonPeriodic:
        cutoff = force.getCutoffDistance().value_in_unit(unit.nanometer)
    else:
        raise ValueError(
            "the CustomGBForce must use NoCutoff or CutoffNonPeriodic (a protein without periodic "
            f"boundaries), got nonbonded method {method}"
        )

    count = force.getNumPerParticleParameters()
    names = [force.getPerParticleParameterName(k) for k in range(count)]
    per_atom = _BORN_FORMS[forms["born"]][1]
    expected = ["charge", "or", "sr"] + (["alpha", "beta", "gamma"] if per_atom else [])
    expected += ["radindex"] if forms["neck"] else []
    if names != expected:
        raise _refuse("per-particle parameters", f"expected {expected}, found {names}")
    params = np.array([force.getParticleParameters(i) for i in range(n)], dtype=np.float64)
    params = params.reshape(n, len(names))
    column = {name: params[:, k] for k, name in enumerate(names)}
    if per_atom:
        alpha, beta, gamma = column["alpha"], column["beta"], column["gamma"]
    else:
        ones = np.ones(n)
        alpha = c.get("alpha", 1.0) * ones
        beta = c.get("beta", 0.0) * ones
        gamma = c["gamma"] * ones
    # sr may be negative (GBn2's sulfur screens with -0.703469); or and offset may not.
    if np.any(column["or"] <= 0.0) or c["offset"] <= 0.0:
        raise ValueError(
            "the CustomGBForce needs or > 0 and offset > 0 (Born radii are bounded only then)"
        )

    d0 = m0 = np.zeros((0, 0))
    radius_index = np.zeros(n, dtype=np.int64)
    if forms["neck"]:
        d0, m0 = _neck_tables(force)
        k = column["radindex"]
        if np.any(k != np.round(k)) or np.any(k < 0) or np.any(k >= len(d0)):
            raise ValueError(
                f"the CustomGBForce's radindex must be integers in [0, {len(d0)}) (the neck "
                "tables' size)"
            )
        radius_index = k.astype(np.int64)
    elif force.getNumTabulatedFunctions():
        raise _refuse("tabulated functions", "a model without a neck uses none")

    arrays = {
        "charge": column["charge"],
        "offset_radius": column["or"],
        "scaled_radius": column["sr"],
        "alpha": alpha,
        "beta": beta,
        "gamma": gamma,
        "radius_index": radius_index,
        "neck_d0": d0,
        "neck_m0": m0,
    }
    tensors = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}
    tables = ImplicitTables(
        n_atoms=n,
        model=_model_name(forms["neck"], forms["born"]),
        offset=c["offset"],
        neck_scale=c.get("neck_scale", 0.0),
        neck_cut=c.get("neck_cut", 0.0),
        coulomb=c["coulomb"],
        solute_dielectric=c["solute_dielectric"],
        solvent_dielectric=c["solvent_dielectric"],
        kappa=c["kappa_value"] if forms["salt"] else 0.0,
        cutoff=cutoff,
        pair_shift=c["shift"] if forms["shifted"] else 0.0,
        surface_tension=c["surface_tension"] if forms["ace"] else 0.0,
        probe_radius=c["probe_radius"] if forms["ace"] else 0.0,
        **tensors,
    )
    return tables.to(device=device, dtype=dtype)


def _neck_tables(force: openmm.CustomGBForce) -> tuple[np.ndarray, np.ndarray]:
    """(d0, m0) dense (R, R): table[a, b] = getd0(a, b), OpenMM's Discrete2DFunction value
    values[a + R b]."""
    import openmm

    functions = {
        force.getTabulatedFunctionName(k): force.getTabulatedFunction(k)
        for k in range(force.getNumTabulatedFunctions())
    }
    if set(functions) != {"getd0", "getm0"}:
        raise _refuse("tabulated functions", f"expected getd0 and getm0, found {sorted(functions)}")
    out = []
    for name in ("getd0", "getm0"):
        function = functions[name]
        if not isinstance(function, openmm.Discrete2DFunction):
            raise _refuse("tabulated functions", f"{name} is a {type(function).__name__}")
        xsize, ysize, values = function.getFunctionParameters()
        if xsize != ysize:
            raise _refuse("tabulated functions", f"{name} is {xsize} x {ysize}, not square")
        out.append(np.asarray(values, dtype=np.float64).reshape(ysize, xsize).T.copy())
    if out[0].shape != out[1].shape:
        raise _refuse("tabulated functions", "getd0 and getm0 differ in size")
    return out[0], out[1]
