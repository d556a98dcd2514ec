from __future__ import annotations

from pupsnr_dask.advise.matching import match_predictions


def test_matching_rule_exact_then_extension_free():
    sources = ["a/x.jpg", "b.jpg", "c.jpg", "d.jpg", "e.png", "e.jpg", "f.jpg", "f.png"]
    names = ["a/x.png", "b.jpg", "b.png", "d.png", "d.webp", "e.png", "e.bmp", "f.tif", "z.png"]
    m = match_predictions(sources, names)
    # e.png is taken by its exact match, so e.bmp is the only candidate left for e.jpg.
    assert m.pairs == [(0, "a/x.png"), (1, "b.jpg"), (4, "e.png"), (5, "e.bmp")]
    assert m.missing == ["c.jpg"]
    # d: two candidates; f.jpg and f.png share the stem and both lack an exact match.
    assert m.ambiguous == ["d.jpg <- d.png, d.webp", "f.jpg <- f.tif", "f.png <- f.tif"]
    assert m.extra == ["b.png", "z.png"]
    assert match_predictions(["A.jpg"], ["a.png"]).missing == ["A.jpg"]  # case-sensitive


def test_matching_report_lists_a_few_names():
    m = match_predictions([f"{i}.jpg" for i in range(9)], ["0.png", "x.png"])
    lines = m.lines()
    assert lines[0] == "predictions: 1 of 9 images matched"
    assert "missing 8" in lines[1] and "1.jpg" in lines[1] and "(3 more)" in lines[1]
    assert "extra 1" in lines[2] and "x.png" in lines[2]
    assert m.as_dict()["n_missing"] == 8 and len(m.as_dict()["missing"]) == 5
