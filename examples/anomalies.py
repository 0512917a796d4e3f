"""Anomaly detection with exact log-densities: score every house of SaratogaHouses under a flow
fitted to all ten numeric columns and list the lowest-density 1%.

    .venv/bin/python examples/anomalies.py         # needs: pip install 'flowfit[data]'
"""

import numpy as np

from flowfit import FlowDensity, datasets

table, names = datasets.saratoga()
values = table.numpy().astype(np.float64)
model = FlowDensity(random_state=0, steps=3000).fit(values)
print(
    "preprocessing:",
    ", ".join(
        f"{n}: {p['kind']}{' (dequantized)' if p['dequantize'] else ''}"
        for n, p in zip(names, model.preprocess_, strict=True)
    ),
)
log_p = model.score_samples(values)
threshold = np.percentile(log_p, 1)
flagged = np.flatnonzero(log_p <= threshold)
print(f"{len(flagged)} houses below the 1st percentile of log-density ({threshold:.1f} nats):")
print("log p  " + "  ".join(f"{n:>10}" for n in names))
for row in flagged[np.argsort(log_p[flagged])]:
    print(f"{log_p[row]:6.1f} " + "  ".join(f"{v:10.6g}" for v in values[row]))
