"""Which kernel a step asks for, and how that kernel launches: the installed kernelspecs (found and
read as jupyter_client finds them, without importing jupyter_client or IPython, which would cost a
run served from the cache a third of its time), the command one runs, and the requirements of a
step's own `pip:` environment.

Low in the layers so that the flow (a step's language), the fork server (which zygote a kernelspec
needs) and the kernel pool (how to launch it) all read kernelspecs one way.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import sys

from jupyter_flow.errors import FlowError


def notebook_kernel(raw: dict) -> str:
    """The kernelspec a notebook (its nbformat dict) names in its metadata; python3 if it names none."""
    return (raw.get("metadata", {}).get("kernelspec") or {}).get("name") or "python3"


def installed_kernels(kernel_dirs=None) -> dict[str, str]:
    """{name: folder} of the installed kernelspecs, found as jupyter_client's KernelSpecManager finds
    them (a folder with a kernel.json in the kernels dirs of jupyter_path, the first one of a name
    wins) without importing jupyter_client (0.15 s, a third of a run served from the cache)."""
    from jupyter_core.paths import jupyter_path  # lazy: `jupyter flow --help` imports this module, not jupyter_core

    found: dict[str, str] = {}
    for kernels_dir in jupyter_path("kernels") if kernel_dirs is None else kernel_dirs:
        try:
            names = sorted(os.listdir(kernels_dir))
        except OSError:
            continue
        for name in names:
            folder = os.path.join(kernels_dir, name)
            if name.lower() not in found and os.path.isfile(os.path.join(folder, "kernel.json")):
                found[name.lower()] = folder
    return found


def ipykernel_resources() -> str | None:
    """The folder of ipykernel's own kernelspec, found without importing ipykernel."""
    found = importlib.util.find_spec("ipykernel")
    return found and found.origin and os.path.join(os.path.dirname(found.origin), "resources")


def spec_command(kernel_name: str) -> tuple[list[str], dict]:
    """The command and environment a kernelspec's kernel would be launched with, read without importing
    jupyter_client (to start its zygote early): ipykernel's own kernelspec, and `python3` where none is
    installed, run this interpreter; so does a bare `python` in a kernelspec (jupyter_client's rule)."""
    argv, env = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], {}
    folder = installed_kernels().get(kernel_name.lower())
    if folder is not None and folder != ipykernel_resources():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # jupyter_client will say what is wrong
            with open(os.path.join(folder, "kernel.json")) as f:
                spec = json.load(f)
            argv, env = list(spec["argv"]), dict(spec.get("env") or {})
    if argv and argv[0] in {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}:
        argv[0] = sys.executable
    return argv, {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1", **env}


def check_kernelspecs(flow) -> None:
    """Every kernel the flow's steps need is installed: the notebook's own (its metadata) and those
    of `kernel:` tags. The error says which one is missing and where it was asked for."""
    installed = installed_kernels()
    if importlib.util.find_spec("ipykernel") is not None:
        installed.setdefault("python3", "")
    if "python3" in installed:
        installed.setdefault("python", installed["python3"])  # jupyter_client's KernelManager reads it so
    tagged = {s.options["kernel"]: s.name for s in flow.steps.values() if "kernel" in s.options}
    for name in sorted(flow.kernels()):
        if name in installed:
            continue
        have = f"installed kernels: {', '.join(sorted(installed))}"
        if name in tagged:
            raise FlowError(f"no kernel named {name!r} (kernel:{name} on step {tagged[name]!r}); {have}. Install it "
                            "(python -m ipykernel install --user --name NAME) or fix the kernel: tag")
        language = "" if flow.notebook.python else f", language {flow.notebook.language}"
        where = "its metadata" if name == flow.notebook.kernel else "-k"
        raise FlowError(f"the notebook's kernel {name!r} ({where}{language}) is not installed; {have}. Install "
                        "that kernel, pick an installed one in Jupyter (Kernel > Change Kernel) and save, or run with "
                        "-k NAME")


def requirement(spec: str) -> str:
    """The normalized form of one `pip:` requirement (a step's own environment, see execution/envs);
    ValueError (its reason) if it is not one."""
    from packaging.requirements import InvalidRequirement, Requirement  # only notebooks with pip: tags need it

    try:
        return str(Requirement(spec))
    except InvalidRequirement as e:
        raise ValueError(str(e).splitlines()[0]) from None


@functools.lru_cache(maxsize=1)
def spec_manager_class():
    """A jupyter_client KernelSpecManager that finds and reads kernelspecs as above: IPython's folder
    found as IPython finds it, a kernel.json read without importing ipykernel to compare folders (and
    IPython with it: 0.2 s of a run's start-up). Built on first use: jupyter_client is imported then."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel  # lazy: 0.15 s, kernels only
    from jupyter_client.provisioning import KernelProvisionerFactory
    from jupyter_core.paths import jupyter_path

    class KernelSpecs(KernelSpecManager):
        def _kernel_dirs_default(self):
            ipython_dir = os.environ.get("IPYTHONDIR") or os.path.join(os.path.expanduser("~"), ".ipython")
            return [*jupyter_path("kernels"), os.path.join(ipython_dir, "kernels")]

        def get_kernel_spec(self, kernel_name):
            folder = installed_kernels(self.kernel_dirs).get(kernel_name.lower())
            if folder is None or folder == ipykernel_resources():
                return super().get_kernel_spec(kernel_name)
            spec = KernelSpec.from_resource_dir(folder)  # its kernel.json, read as jupyter_client reads it
            if not KernelProvisionerFactory.instance(parent=self.parent).is_provisioner_available(spec):
                raise NoSuchKernel(kernel_name)
            return spec

    return KernelSpecs
