"""The study file: validation errors name the file and the field; defaults and derived values."""

import inspect
import textwrap

import pytest

from nas.study import StudyFileError, load_study_file, parse_amount

SPACE = """\
base: {base_depths: [1, 1, 1], overview_depth: 1, focus_depths: [1, 1], widths: [16, 32, 64, 64],
       focus_heads: [1, 1], head_width: 64, resolution: 32, num_classes: 4,
       reparam_kernels: [5, 5, 5, 5], dynamic_kernels: [5, 5], small_kernel: 3}
dimensions:
  region_count: {choices: [1, 2, 3]}
"""

VALID = """\
name: tiny
space: spaces/tiny.yaml
objectives: [accuracy, flops]
constraints: {flops: 2.5M, params: 1e6}
evaluator: {name: train, epochs: 2}
trials: 4
"""


@pytest.fixture
def write(tmp_path):
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "tiny.yaml").write_text(SPACE)

    def _write(text: str):
        path = tmp_path / "study.yaml"
        path.write_text(textwrap.dedent(text))
        return path
    return _write


def test_valid_file_defaults_and_derived(write):
    spec = load_study_file(write(VALID))
    assert spec.directions == ["maximize", "minimize"]
    assert spec.constraints == {"flops": 2.5e6, "params": 1e6}   # "1e6" is a string in YAML 1.1
    assert spec.sampler_name == "frontier"       # accuracy against costs -> frontier (docs/explanation/search.md)
    assert spec.score_metric == "accuracy" and not spec.needs_latency
    assert spec.space.size() == 3
    assert spec.run_dir().as_posix() == "runs/tiny"
    resolved = spec.resolved()
    assert resolved["space"]["dimensions"] == {"region_count": {"choices": [1, 2, 3]}}
    assert resolved["evaluator"] == {"name": "train", "epochs": 2}


@pytest.mark.parametrize("change, message", [
    ("constraints: {flops: -3}", "study.yaml: constraints.flops: must be a number > 0"),
    ("constraints: {flops: lots}", "study.yaml: constraints.flops: must be a number > 0"),
    ("constraints: {accuracy: 0.5}", "study.yaml: constraints: unknown constraint 'accuracy'"),
    ("objectives: [accuracy, speed]", "study.yaml: objectives: unknown objective 'speed'"),
    ("objectives: [{name: flops, direction: maximize}]", "study.yaml: objectives: flops is always minimized"),
    ("objectives: [accuracy, synflow]", "study.yaml: objectives: at most one evaluator score"),
    ("evaluator: {name: synflow}", "study.yaml: evaluator.name: 'synflow' produces 'synflow'"),
    ("evaluator: {name: magic}", "study.yaml: evaluator.name: unknown evaluator 'magic'"),
    ("trials: 0", "study.yaml: trials: must be a number >= 1"),
    ("trials: many", "study.yaml: trials: must be an integer, got 'many'"),
    ("sampler: {name: cmaes}", "study.yaml: sampler.name: must be one of"),
    ("sampler: {name: nsga2, popsize: 4}", "study.yaml: sampler.popsize: not an option of the nsga2 sampler"),
    ("sampler: {name: nsga2, population_size: 1}",
     "study.yaml: sampler.population_size: must be an integer >= 2, got 1"),
    ("sampler: {name: nsga2, population_size: many}",
     "study.yaml: sampler.population_size: must be an integer >= 2, got 'many'"),
    ("sampler: {name: nsga2, crossover_prob: 1.5}",
     "study.yaml: sampler.crossover_prob: must be a number in [0, 1], got 1.5"),
    ("sampler: {name: nsga2, mutation_prob: -0.1}",
     "study.yaml: sampler.mutation_prob: must be null or a number in [0, 1], got -0.1"),
    ("sampler: {name: tpe, n_ei_candidates: 0}", "study.yaml: sampler.n_ei_candidates: must be an integer >= 1, got 0"),
    ("sampler: {name: tpe, n_startup_trials: -1}", "study.yaml: sampler.n_startup_trials: must be an integer >= 0"),
    ("sampler: {name: tpe, multivariate: sometimes}", "study.yaml: sampler.multivariate: must be true or false"),
    ("sampler: {name: gp, deterministic_objective: 3}", "study.yaml: sampler.deterministic_objective: must be true or false"),
    ("sampler: {name: nsga2, crossover: uniform}",
     "study.yaml: sampler.crossover: takes a Python object, not a study-file value"),
    ("sampler: {name: random, seed: 3}", "study.yaml: sampler.seed: is set by the engine"),
    ("trials_count: all", "study.yaml: trials_count: must be one of"),
    ("latency: {dtype: int8}", "study.yaml: latency.dtype: must be one of"),
    ("device: tpu", "study.yaml: device: 'tpu' must be cpu, cuda, cuda:N or auto"),
    ("colour: blue", "study.yaml: colour: unknown key"),
    ("space: spaces/missing.yaml", "study.yaml: space: no such file"),
    ("space: {base: overlock_zz, dimensions: {region_count: {choices: [3]}}}", "study.yaml: space.base: unknown preset"),
])
def test_errors_name_the_field(write, change, message):
    key = change.split(":")[0]
    lines = [line for line in VALID.splitlines() if not line.startswith(key + ":")]
    with pytest.raises(StudyFileError) as info:
        load_study_file(write("\n".join(lines + [change]) + "\n"))
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text


