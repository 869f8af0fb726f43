"""A found ticket, out of raylth: one plain PyTorch file (``raylth export``).

The file is a dict that ``torch.load(path, weights_only=True)`` reads without
raylth installed:

- ``state_dict``: the ticket's rewind-point weights, i.e. the state its
  network started training from (the stored ``weights/init.pt`` or
  ``weights/step_<rewind>.pt``), pruned weights exactly zero; with
  ``prune_form`` every masked ``<module>.weight`` is written as
  ``<module>.weight_orig`` + ``<module>.weight_mask``, as
  ``torch.nn.utils.prune.custom_from_mask`` makes them.
- ``mask``: ``{weight name: bool tensor}``, True = kept.
- ``model``: name, width, input_shape, num_classes.
- ``recipe``: how raylth trained it from there: the train spec, seeds, data
  spec (with the data set's shape, and the mean and std that normalise
  ``x.float()`` of its images as loaded; with ``zca`` they are whitened
  first, which the file does not carry), the iteration training
  starts at (``start_step``: the learning-rate schedule and the data order
  continue from there), steps per epoch and total steps.
- ``provenance``: artifact id, kind, level, sparsity, test_acc, the stored
  spec, the weights file exported, the raylth version.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import io
from pathlib import Path

import torch

from raylth.engine.data import load_dataset, resolve_augment
from raylth.engine.models import MODELS
from raylth.errors import RaylthError
from raylth.specs.refs import checkpoint_step
from raylth.stages.networks import Network
from raylth.stages.registry import recipe_of, stored_spec
from raylth.store import Store
from raylth.store.files import atomic_write_bytes, check_folder_writable

FORMAT = "raylth-ticket"
FORMAT_VERSION = 1


class ExportError(RaylthError):
    """A ticket that cannot be exported (no such artifact, no mask) or an output file refused."""


def _version() -> str:
    try:
        return importlib.metadata.version("raylth")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _network(store: Store, ticket_id: str) -> Network:
    """The stored network ``ticket_id``, holding a mask; one line otherwise."""
    state, why = store.condition(ticket_id)
    if state == "missing":
        raise ExportError(f"{ticket_id}: no such artifact in {store.location}; `raylth results "
                          f"{store.location}` lists the stored ids")
    if state == "damaged":
        raise ExportError(f"{ticket_id}: damaged ({why}); `raylth verify --repair` moves it aside and the "
                          "next run of its sweep computes it again")
    artifact = store.get(ticket_id)
    if artifact is None:  # moved aside between the two looks
        raise ExportError(f"{ticket_id}: no longer in {store.location}; run its sweep again")
    if not artifact.has_file("mask.pt"):
        raise ExportError(f"{ticket_id}: a {artifact.kind} artifact holds no mask, so it is no ticket; export "
                          "an imp level or a random_prune/reinit branch (their ids are in `raylth results`)")
    return Network(artifact, *recipe_of(stored_spec(artifact), store))


def start_checkpoint(network: Network) -> tuple[str, int]:
    """(checkpoint name, iteration) of the weights the network started
    training from: its rewind point. train_and_store stores them under that
    step's name and counts ``steps`` from there to the end of the schedule."""
    metrics = network.artifact.metrics
    if "steps_per_epoch" not in metrics or "steps" not in metrics:
        raise ExportError(f"{network.id}: its metrics.json does not say where its training started "
                          "(steps, steps_per_epoch); it cannot be exported")
    steps_per_epoch = int(metrics["steps_per_epoch"])
    start = network.train.duration.iterations(steps_per_epoch) - int(metrics["steps"])
    for name in network.checkpoints():
        if checkpoint_step(name, steps_per_epoch) == start:
            return name, start
    raise ExportError(f"{network.id}: kept no checkpoint at iteration {start}, where its training started "
                      f"(it has: {', '.join(network.checkpoints())}); it cannot be exported")


def _width(name: str, width: int | None) -> int | None:
    """The spec's width, else the builder's default (None when it takes none)."""
    if width is not None:
        return int(width)
    builder = MODELS.get(name)
    param = inspect.signature(builder).parameters.get("width") if builder is not None else None
    return param.default if param is not None and param.default is not inspect.Parameter.empty else None


