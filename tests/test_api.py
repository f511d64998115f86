"""The public Python API: every re-export resolves, and `import cnntool` stays light."""
import subprocess
import sys

import cnntool


def test_every_public_name_resolves():
    for name in cnntool.__all__:
        assert getattr(cnntool, name) is not None, name


def test_import_does_not_load_torch():
    code = "import sys, cnntool; assert 'torch' not in sys.modules; cnntool.capture; assert 'torch' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
