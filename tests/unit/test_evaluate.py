"""client/evaluate.py without a server or the Hub: an offline Hub split is a one-line error."""

from tests.helpers.scripts import evaluate


def test_an_offline_hub_split_is_a_one_line_error(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1"}
    result = evaluate("dair-ai/emotion:test", "--url", "127.0.0.1:1", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot load data set 'dair-ai/emotion'") and result.stderr.count("\n") == 1
    assert result.stdout == ""
