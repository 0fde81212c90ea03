"""The finder's page in a real browser: headless Chromium (Debian's package) driven by Selenium.

The server runs in a thread on a free port over an index built here with tiny checkpoints. A text
query, an image upload, the side-by-side mode and a click on a result are checked in the rendered
page: the grid's count and order, every thumbnail decoded, the ranking equal to the index's, and an
empty console. Without Chromium or chromedriver the test FAILS, saying how to install them
(``.ci/run`` installs them; docs/testing.md).
"""

from __future__ import annotations

import urllib.parse

import pytest
from PIL import Image
from selenium.webdriver.support.wait import WebDriverWait

from clipeval.finder.app import screenshot, serving, start_server
from clipeval.finder.browser import (
    BrowserMissing,
    chromium_driver,
    find_chromium,
    run_query_in_page,
    searches,
    wait_for_answer,
    wait_for_page,
    wait_for_thumbnails,
)
from finder_collection import HOSTILE_CAPTION, SHAPES, build_small_index


@pytest.fixture(scope="module")
def chromium():
    """Chromium and chromedriver, or a failure naming how to install them (never a skip)."""
    try:
        return find_chromium()
    except BrowserMissing as error:
        pytest.fail(f"the finder's browser test needs Chromium: {error}", pytrace=False)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, tiny_specs, one_torch_thread):
    return build_small_index(tmp_path_factory.mktemp("finder-browser"), [tiny_specs["hf-clip"],
                                                                         tiny_specs["open_clip"]])


@pytest.fixture(scope="module")
def server(index_dir):
    served = start_server(index_dir)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def driver(chromium):
    with chromium_driver((1280, 1000)) as driver:
        assert driver.capabilities["browserName"] in ("chrome", "chromium")
        print(f"browser: {driver.capabilities['browserName']} {driver.capabilities['browserVersion']}, binary "
              f"{chromium[0]}, driver {chromium[1]}")
        yield driver


def _grid(driver) -> list[dict]:
    """Each result panel's checkpoint and its cards as rendered: id, score, caption, thumbnail decoded size."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#results .panel')).map(panel => ({
          checkpoint: panel.dataset.checkpoint,
          cards: Array.from(panel.querySelectorAll('.card')).map(card => {
            const img = card.querySelector('img');
            return {id: card.dataset.id, score: Number(card.dataset.score),
                    shown: card.querySelector('.score').textContent,
                    caption: card.querySelector('.caption').textContent, shared: card.classList.contains('shared'),
                    captions: Array.from(card.querySelectorAll('.caption')).map(item => item.textContent),
                    width: img.naturalWidth, height: img.naturalHeight, src: img.getAttribute('src')};
          })}));""")


def _console_errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def _check_grid(cards: list[dict], expected) -> None:
    assert [card["id"] for card in cards] == [hit.id for hit in expected]
    scores = [card["score"] for card in cards]
    assert scores == sorted(scores, reverse=True)
    assert scores == pytest.approx([hit.score for hit in expected], abs=1e-6)
    assert all(card["shown"] == f"{card['score']:.3f}" for card in cards)
    undecoded = [card["src"] for card in cards if card["width"] <= 0 or card["height"] <= 0]
    assert not undecoded, f"thumbnails that did not load: {undecoded}"


def test_text_and_image_queries_in_chromium(driver, server, index_dir):
    from clipeval.finder.search import FinderIndex

    index = FinderIndex.open(index_dir)
    first, second = index.checkpoints
    driver.get_log("browser")  # start from an empty console

    run_query_in_page(driver, server.url, "a red circle", [first], 5)
    (panel,) = _grid(driver)
    assert panel["checkpoint"] == first and len(panel["cards"]) == 5
    _check_grid(panel["cards"], index.search_text("a red circle", checkpoint=first, k=5))

    # the upload: an indexed image's own file comes back first, with the whole grid ranked
    name, _, shape = SHAPES[7]
    upload = index_dir.parent / "collection" / "images" / f"{name}-{shape}.png"
    before = searches(driver)
    driver.find_element("id", "image").send_keys(str(upload))
    assert wait_for_answer(driver, before) == "done", driver.find_element("id", "status").text
    wait_for_thumbnails(driver)
    (panel,) = _grid(driver)
    assert len(panel["cards"]) == 5 and panel["cards"][0]["id"] == f"images~{name}-{shape}.png"
    _check_grid(panel["cards"], index.search_image(upload.read_bytes(), checkpoint=first, k=5))

    # every ok image of the collection: the count is k capped by the collection, the hostile caption inert
    run_query_in_page(driver, server.url, "a circle", [second], 100)
    (panel,) = _grid(driver)
    assert panel["checkpoint"] == second and len(panel["cards"]) == len(SHAPES)  # the missing file has no vector
    _check_grid(panel["cards"], index.search_text("a circle", checkpoint=second, k=100))
    assert HOSTILE_CAPTION in [card["caption"] for card in panel["cards"]]
    assert driver.execute_script("return document.querySelectorAll('#results b, #results img[src=\"x\"]').length") == 0
    assert driver.execute_script("return document.body.dataset.pwned") is None

    assert _console_errors(driver) == []


