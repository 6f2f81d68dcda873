"""A small local web app: upload an image and/or paste tags, see the attribute JSON and its evidence.

``make app`` (or ``python -m charassets.app``) serves it on http://127.0.0.1:7860. It runs the
same domain code as the pipeline: the tag path of ``extract --tags``, the image path of
``extract --image``, and, when both are given, the graph's resolver (``candidates.decide``). Nothing leaves the machine.

The app has no authentication. It binds to loopback by default; another host is refused
unless ``--i-know-this-is-public`` is given, and then a warning is printed. Uploads are
capped at ``MAX_UPLOAD_BYTES`` (by Gradio while receiving, and again before reading), each
upload is read and decoded once, and an unexpected error reaches the user as a short JSON
message with a reference, its traceback only in the server log.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import click

from charassets.domain.ontology import Ontology

if TYPE_CHECKING:
    from PIL import Image

    from charassets.domain.images.decode import DecodedImage

EVIDENCE_COLUMNS = ["attribute", "value", "confidence", "source", "evidence"]
MAX_UPLOAD_BYTES = 16 * 1024 * 1024  # per upload; Gradio refuses larger (HTTP 413) and the handler checks again
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
PUBLIC_FLAG = "--i-know-this-is-public"

log = logging.getLogger(__name__)


def read_upload(path: str | Path, limit: int = MAX_UPLOAD_BYTES) -> bytes:
    """The file's bytes, read once; ``ImageRejected`` when it is over ``limit`` (checked before reading, and while reading)."""
    from charassets.domain.images.decode import ImageRejected

    def too_large(size: str) -> ImageRejected:
        return ImageRejected(f"file is {size} bytes, over the upload limit of {limit:,} bytes ({limit / 2**20:g} MB)")

    size = os.stat(path).st_size
    if size > limit:
        raise too_large(f"{size:,}")
    with open(path, "rb") as f:
        data = f.read(limit + 1)  # never more than the limit, even if the file grew since the check
    if len(data) > limit:
        raise too_large(f"more than {limit:,}")
    return data


def rejected_record(name: str | None, reason: str) -> dict:
    """A rejected image, in the shape ``image_signals.image_record`` gives one."""
    from charassets.domain.images.signals import rejected_image_record

    return rejected_image_record(name, reason)


def tag_reader(ontology: Ontology):
    """Tags -> the record the text path makes of them: what a tag-reading image backend (``wd:...``) is given."""
    from charassets.domain.pipeline import extract_one

    return lambda tags: extract_one(", ".join(tags), ontology)


def decoded_image_record(decoded: DecodedImage, name: str, ontology: Ontology, backend: str = "animeface") -> dict:
    """``image_signals.image_record`` for an image already decoded (the same function: the record is not decoded again)."""
    from charassets.domain.images.signals import image_record

    return image_record(decoded, name, ontology, backend, tag_reader(ontology))


def analyse(
    image_path: str | None, tags: str | None, ontology: Ontology, backend: str = "animeface"
) -> tuple[dict, list[list], DecodedImage | None]:
    """The record JSON for the inputs (tags, image, or both reconciled), one evidence row per decided attribute, and the decoded image.

    The upload is read and decoded once; the decoded image is returned for the preview.
    """
    from charassets.domain.images.decode import ImageRejected, decode_image
    from charassets.domain.images.signals import image_facts, signals_for
    from charassets.domain.pipeline import extract_one

    tags = (tags or "").strip()
    if not image_path and not tags:
        return {"status": "rejected", "reason": "give an image, tags, or both"}, [], None
    decoded, problem, name = None, None, Path(image_path).name if image_path else None
    if image_path:
        try:
            decoded = decode_image(read_upload(image_path))
        except ImageRejected as e:
            problem = str(e)
    if image_path and not tags:
        record = rejected_record(name, problem) if decoded is None else decoded_image_record(decoded, name, ontology, backend)
    else:
        record = extract_one(tags, ontology)
        if problem is not None:
            record["flags"] = [*record["flags"], "image_rejected", f"image: {problem}"]
            record["image"] = {"ref": name}
        elif decoded is not None:  # tags and picture decided together, by the graph's resolver
            signals = signals_for(decoded.image, backend, ontology, tag_reader(ontology))
            record = {**extract_one(tags, ontology, image=signals), "image": image_facts(decoded, signals, name)}
    rows = []
    for attr, a in (record.get("attributes") or {}).items():
        if a and a["value"] not in ("unknown", []):
            value = ", ".join(a["value"]) if isinstance(a["value"], list) else a["value"]
            rows.append([attr, value, round(float(a["confidence"]), 3), a["source"], "; ".join(a["evidence"])])
    return record, rows, decoded


