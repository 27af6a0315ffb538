"""Which model a notebook explains, in one Markdown paragraph (notebooks 04-07 print it first).

Read from the run folder: the checkpoint (epoch, its training configuration), ``params.yaml``
(image size, data set, initial weights) and ``metrics.json`` (notebook 03's macro AUROC).
"""

from __future__ import annotations

from chexlib.artefacts import read_metrics
from chexlib.model import imagenet_cache_path

__all__ = ["initial_weights_text", "model_card"]


def initial_weights_text(weights: str) -> str:
    """The ``weights`` parameter in words: where training started from."""
    if weights == "auto":
        if imagenet_cache_path().is_file():
            return "ImageNet weights (found in torchvision's cache)"
        return ("random initialisation, trained **from scratch** (`weights: auto` and no ImageNet "
                "weights on this machine)")
    if weights == "imagenet":
        return "ImageNet weights"
    if weights in ("none", "scratch", "random"):
        return "random initialisation, trained **from scratch**"
    return f"the weights in `{weights}`"


def model_card(session) -> str:
    """One paragraph: architecture, run, initial weights, epochs, image size, data, AUROC.

    ``session`` is a :class:`~chexlib.session.TrainedRun` (a notebook's ``open_run``).
    """
    params, checkpoint = session.params, session.checkpoint
    config = checkpoint.get("config", {})
    epoch, epochs = checkpoint.get("epoch"), config.get("epochs", params.get("epochs"))
    data = ("the built-in phantom data set" if params.get("dataset") == "phantom"
            else f"the {params.get('dataset')} data set")
    text = (f"**The model explained here**: the DenseNet-121 of run `{session.run_dir.name}`, "
            f"started from {initial_weights_text(str(params.get('weights', 'auto')))}, "
            f"checkpoint of epoch {epoch} of {epochs}, at {params['image_size']} px on {data}")
    metrics_file = session.run_dir / "metrics.json"
    if metrics_file.is_file():
        summary = read_metrics(metrics_file)["summary"]
        text += (f"; macro AUROC **{summary['macro_auroc']:.3f}** over "
                 f"{summary.get('n_defined', 14)} observations on the reported images "
                 "(notebook 03)")
    return text + "."
