"""heatdeploy bench: one row per artifact x batch x threads, stages that add up, files written."""

import json

from typer.testing import CliRunner

from heatdeploy.bench import run_bench
from heatdeploy.cli import app


def test_rows_cover_every_configuration(random_reference_bundle):
    rows = run_bench(random_reference_bundle, batches=(1, 2), threads=(1,), iters=2, warmup=1)
    assert [(r.artifact, r.batch, r.threads) for r in rows] == [("onnx-fp32", 1, 1), ("onnx-fp32", 2, 1)]
    for r in rows:
        assert r.p50_ms <= r.p90_ms <= r.p99_ms
        assert r.infer_ms > 0 and r.bare_infer_p50_ms > 0 and r.overhead > 0
        assert abs(r.throughput_ips - r.batch / r.p50_ms * 1e3) < 1e-6
        assert r.vs_first == 1.0


def test_cli_writes_json_and_png(random_reference_bundle, tmp_path):
    res = CliRunner().invoke(app, ["bench", str(random_reference_bundle), "--batch", "1", "--threads", "1",
                                   "--iters", "2", "--warmup", "1", "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data[0]["artifact"] == "onnx-fp32" and data[0]["batch"] == 1
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
