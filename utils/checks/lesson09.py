"""The exercise checks of Lesson 9: search a large collection."""

import faiss
import numpy as np

from . import exercise


def _recall_at_10(approximate, ef_search, queries, truth):
    """The mean share of each query's exact 10 nearest (``truth``) that the HNSW index finds at
    ``ef_search`` (searching a copy: the student's index keeps its own efSearch)."""
    probe = faiss.clone_index(approximate)
    probe.hnsw.efSearch = ef_search
    found = probe.search(queries, 10)[1]
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))


@exercise("9.1", "faiss.IndexHNSWFlat(collection.shape[1], 2, faiss.METRIC_INNER_PRODUCT), "
                 "efConstruction = 64, add the collection, efSearch = ef_search; search the "
                 "queries with k=10: the mean share of each query's exact 10 (flat_rows) found",
                 tolerance=1e-3)
def _(approximate, exact, queries, ef_search):
    # right only for an HNSW graph of the whole collection with 2 links per image (layer 0 holds
    # 2 x 2): its own recall@10 at efSearch = ef_search, whatever graph its build made
    graph = getattr(approximate, "hnsw", None)
    if graph is None or graph.nb_neighbors(1) != 2 or approximate.ntotal != exact.ntotal:
        return None
    queries = np.atleast_2d(queries).astype(np.float32)
    return _recall_at_10(approximate, ef_search, queries, exact.search(queries, 10)[1])


@exercise("9.2", "hnsw.hnsw.efSearch = 8, search with k=10, then the mean share of each query's "
                 "exact 10 found", tolerance=1e-3)
def _(approximate, queries, exact_rows):
    return _recall_at_10(approximate, 8, queries, np.asarray(exact_rows)[:, :10])


@exercise("9.3", "faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT), add the collection, then "
                 "faiss.serialize_index(index).nbytes / index.ntotal", tolerance=1.0)
def _(collection):
    index = faiss.IndexHNSWFlat(collection.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.add(np.asarray(collection, dtype=np.float32))
    return faiss.serialize_index(index).nbytes / index.ntotal
