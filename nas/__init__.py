"""The search engine: study files, the ask/tell driver on Optuna + Ray, measurement, evaluators,
export and the `overlock-nas` command line."""
