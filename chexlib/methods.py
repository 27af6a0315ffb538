"""The registry of explanation methods: one entry per method, importable without torch or zennit.

Every method the notebooks, the heatmap store, the browser and the comparison know is one
:class:`Method` registered here: its name, a one-line description, its kind and the function that
computes its maps. Everything else reads this registry: :func:`method_names` and
:func:`parse_method` (dispatch), the parameter choices of :mod:`chexlib.params`, the browser's
method menu, the comparison's list (:func:`comparison_methods`), the README's table
(:func:`table`, ``python -m chexlib methods``), and the per-kind views :data:`LRP_COMPOSITES`,
:data:`CAM_METHODS`, :data:`COMBINED_METHODS`, :data:`BASELINES`. Adding a method is one
:func:`register` (or :func:`register_composite`) call.

Why the functions are dotted paths (``"chexlib.explain.lrp:lrp"``), imported on first use: the
parameter check (``python -m chexlib run``) must finish before torch is imported, yet needs the
names. Registration decorators in the torch modules would make the names appear only once those
modules are imported, and a torch-free table of names beside them would be a second place per
method. A path keeps name, description and implementation in one entry, costs no import until a
map is computed, and is no import statement (no import cycle between this module and
``chexlib.explain``). A callable works as well (for a method registered at run time).

Kinds:

``lrp``          a zennit composite (:mod:`chexlib.explain.composites`), computed by
                 :func:`chexlib.explain.lrp.lrp`; its entry also names the composite's builder
                 and the BatchNorm treatment: ``epsilon_plus_flat`` folds them into linear
                 layers (:mod:`chexlib.explain.canonizers`), ``epsilon_plus_flat-pass`` keeps
                 them (zennit's ``Pass``)
``cam``          a class-activation-map method on a layer (:data:`CAM_LAYERS`): ``gradcam`` on the
                 default layer, ``gradcam-features.denseblock3`` on another
                 (:func:`cam_method_name`)
``combination``  a combination of methods (:mod:`chexlib.explain.combined`)
``baseline``     a reference map that explains nothing (the random map, the comparison's chance
                 level); not an explanation, so not in :func:`method_names`
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from chexlib.errors import ParameterError

KINDS: tuple[str, ...] = ("lrp", "cam", "combination", "baseline")
#: How an LRP method treats the network's BatchNorms (:mod:`chexlib.explain.canonizers`).
BATCHNORM_CHOICES: tuple[str, ...] = ("fold", "pass")
#: The suffix of an LRP method that keeps the BatchNorms (``epsilon_plus_flat-pass``).
PASS_SUFFIX = "-pass"
#: The series' LRP composite (galleries, stored maps, browser, the LRP x Grad-CAM combination):
#: the fewest grid artefacts on the canonized DenseNet (:mod:`chexlib.explain.composites`).
DEFAULT_COMPOSITE = "montavon2019_epsilon_pixels"

#: DenseNet-121's convolutional stages a CAM can look at, by module name, input to output; the
#: last, the head's ReLU (the rectified final feature maps), is the default.
CAM_LAYERS: tuple[str, ...] = tuple(
    f"features.{stage}" for stage in (
        "conv0", "norm0", "relu0", "pool0", "denseblock1", "transition1", "denseblock2",
        "transition2", "denseblock3", "transition3", "denseblock4", "norm5")
) + ("relu",)

#: What a method name may be: a safe folder name of the heatmap store (``maps/<method>/``).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def is_safe_name(name: object) -> bool:
    """Whether ``name`` is a safe method (folder) name: 1-64 of letters, digits, ``_.+-``."""
    return isinstance(name, str) and NAME_PATTERN.match(name) is not None


def _load(path: str | Callable) -> Callable:
    """The callable itself, or the attribute a ``"package.module:attribute"`` path names."""
    if callable(path):
        return path
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Method:
    """One explanation method of the registry.

    Attributes
    ----------
    name : str
        Its name in parameters, the heatmap store, the browser and figures.
    kind : str
        One of :data:`KINDS`.
    description : str
        One line: what its maps show.
    function : str or callable
        ``fn(model, images, classes, batch_size=None, **keywords)`` -> Tensor [B, K, H, W], or
        its ``"package.module:function"`` path (imported on first use).
    options : mapping
        Fixed keywords ``function`` is called with (an LRP composite: ``composite=<name>``).
    composite : str or callable, optional
        ``lrp`` only: the builder ``(low, high, epsilon) -> zennit Composite``, or its path.
    """

    name: str
    kind: str
    description: str
    function: str | Callable
    options: Mapping[str, Any] = field(default_factory=dict)
    composite: str | Callable | None = None

    def load(self) -> Callable:
        """The function that computes the maps (imported on first use)."""
        return _load(self.function)

    def load_composite(self) -> Callable:
        """The composite builder of an ``lrp`` method (imported on first use)."""
        return _load(self.composite)

    def __call__(self, model, images, classes=None, batch_size: int | None = None, **keywords):
        """Maps [B, K, H, W] of the requested classes (``keywords``: e.g. a CAM's ``layer``)."""
        return self.load()(model, images, classes, batch_size=batch_size, **self.options,
                           **keywords)


_REGISTRY: dict[str, Method] = {}


def register(name: str, kind: str, description: str, function: str | Callable, *,
             options: Mapping[str, Any] | None = None,
             composite: str | Callable | None = None) -> Method:
    """Add a method to the registry (after the methods registered before it).

    Parameters
    ----------
    name, kind, description, function, options, composite
        As the attributes of :class:`Method`.

    Returns
    -------
    Method

    Raises
    ------
    ParameterError
        A name already registered or not a safe folder name, a CAM name with ``-`` (it separates
        the layer), an unknown kind, a description that is not one line, or a composite builder
        given for a kind other than ``lrp`` (or missing for ``lrp``).
    """
    if not is_safe_name(name):
        raise ParameterError(f"method name {name!r}: expected 1-64 characters from letters, "
                             "digits, '_', '.', '+', '-', starting with a letter or digit")
    if name in _REGISTRY:
        raise ParameterError(f"method {name!r} is already registered; unregister it first")
    if kind not in KINDS:
        raise ParameterError(f"method {name!r}: kind={kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "cam" and "-" in name:
        raise ParameterError(f"method {name!r}: a CAM name must not contain '-' (it names the "
                             "layer: gradcam-features.denseblock3)")
    if not isinstance(description, str) or not description or "\n" in description:
        raise ParameterError(f"method {name!r}: expected a one-line description")
    if (composite is None) == (kind == "lrp"):
        raise ParameterError(f"method {name!r}: a composite builder is given for, and only for, "
                             "kind 'lrp'")
    if not (callable(function) or (isinstance(function, str) and ":" in function)):
        raise ParameterError(f"method {name!r}: function={function!r}; expected a callable or "
                             "a 'package.module:function' path")
    method = Method(name, kind, description, function, MappingProxyType(dict(options or {})),
                    composite)
    _REGISTRY[name] = method
    return method


def register_composite(name: str, description: str, composite: str | Callable,
                       batchnorm: str = "fold") -> Method:
    """Register an LRP composite: maps by :func:`chexlib.explain.lrp.lrp` with ``composite``.

    ``composite`` builds the zennit composite, ``(low, high, epsilon) -> Composite``
    (:func:`chexlib.explain.composites.make_composite` passes the z^B bounds and the epsilon
    override), or is its path. ``batchnorm`` is how the network's BatchNorms are treated:
    ``"fold"`` (merged into linear layers, :mod:`chexlib.explain.canonizers`) or ``"pass"``
    (kept, zennit's ``Pass`` rule); one name always means one treatment, so the heatmap store
    never mixes the two.
    """
    if batchnorm not in BATCHNORM_CHOICES:
        raise ParameterError(f"method {name!r}: batchnorm={batchnorm!r}; expected one of "
                             f"{', '.join(BATCHNORM_CHOICES)}")
    return register(name, "lrp", description, "chexlib.explain.lrp:lrp",
                    options={"composite": name, "batchnorm": batchnorm}, composite=composite)


def lrp_batchnorm(name: str) -> str:
    """How the LRP method ``name`` treats BatchNorms: ``"fold"`` or ``"pass"``.

    Raises
    ------
    ParameterError
        ``name`` is not a registered LRP composite.
    """
    method = _REGISTRY.get(name)
    if method is None or method.kind != "lrp":
        raise ParameterError(f"composite={name!r}: unknown LRP composite; expected one of "
                             f"{', '.join(registered('lrp'))}")
    return method.options.get("batchnorm", "fold")


def pass_variant(name: str) -> str:
    """The name of composite ``name`` with its BatchNorms kept: ``epsilon_plus_flat-pass``."""
    return f"{name}{PASS_SUFFIX}"


def unregister(name: str) -> Method:
    """Remove a method from the registry and return it (KeyError if it is not registered)."""
    return _REGISTRY.pop(name)


def registered(kind: str | None = None) -> dict[str, Method]:
    """The registered methods (of one kind), name -> :class:`Method`, in registration order."""
    return {name: m for name, m in _REGISTRY.items() if kind is None or m.kind == kind}


def get(name: str) -> Method:
    """The registered method called ``name``.

    Raises
    ------
    ParameterError
        Not registered; the message lists the registered names.
    """
    if name not in _REGISTRY:
        raise ParameterError(f"method={name!r}: not a registered method; expected one of "
                             f"{', '.join(_REGISTRY)}")
    return _REGISTRY[name]


class Descriptions(Mapping):
    """The methods of one kind, name -> description, read from the registry on every use."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __getitem__(self, name: str) -> str:
        method = _REGISTRY.get(name)
        if method is None or method.kind != self.kind:
            raise KeyError(name)
        return method.description

    def __iter__(self) -> Iterator[str]:
        return iter(registered(self.kind))

    def __len__(self) -> int:
        return len(registered(self.kind))

    def __repr__(self) -> str:
        return repr(dict(self))


class Names(Sequence):
    """The names of one kind's methods, in order, read from the registry on every use.

    Equal to a tuple or list of the same names, so it serves as a parameter's allowed values.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __getitem__(self, index):
        return tuple(registered(self.kind))[index]

    def __iter__(self) -> Iterator[str]:
        return iter(registered(self.kind))

    def __len__(self) -> int:
        return len(registered(self.kind))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Names, tuple, list)):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # equal to tuples, but changes with the registry

    def __repr__(self) -> str:
        return repr(tuple(self))


