"""`qscope bench serve-mix` small and bounded, in process on the tiny default: both workers run the same mixed
workload and every request gets the same tokens from both; the report carries the figures the issue asks for."""

import json

from qscope.bench import serve_mix


def test_both_schedulers_answer_the_mix_with_the_same_tokens(tiny_demo, one_torch_thread, capsys):
    serve_mix.main(
        [
            "--model",
            str(tiny_demo / "model"),
            "--saes",
            str(tiny_demo / "saes"),
            "--requests",
            "8",
            "--spread-s",
            "0.2",
            "--long-tokens",
            "16",
            "--device",
            "cpu",
        ]
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["same_tokens"] == 1.0
    for name in ("continuous", "static"):
        figures = report[name]
        assert figures["tokens"] > 0 and figures["ttft_p50_ms"] <= figures["ttft_p99_ms"]
        assert figures["latency_p99_ms"] >= figures["ttft_p99_ms"] and figures["short_among_long"] > 0
    assert report["continuous"]["tokens"] == report["static"]["tokens"]


def test_the_static_switch_runs_the_static_worker_only(tiny_demo, one_torch_thread, capsys):
    args = ["--model", str(tiny_demo / "model"), "--saes", str(tiny_demo / "saes"), "--requests", "3"]
    serve_mix.main([*args, "--spread-s", "0", "--long-tokens", "4", "--device", "cpu", "--static"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "static" in report and "continuous" not in report and "same_tokens" not in report
