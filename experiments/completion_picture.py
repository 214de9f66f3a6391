"""The README's picture: CamVid val labels with realistic holes, completed by an L-MAE run and by the geodesic fill.

  python experiments/completion_picture.py --model=RUN [--data=../shared/data/camvid] [--per_damage=2] \
      [--stride=25] [--out=docs/completion_example.png]

`--per_damage` x 2 images of `ImageSets/Segmentation/val.txt`, every `--stride`-th (CamVid's neighbouring
frames look alike); each label is damaged one way
(`methods/lmae/label_damage.py`, seed 0): whole objects removed, or smooth blobs. Each damaged folder is then
completed by `maskseg-complete` twice, with the setting the realistic-holes study recommends for that damage
(experiments/results/lmae_real_holes.md: objects -> the model with exact masking; blobs -> `--method=hybrid
--min_missing=0.5`) and with `--method=geodesic` (no model), and the rows are drawn as
image | given label (missing pixels marked) | L-MAE | geodesic fill | truth, with a legend. `--tiny` shrinks the
images to 1/4 for a smoke test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from maskseg_jax import visualize  # noqa: E402
from maskseg_jax.data.file_layouts import CAMVID_CLASSES, CAMVID_DEFAULT_ROOT  # noqa: E402
from maskseg_jax.methods.lmae import label_damage  # noqa: E402

# damage -> the model's completion flags (the realistic-holes study's advice for that kind of hole)
ROWS = {"objects": [], "blobs": ["--method=hybrid", "--min_missing=0.5"]}
COLUMNS = ("image", "given (holes marked)", "L-MAE", "geodesic fill", "truth")
MISSING_NAME = "missing"


def val_stems(data: str, n: int, stride: int) -> list[str]:
  path = os.path.join(data, "ImageSets", "Segmentation", "val.txt")
  if not os.path.isfile(path):
    raise SystemExit(f"--data={data}: no {path}; expected the CamVid VOC layout (JPEGImages/, SegmentationClass/)")
  with open(path) as f:
    stems = [line.split()[0] for line in f if line.strip()]
  picked = stems[::stride][:n]
  if len(picked) < n:
    raise SystemExit(f"{path}: {len(stems)} stems give {len(picked)} at stride {stride}; expected {n}")
  return picked


def read(data: str, stem: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
  image = Image.open(os.path.join(data, "JPEGImages", f"{stem}.jpg")).convert("RGB")
  label = Image.open(os.path.join(data, "SegmentationClass", f"{stem}.png"))
  if scale != 1.0:
    size = (round(image.width * scale), round(image.height * scale))
    image, label = image.resize(size, Image.BILINEAR), label.resize(size, Image.NEAREST)
  return np.asarray(image), np.asarray(label)


def complete(images: str, labels: str, out: str, flags: list[str]) -> None:
  cmd = [sys.executable, "-m", "maskseg_jax.complete", f"--images={images}", f"--labels={labels}", f"--out={out}",
         "--missing=unknown", *flags]
  r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
  if r.returncode != 0:
    raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")


def half(a: np.ndarray) -> np.ndarray:
  return a[::2, ::2]  # every second pixel: labels keep their values


def main(argv=None) -> str:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--model", required=True, help="an L-MAE run folder (e.g. a configs/lmae.py:camvid,recipe run)")
  ap.add_argument("--data", default=str(CAMVID_DEFAULT_ROOT), help="CamVid in the VOC layout")
  ap.add_argument("--per_damage", type=int, default=2, help="images per damage kind")
  ap.add_argument("--stride", type=int, default=25, help="take every stride-th val image")
  ap.add_argument("--out", default=os.path.join(REPO, "docs", "completion_example.png"))
  ap.add_argument("--tiny", action="store_true", help="1/4-size images (smoke test)")
  args = ap.parse_args(argv)
  scale = 0.25 if args.tiny else 1.0
  stems = val_stems(args.data, args.per_damage * len(ROWS), args.stride)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for k, (kind, flags) in enumerate(ROWS.items()):
      folder = os.path.join(tmp, kind)
      for sub in ("images", "labels"):
        os.makedirs(os.path.join(folder, sub))
      picked = stems[k * args.per_damage:(k + 1) * args.per_damage]
      truth = {}
      for stem in picked:
        image, label = read(args.data, stem, scale)
        truth[stem] = (image, label)
        Image.fromarray(image).save(os.path.join(folder, "images", f"{stem}.png"))
        broken = label_damage.damage(kind, label, seed=0, image_id=stem)
        Image.fromarray(broken).save(os.path.join(folder, "labels", f"{stem}.png"))
      complete(f"{folder}/images", f"{folder}/labels", f"{folder}/model", [f"--model={args.model}", *flags])
      complete(f"{folder}/images", f"{folder}/labels", f"{folder}/geodesic",
               ["--method=geodesic", f"--num_classes={len(CAMVID_CLASSES)}"])
      for stem in picked:
        image, label = truth[stem]
        given = np.asarray(Image.open(os.path.join(folder, "labels", f"{stem}.png")))
        model = np.asarray(Image.open(os.path.join(folder, "model", f"{stem}.png")))
        fill = np.asarray(Image.open(os.path.join(folder, "geodesic", f"{stem}.png")))
        rows.append([half(image)] + [half(x) for x in (given, model, fill, label)])
  legend = [(MISSING_NAME if name == "unknown" else name, rgb)
            for name, rgb in visualize.class_legend(len(CAMVID_CLASSES), CAMVID_CLASSES, unknown=True)]
  picture = visualize.with_legend(visualize.grid(rows), legend, titles=COLUMNS)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  Image.fromarray(picture).save(args.out, optimize=True)
  print(f"{args.out}: rows {list(ROWS)} x {args.per_damage}, images {stems}")
  return args.out


if __name__ == "__main__":
  main()
