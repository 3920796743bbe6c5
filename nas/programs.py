"""Moved to `nas.export.programs`; this name re-exports it for one release."""

from nas.export.programs import (CHECK_BATCHES, CHECK_SEED, TOLERANCE, check, check_inputs,  # noqa: F401
                                 max_diff, write_onnx, write_pt2)
