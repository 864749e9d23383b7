"""HVC-format filelists: generation from the dataset folders, parsing, and runs from a filelist."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import require_data
from label_prop import run as R
from label_prop.data.io import read_annotation
from label_prop.data.filelists import FILELIST_DIR, filelist_lines, read_filelist, write_filelists
from label_prop.data.datasets import get_benchmark
from label_prop.data.io import read_mask
from test_ytvos import build_ytvos


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.data
def test_davis16_filelist_matches_hvc_format_and_committed_file(data_root, tmp_path):
    require_data(data_root / "DAVIS2016", "DAVIS-2016 val")
    written = write_filelists(data_root, tmp_path, ["davis16"])
    lines = written["davis16"].read_text().splitlines()
    assert len(lines) == 1376  # HVC's val_davis2016_val.txt has 1376 lines
    assert lines[0] == "1 DAVIS2016/JPEGImages/480p/blackswan/00000.jpg DAVIS2016/Annotations/480p/blackswan/00000.png"
    assert all(len(l.split()) == 3 and l.split()[0] == "1" for l in lines)
    committed = FILELIST_DIR / "val_davis2016_val.txt"
    assert committed.read_text() == written["davis16"].read_text()
    plans = read_filelist(committed, data_root)
    assert len(plans) == 20 and plans[0].name == "blackswan" and list(plans[0].annotations) == [0]
    assert plans[0].binary is None  # detected when read: DAVIS-2016 0/255 masks become object 1
    assert set(np.unique(read_annotation(plans[0].annotations[0], None)).tolist()) == {0, 1}
    # regenerating identical content is fine; a changed file is not replaced without overwrite
    written["davis16"].write_text("1 a b\n")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_filelists(data_root, tmp_path, ["davis16"])
    assert write_filelists(data_root, tmp_path, ["davis16"], overwrite=True)


def test_filelist_parse_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 a/x/0.jpg a/y/0.png\n1 a/x/1.jpg\n")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        read_filelist(bad, tmp_path)
    bad.write_text("2 a/x/0.jpg a/y/0.png\n")
    with pytest.raises(ValueError, match="flag"):
        read_filelist(bad, tmp_path)
    bad.write_text("1 a/x/0.jpg a/y/0.png\n")
    with pytest.raises(FileNotFoundError, match="a/y/0.png"):
        read_filelist(bad, tmp_path)


@pytest.mark.data
def test_ytvos_filelist_run_equals_benchmark_run(data_root, tmp_path):
    """A YouTube-VOS list (first-appearance annotations only, --read-masks existing) gives
    exactly the benchmark run's PNGs, although its object channels are discovered while streaming."""
    root = tmp_path / "data"
    build_ytvos(data_root, root, full_gt=False)
    bench = get_benchmark("ytvos18")
    lines = filelist_lines(bench, root)
    swan = [l for l in lines if "/swan/" in l]
    assert len(swan) == 16 and [l.split()[0] for l in swan[:6]] == ["1", "0", "0", "0", "0", "1"]
    assert [l.split()[1].rsplit("/", 1)[1] for l in lines if "/late/" in l] == ["00005.jpg", "00006.jpg", "00007.jpg"]
    lst = write_filelists(root, tmp_path / "lists", ["ytvos18"])["ytvos18"]
    res = tmp_path / "results"
    common = ["--data-root", str(root), "--results-dir", str(res), "--n-context", "2", "--radius", "3"]
    assert R.main(["random", "ytvos18", *common]) == 0
    assert R.main(["random", str(lst), "--read-masks", "existing", *common]) == 0
    a, b = res / "random" / "ytvos18", res / "random" / lst.stem
    names = sorted(p.relative_to(a) for p in a.glob("*/*.png"))
    assert names == sorted(p.relative_to(b) for p in b.glob("*/*.png")) and len(names) == 5
    for n in names:
        assert np.array_equal(read_mask(a / n), read_mask(b / n)), n
    assert not (res / "random" / f"{lst.stem}.zip").exists()  # zips are for benchmarks only
