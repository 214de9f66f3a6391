"""Semi-supervised segmentation: UniMatch weak-to-strong consistency with S4MIM and MaskMatch terms
(spec ../shared/specs/semi_supervised.md).

  config.py          the `semi` config section and the variant presets (supervised ... all)
  streams.py         labeled + unlabeled batches (weak/strong views, CutMix boxes), generated split files
  terms.py           the step's switches (`Terms`), thresholds and MaskMatch's ensemble guards
  model.py           segmenter + S4MIM reconstruction heads and the initial state (prototypes, EMA teacher)
  step.py            the pure train step (every loss term) and the labeled-only warm-up step
  ensemble.py        multi-scale teacher maps (MaskMatch) and the collapse guards
  mim_heads.py       S4MIM's class-wise reconstruction heads
  random_patches.py  patch masks of the masked views
  diagnostics.py     pseudo-label accuracy, confidence and class histograms per eval
  task.py            `build`: wires the above into a Task
"""