def names(kind: str) -> Names:
    """The live list of the names of the methods of ``kind`` (:class:`Names`)."""
    if kind not in KINDS:
        raise ParameterError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
    return Names(kind)


#: The LRP composites, each with a one-line description (details in
#: :mod:`chexlib.explain.composites`). Order: the study's variants first, then zennit's
#: composites, then Montavon et al. 2019's recipe (all with BatchNorms folded), then each of
#: them with BatchNorms kept (``<name>-pass``).
LRP_COMPOSITES: Mapping[str, str] = Descriptions("lrp")
#: The class-activation-map methods (:mod:`chexlib.explain.cam`).
CAM_METHODS: Mapping[str, str] = Descriptions("cam")
#: Combinations of methods (:mod:`chexlib.explain.combined`).
COMBINED_METHODS: Mapping[str, str] = Descriptions("combination")
#: Reference maps that explain nothing (the comparison's chance level).
BASELINES: Mapping[str, str] = Descriptions("baseline")

_COMPOSITES = "chexlib.explain.composites:"
register_composite(
    "epsilon", "LRP-epsilon (eps=0.25 x layer output RMS) on convolutions and the classifier",
    _COMPOSITES + "epsilon_composite")
register_composite(
    "z", "LRP-0 (eps=1e-9) on convolutions and the classifier: gradient x input",
    _COMPOSITES + "z_composite")
