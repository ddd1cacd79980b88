"""aefsql.picture and `aefsql picture`: PNGs that decode (PIL), north-up and one pixel per
grid pixel (checked against rasterio's reads of the GDAL-written files), PCA colours against
numpy's SVD, and similarity maps that are 1.0 at the reference."""

import sys

import numpy as np
import pytest
import rasterio
from gdal_fixtures import COLLECTION_TILES, PIXEL, collection_path
from pyproj import Transformer
from rasterio.windows import Window

import aefsql
from aefsql.cli import main
from aefsql.errors import AefsqlError
from aefsql.kernels.pictures import pca_rgb, write_png

Image = pytest.importorskip("PIL.Image")

# In tile 3 (18S, south-up): a window 120 pixels wide and 200 high whose southern part holds
# the fixtures' nodata rectangle (file rows 40:90, i.e. 400-900 m north of the tile's
# southern edge, and columns 100:180).
_, EPSG, X0, Y0 = COLLECTION_TILES[3]
BOX = [X0 + 800, Y0 + 200, X0 + 2000, Y0 + 2200]


def decoded(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGBA"
        return np.asarray(image)


def gdal_north_up(collection, year=2023) -> np.ndarray:
    """BOX read by rasterio from tile 3, flipped to north-up: (64, 200, 120)."""
    with rasterio.open(collection.folder / collection_path(year, 3)) as ds:
        assert ds.transform.e > 0  # the file is south-up
        data = ds.read(window=Window(80, 20, 120, 200))
    return data[:, ::-1, :]


def test_png_is_north_up_one_pixel_per_grid_pixel(gdal_collection, tmp_path):
    path = tmp_path / "area.png"
    drawn = aefsql.picture(BOX, 2023, path, crs=EPSG, catalog=gdal_collection.index)
    image = decoded(path)
    assert image.shape == (200, 120, 4)  # rows x columns: 2 km north-south, 1.2 km across
    assert np.array_equal(image, drawn.rgba)
    assert (drawn.grid.transform.a, drawn.grid.transform.e) == (PIXEL, -PIXEL)
    data = gdal_north_up(gdal_collection)
    assert np.array_equal(image[..., 3] == 0, (data == -128).any(axis=0))
    # the nodata rectangle is near the bottom (south), where the north-up rows put it
    assert (image[130:180, 20:100, 3] == 0).all()
    assert (image[20:70, 20:100, 3] == 255).mean() > 0.9
    assert (image[image[..., 3] == 0][:, :3] == 0).all()  # black, for viewers without alpha
    # the same grid as read_area's
    pytest.importorskip("xarray")
    array = aefsql.read_area(BOX, 2023, crs=EPSG, catalog=gdal_collection.index)
    assert np.array_equal(array.values[0], data)
    assert np.array_equal(image[..., 3] == 0, (array.values[0] == -128).any(axis=0))


def low_rank_embeddings(shape=(40, 50), seed=0) -> np.ndarray:
    """int8 (64, rows, cols): three independent signals of clearly different strength
    mixed into 64 bands, plus a little noise."""
    rng = np.random.default_rng(seed)
    n = shape[0] * shape[1]
    signals = rng.normal(size=(n, 3)) * [3.0, 2.0, 1.0]
    mixing = np.linalg.qr(rng.normal(size=(64, 3)))[0].T  # orthonormal rows
    values = signals @ mixing + rng.normal(scale=0.02, size=(n, 64))
    values = values / np.abs(values).max() * 127
    return np.rint(values).clip(-127, 127).astype(np.int8).T.reshape(64, *shape)


@pytest.mark.parametrize("covariance_pixels", [None, 500])
def test_pca_rgb_matches_numpy_svd(monkeypatch, covariance_pixels):
    """Against the SVD of every pixel, also when the axes come from a sample of them."""
    if covariance_pixels:
        monkeypatch.setattr(
            sys.modules["aefsql.kernels.pictures"], "COVARIANCE_PIXELS", covariance_pixels
        )
    values = low_rank_embeddings()
    rgba = pca_rgb(values)
    assert rgba.shape == (40, 50, 4) and (rgba[..., 3] == 255).all()
    q = values.reshape(64, -1).T.astype(np.float64)
    vectors = np.sign(q) * (np.abs(q) / 127.5) ** 2  # the publisher's de-quantization
    centred = vectors - vectors.mean(axis=0)
    _, _, rows = np.linalg.svd(centred, full_matrices=False)
    components = centred @ rows[:3].T
    for channel in range(3):
        ours = rgba[..., channel].ravel().astype(float)
        theirs = components[:, channel]
        low, high = np.percentile(theirs, [2, 98])
        middle = (theirs > low) & (theirs < high)  # outside, the stretch clips
        correlation = np.corrcoef(ours[middle], theirs[middle])[0, 1]
        assert abs(correlation) > (0.98 if covariance_pixels else 0.999), channel
        # stretched 2-98 percentile to the full range
        assert np.percentile(ours, 1) == 0 and np.percentile(ours, 99) == 255


def test_pca_uses_valid_pixels_only():
    values = low_rank_embeddings()
    padded = np.concatenate([values, np.full((64, 40, 7), -128, np.int8)], axis=2)
    padded[5, 3, 50] = 17  # one band valid is not a valid pixel
    rgba = pca_rgb(padded)
    assert np.array_equal(rgba[:, :50], pca_rgb(values))
    assert (rgba[:, 50:] == 0).all()
    assert (pca_rgb(np.full((64, 3, 4), -128, np.int8)) == 0).all()  # nothing valid


def test_similarity_is_one_at_the_reference(gdal_collection, tmp_path):
    data = gdal_north_up(gdal_collection).astype(np.float64)
    row, col = 60, 33  # a valid pixel: its centre is the reference
    assert (data[:, row, col] != -128).all()
    x, y = BOX[0] + (col + 0.5) * PIXEL, BOX[3] - (row + 0.5) * PIXEL
    lon, lat = Transformer.from_crs(EPSG, 4326, always_xy=True).transform(x, y)
    path = tmp_path / "similar.png"
    drawn = aefsql.picture(
        BOX, 2023, path, crs=EPSG, reference=(lon, lat), catalog=gdal_collection.index
    )
    assert drawn.similarity[row, col] == pytest.approx(1.0, abs=1e-12)
    image = decoded(path)
    assert tuple(image[row, col]) == (255, 255, 255, 255)
    # every pixel: the cosine of the de-quantized vectors, computed here from GDAL's values
    valid = (data != -128).all(axis=0)
    vectors = np.sign(data) * (np.abs(data) / 127.5) ** 2
    reference = vectors[:, row, col]
    cosine = np.einsum("kij,k->ij", vectors, reference) / (
        np.linalg.norm(vectors, axis=0) * np.linalg.norm(reference)
    )
    assert np.allclose(drawn.similarity[valid], cosine[valid], atol=1e-12)
    assert np.isnan(drawn.similarity[~valid]).all() and (image[~valid, 3] == 0).all()
    grey = np.rint(np.clip(cosine[valid], 0, 1) * 255)
    assert np.array_equal(image[valid, 0], grey) and np.array_equal(image[valid, 2], grey)


def test_cli_picture(gdal_collection, tmp_path, capsys):
    path = tmp_path / "cli.png"
    west, south, east, north = BOX
    code = main(
        [
            "picture",
            f"--bbox={west},{south},{east},{north}",
            "--year",
            "2023",
            "--crs",
            f"EPSG:{EPSG}",
            "-o",
            str(path),
            "--catalog",
            gdal_collection.index,
        ]
    )
    assert code == 0
    assert f"wrote {path}: 120 x 200 pixels, EPSG:{EPSG}" in capsys.readouterr().out
    drawn = aefsql.picture(BOX, 2023, tmp_path / "api.png", crs=EPSG, catalog=gdal_collection.index)
    assert np.array_equal(decoded(path), drawn.rgba)
    lon, lat = Transformer.from_crs(EPSG, 4326, always_xy=True).transform(X0 + 1505, Y0 + 1505)
    similar = tmp_path / "similar.png"
    code = main(
        [
            "picture",
            f"--bbox={west},{south},{east},{north}",
            "--year=2023",
            f"--crs={EPSG}",
            f"--similar-to={lon},{lat}",
            "-o",
            str(similar),
            "--catalog",
            gdal_collection.index,
        ]
    )
    assert code == 0 and decoded(similar).shape == (200, 120, 4)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bbox=1,2,3"], "--bbox '1,2,3': expected 4 numbers separated by commas"),
        (["--bbox=11.99,45,12,45.01", "--similar-to=a,b"], "--similar-to 'a,b': expected 2"),
        (["--bbox=11.99,45,12,45.01", "--year=2023,2024"], "put {year} in the path"),
    ],
)
def test_cli_picture_errors(gdal_collection, tmp_path, capsys, argv, message):
    argv = ["picture", "-o", str(tmp_path / "x.png"), "--catalog", gdal_collection.index, *argv]
    if not any(a.startswith("--year") for a in argv):
        argv.append("--year=2023")
    assert main(argv) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"area": bytes.fromhex("010300000000000000")}, "no pixel centre"),  # POLYGON EMPTY
        ({"reference": (0.0, 0.0)}, "lies in no tile of 2023"),
        ({"year": [2023, 2024]}, "a file per year"),
        ({"max_bytes": 1000}, "fewer bands"),
    ],
)
def test_picture_errors(gdal_collection, tmp_path, kwargs, message):
    call = {"area": BOX, "year": 2023, "crs": EPSG, "catalog": gdal_collection.index, **kwargs}
    with pytest.raises(AefsqlError, match=message):
        aefsql.picture(path=tmp_path / "x.png", **call)
    assert not (tmp_path / "x.png").exists()


