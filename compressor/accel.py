"""Speed settings of the training step: precision, memory format, teacher folding, compile.

The distillation loop asks this module *how* to run fast on a device and never hard-codes it:
bf16 autocast on CUDA (fp16 with a gradient scaler where the GPU has no bf16), fp32 on CPU
unless asked otherwise; channels-last tensors for convolutions; a frozen teacher whose
batch-norm layers are folded into the preceding convolutions (checked against the unfolded
teacher on real images before it is used); and an opt-in ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from compressor.errors import CompressorError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_BACKEND = "inductor"  # tests swap in "eager": compiling C++ kernels takes a minute
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_log = logging.getLogger(__name__)


def check_precision(requested: str) -> None:
    """One clear line for a precision name that does not exist."""
    if requested not in PRECISIONS:
        raise CompressorError(
            f"unknown precision '{requested}' (choose one of: {', '.join(PRECISIONS)})"
        )


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto``: bf16 on a CUDA GPU that has it, fp16 on one that does not, fp32 on CPU."""
    check_precision(requested)
    if requested != "auto":
        if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise CompressorError(
                f"precision bf16 requested but {torch.cuda.get_device_name(device)} does not "
                "support it; use --precision fp16 or auto"
            )
        return requested
    if device.type != "cuda":
        return "fp32"  # CPU autocast is slower than fp32 on CPUs without bf16/fp16 units
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    """The autocast context for ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler, active only for fp16: its narrow exponent underflows small gradients."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


@dataclass(frozen=True)
class StepSettings:
    """How the training step runs on one device; recorded in the report."""

    device: str
    precision: str
    channels_last: bool
    compiled: bool
    teacher_batchnorm_folded: bool = False
    teacher_dtype: str = "float32"  # the frozen teacher's weights, cast once (see prepare_teacher)
    batch_per_rank: int = 0  # samples per optimiser step on each process
    world_size: int = 1
    lr: float = 0.0  # the peak learning rate used (scaled with world_size, distill.py)
    nhwc_unsafe_layer: str | None = None  # why the CPU step runs NCHW (nhwc_unsafe_layer())

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def resolve_channels_last(requested: bool | None, device: torch.device) -> bool:
    """``None``: NHWC on CUDA (tensor cores want it) and on CPU (oneDNN convolutions are
    faster in it: 1.2-1.4x for the whole distillation step, docs/throughput.md)."""
    return device.type in ("cuda", "cpu") if requested is None else requested


ONEDNN_IC_BLOCK = 16  # input channels per oneDNN block on AVX-512 (8 on AVX2)


def nhwc_unsafe_layer(model: nn.Module) -> str | None:
    """The first convolution whose NHWC backward pass oneDNN gets wrong on CPU, or None.

    A 1x1 convolution with stride > 1 and fewer input channels (per group) than oneDNN's
    block writes past its workspace when computing weight gradients in NHWC
    (uxlfoundation/oneDNN#6035, open): "double free or corruption" aborts, or silently wrong
    gradients, seen here with torch 2.14.1 for 8 -> 16 channels at 64 px and more (the
    shortcut of ``cifar_resnet*_w8``). Such students train NCHW on CPU.
    """
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.Conv2d)
            and module.kernel_size == (1, 1)
            and module.stride != (1, 1)
            and module.in_channels // module.groups < ONEDNN_IC_BLOCK
        ):
            return name
    return None


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """NHWC strides for 4-D image batches when asked; other tensors unchanged."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matmuls inside the block (restored after).

    Ampere and later GPUs run fp32 convolutions in TF32 by default (10-bit mantissa, about
    1e-3 relative error), which is as large as the tolerance of the folding check: with it on,
    folding would be rejected at random on those GPUs. A no-op for CPU computations.
    """
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, bool]:
    """``model`` with eval-mode BatchNorm folded into the convolutions, if that is safe.

    Folding removes a memory-bound pass per layer, which is most of what a small convnet's
    forward costs on a CPU. It needs an FX-traceable ``nn.Module``; TorchScript teachers and
    models with data-dependent control flow are returned unchanged. The folded copy is used
    only if it reproduces the original's logits on ``example``.
    """
    if isinstance(model, torch.jit.ScriptModule) or not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        return model, False
    try:
        from torch.fx.experimental.optimization import fuse

        folded = fuse(copy.deepcopy(model).eval())
        with torch.no_grad(), exact_fp32():
            want = model(example).float()
            got = folded(example).float()
    except Exception as exc:  # not traceable: the unfolded teacher is correct, only slower
        _log.debug("batch-norm folding skipped: %s", exc)
        return model, False
    scale = float(want.abs().max().clamp_min(1.0))
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-3 * scale):
        return model, False
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded, True


def configure_device(device: torch.device) -> None:
    """Process-wide settings for training on ``device``: cuDNN autotuning on CUDA.

    The step's shapes are fixed (full batches only when compiled, one short batch per epoch
    otherwise), so ``cudnn.benchmark`` pays its search once per shape and then picks the
    fastest convolution algorithms.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def contains_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` normalises with batch statistics, also where no module shows it.

    TorchScript files and ``torch.export`` programs keep BatchNorm as operators in a graph, not
    as module instances, so their graphs are read too. Casting such a teacher would put its
    running statistics in bf16/fp16, which degrades its logits.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return True
        if isinstance(module, torch.jit.ScriptModule) and "batch_norm" in str(module.inlined_graph):
            return True
        if isinstance(module, torch.fx.GraphModule) and any(
            node.op == "call_function" and "batch_norm" in str(node.target)
            for node in module.graph.nodes
        ):
            return True
    return False


def teacher_dtype(model: nn.Module, device: torch.device, precision: str) -> torch.dtype | None:
    """The dtype to cast the frozen teacher to once, or None to keep it in fp32.

    Under autocast every step re-casts fp32 weights to bf16/fp16; a teacher already in that
    dtype is used as is, with the same numbers (autocast would produce the same casts). Only on
    CUDA (CPU half-precision kernels are slow or missing) and only when no batch-norm layer is
    left (folded or absent, :func:`contains_batchnorm`): batch norm keeps fp32 parameters under
    autocast.
    """
    if device.type != "cuda" or precision not in _DTYPES:
        return None
    if contains_batchnorm(model):
        return None
    return _DTYPES[precision]


def prepare_teacher(
    teacher: nn.Module,
    device: torch.device,
    channels_last: bool,
    example: torch.Tensor,
    precision: str = "fp32",
) -> tuple[nn.Module, bool]:
    """The frozen teacher on ``device``: eval mode, no gradients, folded, in the memory format,
    in the autocast dtype on CUDA (:func:`teacher_dtype`; call it under :func:`autocast`).

    ``example`` is a normalised float batch from the training data (on ``device``). The dtype
    cast and the memory format apply to a copy (the folded one, or a deep copy): the caller's
    teacher keeps its fp32 weights, because verification, int8 calibration and the report run
    it on CPU with fp32 input after training.
    """
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    prepared, folded = fold_batchnorm(teacher, example)
    dtype = teacher_dtype(prepared, device, precision)
    relayout = channels_last and not isinstance(prepared, torch.jit.ScriptModule)
    if prepared is teacher and (dtype is not None or relayout):
        prepared = copy.deepcopy(teacher)
    if dtype is not None:
        prepared = prepared.to(dtype)
    if relayout:
        prepared = prepared.to(memory_format=torch.channels_last)
    return prepared, folded


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` when asked; the returned module shares ``model``'s weights.

    ``dynamic=False``: shapes are specialised, never turned symbolic. The training loop feeds
    only full batches when compiling (distill.py drops an epoch's short last batch), so one
    graph serves every step; without this, the first odd shape would make dynamo recompile
    the whole step with symbolic shapes (slower kernels for every later step).
    TorchScript modules are already compiled by their own engine and are returned unchanged.
    Compilation happens lazily on the first call; :func:`compile_errors` turns its failures
    into one clear line.
    """
    if not enabled or isinstance(model, torch.jit.ScriptModule):
        return model
    try:
        return torch.compile(  # type: ignore[return-value]
            model, backend=COMPILE_BACKEND, dynamic=False
        )
    except Exception as exc:  # e.g. an unsupported Python or platform
        raise CompressorError(f"--compile failed: {exc}; run without --compile") from exc


@contextlib.contextmanager
def compile_errors(enabled: bool) -> Iterator[None]:
    """Report a torch.compile failure (no C++ compiler, unsupported op) as a CompressorError."""
    if not enabled:
        yield
        return
    from torch._dynamo.exc import TorchDynamoException

    try:
        yield
    except TorchDynamoException as exc:
        cause = getattr(exc, "inner_exception", None) or exc  # the backend's own error
        text = str(cause).strip()
        first = text.splitlines()[0] if text else type(cause).__name__
        raise CompressorError(f"--compile failed: {first}; run without --compile") from exc
