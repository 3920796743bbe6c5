"""Weight sharing for OverLoCK search (issue 19): train one supernet per space and data set, then
score any architecture of the space by the weights it inherits.

- `nas.supernet.train`: `train_supernet` (the sandwich rule with in-place distillation, resumable,
  a card of what it was trained on); the CLI is `overlock-nas supernet train`.
- `nas.supernet.folder`: the trained folder as its readers see it (`resolve`, `read_card`,
  `load`): one set of checks for the `supernet` evaluator and `overlock-nas export --from-supernet`.
- `nas.supernet.score`: `score_subnet` (extract, re-estimate batch norm, validate); the
  `supernet` evaluator (`nas/evaluators/supernet.py`) and the fidelity benchmark use it.

The supernet itself (weight slicing, `extract`, save / load) is `overlock.supernet.Supernet`.
Measured fidelity and cost: docs/explanation/supernet.md.
"""
