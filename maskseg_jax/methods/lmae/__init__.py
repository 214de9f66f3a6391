"""L-MAE label completion (a label masked autoencoder; spec ../shared/specs/lmae.md).

  config.py        the `lmae` config section (`apply_lmae`)
  model.py         the L-MAE: Stack Fuse, Image Patch Supplement, ViT encoder/decoder (`build_lmae`)
  extensions.py    this project's model extensions (nearest-label prior, pixel refinement head)
  patch_masks.py   patch masks with static shapes: random, Background-First, label-first, mixed strategies
  task.py          `build`: data, the pure train step (weighted CE on masked patches), evaluators
  evaluator.py     PA-mIoU / global mIoU per mask strategy, with the non-learned fills scored beside the model
  fills.py         non-learned completions (nearest visible label, geodesic): eval baselines and --method choices
  inference.py     model-resolution helpers shared by eval and completion (exact masks, buckets, given logits)
  completion.py    the completion protocol (which pixels are given, tiles, routing) for one file
  completion_methods.py  the --method choices (auto, hybrid, model, the fills) and pair_completer
  runs.py          trained runs -> Completers (config.json + checkpoint), one model per ratio
  label_folder.py  completing a folder of files (PNG IO, staging, never overwriting) and `mode=complete`
  review.py        what a data team reviews: a preview and a report per file, report.csv, the model's confidence
  color_labels.py  colour-coded (RGB) labels through a palette file (--palette), written back in their colours
  label_damage.py  realistic label damage (blobs, objects, thinned boundaries) for the real-holes evaluation
"""