def test_picture_needs_no_xarray(gdal_collection, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "xarray", None)  # import xarray raises ImportError
    drawn = aefsql.picture(BOX, 2023, tmp_path / "x.png", crs=EPSG, catalog=gdal_collection.index)
    assert decoded(tmp_path / "x.png").shape == drawn.rgba.shape == (200, 120, 4)


@pytest.mark.parametrize("shape", [(1, 1), (3, 700), (257, 2)])
def test_write_png_round_trips(tmp_path, shape):
    rgba = np.random.default_rng(1).integers(0, 256, (*shape, 4), dtype=np.uint8)
    write_png(tmp_path / "x.png", rgba)
    assert np.array_equal(decoded(tmp_path / "x.png"), rgba)


# -- issue 21/22: a picture in a notebook, years coloured alike, outputs checked first ----


def test_picture_has_a_short_repr_and_shows_in_a_notebook(gdal_collection, tmp_path):
    """The repr dumped whole arrays; `path` was required; a notebook showed no image."""
    drawn = aefsql.picture(BOX, 2023, crs=EPSG, catalog=gdal_collection.index)
    assert repr(drawn) == f"<Picture PCA of 2023: 120 x 200 pixels of 10 m, EPSG:{EPSG}>"
    png = tmp_path / "shown.png"
    png.write_bytes(drawn._repr_png_())
    assert np.array_equal(decoded(png), drawn.rgba)
    assert list(tmp_path.iterdir()) == [png]  # nothing else written without a path
    assert repr(drawn.axes) == "PcaAxes(3 components of 64 bands)"


