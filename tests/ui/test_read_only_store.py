"""The sidebar of a colleague who may only read the team's S3 store (moto on loopback, a bucket policy
denying writes): it says so, shows the runs, and Pin answers with the one-line refusal."""
import json
import os

import pytest
from support.services import moto_s3, s3_env

from jupyter_flow.store import open_store, records

from . import test_sidebar as ui
from .conftest import need_chromium, start_lab
from .test_team_history import team_store

pytestmark = [pytest.mark.ui, pytest.mark.slow]
DENY_WRITES = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Deny", "Principal": "*", "Action": ["s3:PutObject", "s3:DeleteObject"],
    "Resource": "arn:aws:s3:::team/*"}]}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    import boto3
    import s3fs

    need_chromium()
    with moto_s3(tmp_path_factory.mktemp("moto")) as endpoint:
        env = s3_env(endpoint)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the lab inherits it
        s3fs.S3FileSystem.clear_instance_cache()
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="team")
        team_store("s3://team/flow", count=40)
        s3.put_bucket_policy(Bucket="team", Policy=json.dumps(DENY_WRITES))
        try:
            yield from start_lab(tmp_path_factory.mktemp("lab"), ["--JupyterFlow.store=s3://team/flow"])
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            s3fs.S3FileSystem.clear_instance_cache()


def test_a_read_only_colleagues_sidebar(lab, page):
    assert "PutObject denied" in lab.api("jupyter-flow/api/version")["read_only"]
    ui.open_notebook(page, lab, "quickstart.ipynb")
    page.locator(f"{ui.SIDEBAR} .jp-flow-readonly").wait_for(timeout=20_000)
    detail = page.locator(f"{ui.SIDEBAR} .jp-flow-rundetail")
    detail.wait_for(timeout=30_000)
    detail.locator(".jp-flow-pinbutton", has_text="Pin").click()
    message = detail.locator(".jp-flow-pinmessage")
    message.wait_for(timeout=20_000)
    assert "read-only for these credentials (PutObject denied)" in message.inner_text()
    assert detail.locator(".jp-flow-pin").count() == 0
    run_id = detail.get_attribute("data-run")
    assert records.pins(open_store("s3://team/flow")) == {} and run_id
    message.scroll_into_view_if_needed()
    for theme in ("JupyterLab Dark", "JupyterLab Light"):
        ui.set_theme(page, theme)
        assert ui.low_contrast(page) == [], theme
        ui.shot(page, "11-read-only-store" + ("-dark" if "Dark" in theme else ""))
        assert ui.misaligned(ui.run_head_buttons(page)) == [] and ui.split_units(page) == [], theme
