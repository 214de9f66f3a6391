"""`maskseg-complete`: complete a folder of broken labels with a trained L-MAE or a non-learned fill.

  maskseg-complete --images=DIR --labels=DIR --out=NEW_DIR --model=RUN_DIR [--model=0.7=RUN_DIR2 ...]
      [--method=auto|model|hybrid|nearest|geodesic] [--hybrid_radius=PX] [--min_missing=FRACTION]
      [--missing=unknown_and_void|unknown|paper] [--scale=train|fit] [--num_classes=N]
      [--palette=colors.json|txt] [--no-review]

Beside the completed labels, `NEW_DIR/review/` gets a preview per file (image | input label | completed |
filled pixels, with a legend), its report `<stem>.json` (pixels filled, method, mean confidence) and
`report.csv` (every file, least confident first). Colour-coded (RGB) labels need `--palette`
(`maskseg_jax/methods/lmae/color_labels.py`: colour -> class id) and are written back in the same colours.

The protocol (which pixels are given, exact masking, tiles, several models) is in
`maskseg_jax/methods/lmae/completion.py`; files and staging in `methods/lmae/label_folder.py`. Bad input: one
`error: ...` line, exit 2; SIGTERM exits 143 and Ctrl-C 130 with nothing written.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Sequence

from maskseg_jax.errors import MasksegError
from maskseg_jax.methods.lmae.completion import DEFAULT_MISSING, DEFAULT_UNKNOWN, MISSING, SCALES
from maskseg_jax.methods.lmae.completion_methods import AUTO_MIN_MISSING, DEFAULT_METHOD, METHODS
from maskseg_jax.methods.lmae.label_folder import Terminated, complete_folder


EXIT_SIGNAL = {Terminated: 128 + signal.SIGTERM, KeyboardInterrupt: 128 + signal.SIGINT}


def run_main(argv: Sequence[str] | None = None) -> None:
  """Console script `maskseg-complete`; bad input prints `error: ...` and exits 2 (SIGTERM 143, Ctrl-C 130)."""
  ap = argparse.ArgumentParser(prog="maskseg-complete", description=__doc__.split("\n")[0])
  ap.add_argument("--images", required=True, help="folder of images (.jpg/.jpeg/.png)")
  ap.add_argument("--labels", required=True, help="folder of <image stem>.png labels (palette, grayscale, or colour "
                  "with --palette)")
  ap.add_argument("--out", required=True, help="folder for the completed labels (new, outside the inputs)")
  ap.add_argument("--model", action="append", default=[],
                  help="trained L-MAE workdir, optionally RATIO=WORKDIR (default ratio: its lmae.mask_ratio); "
                       "repeat for several ratios (one model per ratio); needed by --method=model")
  ap.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS,
                  help="auto (default; this project's extension: each hole by its shape, thin gaps the nearest "
                       "fill, missing objects the model, blobs the hybrid), model (L-MAE on every hole), hybrid "
                       "(geodesic fill near given pixels, the model elsewhere; this project's extension) or a "
                       "non-learned fill (no model needed)")
  ap.add_argument("--hybrid_radius", type=float, default=0.0,
                  help="hybrid: missing pixels within this many file pixels of a given class pixel take the fill "
                       "(default 0: half a model patch at the tile scale)")
  ap.add_argument("--min_missing", type=float, default=None,
                  help="model/hybrid/auto: mask a patch only when at least this fraction of its pixels is "
                       "missing (auto: of a blob's); the other missing pixels are pre-filled by a fill (default: "
                       f"{AUTO_MIN_MISSING:g} for auto, 0 = any for model and hybrid; this project's extension)")
  ap.add_argument("--missing", default=DEFAULT_MISSING, choices=tuple(MISSING),
                  help="pixels to fill: unknown_and_void (default), unknown (void is given), paper (also "
                       "background classes, Background-First at the model's ratio)")
  ap.add_argument("--scale", default="train", choices=tuple(SCALES),
                  help="train: tiles at the run's training field of view (default); fit: whole file resized")
  ap.add_argument("--palette", default="", help="colour -> class id file for RGB (colour-coded) labels: .json "
                  "{\"<id>\": [r, g, b]} or .txt lines `id r g b [name]` / CVAT labelmap `name:r,g,b::`; outputs keep "
                  "the colours")
  ap.add_argument("--review", action=argparse.BooleanOptionalAction, default=True,
                  help="write OUT/review/: a preview and a report per file and report.csv (default on)")
  ap.add_argument("--checkpoint", default="latest", choices=("latest", "best"))
  ap.add_argument("--num_classes", type=int, default=None,
                  help="fills: the class count label values are checked against (default: --model's run); a "
                       "value that is no class, void or the unknown marker is refused, as with the model")
  ap.add_argument("--unknown_value", type=int, default=None, help="label value of pixels to fill (default: "
                  f"the model's lmae.unknown_value, {DEFAULT_UNKNOWN}); 255 makes void the unknown marker")
  args = ap.parse_args(argv)
  try:
    reports = complete_folder(args.images, args.labels, args.out, args.model, method=args.method,
                              missing=args.missing, scale=args.scale, checkpoint=args.checkpoint,
                              unknown_value=args.unknown_value, radius=args.hybrid_radius,
                              min_missing=args.min_missing, num_classes=args.num_classes,
                              palette=args.palette, write_review=args.review)
  except MasksegError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt as e:
    what = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
    print(f"error: interrupted by {what}; nothing was written to {args.out} (partial outputs removed)",
          file=sys.stderr)
    sys.exit(EXIT_SIGNAL[type(e) if type(e) in EXIT_SIGNAL else KeyboardInterrupt])
  confident = [r.mean_confidence for r in reports if r.mean_confidence is not None]
  print(json.dumps({"files": len(reports), "changed_pixels": sum(r.changed_pixels for r in reports),
                    "method": args.method, "missing": args.missing,
                    "mean_confidence": round(sum(confident) / len(confident), 4) if confident else None,
                    "review": os.path.join(args.out, "review") if args.review else None}))


if __name__ == "__main__":
  run_main()