register_composite(
    "alpha2_beta1", "LRP-alpha2-beta1 on convolutions, LRP-epsilon on the classifier",
    _COMPOSITES + "alpha2_beta1_composite")
register_composite(
    "zplus", "Deep-Taylor style: z+ on convolutions, z^B on the pixel layer, epsilon on top",
    _COMPOSITES + "zplus_composite")
register_composite(
    "epsilon_plus_flat",
    "zennit EpsilonPlusFlat: flat on pixels, z+ on convolutions, epsilon on top",
    _COMPOSITES + "epsilon_plus_flat_composite")
register_composite(
    "epsilon_gamma_box",
    "zennit EpsilonGammaBox: z^B on pixels, gamma on convolutions, epsilon on top, "
    "proportional max pool",
    _COMPOSITES + "epsilon_gamma_box_composite")
register_composite(
    "montavon2019", "Montavon 2019: z^B pixels, gamma lower, epsilon middle, LRP-0 classifier, "
    "proportional max pool",
    _COMPOSITES + "montavon2019_composite")
register_composite(
    "montavon2019_epsilon_pixels",
    "Montavon 2019 with scale-aware epsilon, not z^B, on pixels: the fewest grid artefacts",
    _COMPOSITES + "montavon2019_epsilon_pixels_composite")
#: The LRP composites proper (BatchNorms folded), in registration order.
FOLDED_COMPOSITES: tuple[str, ...] = tuple(registered("lrp"))
for _name in FOLDED_COMPOSITES:
    register_composite(
        pass_variant(_name), f"{_name} on the network with its BatchNorms kept, not folded",
        _REGISTRY[_name].composite, batchnorm="pass")
register("gradcam", "cam",
         "Grad-CAM: channel weights = spatially averaged gradients of the class logit",
         "chexlib.explain.gradcam:gradcam")
