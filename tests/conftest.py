"""Shared pytest set-up."""
import os
import sys

# Make `import cnntool` work from a checkout that is not pip-installed (plain `pytest`).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
