"""The three version numbers agree, and the install-time config points at a loadable extension."""
import importlib
import json
import re

from jupyter_flow._version import __version__

from .conftest import ROOT


def test_frontend_and_server_versions_match():
    package = json.loads((ROOT / "labextension" / "package.json").read_text())
    version_ts = (ROOT / "labextension" / "src" / "version.ts").read_text()
    assert package["version"] == __version__
    assert re.search(r"VERSION = '([^']+)'", version_ts).group(1) == __version__


def test_install_config_enables_a_loadable_server_extension():
    config = json.loads((ROOT / "jupyter-config" / "jupyter_server_config.d" / "jupyter_flow.json").read_text())
    (name,) = config["ServerApp"]["jpserver_extensions"]
    module = importlib.import_module(name)
    points = module._jupyter_server_extension_points()
    assert all(callable(importlib.import_module(p["module"])._load_jupyter_server_extension) for p in points)


def test_labextension_paths_name_the_built_package():
    from jupyter_flow.server import _jupyter_labextension_paths

    package = json.loads((ROOT / "labextension" / "package.json").read_text())
    install = json.loads((ROOT / "install.json").read_text())
    (path,) = _jupyter_labextension_paths()
    assert path["dest"] == package["name"] == "jupyter-flow"
    assert package["jupyterlab"]["outputDir"] == "../jupyter_flow/" + path["src"]
    assert install["packageName"] == "jupyter-flow"


def test_importing_the_server_package_stays_light():
    import subprocess
    import sys

    code = "import sys, jupyter_flow.server; print('tornado' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
