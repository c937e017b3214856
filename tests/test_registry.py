"""The model registry: manifest look-ups, downloads into the cache (against a local HTTP
server), sha256 checks, offline mode and automatic model selection."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import pytest
from click.testing import CliRunner
from tdn_calc.cli.models import models as models_cli

from tdn_calc.checkpoint import load_model, save_model
from tdn_calc.errors import CheckpointError, ModelNotFoundError, UnsupportedElementError
from tdn_calc.fileio import sha256_file
from tdn_calc.registry import (
    list_models,
    model_info,
    resolve_model,
    select_model_for,
    verify_model,
)


class _Server:
    """A static file server on 127.0.0.1 that records the paths requested."""

    def __init__(self, root):
        self.requests: list[str] = []
        log = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                log.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    srv = _Server(root)
    srv.root = root
    yield srv
    srv.close()


def _write_manifest(path, models):
    path.write_text(json.dumps({"format_version": 1, "models": models}))
    return path


@pytest.fixture
def registry(tmp_path, monkeypatch, server, tiny_model):
    """A temporary manifest with a downloadable model ("tiny-hco", alias "tiny") and a
    model shipped next to the manifest ("tiny-local")."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TDN_CACHE_DIR", str(cache))
    monkeypatch.delenv("TDN_OFFLINE", raising=False)
    remote = save_model(tiny_model(), server.root / "tiny-hco.safetensors", card={"name": "tiny"})
    shipped_dir = tmp_path / "manifest"
    shipped_dir.mkdir()
    local = save_model(tiny_model(elements=(1, 8), seed=1), shipped_dir / "tiny-ho.safetensors")

    def entry(path, elements, **extra):
        return {
            "file": path.name,
            "sha256": sha256_file(path),
            "size": path.stat().st_size,
            "elements": elements,
            "reference_method": "random weights (test)",
            "description": "test model",
            "metrics": {},
            "license": "MIT",
            **extra,
        }

    models = {
        "tiny-hco": entry(
            remote, ["H", "C", "O"], aliases=["tiny"], url=f"{server.url}/{remote.name}"
        ),
        "tiny-local": entry(local, ["H", "O"]),
        "old-tiny": entry(remote, ["H", "C", "O"], deprecated="tiny-hco"),
    }
    manifest = _write_manifest(shipped_dir / "manifest.json", models)
    monkeypatch.setenv("TDN_MANIFEST", str(manifest))
    return {"manifest": manifest, "cache": cache, "remote": remote, "local": local}


def test_shipped_manifest_is_valid_and_ships_no_random_models(monkeypatch):
    monkeypatch.delenv("TDN_MANIFEST", raising=False)
    for entry in list_models():  # trained models only; each must say what it was trained on
        assert entry["reference_method"] and "random" not in entry["reference_method"]


def test_list_and_info(registry):
    names = [m["name"] for m in list_models()]
    assert names == ["tiny-hco", "tiny-local", "old-tiny"]
    info = model_info("TINY")  # alias, case-insensitive
    assert info["name"] == "tiny-hco" and info["local_path"] is None and "card" not in info
    info = model_info("tiny-local")
    assert info["card"]["elements"] == ["H", "O"]
    assert info["local_path"] == str(registry["local"])


def test_unknown_and_deprecated_names(registry):
    with pytest.raises(ModelNotFoundError) as err:
        model_info("tiny-hoc")
    message = str(err.value)
    assert "tiny-hco" in message and "tiny-local" in message and "Did you mean" in message
    with pytest.raises(ModelNotFoundError, match="deprecated; use 'tiny-hco'"):
        resolve_model("old-tiny")


def test_shipped_model_needs_no_network(registry, server, monkeypatch):
    monkeypatch.setenv("TDN_OFFLINE", "1")
    assert resolve_model("tiny-local") == registry["local"]
    model = load_model("tiny-local", device="cpu")
    assert model.config.elements == [1, 8]
    assert server.requests == []


def test_download_once_then_cache_hit(registry, server):
    path = resolve_model("tiny")
    assert path.parent == registry["cache"] and path.read_bytes() == registry["remote"].read_bytes()
    assert server.requests == ["/tiny-hco.safetensors"]
    model = load_model("tiny-hco", device="cpu", dtype="float64")
    assert model.card["name"] == "tiny"
    assert resolve_model("tiny-hco") == path
    assert len(server.requests) == 1  # cache hit
    assert [p.name for p in registry["cache"].iterdir()] == ["tiny-hco.safetensors"]  # no temps
    assert verify_model("tiny")["status"] == "ok"


