"""Class catalogue and class sets against the reference tables (hand-copied here)."""

import pytest

from cellmap.classes import (CATALOGUE, ClassError, ClassSet, atoms_of, available_class_sets, class_by_id,
                             get_class, groups_containing, load_class_set)

# reference section 4, written out independently of cellmap/classes.py
REF_INSTANCE = ["nuc", "ves", "endo", "lyso", "ld", "perox", "mito", "np", "mt", "cell"]
REF_SEMANTIC = ("ecs pm mito_mem mito_lum mito_ribo golgi_mem golgi_lum ves_mem ves_lum endo_mem endo_lum lyso_mem "
                "lyso_lum ld_mem ld_lum er_mem er_lum eres_mem eres_lum ne_mem ne_lum np_out np_in hchrom echrom "
                "nucpl mt_out cyto mt_in golgi eres perox_mem perox_lum er ne chrom er_mem_all ne_mem_all").split()


def test_atomic_ids_and_groups():
    assert get_class("ecs").id == 1 and get_class("plasmodesmata").id == 74
    assert get_class("vim").id == 38 and not get_class("vim").is_group
    assert sum(not c.is_group for c in CATALOGUE.values()) == 53
    assert atoms_of("mito") == ("mito_mem", "mito_lum", "mito_ribo")
    assert get_class("nuc").members == tuple(range(20, 30)) and get_class("nuc").id == 37
    assert get_class("er").members == tuple(range(16, 24))
    cell = set(get_class("cell").members)
    assert {1, 45, 63, 37}.isdisjoint(cell) and {2, 36, 38, 39, 47, 48, 56, 58, 61, 62} <= cell and len(cell) == 44
    assert class_by_id(65).name == "ne_mem_all" and atoms_of("ne_mem_all") == ("ne_mem", "np_out", "np_in")
    assert "mito" in groups_containing("mito_mem") and "cell" in groups_containing("mito_mem")
    assert "er" in groups_containing("ne") and "nuc" in groups_containing("ne")


def test_instance_and_scored_flags_match_reference():
    scored = {n for n, c in CATALOGUE.items() if c.scored}
    assert scored == set(REF_INSTANCE) | set(REF_SEMANTIC) and len(scored) == 48
    assert {n for n in scored if CATALOGUE[n].instance} == set(REF_INSTANCE)
    assert get_class("vim").instance and not get_class("vim").scored


def test_named_sets():
    assert {"organelles14", "challenge48"} <= set(available_class_sets())
    o = load_class_set("organelles14")
    want = "ecs pm mito_mem mito_lum mito_ribo golgi_mem golgi_lum ves_mem ves_lum endo_mem endo_lum er_mem er_lum nuc"
    assert o.classes == tuple(want.split()) and o.value_of("nuc") == 14 and o.value_of("er_mem") == 12
    assert o.overlaps() == []
    c = load_class_set("challenge48")
    assert set(c) == set(REF_INSTANCE) | set(REF_SEMANTIC) and len(c) == 48
    assert ("mito_mem", "mito") in c.overlaps()


def test_loader_accepts_path_list_and_string(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\nclasses: [mito, er]\n")
    assert load_class_set(str(p)).classes == ("mito", "er") and load_class_set(str(p)).name == "mine"
    assert load_class_set(["nuc", "ecs"]).value_of("ecs") == 2
    assert load_class_set("mito, er").classes == ("mito", "er")
    assert load_class_set("nuc").classes == ("nuc",)


def test_bad_class_sets_raise_clear_errors(tmp_path):
    with pytest.raises(ClassError, match="Did you mean mito"):
        get_class("mitoo")
    with pytest.raises(ClassError, match="unknown class set 'organelles15'"):
        load_class_set("organelles15")
    with pytest.raises(ClassError, match="more than once"):
        ClassSet("x", ("mito", "mito"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nclasses: [mito, golgy]\n")
    with pytest.raises(ClassError, match="bad.yaml.*golgy.*Did you mean golgi"):
        load_class_set(str(bad))
    with pytest.raises(ClassError, match="not found"):
        load_class_set(str(tmp_path / "none.yaml"))
