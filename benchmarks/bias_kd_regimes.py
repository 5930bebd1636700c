"""Bias-aware distillation in three teacher regimes on CIFAR-10 (issue #15 A).

Does the bias-aware loss (Zhang et al., AAAI 2025) help, and when? One student architecture is
distilled from three teachers of the same architecture that differ only in how they were trained:

* ``weak``: a short run (10 epochs; the regime of ``bias_kd_cifar10.py``): wrong on about a
  quarter of the training images;
* ``strong``: trained long enough (100 epochs) that its error on the un-augmented training
  images is < 5% (the paper's setting; checked and printed);
* ``biased``: trained like ``strong`` but on labels where a fixed fraction (50%) of one class
  (cat) is relabelled as a confusable class (dog): a systematic bias. The students always get the
  clean labels.

An optional fourth regime, ``moderate`` (``--regimes moderate``), trains the teacher 40% as long
as ``strong`` (40 epochs): between the two in training error.

Every teacher and student trains with the same augmentation (random crop + flip). A teacher
trained with flips only fits its training images (0.05% error) but is wrong on 43% of the
cropped views the student sees, so it would not be a well-trained teacher for this student.

Rows: ``ce`` (no teacher; the same run serves every regime), ``kd``, ``kd+bias(swap)``,
``kd+bias(soft)``, ``dkd``, ``dkd+bias(swap)`` (and, on request, the ablation
``kd+bias(drop)``: elimination without rectification), each over several seeds. A seed fixes the
student's initial weights and batch order, identical across rows, so the table gives paired
differences against each row's base. All losses are the product's ``DistillationLoss`` with
``LossConfig`` defaults apart from the method, ``bias_aware`` and ``rectification`` (so DKD's
warm-up is the product's automatic one).

To fit one shared CPU core the teacher's logits are computed once per regime on a fixed bank of
augmented views (epoch e of every student sees view e of each image, crop + flip), and the
training loop here is a lean copy of ``compressor.train.loop``'s recipe (SGD + Nesterov, weight
decay 5e-4, cosine per step) without the validation pass: every number is the last epoch's, on
the test split, so nothing is selected on it. Runs, teachers and logit banks are cached in
``--cache-dir``; the results JSON is rewritten after every run and finished runs are reused::

    nice -n 10 python benchmarks/bias_kd_regimes.py            # ~80 min on one shared core
    python benchmarks/bias_kd_regimes.py --smoke                # ~2 min: checks the script only
    python benchmarks/bias_kd_regimes.py --report-only          # re-print the tables

The ``auto`` row (``--rows auto``, issue #15 B) is ``compressor run --method auto``'s choosing
code, ``compressor.train.recipes.choose_and_train``, with a trainer adapter around this loop:
pilots of
``pilot_epochs(epochs)`` for each of ``--auto-recipes`` (default: the product's ``ce,kd,kd+bias``),
chosen on a validation split of 100 extra CIFAR ``train/`` images per class (disjoint from the
training images, never the test set), the winner continued from its pilot checkpoint. The row
passes ``val_images`` = the split's size (1,000), as the product does since 6eb9352: the incumbent
(``kd``, the CLI's base loss) is kept unless the best pilot beats it by more than
``noise_margin``. The chosen recipe is then trained once more uninterrupted in the same process,
for its wall and CPU time and to check that the continued pilot ends with the same weights::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bias_kd_regimes.py \
        --regimes strong,biased,weak,moderate --rows auto       # 20-30 min, teachers cached

The row ``auto(max)`` is the rule before 6eb9352: the best pilot wins, without a margin (run with
``val_images=None``; ties now go to the incumbent, before to the recipe listed first). Results
files written before that change hold its runs under ``auto``; they are renamed ``auto(max)``
when read (a run of the new rule records ``incumbent`` in its choice).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image

from compressor.compute.batchnorm import recalibrate_batchnorm
from compressor.compute.speed import to_memory_format
from compressor.data.splits import augment
from compressor.data.splits import normalize as normalize_images
from compressor.losses.total import DistillationLoss, LossConfig
from compressor.models.pruning import prune_trajectory
from compressor.models.registry import build_model, count_params
from compressor.train.recipes import (
    DEFAULT_RECIPES,
    RECIPES,
    choose_and_train,
    pilot_epochs,
    recipe_loss,
)

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CAT, DOG = CLASSES.index("cat"), CLASSES.index("dog")
REGIMES = ("weak", "moderate", "strong", "biased", "derived")  # moderate, derived: on request
DERIVED = "derived"  # the biased teacher pruned to ~half its MACs is the student (issue #25)
DERIVED_MACS = 0.5
SUBSET = "subset"  # the paper's per-subset means (LossConfig.bias_weighting's default)
ROWS: dict[str, LossConfig] = {
    "ce": LossConfig(method="ce", bias_aware=False),
    "kd": LossConfig(method="kd", bias_aware=False),
    "kd+bias(drop)": LossConfig(method="kd", bias_aware=True, rectification="drop"),
    "kd+bias(swap,subset)": LossConfig(method="kd", bias_aware=True, rectification="swap"),
    "kd+bias(swap,sample)": LossConfig(
        method="kd", bias_aware=True, rectification="swap", bias_weighting="sample"
    ),
    "kd+bias(soft,subset)": LossConfig(method="kd", bias_aware=True, rectification="soft"),
    "kd+bias(soft,sample)": LossConfig(
        method="kd", bias_aware=True, rectification="soft", bias_weighting="sample"
    ),
    "dkd": LossConfig(method="dkd", bias_aware=False),
    "dkd+bias(swap,subset)": LossConfig(method="dkd", bias_aware=True, rectification="swap"),
}
RENAMED = {
    "kd+bias(swap)": "kd+bias(swap,subset)",
    "kd+bias(soft)": "kd+bias(soft,subset)",
    "dkd+bias(swap)": "dkd+bias(swap,subset)",
}  # results files from before issue #25
DEFAULT_ROWS = (
    "kd",
    "kd+bias(drop)",
    "kd+bias(swap,subset)",
    "kd+bias(swap,sample)",
    "kd+bias(soft,sample)",
)  # issue #25; ce, dkd, ... on request
BASE = {"kd": "ce", "dkd": "ce", "dkd+bias(swap,subset)": "dkd",
        **{row: "kd" for row in ROWS if row.startswith("kd+bias")}}  # fmt: skip
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(train_size=4000, test_size=10000, epochs=15, seeds=5, batch_size=64, lr=0.05,
                pruned_lr=0.01,
                student_arch="cifar_resnet8_w8", teacher_arch="cifar_resnet14_w16",
                weak_epochs=10, strong_epochs=100, strong_augment="crop", noise_fraction=0.5),
    "smoke": dict(train_size=400, test_size=1000, epochs=2, seeds=2, batch_size=64, lr=0.05,
                  pruned_lr=0.01,
                  student_arch="cifar_resnet8_w8", teacher_arch="cifar_resnet8_w8",
                  weak_epochs=1, strong_epochs=2, strong_augment="crop", noise_fraction=0.5),
}  # fmt: skip
DATA_SEED = 0  # the train subset, the relabelled cats, the teachers' init and augmentation
# the product's --method auto (compressor.train.recipes.choose_and_train), issue #15 B
AUTO = "auto"
AUTO_MAX = "auto(max)"  # the rule before 6eb9352: the best pilot wins, no noise margin
AUTO_ROWS = (AUTO, AUTO_MAX)
AUTO_RULES = {
    AUTO: "the incumbent (the base loss's recipe) is kept unless the best pilot beats it on the "
    "same validation images by an exact one-sided McNemar test at p < 0.05 "
    "(compressor.train.recipes.choose_winner, issue #25)",
    AUTO_MAX: "the best pilot on validation top-1 wins, no margin (the rule before 6eb9352)",
}


def recipe_row(recipe: str, base: LossConfig) -> str:
    """The row whose ``LossConfig`` is the product's ``recipe`` on ``base`` (so auto's pilots
    are exactly the rows' runs, paired with them)."""

    def settings(cfg: LossConfig) -> LossConfig:  # without bias removal its settings do nothing
        if cfg.bias_aware:
            return cfg
        return dataclasses.replace(cfg, rectification="swap", bias_weighting="subset")

    loss = settings(recipe_loss(recipe, base))
    for row, cfg in ROWS.items():
        if settings(cfg) == loss:
            return row
    raise SystemExit(f"no row has recipe {recipe}'s loss {loss}")


