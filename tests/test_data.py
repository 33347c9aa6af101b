"""Datasets, transforms, dataloaders and batch conventions (inc_flow.data, inc_flow.common)."""

from __future__ import annotations

import gzip
import struct
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from inc_flow import data
from inc_flow.common import DataLoader, Metric
from inc_flow.data import (
    DummyDataset,
    DummyDatasetV2,
    FashionMNIST,
    ImageFolder,
    build_dataloader,
    build_dataset,
    build_transform,
    call_model,
    first_input,
    split_batch,
)
from inc_flow.data.transforms import CenterCrop, Normalize, Resize, ToTensor
from inc_flow.errors import DataError, MetricError

pytestmark = pytest.mark.no_mlflow

FMNIST = "/usr/share/datasets/fashion-mnist"


def spec(name, **params):
    return SimpleNamespace(name=name, params=params)


def loader_cfg(dataset, batch_size=1, last_batch="rollover", transform=(), shuffle=False):
    return SimpleNamespace(
        dataset=dataset,
        batch_size=batch_size,
        last_batch=last_batch,
        shuffle=shuffle,
        transform=tuple(transform),
        filter=None,
    )


# --- dummy datasets ---------------------------------------------------------------------


def test_dummy_shape0_is_the_number_of_samples_and_label_is_zero():
    ds = DummyDataset(shape=[5, 1, 28, 28])
    assert len(ds) == 5
    x, y = ds[4]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 0
    assert x.min() >= -1.0 and x.max() < 1.0


def test_dummy_is_deterministic_and_samples_differ():
    a, b = DummyDataset(shape=[3, 4]), DummyDataset(shape=[3, 4])
    assert torch.equal(a[1][0], b[1][0])
    assert not torch.equal(a[0][0], a[1][0])
    x1, x2 = DummyDataset(shape=[[2, 4], [2, 4]], label=False)[0]
    assert not torch.equal(x1, x2)


def test_dummy_multi_input_without_label_and_per_input_dtype_range():
    ds = DummyDataset(
        shape=[[2, 3], [2, 4, 4]], low=[0.0, 10.0], high=[1.0, 20.0], dtype=["float32", "int64"],
        label=False,
    )  # fmt: skip
    x1, x2 = ds[0]
    assert x1.shape == (3,) and x2.shape == (4, 4) and x2.dtype == torch.int64
    assert x2.min() >= 10 and x2.max() < 20


def test_dummy_rejects_bad_arguments():
    with pytest.raises(DataError, match="same shape"):
        DummyDataset(shape=[[2, 3], [3, 3]])
    with pytest.raises(DataError, match="dtype"):
        DummyDataset(shape=[2, 3], dtype="complex")
    with pytest.raises(DataError, match="2 entries"):
        DummyDataset(shape=[[2, 3], [2, 3]], low=[0.0])
    with pytest.raises(DataError, match="filter"):
        DummyDataset(shape=[2, 3], filter=lambda *a: True)


def test_dummy_v2_length_and_labels():
    ds = DummyDatasetV2(input_shape=[3, 8, 8], label_shape=[1], length=7)
    assert len(ds) == 7
    x, y = ds[6]
    assert x.shape == (3, 8, 8) and y.shape == (1,)
    assert torch.equal(ds[2][0], DummyDatasetV2(input_shape=[3, 8, 8], length=7)[2])
    unlabeled = DummyDatasetV2(input_shape=[[2], [5]], label_shape=[], length=2)
    a, b = unlabeled[1]
    assert a.shape == (2,) and b.shape == (5,)


# --- Fashion-MNIST / MNIST ----------------------------------------------------------------


def test_fashion_mnist_test_split():
    ds = FashionMNIST(root=FMNIST, train=False)
    assert len(ds) == 10000
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.5
    assert isinstance(y, int) and 0 <= y <= 9
    assert sorted(ds.targets.unique().tolist()) == list(range(10))


def test_fashion_mnist_train_split_and_transform():
    ds = FashionMNIST(train=True, transform=Normalize(0.2860, 0.3530))
    assert len(ds) == 60000
    x, _ = ds[0]
    assert float(x.min()) == pytest.approx(-0.2860 / 0.3530, rel=1e-5)


