"""The optimizer x loss study: train every combination with one budget and one split, score each on
held-out images, and report which wins (``slimseg study``).

Modules, one job each:

- ``grid``: the study's configuration (names checked before any run starts) and its runs;
- ``dataset``: the data folder, its fingerprint and the fixed held-out split;
- ``task``: what a worker does for one run (train, evaluate) and the one-epoch budget probe;
- ``runner``: dispatch through Dask distributed (a local cluster, or an existing scheduler);
- ``results``: the resumable results folder (``results.csv`` written by the client only);
- ``stats``: per-cell aggregation, ranking and the paired test;
- ``report``: ``report.md`` with PNG figures; ``compression``: the winner's compression table.

Importing this package imports neither torch nor dask.
"""
