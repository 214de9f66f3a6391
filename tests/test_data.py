"""Data layer: sources on standard layouts, bad-input errors, transforms, grain pipelines, TFDS packing."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from maskseg_jax.config_base import base_config
from maskseg_jax.data import pipeline, splits
from maskseg_jax.data import sources as S
from maskseg_jax.data import file_layouts as L
from maskseg_jax.data import transforms as T
from maskseg_jax.errors import ConfigError, DataError
import fixtures  # tests/fixtures.py; pytest puts tests/ on sys.path

CAMVID = str(L.CAMVID_DEFAULT_ROOT)


def _data_config(**overrides):
  d = base_config().data
  d.synthetic.num_train, d.synthetic.num_val, d.synthetic.image_size = 12, 5, (40, 48)
  d.crop_size, d.batch_size, d.eval_batch_size, d.eval_size = (32, 32), 4, 4, (48, 56)
  for k, v in overrides.items():
    d[k] = v
  return d


@pytest.fixture()
def voc(tmp_path):
  return fixtures.make_voc_fixture(tmp_path / "voc", n=6, aug_only=1)


# ---------------------------------------------------------------------------------------------- sources

def test_voc_reads_palette_indices_and_aug_fallback(voc):
  src = L.VOCSource(voc["root"], "trainval")
  assert len(src) == 6 and src.num_classes == 21 and src.class_names[15] == "person"
  assert "SegmentationClassAug" in src.items[-1][1] and "SegmentationClass/" in src.items[0][1]
  for i in range(len(src)):
    ex = src[i]
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (40, 52, 3)
    np.testing.assert_array_equal(ex["label"], voc["labels"][ex["id"]])  # indices, not palette colours
    assert np.abs(ex["image"].astype(int) - voc["images"][ex["id"]]).mean() < 16  # JPEG, lossy
  assert [src.id_of(i) for i in range(4)] == voc["names"][:4]
  assert len(L.VOCSource(voc["root"], "train")) == 4 and len(L.VOCSource(voc["root"], "val")) == 2
  assert S.validate_source(src, -1) == 6


def test_voc_split_files_pairs_and_names(voc, tmp_path):
  pairs = tmp_path / "pairs.txt"
  pairs.write_text("".join(f"/JPEGImages/{n}.jpg /SegmentationClass/{n}.png\n" for n in voc["names"][:3]))
  names = tmp_path / "names.txt"
  names.write_text("".join(f"{n}\n" for n in voc["names"][:3]))
  a, b = L.VOCSource(voc["root"], str(pairs)), L.VOCSource(voc["root"], str(names))
  assert len(a) == len(b) == 3
  for i in range(3):
    assert a[i]["id"] == b[i]["id"] == voc["names"][i]
    np.testing.assert_array_equal(a[i]["label"], b[i]["label"])


def test_voc_label_dir_overrides(voc):
  src = L.VOCSource(voc["root"], "trainval", label_dir="SegmentationClassAug")
  missing = src.check_files()
  assert len(missing) == 5 and all("SegmentationClassAug" in p for p in missing)
  with pytest.raises(DataError, match=voc["names"][0]):
    S.validate_source(src, 0)


def test_cityscapes_layout(tmp_path):
  cs = fixtures.make_cityscapes_fixture(tmp_path / "cs", {"train": 3, "val": 2})
  train, val = L.CityscapesSource(cs["root"], "train"), L.CityscapesSource(cs["root"], "val")
  assert (len(train), len(val), train.num_classes, train.class_names[-1]) == (3, 2, 19, "bicycle")
  for src in (train, val):
    for i in range(len(src)):
      ex = src[i]
      assert ex["image"].shape == (32, 64, 3)
      np.testing.assert_array_equal(ex["label"], cs["labels"][ex["id"]])
  assert sorted(train.id_of(i) for i in range(3)) == sorted(cs["train"])


def test_folder_pairs_flat_and_split(tmp_path):
  flat = fixtures.make_folder_fixture(tmp_path / "flat", n=4, num_classes=5, image_ext=".jpg")
  src = L.FolderSource(flat["root"], "", num_classes=5)
  assert len(src) == 4 and [src.id_of(i) for i in range(4)] == flat["all"]
  np.testing.assert_array_equal(src[2]["label"], flat["labels"][flat["all"][2]])
  sp = fixtures.make_folder_fixture(tmp_path / "split", num_classes=5, splits={"train": 3, "val": 2})
  d = _data_config(name="folder", root=sp["root"], num_classes=5)
  assert len(S.build_source(d, "train")) == 3 and len(S.build_source(d, "val")) == 2
  with pytest.raises(DataError, match="images/test"):
    S.build_source(d, "test")


@pytest.mark.skipif(not os.path.isdir(CAMVID), reason="CamVid not beside the checkout")
def test_camvid_real_data():
  d = _data_config(name="camvid", root="", num_classes=11)
  train, val = S.build_source(d, "train"), S.build_source(d, "val")
  assert (len(train), len(val)) == (367, 101) and train.class_names[0] == "sky"
  for src, i in ((train, 0), (val, 100)):
    ex = src[i]
    assert ex["image"].shape == (360, 480, 3) and ex["label"].shape == (360, 480)
    assert set(np.unique(ex["label"]).tolist()) <= set(range(11)) | {255}
  with pytest.raises(ConfigError, match="num_classes=11"):
    S.build_source(_data_config(name="camvid", num_classes=6), "train")


def test_build_source_registry_and_slices():
  with pytest.raises(ConfigError, match="'synthetic'"):
    S.build_source(_data_config(name="nope"), "train")
  d = _data_config()
  sub = S.build_source(d, "train[2:5]")
  full = S.build_source(d, "train")
  assert len(sub) == 3 and sub.id_of(0) == full.id_of(2)
  np.testing.assert_array_equal(sub[1]["image"], full[3]["image"])
  assert len(S.build_source(d, "train[:-2]")) == 10
  with pytest.raises(ConfigError, match="synthetic"):
    S.build_source(d, "labeled")


def test_cache_items_reads_each_file_once_and_keeps_items_intact(voc, monkeypatch):
  settings = dict(name="voc", root=voc["root"], num_classes=21, image_scale=0.5)
  cached = S.build_source(_data_config(cache_items=True, **settings), "train")
  plain = S.build_source(_data_config(**settings), "train")
  reads, scaled = [], type(cached.source)
  read = scaled.__getitem__
  monkeypatch.setattr(scaled, "__getitem__", lambda self, i: reads.append(i) or read(self, i))
  first, again = cached[1], cached[1]
  assert reads == [1]  # the second read came from memory
  np.testing.assert_array_equal(first["label"], plain[1]["label"])
  np.testing.assert_array_equal(again["image"], plain[1]["image"])
  assert first["image"].shape[:2] == (20, 26)
  with pytest.raises(ValueError, match="read-only"):
    first["label"][0, 0] = 7  # an in-place augmentation cannot corrupt the cached copy
  first["extra"] = 1
  assert "extra" not in cached[1]


def test_synthetic_is_deterministic_and_varied():
  a = S.SyntheticSource(16, (48, 48), 6, seed=3)
  b = S.SyntheticSource(16, (48, 48), 6, seed=3)
  for i in (0, 7):
    np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
    np.testing.assert_array_equal(a[i]["label"], b[i]["label"])
  assert not np.array_equal(a[0]["image"], a[1]["image"])
  assert not np.array_equal(a[0]["image"], S.SyntheticSource(16, (48, 48), 6, seed=4)[0]["image"])
  assert not np.array_equal(a[0]["image"], S.SyntheticSource(16, (48, 48), 6, seed=3, split="val")[0]["image"])
  labels = np.stack([a[i]["label"] for i in range(16)])
  assert set(np.unique(labels).tolist()) == set(range(6))
  assert np.mean([len(np.unique(a[i]["label"])) for i in range(16)]) >= 3
  # Classes differ in appearance: mean colour of class pixels varies between classes.
  imgs = np.stack([a[i]["image"] for i in range(16)]).astype(float)
  means = np.array([imgs[labels == k].mean(0) for k in range(1, 6)])
  assert np.min([np.abs(means[i] - means[j]).max() for i in range(5) for j in range(i + 1, 5)]) > 10


# ---------------------------------------------------------------------------------------------- bad input

def _voc_with(tmp_path, mutate):
  info = fixtures.make_voc_fixture(tmp_path / "bad", n=3, val=1)
  target = mutate(info)
  return L.VOCSource(info["root"], "trainval"), target


def _replace_label(info, array):
  name = info["names"][1]
  path = os.path.join(info["root"], "SegmentationClass", f"{name}.png")
  Image.fromarray(array).save(path)
  return f"{name}.png"


def _damage(info, folder, ext, keep=None, data=b""):
  """Overwrites item 1's file with `data`, or truncates it to half its bytes if keep='half'."""
  name = f"{info['names'][1]}.{ext}"
  path = os.path.join(info["root"], folder, name)
  with open(path, "rb") as f:
    raw = f.read()
  with open(path, "wb") as f:
    f.write(raw[:len(raw) // 2] if keep == "half" else data)
  return name


BAD_ITEMS = {
    "corrupt_jpeg": lambda info: _damage(info, "JPEGImages", "jpg", data=b"not a jpeg" * 9),
    "truncated_jpeg": lambda info: _damage(info, "JPEGImages", "jpg", keep="half"),
    "truncated_png": lambda info: _damage(info, "SegmentationClass", "png", keep="half"),
    "size_mismatch": lambda info: _replace_label(info, np.zeros((10, 11), np.uint8)),
    "out_of_range": lambda info: _replace_label(info, np.full((40, 52), 30, np.uint8)),
    "rgb_label": lambda info: _replace_label(info, np.zeros((40, 52, 3), np.uint8)),
    "16bit_label": lambda info: _replace_label(info, np.zeros((40, 52), np.uint16)),
}


@pytest.mark.parametrize("case", sorted(BAD_ITEMS))
def test_bad_items_name_the_file(tmp_path, case):
  src, fname = _voc_with(tmp_path, BAD_ITEMS[case])
  src[0]  # good items still read
  with pytest.raises(DataError, match=fname.replace(".", r"\.")):
    src[1]
  with pytest.raises(DataError, match=fname.replace(".", r"\.")):
    S.validate_source(src, -1)


def test_bad_roots_and_splits(tmp_path, voc):
  with pytest.raises(DataError, match=r"VOC root .*nowhere not found: expected JPEGImages/"):
    L.VOCSource(tmp_path / "nowhere", "train")
  with pytest.raises(DataError, match=r"Cityscapes root .*nowhere not found"):
    L.CityscapesSource(tmp_path / "nowhere", "train")
  with pytest.raises(DataError, match=r"images/ .*labels/"):
    L.FolderSource(tmp_path / "nowhere", num_classes=3)
  with pytest.raises(DataError, match=r"CamVid .*nowhere not found"):
    L.CamVidSource(tmp_path / "nowhere", "train")
  with pytest.raises(DataError, match=r"test\.txt not found .*available: \['train', 'trainval', 'val'\]"):
    L.VOCSource(voc["root"], "test")
  empty = tmp_path / "empty.txt"
  empty.write_text("\n")
  with pytest.raises(DataError, match="empty.txt lists no images"):
    L.VOCSource(voc["root"], str(empty))
  with pytest.raises(DataError, match="nofile.txt not found"):
    L.VOCSource(voc["root"], "splits/nofile.txt")
  listed = tmp_path / "missing.txt"
  listed.write_text(f"{voc['names'][0]}\nghost_image\n")
  src = L.VOCSource(voc["root"], str(listed))
  with pytest.raises(DataError, match="ghost_image.jpg"):
    S.validate_source(src, 0)


def test_bad_folder_and_cityscapes(tmp_path):
  fo = fixtures.make_folder_fixture(tmp_path / "fo", n=3, num_classes=4)
  os.remove(os.path.join(fo["root"], "labels", f"{fo['all'][1]}.png"))
  with pytest.raises(DataError, match=fo["all"][1]):
    L.FolderSource(fo["root"], num_classes=4)
  cs = fixtures.make_cityscapes_fixture(tmp_path / "cs", {"val": 2})
  gone = os.path.join(cs["root"], "gtFine", "val", "bochum", f"{cs['val'][1]}_gtFine_labelTrainIds.png")
  os.remove(gone)
  with pytest.raises(DataError, match=f"createTrainIdLabelImgs.*{cs['val'][1]}_gtFine_labelTrainIds.png"):
    S.validate_source(L.CityscapesSource(cs["root"], "val"), 0)


# ---------------------------------------------------------------------------------------------- transforms

def test_crop_pads_with_zero_and_ignore():
  rng = np.random.default_rng(0)
  image, label = np.full((10, 12, 3), 7, np.uint8), np.full((10, 12), 3, np.uint8)
  img, lab = T.random_crop_pad(image, label, rng, (16, 20))
  assert img.shape == (16, 20, 3) and lab.shape == (16, 20)
  assert (img == 7).sum() == 10 * 12 * 3 and (img == 0).sum() == 16 * 20 * 3 - 360
  assert (lab == 3).sum() == 120 and (lab == 255).sum() == 16 * 20 - 120
  _, lab = T.random_crop_pad(image, label, rng, (16, 20), ignore_label=250)
  assert (lab == 250).sum() == 200
  big = np.arange(20 * 30).reshape(20, 30)  # unique values locate the crop
  img, lab = T.random_crop_pad(np.stack([big] * 3, -1), big, rng, (8, 9))
  y, x = np.argwhere(big == lab[0, 0])[0]
  np.testing.assert_array_equal(lab, big[y:y + 8, x:x + 9])
  np.testing.assert_array_equal(img[..., 0], lab)  # image and label cropped at the same place


def test_flip_scale_resize_normalize():
  rng = np.random.default_rng(1)
  label = np.tile(np.arange(8, dtype=np.uint8), (5, 1))
  image = np.stack([label * 10] * 3, -1)
  flips = [T.random_hflip(image, label, rng) for _ in range(20)]
  assert any(lab[0, 0] == 7 for _, lab in flips) and any(lab[0, 0] == 0 for _, lab in flips)
  for img, lab in flips:
    np.testing.assert_array_equal(img[..., 0], lab * 10)  # flipped together
  img, lab = T.random_scale(image, label, rng, (2.0, 2.0))
  assert img.shape == (10, 16, 3) and lab.shape == (10, 16)
  assert set(np.unique(lab)) == set(range(8))  # nearest: no blended ids
  img, lab = T.resize(image, label, (3, 4))
  assert img.shape == (3, 4, 3) and set(np.unique(lab)) <= set(range(8))
  img, lab = T.resize_to_fit(np.zeros((40, 80, 3), np.uint8), np.zeros((40, 80), np.uint8), (32, 32))
  assert img.shape == (16, 32, 3) and lab.shape == (16, 32)
  img, lab = T.pad_to(image, label, (6, 9))
  assert img.shape == (6, 9, 3) and lab[5].tolist() == [255] * 9 and lab[0, 8] == 255
  with pytest.raises(DataError, match="5x8"):
    T.pad_to(image, label, (4, 9))
  out = T.normalize(np.full((2, 2, 3), 128, np.uint8), (128, 0, 28), (1, 2, 50))
  assert out.dtype == np.float32 and out[0, 0].tolist() == [0.0, 64.0, 2.0]


# ---------------------------------------------------------------------------------------------- pipeline

class _IndexSource:
  """Item i has image value i (mod 256) and id i, to see which items a process reads."""

  num_classes, class_names, ignore_label = 2, ("a", "b"), 255

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return {"image": np.full((4, 4, 3), i, np.uint8), "label": np.zeros((4, 4), np.uint8), "id": str(i)}


def _index_transform(example, rng):
  del rng
  return {"image": example["image"].astype(np.float32), "label": example["label"].astype(np.int32),
          "index": np.int32(example["id"])}


def test_train_iterator_shapes_determinism_and_resume():
  d = _data_config()
  src = S.build_source(d, "train")
  it = pipeline.train_iterator(src, d, seed=5)
  first = [next(it) for _ in range(3)]
  b = first[0]
  assert set(b) == {"image", "label"}
  assert b["image"].shape == (4, 32, 32, 3) and b["image"].dtype == np.float32
  assert b["label"].shape == (4, 32, 32) and b["label"].dtype == np.int32
  assert set(np.unique(b["label"]).tolist()) <= set(range(6)) | {255}
  state = it.get_state()
  more = [next(it) for _ in range(2)]
  again = pipeline.train_iterator(src, d, seed=5)
  np.testing.assert_array_equal(next(again)["image"], first[0]["image"])
  resumed = pipeline.train_iterator(src, d, seed=5)
  resumed.set_state(state)
  for x, y in zip(more, [next(resumed) for _ in range(2)]):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  other = next(pipeline.train_iterator(src, d, seed=6))
  assert not np.array_equal(other["image"], first[0]["image"])


def test_train_iterator_shards_global_batches_by_process_and_extra_transform():
  d = _data_config(batch_size=4)
  src = _IndexSource(10)

  def coin_transform(example, rng):  # the augmentation draw must not depend on the process count
    return {**_index_transform(example, rng), "coin": np.float32(rng.random())}

  one = pipeline.train_iterator(src, d, 0, transform=coin_transform)
  whole = [next(one) for _ in range(5)]  # 5 global batches of 4 = two epochs of 10 items
  idx = np.concatenate([b["index"] for b in whole])
  assert sorted(idx[:10].tolist()) == sorted(idx[10:].tolist()) == list(range(10))  # epochs reshuffled
  iters = [pipeline.train_iterator(src, d, 0, process_index=p, process_count=2, transform=coin_transform)
           for p in (0, 1)]
  for k in range(5):
    parts = [next(it) for it in iters]
    assert parts[0]["image"].shape == (2, 4, 4, 3)
    for key in ("index", "coin", "image"):  # process p holds rows [2p, 2p + 2) of global batch k
      np.testing.assert_array_equal(np.concatenate([q[key] for q in parts]), whole[k][key])
  # Positions count global batches, so a state saved with 2 processes resumes a 1-process run and back.
  assert iters[0].get_state() == iters[1].get_state() == one.get_state()
  resumed = pipeline.train_iterator(src, d, 0, transform=coin_transform)
  resumed.set_state(iters[0].get_state())
  again = pipeline.train_iterator(src, d, 0, process_index=1, process_count=2, transform=coin_transform)
  again.set_state(one.get_state())
  nxt = next(one)["index"]
  np.testing.assert_array_equal(next(resumed)["index"], nxt)
  np.testing.assert_array_equal(next(again)["index"], nxt[2:])
  with pytest.raises(ConfigError, match="batch_size=6 is not divisible by the 4 processes"):
    pipeline.train_iterator(src, _data_config(batch_size=6), 0, process_index=0, process_count=4)

  def extra(example, rng):
    assert example["raw_image"].dtype == np.uint8 and example["raw_image"].shape == (32, 32, 3)
    return {**example, "strong": (255 - example["raw_image"]).astype(np.float32), "coin": np.float32(rng.random())}

  b = next(pipeline.train_iterator(S.build_source(d, "train"), d, 0, extra_transform=extra))
  assert b["strong"].shape == (4, 32, 32, 3) and b["raw_image"].dtype == np.uint8 and "id" not in b
  np.testing.assert_array_equal(b["strong"], 255 - b["raw_image"].astype(np.float32))


def test_train_iterator_surfaces_bad_item(tmp_path):
  info = fixtures.make_voc_fixture(tmp_path / "v", n=2, val=1)
  name = info["names"][0]
  Image.fromarray(np.full((40, 52), 99, np.uint8)).save(os.path.join(info["root"], "SegmentationClass",
                                                                     f"{name}.png"))
  d = _data_config(name="voc", root=info["root"], num_classes=21, batch_size=2)
  it = pipeline.train_iterator(S.build_source(d, "trainval"), d, 0)
  with pytest.raises(DataError, match=f"{name}.png"):
    next(it)


def test_eval_batches_pad_and_mask():
  d = _data_config()  # val: 5 images of 40x48, eval_size 48x56, global eval batch 4
  src = S.build_source(d, "val")
  got = {}
  for p in (0, 1):
    batches = list(pipeline.eval_batches(src, d, process_index=p, process_count=2))
    ids = pipeline.eval_ids(src, d, process_index=p, process_count=2)
    assert len(batches) == len(ids) == pipeline.eval_num_batches(src, d, process_count=2) == 2
    for b, bid in zip(batches, ids):
      assert set(b) == {"image", "label", "valid", "raw_image"}
      assert b["image"].shape == (2, 48, 56, 3) and b["label"].dtype == np.int32
      assert b["raw_image"].dtype == np.uint8 and b["valid"].dtype == bool
      assert (b["label"][:, 40:] == 255).all() and (b["label"][:, :, 48:] == 255).all()
      assert (b["image"][:, 40:] == 0).all() and (b["raw_image"][:, :, 48:] == 0).all()
      for j, item_id in enumerate(bid):
        assert b["valid"][j] == (item_id != "")
        if item_id:
          got[item_id] = b["label"][j, :40, :48]
        else:
          assert (b["label"][j] == 255).all() and (b["image"][j] == 0).all()
  assert len(got) == 5
  for i in range(5):
    np.testing.assert_array_equal(got[src.id_of(i)], src[i]["label"])
  assert sum(b["valid"].sum() for b in pipeline.eval_batches(src, _data_config(max_eval_images=3))) == 3


def test_eval_rejects_or_resizes_big_images():
  d = _data_config(eval_size=(32, 32))
  src = S.build_source(d, "val")
  with pytest.raises(DataError, match=r"synthetic item 0 is 40x48, larger than data.eval_size=32x32"):
    next(pipeline.eval_batches(src, d))
  d = _data_config(eval_size=(32, 32), eval_resize=True)
  b = next(pipeline.eval_batches(src, d))
  assert b["image"].shape == (4, 32, 32, 3) and (b["label"][:, 27:] == 255).all()


# ---------------------------------------------------------------------------------------------- TFDS, splits

def test_tfds_round_trip(tmp_path, voc):
  from maskseg_jax.data import tfds_builder
  name = tfds_builder.prepare_tfds(voc["root"], tmp_path / "tfds", name="vocfix", splits=("train", "val"),
                                   reader="voc")
  assert name == "maskseg_folder/vocfix"
  d = _data_config(name="tfds", root=str(tmp_path / "tfds"), tfds_name=name, num_classes=21)
  for split in ("train", "val"):
    packed, folder = S.build_source(d, split), L.VOCSource(voc["root"], split)
    assert len(packed) == len(folder) and packed.class_names == L.VOC_CLASSES
    for i in range(len(folder)):
      a, b = packed[i], folder[i]
      assert a["id"] == b["id"]
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["label"], b["label"])
  with pytest.raises(DataError, match="no split 'test'"):
    S.build_source(d, "test")
  with pytest.raises(DataError, match="found: \\['maskseg_folder/vocfix'\\]"):
    S.build_source(_data_config(name="tfds", root=str(tmp_path / "tfds"), tfds_name="maskseg_folder/x",
                                num_classes=21), "train")


def test_make_split_files(tmp_path):
  info = fixtures.make_voc_fixture(tmp_path / "voc", n=18, size=(16, 16), val=2)
  out = splits.make_split_files(info["root"], seed=1, out_dir=tmp_path / "splits")
  labeled_sets = []
  for f, k in zip((1 / 16, 1 / 8, 1 / 4), (1, 2, 4)):
    lab_path, unl_path = out[f]
    assert lab_path.endswith(os.path.join(str(k), "labeled.txt"))
    lab, unl = L.VOCSource(info["root"], lab_path), L.VOCSource(info["root"], unl_path)
    assert (len(lab), len(unl)) == (k, 16 - k)
    ids = {lab.id_of(i) for i in range(k)}
    assert ids.isdisjoint(unl.id_of(i) for i in range(len(unl)))
    labeled_sets.append(ids)
  assert labeled_sets[0] <= labeled_sets[1] <= labeled_sets[2]  # nested
  again = splits.make_split_files(info["root"], seed=1, out_dir=tmp_path / "again")
  assert open(again[1 / 4][0]).read() == open(out[1 / 4][0]).read()
  if os.path.isdir(CAMVID):
    cam = splits.make_split_files(L.CamVidSource("", "train"), seed=0, out_dir=tmp_path / "camvid")
    assert [sum(1 for _ in open(p)) for p, _ in cam.values()] == [23, 46, 92]


def test_dev_split_carves_each_sequence_head_disjoint_and_deterministic():
  """Few sequences: the first frames of each sequence (a contiguous block) go to dev; fit is the rest;
  the carving depends on the ids only (order of the list does not matter), and both sides are non-empty."""
  ids = [f"seqA_{i:05d}" for i in range(10)] + [f"seqB_{i:05d}" for i in range(20)]
  fit, dev = splits.carve_dev(ids, 0.2)
  assert [ids[i] for i in dev] == [f"seqA_{i:05d}" for i in range(2)] + [f"seqB_{i:05d}" for i in range(4)]
  assert set(fit).isdisjoint(dev) and sorted([*fit, *dev]) == list(range(30))
  shuffled = list(np.random.default_rng(0).permutation(ids))
  f2, d2 = splits.carve_dev(shuffled, 0.2)
  assert sorted(shuffled[i] for i in d2) == sorted(ids[i] for i in dev)
  # Many sequences: whole sequences go to dev, evenly spaced, so no sequence straddles the two sides.
  many = [f"city_{s:03d}_{f:02d}" for s in range(40) for f in range(3)]
  fit, dev = splits.carve_dev(many, 0.25)
  dev_seqs = {splits.sequence_of(many[i]) for i in dev}
  assert len(dev_seqs) == 10 and dev_seqs.isdisjoint(splits.sequence_of(many[i]) for i in fit)
  with pytest.raises(ConfigError, match="dev_fraction=1.5"):
    splits.carve_dev(ids, 1.5)
  with pytest.raises(DataError, match="leaves one side empty"):
    splits.carve_dev(["a_1", "b_1"], 0.2)


def test_dev_and_fit_splits_through_build_source(voc):
  d = _data_config(name="voc", root=voc["root"], num_classes=21)
  train = S.build_source(d, "trainval")
  fit, dev = S.build_source(d, "trainval@fit"), S.build_source(d, "trainval@dev")
  fit_ids, dev_ids = ({s.id_of(i) for i in range(len(s))} for s in (fit, dev))
  assert len(fit) + len(dev) == len(train) and fit_ids.isdisjoint(dev_ids) and dev_ids
  assert len(S.build_source(d, "trainval@fit[0:2]")) == 2
  with pytest.raises(ConfigError, match="@tset"):
    S.build_source(d, "trainval@tset")
  from maskseg_jax.config_base import load_config
  c = load_config("lmae", "camvid,recipe,dev")
  assert (c.data.train_split, c.data.val_split) == ("train@fit", "train@dev")
  assert load_config("lmae", "camvid,recipe,fit").data.val_split == "val"
  if os.path.isdir(CAMVID):  # CamVid: 73 of 367 train images, the first frames of each of its 3 sequences
    cam = L.CamVidSource("", "train")
    fit, dev = splits.carve_dev([cam.id_of(i) for i in range(len(cam))], 0.2)
    assert len(dev) == 73 and cam.id_of(int(dev[0])) == "0001TP_006690"
