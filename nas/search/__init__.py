"""The search driver's parts, one concept each; `nas.engine.SearchEngine` runs them in order.

    session   open the run directory's study (lock, storage, resume checks, stored study
              attributes, evaluator, sampler) into one frozen `Session`
    ledger    the driver's books: live trials and their queues, duplicates parked on a live
              trial, the trial budget (counted incrementally); `Reporter`: progress, the front,
              a line per event and the result
    pricing   what a config costs before training: the exact cost (fvcore cross-check) and its
              latency (device store, latency model, measuring worker, recheck, timeout) with the
              policy for one trial (`LatencyPricer.place` / `.measured` -> `LatencyStep`); it
              returns what it learned and writes nothing to Optuna
    slots     the executor's side of the loop: how many trials train at once, warm-up, queued
              work started on free slots, finished and overdue tasks handed back
    evaluation  an evaluation's result checked and recorded, where a continued trial picks up,
              then the rung's decision (a `Step` the driver applies)
    halving   successive halving: rung scores and `decide(...)`, pure (no Optuna, Ray or torch)
    recorder  the only code that writes a trial: attributes (named in `nas.storage.TRIAL_ATTRS`),
              constraint values, the tell, one read-back
    weights   the run directory's weights files: names, write, move, delete
    contract  what a proposer hands the driver (`Proposal`), prices draws with (`Pricer`, over
              `space.budgets`) and rejects them for; `proposals` (the Optuna shadow proposer
              and the factory) and `frontier` (the project's strategy) keep it

Nothing here imports torch at module level.
"""