register("gradcam_pp", "cam", "Grad-CAM++: channel weights = pixel-weighted positive gradients",
         "chexlib.explain.gradcam_pp:gradcam_pp")
register("lrp_gradcam", "combination",
         f"LRP ({DEFAULT_COMPOSITE}) gated by the normalised Grad-CAM map of the class",
         "chexlib.explain.combined:lrp_gradcam")
#: The baseline "method": a seeded random map per pair, the chance level of every metric.
RANDOM: str = register(
    "random", "baseline",
    "Seeded standard-normal maps, blind to model and image: every metric's chance level",
    "chexlib.explain.baseline:random_maps").name


def method_names(cam_layers: Sequence[str] = (CAM_LAYERS[-1],)) -> list[str]:
    """Every method name: the LRP composites, then each CAM method on each of ``cam_layers``,
    then the combinations (not the baselines)."""
    cams = [name if layer == CAM_LAYERS[-1] else f"{name}-{layer}"
            for name in CAM_METHODS for layer in cam_layers]
    return [*LRP_COMPOSITES, *cams, *COMBINED_METHODS]


def resolve_method(method: str) -> tuple[Method, dict[str, Any]]:
    """The registered method a name means and the keywords its name adds (a CAM's ``layer``).

    Raises
    ------
    ParameterError
        An unknown name (baselines included); the message lists the valid ones.
    """
    entry = _REGISTRY.get(method)
    if entry is not None and entry.kind in ("lrp", "combination"):
        return entry, {}
    name, _, layer = str(method).partition("-")
    entry = _REGISTRY.get(name)
    if entry is not None and entry.kind == "cam" and (not layer or layer in CAM_LAYERS):
        return entry, {"layer": layer or CAM_LAYERS[-1]}
    raise ParameterError(
        f"method={method!r}: unknown explanation method; expected one of "
        f"{', '.join(method_names())} (a CAM method may name a layer: gradcam-features.denseblock3)")


def parse_method(method: str) -> tuple[str, str | None]:
    """``("lrp", composite)``, ``(cam method, layer)`` or ``(combination, None)`` for a name.

    Raises
    ------
    ParameterError
        An unknown name; the message lists the valid ones.
    """
    entry, keywords = resolve_method(method)
    if entry.kind == "lrp":
        return "lrp", entry.name
    return entry.name, keywords.get("layer")


def cam_method_name(method: str = "gradcam", layer: str = "relu") -> str:
    """The heatmap-store name of a CAM method on a layer: ``gradcam`` for the default layer,
    ``gradcam-features.denseblock3`` for another."""
    if method not in CAM_METHODS:
        raise ValueError(f"method={method!r}: expected one of {', '.join(CAM_METHODS)}")
    return method if layer == CAM_LAYERS[-1] else f"{method}-{layer}"


def comparison_methods(composites: Sequence[str]) -> list[str]:
    """Notebook 06's methods: ``composites``, the CAM methods on the default layer, the
    combinations and the baselines (``[*composites, "gradcam", "gradcam_pp", "lrp_gradcam",
    "random"]``)."""
    return [*composites, *CAM_METHODS, *COMBINED_METHODS, *BASELINES]


#: Bumped whenever the maps of registered methods change meaning, so that a heatmap store
#: recomputes what an earlier chexlib stored. 2: BatchNorms folded by default, the proportional
#: max pool, the scale-aware epsilon, per-channel z^B bounds.
MAP_REVISION = 2


def definition(name: str) -> str | None:
    """What the maps of method ``name`` are, as a string the heatmap store records: the map
    revision, kind, function, options (an LRP composite's BatchNorm treatment) and composite
    builder. None for a name that is not registered (the store then checks nothing more)."""
    method = _REGISTRY.get(name)
    if method is None:
        name, _, layer = str(name).partition("-")
        method = _REGISTRY.get(name)
        if method is None or method.kind != "cam":
            return None
    options = ",".join(f"{key}={value}" for key, value in sorted(method.options.items()))
    return (f"revision {MAP_REVISION}; {method.kind}; {_path_of(method.function)}; "
            f"{options}; {_path_of(method.composite)}")


def _path_of(function: str | Callable | None) -> str:
    if function is None or isinstance(function, str):
        return str(function)
    return f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', '?')}"


def table() -> str:
    """Every registered method as a Markdown table: method, kind, what it computes."""
    rows = ["| method | kind | what it computes |", "|---|---|---|"]
    rows += [f"| `{m.name}` | {m.kind} | {m.description} |" for m in _REGISTRY.values()]
    return "\n".join(rows)
