"""Datasets: records with sensitive spans, generators, importers, taggers and token masks."""

from privtune.data.schema import (Dataset, DatasetInfo, Record, Span, load_dataset, read_jsonl,
                                  write_dataset, write_jsonl)

__all__ = ["Dataset", "DatasetInfo", "Record", "Span", "load_dataset", "read_jsonl", "write_dataset",
           "write_jsonl"]