def to_prune_form(state: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` as torch.nn.utils.prune keeps it: each masked ``<m>.weight``
    becomes ``<m>.weight_orig`` and the float buffer ``<m>.weight_mask``."""
    out = {}
    for key, value in state.items():
        if key in mask:
            out[f"{key}_orig"] = value
            out[f"{key}_mask"] = mask[key].to(value.dtype)
        else:
            out[key] = value
    return out


def ticket_payload(store: Store, network: Network, *, prune_form: bool = False, data_root=None) -> dict:
    """The exported dict (plain types and tensors only) of a stored ticket."""
    artifact = network.artifact
    mask = {name: m.to("cpu", torch.bool).contiguous() for name, m in network.mask().items()}
    checkpoint, start = start_checkpoint(network)
    weights = network.weights(checkpoint)
    missing = sorted(set(mask) - set(weights))
    if missing:
        raise ExportError(f"{network.id}: its mask names {missing[0]}, which its weights lack; it cannot be exported")
    # stored after the mask was applied (train_and_store): where() only guards that, kept values unchanged
    state = {name: (torch.where(mask[name], value, torch.zeros_like(value)) if name in mask else value)
             .detach().to("cpu").contiguous() for name, value in weights.items()}
    data = load_dataset(network.data, data_root, store=store)  # shape, classes, normalisation
    metrics = artifact.metrics
    steps_per_epoch = int(metrics["steps_per_epoch"])
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "state_dict": to_prune_form(state, mask) if prune_form else state,
        "prune_form": bool(prune_form),
        "mask": mask,
        "model": {"name": network.model.name, "width": _width(network.model.name, network.model.width),
                  "input_shape": [int(s) for s in data.input_shape], "num_classes": int(data.num_classes)},
        "recipe": {
            "train": network.train.to_dict(), "seeds": network.seeds.to_dict(),
            "data": network.data.to_dict() | {
                "input_shape": [int(s) for s in data.input_shape], "num_classes": int(data.num_classes),
                "train_images": len(data.train_y), "test_images": len(data.test_y),
                "mean": [float(v) for v in data.mean], "std": [float(v) for v in data.std],
                "pixel_max": float(data.pixel_max), "augment_default": bool(data.augment)},
            # what the trainer applied: train.augment, else the data set's default
            "augment": resolve_augment(network.train.augment if network.train.augment is not None
                                       else data.augment).to_dict(),
            "start_step": start, "steps_per_epoch": steps_per_epoch,
            "total_steps": network.train.duration.iterations(steps_per_epoch),
        },
        "provenance": {
            "artifact_id": artifact.id, "kind": artifact.kind, "level": network.level,
            "sparsity": float(metrics.get("sparsity", 0.0)),
            "test_acc": None if metrics.get("test_acc") is None else float(metrics["test_acc"]),
            "weights_file": f"weights/{checkpoint}.pt", "rewind_checkpoint": checkpoint,
            "spec": artifact.spec, "raylth_version": _version(),
        },
    }


def check_out(out, force: bool = False) -> Path:
    """The output file: not a folder, not an existing file (unless ``force``),
    in a folder that is (or can be made) writable; one line otherwise."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise ExportError(f"--out {path}: is a folder; give a file name, e.g. {path / 'ticket.pt'}")
    if path.exists() and not force:
        raise ExportError(f"--out {path}: already exists; pass --force to overwrite it, or choose another name")
    check_folder_writable(path.parent, f"--out {path}: its folder", "--out", ExportError)
    return path


def export_ticket(store: Store, ticket_id: str, out, *, prune_form: bool = False, force: bool = False,
                  data_root=None) -> Path:
    """Write ``ticket_id``'s mask and rewind-point weights to ``out`` (see the
    module's doc); returns the file's path. An existing file is replaced only
    with ``force``, in one rename once the new one is complete."""
    network = _network(store, ticket_id)  # a bad id fails before anything is created
    path = check_out(out, force)
    payload = ticket_payload(store, network, prune_form=prune_form, data_root=data_root)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    if path.exists() and not force:  # appeared meanwhile
        raise ExportError(f"--out {path}: already exists; pass --force to overwrite it, or choose another name")
    try:
        atomic_write_bytes(path, buffer.getbuffer())
    except OSError as err:
        raise ExportError(f"--out {path}: cannot be written ({err.strerror or err}); "
                          "choose a writable place with --out") from None
    return path
