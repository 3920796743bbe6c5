"""The search driver's parts, one concept each; `nas.engine.SearchEngine` runs them in order.

    session   open the run directory's study (lock, storage, resume checks, stored study
              attributes, evaluator, sampler) into one frozen `Session`
    ledger    the driver's books: live trials and their queues, duplicates parked on a live
              trial, the trial budget (counted incrementally), progress and the result; `ask_next`
              is where a new trial is asked for (the seam for sampling)
    pricing   what a config costs before training: the exact cost (fvcore cross-check) and its
              latency (device store, latency model, measuring worker, recheck, timeout); it
              returns what it learned and writes nothing to Optuna
    halving   successive halving: rung scores and `decide(...)`, pure (no Optuna, Ray or torch)
    recorder  the only code that writes a trial: attributes (named in `nas.storage.TRIAL_ATTRS`),
              constraint values, the tell, one read-back
    weights   the run directory's weights files: names, write, move, delete
    contract  what a proposer hands the driver (`Proposal`), prices draws with (`Pricer`, over
              `space.budgets`) and rejects them for; `proposals` (the Optuna shadow proposer
              and the factory) and `frontier` (the project's strategy) keep it

Nothing here imports torch at module level.
"""
