"""The images of vision rows: gs:// references fetched, every image checked to decode.

Runs after the rows are validated and before the model is downloaded, so a missing or broken
image costs seconds. Images referenced by URI must lie in the job's data bucket: a dataset may
not read other buckets (the models bucket holds other jobs' files). Anywhere in that bucket is
allowed, not only below the job's dataset prefix (datasets share image folders), and so the
storage access boundary of a vision job reads the whole data bucket, without listing it
(`tuning.gcp.access_boundary`). Names with empty, '.' or '..' segments are refused by
`parse_gcs_uri`. Errors name the split, the row and the field, like the row checks.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

from trainer.data import DatasetSplits
from trainer.errors import DatasetError
from tuning.dataset.rows import RowProblem, describe_problems
from tuning.dataset.splits import SplitFile
from tuning.errors import InvalidRequestError, NotFoundError
from tuning.gcp.access_boundary import AccessBoundaryError
from tuning.layout import parse_gcs_uri

if TYPE_CHECKING:
    from tuning.gcp.storage import GcsStore

logger = logging.getLogger(__name__)

# Larger images are almost certainly a mistake (the processor resizes to e.g. 896 px anyway),
# and decompression bombs are refused by PIL above this many pixels.
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_IMAGE_PIXELS = 100_000_000


def resolve_split_images(splits: DatasetSplits, storage: GcsStore, *, data_bucket: str) -> None:
    """Replace every image reference in the splits by the image's bytes, checked to decode."""
    cache: dict[str, bytes] = {}
    resolve_images(
        splits.train, SplitFile("train", splits.train_source, ""), storage, data_bucket, cache
    )
    if splits.eval is not None:
        source = SplitFile("eval", splits.eval_source or "", "")
        resolve_images(splits.eval, source, storage, data_bucket, cache)


def resolve_images(
    rows: list[dict[str, Any]],
    split: SplitFile,
    storage: GcsStore,
    data_bucket: str,
    cache: dict[str, bytes] | None = None,
) -> None:
    """Fetch and check the images of `rows` in place; one DatasetError lists the problems."""
    cache = {} if cache is None else cache
    problems: list[RowProblem] = []
    fetched = 0
    for index, row in enumerate(rows):
        resolved = []
        for position, source in enumerate(row["images"]):
            field = f"images[{position}]"
            try:
                data = source if isinstance(source, bytes) else cache.get(source)
                if data is None:
                    data = _download(storage, source, data_bucket)
                    cache[source] = data
                    fetched += 1
                check_image(data)
            except ImageError as error:
                problems.append(RowProblem(index, field, str(error)))
                continue
            resolved.append(data)
        row["images"] = resolved
    if problems:
        raise DatasetError(describe_problems(split, problems))
    if fetched:
        logger.info("fetched %d images for split %s", fetched, split.name)


class ImageError(ValueError):
    """One image cannot be used; the message says why."""


def _download(storage: GcsStore, uri: str, data_bucket: str) -> bytes:
    try:
        bucket, path = parse_gcs_uri(uri)
    except InvalidRequestError as error:
        raise ImageError(error.message) from None
    if bucket != data_bucket or not path or path.endswith("/"):
        raise ImageError(
            f"{uri} is not an image file in the data bucket gs://{data_bucket}/ "
            "(images may only be read from there)"
        )
    try:
        return storage.download_bytes(uri)
    except NotFoundError:
        raise ImageError(f"{uri} does not exist") from None
    except AccessBoundaryError as error:
        raise ImageError(error.message) from None


def check_image(data: bytes) -> tuple[int, int]:
    """(width, height) of an image file that PIL can fully decode; ImageError otherwise."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"the image is {len(data)} bytes, more than {MAX_IMAGE_BYTES}")
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
            if size[0] * size[1] <= MAX_IMAGE_PIXELS:
                image.load()  # decodes every pixel: a truncated file fails here, not mid-training
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as error:
        raise ImageError(f"not a readable image ({type(error).__name__}: {error})") from None
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ImageError(f"the image is {size[0]}x{size[1]} pixels: too large")
    return size


def image_dataset(rows: list[dict[str, Any]]) -> Any:
    """A `datasets.Dataset` of vision rows whose `images` column decodes to PIL images."""
    from datasets import Dataset, Image, List

    dataset = Dataset.from_list(
        [
            {**row, "images": [{"bytes": data, "path": None} for data in row["images"]]}
            for row in rows
        ]
    )
    return dataset.cast_column("images", List(Image()))
