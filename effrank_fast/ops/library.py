"""The ``effrank_fast`` operator library: one ``torch.library.Library`` fragment, nothing else.

A leaf module (it imports only torch), so every ``ops/<op>/schema.py`` can define its ops on ``LIB``
without importing the registry that imports those schemas.
"""

from __future__ import annotations

import torch

LIB = torch.library.Library("effrank_fast", "FRAGMENT")