def test_corrupted_cache_is_downloaded_again(registry, server):
    path = resolve_model("tiny")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert verify_model("tiny")["status"] == "mismatch"
    assert resolve_model("tiny") == path
    assert sha256_file(path) == sha256_file(registry["remote"])
    assert len(server.requests) == 2


def test_corrupted_cache_offline_is_a_clear_error(registry, monkeypatch):
    path = resolve_model("tiny")
    path.write_bytes(b"garbage")
    monkeypatch.setenv("TDN_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"corrupt.*TDN_OFFLINE"):
        resolve_model("tiny")


def test_offline_never_touches_the_network(registry, server, monkeypatch):
    monkeypatch.setenv("TDN_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="tdn models download tiny-hco"):
        load_model("tiny-hco", device="cpu")
    assert server.requests == []
    assert not registry["cache"].exists() or not any(registry["cache"].iterdir())


def test_wrong_sha_is_refused_and_nothing_is_cached(registry, server):
    manifest = json.loads(registry["manifest"].read_text())
    manifest["models"]["tiny-hco"]["sha256"] = "0" * 64
    registry["manifest"].write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="sha256"):
        resolve_model("tiny-hco")
    assert len(server.requests) == 1
    assert not any(registry["cache"].iterdir())  # temp file removed, nothing cached


def test_shipped_file_with_wrong_sha(registry):
    data = bytearray(registry["local"].read_bytes())
    data[-1] ^= 0xFF
    registry["local"].write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="reinstall"):
        resolve_model("tiny-local")


def test_unreachable_url(registry, server):
    manifest = json.loads(registry["manifest"].read_text())
    server.close()  # nothing listens on that port any more
    manifest["models"]["tiny-hco"]["url"] = f"{server.url}/tiny-hco.safetensors"
    registry["manifest"].write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="could not download"):
        resolve_model("tiny-hco")
    # and a 404
    srv = _Server(registry["cache"].parent)
    try:
        manifest["models"]["tiny-hco"]["url"] = f"{srv.url}/nope.safetensors"
        registry["manifest"].write_text(json.dumps(manifest))
        with pytest.raises(CheckpointError, match="404"):
            resolve_model("tiny-hco")
    finally:
        srv.close()


def test_select_model_for(registry, tmp_path):
    assert select_model_for(["H", "O"]) == "tiny-hco"  # first covering, manifest order
    assert select_model_for([1, 6]) == "tiny-hco"
    with pytest.raises(UnsupportedElementError, match=r"Pt.*tiny-hco: H C O.*tiny-local: H O"):
        select_model_for(["Pt", "H"])
    empty = _write_manifest(tmp_path / "empty.json", {})
    with pytest.raises(UnsupportedElementError, match="no pretrained models"):
        select_model_for(["H"], manifest=empty)
    manifest = json.loads(registry["manifest"].read_text())
    manifest["models"]["tiny-local"]["default"] = True
    registry["manifest"].write_text(json.dumps(manifest))
    assert select_model_for(["H"]) == "tiny-local"
    # an earlier version kept under its dated name is loadable but never chosen
    manifest["models"]["tiny-local"]["superseded_by"] = "tiny-hco"
    registry["manifest"].write_text(json.dumps(manifest))
    assert select_model_for(["H"]) == "tiny-hco"
    assert model_info("tiny-local")["name"] == "tiny-local"
    listing = CliRunner().invoke(models_cli, ["list"]).output
    assert "earlier version of tiny-hco" in listing


def test_bad_manifest(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format_version": 2, "models": {}}')
    with pytest.raises(Exception, match="format_version 1"):
        list_models(manifest=bad)


def test_cli(registry, server):
    runner = CliRunner()
    result = runner.invoke(models_cli, ["list"])
    assert result.exit_code == 0, result.output
    assert "tiny-hco" in result.output and "tiny-local" in result.output
    result = runner.invoke(models_cli, ["verify", "tiny-hco"])
    assert result.exit_code == 1 and "missing" in result.output
    result = runner.invoke(models_cli, ["download", "tiny-hco"])
    assert result.exit_code == 0, result.output
    assert (registry["cache"] / "tiny-hco.safetensors").exists()
    result = runner.invoke(models_cli, ["verify"])
    assert result.exit_code == 0 and result.output.count("ok") >= 2, result.output
    result = runner.invoke(models_cli, ["info", "tiny"])
    assert result.exit_code == 0, result.output
    assert "trained_on" in result.output and "cutoff" in result.output
    result = runner.invoke(models_cli, ["info", "nope"])
    assert result.exit_code == 2 and "Known models" in result.output
    (registry["cache"] / "tiny-hco.safetensors").write_bytes(b"x")
    result = runner.invoke(models_cli, ["verify", "tiny-hco"])
    assert result.exit_code == 1 and "mismatch" in result.output
