"""assets/README.md documents every built-in asset, texture kind and ground kind simgen accepts, its links
resolve, and the shipped mesh copies under assets/meshes/ are what simgen generates now."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
README = ASSETS / "README.md"


def table_rows(text: str, first_header: str) -> dict[str, list[str]]:
    """Rows of the markdown table whose first header cell is ``first_header``: {first cell without backticks: cells}."""
    rows: dict[str, list[str]] = {}
    lines = text.splitlines()
    for k, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells[0] == first_header and k + 1 < len(lines) and set(lines[k + 1].strip()) <= set("|-: "):
            for row in lines[k + 2:]:
                if not row.lstrip().startswith("|"):
                    break
                cells = [c.strip() for c in row.strip().strip("|").split("|")]
                rows[cells[0].strip("`")] = cells
            return rows
    raise AssertionError(f"assets/README.md has no table whose first column is `{first_header}`")


@pytest.fixture(scope="module")
def text() -> str:
    assert README.is_file(), "assets/README.md is missing"
    return README.read_text()


def test_every_asset_name_has_a_row(text):
    from simgen.assets import PROCEDURAL, PROCEDURAL_MESHES, PYBULLET_MODELS

    rows = table_rows(text, "name")
    names = {*PROCEDURAL_MESHES, *PROCEDURAL, *PYBULLET_MODELS}
    missing = sorted(names - set(rows))
    assert not missing, f"assets/README.md's asset table lacks {missing}"
    unknown = sorted(set(rows) - names)
    assert not unknown, f"assets/README.md's asset table lists {unknown}, which simgen does not accept as asset names"
    for name, cells in rows.items():
        assert len(cells) == 6 and all(cells), f"row `{name}`: expected 6 filled cells, got {cells}"
        kind, origin, licence = cells[1], cells[2], cells[4]
        if name in PYBULLET_MODELS:
            assert "pybullet_data" in kind and f"pybullet_data/{PYBULLET_MODELS[name]}" in origin, \
                f"row `{name}` must name its file pybullet_data/{PYBULLET_MODELS[name]}"
        else:
            assert "procedural" in kind and "simgen/assets.py" in origin and "Apache-2.0" in licence, f"row `{name}`"


def test_licences_match_the_installed_files(text):
    """The duck row says what duck.dae says; the others cite the wheel's zlib LICENSE.txt."""
    import pybullet_data

    from simgen.assets import PYBULLET_MODELS

    rows = table_rows(text, "name")
    dae = Path(pybullet_data.getDataPath()) / "duck.dae"
    if dae.is_file() and "SCEA Shared Source License" in dae.read_text(errors="replace"):
        assert "SCEA Shared Source License" in rows["duck"][4], "duck.dae states the SCEA Shared Source License: say so"
    for name in PYBULLET_MODELS:
        if name != "duck":
            assert "zlib" in rows[name][4], f"row `{name}`: licence should cite the pybullet wheel's zlib licence"


def test_every_texture_and_ground_kind_has_a_row(text):
    from simgen.config import TEXTURE_KINDS
    from simgen.textures import GRAPHIC_KINDS, KINDS, PHOTO_KINDS, TILE_M

    rows = table_rows(text, "kind")
    default = yaml.safe_load((ROOT / "conf" / "randomization" / "default.yaml").read_text())
    kinds = {*KINDS, *TEXTURE_KINDS, *default["texture_kinds"], *default["ground_kinds"], *TILE_M}
    missing = sorted(kinds - set(rows))
    assert not missing, f"assets/README.md's texture table lacks {missing}"
    unknown = sorted(set(rows) - set(KINDS))
    assert not unknown, f"assets/README.md's texture table lists {unknown}, which simgen.textures does not make"
    for kind, cells in rows.items():
        family, in_objects, in_ground = cells[1], cells[2], cells[3]
        assert family == ("graphic" if kind in GRAPHIC_KINDS else "photographic" if kind in PHOTO_KINDS else "?"), kind
        # the "default object/ground bank" columns follow conf/randomization/default.yaml
        assert in_objects == ("yes" if kind in default["texture_kinds"] else "no"), f"`{kind}`: default object bank column"
        assert in_ground == ("yes" if kind in default["ground_kinds"] else "no"), f"`{kind}`: default ground bank column"


def test_every_linked_file_exists(text):
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [u.split("#")[0] for u in links if not re.match(r"[a-z]+:", u) and not u.startswith("#")]
    assert local, "assets/README.md links no files"
    missing = [u for u in local if u and not (README.parent / u).exists()]
    assert not missing, f"assets/README.md links files that do not exist: {missing}"


def test_config_keys_it_names_exist(text):
    """The keys the README tells users to set are keys simgen's config accepts."""
    from simgen.config import GROUP_KEYS, RANDOMIZATION_KEYS, SCENE_KEYS

    for key in set(re.findall(r"randomization\.([a-z_]+)", text)):
        assert key in RANDOMIZATION_KEYS, f"randomization.{key} is not a config key"
    for key in set(re.findall(r"scene\.([a-z_]+)", text)):
        assert key in SCENE_KEYS, f"scene.{key} is not a config key"
    for key in set(re.findall(r"\{asset: [^}]*\}", text)):
        for k in re.findall(r"([a-z_]+):", key):
            assert k in GROUP_KEYS, f"`{k}` in `{key}` is not an object group key"


def test_shipped_meshes_are_current():
    from simgen.assets import PROCEDURAL_MESHES

    for name, make in PROCEDURAL_MESHES.items():
        path = ASSETS / "meshes" / f"{name}.obj"
        assert path.is_file(), f"{path} is missing; run python assets/make_previews.py"
        assert path.read_text() == make().obj_text(), f"{path} differs from simgen's {name}; run python assets/make_previews.py"
    total = sum(p.stat().st_size for p in (ASSETS / "meshes").glob("*.obj"))
    assert total < 200_000, f"assets/meshes/ holds {total} bytes; keep the generated copies small"


def test_assets_folder_stays_small():
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total < 1_600_000, f"assets/ holds {total / 1e6:.2f} MB; keep previews small"
