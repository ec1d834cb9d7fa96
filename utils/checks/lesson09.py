"""The exercise checks of Lesson 9: search a large collection (imported when a check of lesson 9
first runs)."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from . import exercise


def _exact_top(exact: Any, queries: np.ndarray, k: int) -> np.ndarray:
    return exact.search(np.atleast_2d(queries).astype(np.float32), k)[1]


@exercise("9.1", tolerance=1e-3, hint="faiss.IndexHNSWFlat(collection.shape[1], 2, "
                                      "faiss.METRIC_INNER_PRODUCT), efConstruction = 64, add the "
                                      "collection, efSearch = ef_search; search the queries with "
                                      "k=10: the mean share of each query's exact 10 (flat_rows) "
                                      "found")
def _(approximate, exact, queries, ef_search):
    # right only for an HNSW graph of the whole collection with 2 links per image (layer 0 holds
    # 2 x 2): its own recall@10 at efSearch = ef_search, whatever graph its build made
    graph = getattr(approximate, "hnsw", None)
    if graph is None or graph.nb_neighbors(1) != 2 or approximate.ntotal != exact.ntotal:
        return None
    probe = faiss.clone_index(approximate)  # the student's index keeps its own efSearch
    probe.hnsw.efSearch = ef_search
    queries = np.atleast_2d(queries).astype(np.float32)
    found = probe.search(queries, 10)[1]
    truth = _exact_top(exact, queries, 10)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))


@exercise("9.2", tolerance=1e-3, hint="hnsw.hnsw.efSearch = 8, search with k=10, then the mean "
                                      "share of each query's exact 10 found")
def _(approximate, queries, exact_rows):
    probe = faiss.clone_index(approximate)  # the student's index keeps its own efSearch
    probe.hnsw.efSearch = 8
    found = probe.search(queries, 10)[1]
    return float(np.mean([len(set(a) & set(b)) / 10
                          for a, b in zip(found, np.asarray(exact_rows)[:, :10])]))


@exercise("9.3", tolerance=1.0, hint="faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT), "
                                     "add the collection, then "
                                     "faiss.serialize_index(index).nbytes / index.ntotal")
def _(collection):
    index = faiss.IndexHNSWFlat(collection.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.add(np.asarray(collection, dtype=np.float32))
    return faiss.serialize_index(index).nbytes / index.ntotal