@pytest.fixture(scope="module")
def changed_collection(tmp_path_factory):
    """One GDAL-written north-up tile in 2023 and in 2024, the same but for a 30 x 40 pixel
    patch of 2024 that holds other embeddings (a change on the ground)."""
    from gdal_fixtures import Layout, index_row, write_index, write_layout

    folder = tmp_path_factory.mktemp("changed")
    layout = Layout(south_up=False, width=200, height=160, block=128)
    rows = []
    for fid, year in enumerate((2023, 2024), start=1):
        name = f"{year}/33N/change-0000000000-0000000000.tiff"
        path = write_layout(folder, layout, seed=4, name=name)
        if year == 2024:
            rng = np.random.default_rng(9)
            with rasterio.open(path, "r+") as ds:
                patch = rng.integers(-127, 128, (64, 30, 40), dtype=np.int8)
                ds.write(patch, window=Window(10, 10, 40, 30))
        rows.append(index_row(fid, year, name, layout))
    return str(write_index(folder / "index.parquet", rows)), layout


def test_two_years_share_axes_so_a_change_shows(changed_collection, tmp_path):
    """picture(area, [2023, 2024]) colours both years with one PCA and stretch: identical
    embeddings get identical colours, so only the changed patch differs; `axes=` from a
    first call does the same. Pictures made one by one (as before) differ everywhere."""
    index, layout = changed_collection
    west, south, east, north = layout.bounds
    box = [west + 5, south + 5, east - 5, north - 5]
    first, second = aefsql.picture(
        box, [2023, 2024], tmp_path / "area-{year}.png", crs=layout.epsg, catalog=index
    )
    assert (first.year, second.year) == (2023, 2024) and first.axes is second.axes
    assert np.array_equal(decoded(tmp_path / "area-2024.png"), second.rgba)
    tile = "{}/33N/change-0000000000-0000000000.tiff"
    with rasterio.open(index.replace("index.parquet", tile.format(2023))) as ds:
        old = ds.read()
    with rasterio.open(index.replace("index.parquet", tile.format(2024))) as ds:
        new = ds.read()
    rows, cols = first.rgba.shape[:2]
    same = (old == new).all(axis=0)[:rows, :cols]  # north-up file, box from its corner
    assert same.sum() > 20000 and (~same).sum() == 1200
    assert np.array_equal(first.rgba[same], second.rgba[same])
    assert (first.rgba[~same] != second.rgba[~same]).any(axis=1).mean() > 0.9
    # axes from a first call
    alone = aefsql.picture(box, 2023, crs=layout.epsg, catalog=index)
    later = aefsql.picture(box, 2024, crs=layout.epsg, catalog=index, axes=alone.axes)
    assert np.array_equal(alone.rgba[same], later.rgba[same])
    # made independently, the unchanged pixels do not keep their colour
    independent = aefsql.picture(box, 2024, crs=layout.epsg, catalog=index)
    assert not np.array_equal(alone.rgba[same], independent.rgba[same])


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "bbox, year, message",
    [
        ("-30.01,29.99,-29.99,30.01", "2023", "nothing to draw in 2023: outside coverage"),
        (None, "2031", "nothing to draw in 2031: the catalog has no tile of year(s) 2031"),
        ("45.0,12.0,45.01,12.01", "2023", "nothing to draw in 2023: coordinates look swapped"),
        # not lon/lat at all: said in the command line's syntax
        ("12.0,95.0,12.01,95.01", "2023", "if they are projected, say so with --crs (e.g. "),
    ],
)
def test_cli_picture_with_nothing_to_draw_is_an_error(
    gdal_collection, tmp_path, capsys, bbox, year, message
):
    """It wrote a transparent PNG and exited 0."""
    west, south, east, north = BOX
    crs = "EPSG:4326" if bbox else f"EPSG:{EPSG}"
    bbox = bbox or f"{west},{south},{east},{north}"
    out = tmp_path / "empty.png"
    argv = ["picture", f"--bbox={bbox}", "--year", year, "--crs", crs, "-o", str(out)]
    code, _, err = run_cli([*argv, "--catalog", gdal_collection.index], capsys)
    assert code == 1 and not out.exists()
    assert err.count("\n") == 1 and err.startswith("aefsql: error: ") and message in err, err


