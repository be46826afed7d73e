"""Fast units of the fork server: which kernelspec commands fork from which zygote, and which modules a
zygote may preload."""
import sys

from jupyter_flow.speed import forkserver


def test_the_commands_ipykernel_install_writes_fork_with_their_options():
    argv = [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    zygote, args = forkserver.fork_plan(argv, {"PATH": "", "PYTHONPATH": "/x"})
    assert zygote.python == sys.executable and zygote.options == ("-Xfrozen_modules=off",)
    assert zygote.startup_env == (("PYTHONPATH", "/x"),) and args == ["-f", "{connection_file}"]
    assert forkserver.fork_plan([sys.executable, "-E", "-X", "utf8", "-m", "ipykernel", "-f", "c"], {})[0].options \
        == ("-E", "-Xutf8")


def test_only_options_that_change_what_the_kernel_reports_start_cold():
    for option, why in ((["-v"], "-v reports"), (["-X", "importtime"], "-X importtime reports"),
                        (["-Z"], "option -Z is unknown")):
        plan = forkserver.fork_plan([sys.executable, *option, "-m", "ipykernel_launcher"], {})
        assert isinstance(plan, str) and why in plan, plan
    assert "is not `python -m ipykernel_launcher`" in forkserver.fork_plan(["R", "--slave", "-e", "x"], {})


def test_a_zygote_preloads_only_modules_known_to_be_safe_to_fork(monkeypatch):
    monkeypatch.delenv("JUPYTER_FLOW_PRELOAD_ALLOW", raising=False)
    assert all(forkserver.preload_allowed(m) for m in ("os.path", "json", "numpy", "pandas.core", "sklearn"))
    assert not any(forkserver.preload_allowed(m) for m in ("torch", "tensorflow", "grpc", "mylib", "numpyx"))
    monkeypatch.setenv("JUPYTER_FLOW_PRELOAD_ALLOW", "mylib, other")
    assert forkserver.preload_allowed("mylib.sub") and not forkserver.preload_allowed("torch")
