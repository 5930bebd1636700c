"""Images per second of compressor's distillation step vs a plain reference loop, same run.

Reference (the usual way): torchvision ImageFolder + DataLoader (PIL decode, RandomCrop +
HorizontalFlip + ToTensor + Normalize per sample), fp32, teacher forward every step, Hinton KD.
compressor: images decoded once into a uint8 tensor (on the GPU when there is one), batched crop
and flip on the device, bias-aware KD, bf16 autocast + channels-last + fused SGD on CUDA.
Same teacher, student, batch size and number of timed steps; the ratio is the headline.

    python benchmarks/distill_throughput.py --data ../shared/datasets/cifar10 --steps 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torchvision
from torch import nn
from torchvision import transforms

from compressor.data import augment, load_image_folder, normalize
from compressor.distill import predict_logits, resolve_device
from compressor.losses import DistillationLoss, LossConfig, kd_loss
from compressor.report import hardware, versions
from compressor.students import build_model

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def reference_images_per_second(args: argparse.Namespace, teacher: nn.Module, student: nn.Module,
                                device: torch.device) -> float:  # fmt: skip
    random = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    tf = transforms.Compose(
        [*(random if args.augment else []), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    )
    dataset = torchvision.datasets.ImageFolder(f"{args.data}/train", transform=tf)
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[: args.subset]
    dataset = torch.utils.data.Subset(dataset, pick.tolist())
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=args.workers > 0,
    )  # fmt: skip
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    done, start = 0, 0.0
    for step, (x, y) in enumerate(loader):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, done = time.perf_counter(), 0
        if step == args.warmup + args.steps:
            break
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            t_logits = teacher(x)
        s_logits = student(x)
        loss = 0.5 * nn.functional.cross_entropy(s_logits, y) + 0.5 * kd_loss(
            s_logits, t_logits, 4.0
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        done += y.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def compressor_images_per_second(args: argparse.Namespace, teacher: nn.Module, student: nn.Module,
                                 device: torch.device, splits) -> tuple[float, float]:  # fmt: skip
    """(steady-state images/s, one-time teacher-cache seconds; 0 with augmentation)."""
    pick = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))
    pick = pick[: args.subset]
    images = splits.train.images[pick].to(device)
    labels = splits.train.labels[pick].to(device)
    cache_seconds, teacher_cache = 0.0, None
    if not args.augment:  # what distill() does without augmentation: teacher logits once
        began = time.perf_counter()
        teacher_cache = predict_logits(teacher, images, MEAN, STD, device)
        cache_seconds = time.perf_counter() - began
    cuda = device.type == "cuda"
    if cuda:
        student = student.to(memory_format=torch.channels_last)
    loss_fn = DistillationLoss(LossConfig(), total_epochs=10)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, fused=cuda or None)
    gen = torch.Generator(device=device).manual_seed(0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    order = torch.randperm(len(labels), device=device, generator=gen)
    done, start = 0, 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if cuda:
                torch.cuda.synchronize()
            start, done = time.perf_counter(), 0
        idx = order[(step * args.batch_size) % (len(order) - args.batch_size) :][: args.batch_size]
        x = normalize(augment(images[idx], gen) if args.augment else images[idx], MEAN, STD)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        y = labels[idx]
        with autocast:
            if teacher_cache is not None:
                t_logits = teacher_cache[idx.cpu()].to(device)
            else:
                with torch.no_grad():
                    t_logits = teacher(x)
            s_logits = student(x)
            loss = loss_fn(s_logits.float(), t_logits.float(), y, epoch=1)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done += y.shape[0]
    if cuda:
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start), cache_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/cifar10")
    parser.add_argument("--teacher", default="cifar_resnet20_w32")
    parser.add_argument("--student", default="cifar_resnet8_w16")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--subset", type=int, default=5000, help="training images used")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--epochs", type=int, default=30, help="for the amortised figure")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print("command: python " + " ".join(sys.argv))
    print(f"hardware: {hardware()}\nversions: {versions()}\ndevice: {device}")
    began = time.perf_counter()
    splits = load_image_folder(args.data, (3, 32, 32), seed=0, val_fraction=0.01)
    print(
        f"one-time decode of the data set into uint8 tensors: {time.perf_counter() - began:.1f} s"
    )
    rows = []
    for rep in range(args.repeats):  # interleaved, so machine noise hits both loops alike
        torch.manual_seed(rep)
        teacher = build_model(args.teacher, 10, 3).to(device).eval()
        ref = reference_images_per_second(
            args, teacher, build_model(args.student, 10, 3).to(device), device
        )
        student = build_model(args.student, 10, 3).to(device)
        ours, cache_s = compressor_images_per_second(args, teacher, student, device, splits)
        rows.append((ref, ours))
        print(
            f"repeat {rep + 1}: reference {ref:.0f} img/s, compressor {ours:.0f} img/s, "
            f"ratio {ours / ref:.2f}x"
        )
    ref = statistics.median(r for r, _ in rows)
    ours = statistics.median(o for _, o in rows)
    print("\n| loop | images/s (median of repeats) |\n| --- | ---: |")
    print(f"| reference (ImageFolder + DataLoader, fp32) | {ref:.0f} |")
    print(f"| compressor (uint8 cache, device augmentation) | {ours:.0f} |")
    print(f"| ratio (steady state) | {ours / ref:.2f}x |")
    if not args.augment:
        n, e = args.subset, args.epochs
        amortised = n * e / (cache_s + n * e / ours)
        print(
            f"| compressor, {e} epochs incl. the {cache_s:.0f} s teacher cache | {amortised:.0f} |"
        )
        print(f"| ratio over {e} epochs | {amortised / ref:.2f}x |")
    print(
        f"augmentation: {'random crop + flip' if args.augment else 'none'}; "
        f"training images: {args.subset}; batch {args.batch_size}; steps {args.steps}"
    )


if __name__ == "__main__":
    main()
