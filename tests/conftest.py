import os

import torch
from hypothesis import settings

torch.set_num_threads(int(os.environ.get("FLOWFIT_TEST_THREADS", min(2, os.cpu_count() or 1))))
settings.register_profile("flowfit", max_examples=25, deadline=None, derandomize=True)
settings.load_profile("flowfit")