def test_missing_field_and_bad_yaml(write, tmp_path):
    with pytest.raises(StudyFileError, match=r"study.yaml: objectives: is required"):
        load_study_file(write("name: x\nspace: spaces/tiny.yaml\n"))
    with pytest.raises(StudyFileError, match=r"not valid YAML \(line 3"):
        load_study_file(write("name: x\nspace: [unclosed\n"))
    with pytest.raises(StudyFileError, match="no such study file"):
        load_study_file(tmp_path / "nope.yaml")


def test_parse_amount():
    assert parse_amount("1.5G") == 1.5e9 and parse_amount("500k") == 5e5 and parse_amount(3) == 3.0
    for bad in (0, -1, "x", True, float("nan")):
        with pytest.raises(ValueError):
            parse_amount(bad)


def test_every_settable_sampler_option_builds_its_sampler(write):
    from nas.study import SAMPLER_OPTIONS, sampler_class

    valid = {"population_size": 4, "mutation_prob": 0.2, "crossover_prob": 0.8, "swapping_prob": 0.4,
             "n_startup_trials": 3, "n_ei_candidates": 8, "multivariate": True, "group": True,
             "constant_liar": False, "consider_prior": True, "prior_weight": 1.5,
             "consider_magic_clip": True, "consider_endpoints": False, "warn_independent_sampling": False,
             "deterministic_objective": True, "n_startup": 3, "candidates": 8, "pool": 16, "explore": 0.1,
             "scored": 512}
    for name, rules in SAMPLER_OPTIONS.items():
        options = {k: valid[k] for k in rules}
        spec = load_study_file(write(VALID + f"sampler: {{name: {name}, " +
                                     ", ".join(f"{k}: {str(v).lower()}" for k, v in options.items()) + "}\n"))
        assert spec.sampler.options == options
        assert isinstance(sampler_class(name)(seed=0, **options), sampler_class(name))


def test_the_study_file_takes_every_option_of_the_frontier_strategy():
    """The study file's frontier options are the strategy's (docs/reference/study-file.md lists
    them): `scored` was documented and the study file refused it."""
    from nas.search.frontier import DEFAULTS
    from nas.study import SAMPLER_OPTIONS, sampler_class

    assert set(SAMPLER_OPTIONS["frontier"]) == set(DEFAULTS)
    assert set(inspect.signature(sampler_class("frontier").__init__).parameters) == {"self", "seed", *DEFAULTS}


def test_trials_count_defaults_to_trained(write):
    assert load_study_file(write(VALID)).trials_count == "trained"
    assert load_study_file(write(VALID + "trials_count: sampled\n")).trials_count == "sampled"
