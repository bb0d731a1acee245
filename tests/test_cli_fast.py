"""A CLI that answers at once: listings, help and wrong arguments never wait for torch (or the network).

`metrics list` shows every metric with what it scores and whether it runs here. Speed is measured by
what gets imported, not by timing (a timed assertion fails on a busy machine and proves nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys

LIST = ("import sys\n"
        "from evalkit.cli import cli\n"
        "cli.main(['metrics', 'list'], standalone_mode=False)\n"
        "print('TORCH-IMPORTED', 'torch' in sys.modules)\n")


def _fake_cached(cache, repo_id):
    """The hub cache layout huggingface_hub reads offline: refs/main -> snapshots/<commit>/."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")


def test_metrics_list_says_what_runs_here_and_how_to_get_the_rest(tmp_path):
    cache = tmp_path / "hub"
    _fake_cached(cache, "openai/clip-vit-large-patch14")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-c", LIST], capture_output=True, text=True, env=env, check=True).stdout
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│") and
            line.split("│")[1].strip()}
    assert set(rows) >= {"clip", "fid", "hpsv2", "imagereward", "tifa"}
    assert "coco-10k" in rows["clip"] and "higher" in rows["clip"] and "ready" in rows["clip"]
    assert "tifa-v1.0" in rows["tifa"] and "missing" in rows["tifa"] and "lower" in rows["fid"]
    assert "tifa: hf download microsoft/git-large-vqav2 --revision main" in out
    assert "clip: " not in out  # ready: no instructions
    assert "fid: put the weights file at" in out
    assert "TORCH-IMPORTED False" in out


ANSWER_WITHOUT_TORCH = ("import sys\n"
                        "from evalkit.cli import cli\n"
                        "from evalkit.errors import EvalkitError\n"
                        "try:\n"
                        "    cli.main(sys.argv[1:], standalone_mode=False)\n"
                        "except EvalkitError as e:\n"
                        "    print('REFUSED', e.problem)\n"
                        "print('TORCH-IMPORTED', 'torch' in sys.modules)\n")


def test_import_help_and_a_wrong_checkpoint_path_import_no_torch(tmp_path):
    nowhere = str(tmp_path / "nowhere")
    for args in (["--help"], ["run", "--help"], ["run", nowhere, "--metrics", "clip"],
                 ["generate", nowhere], ["prompts", "list"]):
        result = subprocess.run([sys.executable, "-c", ANSWER_WITHOUT_TORCH, *args], capture_output=True, text=True,
                                cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert "TORCH-IMPORTED False" in result.stdout, (args, result.stdout[-500:], result.stderr[-500:])
        if nowhere in args:
            assert "REFUSED checkpoint" in result.stdout and "neither an existing file or folder" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a refused command writes nothing"


def test_the_cache_check_agrees_with_huggingface_hub_offline(tmp_path, monkeypatch):
    """`is_cached` reads the cache layout itself (no hub client import); it must say what
    `snapshot_download(local_files_only=True)` says, for a branch, a commit and what is absent."""
    import huggingface_hub.constants as hub_constants
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from evalkit.runtime.assets import is_cached

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    _fake_cached(tmp_path, "owner/here")
    (tmp_path / "models--owner--broken" / "refs").mkdir(parents=True)
    (tmp_path / "models--owner--broken" / "refs" / "main").write_text("1" * 40)  # names a missing snapshot

    def hub_says(repo_id, revision):
        try:
            snapshot_download(repo_id, revision=revision, local_files_only=True, cache_dir=str(tmp_path))
        except LocalEntryNotFoundError:
            return False
        return True

    for repo_id, revision in [("owner/here", "main"), ("owner/here", "0" * 40), ("owner/here", "v2"),
                              ("owner/elsewhere", "main"), ("owner/broken", "main")]:
        assert is_cached(repo_id, revision) == hub_says(repo_id, revision), (repo_id, revision)
    assert is_cached("owner/here", "main") and not is_cached("owner/elsewhere", "main")
