"""Datasets for fine-tuning: formats read into one normalised row, every row validated, token-exact reports.

- `examples`: `Example`, `Message` (the normalised row); `problems`: `Problem`, `REASONS`
- `readers`: a file's rows by its kind (JSONL, JSON, CSV/TSV, Parquet, text); `formats`: row formats, detection
- `validation`: every row read into examples and problems; `tokens`: `encode` (input_ids + assistant_masks)
- `histogram`, `charts`: lengths in bins, drawn as text and PNG; `split`: the seeded train/validation split
- `report`: the report a card shows; `records`: `DatasetRecord`, `DatasetReport`; `datasets`: the `Datasets` service
"""

from modelbay.engine.datasets.datasets import Datasets
from modelbay.engine.datasets.examples import Example, Message
from modelbay.engine.datasets.formats import FORMATS, Format, parse_columns
from modelbay.engine.datasets.histogram import Histogram
from modelbay.engine.datasets.problems import REASONS, Problem
from modelbay.engine.datasets.records import DatasetRecord, DatasetReport, ProblemSummary
from modelbay.engine.datasets.split import Split
from modelbay.engine.datasets.tokens import POLICIES, Encoded, Policy, Segment, encode, load_tokenizer, segments
from modelbay.engine.datasets.validation import Validation

__all__ = [
    "DatasetRecord", "DatasetReport", "Datasets", "Encoded", "Example", "FORMATS", "Format", "Histogram", "Message",
    "POLICIES", "Policy", "Problem", "ProblemSummary", "REASONS", "Segment", "Split", "Validation", "encode",
    "load_tokenizer", "parse_columns", "segments",
]
