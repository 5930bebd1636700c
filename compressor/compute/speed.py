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
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from compressor.config.train import check_precision
from compressor.errors import CompressorError

COMPILE_BACKEND = "inductor"  # tests swap in "eager": compiling C++ kernels takes a minute
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_log = logging.getLogger(__name__)


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
    compile_mode: str | None = None  # "default", "reduce-overhead" (CUDA graphs), None: eager
    eager_reason: str | None = None  # why the step runs eagerly (resolve_compile)
    deterministic: bool = False  # cuDNN/cuBLAS deterministic algorithms (device_settings)
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


@dataclass(frozen=True)
class CompilePlan:
    """How the training step is compiled: ``mode`` None runs it eagerly, for ``reason``."""

    mode: str | None
    reason: str | None = None


def resolve_compile(
    requested: bool | None, device: torch.device, static_shapes: bool, world_size: int = 1
) -> CompilePlan:
    """The compile mode of the step: ``requested`` None is *auto*.

    Auto compiles on CUDA only, where the step is launch-bound (hundreds of small kernels per
    step, 8-10 us of CPU each, against 0.1-0.5 ms of GPU work for a 32-px batch): with
    ``mode="reduce-overhead"`` the forward and backward replay as CUDA graphs, one launch each.
    That needs static shapes (every batch full: ``static_shapes``) and one process (CUDA
    graphs and DDP's gradient hooks do not mix well; DDP gets the default mode). On CPU auto
    stays eager: compiling costs a minute and the step is compute-bound there.
    ``requested`` True compiles anywhere (CPU: default mode); False never compiles.
    """
    if requested is False:
        return CompilePlan(None, "--no-compile")
    if device.type != "cuda":
        if requested:
            return CompilePlan("default")
        return CompilePlan(None, "auto: eager on CPU, where the step is compute-bound")
    if not _has_triton():
        return CompilePlan(None, "triton is not installed (torch.compile needs it on CUDA)")
    if world_size > 1:
        return CompilePlan("default")
    if not static_shapes:
        if requested:
            return CompilePlan("default")
        return CompilePlan(
            None, "the training split per process is smaller than one batch: shapes vary"
        )
    return CompilePlan("reduce-overhead")


def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton
    except ImportError:  # an older torch: assume the compiler brings what it needs
        return True
    return bool(has_triton())


@contextlib.contextmanager
def device_settings(device: torch.device, deterministic: bool = False) -> Iterator[None]:
    """Process-wide settings for one training run on ``device``, restored when it ends.

    On CUDA: the current device is ``device`` (so bf16 support, pinned-memory threads and
    kernel launches all address the GPU the run uses, not GPU 0); cuDNN autotuning is on (the
    step's shapes are fixed, so ``cudnn.benchmark`` searches once per shape and then picks the
    fastest algorithms). ``deterministic``: deterministic algorithms everywhere, cuDNN
    autotuning off and a fixed cuBLAS workspace (``CUBLAS_WORKSPACE_CONFIG``), so two runs with
    the same seed give the same numbers on the same GPU, at some speed cost. Nothing leaks into
    the rest of the process: the previous flags come back afterwards.
    """
    cudnn = torch.backends.cudnn
    saved = (
        cudnn.benchmark,
        cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        os.environ.get(CUBLAS_WORKSPACE),
    )
    previous_device = None
    try:
        if device.type == "cuda":
            if device.index is not None:
                previous_device = torch.cuda.current_device()
                torch.cuda.set_device(device)
            cudnn.benchmark = not deterministic
        if deterministic:
            os.environ[CUBLAS_WORKSPACE] = os.environ.get(CUBLAS_WORKSPACE) or ":4096:8"
            cudnn.deterministic = True
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
        if saved[4] is None:
            os.environ.pop(CUBLAS_WORKSPACE, None)
        else:
            os.environ[CUBLAS_WORKSPACE] = saved[4]
        if previous_device is not None:
            torch.cuda.set_device(previous_device)


CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


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


def maybe_compile(model: nn.Module, mode: str | None) -> nn.Module:
    """``torch.compile(model, mode=mode)``, or ``model`` itself when ``mode`` is None; the
    compiled module shares ``model``'s weights.

    ``dynamic=False``: shapes are specialised, never turned symbolic. The training loop feeds
    only full batches when compiling (distill.py drops an epoch's short last batch), so one
    graph serves every step; without this, the first odd shape would make dynamo recompile
    the whole step with symbolic shapes (slower kernels for every later step).
    TorchScript modules are already compiled by their own engine and are returned unchanged.
    Compilation happens lazily on the first call; :func:`compile_errors` turns its failures
    into one clear line. ``mode`` is passed to inductor only (the test suite's ``eager``
    backend has no modes).
    """
    if mode is None or isinstance(model, torch.jit.ScriptModule):
        return model
    options = {"mode": mode} if COMPILE_BACKEND == "inductor" and mode != "default" else {}
    try:
        return torch.compile(  # type: ignore[return-value]
            model, backend=COMPILE_BACKEND, dynamic=False, **options
        )
    except Exception as exc:  # e.g. an unsupported Python or platform
        raise CompressorError(f"--compile failed: {exc}; run without --compile") from exc


def mark_step(mode: str | None) -> None:
    """Tell CUDA-graph trees a new training step begins (outputs of the last may be reused)."""
    if mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()


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