def annotated(image: Image.Image, record: dict) -> Image.Image:
    """A copy of the decoded picture (EXIF-rotated RGB), with a box around each face the backend found.

    Boxes are in the picture's own pixels; a large picture is decoded smaller, so they are scaled to it.
    """
    from PIL import ImageDraw

    image = image.copy()
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 200))
    facts = record.get("image") or {}
    sx, sy = image.width / (facts.get("width") or image.width), image.height / (facts.get("height") or image.height)
    for x, y, w, h in facts.get("face_boxes") or []:
        draw.rectangle((x * sx, y * sy, (x + w) * sx, (y + h) * sy), outline=(255, 40, 200), width=width)
    return image


def respond(file, tags: str | None, ontology: Ontology, backend: str = "animeface") -> tuple[dict, list[list], Image.Image | None]:
    """What the Extract button shows: the record, its evidence rows and the preview with faces boxed.

    An unexpected error is logged with its traceback and shown only as a short message with a reference.
    """
    path = file if isinstance(file, str) or file is None else file.name
    try:
        record, rows, decoded = analyse(path, tags, ontology, backend)
        return record, rows, annotated(decoded.image, record) if decoded is not None else None
    except Exception:
        ref = uuid.uuid4().hex[:12]
        log.exception("analysis failed (reference %s)", ref)
        reason = f"internal error while analysing the input (reference {ref}; the details are in the server log)"
        return {"status": "error", "reason": reason}, [], None


def build_app(ontology: Ontology | None = None, backend: str = "animeface"):
    import gradio as gr

    ontology = ontology or Ontology.load()

    def run(file, tags):
        return respond(file, tags, ontology, backend)

    with gr.Blocks(title="charassets: character attributes") as app:
        gr.Markdown(
            "## charassets\nUpload a character image, paste Danbooru-style tags, or both: the attribute record as the table holds it."
        )
        with gr.Row():
            with gr.Column():
                file = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="image-input")
                tags = gr.Textbox(
                    label="Tags", placeholder="1girl, solo, long hair, blue eyes, school uniform", lines=3, elem_id="tags-input"
                )
                button = gr.Button("Extract", variant="primary", elem_id="extract")
                shown = gr.Image(label="Image as read, faces boxed", interactive=False, height=320, elem_id="shown")
            with gr.Column():
                record = gr.JSON(label="Attribute JSON", elem_id="record")
                evidence = gr.Dataframe(headers=EVIDENCE_COLUMNS, label="Evidence", elem_id="evidence", interactive=False)
        button.click(run, inputs=[file, tags], outputs=[record, evidence, shown])
    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine: ``localhost`` or a loopback address (127.0.0.0/8, ::1).

    Anything else (``0.0.0.0``, ``::``, an interface address, another host name) may be reachable from elsewhere.
    """
    name = host.strip().lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def public_host_warning(host: str) -> str | None:
    """The warning to print before serving on ``host``; None for a loopback host."""
    if is_loopback(host):
        return None
    return (
        f"WARNING: serving on {host!r}, which is not a loopback address: the app may be reachable from other machines. "
        "It has no authentication: anyone who can reach the port can upload files and run the extraction. "
        "Bind to 127.0.0.1 unless you mean this, and put an authenticating proxy in front if you do."
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; anything but loopback needs " + PUBLIC_FLAG + ".")
@click.option("--port", type=int, default=7860, show_default=True)
@click.option("--image-backend", default=lambda: os.environ.get("CHARASSETS_IMAGE_BACKEND", "animeface"), show_default="animeface")
@click.option(
    PUBLIC_FLAG,
    "allow_public",
    is_flag=True,
    help="Allow a non-loopback --host. The app has no authentication: anyone who can reach the port can use it.",
)
def main(host: str, port: int, image_backend: str, allow_public: bool) -> None:
    """Serve the app locally."""
    warning = public_host_warning(host)
    if warning:
        click.echo(warning, err=True)
        if not allow_public:
            raise click.UsageError(f"refusing to serve on {host!r} without {PUBLIC_FLAG}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    build_app(backend=image_backend).launch(server_name=host, server_port=port, show_error=False, max_file_size=MAX_UPLOAD_BYTES)


if __name__ == "__main__":
    main()