def test_side_by_side_click_and_similar_in_chromium(driver, server, index_dir):
    from clipeval.finder.search import FinderIndex

    index = FinderIndex.open(index_dir)
    first, second = index.checkpoints
    driver.get_log("browser")
    run_query_in_page(driver, server.url, "a blue square", [first, second], 6)
    panels = _grid(driver)
    assert [panel["checkpoint"] for panel in panels] == [first, second]
    rankings = [index.search_text("a blue square", checkpoint=spec, k=6) for spec in (first, second)]
    for panel, expected in zip(panels, rankings, strict=True):
        _check_grid(panel["cards"], expected)
    both = {hit.id for hit in rankings[0]} & {hit.id for hit in rankings[1]}
    for panel in panels:
        assert {card["id"] for card in panel["cards"] if card["shared"]} == both
    assert f"{len(both)} of the top 6" in driver.find_element("id", "status").text

    # click a result: its metadata; then "More like this"
    target = panels[0]["cards"][2]["id"]
    driver.find_element("css selector", f'#results .panel .card[data-id="{target}"] img').click()
    WebDriverWait(driver, 30).until(lambda d: d.find_element("id", "detail-id").text == target)
    metadata = dict(driver.execute_script("""return Array.from(document.querySelectorAll('#detail-table tr'))
        .map(row => [row.cells[0].textContent, row.cells[1].textContent]);"""))
    item = index.item(target)
    assert metadata["caption"] == item["caption"] and metadata["color"] == item["color"]
    assert driver.execute_script("return document.getElementById('detail-thumb').naturalWidth") > 0
    before = searches(driver)
    driver.find_element("id", "detail-similar").click()
    assert wait_for_answer(driver, before) == "done"
    wait_for_thumbnails(driver)
    panels = _grid(driver)
    for panel, spec in zip(panels, (first, second), strict=True):
        _check_grid(panel["cards"], index.similar(target, checkpoint=spec, k=6))
        assert target not in [card["id"] for card in panel["cards"]]  # the item itself is left out
    assert _console_errors(driver) == []


def test_screenshot_of_a_query(chromium, index_dir, tmp_path):
    out = screenshot(index_dir, tmp_path / "figures" / "finder.png", "a green triangle", k=10, size=(1200, 800))
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width == 1200 and image.height >= 800
        colors = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colors is not None and len(colors) > 50  # the page with its thumbnails, not a blank window
    first = screenshot(index_dir, tmp_path / "first.png", "a green triangle", k=100, size=(1000, 600),
                       full_page=False)
    with Image.open(first) as image:
        assert image.size == (1000, 600)


@pytest.fixture(scope="module")
def coco_index_dir(tmp_path_factory, tiny_specs, one_torch_thread):
    """The collection with three captions (rows) per image, as COCO gives them."""
    return build_small_index(tmp_path_factory.mktemp("finder-coco"), [tiny_specs["hf-clip"], tiny_specs["open_clip"]],
                             captions=3)


def _link(url: str, pairs: list[tuple[str, str]]) -> str:
    return url + "?" + urllib.parse.urlencode(pairs)


def test_a_link_opens_its_query_and_the_url_follows_each_search(driver, coco_index_dir):
    from clipeval.finder.search import FinderIndex

    index = FinderIndex.open(coco_index_dir)
    first, second = index.checkpoints
    driver.get_log("browser")
    with serving(coco_index_dir) as url:
        link = _link(url, [("q", "a blue square"), ("k", "20"), ("checkpoint", first), ("checkpoint", second)])
        assert wait_for_page(driver, link) == "done", driver.find_element("id", "status").text
        wait_for_thumbnails(driver)
        panels = _grid(driver)
        assert [panel["checkpoint"] for panel in panels] == [first, second]
        for panel, spec in zip(panels, (first, second), strict=True):
            _check_grid(panel["cards"], index.search_text("a blue square", checkpoint=spec, k=20))
            assert len(panel["cards"]) == len(SHAPES)  # every image once, never once per caption
            assert all(len(card["captions"]) == 3 for card in panel["cards"])
        assert driver.execute_script("return [document.getElementById('query').value, "
                                     "document.getElementById('side-by-side').checked, "
                                     "document.getElementById('k').value]") == ["a blue square", True, "20"]
        header = driver.find_element("id", "index-info").text
        assert header.startswith(f"{len(SHAPES) + 1} images from {3 * len(SHAPES) + 1} rows")

        run_query_in_page(driver, url, "a red circle", [first], 5)  # typed in the page: the URL follows
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(driver.current_url).query)
        assert query == {"q": ["a red circle"], "k": ["5"], "checkpoint": [first]}
        shown = [card["id"] for card in _grid(driver)[0]["cards"]]
        assert wait_for_page(driver, driver.current_url) == "done"  # the URL reloaded: the same answer
        assert [card["id"] for card in _grid(driver)[0]["cards"]] == shown

        driver.get(_link(url, [("q", "a cat"), ("checkpoint", "hf:nope")]))
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.execute_script("return document.body.dataset.state") == "error")
        assert "does not have: hf:nope" in driver.find_element("id", "status").text
    assert _console_errors(driver) == []