VAL_PER_CLASS, VAL_SEED = 100, 7  # auto's validation split: extra train images, not test


def split_names(text: str) -> list[str]:
    """``"kd,kd+bias(swap,sample)"`` -> the two names (commas inside brackets stay)."""
    return [name for name in re.split(r",(?![^()]*\))", text) if name]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--smoke", action="store_true", help="same as --preset smoke")
    p.add_argument("--data", type=Path, default=Path("/work/shared/datasets/cifar10"))
    p.add_argument("--cache-dir", type=Path, default=Path("~/.cache/compressor-bench"))
    p.add_argument("--out", type=Path, help="results JSON (default: <cache-dir>/regimes_<preset>)")
    p.add_argument("--regimes", type=lambda s: s.split(","), default=["weak", "strong", "biased"])
    p.add_argument("--rows", type=split_names, default=list(DEFAULT_ROWS))
    p.add_argument(
        "--auto-recipes",
        type=lambda s: s.split(","),
        default=list(DEFAULT_RECIPES),
        help="recipes the auto row pilots (default: the product's ce,kd,kd+bias)",
    )
    p.add_argument(
        "--auto-base",
        default="kd",
        help="the row whose loss the auto row passes as the base (the CLI's --method default)",
    )
    p.add_argument(
        "--skip-single",
        action="store_true",
        help="auto: do not train the chosen recipe again uninterrupted (the equality check)",
    )
    p.add_argument(
        "--also",
        type=Path,
        nargs="*",
        default=[],
        help="with --report-only: more results files to merge (runs made in parallel)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--report-only", action="store_true", help="print the tables of --out")
    p.add_argument("--markdown", action="store_true", help="with --report-only: as Markdown")
    for key, value in PRESETS["cpu"].items():
        p.add_argument("--" + key.replace("_", "-"), type=type(value), help="overrides the preset")
    args = p.parse_args(argv)
    if args.smoke:
        args.preset = "smoke"
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    choices = (("regimes", args.regimes, REGIMES), ("rows", args.rows, [*ROWS, *AUTO_ROWS]),
               ("auto recipes", args.auto_recipes, RECIPES),
               ("auto base", [args.auto_base], ROWS))  # fmt: skip
    for name, given, allowed in choices:
        if bad := [x for x in given if x not in allowed]:
            p.error(f"unknown {name} {bad}; choose from {','.join(allowed)}")
    args.cache_dir = args.cache_dir.expanduser()
    args.out = args.out or args.cache_dir / f"regimes_{args.preset}.json"
    return args


# ------------------------------------------------------------------------------------ data


