"""`config.mode=predict` of a segmenter: predicted label maps for the val split, or for a folder of the user's
own images (no labels needed):

  maskseg --config=configs/supervised.py --workdir=RUN --config.mode=predict \
      --config.predict.images=my_photos/ [--config.predict.out=my_predictions/]

writes `<stem>.png` per .jpg/.jpeg/.png image (class ids as palette indices, so viewers show colours and readers
get ids; at the image's own size) and `preview/<stem>.png` (image | prediction, titled, with a class legend)
to `predict.out` (default `RUN/predictions`). Images are read as training read them (`data.image_scale`),
downscaled to fit `data.eval_size` where larger, predicted as evaluation predicts, and the prediction resized
back (nearest) to the file's size. Nothing is overwritten: an existing output file is an error.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np
from PIL import Image

from maskseg_jax import sharding, visualize
from maskseg_jax.data import file_layouts, sources
from maskseg_jax.data.source_base import Source
from maskseg_jax.errors import ConfigError, DataError


class ImageFolderSource(Source):
  """The images of one folder as a source. Its label is all class 0: a dummy that marks the image's extent
  after eval padding (padding is `ignore_label`), so predictions are cropped exactly."""

  name = "image folder"

  def __init__(self, folder: str, num_classes: int, class_names: Sequence[str] | None = None,
               ignore_label: int = 255):
    if not os.path.isdir(folder):
      raise DataError(f"predict.images={folder!r} is not a folder; expected a folder of .jpg/.jpeg/.png images")
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(file_layouts.IMAGE_EXTS))
    if not files:
      raise DataError(f"predict.images={folder!r} holds no .jpg/.jpeg/.png image")
    stems = [os.path.splitext(f)[0] for f in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
      raise DataError(f"{folder} has several images named {dup[0]}.* ; expected one image per stem")
    self.paths = [os.path.join(folder, f) for f in files]
    self.ids = stems
    self.num_classes, self.ignore_label = int(num_classes), int(ignore_label)
    self.class_names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))

  def __len__(self) -> int:
    return len(self.paths)

  def _load(self, index: int) -> dict:
    image = sources.read_image(self.paths[index])
    return {"image": image, "label": np.zeros(image.shape[:2], np.uint8), "id": self.ids[index]}

  def id_of(self, index: int) -> str:
    return self.ids[self._index(index)]

  def describe(self, index: int) -> str:
    return f"image {self.paths[index]}"


def _write_palette_png(path: str, label: np.ndarray) -> None:
  im = Image.frombytes("P", (label.shape[1], label.shape[0]), np.ascontiguousarray(label, np.uint8).tobytes())
  im.putpalette(visualize.palette().reshape(-1).tolist())
  im.save(path)


def predict_images(evaluator_for, data_config, state, folder: str, out_dir: str, *, class_names=None,
                   log=print) -> list[str]:
  """Predicts every image of `folder` into `out_dir` (see the module docstring); returns the label paths.

  evaluator_for(source, data_config) -> a SegmentationEvaluator of the run's model on `source`.
  """
  if jax.process_count() > 1:
    raise ConfigError("predict.images runs in one process (every process would write the same files); run "
                      "mode=predict on one host")
  dc = data_config.copy_and_resolve_references()
  with dc.unlocked():
    dc.eval_resize = True      # a user's images may be larger than the eval size: downscale them to fit
    dc.max_eval_images = -1
  files = ImageFolderSource(folder, int(dc.num_classes), class_names, int(dc.ignore_label))
  outputs = [os.path.join(out_dir, f"{i}.png") for i in files.ids]
  previews = [os.path.join(out_dir, "preview", f"{i}.png") for i in files.ids]
  taken = [p for p in outputs + previews if os.path.exists(p)]
  if taken:
    raise DataError(f"output file {taken[0]} already exists; refusing to overwrite it (choose a new "
                    "predict.out folder)")
  scale = float(dc.get("image_scale", 1.0))
  source = files
  if scale != 1.0:
    from maskseg_jax.data.views import ScaledSource
    source = ScaledSource(files, scale)
  evaluator = evaluator_for(source, dc)
  os.makedirs(os.path.join(out_dir, "preview"), exist_ok=True)
  legend = visualize.class_legend(int(dc.num_classes), class_names, void=False)
  index = 0
  for local in evaluator._batches():
    batch = {k: local[k] for k in ("image", "label", "valid")}
    _, pred = evaluator._step(state, sharding.to_global(batch, evaluator.mesh))
    preds = np.asarray(jax.device_get(pred))
    for j in range(int(np.sum(local["valid"]))):
      extent = local["label"][j] != dc.ignore_label
      h, w = int(extent.any(1).sum()), int(extent.any(0).sum())
      image = sources.read_image(files.paths[index])
      label = np.asarray(Image.fromarray(preds[j, :h, :w].astype(np.uint8)).resize(
          (image.shape[1], image.shape[0]), Image.Resampling.NEAREST))
      _write_palette_png(outputs[index], label)
      picture = visualize.grid([[image, label]])
      Image.fromarray(visualize.with_legend(picture, legend, titles=("image", "prediction"))).save(previews[index])
      index += 1
  log(f"wrote {index} predicted label maps (class ids, palette PNG) to {out_dir} and previews to "
      f"{os.path.join(out_dir, 'preview')}")
  return outputs
