"""Published numbers against their source: the copied rows of open_clip's retrieval table, and every value the
catalogue uses against those rows (a mistyped copy or a misread column would move a deviation flag unnoticed)."""

import re

import numpy as np
import pytest

from clipeval.models.catalogue import OPEN_CLIP_RESULTS, published_retrieval, read_published_table

# open_clip's header, as the file at the recorded commit has it (its first line)
UPSTREAM_HEADER = (
    "name,pretrained,params (M),FLOPs (B),Average score,Flickr image retr. R@1,Flickr image retr. R@5,"
    "Flickr image retr. R@10,Flickr text retr. R@1,Flickr text retr. R@5,Flickr text retr. R@10,"
    "MSCOCO image retr. R@1,MSCOCO image retr. R@5,MSCOCO image retr. R@10,MSCOCO text retr. R@1,"
    "MSCOCO text retr. R@5,MSCOCO text retr. R@10,WinoGAViL avg jaccard score,WinoGAViL jaccard score 10,"
    "WinoGAViL jaccard score 10-12,WinoGAViL jaccard score 12,WinoGAViL jaccard score 5,"
    "WinoGAViL jaccard score 5-6,WinoGAViL jaccard score 6")
# where each published number sits in the table, spelled out here apart from the catalogue's own mapping:
# "image retrieval" is a text query finding its image (text->image), "text retrieval" the other way
COLUMN = {("coco-5k", "text_to_image"): "MSCOCO image retr. R@{k}",
          ("coco-5k", "image_to_text"): "MSCOCO text retr. R@{k}",
          ("flickr30k-1k", "text_to_image"): "Flickr image retr. R@{k}",
          ("flickr30k-1k", "image_to_text"): "Flickr text retr. R@{k}"}


@pytest.fixture(scope="module")
def table():
    return read_published_table(OPEN_CLIP_RESULTS)


def test_the_copy_names_its_source_and_keeps_its_header(table):
    _, origin = table
    assert origin["repository"] == "mlfoundations/open_clip"
    assert origin["file"] == "docs/openclip_retrieval_results.csv" and re.fullmatch(r"[0-9a-f]{40}", origin["commit"])
    assert OPEN_CLIP_RESULTS.read_text().splitlines()[0] == UPSTREAM_HEADER


def test_every_copied_row_agrees_with_its_own_average(table):
    """open_clip's "Average score" is the mean of the row's 19 scores, printed to 4 decimals: a digit mistyped in
    the copy (by 0.001 or more in most places) breaks that sum."""
    rows, _ = table
    scores = UPSTREAM_HEADER.split(",")[5:]
    assert len(scores) == 19
    for name, row in rows.items():
        mean = np.mean([float(row[column]) for column in scores])
        assert abs(mean - float(row["Average score"])) <= 0.00005 + 1e-12, f"{name}: {mean:.6f} vs its average"


def test_every_published_value_is_its_rows_value(table):
    rows, origin = table
    published = published_retrieval()
    cited = published[published["source"].str.contains(origin["commit"])]
    assert len(cited) == len(published) > 0  # every published number comes from the copied table
    for entry in cited.itertuples():
        row = re.search(r", row ([^;,]+,[^;,]+?)(?:;|$)", entry.source).group(1)
        expected = 100 * float(rows[row][COLUMN[entry.dataset, entry.direction].format(k=entry.k)])
        assert entry.published == pytest.approx(expected, abs=1e-9), (entry.checkpoint, entry.dataset,
                                                                     entry.direction, entry.k)
    per_checkpoint = cited.groupby("checkpoint").size()
    assert (per_checkpoint == 2 * 2 * 3).all()  # 2 benchmarks x 2 directions x HitRate@1/5/10