def _decode(paths: list[Path]) -> torch.Tensor:
    arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def load_data(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """A class-balanced, seeded train subset and the first test images of each class (uint8)."""
    cache = args.cache_dir / f"regimes_data_n{args.train_size}_t{args.test_size}_s{DATA_SEED}.pt"
    if cache.exists():
        return torch.load(cache)
    g = torch.Generator().manual_seed(DATA_SEED)
    out: dict[str, list] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for split, size in (("train", args.train_size), ("test", args.test_size)):
        for label, name in enumerate(CLASSES):
            files = sorted((args.data / split / name).glob("*.jpg"))
            pick = torch.randperm(len(files), generator=g)[: size // len(CLASSES)].sort().values
            out[f"{split}_x"].append(_decode([files[i] for i in pick.tolist()]))
            out[f"{split}_y"].append(torch.full((len(pick),), label, dtype=torch.long))
    data = {k: torch.cat(v) for k, v in out.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, cache)
    return data


def noisy_labels(labels: torch.Tensor, fraction: float) -> torch.Tensor:
    """``labels`` with a seeded ``fraction`` of the cats relabelled as dogs."""
    cats = (labels == CAT).nonzero().squeeze(1)
    g = torch.Generator().manual_seed(DATA_SEED + 1)
    flip = cats[torch.randperm(len(cats), generator=g)[: round(fraction * len(cats))]]
    out = labels.clone()
    out[flip] = DOG
    return out


def normalize(x: torch.Tensor) -> torch.Tensor:
    """The product's normalisation, channels-last (bit-identical to the inline formula the
    cached results were computed with)."""
    return to_memory_format(normalize_images(x, MEAN, STD), True)


# ------------------------------------------------------------------------------- training


def train(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    seed: int,
    args: argparse.Namespace,
    loss: LossConfig,
    views: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    tag: str = "",
    augmentation: str = "crop",
    start_epoch: int = 0,
    optimizer_state: dict | None = None,
    stop_after: int | None = None,
    on_epoch: Callable[[int, torch.nn.Module, torch.optim.Optimizer], None] | None = None,
    lr: float | None = None,
) -> float:
    """SGD (Nesterov 0.9, wd 5e-4), cosine per step; returns the seconds spent.

    ``views``/``teacher_logits`` (E, N, ...): epoch e trains on view e; without them each epoch
    draws a fresh random crop + flip (``augmentation="crop"``) or flip only (``"flip"``) from a
    generator seeded by ``seed``.

    For ``auto`` (a pilot and its continuation): ``start_epoch`` and ``optimizer_state`` resume
    an ``epochs`` schedule (the batch order and the views of an epoch depend on the epoch only,
    the learning rate on the step), ``stop_after`` ends it early, and ``on_epoch(epoch, model,
    optimizer)`` runs after every epoch (the model is put back in train mode afterwards).
    """
    started = time.perf_counter()
    lr = args.lr if lr is None else lr
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)  # fmt: skip
    loss_fn = DistillationLoss(loss, epochs)
    n = len(labels)
    steps_per_epoch = math.ceil(n / args.batch_size)
    total, step = epochs * steps_per_epoch, start_epoch * steps_per_epoch
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    aug_gen = torch.Generator().manual_seed(10_000 + seed)
    for epoch in range(start_epoch, stop_after or epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        if views is not None:
            epoch_x = views[epoch]
        elif augmentation == "crop":
            epoch_x = augment(images, aug_gen)
        else:
            flip = torch.rand(n, generator=aug_gen) < 0.5
            epoch_x = torch.where(flip.view(n, 1, 1, 1), images.flip(3), images)
        for i in range(0, n, args.batch_size):
            idx = order[i : i + args.batch_size]
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            logits = model(normalize(epoch_x[idx]))
            t = teacher_logits[epoch][idx] if teacher_logits is not None else logits.detach()
            out = loss_fn(logits, t, labels[idx], epoch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            step += 1
        if tag:
            print(f"  {tag} epoch {epoch}: loss {float(out.loss.detach()):.3f}, "
                  f"{time.perf_counter() - started:.0f}s", flush=True)  # fmt: skip
        if on_epoch is not None:
            on_epoch(epoch, model, opt)
            model.train()
    return time.perf_counter() - started


@torch.no_grad()
def logits_of(model: torch.nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [model(normalize(images[i : i + batch])) for i in range(0, len(images), batch)]
    )


def evaluate(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    pred = logits.argmax(1)
    cats = labels == CAT
    return {
        "top1": float((pred == labels).float().mean()),
        "cat_acc": float((pred[cats] == CAT).float().mean()),
        "cat_as_dog": float((pred[cats] == DOG).float().mean()),
        "per_class": [float((pred[labels == c] == c).float().mean()) for c in range(len(CLASSES))],
    }


def key_of(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:10]


def get_teacher(regime: str, args: argparse.Namespace, data: dict, views: torch.Tensor) -> dict:
    """Train (or load) the regime's teacher; return its statistics and the logits on the views."""
    epochs = {"weak": args.weak_epochs, "moderate": max(1, args.strong_epochs * 2 // 5)}.get(
        regime, args.strong_epochs
    )
    aug = "crop" if regime in ("weak", "moderate") else args.strong_augment
    noise = args.noise_fraction if regime == "biased" else 0.0
    settings = (args.teacher_arch, epochs, aug, noise, args.train_size, args.batch_size, args.lr)
    path = args.cache_dir / f"regimes_teacher_{regime}_{key_of(*settings, views.shape)}.pt"
    clean = data["train_y"]
    labels = noisy_labels(clean, noise) if noise else clean
    if path.exists():
        print(f"{regime} teacher loaded from {path}", flush=True)
        return torch.load(path)
    torch.manual_seed(DATA_SEED)
    model = build_model(args.teacher_arch, len(CLASSES), 3)
    print(f"training the {regime} teacher: {args.teacher_arch}, {epochs} epochs ({aug}), "
          f"{int((labels != clean).sum())} cats relabelled as dogs", flush=True)  # fmt: skip
    seconds = train(model, data["train_x"], labels, epochs, DATA_SEED, args,
                    LossConfig(method="ce", bias_aware=False), tag=f"{regime} teacher",
                    augmentation=aug)  # fmt: skip
    train_pred = logits_of(model, data["train_x"]).argmax(1)
    bank = torch.stack([logits_of(model, v) for v in views])  # (E, N, C)
    relabelled = labels != clean
    info = {
        "regime": regime, "arch": args.teacher_arch, "epochs": epochs, "augmentation": aug,
        "noise_fraction": noise, "state_dict": model.state_dict(),
        "params": count_params(model), "seconds": seconds,
        "n_relabelled": int(relabelled.sum()),
        "train_error": float((train_pred != clean).float().mean()),  # un-augmented, clean labels
        "train_error_own_labels": float((train_pred != labels).float().mean()),
        "relabelled_predicted_dog": float((train_pred[relabelled] == DOG).float().mean())
        if noise else None,
        "view_wrong_fraction": float((bank.argmax(2) != clean).float().mean()),
        "test": evaluate(logits_of(model, data["test_x"]), data["test_y"]),
        "bank": bank,
    }  # fmt: skip
    torch.save(info, path)
    return info


# -------------------------------------------------------------- derived student (issue #25)


def make_derived(args: argparse.Namespace, data: dict, teacher: dict) -> dict[str, Any]:
    """The biased teacher pruned (the product's Torch-Pruning trajectory) to the step nearest
    ``DERIVED_MACS`` of its MACs, BatchNorm recomputed on 512 un-augmented training images as
    ``compressor.models.pruning.prepare_derived`` does: the student that inherits the teacher's
    bias."""
    model = build_model(args.teacher_arch, len(CLASSES), 3)
    model.load_state_dict(teacher["state_dict"])
    trajectory = prune_trajectory(model.eval(), args.teacher_arch, len(CLASSES), (3, 32, 32))
    point = min(trajectory.points, key=lambda p: abs(p.macs_ratio - DERIVED_MACS))
    pick = torch.randperm(len(data["train_y"]), generator=torch.Generator().manual_seed(0))
    pick = pick[:512].sort().values
    used = recalibrate_batchnorm(point.model, (normalize(data["train_x"][pick[i : i + 64]])
                                               for i in range(0, len(pick), 64)))  # fmt: skip
    return {
        "model": point.model.eval(), "name": point.name, "macs_ratio": point.macs_ratio,
        "params": point.params, "bn_images": used,
        "test_before_training": evaluate(logits_of(point.model, data["test_x"]), data["test_y"]),
    }  # fmt: skip


def initial_student(args: argparse.Namespace, seed: int, derived: dict | None) -> torch.nn.Module:
    """The seed's fresh student (the same for every row and regime), or a copy of the derived
    student (the same for every seed: the seed then fixes the batch order only)."""
    if derived is not None:
        return copy.deepcopy(derived["model"]).train()
    torch.manual_seed(seed)
    return build_model(args.student_arch, len(CLASSES), 3)


# ------------------------------------------------------------------- auto (issue #15 B)


def train_files(args: argparse.Namespace) -> list[list[Path]]:
    """The training files ``load_data`` picked, per class (its generator replayed)."""
    g = torch.Generator().manual_seed(DATA_SEED)
    picked = []
    for name in CLASSES:  # the train split is drawn first, so the test split does not matter
        files = sorted((args.data / "train" / name).glob("*.jpg"))
        pick = torch.randperm(len(files), generator=g)[: args.train_size // len(CLASSES)]
        picked.append([files[i] for i in pick.sort().values.tolist()])
    return picked


def load_val(args: argparse.Namespace, data: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``auto``'s validation split: VAL_PER_CLASS seeded images per class from CIFAR ``train/``
    that are not among the training images (checked by file and by pixels) and not the test set.
    """
    n = VAL_PER_CLASS * len(CLASSES)
    cache = args.cache_dir / f"regimes_val_n{n}_s{VAL_SEED}_train{args.train_size}_s{DATA_SEED}.pt"
    if cache.exists():
        return torch.load(cache)
    picked = train_files(args)
    if not torch.equal(torch.cat([_decode(f) for f in picked]), data["train_x"]):
        raise SystemExit("replaying load_data's draw did not give the cached training images")
    g = torch.Generator().manual_seed(VAL_SEED)
    xs, ys, names = [], [], []
    for label, (name, used) in enumerate(zip(CLASSES, picked, strict=True)):
        taken = set(used)
        rest = [f for f in sorted((args.data / "train" / name).glob("*.jpg")) if f not in taken]
        pick = torch.randperm(len(rest), generator=g)[:VAL_PER_CLASS].sort().values.tolist()
        files = [rest[i] for i in pick]
        xs.append(_decode(files))
        ys.append(torch.full((len(files),), label, dtype=torch.long))
        names += [str(f.relative_to(args.data)) for f in files]
    val_x = torch.cat(xs)

    def digests(x: torch.Tensor) -> set[bytes]:
        return {hashlib.sha1(img.numpy().tobytes()).digest() for img in x}

    seen = digests(val_x)
    val = {
        "val_x": val_x, "val_y": torch.cat(ys), "files": names,
        "file_overlap_with_train": len({str(f) for c in picked for f in c}
                                       & {str(args.data / f) for f in names}),
        "pixel_equal_to_train": len(seen & digests(data["train_x"])),
        "pixel_equal_to_test": len(seen & digests(data["test_x"])),
    }  # fmt: skip
    torch.save(val, cache)
    return val


class AutoResult:
    """What the product's trainer returns that ``choose_and_train`` reads (``best_val_top1``),
    plus the student after the last epoch run and the best-on-validation weights."""

    def __init__(self, student: torch.nn.Module, best: dict, history: list[float]) -> None:
        self.student, self.history = student, history
        self.best_val_top1, self.best_epoch, self.best_state = (
            best["val"],
            best["epoch"],
            best["state"],
        )
        self.best_val_correct = best.get("correct")  # per image, for the paired test


def auto_trainer(
    args: argparse.Namespace, data: dict, val: dict, views: torch.Tensor, bank: torch.Tensor,
    seed: int, derived: dict | None = None,
) -> Callable[[LossConfig, Path, int | None], AutoResult]:  # fmt: skip
    """The ``Trainer`` of ``compressor.train.recipes`` around this script's lean loop.

    As in ``compressor.pipeline.runner._distill_stage``: every call starts from the seed's initial
    student, resumes from ``checkpoint`` when it exists (weights, optimizer, epoch, best
    validation so far), validates after every epoch, saves the checkpoint, and stops after
    ``stop_after`` epochs of the ``args.epochs`` schedule (None: the end).
    """

    def trainer(loss: LossConfig, checkpoint: Path, stop_after: int | None) -> AutoResult:
        student = initial_student(args, seed, derived)  # as every row of this seed
        start, opt_state = 0, None
        best: dict[str, Any] = {"val": -1.0, "epoch": 0, "state": None}
        history: list[float] = []
        if checkpoint.exists():
            state = torch.load(checkpoint)
            student.load_state_dict(state["student"])
            start, opt_state, best, history = (state["epoch"], state["optimizer"], state["best"],
                                               state["history"])  # fmt: skip

        def on_epoch(epoch: int, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
            correct = logits_of(model, val["val_x"]).argmax(1) == val["val_y"]
            top1 = float(correct.float().mean())
            history.append(top1)
            if top1 > best["val"]:
                best.update(val=top1, epoch=epoch + 1, state=copy.deepcopy(model.state_dict()),
                            correct=correct.tolist())  # fmt: skip
            torch.save({"epoch": epoch + 1, "student": model.state_dict(),
                        "optimizer": opt.state_dict(), "best": best, "history": history},
                       checkpoint)  # fmt: skip

        train(student, data["train_x"], data["train_y"], args.epochs, seed, args, loss, views,
              None if loss.method == "ce" else bank, start_epoch=start, optimizer_state=opt_state,
              stop_after=stop_after, on_epoch=on_epoch,
              lr=args.pruned_lr if derived is not None else None)  # fmt: skip
        return AutoResult(student, best, history)

    return trainer


def run_auto(
    args: argparse.Namespace, data: dict, val: dict, views: torch.Tensor, teacher: dict,
    regime: str, seed: int, cached: dict[tuple[str, str, int], dict], rule: str = AUTO,
    derived: dict | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One ``auto`` run (the product's choosing code) and, in the same process, one
    uninterrupted run of the recipe it chose: their wall times, and whether the continued
    pilot gives the same weights as the uninterrupted run and as the cached row.

    ``rule`` ``auto`` passes ``val_images`` and the per-image results (the paired test), as
    the product does; ``auto(max)`` passes neither (no margin), the rule before 6eb9352."""
    val_images = len(val["val_y"]) if rule == AUTO else None
    state_dir = args.cache_dir / "auto_state" / f"{regime}_s{seed}"
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    base = ROWS[args.auto_base]
    rows_of = {name: recipe_row(name, base) for name in args.auto_recipes}  # paired with the rows
    inner = auto_trainer(args, data, val, views, teacher["bank"], seed, derived)

    def trainer(loss: LossConfig, checkpoint: Path, stop_after: int | None) -> AutoResult:
        result = inner(loss, checkpoint, stop_after)
        if rule == AUTO_MAX:
            result.best_val_correct = None  # no paired test: the best pilot wins
        return result

    load = [os.getloadavg()[0]]
    timed: dict[str, Any] = {}

    def auto() -> None:
        began, cpu = time.perf_counter(), time.process_time()
        timed["final"], timed["choice"] = choose_and_train(
            args.auto_recipes, base, args.epochs, trainer, state_dir,
            on_pilot=lambda r: print(f"  pilot {r.recipe}: val top-1 {r.val_top1:.4f} "
                                     f"({r.seconds:.0f} s)", flush=True),
            val_images=val_images,
        )  # fmt: skip
        timed["auto_s"] = time.perf_counter() - began
        timed["auto_cpu_s"] = time.process_time() - cpu

    def single() -> None:  # the chosen recipe alone, from scratch, to the end
        began, cpu = time.perf_counter(), time.process_time()
        timed["single"] = trainer(recipe_loss(timed["choice"].winner, base),
                                  state_dir / "single.pt", None)  # fmt: skip
        timed["single_s"] = time.perf_counter() - began
        timed["single_cpu_s"] = time.process_time() - cpu

    auto()  # the single run needs the winner; its timing is next to auto's, in this process
    load.append(os.getloadavg()[0])
    final, choice = timed["final"], timed["choice"]
    test = evaluate(logits_of(final.student, data["test_x"]), data["test_y"])
    same, alone_top1 = None, None
    if not args.skip_single:
        single()
        load.append(os.getloadavg()[0])
        alone = timed["single"]
        same = all(torch.equal(a, b) for a, b in zip(final.student.state_dict().values(),
                                                      alone.student.state_dict().values(),
                                                      strict=True))  # fmt: skip
        alone_top1 = evaluate(logits_of(alone.student, data["test_x"]), data["test_y"])["top1"]
    shipped = initial_student(args, seed, derived)  # what the product would ship
    shipped.load_state_dict(final.best_state)
    row = rows_of[choice.winner]
    cached_run = cached.get(("all" if row == "ce" and regime != DERIVED else regime, row, seed))
    shutil.rmtree(state_dir, ignore_errors=True)
    return {
        "regime": regime, "row": rule, "seed": seed, "test": test,
        "winner": choice.winner, "winner_row": row, "choice": choice.to_dict(),
        "val_images": val_images, "incumbent": choice.incumbent, "margin": choice.margin,
        "base_row": args.auto_base, "pilot_rows": rows_of,
        "seconds": timed["auto_s"], "single_seconds": timed.get("single_s"),
        "cpu_seconds": timed["auto_cpu_s"], "single_cpu_seconds": timed.get("single_cpu_s"),
        "single_top1": alone_top1, "continued_equals_single": same,
        "cached_row_top1": cached_run["test"]["top1"] if cached_run else None,
        "best_val_epoch": final.best_epoch, "best_val_top1": final.best_val_top1,
        "val_history": final.history,
        "best_val_state_test_top1": evaluate(logits_of(shipped, data["test_x"]),
                                             data["test_y"])["top1"],
        "loadavg_1min": load,
    }  # fmt: skip


# -------------------------------------------------------------------------------- report


def paired(diffs: list[float]) -> dict[str, Any]:
    """Mean, sample std, wins, t and two-sided p of paired differences (p needs scipy)."""
    n, mean = len(diffs), statistics.mean(diffs)
    sd = statistics.stdev(diffs) if n > 1 else 0.0
    t = mean / (sd / math.sqrt(n)) if n > 1 and sd > 0 else float("nan")
    p = float("nan")
    try:
        from scipy import stats

        p = float(2 * stats.t.sf(abs(t), n - 1)) if math.isfinite(t) else p
    except ImportError:
        pass
    return {"n": n, "mean": mean, "sd": sd, "wins": sum(d > 0 for d in diffs), "t": t, "p": p}


def pm(values: list[float], sign: str = "") -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):{sign}.2f} ± {100 * sd:.2f}"


def _by_cell(out: dict[str, Any]) -> dict[tuple[str, str], dict[int, dict]]:
    """``{(regime, row): {seed: run}}``; the shared ``ce`` runs appear under every regime."""
    cells: dict[tuple[str, str], dict[int, dict]] = {}
    for r in out["runs"]:
        fresh = [g for g in REGIMES if g != DERIVED]  # the shared ce runs: fresh students
        for regime in fresh if r["regime"] == "all" else [r["regime"]]:
            cells.setdefault((regime, r["row"]), {})[r["seed"]] = r
    return cells


def _row(cells: dict, regime: str, row: str) -> dict[str, Any] | None:
    """Accuracies of one (regime, row) and its paired differences to its base, or None."""
    got = cells.get((regime, row), {})
    if not got:
        return None
    seeds = sorted(got)
    base = cells.get((regime, BASE.get(row, "")), {})
    common = [k for k in seeds if k in base]
    diff = {key: [got[k]["test"][key] - base[k]["test"][key] for k in common]
            for key in ("top1", "cat_acc")}  # fmt: skip
    return {
        "acc": [got[k]["test"]["top1"] for k in seeds],
        "cat": [got[k]["test"]["cat_acc"] for k in seeds],
        "vs": paired(diff["top1"]) if common else None,
        "cat_vs": diff["cat_acc"],
    }


def markdown(out: dict[str, Any]) -> str:
    """The tables of docs/benchmarks.md: one per regime, then test top-1 by regime and row."""
    cells, lines = _by_cell(out), []
    regimes = [g for g in REGIMES if g in out["teachers"]]
    for regime in regimes:
        lines += [f"**{regime}**", "",
                  "| row | test top-1 % | vs base, paired (mean ± sd) | better on | t | p "
                  "| cat % | cat vs base | seeds 0 / 1 / 2 ... |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
        for row in ROWS:
            if (r := _row(cells, regime, row)) is None:
                continue
            vs = ["", "", "", "", ""]
            if d := r["vs"]:
                vs = [f"{100 * d['mean']:+.2f} ± {100 * d['sd']:.2f} vs `{BASE[row]}`",
                      f"{d['wins']}/{d['n']}", f"{d['t']:+.1f}", f"{d['p']:.2f}",
                      pm(r["cat_vs"], "+")]  # fmt: skip
            lines.append(f"| `{row}` | {pm(r['acc'])} | {vs[0]} | {vs[1]} | {vs[2]} | {vs[3]} | "
                         f"{pm(r['cat'])} | {vs[4]} | "
                         + " / ".join(f"{100 * v:.2f}" for v in r["acc"]) + " |")  # fmt: skip
        lines.append("")
    lines += ["| row | " + " | ".join(regimes) + " |", "| --- |" + " ---: |" * len(regimes)]
    for row in ROWS:
        means = []
        for regime in regimes:
            got = cells.get((regime, row), {})
            means.append(f"{100 * statistics.mean(r['test']['top1'] for r in got.values()):.2f}"
                         if got else "")  # fmt: skip
        if any(means):
            lines.append(f"| `{row}` | " + " | ".join(means) + " |")
    if auto := auto_markdown(out):
        lines += ["", auto]
    return "\n".join(lines)


def auto_markdown(out: dict[str, Any]) -> str:
    """The ``auto`` rows, one rule after the other (``auto(max)``, the rule before 6eb9352, then
    ``auto``): per seed (pilots, incumbent and margin, choice, test, equality, times), then per
    regime against the best single recipe (of auto's recipes, and of every row of the table)."""
    return "\n\n".join(t for rule in (AUTO_MAX, AUTO) if (t := _auto_rule_markdown(out, rule)))


def _auto_rule_markdown(out: dict[str, Any], rule: str) -> str:
    cells = _by_cell(out)
    runs = sorted((r for r in out["runs"] if r["row"] == rule),
                  key=lambda r: (REGIMES.index(r["regime"]), r["seed"]))  # fmt: skip
    if not runs:
        return ""
    settings = out["auto_settings"]
    recipes = settings["recipes"]

    def row_top1(regime: str, row: str, seed: int) -> float | None:
        run = cells.get((regime, row), {}).get(seed)
        return run["test"]["top1"] if run else None

    lines = [f"`{rule}`: {AUTO_RULES[rule]}; base loss `{settings.get('base_row', 'kd')}`; "
             f"{settings['pilot_epochs']}-epoch pilots of {', '.join(recipes)}; validation: "
             f"{settings['val']}", "",
             f"| regime | seed | pilot val top-1 % ({' / '.join(recipes)}) | incumbent "
             "| paired test: gained / lost, p | chosen | auto test top-1 % | incumbent's row, "
             "same seed | switch paid off? | test top-1 % of the best-val epoch (epoch) "
             "| auto s wall (CPU) |",
             "| --- | ---: | --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: |",
             ]  # fmt: skip
    for r in runs:
        pilots = {p["recipe"]: p["val_top1"] for p in r["choice"]["pilots"]}
        best = max(pilots.values())
        held = r["choice"].get("incumbent") or recipes[0]
        rows_of = r.get("pilot_rows") or {}
        test = r["choice"].get("test")
        paired = (f"{test['gained']} / {test['lost']}, p = {test['p_value']:.3f} "
                  f"(`{test['challenger']}`)" if test else "")  # fmt: skip
        held_top1 = row_top1(r["regime"], rows_of.get(held, ""), r["seed"])
        switched = r["winner"] != held
        paid = ""
        if switched and held_top1 is not None:
            gain = 100 * (r["test"]["top1"] - held_top1)
            paid = f"{'yes' if gain > 0 else 'no'} ({gain:+.2f})"
        lines.append(
            f"| {r['regime']} | {r['seed']} | "
            + " / ".join(f"**{100 * pilots[k]:.1f}**" if pilots[k] == best
                         else f"{100 * pilots[k]:.1f}" for k in recipes) + " | "
            + f"`{held}` | {paired} | `{r['winner']}` | {100 * r['test']['top1']:.2f} | "
            + ("" if held_top1 is None else f"{100 * held_top1:.2f}") + f" | {paid} | "
            f"{100 * r['best_val_state_test_top1']:.2f} ({r['best_val_epoch']}) | "
            f"{r['seconds']:.0f} ({r['cpu_seconds']:.0f}) |"
        )  # fmt: skip
    lines += ["", f"| regime | `{rule}`, mean | best single recipe of auto's, mean | auto - it, "
              "paired (mean ± sd) | within 0.5? | switches | switches that paid off |",
              "| --- | ---: | ---: | ---: | --- | ---: | ---: |"]  # fmt: skip
    total_switches = 0
    for regime in REGIMES:
        got = {r["seed"]: r for r in runs if r["regime"] == regime}
        if not got:
            continue
        seeds = sorted(got)
        auto = [got[k]["test"]["top1"] for k in seeds]
        scored = []
        for row in {*(got[seeds[0]].get("pilot_rows") or {}).values()}:
            cell = cells.get((regime, row), {})
            if all(k in cell for k in seeds):
                scored.append((row, [cell[k]["test"]["top1"] for k in seeds]))
        switches = [k for k in seeds if got[k]["winner"] != got[k]["choice"].get("incumbent")]
        total_switches += len(switches)
        paid = 0
        for k in switches:
            rows_of = got[k]["pilot_rows"]
            held = row_top1(regime, rows_of[got[k]["choice"]["incumbent"]], k)
            paid += held is not None and got[k]["test"]["top1"] > held
        cols = ["", "", ""]
        if scored:
            name, accs = max(scored, key=lambda x: statistics.mean(x[1]))
            d = [a - b for a, b in zip(auto, accs, strict=True)]
            sd = statistics.stdev(d) if len(d) > 1 else 0.0
            mean = 100 * statistics.mean(d)
            cols = [f"`{name}` {100 * statistics.mean(accs):.2f}", f"{mean:+.2f} ± {100 * sd:.2f}",
                    "yes" if mean >= -0.5 else "no"]  # fmt: skip
        lines.append(f"| {regime} | {100 * statistics.mean(auto):.2f} | " + " | ".join(cols)
                     + f" | {len(switches)}/{len(seeds)} | {paid}/{len(switches)} |")  # fmt: skip
    lines += ["", f"switches: {total_switches} of {len(runs)} runs"]
    return "\n".join(lines)


def report(out: dict[str, Any]) -> str:
    env, s = out["env"], out["settings"]
    lines = [
        f"command: {out['command']}",
        f"hardware: {env['cpu']}, {env['cores']} cores, {env['torch_threads']} torch thread(s)",
        f"versions: python {env['python']}, torch {env['torch']}, torchvision "
        f"{env['torchvision']}, compressor {env['compressor']} (git {env['git']})",
        f"data: {s['train_size']} train / {s['test_size']} test images (class-balanced); student "
        f"{s['student_arch']} {s['epochs']} epochs, batch {s['batch_size']}, lr {s['lr']}",
    ]
    cells = _by_cell(out)
    for regime in REGIMES:
        if regime not in out["teachers"]:
            continue
        t = out["teachers"][regime]
        lines += [
            "",
            f"== {regime}: teacher {t['arch']} {t['epochs']} epochs ({t['augmentation']})"
            + (f", {t['n_relabelled']} train cats labelled dog" if t["n_relabelled"] else "")
            + f": test top-1 {100 * t['test']['top1']:.2f}%, cat {100 * t['test']['cat_acc']:.1f}%"
            f"; un-augmented train error {100 * t['train_error']:.2f}% (clean labels)"
            f"; wrong on {100 * t['view_wrong_fraction']:.1f}% of the augmented views"
            + (
                f"\n   student: {d['name']} ({d['params']} params, {d['macs_ratio']:.2f}x MACs), "
                f"test {100 * d['test_before_training']['top1']:.2f}% before training (cat "
                f"{100 * d['test_before_training']['cat_acc']:.1f}%), lr {s['pruned_lr']}"
                if (d := t.get("derived_student"))
                else ""
            ),
            f"{'row':<22} {'test top-1 %':>14} {'cat %':>12} {'vs base (paired)':>30} "
            f"{'cat vs base':>14}  per seed",
        ]
        for row in ROWS:
            if (r := _row(cells, regime, row)) is None:
                continue
            vs = cat_vs = ""
            if d := r["vs"]:
                vs = (f"{100 * d['mean']:+.2f} ± {100 * d['sd']:.2f} vs {BASE[row]} "
                      f"{d['wins']}/{d['n']} p={d['p']:.2f}")  # fmt: skip
                cat_vs = pm(r["cat_vs"], "+")
            lines.append(
                f"{row:<22} {pm(r['acc']):>14} {pm(r['cat']):>12} {vs:>30} {cat_vs:>14}  "
                + " ".join(f"{100 * v:.2f}" for v in r["acc"])
            )
    if auto := auto_markdown(out):
        lines += ["", auto]
    lines.append(f"\nwall time: {out['wall_seconds'] / 60:.1f} min (this invocation)")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")]
    git_cmd = ["git", "-C", str(Path(__file__).parent), "describe", "--always", "--dirty"]
    return {
        "cpu": names[0] if names else platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "compressor": importlib.metadata.version("compressor"),
        "git": subprocess.run(git_cmd, capture_output=True, text=True).stdout.strip(),
    }


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = {k: getattr(args, k) for k in PRESETS["cpu"]}
    old = json.loads(args.out.read_text()) if args.out.exists() else None
    for r in old["runs"] if old else []:
        if r["row"] == AUTO and "incumbent" not in r["choice"]:  # before 6eb9352: the old rule
            r.update(row=AUTO_MAX, renamed_from=AUTO)
        if r["row"] in RENAMED:  # before issue #25 the subset weighting had no name
            r.update(row=RENAMED[r["row"]], renamed_from=r["row"])
    if args.report_only and old:
        for path in args.also:  # runs made by parallel invocations (other --out files)
            more = json.loads(path.read_text())
            old["teachers"].update(more["teachers"])
            old["runs"] += more["runs"]
            if not old.get("auto_settings"):
                old["auto_settings"] = more.get("auto_settings")
            old["invocations"] = [*old.get("invocations", []), *more.get("invocations", [])]
    if args.report_only:
        print((markdown if args.markdown else report)(old) if old else f"no results at {args.out}")
        return
    done: dict[tuple[str, str, int], dict] = {}
    if old and {**old["settings"], "seeds": 0} == {**settings, "seeds": 0}:
        done = {(r["regime"], r["row"], r["seed"]): r for r in old["runs"]}
    out: dict[str, Any] = {
        "command": "python " + shlex.join(sys.argv), "env": environment(), "settings": settings,
        "loss_configs": {k: str(v) for k, v in ROWS.items()},
        "teachers": old["teachers"] if done else {}, "runs": list(done.values()),
        "wall_seconds": 0.0,
    }  # fmt: skip
    # earlier invocations whose runs are reused keep their command, environment and wall time
    history = ((old.get("invocations") or [{k: old[k] for k in ("command", "env", "wall_seconds")}])
               if done else [])  # fmt: skip
    if done and "auto_settings" in old:
        out["auto_settings"] = old["auto_settings"]
    data = load_data(args)
    print(f"data: {len(data['train_y'])} train, {len(data['test_y'])} test", flush=True)
    g = torch.Generator().manual_seed(DATA_SEED + 2)  # the same views for every regime and row
    views = torch.stack([augment(data["train_x"], g) for _ in range(args.epochs)])
    val = None
    if set(AUTO_ROWS) & set(args.rows):
        val = load_val(args, data)
        out["auto_settings"] = {
            "recipes": args.auto_recipes, "base_row": args.auto_base,
            "base_loss": str(ROWS[args.auto_base]), "rules": AUTO_RULES,
            "val_images": len(val["val_y"]),
            "pilot_epochs": pilot_epochs(args.epochs), "total_epochs": args.epochs,
            "val": f"{len(val['val_y'])} images, {VAL_PER_CLASS} per class, from CIFAR-10 train/ "
                   f"minus the {args.train_size} training images (seed {VAL_SEED}); "
                   f"{val['file_overlap_with_train']} files shared with train, "
                   f"{val['pixel_equal_to_train']} pixel-identical to a training image, "
                   f"{val['pixel_equal_to_test']} to a test image",
        }  # fmt: skip
        print(f"auto: {out['auto_settings']}", flush=True)

    def save() -> None:
        out["wall_seconds"] = time.perf_counter() - started
        out["invocations"] = [*history, {k: out[k] for k in ("command", "env", "wall_seconds")}]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))

    for regime in args.regimes:
        teacher = get_teacher("biased" if regime == DERIVED else regime, args, data, views)
        out["teachers"][regime] = {
            k: v for k, v in teacher.items() if k not in ("bank", "state_dict")
        }
        derived = None
        if regime == DERIVED:
            derived = make_derived(args, data, teacher)
            out["teachers"][regime]["derived_student"] = {
                k: v for k, v in derived.items() if k != "model"
            }
            print(f"derived student {derived['name']}: {derived['params']} params, test "
                  f"{derived['test_before_training']['top1']:.4f} before training (cat "
                  f"{derived['test_before_training']['cat_acc']:.3f})", flush=True)  # fmt: skip
        print(f"{regime} teacher: test {teacher['test']['top1']:.4f}, un-augmented train error "
              f"{teacher['train_error']:.4f}, wrong views {teacher['view_wrong_fraction']:.4f}",
              flush=True)  # fmt: skip
        if regime == "strong" and teacher["train_error"] >= 0.05:
            print("WARNING: the strong teacher's train error is not under 5%", flush=True)
        save()
        for seed in range(args.seeds):
            for row in args.rows:
                # ce uses no teacher: one run serves every regime of the fresh student
                where = "all" if row == "ce" and regime != DERIVED else regime
                if (where, row, seed) in done:
                    continue
                if row in AUTO_ROWS:
                    assert val is not None
                    run = run_auto(args, data, val, views, teacher, regime, seed, done, row,
                                   derived)  # fmt: skip
                    done[(where, row, seed)] = run
                    out["runs"].append(run)
                    save()
                    print(f"{regime} {row} seed {seed}: {run['winner']} chosen (incumbent "
                          f"{run['incumbent']}, test {run['choice']['test']}), test "
                          f"{run['test']['top1']:.4f} (uninterrupted {run['single_top1']}, "
                          f"cached row {run['cached_row_top1']}), weights equal: "
                          f"{run['continued_equals_single']}; {run['seconds']:.0f} s",
                          flush=True)  # fmt: skip
                    continue
                student = initial_student(args, seed, derived)  # the same for every row
                bank = None if row == "ce" else teacher["bank"]
                seconds = train(student, data["train_x"], data["train_y"], args.epochs, seed,
                                args, ROWS[row], views, bank,
                                lr=args.pruned_lr if derived else None)  # fmt: skip
                test = evaluate(logits_of(student, data["test_x"]), data["test_y"])
                run = {"regime": where, "row": row, "seed": seed, "seconds": seconds,
                       "warmup_epochs": DistillationLoss(ROWS[row], args.epochs).warmup_epochs,
                       "test": test}  # fmt: skip
                done[(where, row, seed)] = run
                out["runs"].append(run)
                save()
                print(f"{where} {row} seed {seed}: test {test['top1']:.4f}, cat "
                      f"{test['cat_acc']:.3f}, {seconds:.0f}s", flush=True)  # fmt: skip
    save()
    print("\n" + report(out) + f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
