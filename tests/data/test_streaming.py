"""Streamed splits: the same pixels, the same training, and clear errors, without decoding the
whole dataset into memory."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from compressor.compute.inference import predict_logits
from compressor.data import streaming
from compressor.data.splits import Split, load_image_folder
from compressor.data.streaming import StreamedSplit, choose_storage
from compressor.errors import CompressorError
from compressor.losses.total import LossConfig
from compressor.models.registry import build_model
from compressor.train.loop import TrainConfig, distill
from tests.fakes import write_image_folder

SHAPE = (1, 8, 8)


def _same_split(a: Split | StreamedSplit, b: Split | StreamedSplit) -> None:
    assert torch.equal(a.labels, b.labels)
    every = torch.arange(len(a))
    assert torch.equal(a.read(every), b.read(every))


def test_streamed_splits_hold_the_same_pixels_as_in_memory(small_digits_root: Path) -> None:
    memory = load_image_folder(small_digits_root, SHAPE, seed=4)
    stream = load_image_folder(small_digits_root, SHAPE, seed=4, storage="stream")
    assert isinstance(stream.train, StreamedSplit) and isinstance(memory.train, Split)
    assert stream.describe()["storage"] == "stream" and memory.describe()["storage"] == "memory"
    for name in ("train", "val", "test"):
        _same_split(getattr(memory, name), getattr(stream, name))


def test_iter_batches_follows_the_order_through_worker_processes(small_digits_root: Path) -> None:
    memory = load_image_folder(small_digits_root, SHAPE, seed=0).val
    stream = load_image_folder(small_digits_root, SHAPE, seed=0, storage="stream").val
    assert isinstance(stream, StreamedSplit)
    stream.workers = 2
    for seed in (0, 1):  # the second pass reuses the persistent workers with a new order
        order = torch.randperm(len(memory), generator=torch.Generator().manual_seed(seed))
        got = list(stream.iter_batches(order, 7))
        want = list(memory.iter_batches(order, 7))
        assert [len(b) for b in got] == [len(b) for b in want]
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    clone = pickle.loads(pickle.dumps(stream))  # worker handles are not pickled
    assert clone._loaders == {} and np.array_equal(clone.files, stream.files)


def test_choose_storage_by_decoded_size_against_the_budget(monkeypatch) -> None:
    monkeypatch.setattr(streaming, "available_memory_bytes", lambda: 4_000_000)
    per_image = 3 * 10 * 10  # 300 bytes; the budget is a quarter of 4 MB = 1 MB
    assert choose_storage("auto", 3333, (3, 10, 10)).mode == "memory"  # 999,900 bytes
    big = choose_storage("auto", 3334, (3, 10, 10))  # 1,000,200 bytes
    assert big.mode == "stream" and big.decoded_bytes == 3334 * per_image
    assert "streamed" in big.reason and big.to_dict()["memory_budget_gb"] == 0.001
    # two processes on one host share the budget
    assert choose_storage("auto", 2000, (3, 10, 10), processes_per_host=2).mode == "stream"
    forced = choose_storage("memory", 10**9, (3, 224, 224))
    assert forced.mode == "memory" and forced.budget_bytes is None
    with pytest.raises(CompressorError, match="unknown data mode 'disk'"):
        choose_storage("disk", 1, (1, 1, 1))


def _tree(root: Path, per_class: int = 6) -> Path:
    write_image_folder(root, per_class, ("a", "b"), size=(12, 12), mode="L")
    return root


def test_stream_skips_non_images_and_names_a_truncated_one(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data")
    (root / "a" / "notes.txt").write_text("not an image")
    data = load_image_folder(root, SHAPE, seed=0, storage="stream")
    assert [Path(p).name for p in data.skipped] == ["notes.txt"]
    assert len(data.train) + len(data.val) + len(data.test) == 12

    victim = Path(str(data.train.files[0]))
    victim.write_bytes(victim.read_bytes()[:60])  # a valid header, pixels cut short
    with pytest.raises(CompressorError, match=f"{victim.name}: the image could not be decoded"):
        list(data.train.iter_batches(torch.arange(len(data.train)), 4))
    with pytest.raises(CompressorError, match="could not be decoded"):
        data.train.read(torch.tensor([0]))


def test_training_is_identical_whichever_storage_holds_the_images(small_digits_root: Path) -> None:
    """Same seed, same batches, same augmentation: the weights after two epochs match."""
    memory = load_image_folder(small_digits_root, SHAPE, seed=0)
    stream = load_image_folder(small_digits_root, SHAPE, seed=0, storage="stream")
    stream.train.workers = 1  # through a DataLoader worker process
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, device="cpu", bn_recalibration_images=64)
    states = []
    for data in (memory, stream):
        torch.manual_seed(0)
        teacher = build_model("cifar_resnet8_w8", 10, 1)
        torch.manual_seed(1)
        student = build_model("cifar_resnet8_w8", 10, 1)
        result = distill(teacher, student, data, (0.5,), (0.5,), LossConfig(), cfg)
        states.append((result.student.state_dict(), result.history, result.teacher_train_error))
    (mem_state, mem_hist, mem_err), (str_state, str_hist, str_err) = states
    assert mem_err == str_err
    assert [h["val_top1"] for h in mem_hist] == [h["val_top1"] for h in str_hist]
    for key, value in mem_state.items():
        assert torch.equal(value, str_state[key]), key


def test_predict_logits_accepts_a_streamed_split(small_digits_root: Path) -> None:
    memory = load_image_folder(small_digits_root, SHAPE, seed=0).test
    stream = load_image_folder(small_digits_root, SHAPE, seed=0, storage="stream").test
    torch.manual_seed(0)
    model = build_model("cifar_resnet8_w8", 10, 1).eval()
    a = predict_logits(model, memory, (0.5,), (0.5,), torch.device("cpu"))
    b = predict_logits(model, stream, (0.5,), (0.5,), torch.device("cpu"))
    assert a.shape == (len(memory), 10) and torch.equal(a, b)