def test_cli_picture_level_bands_and_cache_dir(gdal_collection, http_collection, tmp_path, capsys):
    """--level, --bands, --max-bytes and --cache-dir, which the verb lacked."""
    west, south, east, north = BOX
    out, cache = tmp_path / "coarse.png", tmp_path / "cache"
    argv = ["picture", f"--bbox={west},{south},{east},{north}", "--year=2023", f"--crs={EPSG}"]
    options = ["--level=1", "--bands=A00,A05,A09", f"--cache-dir={cache}", "-o", str(out)]
    code, printed, _ = run_cli([*argv, *options, "--catalog", http_collection.index], capsys)
    assert code == 0, printed
    expected = aefsql.picture(
        BOX, 2023, crs=EPSG, level=1, bands=["A00", "A05", "A09"], catalog=gdal_collection.index
    )
    assert np.array_equal(decoded(out), expected.rgba) and expected.rgba.shape == (100, 60, 4)
    assert any(cache.rglob("*"))
    options = ["--max-bytes=1000", "-o", str(out), "--catalog", gdal_collection.index]
    code, _, err = run_cli([*argv, *options], capsys)
    assert code == 1 and "max_bytes" in err


@pytest.fixture
def headless_catalog(gdal_collection, tmp_path):
    """The collection's index without its tiles: any read of a tile fails."""
    import shutil

    index = tmp_path / "gone" / "index.parquet"
    index.parent.mkdir()
    shutil.copy(gdal_collection.index, index)
    return str(index)


