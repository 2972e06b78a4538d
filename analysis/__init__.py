"""Lottery-ticket sweep results from MLflow as pandas tables, statistics, plots and reports.

`load` reads an experiment into one tidy table; `summary`, `matching`, `paired` and `paired_by_seed` compute the
tables `python -m analysis report` writes (summary.csv, matching.csv, paired.csv, paired_seeds.csv) from it.
"""

from .api import load, matching, paired, paired_by_seed, summary

__all__ = ["load", "summary", "matching", "paired", "paired_by_seed"]
