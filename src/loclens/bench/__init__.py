"""``loclens bench``: every stage measured on real VQA-RAD images, side by side with a naive mode.

- ``data``: cuts a small VQA-RAD release (real images, verbatim QA) for the run;
- ``stages``: the measured stages (ingest, segment per segmenter, box decoding, render,
  Parquet, training reader), each calling the pipeline's own functions;
- ``naive``: the pipeline run as the paper's scripts do (one image and one prompt at a time,
  re-encoding per prompt, PNG files), for speed-up ratios measured in the same run;
- ``worker``: runs one stage in a fresh process and records its memory peaks;
- ``runner``: orders the stages and the scaling runs; ``report``: ratios, targets, tables.

Figures are benchmarks, not tests: the test suite only checks that the tool produces them.
"""

from .report import format_report
from .runner import BenchOptions, run_bench

__all__ = ["BenchOptions", "run_bench", "format_report"]
