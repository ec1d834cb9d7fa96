"""Float comparisons that hold on every CPU the suite runs on (AVX2, AVX-512 with VNNI/bf16, AMX, ARM).

Kernels for different instruction sets add the terms of a dot product in a different order, so two runs of the
same float32 network agree to a few float32 rounding steps *of the values' size*, not to a fixed absolute amount:
an absolute ``atol=1e-5`` on features of size ~2 sits below one rounding step of a 1280-term sum once the kernels
change (seen: 1.8449360 vs 1.8449477 on an AVX-512 EPYC). So the tolerance here scales with the largest
magnitude of the expected values.
"""

from __future__ import annotations

import numpy as np

# float32 carries ~7 significant digits; a sum of ~10^3 terms in another order moves by ~10^-5 of its size, so
# 1e-4 of the largest value leaves a margin of ten.
SAME_NETWORK = 1e-4


def assert_close(actual, desired, rel: float = SAME_NETWORK, err_msg: str = "") -> None:
    """``actual`` equals ``desired`` elementwise within ``rel`` times the largest ``|desired|`` (and within
    ``rel`` of each value): a relative tolerance for whole arrays whose small elements carry no meaning alone."""
    desired = np.asarray(desired, dtype=np.float64)
    scale = float(np.abs(desired).max()) if desired.size else 1.0
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), desired, rtol=rel,
                               atol=rel * (scale or 1.0), err_msg=err_msg)
