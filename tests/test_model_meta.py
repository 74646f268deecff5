"""Model profiles' meta.yaml through the checked loader: every bundled one reads, and a broken one is a
one-line error (exit status 2) naming the file, the key and the fix, never a silent wrong figure."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from planner.errors import PlannerError
from planner.models import sources
from planner.paths import profiles_dir

GOOD = {
    "id": "acme/Tiny-1B",
    "aliases": ["tiny-1b"],
    "config_source": "shared/reference/model-configs/acme__Tiny-1B.json",
    "params_published": 1_000_000,
    "params_source": "the Hub's safetensors total",
    "checkpoint_bytes": 2_000_000,
    "checkpoint_bytes_source": "model.safetensors.index.json total_size",
    "notes": "a test profile",
}


def _profile(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "acme" / "Tiny-1B"
    folder.mkdir(parents=True)
    (folder / "meta.yaml").write_text(text)
    return folder


def _with(**changes) -> str:
    doc = {k: v for k, v in {**GOOD, **changes}.items() if v is not ...}
    return yaml.safe_dump(doc)


@pytest.mark.parametrize(
    "text, message",
    [
        (_with(param_published=5), "Meta unknown param_published"),
        (_with(id=...), "Meta missing id"),
        (_with(aliases="tiny-1b"), "aliases: expected a list"),
        (_with(aliases=[7]), "aliases[0]: expected a string"),
        (_with(params_published="1B"), "params_published: expected an integer"),
        (_with(params_published=0), "params_published: must be a number in [1,"),
        (_with(params_published=True), "params_published: expected an integer"),
        (_with(params_source=None), "params_published is given without params_source"),
        (_with(checkpoint_bytes=-2), "checkpoint_bytes: must be a number in [1,"),
        (_with(checkpoint_bytes_source=...), "checkpoint_bytes is given without checkpoint_bytes_source"),
        (_with(checkpoint_quirks=["rotary"]), "checkpoint_quirks[0]: 'rotary' is not one of ['rotary_inv_freq']"),
        (_with(params_published_counts_scales="no"), "params_published_counts_scales: expected true/false"),
        (_with(id="acme/Other-1B"), "id: 'acme/Other-1B' is not the profile's folder acme/Tiny-1B"),
        (_with(notes=["a", "b"]), "notes: expected a string"),
        ("- id: acme/Tiny-1B\n", "top level must be a mapping"),
        ("id: [acme/Tiny-1B\n", "not valid YAML"),
    ],
)
def test_a_broken_meta_yaml_is_one_line_naming_file_and_key(tmp_path, text, message):
    folder = _profile(tmp_path, text)
    with pytest.raises(PlannerError) as e:
        sources.read_meta(folder)
    out = str(e.value)
    assert message in out and str(folder / "meta.yaml") in out and "\n" not in out
    assert out.endswith("; fix the data file") and e.value.exit_code == 2


def test_a_good_meta_yaml_gives_every_key_with_the_defaults_filled(tmp_path):
    meta = sources.read_meta(_profile(tmp_path, _with(checkpoint_quirks=["rotary_inv_freq"])))
    assert meta["params_published"] == 1_000_000 and meta["aliases"] == ("tiny-1b",)
    assert meta["params_published_counts_scales"] is True and meta["checkpoint_quirks"] == ("rotary_inv_freq",)
    assert sources.read_meta(tmp_path) == {}  # a folder without meta.yaml


BUNDLED = sorted((profiles_dir() / "models").glob("*/*/meta.yaml"))


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_every_bundled_meta_yaml_reads_and_keeps_its_values(path):
    raw = yaml.safe_load(path.read_text())
    meta = sources.read_meta(path.parent)
    for key, value in raw.items():
        assert meta[key] == (tuple(value) if isinstance(value, list) else value), key
