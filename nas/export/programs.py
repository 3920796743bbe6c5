"""The exported programs of a deploy model: `model.pt2` (`torch.export`, the aggregation op kept
as one `overlock::na2d_av` node) and `model.onnx` (the op decomposed into plain ONNX ops), each
with a dynamic batch and checked against the eager model on seeded random inputs.

A program the exporter cannot write is recorded as a check with an `error`; a written program
whose logits differ from eager by more than `TOLERANCE` is a failed check. Either stops the
export before anything is published (`nas.export.pipeline`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import unittest.mock
import warnings
from pathlib import Path

import torch

from overlock import OverLoCKConfig, hub
from nas.storage import one_line as _one_line

__all__ = ["TOLERANCE", "CHECK_SEED", "CHECK_BATCHES", "check_inputs", "max_diff", "check",
           "write_pt2", "write_onnx", "onnx_missing"]

TOLERANCE = 1e-4      # max abs difference a deploy model / program may have from eager logits
CHECK_SEED = 0        # seed of the random check inputs
CHECK_BATCHES = (2, 1)  # programs are exported with a dynamic batch; both sizes are checked


def check_inputs(config: OverLoCKConfig) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(CHECK_SEED)
    return [torch.randn(b, config.in_chans, *config.resolution, generator=g) for b in CHECK_BATCHES]


def max_diff(outputs, references) -> float:
    return max(float((torch.as_tensor(o) - r).abs().max()) for o, r in zip(outputs, references))


def check(name: str, diff: float | None = None, tolerance: float = TOLERANCE, error: str | None = None,
           **extra) -> dict:
    record = {"check": name, "tolerance": tolerance, "batches": list(CHECK_BATCHES)}
    if error is not None:
        record.update(passed=False, error=error)
    else:
        record.update(max_abs_diff=diff, passed=bool(diff <= tolerance))
    record.update(extra)
    return record


@contextlib.contextmanager
def _quiet():
    """Silence exporter progress, FutureWarnings and 'torchvision is not installed' notes."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(open(os.devnull, "w")) as sink:
                try:
                    yield
                finally:
                    sink.close()
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export_program(deploy_model, example: torch.Tensor, decompose: bool):
    """`torch.export` of the deploy model with a dynamic batch.

    `decompose`: trace with the aggregation op swapped for its plain-aten form (for ONNX); the
    custom op's decomposition cannot go through `run_decompositions`, whose graph must be
    functional (`na2d_av_decomposed` accumulates in place).
    """
    import overlock.model as model_module
    from overlock.ops import na2d_av_decomposed

    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}
    swap = (unittest.mock.patch.object(model_module, "na2d_av", na2d_av_decomposed) if decompose
            else contextlib.nullcontext())
    with swap:
        program = torch.export.export(deploy_model, (example,), dynamic_shapes=dynamic)
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    has_custom = any("overlock" in op for op in ops)
    if decompose and has_custom:
        raise RuntimeError("the overlock::na2d_av op is still in the traced graph")
    if not decompose and not has_custom:
        raise RuntimeError("the overlock::na2d_av op did not stay a single node")
    return program


def write_pt2(deploy_model, inputs, references, tmp: Path) -> dict:
    try:
        with _quiet():
            program = _export_program(deploy_model, inputs[0], decompose=False)
            torch.export.save(program, str(tmp / hub.PROGRAM_FILE))
            loaded = torch.export.load(str(tmp / hub.PROGRAM_FILE)).module()
            with torch.no_grad():
                outputs = [loaded(x) for x in inputs]
    except Exception as e:  # noqa: BLE001 - recorded, the export goes on
        (tmp / hub.PROGRAM_FILE).unlink(missing_ok=True)
        return check("torch.export program (model.pt2) vs eager", error=_one_line(e))
    return check("torch.export program (model.pt2) vs eager", max_diff(outputs, references),
                  runtime=f"torch {torch.__version__}", op="overlock::na2d_av kept as one node")


def _onnx_runtime(path: Path):
    """(run(x) -> numpy, runtime label): onnxruntime when installed, else onnx's reference evaluator."""
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return (lambda x: session.run(None, {name: x.numpy()})[0]), f"onnxruntime {ort.__version__}"
    except ImportError:
        import onnx
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(str(path))
        name = evaluator.input_names[0]
        return (lambda x: evaluator.run(None, {name: x.numpy()})[0]), \
            f"onnx.reference.ReferenceEvaluator (onnx {onnx.__version__})"


def onnx_missing() -> str | None:
    """Why `model.onnx` cannot be written here (one line: the package that does not import), or
    None. The ONNX exporter needs `onnx` and `onnxscript`, which the README's install leaves out."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        return _one_line(e)
    return None


def write_onnx(deploy_model, inputs, references, tmp: Path) -> dict:
    name = "ONNX program (model.onnx) vs eager"
    try:
        import onnx

        with _quiet():
            program = _export_program(deploy_model, inputs[0], decompose=True)
            onnx_program = torch.onnx.export(program, (inputs[0],), dynamo=True, verbose=False,
                                             input_names=["images"], output_names=["logits"])
            onnx_program.save(str(tmp / hub.ONNX_FILE))
        onnx.checker.check_model(str(tmp / hub.ONNX_FILE))
        run, runtime = _onnx_runtime(tmp / hub.ONNX_FILE)
        outputs = [run(x) for x in inputs]
        opset = next((o.version for o in onnx.load(str(tmp / hub.ONNX_FILE), load_external_data=False)
                      .opset_import if o.domain in ("", "ai.onnx")), None)
    except Exception as e:  # noqa: BLE001 - recorded, the export goes on
        for f in tmp.glob("model.onnx*"):
            f.unlink()
        return check(name, error=_one_line(e))
    return check(name, max_diff(outputs, references), runtime=runtime, opset=opset,
                  op="overlock::na2d_av decomposed into plain ONNX ops")