@pytest.mark.parametrize(
    "verb, where",
    [
        (verb, where)
        for verb in ("picture", "write-headers", "demo")
        for where in ("missing_folder", "a_file_as_folder", "a_folder")
        if (verb, where) != ("demo", "missing_folder")  # the demo makes its folder
    ],
)
def test_unwritable_output_is_one_line_before_any_read(
    headless_catalog, tmp_path, capsys, verb, where
):
    """A traceback, and for picture only after reading and drawing the whole area: the
    output is now checked first (the tiles of this catalog are gone, so a read would fail
    with another message)."""
    (tmp_path / "file").write_text("")
    (tmp_path / "folder.png").mkdir()
    output = {
        "missing_folder": tmp_path / "no" / "such" / "x.png",
        "a_file_as_folder": tmp_path / "file" / "x.png",
        "a_folder": tmp_path / "folder.png",
    }[where]
    west, south, east, north = BOX
    box = f"--bbox={west},{south},{east},{north}"
    demo_dir = output / "demo" if where == "a_folder" else output
    argv = {
        "picture": ["picture", box, "--year=2023", f"--crs={EPSG}", "-o", str(output)],
        "write-headers": ["write-headers", "-o", str(output)],
        "demo": ["demo", "--dir", str(demo_dir)],
    }[verb]
    if verb != "demo":
        argv += ["--catalog", headless_catalog]
    if verb == "demo" and where == "a_folder":
        (output / "demo").write_text("")  # a file where the folder should be
    code, _, err = run_cli(argv, capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("aefsql: error: cannot write"), err
    assert "Traceback" not in err


def test_an_output_on_a_filesystem_that_refuses_files_is_one_line(headless_catalog, capsys):
    """/proc passes os.access for root, yet makes no file: opening is the check (a raw
    FileNotFoundError before)."""
    west, south, east, north = BOX
    argv = ["picture", f"--bbox={west},{south},{east},{north}", "--year=2023", f"--crs={EPSG}"]
    code, _, err = run_cli([*argv, "-o", "/proc/aefsql.png", "--catalog", headless_catalog], capsys)
    assert code == 1
    assert err == "aefsql: error: cannot write /proc/aefsql.png: No such file or directory\n"


def test_shared_options_may_come_before_the_verb(gdal_collection, tmp_path, capsys):
    """`aefsql --catalog X picture …`, as one writes after `aefsql --catalog X`, is the verb
    with its --catalog (argparse refused it before: 'unrecognized arguments')."""
    west, south, east, north = BOX
    output = tmp_path / "x.png"
    argv = ["picture", f"--bbox={west},{south},{east},{north}", "--year=2023", f"--crs={EPSG}"]
    code, out, err = run_cli(["--catalog", gdal_collection.index, *argv, "-o", str(output)], capsys)
    assert code == 0, err
    assert output.read_bytes() == _picture_bytes(gdal_collection, argv, tmp_path, capsys)


def _picture_bytes(collection, argv, tmp_path, capsys) -> bytes:
    output = tmp_path / "verb-first.png"
    code, _, err = run_cli([*argv, "-o", str(output), "--catalog", collection.index], capsys)
    assert code == 0, err
    return output.read_bytes()