def test_missing_root_and_missing_files_name_the_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        FashionMNIST(root=tmp_path / "nope")
    with pytest.raises(DataError) as err:
        data.MNIST(root=tmp_path)
    assert str(tmp_path) in str(err.value)
    assert "t10k-images-idx3-ubyte" in str(err.value)
    assert "t10k-labels-idx1-ubyte" in str(err.value)


def test_download_is_refused():
    with pytest.raises(DataError, match="downloads are not supported"):
        FashionMNIST(root=FMNIST, download=True)


def _write_idx(path, array, compress):
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(payload)


def test_raw_idx_files_in_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(raw / "t10k-images-idx3-ubyte", images, compress=False)
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([7, 8, 9]), compress=True)
    ds = data.MNIST(root=tmp_path)
    assert len(ds) == 3 and ds[2][1] == 9
    assert torch.allclose(ds[1][0][0], torch.tensor(images[1] / 255.0, dtype=torch.float32))


def test_truncated_idx_file_is_a_data_error(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 10) + b"\x01\x02")
    with pytest.raises(DataError, match="header says"):
        data.read_idx(path)


# --- ImageFolder and transforms --------------------------------------------------------------


@pytest.fixture
def image_folder(tmp_path):
    for cls, shade in (("cat", 30), ("dog", 200)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("L", (12, 10), color=shade + i).save(tmp_path / cls / f"{i}.png")
    return tmp_path


def test_image_folder_with_transforms(image_folder):
    transform = build_transform([spec("Resize", size=[8, 8]), spec("CenterCrop", size=6)])
    ds = ImageFolder(image_folder, transform=transform)
    assert len(ds) == 4 and ds.classes == ["cat", "dog"]
    x, y = ds[3]
    assert x.shape == (3, 6, 6) and x.dtype == torch.float32 and y == 1
    assert float(x.max()) == pytest.approx(201 / 255, abs=1e-2)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(DataError, match="no images"):
        ImageFolder(tmp_path)


def test_transforms_on_pil_and_tensor():
    pil = Image.new("RGB", (20, 10), color=(255, 0, 0))
    t = ToTensor()(pil)
    assert t.shape == (3, 10, 20) and ToTensor()(t) is t
    assert Resize(5)(pil).size == (10, 5)  # int: the shorter edge
    assert Resize([4, 6], interpolation="nearest")(t).shape == (3, 4, 6)
    assert CenterCrop([4, 4])(pil).size == (4, 4) and CenterCrop(4)(t).shape == (3, 4, 4)
    normed = Normalize([0.5, 0.0, 0.0], [0.5, 1.0, 1.0])(pil)
    assert normed[0].max() == pytest.approx(1.0) and normed[1].max() == 0.0
    uint8 = torch.full((1, 2, 2), 255, dtype=torch.uint8)
    assert Normalize(0.5, 0.5)(uint8).max() == pytest.approx(1.0)


def test_transform_errors():
    with pytest.raises(DataError, match="non-zero std"):
        Normalize([0.1], [0.0])
    with pytest.raises(DataError, match="channel"):
        Normalize([0.1, 0.2], [1.0, 1.0])(torch.zeros(3, 4, 4))
    with pytest.raises(DataError, match="interpolation"):
        Resize(4, interpolation="lanczos")
    with pytest.raises(DataError, match="size"):
        CenterCrop([1, 2, 3])
    with pytest.raises(DataError, match="unknown transform `Blur`"):
        build_transform([spec("Blur")])
    with pytest.raises(DataError, match="Normalize"):
        build_transform([spec("Normalize", mean=0.1)])  # std missing
    assert build_transform([]) is None


# --- builders and dataloaders -------------------------------------------------------------


def test_build_dataset_by_name_and_errors():
    ds = build_dataset(spec("dummy_v2", input_shape=[4], length=3))
    assert len(ds) == 3
    with pytest.raises(DataError, match="unknown dataset `CIFAR10`"):
        build_dataset(spec("CIFAR10"))
    with pytest.raises(DataError, match="dummy"):
        build_dataset(spec("dummy", shape=[2, 2], colour="red"))


def test_build_dataloader_applies_transform_and_batches():
    cfg = loader_cfg(
        spec("FashionMNIST", root=FMNIST, train=False),
        batch_size=64,
        transform=[spec("ToTensor"), spec("Normalize", mean=[0.2860], std=[0.3530])],
    )
    loader = build_dataloader(cfg)
    assert isinstance(loader, DataLoader) and loader.batch_size == 64
    x, y = next(iter(loader))
    assert x.shape == (64, 1, 28, 28) and y.shape == (64,) and y.dtype == torch.int64
    assert float(x.min()) < 0 and len(loader) == 157


@pytest.mark.parametrize(
    ("last_batch", "sizes"),
    [("rollover", [4, 4, 2]), ("no_rollover", [4, 4]), ("discard", [4, 4])],
)
def test_last_batch(last_batch, sizes):
    loader = build_dataloader(loader_cfg(spec("dummy", shape=[10, 3]), 4, last_batch))
    assert [len(y) for _, y in loader] == sizes
    assert len(loader) == len(sizes)


def test_dataloader_rebatch_and_argument_errors():
    loader = DataLoader(DummyDataset(shape=[10, 3]), batch_size=4)
    loader.batch(1)
    assert loader.batch_size == 1 and len(loader) == 10
    with pytest.raises(DataError, match="last_batch"):
        DataLoader(DummyDataset(shape=[10, 3]), last_batch="keep")
    with pytest.raises(DataError, match="batch_size"):
        DataLoader(DummyDataset(shape=[10, 3]), batch_size=0)
    with pytest.raises(DataError, match="distributed"):
        DataLoader(DummyDataset(shape=[10, 3]), distributed=True)
    with pytest.raises(DataError, match="empty"):
        DataLoader([])
    with pytest.raises(DataError, match="cannot build"):
        DataLoader(DummyDataset(shape=[4, 3]), shuffle=True, sampler=[0, 1])


def test_dataloader_collates_dicts_and_custom_collate():
    samples = [{"x": torch.ones(2), "label": i} for i in range(3)]
    batch = next(iter(DataLoader(samples, batch_size=3)))
    assert batch["x"].shape == (3, 2) and batch["label"].tolist() == [0, 1, 2]
    loader = DataLoader(samples, batch_size=2, collate_fn=lambda items: len(items))
    assert list(loader) == [2, 1]


def test_dataloader_shuffle_follows_the_global_seed():
    loader = DataLoader(DummyDataset(shape=[8, 1], label=False), batch_size=8, shuffle=True)
    torch.manual_seed(0)
    first = next(iter(loader))
    torch.manual_seed(0)
    assert torch.equal(first, next(iter(loader)))


# --- batch conventions ------------------------------------------------------------------


def test_split_batch_tuple_tensor_and_length_one():
    x, y = torch.zeros(2, 3), torch.tensor([1, 0])
    assert split_batch((x, y)) == (x, y)
    inputs, label = split_batch([[x, x], y])
    assert len(inputs) == 2 and label is y
    assert split_batch(x) == (x, None)
    assert split_batch((x,)) == (x, None)


def test_split_batch_dicts():
    x, y = torch.zeros(2, 3), torch.tensor([1, 0])
    inputs, label = split_batch({"input_ids": x, "mask": x, "labels": y})
    assert set(inputs) == {"input_ids", "mask"} and label is y
    inputs, label = split_batch({"input_ids": x})
    assert set(inputs) == {"input_ids"} and label is None
    inputs, label = split_batch(({"a": x}, y))
    assert set(inputs) == {"a"} and label is y


@pytest.mark.parametrize(
    ("batch", "structure"),
    [
        (["a", 1, torch.zeros(2, 3)], "list[str, int, Tensor[2x3]]"),
        (["a", 1], "list[str, int]"),
        ({"label": torch.zeros(1)}, "dict{'label': Tensor[1]}"),
        (np.zeros((2, 2)), "ndarray[2x2]"),
        (([torch.zeros(1), "x"], 1), "tuple[list[Tensor[1], str], int]"),
    ],
)
def test_split_batch_rejects_other_structures(batch, structure):
    with pytest.raises(DataError) as err:
        split_batch(batch)
    assert f"batch structure: {structure}" in str(err.value)


def test_call_model_and_first_input():
    def model(*args, **kwargs):
        return args, kwargs

    x = torch.zeros(1)
    assert call_model(model, x) == ((x,), {})
    assert call_model(model, (x, x)) == ((x, x), {})
    assert call_model(model, {"a": x}) == ((), {"a": x})
    loader = DataLoader(DummyDataset(shape=[[3, 2], [3, 4]]), batch_size=2)
    example = first_input(loader)
    assert [t.shape for t in example] == [(2, 2), (2, 4)]
    assert first_input([{"a": x, "label": x}]) == (x,)
    with pytest.raises(DataError, match="no batches"):
        first_input([])


# --- common.Metric --------------------------------------------------------------------------


class _UserMetric:
    def __init__(self, scale=1.0):
        self.scale = scale

    def update(self, preds, labels):
        pass

    def reset(self):
        pass

    def result(self):
        return self.scale


def test_common_metric_builds_the_user_class():
    wrapped = Metric(_UserMetric, name="mine", scale=2.0)
    assert wrapped.name == "mine" and wrapped.kwargs == {"scale": 2.0}
    assert wrapped.create().result() == 2.0
    assert Metric(_UserMetric).name == "user_metric"


def test_common_metric_errors():
    with pytest.raises(MetricError, match="metric_cls"):
        Metric(3)
    with pytest.raises(MetricError, match="cannot build"):
        Metric(_UserMetric, bogus=1).create()
    with pytest.raises(MetricError, match="update"):
        Metric(object).create()


# --- the config contract --------------------------------------------------------------------


def test_every_config_name_is_implemented_with_its_parameters():
    """Every name in the config's tables is built here and accepts every parameter key."""
    import inspect

    from inc_flow import metrics
    from inc_flow.config import names as config

    tables = [
        (config.DATASETS, data.DATASET_CLASSES),
        (config.TRANSFORMS, data.TRANSFORM_CLASSES),
        (config.METRICS, metrics.METRIC_CLASSES),
        (config.POSTPROCESS, metrics.POSTPROCESS_FUNCS),
    ]
    for table, implemented in tables:
        assert set(table) <= set(implemented), set(table) - set(implemented)
        for name, params in table.items():
            signature = inspect.signature(implemented[name])
            for key in params:
                assert key in signature.parameters, f"{name} does not take `{key}`"


def test_config_objects_build_loaders_metrics_and_postprocess(image_folder):
    from inc_flow.config.sections import AccuracyConfig, DataloaderConfig
    from inc_flow.metrics import apply_postprocess, build_metric

    cfg = DataloaderConfig.from_dict(
        {
            "batch_size": 3,
            "last_batch": "no_rollover",
            "dataset": {"dummy": {"shape": [[7, 1, 4, 4], [7, 2]], "dtype": ["float32", "int8"]}},
            "transform": {"Normalize": {"mean": [0.5], "std": [0.5]}},
        }
    )
    loader = build_dataloader(cfg)
    (x1, x2), label = next(iter(loader))
    assert x1.shape == (3, 1, 4, 4) and x2.shape == (3, 2) and len(loader) == 2
    folder = DataloaderConfig.from_dict(
        {
            "batch_size": 4,
            "dataset": {"ImageFolder": {"root": str(image_folder)}},
            "transform": {"Resize": {"size": [6, 6]}, "CenterCrop": {"size": 4}, "ToTensor": {}},
        }
    )
    images, labels = next(iter(build_dataloader(folder)))
    assert images.shape == (4, 3, 4, 4) and labels.tolist() == [0, 0, 1, 1]
    acc = AccuracyConfig.from_dict(
        {
            "multi_metrics": {"topk": 1, "MSE": {"compare_label": False}, "weight": [0.5, 0.5]},
            "postprocess": {"transform": {"LabelShift": -1}},
        }
    )
    metric = build_metric(acc.multi_metrics)
    assert metric.weight == {"topk": 0.5, "MSE": 0.5}
    assert metric.metrics["MSE"].compare_label is False
    assert apply_postprocess(acc.postprocess, None, torch.tensor([0]))[1].tolist() == [1]
